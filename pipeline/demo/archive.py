"""A synthetic Landsat Collection 2 ARD archive, shaped like the real one, for the offline
demo and for every test.

What :func:`build_archive` writes under ``root``::

    usgs-landsat-ard/                      the bucket's content, keys exactly as in S3:
      collection02/{tm|etm|oli-tirs}/{YYYY}/{RR}/{HHH}/{VVV}/{product_id}/{product_id}_SR_B2.TIF ...
    catalog/items.ndjson                   one ``landsat-c2ard-sr`` STAC item per line (shuffled)
    catalog/items.geojson                  the same items as a FeatureCollection
    catalog/collection.json                a ``landsat-c2ard-sr`` collection, for STAC servers
    plots.csv                              ``project_id,plot_id,x,y``
    archive.json                           manifest: spec, acquisitions, per-plot truth table

Uploading ``usgs-landsat-ard/`` to a bucket of that name reproduces the real layout, so the
items' ``alternate.s3.href`` resolve; ``href`` is the absolute local path of the same file.

**Rasters** are real COGs (GDAL COG driver): 5000 x 5000 uint16 with the tile's exact
transform and the region's Albers CRS, 256 x 256 DEFLATE tiles, nearest-neighbour
overviews (x2..x32), ``LAYOUT=COG``; nodata 0 (SR) and 1 (QA_PIXEL). Only the square of half-width
``chip_size // 2 + context_px`` around each plot holds content; everything else reads back
as nodata, i.e. as fill (SR 0, QA 1), which is what the pipeline would see beyond a real
swath edge: blocks never written are omitted from the file (GDAL ``SPARSE_OK``) and the rest
of a partly written block is nodata. (Content costs ~1.5 bytes per pixel after DEFLATE, so
dense tiles would be ~37 MB per SR file, ~6 GB for even the small archive.) The item properties (``landsat:fill``, ``eo:cloud_cover``) describe the
swath model, not these empty areas.

**Content** is a pure function of the seed, the acquisition and the *global* pixel position,
so adjacent tiles mosaic seamlessly and any window can be re-rendered for checks:
vegetation/soil mixtures with per-pixel texture, seasonality and rectangular clear-cuts whose
vegetation drops in a disturbance year and then recovers; a lake under the water plot;
clouds with a dilated ring and a displaced shadow, OLI cirrus, winter snow; diagonal swath
edges (fill, some tiles without an item on some dates) and ETM+ SLC-off gaps after
2003-05-31. On purpose there are also DNs in 1..7272 (negative reflectance: water, shadow,
scattered pixels and pinned plot-centre values), pixels where exactly one band is 0, and QA
values of both sensor families (e.g. TM/ETM+ water 5504 has the clear bit 6 unset, OLI water
21952 has it set). QA is fill (1) exactly where all six SR bands are 0.

Cost: ~30 ms per COG, nearly all in GDAL's COG copy (the overviews are supplied by the
generator, see OVERVIEW_FACTORS); rendering is ~20 ms per item. Writer threads share the
work (GDAL releases the GIL). Measured with ``time python scripts/make_demo_archive.py OUT
[--small]`` on 2 cores shared with other jobs (load average 3-5):
``small_spec()`` 28 items, 196 COGs, 77 MB: 7.3 s CPU, 7.7 s wall (estimate for idle cores: ~4 s);
``demo_spec()`` 145 items, 1015 COGs, 530 MB: 42 s CPU, 82 s wall (estimate for idle cores: ~25 s).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from pipeline.demo._owned import clear_owned
from pipeline.grid import PIXEL_SIZE, TILE_PIXELS, Region, Tile, chip_tiles, get_region, tile_of

# --------------------------------------------------------------------------------------------
# Constants of the real archive
# --------------------------------------------------------------------------------------------

BUCKET = "usgs-landsat-ard"
COLLECTION = "landsat-c2ard-sr"
STAC_ROOT = "https://landsatlook.usgs.gov/stac-server"
BANDS: tuple[str, ...] = ("blue", "green", "red", "nir08", "swir16", "swir22")
ASSETS: tuple[str, ...] = (*BANDS, "qa_pixel")
SR_NODATA = 0
QA_NODATA = 1
VALID_DN = (7273, 43636)  # reflectance 0..1 = DN * 0.0000275 - 0.2
BLOCK = 256  # internal tile size of the COGs

STAC_EXTENSIONS = [
    "https://landsat.usgs.gov/stac/landsat-ard-extension/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/alternate-assets/v1.1.0/schema.json",
    "https://stac-extensions.github.io/storage/v1.0.0/schema.json",
]

# Per-band metadata for the asset entries: (title word, centre wavelength in um).
_BAND_META: dict[str, tuple[str, float]] = {
    "blue": ("Blue Band", 0.48),
    "green": ("Green Band", 0.56),
    "red": ("Red Band", 0.65),
    "nir08": ("Near Infrared Band 0.8", 0.86),
    "swir16": ("Short-wave Infrared Band 1.6", 1.6),
    "swir22": ("Short-wave Infrared Band 2.2", 2.2),
}


@dataclass(frozen=True)
class Sensor:
    """One Landsat sensor as it appears in ARD ids, item properties and bucket keys."""

    code: str  # first field of the product id
    platform: str
    instruments: tuple[str, ...]
    folder: str  # bucket folder: tm | etm | oli-tirs
    first: date  # first ARD acquisition used here
    last: date  # last ARD acquisition used here
    band_files: tuple[str, ...]  # file suffix of blue..swir22 (the sensor's band numbers)

    @property
    def is_oli(self) -> bool:
        return self.folder == "oli-tirs"


_TM_FILES = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
_OLI_FILES = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
_OPEN_END = date(2024, 12, 31)  # the archive's time span ends here

SENSORS: dict[str, Sensor] = {
    "LT05": Sensor("LT05", "LANDSAT_5", ("TM",), "tm", date(1984, 3, 16), date(2011, 11, 18), _TM_FILES),
    "LE07": Sensor("LE07", "LANDSAT_7", ("ETM",), "etm", date(1999, 7, 1), date(2022, 4, 6), _TM_FILES),
    "LC08": Sensor(
        "LC08", "LANDSAT_8", ("OLI", "TIRS"), "oli-tirs", date(2013, 4, 11), _OPEN_END, _OLI_FILES
    ),
    "LC09": Sensor(
        "LC09", "LANDSAT_9", ("OLI", "TIRS"), "oli-tirs", date(2021, 10, 31), _OPEN_END, _OLI_FILES
    ),
}
SLC_FAILURE = date(2003, 5, 31)  # ETM+ scan-line corrector off: wedge-shaped gaps afterwards

# Pixel classes used while rendering; the order is the priority (later wins).
CLEAR, WATER, SNOW, SHADOW, CIRRUS, DILATED, CLOUD, FILL = range(8)
CLASS_NAMES = ("clear", "water", "snow", "shadow", "cirrus", "dilated-cloud", "cloud", "fill")

# QA_PIXEL values per class, as they occur in real C2 products: (TM/ETM+, OLI). The two
# families differ: TM/ETM+ water (5504) and shadow (7440) have the clear bit 6 unset, OLI's
# (21952, 23888) have it set, which is why the recipe's qa test is "bit 6 or bit 7".
# Cirrus exists only for OLI; TM/ETM+ never renders that class (entry is a placeholder).
_QA_TM = np.array([5440, 5504, 13664, 7440, 5440, 5378, 5896, 1], dtype=np.uint16)
_QA_OLI = np.array([21824, 21952, 30048, 23888, 54596, 21762, 22280, 1], dtype=np.uint16)

# Surface reflectance of the end members, bands blue..swir22. Water is slightly negative in
# the SWIR on purpose: with noise it yields DNs below 7273, as real water does.
_VEG = np.array([0.022, 0.045, 0.025, 0.360, 0.165, 0.070], dtype=np.float32)
_SOIL = np.array([0.070, 0.100, 0.130, 0.190, 0.320, 0.260], dtype=np.float32)  # also bare clear-cut
_WATER = np.array([0.045, 0.050, 0.030, 0.000, -0.002, -0.003], dtype=np.float32)
_SNOW = np.array([0.850, 0.830, 0.800, 0.680, 0.090, 0.060], dtype=np.float32)
_CLOUD = np.array([0.520, 0.500, 0.500, 0.550, 0.420, 0.300], dtype=np.float32)
# Small per-sensor additive differences, so sensors are not numerically identical.
_SENSOR_OFFSET = {
    "LT05": np.array([0.006, 0.004, 0.002, 0.000, -0.004, -0.002], dtype=np.float32),
    "LE07": np.array([0.004, 0.003, 0.002, 0.004, -0.002, -0.001], dtype=np.float32),
    "LC08": np.zeros(6, dtype=np.float32),
    "LC09": np.array([0.001, 0.000, 0.000, 0.002, 0.001, 0.000], dtype=np.float32),
}

# Geometry of the swath model, in global pixel units (1 px = 30 m).
TRACK_SLOPE = -0.2  # descending pass heading SSW: going south (+row) the track drifts west (-col)
SWATH_HALF_PX = 3083  # 185 km / 2
SLC_PERIOD_PX = 33.0  # one gap per scan pair
SLC_MAX_GAP_PX = 14.0  # gap width at the swath edge; ~0 at nadir
DILATE_PX = 6  # dilated-cloud ring width

# Overview levels: what GDAL's OVERVIEWS=AUTO makes for 5000 px with 256 px blocks. The
# generator supplies them itself (nearest neighbour, from the rendered windows) through a VRT:
# letting the COG driver build them means rescanning 25 Mpx per file, which doubled the cost.
OVERVIEW_FACTORS = (2, 4, 8, 16, 32)
_COG_OPTIONS = {
    "blocksize": BLOCK,
    "compress": "DEFLATE",
    "overviews": "FORCE_USE_EXISTING",
    "sparse_ok": "TRUE",  # empty (all-nodata) blocks are not written: they read back as nodata
}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

DEFAULT_TILES: tuple[tuple[int, int], ...] = ((3, 4), (4, 4), (3, 5), (4, 5))
MIN_ACQUISITIONS = 6  # the anchor dates that guarantee every sensor, a winter and a post-2022 date


@dataclass(frozen=True)
class ArchiveSpec:
    """What to generate. Equal specs give byte-identical archives (apart from the root path).

    ``tiles`` must contain a 2 x 2 block ``(h, v), (h+1, v), (h, v+1), (h+1, v+1)``: the
    special plots (edge, corner, fill, water, ...) are placed around its centre. Chips of all
    plots lie inside ``tiles``. ``context_px`` is how far beyond each plot's ``chip_size`` chip
    the rasters carry real content; beyond it they read as fill.
    """

    region: str = "CU"
    tiles: tuple[tuple[int, int], ...] = DEFAULT_TILES
    n_acquisitions: int = 40
    seed: int = 0
    n_extra_plots: int = 0
    project_ids: tuple[str, str] = ("1001", "0042")
    chip_size: int = 255
    context_px: int = 32
    # True: all-fill blocks are left out of the files (GDAL SPARSE_OK), fast to build. False:
    # every block is written, as in the real archive, so reads cost the ranged GETs they will
    # cost on USGS files (benchmarks, request-count checks); about 3x the build CPU.
    sparse_fill: bool = True

    def __post_init__(self) -> None:
        region = get_region(self.region)
        if self.region != region.code:
            raise ValueError(f"region must be upper case, e.g. {region.code!r}")
        if len(set(self.tiles)) != len(self.tiles):
            raise ValueError(f"duplicate tiles in {self.tiles}")
        for h, v in self.tiles:
            if not (0 <= h < region.n_h and 0 <= v < region.n_v):
                raise ValueError(f"tile ({h}, {v}) is outside the {region.code} grid")
        self.block()  # raises without a 2 x 2 block
        if self.n_acquisitions < MIN_ACQUISITIONS:
            raise ValueError(f"n_acquisitions must be >= {MIN_ACQUISITIONS}")
        if self.chip_size < 3 or self.chip_size % 2 == 0:
            raise ValueError("chip_size must be odd and >= 3")
        if self.context_px < 0 or self.n_extra_plots < 0:
            raise ValueError("context_px and n_extra_plots must be >= 0")
        if len(self.project_ids) != 2 or self.project_ids[0] == self.project_ids[1]:
            raise ValueError("project_ids must be two different ids")

    def block(self) -> Tile:
        """Upper-left tile of the first complete 2 x 2 block in ``tiles`` (ascending h, v)."""
        have = set(self.tiles)
        for h, v in sorted(have):
            if {(h + 1, v), (h, v + 1), (h + 1, v + 1)} <= have:
                return Tile(h, v)
        raise ValueError(f"tiles {self.tiles} contain no 2 x 2 block")


@dataclass(frozen=True)
class BuiltArchive:
    """Paths and metadata of a built archive. ``items`` are in the (shuffled) catalogue order;
    ``plots`` carry a ``kind`` and a per-acquisition truth table (see :func:`build_archive`)."""

    root: Path
    bucket_dir: Path  # root / "usgs-landsat-ard": the bucket's content, keys exactly as in S3
    catalog_ndjson: Path
    catalog_geojson: Path
    plot_file: Path
    items: list[dict[str, Any]]
    plots: list[dict[str, Any]]
    collection_json: Path
    manifest: Path
    acquisitions: list[dict[str, Any]] = field(default_factory=list)
    n_files: int = 0
    total_bytes: int = 0
    build_seconds: float = 0.0

    def plot(self, project_id: str, plot_id: str) -> dict[str, Any]:
        """The plot record with these ids."""
        for p in self.plots:
            if p["project_id"] == project_id and p["plot_id"] == plot_id:
                return p
        raise KeyError((project_id, plot_id))

    def plots_of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [p for p in self.plots if p["kind"] == kind]

    def local_path(self, s3_href: str) -> Path:
        """Local file of an ``s3://usgs-landsat-ard/...`` href."""
        prefix = f"s3://{BUCKET}/"
        if not s3_href.startswith(prefix):
            raise ValueError(f"not an {BUCKET} href: {s3_href}")
        return self.bucket_dir / s3_href[len(prefix) :]


