"""The scene's RGB thumbnails: ``_thumb_small.jpeg`` (3 %) and ``_thumb_large.jpeg`` (15 %).

Red, green and blue are the Level-2 reflectance bands (``SR_B4/SR_B3/SR_B2`` for OLI,
``SR_B3/SR_B2/SR_B1`` for TM/ETM) or the Level-1 bands (``B4/B3/B2``; ``B3/B2/B1``), see
:func:`pipeline.ingest.bundle.thumbnail_band_suffixes`.

- **Size**: ``fraction`` x the full width and height, rounded half up, at least 1 pixel
  (:func:`thumbnail_size`): a 7,861 x 7,971 scene -> 236 x 239 and 1,179 x 1,196.
- **Averaging**: GDAL's ``average`` resampling from the full resolution (``OVERVIEW_LEVEL=NONE``:
  a source's own overviews are not used), nodata pixels excluded; an output pixel is fill
  only when every input pixel under it is fill (it then holds the nodata value).
- **Stretch**: per channel, linear between its own 1st and 99th percentile over the
  non-fill pixels of the *large* thumbnail (a pixel is fill when any channel is), clipped to
  0..255; the small thumbnail uses the large one's limits, so both look alike. Fill is black.
- **JPEG** via Pillow, quality :data:`JPEG_QUALITY`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling

from pipeline.ingest.bundle import Bundle, BundleError, Member, thumbnail_band_suffixes
from pipeline.ingest.cog import GDAL_READ_OPTIONS, RASTER_ERRORS

SMALL_FRACTION = 0.03
LARGE_FRACTION = 0.15
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.0
JPEG_QUALITY = 85

StretchLimits = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


def thumbnail_size(width: int, height: int, fraction: float) -> tuple[int, int]:
    """(width, height) of a thumbnail at ``fraction`` of full size: half up, at least 1."""
    return (max(1, math.floor(width * fraction + 0.5)), max(1, math.floor(height * fraction + 0.5)))


def full_size(path: str) -> tuple[int, int]:
    """(width, height) of a raster."""
    with rasterio.Env(**GDAL_READ_OPTIONS), rasterio.open(path) as source:
        return source.width, source.height


def read_averaged(path: str, width: int, height: int) -> np.ma.MaskedArray:
    """Band 1 of ``path`` averaged down to ``width`` x ``height`` (float32, fill masked).

    GDAL's average skips nodata inputs and writes nodata only where every input is nodata,
    so fill is told by value (not by the resampled mask band, whose edge pixels depend on
    the source's block layout)."""
    with rasterio.Env(**GDAL_READ_OPTIONS), rasterio.open(path, OVERVIEW_LEVEL="NONE") as source:
        nodata = source.nodata
        data = source.read(1, out_shape=(height, width), resampling=Resampling.average, out_dtype="float32")
    fill = data == np.float32(nodata) if nodata is not None else np.zeros(data.shape, dtype=bool)
    return np.ma.masked_array(data, mask=fill)


def read_rgb(paths: tuple[str, str, str], width: int, height: int) -> np.ma.MaskedArray:
    """(3, height, width) averaged red, green, blue."""
    return np.ma.stack([read_averaged(path, width, height) for path in paths])


def fill_mask(rgb: np.ma.MaskedArray) -> np.ndarray:
    """True where a pixel is fill: any of its three channels is."""
    return np.asarray(np.ma.getmaskarray(rgb).any(axis=0))


def stretch_limits(rgb: np.ma.MaskedArray) -> StretchLimits:
    """Each channel's 1st and 99th percentile over the non-fill pixels."""
    valid = ~fill_mask(rgb)
    if not valid.any():
        raise ValueError("every pixel is fill: nothing to stretch")
    limits = []
    for channel in range(3):
        values = np.asarray(rgb.data[channel])[valid]
        low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
        limits.append((float(low), float(high)))
    return (limits[0], limits[1], limits[2])


def apply_stretch(rgb: np.ma.MaskedArray, limits: StretchLimits) -> np.ndarray:
    """(3, h, w) uint8: each channel mapped linearly from its limits to 0..255; fill black."""
    fill = fill_mask(rgb)
    out = np.zeros(rgb.shape, dtype=np.uint8)
    for channel, (low, high) in enumerate(limits):
        span = high - low if high > low else 1.0
        scaled = (np.asarray(rgb.data[channel], dtype=np.float64) - low) * (255.0 / span)
        out[channel] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    out[:, fill] = 0
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.moveaxis(rgb, 0, -1)), mode="RGB").save(
        buffer, "JPEG", quality=quality
    )
    return buffer.getvalue()


@dataclass(frozen=True)
class Thumbnails:
    """Both thumbnails as JPEG bytes, with the arrays they were encoded from and the limits."""

    small_jpeg: bytes
    large_jpeg: bytes
    small_rgb: np.ndarray  # (3, h, w) uint8 before JPEG
    large_rgb: np.ndarray
    limits: StretchLimits


def render_thumbnails(paths: tuple[str, str, str]) -> Thumbnails:
    """Thumbnails of the red, green and blue rasters at ``paths`` (any GDAL paths)."""
    width, height = full_size(paths[0])
    large = read_rgb(paths, *thumbnail_size(width, height, LARGE_FRACTION))
    small = read_rgb(paths, *thumbnail_size(width, height, SMALL_FRACTION))
    limits = stretch_limits(large)
    large_rgb = apply_stretch(large, limits)
    small_rgb = apply_stretch(small, limits)
    return Thumbnails(encode_jpeg(small_rgb), encode_jpeg(large_rgb), small_rgb, large_rgb, limits)


def thumbnail_members(bundle: Bundle) -> tuple[Member, Member, Member]:
    """The bundle's red, green and blue members (:func:`thumbnail_band_suffixes`); a missing
    one is a BundleError naming the bundle and the member's file name."""
    found = []
    for suffix in thumbnail_band_suffixes(bundle.scene):
        member = bundle.raster(suffix)
        if member is None:
            raise BundleError(
                bundle.href, "missing: a thumbnail band", member=f"{bundle.scene.product_id}_{suffix}.TIF"
            )
        found.append(member)
    return found[0], found[1], found[2]


def bundle_thumbnails(
    bundle: Bundle, members: tuple[Member, Member, Member], paths: tuple[str, str, str]
) -> Thumbnails:
    """:func:`render_thumbnails` of ``members`` read at ``paths`` (in place, from memory),
    errors as a BundleError naming the bundle and the bands."""
    try:
        return render_thumbnails(paths)
    except RASTER_ERRORS as error:
        names = ", ".join(m.name for m in members)
        raise BundleError(bundle.href, f"thumbnail bands unreadable ({error})", member=names) from error
    except ValueError as error:
        raise BundleError(bundle.href, f"no thumbnail: {error}", member=members[0].name) from error


def scene_thumbnails(bundle: Bundle) -> Thumbnails:
    """The thumbnails of a bundle, read in place; errors name the bundle and band."""
    members = thumbnail_members(bundle)
    paths = (bundle.gdal_path(members[0]), bundle.gdal_path(members[1]), bundle.gdal_path(members[2]))
    return bundle_thumbnails(bundle, members, paths)
