"""One raster member of a bundle -> one Cloud Optimized GeoTIFF, pixel for pixel.

GDAL's COG driver through :func:`rasterio.shutil.copy`, reading the member in place
(``/vsitar/``): DEFLATE with the integer predictor (``PREDICTOR=2``; a floating-point band,
which Collection 2 does not have, would get the float predictor 3), 512 x 512 blocks and
internal overviews halving down to the first level that fits in one block (the driver's
default count; a 7,800 x 7,900 scene gets 2, 4, 8, 16). Overviews are always computed anew
(``OVERVIEWS=IGNORE_EXISTING``): a source's own overviews were made with whatever resampling
its producer chose, and the QA bit masks must be sampled, never averaged: ``NEAREST`` for
:data:`QA_BITMASK_SUFFIXES`, ``AVERAGE`` (nodata excluded) for every other band.

The driver copies nodata, CRS, geotransform, band description and metadata; DEFLATE and the
predictor are lossless, so every full-resolution pixel equals the input's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader, MemoryFile

from pipeline.ingest.bundle import Bundle, BundleError, Member

BLOCKSIZE = 512
QA_BITMASK_SUFFIXES = frozenset({"QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL", "ST_QA", "SR_CLOUD_QA"})

# Reading members in place: no directory listing inside the tar for sidecar files.
GDAL_READ_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}

# What GDAL raises on an unreadable member (rasterio's own errors, GDAL's CPLE_* errors).
RASTER_ERRORS = (RasterioError, CPLE_BaseError, OSError)


def overview_resampling(suffix: str) -> str:
    """``NEAREST`` for the QA bit-mask bands (an average of bit flags is meaningless)."""
    return "NEAREST" if suffix in QA_BITMASK_SUFFIXES else "AVERAGE"


def predictor(dtype: str) -> str:
    """Horizontal differencing (2) for integer bands, the floating-point predictor (3) else."""
    return "2" if np.issubdtype(np.dtype(dtype), np.integer) else "3"


def creation_options(suffix: str, dtype: str, *, num_threads: int = 1) -> dict[str, str]:
    """The COG driver's options for one band (``num_threads``: DEFLATE threads per file)."""
    return {
        "COMPRESS": "DEFLATE",
        "PREDICTOR": predictor(dtype),
        "BLOCKSIZE": str(BLOCKSIZE),
        "OVERVIEWS": "IGNORE_EXISTING",
        "OVERVIEW_RESAMPLING": overview_resampling(suffix),
        "NUM_THREADS": str(num_threads),
    }


def _copy(source: DatasetReader, destination: str, suffix: str, num_threads: int) -> None:
    options = creation_options(suffix, source.dtypes[0], num_threads=num_threads)
    rasterio.shutil.copy(source, destination, driver="COG", **options)


def write_cog(source_path: str, destination: str, suffix: str, *, num_threads: int = 1) -> None:
    """Convert the raster at ``source_path`` (any GDAL path) to a COG at ``destination``
    (a local file or ``/vsimem/`` path; the caller makes it atomic)."""
    with rasterio.Env(**GDAL_READ_OPTIONS), rasterio.open(source_path) as source:
        _copy(source, destination, suffix, num_threads)


def cog_bytes(source_path: str, suffix: str, *, num_threads: int = 1) -> bytes:
    """The COG of ``source_path`` as bytes (for one S3 PUT), built in GDAL's memory files."""
    with rasterio.Env(**GDAL_READ_OPTIONS), rasterio.open(source_path) as source, MemoryFile() as memory:
        _copy(source, memory.name, suffix, num_threads)
        data: bytes = memory.read()
        return data


@dataclass(frozen=True)
class CogResult:
    """What one conversion did: the member's bytes, the COG's bytes and the seconds taken."""

    suffix: str
    bytes_in: int
    bytes_out: int
    seconds: float


def member_to_file(bundle: Bundle, member: Member, destination: str, *, num_threads: int = 1) -> CogResult:
    """Convert one raster member of ``bundle`` to a local COG file; errors name bundle and member."""
    started = time.perf_counter()
    try:
        write_cog(bundle.gdal_path(member), destination, member.suffix, num_threads=num_threads)
    except RASTER_ERRORS as error:
        raise BundleError(bundle.href, f"unreadable raster ({error})", member=member.name) from error
    return CogResult(member.suffix, member.size, os.path.getsize(destination), time.perf_counter() - started)


def member_to_bytes(bundle: Bundle, member: Member, *, num_threads: int = 1) -> tuple[bytes, CogResult]:
    """The COG of one raster member as bytes; errors name bundle and member."""
    started = time.perf_counter()
    try:
        data = cog_bytes(bundle.gdal_path(member), member.suffix, num_threads=num_threads)
    except RASTER_ERRORS as error:
        raise BundleError(bundle.href, f"unreadable raster ({error})", member=member.name) from error
    return data, CogResult(member.suffix, member.size, len(data), time.perf_counter() - started)
