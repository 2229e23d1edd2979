"""The datacube dry run's figures: what a run will read, from the selections and the output
listing alone (no pixel is read).

A chip reads, from every source file of its (tile, date) (10 S2 bands, SCL, ``vh`` and ``vv`` of
each S1 item, each DEM tile), the blocks under its footprint. The estimate counts one header GET
per file per Dask task (a task opens each file once for its chips) and one ranged GET per file
per chip (GDAL merges a window's adjacent blocks), and bytes from typical compressed sizes per
source pixel, scaled to the chip's footprint at each source's resolution. Chips already written
cost nothing; chips that will be dropped cost as much as kept ones (the filter needs the pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.datacube import engine, layout, recipe
from targets.store import Store

# Compressed bytes per source pixel (DEFLATE COGs): S2 uint16 bands ~1.6 B, SCL ~0.2 B, S1 RTC
# float32 ~3 B, Copernicus DEM float32 ~2 B.
S2_BYTES_PER_PIXEL = 1.6
SCL_BYTES_PER_PIXEL = 0.2
S1_BYTES_PER_PIXEL = 3.0
DEM_BYTES_PER_PIXEL = 2.0
TEN_METRE = ("B02", "B03", "B04", "B08")
DEM_PIXEL_METRES = 30.0


@dataclass
class DateEstimate:
    mgrs: str
    day: str
    chips: int
    chips_done: int
    files: int
    gets: int
    bytes: int


def estimate_date(
    store: Store, entry: dict[str, Any], job: engine.DateJob, numbers: list[int], scope: str
) -> DateEstimate:
    present = store.list_names(layout.chip_dir(job.version, job.mgrs, job.day))
    done = sum(1 for n in numbers if job.chip_path(n).rsplit("/", 1)[-1] in present)
    if store.exists(layout.chip_manifest(job.version, job.mgrs, job.day, scope)):
        done = len(numbers)  # complete: dropped chips are not stacked again either
    todo = len(numbers) - done
    files = len(recipe.S2_BANDS) + 1 + 2 * len(job.s1) + len(job.dem)
    tasks = math.ceil(todo / engine.DEFAULT_CHIPS_PER_DASK_TASK)
    pixels = job.chip_size**2
    per_chip = (
        sum(pixels * S2_BYTES_PER_PIXEL / (1 if b in TEN_METRE else 4) for b in recipe.S2_BANDS)
        + pixels / 4 * SCL_BYTES_PER_PIXEL
        + 2 * len(job.s1) * pixels * S1_BYTES_PER_PIXEL
        + pixels * (recipe.S2_RESOLUTION / DEM_PIXEL_METRES) ** 2 * DEM_BYTES_PER_PIXEL
    )
    return DateEstimate(
        job.mgrs,
        f"{job.day:%Y-%m-%d}",
        len(numbers),
        done,
        files,
        files * (tasks + todo),
        int(per_chip * todo),
    )


def format_estimates(rows: list[tuple[dict[str, Any], list[DateEstimate]]], dest: str) -> str:
    head = f"{'row':>6} {'tile':<6} {'date':<10} {'chips':>6} {'done':>6} {'files':>5} {'GETs':>8} {'GB':>8}"
    lines = ["", "===== Datacube dry run =====", f"outputs: {dest}", head]
    total = DateEstimate("total", "", 0, 0, 0, 0, 0)
    for selection, dates in rows:
        if not dates:
            skipped = [p for p in selection["periods"] if p.get("status") == "skipped"]
            why = f"{skipped[0]['period']}: {skipped[0]['reason']}" if skipped else "no period"
            lines.append(
                f"{selection['index']:>6} {selection['mgrs']:<6} {'-':<10} no date ({len(skipped)} period(s) skipped; {why})"
            )
        for d in dates:
            lines.append(
                f"{selection['index']:>6} {d.mgrs:<6} {d.day:<10} {d.chips:>6} {d.chips_done:>6} {d.files:>5} {d.gets:>8} {d.bytes / 1e9:>8.3f}"
            )
            total.chips += d.chips
            total.chips_done += d.chips_done
            total.files += d.files
            total.gets += d.gets
            total.bytes += d.bytes
    tiles = len(rows)
    dates_n = sum(len(d) for _, d in rows)
    lines.append(
        f"{'total':>6} {tiles:>4} tile(s) {dates_n:>4} date(s) {total.chips:>6} {total.chips_done:>6} {total.files:>5} {total.gets:>8} {total.bytes / 1e9:>8.3f}"
    )
    lines.append(
        "GETs and bytes are estimates (one ranged GET per file per chip); no pixel was read or chip written."
    )
    return "\n".join(lines) + "\n"
