"""A Cloud Optimized GeoTIFF writer for the month composites: the layout GDAL's COG driver
writes, encoded with ISA-L's DEFLATE instead of libtiff's.

Why not GDAL's COG driver: on a month of 9 float32 bands its copy costs ~1.4 s CPU per
2048 x 2048 px (scripts/bench_hls.py --breakdown), half of the month's CPU: 0.6 s of block
copying and interleaving even uncompressed, 0.3 s of floating-point predictor and 0.5 s of
libdeflate level 1. Here the predictor is numpy on whole tiles and the DEFLATE is ISA-L
(python-isal, already a dependency), ~3x less CPU for a file ~10 % smaller.

What is written is what GDAL 3.10's COG driver writes for the same source (checked by
tests/test_hls_cog.py, pixel for pixel at every level, and by GDAL's COG validation):

- classic little-endian TIFF; the "ghost" structural metadata after the header
  (LAYOUT=IFDS_BEFORE_DATA, BLOCK_ORDER=ROW_MAJOR, BLOCK_LEADER=SIZE_AS_UINT4,
  BLOCK_TRAILER=LAST_4_BYTES_REPEATED);
- the IFDs first (full resolution, then the overviews, largest first), then the tiles,
  smallest overview first, row-major, each tile preceded by its byte count (uint4) and
  followed by its last 4 bytes repeated;
- pixel-interleaved 512 x 512 float32 tiles, DEFLATE (zlib stream) with the floating-point
  predictor (3) applied row by row as libtiff does; edge tiles padded with NaN;
- the source's georeferencing (ModelPixelScale, ModelTiepoint or ModelTransformation,
  GeoKey directory and parameters), GDAL metadata (band descriptions, tags) and GDAL_NODATA
  copied byte for byte from the source's first IFD (the source is a GDAL GTiff).

:class:`CogBuilder` takes the full-resolution pixels a row of tiles at a time (as the month's
windows finish), compresses their tiles at once into a temporary file per level, and
computes the overviews from them in numpy as GDAL's AVERAGE resampling does
(:func:`average_windows`: cascaded, each level from the one before it, NaN pixels left out,
pixel for pixel GDAL 3.10's ``build_overviews(..., Resampling.average)``); :meth:`CogBuilder.finish`
writes the IFDs and appends the levels' tiles. Memory: one row of tiles of every level
(~125 MiB for 9 float32 bands of a 3660 px tile), never the whole month. :func:`write_cog`
does the same from a GTiff (its full resolution read one row of tiles at a time).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt

from pipeline.hls.recipe import Workspace

# TIFF field types and their sizes in bytes.
_TYPE_SIZE: Final = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}  # fmt: skip
_SHORT: Final = 3
_LONG: Final = 4
# Tags copied from the source's first IFD: georeferencing, GDAL metadata and nodata.
COPIED_TAGS: Final = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
_TILE_OFFSETS: Final = 324
_TILE_BYTE_COUNTS: Final = 325
# GDAL's ghost area (gcore/gdal_priv.h / frmts/gtiff/cogdriver.cpp), byte for byte.
_GHOST_BODY: Final = (
    "LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
    "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n "
)
GHOST: Final = f"GDAL_STRUCTURAL_METADATA_SIZE={len(_GHOST_BODY):06d} bytes\n{_GHOST_BODY}".encode()
_CLASSIC_LIMIT: Final = 2**32 - 1
# DEFLATE's match window for ISA-L, 2**10 bytes instead of zlib's 32 KiB: on the months'
# predicted tiles (byte planes of noisy float32 reflectances, whose repeats are near) level
# 1 is then ~7 % faster and its output ~1 % smaller (42 tiles of two bench months: 15.4-15.6
# against 16.4-17.3 ms per 9.4 MB tile; 0.338 against 0.343 of the raw size). The zlib
# header states the window; every inflater reads it.
DEFLATE_HISTORY_BITS: Final = 10


class TooLargeForClassicTiff(ValueError):
    """The COG would pass 4 GiB: this writer writes classic TIFF only (BigTIFF is left to
    GDAL's COG driver; a whole 3660 x 3660 px month is ~0.6 GB uncompressed)."""


@dataclass(frozen=True)
class Entry:
    """One IFD entry: tag, TIFF type, value count and the value's bytes (little-endian)."""

    tag: int
    type: int
    count: int
    value: bytes


def short_entry(tag: int, *values: int) -> Entry:
    return Entry(tag, _SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def long_entry(tag: int, *values: int) -> Entry:
    return Entry(tag, _LONG, len(values), struct.pack(f"<{len(values)}I", *values))


def read_first_ifd(f: BinaryIO) -> dict[int, Entry]:
    """The entries of a TIFF's (classic or BigTIFF, little-endian) first IFD."""
    head = f.read(16)
    if head[:2] != b"II":
        raise ValueError("not a little-endian TIFF")
    (magic,) = struct.unpack("<H", head[2:4])
    big = magic == 43
    if magic == 42:
        (offset,) = struct.unpack("<I", head[4:8])
    elif big:
        (offset,) = struct.unpack("<Q", head[8:16])
    else:
        raise ValueError(f"not a TIFF (magic {magic})")
    f.seek(offset)
    (n,) = struct.unpack("<Q" if big else "<H", f.read(8 if big else 2))
    size = 20 if big else 12
    raw = f.read(n * size)
    entries: dict[int, Entry] = {}
    for i in range(n):
        e = raw[i * size : (i + 1) * size]
        if big:
            tag, typ, count = struct.unpack("<HHQ", e[:12])
            field = e[12:20]
        else:
            tag, typ, count = struct.unpack("<HHI", e[:8])
            field = e[8:12]
        nbytes = _TYPE_SIZE.get(typ, 1) * count
        if nbytes <= len(field):
            value = field[:nbytes]
        else:
            (at,) = struct.unpack("<Q" if big else "<I", field)
            here = f.tell()
            f.seek(at)
            value = f.read(nbytes)
            f.seek(here)
        entries[tag] = Entry(tag, typ, count, value)
    return entries


@dataclass
class _Level:
    """One resolution level of the output: its size and its IFD's place in the file."""

    width: int
    height: int
    overview: int | None  # rasterio overview_level of the source, None for full resolution
    entries: list[Entry]
    ifd_at: int = 0
    offsets_at: int = 0  # where the TileOffsets values are written
    counts_at: int = 0


def _level_entries(
    width: int, height: int, bands: int, block: int, n_tiles: int, overview: bool, copied: list[Entry]
) -> list[Entry]:
    entries = [
        short_entry(256, width) if width < 65536 else long_entry(256, width),
        short_entry(257, height) if height < 65536 else long_entry(257, height),
        short_entry(258, *([32] * bands)),
        short_entry(259, 8),  # Adobe DEFLATE
        short_entry(262, 1),  # MinIsBlack
        short_entry(277, bands),
        short_entry(284, 1),  # pixel interleaved
        short_entry(317, 3),  # floating-point predictor
        short_entry(322, block),
        short_entry(323, block),
        long_entry(_TILE_OFFSETS, *([0] * n_tiles)),
        long_entry(_TILE_BYTE_COUNTS, *([0] * n_tiles)),
        short_entry(339, *([3] * bands)),  # IEEE float
    ]
    if bands > 1:
        entries.append(short_entry(338, *([0] * (bands - 1))))  # unspecified extra samples
    if overview:
        entries.append(long_entry(254, 1))  # reduced-resolution image
    entries += copied
    return sorted(entries, key=lambda e: e.tag)


def _layout(levels: list[_Level], start: int) -> int:
    """Place every level's IFD and out-of-line values from ``start``; returns where the
    tile data begins. Values are word aligned, as TIFF asks."""
    at = start
    for level in levels:
        level.ifd_at = at
        at += 2 + 12 * len(level.entries) + 4
        for k, e in enumerate(level.entries):
            if len(e.value) > 4:
                at += at % 2
                where = at
                at += len(e.value)
            else:
                where = level.ifd_at + 2 + 12 * k + 8
            if e.tag == _TILE_OFFSETS:
                level.offsets_at = where
            elif e.tag == _TILE_BYTE_COUNTS:
                level.counts_at = where
        at += at % 2
    return at


def _write_ifds(f: BinaryIO, levels: list[_Level]) -> None:
    for i, level in enumerate(levels):
        next_ifd = levels[i + 1].ifd_at if i + 1 < len(levels) else 0
        body = bytearray(struct.pack("<H", len(level.entries)))
        tail = bytearray()
        tail_at = level.ifd_at + 2 + 12 * len(level.entries) + 4
        for e in level.entries:
            if len(e.value) > 4:
                if (tail_at + len(tail)) % 2:
                    tail += b"\0"
                body += struct.pack("<HHII", e.tag, e.type, e.count, tail_at + len(tail))
                tail += e.value
            else:
                body += struct.pack("<HHI", e.tag, e.type, e.count) + e.value.ljust(4, b"\0")
        body += struct.pack("<I", next_ifd)
        f.seek(level.ifd_at)
        f.write(bytes(body) + bytes(tail))


# Rows of a tile the predictor takes at a time: its interleaved and regrouped copies of them
# (2 x 32 x 18 KiB) stay in the CPU's caches between the passes, instead of two 9 MiB arrays
# going out to memory and back (10-20 % faster per tile, less memory traffic for the other
# thread).
_PREDICTOR_ROWS: Final = 32


class PredictorBuffers:
    """The arrays :func:`predict_tile` works in, for tiles of one shape ``(samples, rows,
    cols)``: kept by a :class:`CogBuilder` for all its tiles, as a tile's ~9 MiB output
    allocated afresh is mapped and unmapped by glibc (equal sizes never stop being mmap'd;
    with the predictor's former whole-tile copies, ~100k page faults on scripts/bench_hls.py's
    12 months)."""

    def __init__(self, samples: int, rows: int, cols: int, workspace: Workspace | None = None) -> None:
        ws = workspace or Workspace()
        self.shape = (samples, rows, cols)
        chunk = min(rows, _PREDICTOR_ROWS)
        self.interleaved = ws.array("predictor_interleaved", (chunk, cols * samples), np.dtype("<f4"))
        # [row, byte, pixel x band]
        self.shuffled = ws.array("predictor_shuffled", (chunk, 4, cols * samples), np.uint8)
        self.out = ws.array("predictor_out", (rows, 4 * cols * samples), np.uint8)


def predict_tile(
    tile: npt.NDArray[np.float32], buffers: PredictorBuffers | None = None
) -> npt.NDArray[np.uint8]:
    """libtiff's floating-point predictor (3) of a band-first ``(samples, rows, cols)``
    float32 tile written pixel-interleaved, row by row: each row's samples (pixel by pixel,
    band by band) regrouped by byte significance (the most significant byte of every sample
    first), then each byte replaced by its difference from the byte ``samples`` before it in
    that row (mod 256). Returns ``(rows, 4 * cols * samples)`` bytes: ``buffers.out`` when
    ``buffers`` are given (overwritten by the next tile), else a new array. Interleaving
    4-byte samples, then one copy per byte significance, is ~25 % faster than one 4-d byte
    copy; rows are independent, so they are taken :data:`_PREDICTOR_ROWS` at a time."""
    samples, rows, cols = tile.shape
    if buffers is None:
        buffers = PredictorBuffers(samples, rows, cols)
    elif buffers.shape != tile.shape:
        raise ValueError(f"predictor buffers for tiles of {buffers.shape}, got {tile.shape}")
    out = buffers.out
    step = buffers.interleaved.shape[0]
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        interleaved, shuffled = buffers.interleaved[:n], buffers.shuffled[:n]
        interleaved.reshape(n, cols, samples)[...] = tile[:, r0 : r0 + n].transpose(1, 2, 0)
        little = interleaved.view(np.uint8).reshape(n, cols * samples, 4)
        for k in range(4):
            shuffled[:, k] = little[:, :, 3 - k]
        flat = shuffled.reshape(n, 4 * cols * samples)
        rows_out = out[r0 : r0 + n]
        rows_out[:, :samples] = flat[:, :samples]
        np.subtract(flat[:, samples:], flat[:, :-samples], out=rows_out[:, samples:])
    return out


# ---- levels and GDAL's AVERAGE overviews ----------------------------------------------


def overview_factors(width: int, height: int, block: int = 512) -> list[int]:
    """Overview decimation factors down to one block, as GDAL's COG driver picks them."""
    factors: list[int] = []
    factor = 1
    while -(-width // factor) > block or -(-height // factor) > block:
        factor *= 2
        factors.append(factor)
    return factors


def level_sizes(width: int, height: int, block: int = 512) -> list[tuple[int, int]]:
    """``(width, height)`` of full resolution and of each overview (GDAL's GTiff rounds up)."""
    return [(width, height)] + [
        (-(-width // f), -(-height // f)) for f in overview_factors(width, height, block)
    ]


def fits_classic_tiff(width: int, height: int, bands: int, block: int = 512) -> bool:
    """Whether a COG of these float32 bands surely stays under 4 GiB (DEFLATE's worst case:
    stored blocks, 1/64 more than the raw bytes)."""
    raw = sum(w * h for w, h in level_sizes(width, height, block)) * bands * 4
    return raw + raw // 64 + 65536 <= _CLASSIC_LIMIT


@functools.cache
def average_windows(n_src: int, n_dst: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """GDAL's AVERAGE source windows along one axis, ``n_src`` pixels to ``n_dst``: for each
    destination pixel its source pixels and their weights, as ``(K, n_dst)`` arrays (K the
    widest window; a narrower window is padded with its last pixel at weight 0). A window
    spans ``[i * r, (i + 1) * r)``, ``r = n_src / n_dst``; its first and last pixels are
    weighted by the part of them inside (all 1 when ``r`` is an integer)."""
    ratio = n_src / n_dst
    spans: list[list[tuple[int, float]]] = []
    for i in range(n_dst):
        f0, f1 = i * ratio, (i + 1) * ratio
        s0 = int(f0 + 1e-8)
        s1 = min(max(int(np.ceil(f1 - 1e-8)), s0 + 1), n_src)
        span = []
        for k in range(s0, s1):
            weight = 1.0
            if s1 - s0 > 1 and k == s0:
                weight = 1.0 - (f0 - s0)
            elif s1 - s0 > 1 and k == s1 - 1:
                weight = 1.0 - (s1 - f1)
            span.append((k, weight))
        spans.append(span)
    widest = max(len(span) for span in spans)
    index = np.empty((widest, n_dst), dtype=np.intp)
    weights = np.zeros((widest, n_dst), dtype=np.float64)
    for i, span in enumerate(spans):
        for k in range(widest):
            index[k, i] = span[min(k, len(span) - 1)][0]
            if k < len(span):
                weights[k, i] = span[k][1]
    index.flags.writeable = weights.flags.writeable = False  # cached: shared by every caller
    return index, weights


_CHUNK_ROWS = 64  # source rows averaged at a time (temporaries stay in the CPU's caches)


class _HalvesScratch:
    """The arrays :func:`_average_halves` works in, for sources up to ``width`` pixels wide
    (a _Downsampler's, reused for every band and row: fresh ones per call were ~10k page
    faults on scripts/bench_hls.py's 12 months)."""

    def __init__(self, width: int, workspace: Workspace | None = None, name: str = "halves") -> None:
        ws = workspace or Workspace()
        half = (width + 1) // 2

        def array(what: str, shape: tuple[int, int], dtype: type) -> npt.NDArray[Any]:
            return ws.array(f"{name}_{what}", shape, dtype)

        self.z = array("z", (_CHUNK_ROWS, width), np.float64)
        self.valid = array("valid", (_CHUNK_ROWS, width), np.bool_)
        self.invalid = array("invalid", (_CHUNK_ROWS, width), np.bool_)
        self.pairs = array("pairs", (_CHUNK_ROWS, half), np.float64)
        self.total = array("total", (_CHUNK_ROWS // 2, half), np.float64)
        self.pair_counts = array("pair_counts", (_CHUNK_ROWS, half), np.uint8)
        self.counts = array("counts", (_CHUNK_ROWS // 2, half), np.uint8)
        self.none = array("none", (_CHUNK_ROWS // 2, half), np.bool_)


def _average_halves(
    src: npt.NDArray[np.float32], out: npt.NDArray[np.float32], scratch: _HalvesScratch | None = None
) -> None:
    """GDAL's AVERAGE of 2 x 2 pixels (an even source, half its size), NaN pixels left out:
    in double, each row's pair summed, then the two rows', divided by the count of valid
    pixels. NaN inputs add +0.0 (GDAL skips them: the same sums, its totals start at +0.0),
    and ``+ 0.0`` at the end turns a -0.0 total into GDAL's +0.0. ``scratch``: where to work
    (allocated when not given)."""
    rows, width = src.shape
    sc = scratch if scratch is not None and scratch.z.shape[1] >= width else _HalvesScratch(width)
    half = width // 2
    for r in range(0, rows, _CHUNK_ROWS):
        s = src[r : r + _CHUNK_ROWS]
        n = s.shape[0]
        zz, vv, nv = sc.z[:n, :width], sc.valid[:n, :width], sc.invalid[:n, :width]
        np.equal(s, s, out=vv)
        np.copyto(zz, s)
        np.logical_not(vv, out=nv)
        np.copyto(zz, 0.0, where=nv)
        pairs = np.add(zz[:, 0::2], zz[:, 1::2], out=sc.pairs[:n, :half])
        total = np.add(pairs[0::2], pairs[1::2], out=sc.total[: n // 2, :half])
        counts = np.add(vv.view(np.uint8)[:, 0::2], vv.view(np.uint8)[:, 1::2], out=sc.pair_counts[:n, :half])
        counts = np.add(counts[0::2], counts[1::2], out=sc.counts[: n // 2, :half])
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(total, counts, out=total)
        total += 0.0
        none = np.equal(counts, 0, out=sc.none[: n // 2, :half])
        np.copyto(total, np.nan, where=none)  # GDAL's nodata: NaN, not 0 / 0's negative NaN
        out[r // 2 : (r + n) // 2] = total


def _average_weighted(
    src: npt.NDArray[np.float32],
    x: tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]],
    y: tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]],
) -> npt.NDArray[np.float32]:
    """GDAL's AVERAGE for any ratio: ``x`` the windows of :func:`average_windows` along rows,
    ``y`` along columns with indices relative to ``src``'s first row. As GDAL sums: per
    source row, value x weight over its valid pixels (and the weights), then those row sums
    x the row's weight; the total over the weights, in double."""
    z = np.where(np.isnan(src), 0.0, src.astype(np.float64))
    m = (~np.isnan(src)).astype(np.float64)
    xi, xw = x
    row_total = z[:, xi[0]] * xw[0]
    row_weight = m[:, xi[0]] * xw[0]
    for k in range(1, len(xi)):
        row_total += z[:, xi[k]] * xw[k]
        row_weight += m[:, xi[k]] * xw[k]
    yi, yw = y
    total = row_total[yi[0]] * yw[0][:, None]
    weight = row_weight[yi[0]] * yw[0][:, None]
    for k in range(1, len(yi)):
        total += row_total[yi[k]] * yw[k][:, None]
        weight += row_weight[yi[k]] * yw[k][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        averaged = np.where(weight > 0, total / weight, np.nan)
    averaged += 0.0
    return averaged.astype(np.float32)


class _Downsampler:
    """One overview level from the level before it, rows as they come (GDAL cascades the
    same way). Holds the source rows the next destination row still needs (a row or two)."""

    def __init__(
        self,
        src_size: tuple[int, int],
        dst_size: tuple[int, int],
        workspace: Workspace | None = None,
        name: str = "",
    ) -> None:
        (self.src_w, self.src_h), (self.dst_w, self.dst_h) = src_size, dst_size
        self.halves = self.src_w == 2 * self.dst_w and self.src_h == 2 * self.dst_h
        self.x = average_windows(self.src_w, self.dst_w)
        self.y = average_windows(self.src_h, self.dst_h)
        self.first_row = self.y[0][0]  # first source row of each destination row
        self.last_row = self.y[0][-1]  # padding repeats the last, so the last index is the last row
        self.pending: npt.NDArray[np.float32] | None = None
        self.pending_row0 = 0  # source row of pending[:, 0]
        self.next_row = 0  # next destination row
        self.scratch = _HalvesScratch(self.src_w, workspace, f"halves{name}") if self.halves else None

    def push(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32] | None:
        """The destination rows completed by the next source rows ``rows`` (bands, n, width)."""
        buf = rows if self.pending is None else np.concatenate([self.pending, rows], axis=1)
        end = self.pending_row0 + buf.shape[1]
        done = self.next_row
        while done < self.dst_h and self.last_row[done] < end:
            done += 1
        out: npt.NDArray[np.float32] | None = None
        if done > self.next_row and self.halves:
            out = np.empty((buf.shape[0], done - self.next_row, self.dst_w), dtype=np.float32)
            r0 = 2 * self.next_row - self.pending_row0
            for b in range(buf.shape[0]):
                _average_halves(buf[b, r0 : r0 + 2 * out.shape[1]], out[b], self.scratch)
            self.next_row = done
        elif done > self.next_row:
            out = np.empty((buf.shape[0], done - self.next_row, self.dst_w), dtype=np.float32)
            for j0 in range(self.next_row, done, _CHUNK_ROWS // 2):
                j1 = min(done, j0 + _CHUNK_ROWS // 2)
                r0, r1 = self.first_row[j0], self.last_row[j1 - 1] + 1
                y = (self.y[0][:, j0:j1] - r0, self.y[1][:, j0:j1])
                part = buf[:, r0 - self.pending_row0 : r1 - self.pending_row0]
                for b in range(buf.shape[0]):
                    out[b, j0 - self.next_row : j1 - self.next_row] = _average_weighted(part[b], self.x, y)
            self.next_row = done
        keep = self.first_row[done] if done < self.dst_h else end
        self.pending = buf[:, keep - self.pending_row0 :].copy() if keep < end else None
        self.pending_row0 = keep
        return out


@dataclass
class _LevelTiles:
    """One level's tiles as they are compressed: a temporary file of GDAL's COG tile records
    (byte count, data, last 4 bytes again), their offsets in it and sizes, and the level's
    row of tiles being filled."""

    width: int
    height: int
    path: str
    rows: npt.NDArray[np.float32]  # (bands, block, width): the row of tiles being filled
    filled: int = 0  # rows of ``rows`` filled
    done: int = 0  # rows of the level written out as tiles
    offsets: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    size: int = 0


class CogBuilder:
    """A COG of ``bands`` float32 bands of ``width`` x ``height`` pixels, its full resolution
    given a row of tiles at a time (:meth:`add_rows`); its overviews computed as the rows
    come, each level's tiles compressed as soon as its row of tiles is complete, into
    temporary files under ``workdir``. ``copied``: the entries copied into every IFD
    (georeferencing, GDAL metadata, nodata; see :data:`COPIED_TAGS`). ``level``: ISA-L's
    compression level (0..3). ``workspace``: where its working arrays come from (new ones
    when not given; one builder at a time per workspace)."""

    def __init__(
        self, width: int, height: int, bands: int, copied: list[Entry], workdir: str, *, block: int = 512, level: int = 1,
        workspace: Workspace | None = None,
    ) -> None:  # fmt: skip
        if not fits_classic_tiff(width, height, bands, block):
            raise TooLargeForClassicTiff(
                f"{width} x {height} x {bands} float32: too large for a classic TIFF"
            )
        self.bands, self.block, self.level, self.copied = bands, block, level, copied
        self.dir = tempfile.mkdtemp(prefix="cog-", dir=workdir)
        sizes = level_sizes(width, height, block)
        self.levels = [
            _LevelTiles(
                w, h, os.path.join(self.dir, f"level{i}.tiles"), np.empty((0, 0, 0), dtype=np.float32)
            )
            for i, (w, h) in enumerate(sizes)
        ]
        ws = workspace or Workspace()  # where the arrays come from: a thread's, reused month after month
        for i, lv in enumerate(self.levels[1:], start=1):
            lv.rows = ws.array(f"cog_level{i}_rows", (bands, min(block, lv.height), lv.width), np.float32)
        self.downsamplers = [
            _Downsampler(a, b, ws, str(i)) for i, (a, b) in enumerate(itertools.pairwise(sizes))
        ]
        self.edge = ws.array("cog_edge", (bands, block, block), np.float32)
        self.predictor = PredictorBuffers(
            bands, block, block, ws
        )  # every tile is block x block (edges padded)
        for lv in self.levels:
            open(lv.path, "wb").close()

    def add_rows(self, rows: npt.NDArray[np.float32]) -> None:
        """The next row of full-resolution tiles: ``(bands, rows, width)``, ``block`` rows
        (fewer for the last)."""
        full = self.levels[0]
        expected = min(self.block, full.height - full.done)
        if rows.shape != (self.bands, expected, full.width):
            raise ValueError(f"rows of shape {rows.shape}, expected {(self.bands, expected, full.width)}")
        self._write_tile_row(full, rows)
        self._cascade(0, rows)

    def _cascade(self, k: int, rows: npt.NDArray[np.float32]) -> None:
        if k >= len(self.downsamplers):
            return
        out = self.downsamplers[k].push(rows)
        if out is None:
            return
        lv = self.levels[k + 1]
        at = 0
        while at < out.shape[1]:
            take = min(out.shape[1] - at, lv.rows.shape[1] - lv.filled)
            lv.rows[:, lv.filled : lv.filled + take] = out[:, at : at + take]
            lv.filled += take
            at += take
            if lv.filled == min(self.block, lv.height - lv.done):
                self._write_tile_row(lv, lv.rows[:, : lv.filled])
                lv.filled = 0
        self._cascade(k + 1, out)

    def _write_tile_row(self, lv: _LevelTiles, rows: npt.NDArray[np.float32]) -> None:
        from isal import igzip_lib

        block = self.block
        h = rows.shape[1]
        with open(lv.path, "ab") as f:
            for c0 in range(0, lv.width, block):
                w = min(block, lv.width - c0)
                tile = rows[:, :, c0 : c0 + w]
                if h < block or w < block:  # an edge tile: padded with nodata
                    self.edge.fill(np.nan)
                    self.edge[:, :h, :w] = tile
                    tile = self.edge
                data = igzip_lib.compress(
                    predict_tile(tile, self.predictor), self.level, igzip_lib.COMP_ZLIB, igzip_lib.MEM_LEVEL_DEFAULT,
                    DEFLATE_HISTORY_BITS,
                )  # fmt: skip
                # three writes, not one of the three joined: no copy of the ~3 MB tile
                f.write(struct.pack("<I", len(data)))
                f.write(data)
                f.write(data[-4:])
                lv.offsets.append(lv.size + 4)
                lv.counts.append(len(data))
                lv.size += 4 + len(data) + 4
        lv.done += h

    def finish(self, dst_path: str) -> None:
        """Write the COG at ``dst_path`` (every row must have been added) and remove the
        temporary files."""
        try:
            for i, lv in enumerate(self.levels):
                if lv.done != lv.height:
                    raise ValueError(f"level {i}: {lv.done} of {lv.height} rows written")
            layout = []
            for i, lv in enumerate(self.levels):
                entries = _level_entries(
                    lv.width, lv.height, self.bands, self.block, len(lv.counts), i > 0, self.copied
                )
                layout.append(_Level(lv.width, lv.height, i - 1 if i else None, entries))
            head = GHOST + b"\0" * (len(GHOST) % 2)
            data_at = _layout(layout, 8 + len(head))
            size = data_at + sum(lv.size for lv in self.levels)
            if size > _CLASSIC_LIMIT:
                raise TooLargeForClassicTiff(f"{dst_path}: {size} bytes, too large for a classic TIFF")
            with open(dst_path, "wb") as out:
                out.write(b"II*\0" + struct.pack("<I", layout[0].ifd_at) + head)
                _write_ifds(out, layout)
                at = data_at
                for lv, place in reversed(list(zip(self.levels, layout, strict=True))):
                    out.seek(place.offsets_at)
                    out.write(struct.pack(f"<{len(lv.offsets)}I", *(at + o for o in lv.offsets)))
                    out.seek(place.counts_at)
                    out.write(struct.pack(f"<{len(lv.counts)}I", *lv.counts))
                    at += lv.size
                out.truncate(data_at)  # the tiles start at data_at (the IFDs may end a byte short)
                for lv in reversed(self.levels):  # smallest overview first, full resolution last
                    _append_file(out, lv.path)
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _append_file(out: BinaryIO, path: str) -> None:
    """Append ``path`` at the end of ``out`` (in the kernel where it can: copy_file_range)."""
    out.flush()
    out.seek(0, os.SEEK_END)
    with open(path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(src.fileno(), out.fileno(), size - copied)
                if n == 0:
                    break
                copied += n
        except OSError:  # a file system without it: copied in user space below
            pass
        out.seek(0, os.SEEK_END)  # copy_file_range moved the descriptor's offset
        if copied < size:
            src.seek(copied)
            shutil.copyfileobj(src, out, 8 * 1024 * 1024)


def write_cog(src_path: str, dst_path: str, *, block: int = 512, level: int = 1) -> None:
    """Write ``dst_path``, a COG of the float32 GTiff ``src_path``'s full resolution (read one
    row of tiles at a time; its own overviews, if any, are not read: :class:`CogBuilder`
    computes them), with its georeferencing, metadata and nodata. ``level`` is ISA-L's
    compression level (0..3)."""
    import rasterio
    from rasterio.windows import Window

    with open(src_path, "rb") as f:
        first = read_first_ifd(f)
    copied = [first[t] for t in COPIED_TAGS if t in first]
    with rasterio.open(src_path) as ds:
        if set(ds.dtypes) != {"float32"}:
            raise ValueError(f"{src_path}: write_cog writes float32 bands, not {ds.dtypes}")
        builder = CogBuilder(
            ds.width, ds.height, ds.count, copied, os.path.dirname(os.path.abspath(dst_path)), block=block, level=level
        )  # fmt: skip
        try:
            for r0 in range(0, ds.height, block):
                h = min(block, ds.height - r0)
                builder.add_rows(ds.read(window=Window(0, r0, ds.width, h), out_dtype=np.float32))
        except BaseException:
            builder.discard()
            raise
    builder.finish(dst_path)
