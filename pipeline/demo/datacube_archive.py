"""A small synthetic Sentinel-2 L2A + Sentinel-1 RTC + Copernicus DEM archive shaped like Planetary
Computer's ``sentinel-2-l2a``, ``sentinel-1-rtc`` and ``cop-dem-glo-30`` collections, for the offline
datacube demo and tests (issue 14).

What :func:`make_datacube_archive` writes under ``root``::

    data/sentinel2-l2/10/T/ET/2019/06/14/S2A_MSIL2A_..._T10TET_....SAFE/GRANULE/.../IMG_DATA/R10m/T10TET_..._B02_10m.tif
    data/sentinel1-grd-rtc/GRD/2019/6/15/IW/DV/S1A_IW_GRDH_1SDV_.../measurement/iw-vh.rtc.tiff
    data/copernicus-dem/COP30_hh/Copernicus_DSM_COG_10_N47_56_W121_70_DEM.tif
    catalog/items.ndjson                  every item (STAC 1.0.0), one per line, shuffled (LocalCatalog)
    catalog/collections/{collection}.json minimal collection documents (for pgstac)
    sample.fgb                            the MGRS sample: EPSG:4326, property ``name``, tile polygon
    archive.json                          spec, expected selections, cases

``data/{container}/{key}`` mirrors the real containers (``sentinel2-l2`` of account
``sentinel2l2a01``, ``sentinel1-grd-rtc`` of ``sentinel1euwestrtc``, ``copernicus-dem`` of
``elevationeuwest``); :func:`items_with_href_base` rewrites the hrefs to ``{base}/{container}/{key}``.

**Grids.** A "tile" is a window of a real MGRS tile's 10 m grid (10TET's grid origin x 499980,
y 5300040, EPSG:32610), ``chips_x * chip_size + remainder`` by ``chips_y * chip_size + remainder``
pixels. S2 10 m bands (B02 B03 B04 B08) are on that grid; the 20 m bands (B05 B06 B07 B8A B11 B12)
**and SCL** on the 20 m grid of the same origin, as in the real product. S1 RTC rasters are UTM
10 m on grids offset by (3 m, -7 m) from the S2 lattice (one scene in the next zone, EPSG:32611),
so nearest-neighbour warps are real and never meet a tie. DEM items are EPSG:4326 at 1 arcsecond,
on 0.02 degree cells (ids follow the real pattern with hundredths of a degree in the minute
fields), half a pixel shifted as the real COGs are.

**Values.** uint16 reflectance (1..~4000, 0 = no data), uint8 SCL (0 no data), float32 S1 gamma
naught in linear power (nodata -32768, as the real collection declares), float32 elevation
(nodata NaN). COGs: DEFLATE, 256 px blocks, internal nearest overviews.

**Cases** (:attr:`DatacubeArchive.cases`; chip numbers are for ``spec.chip_size``): see
:func:`_tile0_plan`. The expected date selection per sample row (:attr:`DatacubeArchive.expected`)
is by construction, not computed with the recipe code.

Measured on the shared 2-core machine (load average ~6): the test spec (65 items, 203 COGs, 14 MB)
builds in 1.6-3.0 s; :func:`demo_spec` (113 items, 251 COGs, 79 MB) in 7.2 s.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from pipeline.demo._owned import clear_owned

S2_COLLECTION: Final = "sentinel-2-l2a"
S1_COLLECTION: Final = "sentinel-1-rtc"
DEM_COLLECTION: Final = "cop-dem-glo-30"
COLLECTIONS: Final = (S2_COLLECTION, S1_COLLECTION, DEM_COLLECTION)
CONTAINERS: Final = {
    S2_COLLECTION: ("sentinel2l2a01", "sentinel2-l2"),
    S1_COLLECTION: ("sentinel1euwestrtc", "sentinel1-grd-rtc"),
    DEM_COLLECTION: ("elevationeuwest", "copernicus-dem"),
}
STAC_ROOT: Final = "https://planetarycomputer.microsoft.com/api/stac/v1"
COG_TYPE: Final = "image/tiff; application=geotiff; profile=cloud-optimized"
BLOCK: Final = 256
S2_10M: Final = ("B02", "B03", "B04", "B08")
S2_20M: Final = ("B05", "B06", "B07", "B8A", "B11", "B12")
S2_BANDS: Final = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S1_NODATA: Final = -32768.0
DEM_RES: Final = 1.0 / 3600.0  # 1 arcsecond
DEM_CELL: Final = 0.02  # degrees per synthetic DEM item
SCL_BAD: Final = (0, 1, 3, 8, 9, 10)
# Typical reflectance of each band (vegetation-ish), for real-looking values.
_BASE: Final = {"B02": 420, "B03": 700, "B04": 560, "B05": 1100, "B06": 2200, "B07": 2600,
                "B08": 2900, "B8A": 3000, "B11": 1800, "B12": 950}  # fmt: skip

# Real MGRS tiles (S2 10 m grid origin) used by the sample.
TILE_ORIGINS: Final = {
    "10TET": (32610, 499980.0, 5300040.0),
    "10TFT": (32610, 599980.0, 5300040.0),
    "10TDT": (32610, 399960.0, 5300040.0),
}

Array = npt.NDArray[Any]


# --------------------------------------------------------------------------------------------
# Spec and result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatacubeArchiveSpec:
    """``chip_size`` is the chip size the cases are laid out for (the runs use the same);
    the tile windows are ``chips_x * chip_size + remainder`` by ``chips_y * chip_size + remainder``
    pixels (the remainder is the strip a run drops). ``chips_x >= 4``, ``chips_y >= 3``."""

    chip_size: int = 64
    chips_x: int = 4
    chips_y: int = 3
    remainder: int = 10  # even: the 20 m bands must tile the window
    seed: int = 0
    # Degrees per DEM item: small cells give small windows several DEM items to mosaic (the real
    # tiles are 1 degree; a benchmark on big windows uses big cells to keep the item count real).
    dem_cell: float = DEM_CELL

    def __post_init__(self) -> None:
        if self.chip_size < 32 or self.chip_size % 2:
            raise ValueError(f"chip_size must be even and >= 32, got {self.chip_size}")
        if self.chips_x < 4 or self.chips_y < 3:
            raise ValueError(f"need chips_x >= 4 and chips_y >= 3, got {self.chips_x} x {self.chips_y}")
        if self.remainder < 0 or self.remainder % 2:
            raise ValueError(f"remainder must be even and >= 0, got {self.remainder}")
        if not 0.01 <= self.dem_cell <= 1.0 or abs(self.dem_cell * 100 - round(self.dem_cell * 100)) > 1e-9:
            raise ValueError(f"dem_cell must be whole hundredths of a degree in 0.01..1, got {self.dem_cell}")

    @property
    def width(self) -> int:
        return self.chips_x * self.chip_size + self.remainder

    @property
    def height(self) -> int:
        return self.chips_y * self.chip_size + self.remainder

    def chip(self, row: int, col: int) -> int:
        """The 1-based number of the chip in chip row ``row``, column ``col`` (negatives from the end)."""
        r, c = row % self.chips_y, col % self.chips_x
        return r * self.chips_x + c + 1


def demo_spec(seed: int = 0) -> DatacubeArchiveSpec:
    """The README demo: 128 px chips, 5 x 4 chips per tile."""
    return DatacubeArchiveSpec(chip_size=128, chips_x=5, chips_y=4, remainder=24, seed=seed)


@dataclass(frozen=True)
class ExpectedDate:
    """One date a tile should get, in selection order: the S2 item, the S1 items in the order
    the recipe adds them, the DEM items sorted by id."""

    date: date
    s2_id: str
    s1_ids: tuple[str, ...]
    dem_ids: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """A situation the archive contains: ``chips`` lists the chip numbers (for ``spec.chip_size``)
    it applies to and ``outcome`` what the recipe makes of them."""

    name: str
    tile_index: int
    mgrs: str
    year: int
    day: date | None
    chips: tuple[int, ...]
    outcome: str
    note: str


@dataclass
class DatacubeArchive:
    root: Path
    spec: DatacubeArchiveSpec
    catalog_path: Path
    sample_path: Path
    manifest_path: Path
    data_dir: Path
    collection_paths: dict[str, Path]
    items: list[dict[str, Any]]
    tiles: list[str]  # MGRS id per sample row
    expected: dict[int, list[ExpectedDate]]  # every date the row gets with unlimited dates_per_tile
    skipped_years: dict[int, dict[int, str]]  # row -> year -> why nothing matched (years with S2 items)
    cases: list[Case]
    build_seconds: float = 0.0
    files: list[Path] = field(default_factory=list)

    def item(self, item_id: str) -> dict[str, Any]:
        for it in self.items:
            if it["id"] == item_id:
                return it
        raise KeyError(item_id)

    def expected_for(self, index: int, dates_per_tile: int = 3) -> list[ExpectedDate]:
        """The dates row ``index`` gets with ``dates_per_tile`` (each year gives at most one date,
        years in the recipe's order, so it is a prefix of :attr:`expected`)."""
        return self.expected[index][:dates_per_tile]

    def case(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(name)


def year_order(index: int) -> list[int]:
    """2017..2023 as ``random.seed(index); random.shuffle(years)`` orders them (the old script)."""
    years = list(range(2017, 2024))
    random.Random(index).shuffle(years)
    return years


# --------------------------------------------------------------------------------------------
# Grids and footprints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    epsg: int
    x0: float  # west edge
    y0: float  # north edge
    res: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0 - self.res * self.height, self.x0 + self.res * self.width, self.y0)

    def coarser(self, factor: int) -> Grid:
        return Grid(
            self.epsg, self.x0, self.y0, self.res * factor, self.width // factor, self.height // factor
        )

    def proj(self) -> dict[str, Any]:
        return {
            "proj:bbox": list(self.bounds),
            "proj:shape": [self.height, self.width],
            "proj:transform": [self.res, 0.0, self.x0, 0.0, -self.res, self.y0],
        }


def _to_lonlat(epsg: int, xs: Array, ys: Array) -> tuple[Array, Array]:
    if epsg == 4326:
        return xs, ys
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(xs, ys)
    return np.asarray(lon), np.asarray(lat)


def _rect_lonlat(epsg: int, bounds: tuple[float, float, float, float]) -> list[list[float]]:
    """The rectangle's corners in lon/lat (closed ring, counter-clockwise), 8 decimals."""
    x0, y0, x1, y1 = bounds
    xs, ys = np.array([x0, x1, x1, x0, x0]), np.array([y0, y0, y1, y1, y0])
    lon, lat = _to_lonlat(epsg, xs, ys)
    return [[round(float(a), 8), round(float(b), 8)] for a, b in zip(lon, lat, strict=True)]


def _polygon(ring: list[list[float]]) -> tuple[dict[str, Any], list[float]]:
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return {"type": "Polygon", "coordinates": [ring]}, [min(lons), min(lats), max(lons), max(lats)]


def _window_grid(mgrs: str, col_off: int, row_off: int, spec: DatacubeArchiveSpec) -> Grid:
    epsg, x0, y0 = TILE_ORIGINS[mgrs]
    return Grid(epsg, x0 + 10.0 * col_off, y0 - 10.0 * row_off, 10.0, spec.width, spec.height)


def _px_to_xy(grid: Grid, col: float, row: float) -> tuple[float, float]:
    return grid.x0 + grid.res * col, grid.y0 - grid.res * row


def _s1_grid(s2: Grid, epsg: int, cols: tuple[float, float], rows: tuple[float, float]) -> Grid:
    """A 10 m grid in ``epsg`` covering S2 pixel range ``cols`` x ``rows`` of ``s2`` (its corners
    transformed), its origin on the lattice offset by (3 m, -7 m) from the S2 one."""
    cs = np.array([cols[0], cols[1], cols[1], cols[0]])
    rs = np.array([rows[0], rows[0], rows[1], rows[1]])
    xs, ys = s2.x0 + 10.0 * cs, s2.y0 - 10.0 * rs
    if epsg != s2.epsg:
        xs, ys = (
            np.asarray(v) for v in Transformer.from_crs(s2.epsg, epsg, always_xy=True).transform(xs, ys)
        )
    x0 = math.floor(float(xs.min()) / 10.0) * 10.0 + 3.0
    y1 = math.ceil(float(ys.max()) / 10.0) * 10.0 - 7.0
    width = math.ceil((float(xs.max()) - x0) / 10.0)
    height = math.ceil((y1 - float(ys.min())) / 10.0)
    return Grid(epsg, x0, y1, 10.0, width, height)


# --------------------------------------------------------------------------------------------
# Scene plans
# --------------------------------------------------------------------------------------------


@dataclass
class S2Plan:
    mgrs: str
    grid: Grid
    when: datetime
    cloud_cover: float
    nodata_percent: float | None  # None: computed from the rendered B02
    platform: str = "Sentinel-2A"
    clouds: list[tuple[int, int, int, int]] = field(
        default_factory=list
    )  # (chip col, chip row, n bad px, style)
    good_classes_chip: tuple[int, int] | None = None  # chip (col, row) mostly SCL 2, 7, 11
    corner_edge: bool = False  # a no-data triangle at the bottom-right corner (every band 0, SCL 0)
    b02_dead: tuple[int, int] | None = None  # one B02 == 0 pixel (10 m col, row)
    key: int = 0


@dataclass
class S1Plan:
    grid: Grid
    when: datetime
    orbit_state: str
    valid_cols: tuple[int, int] | None = None  # S1 pixel columns with data (rest -32768); None: all
    platform: str = "SENTINEL-1A"
    key: int = 0


def _dt(day: date, hh: int, mm: int, ss: int, us: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, us, tzinfo=UTC)


@dataclass
class _Plan:
    spec: DatacubeArchiveSpec
    tiles: list[tuple[str, Grid]]  # sample rows
    s2: list[S2Plan]
    s1: list[S1Plan]
    dem_nan_box: tuple[Grid, tuple[float, float, float, float]]  # S2 grid, (c0, r0, c1, r1) NaN in the DEM
    expected_s2: dict[int, list[tuple[int, list[int]]]]  # row -> [(s2 plan index, [s1 plan indexes])]
    skipped_years: dict[int, dict[int, str]]
    cases: list[Case]


def _plan(spec: DatacubeArchiveSpec) -> _Plan:
    c, W, H = spec.chip_size, spec.width, spec.height
    cx, cy = spec.chips_x, spec.chips_y
    g0 = _window_grid("10TET", 9800, 3000, spec)  # near 10TET's east edge: overlaps 10TFT
    overlap_cols = c + c // 2  # the neighbour's window starts this many pixels left of g0's east edge
    nb_col0 = (g0.x0 + 10.0 * (W - overlap_cols) - TILE_ORIGINS["10TFT"][1]) / 10.0
    g_nb = _window_grid("10TFT", int(nb_col0), 3000 + c // 2, spec)
    g1 = _window_grid("10TDT", 4000, 5200, spec)
    y_none, y_main, y_edge, y_part = year_order(0)[:4]  # 2021, 2019, 2018, 2017
    y1_first, _, y1_third = year_order(1)[:3]  # 2020, 2023, 2022

    s2: list[S2Plan] = []
    s1: list[S1Plan] = []

    def add_s2(p: S2Plan) -> int:
        p.key = len(s2) + 1
        s2.append(p)
        return len(s2) - 1

    def add_s1(p: S1Plan) -> int:
        p.key = 101 + len(s1)
        s1.append(p)
        return len(s1) - 1

    full = ((-c / 2, W + c / 2), (-c / 2, H + c / 2))
    # Year y_none: two good S2 scenes, no S1 at all in the year.
    add_s2(S2Plan("10TET", g0, _dt(date(y_none, 5, 4), 19, 3, 21, 24000), 4.5, None))
    add_s2(S2Plan("10TET", g0, _dt(date(y_none, 8, 22), 19, 3, 41, 24000), 11.2, None))
    # Year y_main: attempt 1 (least cloudy) has no S1 within +-3 days (one at +5 days); attempt 2 matches
    # with two ascending scenes whose union covers the footprint; a descending scene nearer in time
    # with a smaller overlap; a full-cover scene 4 calendar days later (but < 3.5 days in time).
    d_a, d_b = date(y_main, 3, 11), date(y_main, 6, 14)
    add_s2(S2Plan("10TET", g0, _dt(d_a, 19, 4, 1, 24000), 2.1, None))
    b_when = _dt(d_b, 19, 4, 11, 24000)
    clouds = [
        (1, 0, -50, 0),  # chip (col 1, row 0): 50 % bad (classes 3, 8, 9, 10) -> dropped
        (2, 0, -15, 0),  # 15 % bad -> kept
        (1, 1, math.ceil(0.3 * (c // 2) ** 2), 1),  # just >= 30 % (classes 0/1) -> dropped
        (2, 1, math.ceil(0.3 * (c // 2) ** 2) - 1, 2),  # just < 30 % (classes 9/10) -> kept
    ]
    i_b = add_s2(S2Plan("10TET", g0, b_when, 8.4, None, "Sentinel-2B", clouds, (3, 0)))
    add_s2(S2Plan("10TET", g0, _dt(date(y_main, 7, 9), 19, 4, 21, 24000), 55.0, 0.0))  # too cloudy
    add_s2(S2Plan("10TET", g0, _dt(date(y_main, 7, 24), 19, 4, 31, 24000), 0.6, 24.5))  # too much no data
    # The neighbour's scene of the same datatake (same datetime), overlapping, least cloudy of all.
    add_s2(S2Plan("10TFT", g_nb, b_when, 0.3, None, "Sentinel-2B"))
    add_s1(S1Plan(_s1_grid(g0, 32610, *full), _dt(d_a + timedelta(days=5), 2, 10, 5, 412000), "ascending"))
    asc_a = add_s1(
        S1Plan(
            _s1_grid(g0, 32610, (-c / 2, 0.65 * W + c / 4), full[1]),
            _dt(d_b + timedelta(days=1), 2, 9, 44, 101000),
            "ascending",
        )
    )
    a_grid = s1[asc_a].grid
    # A's data ends at 0.65 W (its last c/4 columns are no data, outside its geometry, over B).
    a_valid = round((g0.x0 + 10.0 * 0.65 * W - a_grid.x0) / 10.0)
    s1[asc_a].valid_cols = (0, a_valid)
    asc_b = add_s1(
        S1Plan(_s1_grid(g0, 32610, (0.5 * W, W + c / 2), full[1]), _dt(d_b - timedelta(days=3), 1, 0, 3, 5000),
               "ascending", platform="SENTINEL-1B")
    )  # fmt: skip
    add_s1(
        S1Plan(
            _s1_grid(g0, 32610, (0.45 * W, W + c / 2), full[1]), _dt(d_b, 14, 12, 30, 770000), "descending"
        )
    )
    add_s1(S1Plan(_s1_grid(g0, 32610, *full), _dt(d_b + timedelta(days=4), 0, 10, 0, 0), "ascending"))
    # Year y_edge: a swath-edge triangle (B02 == 0) and a single dead B02 pixel; one descending S1.
    d_c = date(y_edge, 9, 2)
    i_c = add_s2(S2Plan("10TET", g0, _dt(d_c, 19, 5, 1, 24000), 6.3, None, "Sentinel-2B",
                        corner_edge=True, b02_dead=(2 * c + c // 3, c + c // 5)))  # fmt: skip
    s1_c = add_s1(
        S1Plan(_s1_grid(g0, 32610, *full), _dt(d_c - timedelta(days=1), 14, 11, 2, 3000), "descending")
    )
    # Year y_part: the only S1 (in the next UTM zone) misses the last chip column.
    d_d = date(y_part, 7, 19)
    i_d = add_s2(S2Plan("10TET", g0, _dt(d_d, 19, 3, 51, 24000), 14.9, None))
    part = _s1_grid(g0, 32611, (-c / 2, (cx - 1) * c + 2), full[1])
    # Cut its east edge back so every pixel east of col (cx-1)*c + 2 of the S2 grid is uncovered.
    edge_x = float(
        np.max(Transformer.from_crs(32610, 32611, always_xy=True).transform(
            np.array([_px_to_xy(g0, (cx - 1) * c + 2, r)[0] for r in (-c, H + c)]),
            np.array([_px_to_xy(g0, (cx - 1) * c + 2, r)[1] for r in (-c, H + c)]),
        )[0])
    )  # fmt: skip
    width = math.floor((edge_x - part.x0) / 10.0)
    part = Grid(part.epsg, part.x0, part.y0, 10.0, width, part.height)
    s1_d = add_s1(S1Plan(part, _dt(d_d + timedelta(days=2), 2, 1, 12, 5000), "ascending"))
    # Row 1 (10TDT): good scenes, but S1 only 4 days after one of them, and rejected scenes.
    d_e = date(y1_first, 6, 2)
    add_s2(S2Plan("10TDT", g1, _dt(d_e, 19, 6, 11, 24000), 3.3, None))
    add_s2(S2Plan("10TDT", g1, _dt(date(y1_first, 8, 1), 19, 6, 21, 24000), 62.0, 1.0))
    add_s2(S2Plan("10TDT", g1, _dt(date(y1_third, 5, 28), 19, 6, 31, 24000), 7.7, 31.0))
    add_s2(S2Plan("10TDT", g1, _dt(date(y1_third, 9, 5), 19, 6, 41, 24000), 9.9, None))
    add_s1(S1Plan(_s1_grid(g1, 32610, *full), _dt(d_e + timedelta(days=4), 2, 4, 0, 0), "descending"))

    nan_box = (-0.3 * c, (cy - 1) * c + 0.3 * c, 0.3 * c, H + 0.3 * c)
    q = math.ceil(0.3 * (c // 2) ** 2)
    cases = [
        Case("year-without-s1", 0, "10TET", y_none, None, (), "year skipped",
             "two good S2 scenes, no S1 item in the whole year"),
        Case("first-attempt-without-s1", 0, "10TET", y_main, d_a, (), "attempt skipped",
             f"least cloudy S2 of {y_main} ({d_a}) has S1 only 5 days later; the 2nd attempt matches"),
        Case("rejected-s2", 0, "10TET", y_main, None, (), "never a candidate",
             "eo:cloud_cover 55 (> 50) and s2:nodata_pixel_percentage 24.5 (> 20)"),
        Case("neighbour-scene", 0, "10TET", y_main, d_b, (), "never picked",
             "10TFT item of the same datetime as the picked 10TET item, cloud 0.3, overlapping"),
        Case("s1-union", 0, "10TET", y_main, d_b, (), "two S1 items",
             "ascending A (+1 day, 65 % of the footprint) and B (-3 calendar days, 50 %): union covers"),
        Case("s1-later-wins", 0, "10TET", y_main, d_b, tuple(range(1, cx * cy + 1)), "A painted over B",
             "A (later) and B overlap over S2 columns 0.5 W .. 0.65 W; A's raster goes on c/4 further "
             "with -32768 (outside its geometry), where B must show"),
        Case("orbit-split", 0, "10TET", y_main, d_b, (), "descending ignored",
             "descending C on the S2 day covers 55 % (< A's 65 %): the ascending state wins"),
        Case("s1-calendar-window", 0, "10TET", y_main, d_b, (), "outside the window",
             "ascending D covering all, 4 calendar days later but only ~3.2 days in time"),
        Case("clouds-over-30", 0, "10TET", y_main, d_b, (spec.chip(0, 1),), "dropped (SCL)", "50 % SCL 3/8/9/10"),
        Case("clouds-under-30", 0, "10TET", y_main, d_b, (spec.chip(0, 2),), "kept", "15 % SCL 3/8/9/10"),
        Case("clouds-at-30", 0, "10TET", y_main, d_b, (spec.chip(1, 1),), "dropped (SCL)",
             f"{q} of {(c // 2) ** 2} SCL pixels (20 m) in classes 0/1: >= 30 %"),
        Case("clouds-just-under-30", 0, "10TET", y_main, d_b, (spec.chip(1, 2),), "kept",
             f"{q - 1} of {(c // 2) ** 2} SCL pixels (20 m) in classes 9/10: < 30 %"),
        Case("good-scl-classes", 0, "10TET", y_main, d_b, (spec.chip(0, 3),), "kept",
             "60 % SCL 2 (dark), 7 (unclassified), 11 (snow): not bad classes"),
        Case("dem-nan", 0, "10TET", 0, None, (spec.chip(-1, 0),), "dropped (NaN in dem) on every date",
             "a void (NaN) in the DEM at the window's south-west corner"),
        Case("b02-edge", 0, "10TET", y_edge, d_c, (spec.chip(-1, -1),), "dropped (B02 has 0)",
             "a swath-edge triangle at the bottom-right corner: every band 0, SCL 0"),
        Case("b02-single-zero", 0, "10TET", y_edge, d_c, (spec.chip(1, 2),), "dropped (B02 has 0)",
             "one B02 pixel is 0, the other bands are not"),
        Case("s1-partial-other-zone", 0, "10TET", y_part, d_d,
             tuple(spec.chip(r, cx - 1) for r in range(cy)), "dropped (NaN in vh)",
             "the only S1 item is in EPSG:32611 and misses the last chip column"),
        Case("no-date-at-all", 1, "10TDT", y1_first, None, (), "tile without any date",
             f"S1 only 4 days after the {d_e} scene; other scenes rejected (cloud 62, nodata 31) or without S1"),
    ]  # fmt: skip
    expected_s2 = {0: [(i_b, [asc_a, asc_b]), (i_c, [s1_c]), (i_d, [s1_d])], 1: []}
    skipped = {
        0: {y_none: "no S1 match for any S2 candidate"},
        1: {y1_first: "no S1 match for any S2 candidate", y1_third: "no S1 match for any S2 candidate"},
    }
    return _Plan(spec, [("10TET", g0), ("10TDT", g1)], s2, s1, (g0, nan_box), expected_s2, skipped, cases)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _field(xs: Array, ys: Array, key: int, scale: float) -> Array:
    """A smooth deterministic field in [0, 1] of map coordinates (so overlapping scenes agree
    on the landscape and differ only by their own noise)."""
    k = (key % 97) / 97.0
    v = np.sin(xs / scale + 1.3 + k) * np.cos(ys / (1.7 * scale) - 0.4) + np.sin(
        (xs + ys) / (2.9 * scale) + 3 * k
    )
    return (v + 2.0) / 4.0


def _centres(grid: Grid) -> tuple[Array, Array]:
    cols = grid.x0 + grid.res * (np.arange(grid.width) + 0.5)
    rows = grid.y0 - grid.res * (np.arange(grid.height) + 0.5)
    return np.meshgrid(cols, rows)


def _render_s2(spec: DatacubeArchiveSpec, p: S2Plan) -> tuple[dict[str, Array], float]:
    """The 11 arrays of an S2 scene (10 m bands at 10 m, 20 m bands and SCL at 20 m) and its
    no-data percentage (of 10 m pixels)."""
    rng = np.random.default_rng([spec.seed, p.key])
    out: dict[str, Array] = {}
    c = spec.chip_size
    g20 = p.grid.coarser(2)
    for res_grid, bands in ((p.grid, S2_10M), (g20, S2_20M)):
        xs, ys = _centres(res_grid)
        land = _field(xs, ys, 7, 700.0)
        for band in bands:
            noise = rng.normal(0.0, 40.0, size=xs.shape)
            v = _BASE[band] * (0.6 + 0.8 * land) + noise + 30.0 * (p.key % 5)
            out[band] = np.clip(np.rint(v), 1, 10000).astype(np.uint16)
    xs, ys = _centres(g20)
    land = _field(xs, ys, 7, 700.0)
    scl = np.where(land > 0.62, 4, np.where(land > 0.4, 5, 6)).astype(np.uint8)
    half = c // 2
    styles = {0: (3, 8, 9, 10), 1: (0, 1), 2: (9, 10)}
    for col, row, n, style in p.clouds:
        block = scl[row * half : (row + 1) * half, col * half : (col + 1) * half]
        flat = block.reshape(-1).copy()
        count = n if n >= 0 else round(-n / 100.0 * flat.size)
        classes = np.array(styles[style], dtype=np.uint8)
        flat[:count] = classes[np.arange(count) % len(classes)]
        block[...] = flat.reshape(block.shape)
    if p.good_classes_chip is not None:
        col, row = p.good_classes_chip
        block = scl[row * half : (row + 1) * half, col * half : (col + 1) * half]
        flat = block.reshape(-1).copy()
        count = round(0.6 * flat.size)
        flat[:count] = np.array([2, 7, 11], dtype=np.uint8)[np.arange(count) % 3]
        block[...] = flat.reshape(block.shape)
    out["SCL"] = scl
    if p.corner_edge:
        h20, w20 = scl.shape
        rr, cc = np.mgrid[0:h20, 0:w20]
        legs = int(0.4 * half)  # the triangle's legs in 20 m pixels, inside the last chip
        last_r, last_c = spec.chips_y * half, spec.chips_x * half  # the last chip's far corner (20 m)
        # A diagonal swath edge: every pixel beyond it is no data; it crosses only the last chip
        # (and the dropped remainder strips next to it).
        edge20 = (rr + cc) > (last_r - 1) + (last_c - 1) - legs
        edge10 = np.repeat(np.repeat(edge20, 2, axis=0), 2, axis=1)
        for band in S2_10M:
            out[band][edge10] = 0
        for band in S2_20M:
            out[band][edge20] = 0
        out["SCL"][edge20] = 0
    if p.b02_dead is not None:
        col, row = p.b02_dead
        out["B02"][row, col] = 0
    nodata = float(np.mean(out["B02"] == 0) * 100.0)
    return out, nodata


def _render_s1(spec: DatacubeArchiveSpec, p: S1Plan) -> dict[str, Array]:
    rng = np.random.default_rng([spec.seed, p.key])
    xs, ys = _centres(p.grid)
    if p.grid.epsg != 32610:  # the landscape lives in zone 10 coordinates
        xs, ys = (
            np.asarray(v) for v in Transformer.from_crs(p.grid.epsg, 32610, always_xy=True).transform(xs, ys)
        )
    land = _field(xs, ys, 11, 500.0)
    speckle = rng.gamma(4.4, 1.0 / 4.4, size=(2, *xs.shape))
    vv = (0.02 + 0.25 * land) * speckle[0] * (1.0 + 0.1 * (p.key % 4))
    vh = (0.004 + 0.05 * land) * speckle[1] * (1.0 + 0.1 * (p.key % 3))
    out = {"vv": vv.astype(np.float32), "vh": vh.astype(np.float32)}
    if p.valid_cols is not None:
        c0, c1 = p.valid_cols
        for a in out.values():
            a[:, :c0] = S1_NODATA
            a[:, c1:] = S1_NODATA
    return out


def _render_dem(
    spec: DatacubeArchiveSpec, grid: Grid, nan_box: tuple[Grid, tuple[float, float, float, float]]
) -> Array:
    lon, lat = _centres(grid)
    elev = 150.0 + 900.0 * _field(lon * 1e5, lat * 1e5, 3, 900.0) + 0.5 * np.sin(lon * 4000.0)
    dem = elev.astype(np.float32)
    s2, (c0, r0, c1, r1) = nan_box
    x, y = (np.asarray(v) for v in Transformer.from_crs(4326, s2.epsg, always_xy=True).transform(lon, lat))
    col, row = (x - s2.x0) / s2.res, (s2.y0 - y) / s2.res
    dem[(col >= c0) & (col < c1) & (row >= r0) & (row < r1)] = np.nan
    return dem


def _overviews(h: int, w: int) -> int:
    return max(1, math.ceil(math.log2(max(h, w) / BLOCK))) if max(h, w) > BLOCK else 1


def _write_cog(path: Path, arr: Array, grid: Grid, nodata: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "COG", "width": grid.width, "height": grid.height, "count": 1, "dtype": arr.dtype.name,
        "nodata": nodata, "crs": CRS.from_epsg(grid.epsg), "transform": grid.transform, "blocksize": BLOCK,
        "compress": "DEFLATE", "overview_resampling": "nearest", "overview_count": _overviews(grid.height, grid.width),
    }  # fmt: skip
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, 1)


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


def _links(collection: str, ident: str) -> list[dict[str, str]]:
    coll = f"{STAC_ROOT}/collections/{collection}"
    return [
        {"rel": "collection", "type": "application/json", "href": coll},
        {"rel": "parent", "type": "application/json", "href": coll},
        {"rel": "root", "type": "application/json", "href": f"{STAC_ROOT}/"},
        {"rel": "self", "type": "application/geo+json", "href": f"{coll}/items/{ident}"},
    ]


def _asset(href: Path, title: str, **extra: Any) -> dict[str, Any]:
    return {"href": str(href), "type": COG_TYPE, "roles": ["data"], "title": title, **extra}


def _s2_item(
    spec: DatacubeArchiveSpec, p: S2Plan, data: Path
) -> tuple[dict[str, Any], dict[str, Array], Grid]:
    arrays, nodata = _render_s2(spec, p)
    t, gen = p.when, p.when + timedelta(hours=3, minutes=17)
    sat = "S2A" if p.platform.endswith("A") else "S2B"
    orbit = 13 + p.key
    absolute = 20000 + 37 * p.key
    ident = f"{sat}_MSIL2A_{t:%Y%m%dT%H%M%S}_R{orbit:03d}_T{p.mgrs}_{gen:%Y%m%dT%H%M%S}"
    product = f"{sat}_MSIL2A_{t:%Y%m%dT%H%M%S}_N0212_R{orbit:03d}_T{p.mgrs}_{gen:%Y%m%dT%H%M%S}.SAFE"
    zone, band, square = p.mgrs[:2], p.mgrs[2], p.mgrs[3:]
    granule = f"L2A_T{p.mgrs}_A{absolute:06d}_{t:%Y%m%dT%H%M%S}"
    base = (
        data
        / CONTAINERS[S2_COLLECTION][1]
        / zone
        / band
        / square
        / f"{t:%Y/%m/%d}"
        / product
        / "GRANULE"
        / granule
    )
    assets: dict[str, Any] = {}
    g20 = p.grid.coarser(2)
    for key in (*S2_BANDS, "SCL"):
        res = 10 if key in S2_10M else 20
        grid = p.grid if res == 10 else g20
        href = base / "IMG_DATA" / f"R{res}m" / f"T{p.mgrs}_{t:%Y%m%dT%H%M%S}_{key}_{res}m.tif"
        _write_cog(href, arrays[key], grid, 0)
        title = (
            "Scene classification map (SCL)"
            if key == "SCL"
            else f"Band {key.removeprefix('B').lstrip('0')} - {res}m"
        )
        assets[key] = _asset(href, title, gsd=float(res), **grid.proj())
        if key != "SCL":
            assets[key]["eo:bands"] = [{"name": key, "description": key}]
    geometry, bbox = _polygon(_rect_lonlat(p.grid.epsg, p.grid.bounds))
    props = {
        "datetime": t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
        "platform": p.platform,
        "proj:epsg": p.grid.epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": p.mgrs,
        "constellation": "Sentinel 2",
        "s2:granule_id": f"{sat}_OPER_MSI_L2A_TL_MSFT_{gen:%Y%m%dT%H%M%S}_A{absolute:06d}_T{p.mgrs}_N02.12",
        "eo:cloud_cover": p.cloud_cover,
        "s2:datatake_id": f"G{sat}_{t:%Y%m%dT%H%M%S}_{absolute:06d}_N02.12",
        "s2:product_uri": product,
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "sat:relative_orbit": orbit,
        "s2:processing_baseline": "02.12",
        "s2:nodata_pixel_percentage": round(nodata if p.nodata_percent is None else p.nodata_percent, 6),
        "s2:high_proba_clouds_percentage": round(p.cloud_cover / 2, 6),
        "s2:medium_proba_clouds_percentage": round(p.cloud_cover / 3, 6),
        "s2:thin_cirrus_percentage": round(p.cloud_cover / 6, 6),
    }
    item = {
        "type": "Feature", "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                            "https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
        "id": ident, "geometry": geometry, "bbox": bbox, "properties": props,
        "links": _links(S2_COLLECTION, ident), "assets": assets, "collection": S2_COLLECTION,
    }  # fmt: skip
    return item, arrays, p.grid


def _s1_time(t: datetime) -> str:
    """``2019-06-15 02:09:44.101000+00:00``: Planetary Computer's S1 RTC form (space separator)."""
    return t.isoformat(sep=" ", timespec="microseconds")


def _s1_item(spec: DatacubeArchiveSpec, p: S1Plan, data: Path) -> dict[str, Any]:
    arrays = _render_s1(spec, p)
    t0, t1 = p.when - timedelta(seconds=6), p.when + timedelta(seconds=6)
    sat = "S1A" if p.platform.endswith("A") else "S1B"
    absolute = 27000 + 11 * p.key
    datatake = f"{(p.key * 40503) % 0xFFFFFF:06X}"
    product = f"{sat}_IW_GRDH_1SDV_{t0:%Y%m%dT%H%M%S}_{t1:%Y%m%dT%H%M%S}_{absolute:06d}_{datatake}"
    ident = f"{product}_rtc"
    base = data / CONTAINERS[S1_COLLECTION][1] / "GRD" / f"{t0.year}/{t0.month}/{t0.day}" / "IW" / "DV"
    assets: dict[str, Any] = {}
    for pol in ("vh", "vv"):
        href = base / f"{product}_{(p.key * 7919) % 0xFFFF:04X}" / "measurement" / f"iw-{pol}.rtc.tiff"
        _write_cog(href, arrays[pol], p.grid, S1_NODATA)
        assets[pol] = _asset(
            href,
            f"{pol.upper()}: vertical transmit, {'horizontal' if pol == 'vh' else 'vertical'} receive",
            **{"raster:bands": [{"nodata": S1_NODATA, "data_type": "float32", "spatial_resolution": 10}]},
        )
    valid = p.grid
    if p.valid_cols is not None:
        c0, c1 = p.valid_cols
        valid = Grid(p.grid.epsg, p.grid.x0 + 10.0 * c0, p.grid.y0, 10.0, c1 - c0, p.grid.height)
    geometry, bbox = _polygon(_rect_lonlat(valid.epsg, valid.bounds))
    props = {
        "datetime": _s1_time(p.when), "platform": p.platform, "s1:shape": [p.grid.width, p.grid.height],
        **p.grid.proj(), "proj:epsg": p.grid.epsg,
        "end_datetime": _s1_time(t1), "constellation": "Sentinel-1", "s1:resolution": "high",
        "s1:datatake_id": str(int(datatake, 16)), "start_datetime": _s1_time(t0),
        "s1:orbit_source": "RESORB", "s1:slice_number": "3", "s1:total_slices": "12",
        "sar:looks_range": 5, "sat:orbit_state": p.orbit_state, "sar:product_type": "GRD",
        "sar:looks_azimuth": 1, "sar:polarizations": ["VV", "VH"], "sar:frequency_band": "C",
        "sat:absolute_orbit": absolute, "sat:relative_orbit": 1 + absolute % 175,
        "s1:processing_level": "1", "sar:instrument_mode": "IW", "sar:center_frequency": 5.405,
        "sar:resolution_range": 20, "s1:product_timeliness": "Fast-24h", "sar:resolution_azimuth": 22,
        "sar:pixel_spacing_range": 10, "sar:observation_direction": "right", "sar:pixel_spacing_azimuth": 10,
        "sar:looks_equivalent_number": 4.4, "s1:instrument_configuration_ID": "6",
    }  # fmt: skip
    props["proj:transform"] = [*props["proj:transform"], 0.0, 0.0, 1.0]
    return {
        "type": "Feature", "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/sar/v1.0.0/schema.json",
                            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
        "id": ident, "geometry": geometry, "bbox": bbox, "properties": props,
        "links": _links(S1_COLLECTION, ident), "assets": assets, "collection": S1_COLLECTION,
    }  # fmt: skip


def _dem_id(lon0: float, lat0: float) -> str:
    """``Copernicus_DSM_COG_10_N47_56_W121_70_DEM``: the real pattern, the second field of each
    coordinate being hundredths of a degree (the real 1-degree tiles have 00 there)."""
    la, lo = round(lat0 * 100), round(lon0 * 100)
    ns, ew = ("N" if la >= 0 else "S"), ("E" if lo >= 0 else "W")
    la, lo = abs(la), abs(lo)
    return f"Copernicus_DSM_COG_10_{ns}{la // 100:02d}_{la % 100:02d}_{ew}{lo // 100:03d}_{lo % 100:02d}_DEM"


def _dem_cells(windows: Sequence[Grid], cell: float) -> list[tuple[float, float]]:
    """South-west corners of the ``cell`` degree cells meeting any window's lon/lat box (+ one cell)."""
    cells: set[tuple[int, int]] = set()
    for g in windows:
        ring = _rect_lonlat(g.epsg, g.bounds)
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        i0, i1 = math.floor(min(lons) / cell) - 1, math.floor(max(lons) / cell) + 1
        j0, j1 = math.floor(min(lats) / cell) - 1, math.floor(max(lats) / cell) + 1
        cells |= {(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)}
    return [(round(i * cell, 2), round(j * cell, 2)) for i, j in sorted(cells)]


def _dem_item(plan: _Plan, lon0: float, lat0: float, data: Path) -> dict[str, Any]:
    cell = plan.spec.dem_cell
    n = round(cell / DEM_RES)
    grid = Grid(4326, lon0 - DEM_RES / 2, lat0 + cell + DEM_RES / 2, DEM_RES, n, n)
    ident = _dem_id(lon0, lat0)
    href = data / CONTAINERS[DEM_COLLECTION][1] / "COP30_hh" / f"{ident}.tif"
    _write_cog(href, _render_dem(plan.spec, grid, plan.dem_nan_box), grid, math.nan)
    geometry, bbox = _polygon(_rect_lonlat(4326, grid.bounds))
    title = ident.removeprefix("Copernicus_DSM_COG_10_").removesuffix("_DEM")
    return {
        "type": "Feature", "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
        "id": ident, "geometry": geometry, "bbox": bbox,
        "properties": {"gsd": 30, "datetime": "2021-04-22T00:00:00Z", "platform": "TanDEM-X", "proj:epsg": 4326,
                       "proj:shape": [n, n], "proj:transform": [DEM_RES, 0.0, grid.x0, 0.0, -DEM_RES, grid.y0]},
        "links": _links(DEM_COLLECTION, ident),
        "assets": {"data": _asset(href, title)}, "collection": DEM_COLLECTION,
    }  # fmt: skip


def _collection_doc(collection: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [i for i in items if i["collection"] == collection]
    bb = [i["bbox"] for i in mine]
    times = sorted(i["properties"]["datetime"].replace(" ", "T") for i in mine)
    account, container = CONTAINERS[collection]
    return {
        "type": "Collection", "id": collection, "stac_version": "1.0.0",
        "title": f"{collection} (synthetic demo archive)",
        "description": f"Synthetic stand-in for Planetary Computer's {collection} (pipeline.demo.datacube_archive).",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[min(b[0] for b in bb), min(b[1] for b in bb), max(b[2] for b in bb),
                                  max(b[3] for b in bb)]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "msft:storage_account": account, "msft:container": container,
        "links": [{"rel": "root", "type": "application/json", "href": f"{STAC_ROOT}/"}],
    }  # fmt: skip


def items_with_href_base(items: Sequence[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
    """Deep copies of ``items`` whose asset hrefs are ``{base_url}/{container}/{key}`` (the
    archive's ``data/`` tree uploaded as its three containers under one account/endpoint).
    HLS's helper of the same name knows only HLS keys, hence this one."""
    base = base_url.rstrip("/")
    out = []
    for item in items:
        new = copy.deepcopy(item)
        for asset in new["assets"].values():
            href = asset["href"].split("?", 1)[0].replace("\\", "/")
            for _account, container in CONTAINERS.values():
                marker = f"/{container}/"
                if marker in href:
                    asset["href"] = f"{base}/{container}/{href.split(marker, 1)[1]}"
                    break
            else:
                raise ValueError(f"not an asset href of this archive: {asset['href']}")
        out.append(new)
    return out


def write_sample(path: Path, tiles: Sequence[tuple[str, Grid]]) -> None:
    """The MGRS sample (FlatGeobuf, EPSG:4326, ``name``): each tile's polygon is its window inset
    by 5 % (as the real 100 km MGRS square lies inside the 109.8 km S2 tile)."""
    import geopandas as gpd
    from shapely.geometry import Polygon

    polys = []
    for _name, g in tiles:
        x0, y0, x1, y1 = g.bounds
        dx, dy = 0.05 * (x1 - x0), 0.05 * (y1 - y0)
        polys.append(Polygon(_rect_lonlat(g.epsg, (x0 + dx, y0 + dy, x1 - dx, y1 - dy))))
    frame = gpd.GeoDataFrame({"name": [t for t, _ in tiles]}, geometry=polys, crs="EPSG:4326")
    tmp = path.with_name(path.name + ".tmp.fgb")
    frame.to_file(tmp, driver="FlatGeobuf")
    tmp.replace(path)


def make_datacube_archive(
    root: Path | str, spec: DatacubeArchiveSpec | None = None, *, overwrite: bool = False
) -> DatacubeArchive:
    """Write the archive described by ``spec`` (default: the test archive) under ``root``."""
    t_start = time.perf_counter()
    spec = spec or DatacubeArchiveSpec()
    root = Path(root).resolve()
    data, catalog_dir = root / "data", root / "catalog"
    sample, manifest = root / "sample.fgb", root / "archive.json"
    owned = [data, catalog_dir, sample, manifest]
    clear_owned(root, owned, overwrite)
    (catalog_dir / "collections").mkdir(parents=True)
    plan = _plan(spec)
    s2_items = [_s2_item(spec, p, data)[0] for p in plan.s2]
    s1_items = [_s1_item(spec, p, data) for p in plan.s1]
    windows = [p.grid for p in plan.s2]
    dem_items = [_dem_item(plan, lon0, lat0, data) for lon0, lat0 in _dem_cells(windows, spec.dem_cell)]
    items = [*s2_items, *s1_items, *dem_items]

    from shapely.geometry import shape

    def dem_ids(s2_item: dict[str, Any]) -> tuple[str, ...]:
        fp = shape(s2_item["geometry"])
        return tuple(sorted(d["id"] for d in dem_items if shape(d["geometry"]).intersects(fp)))

    expected = {
        row: [
            ExpectedDate(
                plan.s2[i].when.date(), s2_items[i]["id"], tuple(s1_items[j]["id"] for j in s1s),
                dem_ids(s2_items[i]),
            )
            for i, s1s in picks
        ]
        for row, picks in plan.expected_s2.items()
    }  # fmt: skip
    order = np.random.default_rng([spec.seed, 999]).permutation(len(items))
    shuffled = [items[i] for i in order]  # readers must not rely on catalogue order
    catalog = catalog_dir / "items.ndjson"
    catalog.write_text("".join(json.dumps(it, separators=(",", ":")) + "\n" for it in shuffled))
    collections = {}
    for coll in COLLECTIONS:
        path = catalog_dir / "collections" / f"{coll}.json"
        path.write_text(json.dumps(_collection_doc(coll, items), indent=1) + "\n")
        collections[coll] = path
    write_sample(sample, plan.tiles)
    seconds = round(time.perf_counter() - t_start, 2)
    manifest.write_text(json.dumps({
        "generator": "pipeline.demo.datacube_archive", "spec": asdict(spec), "build_seconds": seconds,
        "tiles": [t for t, _ in plan.tiles],
        "expected": {str(k): [asdict(e) for e in v] for k, v in expected.items()},
        "skipped_years": {str(k): v for k, v in plan.skipped_years.items()},
        "cases": [asdict(c) for c in plan.cases],
    }, indent=1, default=str) + "\n")  # fmt: skip
    files = sorted(Path(a["href"]) for it in items for a in it["assets"].values())
    return DatacubeArchive(
        root=root, spec=spec, catalog_path=catalog, sample_path=sample, manifest_path=manifest, data_dir=data,
        collection_paths=collections, items=shuffled, tiles=[t for t, _ in plan.tiles], expected=expected,
        skipped_years=plan.skipped_years, cases=plan.cases, build_seconds=seconds, files=files,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``scripts/make_datacube_demo_archive.py``)."""
    p = argparse.ArgumentParser(
        prog="make_datacube_demo_archive.py",
        description="Write the synthetic S2 L2A + S1 RTC + COP-DEM archive of the datacube demo into OUT_DIR.",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--small", action="store_true", help="the test archive (64 px chips, 4 x 3 chips)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an archive already in OUT_DIR")
    args = p.parse_args(argv)
    spec = DatacubeArchiveSpec(seed=args.seed) if args.small else demo_spec(args.seed)
    try:
        built = make_datacube_archive(args.out_dir, spec, overwrite=args.force)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{built.root}: {len(built.items)} items, {len(built.files)} COGs, {built.build_seconds:.1f} s")
    print(f"  catalog {built.catalog_path}\n  sample  {built.sample_path}  (chip size {spec.chip_size})")
    for row, dates in built.expected.items():
        print(f"  row {row} {built.tiles[row]}: " + (", ".join(str(d.date) for d in dates) or "no date"))
    return 0
