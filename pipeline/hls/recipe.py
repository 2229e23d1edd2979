"""The HLS monthly median composite recipe as pure numpy/pandas: no I/O, so every step can be
tested cell by cell.

A month's composite is, per pixel and band, the median of the usable reflectances of all the
month's HLS scenes (L30 and S30 alike), in float32 reflectance DN (no scaling), NaN where no
value is usable, plus ``valid_count``: how many of the month's scenes passed the Fmask test at
that pixel. Arrays are band-first ``(bands, rows, cols)``; a stack of scenes puts the scene
axis first.

Samples are square chips of the composites around points: a chip is placed from the point's
fractional pixel position in a tile's grid and must lie wholly inside that tile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # imported where used: a composites run never builds a table (~0.3 s of start-up)
    import pandas as pd

BANDS: Final = ("coastal", "blue", "green", "red", "nir_narrow", "swir1", "swir2", "cirrus")
OUTPUT_BANDS: Final = (*BANDS, "valid_count")
VALID_COUNT_INDEX: Final = len(BANDS)  # index of valid_count in OUTPUT_BANDS

L30_COLLECTION: Final = "hls2-l30"
S30_COLLECTION: Final = "hls2-s30"
# Asset key of each of BANDS, in BANDS order, per collection.
ASSET_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    L30_COLLECTION: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09"),
    S30_COLLECTION: ("B01", "B02", "B03", "B04", "B8A", "B11", "B12", "B10"),
}
FMASK_KEY: Final = "Fmask"

REFLECTANCE_MIN: Final = 0  # usable reflectance DN range, inclusive at both ends
REFLECTANCE_MAX: Final = 10000
REFLECTANCE_FILL: Final = -9999  # int16 nodata of the reflectance assets
FMASK_FILL: Final = 255  # uint8 nodata of the Fmask asset

# Fmask bits (HLS v2.0 user guide, table 9).
FMASK_CIRRUS: Final = 1 << 0  # kept
FMASK_CLOUD: Final = 1 << 1
FMASK_ADJACENT: Final = 1 << 2  # adjacent to cloud or cloud shadow
FMASK_CLOUD_SHADOW: Final = 1 << 3
FMASK_SNOW_ICE: Final = 1 << 4  # kept
FMASK_WATER: Final = 1 << 5  # kept
FMASK_AEROSOL_SHIFT: Final = 6  # aerosol level in bits 6-7: (v >> 6) & 3
AEROSOL_HIGH: Final = 3
FMASK_UNUSABLE_BITS: Final = FMASK_CLOUD | FMASK_ADJACENT | FMASK_CLOUD_SHADOW

MONTHS: Final = tuple(range(1, 13))
DEFAULT_CHIP_SIZE: Final = 32
CENTRE_COLUMNS: Final = ("id", "lat", "lon", "year", "month", *BANDS, "valid_count")

# A tile's position of a point: (col, row, width, height), col/row fractional pixels.
TilePosition = tuple[float, float, int, int]
FloatArray = npt.NDArray[np.float32]


def fmask_value_usable(value: int) -> bool:
    """The Fmask test of one uint8 value: unusable where cloud, adjacent or cloud shadow is
    set, where the aerosol level is high, or on fill (255). Cirrus, snow/ice and water are
    kept: they are surface or thin-cloud states the median is trusted to handle."""
    if value == FMASK_FILL or value & FMASK_UNUSABLE_BITS:
        return False
    return (value >> FMASK_AEROSOL_SHIFT) & 3 != AEROSOL_HIGH


# Aerosol level 3 is the top of the two top bits: high aerosol is v >= 192. (Fill, 255, has
# the cloud bit, so the bit test already refuses it.)
_FMASK_HIGH_AEROSOL_FROM: Final = AEROSOL_HIGH << FMASK_AEROSOL_SHIFT


def fmask_usable(
    fmask: npt.NDArray[np.uint8],
    out: npt.NDArray[np.bool_] | None = None,
    scratch: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.bool_]:
    """True where the Fmask pixel passes :func:`fmask_value_usable` (any shape; the tests hold
    the two to the same answer on all 256 values). As two whole-array uint8 tests: 7x faster
    than looking each value up in a 256-entry table (np.take casts uint8 indices to intp).
    ``out`` and ``scratch`` (bool, Fmask's shape): where the result and the intermediate
    go (a :class:`Workspace`'s arrays), so nothing is allocated; allocated when not given."""
    fmask = np.asarray(fmask)
    if fmask.dtype != np.uint8:
        raise TypeError(f"Fmask must be uint8, got {fmask.dtype}")
    masked = np.bitwise_and(
        fmask, np.uint8(FMASK_UNUSABLE_BITS), out=None if scratch is None else scratch.view(np.uint8)
    )
    usable: npt.NDArray[np.bool_] = np.equal(masked, 0, out=out)
    usable &= np.less(fmask, np.uint8(_FMASK_HIGH_AEROSOL_FROM), out=scratch)
    return usable


class Workspace:
    """Arrays reused from one compositing window to the next (the engine keeps one per thread,
    for all the months that thread composites): a month's 16 to ~200 windows would otherwise each allocate and free the
    same dozen arrays of a few hundred KiB to a few MiB, which glibc maps and unmaps afresh
    (measured on scripts/bench_hls.py's 12 months: ~135k page faults and 0.5-0.7 s of system
    time). Each name's array is a view of the front of a buffer kept at the largest size asked
    for, so windows of any size share it; two names never share memory. An array's contents
    are whatever the last user left: callers fill what they read. Not for two threads at once."""

    def __init__(self) -> None:
        self._buffers: dict[str, npt.NDArray[np.uint8]] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """The array ``name`` with this shape and dtype (C-contiguous, uninitialised)."""
        dt = np.dtype(dtype)
        nbytes = dt.itemsize * math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < nbytes:
            # np.empty's buffers are aligned for every dtype, and so is their front
            buffer = self._buffers[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buffer[:nbytes].view(dt).reshape(shape)


def composite_block(bands: npt.NDArray[np.int16], fmask: npt.NDArray[np.uint8]) -> FloatArray:
    """The month's composite of one spatial block: ``(9, rows, cols)`` float32 in OUTPUT_BANDS
    order, from ``bands`` int16 ``(n_scenes, 8, rows, cols)`` in BANDS order and ``fmask``
    uint8 ``(n_scenes, rows, cols)``.

    Band k is bit for bit ``np.nanmedian(stack, axis=0)`` of the float32 ``stack`` that holds
    ``bands[:, k]`` where the Fmask test passes and the value is within 0..10000, NaN elsewhere
    (tests/test_hls_recipe.py proves it); band 8 is valid_count (Fmask test only). This is
    :class:`BandByBand` given the whole stack; the engine feeds it one band at a time."""
    _check_block(bands, fmask)
    block = BandByBand(fmask)
    for k in range(len(BANDS)):
        block.band_values()[...] = bands[:, k]
        block.add_band(k)
    return block.out


class BandByBand:
    """One block's composite, built one band at a time so that only one band of the scenes
    is held (``(n_scenes, rows, cols)`` uint16, plus the Fmask test as uint16 bits: 4 bytes
    per scene pixel in all, against 16 for the 8 int16 bands at once).

    Use: ``BandByBand(fmask)``; then for each band k of BANDS, fill ``band_values()`` with
    band k of every scene (int16, in the Fmask's scene order) and call ``add_band(k)``;
    ``out`` is then the ``(9, rows, cols)`` composite of :func:`composite_block`.

    Why not np.nanmedian: it is 15 to 20 times slower here (numpy masks, sorts float32 and
    warns once per all-NaN pixel). Every usable value is an integer 0..10000, so the median
    is found in uint16 instead: an int16 value outside 0..10000 reads as a uint16 above 10000
    (negatives wrap past 32767), Fmask-unusable values are forced to 0xFFFF, so sorting the
    scene axis puts the usable values first, in order. The sort is a sorting network run
    plane by plane (whole-block np.minimum/np.maximum). The median is then taken exactly as
    numpy takes it: the low and high middle values (the same one for an odd count) summed in
    float32 and halved in float32 (:func:`_median_by_select` up to SELECT_MAX_SCENES scenes,
    :func:`_median_of_sorted` above)."""

    def __init__(
        self, fmask: npt.NDArray[np.uint8], out: FloatArray | None = None, workspace: Workspace | None = None
    ) -> None:
        """``out``: where the composite goes, ``(9, rows, cols)`` float32, which may be a view
        of a larger buffer (the engine's row of blocks: no copy of each window into it);
        allocated when not given. ``workspace``: where the working arrays come from (the
        engine's, reused window after window; the results are the same); new ones when not
        given."""
        fmask = np.asarray(fmask)
        if fmask.dtype != np.uint8 or fmask.ndim != 3:
            raise TypeError(f"Fmask must be uint8 (n_scenes, rows, cols), got {fmask.dtype} {fmask.shape}")
        n_scenes, rows, cols = fmask.shape
        if n_scenes == 0:
            raise ValueError("a composite needs at least one scene")
        if out is None:
            out = np.empty((len(OUTPUT_BANDS), rows, cols), dtype=np.float32)
        elif out.dtype != np.float32 or out.shape != (len(OUTPUT_BANDS), rows, cols):
            raise ValueError(
                f"out must be float32 {(len(OUTPUT_BANDS), rows, cols)}, got {out.dtype} {out.shape}"
            )
        self.n_scenes = n_scenes
        ws = workspace or Workspace()
        self._workspace = ws
        usable = fmask_usable(
            fmask, ws.array("usable", fmask.shape, bool), ws.array("usable_scratch", fmask.shape, bool)
        )
        self.out: FloatArray = out
        count_dtype = np.uint8 if n_scenes <= 255 else np.uint32
        self.out[VALID_COUNT_INDEX] = _count_true(usable, ws.array("count", (rows, cols), count_dtype))
        # 0 where the Fmask test passes, 0xFFFF where not: or-ed into the values it masks them
        # (True - 1 = 0, False - 1 wraps to 0xFFFF; 4x faster than np.where).
        self._mask_bits: npt.NDArray[np.uint16] = ws.array("mask_bits", fmask.shape, np.uint16)
        np.copyto(self._mask_bits, usable.view(np.uint8))
        self._mask_bits -= np.uint16(1)
        del usable
        # the scenes, plus a spare plane
        self._work: npt.NDArray[np.uint16] = ws.array("work", (n_scenes + 1, rows, cols), np.uint16)
        self._scratch = _SelectScratch.of(rows, cols, ws) if n_scenes <= SELECT_MAX_SCENES else None

    def band_values(self) -> npt.NDArray[np.int16]:
        """Where the next band's values go: ``(n_scenes, rows, cols)`` int16, to be filled."""
        return self._work[: self.n_scenes].view(np.int16)

    def add_band(self, k: int) -> None:
        """Band k's median from the values just put in :meth:`band_values` (which it overwrites)."""
        n = self.n_scenes
        np.bitwise_or(self._work[:n], self._mask_bits, out=self._work[:n])
        rows, cols = self._work.shape[1:]
        ws = self._workspace
        count = _count_usable(
            self._work,
            n,
            count=ws.array("count", (rows, cols), np.uint8 if n <= 255 else np.uint32),
            usable=ws.array("count_usable", (rows, cols), bool),
        )
        plane_of = _sort_planes(self._work, n)
        if self._scratch is not None:
            _median_by_select(self._work, plane_of, count, self._scratch, out=self.out[k])
        elif self.out[k].flags.c_contiguous:
            _median_of_sorted(self._work, plane_of, count, out=self.out[k])
        else:  # its flat views need a contiguous plane
            median = np.empty(self.out.shape[1:], dtype=np.float32)
            _median_of_sorted(self._work, plane_of, count, out=median)
            self.out[k] = median


def _count_true(
    usable: npt.NDArray[np.bool_], count: npt.NDArray[np.unsignedinteger] | None = None
) -> npt.NDArray[np.unsignedinteger]:
    """Per pixel, how many of the planes of ``usable`` are True, summed plane by plane
    (np.count_nonzero over axis 0 copies the whole stack first); in ``count`` if given (uint8
    up to 255 planes, else uint32; overwritten)."""
    if count is None:
        count = np.empty(usable.shape[1:], dtype=np.uint8 if usable.shape[0] <= 255 else np.uint32)
    count.fill(0)
    for plane in usable:
        np.add(count, plane, out=count)
    return count


def _check_block(bands: npt.NDArray[np.int16], fmask: npt.NDArray[np.uint8]) -> tuple[int, int, int]:
    if bands.dtype != np.int16 or fmask.dtype != np.uint8:
        raise TypeError(f"bands must be int16 and Fmask uint8, got {bands.dtype} and {fmask.dtype}")
    if bands.ndim != 4 or bands.shape[1] != len(BANDS):
        raise ValueError(f"bands must be (n_scenes, {len(BANDS)}, rows, cols), got {bands.shape}")
    n_scenes, _, rows, cols = bands.shape
    if fmask.shape != (n_scenes, rows, cols):
        raise ValueError(f"Fmask must be {(n_scenes, rows, cols)} to match the bands, got {fmask.shape}")
    if n_scenes == 0:
        raise ValueError("a composite needs at least one scene")
    return n_scenes, rows, cols


def _count_usable(
    work: npt.NDArray[np.uint16],
    n: int,
    *,
    count: npt.NDArray[np.unsignedinteger] | None = None,
    usable: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.unsignedinteger]:
    """Per pixel, how many of the first n planes hold a usable value (<= REFLECTANCE_MAX),
    summed plane by plane in the smallest unsigned type that holds n (5x faster than
    np.count_nonzero over axis 0, which builds the whole boolean stack). ``count`` (uint8 up
    to 255 planes, else uint32) and ``usable`` (bool), a plane each: where to work (a
    :class:`Workspace`'s; overwritten), allocated when not given."""
    if count is None:
        count = np.empty(work.shape[1:], dtype=np.uint8 if n <= 255 else np.uint32)
    count.fill(0)
    if usable is None:
        usable = np.empty(work.shape[1:], dtype=bool)
    for i in range(n):
        np.less_equal(work[i], REFLECTANCE_MAX, out=usable)
        np.add(count, usable, out=count)
    return count


@cache
def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(i, j)``, i < j, of Batcher's odd-even merge sort that sort n values
    ascending, keeping only what the median of up to n usable values needs.

    Built for the next power of two p >= n: positions n..p-1 count as +infinity, so any
    comparator touching them never moves a value and is dropped. Then, walking back from
    the end, a comparator is dropped when neither of its outputs can reach positions
    0..n // 2 (the only ones a median of <= n usable values reads, unusable values sorting
    last)."""
    p = 1
    while p < n:
        p *= 2
    full: list[tuple[int, int]] = []
    merge = 1
    while merge < p:
        step = merge
        while step >= 1:
            for start in range(step % merge, p - step, 2 * step):
                for i in range(min(step, p - start - step)):
                    a, b = start + i, start + i + step
                    if a // (2 * merge) == b // (2 * merge) and b < n:
                        full.append((a, b))
            step //= 2
        merge *= 2
    needed = set(range(n // 2 + 1))
    kept: list[tuple[int, int]] = []
    for a, b in reversed(full):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.update((a, b))
    return tuple(reversed(kept))


def _sort_planes(work: npt.NDArray[np.uint16], n: int) -> npt.NDArray[np.intp]:
    """Sort (up to what the median needs) the first n planes of ``work`` along axis 0 with
    :func:`sorting_network`; plane n is scratch. Planes are not copied back into place:
    returns ``plane_of``, the physical plane that holds each sorted position 0..n-1."""
    plane_of = list(range(n + 1))  # sorted position -> plane; entry n is the spare plane
    for a, b in sorting_network(n):
        low, high, spare = work[plane_of[a]], work[plane_of[b]], work[plane_of[n]]
        np.minimum(low, high, out=spare)
        np.maximum(low, high, out=high)
        plane_of[a], plane_of[n] = plane_of[n], plane_of[a]
    return np.array(plane_of[:n], dtype=np.intp)


@cache
def _pixel_index(pixels: int) -> npt.NDArray[np.intp]:
    return np.arange(pixels, dtype=np.intp)


def _median_of_sorted(
    work: npt.NDArray[np.uint16],
    plane_of: npt.NDArray[np.intp],
    count: npt.NDArray[np.unsignedinteger],
    *,
    out: FloatArray,
) -> None:
    """Write the median of the first ``count`` sorted values per pixel into ``out``, as numpy's
    nanmedian does for float32: (low + high) in float32, then halved in float32 (a product by
    0.5, exactly the quotient by 2); NaN where count is 0.

    The low and high middle values are gathered from the flattened planes with one np.take
    each (flat index = plane * pixels + pixel), 2x faster than np.take_along_axis."""
    if not (work.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("the planes and the output must be C-contiguous (flat views are written)")
    pixels = work.shape[1] * work.shape[2]
    values, counts, result = work.reshape(-1), count.reshape(-1), out.reshape(-1)
    low = np.take(plane_of, (np.maximum(counts, 1) - 1) >> 1)  # sorted position (count - 1) // 2
    high = np.take(plane_of, counts >> 1)  # sorted position count // 2
    for at in (low, high):
        at *= pixels
        at += _pixel_index(pixels)
    np.add(values.take(low), values.take(high), out=result, dtype=np.float32)
    np.multiply(result, np.float32(0.5), out=result)
    result[counts == 0] = np.nan


# Up to this many scenes :func:`_median_by_select` is faster than :func:`_median_of_sorted`'s
# gathers (measured per 512 x 512 band: 0.4-0.6 ms against 1.4-2 ms at
# 2..8 scenes, about even at 24-30, 2x slower at 40: it costs a few passes per scene).
SELECT_MAX_SCENES: Final = 24


@dataclass(frozen=True)
class _SelectScratch:
    """The planes :func:`_median_by_select` works in (one block's, reused band after band)."""

    low: npt.NDArray[np.uint16]
    high: npt.NDArray[np.uint16]
    picked: npt.NDArray[np.uint16]
    at_least: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, rows: int, cols: int, workspace: Workspace | None = None) -> _SelectScratch:
        ws = workspace or Workspace()

        def plane(name: str) -> npt.NDArray[np.uint16]:
            return ws.array(name, (rows, cols), np.uint16)

        return cls(
            plane("select_low"), plane("select_high"), plane("select_picked"),
            ws.array("select_at_least", (rows, cols), bool),
        )  # fmt: skip


def _median_by_select(
    work: npt.NDArray[np.uint16],
    plane_of: npt.NDArray[np.intp],
    count: npt.NDArray[np.unsignedinteger],
    scratch: _SelectScratch,
    *,
    out: FloatArray,
) -> None:
    """What :func:`_median_of_sorted` writes, without gathers: whole-plane passes only.

    With the usable values sorted first, the low middle value is sorted position
    (count - 1) // 2 and the high one count // 2. Walking k = 2..n, position k // 2 becomes
    the high one (k even) or the low one (k odd) wherever count >= k; as the positions
    ascend and the planes are sorted, ``max(current, plane if count >= k else 0)`` moves
    to it (the plane times the count test: a branch-free select; np.copyto(where=) and
    np.where branch per pixel and cost 10x more on a random mask). Both middle values are
    integers 0..10000, so their sum is exact in uint16 and so is half of it in float32:
    bit for bit numpy's float32 (low + high) * 0.5. NaN where count is 0."""
    picked, at_least = scratch.picked, scratch.at_least
    low = high = work[plane_of[0]]  # both middles start at sorted position 0 (not copied: read only)
    for k in range(2, len(plane_of) + 1):
        np.greater_equal(count, k, out=at_least)
        np.multiply(work[plane_of[k // 2]], at_least, out=picked)
        if k % 2 == 0:
            high = np.maximum(high, picked, out=scratch.high)
        else:
            low = np.maximum(low, picked, out=scratch.low)
    total = np.add(low, high, out=scratch.low)  # <= 20000 where count >= 1; where 0, NaN below
    np.multiply(total, np.float32(0.5), out=out)
    np.equal(count, 0, out=at_least)
    if at_least.any():
        out[at_least] = np.nan


def chip_origin(col: float, row: float, chip_size: int = DEFAULT_CHIP_SIZE) -> tuple[int, int]:
    """Top-left pixel ``(col0, row0)`` of the chip around fractional position (col, row):
    ``(round(col) - chip_size // 2, round(row) - chip_size // 2)``.

    ``round`` is Python's built-in: exact halves go to the even integer (2.5 -> 2, 3.5 -> 4,
    -0.5 -> 0), as the contract's round(col) reads in Python. The chip's centre pixel
    ``[chip_size // 2, chip_size // 2]`` is then the pixel (round(row), round(col))."""
    return round(float(col)) - chip_size // 2, round(float(row)) - chip_size // 2


def chip_fits(col0: int, row0: int, chip_size: int, width: int, height: int) -> bool:
    """Whether the chip with top-left (col0, row0) lies wholly inside [0, width) x [0, height)."""
    return col0 >= 0 and row0 >= 0 and col0 + chip_size <= width and row0 + chip_size <= height


def choose_tile(
    own_tile: str, positions: Mapping[str, TilePosition], chip_size: int = DEFAULT_CHIP_SIZE
) -> str | None:
    """The tile a point's chip is cut from: its own MGRS tile when the chip fits there, else
    the first other candidate (by tile id, string order) where it fits, else None.

    ``positions`` maps each candidate tile id to the point's (col, row, width, height) in that
    tile's grid; the own tile need not be among them (then only the others are tried)."""

    def fits(tile: str) -> bool:
        col, row, width, height = positions[tile]
        return chip_fits(*chip_origin(col, row, chip_size), chip_size, width, height)

    if own_tile in positions and fits(own_tile):
        return own_tile
    return next((tile for tile in sorted(positions) if tile != own_tile and fits(tile)), None)


def _chip_window(composite: FloatArray, col0: int, row0: int, chip_size: int) -> tuple[slice, slice]:
    """The chip's (rows, cols) slices; refuses a chip not wholly inside (slicing would
    silently clip it or wrap negative starts)."""
    height, width = composite.shape[-2:]
    if not chip_fits(col0, row0, chip_size, width, height):
        raise ValueError(
            f"chip {chip_size}x{chip_size} at col {col0}, row {row0} is not inside {width}x{height}"
        )
    return slice(row0, row0 + chip_size), slice(col0, col0 + chip_size)


def cut_chip(composite: FloatArray, col0: int, row0: int, chip_size: int = DEFAULT_CHIP_SIZE) -> FloatArray:
    """The 8 median bands of the chip with top-left (col0, row0): a float32 copy
    ``(8, chip_size, chip_size)`` of a ``(9, H, W)`` composite."""
    rows, cols = _chip_window(composite, col0, row0, chip_size)
    return np.array(composite[: len(BANDS), rows, cols], dtype=np.float32)


def centre_values(
    composite: FloatArray, col0: int, row0: int, chip_size: int = DEFAULT_CHIP_SIZE
) -> tuple[FloatArray, int]:
    """The chip's centre pixel, chip pixel ``[chip_size // 2, chip_size // 2]`` (row, then col):
    its 8 medians (float32, NaN where none) and its valid_count."""
    _chip_window(composite, col0, row0, chip_size)
    row, col = row0 + chip_size // 2, col0 + chip_size // 2
    medians = np.array(composite[: len(BANDS), row, col], dtype=np.float32)
    return medians, int(composite[VALID_COUNT_INDEX, row, col])


def empty_chips(n_points: int, chip_size: int = DEFAULT_CHIP_SIZE) -> FloatArray:
    """A (tile, year)'s chips before any month is filled in: ``(n_points, 12, 8, chip, chip)``
    float32 NaN, which is what a month without a composite keeps."""
    return np.full((n_points, len(MONTHS), len(BANDS), chip_size, chip_size), np.nan, dtype=np.float32)


def empty_centres(n_points: int) -> FloatArray:
    """A (tile, year)'s centre values before any month is filled in: ``(n_points, 12, 9)``
    float32 with NaN medians and valid_count 0, which is what a month without a composite keeps."""
    centres = np.full((n_points, len(MONTHS), len(OUTPUT_BANDS)), np.nan, dtype=np.float32)
    centres[..., VALID_COUNT_INDEX] = 0
    return centres


def centre_table(
    ids: Sequence[object] | npt.ArrayLike | pd.Index,
    lats: npt.ArrayLike,
    lons: npt.ArrayLike,
    year: int,
    centres: npt.ArrayLike,
) -> pd.DataFrame:
    """One row per point and month 1..12 (point order, then month) with columns CENTRE_COLUMNS:
    id (as given), lat, lon (float64), year, month (int32), the 8 medians (float32) and
    valid_count (int32), from ``centres`` ``(n_points, 12, 9)`` in OUTPUT_BANDS order (see
    :func:`empty_centres` for months without a composite; a NaN valid_count is refused)."""
    import pandas as pd

    values = np.asarray(centres, dtype=np.float32)
    id_values = pd.Index(
        ids
    )  # keeps the ids' own type: strings stay strings (numpy would coerce mixed ids to text)
    n_points = len(id_values)
    if values.shape != (n_points, len(MONTHS), len(OUTPUT_BANDS)):
        raise ValueError(f"centres must be {(n_points, len(MONTHS), len(OUTPUT_BANDS))}, got {values.shape}")
    lat_values, lon_values = np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64)
    if lat_values.shape != (n_points,) or lon_values.shape != (n_points,):
        raise ValueError(f"lats and lons must each hold {n_points} values")
    counts = values[..., VALID_COUNT_INDEX].reshape(-1)
    if not np.all(np.isfinite(counts) & (counts >= 0) & (counts == np.round(counts))):
        raise ValueError(
            "valid_count must be a whole number >= 0 in every month (0 where there is no composite)"
        )
    n_months = len(MONTHS)
    columns: dict[str, npt.ArrayLike | pd.Index] = {
        "id": id_values.repeat(n_months),
        "lat": np.repeat(lat_values, n_months),
        "lon": np.repeat(lon_values, n_months),
        "year": np.full(n_points * n_months, year, dtype=np.int32),
        "month": np.tile(np.array(MONTHS, dtype=np.int32), n_points),
    }
    for k, band in enumerate(BANDS):
        columns[band] = values[..., k].reshape(-1)
    columns["valid_count"] = counts.astype(np.int32)
    return pd.DataFrame(columns, columns=list(CENTRE_COLUMNS))
