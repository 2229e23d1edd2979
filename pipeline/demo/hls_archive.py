"""A synthetic HLS v2 archive shaped like Planetary Computer's ``hls2-l30`` / ``hls2-s30``
collections, for the offline HLS demo, the tests and the memory benchmark.

What :func:`build_hls_archive` writes under ``root``::

    data/                                  the ``hls2`` container's content, keys as in the real store:
      L30/10/T/ET/2019/07/02/HLS.L30.T10TET.2019183T185921.v2.0/HLS.L30.T10TET.2019183T185921.v2.0.B04.tif
      S30/...                              (real: https://hls2euwest.blob.core.windows.net/hls2/L30/...)
    catalog/items.ndjson                   every item (STAC 1.0.0 Feature), one per line, shuffled
    catalog/collections/hls2-l30.json      minimal collection documents (item_assets as on PC)
    catalog/collections/hls2-s30.json
    tiles.csv                              ``tile,year``: every tile-year that has items
    points.csv                             ``id,lat,lon,year,site``
    archive.json                           manifest: spec, scenes, every point's kind and placement

Uploading ``data/`` to a container named ``hls2`` reproduces the real key layout;
:func:`items_with_href_base` rewrites the items' local ``href``s to ``{base_url}/{key}``.

**Tiles** are real MGRS tiles on their real UTM grids (10TET: EPSG:32610, transform
``[30, 0, 499980, 0, -30, 5300040]``, 3660 x 3660; its east neighbour 10TFT starts at the
snapped x 600000, so the two overlap in x 600000..609780). To keep tests small a spec gives
each tile a *window* of its full grid; the items carry the window as their grid
(``proj:transform`` / ``proj:shape``), exactly as the pipeline will take it. The full-size
option (:func:`full_size_hls_spec`) writes whole 3660 x 3660 tiles.

**Content** is a function of the seed, the scene and the *global* pixel of the UTM zone, so
overlapping tiles carry identical values where they overlap (as real HLS tiles of one
granule do): int16 reflectance x 10000 (nodata -9999, ``scale_factor`` 0.0001 in the
metadata), uint8 Fmask (nodata 255) with every bit case: cirrus (bit 0), cloud (1), adjacent
to cloud/shadow (2), cloud shadow (3), snow/ice (4), water (5), aerosol level 0-3 (bits 6-7);
swath-edge fill (Fmask 255 and every band -9999), and in single bands only: -9999 pixels,
a -9999 stripe, and out-of-range values (10001 .. 16000, -5 .. -200). L30 thermal bands
B10/B11 (optional) are brightness temperatures in 0.01 degC.

**Rasters** are written with GDAL's COG driver: 256 x 256 tiles, DEFLATE, internal
overviews (nearest), as HLS v2 files are.

Measured with ``time python scripts/make_hls_demo_archive.py OUT ...`` on the 2-core machine
shared with other jobs (load average ~1): ``--small`` 25 items, 317 COGs, 39 MB in 2.7-3.2 s;
the demo 102 items, 1272 COGs, 491 MB in 23 s; ``--full-size 200`` 200 items, 1800 COGs of
3660 x 3660 in 58 s (6.2 GB of files, 0.7 GB on disk: 24 unique scenes, the rest hard links).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pipeline.demo._owned import clear_owned

# --------------------------------------------------------------------------------------------
# Constants of the real archive
# --------------------------------------------------------------------------------------------

STORAGE_ACCOUNT = "hls2euwest"
CONTAINER = "hls2"
BLOB_ROOT = f"https://{STORAGE_ACCOUNT}.blob.core.windows.net/{CONTAINER}"
STAC_ROOT = "https://planetarycomputer.microsoft.com/api/stac/v1"
L30, S30 = "hls2-l30", "hls2-s30"
COLLECTIONS: tuple[str, str] = (L30, S30)
PRODUCT_OF = {L30: "L30", S30: "S30"}
COLLECTION_OF = {"L30": L30, "S30": S30}

PIXEL = 30  # metres
FULL_TILE_PX = 3660  # 109.8 km
BLOCK = 256
REFL_NODATA = -9999
FMASK_NODATA = 255
REFL_SCALE = 0.0001
THERMAL_SCALE = 0.01
CHIP_PX = 32  # the sample chip the point placements are checked for
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
]

# Fmask bits (HLS v2 user guide, table 9).
CIRRUS_BIT, CLOUD_BIT, ADJACENT_BIT, SHADOW_BIT, SNOW_BIT, WATER_BIT = 1, 2, 4, 8, 16, 32
AEROSOL_SHIFT = 6  # bits 6-7: 0 climatology, 1 low, 2 moderate, 3 high

# The band assets the pipeline reads, in its band order (coastal, blue, green, red,
# nir_narrow, swir1, swir2, cirrus), plus Fmask.
READ_ASSETS: dict[str, tuple[str, ...]] = {
    L30: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "Fmask"),
    S30: ("B01", "B02", "B03", "B04", "B8A", "B11", "B12", "B10", "Fmask"),
}
# Further band assets real items carry (written when ``HlsArchiveSpec.extra_bands``).
EXTRA_ASSETS: dict[str, tuple[str, ...]] = {
    L30: ("B10", "B11"),
    S30: ("B05", "B06", "B07", "B08", "B09"),
}
THERMAL_ASSETS = {(L30, "B10"), (L30, "B11")}

# item_assets of the real collections: asset -> (title, eo:bands[0]).
_Band = dict[str, Any]
ITEM_ASSETS: dict[str, dict[str, tuple[str, _Band]]] = {
    L30: {
        "B01": (
            "Coastal Aerosol",
            {"name": "B01", "common_name": "coastal", "center_wavelength": 0.48, "full_width_half_max": 0.02},
        ),
        "B02": (
            "Blue",
            {"name": "B02", "common_name": "blue", "center_wavelength": 0.44, "full_width_half_max": 0.06},
        ),
        "B03": (
            "Green",
            {"name": "B03", "common_name": "green", "center_wavelength": 0.56, "full_width_half_max": 0.06},
        ),
        "B04": (
            "Red",
            {"name": "B04", "common_name": "red", "center_wavelength": 0.65, "full_width_half_max": 0.04},
        ),
        "B05": (
            "NIR Narrow",
            {"name": "B05", "common_name": "nir", "center_wavelength": 0.86, "full_width_half_max": 0.03},
        ),
        "B06": (
            "SWIR 1",
            {"name": "B06", "common_name": "swir16", "center_wavelength": 1.6, "full_width_half_max": 0.08},
        ),
        "B07": (
            "SWIR 2",
            {"name": "B07", "common_name": "swir22", "center_wavelength": 2.2, "full_width_half_max": 0.2},
        ),
        "B09": (
            "Cirrus",
            {"name": "B09", "common_name": "cirrus", "center_wavelength": 1.37, "full_width_half_max": 0.02},
        ),
        "B10": (
            "Thermal Infrared 1",
            {"name": "B10", "common_name": "lwir11", "center_wavelength": 10.9, "full_width_half_max": 0.8},
        ),
        "B11": (
            "Thermal Infrared 2",
            {"name": "B11", "common_name": "lwir12", "center_wavelength": 12.0, "full_width_half_max": 1.0},
        ),
        "Fmask": ("Fmask", {"name": "Fmask"}),
    },
    S30: {
        "B01": (
            "Coastal Aerosol",
            {
                "name": "B01",
                "common_name": "coastal",
                "center_wavelength": 0.4439,
                "full_width_half_max": 0.027,
            },
        ),
        "B02": (
            "Blue",
            {"name": "B02", "common_name": "blue", "center_wavelength": 0.4966, "full_width_half_max": 0.098},
        ),
        "B03": (
            "Green",
            {"name": "B03", "common_name": "green", "center_wavelength": 0.56, "full_width_half_max": 0.045},
        ),
        "B04": (
            "Red",
            {"name": "B04", "common_name": "red", "center_wavelength": 0.6645, "full_width_half_max": 0.038},
        ),
        "B05": ("Red-Edge 1", {"name": "B05", "center_wavelength": 0.7039, "full_width_half_max": 0.019}),
        "B06": ("Red-Edge 2", {"name": "B06", "center_wavelength": 0.7402, "full_width_half_max": 0.018}),
        "B07": ("Red-Edge 3", {"name": "B07", "center_wavelength": 0.7825, "full_width_half_max": 0.028}),
        "B08": (
            "NIR Broad",
            {"name": "B08", "common_name": "nir", "center_wavelength": 0.8351, "full_width_half_max": 0.145},
        ),
        "B09": ("Water Vapor", {"name": "B09", "center_wavelength": 0.945, "full_width_half_max": 0.026}),
        "B10": (
            "Cirrus",
            {
                "name": "B10",
                "common_name": "cirrus",
                "center_wavelength": 1.3735,
                "full_width_half_max": 0.075,
            },
        ),
        "B11": (
            "SWIR 1",
            {
                "name": "B11",
                "common_name": "swir16",
                "center_wavelength": 1.6137,
                "full_width_half_max": 0.143,
            },
        ),
        "B12": (
            "SWIR 2",
            {
                "name": "B12",
                "common_name": "swir22",
                "center_wavelength": 2.22024,
                "full_width_half_max": 0.242,
            },
        ),
        "B8A": ("NIR Narrow", {"name": "B8A", "center_wavelength": 0.8648, "full_width_half_max": 0.033}),
        "Fmask": ("Fmask", {"name": "Fmask"}),
    },
}

PLATFORMS = {"L30": ("landsat-8", "landsat-9"), "S30": ("sentinel-2a", "sentinel-2b")}
INSTRUMENTS = {"L30": ["oli", "tirs"], "S30": ["msi"]}
# Landsat 9 data enter HLS from 2021-10-31 on.
_LANDSAT9_FIRST = date(2021, 10, 31)

# Real (snapped) UL corners of tiles used here; other tiles get their nominal grid.
KNOWN_GRIDS: dict[str, tuple[int, int, int]] = {
    "10TET": (32610, 499980, 5300040),
    "10TFT": (32610, 600000, 5300040),
}


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileWindow:
    """One MGRS tile of the archive: the window of its full 3660 x 3660 grid that the files
    cover (``row_off``, ``col_off``, ``height``, ``width`` in full-grid pixels) and the years
    that have items."""

    tile: str
    row_off: int
    col_off: int
    height: int
    width: int
    years: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (
            self.row_off >= 0
            and self.col_off >= 0
            and self.height > 0
            and self.width > 0
            and self.row_off + self.height <= FULL_TILE_PX
            and self.col_off + self.width <= FULL_TILE_PX
        ):
            raise ValueError(
                f"{self.tile}: window {self.row_off, self.col_off, self.height, self.width} is not "
                f"inside the {FULL_TILE_PX} px grid"
            )

    @property
    def is_full(self) -> bool:
        return (self.row_off, self.col_off, self.height, self.width) == (0, 0, FULL_TILE_PX, FULL_TILE_PX)


@dataclass(frozen=True)
class Scene:
    """One overpass (a granule of one sensor on one date) over some tiles.

    ``tiles``: the tiles it has items for; empty = every tile whose ``years`` hold its year.
    ``cloudiness`` scales the number of random clouds; ``snow`` adds snow patches; ``fill_edge``
    (a global column offset from the zone canvas' left edge, in pixels) makes everything east of
    a slanted swath edge fill; ``stripe`` writes a -9999 column stripe into one band only.
    Items whose window would be all fill are not written (no granule there)."""

    day: date
    product: str  # "L30" | "S30"
    platform: str
    tiles: tuple[str, ...] = ()
    cloudiness: float = 0.3
    snow: bool = False
    fill_edge: float | None = None
    stripe: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        if self.product not in PLATFORMS or self.platform not in PLATFORMS[self.product]:
            raise ValueError(f"{self.product} scene with platform {self.platform!r}")


@dataclass(frozen=True)
class PointSpec:
    """A point placed at fractional full-grid pixel (``row``, ``col``) of tile ``grid_tile``.
    ``own``: the MGRS square the point is expected to lie in (checked with the ``mgrs``
    package at build time); ``kind`` says what the point is for."""

    id: str
    grid_tile: str
    row: float
    col: float
    year: int
    own: str
    kind: str
    site: str = ""


@dataclass(frozen=True)
class HlsArchiveSpec:
    """What to generate. Equal specs give byte-identical files (apart from the root path).

    ``pattern_px``: None renders every window pixel; N renders an N x N pattern per scene that
    repeats across the tile (the full-size option: cheap, and DEFLATE keeps it small).
    ``noise_dn``: per-pixel noise (reflectance DN); ``quantum_dn`` rounds reflectances to
    multiples of it (full-size: compressible files); ``zlevel``: DEFLATE level.
    ``unique_scenes``: None renders every scene; N renders scenes 0..N-1 and gives scene i >= N
    the files of scene i % N (hard links, same product required): content repeats, ids, dates
    and keys do not (the full-size option: 200 scenes for the price of N)."""

    name: str
    tiles: tuple[TileWindow, ...]
    scenes: tuple[Scene, ...]
    points: tuple[PointSpec, ...]
    seed: int = 0
    extra_bands: bool = True
    pattern_px: int | None = None
    noise_dn: float = 60.0
    quantum_dn: int = 1
    zlevel: int = 6
    unique_scenes: int | None = None

    def __post_init__(self) -> None:
        names = [t.tile for t in self.tiles]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tiles in {names}")
        for t in self.tiles:
            tile_grid(t.tile)  # raises for a bad tile id
        years = {t.tile: t.years for t in self.tiles}
        for s in self.scenes:
            bad = [t for t in s.tiles if s.day.year not in years.get(t, ())]
            if bad:
                raise ValueError(f"scene {s.day} {s.product} names tiles without that year: {bad}")
        ids = [p.id for p in self.points]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate point ids")
        if self.pattern_px is not None and self.pattern_px < 16:
            raise ValueError("pattern_px must be >= 16")
        if self.unique_scenes is not None:
            if self.unique_scenes < 1:
                raise ValueError("unique_scenes must be >= 1")
            for i, s in enumerate(self.scenes[self.unique_scenes :], start=self.unique_scenes):
                src = self.scenes[i % self.unique_scenes]
                if (src.product, src.tiles, src.fill_edge) != (s.product, s.tiles, s.fill_edge):
                    raise ValueError(
                        f"scene {i} cannot reuse scene {i % self.unique_scenes}: product, tiles or fill differ"
                    )


# --------------------------------------------------------------------------------------------
# Public results
# --------------------------------------------------------------------------------------------


@dataclass
class HlsArchive:
    """A built archive. ``files`` maps each file's key inside the ``hls2`` container
    (``L30/10/T/ET/...tif``) to its local path; ``point_records`` describe every point (kind,
    own tile, tiles its chip fits in, serving tile); ``edge_point`` is ``(id, year, own tile,
    serving tile)`` of the point whose chip crosses its own tile's window but fits the
    neighbour's (None when the spec has none)."""

    root: Path
    data_dir: Path
    items: list[dict[str, Any]]
    catalog: Path
    points: Path
    tiles: Path
    files: dict[str, Path]
    collections: dict[str, Path]
    manifest: Path
    point_records: list[dict[str, Any]] = field(default_factory=list)
    edge_point: tuple[str, int, str, str] | None = None
    n_files: int = 0
    total_bytes: int = 0
    build_seconds: float = 0.0

    def item(self, item_id: str) -> dict[str, Any]:
        for it in self.items:
            if it["id"] == item_id:
                return it
        raise KeyError(item_id)

    def points_of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [p for p in self.point_records if p["kind"] == kind]


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _mgrs() -> Any:
    import mgrs

    return mgrs.MGRS()


@lru_cache(maxsize=256)
def _transformer(src: int, dst: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def tile_grid(tile: str) -> tuple[int, int, int]:
    """``(epsg, x0, y0)`` of a tile's full grid (UL corner): the real, snapped corner for
    tiles in :data:`KNOWN_GRIDS`, else the nominal one (the 100 km square's SW corner - 20 m,
    top + 40 m, as 10TET has)."""
    if tile in KNOWN_GRIDS:
        return KNOWN_GRIDS[tile]
    try:
        zone, hemi, easting, northing = _mgrs().MGRSToUTM(f"{tile}0000000000")
    except Exception as exc:
        raise ValueError(f"{tile!r} is not an MGRS tile id") from exc
    epsg = (32600 if hemi == "N" else 32700) + int(zone)
    return epsg, math.floor(easting) - 20, math.floor(northing) + 100_000 + 40


def mgrs_tile_of(lat: float, lon: float) -> str:
    """The MGRS 100 km square holding a WGS84 point, e.g. ``10TET``."""
    return str(_mgrs().toMGRS(lat, lon, MGRSPrecision=0)).lstrip("0")


@dataclass(frozen=True)
class _Grid:
    """The pixel grid of one tile's window: what its items state."""

    tile: str
    epsg: int
    x0: float  # UL corner of the window
    y0: float
    width: int
    height: int

    @property
    def transform(self) -> list[float]:
        return [float(PIXEL), 0.0, float(self.x0), 0.0, float(-PIXEL), float(self.y0)]

    def chip_origin(self, x: float, y: float, chip: int = CHIP_PX) -> tuple[int, int] | None:
        """Upper-left (col, row) of a ``chip`` px chip centred on (x, y), or None when it does
        not fit the grid (the rule the pipeline's tests use: ``round(col) - chip // 2``)."""
        col, row = (x - self.x0) / PIXEL, (self.y0 - y) / PIXEL
        c0, r0 = round(col) - chip // 2, round(row) - chip // 2
        if c0 < 0 or r0 < 0 or c0 + chip > self.width or r0 + chip > self.height:
            return None
        return c0, r0


def _window_grid(tw: TileWindow) -> _Grid:
    epsg, x0, y0 = tile_grid(tw.tile)
    return _Grid(tw.tile, epsg, x0 + tw.col_off * PIXEL, y0 - tw.row_off * PIXEL, tw.width, tw.height)


def _footprint(grid: _Grid) -> tuple[dict[str, Any], list[float]]:
    """The window's outline in lon/lat (edges densified: straight UTM edges are curves in
    lon/lat), counter-clockwise as RFC 7946 wants, and its bbox."""
    x0, y0 = grid.x0, grid.y0
    x1, y1 = x0 + grid.width * PIXEL, y0 - grid.height * PIXEL
    corners = [(x0, y1), (x1, y1), (x1, y0), (x0, y0)]  # counter-clockwise in x/y
    dense: list[tuple[float, float]] = []
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
        dense.extend((ax + (bx - ax) * k / 8, ay + (by - ay) * k / 8) for k in range(8))
    lons, lats = _transformer(grid.epsg, 4326).transform([p[0] for p in dense], [p[1] for p in dense])
    ring = [[round(float(lo), 8), round(float(la), 8)] for lo, la in zip(lons, lats, strict=True)]
    ring.append(list(ring[0]))
    return (
        {"type": "Polygon", "coordinates": [ring]},
        [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)],
    )


# --------------------------------------------------------------------------------------------
# Ids, keys, hrefs
# --------------------------------------------------------------------------------------------


def item_id(product: str, tile: str, when: datetime) -> str:
    """``HLS.L30.T10TET.2019183T185921.v2.0``: product, tile, sensing time as YYYYDDDTHHMMSS."""
    return f"HLS.{product}.T{tile}.{when:%Y%j}T{when:%H%M%S}.v2.0"


def asset_key(product: str, tile: str, when: datetime, ident: str, asset: str) -> str:
    """A file's key inside the ``hls2`` container, as in the real store:
    ``L30/10/T/ET/2019/07/02/{id}/{id}.B04.tif``."""
    zone, band, square = tile[:-3], tile[-3], tile[-2:]
    return f"{product}/{zone}/{band}/{square}/{when:%Y/%m/%d}/{ident}/{ident}.{asset}.tif"


_KEY_PARTS = 9  # product/zone/band/square/YYYY/MM/DD/id/file


def relative_key(href: str) -> str:
    """The container key of an asset href: its last nine path segments (local path, blob URL
    or a URL with a SAS query string alike)."""
    path = href.split("?", 1)[0]
    parts = PurePosixPath(path).parts
    key = parts[-_KEY_PARTS:]
    if len(key) != _KEY_PARTS or key[0] not in COLLECTION_OF or not key[-1].startswith(key[-2] + "."):
        raise ValueError(f"not an hls2 asset href: {href}")
    return "/".join(key)


def items_with_href_base(items: Sequence[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
    """Deep copies of ``items`` whose every asset href is ``{base_url}/{container key}``,
    e.g. the container URL the archive's ``data/`` tree was uploaded to."""
    base = base_url.rstrip("/")
    out = []
    for item in items:
        new = copy.deepcopy(item)
        for asset in new["assets"].values():
            asset["href"] = f"{base}/{relative_key(asset['href'])}"
        out.append(new)
    return out


# --------------------------------------------------------------------------------------------
# Hashing and noise on the global pixel lattice (so overlapping tiles agree)
# --------------------------------------------------------------------------------------------

_U = np.uint64


def _key(*parts: int) -> int:
    """A 64-bit key from integers (splitmix64 chain)."""
    x = 0x243F6A8885A308D3
    for p in parts:
        x = ((x ^ (p & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x


def _hash01(cols: np.ndarray, rows: np.ndarray, key: int) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point (cols (1, w) x rows (h, 1))."""
    c = cols.astype(np.int64).astype(_U) * _U(0xD1B54A32D192ED03)
    r = rows.astype(np.int64).astype(_U) * _U(0xABC98388FB8FAC03)
    x = (c ^ r ^ _U(key)) + _U(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    x = x ^ (x >> _U(31))
    return (x >> _U(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _smooth_noise(gx: np.ndarray, gy: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Smooth noise in [0, 1] on global pixels ``gx`` (w,) x ``gy`` (h,): a hashed lattice
    every ``cell`` px, smoothstep-interpolated."""
    fx, fy = (gx + 0.5) / cell, (gy + 0.5) / cell
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    tx, ty = fx - ix, fy - iy
    tx = (tx * tx * (3 - 2 * tx)).astype(np.float32)
    ty = (ty * ty * (3 - 2 * ty)).astype(np.float32)
    x0, y0 = int(ix.min()), int(iy.min())
    lat = _hash01(np.arange(x0, int(ix.max()) + 2)[None, :], np.arange(y0, int(iy.max()) + 2)[:, None], key)
    jx, jy = ix - x0, iy - y0
    along = lat[:, jx] * (1 - tx) + lat[:, jx + 1] * tx
    return (along[jy] * (1 - ty)[:, None] + along[jy + 1] * ty[:, None]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Spectra
# --------------------------------------------------------------------------------------------

# Reflectance of the end members at these wavelengths (um); interpolated per band.
_WL = np.array([0.44, 0.49, 0.56, 0.665, 0.705, 0.74, 0.78, 0.84, 0.865, 0.945, 1.375, 1.61, 2.2])
_SPECTRA = {
    "veg": np.array(
        [0.020, 0.030, 0.060, 0.030, 0.090, 0.250, 0.330, 0.360, 0.370, 0.300, 0.001, 0.180, 0.080]
    ),
    "soil": np.array(
        [0.060, 0.080, 0.110, 0.150, 0.170, 0.190, 0.200, 0.210, 0.220, 0.220, 0.002, 0.300, 0.250]
    ),
    "water": np.array(
        [0.050, 0.048, 0.040, 0.020, 0.015, 0.010, 0.008, 0.005, 0.004, 0.002, 0.000, -0.002, -0.003]
    ),
    "snow": np.array(
        [0.900, 0.900, 0.880, 0.850, 0.830, 0.800, 0.780, 0.750, 0.720, 0.600, 0.010, 0.080, 0.050]
    ),
    "cloud": np.array(
        [0.550, 0.550, 0.550, 0.560, 0.560, 0.570, 0.570, 0.580, 0.580, 0.500, 0.250, 0.450, 0.350]
    ),
}


def _spectrum(kind: str, wavelength: float) -> float:
    return float(np.interp(wavelength, _WL, _SPECTRA[kind]))


def _assets_of(collection: str, extra: bool) -> tuple[str, ...]:
    return READ_ASSETS[collection] + (EXTRA_ASSETS[collection] if extra else ())


# --------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------

Disc = tuple[float, float, float]  # (global col, global row, radius px)


@dataclass(frozen=True)
class _Canvas:
    """The global-pixel rectangle a zone's scenes are rendered on: the union of its tiles'
    windows, or an ``pattern`` x ``pattern`` square repeated over it. Global pixel
    (gx, gy) has its UL corner at x = xoff + gx * 30, y = yoff - gy * 30."""

    epsg: int
    xoff: int
    yoff: int
    gx0: int
    gy0: int
    width: int
    height: int
    pattern: int | None

    def global_of(self, grid: _Grid) -> tuple[int, int]:
        """Global (gx, gy) of a window's UL pixel."""
        gx = (grid.x0 - self.xoff) / PIXEL
        gy = (self.yoff - grid.y0) / PIXEL
        if gx != int(gx) or gy != int(gy):
            raise ValueError(f"{grid.tile} is not on its zone's pixel lattice")
        return int(gx), int(gy)

    def index(self, gx0: int, gy0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas row and column indices of a window whose UL global pixel is (gx0, gy0)."""
        rows = np.arange(gy0, gy0 + h) - self.gy0
        cols = np.arange(gx0, gx0 + w) - self.gx0
        if self.pattern is not None:
            return rows % self.height, cols % self.width
        return rows, cols


@dataclass(frozen=True)
class _ScenePlan:
    index: int
    scene: Scene
    collection: str
    when: datetime
    tiles: tuple[str, ...]
    clouds: tuple[Disc, ...]
    cirrus: tuple[Disc, ...]
    shadow_offset: tuple[float, float]
    atmos: tuple[float, ...]  # additive reflectance per wavelength node
    temp_offset: float  # degC
    key: int


@dataclass
class _Plan:
    spec: HlsArchiveSpec
    grids: dict[str, _Grid]
    canvases: dict[int, _Canvas]  # per EPSG
    lakes: dict[int, Disc]
    scenes: list[_ScenePlan]
    points: list[dict[str, Any]]


def _zone_canvas(spec: HlsArchiveSpec, grids: list[_Grid]) -> _Canvas:
    epsg = grids[0].epsg
    xoff, yoff = int(grids[0].x0) % PIXEL, int(grids[0].y0) % PIXEL
    probe = _Canvas(epsg, xoff, yoff, 0, 0, 1, 1, None)
    origins = [probe.global_of(g) for g in grids]
    gx0 = min(o[0] for o in origins)
    gy0 = min(o[1] for o in origins)
    gx1 = max(o[0] + g.width for o, g in zip(origins, grids, strict=True))
    gy1 = max(o[1] + g.height for o, g in zip(origins, grids, strict=True))
    if spec.pattern_px is not None:
        p = spec.pattern_px
        return _Canvas(epsg, xoff, yoff, gx0, gy0, min(p, gx1 - gx0), min(p, gy1 - gy0), p)
    return _Canvas(epsg, xoff, yoff, gx0, gy0, gx1 - gx0, gy1 - gy0, None)


def _scene_time(rng: np.random.Generator, scene: Scene) -> datetime:
    """Sensing time: Landsat passes 10TET at ~18:59 UTC, Sentinel-2 at ~19:09 UTC."""
    base = (18 * 3600 + 59 * 60 + 21) if scene.product == "L30" else (19 * 3600 + 9 * 60 + 39)
    seconds = base + int(rng.integers(-40, 40))
    millis = int(rng.integers(0, 1000))
    d = scene.day
    return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(seconds=seconds, milliseconds=millis)


def _plan_scene(
    spec: HlsArchiveSpec, index: int, scene: Scene, canvas_of: dict[str, _Canvas], rng: np.random.Generator
) -> _ScenePlan:
    """Draw a scene's clouds, cirrus, shadow direction and atmosphere."""
    tiles = scene.tiles or tuple(t.tile for t in spec.tiles if scene.day.year in t.years)
    when = _scene_time(rng, scene)
    clouds: list[Disc] = []
    cirrus: list[Disc] = []
    scale = 1.0
    if tiles:
        canvas = canvas_of[tiles[0]]
        scale = min(canvas.width, canvas.height) / 240.0
        for _ in range(int(rng.poisson(1 + scene.cloudiness * 10))):
            clouds.append(
                (
                    canvas.gx0 + rng.uniform(0, canvas.width),
                    canvas.gy0 + rng.uniform(0, canvas.height),
                    rng.uniform(4, 20) * scale,
                )
            )
        if rng.random() < 0.5:
            cirrus.append(
                (
                    canvas.gx0 + rng.uniform(0, canvas.width),
                    canvas.gy0 + rng.uniform(0, canvas.height),
                    rng.uniform(15, 40) * scale,
                )
            )
    az = math.radians(rng.uniform(125, 160))
    mag = rng.uniform(8, 20) * scale
    return _ScenePlan(
        index=index,
        scene=scene,
        collection=COLLECTION_OF[scene.product],
        when=when,
        tiles=tiles,
        clouds=tuple(clouds),
        cirrus=tuple(cirrus),
        shadow_offset=(-math.sin(az) * mag, math.cos(az) * mag),
        atmos=tuple(float(a) for a in rng.normal(0.0, 0.004, len(_WL))),
        temp_offset=float(rng.normal(0, 2)),
        key=_key(spec.seed, 1000 + index),
    )


def _place_points(spec: HlsArchiveSpec, grids: dict[str, _Grid]) -> list[dict[str, Any]]:
    """Lat/lon of each point (7 decimals, as written), its own MGRS tile (checked against the
    spec) and the tiles with items that year whose window holds its whole chip."""
    tiles_with = {(t.tile, y) for t in spec.tiles for y in t.years}
    records = []
    for p in spec.points:
        g = tile_grid(p.grid_tile)
        x = g[1] + p.col * PIXEL
        y = g[2] - p.row * PIXEL
        lon, lat = _transformer(g[0], 4326).transform(x, y)
        lat, lon = round(float(lat), 7), round(float(lon), 7)
        own = mgrs_tile_of(lat, lon)
        if own != p.own:
            raise ValueError(f"point {p.id}: lies in MGRS square {own}, the spec says {p.own}")
        fits = []
        for name, grid in sorted(grids.items()):
            if (name, p.year) not in tiles_with:
                continue
            gx, gy = _transformer(4326, grid.epsg).transform(lon, lat)
            if grid.chip_origin(gx, gy) is not None:
                fits.append(name)
        serving = own if own in fits else (fits[0] if fits else None)
        records.append(
            {
                "id": p.id,
                "lat": lat,
                "lon": lon,
                "year": p.year,
                "site": p.site,
                "kind": p.kind,
                "own": own,
                "fits": fits,
                "serving": serving,
            }
        )
    return records


def plan_hls_archive(spec: HlsArchiveSpec) -> _Plan:
    """Everything but the pixels: cheap and deterministic in the spec."""
    rng = np.random.default_rng(spec.seed)
    grids = {t.tile: _window_grid(t) for t in spec.tiles}
    by_zone: dict[int, list[_Grid]] = {}
    for g in grids.values():
        by_zone.setdefault(g.epsg, []).append(g)
    canvases = {epsg: _zone_canvas(spec, gs) for epsg, gs in by_zone.items()}
    canvas_of = {name: canvases[g.epsg] for name, g in grids.items()}
    lakes = {}
    for epsg, c in sorted(canvases.items()):
        r = rng.uniform(6, 14) * min(c.width, c.height) / 240.0
        lakes[epsg] = (c.gx0 + rng.uniform(0.3, 0.7) * c.width, c.gy0 + rng.uniform(0.3, 0.7) * c.height, r)
    scenes = [_plan_scene(spec, i, s, canvas_of, rng) for i, s in enumerate(spec.scenes)]
    points = _place_points(spec, grids)
    scenes = _cloud_over_points(scenes, points, grids, canvas_of)
    return _Plan(spec=spec, grids=grids, canvases=canvases, lakes=lakes, scenes=scenes, points=points)


def _cloud_over_points(
    scenes: list[_ScenePlan],
    points: list[dict[str, Any]],
    grids: dict[str, _Grid],
    canvas_of: dict[str, _Canvas],
) -> list[_ScenePlan]:
    """A small cloud beside each placed point in one scene of its year, so every sampled chip
    holds masked pixels next to clear ones."""
    out = list(scenes)
    for k, p in enumerate(points):
        tile = p["serving"]
        if tile is None:
            continue
        year_scenes = [s.index for s in out if s.when.year == p["year"] and tile in s.tiles]
        if not year_scenes:
            continue
        s = out[year_scenes[k % len(year_scenes)]]
        grid, canvas = grids[tile], canvas_of[tile]
        x, y = _transformer(4326, grid.epsg).transform(p["lon"], p["lat"])
        gx, gy = (x - canvas.xoff) / PIXEL, (canvas.yoff - y) / PIXEL
        out[s.index] = replace(s, clouds=(*s.clouds, (gx + 5.0, gy - 4.0, 6.0)))
    return out


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass
class _SceneRaster:
    """One scene rendered on its zone's canvas: asset -> array (int16 bands, uint8 Fmask)."""

    arrays: dict[str, np.ndarray]


def _discs(
    gx: np.ndarray,
    gy: np.ndarray,
    discs: Sequence[Disc],
    grow: float = 0.0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Pixels whose centre lies in any disc (radius + ``grow``, centre + ``offset``)."""
    out = np.zeros((gy.size, gx.size), dtype=bool)
    for cx, cy, r in discs:
        cx, cy, rr = cx + offset[0], cy + offset[1], r + grow
        c0, c1 = np.searchsorted(gx + 0.5, [cx - rr, cx + rr])
        r0, r1 = np.searchsorted(gy + 0.5, [cy - rr, cy + rr])
        if c0 >= c1 or r0 >= r1:
            continue
        d2 = (gx[c0:c1] + 0.5 - cx)[None, :] ** 2 + (gy[r0:r1] + 0.5 - cy)[:, None] ** 2
        out[r0:r1, c0:c1] |= d2 <= rr * rr
    return out


def _render_scene(plan: _Plan, sp: _ScenePlan, canvas: _Canvas) -> _SceneRaster:
    """Every asset of one scene over the zone canvas.

    Order: land (vegetation/soil mix, seasonal) + lake, snow, shadow, cirrus, cloud; then the
    Fmask bits from the same masks; then swath fill, single-band -9999 and out-of-range DNs."""
    spec = plan.spec
    rng = np.random.default_rng([spec.seed, 7, sp.index])
    h, w = canvas.height, canvas.width
    gx = np.arange(canvas.gx0, canvas.gx0 + w, dtype=np.float64)
    gy = np.arange(canvas.gy0, canvas.gy0 + h, dtype=np.float64)
    static = _key(spec.seed, 1)
    doy = sp.when.timetuple().tm_yday
    season = 0.55 + 0.45 * math.exp(-(((doy - 195) / 65.0) ** 2))
    cover = 0.45 * _smooth_noise(gx, gy, 80.0, _key(static, 1)) + 0.35 * _smooth_noise(
        gx, gy, 20.0, _key(static, 2)
    )
    veg: np.ndarray = np.clip(0.15 + 1.2 * cover, 0.1, 0.95).astype(np.float32) * np.float32(season)

    water = _discs(gx, gy, [plan.lakes[canvas.epsg]])
    snow = (
        (_smooth_noise(gx, gy, 30.0, _key(sp.key, 3)) < 0.5) & ~water
        if sp.scene.snow
        else np.zeros((h, w), bool)
    )
    cloud = _discs(gx, gy, sp.clouds)
    shadow = _discs(gx, gy, sp.clouds, offset=sp.shadow_offset) & ~cloud
    adjacent = _discs(gx, gy, sp.clouds, grow=3.0) | _discs(
        gx, gy, sp.clouds, grow=3.0, offset=sp.shadow_offset
    )
    adjacent &= ~cloud & ~shadow
    cirrus = _discs(gx, gy, sp.cirrus)
    aerosol_field = _smooth_noise(gx, gy, 40.0, _key(sp.key, 4))
    aerosol = np.digitize(aerosol_field, [0.3, 0.6, 0.82]).astype(np.uint8)

    fill = np.zeros((h, w), dtype=bool)
    if sp.scene.fill_edge is not None:
        # A slanted swath edge: everything east of it is outside the swath.
        edge = canvas.gx0 + sp.scene.fill_edge + 0.2 * (gy - (canvas.gy0 + h / 2))
        fill = (gx + 0.5)[None, :] > edge[:, None]

    fmask = (
        cirrus * CIRRUS_BIT
        | cloud * CLOUD_BIT
        | adjacent * ADJACENT_BIT
        | shadow * SHADOW_BIT
        | snow * SNOW_BIT
        | water * WATER_BIT
    ).astype(np.uint8) | (aerosol << AEROSOL_SHIFT)
    fmask[fill] = FMASK_NODATA

    arrays: dict[str, np.ndarray] = {}
    assets = [a for a in _assets_of(sp.collection, spec.extra_bands) if a != "Fmask"]
    for asset in assets:
        if (sp.collection, asset) in THERMAL_ASSETS:
            arrays[asset] = _thermal(veg, water, snow, cloud, shadow, sp, rng, asset)
            continue
        wl = float(ITEM_ASSETS[sp.collection][asset][1]["center_wavelength"])
        atm = float(np.interp(wl, _WL, np.asarray(sp.atmos)))
        refl = veg * _spectrum("veg", wl) + (1 - veg) * _spectrum("soil", wl) + atm
        refl = np.where(water, _spectrum("water", wl) + atm, refl)
        refl = np.where(snow, _spectrum("snow", wl), refl)
        refl = np.where(shadow, refl * 0.45, refl)
        refl = np.where(adjacent, 0.8 * refl + 0.2 * _spectrum("cloud", wl), refl)
        if wl > 1.3 and wl < 1.45:
            refl = np.where(cirrus, refl + 0.03, refl)
        refl = np.where(cloud, _spectrum("cloud", wl), refl)
        dn = refl * 10000.0
        if spec.noise_dn > 0:
            dn = dn + rng.normal(0.0, spec.noise_dn * (0.2 if wl > 1.3 and wl < 1.45 else 1.0), (h, w))
        if spec.quantum_dn > 1:
            dn = np.round(dn / spec.quantum_dn) * spec.quantum_dn
        arrays[asset] = np.clip(np.rint(dn), -300, 9999).astype(np.int16)
    _artefacts(arrays, [a for a in assets if (sp.collection, a) not in THERMAL_ASSETS], sp, rng, canvas)
    for arr in arrays.values():
        arr[fill] = REFL_NODATA
    arrays["Fmask"] = fmask
    return _SceneRaster(arrays)


def _thermal(
    veg: np.ndarray,
    water: np.ndarray,
    snow: np.ndarray,
    cloud: np.ndarray,
    shadow: np.ndarray,
    sp: _ScenePlan,
    rng: np.random.Generator,
    asset: str,
) -> np.ndarray:
    """Brightness temperature in 0.01 degC: warm soil, cooler vegetation and water, cold snow
    and cloud tops (negative values are valid here)."""
    doy = sp.when.timetuple().tm_yday
    base = 8.0 + 14.0 * math.exp(-(((doy - 200) / 70.0) ** 2)) + sp.temp_offset
    t = base + 10.0 * (1 - veg) - 4.0 * water
    t = np.where(snow, -3.0, t)
    t = np.where(shadow, t - 4.0, t)
    t = np.where(cloud, -12.0 + 4.0 * veg, t)
    t = t - (0.6 if asset == "B11" else 0.0) + rng.normal(0.0, 0.3, t.shape)
    return np.clip(np.rint(t * 100.0), -9000, 9000).astype(np.int16)


def _artefacts(
    arrays: dict[str, np.ndarray],
    reflective: list[str],
    sp: _ScenePlan,
    rng: np.random.Generator,
    canvas: _Canvas,
) -> None:
    """Values the recipe must reject, each in one band only: 0.2 % of pixels out of range
    (above 10000 or negative), 0.1 % of pixels -9999, and optionally a -9999 column stripe."""
    h, w = canvas.height, canvas.width
    n = h * w
    pick = rng.permutation(n)
    n_bad, n_fill = max(2, n // 500), max(1, n // 1000)
    bad_values = np.array([10001, 11500, 16000, -5, -37, -200], dtype=np.int16)
    for k, flat in enumerate(pick[:n_bad]):
        band = reflective[int(rng.integers(len(reflective)))]
        arrays[band].flat[flat] = bad_values[k % len(bad_values)]
    for flat in pick[n_bad : n_bad + n_fill]:
        band = reflective[int(rng.integers(len(reflective)))]
        arrays[band].flat[flat] = REFL_NODATA
    if sp.scene.stripe:
        c = w // 3
        arrays[reflective[0]][h // 4 :, c : c + 2] = REFL_NODATA


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _overview_count(h: int, w: int) -> int:
    """What GDAL's OVERVIEWS=AUTO gives (halve until it fits one 256 px block), but at least
    one level, so even small windows carry internal overviews as real files do."""
    return max(1, math.ceil(math.log2(max(h, w) / BLOCK))) if max(h, w) > BLOCK else 1


def _write_cog(
    path: Path,
    arr: np.ndarray,
    grid: _Grid,
    *,
    nodata: int,
    zlevel: int,
    tags: dict[str, str],
    band_tags: dict[str, str],
    description: str,
    scale: float | None,
) -> int:
    """One single-band COG (GDAL COG driver through rasterio). Returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": arr.dtype.name,
        "nodata": nodata,
        "crs": CRS.from_epsg(grid.epsg),
        "transform": Affine(*grid.transform),
        "blocksize": BLOCK,
        "compress": "DEFLATE",
        "level": zlevel,
        "overview_resampling": "nearest",
        "overview_count": _overview_count(grid.height, grid.width),
    }
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, 1)
        ds.update_tags(**tags)
        ds.update_tags(1, **band_tags)
        ds.set_band_description(1, description)
        if scale is not None:
            ds.scales = (scale,)
            ds.offsets = (0.0,)
    return path.stat().st_size


def _write_scene(
    plan: _Plan, sp: _ScenePlan, data_dir: Path
) -> list[tuple[str, str, str, int, dict[str, Any]]]:
    """Render a scene once and write the files of each of its items. Returns, per item
    written, ``(tile, item id, collection, bytes, stats)``; items whose window is all fill
    are skipped."""
    spec = plan.spec
    if not sp.tiles:
        return []
    canvas = plan.canvases[plan.grids[sp.tiles[0]].epsg]
    rendered = _render_scene(plan, sp, canvas)
    product = sp.scene.product
    out = []
    for tile in sp.tiles:
        grid = plan.grids[tile]
        gx0, gy0 = canvas.global_of(grid)
        rows, cols = canvas.index(gx0, gy0, grid.height, grid.width)
        fmask = rendered.arrays["Fmask"][np.ix_(rows, cols)]
        valid = fmask != FMASK_NODATA
        if not valid.any():
            continue
        ident = item_id(product, tile, sp.when)
        n_valid = int(valid.sum())
        cloud_pct = round(100.0 * float(((fmask & CLOUD_BIT) > 0)[valid].sum()) / n_valid, 2)
        stats = {"cloud_cover": cloud_pct, "fill_pct": round(100.0 * (1 - n_valid / valid.size), 2)}
        written = 0
        for asset in _assets_of(sp.collection, spec.extra_bands):
            arr = fmask if asset == "Fmask" else rendered.arrays[asset][np.ix_(rows, cols)]
            title = ITEM_ASSETS[sp.collection][asset][0]
            dst = data_dir / asset_key(product, tile, sp.when, ident, asset)
            if asset == "Fmask":
                written += _write_cog(
                    dst,
                    arr,
                    grid,
                    nodata=FMASK_NODATA,
                    zlevel=spec.zlevel,
                    scale=None,
                    tags=_file_tags(sp, stats),
                    description="Fmask",
                    band_tags={
                        "long_name": "Fmask",
                        "_FillValue": str(FMASK_NODATA),
                        "Fmask description": _FMASK_DESCRIPTION,
                    },
                )
            else:
                thermal = (sp.collection, asset) in THERMAL_ASSETS
                scale = THERMAL_SCALE if thermal else REFL_SCALE
                written += _write_cog(
                    dst,
                    arr,
                    grid,
                    nodata=REFL_NODATA,
                    zlevel=spec.zlevel,
                    scale=scale,
                    tags=_file_tags(sp, stats),
                    description=title,
                    band_tags={
                        "long_name": title,
                        "scale_factor": str(scale),
                        "add_offset": "0",
                        "_FillValue": str(REFL_NODATA),
                    },
                )
        out.append((tile, ident, sp.collection, written, stats))
    return out


def _link_scene(
    src: _ScenePlan,
    src_written: list[tuple[str, str, str, int, dict[str, Any]]],
    sp: _ScenePlan,
    data_dir: Path,
) -> list[tuple[str, str, str, int, dict[str, Any]]]:
    """Give scene ``sp`` the files of scene ``src`` (hard links; a copy where links fail):
    the repeated content of ``HlsArchiveSpec.unique_scenes``."""
    out = []
    product = sp.scene.product
    for tile, src_id, collection, nbytes, stats in src_written:
        ident = item_id(product, tile, sp.when)
        for src_file in sorted(
            (data_dir / asset_key(product, tile, src.when, src_id, "x")).parent.glob("*.tif")
        ):
            asset = src_file.name[len(src_id) + 1 : -len(".tif")]
            dst = data_dir / asset_key(product, tile, sp.when, ident, asset)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src_file, dst)
            except OSError:
                shutil.copyfile(src_file, dst)
        out.append((tile, ident, collection, nbytes, stats))
    return out


_FMASK_DESCRIPTION = (
    "Bits are listed from the MSB (bit 7) to the LSB (bit 0): 7-6 aerosol level; "
    "5 water; 4 snow/ice; 3 cloud shadow; 2 adjacent to cloud/shadow; 1 cloud; 0 cirrus"
)


def _file_tags(sp: _ScenePlan, stats: dict[str, Any]) -> dict[str, str]:
    return {
        "SENSING_TIME": sp.when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "SPACECRAFT_NAME": sp.scene.platform,
        "cloud_coverage": str(round(stats["cloud_cover"])),
        "spatial_coverage": str(round(100 - stats["fill_pct"])),
        "HLS_PROCESSING_TIME": "synthetic (pipeline.demo.hls_archive)",
    }


# --------------------------------------------------------------------------------------------
# STAC documents
# --------------------------------------------------------------------------------------------


def _format_datetime(when: datetime) -> str:
    """``2019-07-02T18:59:21.123000Z``, as Planetary Computer's HLS items write it."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _stac_item(
    plan: _Plan, sp: _ScenePlan, tile: str, ident: str, stats: dict[str, Any], data_dir: Path
) -> dict[str, Any]:
    grid = plan.grids[tile]
    geometry, bbox = _footprint(grid)
    collection = sp.collection
    product = sp.scene.product
    assets: dict[str, Any] = {}
    for asset in _assets_of(collection, plan.spec.extra_bands):
        title, band = ITEM_ASSETS[collection][asset]
        assets[asset] = {
            "href": str(data_dir / asset_key(product, tile, sp.when, ident, asset)),
            "type": COG_TYPE,
            "roles": ["data"],
            "title": title,
            "eo:bands": [dict(band)],
        }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(STAC_EXTENSIONS),
        "id": ident,
        "geometry": geometry,
        "bbox": bbox,
        "properties": {
            "datetime": _format_datetime(sp.when),
            "eo:cloud_cover": stats["cloud_cover"],
            "platform": sp.scene.platform,
            "instruments": list(INSTRUMENTS[product]),
            "proj:epsg": grid.epsg,
            "proj:transform": grid.transform,
            "proj:shape": [grid.height, grid.width],
        },
        "links": [
            {
                "rel": "collection",
                "type": "application/json",
                "href": f"{STAC_ROOT}/collections/{collection}",
            },
            {"rel": "parent", "type": "application/json", "href": f"{STAC_ROOT}/collections/{collection}"},
            {"rel": "root", "type": "application/json", "href": f"{STAC_ROOT}/"},
            {
                "rel": "self",
                "type": "application/geo+json",
                "href": f"{STAC_ROOT}/collections/{collection}/items/{ident}",
            },
        ],
        "assets": assets,
        "collection": collection,
    }


def _collection_doc(collection: str, items: list[dict[str, Any]], extra: bool) -> dict[str, Any]:
    """A minimal collection document like PC's (``item_assets``, ``msft:*``), spanning the items."""
    mine = [i for i in items if i["collection"] == collection]
    bb = [i["bbox"] for i in mine] or [[-180.0, -90.0, 180.0, 90.0]]
    times = sorted(i["properties"]["datetime"] for i in mine)
    product = PRODUCT_OF[collection]
    return {
        "type": "Collection",
        "id": collection,
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            *STAC_EXTENSIONS,
        ],
        "title": f"HLS2 {'Landsat' if product == 'L30' else 'Sentinel-2'} 30 m (synthetic demo archive)",
        "description": f"Synthetic stand-in for Planetary Computer's {collection}, generated by pipeline.demo.hls_archive.",
        "license": "proprietary",
        "extent": {
            "spatial": {
                "bbox": [
                    [
                        min(b[0] for b in bb),
                        min(b[1] for b in bb),
                        max(b[2] for b in bb),
                        max(b[3] for b in bb),
                    ]
                ]
            },
            "temporal": {"interval": [[times[0] if times else None, times[-1] if times else None]]},
        },
        "summaries": {"gsd": [30], "platform": sorted({i["properties"]["platform"] for i in mine})},
        "item_assets": {
            a: {
                "type": COG_TYPE,
                "roles": ["data"],
                "title": ITEM_ASSETS[collection][a][0],
                "eo:bands": [dict(ITEM_ASSETS[collection][a][1])],
            }
            for a in _assets_of(collection, extra)
        },
        "msft:storage_account": STORAGE_ACCOUNT,
        "msft:container": CONTAINER,
        "links": [{"rel": "root", "type": "application/json", "href": f"{STAC_ROOT}/"}],
    }


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def build_hls_archive(
    root: Path | str, spec: HlsArchiveSpec, *, workers: int | None = None, overwrite: bool = False
) -> HlsArchive:
    """Build the archive described by ``spec`` under ``root`` (see the module docstring).

    ``workers`` threads render and write scenes in parallel (GDAL releases the GIL); default
    ``min(4, cpu_count)``. An existing archive under ``root`` is an error unless ``overwrite``,
    which deletes only the paths this function writes."""
    t0 = time.perf_counter()
    root = Path(root).resolve()
    data_dir, catalog_dir = root / "data", root / "catalog"
    tiles_csv, points_csv, manifest = root / "tiles.csv", root / "points.csv", root / "archive.json"
    owned = [data_dir, catalog_dir, tiles_csv, points_csv, manifest]
    clear_owned(root, owned, overwrite)
    (catalog_dir / "collections").mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)

    plan = plan_hls_archive(spec)
    n_workers = workers or min(4, os.cpu_count() or 1)
    n_unique = len(plan.scenes) if spec.unique_scenes is None else min(spec.unique_scenes, len(plan.scenes))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        per_scene = list(pool.map(lambda sp: _write_scene(plan, sp, data_dir), plan.scenes[:n_unique]))
    for sp in plan.scenes[n_unique:]:
        src = sp.index % n_unique
        per_scene.append(_link_scene(plan.scenes[src], per_scene[src], sp, data_dir))

    items: list[dict[str, Any]] = []
    total_bytes = 0
    have: set[tuple[str, int]] = set()
    for sp, written in zip(plan.scenes, per_scene, strict=True):
        for tile, ident, _collection, nbytes, stats in written:
            items.append(_stac_item(plan, sp, tile, ident, stats, data_dir))
            total_bytes += nbytes
            have.add((tile, sp.when.year))
    order = np.random.default_rng(_key(spec.seed, 2) >> 1).permutation(len(items))
    items = [items[i] for i in order]  # readers must not rely on catalogue order
    catalog = catalog_dir / "items.ndjson"
    catalog.write_text("".join(json.dumps(it, separators=(",", ":")) + "\n" for it in items))
    collections = {}
    for c in COLLECTIONS:
        path = catalog_dir / "collections" / f"{c}.json"
        path.write_text(json.dumps(_collection_doc(c, items, spec.extra_bands), indent=1) + "\n")
        collections[c] = path

    files = {relative_key(a["href"]): Path(a["href"]) for it in items for a in it["assets"].values()}
    with tiles_csv.open("w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["tile", "year"])
        wr.writerows(sorted(have))
    points = _points_with_data(plan.points, have, plan.grids)
    with points_csv.open("w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["id", "lat", "lon", "year", "site"])
        wr.writerows([p["id"], f"{p['lat']:.7f}", f"{p['lon']:.7f}", p["year"], p["site"]] for p in points)
    edge = next(((p["id"], p["year"], p["own"], p["serving"]) for p in points if p["kind"] == "edge"), None)
    seconds = round(time.perf_counter() - t0, 2)
    manifest.write_text(
        json.dumps(
            {
                "generator": "pipeline.demo.hls_archive",
                "spec": asdict(spec),
                "container": CONTAINER,
                "n_items": len(items),
                "n_files": len(files),
                "total_bytes": total_bytes,
                "build_seconds": seconds,
                "tiles": {
                    t: {"epsg": g.epsg, "transform": g.transform, "shape": [g.height, g.width]}
                    for t, g in plan.grids.items()
                },
                "scenes": [
                    {
                        "date": sp.scene.day.isoformat(),
                        "product": sp.scene.product,
                        "platform": sp.scene.platform,
                        "tiles": [w[0] for w in ws],
                        "items": [w[1] for w in ws],
                        "note": sp.scene.note,
                    }
                    for sp, ws in zip(plan.scenes, per_scene, strict=True)
                ],
                "points": points,
                "edge_point": edge,
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    return HlsArchive(
        root=root,
        data_dir=data_dir,
        items=items,
        catalog=catalog,
        points=points_csv,
        tiles=tiles_csv,
        files=files,
        collections=collections,
        manifest=manifest,
        point_records=points,
        edge_point=edge,
        n_files=len(files),
        total_bytes=total_bytes,
        build_seconds=seconds,
    )


def _points_with_data(
    points: list[dict[str, Any]], have: set[tuple[str, int]], grids: dict[str, _Grid]
) -> list[dict[str, Any]]:
    """Point records with ``fits`` / ``serving`` restricted to tile-years that got items
    (a planned scene may have produced none), and the edge point checked: its chip must not
    fit its own tile's window but must fit a neighbour's."""
    out = []
    for p in points:
        fits = [t for t in p["fits"] if (t, p["year"]) in have]
        serving = p["own"] if p["own"] in fits else (fits[0] if fits else None)
        rec = dict(p, fits=fits, serving=serving)
        if rec["kind"] == "edge" and (rec["own"] in fits or serving is None or rec["own"] not in grids):
            raise ValueError(f"point {rec['id']} is not an edge point: own {rec['own']}, fits {fits}")
        if rec["kind"].startswith("unplaced") and fits:
            raise ValueError(f"point {rec['id']} should fit nowhere but fits {fits}")
        if rec["kind"] == "own-without-data" and (rec["own"] in fits or serving is None):
            raise ValueError(
                f"point {rec['id']}: its own tile {rec['own']} has data in {rec['year']}, or nothing fits"
            )
        out.append(rec)
    return out


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------

# Windows (row_off, col_off, height, width): 10TET's east part and 10TFT's west part overlap
# in x 600000..606000 (10TET cols 3334..3534 = 10TFT cols 0..200), 10TFT's window starting
# 40 rows lower, so a point in 10TFT's square just below the top of 10TFT's window has a
# chip that crosses it but fits 10TET's window.


def _special_points(tet: TileWindow, tft: TileWindow, years: tuple[int, int]) -> list[PointSpec]:
    """The points the tests rely on, placed relative to the two windows (fractional pixels, so
    no point sits on a pixel edge where rounding could go either way)."""
    y1, y2 = years
    r = tft.row_off  # 10TFT's window top row (10TET's top is 40+ rows higher)
    return [
        PointSpec(
            "tet-inside",
            "10TET",
            tet.row_off + 100.37,
            tet.col_off + 67.61,
            y1,
            "10TET",
            "inside",
            "forest-west",
        ),
        PointSpec(
            "tft-inside",
            "10TFT",
            r + tft.height - 25.42,
            tft.col_off + 150.28,
            y1,
            "10TFT",
            "inside",
            "meadow-east",
        ),
        PointSpec(
            "tft-both", "10TFT", r + 80.33, tft.col_off + 120.71, y1, "10TFT", "inside-both", "overlap"
        ),
        PointSpec("edge-1", "10TFT", r + 5.36, tft.col_off + 67.22, y1, "10TFT", "edge", "window-edge"),
        PointSpec(
            "nowhere-east",
            "10TFT",
            r + 60.44,
            tft.col_off + tft.width + 350.18,
            y1,
            "10TFT",
            "unplaced-outside",
            "far-east",
        ),
        PointSpec(
            "nowhere-west",
            "10TET",
            tet.row_off + 90.29,
            tet.col_off + 5.47,
            y1,
            "10TET",
            "unplaced-window-edge",
            "west-edge",
        ),
        PointSpec(
            "tet-inside-y2",
            "10TET",
            tet.row_off + 60.58,
            tet.col_off + 30.12,
            y2,
            "10TET",
            "inside",
            "forest-west",
        ),
        PointSpec(
            "tft-square-y2",
            "10TET",
            tet.row_off + 150.19,
            tet.col_off + 390.67,
            y2,
            "10TFT",
            "own-without-data",
            "overlap-late",
        ),
    ]


def _L(day: str, **kw: Any) -> Scene:
    d = date.fromisoformat(day)
    return Scene(d, "L30", "landsat-9" if d >= _LANDSAT9_FIRST else "landsat-8", **kw)


def _S(day: str, platform: str = "sentinel-2a", **kw: Any) -> Scene:
    return Scene(date.fromisoformat(day), "S30", platform, **kw)


def small_hls_spec(seed: int = 0) -> HlsArchiveSpec:
    """The test archive: 10TET (window 200 x 460 at its east edge, 2019 and 2020) and 10TFT
    (200 x 240 at its west edge, 2019); 16 scenes, 25 items, 317 COGs (39 MB); L30 and S30 in
    the same months; Jan, Feb, Apr, Sep, Nov and Dec 2019 without items. Builds in ~3 s."""
    tet = TileWindow("10TET", 1000, 3200, 200, 460, (2019, 2020))
    tft = TileWindow("10TFT", 1040, 0, 200, 240, (2019,))
    scenes = (
        _L("2019-03-14", snow=True, note="snow"),
        _L("2019-05-03"),
        _S("2019-05-11", "sentinel-2a", note="L30 and S30 in May"),
        _S("2019-06-15", "sentinel-2b", tiles=("10TET",), note="10TET only"),
        _S(
            "2019-06-25",
            "sentinel-2a",
            fill_edge=300.0,
            note="swath edge: 10TFT's east part and 10TET's east end are fill",
        ),
        _L("2019-07-02", stripe=True, note="a -9999 stripe in B01 only"),
        _S("2019-07-10", "sentinel-2b"),
        _S("2019-07-20", "sentinel-2a", cloudiness=1.5, note="cloudy"),
        _L("2019-08-19"),
        _S("2019-10-08", "sentinel-2b"),
        _L("2020-04-20"),
        _L("2020-06-07"),
        _S("2020-06-14", "sentinel-2a"),
        _S("2020-08-28", "sentinel-2b", cloudiness=1.0),
        _L("2020-09-21"),
        _S("2020-09-29", "sentinel-2a"),
    )
    return HlsArchiveSpec(
        name="small",
        tiles=(tet, tft),
        scenes=scenes,
        points=tuple(_special_points(tet, tft, (2019, 2020))),
        seed=seed,
    )


def _random_scenes(
    rng: np.random.Generator, year: int, skip_months: Sequence[int], tiles: tuple[str, ...] = ()
) -> list[Scene]:
    """One to three scenes in every month but ``skip_months``, L30 and S30 mixed."""
    out = []
    for month in range(1, 13):
        if month in skip_months:
            continue
        days = sorted(rng.choice(np.arange(1, 29), size=int(rng.integers(1, 4)), replace=False))
        for k, day in enumerate(days):
            d = date(year, month, int(day))
            snow = month in (1, 2, 3, 12)
            cloudiness = float(rng.uniform(0.0, 1.2))
            if (k + month) % 2 == 0:
                plat = "landsat-9" if d >= _LANDSAT9_FIRST and rng.random() < 0.5 else "landsat-8"
                out.append(Scene(d, "L30", plat, tiles=tiles, cloudiness=cloudiness, snow=snow))
            else:
                plat = ("sentinel-2a", "sentinel-2b")[int(rng.integers(2))]
                out.append(Scene(d, "S30", plat, tiles=tiles, cloudiness=cloudiness, snow=snow))
    return out


def demo_hls_spec(seed: int = 0) -> HlsArchiveSpec:
    """The README demo: 10TET (400 x 660 window) and 10TFT (400 x 440) in 2019 and 2020, 10TET
    alone in 2022 (Landsat 9 too); 1-3 scenes a month, some months empty; the special points
    (their second year 2022, when 10TFT has no items) plus 8 ordinary ones. 102 items, 1272
    COGs, 491 MB; builds in ~23 s."""
    rng = np.random.default_rng(_key(seed, 99) >> 1)
    tet = TileWindow("10TET", 1000, 3000, 400, 660, (2019, 2020, 2022))
    tft = TileWindow("10TFT", 1040, 0, 400, 440, (2019, 2020))
    scenes = (
        _random_scenes(rng, 2019, (2, 11))
        + _random_scenes(rng, 2020, (1, 4, 12))
        + _random_scenes(rng, 2022, (3, 10), tiles=("10TET",))
    )
    scenes[2] = replace(scenes[2], fill_edge=500.0, note="swath edge")
    scenes[5] = replace(scenes[5], stripe=True, note="a -9999 stripe in one band")
    points = _special_points(tet, tft, (2019, 2022))
    for k in range(8):
        tw = (tet, tft)[k % 2]
        row = round(tw.row_off + float(rng.uniform(30, tw.height - 30)), 2) + 0.13
        col = round(tw.col_off + float(rng.uniform(30, tw.width - 30)), 2) + 0.29
        points.append(
            PointSpec(
                f"p{k + 1:02d}",
                tw.tile,
                row,
                col,
                (2019, 2020)[k % 2],
                plan_own(tw.tile, row, col),
                "ordinary",
                f"site-{k + 1}",
            )
        )
    return HlsArchiveSpec(
        name="demo", tiles=(tet, tft), scenes=tuple(scenes), points=tuple(points), seed=seed
    )


def plan_own(tile: str, row: float, col: float) -> str:
    """The MGRS square of full-grid pixel (row, col) of ``tile``."""
    epsg, x0, y0 = tile_grid(tile)
    lon, lat = _transformer(epsg, 4326).transform(x0 + col * PIXEL, y0 - row * PIXEL)
    return mgrs_tile_of(round(float(lat), 7), round(float(lon), 7))


def full_size_hls_spec(
    n_scenes: int = 200,
    *,
    tile: str = "10TET",
    year: int = 2019,
    seed: int = 0,
    pattern_px: int = 256,
    unique_scenes: int = 24,
) -> HlsArchiveSpec:
    """Full 3660 x 3660 tiles for the memory benchmark: ``n_scenes`` scenes of ``tile`` in
    ``year``, L30 and S30 alternating, spread over the year. Each is a ``pattern_px`` pattern
    repeated over the tile (block aligned), noise-free and quantised to 20 DN, DEFLATE level 1;
    only ``unique_scenes`` scenes are rendered (spread over the year), each of the others
    hard-links the files of the unique scene just before it in time (see
    ``HlsArchiveSpec.unique_scenes``). No thermal / red-edge extras. Four points inside the tile.
    Cost: ~0.3 s per 3660 x 3660 COG (GDAL's DEFLATE; threads do not help on the shared
    2 cores), so ~3 s per unique scene; see the module docstring for measured totals."""
    tw = TileWindow(tile, 0, 0, FULL_TILE_PX, FULL_TILE_PX, (year,))
    start = date(year, 1, 1).toordinal()
    days = 366 if date(year, 12, 31).timetuple().tm_yday == 366 else 365
    n_unique = max(1, min(unique_scenes, n_scenes))
    per_unique = math.ceil(n_scenes / n_unique)
    scenes = []
    used: set[tuple[str, date]] = set()
    for i in range(n_scenes):
        product = ("L30", "S30")[i % 2]
        # Scene i repeats unique scene i % n_unique: put it just after that one in time.
        fraction = ((i % n_unique) + (i // n_unique) / per_unique) / n_unique
        d = date.fromordinal(start + int(fraction * days))
        while (product, d) in used:  # one granule per sensor and day
            d = date.fromordinal(d.toordinal() + 1) if d.year == year else date(year, 1, 1)
        used.add((product, d))
        plat = (
            PLATFORMS[product][(i // 2) % 2]
            if product == "S30"
            else ("landsat-9" if d >= _LANDSAT9_FIRST and (i // 2) % 2 else "landsat-8")
        )
        scenes.append(
            Scene(d, product, plat, cloudiness=0.4 + 0.4 * ((i * 7) % 5) / 4, snow=d.month in (1, 2, 12))
        )
    points = tuple(
        PointSpec(
            f"full-{k}",
            tile,
            400.3 + 900 * k,
            500.6 + 800 * k,
            year,
            plan_own(tile, 400.3 + 900 * k, 500.6 + 800 * k),
            "inside",
            "full",
        )
        for k in range(4)
    )
    return HlsArchiveSpec(
        name="full-size",
        tiles=(tw,),
        scenes=tuple(scenes),
        points=points,
        seed=seed,
        extra_bands=False,
        pattern_px=pattern_px,
        noise_dn=0.0,
        quantum_dn=20,
        zlevel=1,
        unique_scenes=n_unique,
    )


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="make_hls_demo_archive.py",
        description=(
            "Write a synthetic HLS v2 archive (Planetary Computer hls2-l30 / hls2-s30 shaped) into OUT_DIR:\n"
            "  data/                 COGs with the real container keys (upload as container 'hls2')\n"
            "  catalog/items.ndjson  STAC items (href = local path)\n"
            "  tiles.csv, points.csv the HLS workflow's inputs\n"
            "  archive.json          spec, scenes, every point's kind and placement"
        ),
        epilog=(
            "examples:\n"
            "  make_hls_demo_archive.py demo/hls                    the README demo\n"
            "  make_hls_demo_archive.py /tmp/h --small --seed 3     the test archive (seconds)\n"
            "  make_hls_demo_archive.py /tmp/f --full-size 200      200 full 3660 px scenes (benchmark)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, help="directory to write into (created if missing)"
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="the small test spec")
    size.add_argument(
        "--full-size", type=int, metavar="N_SCENES", help="N full-size scenes of one tile (benchmark)"
    )
    p.add_argument("--tile", default="10TET", help="tile of --full-size (default 10TET)")
    p.add_argument("--year", type=int, default=2019, help="year of --full-size (default 2019)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; equal seeds give identical archives (default 0)"
    )
    p.add_argument("--workers", type=int, help="parallel writer threads (default min(4, cpus))")
    p.add_argument("--force", action="store_true", help="replace an archive already in OUT_DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``scripts/make_hls_demo_archive.py``)."""
    args = _parser().parse_args(argv)
    try:
        if args.full_size is not None:
            spec = full_size_hls_spec(args.full_size, tile=args.tile.upper(), year=args.year, seed=args.seed)
        elif args.small:
            spec = small_hls_spec(args.seed)
        else:
            spec = demo_hls_spec(args.seed)
        built = build_hls_archive(args.out_dir, spec, workers=args.workers, overwrite=args.force)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{built.root}: {len(built.items)} items, {built.n_files} COGs, {built.total_bytes / 1e6:.1f} MB, "
        f"{len(built.point_records)} points, {built.build_seconds:.1f} s"
    )
    if not args.quiet:
        print(f"  data     {built.data_dir}  (upload as container '{CONTAINER}')")
        print(
            f"  items    {built.catalog}\n  tiles    {built.tiles}\n  points   {built.points}\n  manifest {built.manifest}"
        )
        for p in built.point_records:
            print(
                f"  {p['id']:<14} {p['year']} {p['kind']:<22} own {p['own']:<6} fits {','.join(p['fits']) or '-':<12} "
                f"served by {p['serving'] or 'nobody (unplaced)'}"
            )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
