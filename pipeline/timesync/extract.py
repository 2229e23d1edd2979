"""The worker side of a TimeSync run: one observation in, four files out.

:func:`run_batch` is what a Dask task executes: a batch of observation jobs (one plot's
or several plots' missing observations, sorted so that jobs reading the same band files
are adjacent), one GDAL environment and one set of open datasets for the whole batch.
A failing observation is reported in its result; it never fails the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ItemError
from pipeline.grid import pixel_of
from pipeline.png import encode_rgb_png
from pipeline.raster import ArchiveAccess, RasterReader
from pipeline.timesync import layout
from pipeline.timesync.plan import ItemRef, Observation
from pipeline.timesync.recipe import (
    OPTICAL_BANDS,
    QA_BAND,
    format_csv,
    is_fill,
    mosaic,
    process_optical,
    spectral_row,
)
from targets.store import Store


@dataclass(frozen=True)
class ObservationJob:
    project_id: str
    plot_id: str
    x: int
    y: int
    chip: int
    obs: Observation
    existing: frozenset[str] = frozenset()  # files of this observation already written: skipped
    plot_tile: str = ""  # hhhvvv of the tile holding the plot pixel ("" when not known)


@dataclass(frozen=True)
class ObservationResult:
    project_id: str
    plot_id: str
    key: str
    status: str  # "written" | "fill" | "failed"
    row: tuple[str, ...] | None = None
    error: str = ""


def item_may_hold(item: ItemRef, x: float, y: float, size: int) -> bool:
    """False only when the item's own geometry says its raster misses the ``size`` x
    ``size`` window centred on the plot; True when it does not say (open and look)."""
    if item.transform is None or item.shape is None:
        return True
    row, col = pixel_of(item.transform, x, y)
    half = size // 2
    rows, cols = item.shape
    return row + half >= 0 and row - half < rows and col + half >= 0 and col - half < cols


def extract_observation(
    job: ObservationJob, reader: RasterReader
) -> tuple[str, list[str] | None, dict[str, bytes]]:
    """Fill test, reads, recipe, encoding. Returns (status, row, files) without writing."""
    obs = job.obs
    # Fill test first: a fill observation costs one QA read per item, not seven band reads.
    qa_at_plot = [
        reader.pixel(item.href(QA_BAND), job.x, job.y) if item_may_hold(item, job.x, job.y, 1) else None
        for item in obs.items
    ]
    fill = all(is_fill(v) for v in qa_at_plot)
    if obs.unusable and not (
        fill and job.plot_tile and all(t is not None and t != job.plot_tile for t in obs.unusable_tiles)
    ):
        # Unusable items of this acquisition (or of an unknown one) on the chip: written from
        # the others, its mosaic would be partial. Only when none of them can hold the plot
        # pixel and the others say fill there is the observation fill whatever they hold.
        raise ItemError(
            f"{len(obs.unusable)} catalogue item(s) of this acquisition over the chip (or of an unknown one) could not be used, "
            "so its mosaic would be partial: " + "; ".join(obs.unusable)
        )
    if fill:
        return "fill", None, {}
    # The outputs use qa_pixel only at the plot (the CSV's qa; the mask comes from the
    # optical bands), so the QA window is never read: the mosaic's centre is the sum of
    # the items' values there (0 where an item's raster misses the plot).
    qa_centre = sum(v for v in qa_at_plot if v is not None)
    windows = []
    for item in obs.items:
        if not item_may_hold(item, job.x, job.y, job.chip):
            continue  # its tile does not reach the chip: all zeros, nothing to open
        windows.append(
            reader.windows([item.href(band) for band in OPTICAL_BANDS], job.x, job.y, job.chip, job.chip)
        )
    optical = mosaic(windows) if len(windows) > 1 else windows[0]
    result = process_optical(optical, qa_centre)
    first = obs.first
    row = spectral_row(
        sensor=first.sensor, project_id=job.project_id, plot_id=job.plot_id, hv=first.hv,
        year=obs.year, doy=obs.doy, centre=result.centre, qa=result.qa, date=first.datetime,
    )  # fmt: skip
    files = {
        layout.chip_png(kind, job.project_id, job.plot_id, obs.key): encode_rgb_png(result.images[kind])
        for kind in layout.COMPOSITE_DIRS
    }
    files[layout.obs_csv(job.project_id, job.plot_id, obs.key)] = format_csv([row]).encode()
    return "written", row, files


def run_batch(jobs: list[ObservationJob], store: Store, access: ArchiveAccess) -> list[ObservationResult]:
    """Extract and write every job; PNGs first, the CSV last (each write atomic). One GDAL
    environment and one set of open band files for the whole piece."""
    results = []
    with RasterReader(access) as reader:
        for job in sorted(jobs, key=lambda j: (j.obs.key, j.project_id, j.plot_id)):
            try:
                status, row, files = extract_observation(job, reader)
                for rel, data in files.items():
                    if rel not in job.existing:
                        store.write_bytes(rel, data)
                results.append(
                    ObservationResult(
                        job.project_id, job.plot_id, job.obs.key, status, tuple(row) if row else None
                    )
                )
            except Exception as e:  # one bad asset fails its observation only
                results.append(
                    ObservationResult(
                        job.project_id, job.plot_id, job.obs.key, "failed", error=f"{type(e).__name__}: {e}"
                    )
                )
    return results
