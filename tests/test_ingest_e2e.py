"""The Landsat ingest workflow end to end: the luigi command line on synthetic Collection 2
bundles (:mod:`pipeline.demo.landsat_bundles`: Level-2 OLI ``.tar``, Level-2 TM ``.tar.gz``,
Level-1 OLI ``.tar``, a second Level-2 OLI scene as ``.tgz``, a truncated tar and a bundle
without ``SR_B4``), from local disk and from the S3 server, into a local directory and into
S3. Expected values come from the bundle specs (what each MTL was written from) and from the
bundle members themselves, read independently through GDAL's ``/vsitar/``.

What is checked: every COG valid (rio-cogeo, strict) and pixel-identical to its member;
every item's datetime, cloud cover, path/row, projection and asset hrefs as the MTL states;
the catalogue walked with pystac from ``catalog.json`` to every item, every href resolving,
core STAC schemas valid offline; ``items.parquet``; the bad bundles named with their
reasons while everything else is published; a rerun writing nothing; more bundles added by
a rerun (extents, catalogue, parquet, pages updated, nothing else touched); ``kill -9`` at
random instants never leaving an item JSON whose scene is not whole, and the rerun ending
equal to a clean run; the browse pages in headless Chromium (no broken link or image,
every page reachable, the filter); the dry run.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import stac_geoparquet.arrow as stac_arrow
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from PIL import Image
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from rio_cogeo.cogeo import cog_validate

from pipeline.demo.landsat_bundles import BuiltBundle, BundleSpec, build_bundle, demo_specs
from pipeline.ingest import layout
from pipeline.ingest.bundle import parse_product_id
from tests.helpers import LUIGI, luigi_env, run_luigi, snapshot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The exterior ring of this shape is wound clockwise"),
]

MODULE = "pipeline.ingest"
WIDTH, HEIGHT = 700, 640  # one overview level per 30 m band (2), two for the 15 m pan band
OLI_L2 = "LC08_L2SP_047027_20201204_20210313_02_T1"
TM_L2 = "LT05_L2SP_010020_19860219_20200918_02_T1"
OLI_L1 = "LC08_L1TP_047027_20220301_20220309_02_T1"
TRUNCATED = "LC08_L2SP_047028_20201204_20210313_02_T1"
MISSING_RED = "LC08_L2SP_046027_20201213_20210313_02_T1"
OLI_L2_LATER = "LC08_L2SP_047027_20201220_20210310_02_T1"  # the same path/row 16 days later, as .tgz
FIRST = (OLI_L2, OLI_L1, TRUNCATED, MISSING_RED)  # the first run's source
LATER = (TM_L2, OLI_L2_LATER)  # added to the source before the third run
GOOD = (OLI_L2, TM_L2, OLI_L1, OLI_L2_LATER)
BAD = {TRUNCATED: "truncated", MISSING_RED: "missing"}
ENV = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
COLLECTIONS = {"landsat-c2-l1", "landsat-c2-l2"}


def all_specs() -> list[BundleSpec]:
    specs = demo_specs(WIDTH, HEIGHT)
    later = replace(
        specs[0], product_id=OLI_L2_LATER, scene_center_time="19:02:09.8814270Z", cloud_cover=37.21, cloud_cover_land=40.05,
        sun_azimuth=162.7501, sun_elevation=17.2112, compression="tgz", metadata=("MTL.txt", "MTL.xml", "ANG.txt"), seed=6,
    )  # fmt: skip
    return [*specs, later]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltBundle]:
    root = tmp_path_factory.mktemp("ingest-bundles")
    built = {spec.product_id: build_bundle(str(root), spec) for spec in all_specs()}
    assert set(built) == {*GOOD, *BAD}
    return built


def ingest(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_luigi(list(args), cwd=cwd, env=env or luigi_env(ENV), module=MODULE, timeout=600)


def scenes_args(source: Path | str, dest: Path | str, *extra: str) -> list[str]:
    return ["IngestScenes", "--source", str(source), "--dest", str(dest), "--local-scheduler", *extra]


def link_bundles(bundles: dict[str, BuiltBundle], product_ids: tuple[str, ...], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for product_id in product_ids:
        path = Path(bundles[product_id].path)
        os.link(path, directory / path.name)


def tail(proc: subprocess.CompletedProcess[str], lines: int = 12) -> str:
    return "\n".join(proc.stderr.strip().splitlines()[-lines:])


@dataclass
class LocalRuns:
    root: Path
    source: Path
    dest: Path
    first: subprocess.CompletedProcess[str]
    again: subprocess.CompletedProcess[str]
    grown: subprocess.CompletedProcess[str]
    after_first: dict[str, tuple[float, str]]
    after_again: dict[str, tuple[float, str]]
    after_grown: dict[str, tuple[float, str]]


@pytest.fixture(scope="module")
def local(bundles: dict[str, BuiltBundle], tmp_path_factory: pytest.TempPathFactory) -> LocalRuns:
    """Local source -> local destination: a first run over four bundles (two bad), the same
    command again, then again with two more bundles in the source."""
    root = tmp_path_factory.mktemp("ingest-local")
    source, dest = root / "bundles", root / "published"
    link_bundles(bundles, FIRST, source)
    first = ingest(*scenes_args(source, dest), cwd=root)
    after_first = snapshot(dest)
    again = ingest(*scenes_args(source, dest), cwd=root)
    after_again = snapshot(dest)
    link_bundles(bundles, LATER, source)
    grown = ingest(*scenes_args(source, dest), cwd=root)
    return LocalRuns(root, source, dest, first, again, grown, after_first, after_again, snapshot(dest))


# ---------------------------------------------------------------- independent checks


def scene_dir(dest: Path, product_id: str) -> Path:
    return dest / layout.scene_dir(parse_product_id(product_id))


def item_path(dest: Path, product_id: str) -> Path:
    return dest / layout.item_json(parse_product_id(product_id))


def raster_members(built: BuiltBundle) -> list[str]:
    return [name for name in built.members if name.endswith(".TIF")]


def member_path(built: BuiltBundle, name: str) -> str:
    return f"/vsitar/{os.path.abspath(built.path)}/{name}"  # GDAL reads .tar and .tar.gz / .tgz alike


def check_cog(path: Path, built: BuiltBundle, member: str) -> None:
    """Valid COG (strict), DEFLATE + predictor 2, 512 blocks, overviews; pixels, nodata,
    CRS and transform equal to the member's."""
    valid, errors, warnings = cog_validate(str(path), strict=True, quiet=True)
    assert valid, (path.name, errors, warnings)
    with (
        rasterio.Env(CPL_VSIL_GZIP_WRITE_PROPERTIES="NO"),
        rasterio.open(path) as out,
        rasterio.open(member_path(built, member)) as src,
    ):
        structure = out.tags(ns="IMAGE_STRUCTURE")
        assert (structure["COMPRESSION"], structure["PREDICTOR"], structure["LAYOUT"]) == (
            "DEFLATE",
            "2",
            "COG",
        ), path.name
        assert out.block_shapes[0] == (512, 512)
        assert (out.dtypes, out.nodata, out.crs, out.transform) == (
            src.dtypes,
            src.nodata,
            src.crs,
            src.transform,
        ), path.name
        assert np.array_equal(out.read(1), src.read(1)), path.name
        assert out.overviews(1) == [2**k for k in range(1, len(out.overviews(1)) + 1)] and out.overviews(1), (
            path.name
        )


