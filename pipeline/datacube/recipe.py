"""The Clay datacube recipe (issue 14) as pure functions: no I/O, no Luigi, no raster reads, so
every rule can be checked on hand-made items and arrays.

Per MGRS tile (a row of the sample file, identified by its row index):

1. **Periods.** The years 2017..2023 in the order ``random.seed(index); random.shuffle(years)``
   gives (:func:`year_order`), or explicit ``--dateranges`` (:func:`parse_dateranges`), tried in
   order until ``dates_per_tile`` dates have matched.
2. **Sentinel-2** (:func:`s2_candidates`): items of that very tile (``s2:mgrs_tile``; never a
   neighbour's scene that happens to overlap), ``eo:cloud_cover <= 50`` and
   ``s2:nodata_pixel_percentage <= 20`` (both inclusive), least cloudy first (ties: earlier
   datetime, then id); the first 20 are the attempts. Items are identified by id, never by
   datetime (two tiles of one datatake share a datetime).
3. **Sentinel-1** (:func:`s1_match`): the items of the S2 footprint within S2 date +- 3 calendar
   days whose orbit state is that of the largest overlap, nearest in time first, added until
   their *union* covers the footprint. No item: the attempt fails, the next one is tried.
4. **DEM** (:func:`dem_items`): every item meeting the footprint.
5. **Grid and chips** (:func:`s2_grid`, :func:`chip_windows`, :func:`chip_transform`): the S2
   item's UTM grid at 10 m over its bounds, cut into ``chip_size`` squares row-major, numbered
   from 1 in the full grid; a chip's transform is the grid's, moved by whole pixels.
6. **Chip filter** (:func:`drop_reason`).

Geometry is planar in the items' GeoJSON coordinates (WGS84 degrees), as the old script's
GeoPandas frames were: a footprint is at most ~1 degree tall, so ranking overlaps by square
degrees picks the same item as ranking by square metres except for near-ties of a few parts in
a thousand, and coverage (the union containing the footprint) does not depend on the measure.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.catalog import Item
from pipeline.datacube.layout import chip_name
from pipeline.datetimes import Interval, parse_item_datetime
from pipeline.errors import InputError, ItemError

__all__ = [
    "chip_name",
    "chip_transform",
    "chip_windows",
    "dem_items",
    "drop_reason",
    "item_date",
    "item_datetime",
    "parse_dateranges",
    "parse_subset",
    "s1_match",
    "s1_paint_order",
    "s1_search_interval",
    "s1_window",
    "s2_candidates",
    "s2_grid",
    "s2_rejection",
    "search_periods",
    "snap_subset",
    "stack_order",
    "year_order",
]

S2_COLLECTION: Final = "sentinel-2-l2a"
S1_COLLECTION: Final = "sentinel-1-rtc"
DEM_COLLECTION: Final = "cop-dem-glo-30"

YEARS: Final = range(2017, 2024)
DEFAULT_DATES_PER_TILE: Final = 3
DEFAULT_CHIP_SIZE: Final = 512
DEFAULT_VERSION: Final = "02"

MAX_CLOUD_COVER: Final = 50.0  # eo:cloud_cover, percent, inclusive
MAX_NODATA_PERCENTAGE: Final = 20.0  # s2:nodata_pixel_percentage, percent, inclusive
S2_ATTEMPTS: Final = 20  # the i-th least cloudy S2 item is attempt i
S1_WINDOW_DAYS: Final = 3  # S1 acquisitions on calendar days S2 date - 3 .. S2 date + 3 (UTC)
# The S1 union "covers" the footprint when what it leaves uncovered is at most this fraction of
# the footprint's area: exact coverage tests fail on the last-digit noise of overlay operations
# (a union of two scenes meeting along an edge leaves slivers of ~1e-16 deg^2), while a real gap
# of one 10 m pixel in a 110 km tile is ~1e-8 of its area, well above the tolerance.
COVERAGE_TOLERANCE: Final = 1e-9

S2_RESOLUTION: Final = 10.0  # metres: the output grid
S2_BANDS: Final = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
SCL_ASSET: Final = "SCL"
S2_READ_ASSETS: Final = (*S2_BANDS, SCL_ASSET)
S1_BANDS: Final = ("vh", "vv")  # asset keys of sentinel-1-rtc, also the output band names
DEM_ASSET: Final = "data"  # asset key of cop-dem-glo-30
DEM_BAND: Final = "dem"
OUTPUT_BANDS: Final = (*S2_BANDS, *S1_BANDS, DEM_BAND)
S2_FILL: Final = 0  # uint16 fill of the S2 bands (and SCL 0 = no data)
S1_FILL: Final = math.nan  # float32
DEM_FILL: Final = math.nan  # float32
# The 10 m assets whose grid is the output grid, in the order they are consulted.
GRID_ASSETS: Final = ("B02", "B03", "B04", "B08")

# SCL classes that make a pixel bad: no data, saturated/defective, cloud shadow, cloud medium and
# high probability, thin cirrus.
SCL_BAD_CLASSES: Final = (0, 1, 3, 8, 9, 10)
BAD_SCL_PERCENT: Final = 30  # a chip with >= 30 % bad pixels is dropped

DROP_B02_ZERO: Final = "B02 has 0"
DROP_SCL: Final = f"cloud/shadow/nodata SCL >= {BAD_SCL_PERCENT}%"

Period = tuple[date, date]  # first and last calendar day, both inclusive
Transform = tuple[float, float, float, float, float, float]  # rasterio Affine order (a, b, c, d, e, f)


# --- periods -------------------------------------------------------------------------------------


def year_order(index: int, years: Iterable[int] = YEARS) -> list[int]:
    """The years in the order ``random.seed(index); random.shuffle(years)`` leaves them (the old
    script's order for the tile in row ``index``), from a private ``random.Random(index)``: the
    same Mersenne Twister seeding and the same shuffle, without touching the global generator."""
    order = list(years)
    random.Random(index).shuffle(order)
    return order


def year_period(year: int) -> Period:
    return (date(year, 1, 1), date(year, 12, 31))


def parse_dateranges(text: str) -> list[Period]:
    """``2020-01-01/2020-04-01,2021-06-01/2021-06-30`` -> ``[(first day, last day), ...]`` in the
    given order, both ends inclusive; an :class:`InputError` naming ``dateranges`` otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise InputError(
            f"{text!r}: expected START/END[,START/END...] with dates YYYY-MM-DD", field="dateranges"
        )
    periods: list[Period] = []
    for part in parts:
        ends = part.split("/")
        if len(ends) != 2:
            raise InputError(f"{part!r} is not START/END (YYYY-MM-DD/YYYY-MM-DD)", field="dateranges")
        start, end = (_calendar_date(e.strip(), part) for e in ends)
        if start > end:
            raise InputError(f"{part!r}: start after end", field="dateranges")
        periods.append((start, end))
    return periods


def _calendar_date(text: str, part: str) -> date:
    if len(text) != 10:
        raise InputError(f"{part!r}: {text!r} is not a date YYYY-MM-DD", field="dateranges")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{part!r}: {text!r} is not a date YYYY-MM-DD", field="dateranges") from None


def search_periods(
    index: int, dateranges: Sequence[Period] | None = None, years: Iterable[int] = YEARS
) -> list[Period]:
    """The periods a tile tries, in order: the explicit date ranges when given, else its years
    in :func:`year_order`."""
    if dateranges:
        return list(dateranges)
    return [year_period(y) for y in year_order(index, years)]


def period_interval(period: Period) -> Interval:
    """The closed datetime interval of a period, from 00:00:00 of its first day to the last
    microsecond of its last day (UTC)."""
    first, last = period
    return Interval(_day_start(first), _day_start(last + timedelta(days=1)) - timedelta(microseconds=1))


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


# --- items ---------------------------------------------------------------------------------------


def item_datetime(item: Item) -> datetime:
    """The item's ``datetime`` (``start_datetime`` when it is null) as an aware UTC datetime;
    ``T`` or a space between date and time (Planetary Computer writes S1 RTC times both ways)."""
    props = item.get("properties") or {}
    name = "datetime" if props.get("datetime") is not None else "start_datetime"
    try:
        return parse_item_datetime(props[name])
    except (KeyError, ValueError) as e:
        raise ItemError(
            f"no usable datetime ({e})", source=f"item {item.get('id')}", field=f"properties.{name}"
        ) from None


def item_date(item: Item) -> date:
    """The item's UTC calendar date: the date of its chips' names."""
    return item_datetime(item).date()


def footprint(item: Item) -> BaseGeometry:
    """The item's GeoJSON geometry (made valid when it is not, so overlays cannot fail)."""
    geometry = item.get("geometry")
    try:
        geom = shape(geometry) if geometry else None
    except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.GEOSException) as e:
        raise ItemError(
            f"unreadable geometry ({e})", source=f"item {item.get('id')}", field="geometry"
        ) from None
    if geom is None or geom.is_empty:
        raise ItemError("no geometry", source=f"item {item.get('id')}", field="geometry")
    return geom if geom.is_valid else shapely.make_valid(geom)


