"""The TimeSync recipe as pure numpy: no I/O, so every step can be tested cell by cell.

Numbers are the contract of ``shared/spec/timesync.md``. Arrays are band-first
``(bands, rows, cols)``; the mosaic of an observation's items is their band-wise sum
(ARD tiles do not overlap, and a boundless read is 0 outside its own tile).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

OPTICAL_BANDS: Final = ("blue", "green", "red", "nir08", "swir16", "swir22")
QA_BAND: Final = "qa_pixel"
ALL_BANDS: Final = (*OPTICAL_BANDS, QA_BAND)

FILL_REFLECTANCE: Final = -2000  # what DN 0 becomes after rescaling

QA_FILL: Final = 1 << 0
QA_CLEAR: Final = 1 << 6
QA_WATER: Final = 1 << 7

# Tasseled cap coefficients over (blue, green, red, nir08, swir16, swir22).
TC_COEFFICIENTS: Final = (
    (0.2043, 0.4158, 0.5524, 0.5741, 0.3124, 0.2303),  # brightness
    (-0.1603, -0.2819, -0.4934, 0.7940, -0.0002, -0.1446),  # greenness
    (0.0315, 0.2021, 0.3102, 0.1594, -0.6806, -0.6109),  # wetness
)

# Composite channels (indices into OPTICAL_BANDS) and stretch bounds (lo, hi) per channel.
_B = {name: i for i, name in enumerate(OPTICAL_BANDS)}
COMPOSITE_BANDS: Final = {
    "b432": (_B["nir08"], _B["red"], _B["green"]),
    "b743": (_B["swir22"], _B["nir08"], _B["red"]),
}
STRETCH: Final = {
    "tc": ((604, 5592), (49, 3147), (-2245, 843)),
    "b743": ((-904, 3696), (151, 4951), (-300, 2500)),
    "b432": ((151, 4951), (-300, 2500), (50, 1150)),
}
COMPOSITES: Final = ("tc", "b743", "b432")

SPECTRAL_COLUMNS: Final = (
    "sensor", "project_id", "plot_id", "hv", "year", "doy",
    "blue", "green", "red", "nir", "swir1", "swir2", "qa", "date",
)  # fmt: skip

IntArray = npt.NDArray[np.integer]
FloatArray = npt.NDArray[np.float64]


def rescale(dn: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Collection 2 DN to the Collection 1 scale: ``int16(trunc((DN * 0.0000275 - 0.2) * 10000))``.

    Computed in float64 in exactly that order; truncation is toward zero, so DN 7000
    (reflectance -0.0075) becomes -75, not -76. DN 0 (fill) becomes -2000.
    """
    x = np.asarray(dn, dtype=np.float64)
    return np.trunc((x * 0.0000275 - 0.2) * 10000).astype(np.int16)


def mask_of(optical: npt.NDArray[np.int16]) -> npt.NDArray[np.bool_]:
    """True where any of the six rescaled optical bands (axis 0) is fill (-2000)."""
    return np.asarray(np.any(optical == FILL_REFLECTANCE, axis=0))


def tasseled_cap(optical: npt.NDArray[np.int16]) -> FloatArray:
    """Brightness, greenness, wetness as float64 ``(3, rows, cols)``: see :func:`tasseled_cap_channels`."""
    out = np.empty((len(TC_COEFFICIENTS), *optical.shape[1:]), dtype=np.float64)
    for k, channel in enumerate(tasseled_cap_channels(optical)):
        out[k] = channel
    return out