def check_scene_whole(dest: Path, built: BuiltBundle) -> dict[str, Any]:
    """The published scene of ``built``: every raster member as a valid, identical COG, every
    asset's file there, the thumbnails decodable, the page there; returns the item."""
    spec = built.spec
    here = scene_dir(dest, spec.product_id)
    item = json.loads(item_path(dest, spec.product_id).read_text())
    for member in raster_members(built):
        check_cog(here / member, built, member)
    for key, asset in item["assets"].items():
        assert asset["href"].startswith("./") and "/" not in asset["href"][2:], (key, asset["href"])
        assert (here / asset["href"]).is_file(), (spec.product_id, key, asset["href"])
    for name in (f"{spec.product_id}_thumb_small.jpeg", f"{spec.product_id}_thumb_large.jpeg"):
        with Image.open(here / name) as image:
            image.load()
            assert image.format == "JPEG"
    assert (here / "index.html").is_file()
    return item


def check_item(item: dict[str, Any], built: BuiltBundle, dest: Path) -> None:
    """What the MTL states: id, datetime, cloud cover, path/row, projection; asset hrefs on
    the scene's own files; metadata assets only for members the bundle has."""
    spec = built.spec
    scene = parse_product_id(spec.product_id)
    props = item["properties"]
    assert item["id"] == scene.item_id and item["collection"] == scene.collection_id
    assert datetime.fromisoformat(props["datetime"]) == spec.datetime
    assert (
        props["eo:cloud_cover"] == spec.cloud_cover
        and props["landsat:cloud_cover_land"] == spec.cloud_cover_land
    )
    assert (props["landsat:wrs_path"], props["landsat:wrs_row"]) == (f"{scene.path:03d}", f"{scene.row:03d}")
    assert props["proj:code"] == f"EPSG:{spec.epsg}" and props["proj:shape"] == [spec.height, spec.width]
    with rasterio.open(scene_dir(dest, spec.product_id) / f"{spec.product_id}_QA_PIXEL.TIF") as src:
        assert props["proj:transform"] == pytest.approx(list(src.transform)[:6])
    named = {asset["href"][2:] for asset in item["assets"].values()}
    members = set(built.members)
    produced = {f"{spec.product_id}_thumb_small.jpeg", f"{spec.product_id}_thumb_large.jpeg"}
    assert named - produced <= members, named - produced - members  # no asset for a file the bundle lacks
    assert set(raster_members(built)) <= named  # every raster is an asset
    assert {f"{spec.product_id}_{tail}" for tail in spec.metadata} <= named
    assert item["assets"]["thumbnail"]["href"] == f"./{spec.product_id}_thumb_small.jpeg"
    assert item["assets"]["reduced_resolution_browse"]["href"] == f"./{spec.product_id}_thumb_large.jpeg"