def small_spec(seed: int = 0) -> ArchiveSpec:
    """The test archive: 8 acquisitions (every sensor, a winter date, a 2023/2024 date), the
    special plots only, 32 px of context around the 255 px chips. 28 items, ~77 MB; builds
    in 7.3 s CPU (measured 7.7 s wall on a busy 2-core machine)."""
    return ArchiveSpec(n_acquisitions=8, seed=seed, n_extra_plots=0, context_px=32)


def demo_spec(seed: int = 0) -> ArchiveSpec:
    """The README demo: 40 acquisitions 1984-2024, the special plots plus 4 ordinary ones,
    32 px of context (each 5000 x 5000 COG holds ~0.1-0.5 Mpx of content: ~1.5 bytes per
    pixel per band after DEFLATE, so context is what drives the archive's size). 145 items,
    ~530 MB; builds in 42 s CPU (measured 82 s wall on a busy 2-core machine)."""
    return ArchiveSpec(n_acquisitions=40, seed=seed, n_extra_plots=4, context_px=32)


# --------------------------------------------------------------------------------------------
# Plan: everything random is drawn here, up front, from one Generator in a fixed order
# --------------------------------------------------------------------------------------------

Disc = tuple[float, float, float]  # (col, row, radius) in global pixels
HalfPlane = tuple[float, float, float]  # a * col + b * row + c >= 0 (pixel centres) is covered


@dataclass(frozen=True)
class _Plot:
    project_id: str
    plot_id: str
    x: int
    y: int
    gx: int  # global pixel column/row containing (x, y)
    gy: int
    kind: str
    note: str


@dataclass(frozen=True)
class _Patch:
    """A rotated-rectangle clear-cut: vegetation drops at ``t_dist`` and recovers linearly."""

    cx: float
    cy: float
    half_w: float
    half_h: float
    angle: float
    t_dist: float  # decimal year
    recovery_years: float


@dataclass(frozen=True)
class _Acq:
    index: int
    sensor: str
    day: date
    when: datetime  # UTC, whole seconds, for the block's first tile row
    proc: date
    coverage: tuple[HalfPlane, ...]
    coverage_note: str
    swath_centre: tuple[float, float]  # centre line passes (col, row), slope TRACK_SLOPE
    slc_off: bool
    slc_phase: float
    clouds: tuple[Disc, ...]
    shadow_offset: tuple[float, float]
    cirrus: tuple[Disc, ...]
    snow_amount: float
    snow_discs: tuple[Disc, ...]
    overrides: tuple[tuple[int, int, int, int], ...]  # (col, row, band, dn) pinned values
    cloudiness: float
    atmos: tuple[float, ...]
    key: int

    @property
    def t(self) -> float:
        return self.day.year + (self.day.timetuple().tm_yday - 0.5) / 365.25

    @property
    def doy(self) -> int:
        return self.day.timetuple().tm_yday

    @property
    def winter(self) -> bool:
        return _is_winter(self.day)


@dataclass(frozen=True)
class _ItemPlan:
    acq: _Acq
    tile: Tile
    product_id: str
    item_id: str
    datetime: str
    start_datetime: str
    end_datetime: str
    created: str
    scene_count: int
    fill_pct: float
    footprint: tuple[tuple[float, float], ...]  # covered part of the tile, global pixels


@dataclass
class _Plan:
    spec: ArchiveSpec
    region: Region
    crs: CRS
    wkt2: str
    tiles: list[Tile]
    plots: list[_Plot]
    patches: list[_Patch]
    lakes: list[Disc]
    acqs: list[_Acq]
    items: list[_ItemPlan]
    windows: dict[Tile, list[tuple[int, int, int, int]]]  # content (row, col, h, w) per tile
    static_key: int


