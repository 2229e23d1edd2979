"""The prepare stage on Dask: read, validate and temporally aggregate the input, one file per Dask task,
each file streamed in batches of rows (``[causemos] batch_rows``), so a worker's memory does not grow
with the size of a file.

The reference concatenates every file into one Dask frame; here each file is read where it is worked
on, and only small things travel: a first pass per file returns its columns, dtypes, row counts per
feature and blank columns, from which the client decides how the files fit together
(:class:`~pipeline.causemos.recipe.ConcatPlan`, the concatenated dtypes as a zero-row *template*, the
columns blank in the whole input). A second pass per file fixes, validates and splits its rows by feature
and sums them per point and period (:func:`~pipeline.causemos.recipe.temporal_partials`). A combine task
per (feature, time resolution) adds the files' partial sums up, in file order, and writes the feature's
points as a parquet file under ``_state`` (under the dry run's own scratch store: it writes nothing at
the destination). The client gathers the small results: counts, region and qualifier lists, the raw
rows of small features.

Every result equals :func:`~pipeline.causemos.recipe.run_in_memory`'s on the concatenated input (sums
up to the order of adding the files' partial sums, as in the reference's own Dask ``groupby``).

Streaming keeps whole-file semantics: a column's dtype is the one pandas gives the *whole* file (found
by the first pass, which folds the batches' dtypes: an integer column with a null anywhere is float in
every batch, a bool one object), and every batch is cast to it before anything looks at its values;
counts add up; lists (regions, qualifier values, features) are unions in order of first appearance;
partial sums are added in row order. What a file's part keeps between batches is bounded by its
outputs, not by its rows: the distinct values of the lists, the raw rows of the features small enough
for ``raw.csv`` (at most ``raw_count_threshold`` each), and one row per point and period.

Features of more rows than a batch are *spooled*, so that no
worker holds a feature's points whole (their number grows with the rows): a file's part writes its
partial sums to ``_state`` whenever it holds more than a batch of them, split into buckets by a hash of
the whole point (period included), about a batch of rows per bucket (:func:`spool_buckets`), each
point carrying its first appearance in the input (``recipe.FIRST_APPEARANCE``: file, then row); the
combine adds up one bucket at a time (every point lies in one bucket, and a bucket's spooled parts are
added in file and batch order) and merges the buckets period by period, a period's shares put back in
order of first appearance (:func:`merge_by_period`): the same points, in the same order within a
period, with no more than a bucket, or about a batch of a period's finished points, held at once. The
spool is deleted with the run's other stale state (``CausemosPrepare``).
"""

from __future__ import annotations

import io
import json
import math
import operator
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals

from pipeline.causemos import layout, recipe
from pipeline.causemos.layout import points_key, points_prefix
from pipeline.causemos.outputs import file_digest, object_digest
from pipeline.causemos.pieces import period_row_groups
from pipeline.causemos.settings import RunSettings
from pipeline.causemos.sources import Source, iter_frames
from pipeline.errors import InputError
from pipeline.scratch import scratch_dir
from targets.store import Store, shared_store

TIME_RESOLUTIONS_WITH_ALL = (*recipe.TIME_RESOLUTIONS, "all")


# ---------------------------------------------------------------- pass 1: what each file holds


@dataclass(frozen=True)
class SourceScan:
    """One file's shape: a zero-row frame with its columns and dtypes, rows, rows per feature key (in order
    of appearance) and the columns blank (null or whitespace) in it."""

    url: str
    name: str
    schema: pd.DataFrame
    rows: int
    feature_rows: dict[str, int]
    blank: frozenset[str]


def fold_dtypes(schema: pd.DataFrame | None, batch: pd.DataFrame) -> pd.DataFrame:
    """The zero-row frame of the dtypes pandas gives the rows seen so far (``schema``) and ``batch`` read
    as one: the wider dtype of each column (int and float -> float, bool and object -> object), the union
    of the categories of a categorical column (in order of appearance, as pyarrow unifies a file's
    dictionaries)."""
    empty = batch.iloc[:0]
    if schema is None:
        return empty.copy()
    columns = {}
    for column in schema.columns:
        before, now = schema[column], empty[column]
        if isinstance(before.dtype, pd.CategoricalDtype) and isinstance(now.dtype, pd.CategoricalDtype):
            columns[column] = pd.Series(
                union_categoricals([before.array, now.array], ignore_order=True), name=column
            )
        elif before.dtype == now.dtype:
            columns[column] = before
        else:
            columns[column] = pd.concat([before, now], ignore_index=True)
    return pd.DataFrame(columns).iloc[:0]


