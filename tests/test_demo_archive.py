"""Tests of the synthetic Landsat C2 ARD archive generator (pipeline.demo.archive).

One small archive is built per module (a few seconds) and checked against what real
``landsat-c2ard-sr`` items and COGs look like, and against the generator's own truth table.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from pipeline.demo.archive import (
    ASSETS,
    BANDS,
    BUCKET,
    SENSORS,
    ArchiveSpec,
    BuiltArchive,
    build_archive,
    demo_spec,
    main,
    plan_archive,
    small_spec,
)
from pipeline.grid import PIXEL_SIZE, TILE_SIZE, Tile, chip_tiles, get_region, pixel_of, tile_of

REGION = get_region("CU")
CHIP = 255
ID_RE = re.compile(r"^(LT05|LE07|LC08|LC09)_CU_(\d{3})(\d{3})_(\d{8})_(\d{8})_02_SR$")
S3_RE = re.compile(
    r"^s3://usgs-landsat-ard/collection02/(tm|etm|oli-tirs)/(\d{4})/CU/(\d{3})/(\d{3})/"
    r"((?:LT05|LE07|LC08|LC09)_CU_\d{6}_\d{8}_\d{8}_02)/\5_(SR_B[1-7]|QA_PIXEL)\.TIF$"
)
FOLDER = {"LT05": "tm", "LE07": "etm", "LC08": "oli-tirs", "LC09": "oli-tirs"}
FILES = {
    "tm": dict(zip(BANDS, ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"), strict=True)),
    "oli": dict(zip(BANDS, ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"), strict=True)),
}


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arc(tmp_path_factory: pytest.TempPathFactory) -> BuiltArchive:
    return build_archive(tmp_path_factory.mktemp("ard") / "archive", small_spec())


def frac_digits(dt: str) -> int:
    m = re.search(r"T\d\d:\d\d:\d\d(?:\.(\d+))?Z$", dt)
    assert m, dt
    return len(m.group(1) or "")


def parse_dt(dt: str) -> datetime:
    """Lenient: truncate the fraction to 6 digits (Python cannot take 7)."""
    head, _, frac = dt.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + (f".{frac[:6]:0<6}" if frac else ""))


def items_by_date(arc: BuiltArchive) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for it in arc.items:
        out[it["properties"]["datetime"][:10]].append(it)
    return out


def own_item(arc: BuiltArchive, plot: dict, day: str) -> dict | None:
    """The item of the plot's own tile on that date, if any."""
    hv = plot["tile"]
    for it in items_by_date(arc)[day]:
        p = it["properties"]
        if p["landsat:grid_horizontal"] + p["landsat:grid_vertical"] == hv:
            return it
    return None


def read_centre(item: dict, x: int, y: int) -> tuple[int, list[int]]:
    """QA and the six SR DNs of the pixel containing (x, y), located as the spec says."""
    values = {}
    for asset in ASSETS:
        with rasterio.open(item["assets"][asset]["href"]) as ds:
            row, col = pixel_of(tuple(ds.transform)[:6], x, y)
            values[asset] = int(ds.read(1, window=Window(col, row, 1, 1))[0, 0])
    return values["qa_pixel"], [values[b] for b in BANDS]


