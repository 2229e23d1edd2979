"""The work of one output task cut into pieces for Dask: each piece computes and writes its objects on a
worker and returns their digests.

Why pieces: the object count, not the arithmetic, is the cost (a PUT is ~1 ms of a client's CPU and a
round trip), so the objects of one output task are made and written by several workers at once. A
piece takes a disjoint share of the output's keys, and makes them from the rows that decide them, in
their original order, so its bytes are those of the whole computation:

- tiles, grid stats and regional aggregates are per period: a piece takes a run of periods;
- regional series are per region, and every region id of a row includes the value of the first present
  region column: a piece takes the values hashed to it (unless a value holds ``__``, which could make
  two rows of different values share an id; then one piece does all);
- the global series (its qualifier columns are ordered over all periods) and the extrema (over all
  regions and periods) are one piece.
"""

from __future__ import annotations

import io
import math
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.causemos import recipe
from pipeline.causemos.outputs import ObjectWriter
from targets.store import Store, shared_store

SPLIT_BY = {
    "compute_global_timeseries": "whole",
    "compute_regional_stats": "whole",
    "compute_regional_timeseries": "regions",
    "compute_regional_aggregation": "periods",
    "compute_tiles": "periods",
}


# What a point costs, in units of a point of a regional output: a point of the tiles lands in one tile
# per zoom level (9 objects of a few hundred bytes each, written one PUT apiece), so their pieces are cut
# 9 times smaller and the tiles of a feature are written by every Dask worker at once.
OBJECTS_PER_POINT = {"compute_tiles": recipe.MAX_CELL_LEVEL - recipe.MIN_CELL_LEVEL + 1}


@dataclass(frozen=True)
class Piece:
    """Part ``part`` of ``parts`` of one output task (``family``) of one (feature, time resolution)."""

    family: str
    context: recipe.FeatureContext
    split: str
    part: int
    parts: int

    @property
    def label(self) -> str:
        return f"part {self.part + 1}/{self.parts}" if self.parts > 1 else "whole"


def plan_pieces(
    family: str,
    context: recipe.FeatureContext,
    *,
    points_rows: int,
    periods: int,
    level0_regions: int,
    separator_in_level0: bool,
    points_per_piece: int,
    max_parts: int,
) -> list[Piece]:
    """Pieces of about ``points_per_piece`` points each (a tile point counting as 9), at most ``max_parts``
    and at most one per period (or first-level region)."""
    split = SPLIT_BY[family]
    work = points_rows * OBJECTS_PER_POINT.get(family, 1)
    if split == "periods":
        limit = periods
    elif split == "regions" and context.present and not separator_in_level0:
        limit = level0_regions
    else:
        limit = 1
    parts = max(1, min(limit, max_parts, math.ceil(work / max(points_per_piece, 1))))
    return [Piece(family, context, split, part, parts) for part in range(parts)]


def piece_points(points: pd.DataFrame, piece: Piece) -> pd.DataFrame:
    """The rows of ``points`` that decide the piece's objects, in their order."""
    if piece.parts == 1:
        return points
    if piece.split == "periods":
        periods = np.unique(points["timestamp"].to_numpy())
        mine = np.array_split(periods, piece.parts)[piece.part]
        return points.loc[points["timestamp"].isin(mine).to_numpy()]
    column = piece.context.present[0]
    codes, values = pd.factorize(points[column], use_na_sentinel=False)
    buckets = np.array([zlib.crc32(str(v).encode("utf-8")) % piece.parts for v in values], dtype=np.int64)
    return points.loc[buckets[codes] == piece.part]


@dataclass(frozen=True)
class StatePoints:
    """Points kept as parquet under ``_state`` (``digest`` of its bytes names the version, for the cache);
    ``chunk_rows``: when set, read in runs of whole periods of at most that many rows, a larger period a
    block at a time (:class:`PointsFile`), rather than whole, for points of more rows than a worker should
    hold at once."""

    store: Store
    key: str
    digest: str
    chunk_rows: int = 0


def state_points(store: Store, written: Mapping[str, Any], batch_rows: int) -> StatePoints:
    """The points prepare wrote (``written``: their entry in the prepare record), read as an output task
    reads them: points of more rows than a batch of input (the stage's "partition") a run of periods of
    at most a batch at a time, so a worker's memory does not grow with them."""
    rows = int(written["rows"])
    return StatePoints(
        store, written["key"], written["digest"], chunk_rows=batch_rows if rows > batch_rows else 0
    )