def _key(*parts: int) -> int:
    """A 64-bit key from integers (splitmix64 chain), to seed the per-pixel hashes."""
    x = 0x243F6A8885A308D3
    for p in parts:
        x = ((x ^ (p & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x


def _pixel_centre(region: Region, gx: int, gy: int) -> tuple[int, int]:
    """Integer metres of the centre of global pixel (gx, gy) (X0, Y0 are odd: centres are whole)."""
    return region.x0 + gx * PIXEL_SIZE + PIXEL_SIZE // 2, region.y0 - gy * PIXEL_SIZE - PIXEL_SIZE // 2


def _make_plots(spec: ArchiveSpec, region: Region, rng: np.random.Generator) -> list[_Plot]:
    """The special plots around the 2 x 2 block's centre, then ``n_extra_plots`` ordinary ones.

    ``GE``/``GV`` are the global column/row of the block's inner vertical/horizontal tile edge.
    """
    block = spec.block()
    ge, gv = (block.h + 1) * TILE_PIXELS, (block.v + 1) * TILE_PIXELS
    p1, p2 = spec.project_ids
    half = spec.chip_size // 2
    plots: list[_Plot] = []

    def at_centre(pid: str, plot_id: str, gx: int, gy: int, kind: str, note: str) -> None:
        x, y = _pixel_centre(region, gx, gy)
        plots.append(_Plot(pid, plot_id, x, y, gx, gy, kind, note))

    def at_corner(pid: str, plot_id: str, gx: int, gy: int, kind: str, note: str) -> None:
        # Upper-left corner of pixel (gx, gy): on a pixel edge in x and y; floor() gives (gx, gy).
        x, y = region.x0 + gx * PIXEL_SIZE, region.y0 - gy * PIXEL_SIZE
        plots.append(_Plot(pid, plot_id, x, y, gx, gy, kind, note))

    # Offsets from the edges are small against the chip half-width (127), so chips cross them.
    at_centre(
        p1,
        "001",
        ge - 3400,
        gv - 3300,
        "interior",
        "ordinary plot inside one tile; one date pins swir22 = 0 at the centre",
    )
    at_centre(
        p1,
        "002",
        ge + 2600,
        gv + 3100,
        "interior-disturbed",
        "inside one tile, in a clear-cut; first date pins DNs 1 / 7272 / 7001 at the centre",
    )
    at_centre(
        p1,
        "003",
        ge - 40,
        gv - 2500,
        "vertical-edge",
        "plot 40 px west of a vertical tile edge: chip spans two tiles side by side",
    )
    at_centre(
        p1,
        "004",
        ge + 1500,
        gv + 30,
        "horizontal-edge",
        "plot 30 px south of a horizontal tile edge: the first tile in search order "
        "is the northern one, which does not contain the plot",
    )
    at_centre(p1, "005", ge + 50, gv - 70, "corner", "plot near a tile corner: chip spans four tiles")
    at_corner(
        p1,
        "010",
        ge - 3000,
        gv + 2000,
        "pixel-edge",
        "x and y exactly on pixel edges (the upper-left corner of its pixel)",
    )
    at_corner(
        p1,
        "011",
        ge,
        gv,
        "tile-corner-point",
        "x, y exactly on the corner point of four tiles: belongs to the south-east tile, "
        "pixel (0, 0); chip spans four tiles",
    )
    at_centre(
        p2,
        "007",
        ge - 2200,
        gv + 1400,
        "fill-centre",
        "a swath edge passes 8-60 px from the centre on every third date: the centre is "
        "fill but the chip keeps valid pixels on the other side of the edge",
    )
    at_centre(
        p2,
        "008",
        ge - 1300,
        gv - 1200,
        "water",
        "centre of a lake: water bit 7 on clear dates, SWIR DNs around and below 7273",
    )
    at_centre(
        p2,
        "001",
        ge + 3600,
        gv - 3900,
        "same-id-other-project",
        f"same plot_id as {p1}/001 but another project and place; in a clear-cut",
    )

    tiles = [Tile(h, v) for h, v in spec.tiles]
    margin = half + 16
    for i in range(spec.n_extra_plots):
        t = tiles[int(rng.integers(len(tiles)))]
        gx = t.h * TILE_PIXELS + int(rng.integers(margin, TILE_PIXELS - margin))
        gy = t.v * TILE_PIXELS + int(rng.integers(margin, TILE_PIXELS - margin))
        at_centre(p1, f"{20 + i:03d}", gx, gy, "interior-extra", "additional ordinary plot")
    return plots


def _make_patches(plots: list[_Plot], rng: np.random.Generator) -> list[_Patch]:
    """Clear-cuts under the disturbed plots and under half of the extra plots."""
    patches = []
    for p in plots:
        if p.kind in ("interior-disturbed", "same-id-other-project") or (
            p.kind == "interior-extra" and rng.random() < 0.5
        ):
            patches.append(
                _Patch(
                    cx=p.gx + 0.5 + rng.uniform(-15, 15),
                    cy=p.gy + 0.5 + rng.uniform(-15, 15),
                    half_w=rng.uniform(45, 90),
                    half_h=rng.uniform(35, 70),
                    angle=rng.uniform(0, math.pi),
                    t_dist=rng.uniform(1997.0, 2012.0),
                    recovery_years=rng.uniform(18.0, 30.0),
                )
            )
    return patches


def _is_winter(day: date) -> bool:
    """Mid-March to mid-November is snow-free at the plots; the rest may have snow."""
    doy = day.timetuple().tm_yday
    return doy < 75 or doy > 320


def _sensor_ok(code: str, d: date) -> bool:
    s = SENSORS[code]
    return s.first <= d <= s.last


def _random_day(rng: np.random.Generator, year: int, lo_doy: int, hi_doy: int) -> date:
    return date(year, 1, 1) + timedelta(days=int(rng.integers(lo_doy, hi_doy + 1)) - 1)


def _plan_dates(n: int, rng: np.random.Generator) -> list[tuple[str, date]]:
    """``n`` (sensor, date) pairs, sorted by date.

    Six anchors guarantee what the tests and the demo need (each sensor; LC09 inside the
    default 1984-2022 range; a date after 2022-12-31, outside it; a winter date for snow);
    the rest are spread evenly over 1984-2024 with a random sensor of that era, mostly in the
    growing season.
    """
    anchors = [
        ("LT05", _random_day(rng, int(rng.integers(1985, 1995)), 150, 260)),
        ("LE07", _random_day(rng, int(rng.integers(2000, 2003)), 150, 260)),  # SLC on
        ("LC08", _random_day(rng, int(rng.integers(2014, 2021)), 150, 260)),
        ("LC09", _random_day(rng, 2022, 140, 250)),
        (("LC08", "LC09")[int(rng.integers(2))], _random_day(rng, int(rng.integers(2023, 2025)), 140, 260)),
        ("LT05", _random_day(rng, int(rng.integers(1995, 2000)), 10, 50)),  # winter
    ]
    out = list(anchors)
    n_rest = n - len(anchors)
    start, end = date(1984, 4, 1).toordinal(), date(2024, 10, 31).toordinal()
    for i in range(n_rest):
        t = start + (i + 0.5) * (end - start) / n_rest
        t += rng.uniform(-0.4, 0.4) * (end - start) / n_rest
        year = date.fromordinal(int(t)).year
        winter = rng.random() < 0.12
        day = _random_day(rng, year, 330, 355) if winter else _random_day(rng, year, 120, 290)
        eligible = [c for c in SENSORS if _sensor_ok(c, day)]
        if not eligible:  # e.g. a January 1984 draw: move into the growing season
            day = _random_day(rng, year, 160, 250)
            eligible = [c for c in SENSORS if _sensor_ok(c, day)]
        out.append((eligible[int(rng.integers(len(eligible)))], day))
    # Unique dates (one observation per day): nudge by the 16-day revisit until free.
    seen: list[date] = []
    unique = []
    for code, day in sorted(out, key=lambda p: p[1]):
        if _clashes(day, seen):
            day = _free_day(code, day, seen)
        seen.append(day)
        unique.append((code, day))
    return sorted(unique, key=lambda p: p[1])


def _clashes(day: date, seen: Sequence[date]) -> bool:
    """Landsat pairs (5/7, 8/9) are 8 days apart: keep acquisitions at least that far apart."""
    return any(abs((day - s).days) < 8 for s in seen)


def _free_day(code: str, day: date, seen: Sequence[date]) -> date:
    """The nearest date 16 k days away (the revisit) that is free and in the sensor's era."""
    for k in range(1, 1000):
        for cand in (day + timedelta(days=16 * k), day - timedelta(days=16 * k)):
            if not _clashes(cand, seen) and _sensor_ok(code, cand):
                return cand
    raise ValueError(f"no free date for {code} near {day}")


def _edge_halfplane(col: float, row: float, data_west: bool) -> HalfPlane:
    """Half-plane bounded by the swath-parallel line through (col, row)."""
    # Line: c = col + TRACK_SLOPE * (r - row); f = c - line(r); west side is f <= 0.
    a, b, c = -1.0, TRACK_SLOPE, col - TRACK_SLOPE * row
    return (a, b, c) if data_west else (-a, -b, -c)


def _line_distance(hp: HalfPlane, col: float, row: float) -> float:
    a, b, c = hp
    return (a * col + b * row + c) / math.hypot(a, b)


def _plan_acquisitions(
    spec: ArchiveSpec, region: Region, plots: list[_Plot], rng: np.random.Generator
) -> list[_Acq]:
    """Dates, swath coverage, clouds, snow and pinned values of every acquisition.

    Coverage cycles with the date index: 0 full block, 1 a swath edge just beside the
    fill-centre plot (which is on the fill side), 2 a swath edge elsewhere (kept away from
    the fill-centre plot so its fill dates are exactly the scheduled ones, SLC gaps aside).
    """
    block = spec.block()
    ge, gv = (block.h + 1) * TILE_PIXELS, (block.v + 1) * TILE_PIXELS
    fill_plot = next(p for p in plots if p.kind == "fill-centre")
    half = spec.chip_size // 2
    reach = half + spec.context_px
    lon, _lat = _lonlat(region, [(ge, gv)])[0]
    # Local solar time ~10:10 at the block; the pass takes ~20 s per tile row.
    base_seconds = int((10.17 - lon / 15.0) * 3600)

    dates = _plan_dates(spec.n_acquisitions, rng)
    acqs: list[_Acq] = []
    n_fill_edges = 0
    for i, (code, day) in enumerate(dates):
        kind = i % 3
        if kind == 0:
            coverage: tuple[HalfPlane, ...] = ()
            note = "full block"
            centre = (ge + rng.uniform(-2500, 2500), float(gv))
        elif kind == 1:
            # Fill side alternates: east (whole east column has no item) / west.
            data_west = n_fill_edges % 2 == 0
            n_fill_edges += 1
            d = rng.uniform(8, 60)
            col = fill_plot.gx + 0.5 + (-d if data_west else d)
            hp = _edge_halfplane(col, fill_plot.gy + 0.5, data_west)
            coverage = (hp,)
            side = "west" if data_west else "east"
            note = (
                f"swath edge {d:.0f} px {side} of {fill_plot.project_id}/{fill_plot.plot_id}, "
                f"data on its {side} side: the plot is fill"
            )
            centre = (col + (-SWATH_HALF_PX if data_west else SWATH_HALF_PX), fill_plot.gy + 0.5)
        else:
            data_west = bool(rng.random() < 0.5)
            for _ in range(1000):
                col = ge + rng.uniform(-4800, 4800)
                hp = _edge_halfplane(col, float(gv), data_west)
                # The fill-centre plot's whole chip must be on the covered side.
                if _line_distance(hp, fill_plot.gx + 0.5, fill_plot.gy + 0.5) > reach + 64:
                    break
            else:
                raise AssertionError("no swath edge found that leaves the fill-centre plot covered")
            coverage = (hp,)
            note = f"swath edge at column {col - ge:+.0f} px from the block centre, data {'west' if data_west else 'east'}"
            centre = (col + (-SWATH_HALF_PX if data_west else SWATH_HALF_PX), float(gv))

        sensor = SENSORS[code]
        winter = _is_winter(day)
        cloudiness = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.05, 0.5))
        az = math.radians(rng.uniform(125, 160))  # morning sun from the south-east
        mag = rng.uniform(70, 110)
        shadow = (-math.sin(az) * mag, math.cos(az) * mag)  # cast away from the sun (north-west)
        clouds: list[Disc] = []
        cirrus: list[Disc] = []
        snow_discs: list[Disc] = []
        # Per-plot centre conditions, so that every class shows up at plot centres.
        for p in plots:
            r = rng.random()
            pc, pr = p.gx + 0.5, p.gy + 0.5
            if winter:
                if r < 0.75:
                    snow_discs.append((pc, pr, rng.uniform(60, 140)))
            elif r < 0.10:
                rad = rng.uniform(22, 60)
                clouds.append((pc + rng.uniform(-rad, rad) / 3, pr + rng.uniform(-rad, rad) / 3, rad))
            elif r < 0.16:
                rad = rng.uniform(12, 24)
                clouds.append((pc - shadow[0] + rng.uniform(-3, 3), pr - shadow[1] + rng.uniform(-3, 3), rad))
            elif r < 0.21 and sensor.is_oli:
                cirrus.append((pc, pr, rng.uniform(40, 90)))
        # Background clouds somewhere in the plots' neighbourhoods.
        for _ in range(int(rng.poisson(cloudiness * 14))):
            p = plots[int(rng.integers(len(plots)))]
            clouds.append(
                (p.gx + rng.uniform(-reach, reach), p.gy + rng.uniform(-reach, reach), rng.uniform(8, 55))
            )
        acqs.append(
            _Acq(
                index=i,
                sensor=code,
                day=day,
                when=datetime(day.year, day.month, day.day, tzinfo=UTC)
                + timedelta(seconds=base_seconds + int(rng.integers(-300, 300))),
                proc=_processing_date(day, rng),
                coverage=coverage,
                coverage_note=note,
                swath_centre=centre,
                slc_off=code == "LE07" and day > SLC_FAILURE,
                slc_phase=float(rng.uniform(0, SLC_PERIOD_PX)),
                clouds=tuple(clouds),
                shadow_offset=shadow,
                cirrus=tuple(cirrus),
                snow_amount=float(rng.uniform(0.3, 0.9)) if winter else 0.0,
                snow_discs=tuple(snow_discs),
                overrides=(),
                cloudiness=cloudiness,
                atmos=tuple(float(a) for a in rng.normal(0.0, 0.004, 6)),
                key=_key(spec.seed, 1000 + i),
            )
        )
    return _pin_plot_centres(acqs, plots)


def _pin_plot_centres(acqs: list[_Acq], plots: list[_Plot]) -> list[_Acq]:
    """Pinned tricky values at plot centres, and at least one cloud and one shadow at a centre.

    - interior-disturbed, first date: blue DN 1 (-1999.725: truncates to -1999, floor would give
      the mask value -2000), red 7272 (-0.2 -> 0), swir22 7001 (-74.725 -> -74).
    - interior, fourth date: swir22 = 0 (one band fill while QA is not fill).
    """
    by_kind = {p.kind: p for p in plots}
    out = list(acqs)
    d = by_kind["interior-disturbed"]
    out[0] = replace(
        out[0],
        overrides=(*out[0].overrides, (d.gx, d.gy, 0, 1), (d.gx, d.gy, 2, 7272), (d.gx, d.gy, 5, 7001)),
    )
    p = by_kind["interior"]
    out[3] = replace(out[3], overrides=(*out[3].overrides, (p.gx, p.gy, 5, 0)))
    # Clouds and shadows at centres are random above; make sure both exist (full-block date 0).
    a0 = out[0]
    c = by_kind["corner"]
    e = by_kind["pixel-edge"]
    extra = (
        (c.gx + 0.5, c.gy + 0.5 + 10, 30.0),
        (e.gx + 0.5 - a0.shadow_offset[0], e.gy + 0.5 - a0.shadow_offset[1], 18.0),
    )
    out[0] = replace(a0, clouds=a0.clouds + extra)
    return out


def _processing_date(day: date, rng: np.random.Generator) -> date:
    """Collection 2 reprocessed the archive in 2021; newer data is processed within weeks."""
    if day < date(2020, 12, 1):
        return date(2021, 3, 1) + timedelta(days=int(rng.integers(0, 150)))
    return day + timedelta(days=int(rng.integers(4, 25)))


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def _clip_polygon(poly: list[tuple[float, float]], hp: HalfPlane) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: the part of a convex polygon where a*x + b*y + c >= 0."""
    a, b, c = hp
    out: list[tuple[float, float]] = []
    for i, p in enumerate(poly):
        q = poly[(i + 1) % len(poly)]
        fp, fq = a * p[0] + b * p[1] + c, a * q[0] + b * q[1] + c
        if fp >= 0:
            out.append(p)
        if (fp >= 0) != (fq >= 0):
            s = fp / (fp - fq)
            out.append((p[0] + s * (q[0] - p[0]), p[1] + s * (q[1] - p[1])))
    return out


def _area(poly: Sequence[tuple[float, float]]) -> float:
    return (
        abs(sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(poly, [*list(poly[1:]), poly[0]], strict=True)))
        / 2.0
    )


def _tile_footprint(tile: Tile, coverage: Sequence[HalfPlane]) -> list[tuple[float, float]]:
    """Covered part of a tile, as a polygon in global pixel coordinates (col, row)."""
    c0, r0 = tile.h * TILE_PIXELS, tile.v * TILE_PIXELS
    corners = [(c0, r0), (c0 + TILE_PIXELS, r0), (c0 + TILE_PIXELS, r0 + TILE_PIXELS), (c0, r0 + TILE_PIXELS)]
    poly = [(float(a), float(b)) for a, b in corners]
    for hp in coverage:
        if len(poly) < 3:
            break
        poly = _clip_polygon(poly, hp)
    return poly if len(poly) >= 3 else []


def _lonlat(region: Region, pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Global pixel coordinates -> lon/lat (WGS84)."""
    xs = [region.x0 + c * PIXEL_SIZE for c, _ in pts]
    ys = [region.y0 - r * PIXEL_SIZE for _, r in pts]
    lons, lats = warp_transform(CRS.from_proj4(region.proj4), CRS.from_epsg(4326), xs, ys)
    return list(zip(lons, lats, strict=True))


def _geojson_polygon(
    region: Region, poly: Sequence[tuple[float, float]]
) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON Polygon (edges densified: straight Albers edges are curves in lon/lat) + bbox."""
    dense: list[tuple[float, float]] = []
    for p, q in zip(poly, [*list(poly[1:]), poly[0]], strict=True):
        dense.extend((p[0] + (q[0] - p[0]) * k / 8, p[1] + (q[1] - p[1]) * k / 8) for k in range(8))
    ll = [(round(lo, 8), round(la, 8)) for lo, la in _lonlat(region, dense)]
    # RFC 7946: exterior rings counter-clockwise in lon/lat.
    signed = sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(ll, ll[1:] + ll[:1], strict=True))
    if signed < 0:
        ll.reverse()
    ring = [list(p) for p in ll] + [list(ll[0])]
    lons, lats = [p[0] for p in ll], [p[1] for p in ll]
    return {"type": "Polygon", "coordinates": [ring]}, [min(lons), min(lats), max(lons), max(lats)]


def _content_windows(spec: ArchiveSpec, plots: list[_Plot], tile: Tile) -> list[tuple[int, int, int, int]]:
    """Tile-local (row, col, height, width) rectangles holding real content: each plot's chip
    plus ``context_px`` on every side, clipped to the tile. Rectangles may overlap (content is
    a function of the global pixel, so overlaps agree). Everything else stays nodata: blocks
    never written are sparse, and the unwritten part of a written block is nodata too."""
    reach = spec.chip_size // 2 + spec.context_px
    c_off, r_off = tile.h * TILE_PIXELS, tile.v * TILE_PIXELS
    windows = []
    for p in plots:
        c0, c1 = max(p.gx - reach - c_off, 0), min(p.gx + reach - c_off + 1, TILE_PIXELS)
        r0, r1 = max(p.gy - reach - r_off, 0), min(p.gy + reach - r_off + 1, TILE_PIXELS)
        if c0 < c1 and r0 < r1:
            windows.append((r0, c0, r1 - r0, c1 - c0))
    return windows


# --------------------------------------------------------------------------------------------
# Per-pixel content: hashing and noise on the global pixel grid
# --------------------------------------------------------------------------------------------

_U = np.uint64


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wraps modulo 2**64, which numpy does silently)."""
    x = x + _U(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> _U(31)))


