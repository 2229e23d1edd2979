"""Independent reference implementation ("oracle") of the TimeSync extraction recipe.

Written from the contract in ``spec/timesync.md`` (and ``spec/landsat-ard-stac.md``) only;
it deliberately shares no code with ``pipeline/`` or ``targets/``.  End-to-end tests use it
to compute, for a plot file and a local STAC catalogue file, every output file the
pipeline must write, and to compare a project directory against that expectation.

The code is meant to be read and checked by eye: plain loops over plots, tiles, items and
bands, numpy only for whole-array arithmetic, rasterio only to read windows.

Public API
----------
- ``expected_outputs(catalog_path, plot_file, ...) -> {relative path: content}``
  (``str`` for CSV text, ``uint8`` array ``(h, w, 3)`` for PNG chips)
- ``decode_png(data_or_path) -> np.ndarray`` (``uint8`` ``(h, w, 3)``)
- ``compare_tree(project_dir, expected) -> list[str]`` (human-readable differences)

Smaller building blocks (``parse_datetime``, ``tile_of``, ``chip_tiles``, ``search_tile``,
``rescale``, ``tasseled_cap``, ``stretch``, ``qa_flag``, ...) are public too so that the
oracle itself can be unit-tested.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

# --------------------------------------------------------------------------------------
# Constants of the recipe (spec/timesync.md)
# --------------------------------------------------------------------------------------

PIXEL = 30  # metres
TILE_PIXELS = 5000
TILE_SIZE = PIXEL * TILE_PIXELS  # 150000 m

# region -> (X0, Y0, number of tiles in h, number of tiles in v)
REGIONS: dict[str, tuple[int, int, int, int]] = {
    "CU": (-2565585, 3314805, 33, 22),  # h 0..32, v 0..21
    "AK": (-2201715, 2474325, 26, 14),  # h 0..25, v 0..13
    "HI": (-444345, 2168895, 5, 3),  # h 0..4,  v 0..2
}

OPTICAL_BANDS = ["blue", "green", "red", "nir08", "swir16", "swir22"]
QA_BAND = "qa_pixel"
ALL_BANDS = [*OPTICAL_BANDS, QA_BAND]

FILL_VALUE_RESCALED = -2000

# Tasseled cap coefficients over (blue, green, red, nir08, swir16, swir22)
TC_COEFFICIENTS = {
    "brightness": [0.2043, 0.4158, 0.5524, 0.5741, 0.3124, 0.2303],
    "greenness": [-0.1603, -0.2819, -0.4934, 0.7940, -0.0002, -0.1446],
    "wetness": [0.0315, 0.2021, 0.3102, 0.1594, -0.6806, -0.6109],
}

# Composite -> list of (channel source, (lo, hi)) in R, G, B order.
COMPOSITES: dict[str, list[tuple[str, tuple[int, int]]]] = {
    "tc": [("brightness", (604, 5592)), ("greenness", (49, 3147)), ("wetness", (-2245, 843))],
    "b743": [("swir22", (-904, 3696)), ("nir08", (151, 4951)), ("red", (-300, 2500))],
    "b432": [("nir08", (151, 4951)), ("red", (-300, 2500)), ("green", (50, 1150))],
}

CSV_HEADER = [
    "sensor",
    "project_id",
    "plot_id",
    "hv",
    "year",
    "doy",
    "blue",
    "green",
    "red",
    "nir",
    "swir1",
    "swir2",
    "qa",
    "date",
]


# --------------------------------------------------------------------------------------
# Datetimes
# --------------------------------------------------------------------------------------

_ITEM_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"
    r"(?:\.(\d{0,7}))?"
    r"(Z|z|[+-]\d{2}:\d{2})$"
)


class Instant:
    """A UTC instant with 100 ns resolution (7 fractional digits), totally ordered.

    ``when`` is a timezone-aware UTC datetime with whole seconds; ``ticks`` is the
    fraction of the second in units of 1e-7 s.  Comparing ``(when, ticks)`` avoids any
    rounding of 7-digit fractions to Python's microseconds.
    """

    def __init__(self, when: dt.datetime, ticks: int = 0):
        self.when = when.astimezone(dt.UTC).replace(microsecond=0)
        self.ticks = ticks

    def key(self) -> tuple[dt.datetime, int]:
        return (self.when, self.ticks)

    def __lt__(self, other: Instant) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Instant) -> bool:
        return self.key() <= other.key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Instant) and self.key() == other.key()

    def __repr__(self) -> str:
        return f"Instant({self.when.isoformat()}, ticks={self.ticks})"

    @property
    def year(self) -> int:
        return self.when.year

    @property
    def doy(self) -> int:
        return self.when.timetuple().tm_yday


def parse_datetime(text: str) -> Instant:
    """Parse an item ``datetime``: ``YYYY-MM-DDTHH:MM:SS[.f{0,7}](Z|+HH:MM)``."""
    m = _ITEM_DATETIME_RE.match(text.strip())
    if m is None:
        raise ValueError(f"unparseable item datetime: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = m.group(7) or ""
    ticks = int((fraction + "0000000")[:7])
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    when = dt.datetime(year, month, day, hour, minute, second, tzinfo=tz)
    return Instant(when, ticks)


def year_doy(datetime_text: str) -> tuple[int, int]:
    """(year, day of year) of an item datetime, in UTC."""
    instant = parse_datetime(datetime_text)
    return instant.year, instant.doy


def _parse_bound(value: Any, is_end: bool) -> Instant | None:
    """One end of a datetime range.

    Accepts None / "" / ".." (open), a datetime/date object, or a string: ``YYYY``,
    ``YYYY-MM``, ``YYYY-MM-DD`` (a period: the start bound is its first instant, the end
    bound its last instant, so a date-only end is inclusive of that whole day) or a full
    datetime (naive datetimes are taken as UTC).
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return Instant(when, (when.microsecond * 10))
    if isinstance(value, dt.date):
        value = value.isoformat()
    text = str(value).strip()
    if text in ("", ".."):
        return None

    m = re.match(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$", text)
    if m is not None:
        year = int(m.group(1))
        month = int(m.group(2)) if m.group(2) else None
        day = int(m.group(3)) if m.group(3) else None
        if not is_end:
            start = dt.date(year, month or 1, day or 1)
            return Instant(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC), 0)
        if month is None:
            last = dt.date(year, 12, 31)
        elif day is None:
            last = dt.date(year, month, calendar.monthrange(year, month)[1])
        else:
            last = dt.date(year, month, day)
        end = dt.datetime(last.year, last.month, last.day, 23, 59, 59, tzinfo=dt.UTC)
        return Instant(end, 9999999)

    if _ITEM_DATETIME_RE.match(text):
        return parse_datetime(text)
    # Naive "YYYY-MM-DDTHH:MM:SS[.f]" -> UTC
    return parse_datetime(text + "Z")


