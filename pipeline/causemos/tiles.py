"""The map dashboard's tile protobuf (package ``tiles``, proto3), encoded and decoded by hand.

Schema (``wm-proto/proto/tiles.proto``)::

    message TileStats { uint64 count = 1; double sum = 2; double avg = 3;
                        double s_sum_t_sum = 4; double s_sum_t_mean = 5; double weight = 6; }
    message TileBins  { map<uint32, TileStats> stats = 1; uint32 totalBins = 2; }
    message TileCoord { uint32 x = 1; uint32 y = 2; uint32 z = 3; int64 t = 4; }
    message Tile      { TileCoord coord = 1; TileBins bins = 2; }

Why by hand: four small messages, no protobuf runtime in the environment, and no protoc build step.
The bytes are what the reference's runtime (protobuf 4.25, upb) writes for the same tile: fields in
field-number order; proto3 scalars left out when zero (bitwise: ``-0.0`` is written); ``coord`` and
``bins`` always present, because the reference assigns into both; every map entry carries its key and
its value, even a zero key or an empty value. Map entries go out by ascending key; the reference writes
them in its hash table's order, so only the decoded tile can be compared with the reference's, never
the bytes of a tile with more than one bin.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5

_UINT32_MAX = (1 << 32) - 1
_UINT64_MASK = (1 << 64) - 1
_DOUBLE = struct.Struct("<d")


@dataclass
class TileStats:
    """One bin of a tile; the pipeline fills ``s_sum_t_sum``, ``s_sum_t_mean`` and ``weight`` (= s_count)."""

    count: int = 0
    sum: float = 0.0
    avg: float = 0.0
    s_sum_t_sum: float = 0.0
    s_sum_t_mean: float = 0.0
    weight: float = 0.0


@dataclass
class Tile:
    """A decoded ``tiles.Tile``: coordinates (``t`` is never set by the pipeline), bin count and bins."""

    z: int = 0
    x: int = 0
    y: int = 0
    t: int = 0
    total_bins: int = 0
    stats: dict[int, TileStats] = field(default_factory=dict)


# ---------------------------------------------------------------- encoding


def encode_varint(value: int) -> bytes:
    """Base-128 varint of a non-negative integer below 2**64 (negative int64 go through ``& _UINT64_MASK``)."""
    if value < 0 or value > _UINT64_MASK:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field_number: int, wire_type: int) -> bytes:
    return encode_varint((field_number << 3) | wire_type)


def _uint32_field(field_number: int, value: int) -> bytes:
    """A proto3 ``uint32``: nothing when 0; a value outside 0..2**32-1 is refused as protobuf refuses it."""
    if value < 0 or value > _UINT32_MAX:
        raise ValueError(f"uint32 field {field_number} out of range: {value}")
    return _key(field_number, WIRE_VARINT) + encode_varint(value) if value else b""


def _double_field(field_number: int, value: float) -> bytes:
    """A proto3 ``double``: nothing when its bits are all zero (so ``-0.0`` and NaN are written)."""
    packed = _DOUBLE.pack(value)
    return _key(field_number, WIRE_FIXED64) + packed if packed != b"\0" * 8 else b""


def _len_field(field_number: int, payload: bytes) -> bytes:
    return _key(field_number, WIRE_LEN) + encode_varint(len(payload)) + payload


def encode_stats(stats: TileStats) -> bytes:
    """``tiles.TileStats`` body."""
    count = b""
    if stats.count:
        count = _key(1, WIRE_VARINT) + encode_varint(stats.count & _UINT64_MASK)
    return b"".join(
        (
            count,
            _double_field(2, stats.sum),
            _double_field(3, stats.avg),
            _double_field(4, stats.s_sum_t_sum),
            _double_field(5, stats.s_sum_t_mean),
            _double_field(6, stats.weight),
        )
    )


def _coord_body(z: int, x: int, y: int, t: int) -> bytes:
    t_field = _key(4, WIRE_VARINT) + encode_varint(t & _UINT64_MASK) if t else b""
    return _uint32_field(1, x) + _uint32_field(2, y) + _uint32_field(3, z) + t_field


def _map_entry(key: int, value_body: bytes) -> bytes:
    """One ``stats`` map entry: key and value are always written (map entries have no field presence)."""
    if key < 0 or key > _UINT32_MAX:
        raise ValueError(f"bin index out of range: {key}")
    entry = _key(1, WIRE_VARINT) + encode_varint(key) + _len_field(2, value_body)
    return _len_field(1, entry)


def _tile_bytes(z: int, x: int, y: int, t: int, total_bins: int, entries: Iterable[bytes]) -> bytes:
    bins_body = b"".join(entries) + _uint32_field(2, total_bins)
    return _len_field(1, _coord_body(z, x, y, t)) + _len_field(2, bins_body)


def encode_tile(tile: Tile) -> bytes:
    """``tiles.Tile`` bytes of a :class:`Tile`, bins by ascending index."""
    entries = (_map_entry(key, encode_stats(tile.stats[key])) for key in sorted(tile.stats))
    return _tile_bytes(tile.z, tile.x, tile.y, tile.t, tile.total_bins, entries)


def encode_tile_arrays(
    z: int,
    x: int,
    y: int,
    bins: npt.ArrayLike,
    s_sum_t_sum: npt.ArrayLike,
    s_sum_t_mean: npt.ArrayLike,
    weight: npt.ArrayLike,
    total_bins: int,
) -> bytes:
    """``tiles.Tile`` bytes straight from per-bin arrays (one entry per distinct bin), as the pipeline fills them.

    Same bytes as :func:`encode_tile` on the equivalent :class:`Tile`.
    """
    bin_array = np.asarray(bins, dtype=np.int64)
    order = np.argsort(bin_array, kind="stable")
    (encoded,) = encode_tiles(
        z,
        [x],
        [y],
        [0],
        bin_array[order],
        np.asarray(s_sum_t_sum, dtype=np.float64)[order],
        np.asarray(s_sum_t_mean, dtype=np.float64)[order],
        np.asarray(weight, dtype=np.float64)[order],
        total_bins,
    )
    return encoded


# Byte layout of one map entry, at most 34 bytes (bins < 2**14, so the key takes 1 or 2 bytes):
# 0a <entry len> 08 <key lo> [key hi] 12 <value len> [21 <8>] [29 <8>] [31 <8>]
_ENTRY_WIDTH = 34
_DOUBLE_AT = (7, 16, 25)  # tag positions of s_sum_t_sum (4), s_sum_t_mean (5), weight (6)
_DOUBLE_TAGS = (0x21, 0x29, 0x31)


def _entries_bytes(bins: np.ndarray, doubles: np.ndarray) -> tuple[bytes, np.ndarray]:
    """All map entries of many tiles in one numpy pass: their bytes, concatenated, and each entry's end offset."""
    count = len(bins)
    raw = np.ascontiguousarray(doubles, dtype="<f8").view(np.uint8).reshape(count, 3, 8)
    present: np.ndarray = np.asarray(raw.any(axis=2))  # bitwise non-zero, as proto3 decides
    two_byte_key = bins >= 0x80
    value_len = 9 * present.sum(axis=1)
    entry_len = 4 + two_byte_key + value_len
    matrix = np.zeros((count, _ENTRY_WIDTH), dtype=np.uint8)
    keep = np.zeros((count, _ENTRY_WIDTH), dtype=bool)
    matrix[:, 0] = 0x0A
    matrix[:, 1] = entry_len
    matrix[:, 2] = 0x08
    matrix[:, 3] = np.where(two_byte_key, (bins & 0x7F) | 0x80, bins)
    matrix[:, 4] = bins >> 7
    matrix[:, 5] = 0x12
    matrix[:, 6] = value_len
    keep[:, [0, 1, 2, 3, 5, 6]] = True
    keep[:, 4] = two_byte_key
    for index, (at, tag) in enumerate(zip(_DOUBLE_AT, _DOUBLE_TAGS, strict=True)):
        matrix[:, at] = tag
        matrix[:, at + 1 : at + 9] = raw[:, index, :]
        keep[:, at : at + 9] = present[:, index : index + 1]
    ends = np.cumsum(2 + entry_len)
    return matrix[keep].tobytes(), ends