def unusable_reason(item: Item) -> str | None:
    """Why an S1 or DEM item cannot be placed in time or space (bad datetime or geometry), or
    None. :func:`s1_match` and :func:`dem_items` leave such items out; the tasks record them."""
    try:
        item_datetime(item)
        footprint(item)
    except ItemError as e:
        return str(e)
    return None


def _number(props: dict[str, Any], name: str) -> float | None:
    value = props.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


# --- Sentinel-2 ----------------------------------------------------------------------------------


def s2_rejection(
    item: Item, mgrs: str, max_cloud: float = MAX_CLOUD_COVER, max_nodata: float = MAX_NODATA_PERCENTAGE
) -> str | None:
    """Why an S2 item is not a candidate for tile ``mgrs`` (None when it is): another tile's
    scene, too cloudy, too much no data, or a property or datetime missing. For the state file."""
    props = item.get("properties") or {}
    tile = props.get("s2:mgrs_tile")
    if tile != mgrs:
        return f"tile {tile!r} is not {mgrs!r}"
    cloud = _number(props, "eo:cloud_cover")
    if cloud is None:
        return "no numeric eo:cloud_cover"
    if cloud > max_cloud:
        return f"eo:cloud_cover {cloud:g} > {max_cloud:g}"
    nodata = _number(props, "s2:nodata_pixel_percentage")
    if nodata is None:
        return "no numeric s2:nodata_pixel_percentage"
    if nodata > max_nodata:
        return f"s2:nodata_pixel_percentage {nodata:g} > {max_nodata:g}"
    try:
        item_datetime(item)
    except ItemError as e:
        return str(e)
    return None