def parse_range(datetime_range: Any) -> tuple[Instant | None, Instant | None]:
    """``(start, end)`` tuple (or a ``"start/end"`` string) -> closed interval bounds."""
    if isinstance(datetime_range, str):
        parts = datetime_range.split("/")
        if len(parts) == 1:
            parts = [parts[0], parts[0]]
        start, end = parts
    else:
        start, end = datetime_range
    return _parse_bound(start, is_end=False), _parse_bound(end, is_end=True)


# --------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------


def _region(region: str) -> tuple[int, int, int, int]:
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {sorted(REGIONS)}")
    return REGIONS[region]


def tile_of(x: float, y: float, region: str = "CU") -> tuple[int, int]:
    """Unclipped ``(h, v)`` of the tile containing ``(x, y)``."""
    x0, y0, _, _ = _region(region)
    h = math.floor((x - x0) / TILE_SIZE)
    v = math.floor((y0 - y) / TILE_SIZE)
    return h, v


def check_in_grid(x: float, y: float, region: str = "CU") -> None:
    """Raise ``ValueError`` when the point lies outside the region's tiling grid."""
    _, _, nh, nv = _region(region)
    h, v = tile_of(x, y, region)
    if not (0 <= h < nh and 0 <= v < nv):
        raise ValueError(f"point ({x}, {y}) is outside the {region} ARD grid (tile h={h} v={v})")