def period_row_groups(parquet: pq.ParquetFile, name: str) -> dict[int, list[int]]:
    """Each period's row groups in a points file as prepare writes it (a row group holds one period),
    from their ``timestamp`` statistics: no data read."""
    column = parquet.schema_arrow.get_field_index("timestamp")
    groups: dict[int, list[int]] = {}
    metadata = parquet.metadata
    for index in range(metadata.num_row_groups):
        stats = metadata.row_group(index).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min != stats.max:
            raise ValueError(f"{name}: row group {index} is not one period (not written by prepare)")
        groups.setdefault(int(stats.min), []).append(index)
    return groups


def period_runs(rows: Sequence[tuple[int, int]], max_rows: int) -> tuple[tuple[int, ...], ...]:
    """``(period, rows)`` pairs (ascending periods) cut into runs of consecutive periods of at most
    ``max_rows`` rows each; a period of more rows than that is a run alone."""
    runs: list[tuple[int, ...]] = []
    run: list[int] = []
    held = 0
    for period, count in rows:
        if run and held + count > max_rows:
            runs.append(tuple(run))
            run, held = [], 0
        run.append(period)
        held += count
    if run:
        runs.append(tuple(run))
    return tuple(runs)


class PointsFile:
    """A points file as prepare writes it (sorted by period, a row group per period), read a run of periods
    at a time: which row groups hold a period comes from their ``timestamp`` statistics, so a run costs
    the reads of its own row groups only (ranged GETs on S3)."""

    def __init__(self, ref: StatePoints) -> None:
        self._handle = shared_store(ref.store).open_binary(ref.key)
        self._parquet = pq.ParquetFile(self._handle)
        self._groups = period_row_groups(self._parquet, ref.key)

    @property
    def periods(self) -> tuple[int, ...]:
        """The periods, ascending (the order of the file)."""
        return tuple(sorted(self._groups))

    def rows(self, period: int) -> int:
        """The points of ``period``, from the row groups' row counts."""
        metadata = self._parquet.metadata
        return sum(metadata.row_group(g).num_rows for g in self._groups[period])

    def runs(self, periods: Sequence[int], max_rows: int) -> tuple[tuple[int, ...], ...]:
        """``periods`` (ascending) as runs of at most ``max_rows`` rows (:func:`period_runs`), from the row
        groups' row counts: no data read."""
        return period_runs([(p, self.rows(p)) for p in periods], max_rows)

    def read(self, periods: Sequence[int], columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The points of ``periods`` (ascending), in the file's order; ``columns`` only, if given (those
        of them the file has)."""
        groups = [group for period in periods for group in self._groups[period]]
        return self._parquet.read_row_groups(
            groups, columns=self._present(columns), use_pandas_metadata=True
        ).to_pandas()

    def read_blocks(
        self, period: int, columns: Sequence[str] | None, block_rows: int
    ) -> Iterator[pd.DataFrame]:
        """The points of ``period`` in their order, ``block_rows`` at a time (the last block fewer), each
        with its number (:data:`recipe.BLOCK`): streamed from the period's row groups, so no more than
        about a block is held, however many points the period has."""
        pending: list[pa.RecordBatch] = []
        held = block = 0
        batches = self._parquet.iter_batches(
            batch_size=block_rows,
            row_groups=self._groups[period],
            columns=self._present(columns),
            use_pandas_metadata=True,
        )
        for batch in batches:
            pending.append(batch)
            held += batch.num_rows
            while held >= block_rows:  # a row group's last batch may be short: blocks cut across them
                table = pa.Table.from_batches(pending)
                yield self._block(table.slice(0, block_rows), block)
                block += 1
                rest = table.slice(block_rows)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield self._block(pa.Table.from_batches(pending), block)

    def _block(self, table: pa.Table, number: int) -> pd.DataFrame:
        frame = table.replace_schema_metadata(self._parquet.schema_arrow.metadata).to_pandas()
        frame[recipe.BLOCK] = number
        return frame

    def read_all(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        return self._parquet.read(columns=self._present(columns), use_pandas_metadata=True).to_pandas()

    def _present(self, columns: Sequence[str] | None) -> list[str] | None:
        if columns is None:
            return None
        names = set(self._parquet.schema_arrow.names)
        return [c for c in columns if c in names]

    def close(self) -> None:
        self._handle.close()


_cache: OrderedDict[tuple[str, str, str], pd.DataFrame] = OrderedDict()
_cache_lock = threading.Lock()
CACHED_POINTS = 2  # a worker runs pieces of one (feature, time resolution) at a time, mostly


def load_points(ref: StatePoints) -> pd.DataFrame:
    """The points, read once per worker process and version (pieces of a task share them)."""
    key = (ref.store.url, ref.key, ref.digest)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    points = pd.read_parquet(io.BytesIO(shared_store(ref.store).read_bytes(ref.key)))
    with _cache_lock:
        _cache[key] = points
        while len(_cache) > CACHED_POINTS:
            _cache.popitem(last=False)
    return points


@dataclass(frozen=True)
class Trusted:
    """Digests of objects known to be in place (sent once to each worker, not with every piece)."""

    digests: dict[str, str]


@dataclass
class PieceResult:
    label: str
    objects: dict[str, str]
    written: int
    unchanged: int
    bytes_written: int
    bytes_total: int
    seconds: float


def piece_periods(piece: Piece, periods: Sequence[int]) -> Sequence[int]:
    """The periods a piece reads: its share of them (a split by periods), else all."""
    if piece.split == "periods" and piece.parts > 1:
        return [int(p) for p in np.array_split(np.asarray(periods), piece.parts)[piece.part]]
    return periods


def run_piece(
    piece: Piece, points: StatePoints | pd.DataFrame, store: Store | None, trusted: Trusted | None
) -> PieceResult:
    """Compute the piece's objects and write those that changed (``store=None``: count them only)."""
    started = time.perf_counter()
    writer = ObjectWriter(store, trusted.digests if trusted is not None else None)
    try:
        if isinstance(points, StatePoints) and points.chunk_rows:
            source = PointsFile(points)
            try:
                writer.put_all(objects_by_period(piece, source, points.chunk_rows))
            finally:
                source.close()
        else:
            frame = load_points(points) if isinstance(points, StatePoints) else points
            # the blocks of a period are its own points' (before a share of the regions is taken)
            subset = piece_points(recipe.with_period_blocks(frame), piece)
            if len(subset.index) or piece.parts == 1:  # a share of the periods or regions may be empty
                writer.put_all(recipe.FAMILY_OBJECTS[piece.family](subset, piece.context))
    finally:
        stats = writer.close()
    return PieceResult(
        piece.label,
        stats.objects,
        stats.written,
        stats.unchanged,
        stats.bytes_written,
        stats.bytes_total,
        time.perf_counter() - started,
    )


