"""The datacube engine on tiny rasters made here: every chip pixel of every source checked against
an independent nearest-neighbour computation (pyproj per pixel centre, floor to the source pixel),
the later S1 acquisition winning, the DEM mosaic, the drop rules and the written GeoTIFF."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from pipeline import cluster
from pipeline.datacube import engine, layout, recipe
from pipeline.raster import ArchiveAccess, RasterReader
from targets.store import Store

EPSG = 32633
X0, Y0 = 500_000.0, 5_000_000.0  # the S2 grid's top-left corner
SIZE = 80  # pixels of the toy S2 grid (10 m)
CHIP = 32  # 2 x 2 whole chips, 16 pixels of remainder dropped at the right and bottom


def _write(path: Path, data: np.ndarray, epsg: int, transform: Affine, nodata: float | None = None) -> str:
    profile = {
        "driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": data.dtype.name,
        "crs": CRS.from_epsg(epsg), "transform": transform, "tiled": True, "blockxsize": 16, "blockysize": 16,
    }  # fmt: skip
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return str(path)


def _expected(path: str, centres_x: np.ndarray, centres_y: np.ndarray, epsg: int, fill: float) -> np.ndarray:
    """Nearest neighbour by hand: the source pixel containing each output pixel centre."""
    with rasterio.open(path) as ds:
        data = ds.read(1)
        t = ds.transform
        nodata = ds.nodata
        src_epsg = ds.crs.to_epsg()
    xs, ys = Transformer.from_crs(epsg, src_epsg, always_xy=True).transform(centres_x, centres_y)
    cols = np.floor((np.asarray(xs) - t.c) / t.a).astype(int)
    rows = np.floor((np.asarray(ys) - t.f) / t.e).astype(int)
    inside = (cols >= 0) & (rows >= 0) & (cols < data.shape[1]) & (rows < data.shape[0])
    out = np.full(centres_x.shape, fill, dtype=np.float64)
    out[inside] = data[rows[inside], cols[inside]]
    if nodata is not None:
        out[
            inside
            & (data[np.clip(rows, 0, data.shape[0] - 1), np.clip(cols, 0, data.shape[1] - 1)] == nodata)
        ] = fill
    return out


def make_toy_scene(root: Path) -> engine.DateJob:
    """The toy (tile, date): S2 bands at 10 and 20 m, SCL, two S1 acquisitions in the next UTM
    zone, two geographic DEM tiles, written under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    t10 = Affine(10, 0, X0, 0, -10, Y0)
    t20 = Affine(20, 0, X0, 0, -20, Y0)
    bands = []
    for name in recipe.S2_BANDS:
        res = 10 if name in ("B02", "B03", "B04", "B08") else 20
        n = SIZE if res == 10 else SIZE // 2
        data = rng.integers(1, 10000, (n, n), dtype=np.uint16)
        if name == "B02":
            data[70, 5] = 0  # chip 3 (rows 32..63 are chip row 1... row 70 is in the remainder): no drop
            data[40, 40] = 0  # chip 4 (col 32..63, row 32..63): dropped for B02 == 0
        bands.append(_write(root / f"{name}.tif", data, EPSG, t10 if res == 10 else t20, nodata=0))
    scl = np.full((SIZE // 2, SIZE // 2), 4, dtype=np.uint8)
    scl[:16, 16:] = 9  # chip 2 (cols 32..63, rows 0..31): 100 % cloud
    scl_href = _write(root / "SCL.tif", scl, EPSG, t20, nodata=0)
    # S1: two acquisitions in the neighbouring UTM zone at 10 m, off the S2 grid, overlapping;
    # the later one (painted last) covers only the west half.
    to34 = Transformer.from_crs(EPSG, 32634, always_xy=True)
    ex, ny = to34.transform([X0 - 300, X0 + SIZE * 10 + 300], [Y0 + 300, Y0 - SIZE * 10 - 300])
    west, north = min(ex) - 7.3, max(ny) + 3.1
    cols, rows = int((max(ex) - min(ex)) / 10) + 4, int((max(ny) - min(ny)) / 10) + 4
    t_s1 = Affine(10, 0, west, 0, -10, north)
    early_vh = rng.normal(0.05, 0.01, (rows, cols)).astype(np.float32)
    early_vv = rng.normal(0.2, 0.05, (rows, cols)).astype(np.float32)
    late_vh = rng.normal(0.5, 0.01, (rows, cols)).astype(np.float32)
    late_vv = rng.normal(0.9, 0.05, (rows, cols)).astype(np.float32)
    late_vh[:, cols // 2 :] = np.nan
    late_vv[:, cols // 2 :] = np.nan
    s1 = (
        (_write(root / "e_vh.tif", early_vh, 32634, t_s1), _write(root / "e_vv.tif", early_vv, 32634, t_s1)),
        (
            _write(root / "l_vh.tif", late_vh, 32634, t_s1, nodata=np.nan),
            _write(root / "l_vv.tif", late_vv, 32634, t_s1),
        ),
    )
    # DEM: two geographic tiles meeting at a longitude inside the grid; the west one has nodata
    # rows reaching into the grid's lower chip row (a NaN edge: chip 3 is dropped).
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    lons, lats = to_ll.transform(
        [X0, X0 + SIZE * 10, X0, X0 + SIZE * 10], [Y0, Y0, Y0 - SIZE * 10, Y0 - SIZE * 10]
    )
    step = 1 / 3600
    mid = (min(lons) + max(lons)) / 2
    top, bottom = max(lats) + 20 * step, min(lats) - 20 * step
    height = int((top - bottom) / step)
    width_w = int((mid - (min(lons) - 20 * step)) / step)
    dem_w = rng.uniform(100, 200, (height, width_w)).astype(np.float32)
    dem_e = rng.uniform(300, 400, (height, width_w)).astype(np.float32)
    dem_w[-30:, :] = -32767.0  # nodata at the south end: grid rows ~45 and below
    dem = (
        _write(
            root / "dem_w.tif",
            dem_w,
            4326,
            Affine(step, 0, mid - width_w * step, 0, -step, top),
            nodata=-32767.0,
        ),
        _write(root / "dem_e.tif", dem_e, 4326, Affine(step, 0, mid, 0, -step, top)),
    )
    job = engine.DateJob(
        "33TXN", date(2020, 5, 17), "02", CHIP, EPSG, tuple(t10)[:6], SIZE, SIZE, "S2_TOY",
        tuple(bands), scl_href, s1, dem,
    )  # fmt: skip
    return job


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_toy_scene(tmp_path_factory.mktemp("toy"))


def _centres(job: engine.DateJob, number: int) -> tuple[np.ndarray, np.ndarray]:
    """The chip's pixel centres in the grid's CRS."""
    col, row = recipe.chip_offset(number, job.width, job.height, job.chip_size)
    a, _, c, _, e, f = job.transform[:6]
    j, i = np.meshgrid(np.arange(job.chip_size), np.arange(job.chip_size))
    return c + (col + j + 0.5) * a, f + (row + i + 0.5) * e


def expected_chip(job: engine.DateJob, number: int) -> tuple[np.ndarray, np.ndarray]:
    """The chip by hand: every source's value at each pixel centre (pyproj), S1 painted in
    ``job.s1`` order and the DEM tiles in ``job.dem`` order, each over what it covers."""
    xs, ys = _centres(job, number)
    out = np.empty((13, job.chip_size, job.chip_size))
    for b, href in enumerate(job.s2_bands):
        out[b] = _expected(href, xs, ys, job.epsg, 0)
    for b, hrefs in ((10, [vh for vh, _ in job.s1]), (11, [vv for _, vv in job.s1]), (12, list(job.dem))):
        layer = np.full(xs.shape, np.nan)
        for href in hrefs:
            values = _expected(href, xs, ys, job.epsg, math.nan)
            layer = np.where(np.isnan(values), layer, values)
        out[b] = layer
    return out, _expected(job.scl, xs, ys, job.epsg, 0)


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_every_chip_pixel_equals_nearest_neighbour_by_hand(scene, number):
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        bands, scl = engine.stack_chip(reader, scene, number)
    want, want_scl = expected_chip(scene, number)
    assert bands.dtype == np.float32 and bands.shape == (13, CHIP, CHIP)
    np.testing.assert_array_equal(bands, want.astype(np.float32))
    np.testing.assert_array_equal(scl, want_scl.astype(np.uint8))
    # both S1 acquisitions and both DEM tiles really contribute to the toy scene
    if number == 2:
        assert (bands[10] > 0.3).any() and (bands[10] < 0.2).any()
        assert (bands[12] < 250).any() and (bands[12] > 250).any()


def test_drop_reasons_of_the_toy_chips(scene):
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        reasons = {n: engine.chip_drop_reason(*engine.stack_chip(reader, scene, n)) for n in (1, 2, 3, 4)}
    assert reasons[1] is None
    assert reasons[2] == recipe.DROP_SCL
    assert reasons[4] == recipe.DROP_B02_ZERO
    assert reasons[3] == "NaN in dem"  # the west DEM tile's nodata rows reach chip 3


def test_chip_batch_writes_kept_chips_with_their_georeferencing(scene, tmp_path):
    store = Store(str(tmp_path / "out"))
    result = engine.chip_batch(scene, [1, 2, 3, 4], store, ArchiveAccess(asset_href="href"))
    assert [(c.number, c.status) for c in result.chips] == [
        (1, "kept"),
        (2, "dropped"),
        (3, "dropped"),
        (4, "dropped"),
    ]
    files = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )
    assert files == ["02/33TXN/2020-05-17/claytile_33TXN_20200517_v02_0001.tif"]
    want, _ = expected_chip(scene, 1)
    with rasterio.open(tmp_path / "out" / files[0]) as ds:
        assert ds.count == 13 and ds.dtypes == ("float32",) * 13
        assert ds.descriptions == recipe.OUTPUT_BANDS
        assert ds.tags()["date"] == "2020-05-17"
        assert ds.crs.to_epsg() == EPSG
        assert tuple(ds.transform)[:6] == (10.0, 0.0, X0, 0.0, -10.0, Y0)
        assert ds.profile["compress"].lower() == "deflate"
        assert ds.block_shapes == [(CHIP, CHIP)] * 13  # one 32 x 32 tile (not 1-row strips)
        np.testing.assert_array_equal(ds.read(), want.astype(np.float32))


def test_chip_transform_moves_by_whole_pixels(scene):
    col, row = recipe.chip_offset(4, scene.width, scene.height, scene.chip_size)
    assert recipe.chip_transform(scene.transform, col, row) == (10.0, 0.0, X0 + 320, 0.0, -10.0, Y0 - 320)
    assert layout.chip_path("02", "33TXN", date(2020, 5, 17), 4).endswith("_0004.tif")


def test_a_missing_file_fails_its_chips_only(scene, tmp_path):
    from dataclasses import replace

    broken = replace(scene, dem=(*scene.dem, str(tmp_path / "absent.tif")))
    result = engine.chip_batch(broken, [1, 2], Store(str(tmp_path / "o")), ArchiveAccess(asset_href="href"))
    assert [c.status for c in result.chips] == ["failed", "failed"]
    assert "absent.tif" in result.chips[0].reason
    assert not list((tmp_path / "o").rglob("*.tif"))


def test_subset_chip_numbers_keep_the_full_grid_numbering(scene):
    assert scene.chip_numbers() == [1, 2, 3, 4]
    assert scene.chip_numbers((40, 0, 50, 10)) == [2]
    assert scene.chip_numbers((0, 40, 70, 41)) == [3, 4]
    assert engine.snapped_window(scene, [3, 4]) == (0, 32, 64, 64)


def _sources(job: engine.DateJob) -> list[str]:
    return [href for pair in job.s1 for href in pair] + list(job.dem)


@pytest.mark.parametrize(
    "window",
    [(0, 0, CHIP, CHIP), (CHIP, CHIP, CHIP, CHIP), (0, 0, SIZE, SIZE), (3, 5, 77, 53)],
    ids=["chip1", "chip4", "whole-grid", "odd-window"],
)
def test_nearest_equals_the_exact_warper_and_the_by_hand_value(scene, window):
    """RasterReader.nearest (centres mapped once per CRS, interpolated on a lattice, exact near
    pixel edges) gives the values of GDAL's warper with an exact transformer and of pyproj at
    every centre, for S1 in the next UTM zone, with a nodata value and geographic DEM tiles."""
    from pipeline.raster import PixelCentres

    col, row, width, height = window
    transform = recipe.chip_transform(scene.transform, col, row)
    centres = PixelCentres(scene.epsg, transform, width, height)
    a, _, c, _, e, f = transform
    j, i = np.meshgrid(np.arange(width), np.arange(height))
    xs, ys = c + (j + 0.5) * a, f + (i + 0.5) * e
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        for href in _sources(scene):
            got = reader.nearest(href, centres, fill=math.nan)
            warped = reader.warped(href, scene.epsg, transform, width, height, fill=math.nan)
            assert got.shape == (height, width)
            np.testing.assert_array_equal(got, warped, err_msg=href)
            np.testing.assert_array_equal(got, _expected(href, xs, ys, scene.epsg, math.nan), err_msg=href)


@pytest.mark.parametrize("target", [4326, 32634, 32632])
def test_interpolated_centres_fall_in_the_pixel_of_their_exact_image(target):
    """A 512 x 512 grid of 10 m pixels mapped onto a source grid of 0.5 m pixels (20 pixel
    edges between two centres: many centres near an edge): the interpolated mapping with its
    exact recomputation near edges picks the same source pixel as PROJ at every centre."""
    from pipeline.raster import PixelCentres, _exact_near_edges

    centres = PixelCentres(EPSG, (10.0, 0.0, X0 + 123_450.0, 0.0, -10.0, Y0 - 2_340.0), 512, 512)
    crs = CRS.from_epsg(target)
    exact_x, exact_y = Transformer.from_crs(EPSG, target, always_xy=True).transform(centres.x, centres.y)
    step = 0.5 if target != 4326 else 0.5 / 111_000
    source = ~Affine(step, 0.0, float(np.min(exact_x)), 0.0, -step, float(np.max(exact_y)))
    x, y, error = centres.in_crs(crs)
    assert 0 < error < step / 100  # interpolated, and tightly bounded
    cols, rows = _exact_near_edges(centres, crs, source, *(source @ (x, y)), error)
    want_cols, want_rows = source @ (np.asarray(exact_x), np.asarray(exact_y))
    np.testing.assert_array_equal(np.floor(cols), np.floor(want_cols))
    np.testing.assert_array_equal(np.floor(rows), np.floor(want_rows))


def test_stack_or_drop_gives_the_whole_stacks_reason_and_bands(scene):
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        for number in scene.chip_numbers():
            bands, scl = engine.stack_chip(reader, scene, number)
            got, reason = engine.stack_or_drop(reader, scene, number)
            assert reason == engine.chip_drop_reason(bands, scl)
            if reason is None:
                np.testing.assert_array_equal(got, bands)
    assert engine._GOOD_SCL not in recipe.SCL_BAD_CLASSES


def test_a_source_with_an_internal_mask_goes_through_the_warper(tmp_path):
    from pipeline.raster import PixelCentres

    path = tmp_path / "masked.tif"
    t = Affine(10, 0, X0 + 3.0, 0, -10, Y0 - 7.0)
    with rasterio.open(
        path, "w", driver="GTiff", width=40, height=40, count=1, dtype="float32", crs=CRS.from_epsg(EPSG),
        transform=t,
    ) as dst:  # fmt: skip
        dst.write(np.arange(1600, dtype=np.float32).reshape(40, 40), 1)
        mask = np.full((40, 40), 255, dtype=np.uint8)
        mask[:, :10] = 0
        dst.write_mask(mask)
    transform = (10.0, 0.0, X0, 0.0, -10.0, Y0)
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        got = reader.nearest(str(path), PixelCentres(EPSG, transform, 32, 32), fill=math.nan)
        want = reader.warped(str(path), EPSG, transform, 32, 32, fill=math.nan)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[:, :5]).all() and not np.isnan(got[1:, 20:]).any()  # row 0: above the file


def test_a_chip_dropped_for_b02_reads_no_other_file(scene):
    """Files are read in the order of the drop rules: chip 4 (a B02 of 0) stops at B02."""
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        _, reason = engine.stack_or_drop(reader, scene, 4)
        assert reason == recipe.DROP_B02_ZERO
        assert reader.opened == 1
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        _, reason = engine.stack_or_drop(reader, scene, 3)  # NaN in dem: every file but SCL and B03..B12
        assert reason == "NaN in dem"
        assert reader.opened == 1 + 2 * len(scene.s1) + len(scene.dem)


def test_write_chip_in_a_local_store_equals_the_geotiff_bytes_and_leaves_no_temporary(scene, tmp_path):
    with RasterReader(ArchiveAccess(asset_href="href")) as reader:
        bands, _ = engine.stack_chip(reader, scene, 1)
    store = Store(str(tmp_path / "out"))
    engine.write_chip(store, "02/x/chip.tif", bands, EPSG, scene.transform, scene.day)
    assert (tmp_path / "out/02/x/chip.tif").read_bytes() == engine.chip_geotiff(
        bands, EPSG, scene.transform, scene.day
    )
    assert sorted(p.name for p in (tmp_path / "out/02/x").iterdir()) == ["chip.tif"]


def test_the_chips_layout_is_threads_of_the_luigi_process_unless_told_otherwise():
    import os

    assert cluster.dask_threads(False, 3) is None  # [dask]'s layout
    assert cluster.dask_threads(True, 3) == 3
    assert cluster.dask_threads(True, 0) == (os.cpu_count() or 1)  # one per core


def test_in_process_threads_run_the_chips_on_threads_of_this_process(scene, tmp_path):
    """``run_chips(in_process_threads=N)`` on a fresh process (no scheduler, no client): every
    batch on one of N pool threads of the process itself, no Dask cluster started (distributed is
    not even imported), and the same chips as ``chip_batch`` called directly."""
    import pickle
    import subprocess
    import sys
    import textwrap

    job = scene
    code = textwrap.dedent(
        f"""
        import os, pickle, sys, threading
        from pipeline import cluster
        from pipeline.datacube import engine
        from pipeline.raster import ArchiveAccess
        from targets.store import Store
        job = pickle.loads({pickle.dumps(job)!r})
        ran_on = []
        chip_batch = engine.chip_batch
        def recorded(*args):
            ran_on.append((os.getpid(), threading.current_thread().name))
            return chip_batch(*args)
        engine.chip_batch = recorded
        chips, _ = engine.run_chips(job, job.chip_numbers(), Store(sys.argv[1]),
                                    ArchiveAccess(asset_href="href", requester_pays=False), 1, None, 3)
        threads = {{name for _, name in ran_on}}
        print({{pid for pid, _ in ran_on}} == {{os.getpid()}}, len(ran_on) == len(job.chip_numbers()),
              1 <= len(threads) <= 3, all(name.startswith("datacube_") for name in threads),
              cluster.has_client(), "distributed" in sys.modules, [c.status for c in chips])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    ).stdout.split("\n")[-2]  # fmt: skip
    direct = engine.chip_batch(
        job,
        job.chip_numbers(),
        Store(str(tmp_path / "b")),
        ArchiveAccess(asset_href="href", requester_pays=False),
    )
    assert out == f"True True True True False False {[c.status for c in direct.chips]}"
    for path in sorted((tmp_path / "b").rglob("*.tif")):
        with rasterio.open(path) as b, rasterio.open(tmp_path / "a" / path.relative_to(tmp_path / "b")) as a:
            assert np.array_equal(a.read(), b.read(), equal_nan=True)
