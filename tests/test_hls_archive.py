"""The synthetic HLS v2 archive (pipeline.demo.hls_archive): STAC items shaped like Planetary
Computer's hls2-l30 / hls2-s30, real COGs on the real MGRS grids, every Fmask and fill case,
and the points the HLS workflow's tests rely on (inside, edge, unplaced)."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from rasterio.windows import from_bounds

from pipeline.demo import hls_archive as H

ID_RE = re.compile(r"^HLS\.(L30|S30)\.T(\d{1,2}[C-X][A-Z]{2})\.(\d{4})(\d{3})T(\d{6})\.v2\.0$")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> H.HlsArchive:
    return H.build_hls_archive(tmp_path_factory.mktemp("hls"), H.small_hls_spec(seed=1))


def _read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _when(item: dict) -> datetime:
    return datetime.strptime(item["properties"]["datetime"], "%Y-%m-%dT%H:%M:%S.%fZ")


def _tile(item: dict) -> str:
    return item["id"].split(".")[2][1:]


# -- STAC items --------------------------------------------------------------------------------


def test_items_round_trip_through_pystac(archive):
    assert len(archive.items) >= 20
    for doc in archive.items:
        item = pystac.Item.from_dict(doc, migrate=False)
        assert item.id == doc["id"] and item.collection_id == doc["collection"]
        assert item.datetime is not None and item.datetime.tzinfo is not None
        back = item.to_dict(transform_hrefs=False)  # no network: the links point at PC
        for key in (
            "type",
            "id",
            "geometry",
            "bbox",
            "properties",
            "assets",
            "collection",
            "stac_extensions",
        ):
            assert back[key] == doc[key], key
        assert {link["rel"] for link in back["links"]} == {"collection", "parent", "root", "self"}
        proj = pystac.extensions.projection.ProjectionExtension.ext(item)
        assert proj.epsg == 32610
        assert proj.shape == doc["properties"]["proj:shape"]
        for key in H.READ_ASSETS[doc["collection"]]:
            asset = item.assets[key]
            assert asset.media_type == H.COG_TYPE and asset.roles == ["data"]
            bands = pystac.extensions.eo.EOExtension.ext(asset).bands
            assert bands is not None and bands[0].name == key


def test_items_look_like_planetary_computer_hls2(archive):
    ids = [i["id"] for i in archive.items]
    assert len(set(ids)) == len(ids)
    for item in archive.items:
        m = ID_RE.match(item["id"])
        assert m, item["id"]
        product, _tile_id, year, doy, hms = m.groups()
        assert item["collection"] == H.COLLECTION_OF[product]
        p = item["properties"]
        assert DATETIME_RE.match(p["datetime"]), p["datetime"]
        when = _when(item)
        assert (when.year, when.timetuple().tm_yday, when.strftime("%H%M%S")) == (int(year), int(doy), hms)
        assert p["platform"] in H.PLATFORMS[product]
        assert 0 <= p["eo:cloud_cover"] <= 100
        assert p["proj:epsg"] == 32610
        assert (
            len(p["proj:transform"]) == 6 and p["proj:transform"][0] == 30 and p["proj:transform"][4] == -30
        )
        assert set(H.STAC_EXTENSIONS) <= set(item["stac_extensions"])
        assert set(H.READ_ASSETS[item["collection"]]) <= set(item["assets"])
        for key, asset in item["assets"].items():
            title, band = H.ITEM_ASSETS[item["collection"]][key]
            assert asset["title"] == title and asset["eo:bands"] == [band]
            assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert asset["roles"] == ["data"]
            assert Path(asset["href"]).is_absolute()
    assert {i["collection"] for i in archive.items} == {"hls2-l30", "hls2-s30"}
    assert {i["properties"]["platform"] for i in archive.items} >= {"landsat-8", "sentinel-2a", "sentinel-2b"}


def test_geometry_is_the_window_footprint(archive):
    for item in archive.items:
        p = item["properties"]
        ring = item["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 5
        signed = sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring))
        assert signed > 0, "exterior ring must be counter-clockwise (RFC 7946)"
        lons, lats = [c[0] for c in ring], [c[1] for c in ring]
        assert item["bbox"] == [min(lons), min(lats), max(lons), max(lats)]
        # The window's corners, projected, are on the ring.
        t, (h, w) = p["proj:transform"], p["proj:shape"]
        to_ll = Transformer.from_crs(p["proj:epsg"], 4326, always_xy=True)
        for x, y in [(t[2], t[5]), (t[2] + w * 30, t[5] - h * 30)]:
            lon, lat = to_ll.transform(x, y)
            assert min(abs(lon - a) + abs(lat - b) for a, b in ring) < 1e-6


def test_windows_sit_on_the_real_mgrs_grids(archive):
    assert H.tile_grid("10TET") == (32610, 499980, 5300040)
    assert H.tile_grid("10TFT") == (32610, 600000, 5300040)  # snapped, not 599980
    grids = {
        _tile(i): (i["properties"]["proj:transform"], i["properties"]["proj:shape"]) for i in archive.items
    }
    (tet, tet_shape), (tft, tft_shape) = grids["10TET"], grids["10TFT"]
    assert (tet[2] - 499980) % 30 == 0 and (5300040 - tet[5]) % 30 == 0
    assert tet[2] + tet_shape[1] * 30 == 609780, "10TET's window reaches its east edge"
    assert tft[2] == 600000, "10TFT's window starts at its west edge"
    overlap = (max(tet[2], tft[2]), min(tet[2] + tet_shape[1] * 30, tft[2] + tft_shape[1] * 30))
    assert overlap[1] - overlap[0] >= 100 * 30
    # Every item of a tile states the same grid.
    for item in archive.items:
        assert (item["properties"]["proj:transform"], item["properties"]["proj:shape"]) == grids[_tile(item)]


def test_nominal_grid_for_tiles_without_a_known_corner():
    assert H.tile_grid("10TES") == (32610, 499980, 5200040)
    with pytest.raises(ValueError):
        H.tile_grid("XXTET")


# -- files -------------------------------------------------------------------------------------


def test_every_href_is_a_cog_on_the_items_grid(archive):
    from rio_cogeo.cogeo import cog_validate

    hrefs = [a["href"] for it in archive.items for a in it["assets"].values()]
    assert len(hrefs) == archive.n_files == len(archive.files)
    for item in archive.items:
        p = item["properties"]
        for key, asset in item["assets"].items():
            path = asset["href"]
            assert os.path.isfile(path), path
            valid, errors, warnings = cog_validate(path, strict=True)
            assert valid, (path, errors, warnings)
            with rasterio.open(path) as ds:
                assert ds.crs.to_epsg() == p["proj:epsg"]
                assert list(ds.transform)[:6] == p["proj:transform"]
                assert [ds.height, ds.width] == p["proj:shape"]
                assert ds.block_shapes == [(256, 256)]
                assert ds.compression is not None and ds.compression.value == "DEFLATE"
                assert ds.overviews(1), "internal overviews"
                if key == "Fmask":
                    assert (ds.dtypes[0], ds.nodata) == ("uint8", 255)
                else:
                    assert (ds.dtypes[0], ds.nodata) == ("int16", -9999)
                    assert ds.tags(1)["_FillValue"] == "-9999"
                    scale = 0.01 if (item["collection"], key) in H.THERMAL_ASSETS else 0.0001
                    assert ds.scales == (scale,) and float(ds.tags(1)["scale_factor"]) == scale


def test_keys_follow_the_blob_store_layout(archive):
    for item in archive.items:
        when = _when(item)
        product, tile = item["id"].split(".")[1], _tile(item)
        for key, asset in item["assets"].items():
            rel = H.relative_key(asset["href"])
            assert (
                rel
                == f"{product}/{tile[:2]}/{tile[2]}/{tile[3:]}/{when:%Y/%m/%d}/{item['id']}/{item['id']}.{key}.tif"
            )
            assert archive.files[rel] == Path(asset["href"]) == archive.data_dir / rel
    assert H.relative_key(H.BLOB_ROOT + "/" + rel + "?se=x&sig=y") == rel


def test_items_with_href_base_rewrites_every_href(archive):
    base = "http://127.0.0.1:10000/devstoreaccount1/hls2/"
    moved = H.items_with_href_base(archive.items, base)
    assert len(moved) == len(archive.items)
    for old, new in zip(archive.items, moved, strict=True):
        assert new["id"] == old["id"] and new["properties"] == old["properties"]
        for key, asset in new["assets"].items():
            assert asset["href"] == base.rstrip("/") + "/" + H.relative_key(old["assets"][key]["href"])
            assert old["assets"][key]["href"].startswith(str(archive.data_dir)), "the originals are untouched"
    again = H.items_with_href_base(moved, H.BLOB_ROOT)
    assert again[0]["assets"]["B04"]["href"].startswith("https://hls2euwest.blob.core.windows.net/hls2/")
    with pytest.raises(ValueError):
        H.relative_key("/tmp/somewhere/else.tif")


# -- content -----------------------------------------------------------------------------------


def test_every_fmask_case_is_present(archive):
    fm = np.concatenate([_read(it["assets"]["Fmask"]["href"]).ravel() for it in archive.items])
    valid = fm[fm != 255]
    for bit, name in [
        (1, "cirrus"),
        (2, "cloud"),
        (4, "adjacent"),
        (8, "shadow"),
        (16, "snow"),
        (32, "water"),
    ]:
        assert ((valid & bit) > 0).any(), name
        assert not ((valid & bit) > 0).all(), name
    assert set(np.unique(valid >> 6)) == {0, 1, 2, 3}, "aerosol levels 0-3"
    assert (fm == 255).any(), "Fmask fill"
    assert not ((valid & 2) & (valid & 8)).any(), "cloud and shadow pixels are distinct"


def test_fill_and_bad_values_in_single_bands(archive):
    one_band_fill = out_of_range_high = out_of_range_low = negative_valid = 0
    for item in archive.items:
        fm = _read(item["assets"]["Fmask"]["href"])
        keys = [k for k in H.READ_ASSETS[item["collection"]] if k != "Fmask"]
        bands = np.stack([_read(item["assets"][k]["href"]) for k in keys])
        fill = fm == 255
        assert (bands[:, fill] == -9999).all(), f"{item['id']}: Fmask fill is fill in every band"
        nd = bands[:, ~fill] == -9999
        one_band_fill += int((nd.sum(axis=0) == 1).sum())
        assert not nd.all(axis=0).any(), "outside Fmask fill no pixel is fill in every band"
        v = bands[:, ~fill]
        out_of_range_high += int((v > 10000).sum())
        out_of_range_low += int(((v < 0) & (v != -9999)).sum())
        negative_valid += int(((v < 0) & (v > -9999)).any(axis=0).sum())
    assert one_band_fill > 50 and out_of_range_high > 50 and out_of_range_low > 50 and negative_valid > 0


def test_scene_schedule_exercises_the_recipe(archive):
    months: dict[tuple[str, int], dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for item in archive.items:
        when = _when(item)
        months[_tile(item), when.year][when.month].add(item["collection"])
    assert set(months) == {("10TET", 2019), ("10TET", 2020), ("10TFT", 2019)}
    for tile_year, by_month in months.items():
        assert any(len(c) == 2 for c in by_month.values()), f"{tile_year}: a month with L30 and S30"
        assert any(m not in by_month for m in range(1, 13)), f"{tile_year}: a month without items"
        assert any(len(c) == 1 for c in by_month.values())
    # One swath-edge scene leaves part of a window as fill, and its items are still written.
    partial = [it for it in archive.items if 0 < _fill_fraction(it) < 1]
    assert partial


def _fill_fraction(item: dict) -> float:
    return float((_read(item["assets"]["Fmask"]["href"]) == 255).mean())


def test_overlapping_tiles_carry_identical_pixels(archive):
    """Items of one scene over 10TET and 10TFT agree where the windows overlap (as real HLS
    tiles of one granule do), so the edge point reads the same values from either tile."""
    by_scene = defaultdict(dict)
    for it in archive.items:
        by_scene[it["id"].split(".")[1], it["properties"]["datetime"]][_tile(it)] = it
    pairs = [s for s in by_scene.values() if {"10TET", "10TFT"} <= set(s)]
    assert len(pairs) >= 8
    for scene in pairs:
        a, b = scene["10TET"], scene["10TFT"]
        ta, tb = a["properties"]["proj:transform"], b["properties"]["proj:transform"]
        (ha, wa), (hb, wb) = a["properties"]["proj:shape"], b["properties"]["proj:shape"]
        box = (
            max(ta[2], tb[2]),
            max(ta[5] - ha * 30, tb[5] - hb * 30),
            min(ta[2] + wa * 30, tb[2] + wb * 30),
            min(ta[5], tb[5]),
        )
        for key in ("B04", "Fmask"):
            with rasterio.open(a["assets"][key]["href"]) as da, rasterio.open(b["assets"][key]["href"]) as db:
                wa_ = from_bounds(*box, transform=da.transform).round_offsets().round_lengths()
                wb_ = from_bounds(*box, transform=db.transform).round_offsets().round_lengths()
                assert np.array_equal(da.read(1, window=wa_), db.read(1, window=wb_)), (a["id"], key)


# -- tiles and points --------------------------------------------------------------------------


def test_tiles_file_lists_every_tile_year_with_items(archive):
    with open(archive.tiles, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["tile", "year"]
    listed = {(t, int(y)) for t, y in rows[1:]}
    assert listed == {(_tile(i), _when(i).year) for i in archive.items}


def test_points_file_and_records(archive):
    with open(archive.points, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ["id", "lat", "lon", "year", "site"]
    assert len({r["id"] for r in rows}) == len(rows)
    assert {int(r["year"]) for r in rows} == {2019, 2020}
    recs = {p["id"]: p for p in archive.point_records}
    for r in rows:
        lat, lon = float(r["lat"]), float(r["lon"])
        import mgrs

        assert mgrs.MGRS().toMGRS(lat, lon, MGRSPrecision=0) == recs[r["id"]]["own"]
        assert (recs[r["id"]]["lat"], recs[r["id"]]["lon"]) == (lat, lon)
    kinds = {p["kind"] for p in archive.point_records}
    assert {"inside", "inside-both", "edge", "own-without-data"} <= kinds
    assert any(k.startswith("unplaced") for k in kinds)


def _grid_of(archive, tile: str, year: int):
    item = next(i for i in archive.items if _tile(i) == tile and _when(i).year == year)
    p = item["properties"]
    return p["proj:epsg"], p["proj:transform"], p["proj:shape"]


def _chip_fits(lat: float, lon: float, grid, chip: int = 32) -> bool:
    epsg, t, (h, w) = grid
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    c0, r0 = round((x - t[2]) / t[0]) - chip // 2, round((y - t[5]) / t[4]) - chip // 2
    return c0 >= 0 and r0 >= 0 and c0 + chip <= w and r0 + chip <= h


def test_edge_point_is_outside_its_own_window_and_inside_the_neighbours(archive):
    pid, year, own, serving = archive.edge_point
    assert (own, serving) == ("10TFT", "10TET")
    rec = next(p for p in archive.point_records if p["id"] == pid)
    assert not _chip_fits(rec["lat"], rec["lon"], _grid_of(archive, own, year))
    assert _chip_fits(rec["lat"], rec["lon"], _grid_of(archive, serving, year))
    # The centre itself is inside its own window: only the chip crosses the edge.
    epsg, t, (h, w) = _grid_of(archive, own, year)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(rec["lon"], rec["lat"])
    assert 0 <= (x - t[2]) / 30 < w and 0 <= (t[5] - y) / 30 < h


def test_every_point_placement_matches_the_items(archive):
    tile_years = {(_tile(i), _when(i).year) for i in archive.items}
    for p in archive.point_records:
        fits = sorted(
            t
            for t, y in tile_years
            if y == p["year"] and _chip_fits(p["lat"], p["lon"], _grid_of(archive, t, y))
        )
        assert fits == p["fits"], p["id"]
        if p["kind"].startswith("unplaced"):
            assert fits == [] and p["serving"] is None
        elif p["kind"] == "own-without-data":
            assert (p["own"], p["year"]) not in tile_years and p["serving"] in fits
        else:
            assert p["serving"] == (p["own"] if p["own"] in fits else fits[0])


# -- determinism, specs, CLI -------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_archive_other_seed_other_pixels(archive, tmp_path):
    again = H.build_hls_archive(tmp_path / "again", H.small_hls_spec(seed=1))

    def strip(items):
        return json.dumps(H.items_with_href_base(items, "x"), sort_keys=True)

    assert strip(again.items) == strip(archive.items)
    for key in list(archive.files)[:12]:
        assert _digest(again.files[key]) == _digest(archive.files[key]), key
    other = H.plan_hls_archive(H.small_hls_spec(seed=2))
    mine = H.plan_hls_archive(H.small_hls_spec(seed=1))
    assert [s.clouds for s in other.scenes] != [s.clouds for s in mine.scenes]


def test_existing_archive_needs_overwrite(archive):
    with pytest.raises(FileExistsError):
        H.build_hls_archive(archive.root, H.small_hls_spec(seed=1))
    assert H.main([str(archive.root), "--small", "-q"]) == 2


def test_demo_spec_plans_every_point_kind():
    plan = H.plan_hls_archive(H.demo_hls_spec())
    kinds = {p["kind"]: p for p in plan.points}
    assert kinds["edge"]["own"] not in kinds["edge"]["fits"] and kinds["edge"]["fits"]
    assert not kinds["unplaced-outside"]["fits"] and not kinds["unplaced-window-edge"]["fits"]
    assert {s.scene.product for s in plan.scenes} == {"L30", "S30"}
    assert "landsat-9" in {s.scene.platform for s in plan.scenes}
    assert {s.when.year for s in plan.scenes} == {2019, 2020, 2022}


def test_full_size_option(tmp_path):
    """Whole 3660 px tiles on 10TET's real grid; scenes beyond ``unique_scenes`` share the
    files of an earlier scene (hard links) under their own ids and keys."""
    spec = H.full_size_hls_spec(3, unique_scenes=2)
    built = H.build_hls_archive(tmp_path / "full", spec)
    assert len(built.items) == 3
    from rio_cogeo.cogeo import cog_validate

    for item in built.items:
        p = item["properties"]
        assert p["proj:transform"] == [30.0, 0.0, 499980.0, 0.0, -30.0, 5300040.0]
        assert p["proj:shape"] == [3660, 3660]
        assert set(item["assets"]) == set(H.READ_ASSETS[item["collection"]])
    first = next(i for i in built.items if i["properties"]["datetime"].startswith("2019-01-01"))
    path = first["assets"]["B04"]["href"]
    assert cog_validate(path, strict=True)[0]
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4, 8, 16]
        block = ds.read(1, window=((0, 256), (0, 256)))
        assert np.array_equal(ds.read(1, window=((512, 768), (256, 512))), block), (
            "the pattern repeats per block"
        )
    inodes = defaultdict(list)
    for item in built.items:
        inodes[os.stat(item["assets"]["Fmask"]["href"]).st_ino].append(item["id"])
    assert sorted(len(v) for v in inodes.values()) == [1, 2], "scene 2 links scene 0's files"
