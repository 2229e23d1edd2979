"""pipeline.hls.cog, the month composites' COG writer: what it writes is what GDAL's COG
driver writes from the same stripes file with the overviews GDAL builds in it (every pixel of
every level, bit for bit: our overviews, averaged in numpy, are GDAL's AVERAGE; the
georeferencing, band descriptions, tags, nodata, DEFLATE with the floating-point predictor,
512 x 512 blocks) and passes GDAL's COG validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from pipeline.hls import cog, engine, recipe


def _array(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A month's 9 bands: noisy reflectances, NaN patches, a whole-NaN band, counts."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 10001, size=(9, height, width)).astype(np.float32)
    data[:8] += np.float32(0.5) * rng.integers(0, 2, size=(8, height, width))  # even-count medians
    data[:8, rng.random((height, width)) < 0.2] = np.nan
    data[:8, : height // 3, : width // 4] = np.nan  # a cloudy corner
    data[7] = np.nan  # a band with no usable value at all
    data[8] = rng.integers(0, 7, size=(height, width))
    return data


def _stripes(path: Path, width: int, height: int, seed: int = 0) -> str:
    """A month's stripes file as engine._write_stripes makes it (uncompressed, tiled 512,
    band-interleaved, descriptions, tags, NaN nodata) of :func:`_array`, with its overviews
    built by GDAL (engine._add_overviews: averaged, NaN-aware)."""
    data = _array(width, height, seed)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 9, "dtype": "float32",
        "crs": CRS.from_epsg(32610), "transform": Affine(30, 0, 499980, 0, -30, 5300040),
        "nodata": float("nan"), "tiled": True, "blockxsize": 512, "blockysize": 512,
        "interleave": "band",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(recipe.OUTPUT_BANDS, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(HLS_SCENES_DIGEST="0123456789abcdef", HLS_SCENES="HLS.L30.T10TET.2019183T185921.v2.0")
        dst.write(data)
    engine._add_overviews(str(path))
    return str(path)


def _levels(path: str) -> list[np.ndarray]:
    with rasterio.open(path) as ds:
        n = len(ds.overviews(1))
    arrays = []
    for level in [None, *range(n)]:
        kwargs = {} if level is None else {"overview_level": level}
        with rasterio.open(path, **kwargs) as ds:
            arrays.append(ds.read())
    return arrays


def _facts(path: str) -> dict[str, object]:
    with rasterio.open(path) as ds:
        return {
            "size": (ds.width, ds.height, ds.count),
            "dtypes": ds.dtypes,
            "crs": ds.crs.to_wkt(),
            "transform": tuple(ds.transform),
            "nodata_is_nan": bool(np.isnan(ds.nodata)),
            "descriptions": ds.descriptions,
            "tags": ds.tags(),
            "image_structure": ds.tags(ns="IMAGE_STRUCTURE"),
            "blocks": ds.block_shapes,
            "overviews": ds.overviews(1),
        }


@pytest.mark.parametrize(
    ("width", "height"),
    # 1830 -> 915 -> 458 and 1030 -> 515 -> 258: a level of a non-integer ratio (weighted windows),
    # as 3660 px HLS tiles have; 1099 x 701: odd from the first overview
    [(1100, 700), (2048, 1024), (300, 200), (1830, 1030), (1099, 701)],
)
def test_cog_is_what_gdal_writes(tmp_path: Path, width: int, height: int) -> None:
    from rio_cogeo.cogeo import cog_validate

    src = _stripes(tmp_path / "stripes.tif", width, height)
    ours, gdal = str(tmp_path / "ours.tif"), str(tmp_path / "gdal.tif")
    cog.write_cog(src, ours)
    engine._gdal_cog(src, gdal)
    valid, errors, warnings = cog_validate(ours, strict=True)
    assert valid, (errors, warnings)
    facts = _facts(ours)
    assert facts == _facts(gdal)
    assert facts["image_structure"] == {
        "LAYOUT": "COG", "COMPRESSION": "DEFLATE", "INTERLEAVE": "PIXEL", "PREDICTOR": "3"
    }  # fmt: skip
    assert facts["descriptions"] == recipe.OUTPUT_BANDS
    ours_levels, gdal_levels = _levels(ours), _levels(gdal)
    assert len(ours_levels) == len(gdal_levels) == 1 + len(cog.overview_factors(width, height))
    for got, want in zip(ours_levels, gdal_levels, strict=True):
        assert got.shape == want.shape
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit, NaNs too
    with open(ours, "rb") as f:
        head = f.read(8 + len(cog.GHOST))
    assert head[8:] == cog.GHOST


def test_cog_too_large_for_classic_tiff_falls_back_to_gdal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rio_cogeo.cogeo import cog_validate

    src = _stripes(tmp_path / "stripes.tif", 700, 600)
    monkeypatch.setattr(cog, "_CLASSIC_LIMIT", 1000)
    with pytest.raises(cog.TooLargeForClassicTiff):
        cog.write_cog(src, str(tmp_path / "refused.tif"))
    dst = str(tmp_path / "cog.tif")
    engine._to_cog(src, dst)
    assert cog_validate(dst, strict=True)[0]
    assert all(
        np.array_equal(a.view(np.uint32), b.view(np.uint32))
        for a, b in zip(_levels(dst), _levels(src), strict=True)
    )


def test_cog_refuses_other_than_float32(tmp_path: Path) -> None:
    path = tmp_path / "int.tif"
    profile = {
        "driver": "GTiff",
        "width": 8,
        "height": 8,
        "count": 1,
        "dtype": "int16",
        "crs": CRS.from_epsg(32610),
    }
    with rasterio.open(path, "w", transform=Affine(30, 0, 0, 0, -30, 0), **profile) as dst:
        dst.write(np.zeros((1, 8, 8), np.int16))
    with pytest.raises(ValueError, match="float32"):
        cog.write_cog(str(path), str(tmp_path / "out.tif"))


def test_predictor_is_libtiffs_floating_point_predictor() -> None:
    """By hand on one 1 x 2 pixel, 2-band row: bytes regrouped most significant first, then
    each byte minus the byte 2 (samples) before it, mod 256."""
    tile = np.array([[[1.0, 2.0]], [[-3.5, 0.0]]], dtype=np.float32)  # (bands, rows, cols)
    samples_in_row = [1.0, -3.5, 2.0, 0.0]  # pixel by pixel, band by band
    be = [np.array([v], dtype=">f4").tobytes() for v in samples_in_row]
    regrouped = [b[k] for k in range(4) for b in be]
    want = [regrouped[i] if i < 2 else (regrouped[i] - regrouped[i - 2]) % 256 for i in range(16)]
    assert cog.predict_tile(tile).tolist() == [want]


@pytest.mark.parametrize(("width", "height", "n_scenes"), [(1100, 1030, 1), (700, 600, 30)])
def test_the_months_cog_streamed_from_its_windows_is_gdals(
    tmp_path: Path, width: int, height: int, n_scenes: int
) -> None:
    """engine._write_cog (windows straight into pipeline.hls.cog.CogBuilder: no stripes file,
    overviews averaged in numpy) against the old way, GDAL's COG driver on the stripes file
    with GDAL's own averaged overviews: every pixel of every level, the georeferencing,
    descriptions, tags and nodata. 30 scenes: windows of half a block."""
    from rio_cogeo.cogeo import cog_validate

    from pipeline.mgrs_grid import TileGrid

    data = _array(width, height)
    grid = TileGrid(32610, (30.0, 0.0, 499980.0, 0.0, -30.0, 5300040.0), width, height)
    scenes = [
        engine.Scene(f"HLS.L30.T10TET.2019{183 + i:03d}T185921.v2.0", recipe.L30_COLLECTION,
                     "2019-07-02T18:59:21.000000Z", 7, tuple(f"b{i}-{b}.tif" for b in range(8)), f"f{i}.tif")
        for i in range(n_scenes)
    ]  # fmt: skip
    assert engine.block_rows(n_scenes) == (512 if n_scenes == 1 else 256)
    seen: list[tuple[int, int, int, int]] = []

    def window_of(window: tuple[int, int, int, int], out: np.ndarray) -> None:
        seen.append(window)
        col, row, w, h = window
        out[...] = data[:, row : row + h, col : col + w]

    ours, gdal = str(tmp_path / "ours.tif"), str(tmp_path / "gdal.tif")
    engine._write_cog(ours, grid, scenes, window_of, str(tmp_path))
    assert seen == list(engine.windows(grid, n_scenes))
    stripes = engine._write_stripes(str(tmp_path / "stripes.tif"), grid, scenes, window_of)
    engine._add_overviews(stripes)
    engine._gdal_cog(stripes, gdal)
    valid, errors, warnings = cog_validate(ours, strict=True)
    assert valid, (errors, warnings)
    assert _facts(ours) == _facts(gdal)
    assert _facts(ours)["tags"]["HLS_SCENES_DIGEST"] == engine.scenes_digest(scenes)
    for got, want in zip(_levels(ours), _levels(gdal), strict=True):
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gdal.tif", "ours.tif", "stripes.tif"]


def test_predictor_row_chunks_and_reused_buffers_are_the_whole_tile_predictor() -> None:
    """The predictor takes a tile's rows a chunk at a time into reused buffers: on a tile
    whose rows are no multiple of the chunk, twice in a row, it is the predictor written
    out whole (big-endian bytes regrouped by significance, then differences mod 256)."""
    rng = np.random.default_rng(5)
    buffers = cog.PredictorBuffers(3, 70, 5)
    for _ in range(2):
        tile = rng.normal(0, 1e4, size=(3, 70, 5)).astype(np.float32)
        tile[:, rng.random((70, 5)) < 0.2] = np.nan
        big = tile.transpose(1, 2, 0).reshape(70, 15).astype(">f4").view(np.uint8).reshape(70, 15, 4)
        regrouped = big.transpose(0, 2, 1).reshape(70, 60).astype(np.int64)
        want = regrouped.copy()
        want[:, 3:] = (regrouped[:, 3:] - regrouped[:, :-3]) % 256
        assert np.array_equal(cog.predict_tile(tile, buffers), want)


def test_months_written_one_after_another_with_one_workspace_are_the_same_files(tmp_path: Path) -> None:
    """A thread passes its Workspace from month to month (its row of blocks, the writer's
    level rows, edge tile, predictor and averaging arrays keep the last month's values):
    months of other sizes written after each other with one workspace are, byte for byte,
    the files written each with a fresh one."""
    from pipeline.mgrs_grid import TileGrid

    scenes = [
        engine.Scene("HLS.L30.T10TET.2019183T185921.v2.0", recipe.L30_COLLECTION, "2019-07-02T18:59:21.000000Z", 7,
                     tuple(f"b-{b}.tif" for b in range(8)), "f.tif")
    ]  # fmt: skip
    sizes = [(1100, 1030, 1), (700, 600, 2), (1100, 1030, 3)]

    def write(path: Path, width: int, height: int, seed: int, workspace: recipe.Workspace | None) -> bytes:
        data = _array(width, height, seed)
        grid = TileGrid(32610, (30.0, 0.0, 499980.0, 0.0, -30.0, 5300040.0), width, height)

        def window_of(window: tuple[int, int, int, int], out: np.ndarray) -> None:
            col, row, w, h = window
            out[...] = data[:, row : row + h, col : col + w]

        work = tmp_path / f"work-{path.name}"
        work.mkdir()
        engine._write_cog(str(path), grid, scenes, window_of, str(work), workspace)
        return path.read_bytes()

    shared = recipe.Workspace()
    for i, (width, height, seed) in enumerate(sizes):
        fresh = write(tmp_path / f"fresh{i}.tif", width, height, seed, None)
        assert write(tmp_path / f"shared{i}.tif", width, height, seed, shared) == fresh


def test_a_month_of_more_files_than_the_readers_default_opens_each_file_once(tmp_path: Path) -> None:
    """30 scenes are 270 files, more than a reader keeps open by default (256), and every
    window reads them all in the same order: the month's reader keeps them all, so each file
    is opened once (a least-recently-used cache of 256 would reopen every one of them for the
    second window). The composite is still the median of the scenes."""
    from pipeline.mgrs_grid import TileGrid
    from pipeline.raster import DEFAULT_MAX_OPEN, ArchiveAccess
    from targets.store import Store

    width, height, n_scenes = 520, 64, 30  # two windows: a 512-column block and an 8-column one
    grid = TileGrid(32610, (30.0, 0.0, 499980.0, 0.0, -30.0, 5300040.0), width, height)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "crs": CRS.from_epsg(32610),
        "transform": Affine(30, 0, 499980, 0, -30, 5300040),
    }  # fmt: skip
    scenes = []
    for i in range(n_scenes):
        bands = []
        for b in range(len(recipe.BANDS)):
            path = tmp_path / f"s{i}-b{b}.tif"
            with rasterio.open(path, "w", dtype="int16", **profile) as dst:
                dst.write(np.full((1, height, width), 100 * b + i, np.int16))
            bands.append(str(path))
        fmask = tmp_path / f"s{i}-fmask.tif"
        with rasterio.open(fmask, "w", dtype="uint8", **profile) as dst:
            dst.write(np.zeros((1, height, width), np.uint8))  # every pixel usable
        scenes.append(
            engine.Scene(f"HLS.L30.T10TET.2019{183 + i:03d}T185921.v2.0", recipe.L30_COLLECTION,
                         "2019-07-02T18:59:21.000000Z", 7, tuple(bands), str(fmask))
        )  # fmt: skip
    assert (
        n_scenes * (len(recipe.BANDS) + 1) > DEFAULT_MAX_OPEN
        and len(list(engine.windows(grid, n_scenes))) == 2
    )
    store = Store(str(tmp_path / "project"))
    access = ArchiveAccess(asset_href="href", requester_pays=False)
    result = engine.composite_month("10TET", 2019, 7, grid, scenes, store, access)
    assert (result.status, result.reads) == ("written", n_scenes * (len(recipe.BANDS) + 1))
    with rasterio.open(tmp_path / "project" / engine.layout.composite_tif("10TET", 2019, 7)) as ds:
        composite = ds.read()
    for b in range(len(recipe.BANDS)):
        assert np.all(composite[b] == 100 * b + 14.5)  # the median of 100 b + 0 .. 100 b + 29
    assert np.all(composite[recipe.VALID_COUNT_INDEX] == n_scenes)
