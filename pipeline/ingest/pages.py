"""The browse pages, on the shared report frame (:mod:`pipeline.report`, Jinja2 templates
``ingest_*.html``): static HTML, relative links only, no external asset, so the published
tree opens from disk, from a synced copy or from a bucket's website endpoint.

- per scene ``{scene_dir}/index.html``: the large thumbnail, date, cloud cover, path/row,
  every file of the scene with its size, and a link to the item JSON;
- per path/row ``pathrow/{PPP}/{RRR}/thumbindex.html``: the small thumbnails by date with
  their cloud cover, filtered in the page (cloud cover, year, product) by a small inline script;
- ``index.html`` at the root: every path/row (scenes, dates, the latest thumbnail), the
  collections, ``catalog.json`` and ``items.parquet``; every page is reachable from it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import report as frame
from pipeline.ingest import layout
from pipeline.ingest.bundle import Bundle, SceneId
from targets.store import Store

if TYPE_CHECKING:
    from pipeline.ingest.engine import FileResult

GENERATOR = "pipeline.ingest.pages"
SENSOR_LABELS = {"oli-tirs": "OLI/TIRS", "etm": "ETM+", "tm": "TM", "mss": "MSS"}
Doc = dict[str, Any]


def human_size(size: int) -> str:
    """``812 B``, ``14.2 KB``, ``61.0 MB``: decimal units, as S3 consoles show them."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def cloud_text(value: Any) -> str:
    """The cloud cover as the MTL states it (``1.55``, ``53``); ``n/a`` when unknown (-1)."""
    return "n/a" if value is None or float(value) < 0 else f"{float(value):g}"


def date_time(item: Doc) -> tuple[str, str]:
    """(``2020-12-04``, ``19:02:11 UTC``) of an item's datetime."""
    text = str(item["properties"]["datetime"])
    return text[:10], f"{text[11:19]} UTC"


def scene_label(scene: SceneId) -> str:
    level = f"Level-{scene.processing_level[1]} {scene.processing_level}"
    return f"Landsat {scene.satellite} {SENSOR_LABELS[scene.sensor]} · {level}"


# ---------------------------------------------------------------- per scene


@dataclass(frozen=True)
class FileRow:
    name: str
    href: str
    size: int
    size_text: str
    asset: str
    title: str


def file_rows(item: Doc, files: Sequence[FileResult]) -> list[FileRow]:
    """Every file of the scene (by name), with the asset key and title that name it."""
    assets = {
        posixpath.basename(a["href"]): (key, str(a.get("title", ""))) for key, a in item["assets"].items()
    }
    rows = []
    for f in sorted(files, key=lambda f: posixpath.basename(f.rel)):
        name = posixpath.basename(f.rel)
        key, title = assets.get(name, ("", ""))
        rows.append(FileRow(name, f"./{name}", f.size, human_size(f.size), key, title))
    return rows


def write_scene_page(
    store: Store, scene: SceneId, item: Doc, bundle: Bundle, files: Sequence[FileResult]
) -> None:
    here = layout.scene_dir(scene)
    props = item["properties"]
    date, clock = date_time(item)
    rows = file_rows(item, files)
    frame.write_page(
        store, layout.scene_index(scene), "ingest_scene.html",
        title=scene.product_id, generator=GENERATOR, item=item, item_href=f"./{scene.item_id}.json",
        thumb=f"./{posixpath.basename(layout.thumb_large(scene))}", date=date, clock=clock,
        cloud=cloud_text(props.get("eo:cloud_cover")), cloud_land=cloud_text(props.get("landsat:cloud_cover_land")),
        path=f"{scene.path:03d}", row=f"{scene.row:03d}", label=scene_label(scene), scene=scene,
        projection=props.get("proj:code", ""), files=rows, total=human_size(sum(r.size for r in rows)),
        bundle_name=posixpath.basename(bundle.href),
        top=layout.relative(layout.top_index(), here), pathrow=layout.relative(layout.pathrow_index(scene.path, scene.row), here),
        catalog=layout.relative(layout.catalog_json(), here),
        collection=layout.relative(layout.collection_json(scene.collection_id), here),
    )  # fmt: skip


# ---------------------------------------------------------------- per path/row


@dataclass(frozen=True)
class SceneCard:
    item_id: str
    product_id: str
    date: str
    year: str
    cloud: str  # "" when unknown (the filter keeps it)
    cloud_text: str
    collection: str
    label: str
    page: str
    thumb: str


def scene_cards(items: Mapping[str, Doc], from_dir: str) -> list[SceneCard]:
    """One card per item (key -> item), by date, links relative to ``from_dir``."""
    cards = []
    for key, item in items.items():
        scene = layout.scene_of_item_key(key)
        if scene is None:
            continue
        date, _ = date_time(item)
        cloud = item["properties"].get("eo:cloud_cover")
        known = cloud is not None and float(cloud) >= 0
        cards.append(
            SceneCard(
                item_id=str(item["id"]), product_id=scene.product_id, date=date, year=date[:4],
                cloud=f"{float(cloud):.2f}" if known else "", cloud_text=cloud_text(cloud), collection=scene.collection_id,
                label=scene_label(scene), page=layout.relative(layout.scene_index(scene), from_dir),
                thumb=layout.relative(layout.thumb_small(scene), from_dir),
            )
        )  # fmt: skip
    return sorted(cards, key=lambda c: (c.date, c.product_id))


def write_pathrow_page(store: Store, path: int, row: int, items: Mapping[str, Doc]) -> None:
    rel = layout.pathrow_index(path, row)
    here = posixpath.dirname(rel)
    cards = scene_cards(items, here)
    frame.write_page(
        store, rel, "ingest_pathrow.html",
        title=f"WRS-2 path {path:03d} row {row:03d}", generator=GENERATOR, cards=cards,
        years=sorted({c.year for c in cards}), collections=sorted({c.collection for c in cards}),
        top=layout.relative(layout.top_index(), here),
    )  # fmt: skip


# ---------------------------------------------------------------- top


@dataclass(frozen=True)
class PathRowLine:
    path: str
    row: str
    scenes: int
    first: str
    last: str
    products: str
    page: str
    latest_thumb: str
    latest_id: str


def pathrow_lines(by_pathrow: Mapping[tuple[int, int], Mapping[str, Doc]]) -> list[PathRowLine]:
    lines = []
    for (path, row), items in sorted(by_pathrow.items()):
        cards = scene_cards(items, "")
        if not cards:
            continue
        latest = cards[-1]
        lines.append(
            PathRowLine(
                path=f"{path:03d}", row=f"{row:03d}", scenes=len(cards), first=cards[0].date, last=latest.date,
                products=", ".join(sorted({c.collection for c in cards})), page=layout.pathrow_index(path, row),
                latest_thumb=latest.thumb, latest_id=latest.item_id,
            )
        )  # fmt: skip
    return lines


def write_top_page(
    store: Store, by_pathrow: Mapping[tuple[int, int], Mapping[str, Doc]], collections: Mapping[str, int]
) -> None:
    lines = pathrow_lines(by_pathrow)
    frame.write_page(
        store, layout.top_index(), "ingest_index.html",
        title="Landsat Collection 2 scenes", generator=GENERATOR, pathrows=lines,
        scenes=sum(line.scenes for line in lines),
        collections=[{"id": c, "count": n, "href": layout.collection_json(c)} for c, n in sorted(collections.items())],
        catalog=layout.catalog_json(), parquet=layout.items_parquet(),
    )  # fmt: skip
