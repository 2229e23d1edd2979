"""From catalogue items to observations: one observation is every item of one
acquisition (year and day of year) over the plot's chip, in search order."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pipeline.datetimes import parse_item_datetime
from pipeline.errors import ItemError
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


def item_ref(item: dict[str, Any], asset_href: str) -> ItemRef:
    """Validate one item and keep what the recipe needs; :class:`ItemError` names the item
    and the missing or malformed field."""
    source = str(item.get("_source") or item.get("id") or "<item without id>")
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise ItemError("item has no id", source=source, field="id")
    source = f"item {item_id}" if "_source" not in item else f"{item['_source']} (item {item_id})"
    props = item.get("properties")
    if not isinstance(props, dict):
        raise ItemError("item has no properties", source=source, field="properties")
    dt_text = props.get("datetime")
    if not isinstance(dt_text, str):
        raise ItemError("missing datetime", source=source, field="properties.datetime")
    try:
        dt = parse_item_datetime(dt_text)
    except ValueError as e:
        raise ItemError(str(e), source=source, field="properties.datetime") from None
    grid = []
    for key in (GRID_H, GRID_V):
        value = props.get(key)
        if not isinstance(value, str) or not value.isdigit():
            raise ItemError(f"missing or malformed grid property {value!r}", source=source, field=f"properties.{key}")
        grid.append(value)
    assets = item.get("assets")
    if not isinstance(assets, dict):
        raise ItemError("item has no assets", source=source, field="assets")
    hrefs = []
    for band in ALL_BANDS:
        asset = assets.get(band)
        if not isinstance(asset, dict):
            raise ItemError(f"missing asset {band!r}", source=source, field=f"assets.{band}")
        if asset_href == "s3":
            href = ((asset.get("alternate") or {}).get("s3") or {}).get("href")
            where = f"assets.{band}.alternate.s3.href"
        else:
            href = asset.get("href")
            where = f"assets.{band}.href"
        if not isinstance(href, str) or not href:
            raise ItemError("missing href", source=source, field=where)
        hrefs.append(href)
    tt = dt.timetuple()
    transform, shape = _geometry(props)
    fill = props.get("landsat:fill")
    return ItemRef(
        item_id, dt_text, tt.tm_year, tt.tm_yday, grid[0] + grid[1], tuple(hrefs),
        transform, shape, float(fill) if isinstance(fill, (int, float)) else None,
    )  # fmt: skip


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
    # lack their part, so the observation fails (reported) rather than being written partial.
    unusable: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return obs_key(self.year, self.doy)

    @property
    def first(self) -> ItemRef:
        return self.items[0]


def group_observations(items_by_tile: list[list[ItemRef]], unusable_by_tile: list[list[tuple[int, int, str]]] | None = None) -> list[Observation]:
    """Group the items of the plot's tiles (given in search order) by year and day of year;
    observations sorted by date. ``unusable_by_tile`` holds (year, doy, error) of the tiles'
    items that were rejected; a date with only rejected items has no observation."""
    groups: dict[tuple[int, int], list[ItemRef]] = {}
    for tile_items in items_by_tile:
        for ref in tile_items:
            groups.setdefault((ref.year, ref.doy), []).append(ref)
    unusable: dict[tuple[int, int], list[str]] = {}
    for rejected in unusable_by_tile or []:
        for year, doy, error in rejected:
            unusable.setdefault((year, doy), []).append(error)
    return [Observation(y, d, tuple(refs), tuple(unusable.get((y, d), ()))) for (y, d), refs in sorted(groups.items())]


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