def _hash(cols: np.ndarray, rows: np.ndarray, key: int) -> np.ndarray:
    """64 random bits per (col, row): broadcasting (1, w) and (h, 1) gives (h, w)."""
    return _splitmix(
        (cols.astype(_U) * _U(0xD1B54A32D192ED03)) ^ (rows.astype(_U) * _U(0xABC98388FB8FAC03)) ^ _U(key)
    )


def _unit(h: np.ndarray) -> np.ndarray:
    return np.asarray(((h >> _U(40)).astype(np.float32)) * np.float32(1.0 / (1 << 24)))


def _band_noise(h: np.ndarray) -> np.ndarray:
    """Six values in [-1, 1] per pixel from the low 48 bits of a hash: shape (6, h, w)."""
    shifts = (np.arange(6, dtype=_U) * _U(8))[:, None, None]
    return np.asarray(
        ((h[None] >> shifts) & _U(0xFF)).astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    )


def _value_noise(cols: np.ndarray, rows: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Smooth noise in [0, 1]: hashed lattice every ``cell`` px, smoothstep-interpolated.
    Separable, so the cost is a few array operations whatever the window."""
    fx = (cols[0] + 0.5) / cell
    fy = (rows[:, 0] + 0.5) / cell
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    tx, ty = fx - ix, fy - iy
    tx, ty = (tx * tx * (3 - 2 * tx)).astype(np.float32), (ty * ty * (3 - 2 * ty)).astype(np.float32)
    x0, y0 = int(ix.min()), int(iy.min())
    lat = _unit(
        _hash(np.arange(x0, int(ix.max()) + 2)[None, :], np.arange(y0, int(iy.max()) + 2)[:, None], key)
    )
    jx, jy = ix - x0, iy - y0
    along = lat[:, jx] * (1 - tx) + lat[:, jx + 1] * tx  # (lattice rows, w)
    return np.asarray(along[jy] * (1 - ty)[:, None] + along[jy + 1] * ty[:, None])


def _disc_view(
    cx: float, cy: float, radius: float, gx0: int, gy0: int, h: int, w: int
) -> tuple[slice, slice, np.ndarray] | None:
    """(row slice, col slice, distance array) of a disc's bounding box inside the window,
    or None when they do not meet. Distances are from pixel centres."""
    c0, c1 = max(int(cx - radius) - gx0, 0), min(int(cx + radius) + 2 - gx0, w)
    r0, r1 = max(int(cy - radius) - gy0, 0), min(int(cy + radius) + 2 - gy0, h)
    if c0 >= c1 or r0 >= r1:
        return None
    dc = np.arange(gx0 + c0, gx0 + c1, dtype=np.float32) + np.float32(0.5 - cx)
    dr = np.arange(gy0 + r0, gy0 + r1, dtype=np.float32) + np.float32(0.5 - cy)
    return slice(r0, r1), slice(c0, c1), np.sqrt(dr[:, None] ** 2 + dc[None, :] ** 2)


def _render(
    plan: _Plan, acq: _Acq, gx0: int, gy0: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SR DNs (6, h, w) uint16, QA_PIXEL (h, w) uint16 and pixel classes (h, w) of one
    acquisition over the global-pixel window whose upper-left pixel is (gx0, gy0)."""
    cols = np.arange(gx0, gx0 + w, dtype=np.int64)[None, :]
    rows = np.arange(gy0, gy0 + h, dtype=np.int64)[:, None]
    colf, rowf = cols + 0.5, rows + 0.5
    k = plan.static_key

    # Land surface: vegetation fraction from smooth noise, clear-cuts, seasonality.
    # Mostly forest (the TimeSync use case) with meadows and stands at three scales.
    veg = (
        0.45 * _value_noise(cols, rows, 420.0, _key(k, 1))
        + 0.35 * _value_noise(cols, rows, 60.0, _key(k, 2))
        + 0.20 * _value_noise(cols, rows, 14.0, _key(k, 3))
    )
    veg = np.clip(0.1 + 1.3 * veg, 0.15, 0.97).astype(np.float32)
    for p in plan.patches:  # a dense stand until it is cut, then slow regrowth
        reach = math.hypot(p.half_w, p.half_h)
        if p.cx + reach < gx0 or p.cx - reach > gx0 + w or p.cy + reach < gy0 or p.cy - reach > gy0 + h:
            continue
        inside = _in_patch(p, colf, rowf)
        stand = np.maximum(veg, np.float32(0.8))
        if acq.t >= p.t_dist:
            regrowth = min(1.0, (acq.t - p.t_dist) / p.recovery_years)
            stand = 0.03 + (stand - 0.03) * regrowth
        veg = np.where(inside, stand, veg).astype(np.float32)
    season = 0.55 + 0.45 * math.exp(-(((acq.doy - 195) / 65.0) ** 2))
    vf = (veg * np.float32(season))[None]
    refl = vf * _VEG[:, None, None] + (1 - vf) * _SOIL[:, None, None]
    refl += (_SENSOR_OFFSET[acq.sensor] + np.asarray(acq.atmos, dtype=np.float32))[:, None, None]
    # Texture: a spatially correlated brightness field (canopy, gaps: common to all bands),
    # plus small white noise that is fixed per pixel and per date (real surfaces are
    # correlated; strong white noise only made the files bigger).
    texture = 2 * _value_noise(cols, rows, 3.0, _key(k, 4)) - 1
    refl *= (1 + np.float32(0.10) * texture)[None]
    h_static = _hash(cols, rows, k)
    h_acq = _hash(cols, rows, acq.key)
    noise = _band_noise(h_acq)
    refl += np.float32(0.0012) * (_band_noise(h_static) + noise)

    cls = np.zeros((h, w), dtype=np.uint8)
    for cx, cy, r in plan.lakes:
        view = _disc_view(cx, cy, r, gx0, gy0, h, w)
        if view is not None:
            rs, cs, d = view
            m = d <= r
            cls[rs, cs][m] = WATER  # basic slices are views: this writes into cls
            refl[:, rs, cs] = np.where(m, _WATER[:, None, None] + 0.006 * noise[:, rs, cs], refl[:, rs, cs])

    # Winter snow: a smooth field plus discs pinned at plots.
    if acq.snow_amount > 0:
        snow = _value_noise(cols, rows, 150.0, _key(acq.key, 7)) < acq.snow_amount * 0.6
        for cx, cy, r in acq.snow_discs:
            view = _disc_view(cx, cy, r, gx0, gy0, h, w)
            if view is not None:
                rs, cs, d = view
                snow[rs, cs] |= d <= r
        cls[snow] = SNOW
        refl = np.where(snow[None], _SNOW[:, None, None] + 0.02 * noise, refl)

    # Clouds: shadows first (displaced), then OLI cirrus, dilated rings, cloud cores.
    sdx, sdy = acq.shadow_offset
    for cx, cy, r in acq.clouds:
        view = _disc_view(cx + sdx, cy + sdy, r, gx0, gy0, h, w)
        if view is not None:
            rs, cs, d = view
            m = d <= r
            cls[rs, cs] = np.where(m, SHADOW, cls[rs, cs])
            refl[:, rs, cs] = np.where(m[None], refl[:, rs, cs] * 0.3 - 0.004, refl[:, rs, cs])
    if SENSORS[acq.sensor].is_oli:
        for cx, cy, r in acq.cirrus:
            view = _disc_view(cx, cy, r, gx0, gy0, h, w)
            if view is not None:
                rs, cs, d = view
                m = d <= r
                cls[rs, cs] = np.where(m & (cls[rs, cs] < CIRRUS), CIRRUS, cls[rs, cs])
                refl[:, rs, cs] = np.where(m[None], refl[:, rs, cs] + 0.035, refl[:, rs, cs])
    for cx, cy, r in acq.clouds:
        view = _disc_view(cx, cy, r + DILATE_PX, gx0, gy0, h, w)
        if view is not None:
            rs, cs, d = view
            ring = (d > r) & (d <= r + DILATE_PX) & (cls[rs, cs] < DILATED)
            cls[rs, cs] = np.where(ring, DILATED, cls[rs, cs])
            refl[:, rs, cs] = np.where(
                ring[None], refl[:, rs, cs] * 0.8 + 0.2 * _CLOUD[:, None, None], refl[:, rs, cs]
            )
    for cx, cy, r in acq.clouds:
        view = _disc_view(cx, cy, r, gx0, gy0, h, w)
        if view is not None:
            rs, cs, d = view
            core = d <= r
            alpha = (0.75 + 0.25 * (1 - d / r)).astype(np.float32)[None]
            cls[rs, cs] = np.where(core, CLOUD, cls[rs, cs])
            refl[:, rs, cs] = np.where(
                core[None], refl[:, rs, cs] * (1 - alpha) + alpha * _CLOUD[:, None, None], refl[:, rs, cs]
            )

    dn = np.clip(np.rint((refl + 0.2) / 0.0000275), 1, VALID_DN[1]).astype(np.uint16)

    # Scattered artefacts, selected by the top 16 bits of the per-date hash:
    # 0.1 % of pixels get one band with DN 1..7272, 0.05 % get one band = 0.
    sel = (h_acq >> _U(48)).astype(np.int64)
    band = ((h_acq >> _U(40)) & _U(0xFF)).astype(np.int64) % 6
    dark = sel < 66
    zero = (sel >= 66) & (sel < 99)
    if dark.any() or zero.any():
        rr, cc = np.nonzero(dark)
        dn[band[rr, cc], rr, cc] = (1 + (h_acq[rr, cc] % _U(7272))).astype(np.uint16)
        rr, cc = np.nonzero(zero)
        dn[band[rr, cc], rr, cc] = 0
    for oc, orow, ob, ov in acq.overrides:
        if gx0 <= oc < gx0 + w and gy0 <= orow < gy0 + h:
            dn[ob, orow - gy0, oc - gx0] = ov

    # Fill: outside the swath, and ETM+ SLC-off gaps (wider away from the swath centre).
    valid = np.ones((h, w), dtype=bool)
    for a, b, c in acq.coverage:
        valid &= (a * colf + b * rowf + c) >= 0
    if acq.slc_off:
        xc, yc = acq.swath_centre
        norm = math.hypot(1.0, TRACK_SLOPE)
        across = np.abs(colf - (xc + TRACK_SLOPE * (rowf - yc))) / norm
        gap_w = SLC_MAX_GAP_PX * np.minimum(1.0, across / SWATH_HALF_PX)
        along = (TRACK_SLOPE * colf + rowf) / norm
        valid &= np.mod(along + acq.slc_phase, SLC_PERIOD_PX) >= gap_w
    dn[:, ~valid] = SR_NODATA
    cls[~valid] = FILL
    lut = _QA_OLI if SENSORS[acq.sensor].is_oli else _QA_TM
    return dn, lut[cls], cls


def _in_patch(p: _Patch, col: Any, row: Any) -> Any:
    """Whether pixel centres (col, row) (scalars or arrays) lie in the rotated rectangle."""
    u = (col - p.cx) * math.cos(p.angle) + (row - p.cy) * math.sin(p.angle)
    v = -(col - p.cx) * math.sin(p.angle) + (row - p.cy) * math.cos(p.angle)
    return (np.abs(u) <= p.half_w) & (np.abs(v) <= p.half_h)


def _window_uncovered(acq: _Acq, gx0: int, gy0: int, h: int, w: int) -> bool:
    """True when a whole window lies outside the swath (nothing to render: it stays sparse)."""
    corners = [
        (gx0 + 0.5, gy0 + 0.5),
        (gx0 + w - 0.5, gy0 + 0.5),
        (gx0 + 0.5, gy0 + h - 0.5),
        (gx0 + w - 0.5, gy0 + h - 0.5),
    ]
    return any(all(a * c + b * r + cc < 0 for c, r in corners) for a, b, cc in acq.coverage)


# --------------------------------------------------------------------------------------------
# Items: ids, keys, STAC documents
# --------------------------------------------------------------------------------------------


def _format_datetime(dt: datetime, ticks: int, digits: int) -> str:
    """ISO datetime with ``digits`` (0..7) fractional-second digits of ``ticks`` (100 ns units),
    truncated, as the LandsatLook items vary them: ``...:14Z``, ``...:17.0Z``, ``...:14.3484632Z``."""
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}Z" if digits == 0 else f"{base}.{ticks:07d}"[: len(base) + 1 + digits] + "Z"


