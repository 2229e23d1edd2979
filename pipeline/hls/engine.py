"""The HLS workflow's work, between the thin Luigi tasks and the pure recipe: searching a
tile-year, classifying its items, compositing a month block by block (on Dask workers),
writing COGs, placing points and cutting sample chips.

Memory: a month is composited one spatial block at a time and one band at a time (the
block's window of one band of every scene, then the next band: each file is still read
once per window). A window is a whole 512 x 512 block while its scenes' pixels fit
``WINDOW_BUDGET_BYTES``, then half a block, a quarter... (``block_rows``), so a Dask
thread holds at most that much of input pixels whatever the number of scenes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.catalog import Catalog, Item
from pipeline.cluster import kept_per_thread
from pipeline.datetimes import Interval, parse_interval, parse_item_datetime
from pipeline.errors import ItemError, PipelineError, RasterReadError
from pipeline.failures import UnusableItem
from pipeline.hls import cog, layout, recipe
from pipeline.mgrs_grid import TileGrid, grid_of_item, lonlat_bbox, nominal_grid
from pipeline.raster import DEFAULT_MAX_OPEN, ArchiveAccess, RasterReader
from pipeline.scratch import scratch_dir
from targets.store import Store

log = logging.getLogger("pipeline.hls")

COLLECTIONS = (recipe.L30_COLLECTION, recipe.S30_COLLECTION)
# HLS.L30.T10TET.2019183T185921.v2.0
ITEM_ID = re.compile(r"^HLS\.(L30|S30)\.T(\d{1,2}[C-X][A-Z]{2})\.(\d{4})(\d{3})T(\d{6})\.v(\d+\.\d+)$")
BLOCK = 512  # output COG block; compositing windows are whole blocks wide
# Input pixels a compositing window may hold (per Dask thread): a whole 512 x 512 block for
# up to 25 scenes in the month, half a block up to 51, and so on.
WINDOW_BUDGET_BYTES = 32 * 1024 * 1024
# Bytes of one pixel of one scene in a window (recipe.BandByBand): one band's values as
# uint16 and the Fmask test as uint16 bits, plus the uint8 Fmask read before them.
_BYTES_PER_SCENE_PIXEL = 2 + 2 + 1
# GDAL's COG driver's creation options, for a month too large for pipeline.hls.cog's
# classic-TIFF writer (which writes the same layout with ISA-L's DEFLATE at ~half the CPU):
# DEFLATE with the floating-point predictor, 512 x 512 blocks, the overviews the month's
# uncompressed stripes file already has (built there by _add_overviews: averaged, NaN-aware,
# down to one block). Measured on a 2048 px month (scripts/bench_hls.py --breakdown):
# letting the COG driver build the overviews itself costs 3.4x the CPU of this (it writes
# them DEFLATE-compressed to a temporary file, reads them back and compresses them again),
# and DEFLATE level 6 costs 1.8x level 1 for a file 1 % smaller (noisy float32 reflectances
# barely compress further).
COG_OPTIONS = {
    "COMPRESS": "DEFLATE",
    "LEVEL": "1",
    "PREDICTOR": "YES",  # floating-point predictor (3) for float32
    "BLOCKSIZE": str(BLOCK),
    "OVERVIEWS": "FORCE_USE_EXISTING",
    "BIGTIFF": "IF_SAFER",
    "NUM_THREADS": "1",  # one Dask thread per month already
}


@dataclass(frozen=True)
class Scene:
    """One usable HLS item of a tile-year: its 8 band hrefs in recipe.BANDS order and Fmask."""

    id: str
    collection: str
    datetime: str
    month: int
    bands: tuple[str, ...]
    fmask: str


@dataclass
class TileYearPlan:
    tile: str
    year: int
    grid: TileGrid | None
    scenes: list[Scene]
    unusable: list[UnusableItem]

    def months(self) -> dict[int, list[Scene]]:
        by_month: dict[int, list[Scene]] = {}
        for s in self.scenes:
            by_month.setdefault(s.month, []).append(s)
        return dict(sorted(by_month.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "tile": self.tile,
            "year": self.year,
            "grid": self.grid.to_json() if self.grid else None,
            "scenes": [asdict(s) for s in self.scenes],
            "unusable": [u.to_json() for u in self.unusable],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TileYearPlan:
        return cls(
            doc["tile"], int(doc["year"]), TileGrid.from_json(doc["grid"]) if doc.get("grid") else None,
            [Scene(**{**s, "bands": tuple(s["bands"])}) for s in doc["scenes"]],
            [UnusableItem.from_json(u) for u in doc["unusable"]],
        )  # fmt: skip


def year_interval(year: int) -> Interval:
    return parse_interval(f"{year:04d}-01-01T00:00:00Z/{year:04d}-12-31T23:59:59.999999Z")


def search_tile_year(catalog: Catalog, tile: str, year: int) -> list[Item]:
    """Every item of both HLS collections named for ``tile`` in the calendar year: an area
    search over the tile's nominal extent narrowed to the tile's ids (neighbouring tiles
    overlap by 9.8 km: a footprint alone would pick theirs too)."""
    bbox = lonlat_bbox(nominal_grid(tile))
    items: list[Item] = []
    for collection in COLLECTIONS:
        kind = "L30" if collection == recipe.L30_COLLECTION else "S30"
        items += catalog.search_bbox(
            collection=collection, interval=year_interval(year), bbox=bbox, id_prefix=f"HLS.{kind}.T{tile}."
        )
    return items


def _trim(item: Item) -> Item:
    """What the plan needs of an item (search states stay small)."""
    keep = {"id", "collection", "properties", "assets", "_source"}
    doc = {k: v for k, v in item.items() if k in keep}
    doc["assets"] = {
        k: {"href": (a or {}).get("href")}
        for k, a in (item.get("assets") or {}).items()
        if isinstance(a, dict)
    }
    return doc


def search_doc(catalog: Catalog, tile: str, year: int) -> dict[str, Any]:
    items = search_tile_year(catalog, tile, year)
    return {"catalog": catalog.description, "tile": tile, "year": year, "items": [_trim(i) for i in items]}


def plan_tile_year(tile: str, year: int, items: Sequence[Item]) -> TileYearPlan:
    """Classify a search's items: usable scenes (sorted by datetime, then id) and unusable
    ones with the reason. The tile's grid is the one its usable items state; an item whose
    grid differs from the others' is unusable (the composite needs one grid)."""
    scenes: list[tuple[Scene, TileGrid]] = []
    unusable: list[UnusableItem] = []
    for item in items:
        collection = str(item.get("collection", ""))
        item_id = str(item.get("id", ""))
        try:
            scenes.append(_scene_of(tile, year, collection, item))
        except ItemError as e:
            reason = f"field {e.field!r}: {str(e).split(': ', 1)[-1]}" if e.field else str(e)
            unusable.append(UnusableItem(collection, item_id, reason, str(item.get("_source", ""))))
        except _OtherTileYear:
            continue
    grids: dict[TileGrid, int] = {}
    for _, g in scenes:
        grids[g] = grids.get(g, 0) + 1
    grid = max(grids, key=lambda g: grids[g]) if grids else None
    usable = []
    for scene, g in scenes:
        if g != grid:
            reason = f"field 'properties.proj:transform': grid {g.to_json()} differs from the tile's {grid and grid.to_json()}"
            unusable.append(UnusableItem(scene.collection, scene.id, reason))
        else:
            usable.append(scene)
    usable.sort(key=lambda s: (s.datetime, s.id))
    unusable.sort(key=lambda u: u.id)
    return TileYearPlan(tile, year, grid, usable, unusable)


