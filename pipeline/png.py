"""PNG encoding for chips: an 8-bit RGB image in one IDAT chunk, every row with the
"Up" filter, deflated by ISA-L (python-isal) when it is installed, else by zlib.

Pixels are what matters (the contract is pixel-exact, not byte-exact). Pillow's PNG
writer picks a filter per row by trying all five and deflates with zlib: about 6.5 ms
per 255 x 255 chip here; this writer takes about 1 ms for files of the same size
(measured on TimeSync chips: 88.6 KiB vs 87.9 KiB at Pillow's compress_level 1).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2


def _deflate_function() -> Callable[[bytes], bytes]:
    try:
        from isal import isal_zlib
    except ImportError:  # no wheel for this platform: zlib, slower, same pixels
        return lambda data: zlib.compress(data, 1)
    # ISA-L level 2 (of 0-3): the best size for the time on chips; a zlib stream any decoder reads.
    return lambda data: isal_zlib.compress(data, 2)


_deflate = _deflate_function()


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_rgb_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """PNG bytes of an ``(rows, cols, 3)`` uint8 array."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a (rows, cols, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    rows, cols, _ = rgb.shape
    raw = rgb.reshape(rows, cols * 3)
    filtered = np.empty((rows, cols * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = raw[0]  # the row above the first row is zeros
    np.subtract(raw[1:], raw[:-1], out=filtered[1:, 1:])  # modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0)  # 8 bit, truecolour, deflate, no interlace
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", _deflate(filtered.tobytes()))
        + _chunk(b"IEND", b"")
    )