def links_resolve(path: Path, doc: dict[str, Any]) -> None:
    """Every catalogue link of a STAC file is relative and names a file of the tree."""
    for link in doc["links"]:
        if link["rel"] in ("cite-as", "via", "license"):
            assert link["href"].startswith("https://"), link  # references to USGS and DOIs, outside the tree
            continue
        assert not link["href"].startswith(("/", "s3:", "file:", "http")), (path, link)
        assert (path.parent / link["href"]).resolve().is_file(), (path, link)


# ---------------------------------------------------------------- STAC schemas, offline

# The JSON schemas the written documents declare, vendored (tests/data/stac-schemas/SOURCES.md):
# index.json maps each schema's URL to its file; a URL not in it is refused, never fetched.
SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"
CORE_SCHEMAS = {
    "Catalog": "https://schemas.stacspec.org/v1.1.0/catalog-spec/json-schema/catalog.json",
    "Collection": "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json",
    "Feature": "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json",
}


def schema_index() -> dict[str, str]:
    index: dict[str, str] = json.loads((SCHEMAS / "index.json").read_text())
    return index


def _not_vendored(uri: str) -> Resource[Any]:
    raise LookupError(
        f"schema {uri} is not vendored in tests/data/stac-schemas (tests make no network request)"
    )


@functools.cache
def schema_registry() -> Registry[Any]:
    """Every vendored schema under the URL documents and other schemas refer to it by."""
    resources = [
        (url, Resource.from_contents(json.loads((SCHEMAS / rel).read_text()), default_specification=DRAFT7))
        for url, rel in schema_index().items()
    ]
    return Registry(retrieve=_not_vendored).with_resources(resources)  # type: ignore[call-arg]  # attrs alias


def stac_schema_errors(doc: dict[str, Any]) -> list[str]:
    """Every error of ``doc`` against its core schema (STAC 1.1.0) and against the schema of
    each extension in its ``stac_extensions``; a schema not vendored is an error too."""
    if doc.get("stac_version") != "1.1.0":
        return [f"stac_version {doc.get('stac_version')!r}: only 1.1.0's schemas are vendored"]
    errors = []
    index = schema_index()
    for url in [CORE_SCHEMAS[doc["type"]], *doc.get("stac_extensions", [])]:
        if url not in index:
            errors.append(f"{url}: not vendored in tests/data/stac-schemas")
            continue
        validator = Draft7Validator({"$ref": url}, registry=schema_registry())
        for error in validator.iter_errors(doc):
            deepest = best_match([error])  # into anyOf/oneOf: the part that failed, not the whole document
            where = "/".join(str(part) for part in deepest.absolute_path) or "(document)"
            errors.append(f"{url}: {where}: {deepest.message[:200]}")
    return errors