class _OtherTileYear(Exception):
    """An item of another tile or year (a search that did not narrow): not ours, not an error."""


def _scene_of(tile: str, year: int, collection: str, item: Item) -> tuple[Scene, TileGrid]:
    item_id = str(item.get("id", ""))
    where = f"item {item_id}"
    m = ITEM_ID.match(item_id)
    if not m:
        raise ItemError(
            "id is not HLS.{L30|S30}.T{tile}.{YYYYDDD}T{HHMMSS}.v{version}", source=where, field="id"
        )
    if m.group(2) != tile:
        raise _OtherTileYear
    if collection not in recipe.ASSET_KEYS:
        raise ItemError(
            f"collection {collection!r} is not one of {', '.join(COLLECTIONS)}",
            source=where,
            field="collection",
        )
    props = item.get("properties") or {}
    text = props.get("datetime")
    try:
        dt = parse_item_datetime(str(text))
    except ValueError:
        raise ItemError(f"unparsable datetime {text!r}", source=where, field="properties.datetime") from None
    if dt.year != year:
        raise _OtherTileYear
    assets = item.get("assets") or {}
    hrefs = []
    for key in (*recipe.ASSET_KEYS[collection], recipe.FMASK_KEY):
        href = (assets.get(key) or {}).get("href") if isinstance(assets.get(key), dict) else None
        if not href or not isinstance(href, str):
            raise ItemError("required asset missing (or without href)", source=where, field=f"assets.{key}")
        hrefs.append(href)
    grid = grid_of_item(item)
    scene = Scene(
        item_id, collection, dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), dt.month, tuple(hrefs[:-1]), hrefs[-1]
    )
    return scene, grid


