"""The QA report frame every workflow's report is built on: Jinja2 templates (a shared
base page with its stylesheet, one template per page kind), image helpers that turn arrays
into PNGs, and writing pages into a project directory (local, ``s3://``, ``az://``).

Pages are static: no external assets, only relative links, so a report opens from disk
and from a synced copy of an object-store project.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2
import numpy as np
import numpy.typing as npt

from pipeline.png import encode_rgb_png
from targets.store import Store


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty cell
    )


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_page(store: Store, rel: str, template: str, **context: Any) -> None:
    store.write_text(rel, render(template, **context))


def stretch_rgb(
    bands: npt.NDArray[np.floating[Any]], lo_pct: float = 2.0, hi_pct: float = 98.0
) -> npt.NDArray[np.uint8]:
    """``(3, rows, cols)`` values -> ``(rows, cols, 3)`` uint8, each channel stretched
    between its own percentiles of the finite values; NaN pixels black."""
    out = np.zeros((bands.shape[1], bands.shape[2], 3), dtype=np.uint8)
    for i in range(3):
        band = bands[i].astype(np.float64)
        finite = np.isfinite(band)
        if not finite.any():
            continue
        lo, hi = np.percentile(band[finite], [lo_pct, hi_pct])
        scaled = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1) * 255
        out[..., i] = np.where(finite, np.round(scaled), 0).astype(np.uint8)
    return out


# viridis at 9 stops, for small count maps without matplotlib
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [72, 40, 120],
        [62, 74, 137],
        [49, 104, 142],
        [38, 130, 142],
        [31, 158, 137],
        [53, 183, 121],
        [109, 205, 89],
        [180, 222, 44],
    ],
    dtype=np.float64,
)


def colormap_png(values: npt.NDArray[Any], vmax: float) -> bytes:
    """A 2-D array of counts as a viridis PNG scaled 0..``vmax`` (0 drawn dark red, so
    pixels with no usable value stand out)."""
    v = np.nan_to_num(values.astype(np.float64), nan=0.0)
    t = np.clip(v / max(vmax, 1.0), 0, 1) * (len(_VIRIDIS) - 1)
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, len(_VIRIDIS) - 1)
    frac = (t - i0)[..., None]
    rgb = _VIRIDIS[i0] * (1 - frac) + _VIRIDIS[i1] * frac
    rgb[v <= 0] = (120, 0, 0)
    return encode_rgb_png(np.round(rgb).astype(np.uint8))


def rgb_png(bands: npt.NDArray[np.floating[Any]]) -> bytes:
    return encode_rgb_png(stretch_rgb(bands))