def check_catalogue(dest: Path, expected: set[str]) -> None:
    """pystac walks catalog.json -> collections -> items; every link and asset resolves;
    collection extents cover their items; every document valid against the core STAC schema
    and the schema of every extension it declares (offline, :func:`stac_schema_errors`)."""
    root_doc = json.loads((dest / "catalog.json").read_text())
    assert not stac_schema_errors(root_doc), stac_schema_errors(root_doc)
    links_resolve(dest / "catalog.json", root_doc)
    catalog = pystac.Catalog.from_file(str(dest / "catalog.json"))
    seen: set[str] = set()
    collections = list(catalog.get_children())
    assert {c.id for c in collections} == COLLECTIONS
    for collection in collections:
        assert isinstance(collection, pystac.Collection)
        path = Path(collection.get_self_href())
        doc = json.loads(path.read_text())
        assert not stac_schema_errors(doc), stac_schema_errors(doc)
        links_resolve(path, doc)
        ((west, south, east, north),) = doc["extent"]["spatial"]["bbox"]
        ((start, end),) = doc["extent"]["temporal"]["interval"]
        for item in collection.get_items():
            item_file = Path(item.get_self_href())
            item_doc = json.loads(item_file.read_text())
            assert not stac_schema_errors(item_doc), stac_schema_errors(item_doc)
            links_resolve(item_file, item_doc)
            assert item.get_root().id == catalog.id and item.collection_id == collection.id
            assert (
                west <= item.bbox[0]
                and south <= item.bbox[1]
                and item.bbox[2] <= east
                and item.bbox[3] <= north
            )
            assert start <= item_doc["properties"]["datetime"] <= end
            for key, asset in item.assets.items():
                assert Path(asset.get_absolute_href()).is_file(), (item.id, key)
            seen.add(item.id)
        boxes = [i.bbox for i in collection.get_items()]
        assert [west, south, east, north] == [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
    assert seen == expected


def check_parquet(dest: Path, expected: set[str]) -> None:
    table = pq.read_table(dest / "items.parquet")
    items = list(stac_arrow.stac_table_to_items(table))
    assert {i["id"] for i in items} == expected
    for item in items:
        for key, asset in item["assets"].items():
            assert (dest / asset["href"]).is_file(), (item["id"], key, asset["href"])


def item_ids(product_ids: tuple[str, ...]) -> set[str]:
    return {parse_product_id(p).item_id for p in product_ids}


def normalized(root: Path) -> dict[str, str]:
    """Every published file (not _state) -> a digest of its bytes (``items.parquet``: of the
    items it holds): what two runs of the same bundles must agree on. Item JSONs are compared
    byte for byte, ``created`` included (the MTL's product date, not the time of the run)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("_state/"):
            continue
        if rel == "items.parquet":
            rows = sorted(stac_arrow.stac_table_to_items(pq.read_table(path)), key=lambda i: i["id"])
            data = json.dumps(rows, sort_keys=True, default=str).encode()
        else:
            data = path.read_bytes()
        out[rel] = hashlib.sha1(data).hexdigest()
    return out


# ---------------------------------------------------------------- local runs


def test_bad_bundles_named_with_reasons_everything_else_published(
    local: LocalRuns, bundles: dict[str, BuiltBundle]
):
    proc = local.first
    assert proc.returncode == 30, tail(proc, 40)
    end = tail(proc)
    assert "bundles: 4 in the source: 2 published now, 0 already published, 2 failed" in proc.stderr
    for product_id, reason in BAD.items():
        built = bundles[product_id]
        line = f"FAILED bundle {local.source / Path(built.path).name}: {built.broken_member}: {reason}"
        assert line in end, end
        record = json.loads((local.dest / layout.failure_record(product_id)).read_text())
        assert (record["member"], record["reason"].split(":")[0]) == (built.broken_member, reason)
        assert record["bundle"] == str(local.source / Path(built.path).name)
        assert not scene_dir(local.dest, product_id).exists()  # nothing of it published
    published = {k for k in local.after_first if layout.scene_of_item_key(k) is not None}
    assert published == {layout.item_json(parse_product_id(p)) for p in (OLI_L2, OLI_L1)}
    assert {"catalog.json", "items.parquet", "index.html", "pathrow/047/027/thumbindex.html"} <= set(
        local.after_first
    )


def test_rerun_writes_nothing(local: LocalRuns):
    proc = local.again
    assert proc.returncode == 30, tail(proc, 40)  # the bad bundles are still bad: tried again, named again
    assert "bundles: 4 in the source: 0 published now, 2 already published, 2 failed" in proc.stderr
    assert "catalogue: up to date (nothing rebuilt)" in proc.stderr
    assert local.after_again == local.after_first  # not a byte, not an mtime, _state included


def test_reingest_writes_byte_identical_item_json(
    local: LocalRuns, bundles: dict[str, BuiltBundle], tmp_path: Path
):
    """The same bundle ingested again, elsewhere and later, then once more with --overwrite
    (every file rewritten): its item JSON is the same bytes each time, ``created`` included."""
    source, dest = tmp_path / "bundles", tmp_path / "published"
    link_bundles(bundles, (OLI_L1,), source)
    written = item_path(dest, OLI_L1)
    first = ingest(*scenes_args(source, dest), cwd=tmp_path)
    assert first.returncode == 0, tail(first, 40)
    first_bytes = written.read_bytes()
    again = ingest(*scenes_args(source, dest, "--overwrite"), cwd=tmp_path)
    assert again.returncode == 0, tail(again, 40)
    assert "1 published now" in again.stderr, tail(again, 40)  # really written again
    assert written.read_bytes() == first_bytes == item_path(local.dest, OLI_L1).read_bytes()
    assert json.loads(first_bytes)["properties"]["created"] == "2022-03-09T05:35:53Z"  # the MTL's


def test_more_bundles_are_added_and_what_lists_them_updated(
    local: LocalRuns, bundles: dict[str, BuiltBundle]
):
    proc = local.grown
    assert proc.returncode == 30, tail(proc, 40)
    assert "bundles: 6 in the source: 2 published now, 2 already published, 2 failed" in proc.stderr
    before, after = local.after_again, local.after_grown
    old_scenes = tuple(layout.scene_dir(parse_product_id(p)) + "/" for p in (OLI_L2, OLI_L1))
    old_scene_files = {k: v for k, v in before.items() if k.startswith(old_scenes)}
    assert old_scene_files and all(after[k] == v for k, v in old_scene_files.items())  # untouched
    changed = {k for k in after if before.get(k) != after[k]}
    new = {
        k for k in changed if k.startswith(tuple(layout.scene_dir(parse_product_id(p)) + "/" for p in LATER))
    }
    assert (
        changed - new
        == {
            "items.parquet",
            "index.html",
            "landsat-c2-l2/collection.json",
            "pathrow/047/027/thumbindex.html",
            "pathrow/010/020/thumbindex.html",
            "_state/ingest/built/parquet.json",
            "_state/ingest/built/index.json",
            "_state/ingest/built/collection-landsat-c2-l2.json",
            "_state/ingest/built/pathrow-047-027.json",
            "_state/ingest/built/pathrow-010-020.json",
        }
    )  # fmt: skip  (catalog.json lists the same two collections, the Level-1 one neither new scene: not rewritten)
    l2 = json.loads((local.dest / "landsat-c2-l2/collection.json").read_text())
    ((start, end),) = l2["extent"]["temporal"]["interval"]
    assert start.startswith("1986-02-19") and end.startswith("2020-12-20")
    page = (local.dest / "pathrow/047/027/thumbindex.html").read_text()
    assert all(parse_product_id(p).item_id in page for p in (OLI_L2, OLI_L1, OLI_L2_LATER))


def test_every_cog_valid_and_pixel_identical(local: LocalRuns, bundles: dict[str, BuiltBundle]):
    checked = 0
    for product_id in GOOD:
        check_scene_whole(local.dest, bundles[product_id])
        checked += len(raster_members(bundles[product_id]))
    assert checked == sum(len(bundles[p].spec.raster_suffixes) for p in GOOD) == 74
    tifs = {p.name for p in local.dest.rglob("*.TIF")}
    assert tifs == {name for p in GOOD for name in raster_members(bundles[p])}  # no COG of a bad bundle


def test_items_state_what_the_mtl_states(local: LocalRuns, bundles: dict[str, BuiltBundle]):
    for product_id in GOOD:
        item = json.loads(item_path(local.dest, product_id).read_text())
        check_item(item, bundles[product_id], local.dest)


def test_catalogue_walks_and_every_href_resolves(local: LocalRuns):
    check_catalogue(local.dest, item_ids(GOOD))
    check_parquet(local.dest, item_ids(GOOD))
    for path in local.dest.rglob("*.json"):  # no absolute location anywhere: the tree can move
        assert str(local.dest) not in path.read_text(), path


ISSUE_EXTENSIONS = ("eo", "raster", "view", "projection", "landsat", "classification")
# One change per schema that it must reject: (schema URL part, change to a valid item).
BREAKAGES: list[tuple[str, Any]] = [
    ("/item-spec/json-schema/item.json", lambda d: d.pop("geometry")),
    ("/eo/", lambda d: d["properties"].update({"eo:cloud_cover": 150})),
    ("/projection/", lambda d: d["properties"].update({"proj:code": 32610})),
    ("/view/", lambda d: d["properties"].update({"view:sun_elevation": 120})),
    ("/landsat/", lambda d: d["properties"].pop("landsat:wrs_row")),
    ("/raster/", lambda d: d["assets"]["qa_pixel"]["raster:bands"][0].update({"data_type": "uint17"})),
    ("/classification/", lambda d: d["assets"]["qa_pixel"]["classification:bitfields"][0].update({"offset": -1})),
    ("/sar/v1.0.0/schema.json: not vendored", lambda d: d["stac_extensions"].append(
        "https://stac-extensions.github.io/sar/v1.0.0/schema.json")),
]  # fmt: skip


def test_every_written_document_valid_against_vendored_extension_schemas(local: LocalRuns):
    """Every JSON the run wrote (items, collections, catalog.json) against the core schema and
    each declared extension's schema, offline; the validator rejects a break of each schema."""
    loaded = {path: json.loads(path.read_text()) for path in local.dest.rglob("*.json")}
    docs = {path: doc for path, doc in loaded.items() if "stac_version" in doc}  # not the MTL.json copies
    items = {path: doc for path, doc in docs.items() if doc.get("type") == "Feature"}
    assert len(items) == len(GOOD)
    assert {doc.get("type") for doc in docs.values()} == {"Feature", "Collection", "Catalog"}
    for path, doc in docs.items():
        assert stac_schema_errors(doc) == [], path
    for doc in items.values():
        declared = " ".join(doc["stac_extensions"])
        assert all(f"/{name}/" in declared for name in ISSUE_EXTENSIONS), declared
    valid = items[item_path(local.dest, OLI_L2)]
    for schema_part, breakage in BREAKAGES:
        broken = copy.deepcopy(valid)
        breakage(broken)
        errors = stac_schema_errors(broken)
        assert errors and all(schema_part in error for error in errors), (schema_part, errors)


def test_catalogue_copied_elsewhere_still_walks(local: LocalRuns, tmp_path: Path):
    copy = tmp_path / "synced" / "somewhere"
    shutil.copytree(local.dest, copy)
    check_catalogue(copy, item_ids(GOOD))
    check_parquet(copy, item_ids(GOOD))


# ---------------------------------------------------------------- pages


@pytest.mark.browser
def test_pages_whole_in_chromium(local: LocalRuns):
    from tests.servers.browser import chromium_page

    dest = local.dest.resolve()
    pages = {p for p in dest.rglob("*.html") if "_state" not in p.parts}
    visited: set[Path] = set()
    queue = [dest / "index.html"]
    errors: list[str] = []
    with chromium_page() as page:
        page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
        while queue:
            path = queue.pop()
            if path in visited:
                continue
            visited.add(path)
            page.goto(path.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.src, e.complete && e.naturalWidth > 0])"
            )
            assert all(ok for _, ok in images), (path, images)
            refs = page.eval_on_selector_all("[src], [href]", "els => els.map(e => e.src || e.href)")
            for url in refs:
                assert url.startswith("file://"), (path, url)  # relative links only: nothing external
                target = Path(unquote(urlparse(url).path))
                assert target.is_file() and dest in target.parents, (path, url)
                if target.suffix == ".html" and target not in visited:
                    queue.append(target)
            if path.parent.name.startswith("L") and path.name == "index.html":
                check_scene_page(page, path)
        check_filter(page, dest / "pathrow/047/027/thumbindex.html")
    assert visited == pages  # every page reachable from index.html
    assert errors == []