# ---- compositing ---------------------------------------------------------------------


def scenes_digest(scenes: Sequence[Scene]) -> str:
    """What a month's composite was made from (its scenes' ids and hrefs), so a COG made
    from an earlier state of the catalogue is recognised and rebuilt."""
    h = hashlib.sha1()
    for s in sorted(scenes, key=lambda s: s.id):
        h.update(f"{s.id}|{'|'.join(s.bands)}|{s.fmask}\n".encode())
    return h.hexdigest()[:16]


def month_files(scenes: Sequence[Scene]) -> int:
    """Datasets a month's reader keeps open: every file its windows read (each scene's Fmask
    and 8 bands), at least the reader's default. Every window reads them in the same cyclic
    order, which a least-recently-used cache smaller than the set turns into a miss on every
    read: on a full-size month of 35 scenes (315 files) the default 256 made 37,800 opens
    where 315 do (67 s of CPU for the month against 16.6 s; README "Performance / HLS")."""
    return max(DEFAULT_MAX_OPEN, len(scenes) * (len(recipe.BANDS) + 1))


def block_rows(n_scenes: int, width: int = BLOCK, budget: int = WINDOW_BUDGET_BYTES) -> int:
    """Rows of a compositing window ``width`` pixels wide, so that a month's scenes fit the
    budget: a whole 512-row block, else the largest of 256, 128, ... 8 rows that fits (8
    at the least). Halving keeps windows on the input COGs' block rows (power-of-two
    tiles), so an input block is decoded once as long as a window is at least one input
    block tall."""
    rows = BLOCK
    while rows > 8 and n_scenes * width * rows * _BYTES_PER_SCENE_PIXEL > budget:
        rows //= 2
    return rows


def windows(grid: TileGrid, n_scenes: int) -> Iterator[tuple[int, int, int, int]]:
    """``(col, row, width, height)`` windows covering the grid, block by block, each block
    cut into row strips of :func:`block_rows`."""
    step = block_rows(n_scenes)
    for r0 in range(0, grid.height, BLOCK):
        for c0 in range(0, grid.width, BLOCK):
            w = min(BLOCK, grid.width - c0)
            for r in range(r0, min(r0 + BLOCK, grid.height), step):
                yield (c0, r, w, min(step, r0 + BLOCK - r, grid.height - r))