def encode_tiles(
    z: int,
    xs: npt.ArrayLike,
    ys: npt.ArrayLike,
    starts: npt.ArrayLike,
    bins: npt.ArrayLike,
    s_sum_t_sum: npt.ArrayLike,
    s_sum_t_mean: npt.ArrayLike,
    weight: npt.ArrayLike,
    total_bins: int,
) -> list[bytes]:
    """``tiles.Tile`` bytes of many tiles of one zoom at once (why: a run has hundreds of thousands of tiles).

    Tile ``i`` is ``(z, xs[i], ys[i])`` and owns the bins ``starts[i]`` up to ``starts[i + 1]`` (or the end);
    within a tile, bins must be distinct and are written in the given order (ascending for :func:`encode_tile`'s
    bytes). Bins must lie in ``0..2**14-1`` (a 64 x 64 tile has 4096).
    """
    bin_array = np.asarray(bins, dtype=np.int64)
    if len(bin_array) and (bin_array.min() < 0 or bin_array.max() >= 1 << 14):
        raise ValueError("bin index out of range 0..16383")
    doubles = (
        np.column_stack(
            [
                np.asarray(s_sum_t_sum, dtype=np.float64),
                np.asarray(s_sum_t_mean, dtype=np.float64),
                np.asarray(weight, dtype=np.float64),
            ]
        )
        if len(bin_array)
        else np.zeros((0, 3))
    )
    body, ends = _entries_bytes(bin_array, doubles)
    first = np.asarray(starts, dtype=np.int64)
    offsets = np.r_[0, ends][np.r_[first, len(bin_array)]].tolist()
    total_field = _uint32_field(2, total_bins)
    encoded = []
    for index, (x, y) in enumerate(zip(np.asarray(xs).tolist(), np.asarray(ys).tolist(), strict=True)):
        bins_body = body[offsets[index] : offsets[index + 1]] + total_field
        encoded.append(_len_field(1, _coord_body(z, int(x), int(y), 0)) + _len_field(2, bins_body))
    return encoded