def read_chip(item: dict, x: int, y: int, asset: str) -> np.ndarray:
    with rasterio.open(item["assets"][asset]["href"]) as ds:
        row, col = pixel_of(tuple(ds.transform)[:6], x, y)
        fill = ds.nodata
        return ds.read(
            1, window=Window(col - CHIP // 2, row - CHIP // 2, CHIP, CHIP), boundless=True, fill_value=fill
        )


def far_pixel(arc: BuiltArchive, transform) -> tuple[int, int]:
    """(row, col) of a pixel of this raster more than 300 px from every plot."""
    for row, col in ((2, 2), (2, 4997), (4997, 2), (4997, 4997), (2500, 10), (10, 2500)):
        x, y = transform @ (col + 0.5, row + 0.5)
        if all(max(abs(x - p["x"]), abs(y - p["y"])) > 300 * PIXEL_SIZE for p in arc.plots):
            return row, col
    raise AssertionError("no pixel far from the plots")


# ---------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------


def test_catalogue_files_agree_and_are_shuffled(arc: BuiltArchive) -> None:
    lines = arc.catalog_ndjson.read_text().splitlines()
    ndjson = [json.loads(line) for line in lines]
    fc = json.loads(arc.catalog_geojson.read_text())
    assert fc["type"] == "FeatureCollection"
    assert [f["id"] for f in fc["features"]] == [i["id"] for i in ndjson] == [i["id"] for i in arc.items]
    assert fc["features"] == ndjson
    assert len({i["id"] for i in ndjson}) == len(ndjson) >= 20
    # Deterministically shuffled: neither by id nor by datetime.
    ids = [i["id"] for i in ndjson]
    times = [parse_dt(i["properties"]["datetime"]) for i in ndjson]
    assert ids != sorted(ids) and times != sorted(times)
    coll = json.loads(arc.collection_json.read_text())
    assert coll["id"] == "landsat-c2ard-sr" and coll["type"] == "Collection"


def test_item_ids_and_properties(arc: BuiltArchive) -> None:
    crs = CRS.from_proj4(REGION.proj4)
    spec_tiles = {Tile(h, v) for h, v in small_spec().tiles}
    for it in arc.items:
        m = ID_RE.match(it["id"])
        assert m, it["id"]
        sensor, hhh, vvv, acq, proc = m.groups()
        p = it["properties"]
        assert it["type"] == "Feature" and it["stac_version"] == "1.0.0"
        assert it["collection"] == "landsat-c2ard-sr"
        assert p["landsat:grid_horizontal"] == f"{int(hhh):02d}" and len(p["landsat:grid_horizontal"]) == 2
        assert p["landsat:grid_vertical"] == f"{int(vvv):02d}" and len(p["landsat:grid_vertical"]) == 2
        assert p["landsat:grid_region"] == "CU"
        tile = Tile(int(hhh), int(vvv))
        assert tile in spec_tiles
        assert p["platform"] == SENSORS[sensor].platform
        assert p["instruments"] == list(SENSORS[sensor].instruments)
        assert p["datetime"][:10].replace("-", "") == acq and proc >= acq
        assert p["proj:epsg"] is None
        assert p["proj:shape"] == [5000, 5000]
        ulx, uly = tile.origin(REGION)
        assert p["proj:transform"] == [30, 0, ulx, 0, -30, uly]
        assert CRS.from_wkt(p["proj:wkt2"]) == crs
        assert 1 <= p["landsat:scene_count"] <= 3
        assert 0 <= p["eo:cloud_cover"] <= 100 and 0 <= p["landsat:fill"] < 100
        for key in ("start_datetime", "end_datetime", "created", "updated"):
            assert key in p
        assert parse_dt(p["start_datetime"]) <= parse_dt(p["datetime"]) <= parse_dt(p["end_datetime"])
        # Geometry in lon/lat inside the bbox, and roughly over Oregon for tiles 3-4 / 4-5.
        ring = it["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]
        w, s, e, n = it["bbox"]
        assert all(w <= lon <= e and s <= lat <= n for lon, lat in ring)
        assert -125 < w < e < -118 and 40 < s < n < 46
        assert {link["rel"] for link in it["links"]} >= {"self", "parent", "collection", "root"}


def test_datetimes_sensors_and_tiles_per_acquisition(arc: BuiltArchive) -> None:
    digits = {frac_digits(i["properties"]["datetime"]) for i in arc.items}
    assert {0, 7} <= digits and len(digits) == 8
    sensors = {i["id"][:4] for i in arc.items}
    assert sensors == {"LT05", "LE07", "LC08", "LC09"}
    days = {date.fromisoformat(i["properties"]["datetime"][:10]) for i in arc.items}
    assert any(d > date(2022, 12, 31) for d in days)
    assert any(d < date(1990, 1, 1) for d in days)
    for it in arc.items:
        s = SENSORS[it["id"][:4]]
        assert s.first <= date.fromisoformat(it["properties"]["datetime"][:10]) <= s.last
    groups = items_by_date(arc)
    sizes = [len(g) for g in groups.values()]
    assert max(sizes) == 4 and min(sizes) < 4  # usually several tiles, not always all
    for g in groups.values():
        assert len({i["id"][:4] for i in g}) == 1  # one acquisition, one sensor
        assert len(
            {
                (i["properties"]["landsat:grid_horizontal"], i["properties"]["landsat:grid_vertical"])
                for i in g
            }
        ) == len(g)
    # Items of one acquisition differ by seconds between tile rows (as on the real server).
    assert any(len({i["properties"]["datetime"][:19] for i in g}) > 1 for g in groups.values())


def test_assets_are_local_files_at_their_bucket_keys(arc: BuiltArchive) -> None:
    n_files = 0
    for it in arc.items:
        sensor = it["id"][:4]
        family = "oli" if sensor in ("LC08", "LC09") else "tm"
        assert set(it["assets"]) >= set(ASSETS)
        for asset in ASSETS:
            a = it["assets"][asset]
            href, s3 = Path(a["href"]), a["alternate"]["s3"]["href"]
            assert href.is_absolute() and href.is_file()
            m = S3_RE.match(s3)
            assert m, s3
            folder, year, hhh, vvv, product_id, suffix = m.groups()
            assert folder == FOLDER[sensor]
            assert year == it["properties"]["datetime"][:4]
            assert (hhh, vvv) == (
                f"{int(it['properties']['landsat:grid_horizontal']):03d}",
                f"{int(it['properties']['landsat:grid_vertical']):03d}",
            )
            assert it["id"] == product_id + "_SR"
            assert suffix == ("QA_PIXEL" if asset == "qa_pixel" else FILES[family][asset])
            assert href == arc.bucket_dir / s3.removeprefix(f"s3://{BUCKET}/") == arc.local_path(s3)
            assert a["alternate"]["s3"]["storage:requester_pays"] is True
            assert a["type"] == "image/vnd.stac.geotiff; cloud-optimized=true"
            n_files += 1
    # Nothing else in the bucket: uploading it reproduces exactly the catalogued keys.
    assert sorted(p for p in arc.bucket_dir.rglob("*") if p.is_file()) == sorted(
        Path(it["assets"][a]["href"]) for it in arc.items for a in ASSETS
    )
    assert n_files == arc.n_files == 7 * len(arc.items)


# ---------------------------------------------------------------------------------------------
# Rasters
# ---------------------------------------------------------------------------------------------


def test_rasters_are_cogs_on_the_tile_grid(arc: BuiltArchive) -> None:
    crs = CRS.from_proj4(REGION.proj4)
    for k, it in enumerate(arc.items):
        for asset in ASSETS if k < 3 else ("blue", "qa_pixel"):  # all bands of a few items
            with rasterio.open(it["assets"][asset]["href"]) as ds:
                assert ds.driver == "GTiff" and (ds.width, ds.height, ds.count) == (5000, 5000, 1)
                assert ds.dtypes == ("uint16",)
                assert ds.block_shapes == [(256, 256)]
                assert ds.profile["compress"] == "deflate" and ds.profile["tiled"]
                assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert ds.overviews(1)[:3] == [2, 4, 8]
                assert ds.nodata == (1 if asset == "qa_pixel" else 0)
                assert ds.crs == crs
                assert list(ds.transform)[:6] == [float(v) for v in it["properties"]["proj:transform"]]
                # Far from every plot nothing is written: it reads back as fill.
                row, col = far_pixel(arc, ds.transform)
                assert int(ds.read(1, window=Window(col, row, 1, 1))[0, 0]) == ds.nodata


def test_overviews_are_nearest_neighbour_decimations(arc: BuiltArchive) -> None:
    item = max(arc.items, key=lambda it: Path(it["assets"]["blue"]["href"]).stat().st_size)
    for asset in ("blue", "qa_pixel"):
        href = item["assets"][asset]["href"]
        with rasterio.open(href) as ds:
            full = ds.read(1)
            factors = ds.overviews(1)
        assert factors == [2, 4, 8, 16, 32]
        for level, f in enumerate(factors):
            with rasterio.open(href, overview_level=level) as ov:
                o = ov.read(1)
                assert ov.block_shapes == [(256, 256)] and o.shape == (-(-5000 // f),) * 2
            dec = full[f // 2 :: f, f // 2 :: f]
            assert np.array_equal(o[: dec.shape[0], : dec.shape[1]], dec)
            assert (o[dec.shape[0] :] == ov.nodata).all() and (o[:, dec.shape[1] :] == ov.nodata).all()
            assert (o != ov.nodata).any()


def test_centre_pixels_match_the_truth_table(arc: BuiltArchive) -> None:
    for plot in arc.plots:
        for rec in plot["dates"]:
            if rec["status"] == "absent":
                continue
            item = own_item(arc, plot, rec["date"])
            if rec["qa"] is None:  # no item for the plot's own tile: the spec counts it as fill
                assert rec["status"] == "fill" and item is None
                continue
            qa, dn = read_centre(item, plot["x"], plot["y"])
            assert (qa, dn) == (rec["qa"], rec["dn"]), (plot["plot_id"], rec)
            assert (qa == 1) == (rec["status"] == "fill") == (dn == [0] * 6)


def test_qa_classes_present_at_plot_centres(arc: BuiltArchive) -> None:
    qas = [d["qa"] for p in arc.plots for d in p["dates"] if d["qa"] is not None]
    statuses = {d["status"] for p in arc.plots for d in p["dates"]}
    assert {"clear", "water", "snow", "shadow", "cloud", "fill", "absent"} <= statuses
    assert 21824 in qas and 5440 in qas  # clear land, OLI and TM/ETM+
    assert any(q & 1 for q in qas)  # fill
    assert any(q & 0b1010 and not q & 0b1000000 for q in qas)  # cloud / dilated, clear bit off
    assert any(q & 0b10000 for q in qas)  # cloud shadow
    assert any(q & 0b100000 for q in qas)  # snow
    water = arc.plots_of_kind("water")[0]
    wq = [d["qa"] for d in water["dates"] if d["status"] == "water"]
    assert wq and all(q & 0b10000000 for q in wq)
    assert 5504 in wq and not 5504 & 0b1000000  # TM water: bit 7 without the clear bit


def test_fill_centre_plot(arc: BuiltArchive) -> None:
    plot = arc.plots_of_kind("fill-centre")[0]
    assert plot["fill_dates"] and plot["observation_dates"]
    for day in plot["fill_dates"]:
        item = own_item(arc, plot, day)
        assert item is not None  # the tile has an item; only the centre side of the edge is fill
        qa = read_chip(item, plot["x"], plot["y"], "qa_pixel")
        blue = read_chip(item, plot["x"], plot["y"], "blue")
        assert qa[CHIP // 2, CHIP // 2] == 1 and blue[CHIP // 2, CHIP // 2] == 0
        valid = qa != 1
        assert valid.sum() > 2000  # valid pixels elsewhere in the chip
        # A diagonal swath edge: the fill/valid boundary moves across the chip from top to bottom.
        first_fill_col = [int(np.argmax(~r)) if r[0] else int(np.argmax(r)) for r in valid]
        assert abs(first_fill_col[0] - first_fill_col[-1]) > 30


def test_sr_values_qa_consistency_and_tricky_pixels(arc: BuiltArchive) -> None:
    groups = items_by_date(arc)
    saw_negative = saw_one_zero = 0
    for plot in arc.plots:
        for rec in plot["dates"][:4]:
            for it in groups[rec["date"]]:
                tiles = chip_tiles(REGION, plot["x"], plot["y"], CHIP, CHIP)
                hv = it["properties"]["landsat:grid_horizontal"] + it["properties"]["landsat:grid_vertical"]
                if hv not in {t.hv for t in tiles}:
                    continue
                sr = np.stack([read_chip(it, plot["x"], plot["y"], b) for b in BANDS]).astype(np.int64)
                qa = read_chip(it, plot["x"], plot["y"], "qa_pixel")
                all_zero = (sr == 0).all(axis=0)
                assert np.array_equal(all_zero, qa == 1)  # fill exactly where every band is 0
                assert sr.max() <= 43636
                saw_negative += int(((sr >= 1) & (sr <= 7272)).sum())
                saw_one_zero += int(((sr == 0).sum(axis=0) == 1).sum())
    assert saw_negative > 100 and saw_one_zero > 10
    # Pinned centre values (truncation toward zero and single-band-zero masking cases).
    pinned = {
        (p["plot_id"], p["project_id"]): d["pinned"] for p in arc.plots for d in p["dates"] if "pinned" in d
    }
    assert {"blue": 1, "red": 7272, "swir22": 7001} in pinned.values()
    assert {"swir22": 0} in pinned.values()


def test_disturbance_shows_in_the_time_series(arc: BuiltArchive) -> None:
    plot = arc.plots_of_kind("interior-disturbed")[0]
    year = plot["disturbance"]["year"]
    clear = [d for d in plot["dates"] if d["status"] == "clear" and "pinned" not in d]
    before = [d for d in clear if d["year"] + d["doy"] / 366 < year]
    after = [d for d in clear if d["year"] + d["doy"] / 366 > year]
    assert before and after  # guaranteed for every seed
    nir, swir1 = BANDS.index("nir08"), BANDS.index("swir16")
    assert before[-1]["dn"][nir] - after[0]["dn"][nir] > 1500  # vegetation loss
    assert after[0]["dn"][swir1] - before[-1]["dn"][swir1] > 1000  # exposed soil


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def test_plot_file(arc: BuiltArchive) -> None:
    with arc.plot_file.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["project_id", "plot_id", "x", "y"]
    body = rows[1:]
    assert [(r[0], r[1], int(r[2]), int(r[3])) for r in body] == [
        (p["project_id"], p["plot_id"], p["x"], p["y"]) for p in arc.plots
    ]
    assert all(re.fullmatch(r"-?\d+", r[2]) and re.fullmatch(r"-?\d+", r[3]) for r in body)
    projects = {r[0] for r in body}
    assert len(projects) == 2 and "0042" in projects  # ids are strings: leading zeros kept
    assert ("0042", "007") in {(r[0], r[1]) for r in body}
    assert sum(r[1] == "001" for r in body) == 2  # same plot id in both projects
    assert len({(r[0], r[1]) for r in body}) == len(body)


def test_special_plot_geometry(arc: BuiltArchive) -> None:
    spec_tiles = {Tile(h, v) for h, v in small_spec().tiles}

    def one(kind: str) -> dict:
        (p,) = arc.plots_of_kind(kind)
        return p

    def chip(p: dict) -> list[Tile]:
        return chip_tiles(REGION, p["x"], p["y"], CHIP, CHIP)

    for p in arc.plots:
        assert set(chip(p)) <= spec_tiles  # every chip is inside the archive
        assert [t.hv for t in chip(p)] == p["chip_tiles"]
        assert tile_of(REGION, p["x"], p["y"]).hv == p["tile"]
    for kind in ("interior", "interior-disturbed", "fill-centre", "water", "pixel-edge"):
        assert len(chip(one(kind))) == 1
    v = chip(one("vertical-edge"))
    assert len(v) == 2 and v[0].v == v[1].v and v[1].h == v[0].h + 1
    h = chip(one("horizontal-edge"))
    assert len(h) == 2 and h[0].h == h[1].h and h[1].v == h[0].v + 1
    # The plot is in the southern tile, but the first tile in search order is the northern one.
    assert tile_of(REGION, one("horizontal-edge")["x"], one("horizontal-edge")["y"]) == h[1]
    assert len(chip(one("corner"))) == 4
    corner_pt = one("tile-corner-point")
    t = tile_of(REGION, corner_pt["x"], corner_pt["y"])
    assert (corner_pt["x"], corner_pt["y"]) == t.origin(REGION) and len(chip(corner_pt)) == 4
    edge = one("pixel-edge")
    assert (edge["x"] - REGION.x0) % PIXEL_SIZE == 0 and (REGION.y0 - edge["y"]) % PIXEL_SIZE == 0
    assert (edge["x"] - REGION.x0) % TILE_SIZE != 0 and (REGION.y0 - edge["y"]) % TILE_SIZE != 0
    for kind in ("interior", "vertical-edge", "corner"):  # ordinary plots sit on pixel centres
        p = one(kind)
        assert (p["x"] - REGION.x0) % PIXEL_SIZE == 15 and (REGION.y0 - p["y"]) % PIXEL_SIZE == 15
    hosts = defaultdict(int)
    for p in arc.plots:
        hosts[p["tile"]] += 1
    assert max(hosts.values()) >= 2  # plots share tiles


# ---------------------------------------------------------------------------------------------
# Determinism, spec validation, CLI
# ---------------------------------------------------------------------------------------------


def test_equal_seeds_give_identical_archives(arc: BuiltArchive, tmp_path: Path) -> None:
    # White-box on purpose: a second full build would double this module's run time, so the
    # same seed is re-planned, the whole catalogue regenerated, and a few items' COGs rewritten.
    from pipeline.demo.archive import _stac_item, _write_item_rasters

    again = plan_archive(small_spec())
    by_id = {it["id"]: it for it in arc.items}
    assert sorted(by_id) == sorted(ip.item_id for ip in again.items)
    for ip in again.items:
        assert _stac_item(again, ip, arc.bucket_dir) == by_id[ip.item_id]
    biggest = sorted(
        again.items, key=lambda ip: -Path(by_id[ip.item_id]["assets"]["blue"]["href"]).stat().st_size
    )
    for ip in biggest[:2] + again.items[-1:]:
        _write_item_rasters(again, ip, tmp_path)
        for asset in ASSETS:
            built = Path(by_id[ip.item_id]["assets"][asset]["href"])
            rewritten = tmp_path / built.relative_to(arc.bucket_dir)
            assert (
                hashlib.sha256(rewritten.read_bytes()).digest() == hashlib.sha256(built.read_bytes()).digest()
            )
    other = plan_archive(small_spec(seed=1))
    assert sorted(i.item_id for i in other.items) != sorted(by_id)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="2 x 2"):
        ArchiveSpec(tiles=((3, 4), (5, 5)))
    with pytest.raises(ValueError, match="n_acquisitions"):
        ArchiveSpec(n_acquisitions=3)
    with pytest.raises(ValueError, match="outside"):
        ArchiveSpec(tiles=((32, 4), (33, 4), (32, 5), (33, 5)))
    with pytest.raises(ValueError, match="odd"):
        ArchiveSpec(chip_size=256)
    demo = demo_spec()
    assert demo.n_acquisitions >= 40 and demo.n_extra_plots > 0
    assert replace(demo, seed=3).seed == 3


def test_cli(arc: BuiltArchive, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--small" in capsys.readouterr().out
    assert main([str(arc.root), "--small"]) == 2  # refuses to overwrite without --force
    assert "already holds" in capsys.readouterr().err
