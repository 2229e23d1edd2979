"""From catalogue items to observations: one observation is every item of one
acquisition (year and day of year) over the plot's chip, in search order.

Every item a tile's search returns is either usable (an :class:`ItemRef`) or unusable, with
the field and the reason (:class:`Rejected`): no parseable datetime, a required asset or
href missing, grid properties absent or contradicting the tile its id names. An unusable
item is never dropped silently: the run names it, records it and exits non-zero, and an
acquisition it belongs to is not written from the other items (its mosaic would lack that
item's part). Its acquisition date comes from its datetime or, when that is unusable, from
its id (Landsat ARD ids carry the acquisition date); when neither says, every acquisition
of the tile's plots could be the one it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from pipeline.datetimes import parse_item_datetime
from pipeline.errors import ItemError
from pipeline.failures import UnusableItem
from pipeline.timesync.layout import obs_key
from pipeline.timesync.recipe import ALL_BANDS

GRID_H = "landsat:grid_horizontal"
GRID_V = "landsat:grid_vertical"
GRID_REGION = "landsat:grid_region"


@dataclass(frozen=True)
class ItemRef:
    """What the recipe needs of one item: picklable, small."""

    id: str
    datetime: str  # as given by the catalogue, written to the CSV unchanged
    year: int
    doy: int
    hv: str
    hrefs: tuple[str, ...]  # in ALL_BANDS order
    # proj:transform (a, b, c, d, e, f) and proj:shape (rows, cols) when the item gives
    # them: a file that cannot hold the plot or its chip is then never opened.
    transform: tuple[float, ...] | None = None
    shape: tuple[int, int] | None = None
    fill_percent: float | None = None  # landsat:fill, for the dry run's estimate

    @property
    def sensor(self) -> str:
        return self.id.split("_", 1)[0]

    def href(self, band: str) -> str:
        return self.hrefs[ALL_BANDS.index(band)]


class UnusableItemError(ItemError):
    """An item the run cannot use. ``str()`` names its source, id and field; the parts are
    kept so the item can be recorded (:meth:`unusable`)."""

    def __init__(self, message: str, *, item_id: str, source: str, field: str) -> None:
        self.message = message
        self.item_id = item_id
        self.item_source = source
        where = f"{source} (item {item_id or '<no id>'})" if source else f"item {item_id or '<no id>'}"
        super().__init__(message, source=where, field=field)

    def unusable(self, collection: str) -> UnusableItem:
        return UnusableItem(
            collection, self.item_id, f"field {self.field!r}: {self.message}", self.item_source
        )


# A Landsat Collection 2 ARD id: sensor, region, tile hhhvvv, acquisition date, ...
_ARD_ID = re.compile(r"^L[A-Z]\d{2}_(CU|AK|HI)_(\d{3})(\d{3})_(\d{8})_")


def id_tile(item_id: str) -> tuple[str, int, int] | None:
    """(region, h, v) of the tile a Landsat ARD id names, or None for another kind of id."""
    m = _ARD_ID.match(item_id)
    return (m[1], int(m[2]), int(m[3])) if m else None


def id_date(item_id: str) -> tuple[int, int] | None:
    """(year, day of year) of the acquisition date a Landsat ARD id names, or None."""
    m = _ARD_ID.match(item_id)
    if not m:
        return None
    try:
        tt = date(int(m[4][:4]), int(m[4][4:6]), int(m[4][6:])).timetuple()
    except ValueError:
        return None
    return tt.tm_year, tt.tm_yday


def item_ref(item: dict[str, Any], asset_href: str) -> ItemRef:
    """Validate one item and keep what the recipe needs; :class:`UnusableItemError` (an
    :class:`ItemError`) names the item and the missing or malformed field."""
    raw_id = item.get("id")
    item_id = raw_id if isinstance(raw_id, str) else ""
    source = str(item.get("_source") or "")

    def unusable(message: str, field: str) -> UnusableItemError:
        return UnusableItemError(message, item_id=item_id, source=source, field=field)

    if not item_id:
        raise unusable("item has no id", "id")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise unusable("item has no properties", "properties")
    dt_text = props.get("datetime")
    if not isinstance(dt_text, str):
        raise unusable("missing datetime", "properties.datetime")
    try:
        dt = parse_item_datetime(dt_text)
    except ValueError as e:
        raise unusable(str(e), "properties.datetime") from None
    grid = []
    for key in (GRID_H, GRID_V):
        value = props.get(key)
        if not isinstance(value, str) or not value.isdigit():
            raise unusable(f"missing or malformed grid property {value!r}", f"properties.{key}")
        grid.append(value)
    region = props.get(GRID_REGION)
    if not isinstance(region, str) or not region:
        raise unusable(f"missing or malformed grid property {region!r}", f"properties.{GRID_REGION}")
    named = id_tile(item_id)
    if named is not None:
        checks: tuple[tuple[str, object, object], ...] = (
            (GRID_REGION, region, named[0]), (GRID_H, int(grid[0]), named[1]), (GRID_V, int(grid[1]), named[2]),
        )  # fmt: skip
        for key, value, expected in checks:
            if value != expected:
                raise unusable(
                    f"{props.get(key)!r} does not match the tile its id names ({named[0]} h{named[1]:03d} v{named[2]:03d})",
                    f"properties.{key}",
                )
    assets = item.get("assets")
    if not isinstance(assets, dict):
        raise unusable("item has no assets", "assets")
    hrefs = []
    for band in ALL_BANDS:
        asset = assets.get(band)
        if not isinstance(asset, dict):
            raise unusable(f"missing asset {band!r}", f"assets.{band}")
        if asset_href == "s3":
            href = ((asset.get("alternate") or {}).get("s3") or {}).get("href")
            where = f"assets.{band}.alternate.s3.href"
        else:
            href = asset.get("href")
            where = f"assets.{band}.href"
        if not isinstance(href, str) or not href:
            raise unusable("missing href", where)
        hrefs.append(href)
    tt = dt.timetuple()
    transform, shape = _geometry(props)
    fill = props.get("landsat:fill")
    return ItemRef(
        item_id, dt_text, tt.tm_year, tt.tm_yday, grid[0] + grid[1], tuple(hrefs),
        transform, shape, float(fill) if isinstance(fill, (int, float)) else None,
    )  # fmt: skip


@dataclass(frozen=True)
class Rejected:
    """An unusable item of a tile's search: the item and reason, the acquisition it belongs
    to and its tile as ``hhhvvv`` (``None``: unknown; any acquisition, any tile)."""

    item: UnusableItem
    date: tuple[int, int] | None
    tile: str | None = None

    def entry(self) -> tuple[int | None, int | None, str, str | None]:
        """(year, doy, description, tile): what :func:`group_observations` takes."""
        year, doy = self.date if self.date else (None, None)
        return year, doy, self.item.describe(), self.tile


def classify_items(
    items: list[dict[str, Any]], asset_href: str, *, collection: str, tile: tuple[str, int, int]
) -> tuple[list[ItemRef], list[Rejected]]:
    """Split one tile's search (``tile`` = (region, h, v)) into usable items and unusable
    ones. An item whose grid properties are missing is returned by a search that could not
    decide; it is this tile's when its id names this tile (or names none), and another
    tile's search reports it otherwise."""
    refs: list[ItemRef] = []
    rejected: list[Rejected] = []
    for item in items:
        try:
            refs.append(item_ref(item, asset_href))
        except UnusableItemError as e:
            owner = _own_tile(item)
            if owner is not None and owner != tile:
                continue
            hv = tile_key(owner[1], owner[2]) if owner else None
            rejected.append(
                Rejected(e.unusable(str(item.get("collection") or collection)), acquisition_date(item), hv)
            )
    return refs, rejected