# ---------------------------------------------------------------- decoding


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _UINT64_MASK, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def iter_fields(data: bytes) -> Iterable[tuple[int, int, int | float | bytes]]:
    """``(field number, wire type, value)`` of every field of one message body, unknown fields included.

    Varints come as unsigned 64-bit integers, fixed64 as doubles (the only fixed64 type of this schema),
    fixed32 as raw 4 bytes, length-delimited as bytes.
    """
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field_number, wire_type = key >> 3, key & 7
        if field_number == 0:
            raise ValueError("field number 0")
        value: int | float | bytes
        if wire_type == WIRE_VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type == WIRE_FIXED64:
            if pos + 8 > len(data):
                raise ValueError("truncated fixed64")
            value = _DOUBLE.unpack_from(data, pos)[0]
            pos += 8
        elif wire_type == WIRE_LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated length-delimited field")
            value = data[pos : pos + length]
            pos += length
        elif wire_type == WIRE_FIXED32:
            if pos + 4 > len(data):
                raise ValueError("truncated fixed32")
            value = data[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield field_number, wire_type, value


def _as_int(value: float | bytes, wire_type: int) -> int:
    if wire_type != WIRE_VARINT or not isinstance(value, int):
        raise ValueError("expected a varint")
    return value


def _as_double(value: float | bytes, wire_type: int) -> float:
    if wire_type != WIRE_FIXED64 or not isinstance(value, float):
        raise ValueError("expected a double")
    return value


def _as_bytes(value: float | bytes, wire_type: int) -> bytes:
    if wire_type != WIRE_LEN or not isinstance(value, bytes):
        raise ValueError("expected a length-delimited field")
    return value


def decode_stats(data: bytes, into: TileStats | None = None) -> TileStats:
    """``tiles.TileStats`` body; fields seen twice keep the last value, as protobuf merges."""
    stats = into if into is not None else TileStats()
    doubles = {2: "sum", 3: "avg", 4: "s_sum_t_sum", 5: "s_sum_t_mean", 6: "weight"}
    for number, wire, value in iter_fields(data):
        if number == 1:
            stats.count = _as_int(value, wire)
        elif number in doubles:
            setattr(stats, doubles[number], _as_double(value, wire))
    return stats


def _decode_coord(data: bytes, tile: Tile) -> None:
    for number, wire, value in iter_fields(data):
        if number in (1, 2, 3):
            setattr(tile, {1: "x", 2: "y", 3: "z"}[number], _as_int(value, wire) & _UINT32_MAX)
        elif number == 4:
            raw = _as_int(value, wire)
            tile.t = raw - (1 << 64) if raw >> 63 else raw


def _decode_bins(data: bytes, tile: Tile) -> None:
    for number, wire, value in iter_fields(data):
        if number == 1:
            key = 0
            stats = TileStats()
            for entry_number, entry_wire, entry_value in iter_fields(_as_bytes(value, wire)):
                if entry_number == 1:
                    key = _as_int(entry_value, entry_wire) & _UINT32_MAX
                elif entry_number == 2:
                    decode_stats(_as_bytes(entry_value, entry_wire), stats)
            tile.stats[key] = stats
        elif number == 2:
            tile.total_bins = _as_int(value, wire) & _UINT32_MAX


def decode_tile(data: bytes) -> Tile:
    """A ``tiles.Tile`` from its bytes (ours or the reference's); unknown fields are skipped."""
    tile = Tile()
    for number, wire, value in iter_fields(data):
        if number == 1:
            _decode_coord(_as_bytes(value, wire), tile)
        elif number == 2:
            _decode_bins(_as_bytes(value, wire), tile)
    return tile


def tiles_equal(left: Tile, right: Tile) -> bool:
    """Decoded tiles equal, NaN bins equal to NaN bins (dataclass ``==`` says NaN != NaN)."""
    if (left.z, left.x, left.y, left.t, left.total_bins) != (
        right.z,
        right.x,
        right.y,
        right.t,
        right.total_bins,
    ):
        return False
    if left.stats.keys() != right.stats.keys():
        return False
    for key, a in left.stats.items():
        b = right.stats[key]
        if a.count != b.count:
            return False
        for name in ("sum", "avg", "s_sum_t_sum", "s_sum_t_mean", "weight"):
            va, vb = getattr(a, name), getattr(b, name)
            if not (va == vb or (math.isnan(va) and math.isnan(vb))):
                return False
    return True
