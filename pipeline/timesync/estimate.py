"""The dry run: what a run will read, and cost, before any pixel is read.

The estimate replays the run's own planning (the same batches, the same acquisition-packed
Dask pieces, the same rule for which files can hold a plot or its chip) and counts, per
band file a piece opens, one header GET (``GDAL_INGESTED_BYTES_AT_OPEN`` covers a COG's
header), per item holding the plot one GET for the QA tile of the fill test, and per
optical window one ranged GET when its block rows are coalesced (the gap between them is
within ``merge_gap_bytes``, see pipeline/raster.py), else one per 256-pixel block row it
touches (the blocks of one row are adjacent in a COG, and GDAL merges adjacent ranges). Whether the plot pixel is
fill on a date is unknown before reading: the item's ``landsat:fill`` percentage is taken
as the chance, or ``default_fill_percent`` when the item does not say.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.failures import UnusableItem, unique_items
from pipeline.grid import pixel_of
from pipeline.raster import DEFAULT_MERGE_GAP_BYTES
from pipeline.timesync.extract import ObservationJob, item_may_hold
from pipeline.timesync.plan import ItemRef

BLOCK = 256  # COG internal tile size of Landsat C2 ARD
HEADER_BYTES = 16384  # GDAL_INGESTED_BYTES_AT_OPEN in pipeline/raster.py


@dataclass
class CostModel:
    price_per_1000_get: float = 0.0004  # USD, S3 Standard GET in us-west-2
    sr_block_bytes: int = 90_000  # a compressed 256 x 256 uint16 SR block
    qa_block_bytes: int = 12_000  # QA_PIXEL compresses far better
    default_fill_percent: float = 30.0
    merge_gap_bytes: int = DEFAULT_MERGE_GAP_BYTES  # ArchiveAccess.merge_gap_bytes of the run


@dataclass
class Estimate:
    project_id: str
    plots: int = 0
    tiles: set[str] = field(default_factory=set)
    observations: int = 0
    done: int = 0
    fill_known: int = 0
    to_process: int = 0
    expected_fill: float = 0.0
    get_requests: float = 0.0
    bytes: float = 0.0
    output_writes: float = 0.0
    unusable: list[UnusableItem] = field(default_factory=list)  # catalogue items the run cannot use

    def cost(self, model: CostModel) -> float:
        return self.get_requests / 1000 * model.price_per_1000_get


Block = tuple[int, int]  # (block row, block column) of a COG's 256 x 256 tiles


def _blocks(item: ItemRef, x: float, y: float, size: int) -> set[Block] | None:
    """The tiles the ``size`` window centred on the plot touches; None when the item gives
    no geometry."""
    if item.transform is None or item.shape is None:
        return None
    row, col = pixel_of(item.transform, x, y)
    half = size // 2
    r0, r1 = max(row - half, 0), min(row + half + 1, item.shape[0])
    c0, c1 = max(col - half, 0), min(col + half + 1, item.shape[1])
    if r0 >= r1 or c0 >= c1:
        return set()
    return {
        (by, bx)
        for by in range(r0 // BLOCK, (r1 - 1) // BLOCK + 1)
        for bx in range(c0 // BLOCK, (c1 - 1) // BLOCK + 1)
    }


def _window_cost(item: ItemRef, new: set[Block], model: CostModel) -> tuple[float, float]:
    """(GETs, bytes) of fetching the ``new`` tiles of one optical window (tiles another
    window of the piece fetched already come from vsicurl's cache)."""
    block_bytes = model.sr_block_bytes
    if not new:
        return 0.0, 0.0
    rows = len({by for by, _ in new})
    cols = len({bx for _, bx in new})
    if rows <= 1:
        return 1.0, float(len(new) * block_bytes)
    blocks_across = -(-item.shape[1] // BLOCK) if item.shape else cols
    gap = (blocks_across - cols) * block_bytes  # the rest of each upper block row
    if gap <= model.merge_gap_bytes:  # one GET from the first tile to the last
        return 1.0, float((len(new) + (rows - 1) * (blocks_across - cols)) * block_bytes)
    return float(rows), float(len(new) * block_bytes)


def piece_cost(piece: list[ObservationJob], model: CostModel) -> tuple[float, float, float]:
    """(expected GETs, expected bytes, expected fill observations) of one Dask piece."""
    gets = 0.0
    nbytes = 0.0
    fill_total = 0.0
    qa_files: set[str] = set()
    # probability that an optical file is never opened in this piece = product of the
    # fill chances of the jobs that would open it
    never_opened: dict[str, float] = {}
    fetched: dict[str, set[Block]] = {}  # tiles a piece has read, per file: read once
    for job in piece:
        holders = [i for i in job.obs.items if item_may_hold(i, job.x, job.y, 1)]
        p_fill = 1.0
        for item in holders:
            pct = item.fill_percent if item.fill_percent is not None else model.default_fill_percent
            p_fill *= min(max(pct / 100.0, 0.0), 1.0)
        fill_total += p_fill
        for item in holders:  # the fill test: one QA pixel (its tile) per item that holds the plot
            href = item.href("qa_pixel")
            qa_files.add(href)
            tile = _blocks(item, job.x, job.y, 1)
            seen = fetched.setdefault(href, set())
            if tile is None or not tile <= seen:
                gets += 1
                nbytes += model.qa_block_bytes
                seen |= tile or set()
        p_read = 1.0 - p_fill
        for item in job.obs.items:
            if not item_may_hold(item, job.x, job.y, job.chip):
                continue
            window = _blocks(item, job.x, job.y, job.chip)
            for href in item.hrefs[:-1]:  # the six optical bands: the QA window is never read
                never_opened[href] = never_opened.get(href, 1.0) * p_fill
                if window is None:  # no geometry in the catalogue: assume 2 x 2 tiles, 2 GETs
                    window_gets, window_bytes = 2.0, 4.0 * model.sr_block_bytes
                else:
                    seen = fetched.setdefault(href, set())
                    window_gets, window_bytes = _window_cost(item, window - seen, model)
                    seen |= window
                gets += p_read * window_gets
                nbytes += p_read * window_bytes
    opens = len(qa_files) + sum(1.0 - p for h, p in never_opened.items() if h not in qa_files)
    gets += opens
    nbytes += opens * HEADER_BYTES
    return gets, nbytes, fill_total


def format_estimates(estimates: list[Estimate], model: CostModel, project_dir: str) -> str:
    lines = ["", "===== TimeSync dry run (no pixel read) =====", f"project directory: {project_dir}"]
    header = (
        f"{'project':>10} {'plots':>6} {'tiles':>5} {'observations':>12} {'done':>8} {'to do':>8} {'~fill':>7} {'S3 GETs':>10} "
        f"{'GB read':>8} {'USD':>9} {'unusable':>8}"
    )
    lines.append(header)
    total = Estimate("all")
    for e in estimates:
        lines.append(
            f"{e.project_id:>10} {e.plots:>6} {len(e.tiles):>5} {e.observations:>12} {e.done:>8} {e.to_process:>8} "
            f"{e.expected_fill:>7.0f} {e.get_requests:>10.0f} {e.bytes / 1e9:>8.3f} {e.cost(model):>9.4f} {len(e.unusable):>8}"
        )
        total.plots += e.plots
        total.tiles |= e.tiles
        total.observations += e.observations
        total.done += e.done
        total.to_process += e.to_process
        total.expected_fill += e.expected_fill
        total.get_requests += e.get_requests
        total.bytes += e.bytes
        total.output_writes += e.output_writes
        total.unusable = unique_items([*total.unusable, *e.unusable])
    if len(estimates) > 1:
        lines.append(
            f"{'total':>10} {total.plots:>6} {len(total.tiles):>5} {total.observations:>12} {total.done:>8} {total.to_process:>8} "
            f"{total.expected_fill:>7.0f} {total.get_requests:>10.0f} {total.bytes / 1e9:>8.3f} {total.cost(model):>9.4f} "
            f"{len(total.unusable):>8}"
        )
    per = total.get_requests / total.to_process if total.to_process else 0.0
    lines.append(
        f"requester-pays archive: ~{total.get_requests:.0f} GET requests ({per:.1f} per observation to process) "
        f"at ${model.price_per_1000_get}/1,000 = ${total.cost(model):.4f}; no LIST or HEAD requests."
    )
    lines.append(
        f"outputs: ~{total.output_writes:.0f} file writes (4 per observation written, plus series and ingest files). "
        "'done' = observations whose files exist or that were recorded as fill at the plot."
    )
    if total.unusable:
        lines.append(
            f"unusable: {len(total.unusable)} catalogue item(s) the run cannot use (listed at the end); their acquisitions "
            "are not counted, and the run will name them and exit non-zero until the catalogue is fixed."
        )
    return "\n".join(lines) + "\n"