def tile_key(h: int, v: int) -> str:
    """``hhhvvv``, as Landsat ARD ids write a tile."""
    return f"{h:03d}{v:03d}"


def _own_tile(item: dict[str, Any]) -> tuple[str, int, int] | None:
    """The tile an item says it belongs to: its grid properties when all three are there,
    else the tile its id names, else None."""
    props = item.get("properties")
    props = props if isinstance(props, dict) else {}
    h, v, region = props.get(GRID_H), props.get(GRID_V), props.get(GRID_REGION)
    if (
        isinstance(h, str)
        and h.isdigit()
        and isinstance(v, str)
        and v.isdigit()
        and isinstance(region, str)
        and region
    ):
        return region, int(h), int(v)
    item_id = item.get("id")
    return id_tile(item_id) if isinstance(item_id, str) else None


def acquisition_date(item: dict[str, Any]) -> tuple[int, int] | None:
    """(year, day of year) of an item's acquisition: from its datetime, else from its id."""
    found = item_date(item)
    if found is None and isinstance(item.get("id"), str):
        found = id_date(item["id"])
    return found


def _geometry(props: dict[str, Any]) -> tuple[tuple[float, ...] | None, tuple[int, int] | None]:
    t, shape = props.get("proj:transform"), props.get("proj:shape")
    if (
        isinstance(t, list) and len(t) >= 6 and all(isinstance(v, (int, float)) for v in t[:6])
        and isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)
        and t[1] == 0 and t[3] == 0 and t[0] > 0 and t[4] < 0
    ):  # fmt: skip
        return tuple(float(v) for v in t[:6]), (shape[0], shape[1])
    return None, None  # unknown or rotated: open the file and ask it