def fit_dtypes(batch: pd.DataFrame, schema: pd.DataFrame) -> pd.DataFrame:
    """``batch`` with the dtypes of its whole file (``schema``, from :func:`fold_dtypes`), so that what is
    done to its values (text of a number, a feature key) is what would be done to the whole file's."""
    differing = {c: schema[c].dtype for c in schema.columns if batch[c].dtype != schema[c].dtype}
    return batch.astype(differing) if differing else batch


def _feature_key_counts(values: Counter[Any], feature_dtype: Any) -> dict[str, int]:
    """Rows per feature key from rows per raw feature value, the keys made from the values with the
    whole file's dtype (an integer id is ``10.0`` in a file where a feature is null)."""
    if not values:
        return {}
    raw = pd.Series(list(values), dtype=object).astype(feature_dtype)
    counts: dict[str, int] = {}
    for key, count in zip(recipe.feature_keys(raw), values.values(), strict=True):
        counts[str(key)] = counts.get(str(key), 0) + count
    return counts


def _raw_feature_counts(features: pd.Series) -> dict[Any, int]:
    """Rows per non-null feature value, in order of first appearance (a categorical column as its values:
    its unused categories are no features, and its categories' order is not the rows')."""
    if isinstance(features.dtype, pd.CategoricalDtype):
        features = features.astype(object)
    counts = features.value_counts(dropna=True, sort=False)
    return {value: int(count) for value, count in counts.items() if count}


def scan_source(source: Source, batch_rows: int) -> SourceScan:
    """The file's shape from one streamed pass (memory of one batch)."""
    schema: pd.DataFrame | None = None
    rows = 0
    blank: set[str] | None = None
    features: Counter[Any] = Counter()
    for batch in iter_frames(source, batch_rows):
        if schema is None:
            recipe.require_columns(source.url, batch)
        schema = fold_dtypes(schema, batch)
        rows += len(batch.index)
        batch_blank = {c for c in batch.columns if recipe.is_blank_column(batch[c])}
        blank = batch_blank if blank is None else blank & batch_blank
        features.update(_raw_feature_counts(batch["feature"]))
    assert schema is not None and blank is not None, "iter_frames yields at least one frame"
    counts = _feature_key_counts(features, schema["feature"].dtype)
    return SourceScan(source.url, source.name, schema, rows, counts, frozenset(blank))


def input_blank_columns(scans: Sequence[SourceScan], plan: recipe.ConcatPlan) -> frozenset[str]:
    """Columns blank in the concatenated input: blank, or absent, in every file once fixed by the plan
    (a qualifier column added as ``""`` is not blank, nor is a mismatched region column, whose nulls
    become ``"None"``)."""
    fixed_columns: list[set[str]] = []
    fixed_blank: list[set[str]] = []
    for scan in scans:
        columns = set(scan.schema.columns)
        blank = set(scan.blank)
        if plan.several:
            columns |= set(plan.extra_columns)
            blank -= set(plan.mismatched)
        fixed_columns.append(columns)
        fixed_blank.append(blank)
    every = dict.fromkeys(c for cols in fixed_columns for c in cols)
    return frozenset(
        c
        for c in every
        if all(c not in cols or c in blank for cols, blank in zip(fixed_columns, fixed_blank, strict=True))
    )


def input_template(scans: Sequence[SourceScan], plan: recipe.ConcatPlan) -> pd.DataFrame | None:
    """The concatenated input's columns and dtypes as a zero-row frame (None for a single file: nothing
    to fit). Each file, fixed, is concatenated to it, so its values take the dtypes the whole input has."""
    if not plan.several:
        return None
    fixed = [recipe.apply_concat_plan(scan.schema, plan) for scan in scans]
    return pd.concat(fixed, ignore_index=True, sort=False)


# ---------------------------------------------------------------- pass 2: each file's part


@dataclass(frozen=True)
class PrepareJob:
    """What every file's second pass needs to know about the whole input."""

    plan: recipe.ConcatPlan
    template: pd.DataFrame | None
    blank: frozenset[str]
    weight_column: str
    fill_timestamp: int
    small_features: frozenset[str]
    present: tuple[str, ...]
    qualifiers: tuple[str, ...]
    time_resolutions: tuple[str, ...]
    batch_rows: int
    spool: SpoolPlan | None = None


@dataclass
class PartSmall:
    """The small results of one file, gathered by the client."""

    raw_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    num_missing_ts: int = 0
    num_missing_val: int = 0
    num_invalid_ts: int = 0
    natives: list[Any] = field(default_factory=list)
    feature_natives: dict[str, Any] = field(default_factory=dict)
    region_lists: dict[str, dict[str, list[str]] | None] = field(default_factory=dict)
    qualifier_values: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    first_level_separator: bool = False


@dataclass
class PartResult:
    small: PartSmall
    partials: dict[tuple[str, str], pd.DataFrame]
    spooled: dict[tuple[str, str], list[SpoolPiece]] = field(default_factory=dict)