def _asset_key(sensor: Sensor, region: str, tile: Tile, day: date, product_id: str, suffix: str) -> str:
    """Object key inside the bucket (everything after ``s3://usgs-landsat-ard/``)."""
    return (
        f"collection02/{sensor.folder}/{day:%Y}/{region}/{tile.h:03d}/{tile.v:03d}/"
        f"{product_id}/{product_id}_{suffix}.TIF"
    )


def _asset_suffix(sensor: Sensor, asset: str) -> str:
    return "QA_PIXEL" if asset == "qa_pixel" else sensor.band_files[BANDS.index(asset)]


def _plan_items(
    spec: ArchiveSpec, region: Region, acqs: list[_Acq], rng: np.random.Generator
) -> list[_ItemPlan]:
    """One item per (acquisition, tile) whose swath covers more than 0.5 % of the tile.

    Fractional-second digits cycle 0..7 over the items; tiles one row further south are
    ~20.6 s later (as on the real server: items of one acquisition differ by seconds).
    """
    tiles = sorted(Tile(h, v) for h, v in spec.tiles)
    v_top = min(t.v for t in tiles)
    items: list[_ItemPlan] = []
    for acq in acqs:
        for tile in tiles:
            poly = _tile_footprint(tile, acq.coverage)
            frac = _area(poly) / float(TILE_PIXELS * TILE_PIXELS) if poly else 0.0
            if frac < 0.005:
                continue
            gap = 0.21 if acq.slc_off else 0.0  # mean SLC-off gap fraction, roughly
            fill_pct = round(100.0 * (1.0 - frac * (1.0 - gap)), 4)
            dt = acq.when + timedelta(seconds=round((tile.v - v_top) * 20.6))
            ticks = int(rng.integers(0, 10_000_000))
            scenes = int(rng.integers(1, 4))
            half_span = timedelta(seconds=6 + 8 * scenes)
            start_ticks, end_ticks = (
                int(rng.integers(0, 10)) * 1_000_000,
                int(rng.integers(0, 10)) * 1_000_000,
            )
            pid = f"{acq.sensor}_{region.code}_{tile.h:03d}{tile.v:03d}_{acq.day:%Y%m%d}_{acq.proc:%Y%m%d}_02"
            created = datetime(acq.proc.year, acq.proc.month, acq.proc.day) + timedelta(
                seconds=int(rng.integers(3600, 86000))
            )
            items.append(
                _ItemPlan(
                    acq=acq,
                    tile=tile,
                    product_id=pid,
                    item_id=f"{pid}_SR",
                    datetime=_format_datetime(dt, ticks, len(items) % 8),
                    start_datetime=_format_datetime(dt - half_span, start_ticks, 1),
                    end_datetime=_format_datetime(dt + half_span, end_ticks, 1),
                    created=created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(rng.integers(0, 1000)):03d}Z",
                    scene_count=scenes,
                    fill_pct=fill_pct,
                    footprint=tuple(poly),
                )
            )
    return items