def chip_tiles(x: float, y: float, region: str = "CU", chip: int = 255) -> list[tuple[int, int]]:
    """Tiles touched by the chip, in search order: ascending h, then v; clipped to the grid."""
    _, _, nh, nv = _region(region)
    half = (chip // 2) * PIXEL
    h_first, v_first = tile_of(x - half, y + half, region)  # upper-left corner
    h_last, v_last = tile_of(x + half, y - half, region)  # lower-right corner
    h_first, h_last = max(h_first, 0), min(h_last, nh - 1)
    v_first, v_last = max(v_first, 0), min(v_last, nv - 1)
    tiles = []
    for h in range(h_first, h_last + 1):
        for v in range(v_first, v_last + 1):
            tiles.append((h, v))
    return tiles


# --------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------


def load_catalog(catalog_path: str | Path) -> list[dict]:
    """Items of a newline-delimited JSON file of STAC items, or of a GeoJSON
    FeatureCollection (or a single Feature).  Duplicate ids of one collection: first wins."""
    text = Path(catalog_path).read_text(encoding="utf-8")
    items: list[dict] = []
    whole = None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and whole.get("type") == "FeatureCollection":
        items = list(whole.get("features", []))
    elif isinstance(whole, dict):
        items = [whole]
    elif isinstance(whole, list):
        items = list(whole)
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{catalog_path}:{number}: not JSON: {exc}") from exc

    seen: set[tuple[Any, Any]] = set()
    unique = []
    for item in items:
        key = (item.get("collection"), item.get("id"))
        if key in seen:
            continue
        seen.add(key)
        unique.append(item)
    return unique


def search_tile(
    items: list[dict],
    h: int,
    v: int,
    *,
    region: str = "CU",
    collection: str = "landsat-c2ard-sr",
    datetime_range: Any = ("1984-01-01", None),
) -> list[dict]:
    """The items a per-tile STAC search returns, ordered by datetime then id."""
    start, end = parse_range(datetime_range)
    found = []
    for item in items:
        if item.get("collection") != collection:
            continue
        props = item.get("properties", {})
        if props.get("landsat:grid_horizontal") != f"{h:02d}":
            continue
        if props.get("landsat:grid_vertical") != f"{v:02d}":
            continue
        if props.get("landsat:grid_region") != region:
            continue
        when = parse_datetime(props["datetime"])
        if start is not None and when < start:
            continue
        if end is not None and end < when:
            continue
        found.append(item)
    found.sort(key=lambda it: (parse_datetime(it["properties"]["datetime"]).key(), it["id"]))
    return found


def group_observations(tile_results: list[list[dict]]) -> list[tuple[tuple[int, int], list[dict]]]:
    """Group items by (year, doy), keeping search order (tile by tile) inside each group.

    Returns ``[((year, doy), [items...]), ...]`` sorted by (year, doy).
    """
    groups: dict[tuple[int, int], list[dict]] = {}
    for results in tile_results:
        for item in results:
            key = year_doy(item["properties"]["datetime"])
            if key not in groups:
                groups[key] = []
            groups[key].append(item)
    return sorted(groups.items())


# --------------------------------------------------------------------------------------
# Raster reading
# --------------------------------------------------------------------------------------


def asset_location(item: dict, band: str, asset_href: str = "href") -> str:
    asset = item["assets"][band]
    if asset_href == "href":
        return asset["href"]
    if asset_href == "s3":
        return asset["alternate"]["s3"]["href"]
    raise ValueError(f"asset_href must be 'href' or 's3', not {asset_href!r}")


class Reader:
    """Opens rasters: with ``opener(location)`` if given (a callable returning a context
    manager that yields a rasterio dataset), else ``rasterio.open(location, **open_kwargs)``."""

    def __init__(self, open_kwargs: dict | None = None, opener: Callable | None = None):
        self.open_kwargs = dict(open_kwargs or {})
        self.opener = opener

    def open(self, location: str):
        if self.opener is not None:
            return self.opener(location)
        return rasterio.open(location, **self.open_kwargs)


def pixel_of(transform, x: float, y: float) -> tuple[int, int]:
    """(row, col) of the pixel containing (x, y) under a north-up transform."""
    ulx, uly = transform.c, transform.f
    col = math.floor((x - ulx) / transform.a)
    row = math.floor((uly - y) / -transform.e)
    return row, col


def read_window(dataset, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
    """Band 1 of ``dataset`` for a window that may extend past the raster: zero outside.

    Returned as int64 (wide enough to sum several uint16 rasters).
    """
    out = np.zeros((height, width), dtype=np.int64)
    # Intersection of the wanted window with the raster, in raster coordinates.
    r0 = max(row_off, 0)
    c0 = max(col_off, 0)
    r1 = min(row_off + height, dataset.height)
    c1 = min(col_off + width, dataset.width)
    if r0 >= r1 or c0 >= c1:
        return out
    data = dataset.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    out[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = data.astype(np.int64)
    return out


def is_fill_at(reader: Reader, item: dict, x: float, y: float, asset_href: str) -> bool:
    """Fill test of one item at the plot: True when the qa_pixel has bit 0 set there,
    or when the raster does not contain the point."""
    with reader.open(asset_location(item, QA_BAND, asset_href)) as ds:
        row, col = pixel_of(ds.transform, x, y)
        if not (0 <= row < ds.height and 0 <= col < ds.width):
            return True
        value = int(read_window(ds, row, col, 1, 1)[0, 0])
    return (value & 1) == 1


def read_mosaic(
    reader: Reader, items: list[dict], x: float, y: float, chip: int, asset_href: str
) -> dict[str, np.ndarray]:
    """Each band as a chip x chip int64 array: the sum over the group's items of the
    boundless, zero-filled window centred on the plot pixel."""
    bands = {}
    for band in ALL_BANDS:
        total = np.zeros((chip, chip), dtype=np.int64)
        for item in items:
            with reader.open(asset_location(item, band, asset_href)) as ds:
                row, col = pixel_of(ds.transform, x, y)
                window = read_window(ds, row - chip // 2, col - chip // 2, chip, chip)
            total = total + window
        bands[band] = total
    return bands


# --------------------------------------------------------------------------------------
# Arithmetic of the recipe
# --------------------------------------------------------------------------------------


def rescale(dn: np.ndarray | int) -> np.ndarray:
    """``int16(trunc((DN * 0.0000275 - 0.2) * 10000))`` in float64.

    trunc goes toward zero (DN 7000 -> -75, not -76).  The int16 conversion goes through
    int64 so that out-of-range values (impossible for non-overlapping tiles) wrap
    deterministically instead of being platform-defined.
    """
    values = np.asarray(dn, dtype=np.float64)
    truncated = np.trunc((values * 0.0000275 - 0.2) * 10000)
    return truncated.astype(np.int64).astype(np.int16)


def fill_mask(rescaled: dict[str, np.ndarray]) -> np.ndarray:
    """True where any of the six rescaled optical bands equals -2000."""
    mask = np.zeros(rescaled[OPTICAL_BANDS[0]].shape, dtype=bool)
    for band in OPTICAL_BANDS:
        mask = mask | (rescaled[band] == FILL_VALUE_RESCALED)
    return mask


def tasseled_cap(rescaled: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Brightness, greenness, wetness in float64, as the recipe states them: np.tensordot
    over the int16 bands stacked on the last axis (blue, green, red, nir08, swir16,
    swir22), coefficients as a Python list, once per channel (the BLAS summation order is
    part of the contract: a left-to-right sum differs in the last bit at stretch steps)."""
    arr = np.stack([rescaled[b].astype(np.int16) for b in OPTICAL_BANDS], axis=2)
    return {name: np.tensordot(arr, list(c), axes=1) for name, c in TC_COEFFICIENTS.items()}


def stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(255 / (hi - lo)) * (x - lo)`` in float64, clipped to [0, 255], truncated to uint8."""
    scale = 255.0 / (float(hi) - float(lo))
    stretched = scale * (np.asarray(values, dtype=np.float64) - float(lo))
    clipped = np.clip(stretched, 0.0, 255.0)
    return np.trunc(clipped).astype(np.uint8)


def composites(rescaled: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The three RGB chips, each uint8 (h, w, 3), masked pixels 0 in every channel."""
    mask = fill_mask(rescaled)
    sources: dict[str, np.ndarray] = {}
    for band in OPTICAL_BANDS:
        sources[band] = rescaled[band]
    sources.update(tasseled_cap(rescaled))

    out = {}
    for name, channels in COMPOSITES.items():
        height, width = mask.shape
        rgb = np.zeros((height, width, 3), dtype=np.uint8)
        for index, (source, (lo, hi)) in enumerate(channels):
            channel = stretch(sources[source], lo, hi)
            channel[mask] = 0
            rgb[:, :, index] = channel
        out[name] = rgb
    return out


def qa_flag(qa_value: int) -> int:
    """0 when bit 0 (fill) is clear and bit 6 (clear) or bit 7 (water) is set; else 1."""
    qa_value = int(qa_value)
    fill = (qa_value >> 0) & 1
    clear = (qa_value >> 6) & 1
    water = (qa_value >> 7) & 1
    if fill == 0 and (clear == 1 or water == 1):
        return 0
    return 1


def csv_text(rows: list[list[Any]], header: bool = True) -> str:
    """Comma-joined, unquoted values, "\\n" line ends."""
    lines = []
    if header:
        lines.append(",".join(CSV_HEADER))
    for row in rows:
        lines.append(",".join(str(value) for value in row))
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def _number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_plots(plot_file: str | Path) -> list[dict[str, Any]]:
    """Rows of the plot file: ``project_id``/``plot_id`` as strings, ``x``/``y`` numbers."""
    plots = []
    with open(plot_file, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            plots.append(
                {
                    "project_id": row["project_id"],
                    "plot_id": row["plot_id"],
                    "x": _number(row["x"]),
                    "y": _number(row["y"]),
                }
            )
    return plots


def yyyy_ddd(year: int, doy: int) -> str:
    return f"{year}_{doy:03d}"


def plot_observations(
    plot: dict[str, Any],
    items: list[dict],
    reader: Reader,
    *,
    region: str,
    chip: int,
    datetime_range: Any,
    asset_href: str,
    collection: str,
) -> list[tuple[list[Any], dict[str, np.ndarray]]]:
    """Every non-skipped observation of one plot: (spectral row, {composite: rgb})."""
    x, y = plot["x"], plot["y"]
    check_in_grid(x, y, region)

    tile_results = []
    for h, v in chip_tiles(x, y, region, chip):
        tile_results.append(
            search_tile(items, h, v, region=region, collection=collection, datetime_range=datetime_range)
        )

    observations = []
    for (year, doy), group in group_observations(tile_results):
        # 1. fill test at the plot pixel
        usable = False
        for item in group:
            if not is_fill_at(reader, item, x, y, asset_href):
                usable = True
        if not usable:
            continue

        # 2. read + mosaic, 3. rescale
        mosaic = read_mosaic(reader, group, x, y, chip, asset_href)
        rescaled = {}
        for band in OPTICAL_BANDS:
            rescaled[band] = rescale(mosaic[band])

        # 4.-7. mask, composites, stretch
        chips = composites(rescaled)

        # 8. spectral row from the centre pixel
        first = group[0]
        props = first["properties"]
        centre_row, centre_col = chip // 2, chip // 2
        row = [
            first["id"].split("_")[0],
            plot["project_id"],
            plot["plot_id"],
            props["landsat:grid_horizontal"] + props["landsat:grid_vertical"],
            year,
            doy,
        ]
        for band in OPTICAL_BANDS:
            row.append(int(rescaled[band][centre_row, centre_col]))
        row.append(qa_flag(int(mosaic[QA_BAND][centre_row, centre_col])))
        row.append(props["datetime"])
        observations.append((row, chips))
    return observations


# --------------------------------------------------------------------------------------
# Expected outputs
# --------------------------------------------------------------------------------------


def expected_outputs(
    catalog_path: str | Path,
    plot_file: str | Path,
    *,
    region: str = "CU",
    chip: int = 255,
    datetime_range: tuple[str | None, str | None] = ("1984-01-01", None),
    asset_href: str = "href",
    collection: str = "landsat-c2ard-sr",
    open_kwargs: dict | None = None,
    opener: Callable | None = None,
    empty_series: bool = True,
) -> dict[str, str | np.ndarray]:
    """{relative posix path under the project directory: expected content}.

    CSV content is the exact text; PNG content is a uint8 array (chip, chip, 3).

    ``open_kwargs`` are passed to ``rasterio.open``; two keys are special: ``"env"``
    (a ``rasterio.Env`` instance, or a dict of ``rasterio.Env`` keyword arguments, e.g.
    ``{"session": AWSSession(..., requester_pays=True), "AWS_S3_ENDPOINT": ...}``) under
    which all reads run, and ``"opener"`` (same as the ``opener`` argument: a callable
    ``location -> context manager yielding a rasterio dataset``).

    ``empty_series``: write a header-only per-plot series for a plot without any
    observation (the default), or no series file at all (False).
    """
    if chip < 1 or chip % 2 == 0:
        raise ValueError(f"chip must be a positive odd number, not {chip}")
    _region(region)

    kwargs = dict(open_kwargs or {})
    env = kwargs.pop("env", None)
    opener = kwargs.pop("opener", opener)
    if isinstance(env, dict):
        env = rasterio.Env(**env)
    reader = Reader(kwargs, opener)

    items = load_catalog(catalog_path)
    plots = read_plots(plot_file)

    seen = set()
    for plot in plots:
        key = (plot["project_id"], plot["plot_id"])
        if key in seen:
            raise ValueError(f"duplicate plot {key} in {plot_file}")
        seen.add(key)
        check_in_grid(plot["x"], plot["y"], region)

    outputs: dict[str, str | np.ndarray] = {}
    # project_id -> year -> list of rows (for the ingest files)
    by_project_year: dict[str, dict[int, list[list[Any]]]] = {}

    def run():
        for plot in plots:
            project_id, plot_id = plot["project_id"], plot["plot_id"]
            prj = f"prj_{project_id}"
            observations = plot_observations(
                plot,
                items,
                reader,
                region=region,
                chip=chip,
                datetime_range=datetime_range,
                asset_href=asset_href,
                collection=collection,
            )

            rows = []
            for row, chips in observations:
                year, doy = row[4], row[5]
                stamp = yyyy_ddd(year, doy)
                outputs[f"{prj}/{plot_id}_spectral_files_set_{stamp}.csv"] = csv_text([row])
                for name in ("tc", "b743", "b432"):
                    outputs[f"{prj}/{name}/plot_{plot_id}/plot_{plot_id}_{stamp}.png"] = chips[name]
                rows.append(row)
                by_project_year.setdefault(project_id, {}).setdefault(year, []).append(row)

            rows.sort(key=lambda r: (r[4], r[5]))
            if rows or empty_series:
                outputs[f"{prj}/series/plot_{plot_id}_series.csv"] = csv_text(rows)

    if env is not None:
        with env:
            run()
    else:
        run()

    for project_id, years in by_project_year.items():
        for year, rows in years.items():
            ordered = sorted(rows, key=lambda r: (r[2], r[5]))  # plot_id (string), doy
            ingest_rows = [[project_id, *row] for row in ordered]
            outputs[f"{year}_prj_{project_id}_region_spectrals.csv"] = csv_text(ingest_rows, header=False)

    return outputs


# --------------------------------------------------------------------------------------
# Comparison helpers
# --------------------------------------------------------------------------------------


def decode_png(data_or_path: bytes | str | Path, *, strict: bool = True) -> np.ndarray:
    """Decode a PNG to a uint8 (h, w, 3) array.

    ``strict``: refuse anything but an 8-bit RGB PNG (raise ValueError); otherwise convert.
    """
    from PIL import Image  # only this helper needs Pillow

    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        data = bytes(data_or_path)
    else:
        data = Path(data_or_path).read_bytes()
    if strict:
        # IHDR is always the first chunk: bytes 24 and 25 are bit depth and colour type.
        if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
            raise ValueError("not a PNG")
        bit_depth, colour_type = data[24], data[25]
        if bit_depth != 8 or colour_type != 2:
            raise ValueError(
                f"PNG bit depth {bit_depth}, colour type {colour_type}; expected 8-bit RGB (colour type 2)"
            )
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if strict:
            if image.format != "PNG":
                raise ValueError(f"not a PNG (format {image.format})")
            if image.mode != "RGB":
                raise ValueError(f"PNG mode {image.mode}, expected RGB (8 bits per channel)")
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return array.copy()


def _ignored(relative: str) -> bool:
    parts = relative.split("/")
    if parts[0] == "_state":
        return True
    if relative.endswith(".html"):
        return True
    return "report" in parts[:-1]


def _list_files(
    project_dir: str | Path, storage_options: dict | None
) -> tuple[dict[str, Callable[[], bytes]], str]:
    """{relative posix path: function returning the bytes} for a local dir or an fsspec URL."""
    text = str(project_dir)
    files: dict[str, Callable[[], bytes]] = {}
    if "://" in text and not text.startswith("file://"):
        import fsspec

        fs, root = fsspec.core.url_to_fs(text, **(storage_options or {}))
        root = root.rstrip("/")
        if fs.exists(root):
            for path in fs.find(root):
                relative = path[len(root) :].lstrip("/")
                if relative:
                    files[relative] = lambda p=path: fs.cat_file(p)
        return files, text
    root = Path(text[len("file://") :] if text.startswith("file://") else text)
    if root.is_dir():
        for dirpath, _dirnames, filenames in os.walk(root):
            for filename in filenames:
                full = Path(dirpath) / filename
                relative = full.relative_to(root).as_posix()
                files[relative] = lambda p=full: p.read_bytes()
    return files, str(root)


def _first_line_difference(actual: str, expected: str) -> str:
    actual_lines = actual.split("\n")
    expected_lines = expected.split("\n")
    for index in range(max(len(actual_lines), len(expected_lines))):
        a = actual_lines[index] if index < len(actual_lines) else "<end of file>"
        e = expected_lines[index] if index < len(expected_lines) else "<end of file>"
        if a != e:
            return f"line {index + 1}: expected {e!r}, got {a!r}"
    return "texts differ"


def compare_tree(
    project_dir: str | Path, expected: dict[str, str | np.ndarray], *, storage_options: dict | None = None
) -> list[str]:
    """Human-readable differences between a project directory and ``expected``.

    ``project_dir`` is a local path or an fsspec URL (e.g. ``s3://bucket/prefix`` with
    ``storage_options`` for s3fs).  Ignored: anything under a top-level ``_state/``,
    files ending ``.html`` and anything in a ``report/`` directory.
    """
    files, _root = _list_files(project_dir, storage_options)
    differences = []

    for relative in sorted(expected):
        if relative not in files:
            differences.append(f"missing: {relative}")
    for relative in sorted(files):
        if relative not in expected and not _ignored(relative):
            differences.append(f"unexpected: {relative}")

    for relative in sorted(expected):
        if relative not in files:
            continue
        want = expected[relative]
        data = files[relative]()
        if isinstance(want, str):
            try:
                got = data.decode("utf-8")
            except UnicodeDecodeError:
                differences.append(f"CSV {relative}: not UTF-8 text")
                continue
            if got != want:
                differences.append(f"CSV {relative}: {_first_line_difference(got, want)}")
        else:
            want = np.asarray(want)
            try:
                got_pixels = decode_png(data)
            except Exception as exc:
                differences.append(f"PNG {relative}: cannot decode as 8-bit RGB PNG: {exc}")
                continue
            if got_pixels.shape != want.shape:
                differences.append(f"PNG {relative}: shape {got_pixels.shape}, expected {want.shape}")
                continue
            differing = np.any(got_pixels != want, axis=2)
            count = int(differing.sum())
            if count:
                rows, cols = np.nonzero(differing)
                r, c = int(rows[0]), int(cols[0])
                max_abs = int(np.abs(got_pixels.astype(np.int16) - want.astype(np.int16)).max())
                differences.append(
                    f"PNG {relative}: {count} of {differing.size} pixels differ "
                    f"(max channel difference {max_abs}; first at row {r}, col {c}: "
                    f"expected {want[r, c].tolist()}, got {got_pixels[r, c].tolist()})"
                )
    return differences
