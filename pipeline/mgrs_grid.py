"""The MGRS / Sentinel-2 tiling beside the ARD grids (``pipeline.grid``): tile ids, pixel
grids, points -> tiles.

A tile's pixel grid is taken from its items (``proj:epsg``, ``proj:transform``,
``proj:shape``), never derived: real corners are snapped (10TFT starts at x 600000, not
599980). The nominal extent of a 100 km square (from the ``mgrs`` package) serves only to
find which tiles to search for a point or a bounding box.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pipeline.errors import InputError, ItemError

TILE_ID = re.compile(r"^(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z]{2})$")
SQUARE_SIZE = 100_000  # metres
HLS_TILE_SIZE = 109_800  # a Sentinel-2 / HLS tile overlaps its east and south neighbours by 9.8 km


@dataclass(frozen=True)
class TileGrid:
    """A north-up pixel grid: CRS, transform ``(a, b, c, d, e, f)`` and size."""

    epsg: int
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def res(self) -> float:
        return self.transform[0]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        return (c, f + e * self.height, c + a * self.width, f)

    def fractional_pixel(self, x: float, y: float) -> tuple[float, float]:
        """(col, row) of a point in the grid's CRS, as floats (pixel corners are integers)."""
        a, _, c, _, e, f = self.transform
        return ((x - c) / a, (y - f) / e)

    def to_json(self) -> dict[str, Any]:
        return {"epsg": self.epsg, "transform": list(self.transform), "shape": [self.height, self.width]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TileGrid:
        t = doc["transform"]
        return cls(
            int(doc["epsg"]), (t[0], t[1], t[2], t[3], t[4], t[5]), int(doc["shape"][1]), int(doc["shape"][0])
        )


def check_tile_id(text: str, *, source: str = "", line: int | None = None, field: str = "tile") -> str:
    """An MGRS tile id such as ``10TET`` (zone without a leading zero, as HLS writes it)."""
    tile = text.strip().upper().lstrip("0")
    m = TILE_ID.match(tile)
    if not m or not 1 <= int(m.group(1)) <= 60:
        raise InputError(
            f"{text!r} is not an MGRS tile id such as 10TET", source=source, line=line, field=field
        )
    return tile


def grid_of_item(item: dict[str, Any]) -> TileGrid:
    """The pixel grid an item states; an :class:`ItemError` naming the item and field when
    its projection properties are missing or malformed."""
    props = item.get("properties") or {}
    where = f"item {item.get('id')}"
    try:
        epsg = props["proj:epsg"]
        transform = props["proj:transform"]
        shape = props["proj:shape"]
    except KeyError as e:
        raise ItemError(
            "missing projection property", source=where, field=f"properties.{e.args[0]}"
        ) from None
    if not isinstance(epsg, int) or isinstance(epsg, bool):
        raise ItemError(f"{epsg!r} is not an EPSG code", source=where, field="properties.proj:epsg")
    if (
        not isinstance(transform, list)
        or len(transform) not in (6, 9)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in transform)
    ):
        raise ItemError(
            f"{transform!r} is not an affine transform", source=where, field="properties.proj:transform"
        )
    if transform[1] != 0 or transform[3] != 0 or transform[0] <= 0 or transform[4] >= 0:
        raise ItemError(
            f"{transform!r} is not a north-up grid", source=where, field="properties.proj:transform"
        )
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise ItemError(f"{shape!r} is not [rows, cols]", source=where, field="properties.proj:shape")
    t = [float(v) for v in transform[:6]]
    return TileGrid(epsg, (t[0], t[1], t[2], t[3], t[4], t[5]), shape[1], shape[0])


@lru_cache(maxsize=1)
def _mgrs() -> Any:
    import mgrs

    return mgrs.MGRS()


def tile_of(lat: float, lon: float) -> str:
    """The MGRS 100 km square that contains a WGS84 point (``10TET``)."""
    return str(_mgrs().toMGRS(lat, lon, MGRSPrecision=0)).lstrip("0")


def utm_epsg(tile: str) -> int:
    m = TILE_ID.match(tile)
    if m is None:
        raise InputError(f"{tile!r} is not an MGRS tile id", field="tile")
    return (32600 if m.group(2) >= "N" else 32700) + int(m.group(1))


def nominal_grid(tile: str, res: float = 30.0) -> TileGrid:
    """The tile's nominal HLS grid: the 100 km square's south-west corner, 109.8 km east
    and south-overlapping extent (real grids may be snapped by a pixel or so)."""
    _zone, _hemisphere, easting, northing = _mgrs().MGRSToUTM(f"{tile}0000000000")
    x0 = math.floor(easting) - 20  # 10TET: 499980
    top = math.floor(northing) + SQUARE_SIZE + 40  # 10TET: 5300040
    n = round(HLS_TILE_SIZE / res)
    return TileGrid(utm_epsg(tile), (res, 0.0, float(x0), 0.0, -res, float(top)), n, n)


@lru_cache(maxsize=64)
def _transformer(src: int, dst: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def lonlat_to(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    x, y = _transformer(4326, epsg).transform(lon, lat)
    return float(x), float(y)


def to_lonlat(epsg: int, x: float, y: float) -> tuple[float, float]:
    lon, lat = _transformer(epsg, 4326).transform(x, y)
    return float(lon), float(lat)


def lonlat_bbox(grid: TileGrid) -> tuple[float, float, float, float]:
    """A WGS84 box around a grid (its edges sampled, so a UTM square's curved sides are in)."""
    x0, y0, x1, y1 = grid.bounds
    xs = [x0 + (x1 - x0) * i / 8 for i in range(9)]
    ys = [y0 + (y1 - y0) * i / 8 for i in range(9)]
    ring = [(x, y0) for x in xs] + [(x, y1) for x in xs] + [(x0, y) for y in ys] + [(x1, y) for y in ys]
    pts = [to_lonlat(grid.epsg, x, y) for x, y in ring]
    return (min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts))


def tiles_near(lat: float, lon: float, radius_m: float) -> list[str]:
    """The point's own tile first, then every other tile whose square holds a point within
    ``radius_m`` (metres, in the own tile's UTM zone) of it: the tiles whose 109.8 km grids
    can hold a chip around the point."""
    own = tile_of(lat, lon)
    epsg = utm_epsg(own)
    x, y = lonlat_to(epsg, lon, lat)
    found = [own]
    for dx in (-radius_m, 0.0, radius_m):
        for dy in (-radius_m, 0.0, radius_m):
            lon2, lat2 = to_lonlat(epsg, x + dx, y + dy)
            if -80 <= lat2 < 84:
                t = tile_of(lat2, lon2)
                if t not in found:
                    found.append(t)
    return found


def tiles_in_bbox(bbox: Sequence[float], step_m: float = 10_000) -> list[str]:
    """MGRS tiles whose squares meet a WGS84 box (sampled every ~``step_m``), sorted."""
    minlon, minlat, maxlon, maxlat = bbox
    dlat = step_m / 111_000
    tiles: set[str] = set()
    n_lat = max(1, math.ceil((maxlat - minlat) / dlat))
    for i in range(n_lat + 1):
        lat = minlat + (maxlat - minlat) * i / n_lat
        dlon = step_m / (111_000 * max(math.cos(math.radians(lat)), 0.05))
        n_lon = max(1, math.ceil((maxlon - minlon) / dlon))
        for j in range(n_lon + 1):
            tiles.add(tile_of(lat, minlon + (maxlon - minlon) * j / n_lon))
    return sorted(tiles)


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