def check_scene_page(page: Any, path: Path) -> None:
    """Large thumbnail, date, cloud cover, every file with its size, a link to the item."""
    product_id = path.parent.name
    scene = parse_product_id(product_id)
    item = json.loads((path.parent / f"{scene.item_id}.json").read_text())
    rows = page.eval_on_selector_all(
        "#files tbody tr", "rows => rows.map(r => [r.cells[0].innerText, r.cells[2].innerText])"
    )
    on_disk = {
        p.name: p.stat().st_size
        for p in path.parent.iterdir()
        if p.name not in ("index.html", f"{scene.item_id}.json")
    }
    assert {name: int(size) for name, size in rows} == on_disk
    facts = page.inner_text("#scene-facts")
    assert item["properties"]["datetime"][:10] in facts
    assert f"{item['properties']['eo:cloud_cover']:g} %" in facts
    assert (
        page.eval_on_selector("#thumb-large", "e => e.getAttribute('src')")
        == f"./{product_id}_thumb_large.jpeg"
    )
    assert page.locator(f"a[href='./{scene.item_id}.json']").count() >= 1


def check_filter(page: Any, path: Path) -> None:
    page.goto(path.as_uri(), wait_until="load")
    visible = (
        "() => Array.from(document.querySelectorAll('#scenes figure')).filter(f => !f.hidden).map(f => f.id)"
    )
    assert set(page.evaluate(visible)) == item_ids((OLI_L2, OLI_L1, OLI_L2_LATER))
    page.evaluate(
        "() => { const r = document.getElementById('max-cloud'); r.value = '20'; r.dispatchEvent(new Event('input')); }"
    )
    assert set(page.evaluate(visible)) == item_ids((OLI_L2, OLI_L1))  # 1.55 % and 12.38 %, not 37.21 %
    assert page.inner_text("#shown") == "2 of 3 scenes"
    page.select_option("#year", "2022")
    assert set(page.evaluate(visible)) == item_ids((OLI_L1,))


