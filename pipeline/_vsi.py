"""Byte-range reads through GDAL's virtual file system, in the libgdal rasterio loaded.

rasterio exposes no VSI file API; GDAL's own C functions reach the same process-wide
vsicurl cache and the same thread-local configuration (``rasterio.Env``) as rasterio's
dataset reads. :func:`read_ranges` is how :mod:`pipeline.raster` prefetches a window's
byte span: one ``VSIFReadL`` per span, where a raw-band VRT cost a dataset open and a
copy through a band buffer (~1 ms of CPU per window).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from collections.abc import Sequence


@functools.cache
def _in_other_wheel(path: str, site_packages: str) -> bool:
    """Whether a mapped library is a copy another wheel bundles (``site-packages/<pkg>.libs``)."""
    parent = os.path.dirname(path)
    return os.path.dirname(parent) == site_packages and not parent.endswith(os.sep + "rasterio.libs")


def _libgdal() -> ctypes.CDLL | None:
    """The libgdal already mapped into this process by rasterio, or None if it cannot be
    found (callers fall back to a VRT read)."""
    import rasterio._base

    # rasterio's own wheel copy first. Other wheels carry their own libgdal (pyogrio's, loaded
    # by geopandas): it is mapped too, but it is another instance, without rasterio's
    # configuration (credentials, endpoints) or cache, so it is never picked.
    here = os.path.dirname(os.path.dirname(rasterio._base.__file__))
    candidates: list[str] = []
    for pattern in ("rasterio.libs/libgdal*", "rasterio/.dylibs/libgdal*"):  # wheels
        candidates += sorted(glob.glob(os.path.join(here, pattern)))
    try:
        with open("/proc/self/maps") as maps:  # Linux: a system libgdal rasterio linked
            mapped = sorted({line.split()[-1] for line in maps if "/libgdal" in line})
        candidates += [path for path in mapped if not _in_other_wheel(path, here)]
    except OSError:
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)  # already mapped: the same library instance, no new load
        except OSError:
            continue
        if not hasattr(lib, "VSIFReadL"):
            continue
        lib.VSIFOpenExL.restype = ctypes.c_void_p
        lib.VSIFOpenExL.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        lib.VSIFSeekL.restype = ctypes.c_int
        lib.VSIFSeekL.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
        lib.VSIFReadL.restype = ctypes.c_size_t
        lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        lib.VSIFCloseL.restype = ctypes.c_int
        lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
        return lib
    return None


def available() -> bool:
    return _libgdal() is not None


def read_ranges(spans: Sequence[tuple[str, int, int]]) -> int:
    """Read byte ranges ``(GDAL name, start, end)`` (in the calling thread, under its
    ``rasterio.Env``) and drop the bytes: the point is the cache they land in. Returns
    the number of bytes read; raises OSError when a file cannot be opened."""
    lib = _libgdal()
    if lib is None:
        raise OSError("libgdal not found in this process")
    total = 0
    buf = ctypes.create_string_buffer(max(end - start for _, start, end in spans)) if spans else None
    for name, start, end in spans:
        fp = lib.VSIFOpenExL(name.encode(), b"rb", 1)
        if not fp:
            raise OSError(f"cannot open {name} through GDAL's VSI")
        try:
            if lib.VSIFSeekL(fp, start, 0) != 0:
                raise OSError(f"cannot seek to byte {start} of {name}")
            total += lib.VSIFReadL(buf, 1, end - start, fp)
        finally:
            lib.VSIFCloseL(fp)
    return total