def s2_candidates(
    items: Sequence[Item],
    mgrs: str,
    max_cloud: float = MAX_CLOUD_COVER,
    max_nodata: float = MAX_NODATA_PERCENTAGE,
    attempts: int = S2_ATTEMPTS,
) -> list[Item]:
    """The period's attempts for tile ``mgrs``: items passing :func:`s2_rejection`, one per id,
    ordered by ``eo:cloud_cover``, then datetime (compared as instants, not strings), then id;
    the first ``attempts`` of them."""
    unique = {item["id"]: item for item in reversed(items)}  # first occurrence of an id wins
    kept = [item for item in unique.values() if s2_rejection(item, mgrs, max_cloud, max_nodata) is None]
    kept.sort(key=lambda it: (float(it["properties"]["eo:cloud_cover"]), item_datetime(it), it["id"]))
    return kept[:attempts]


# --- Sentinel-1 ----------------------------------------------------------------------------------


def s1_window(s2_item: Item) -> Period:
    """The calendar days (UTC, inclusive) an S1 acquisition may fall on: S2 date -+ 3 days."""
    day = item_date(s2_item)
    return (day - timedelta(days=S1_WINDOW_DAYS), day + timedelta(days=S1_WINDOW_DAYS))


def s1_search_interval(s2_item: Item) -> Interval:
    """The datetime interval to search S1 with: the whole of every day of :func:`s1_window`."""
    return period_interval(s1_window(s2_item))


class _S1Candidate(NamedTuple):
    item: Item
    distance: timedelta  # |S1 datetime - S2 datetime|
    overlap: float  # area of the intersection with the S2 footprint
    geometry: BaseGeometry  # the intersection with the S2 footprint