# ---------------------------------------------------------------- the spool of large features


@dataclass(frozen=True)
class SpoolPlan:
    """Where the files' parts spool the partial sums of the features of more rows than a batch
    (``buckets``: feature key -> number of buckets), under ``prefix`` of ``store``."""

    store: Store
    prefix: str
    buckets: Mapping[str, int]


@dataclass(frozen=True)
class SpoolPiece:
    """Partial sums of one bucket spooled by a file's part (in its order: file, then flush)."""

    key: str
    bucket: int
    rows: int


def spool_buckets(rows_per_feature: Mapping[str, int], batch_rows: int) -> dict[str, int]:
    """Buckets per feature of more rows than a batch: one per batch of its rows, so that a bucket's
    points (at most a row each) are about a batch."""
    return {key: math.ceil(rows / batch_rows) for key, rows in rows_per_feature.items() if rows > batch_rows}


def partial_buckets(partials: pd.DataFrame, weight_column: str, buckets: int) -> np.ndarray:
    """The bucket of each row of ``partials``: a hash of its whole point (period included), so every
    bucket holds about the same share of the points however few the periods (a ``year`` period of a
    large input holds a fifth of its points), and a point's partial sums from every file and flush
    meet in one bucket. pandas' hash has a fixed key: the same in every process."""
    keyed = partials[recipe.partial_key_columns(partials, weight_column)]
    hashed = np.asarray(pd.util.hash_pandas_object(keyed, index=False), dtype=np.uint64)
    return np.asarray(hashed % np.uint64(buckets), dtype=np.int64)


# A spooled point's first appearance (recipe.FIRST_APPEARANCE) is its file's number in these high bits
# and its row in the file (validated rows) below them: the order of the input as one concatenation.
FILE_ORDINAL_SHIFT = 40


def first_row_of(file_index: int, rows_before: int) -> int:
    """The ordinal of a file's validated row ``rows_before`` (see :data:`FILE_ORDINAL_SHIFT`)."""
    return (file_index << FILE_ORDINAL_SHIFT) + rows_before


class _SpoolWriter:
    """Writes one file's partial sums of one (feature, time resolution) to the spool, bucket by bucket."""

    def __init__(self, plan: SpoolPlan, key: str, time_res: str, file_index: int, weight_column: str) -> None:
        self.store = plan.store
        self.buckets = plan.buckets[key]
        self.weight_column = weight_column
        name = object_digest(key.encode("utf-8"))  # a feature key may hold any text
        self.prefix = f"{plan.prefix}{time_res}/{name}/{file_index:05d}/"
        self.pieces: list[SpoolPiece] = []
        self.flushes = 0

    def write(self, partials: pd.DataFrame) -> None:
        buckets = partial_buckets(partials, self.weight_column, self.buckets)
        store = shared_store(self.store)
        for bucket in np.unique(buckets).tolist():
            rows = partials.loc[buckets == bucket]
            key = f"{self.prefix}{self.flushes:06d}-{bucket:05d}.parquet"
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), buffer)
            store.write_bytes(key, buffer.getvalue())
            self.pieces.append(SpoolPiece(key, int(bucket), len(rows.index)))
        self.flushes += 1


def read_spooled(store: Store, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(shared_store(store).read_bytes(key)))


class _PartialSums:
    """One file's partial sums of one feature at one time resolution, added up as batches come: the
    batches' parts are kept until they hold more rows than a batch, then folded into one (groups in
    order of first appearance), so what is kept is about one row per point and period. With a
    ``spool``, :meth:`flush` writes what is held there instead and keeps nothing."""

    def __init__(self, weight_column: str, fold_rows: int, spool: _SpoolWriter | None = None) -> None:
        self.weight_column = weight_column
        self.fold_rows = max(1, fold_rows)
        self.spool = spool
        self.parts: list[pd.DataFrame] = []
        self.rows = 0

    def add(self, part: pd.DataFrame) -> None:
        self.parts.append(part)
        self.rows += len(part.index)
        if len(self.parts) > 1 and self.rows > self.fold_rows:
            self.parts = [recipe.add_partials(self.parts, self.weight_column)]
            self.rows = len(self.parts[0].index)

    def flush(self) -> None:
        if self.spool is None or not self.parts:
            return
        self.spool.write(self.total())
        self.parts, self.rows = [], 0

    def total(self) -> pd.DataFrame:
        return recipe.add_partials(self.parts, self.weight_column)


def _merge_lists(into: dict[str, list[Any]], more: Mapping[str, Sequence[Any]]) -> None:
    """Append to each list the values it does not hold yet (a union in order of first appearance)."""
    for name, values in more.items():
        known = into.setdefault(name, [])
        seen = set(known)
        for value in values:
            if value not in seen:
                seen.add(value)
                known.append(value)


