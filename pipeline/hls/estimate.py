"""The HLS dry run's figures: what a composite run will read, from the searches and the
output listing alone (no pixel is read).

A month is read window by window (``engine.windows``): per window, every scene's Fmask,
then the 8 bands of each scene with a usable pixel there. The estimate assumes every
scene is usable in every window (an upper bound: cloudy scenes cost less), one GET per
file per window (the window's 512-pixel-wide span of block rows is one byte range in a
COG) and one header GET per file opened. Bytes come from the HLS v2 file sizes
measured on real tiles, scaled by the tile's pixel count.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.hls import layout
from pipeline.hls.engine import TileYearPlan, windows
from targets.store import Store

# Compressed bytes per pixel of real HLS v2 files (DEFLATE COGs, 3660 x 3660): reflectance
# bands ~1.1 B (int16 halved by compression), Fmask ~0.08 B.
BAND_BYTES_PER_PIXEL = 1.1
FMASK_BYTES_PER_PIXEL = 0.08


@dataclass
class TileYearEstimate:
    tile: str
    year: int
    items: int
    unusable: int
    months: int
    months_done: int
    files: int
    gets: int
    bytes: int


def estimate_tile_year(plan: TileYearPlan, store: Store) -> TileYearEstimate:
    months = plan.months()
    present = store.list_names(layout.composite_dir(plan.tile, plan.year))
    todo = {
        m: sc for m, sc in months.items() if layout.composite_name(plan.tile, plan.year, m) not in present
    }
    files = gets = 0
    nbytes = 0.0
    if plan.grid is not None:
        pixels = plan.grid.width * plan.grid.height
        for scenes in todo.values():
            n_windows = sum(1 for _ in windows(plan.grid, len(scenes)))
            files += 9 * len(scenes)
            gets += 9 * len(scenes) * (1 + n_windows)
            nbytes += len(scenes) * pixels * (8 * BAND_BYTES_PER_PIXEL + FMASK_BYTES_PER_PIXEL)
    return TileYearEstimate(
        plan.tile, plan.year, len(plan.scenes) + len(plan.unusable), len(plan.unusable), len(months),
        len(months) - len(todo), files, gets, int(nbytes),
    )  # fmt: skip


def format_estimates(rows: list[TileYearEstimate], project_dir: str) -> str:
    head = f"{'tile':<6} {'year':>4} {'items':>6} {'unusable':>8} {'months':>6} {'done':>5} {'files':>7} {'GETs':>9} {'GB':>8}"
    lines = ["", "===== HLS dry run =====", f"outputs: {project_dir}", head]
    for r in rows:
        lines.append(
            f"{r.tile:<6} {r.year:>4} {r.items:>6} {r.unusable:>8} {r.months:>6} {r.months_done:>5} {r.files:>7} {r.gets:>9} {r.bytes / 1e9:>8.2f}"
        )
    total = TileYearEstimate(
        "total",
        0,
        *(
            sum(getattr(r, f) for r in rows)
            for f in ("items", "unusable", "months", "months_done", "files", "gets", "bytes")
        ),
    )
    lines.append(
        f"{'total':<6} {'':>4} {total.items:>6} {total.unusable:>8} {total.months:>6} {total.months_done:>5} {total.files:>7} {total.gets:>9} {total.bytes / 1e9:>8.2f}"
    )
    lines.append(
        "GETs assume every scene usable in every window (cloudy scenes cost less); nothing was read or written."
    )
    return "\n".join(lines) + "\n"