def _s1_candidates(s2_item: Item, s1_items: Sequence[Item]) -> tuple[BaseGeometry, list[_S1Candidate]]:
    s2_footprint = footprint(s2_item)
    s2_time = item_datetime(s2_item)
    first, last = s1_window(s2_item)
    seen: set[str] = set()
    found: list[_S1Candidate] = []
    for item in s1_items:
        if item["id"] in seen or unusable_reason(item) is not None:
            continue
        seen.add(item["id"])
        when = item_datetime(item)
        if not first <= when.date() <= last:
            continue
        part = shapely.intersection(footprint(item), s2_footprint)
        if part.area > 0:  # an item only touching the footprint has no pixel in it
            found.append(_S1Candidate(item, abs(when - s2_time), part.area, part))
    return s2_footprint, found


def _orbit_state(item: Item) -> Any:
    return (item.get("properties") or {}).get("sat:orbit_state")


def s1_match(s2_item: Item, s1_items: Sequence[Item]) -> list[Item] | None:
    """The S1 items stacked with ``s2_item``, in the order they were chosen; None when none
    qualifies (the attempt fails).

    Qualifying: a positive-area overlap with the S2 footprint and a UTC date in
    :func:`s1_window`. The orbit state is that of the largest overlap (ties: nearer in time,
    then id). Items of that state, nearest in time first (ties: larger overlap, then id), are
    added until their union leaves at most :data:`COVERAGE_TOLERANCE` of the footprint's area
    uncovered, or none are left (then the footprint is only partly covered: chips with NaN in
    ``vh``/``vv`` are dropped by the filter).
    """
    s2_footprint, candidates = _s1_candidates(s2_item, s1_items)
    if not candidates:
        return None
    leader = min(candidates, key=lambda c: (-c.overlap, c.distance, c.item["id"]))
    orbit = _orbit_state(leader.item)
    same_orbit = sorted(
        (c for c in candidates if _orbit_state(c.item) == orbit),
        key=lambda c: (c.distance, -c.overlap, c.item["id"]),
    )
    limit = COVERAGE_TOLERANCE * s2_footprint.area
    chosen: list[Item] = []
    covered: BaseGeometry | None = None
    for candidate in same_orbit:
        chosen.append(candidate.item)
        covered = candidate.geometry if covered is None else shapely.union(covered, candidate.geometry)
        if shapely.difference(s2_footprint, covered).area <= limit:
            break
    return chosen


def uncovered_fraction(s2_item: Item, items: Sequence[Item]) -> float:
    """The fraction of the S2 footprint's area outside the union of ``items``' footprints (for
    the state file: 0.0 when a match covers the tile)."""
    s2_footprint = footprint(s2_item)
    if not items:
        return 1.0
    union = shapely.union_all([footprint(it) for it in items])
    return float(shapely.difference(s2_footprint, union).area / s2_footprint.area)


def s1_paint_order(items: Sequence[Item]) -> list[Item]:
    """The order to paint S1 items onto the grid so that, where they overlap, the later
    acquisition wins: earliest first (ties by id), each overwriting what it covers."""
    return sorted(items, key=lambda it: (item_datetime(it), it["id"]))


# --- DEM -----------------------------------------------------------------------------------------


def dem_items(s2_item: Item, items: Sequence[Item]) -> list[Item]:
    """Every DEM item whose footprint meets the S2 footprint (touching included: an extra tile
    costs one read and paints nothing outside its data), one per id, sorted by id."""
    s2_footprint = footprint(s2_item)
    unique = {it["id"]: it for it in items if unusable_reason(it) is None}
    return [unique[i] for i in sorted(unique) if shapely.intersects(footprint(unique[i]), s2_footprint)]


# --- the S2 grid ---------------------------------------------------------------------------------


class S2Grid(NamedTuple):
    """The output grid: the S2 item's UTM CRS, 10 m pixels, the item's bounds."""

    epsg: int
    transform: Transform
    width: int
    height: int