@dataclass(frozen=True)
class Observation:
    year: int
    doy: int
    items: tuple[ItemRef, ...]  # search order: tiles by ascending h, then v; then datetime
    # Why items of the same acquisition over the chip could not be used: the mosaic would
    # lack their part, so the observation fails (reported) rather than being written partial
    # (unless the plot pixel is fill and none of them can hold it: then it is fill).
    unusable: tuple[str, ...] = ()
    unusable_tiles: tuple[str | None, ...] = ()  # the tile (hhhvvv) of each, None when unknown

    @property
    def key(self) -> str:
        return obs_key(self.year, self.doy)

    @property
    def first(self) -> ItemRef:
        return self.items[0]


UnusableEntry = tuple[int | None, int | None, str] | tuple[int | None, int | None, str, str | None]


def group_observations(
    items_by_tile: list[list[ItemRef]], unusable_by_tile: list[list[UnusableEntry]] | None = None
) -> list[Observation]:
    """Group the items of the plot's tiles (given in search order) by year and day of year;
    observations sorted by date. ``unusable_by_tile`` holds (year, doy, description[, tile])
    of the tiles' unusable items (year and doy None when the item's acquisition is unknown:
    it may belong to any of them); a date with only unusable items has no observation."""
    groups: dict[tuple[int, int], list[ItemRef]] = {}
    for tile_items in items_by_tile:
        for ref in tile_items:
            groups.setdefault((ref.year, ref.doy), []).append(ref)
    unusable: dict[tuple[int, int] | None, list[tuple[str, str | None]]] = {}
    for rejected in unusable_by_tile or []:
        for entry in rejected:
            year, doy, error = entry[0], entry[1], entry[2]
            tile = entry[3] if len(entry) > 3 else None
            unusable.setdefault((year, doy) if year is not None and doy is not None else None, []).append(
                (error, tile)
            )
    undated = unusable.get(None, [])
    observations = []
    for (y, d), refs in sorted(groups.items()):
        blockers = unusable.get((y, d), []) + undated
        observations.append(
            Observation(y, d, tuple(refs), tuple(e for e, _ in blockers), tuple(t for _, t in blockers))
        )
    return observations


def item_date(item: dict[str, Any]) -> tuple[int, int] | None:
    """(year, day of year) of a raw item, or None when its datetime is missing or bad."""
    props = item.get("properties")
    text = props.get("datetime") if isinstance(props, dict) else None
    if not isinstance(text, str):
        return None
    try:
        tt = parse_item_datetime(text).timetuple()
    except ValueError:
        return None
    return tt.tm_year, tt.tm_yday


def fingerprint(*parts: object) -> str:
    """A short stable hash of the inputs that decide a result (names state files)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