def tasseled_cap_channels(optical: npt.NDArray[np.int16]) -> Iterator[FloatArray]:
    """Brightness, greenness and wetness in turn, each a fresh float64 ``(rows, cols)`` array,
    computed with the very call the recipe makes: the six rescaled int16 bands stacked on the
    last axis (a C-contiguous ``(rows, cols, 6)`` array) and ``np.tensordot(arr,
    coefficients, axes=1)`` once per channel, the coefficients a Python list.

    Why that call: it is a float64 matrix-vector product through numpy's BLAS, whose
    summation order is not left to right, and at a stretch's truncation boundary the last bit
    decides a uint8. Another order, layout or dtype can take another BLAS path and differ by
    1 from the recipe's output on the same machine; the contract is the recipe's output.

    The stacked array is handed to ``tensordot`` already converted to float64, in a buffer
    kept per thread: numpy's ``dot`` of an int16 matrix and a float64 vector converts the
    matrix to exactly that (a C-contiguous float64 copy, every int16 exact) before calling
    ``cblas_dgemv``, so the BLAS call and its result are the same bits
    (tests/test_recipe.py compares them with the int16 call). Converting once instead of
    once per channel saves two 3 MB temporaries per chip, whose allocation (glibc maps and
    unmaps blocks that size) tripled the CPU time of a whole chip."""
    if optical.dtype != np.int16:
        optical = optical.astype(np.int16)  # the recipe's bands are int16 after rescaling
    arr = _stack_buffer((*optical.shape[1:], optical.shape[0]))
    np.stack(list(optical), axis=2, out=arr)
    for coefficients in TC_COEFFICIENTS:
        yield np.tensordot(arr, list(coefficients), axes=1)


_buffers = threading.local()


def _stack_buffer(shape: tuple[int, ...]) -> FloatArray:
    """A float64 array of ``shape`` reused by the calling thread (Dask runs chips on threads)."""
    buffer: FloatArray | None = getattr(_buffers, "stack", None)
    if buffer is None or buffer.shape != shape:
        buffer = np.empty(shape, dtype=np.float64)
        _buffers.stack = buffer
    return buffer


def composite(name: str, optical: npt.NDArray[np.int16]) -> FloatArray:
    """The 3-channel composite ``name`` (tc, b743 or b432) before stretching."""
    if name == "tc":
        return tasseled_cap(optical)
    return optical[list(COMPOSITE_BANDS[name])].astype(np.float64)


def stretch(
    channels: FloatArray, bounds: tuple[tuple[int, int], ...], mask: npt.NDArray[np.bool_]
) -> npt.NDArray[np.uint8]:
    """Linear stretch per channel: ``v = (255 / (hi - lo)) * (x - lo)``, clipped to [0, 255],
    truncated to uint8; masked pixels become 0 in every channel."""
    out = np.empty(channels.shape, dtype=np.uint8)
    for k, (lo, hi) in enumerate(bounds):
        v = (255 / (hi - lo)) * (channels[k] - lo)
        out[k] = np.clip(v, 0, 255).astype(np.uint8)
    out[:, mask] = 0
    return out


def qa_flag(qa_value: int) -> int:
    """0 when fill is clear and clear or water is set (a usable pixel), else 1."""
    if qa_value & QA_FILL:
        return 1
    return 0 if qa_value & (QA_CLEAR | QA_WATER) else 1


def is_fill(qa_value: int | None) -> bool:
    """Fill test of one item at the plot; ``None`` (point outside the raster) is fill."""
    return qa_value is None or bool(qa_value & QA_FILL)


@dataclass(frozen=True)
class ObservationImages:
    """What one observation yields: RGB arrays (rows, cols, 3) per composite and the
    centre-pixel values of the rescaled bands and QA."""

    images: dict[str, npt.NDArray[np.uint8]]
    centre: tuple[int, int, int, int, int, int]
    qa: int


def mosaic(windows: Sequence[IntArray]) -> npt.NDArray[np.int64]:
    """Band-wise sum of the items' windows (each ``(bands, rows, cols)``)."""
    total = np.zeros(windows[0].shape, dtype=np.int64)
    for w in windows:
        total += w
    return total