# ---------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def s3_bundles(s3_server: Any, bundles: dict[str, BuiltBundle]) -> str:
    s3_server.create_bucket("ingest-source")
    client = s3_server.client()
    for built in bundles.values():
        client.upload_file(built.path, "ingest-source", f"bulk-order/{Path(built.path).name}")
    return "s3://ingest-source/bulk-order"


@pytest.mark.s3
def test_s3_source_to_s3_destination(s3_server: Any, s3_bundles: str, local: LocalRuns, tmp_path: Path):
    s3_server.create_bucket("ingest-dest")
    env = luigi_env({**ENV, **s3_server.env()})
    dest = "s3://ingest-dest/landsat"
    proc = ingest(*scenes_args(s3_bundles, dest), cwd=tmp_path, env=env)
    assert proc.returncode == 30, tail(proc, 40)
    for product_id, reason in BAD.items():
        assert f"FAILED bundle {s3_bundles}/{product_id}.tar: " in proc.stderr and f": {reason}" in tail(proc)
    copy = tmp_path / "synced"
    s3_server.fs().get("ingest-dest/landsat", str(copy), recursive=True)
    check_catalogue(copy, item_ids(GOOD))
    check_parquet(copy, item_ids(GOOD))
    assert normalized(copy) == normalized(local.dest)  # the same tree, byte for byte, as from local disk
    s3_server.reset_counts()
    again = ingest(*scenes_args(s3_bundles, dest), cwd=tmp_path, env=env)
    assert again.returncode == 30 and "catalogue: up to date" in again.stderr
    writes = s3_server.request_counts("ingest-dest")
    assert (writes["PUT"], writes["POST"], writes["DELETE"]) == (0, 0, 0), writes