def composite_window(
    reader: RasterReader,
    scenes: Sequence[Scene],
    window: tuple[int, int, int, int],
    out: npt.NDArray[np.float32] | None = None,
    workspace: recipe.Workspace | None = None,
) -> npt.NDArray[np.float32]:
    """The 9-band composite of one window, in ``out`` if given (``(9, h, w)`` float32, may be
    a view of a larger buffer): Fmask of every scene first (a scene with no usable pixel
    there costs no band reads: it adds nothing to a median or the count), then band by band,
    each band's window of every kept scene (each file is still read once per window, and
    only one band of the scenes is held: see recipe.BandByBand). ``workspace``: the working
    arrays, reused from window to window (:class:`recipe.Workspace`; the month's)."""
    _, _, w, h = window
    ws = workspace or recipe.Workspace()
    fmasks = ws.array("fmasks", (len(scenes), h, w), np.uint8)
    usable, scratch = ws.array("fmask_usable", (h, w), bool), ws.array("fmask_scratch", (h, w), bool)
    keep: list[int] = []
    for i, s in enumerate(scenes):
        _read_into(reader, s.fmask, window, fmasks[i])
        if recipe.fmask_usable(fmasks[i], usable, scratch).any():
            keep.append(i)
    if not keep:
        if out is None:
            out = np.empty((len(recipe.OUTPUT_BANDS), h, w), dtype=np.float32)
        out.fill(np.nan)
        out[recipe.VALID_COUNT_INDEX] = 0
        return out
    block = recipe.BandByBand(fmasks if len(keep) == len(scenes) else fmasks[keep], out, ws)
    del fmasks
    values = block.band_values()
    for b in range(len(recipe.BANDS)):
        for j, i in enumerate(keep):
            _read_into(reader, scenes[i].bands[b], window, values[j])
        block.add_band(b)
    return block.out


def _read_into(
    reader: RasterReader, href: str, window: tuple[int, int, int, int], out: npt.NDArray[Any]
) -> None:
    """``out[...] = reader.block(href, *window)``, decoded straight into ``out`` (a workspace
    plane) when the file's dtype is ``out``'s: no new array per read and no copy of it (5760
    reads of 0.25-0.5 MiB on scripts/bench_hls.py's months). Another dtype, or a window
    outside the file, goes through ``reader.block`` (numpy's cast; its error)."""
    col, row, w, h = window
    ds = reader.dataset(href)
    inside = col >= 0 and row >= 0 and col + w <= ds.width and row + h <= ds.height
    if not inside or ds.dtypes[0] != out.dtype.name or out.shape != (h, w):
        out[...] = reader.block(href, col, row, w, h)
        return
    from rasterio.windows import Window

    try:
        ds.read(1, window=Window(col, row, w, h), out=out)
    except Exception as e:  # as reader.block words it
        raise RasterReadError(
            f"cannot read {href} window rows {row}:{row + h} cols {col}:{col + w}: {e}"
        ) from e


@dataclass
class MonthResult:
    tile: str
    year: int
    month: int
    status: str  # "written" or "failed"
    error: str = ""
    seconds: float = 0.0
    reads: int = 0


def composite_month(
    tile: str,
    year: int,
    month: int,
    grid: TileGrid,
    scenes: Sequence[Scene],
    store: Store,
    access: ArchiveAccess,
    workspace: recipe.Workspace | None = None,
) -> MonthResult:
    """Composite one month into its COG target (a call of :func:`run_months`). The COG is
    built in a local temporary directory and moved or uploaded whole. ``workspace``: the
    working arrays (its windows', its row of blocks and the COG writer's); when not given,
    the thread's own, kept from month to month on the run's thread pool
    (:func:`pipeline.cluster.kept_per_thread`: ~90 MiB for a 2048 px month, whose fresh pages
    the kernel would otherwise map and zero again for every month, ~1 GB on the bench's 12),
    or new ones on a Dask worker."""
    started = time.perf_counter()
    rel = layout.composite_tif(tile, year, month)
    tmpdir = scratch_dir(f"hls-{tile}-{year}-{month:02d}-")
    try:
        path = os.path.join(tmpdir, "cog.tif")
        ws = workspace or kept_per_thread("hls-workspace", recipe.Workspace)
        with RasterReader(access, max_open=month_files(scenes)) as reader:

            def window_of(window: tuple[int, int, int, int], out: npt.NDArray[np.float32]) -> None:
                composite_window(reader, scenes, window, out, ws)

            if cog.fits_classic_tiff(grid.width, grid.height, len(recipe.OUTPUT_BANDS), BLOCK):
                _write_cog(path, grid, scenes, window_of, tmpdir, ws)
            else:  # BigTIFF: GDAL's COG driver, from an uncompressed stripes file
                stripes = _write_stripes(os.path.join(tmpdir, "blocks.tif"), grid, scenes, window_of)
                _add_overviews(stripes)
                _gdal_cog(stripes, path)
            reads = reader.opened
        store.put_file(rel, path)
        return MonthResult(tile, year, month, "written", seconds=time.perf_counter() - started, reads=reads)
    except (RasterReadError, PipelineError) as e:
        return MonthResult(tile, year, month, "failed", error=str(e), seconds=time.perf_counter() - started)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# Fills its second argument, ``(9, height, width)`` float32 (a view of the writer's buffer),