def process_observation(mosaic_dn: npt.NDArray[np.integer]) -> ObservationImages:
    """Apply the recipe to a mosaicked observation ``(7, rows, cols)`` in ALL_BANDS order."""
    rows, cols = mosaic_dn.shape[1:]
    qa_centre = int(mosaic_dn[len(OPTICAL_BANDS), rows // 2, cols // 2])
    return process_optical(mosaic_dn[: len(OPTICAL_BANDS)], qa_centre)


def process_optical(optical_dn: npt.NDArray[np.integer], qa_centre: int) -> ObservationImages:
    """The recipe from the six optical bands ``(6, rows, cols)`` and the mosaicked
    ``qa_pixel`` value at the centre: the only QA pixel the outputs use (the mask comes
    from the optical bands), so a reader need not fetch the QA window.

    Same numbers as :func:`rescale`, :func:`composite` and :func:`stretch` applied in turn
    (tests/test_recipe.py checks it over the whole uint16 range): where a step is a
    function of one integer, it is a lookup table computed from that function."""
    optical = _rescale_fast(optical_dn)
    mask = mask_of(optical)
    offset = optical.view(np.uint16) ^ np.uint16(0x8000)  # int16 v -> v + 32768, the table index
    rows, cols = optical.shape[1:]
    images = {}
    for name in COMPOSITES:
        image = np.empty((rows, cols, 3), dtype=np.uint8)  # written in place: no stack, no transpose copy
        if name == "tc":
            for k, (channel, (lo, hi)) in enumerate(
                zip(tasseled_cap_channels(optical), STRETCH[name], strict=True)
            ):
                # stretch(), one channel at a time, in the channel's own array: the same operations
                np.subtract(channel, lo, out=channel)
                np.multiply(255 / (hi - lo), channel, out=channel)
                np.clip(channel, 0, 255, out=channel)
                image[..., k] = channel  # the unsafe cast astype(np.uint8) makes: truncation
        else:
            for k, band in enumerate(COMPOSITE_BANDS[name]):
                np.take(
                    _stretch_table(name, k), offset[band], out=image[..., k], mode="clip"
                )  # indices are in range
        image[mask] = 0
        images[name] = image
    r, c = rows // 2, cols // 2
    centre = tuple(int(v) for v in optical[:, r, c])
    return ObservationImages(images=images, centre=centre, qa=qa_flag(qa_centre))  # type: ignore[arg-type]


_RESCALE_TABLE: Final = rescale(np.arange(1 << 16))


def _rescale_fast(dn: npt.NDArray[np.integer]) -> npt.NDArray[np.int16]:
    if dn.dtype != np.uint16 and (dn.min() < 0 or dn.max() >= 1 << 16):
        return rescale(dn)  # not a uint16 DN (a mosaic of overlapping items): compute
    return np.take(_RESCALE_TABLE, dn)


_STRETCH_TABLES: dict[tuple[str, int], npt.NDArray[np.uint8]] = {}


def _stretch_table(name: str, channel: int) -> npt.NDArray[np.uint8]:
    """Stretched uint8 of every int16 value of one channel of a band composite, indexed by
    value + 32768."""
    key = (name, channel)
    if key not in _STRETCH_TABLES:
        values = np.arange(-(1 << 15), 1 << 15, dtype=np.float64)[np.newaxis]
        no_mask = np.zeros(values.shape[1:], dtype=bool)
        _STRETCH_TABLES[key] = stretch(values, (STRETCH[name][channel],), no_mask)[0]
    return _STRETCH_TABLES[key]


def spectral_row(
    *, sensor: str, project_id: str, plot_id: str, hv: str, year: int, doy: int,
    centre: tuple[int, ...], qa: int, date: str,
) -> list[str]:  # fmt: skip
    """One spectral row as text cells, in SPECTRAL_COLUMNS order."""
    return [sensor, project_id, plot_id, hv, str(year), str(doy), *(str(v) for v in centre), str(qa), date]


def format_csv(rows: list[list[str]], *, header: bool = True) -> str:
    """CSV text with '\\n' line ends. Cells are ids, integers and ISO datetimes: plain text
    (ids with a comma, quote or newline are refused when the plot file is read)."""
    lines = [",".join(SPECTRAL_COLUMNS)] if header else []
    lines.extend(",".join(r) for r in rows)
    return "".join(line + "\n" for line in lines)
