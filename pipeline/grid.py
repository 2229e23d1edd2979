"""The Landsat ARD tiling grids (CU, AK, HI): point -> tile, bbox -> tiles, chip windows.

Tiles are 5000 x 5000 pixels of 30 m. Tile ``(h, v)`` holds ``x, y`` where
``h = floor((x - X0) / 150000)`` and ``v = floor((Y0 - y) / 150000)``.
All arithmetic is on integers where the inputs are integers, so points on tile and pixel
edges land where the formula says, with no floating-point drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.errors import GridError

PIXEL_SIZE = 30
TILE_PIXELS = 5000
TILE_SIZE = PIXEL_SIZE * TILE_PIXELS  # 150 km


@dataclass(frozen=True)
class Region:
    """One ARD region: its grid origin, tile counts and Albers projection."""

    code: str
    x0: int
    y0: int
    n_h: int  # tiles h = 0 .. n_h - 1
    n_v: int  # tiles v = 0 .. n_v - 1
    lat_0: float
    lon_0: float
    lat_1: float
    lat_2: float

    @property
    def proj4(self) -> str:
        return (
            f"+proj=aea +lat_0={self.lat_0:g} +lon_0={self.lon_0:g} +lat_1={self.lat_1:g} "
            f"+lat_2={self.lat_2:g} +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
        )

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(xmin, ymin, xmax, ymax) of the whole grid."""
        return (self.x0, self.y0 - self.n_v * TILE_SIZE, self.x0 + self.n_h * TILE_SIZE, self.y0)


# Extents: USGS "U.S. Landsat ARD Tile Grid Extents" (CONUS h00-h32 v00-v21; Hawaii h00-h04
# v00-v02; Alaska Collection 2 shares the C1 lower-right corner, 1698285/374325, from the
# moved origin -2201715, hence h00-h25 v00-v13).
REGIONS: dict[str, Region] = {
    "CU": Region("CU", -2565585, 3314805, 33, 22, 23.0, -96.0, 29.5, 45.5),
    "AK": Region("AK", -2201715, 2474325, 26, 14, 50.0, -154.0, 55.0, 65.0),
    "HI": Region("HI", -444345, 2168895, 5, 3, 3.0, -157.0, 8.0, 18.0),
}


def get_region(code: str) -> Region:
    try:
        return REGIONS[code.upper()]
    except KeyError:
        raise GridError(
            f"unknown region {code!r}; expected one of {', '.join(REGIONS)}", field="region"
        ) from None


@dataclass(frozen=True, order=True)
class Tile:
    """An ARD tile; ordering is ascending h, then v (the spec's search order)."""

    h: int
    v: int

    @property
    def hh(self) -> str:
        """Two-digit grid_horizontal, as in the STAC property."""
        return f"{self.h:02d}"

    @property
    def vv(self) -> str:
        return f"{self.v:02d}"

    @property
    def hv(self) -> str:
        return self.hh + self.vv

    def origin(self, region: Region) -> tuple[int, int]:
        """Upper-left corner of the tile in the region's Albers metres."""
        return region.x0 + self.h * TILE_SIZE, region.y0 - self.v * TILE_SIZE


def tile_of(region: Region, x: float, y: float) -> Tile:
    """The tile holding ``(x, y)``; raises :class:`GridError` outside the grid."""
    h = math.floor((x - region.x0) / TILE_SIZE)
    v = math.floor((region.y0 - y) / TILE_SIZE)
    if not (0 <= h < region.n_h and 0 <= v < region.n_v):
        raise GridError(
            f"point ({x}, {y}) is outside the {region.code} ARD grid "
            f"(x in [{region.bounds[0]}, {region.bounds[2]}), y in ({region.bounds[1]}, {region.bounds[3]}])"
        )
    return Tile(h, v)


def chip_bbox(x: float, y: float, width: int, height: int) -> tuple[float, float, float, float]:
    """(ulx, uly, lrx, lry) of a chip centred on the plot: ``x +/- (w // 2) * 30``."""
    half_w = (width // 2) * PIXEL_SIZE
    half_h = (height // 2) * PIXEL_SIZE
    return x - half_w, y + half_h, x + half_w, y - half_h


def chip_tiles(region: Region, x: float, y: float, width: int, height: int) -> list[Tile]:
    """Every tile from the tile of the chip's upper-left corner to that of its lower-right,
    in search order (ascending h, then v). A chip reaching past the grid's edge keeps the
    tiles that exist; the plot itself must be inside the grid."""
    tile_of(region, x, y)  # the plot itself must be inside the grid
    ulx, uly, lrx, lry = chip_bbox(x, y, width, height)
    h0 = max(math.floor((ulx - region.x0) / TILE_SIZE), 0)
    v0 = max(math.floor((region.y0 - uly) / TILE_SIZE), 0)
    h1 = min(math.floor((lrx - region.x0) / TILE_SIZE), region.n_h - 1)
    v1 = min(math.floor((region.y0 - lry) / TILE_SIZE), region.n_v - 1)
    return [Tile(h, v) for h in range(h0, h1 + 1) for v in range(v0, v1 + 1)]


def pixel_of(transform: Sequence[float], x: float, y: float) -> tuple[int, int]:
    """(row, col) of the pixel containing ``(x, y)`` in a north-up raster whose affine is in
    rasterio ``Affine`` order ``(a, b, c, d, e, f, ...)``: a = x size, c = ulx, e = -y size,
    f = uly. Floor, so a point on a pixel edge belongs to the pixel right of / below it."""
    a, c, e, f = transform[0], transform[2], transform[4], transform[5]
    col = math.floor((x - c) / a)
    row = math.floor((y - f) / e)
    return row, col


def chip_window(row: int, col: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(row_off, col_off, height, width) of the chip whose centre pixel is ``(row, col)``."""
    return row - height // 2, col - width // 2, height, width
