"""The chip PNG writer and the byte-range coalescing of the raster seam, on their own."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.png import encode_rgb_png
from pipeline.raster import coalesce_ranges


@pytest.mark.parametrize("shape", [(255, 255, 3), (1, 1, 3), (3, 7, 3)])
def test_png_decodes_to_the_same_pixels(shape):
    rgb = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    rgb[0, 0] = (255, 0, 1)  # wrap-around of the Up filter (0 - 255 and 1 - 0 mod 256)
    image = Image.open(io.BytesIO(encode_rgb_png(rgb)))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(image), rgb)


def test_png_refuses_what_is_not_rgb8():
    with pytest.raises(ValueError, match="uint8"):
        encode_rgb_png(np.zeros((4, 4, 3), dtype=np.uint16))
    with pytest.raises(ValueError):
        encode_rgb_png(np.zeros((4, 4), dtype=np.uint8))


def test_coalesce_ranges():
    # two block rows of a window: adjacent tiles, then a gap, then adjacent tiles
    rows = [(1000, 1100), (1100, 1250), (5000, 5100), (5100, 5300)]
    assert coalesce_ranges(rows, 4000) == [(1000, 5300)]
    assert coalesce_ranges(rows, 3000) == []  # gap 3750: GDAL fetches each run itself
    assert coalesce_ranges([(10, 20), (20, 30)], 10**6) == []  # one run already: nothing to add
    assert coalesce_ranges([(50, 60), (10, 20), (30, 40), (10**6, 10**6 + 5)], 100) == [(10, 60)]
    assert coalesce_ranges([], 100) == []


def test_vsi_read_ranges_reads_the_bytes_through_gdal(tmp_path):
    """The prefetch's byte-range read goes through the libgdal rasterio loaded (here on a
    local file, where GDAL's VSI serves the same call)."""
    from pipeline import _vsi

    assert _vsi.available()  # rasterio's wheel ships libgdal: the fallback is not what runs here
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 40)
    assert _vsi.read_ranges([(str(path), 100, 1100), (str(path), 5000, 5010)]) == 1010
    assert _vsi.read_ranges([(str(path), 10_200, 20_000)]) == 40  # a span past the end reads what there is
    with pytest.raises(OSError, match=r"missing\.bin"):
        _vsi.read_ranges([(str(tmp_path / "missing.bin"), 0, 10)])


def test_vsi_uses_rasterios_libgdal_when_another_wheels_copy_is_loaded():
    """geopandas (datacube samples, stac-geoparquet) loads pyogrio's own libgdal into the
    process; the VSI reads must go through rasterio's, whose configuration and cache they
    fill, and GDAL's block-cache bound must land there too."""
    import pyogrio  # maps pyogrio.libs/libgdal*

    from pipeline import _vsi

    assert pyogrio.__gdal_version__  # its library is loaded
    lib = _vsi._libgdal()
    assert lib is not None
    assert "/rasterio.libs/" in lib._name, lib._name


def test_one_boto3_session_per_process_and_credentials(monkeypatch):
    """A batch's reader reuses the process's boto3 session (creating one costs ~45 ms);
    other credentials in the environment get their own."""
    from pipeline import raster

    monkeypatch.setattr(raster, "_BOTO3_SESSIONS", {})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-one")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-one")
    first = raster._boto3_session("", "us-west-2")
    assert raster._boto3_session("", "us-west-2") is first
    assert first.get_credentials().access_key == "key-one"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-two")
    second = raster._boto3_session("", "us-west-2")
    assert second is not first and second.get_credentials().access_key == "key-two"
    assert raster._boto3_session("", "eu-central-1") is not second


def test_a_reader_bounds_gdals_block_cache_unless_the_environment_sets_it(monkeypatch):
    import ctypes

    from pipeline import _vsi, raster

    lib = _vsi._libgdal()
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    lib.GDALSetCacheMax64.argtypes = [ctypes.c_int64]
    before = lib.GDALGetCacheMax64()
    try:
        lib.GDALSetCacheMax64(1 << 30)
        monkeypatch.setattr(raster, "_block_cache_bounded", False)
        monkeypatch.setenv("GDAL_CACHEMAX", "1024")
        with raster.RasterReader(raster.ArchiveAccess(asset_href="href")):
            pass
        assert lib.GDALGetCacheMax64() == 1 << 30  # the user's setting stands
        monkeypatch.delenv("GDAL_CACHEMAX")
        with raster.RasterReader(raster.ArchiveAccess(asset_href="href")):
            pass
        assert lib.GDALGetCacheMax64() == raster.BLOCK_CACHE_BYTES
    finally:
        lib.GDALSetCacheMax64(before)
