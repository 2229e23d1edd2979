"""The tile protobuf, by hand: bytes worked out from the proto3 wire format, and round trips."""

import math
import struct

import numpy as np
import pytest

from pipeline.causemos import tiles
from pipeline.causemos.tiles import Tile, TileStats


def test_varints_by_hand():
    assert tiles.encode_varint(0) == b"\x00"
    assert tiles.encode_varint(127) == b"\x7f"
    assert tiles.encode_varint(128) == b"\x80\x01"
    assert tiles.encode_varint(300) == b"\xac\x02"  # 300 = 0b10_0101100 -> 0xac 0x02
    assert tiles.encode_varint(4096) == b"\x80\x20"
    assert tiles.encode_varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(ValueError):
        tiles.encode_varint(-1)


# Tile z=8, x=156, y=120 with one bin 3001 = {s_sum_t_sum 96, s_sum_t_mean 48, weight 3}, totalBins 4096
# (the spec's tile `0-8-156-120`, bin 3001). Worked out field by field:
#   coord body: 08 9c01 (x=156: 156&0x7f=0x1c|0x80, 156>>7=1)  10 78 (y=120)  18 08 (z=8)   -> 7 bytes
#   stats value: 21 + 96.0 = 0x4058000000000000 LE, 29 + 48.0 = 0x4048..., 31 + 3.0 = 0x4008...  -> 27 bytes
#   map entry: 08 b917 (key 3001 = 0xbb9: 0x39|0x80, 3001>>7 = 0x17)  12 1b <27 bytes>             -> 32 bytes
#   bins body: 0a 20 <entry>  10 8020 (totalBins 4096)                                             -> 37 bytes
#   tile: 0a 07 <coord>  12 25 <bins>
ONE_BIN_TILE = bytes.fromhex(
    "0a07089c011078180812250a2008b917121b210000000000005840290000000000004840310000000000000840108020"
)


def test_one_bin_tile_bytes_by_hand():
    tile = Tile(
        z=8,
        x=156,
        y=120,
        total_bins=4096,
        stats={3001: TileStats(s_sum_t_sum=96.0, s_sum_t_mean=48.0, weight=3.0)},
    )
    assert tiles.encode_tile(tile) == ONE_BIN_TILE
    assert len(ONE_BIN_TILE) == 48
    fast = tiles.encode_tile_arrays(8, 156, 120, [3001], [96.0], [48.0], [3], 4096)
    assert fast == ONE_BIN_TILE
    assert tiles.decode_tile(ONE_BIN_TILE) == tile


def test_zero_coordinates_and_zero_key_are_still_written():
    # tile 0-0-0: coord present but empty (0a 00); bin 0 with an all-zero value: entry 08 00 12 00
    tile = Tile(z=0, x=0, y=0, total_bins=4096, stats={0: TileStats()})
    assert tiles.encode_tile(tile) == bytes.fromhex("0a0012090a0408001200108020")
    assert tiles.decode_tile(tiles.encode_tile(tile)) == tile


def test_negative_zero_and_nan_are_written_zero_is_not():
    body = tiles.encode_stats(TileStats(s_sum_t_sum=0.0, s_sum_t_mean=-0.0, weight=float("nan")))
    assert body[:1] == b"\x29" and body[1:9] == struct.pack("<d", -0.0)
    assert body[9:10] == b"\x31" and math.isnan(struct.unpack("<d", body[10:18])[0])
    assert len(body) == 18


def test_round_trip_many_bins_all_fields():
    stats = {
        4095: TileStats(s_sum_t_sum=1e300, s_sum_t_mean=-2.5, weight=7.0),
        0: TileStats(s_sum_t_sum=0.1 + 0.2, weight=1.0),
        1957: TileStats(s_sum_t_sum=120.0, s_sum_t_mean=60.0, weight=2.0),
        1959: TileStats(count=2**40, sum=3.0, avg=1.5, s_sum_t_sum=96.0, s_sum_t_mean=48.0, weight=3.0),
    }
    tile = Tile(z=3, x=2**32 - 1, y=5, t=-1546300800000, total_bins=4096, stats=stats)
    decoded = tiles.decode_tile(tiles.encode_tile(tile))
    assert decoded == tile
    assert list(decoded.stats) == [0, 1957, 1959, 4095]  # written by ascending bin