def family_columns(family: str, context: recipe.FeatureContext) -> list[str]:
    """The columns of the points a family's objects are made from (the rest is not read): the period,
    the values (and weights), and its own regions, qualifiers or coordinates. Read by period, a
    ``year`` period of a large input is ~200,000 points, and the region and qualifier columns are
    text: the tiles and the global series need none of them."""
    values = ["t_sum", "t_mean", *([context.weight_column, "t_wavg"] if context.weight_column else [])]
    own: dict[str, Sequence[str]] = {
        "compute_global_timeseries": context.breakdowns,
        "compute_regional_stats": context.present,
        "compute_regional_timeseries": (*context.present, *context.regional_qualifiers),
        "compute_regional_aggregation": (*context.present, *context.breakdowns),
        "compute_tiles": recipe.LAT_LNG,
    }
    return list(dict.fromkeys(["timestamp", *own[family], *values]))


def objects_by_period(piece: Piece, source: PointsFile, chunk_rows: int) -> recipe.ObjectStream:
    """The piece's objects made with one run of periods (at most ``chunk_rows`` rows), or one block of a
    larger period (:data:`recipe.PERIOD_BLOCK_ROWS`), in memory at a time: a family whose objects are each
    of one period from runs of the piece's periods in turn; the others from :class:`recipe.PeriodChunks`
    of all periods (with a share of the regions, each run's rows of it). The same objects as from the
    whole points (tests/test_causemos_e2e.py)."""
    periods = source.periods
    columns = family_columns(piece.family, piece.context)
    runs = source.runs(piece_periods(piece, periods), chunk_rows)
    chunks = recipe.PeriodChunks(
        read=lambda run: source.read(run, columns),
        runs=runs,
        read_blocks=lambda period: source.read_blocks(period, columns, recipe.PERIOD_BLOCK_ROWS),
        by_block=frozenset(p for p in periods if source.rows(p) > chunk_rows),
    )
    make = recipe.FAMILY_OBJECTS[piece.family]
    if piece.family in recipe.PER_PERIOD_FAMILIES:
        for run in runs:
            yield from make(replace(chunks, runs=(run,)), piece.context)
        return
    if piece.parts > 1:  # a share of the first-level regions
        chunks = chunks.map(lambda frame: piece_points(frame, piece))
    if periods:
        yield from make(chunks, piece.context)
    elif piece.parts == 1:  # no points: the family's objects of none (e.g. a global series' header)
        yield from make(source.read_all(columns), piece.context)


def max_parts_for(client: Any, configured: int) -> int:
    """Pieces per output task: as configured, else twice the cluster's threads."""
    if configured > 0:
        return configured
    try:
        threads = int(sum(client.nthreads().values()))
    except Exception:
        threads = 4
    return max(2, 2 * threads)