def _batches(source: Source, schema: pd.DataFrame, job: PrepareJob) -> Iterator[pd.DataFrame]:
    """The file's rows, batch by batch, as the whole input's rows: the file's dtypes, fixed as the plan
    says, then given the input's dtypes."""
    for batch in iter_frames(source, job.batch_rows):
        fixed = recipe.apply_concat_plan(fit_dtypes(batch, schema), job.plan)
        if job.template is not None:
            yield pd.concat([job.template, fixed], ignore_index=True, sort=False)
        else:
            yield fixed.reset_index(drop=True)


def prepare_part(source: Source, schema: pd.DataFrame, job: PrepareJob, file_index: int = 0) -> PartResult:
    """One file, streamed: fixed as the plan says, given the input's dtypes, validated against the input's
    blank columns, split by feature; per feature its lists and its partial sums per period (those of
    the features the job spools written to the spool, ``file_index`` naming the file there)."""
    return prepare_batches(_batches(source, schema, job), job, file_index)


def prepare_batches(batches: Iterable[pd.DataFrame], job: PrepareJob, file_index: int = 0) -> PartResult:
    """:func:`prepare_part` on the batches of one file (already with the input's dtypes)."""
    small = PartSmall()
    raw_pieces: dict[str, list[pd.DataFrame]] = {}
    natives: dict[str, list[Any]] = {}
    sums: dict[tuple[str, str], _PartialSums] = {}
    validated_rows = 0  # before this batch: its rows' positions in the file, for spooled points
    for raw in batches:
        if job.small_features:
            for key, rows in recipe.split_by_feature(raw).items():
                if key in job.small_features:
                    raw_pieces.setdefault(key, []).append(rows.drop(columns=["feature"]))
        checked = recipe.validate_and_fix(raw, job.weight_column, job.fill_timestamp, blank_columns=job.blank)
        frame = checked.frame
        small.num_missing_ts += checked.num_missing_ts
        small.num_missing_val += checked.num_missing_val
        small.num_invalid_ts += checked.num_invalid_ts
        _merge_lists(natives, {"": recipe.native_features(frame)})
        if job.present and len(frame.index) and not small.first_level_separator:
            small.first_level_separator = bool(
                frame[job.present[0]].str.contains(recipe.REGION_ID_SEPARATOR, regex=False).any()
            )
        for key, rows in recipe.split_by_feature(frame).items():
            small.feature_natives.setdefault(key, rows["feature"].iloc[0])
            regions = recipe.region_lists(rows, job.present)
            if regions is None:
                small.region_lists[key] = None
            else:
                known = small.region_lists.setdefault(key, {})
                assert known is not None
                _merge_lists(known, regions)
            _merge_lists(
                small.qualifier_values.setdefault(key, {}), recipe.qualifier_values(rows, job.qualifiers)
            )
            for time_res in job.time_resolutions:
                if (key, time_res) not in sums:
                    spool = None
                    if job.spool is not None and key in job.spool.buckets:
                        spool = _SpoolWriter(job.spool, key, time_res, file_index, checked.weight_column)
                    sums[(key, time_res)] = _PartialSums(checked.weight_column, job.batch_rows, spool)
                partial_sums = sums[(key, time_res)]
                first = first_row_of(file_index, validated_rows) if partial_sums.spool is not None else None
                partial_sums.add(recipe.temporal_partials(rows, time_res, checked.weight_column, first))
        validated_rows += len(frame.index)
        # what the spooled sums hold, together, stays under a batch of rows
        if sum(s.rows for s in sums.values() if s.spool is not None) > job.batch_rows:
            for partial in sums.values():
                partial.flush()
    small.natives = natives.get("", [])
    small.raw_tables = {
        key: pd.concat(pieces, ignore_index=True, sort=False) for key, pieces in raw_pieces.items()
    }
    spooled: dict[tuple[str, str], list[SpoolPiece]] = {}
    for k, partial in sums.items():
        if partial.spool is not None:
            partial.flush()
            spooled[k] = partial.spool.pieces
    return PartResult(
        small, {k: partial.total() for k, partial in sums.items() if partial.spool is None}, spooled
    )


def part_partials(part: PartResult, key: str, time_res: str) -> pd.DataFrame:
    """One file's partial sums of one feature at one time resolution (runs where the file's part is)."""
    return part.partials[(key, time_res)]


def part_spooled(part: PartResult, key: str, time_res: str) -> list[SpoolPiece]:
    """What one file's part spooled of one feature at one time resolution."""
    return part.spooled[(key, time_res)]


# ---------------------------------------------------------------- combine per (feature, time resolution)


POINTS_ROW_GROUP_ROWS = 1 << 20  # pyarrow's default