def _stac_item(plan: _Plan, ip: _ItemPlan, bucket_dir: Path) -> dict[str, Any]:
    """A ``landsat-c2ard-sr`` item as LandsatLook serves it, but with local ``href``s."""
    region, acq, tile = plan.region, ip.acq, ip.tile
    sensor = SENSORS[acq.sensor]
    ulx, uly = tile.origin(region)
    geometry, bbox = _geojson_polygon(region, ip.footprint)
    rng = np.random.default_rng(_key(plan.spec.seed, acq.index, tile.h, tile.v) >> 1)
    cloud = round(min(100.0, max(0.0, acq.cloudiness * 100 + rng.normal(0, 3))), 4) if acq.cloudiness else 0.0
    assets: dict[str, Any] = {}
    for asset in ASSETS:
        suffix = _asset_suffix(sensor, asset)
        key = _asset_key(sensor, region.code, tile, acq.day, ip.product_id, suffix)
        entry: dict[str, Any] = {
            "href": str(bucket_dir / key),
            "type": "image/vnd.stac.geotiff; cloud-optimized=true",
        }
        if asset == "qa_pixel":
            entry.update(
                title="Pixel Quality Assessment Band",
                description="Collection 2 ARD Pixel Quality Assessment Band",
                roles=["cloud", "cloud-shadow", "snow-ice", "water-mask"],
            )
        else:
            word, wl = _BAND_META[asset]
            b = suffix.split("_")[1]
            entry.update(
                title=f"{word} ({b})",
                description=f"Collection 2 ARD {word} ({b}) Surface Reflectance",
                **{"eo:bands": [{"name": b, "common_name": asset, "gsd": 30, "center_wavelength": wl}]},
                roles=["data", "reflectance"],
            )
        entry["alternate"] = {
            "s3": {"storage:platform": "AWS", "storage:requester_pays": True, "href": f"s3://{BUCKET}/{key}"}
        }
        assets[asset] = entry
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(STAC_EXTENSIONS),
        "id": ip.item_id,
        "description": "Landsat Collection 2 U.S. Analysis Ready Data Surface Reflectance Product",
        "bbox": bbox,
        "geometry": geometry,
        "properties": {
            "datetime": ip.datetime,
            "start_datetime": ip.start_datetime,
            "end_datetime": ip.end_datetime,
            "eo:cloud_cover": cloud,
            "platform": sensor.platform,
            "instruments": list(sensor.instruments),
            "landsat:grid_horizontal": f"{tile.h:02d}",
            "landsat:grid_vertical": f"{tile.v:02d}",
            "landsat:grid_region": region.code,
            "landsat:scene_count": ip.scene_count,
            "landsat:cloud_shadow_cover": round(cloud * 0.3, 4),
            "landsat:snow_ice_cover": round(100 * acq.snow_amount * 0.5, 4),
            "landsat:fill": ip.fill_pct,
            "landsat:collection_number": "02",
            "proj:epsg": None,
            "proj:shape": [TILE_PIXELS, TILE_PIXELS],
            "proj:transform": [PIXEL_SIZE, 0, ulx, 0, -PIXEL_SIZE, uly],
            "proj:wkt2": plan.wkt2,
            "created": ip.created,
            "updated": ip.created,
        },
        "links": [
            {"rel": "self", "href": f"{STAC_ROOT}/collections/{COLLECTION}/items/{ip.item_id}"},
            {"rel": "parent", "href": f"{STAC_ROOT}/collections/{COLLECTION}"},
            {"rel": "collection", "href": f"{STAC_ROOT}/collections/{COLLECTION}"},
            {"rel": "root", "href": STAC_ROOT, "type": "application/json", "title": "STAC API"},
        ],
        "assets": assets,
        "collection": COLLECTION,
    }


