"""An independent computation of the datacube chips (issue 14), written from the issue's text alone:
it imports nothing from ``pipeline`` (the date selection it is given comes from the archive's
expected list, not from the recipe code).

For a (tile, date) = (S2 item, S1 items, DEM items): every source file is opened with rasterio and
warped with ``rasterio.warp.reproject`` (nearest neighbour, exact transformer: ``tolerance=0``) onto
the chip's grid, which is the S2 item's 10 m grid (read from its B02 file) moved by whole pixels.
S1 items are painted earliest first so the later acquisition wins where they overlap; DEM items are
mosaicked the same way (they do not overlap). A chip is dropped if any B02 is 0, any vh / vv / dem is
NaN, or at least 30 % of its pixels have SCL in {0, 1, 3, 8, 9, 10}.

``mode="whole"`` warps every source once onto the whole grid and cuts the chips out of it; the
test checks it gives the same pixels as the per-chip warps (nearest neighbour at pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.warp import Resampling, reproject

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
BANDS = (*S2_BANDS, "vh", "vv", "dem")
BAD_SCL = (0, 1, 3, 8, 9, 10)


@dataclass
class OracleChip:
    number: int  # 1-based, row-major in the full grid
    col_off: int
    row_off: int
    transform: Affine
    crs: Any
    data: np.ndarray  # (13, chip, chip) float32, BANDS order
    scl: np.ndarray  # (chip, chip) uint8
    reasons: tuple[str, ...]  # every drop rule that applies; () = kept

    @property
    def kept(self) -> bool:
        return not self.reasons


def _when(item: dict[str, Any]) -> datetime:
    # Planetary Computer writes S1 RTC datetimes with a space; fromisoformat takes both forms.
    return datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))


def s2_grid(s2_item: dict[str, Any]) -> tuple[Any, Affine, int, int]:
    """(crs, transform, width, height) of the S2 item's 10 m grid, from its B02 file."""
    with rasterio.open(s2_item["assets"]["B02"]["href"]) as ds:
        return ds.crs, ds.transform, ds.width, ds.height


_SOURCES: dict[str, tuple[np.ndarray, Affine, Any, Any]] = {}


def _source(href: str) -> tuple[np.ndarray, Affine, Any, Any]:
    """(band 1, transform, crs, nodata) of a file, read whole once (the archive's files are small)."""
    if href not in _SOURCES:
        with rasterio.open(href) as ds:
            _SOURCES[href] = (ds.read(1), ds.transform, ds.crs, ds.nodata)
    return _SOURCES[href]


def _warp_points(href: str, dst: np.ndarray, crs: Any, transform: Affine, fill: float) -> np.ndarray:
    """Nearest neighbour by its definition: each destination pixel centre, transformed to the
    source CRS with pyproj, takes the value of the source pixel containing it (``fill`` outside
    the source or on its nodata)."""
    data, src_transform, src_crs, nodata = _source(href)
    rows, cols = dst.shape
    jj, ii = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    xs, ys = transform @ (jj, ii)
    if CRS.from_user_input(src_crs) != CRS.from_user_input(crs):
        xs, ys = Transformer.from_crs(crs, src_crs, always_xy=True).transform(xs, ys)
    sc, sr = ~src_transform @ (np.asarray(xs), np.asarray(ys))
    sc, sr = np.floor(sc).astype(np.int64), np.floor(sr).astype(np.int64)
    inside = (sc >= 0) & (sr >= 0) & (sc < data.shape[1]) & (sr < data.shape[0])
    dst[...] = fill
    values = data[sr[inside], sc[inside]]
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        values = np.where(values == nodata, fill, values)
    dst[inside] = values
    return dst


def _warp_reproject(href: str, dst: np.ndarray, crs: Any, transform: Affine, fill: float) -> np.ndarray:
    """The same with ``rasterio.warp.reproject`` (GDAL's warper). Note: rasterio 1.4.4's reproject
    keeps GDAL's linear approximation of the transformer whatever ``tolerance`` says, so across
    CRSs a wide destination can take a neighbouring source pixel near pixel edges (~1e-3 px off);
    ``WarpedVRT(..., tolerance=1e-9)`` does not."""
    dst[...] = fill
    with rasterio.open(href) as ds:
        reproject(
            source=rasterio.band(ds, 1),
            destination=dst,
            src_nodata=ds.nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=fill,
            resampling=Resampling.nearest,
            tolerance=0,
            init_dest_nodata=True,
        )
    return dst


_METHOD = {"points": _warp_points, "reproject": _warp_reproject}
_method = ["points"]


def _warp(href: str, dst: np.ndarray, crs: Any, transform: Affine, fill: float) -> np.ndarray:
    return _METHOD[_method[0]](href, dst, crs, transform, fill)


