"""The datacube workflow's work, between the thin Luigi tasks and the pure recipe: selecting a
tile's dates from the catalogue, stacking and writing chips (on Dask workers), manifests.

Memory: a chip is stacked on its own. Each of its source files (10 S2 bands, SCL, S1 ``vh``
and ``vv`` per S1 item, each DEM tile) is read only over the chip's footprint and resampled onto
the chip's grid through the raster seam, so a worker holds one chip (13 float32 bands: 13.6 MB
at 512 x 512) and GDAL's bounded block cache, never a whole 10980 x 10980 tile.

Speed: S2 bands are window reads with repeated pixels
(:meth:`pipeline.raster.RasterReader.warped`: no warp); S1 and the DEM are nearest neighbour
by its definition (:meth:`pipeline.raster.RasterReader.nearest`), the chip's pixel centres
mapped once per CRS and their source pixels found once per source grid (an S1 item's ``vh``
and ``vv`` share them), instead of one GDAL warp per file. Files are read in the order of the
drop rules, so a dropped chip stops reading at its reason (:func:`stack_or_drop`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.catalog import Catalog, Item
from pipeline.datacube import layout, recipe
from pipeline.datetimes import Interval
from pipeline.errors import ItemError, PipelineError, RasterReadError
from pipeline.failures import UnusableItem
from pipeline.raster import ArchiveAccess, PixelCentres, RasterReader
from targets.store import Store

log = logging.getLogger("pipeline.datacube")

# The DEM is one undated mosaic (cop-dem-glo-30 items carry 2021-04-22): searched over all time.
DEM_INTERVAL = Interval(datetime(1900, 1, 1, tzinfo=UTC), datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC))
# Chips per Dask task: a chip is ~0.1-1 s of reads and a write, well above Dask's ~2-3 ms per
# task, and a batch opens each source file once for all its chips.
DEFAULT_CHIPS_PER_DASK_TASK = 8
# GeoTIFF tiles of a chip: 256 x 256 (4 tiles per 512 chip; smaller chips get one tile).
MAX_BLOCK = 256


def jdump(doc: Any) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


# ---- the selection of a tile's dates ------------------------------------------------------


def selection_fingerprint(catalog: str, dateranges: str, dates_per_tile: int) -> str:
    """What decides a tile's selection besides its row: a different catalogue, periods, date
    count or recipe threshold selects again instead of reusing a stale state file."""
    text = "|".join(
        str(v)
        for v in (
            "datacube-selection-1", catalog, dateranges or "years", dates_per_tile, recipe.MAX_CLOUD_COVER,
            recipe.MAX_NODATA_PERCENTAGE, recipe.S2_ATTEMPTS, recipe.S1_WINDOW_DAYS, list(recipe.YEARS),
        )
    )  # fmt: skip
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _href(item: Item, key: str) -> str:
    asset = (item.get("assets") or {}).get(key)
    href = asset.get("href") if isinstance(asset, dict) else None
    if not isinstance(href, str) or not href:
        raise ItemError(
            "required asset missing (or without href)", source=f"item {item.get('id')}", field=f"assets.{key}"
        )
    return href


def _unusable(item: Item, error: Exception) -> UnusableItem:
    reason = (
        f"field {error.field!r}: {str(error).split(': ', 1)[-1]}"
        if isinstance(error, ItemError) and error.field
        else str(error)
    )
    return UnusableItem(
        str(item.get("collection", "")), str(item.get("id", "")), reason, str(item.get("_source", ""))
    )


def s2_entry(item: Item) -> dict[str, Any]:
    """What the chips need of the S2 item: id, datetime, the 10 m grid and the asset hrefs."""
    grid = recipe.s2_grid(item)
    return {
        "id": item["id"],
        "datetime": recipe.item_datetime(item).isoformat(),
        "grid": {
            "epsg": grid.epsg,
            "transform": list(grid.transform),
            "width": grid.width,
            "height": grid.height,
        },
        "bands": [_href(item, b) for b in recipe.S2_BANDS],
        "scl": _href(item, recipe.SCL_ASSET),
    }


def s1_entry(item: Item) -> dict[str, Any]:
    return {
        "id": item["id"],
        "datetime": recipe.item_datetime(item).isoformat(),
        "orbit_state": (item.get("properties") or {}).get("sat:orbit_state"),
        "vh": _href(item, "vh"),
        "vv": _href(item, "vv"),
    }


def dem_entry(item: Item) -> dict[str, Any]:
    return {"id": item["id"], "href": _href(item, recipe.DEM_ASSET)}


def _usable(
    items: Sequence[Item], entry: Callable[[Item], dict[str, Any]], unusable: list[UnusableItem]
) -> list[Item]:
    """The items whose entry can be made (assets present) and whose datetime and geometry are
    readable; the others are recorded as unusable."""
    kept = []
    for item in items:
        try:
            entry(item)
            reason = recipe.unusable_reason(item)
        except ItemError as e:
            unusable.append(_unusable(item, e))
            continue
        if reason is not None:
            unusable.append(
                UnusableItem(
                    str(item.get("collection", "")),
                    str(item.get("id", "")),
                    reason,
                    str(item.get("_source", "")),
                )
            )
            continue
        kept.append(item)
    return kept


def _period_text(period: recipe.Period) -> str:
    return f"{period[0]:%Y-%m-%d}/{period[1]:%Y-%m-%d}"


def select_tile(
    catalog: Catalog, index: int, mgrs: str, periods: Sequence[recipe.Period], dates_per_tile: int
) -> dict[str, Any]:
    """A tile's date selection (the state file's document): per period, the S2 items found,
    each attempt and why it failed; per matched date the S2 item, the S1 items (in paint
    order) and the DEM tiles. A tile without any date is a normal outcome (``dates`` empty)."""
    dates: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    unusable: list[UnusableItem] = []
    for period in periods:
        record: dict[str, Any] = {"period": _period_text(period)}
        tried.append(record)
        if len(dates) >= dates_per_tile:
            record.update(status="not tried", reason=f"{dates_per_tile} date(s) matched already")
            continue
        found = catalog.search(
            collection=recipe.S2_COLLECTION,
            interval=recipe.period_interval(period),
            equals={"s2:mgrs_tile": mgrs},
        )
        candidates = recipe.s2_candidates(found, mgrs)
        rejected = Counter(r for r in (recipe.s2_rejection(i, mgrs) for i in found) if r is not None)
        record.update(s2_found=len(found), s2_rejected=dict(rejected), attempts=[])
        matched = _first_match(catalog, candidates, {d["date"] for d in dates}, record["attempts"], unusable)
        if matched is None:
            reason = (
                f"no S2 item of {mgrs} with eo:cloud_cover <= {recipe.MAX_CLOUD_COVER:g} and "
                f"s2:nodata_pixel_percentage <= {recipe.MAX_NODATA_PERCENTAGE:g} ({len(found)} found)"
                if not candidates
                else f"none of the {len(candidates)} attempt(s) has a usable Sentinel-1 match"
            )
            record.update(status="skipped", reason=reason)
            continue
        record.update(status="matched", date=matched["date"])
        dates.append(matched)
    return {
        "index": index,
        "mgrs": mgrs,
        "catalog": catalog.description,
        "dates_per_tile": dates_per_tile,
        "periods": tried,
        "dates": dates,
        "unusable": [u.to_json() for u in unusable],
    }


def _first_match(
    catalog: Catalog,
    candidates: Sequence[Item],
    taken: set[str],
    attempts: list[dict[str, Any]],
    unusable: list[UnusableItem],
) -> dict[str, Any] | None:
    for number, s2 in enumerate(candidates, start=1):
        attempt: dict[str, Any] = {"attempt": number, "s2": s2["id"]}
        attempts.append(attempt)
        day = recipe.item_date(s2).isoformat()
        if day in taken:
            attempt["result"] = f"{day} is selected already"
            continue
        try:
            s2_doc = s2_entry(s2)
            bbox = recipe.footprint(s2).bounds
        except ItemError as e:
            unusable.append(_unusable(s2, e))
            attempt["result"] = f"unusable: {e}"
            continue
        s1_found = catalog.search_bbox(
            collection=recipe.S1_COLLECTION, interval=recipe.s1_search_interval(s2), bbox=bbox
        )
        match = recipe.s1_match(s2, _usable(s1_found, s1_entry, unusable))
        if match is None:
            first, last = recipe.s1_window(s2)
            attempt["result"] = (
                f"no Sentinel-1 item over the footprint from {first} to {last} ({len(s1_found)} found)"
            )
            continue
        dem_found = catalog.search_bbox(collection=recipe.DEM_COLLECTION, interval=DEM_INTERVAL, bbox=bbox)
        dem = recipe.dem_items(s2, _usable(dem_found, dem_entry, unusable))
        attempt["result"] = "matched"
        return {
            "date": day,
            "s2": s2_doc,
            "s1": [s1_entry(i) for i in recipe.s1_paint_order(match)],
            "s1_chosen": [i["id"] for i in match],
            "s1_uncovered_fraction": recipe.uncovered_fraction(s2, match),
            "dem": [dem_entry(i) for i in dem],
        }
    return None


# ---- a (tile, date)'s chips -----------------------------------------------------------------


@dataclass(frozen=True)
class DateJob:
    """Everything a Dask worker needs to stack the chips of one (tile, date). Picklable."""

    mgrs: str
    day: date
    version: str
    chip_size: int
    epsg: int
    transform: tuple[float, ...]
    width: int
    height: int
    s2_id: str
    s2_bands: tuple[str, ...]
    scl: str
    s1: tuple[tuple[str, str], ...]  # (vh, vv) hrefs in paint order: later acquisitions last
    dem: tuple[str, ...]

    @classmethod
    def from_entry(cls, mgrs: str, entry: dict[str, Any], version: str, chip_size: int) -> DateJob:
        grid = entry["s2"]["grid"]
        return cls(
            mgrs, date.fromisoformat(entry["date"]), version, chip_size, int(grid["epsg"]),
            tuple(float(v) for v in grid["transform"]), int(grid["width"]), int(grid["height"]),
            entry["s2"]["id"], tuple(entry["s2"]["bands"]), entry["s2"]["scl"],
            tuple((s["vh"], s["vv"]) for s in entry["s1"]), tuple(d["href"] for d in entry["dem"]),
        )  # fmt: skip

    def chip_numbers(self, subset: tuple[int, int, int, int] | None = None) -> list[int]:
        """The chips of the run: every whole chip, or those meeting the subset window."""
        if subset is None:
            return [n for n, _, _ in recipe.chip_windows(self.width, self.height, self.chip_size)]
        return recipe.snap_subset(*subset, self.chip_size, self.width, self.height)

    def chip_path(self, number: int) -> str:
        return layout.chip_path(self.version, self.mgrs, self.day, number)


def snapped_window(job: DateJob, numbers: Sequence[int]) -> tuple[int, int, int, int] | None:
    """The pixel window (end-exclusive) the chips ``numbers`` cover; None when there are none."""
    if not numbers:
        return None
    offsets = [recipe.chip_offset(n, job.width, job.height, job.chip_size) for n in numbers]
    n = job.chip_size
    return (
        min(c for c, _ in offsets),
        min(r for _, r in offsets),
        max(c for c, _ in offsets) + n,
        max(r for _, r in offsets) + n,
    )


def _paint(reader: RasterReader, hrefs: Sequence[str], centres: PixelCentres) -> npt.NDArray[np.float32]:
    """The sources resampled onto the chip in order, each overwriting where it has data (NaN
    elsewhere): the later S1 acquisition wins; the DEM tiles form a mosaic."""
    out = np.full((centres.height, centres.width), np.nan, dtype=np.float32)
    for href in hrefs:
        data = reader.nearest(href, centres, fill=np.nan).astype(np.float32, copy=False)
        valid = ~np.isnan(data)
        out[valid] = data[valid]
    return out


def stack_chip(
    reader: RasterReader, job: DateJob, number: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """The 13 output bands (float32, recipe band order) and SCL of chip ``number``."""
    bands, scl, _ = _stack(reader, job, number, stop_at_drop=False)
    assert scl is not None  # only a stack stopped at a drop has none
    return bands, scl


def stack_or_drop(
    reader: RasterReader, job: DateJob, number: int
) -> tuple[npt.NDArray[np.float32], str | None]:
    """Chip ``number``'s 13 bands and its drop reason (:func:`chip_drop_reason`; None: kept),
    reading the files in the order of the drop rules (B02; vh; vv; the DEM; SCL and the other
    S2 bands last) and stopping at the first rule that applies: a dropped chip costs only the
    reads up to its reason (its bands are then incomplete)."""
    bands, _, reason = _stack(reader, job, number, stop_at_drop=True)
    return bands, reason


def _stack(
    reader: RasterReader, job: DateJob, number: int, *, stop_at_drop: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8] | None, str | None]:
    col, row = recipe.chip_offset(number, job.width, job.height, job.chip_size)
    transform = recipe.chip_transform(job.transform, col, row)
    n = job.chip_size
    s2 = len(recipe.S2_BANDS)
    # zeros, not empty: a stack stopped at a drop is judged with its unread bands finite
    bands = np.zeros((len(recipe.OUTPUT_BANDS), n, n), dtype=np.float32)

    def dropped(i: int) -> str | None:
        """The drop reason when band ``i``, just read, has a value its rule drops (B02 0,
        NaN elsewhere): recipe.drop_reason on what is read so far. A rule on a read band that
        applies is the reason whatever the unread bands hold (the rules are checked in order,
        the unread bands' later), so it is the one the whole stack would give."""
        if not stop_at_drop or not bool((bands[i] == 0).any() if i == 0 else np.isnan(bands[i]).any()):
            return None
        unread_scl = np.full((n, n), _GOOD_SCL, dtype=np.uint8)
        return chip_drop_reason(bands, unread_scl)

    bands[0] = reader.warped(job.s2_bands[0], job.epsg, transform, n, n, fill=recipe.S2_FILL)
    if (reason := dropped(0)) is not None:
        return bands, None, reason
    # S1 and the DEM are on other grids (and CRSs): each chip pixel centre is mapped into each
    # CRS once, for every file on it (vh and vv, the DEM tiles), not once per file.
    centres = PixelCentres(job.epsg, transform, n, n)
    for i, hrefs in (
        (s2, [vh for vh, _ in job.s1]),
        (s2 + 1, [vv for _, vv in job.s1]),
        (s2 + 2, list(job.dem)),
    ):
        bands[i] = _paint(reader, hrefs, centres)
        if (reason := dropped(i)) is not None:
            return bands, None, reason
    scl = reader.warped(job.scl, job.epsg, transform, n, n, fill=recipe.S2_FILL).astype(np.uint8)
    if stop_at_drop and (reason := chip_drop_reason(bands, scl)) is not None:
        return bands, scl, reason
    for i, href in enumerate(job.s2_bands[1:], start=1):
        bands[i] = reader.warped(href, job.epsg, transform, n, n, fill=recipe.S2_FILL)
    return bands, scl, chip_drop_reason(bands, scl)


# An SCL class no drop rule counts (vegetation), standing in for an SCL not read yet.
_GOOD_SCL = 4


def chip_drop_reason(bands: npt.NDArray[np.float32], scl: npt.NDArray[np.uint8]) -> str | None:
    """:func:`recipe.drop_reason` on a stacked chip (B02 back in its uint16 values: exact)."""
    s2 = len(recipe.S2_BANDS)
    return recipe.drop_reason(bands[0].astype(np.uint16), bands[s2], bands[s2 + 1], bands[s2 + 2], scl)


def _chip_profile(bands: npt.NDArray[np.float32], epsg: int, transform: Sequence[float]) -> dict[str, Any]:
    """The creation options of a chip: a tiled DEFLATE GeoTIFF with the exact transform."""
    from affine import Affine
    from rasterio.crs import CRS

    count, rows, cols = bands.shape

    block = max(16, min(MAX_BLOCK, cols - cols % 16))
    # DEFLATE level 1, not GDAL's default 6: the compression was the largest cost of a chip
    # (0.32 s CPU of ~0.45 s for a 512 px chip at level 6, 0.105 s at level 1, for 4 % more
    # bytes; the floating-point predictor keeps the files small). Band interleaving, not GDAL's
    # default pixel interleaving for several bands: the predictor and DEFLATE then see one band's
    # runs instead of 13 bands' values in turn (0.104 -> 0.077 s of CPU per 512 px chip, 37 %
    # fewer bytes; the same values).
    return {
        "driver": "GTiff", "width": cols, "height": rows, "count": count, "dtype": "float32",
        "crs": CRS.from_epsg(epsg), "transform": Affine(*transform[:6]), "tiled": True,
        "blockxsize": block, "blockysize": block, "compress": "DEFLATE", "predictor": 3, "zlevel": 1,
        "interleave": "band",
    }  # fmt: skip


def _fill_chip(dst: Any, bands: npt.NDArray[np.float32], day: date) -> None:
    for i, name in enumerate(recipe.OUTPUT_BANDS, start=1):
        dst.set_band_description(i, name)
    dst.update_tags(date=f"{day:%Y-%m-%d}")
    dst.write(bands)


def chip_geotiff(bands: npt.NDArray[np.float32], epsg: int, transform: Sequence[float], day: date) -> bytes:
    """The chip as a tiled DEFLATE GeoTIFF: band descriptions, tag ``date``, the exact transform."""
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with mem.open(**_chip_profile(bands, epsg, transform)) as dst:
            _fill_chip(dst, bands, day)
        return bytes(mem.read())


def write_chip(
    store: Store, rel: str, bands: npt.NDArray[np.float32], epsg: int, transform: Sequence[float], day: date
) -> None:
    """:func:`chip_geotiff` to ``rel``, whole or not at all. In a local store GDAL writes it
    straight into a temporary beside its name, then it is renamed (:meth:`Store.replaced_locally`):
    GDAL's in-memory file, which grows by copies, and a copy of its bytes cost ~10 ms of CPU
    per 512 px chip. Elsewhere its bytes go in one PUT (:meth:`Store.write_bytes`)."""
    if not store.is_local:
        store.write_bytes(rel, chip_geotiff(bands, epsg, transform, day))
        return
    import rasterio

    with (
        store.replaced_locally(rel) as tmp,
        rasterio.open(tmp, "w", **_chip_profile(bands, epsg, transform)) as dst,
    ):
        _fill_chip(dst, bands, day)


@dataclass
class ChipResult:
    number: int
    status: str  # "kept", "dropped" or "failed"
    reason: str = ""  # the drop reason, or the error


@dataclass
class BatchResult:
    chips: list[ChipResult] = field(default_factory=list)
    opened: int = 0
    seconds: float = 0.0


def chip_batch(job: DateJob, numbers: Sequence[int], store: Store, access: ArchiveAccess) -> BatchResult:
    """Stack, filter and write a batch of chips (runs on a Dask worker). A kept chip is written
    whole under its final name (one atomic write); a read error fails that chip only here, and
    its (tile, date) as a whole in the task."""
    started = time.perf_counter()
    result = BatchResult()
    with RasterReader(access) as reader:
        for number in numbers:
            try:
                bands, reason = stack_or_drop(reader, job, number)
            except (RasterReadError, PipelineError) as e:
                result.chips.append(ChipResult(number, "failed", str(e)))
                continue
            if reason is not None:
                result.chips.append(ChipResult(number, "dropped", reason))
                continue
            col, row = recipe.chip_offset(number, job.width, job.height, job.chip_size)
            transform = recipe.chip_transform(job.transform, col, row)
            write_chip(store, job.chip_path(number), bands, job.epsg, transform, job.day)
            result.chips.append(ChipResult(number, "kept"))
        result.opened = reader.opened
    result.seconds = time.perf_counter() - started
    return result


def batches(numbers: Sequence[int], size: int) -> list[list[int]]:
    size = max(1, size)
    return [list(numbers[i : i + size]) for i in range(0, len(numbers), size)]


def run_chips(
    job: DateJob,
    numbers: Sequence[int],
    store: Store,
    access: ArchiveAccess,
    chips_per_task: int = DEFAULT_CHIPS_PER_DASK_TASK,
    progress: Callable[[int, int], None] | None = None,
    in_process_threads: int | None = None,
) -> tuple[list[ChipResult], int]:
    """Every chip of ``numbers``, a batch per call of :func:`pipeline.cluster.run_each` (on
    ``in_process_threads`` threads of this process, or on the Dask cluster; see
    :func:`pipeline.cluster.dask_threads`); the results sorted by chip number and the files
    opened."""
    from pipeline.cluster import run_each

    work = batches(numbers, chips_per_task)
    calls = [(job, batch, store, access) for batch in work]
    labels = [f"{job.mgrs}-{job.day:%Y%m%d}-{batch[0]:04d}" for batch in work]
    chips: list[ChipResult] = []
    opened = 0
    running = run_each(
        chip_batch, calls, name="datacube", labels=labels, in_process_threads=in_process_threads
    )
    for _, future in running:
        result: BatchResult = future.result()
        chips += result.chips
        opened += result.opened
        if progress is not None:
            progress(len(chips), len(numbers))
    return sorted(chips, key=lambda c: c.number), opened


def manifest_doc(
    job: DateJob,
    entry: dict[str, Any],
    scope: str,
    window: tuple[int, int, int, int] | None,
    kept: Sequence[int],
    dropped: dict[int, str],
) -> dict[str, Any]:
    """The (tile, date)'s manifest: every chip of the run kept (with its path) or dropped (with
    the reason), and what they were made from."""
    return {
        "mgrs": job.mgrs, "date": f"{job.day:%Y-%m-%d}", "version": job.version, "scope": scope,
        "chip_size": job.chip_size, "window": list(window) if window else None,
        "grid": entry["s2"]["grid"], "s2": job.s2_id, "s1": [s["id"] for s in entry["s1"]],
        "dem": [d["id"] for d in entry["dem"]],
        "kept": [{"number": n, "path": job.chip_path(n)} for n in sorted(kept)],
        "dropped": [{"number": n, "reason": dropped[n]} for n in sorted(dropped)],
    }  # fmt: skip