def _epsg(item: Item) -> int:
    where = f"item {item.get('id')}"
    props = item.get("properties") or {}
    epsg = props.get("proj:epsg")
    if isinstance(epsg, int) and not isinstance(epsg, bool) and epsg > 0:
        return epsg
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:") and code[5:].isdigit():
        return int(code[5:])
    if epsg is None and code is None:
        raise ItemError("no proj:epsg or proj:code", source=where, field="properties.proj:epsg")
    raise ItemError(
        f"{epsg if epsg is not None else code!r} is not an EPSG code",
        source=where,
        field="properties.proj:epsg",
    )


def _bounds_of(doc: dict[str, Any], where: str, field: str) -> tuple[float, float, float, float] | None:
    """(xmin, ymin, xmax, ymax) from ``proj:transform`` + ``proj:shape`` (exact) or ``proj:bbox``."""
    transform, shape_, bbox = doc.get("proj:transform"), doc.get("proj:shape"), doc.get("proj:bbox")
    if transform is not None and shape_ is not None:
        ok = (
            isinstance(transform, list)
            and len(transform) in (6, 9)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in transform)
            and transform[1] == 0
            and transform[3] == 0
            and transform[0] > 0
            and transform[4] < 0
            and isinstance(shape_, list)
            and len(shape_) == 2
            and all(isinstance(v, int) and v > 0 for v in shape_)
        )
        if not ok:
            raise ItemError(
                f"{transform!r} / {shape_!r} is not a north-up grid",
                source=where,
                field=f"{field}.proj:transform",
            )
        a, _, c, _, e, f = (float(v) for v in transform[:6])
        rows, cols = shape_
        return (c, f + e * rows, c + a * cols, f)
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise ItemError(
                f"{bbox!r} is not [xmin, ymin, xmax, ymax]", source=where, field=f"{field}.proj:bbox"
            )
        x0, y0, x1, y1 = (float(v) for v in bbox)
        return (x0, y0, x1, y1)
    return None


def _grid_bounds(item: Item) -> tuple[float, float, float, float]:
    """The item's bounds in its CRS: from a 10 m asset first (its grid is the output grid),
    then the item's own properties, then any asset (S2 bands of all resolutions share bounds)."""
    where = f"item {item.get('id')}"
    assets = item.get("assets") or {}
    sources: list[tuple[str, dict[str, Any]]] = [
        (f"assets.{k}", assets[k]) for k in GRID_ASSETS if k in assets
    ]
    sources.append(("properties", item.get("properties") or {}))
    sources += [(f"assets.{k}", a) for k, a in assets.items() if k not in GRID_ASSETS and isinstance(a, dict)]
    for field, doc in sources:
        bounds = _bounds_of(doc, where, field)
        if bounds is not None:
            return bounds
    raise ItemError("no proj:bbox or proj:transform + proj:shape", source=where, field="assets.B02.proj:bbox")


def s2_grid(item: Item) -> S2Grid:
    """The 10 m grid of an S2 item: ``(epsg, transform, width, height)``, the transform in
    rasterio ``Affine`` order; an :class:`ItemError` when the bounds are not whole 10 m pixels."""
    epsg = _epsg(item)
    xmin, ymin, xmax, ymax = _grid_bounds(item)
    cols, rows = (xmax - xmin) / S2_RESOLUTION, (ymax - ymin) / S2_RESOLUTION
    width, height = round(cols), round(rows)
    if width <= 0 or height <= 0 or abs(cols - width) > 1e-6 or abs(rows - height) > 1e-6:
        raise ItemError(
            f"bounds {(xmin, ymin, xmax, ymax)} are not whole {S2_RESOLUTION:g} m pixels",
            source=f"item {item.get('id')}",
            field="assets.B02.proj:bbox",
        )
    return S2Grid(epsg, (S2_RESOLUTION, 0.0, xmin, 0.0, -S2_RESOLUTION, ymax), width, height)


# --- chips ---------------------------------------------------------------------------------------


def chips_across(width: int, height: int, chip_size: int) -> tuple[int, int]:
    """(columns, rows) of whole chips in the grid; the remainder at the right and bottom is
    dropped."""
    if chip_size <= 0:
        raise ValueError(f"chip_size must be positive, got {chip_size}")
    return width // chip_size, height // chip_size


def chip_windows(width: int, height: int, chip_size: int) -> list[tuple[int, int, int]]:
    """``(number, col_off, row_off)`` of every whole chip, row-major, numbered from 1."""
    cols, rows = chips_across(width, height, chip_size)
    return [(r * cols + c + 1, c * chip_size, r * chip_size) for r in range(rows) for c in range(cols)]