def _mosaic(hrefs: list[str], shape: tuple[int, int], crs: Any, transform: Affine) -> np.ndarray:
    """float32 mosaic, NaN where nothing has data; later hrefs painted over earlier ones."""
    out = np.full(shape, np.nan, dtype=np.float32)
    tmp = np.empty(shape, dtype=np.float32)
    for href in hrefs:
        _warp(href, tmp, crs, transform, np.nan)
        have = ~np.isnan(tmp)
        out[have] = tmp[have]
    return out


def _stack(
    s2_item: dict[str, Any], s1_items: list[dict[str, Any]], dem_items: list[dict[str, Any]],
    crs: Any, transform: Affine, shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    data = np.empty((len(BANDS), *shape), dtype=np.float32)
    band = np.empty(shape, dtype=np.uint16)
    for i, key in enumerate(S2_BANDS):
        data[i] = _warp(s2_item["assets"][key]["href"], band, crs, transform, 0)
    scl = _warp(s2_item["assets"]["SCL"]["href"], np.empty(shape, dtype=np.uint8), crs, transform, 0)
    painted = sorted(s1_items, key=lambda it: (_when(it), it["id"]))  # earliest first: later wins
    for i, pol in ((10, "vh"), (11, "vv")):
        data[i] = _mosaic([it["assets"][pol]["href"] for it in painted], shape, crs, transform)
    data[12] = _mosaic([it["assets"]["data"]["href"] for it in sorted(dem_items, key=lambda it: it["id"])],
                       shape, crs, transform)  # fmt: skip
    return data, scl


def reasons(data: np.ndarray, scl: np.ndarray) -> tuple[str, ...]:
    """Every drop rule the chip meets (B02 first, as the issue lists them)."""
    out = []
    if (data[0] == 0).any():
        out.append("B02 == 0")
    for i, name in ((10, "vh"), (11, "vv"), (12, "dem")):
        if np.isnan(data[i]).any():
            out.append(f"NaN in {name}")
    if 10 * int(np.isin(scl, BAD_SCL).sum()) >= 3 * scl.size:  # >= 30 %, in integers
        out.append("SCL >= 30%")
    return tuple(out)


def chips(
    s2_item: dict[str, Any],
    s1_items: list[dict[str, Any]],
    dem_items: list[dict[str, Any]],
    chip_size: int,
    *,
    numbers: set[int] | None = None,
    mode: str = "chip",
    method: str = "points",
) -> dict[int, OracleChip]:
    """Every whole chip of the S2 grid (or only ``numbers``), row-major from 1; the right and bottom
    remainder dropped. ``mode``: ``"chip"`` warps each chip's window on its own, ``"whole"``
    warps the whole grid once and cuts it. ``method``: ``"points"`` (default) samples the source
    pixel under each output pixel centre (pyproj + numpy: nearest neighbour by definition, exact),
    ``"reproject"`` uses ``rasterio.warp.reproject``."""
    if method not in _METHOD:
        raise ValueError(method)
    _method[0] = method
    crs, transform, width, height = s2_grid(s2_item)
    across, down = width // chip_size, height // chip_size
    whole = None
    if mode == "whole":
        whole = _stack(s2_item, s1_items, dem_items, crs, transform, (height, width))
    elif mode != "chip":
        raise ValueError(mode)
    out: dict[int, OracleChip] = {}
    for r in range(down):
        for c in range(across):
            number = r * across + c + 1
            if numbers is not None and number not in numbers:
                continue
            x0, y0 = c * chip_size, r * chip_size
            chip_transform = transform @ Affine.translation(x0, y0)
            if whole is None:
                data, scl = _stack(s2_item, s1_items, dem_items, crs, chip_transform, (chip_size, chip_size))
            else:
                data = whole[0][:, y0 : y0 + chip_size, x0 : x0 + chip_size].copy()
                scl = whole[1][y0 : y0 + chip_size, x0 : x0 + chip_size].copy()
            out[number] = OracleChip(number, x0, y0, chip_transform, crs, data, scl, reasons(data, scl))
    return out


def chips_of(items: list[dict[str, Any]], expected: Any, chip_size: int, **kw: Any) -> dict[int, OracleChip]:
    """:func:`chips` for an archive's ``ExpectedDate`` (``s2_id``, ``s1_ids``, ``dem_ids``)."""
    by_id = {it["id"]: it for it in items}
    return chips(
        by_id[expected.s2_id], [by_id[i] for i in expected.s1_ids], [by_id[i] for i in expected.dem_ids],
        chip_size, **kw,
    )  # fmt: skip


def nan_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