@dataclass(frozen=True)
class PointsWritten:
    """A feature's points at one time resolution, written under ``_state``."""

    key: str
    rows: int
    timestamps: int
    size: int
    digest: str


def combine_points(parts: Sequence[pd.DataFrame], weight_column: str) -> pd.DataFrame:
    """The points of one feature at one time resolution, without the ``feature`` column (constant; pieces
    never group by it), sorted by period with each period's points in their order (every output is per
    period or ordered by time, so this changes no output, and lets the outputs be made one period at a
    time: recipe.PeriodChunks)."""
    points = recipe.combine_temporal(list(parts), weight_column).drop(columns=["feature"])
    return points.sort_values("timestamp", kind="stable", ignore_index=True)


def points_parquet(points: pd.DataFrame) -> bytes:
    """The points (sorted by period) as parquet with one row group per period (more for a period of over
    ``POINTS_ROW_GROUP_ROWS``), so a period is read alone (pieces.PointsFile)."""
    buffer = io.BytesIO()
    write_points_parquet(points, buffer)
    return buffer.getvalue()


def write_points_parquet(points: pd.DataFrame, sink: Any) -> None:
    """:func:`points_parquet` written to ``sink`` (a path or a binary file)."""
    table = pa.Table.from_pandas(points, preserve_index=False)
    stamps = points["timestamp"].to_numpy()
    starts = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]]) if len(stamps) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(stamps)]
    with pq.ParquetWriter(sink, table.schema) as writer:
        if not len(stamps):
            writer.write_table(table)
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            writer.write_table(table.slice(start, end - start), row_group_size=POINTS_ROW_GROUP_ROWS)


def write_points(parts: Sequence[pd.DataFrame], weight_column: str, store: Store, key: str) -> PointsWritten:
    """Combine and write the points as parquet to ``key`` (one PUT or rename)."""
    points = combine_points(parts, weight_column)
    data = points_parquet(points)
    shared_store(store).write_bytes(key, data)
    return PointsWritten(
        key, len(points.index), int(points["timestamp"].nunique()), len(data), object_digest(data)
    )


def summarise_all(parts: Sequence[pd.DataFrame], weight_column: str) -> list[dict[str, Any]]:
    """``output_agg_values`` of one feature from its ``all``-period partial sums."""
    return recipe.output_summary(recipe.combine_temporal(list(parts), weight_column), weight_column)


def _bucket_parts(
    store: Store, spooled: Sequence[Sequence[SpoolPiece]], buckets: int
) -> Iterator[list[pd.DataFrame]]:
    """Each non-empty bucket's spooled partial sums, in file and flush order, one bucket at a time."""
    for bucket in range(buckets):
        keys = [piece.key for pieces in spooled for piece in pieces if piece.bucket == bucket]
        if keys:
            yield [read_spooled(store, key) for key in keys]


def write_spooled_points(
    spooled: Sequence[Sequence[SpoolPiece]],
    buckets: int,
    weight_column: str,
    store: Store,
    key: str,
    batch_rows: int,
) -> PointsWritten:
    """:func:`write_points` from the files' spooled partial sums, a bucket at a time (each bucket's points,
    with their first appearances, written to a local file), then merged period by period into the points
    file (:func:`merge_by_period`), uploaded (or moved) whole."""
    workdir = scratch_dir("causemos-points-")
    try:
        pieces: list[str] = []
        for index, parts in enumerate(_bucket_parts(store, spooled, buckets)):
            path = os.path.join(workdir, f"bucket-{index}.parquet")
            write_points_parquet(combine_points(parts, weight_column), path)
            pieces.append(path)
            del parts
        if not pieces:
            raise ValueError(f"{key}: nothing was spooled for these points")
        merged = os.path.join(workdir, "points.parquet")
        rows, periods = merge_by_period(pieces, merged, batch_rows)
        size = os.path.getsize(merged)
        digest = file_digest(merged)
        shared_store(store).put_file(key, merged)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return PointsWritten(key, rows, periods, size, digest)