def chip_offset(number: int, width: int, height: int, chip_size: int) -> tuple[int, int]:
    """``(col_off, row_off)`` of chip ``number`` (the inverse of the numbering)."""
    cols, rows = chips_across(width, height, chip_size)
    if not 1 <= number <= cols * rows:
        raise ValueError(f"chip {number} is not in a grid of {cols * rows} chips")
    r, c = divmod(number - 1, cols)
    return c * chip_size, r * chip_size


def parse_subset(text: str) -> tuple[int, int, int, int]:
    """``x0,y0,x1,y1`` (pixels of the S2 grid, end-exclusive) -> integers; an
    :class:`InputError` naming ``subset`` otherwise."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"{text!r} is not x0,y0,x1,y1 (integer pixels)", field="subset") from None
    if min(x0, y0) < 0 or x1 <= x0 or y1 <= y0:
        raise InputError(f"{text!r}: need 0 <= x0 < x1 and 0 <= y0 < y1", field="subset")
    return x0, y0, x1, y1


def snap_subset(x0: int, y0: int, x1: int, y1: int, chip_size: int, width: int, height: int) -> list[int]:
    """The numbers (in the full grid) of the chips meeting the pixel window ``[x0, x1) x [y0, y1)``:
    the window snapped outward to whole chips, clipped to the grid's whole chips (empty when it
    lies in the dropped remainder or outside)."""
    if x1 <= x0 or y1 <= y0 or min(x0, y0) < 0:
        raise ValueError(f"empty or negative window {(x0, y0, x1, y1)}")
    cols, rows = chips_across(width, height, chip_size)
    c0, c1 = x0 // chip_size, min(-(-x1 // chip_size), cols)  # ceil(x1 / chip_size), clipped
    r0, r1 = y0 // chip_size, min(-(-y1 // chip_size), rows)
    return [r * cols + c + 1 for r in range(r0, r1) for c in range(c0, c1)]


def chip_transform(grid_transform: Sequence[float], col_off: int, row_off: int) -> Transform:
    """The transform of the chip whose top-left pixel is grid pixel ``(col_off, row_off)``: the
    grid's transform moved by whole pixels, so chip pixel (0, 0) is that grid pixel exactly
    (corner-registered, as the grid; no half-pixel shift)."""
    a, b, c, d, e, f = (float(v) for v in grid_transform[:6])
    return (a, b, c + a * col_off + b * row_off, d, e, f + d * col_off + e * row_off)


def drop_reason(
    b02: npt.NDArray[np.uint16],
    vh: npt.NDArray[np.float32],
    vv: npt.NDArray[np.float32],
    dem: npt.NDArray[np.float32],
    scl: npt.NDArray[np.uint8],
) -> str | None:
    """Why a chip is dropped, or None when it is kept. Checked in this order, the first that
    applies is the reason: ``B02 has 0`` (any pixel), ``NaN in vh``, ``NaN in vv``, ``NaN in
    dem`` (any pixel), ``cloud/shadow/nodata SCL >= 30%`` (at least 30 % of the pixels in
    :data:`SCL_BAD_CLASSES`, compared in integers so 30 % exactly is dropped)."""
    arrays: dict[str, npt.NDArray[Any]] = {"B02": b02, "vh": vh, "vv": vv, "dem": dem, "SCL": scl}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or scl.size == 0:
        raise ValueError(
            f"chip arrays must share one non-empty shape, got { {k: a.shape for k, a in arrays.items()} }"
        )
    if bool((b02 == 0).any()):
        return DROP_B02_ZERO
    for name, band in (("vh", vh), ("vv", vv), ("dem", dem)):
        if bool(np.isnan(band).any()):
            return f"NaN in {name}"
    bad = int(np.isin(scl, SCL_BAD_CLASSES).sum())
    if bad * 100 >= BAD_SCL_PERCENT * scl.size:
        return DROP_SCL
    return None


def stack_order() -> tuple[str, ...]:
    """The 13 output bands, in band order (also the band descriptions)."""
    return OUTPUT_BANDS