# with the composite of the window ``(col, row, width, height)``.
WindowFn = Callable[[tuple[int, int, int, int], npt.NDArray[np.float32]], None]


def _write_cog(
    path: str,
    grid: TileGrid,
    scenes: Sequence[Scene],
    window_of: WindowFn,
    workdir: str,
    workspace: recipe.Workspace | None = None,
) -> None:
    """The month's COG straight from its windows (pipeline.hls.cog.CogBuilder): a row of
    blocks is composited, then its tiles compressed and its overview rows averaged, so the
    month is held one row of 512 px blocks at a time (9 bands x 512 x 3660 px float32:
    68 MiB at full size), never written out uncompressed and read back. ``workspace``: where
    the row of blocks and the writer's arrays come from (new ones when not given)."""
    ws = workspace or recipe.Workspace()
    builder = cog.CogBuilder(
        grid.width, grid.height, len(recipe.OUTPUT_BANDS), _copied_entries(grid, scenes, workdir), workdir, block=BLOCK,
        workspace=ws,
    )  # fmt: skip
    try:
        rows = ws.array(
            "cog_rows", (len(recipe.OUTPUT_BANDS), min(BLOCK, grid.height), grid.width), np.float32
        )
        row0 = 0
        for col, row, w, h in windows(grid, len(scenes)):
            if row - row0 >= BLOCK:  # the first window of the next row of blocks
                builder.add_rows(rows[:, : min(BLOCK, grid.height - row0)])
                row0 += BLOCK
            window_of((col, row, w, h), rows[:, row - row0 : row - row0 + h, col : col + w])
        builder.add_rows(rows[:, : grid.height - row0])
    except BaseException:
        builder.discard()
        raise
    builder.finish(path)


def _profile(grid: TileGrid, width: int, height: int) -> dict[str, Any]:
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    return {
        "driver": "GTiff", "width": width, "height": height, "count": len(recipe.OUTPUT_BANDS),
        "dtype": "float32", "crs": CRS.from_epsg(grid.epsg), "transform": Affine(*grid.transform), "nodata": float("nan"),
    }  # fmt: skip


def _describe(dst: Any, scenes: Sequence[Scene]) -> None:
    """The month's band descriptions and tags (the scenes it was made from)."""
    for i, name in enumerate(recipe.OUTPUT_BANDS, start=1):
        dst.set_band_description(i, name)
    dst.update_tags(HLS_SCENES_DIGEST=scenes_digest(scenes), HLS_SCENES=",".join(s.id for s in scenes))


def _copied_entries(grid: TileGrid, scenes: Sequence[Scene], workdir: str) -> list[cog.Entry]:
    """The COG's georeferencing, GDAL metadata and nodata entries, as GDAL writes them: the
    first IFD of a one-pixel GTiff of the month's profile (they do not depend on the size)."""
    import rasterio

    path = os.path.join(workdir, "header.tif")
    with rasterio.open(path, "w", **_profile(grid, 1, 1)) as dst:
        _describe(dst, scenes)
    with open(path, "rb") as f:
        first = cog.read_first_ifd(f)
    os.unlink(path)
    return [first[t] for t in cog.COPIED_TAGS if t in first]