def _collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A minimal ``landsat-c2ard-sr`` collection document spanning the items."""
    bb = [b["bbox"] for b in items]
    times = sorted(i["properties"]["datetime"] for i in items)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": COLLECTION,
        "title": "Landsat Collection 2 ARD Surface Reflectance (synthetic demo archive)",
        "description": "Synthetic stand-in for USGS Landsat Collection 2 U.S. ARD Surface Reflectance, "
        "generated by pipeline.demo.archive.",
        "license": "PDDL-1.0",
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
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [{"rel": "root", "href": STAC_ROOT, "type": "application/json"}],
    }


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _decimate(row: int, col: int, h: int, w: int, f: int) -> tuple[Window, slice, slice] | None:
    """Nearest-neighbour decimation by ``f`` of the content window (row, col, h, w): overview
    pixel (i, j) takes full-resolution pixel (i * f + f // 2, j * f + f // 2). Returns the
    overview window and the row/col slices of the window's array, or None if none is sampled."""
    o = f // 2
    i0, i1 = -(-(row - o) // f), (row + h - 1 - o) // f  # ceil, floor
    j0, j1 = -(-(col - o) // f), (col + w - 1 - o) // f
    if i1 < i0 or j1 < j0:
        return None
    rs = slice(i0 * f + o - row, i0 * f + o - row + (i1 - i0) * f + 1, f)
    cs = slice(j0 * f + o - col, j0 * f + o - col + (j1 - j0) * f + 1, f)
    return Window(j0, i0, j1 - j0 + 1, i1 - i0 + 1), rs, cs


def _vrt(plan: _Plan, tile: Tile, nodata: int, full: str, overviews: Sequence[str]) -> str:
    """A one-band VRT over the full-resolution GeoTIFF that declares our overview files."""
    ulx, uly = tile.origin(plan.region)
    ovr = "".join(
        f'<Overview><SourceFilename relativeToVRT="0">{path}</SourceFilename>'
        f"<SourceBand>1</SourceBand></Overview>"
        for path in overviews
    )
    n = TILE_PIXELS
    return (
        f'<VRTDataset rasterXSize="{n}" rasterYSize="{n}"><SRS>{plan.crs.to_wkt()}</SRS>'
        f"<GeoTransform>{ulx}, {PIXEL_SIZE}, 0, {uly}, 0, {-PIXEL_SIZE}</GeoTransform>"
        f'<VRTRasterBand dataType="UInt16" band="1"><NoDataValue>{nodata}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{full}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{n}" ySize="{n}"/><DstRect xOff="0" yOff="0" xSize="{n}" ySize="{n}"/>'
        f"</SimpleSource>{ovr}</VRTRasterBand></VRTDataset>"
    )


def _write_item_rasters(plan: _Plan, ip: _ItemPlan, bucket_dir: Path) -> int:
    """Render the content windows once; write them, and their decimations for each overview
    level, into sparse in-memory GeoTIFFs; then COG-copy each asset (through a VRT that
    declares the overviews) to its bucket key. Returns bytes written."""
    tile, acq = ip.tile, ip.acq
    sensor = SENSORS[acq.sensor]
    ulx, uly = tile.origin(plan.region)
    levels = (1, *OVERVIEW_FACTORS)
    # Unique names: several builds may run in one process (e.g. threads in a test run).
    tmp_dir = f"/vsimem/eo-demo-archive/{uuid.uuid4().hex}"
    tmp = {(a, f): f"{tmp_dir}/{a}_{f}.tif" for a in ASSETS for f in levels}
    nodata = {a: QA_NODATA if a == "qa_pixel" else SR_NODATA for a in ASSETS}

    def profile(a: str, f: int) -> dict[str, Any]:
        n = math.ceil(TILE_PIXELS / f)
        return {
            "driver": "GTiff",
            "width": n,
            "height": n,
            "count": 1,
            "dtype": "uint16",
            "nodata": nodata[a],
            "crs": plan.crs,
            "transform": Affine(PIXEL_SIZE * f, 0, ulx, 0, -PIXEL_SIZE * f, uly),
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "sparse_ok": True,
            "compress": "NONE",
        }

    written = 0
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):  # no .aux.xml side files in the bucket
        try:
            with ExitStack() as stack:
                out = {
                    (a, f): stack.enter_context(rasterio.open(tmp[a, f], "w", **profile(a, f)))
                    for a in ASSETS
                    for f in levels
                }
                for row, col, h, w in plan.windows[tile]:
                    gx0, gy0 = tile.h * TILE_PIXELS + col, tile.v * TILE_PIXELS + row
                    if _window_uncovered(acq, gx0, gy0, h, w):
                        continue  # all fill: leave the blocks sparse
                    dn, qa, _cls = _render(plan, acq, gx0, gy0, h, w)
                    arrays = dict(zip(BANDS, dn, strict=True)) | {"qa_pixel": qa}
                    for a, arr in arrays.items():
                        out[a, 1].write(arr, 1, window=Window(col, row, w, h))
                        for f in OVERVIEW_FACTORS:
                            dec = _decimate(row, col, h, w, f)
                            if dec is not None:
                                win, rs, cs = dec
                                out[a, f].write(arr[rs, cs], 1, window=win)
            for a in ASSETS:
                vrt = _vrt(plan, tile, nodata[a], tmp[a, 1], [tmp[a, f] for f in OVERVIEW_FACTORS])
                dst = bucket_dir / _asset_key(
                    sensor, plan.region.code, tile, acq.day, ip.product_id, _asset_suffix(sensor, a)
                )
                dst.parent.mkdir(parents=True, exist_ok=True)
                options = dict(_COG_OPTIONS, sparse_ok="TRUE" if plan.spec.sparse_fill else "FALSE")
                rasterio.shutil.copy(vrt, str(dst), driver="COG", **options)
                written += dst.stat().st_size
        finally:
            for path in tmp.values():
                if rasterio.shutil.exists(path):
                    rasterio.shutil.delete(path)
    return written


def _plot_truth(plan: _Plan, plot: _Plot, have: set[tuple[int, Tile]]) -> dict[str, Any]:
    """The plot's record: kind, tiles, and per acquisition what the pipeline should see at
    the centre pixel (status = class name, 'fill', or 'absent' when no chip tile has an item)."""
    region, spec = plan.region, plan.spec
    chip = chip_tiles(region, plot.x, plot.y, spec.chip_size, spec.chip_size)
    own = tile_of(region, plot.x, plot.y)
    dates = []
    for acq in plan.acqs:
        present = [t for t in chip if (acq.index, t) in have]
        rec: dict[str, Any] = {
            "date": acq.day.isoformat(),
            "year": acq.day.year,
            "doy": acq.doy,
            "sensor": acq.sensor,
            "tiles": [t.hv for t in present],
        }
        if not present:
            rec.update(status="absent", qa=None, dn=None)
        elif (acq.index, own) not in have:
            rec.update(status="fill", qa=None, dn=None, note="no item for the plot's own tile")
        else:
            dn, qa, cls = _render(plan, acq, plot.gx, plot.gy, 1, 1)
            rec.update(status=CLASS_NAMES[int(cls[0, 0])], qa=int(qa[0, 0]), dn=[int(v) for v in dn[:, 0, 0]])
            pinned = [o for o in acq.overrides if (o[0], o[1]) == (plot.gx, plot.gy)]
            if pinned:
                rec["pinned"] = {BANDS[b]: v for _c, _r, b, v in pinned}
        dates.append(rec)
    return {
        "project_id": plot.project_id,
        "plot_id": plot.plot_id,
        "x": plot.x,
        "y": plot.y,
        "kind": plot.kind,
        "note": plot.note,
        "tile": own.hv,
        "pixel": [plot.gy - own.v * TILE_PIXELS, plot.gx - own.h * TILE_PIXELS],
        "chip_tiles": [t.hv for t in chip],
        # Clear-cut under the centre: vegetation drops at this decimal year, then regrows.
        "disturbance": next(
            (
                {"year": round(pa.t_dist, 2), "recovery_years": round(pa.recovery_years, 1)}
                for pa in plan.patches
                if _in_patch(pa, plot.gx + 0.5, plot.gy + 0.5)
            ),
            None,
        ),
        "fill_dates": [d["date"] for d in dates if d["status"] == "fill"],
        "observation_dates": [d["date"] for d in dates if d["status"] not in ("fill", "absent")],
        "dates": dates,
    }


def plan_archive(spec: ArchiveSpec) -> _Plan:
    """Everything about the archive except the pixels; cheap and deterministic in the spec."""
    region = get_region(spec.region)
    rng = np.random.default_rng(spec.seed)
    crs = CRS.from_proj4(region.proj4)
    plots = _make_plots(spec, region, rng)
    patches = _make_patches(plots, rng)
    lake_plot = next(p for p in plots if p.kind == "water")
    lakes: list[Disc] = [
        (
            lake_plot.gx + 0.5 + rng.uniform(-6, 6),
            lake_plot.gy + 0.5 + rng.uniform(-6, 6),
            rng.uniform(28, 45),
        )
    ]
    acqs = _plan_acquisitions(spec, region, plots, rng)
    tiles = sorted(Tile(h, v) for h, v in spec.tiles)
    plan = _Plan(
        spec=spec,
        region=region,
        crs=crs,
        wkt2=crs.to_wkt(version="WKT2_2019"),
        tiles=tiles,
        plots=plots,
        patches=patches,
        lakes=lakes,
        acqs=acqs,
        items=[],
        windows={t: _content_windows(spec, plots, t) for t in tiles},
        static_key=_key(spec.seed, 1),
    )
    _bracket_disturbance(plan, rng)
    plan.items = _plan_items(spec, region, plan.acqs, rng)
    return plan


def _bracket_disturbance(plan: _Plan, rng: np.random.Generator) -> None:
    """Put the interior-disturbed plot's clear-cut between two consecutive usable dates (centre
    inside the swath, not winter) and keep clouds off its centre on both, so that for every
    seed its time series has a clear observation just before and just after the drop."""
    plot = next(p for p in plan.plots if p.kind == "interior-disturbed")
    col, row = plot.gx + 0.5, plot.gy + 0.5
    k = next(i for i, pa in enumerate(plan.patches) if _in_patch(pa, col, row))
    usable = [
        a.index
        for a in plan.acqs[1:]  # date 0 carries pinned DNs at this plot
        if not a.winter and _render(plan, a, plot.gx, plot.gy, 1, 1)[2][0, 0] != FILL
    ]
    pairs = list(itertools.pairwise(usable))
    if not pairs:
        raise AssertionError("fewer than two usable dates for the disturbed plot")
    preferred = [(i, j) for i, j in pairs if plan.acqs[i].t >= 1990 and plan.acqs[j].t <= 2020] or pairs
    i, j = preferred[int(rng.integers(len(preferred)))]
    t0, t1 = plan.acqs[i].t, plan.acqs[j].t
    plan.patches[k] = replace(plan.patches[k], t_dist=float(t0 + rng.uniform(0.2, 0.8) * (t1 - t0)))

    def hits(cx: float, cy: float, radius: float) -> bool:
        return math.hypot(cx - col, cy - row) <= radius + 1

    for idx in (i, j):
        a = plan.acqs[idx]
        sdx, sdy = a.shadow_offset
        plan.acqs[idx] = replace(
            a,
            clouds=tuple(
                d
                for d in a.clouds
                if not hits(d[0], d[1], d[2] + DILATE_PX) and not hits(d[0] + sdx, d[1] + sdy, d[2])
            ),
            cirrus=tuple(d for d in a.cirrus if not hits(*d)),
        )


def build_archive(
    root: Path | str, spec: ArchiveSpec, *, workers: int | None = None, overwrite: bool = False
) -> BuiltArchive:
    """Build the archive described by ``spec`` under ``root`` (see the module docstring).

    ``workers`` threads write COGs in parallel (GDAL releases the GIL); default
    ``min(4, cpu_count)``. An existing archive under ``root`` is an error unless
    ``overwrite``, which deletes only the paths this function writes.

    Each plot record in :attr:`BuiltArchive.plots` has ``kind``, ``note``, ``tile``, ``pixel``
    (row, col in its tile), ``chip_tiles`` (hv strings), ``fill_dates``,
    ``observation_dates`` and ``dates``: per acquisition the centre pixel's ``status``
    (clear / water / snow / shadow / cirrus / dilated-cloud / cloud / fill / absent), ``qa``,
    raw ``dn`` (blue..swir22) and any ``pinned`` values.
    """
    t0 = time.perf_counter()
    root = Path(root).resolve()
    bucket_dir = root / BUCKET
    catalog_dir = root / "catalog"
    plot_file, manifest = root / "plots.csv", root / "archive.json"
    owned = [bucket_dir, catalog_dir, plot_file, manifest]
    clear_owned(root, owned, overwrite)
    catalog_dir.mkdir(parents=True, exist_ok=True)
    bucket_dir.mkdir(parents=True, exist_ok=True)

    plan = plan_archive(spec)
    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        total_bytes = sum(pool.map(lambda ip: _write_item_rasters(plan, ip, bucket_dir), plan.items))

    items = [_stac_item(plan, ip, bucket_dir) for ip in plan.items]
    order = np.random.default_rng(_key(spec.seed, 2) >> 1).permutation(len(items))
    items = [items[i] for i in order]  # searches must not rely on file order
    ndjson, geojson = catalog_dir / "items.ndjson", catalog_dir / "items.geojson"
    ndjson.write_text("".join(json.dumps(it, separators=(",", ":")) + "\n" for it in items))
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": items}, indent=1) + "\n")
    collection_json = catalog_dir / "collection.json"
    collection_json.write_text(json.dumps(_collection(items), indent=1) + "\n")

    with plot_file.open("w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["project_id", "plot_id", "x", "y"])
        wr.writerows([p.project_id, p.plot_id, p.x, p.y] for p in plan.plots)

    have = {(ip.acq.index, ip.tile) for ip in plan.items}
    plots = [_plot_truth(plan, p, have) for p in plan.plots]
    acquisitions = [
        {
            "index": a.index,
            "date": a.day.isoformat(),
            "sensor": a.sensor,
            "coverage": a.coverage_note,
            "tiles": [t.hv for t in plan.tiles if (a.index, t) in have],
            "slc_off": a.slc_off,
            "winter": a.winter,
        }
        for a in plan.acqs
    ]
    n_files = len(plan.items) * len(ASSETS)
    seconds = round(time.perf_counter() - t0, 2)
    manifest.write_text(
        json.dumps(
            {
                "generator": "pipeline.demo.archive",
                "spec": asdict(spec),
                "region": spec.region,
                "bucket": BUCKET,
                "collection": COLLECTION,
                "n_items": len(items),
                "n_files": n_files,
                "total_bytes": total_bytes,
                "build_seconds": seconds,
                "acquisitions": acquisitions,
                "plots": plots,
            },
            indent=1,
        )
        + "\n"
    )
    return BuiltArchive(
        root=root,
        bucket_dir=bucket_dir,
        catalog_ndjson=ndjson,
        catalog_geojson=geojson,
        plot_file=plot_file,
        items=items,
        plots=plots,
        collection_json=collection_json,
        manifest=manifest,
        acquisitions=acquisitions,
        n_files=n_files,
        total_bytes=total_bytes,
        build_seconds=seconds,
    )


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_tiles(text: str) -> tuple[int, int]:
    try:
        h, v = (int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile must be H,V (e.g. 3,4), got {text!r}") from None
    return h, v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="make_demo_archive.py",
        description=(
            "Write a synthetic Landsat Collection 2 ARD archive into OUT_DIR:\n"
            "  usgs-landsat-ard/      COGs with the bucket's real keys (upload as s3://usgs-landsat-ard)\n"
            "  catalog/items.ndjson   landsat-c2ard-sr STAC items (href = local path,\n"
            "                         alternate.s3.href = bucket key); also items.geojson, collection.json\n"
            "  plots.csv              project_id,plot_id,x,y\n"
            "  archive.json           spec, acquisitions, each plot's kind and per-date truth"
        ),
        epilog=(
            "examples:\n"
            "  make_demo_archive.py demo/archive              the README demo (~0.5 GB, under a minute)\n"
            "  make_demo_archive.py /tmp/a --small --seed 3   the test archive (~80 MB, seconds)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, help="directory to write into (created if missing)"
    )
    p.add_argument(
        "--small", action="store_true", help="the small test spec (8 acquisitions, special plots only)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; equal seeds give identical archives (default 0)"
    )
    p.add_argument(
        "--acquisitions", type=int, metavar="N", help=f"number of acquisition dates (>= {MIN_ACQUISITIONS})"
    )
    p.add_argument("--extra-plots", type=int, metavar="N", help="ordinary plots beyond the special ones")
    p.add_argument(
        "--context-px", type=int, metavar="PX", help="real content this far beyond each plot's chip"
    )
    p.add_argument(
        "--chip-size", type=int, metavar="PX", help="chip size the content must cover (odd, default 255)"
    )
    p.add_argument(
        "--tiles",
        type=_parse_tiles,
        nargs="+",
        metavar="H,V",
        help=f"ARD tiles (must include a 2x2 block; default {' '.join(f'{h},{v}' for h, v in DEFAULT_TILES)})",
    )
    p.add_argument("--region", default="CU", help="ARD region code (default CU)")
    p.add_argument("--workers", type=int, help="parallel writer threads (default min(4, cpus))")
    p.add_argument("--force", action="store_true", help="replace an archive already in OUT_DIR")
    p.add_argument(
        "--dense", action="store_true", help="write every block, fill too, as the real archive does (slower)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``scripts/make_demo_archive.py``, console script ``eo-demo-archive``)."""
    args = _parser().parse_args(argv)
    base = small_spec(args.seed) if args.small else demo_spec(args.seed)
    changes: dict[str, Any] = {"region": args.region.upper()}
    for name, value in (
        ("n_acquisitions", args.acquisitions),
        ("n_extra_plots", args.extra_plots),
        ("context_px", args.context_px),
        ("chip_size", args.chip_size),
    ):
        if value is not None:
            changes[name] = value
    if args.tiles:
        changes["tiles"] = tuple(args.tiles)
    if args.dense:
        changes["sparse_fill"] = False
    try:
        spec = replace(base, **changes)
        built = build_archive(args.out_dir, spec, workers=args.workers, overwrite=args.force)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{built.root}: {len(built.items)} items, {built.n_files} COGs, "
        f"{built.total_bytes / 1e6:.1f} MB, {len(built.plots)} plots, {built.build_seconds:.1f} s"
    )
    if not args.quiet:
        print(f"  bucket   {built.bucket_dir}  (upload as s3://{BUCKET}/)")
        print(f"  items    {built.catalog_ndjson}\n           {built.catalog_geojson}")
        print(f"  plots    {built.plot_file}\n  manifest {built.manifest}")
        for p in built.plots:
            print(
                f"  {p['project_id']}/{p['plot_id']:<4} {p['kind']:<22} tiles {','.join(p['chip_tiles']):<19} "
                f"observations {len(p['observation_dates']):>3}  fill {len(p['fill_dates']):>2}"
            )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
