"""The ingest dry run: what a run will read and write, from listings and tar headers alone.

Per bundle of the source: already published (the scene's item JSON and files are listed:
nothing read), bad (the reason, exactly as the run would give it: the listing and the
completeness check are the run's own), or to do, with the bytes the run will read (the
bundle file; its raster members) and the objects it will write (a COG per raster member,
the metadata copies, two thumbnails, ``index.html`` and the item JSON), then the catalogue
files and pages those scenes make the run rebuild. Writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.ingest.access import SourceAccess
from pipeline.ingest.bundle import BundleError, open_bundle
from pipeline.ingest.sources import SourceBundle
from targets.store import Store

TEXT_KINDS = ("mtl_txt", "mtl_xml", "mtl_json", "ang")
PER_SCENE_EXTRA = 4  # two thumbnails, index.html, the item JSON


@dataclass(frozen=True)
class BundleEstimate:
    href: str
    stem: str
    status: str  # "done", "to do" or "bad"
    bundle_bytes: int
    raster_bytes: int = 0
    objects: int = 0
    reason: str = ""
    collection: str = ""
    pathrow: tuple[int, int] | None = None


def estimate_bundle(bundle: SourceBundle, done: bool, access: SourceAccess) -> BundleEstimate:
    if done:
        return BundleEstimate(bundle.href, bundle.stem, "done", bundle.size)
    try:
        opened = open_bundle(bundle.href, access)
    except BundleError as error:
        reason = f"{error.member}: {error.reason}" if error.member else error.reason
        return BundleEstimate(bundle.href, bundle.stem, "bad", bundle.size, reason=reason)
    rasters = opened.rasters
    texts = [m for m in opened.members if m.kind in TEXT_KINDS]
    return BundleEstimate(
        bundle.href, bundle.stem, "to do", bundle.size, sum(m.size for m in rasters), len(rasters) + len(texts) + PER_SCENE_EXTRA,
        collection=opened.scene.collection_id, pathrow=(opened.scene.path, opened.scene.row),
    )  # fmt: skip


def estimate(
    bundles: list[SourceBundle], done: set[str], access: SourceAccess, store: Store
) -> list[BundleEstimate]:
    return [estimate_bundle(b, b.href in done, access) for b in bundles]


def catalogue_objects(rows: list[BundleEstimate]) -> int:
    """Catalogue files and pages the run rewrites: the collections and path/rows of the scenes
    to do, catalog.json, items.parquet and index.html (none when there is nothing to do)."""
    todo = [r for r in rows if r.status == "to do"]
    if not todo:
        return 0
    return len({r.collection for r in todo}) + len({r.pathrow for r in todo}) + 3


def format_estimate(rows: list[BundleEstimate], source: str, dest: str) -> str:
    todo = [r for r in rows if r.status == "to do"]
    bad = [r for r in rows if r.status == "bad"]
    done = [r for r in rows if r.status == "done"]
    lines = ["", "===== Landsat ingest dry run =====", f"source: {source}", f"outputs: {dest}"]
    lines.append(f"{'bundle':<48} {'status':<6} {'MB':>9} {'raster MB':>10} {'objects':>8}")
    for r in rows:
        lines.append(
            f"{r.stem:<48} {r.status:<6} {r.bundle_bytes / 1e6:>9.1f} {r.raster_bytes / 1e6:>10.1f} {r.objects:>8}"
        )
    scene_objects = sum(r.objects for r in todo)
    bytes_in, raster_bytes = sum(r.bundle_bytes for r in todo), sum(r.raster_bytes for r in todo)
    cat = catalogue_objects(rows)
    lines.append(
        f"total: {len(rows)} bundles: {len(todo)} to do, {len(done)} already published, {len(bad)} bad; "
        f"bytes in {bytes_in / 1e6:,.1f} MB ({raster_bytes / 1e6:,.1f} MB of rasters); "
        f"objects out {scene_objects + cat} ({scene_objects} scene files, {cat} catalogue files and pages)"
    )
    lines += [f"  BAD {r.href}: {r.reason}" for r in bad]
    return "\n".join(lines) + "\n"
