"""The static STAC catalogue under ``--dest``: items written relative, collections with
extents covering their items, the root ``catalog.json``, ``items.parquet``, and how the
workflow knows which of them are current.

**Relative and self-contained.** An item sits next to its files, so every asset href is
``./{file}``; its ``root``, ``parent`` and ``collection`` links are relative paths to
``catalog.json`` and ``{collection_id}/collection.json``; no ``self`` link anywhere (a
self-contained catalogue in pystac's terms). A collection links its items relatively; the
catalogue its collections. The tree can be copied or synced anywhere and read from there.
``items.parquet`` (stac-geoparquet) holds the same items with every href relative to
``items.parquet`` itself (the destination's root).

**What is published** is read from one listing of ``collection02/`` (:func:`list_tree`): a
scene is published when its item JSON is there (it is written last). The catalogue files
and pages are built from the published items and record what they were built from
(``_state/ingest/built/{name}.json``: a digest of the item keys and sizes); one is current
when its file exists and the digest of the items it covers is unchanged (:func:`is_current`).
So a rerun rebuilds nothing, and a run that published more scenes rebuilds exactly the
files that list them.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import warnings
from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline.ingest import layout
from pipeline.ingest.bundle import SceneId
from targets.store import TEMP_MARK, Store

STAC_VERSION = "1.1.0"
CATALOG_ID = "landsat-c2"
JSON_TYPE = "application/json"
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection", "child", "item"})
COLLECTION_TITLES = {
    "landsat-c2-l1": "Landsat Collection 2 Level-1",
    "landsat-c2-l2": "Landsat Collection 2 Level-2",
}
LEVEL1_DESCRIPTION = "Landsat Collection 2 Level-1 scenes (MSS, TM, ETM+ and OLI/TIRS): calibrated digital numbers, as Cloud Optimized GeoTIFFs."

Doc = dict[str, Any]


# ---------------------------------------------------------------- the published tree


@dataclass
class Tree:
    """Every file under ``collection02/`` (key -> size), grouped by directory."""

    files: dict[str, int] = field(default_factory=dict)
    by_dir: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, files: Mapping[str, int]) -> Tree:
        by_dir: dict[str, dict[str, int]] = {}
        for key, size in files.items():
            directory, _, name = key.rpartition("/")
            by_dir.setdefault(directory, {})[name] = size
        return cls(dict(files), by_dir)

    def names_in(self, directory: str) -> dict[str, int]:
        return self.by_dir.get(directory, {})

    def published(self) -> dict[str, SceneId]:
        """Item key -> scene, for every item JSON in the tree."""
        found = {}
        for key in self.files:
            if key.endswith(".json"):
                scene = layout.scene_of_item_key(key)
                if scene is not None:
                    found[key] = scene
        return dict(sorted(found.items()))


def list_tree(store: Store) -> Tree:
    """One listing of ``collection02/`` (local: a walk; object stores: one paged recursive
    listing). Temporaries (dot-names) are left out."""
    root = layout.SCENE_ROOT
    files: dict[str, int] = {}
    if store.is_local:
        base = store.path(root)
        for directory, subdirs, names in os.walk(base):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            rel_dir = os.path.relpath(directory, store.root).replace(os.sep, "/")
            for name in names:
                if name.startswith("."):
                    continue
                try:
                    files[f"{rel_dir}/{name}"] = os.path.getsize(os.path.join(directory, name))
                except FileNotFoundError:
                    continue  # replaced or removed while listing
        return Tree.of(files)
    prefix = store.path(root).rstrip("/")
    try:
        listed = store.fs.find(prefix, detail=True)
    except FileNotFoundError:
        listed = {}
    strip = len(store.root.rstrip("/")) + 1
    for key, info in listed.items():
        name = key.rsplit("/", 1)[-1]
        if not name.startswith(".") and info.get("type", "file") == "file":
            files[key[strip:]] = int(info.get("size") or 0)
    return Tree.of(files)


_trees: dict[str, tuple[Hashable, Tree]] = {}


def tree(store: Store, *, fresh: bool = False, generation: Hashable = None) -> Tree:
    """The listing of ``store``, made once per process (completeness checks of many tasks
    share it) until :func:`forget`, or until ``generation`` (what the caller knows was
    published since: the scenes this run published, in any process) differs from the one
    the cached listing was made at."""
    cached = _trees.get(store.url)
    if fresh or cached is None or (generation is not None and cached[0] != generation):
        _trees[store.url] = (generation, list_tree(store))
    return _trees[store.url][1]


def forget(store: Store) -> None:
    """Drop the cached listings (after scenes were written, before building from them)."""
    _trees.pop(store.url, None)
    _failed.pop(store.url, None)


_failed: dict[str, set[str]] = {}


def failed_stems(store: Store, *, fresh: bool = False) -> set[str]:
    """The bundles (file names less extension) with a failure record, from one listing."""
    if fresh or store.url not in _failed:
        _failed[store.url] = {
            n[: -len(".json")] for n in store.list_names(layout.failed_dir()) if n.endswith(".json")
        }
    return _failed[store.url]


# ---------------------------------------------------------------- items


def relative_item(item: Doc, scene: SceneId) -> Doc:
    """The item as written next to its files: relative asset hrefs and catalogue links."""
    here = layout.scene_dir(scene)
    doc = dict(item)
    doc["assets"] = {
        key: {**asset, "href": "./" + posixpath.basename(asset["href"])}
        for key, asset in item["assets"].items()
    }
    catalog = layout.relative(layout.catalog_json(), here)
    collection = layout.relative(layout.collection_json(scene.collection_id), here)
    doc["links"] = [
        {"rel": "root", "href": catalog, "type": JSON_TYPE, "title": "Landsat Collection 2 scenes"},
        {
            "rel": "parent",
            "href": collection,
            "type": JSON_TYPE,
            "title": COLLECTION_TITLES[scene.collection_id],
        },
        {
            "rel": "collection",
            "href": collection,
            "type": JSON_TYPE,
            "title": COLLECTION_TITLES[scene.collection_id],
        },
        *[link for link in item.get("links", []) if link.get("rel") not in STRUCTURAL_RELS],
    ]
    doc["collection"] = scene.collection_id
    return doc


def dump(doc: Doc) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


_item_cache: dict[tuple[str, str, int], Doc] = {}


def read_items(store: Store, keys: Mapping[str, int]) -> dict[str, Doc]:
    """The item JSONs at ``keys`` (key -> size from the listing), read once per process
    per (key, size); remote stores read 16 at a time."""
    wanted = [k for k in keys if (store.url, k, keys[k]) not in _item_cache]

    def load(key: str) -> tuple[str, Doc]:
        return key, json.loads(store.read_text(key))

    if wanted:
        if store.is_local or len(wanted) == 1:
            loaded = [load(k) for k in wanted]
        else:
            with ThreadPoolExecutor(max_workers=16) as pool:
                loaded = list(pool.map(load, wanted))
        for key, doc in loaded:
            _item_cache[(store.url, key, keys[key])] = doc
    return {k: _item_cache[(store.url, k, keys[k])] for k in keys}


# ---------------------------------------------------------------- what a file was built from


def digest(entries: Iterable[tuple[str, int]], *extra: str) -> str:
    """sha1 over the sorted (key, size) pairs a file is built from (and ``extra`` strings)."""
    h = hashlib.sha1()
    for key, size in sorted(entries):
        h.update(f"{key}\t{size}\n".encode())
    for text in extra:
        h.update(f"#{text}\n".encode())
    return h.hexdigest()


def recorded_digest(store: Store, name: str) -> str:
    try:
        return str(json.loads(store.read_text(layout.built_record(name))).get("digest", ""))
    except (FileNotFoundError, ValueError):
        return ""


def record_built(store: Store, name: str, value: str, items: int) -> None:
    store.write_text(layout.built_record(name), json.dumps({"digest": value, "items": items}) + "\n")


def is_current(store: Store, name: str, output: str, value: str, *, expect_output: bool = True) -> bool:
    """``output`` exists (when ``expect_output``) and was built from the items whose digest is ``value``."""
    return recorded_digest(store, name) == value and (not expect_output or store.exists(output))


def sweep_temporaries(store: Store, rel_dir: str, prefix: str = "") -> None:
    """Remove the temporaries a killed writer left in a local directory, for the names this
    run is about to write (``prefix``: a file's name; empty: every temporary there).
    Only the task that owns those names calls this, so no live writer can own them."""
    if not store.is_local:
        return
    try:
        names = os.listdir(store.path(rel_dir))
    except (FileNotFoundError, NotADirectoryError):
        return
    mark = f".{prefix}{TEMP_MARK}" if prefix else TEMP_MARK
    debris = [n for n in names if n.startswith(".") and (n.startswith(mark) if prefix else mark in n)]
    if debris:
        store.remove_stale_temps(rel_dir, debris, max_age_s=0.0)


# ---------------------------------------------------------------- collections and the root


def _collection_base(collection_id: str) -> Doc:
    """stactools-landsat's collection (title, license, keywords, providers, extensions)."""
    from stactools.landsat.stac import create_collection

    with warnings.catch_warnings():  # pystac: item_assets is core in STAC 1.1, no longer an extension
        warnings.filterwarnings("ignore", message=".*item_assets.*")
        doc: Doc = create_collection(collection_id).to_dict(include_self_link=False, transform_hrefs=False)
    doc["stac_extensions"] = [uri for uri in doc.get("stac_extensions", []) if "/item-assets/" not in uri]
    doc["providers"] = [p for p in doc.get("providers", []) if "host" not in p.get("roles", [])]
    if collection_id == "landsat-c2-l1":
        # stactools' Level-1 collection describes MSS alone (its DOI, assets and summaries)
        doc["description"] = LEVEL1_DESCRIPTION
        doc["links"] = [link for link in doc.get("links", []) if link.get("rel") != "cite-as"]
    if not any(key.startswith("sci:") for key in doc):
        # The scientific extension's schema requires a sci:* field of a collection that declares
        # it; stactools declares it on collections spanning several DOIs (one per sensor), with none.
        doc["stac_extensions"] = [uri for uri in doc.get("stac_extensions", []) if "/scientific/" not in uri]
    return doc


def spatial_extent(items: Iterable[Doc]) -> list[float]:
    boxes = [item["bbox"] for item in items]
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def temporal_extent(items: Iterable[Doc]) -> list[str]:
    times = sorted(item["properties"]["datetime"] for item in items)
    return [times[0], times[-1]]


def item_assets(items: Iterable[Doc]) -> Doc:
    """Per asset key, the fields every item that has the key gives it alike."""
    fields = ("title", "type", "roles", "description")
    common: dict[str, Doc] = {}
    for item in items:
        for key, asset in item["assets"].items():
            seen = {f: asset[f] for f in fields if f in asset}
            if key not in common:
                common[key] = seen
            else:
                common[key] = {f: v for f, v in common[key].items() if seen.get(f) == v}
    return {key: value for key, value in sorted(common.items()) if len(value) >= 2}


def summaries(items: list[Doc]) -> Doc:
    platforms = sorted({i["properties"]["platform"] for i in items if "platform" in i["properties"]})
    instruments = sorted({x for i in items for x in i["properties"].get("instruments", [])})
    return {"platform": platforms, "instruments": instruments}


def build_collection(collection_id: str, items: Mapping[str, Doc]) -> Doc:
    """The collection of ``items`` (key -> item), extents covering them, links relative."""
    docs = [items[k] for k in sorted(items)]
    doc = _collection_base(collection_id)
    here = posixpath.dirname(layout.collection_json(collection_id))
    doc["extent"] = {
        "spatial": {"bbox": [spatial_extent(docs)]},
        "temporal": {"interval": [temporal_extent(docs)]},
    }
    doc["item_assets"] = item_assets(docs)
    doc["summaries"] = summaries(docs)
    catalog = layout.relative(layout.catalog_json(), here)
    links = [
        {"rel": "root", "href": catalog, "type": JSON_TYPE, "title": "Landsat Collection 2 scenes"},
        {"rel": "parent", "href": catalog, "type": JSON_TYPE, "title": "Landsat Collection 2 scenes"},
        *[link for link in doc.get("links", []) if link.get("rel") not in STRUCTURAL_RELS],
    ]
    links += [
        {"rel": "item", "href": layout.relative(key, here), "type": "application/geo+json"}
        for key in sorted(items)
    ]
    doc["links"] = links
    return doc


def build_catalog(collection_ids: Iterable[str]) -> Doc:
    """The root catalogue: its collections, and the parquet and browse pages beside it."""
    links: list[Doc] = [
        {"rel": "root", "href": "./catalog.json", "type": JSON_TYPE, "title": "Landsat Collection 2 scenes"}
    ]
    for collection_id in sorted(collection_ids):
        links.append({"rel": "child", "href": f"./{layout.collection_json(collection_id)}", "type": JSON_TYPE,
                      "title": COLLECTION_TITLES[collection_id]})  # fmt: skip
    if links[1:]:  # items.parquet and the pages exist when some scene is published
        links.append({"rel": "alternate", "href": f"./{layout.items_parquet()}", "type": "application/vnd.apache.parquet",
                      "title": "Every item (stac-geoparquet)"})  # fmt: skip
        links.append(
            {
                "rel": "alternate",
                "href": f"./{layout.top_index()}",
                "type": "text/html",
                "title": "Browse pages",
            }
        )
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": CATALOG_ID,
        "title": "Landsat Collection 2 scenes",
        "description": "Landsat Collection 2 scenes as Cloud Optimized GeoTIFFs, with thumbnails and browse pages.",
        "links": links,
    }


# ---------------------------------------------------------------- items.parquet


def parquet_item(key: str, item: Doc) -> Doc:
    """The item with every href relative to the destination's root (where items.parquet is)."""
    here = posixpath.dirname(key)
    doc = dict(item)
    doc["assets"] = {
        k: {**a, "href": posixpath.normpath(posixpath.join(here, a["href"]))}
        for k, a in item["assets"].items()
    }
    doc["links"] = [
        {**link, "href": posixpath.normpath(posixpath.join(here, link["href"]))}
        if link.get("rel") in STRUCTURAL_RELS
        else link
        for link in item.get("links", [])
    ]
    return doc


def write_parquet(items: Mapping[str, Doc], path: str, collections: Mapping[str, Doc]) -> None:
    """Every item (key -> item) as stac-geoparquet at the local ``path``."""
    import stac_geoparquet.arrow as stac_arrow

    docs = [parquet_item(key, items[key]) for key in sorted(items)]
    table = stac_arrow.parse_stac_items_to_arrow(docs)
    stac_arrow.to_parquet(table, path, collections=dict(collections))