def test_arrays_and_objects_encode_alike():
    bins = np.array([1959, 1957, 3])
    sums = np.array([96.0, 120.0, 0.0])
    means = np.array([48.0, 60.0, 0.0])
    weights = np.array([3.0, 2.0, 0.0])
    fast = tiles.encode_tile_arrays(0, 0, 0, bins, sums, means, weights, 4096)
    slow = tiles.encode_tile(
        Tile(
            total_bins=4096,
            stats={
                1959: TileStats(s_sum_t_sum=96.0, s_sum_t_mean=48.0, weight=3.0),
                1957: TileStats(s_sum_t_sum=120.0, s_sum_t_mean=60.0, weight=2.0),
                3: TileStats(),
            },
        )
    )
    assert fast == slow


def test_decoder_skips_unknown_fields_and_merges_like_protobuf():
    unknown = bytes.fromhex("38054d01020304520161")  # varint field 7, fixed32 field 9, bytes field 10
    entry_a = bytes.fromhex("0805120931000000000000f03f")  # bin 5, weight 1.0
    entry_b = bytes.fromhex("08021209210000000000000040")  # bin 2, s_sum_t_sum 2.0
    bins = (
        b"\x0a"
        + bytes([len(entry_a)])
        + entry_a
        + b"\x0a"
        + bytes([len(entry_b)])
        + entry_b
        + b"\x10\x80\x20"
    )
    data = unknown + b"\x12" + bytes([len(bins)]) + bins + b"\x0a\x02\x18\x07" + b"\x0a\x02\x08\x09"
    tile = tiles.decode_tile(data)
    assert (tile.z, tile.x, tile.y, tile.total_bins) == (7, 9, 0, 4096)  # two coord fields merge
    assert tile.stats == {5: TileStats(weight=1.0), 2: TileStats(s_sum_t_sum=2.0)}


def test_refuses_out_of_range_and_truncated():
    with pytest.raises(ValueError):
        tiles.encode_tile(Tile(x=-1))
    with pytest.raises(ValueError):
        tiles.encode_tile(Tile(y=2**32))
    with pytest.raises(ValueError):
        tiles.decode_tile(ONE_BIN_TILE[:-1])


def test_tiles_equal_treats_nan_bins_as_equal():
    a = Tile(stats={1: TileStats(s_sum_t_mean=float("nan"))})
    b = Tile(stats={1: TileStats(s_sum_t_mean=float("nan"))})
    assert a != b  # dataclass equality: NaN != NaN
    assert tiles.tiles_equal(a, b)
    assert not tiles.tiles_equal(a, Tile(stats={1: TileStats()}))


def test_batch_encoding_matches_by_hand_and_per_tile_bytes():
    # three tiles of zoom 8 in one pass: the by-hand tile, one with no bins, one with keys below and above 128
    blobs = tiles.encode_tiles(
        8,
        [156, 3, 4],
        [120, 0, 1],
        [0, 1, 1],
        [3001, 5, 200],
        [96.0, 0.0, 1.5],
        [48.0, 0.0, -0.0],
        [3.0, 0.0, 2.0],
        4096,
    )
    assert blobs[0] == ONE_BIN_TILE
    assert blobs[1] == bytes.fromhex("0a04080318081203108020")  # x=3 (field 1), y=0 omitted, z=8
    assert blobs[2] == tiles.encode_tile(
        Tile(
            z=8,
            x=4,
            y=1,
            total_bins=4096,
            stats={
                5: TileStats(),  # all zero: entry 0a 04 08 05 12 00
                200: TileStats(s_sum_t_sum=1.5, s_sum_t_mean=-0.0, weight=2.0),
            },
        )
    )
    assert tiles.decode_tile(blobs[2]).stats[5] == TileStats()
    with pytest.raises(ValueError):
        tiles.encode_tiles(0, [0], [0], [0], [1 << 14], [1.0], [1.0], [1.0], 4096)