# ---------------------------------------------------------------- kill -9


def written_since(path: Path, since: float) -> bool:
    """Whether a file under ``path`` was written after ``since`` (time.time())."""
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                if os.stat(os.path.join(directory, name)).st_mtime > since:
                    return True
            except FileNotFoundError:
                continue
    return False


def wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {pgid} still alive after SIGKILL")


def check_nothing_half_published(dest: Path, bundles: dict[str, BuiltBundle]) -> int:
    """Every item JSON's scene is whole; every COG under its final name is whole. Returns the
    number of published scenes."""
    by_item = {layout.item_json(parse_product_id(p)): bundles[p] for p in bundles}
    published = 0
    for path in dest.rglob("*.json"):
        rel = path.relative_to(dest).as_posix()
        if layout.scene_of_item_key(rel) is not None:
            assert rel in by_item and by_item[rel].spec.product_id in GOOD, rel
            check_scene_whole(dest, by_item[rel])
            published += 1
    for path in dest.rglob("*.TIF"):  # published or not, a file under its name is complete
        assert cog_validate(str(path), strict=True, quiet=True)[0], path
    return published


def test_kill_9_never_leaves_an_item_without_its_files(
    bundles: dict[str, BuiltBundle], local: LocalRuns, tmp_path: Path
):
    source, dest = tmp_path / "bundles", tmp_path / "published"
    link_bundles(bundles, (*FIRST, *LATER), source)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills: list[tuple[float, int]] = []
    # kill within the time the conversions take: twice what the grown run spent on its two new scenes
    match = re.search(r"([0-9.,]+) s publishing", local.grown.stderr)
    assert match is not None, tail(local.grown)
    window = 2 * float(match.group(1).replace(",", ""))
    for _ in range(3):
        proc = subprocess.Popen(
            [LUIGI, "--module", MODULE, *scenes_args(source, dest)], cwd=tmp_path, env=luigi_env(ENV),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        started, deadline = time.time(), time.monotonic() + 120
        while proc.poll() is None and not written_since(dest, started) and time.monotonic() < deadline:
            time.sleep(0.02)  # the run is converting: its first new file is there
        delay = rng.uniform(0.0, window)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_group_gone(proc.pid)
        kills.append((round(delay, 3), check_nothing_half_published(dest, bundles)))
    print(f"kill -9 seed {seed}: (seconds after the run's first file, scenes published then) {kills}")
    final = ingest(*scenes_args(source, dest), cwd=tmp_path)
    assert final.returncode == 30, (seed, kills, tail(final, 40))
    assert check_nothing_half_published(dest, bundles) == len(GOOD)
    assert normalized(dest) == normalized(local.dest), (seed, kills)
    leftovers = [p for p in dest.rglob(".*") if p.name != ".gitkeep"]
    assert not leftovers, (seed, kills, leftovers)  # a killed writer's temporaries swept by the rerun


# ---------------------------------------------------------------- dry run


@pytest.mark.s3
def test_dry_run_counts_and_writes_nothing(s3_server: Any, s3_bundles: str, bundles: dict[str, BuiltBundle], local: LocalRuns,
                                           tmp_path: Path):  # fmt: skip
    listing = tmp_path / "order.txt"
    local_copy = tmp_path / "local-bundles"
    link_bundles(bundles, (OLI_L1, TM_L2, MISSING_RED), local_copy)
    lines = ["# a bulk order: three bundles in S3, three on disk", f"{s3_bundles}/{OLI_L2}.tar", f"{s3_bundles}/{TRUNCATED}.tar",
             f"{s3_bundles}/{OLI_L2_LATER}.tgz", "", f"local-bundles/{OLI_L1}.tar", str(local_copy / f"{TM_L2}.tar.gz"),
             f"local-bundles/{MISSING_RED}.tar"]  # fmt: skip
    listing.write_text("\n".join(lines) + "\n")
    env = luigi_env({**ENV, **s3_server.env()})
    before = snapshot(local.dest)
    done = ingest(
        "IngestDryRun",
        "--source",
        str(listing),
        "--dest",
        str(local.dest),
        "--local-scheduler",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, tail(done, 40)
    assert "6 bundles: 0 to do, 4 already published, 2 bad" in done.stderr
    for href, product_id in (
        (f"{s3_bundles}/{TRUNCATED}.tar", TRUNCATED),
        (local_copy / f"{MISSING_RED}.tar", MISSING_RED),
    ):
        assert f"BAD {href}: {bundles[product_id].broken_member}: {BAD[product_id]}" in done.stderr, tail(
            done, 20
        )
    assert snapshot(local.dest) == before
    fresh = tmp_path / "fresh"
    todo = ingest(
        "IngestDryRun",
        "--source",
        str(listing),
        "--dest",
        str(fresh),
        "--local-scheduler",
        cwd=tmp_path,
        env=env,
    )
    assert todo.returncode == 0, tail(todo, 40)
    specs = [bundles[p].spec for p in GOOD]
    scene_objects = sum(len(s.raster_suffixes) + len(s.metadata) + 4 for s in specs)
    catalogue_objects = 2 + 2 + 3  # two collections, two path/rows, catalog.json, items.parquet, index.html
    bundle_mb = sum(os.path.getsize(bundles[p].path) for p in GOOD) / 1e6
    assert f"4 to do, 0 already published, 2 bad; bytes in {bundle_mb:,.1f} MB" in todo.stderr
    assert f"objects out {scene_objects + catalogue_objects} ({scene_objects} scene files" in todo.stderr
    assert not fresh.exists()


def with_junk_member(built: BuiltBundle, suffix: str, directory: Path) -> tuple[Path, str]:
    """A copy of ``built`` whose raster ``suffix`` holds junk of the same length: a whole tar
    that lists every band, with one member no GDAL driver reads (found only when converting)."""
    name = f"{built.spec.product_id}_{suffix}.TIF"
    out = directory / Path(built.path).name
    mode = "w" if built.path.endswith(".tar") else "w:gz"
    with tarfile.open(built.path) as source, tarfile.open(out, mode, format=tarfile.USTAR_FORMAT) as target:
        for info in source.getmembers():
            data = source.extractfile(info).read()  # type: ignore[union-attr]
            target.addfile(
                info, io.BytesIO((b"junk" * len(data))[: len(data)] if info.name == name else data)
            )
    return out, name


def test_unreadable_member_found_while_converting_publishes_nothing(tmp_path: Path):
    """The bad member is found after other COGs of the scene were written: they are removed."""
    specs = demo_specs(300, 300)
    oli = replace(
        specs[0], product_id="LC08_L2SP_045030_20210105_20210309_02_T1", width=300, height=300, seed=11
    )
    tm = replace(
        specs[1], product_id="LT05_L2SP_045031_19900612_20200915_02_T1", width=300, height=300, seed=12
    )
    made = tmp_path / "made"
    source = tmp_path / "bundles"
    source.mkdir()
    broken = [
        with_junk_member(build_bundle(str(made), oli), "SR_B5", source),
        with_junk_member(build_bundle(str(made), tm), "QA_PIXEL", source),
    ]
    dest = tmp_path / "published"
    proc = ingest(*scenes_args(source, dest), cwd=tmp_path)
    assert proc.returncode == 30, tail(proc, 40)
    for path, member in broken:
        assert f"FAILED bundle {path}: {member}: unreadable raster" in tail(proc), tail(proc)
        record = json.loads((dest / layout.failure_record(path.name.split(".")[0])).read_text())
        assert record["member"] == member and record["reason"].startswith("unreadable raster")
    assert not (dest / "collection02").exists() or not any(
        p.is_file() for p in (dest / "collection02").rglob("*")
    )
    assert not (dest / "items.parquet").exists() and not (dest / "index.html").exists()
    catalog = json.loads((dest / "catalog.json").read_text())
    assert [link["rel"] for link in catalog["links"]] == [
        "root"
    ]  # a catalogue of nothing, and no dangling link


def test_bad_source_is_refused_before_anything_runs(tmp_path: Path):
    listing = tmp_path / "order.txt"
    listing.write_text("# nothing here yet\nmissing/LC08_L2SP_047027_20201204_20210313_02_T1.tar\n")
    proc = ingest(*scenes_args(listing, tmp_path / "dest"), cwd=tmp_path)
    assert proc.returncode != 0
    assert f"{listing}, line 2, field 'source'" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "dest").exists()