def _write_stripes(path: str, grid: TileGrid, scenes: Sequence[Scene], window_of: WindowFn) -> str:
    """The month in an uncompressed tiled GTiff, for GDAL's COG driver (a month too large
    for a classic TIFF)."""
    import rasterio
    from rasterio.windows import Window

    profile = {
        **_profile(grid, grid.width, grid.height),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "interleave": "band", "bigtiff": "IF_SAFER",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        _describe(dst, scenes)
        for col, row, w, h in windows(grid, len(scenes)):
            out = np.empty((len(recipe.OUTPUT_BANDS), h, w), dtype=np.float32)
            window_of((col, row, w, h), out)
            dst.write(out, window=Window(col, row, w, h))
    return path


def _add_overviews(path: str) -> None:
    """Averaged overviews (NaN pixels left out of each average) inside the stripes file."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(path, "r+") as ds:
        factors = cog.overview_factors(ds.width, ds.height)
        if factors:
            ds.build_overviews(factors, Resampling.average)


def _to_cog(src: str, dst: str) -> None:
    """The month's COG from its stripes file: pipeline.hls.cog's writer (GDAL's COG layout,
    pixel for pixel what GDAL's COG driver writes, at about half its CPU), or GDAL's COG
    driver itself for a month too large for a classic TIFF."""
    try:
        cog.write_cog(src, dst, block=BLOCK)
    except cog.TooLargeForClassicTiff:
        _gdal_cog(src, dst)


def _gdal_cog(src: str, dst: str) -> None:
    import rasterio
    from rasterio.shutil import copy

    with rasterio.Env(GDAL_NUM_THREADS="1"):
        copy(src, dst, driver="COG", **COG_OPTIONS)


def run_months(
    jobs: Sequence[tuple[str, int, int, TileGrid, list[Scene]]],
    store: Store,
    access: ArchiveAccess,
    progress: Any = None,
    in_process_threads: int | None = None,
) -> list[MonthResult]:
    """Every (tile, year, month) job, one call of :func:`composite_month` each
    (:func:`pipeline.cluster.run_each`: on ``in_process_threads`` threads of this process, or on
    the Dask cluster), results as they come, largest months first."""
    from pipeline import cluster

    # Largest months first (most scenes: the most reads and medians): with a few months per
    # thread, the last to start are then the shortest, so no thread is left with a long
    # month while the others idle (longest-processing-time-first scheduling).
    jobs = sorted(jobs, key=lambda job: -len(job[4]))
    calls = [(tile, year, month, grid, scenes, store, access) for tile, year, month, grid, scenes in jobs]
    labels = [f"{tile}-{year}-{month:02d}" for tile, year, month, _, _ in jobs]
    results: list[MonthResult] = []
    for _, future in cluster.run_each(
        composite_month, calls, name="hls", labels=labels, in_process_threads=in_process_threads
    ):
        results.append(future.result())
        if progress is not None:
            progress(len(results), len(jobs), results[-1])
    return sorted(results, key=lambda r: (r.tile, r.year, r.month))


# ---- samples ---------------------------------------------------------------------------


def points_fingerprint(points: Sequence[Any], chip_size: int) -> str:
    h = hashlib.sha1(f"{chip_size}".encode())
    for p in points:
        h.update(f"\n{p.id},{p.lat!r},{p.lon!r},{p.year}".encode())
    return h.hexdigest()[:12]


def place_points(
    points: Sequence[Any], plans: dict[str, TileYearPlan], chip_size: int
) -> dict[str, dict[str, Any]]:
    """Per point id: ``{"tile": id or None, "col0", "row0", "reason"}``. Candidates are the
    tiles with at least one usable scene (so composites) whose grid holds the whole chip;
    the point's own MGRS tile wins, then the first by id."""
    from pipeline.mgrs_grid import lonlat_to, tile_of

    placed: dict[str, dict[str, Any]] = {}
    for p in points:
        own = tile_of(p.lat, p.lon)
        positions: dict[str, recipe.TilePosition] = {}
        for tile, plan in plans.items():
            if plan.grid is None or not plan.scenes:
                continue
            x, y = lonlat_to(plan.grid.epsg, p.lon, p.lat)
            col, row = plan.grid.fractional_pixel(x, y)
            positions[tile] = (col, row, plan.grid.width, plan.grid.height)
        chosen = recipe.choose_tile(own, positions, chip_size)
        if chosen is None:
            with_data = sorted(positions)
            reason = (
                f"the {chip_size}-pixel chip fits in no tile with composites in {p.year} (tried {', '.join(with_data)})"
                if with_data
                else f"no tile near the point has HLS scenes in {p.year} (own tile {own})"
            )
            placed[p.id] = {"tile": None, "reason": reason}
        else:
            col0, row0 = recipe.chip_origin(positions[chosen][0], positions[chosen][1], chip_size)
            placed[p.id] = {"tile": chosen, "col0": col0, "row0": row0, "reason": ""}
    return placed


def open_output_raster(store: Store, rel: str) -> Any:
    """A composite COG of the project, opened for windowed reads (local path, or the object
    store through fsspec: only the ranges read are fetched)."""
    import rasterio

    if store.is_local:
        return rasterio.open(store.path(rel))
    return rasterio.open(store.fs.open(store.path(rel), "rb"))


def sample_tile(
    store: Store,
    tile: str,
    year: int,
    months: Sequence[int],
    points: Sequence[Any],
    placement: dict[str, dict[str, Any]],
    chip_size: int,
) -> None:
    """Cut the chips of the points placed in ``tile`` from its composites and write the
    Zarr store, then the centre table (the completion marker)."""
    # The centre table marks the (tile, year) complete: gone first, so a run killed while the
    # Zarr store is being replaced leaves it incomplete, never old-marker-over-new-chips.
    store.delete(layout.samples_centre(year, tile))
    n = len(points)
    chips = recipe.empty_chips(n, chip_size)
    centres = recipe.empty_centres(n)
    for month in months:
        with open_output_raster(store, layout.composite_tif(tile, year, month)) as ds:
            from rasterio.windows import Window

            for i, p in enumerate(points):
                where = placement[p.id]
                win = Window(where["col0"], where["row0"], chip_size, chip_size)
                data = ds.read(window=win).astype(np.float32, copy=False)  # (9, chip, chip)
                chips[i, month - 1] = recipe.cut_chip(data, 0, 0, chip_size)
                medians, count = recipe.centre_values(data, 0, 0, chip_size)
                centres[i, month - 1, : len(recipe.BANDS)] = medians
                centres[i, month - 1, recipe.VALID_COUNT_INDEX] = count
    _write_zarr(store, layout.samples_zarr(year, tile), chips, points)
    table = recipe.centre_table(
        [p.id for p in points], [p.lat for p in points], [p.lon for p in points], year, centres
    )
    for name, _ in points[0].extra if points else ():
        table[name] = np.repeat([dict(p.extra)[name] for p in points], 12)
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    store.write_bytes(layout.samples_centre(year, tile), buf.getvalue())


def _write_zarr(store: Store, rel: str, chips: npt.NDArray[np.float32], points: Sequence[Any]) -> None:
    import zarr

    tmp = scratch_dir("hls-zarr-")
    path = os.path.join(tmp, "store.zarr")
    try:
        root = zarr.open_group(path, mode="w", zarr_format=2)
        arr = root.create_array(
            "chips",
            shape=chips.shape,
            chunks=(max(1, min(len(points), 64)), 12, len(recipe.BANDS), chips.shape[3], chips.shape[4]),
            dtype="float32",
            fill_value=float("nan"),
        )
        arr[...] = chips
        arr.attrs["_ARRAY_DIMENSIONS"] = ["point", "month", "band", "y", "x"]
        arr.attrs["coordinates"] = "id lat lon"  # xarray: per-point coordinates of the chips
        coords = {
            "id": np.array([p.id for p in points], dtype=str),
            "lat": np.array([p.lat for p in points], dtype=np.float64),
            "lon": np.array([p.lon for p in points], dtype=np.float64),
            "month": np.array(recipe.MONTHS, dtype=np.int32),
            "band": np.array(recipe.BANDS, dtype=str),
        }
        dims = {"id": "point", "lat": "point", "lon": "point", "month": "month", "band": "band"}
        for name, values in coords.items():
            # No fill value: coordinates are all present, and one would make xarray decode them as floats.
            a = root.create_array(
                name,
                shape=values.shape,
                dtype=values.dtype if values.dtype.kind != "U" else str,
                fill_value=None,
            )
            a[...] = values
            a.attrs["_ARRAY_DIMENSIONS"] = [dims[name]]
        zarr.consolidate_metadata(path)
        store.put_tree(rel, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def jdump(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n"