def _merged_schema(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for points files written from shares of the points: a column null in one share (no
    value there) takes its type from another; pandas' metadata from a share that has every type."""
    unified = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    whole = next((s for s in schemas if s.remove_metadata().equals(unified)), schemas[0])
    return unified.with_metadata(whole.metadata)


def _without_first_appearance(schema: pa.Schema) -> pa.Schema:
    """``schema`` less :data:`recipe.FIRST_APPEARANCE` (its field and its entry in pandas' metadata): the
    points file's schema, the shares' order restored."""
    name = recipe.FIRST_APPEARANCE
    if name not in schema.names:
        return schema
    metadata = dict(schema.metadata or {})
    if b"pandas" in metadata:
        document = json.loads(metadata[b"pandas"])
        document["columns"] = [c for c in document.get("columns", []) if c.get("name") != name]
        metadata[b"pandas"] = json.dumps(document).encode("utf-8")
    return schema.remove(schema.get_field_index(name)).with_metadata(metadata)


def merge_by_period(paths: Sequence[str], merged: str, batch_rows: int) -> tuple[int, int]:
    """Points files of shares of the points (each sorted by period, a period's points in order of first
    appearance; a period may lie in several) as one, sorted by period, a period's shares merged in order
    of first appearance (:data:`recipe.FIRST_APPEARANCE`, then dropped), so the period's points are those
    of the whole, in its order; rows and periods. Streamed: about ``batch_rows`` points of a period are
    held at a time (:func:`_merge_in_order`), written as row groups of up to that many, each of one period
    (a period of more points is in several)."""
    files = [pq.ParquetFile(path) for path in paths]
    try:
        schema = _merged_schema([f.schema_arrow for f in files])
        output = _without_first_appearance(schema)
        groups: dict[int, list[tuple[int, list[int]]]] = {}
        for number, (parquet, path) in enumerate(zip(files, paths, strict=True)):
            for period, indexes in period_row_groups(parquet, path).items():
                groups.setdefault(period, []).append((number, indexes))
        if any(len(shares) > 1 for shares in groups.values()) and recipe.FIRST_APPEARANCE not in schema.names:
            raise ValueError(
                f"a period in several shares of the points without their order ({', '.join(paths)})"
            )
        rows = 0
        with pq.ParquetWriter(merged, output) as writer:
            for period in sorted(groups):
                share_rows = max(1, batch_rows // len(groups[period]))
                streams = [
                    (
                        pa.Table.from_batches([batch]).cast(schema)
                        for batch in files[number].iter_batches(batch_size=share_rows, row_groups=indexes)
                    )
                    for number, indexes in groups[period]
                ]
                names = [paths[number] for number, _ in groups[period]]
                ordered = (
                    _merge_in_order(streams, names) if recipe.FIRST_APPEARANCE in schema.names else streams[0]
                )  # without first appearances, the period is in one share (checked above)
                held: list[pa.Table] = []
                held_rows = 0
                for table in ordered:
                    if recipe.FIRST_APPEARANCE in table.column_names:
                        table = table.drop_columns([recipe.FIRST_APPEARANCE])
                    held.append(table.cast(output))
                    held_rows += table.num_rows
                    if held_rows >= batch_rows:
                        writer.write_table(pa.concat_tables(held), row_group_size=POINTS_ROW_GROUP_ROWS)
                        rows, held, held_rows = rows + held_rows, [], 0
                if held:
                    writer.write_table(pa.concat_tables(held), row_group_size=POINTS_ROW_GROUP_ROWS)
                    rows += held_rows
    finally:
        for parquet in files:
            parquet.close()
    return rows, len(groups)


def _merge_in_order(streams: Sequence[Iterator[pa.Table]], names: Sequence[str]) -> Iterator[pa.Table]:
    """The rows of ``streams`` (each in ascending :data:`recipe.FIRST_APPEARANCE`) merged in that order, a
    table at a time: a stream's next table is read only once its last one is used up, so what is held is
    about one table per stream. Rows up to the least of the last appearances held by the streams that go
    on are complete: no later row comes before them."""
    name = recipe.FIRST_APPEARANCE
    buffers: list[pa.Table | None] = [None] * len(streams)
    going = [True] * len(streams)
    last = [-1] * len(streams)  # the last first appearance read from each stream
    while True:
        for index, stream in enumerate(streams):
            while going[index] and _empty(buffers[index]):
                table = next(stream, None)
                if table is None:
                    going[index] = False
                    break
                firsts = table.column(name).to_numpy()
                if len(firsts) and (firsts[0] < last[index] or (np.diff(firsts) < 0).any()):
                    raise ValueError(f"{names[index]}: points not in order of first appearance")
                if len(firsts):
                    last[index] = int(firsts[-1])
                buffers[index] = table
        holding = [i for i, table in enumerate(buffers) if not _empty(table)]
        if not holding:
            return
        limit = min((last[i] for i in holding if going[i]), default=None)
        taken: list[pa.Table] = []
        for index in holding:
            table = buffers[index]
            assert table is not None
            count = table.num_rows
            if limit is not None:
                count = int(np.searchsorted(table.column(name).to_numpy(), limit, side="right"))
            taken.append(table.slice(0, count))
            buffers[index] = table.slice(count)
        merged = pa.concat_tables(taken)
        yield merged.take(pc.sort_indices(merged, sort_keys=[(name, "ascending")]))


def _empty(table: pa.Table | None) -> bool:
    return table is None or not table.num_rows


def summarise_spooled(
    spooled: Sequence[Sequence[SpoolPiece]], buckets: int, weight_column: str, store: Store
) -> list[dict[str, Any]]:
    """:func:`summarise_all` from the files' spooled ``all``-period partial sums, a bucket (a share of the
    points) at a time."""
    shares = [
        recipe.summary_sums(recipe.combine_temporal(parts, weight_column), weight_column)
        for parts in _bucket_parts(store, spooled, buckets)
    ]
    return recipe.output_summary_of(shares, weight_column)


# ---------------------------------------------------------------- the whole stage, from the client


@dataclass
class FeatureInfo:
    """One feature of the validated input (in order of first appearance)."""

    key: str
    native: Any
    index: int
    counts: dict[str, int]
    level0_regions: int
    points: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # time_res -> {key, rows, timestamps, ...}


@dataclass
class Prepared:
    """What the prepare stage found: ``info`` (JSON-able, kept as ``_state/.../prepare.json``; where each
    feature's points were written under ``store``) and the raw and info objects."""

    info: dict[str, Any]
    objects: dict[str, bytes]


def _ordered_union(lists: Sequence[Sequence[Any]]) -> list[Any]:
    return list(dict.fromkeys(v for values in lists for v in values))


def prepare(client: Any, settings: RunSettings, store: Store, fingerprint: str) -> Prepared:
    """Run the stage on the Dask ``client``, the spool and the points written under ``store`` (the
    destination's, or the dry run's scratch)."""
    numeric = [s for s in settings.sources if not recipe.is_string_values_file(s.name)]
    if not settings.sources:
        raise InputError("No parquet files provided")
    if not numeric:
        raise InputError("No numeric parquet files")
    rows_per_batch = settings.batch_rows
    scans: list[SourceScan] = client.gather(
        [client.submit(scan_source, s, rows_per_batch, pure=False) for s in numeric]
    )
    num_rows = sum(s.rows for s in scans)
    if num_rows == 0:
        raise InputError("DataFrame has no rows")
    plan = recipe.concat_plan([s.schema for s in scans])
    template = input_template(scans, plan)
    blank = input_blank_columns(scans, plan)
    columns = list(template.columns if template is not None else scans[0].schema.columns)
    dropped = {c for c in blank if c not in recipe.NEVER_DROPPED}
    validated_columns = pd.DataFrame(columns=[c for c in columns if c not in dropped])
    weight = (
        settings.weight_column
        if settings.weight_column and settings.weight_column in validated_columns.columns
        else ""
    )
    present = tuple(recipe.region_columns(validated_columns))
    coordinates = recipe.has_coordinates(validated_columns)
    qualifiers = tuple(recipe.qualifier_columns(validated_columns, weight))
    rows_per_feature: dict[str, int] = {}
    for scan in scans:
        for key, count in scan.feature_rows.items():
            rows_per_feature[key] = rows_per_feature.get(key, 0) + count
    small_features = frozenset(k for k, n in rows_per_feature.items() if n <= settings.raw_count_threshold)
    summarise = not settings.is_indicator
    d, r = settings.data_id, settings.run_id
    spool = None
    if spooled := spool_buckets(rows_per_feature, rows_per_batch):
        spool = SpoolPlan(store, f"{points_prefix(d, r)}{fingerprint}/spool/", spooled)
    job = PrepareJob(
        plan=plan, template=template, blank=blank, weight_column=settings.weight_column,
        fill_timestamp=settings.fill_timestamp, small_features=small_features, present=present, qualifiers=qualifiers,
        time_resolutions=TIME_RESOLUTIONS_WITH_ALL if summarise else recipe.TIME_RESOLUTIONS, batch_rows=rows_per_batch,
        spool=spool,
    )  # fmt: skip
    part_futures = [
        client.submit(prepare_part, s, scan.schema, job, index, pure=False)
        for index, (s, scan) in enumerate(zip(numeric, scans, strict=True))
    ]
    smalls: list[PartSmall] = client.gather(
        [client.submit(operator.attrgetter("small"), f, pure=False) for f in part_futures]
    )

    objects: dict[str, bytes] = {}
    keys = _ordered_union([list(s.feature_natives) for s in smalls])
    features: list[FeatureInfo] = []
    for index, key in enumerate(keys):
        holding = [s for s in smalls if key in s.feature_natives]
        native = holding[0].feature_natives[key]
        lists = _combine_region_lists([s.region_lists[key] for s in holding])
        values = {q: _ordered_union([s.qualifier_values[key][q] for s in holding]) for q in qualifiers}
        objects.update(recipe.info_objects(d, r, key, lists, values, settings.thresholds))
        level0 = len(lists[recipe.REGION_LEVELS[0]]) if lists else 0
        features.append(
            FeatureInfo(key, _json_native(native), index, {q: len(v) for q, v in values.items()}, level0)
        )
    for key in rows_per_feature:
        tables = [s.raw_tables[key] for s in smalls if key in s.raw_tables]
        if key in small_features and tables:
            objects[layout.raw_csv(d, r, key)] = recipe.csv_bytes(
                pd.concat(tables, ignore_index=True, sort=False)
            )

    def parts_of(key: str, time_res: str) -> list[Any]:
        take = part_spooled if spool is not None and key in spool.buckets else part_partials
        return [
            client.submit(take, f, key, time_res, pure=False)
            for f, s in zip(part_futures, smalls, strict=True)
            if key in s.feature_natives
        ]

    points_futures: dict[tuple[str, str], Any] = {}
    summary_futures = []
    for feature in features:
        buckets = spool.buckets.get(feature.key, 0) if spool is not None else 0
        for time_res in recipe.TIME_RESOLUTIONS:
            parts = parts_of(feature.key, time_res)
            rel = points_key(d, r, fingerprint, time_res, feature.index)
            points_futures[(feature.key, time_res)] = (
                client.submit(
                    write_spooled_points, parts, buckets, weight, store, rel, rows_per_batch, pure=False
                )
                if buckets
                else client.submit(write_points, parts, weight, store, rel, pure=False)
            )
        if summarise:
            parts = parts_of(feature.key, "all")
            summary_futures.append(
                client.submit(summarise_spooled, parts, buckets, weight, store, pure=False)
                if buckets
                else client.submit(summarise_all, parts, weight, pure=False)
            )
    summaries: list[list[dict[str, Any]]] = client.gather(summary_futures)
    written: dict[tuple[str, str], PointsWritten] = client.gather(points_futures)
    for feature in features:
        for time_res in recipe.TIME_RESOLUTIONS:
            w = written[(feature.key, time_res)]
            feature.points[time_res] = {
                "key": w.key,
                "rows": w.rows,
                "timestamps": w.timestamps,
                "size": w.size,
                "digest": w.digest,
            }

    info = {
        "fingerprint": fingerprint,
        "num_rows": num_rows,
        "rows_per_feature": rows_per_feature,
        "num_missing_ts": sum(s.num_missing_ts for s in smalls),
        "num_invalid_ts": sum(s.num_invalid_ts for s in smalls),
        "num_missing_val": sum(s.num_missing_val for s in smalls),
        "present": list(present),
        "coordinates": coordinates,
        "weight_column": weight,
        "qualifiers": list(qualifiers),
        "natives": [_json_native(v) for v in _ordered_union([s.natives for s in smalls])],
        "first_level_separator": any(s.first_level_separator for s in smalls),
        "features": [feature.__dict__ for feature in features],
        "output_agg_values": [entry for entries in summaries for entry in entries] if summarise else None,
        "objects": len(objects),
    }
    return Prepared(info, objects)


def _combine_region_lists(parts: Sequence[Mapping[str, list[str]] | None]) -> dict[str, list[str]] | None:
    if not parts or parts[0] is None:
        return None
    return {
        level: _ordered_union([p[level] for p in parts if p is not None]) for level in recipe.REGION_LEVELS
    }


def _json_native(value: Any) -> Any:
    """A feature value as JSON keeps it (numpy scalars as Python ones)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def results_bytes(info: Mapping[str, Any], settings: RunSettings) -> bytes:
    """results.json from the prepare stage's record and the run's options."""
    has_tiles = bool(info["coordinates"]) and "compute_tiles" in settings.families
    document = recipe.results_document(
        num_rows=info["num_rows"],
        rows_per_feature=info["rows_per_feature"],
        num_missing_ts=info["num_missing_ts"],
        num_invalid_ts=info["num_invalid_ts"],
        num_missing_val=info["num_missing_val"],
        present_regions=info["present"],
        features=info["natives"],
        raw_count_threshold=settings.raw_count_threshold,
        has_tiles=has_tiles,
        weight_column=info["weight_column"],
        month_timeseries_size={f["key"]: f["points"]["month"]["timestamps"] for f in info["features"]},
        year_timeseries_size={f["key"]: f["points"]["year"]["timestamps"] for f in info["features"]},
        output_agg_values=None if settings.is_indicator else info["output_agg_values"],
    )
    return recipe.json_bytes(document)


def feature_context(
    info: Mapping[str, Any], settings: RunSettings, feature: Mapping[str, Any], time_res: str
) -> recipe.FeatureContext:
    """The context of one (feature, time resolution) from the prepare record."""
    counts = {f["key"]: f["counts"] for f in info["features"]}
    return recipe.feature_context(
        settings.parameters(),
        time_res,
        feature["key"],
        feature["native"],
        info["present"],
        info["weight_column"],
        counts,
        bool(info["coordinates"]),
    )
