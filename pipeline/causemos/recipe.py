"""The Causemos recipe (``shared/spec/causemos.md``) as pure pandas/numpy functions.

Reference: the "Data Pipeline" flow of uncharted-causemos/slow-tortoise at 6a0f89a
(``flows/data_pipeline.py``, ``flows/common.py``). Every function here takes frames or dicts and
returns frames or dicts; nothing reads or writes storage. A task gets its rows, calls these, and writes
the results under the names of :mod:`pipeline.causemos.layout` with :func:`csv_bytes`,
:func:`json_bytes` and :meth:`TileData.encode`. :func:`run_in_memory` chains every stage for a whole
run, as a small oracle for the workflow and its tests.

What the reference does and this module copies, because the dashboard reads the results:

- Groups come out in order of first appearance (Dask's ``groupby`` with ``sort=None``), so a
  qualifier series' value columns are ordered by the first period holding the value, then by the input.
- Region levels are named by position in two ways: region lists, regional aggregates and extrema name
  the i-th *present* region column after ``REGION_LEVELS[i]`` and join the first i+1 levels, while
  regional series name it after the column itself and join up to that column's own level. With all four
  columns (the normal case) both agree; with a gap (``country, admin2``) they differ, as in the reference.
- Means are ``sum / count`` (Dask's way), sums skip NaN (``0`` for an all-NaN group), counts count
  non-NaN ``t_mean``.

One deliberate difference: rows whose ``lat``/``lng`` is missing stay in every output that needs no
coordinates (the reference loses them in its temporal ``groupby``, whose keys include ``lat``/``lng``);
only tiles and grid stats leave them out. Rows with a null ``feature`` vanish from every aggregate, as
in the reference.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from pipeline.causemos import layout
from pipeline.causemos.tiles import encode_tile_arrays, encode_tiles
from pipeline.errors import InputError

REGION_LEVELS: tuple[str, ...] = ("country", "admin1", "admin2", "admin3")
LAT_LNG: tuple[str, str] = ("lat", "lng")
REQUIRED_COLUMNS = frozenset({"timestamp", *REGION_LEVELS, *LAT_LNG, "feature", "value"})
NEVER_DROPPED = frozenset({"timestamp", "feature", "value"})
MISSING_TEXT = "None"
REGION_ID_SEPARATOR = "__"

# Pandas holds times as int64 nanoseconds; the reference drops rows at or above this many milliseconds.
MAX_TIMESTAMP_MS: float = np.iinfo(np.int64).max / 1_000_000
TIME_RESOLUTIONS: tuple[str, ...] = layout.TIME_RESOLUTIONS

# Files holding string values, skipped by the reference: ``x_str.parquet.gzip``, ``x_str.3.parquet.gzip``.
STRING_VALUES_FILE = re.compile(r".*_str(.[0-9]+)?.parquet.gzip$")
_BLANK_TEXT = re.compile(r"^\s+$")

OUTPUT_TASKS: tuple[str, ...] = (
    "compute_global_timeseries",
    "compute_regional_stats",
    "compute_regional_timeseries",
    "compute_regional_aggregation",
    "compute_tiles",
)
RECORD_RESULTS = "record_results"
DEFAULT_QUALIFIER_THRESHOLDS: dict[str, int] = {
    "max_count": 10000,
    "regional_timeseries_count": 100,
    "regional_timeseries_max_level": 1,
}
DEFAULT_RAW_COUNT_THRESHOLD = 10000

# Tiles: z14 cells ("subtiles") rolled up to levels 14..6, each level-L cell a bin of tile (L-6, x>>6, y>>6).
MAX_CELL_LEVEL = 14
MIN_CELL_LEVEL = 6
LEVEL_DIFF = 6
BINS_PER_SIDE = 1 << LEVEL_DIFF
TOTAL_BINS = BINS_PER_SIDE * BINS_PER_SIDE
MAX_EXTREMA_ITEMS = 20
GRID_STATS_COLUMNS: tuple[str, ...] = (
    "zoom",
    "min_s_sum_t_sum",
    "max_s_sum_t_sum",
    "min_s_sum_t_mean",
    "max_s_sum_t_mean",
    "min_s_mean_t_sum",
    "max_s_mean_t_sum",
    "min_s_mean_t_mean",
    "max_s_mean_t_mean",
)
SUMMARY_AGGS: tuple[str, ...] = ("min", "max", "sum", "mean")
SERIES_AGGS: tuple[str, ...] = ("sum", "mean")


# ================================================================ serialisers


def csv_bytes(table: pd.DataFrame) -> bytes:
    """CSV as the reference writes it: ``to_csv(index=False)``, ``\\n`` line ends, NaN as an empty cell,
    floats in their shortest round-trip form (``4.0``, ``0.48148148148148145``), UTF-8."""
    text: str = table.to_csv(index=False, lineterminator="\n")
    return text.encode("utf-8")


def json_bytes(document: Any) -> bytes:
    """JSON as the reference writes it: ``json.dumps`` defaults (``", "``/``": "`` separators, ASCII escapes)."""
    return json.dumps(document).encode("utf-8")


# ================================================================ text helpers


def to_text(series: pd.Series) -> pd.Series:
    """Values as text (``str(v)``: ``1.0``, ``2``, ``True``), nulls kept null; the reference's ``astype("string")``."""
    if isinstance(series.dtype, pd.StringDtype):
        return series.astype("str")
    values = series.to_numpy(dtype=object)
    nulls = pd.isna(series).to_numpy()
    text = np.array(
        [None if null else str(value) for value, null in zip(values, nulls, strict=True)], dtype=object
    )
    return pd.Series(text, index=series.index, dtype="str", name=series.name)


def feature_key(value: Any) -> str:
    """The text of a feature in keys and JSON object keys (the reference's f-string of the value)."""
    return f"{value}"


def feature_keys(features: pd.Series) -> pd.Series:
    return to_text(features)


# ================================================================ 0. reading


def is_string_values_file(name: str) -> bool:
    """True for the files the reference skips (string ``value`` columns): ``.*_str(.[0-9]+)?.parquet.gzip``."""
    return STRING_VALUES_FILE.match(name) is not None


def _require_columns(name: str, frame: pd.DataFrame) -> None:
    missing = [column for column in ("timestamp", "feature", "value") if column not in frame.columns]
    if missing:
        raise InputError(f"no column {', '.join(missing)}", source=name)


def _blank_text_column(length: int, index: pd.Index) -> pd.Series:
    return pd.Series(np.full(length, "", dtype=object), index=index, dtype="str")


def concat_input_frames(frames: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """The run's input: the numeric files' rows, in file order (the reference's ``read_data``).

    ``*_str.parquet.gzip`` files are skipped. With several files: a qualifier column missing from a file
    is added there as ``""``, ``feature`` becomes text, and a region column whose dtype kind differs
    between files becomes text with nulls as ``"None"`` in every file. (A region column absent from a
    file does not take part in that comparison; the reference fails on such inputs.)
    Fails like the reference: no file, no numeric file, no rows.
    """
    numeric = numeric_frames(frames)
    for name, frame in numeric:
        _require_columns(name, frame)
    plan = concat_plan([frame for _, frame in numeric])
    if not plan.several:
        combined = numeric[0][1].reset_index(drop=True)
    else:
        combined = pd.concat(
            [apply_concat_plan(frame, plan) for _, frame in numeric], ignore_index=True, sort=False
        )
    if len(combined.index) == 0:
        raise InputError("DataFrame has no rows")
    return combined


def numeric_frames(frames: Sequence[tuple[str, pd.DataFrame]]) -> list[tuple[str, pd.DataFrame]]:
    """The files the run reads (``*_str.parquet.gzip`` left out); fails like the reference when there are none."""
    if not frames:
        raise InputError("No parquet files provided")
    numeric = [(name, frame) for name, frame in frames if not is_string_values_file(name)]
    if not numeric:
        raise InputError("No numeric parquet files")
    return numeric


def require_columns(name: str, frame: pd.DataFrame) -> None:
    """``timestamp``, ``feature`` and ``value`` must be columns of every input file."""
    _require_columns(name, frame)


@dataclass(frozen=True)
class ConcatPlan:
    """How the input files are made to fit together, decided from their columns and dtypes alone (so a
    zero-row frame per file is enough, and each file can then be fixed on its own, where it is read).

    ``several``: more than one numeric file (only then is anything fixed); ``extra_columns``: every
    qualifier column of any file, in order of appearance; ``mismatched``: region columns whose dtype
    kind differs between files."""

    several: bool
    extra_columns: tuple[str, ...]
    mismatched: tuple[str, ...]


def concat_plan(frames: Sequence[pd.DataFrame]) -> ConcatPlan:
    """The reference's ``read_data`` decisions for these files (rows are not looked at)."""
    if len(frames) <= 1:
        return ConcatPlan(False, (), ())
    extra_per_frame = [[c for c in frame.columns if c not in REQUIRED_COLUMNS] for frame in frames]
    all_extra = tuple(dict.fromkeys(c for extra in extra_per_frame for c in extra))
    kinds = [{c: frame[c].dtype.kind for c in REGION_LEVELS if c in frame.columns} for frame in frames]
    mismatched = tuple(c for c in REGION_LEVELS if len({k[c] for k in kinds if c in k}) > 1)
    return ConcatPlan(True, all_extra, mismatched)


def apply_concat_plan(frame: pd.DataFrame, plan: ConcatPlan) -> pd.DataFrame:
    """One file fixed as the plan says: missing qualifier columns added as ``""`` (at the end), ``feature``
    as text, mismatched region columns as text with nulls ``"None"``. Unchanged for a single file."""
    if not plan.several:
        return frame
    frame = frame.copy()
    for column in plan.extra_columns:
        if column not in frame.columns:
            frame[column] = _blank_text_column(len(frame.index), frame.index)
    frame["feature"] = to_text(frame["feature"])
    for column in plan.mismatched:
        if column in frame.columns:
            frame[column] = to_text(frame[column]).fillna(MISSING_TEXT)
    return frame


def blank_after_plan(frame: pd.DataFrame, plan: ConcatPlan) -> frozenset[str]:
    """The columns of one (unfixed) file that are blank once the plan's fixes are applied: columns added as
    ``""`` and mismatched region columns (nulls become ``"None"``) are not; the others as
    :func:`is_blank_column` says. A column is blank in the whole input when it is blank, or absent,
    in every file."""
    added = set(plan.extra_columns) - set(frame.columns) if plan.several else set()
    refilled = set(plan.mismatched) if plan.several else set()
    return frozenset(
        c for c in frame.columns if c not in added and c not in refilled and is_blank_column(frame[c])
    )


# ================================================================ 1. raw data


def split_by_feature(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows of each feature keyed by :func:`feature_key`, in order of first appearance; null features dropped."""
    keys = feature_keys(frame["feature"])
    return {str(key): rows for key, rows in frame.groupby(keys, sort=False, dropna=True)}


def raw_rows_per_feature(raw: pd.DataFrame) -> dict[str, int]:
    """``num_rows_per_feature`` of results.json: input rows per feature, before validation."""
    return {key: int(count) for key, count in feature_keys(raw["feature"]).value_counts(sort=False).items()}


def raw_table(feature_rows: pd.DataFrame, raw_count_threshold: int) -> pd.DataFrame | None:
    """``raw.csv`` of one feature: its input rows, every column but ``feature``; None above the threshold."""
    if len(feature_rows.index) > int(raw_count_threshold):
        return None
    return feature_rows.drop(columns=["feature"])


# ================================================================ 2. validate and fix


@dataclass(frozen=True)
class Validated:
    """The fixed rows and what validation counted (results.json ``data_info``)."""

    frame: pd.DataFrame
    weight_column: str
    num_missing_ts: int
    num_missing_val: int
    num_invalid_ts: int
    dropped_columns: tuple[str, ...]


def is_blank_column(series: pd.Series) -> bool:
    """Every value null or whitespace-only text (``re.search(r"^\\s+$")``; ``""`` is not blank)."""
    nulls = pd.isna(series).to_numpy()
    if nulls.all():
        return True
    if series.dtype.kind not in "OSU":
        return False
    for value in series.to_numpy(dtype=object)[~nulls]:
        if not (isinstance(value, str) and _BLANK_TEXT.search(value)):
            return False
    return True


def _numeric_timestamps(series: pd.Series) -> pd.Series:
    if series.dtype.kind in "iuf":
        return series
    if series.dtype.kind == "b":
        return series.astype("int64")
    try:
        return pd.to_numeric(series, errors="raise")
    except (ValueError, TypeError) as exc:
        raise InputError(f"timestamp is not numeric (epoch milliseconds): {exc}", field="timestamp") from exc


def validate_and_fix(
    raw: pd.DataFrame, weight_column: str, fill_timestamp: float, blank_columns: Collection[str] | None = None
) -> Validated:
    """The reference's ``validate_and_fix``: drop blank columns, fix types, fill and count gaps.

    ``value`` becomes float64 (unparseable text fails, as ``astype`` does in the reference), ``lat``/``lng``
    numeric when both are present; other columns text with nulls as ``"None"``; null timestamps counted
    and set to ``fill_timestamp``; null values counted (before ``+-inf`` become NaN, so those are not);
    the weight column numeric with nulls 0 (or ``""`` when absent); ``//`` removed from region names;
    rows at or after ``MAX_TIMESTAMP_MS`` counted and dropped.

    ``blank_columns``: the blank columns of the whole input when ``raw`` is one part of it (the workflow
    validates each input file where it is read); None to find them in ``raw``.
    """
    if blank_columns is None:
        blank = [c for c in raw.columns if is_blank_column(raw[c])]
    else:
        blank = [c for c in raw.columns if c in blank_columns]
    dropped = tuple(c for c in blank if c not in NEVER_DROPPED)
    frame = raw.drop(columns=list(dropped))
    try:
        frame["value"] = frame["value"].astype("float64")
    except (ValueError, TypeError) as exc:
        raise InputError(f"value is not numeric: {exc}", field="value") from exc
    if all(c in frame.columns for c in LAT_LNG):
        for column in LAT_LNG:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")

    text_columns = [
        c for c in frame.columns if c not in NEVER_DROPPED and c not in blank and c not in LAT_LNG
    ]
    for column in text_columns:
        frame[column] = to_text(frame[column]).fillna(MISSING_TEXT)

    timestamps = _numeric_timestamps(frame["timestamp"])
    num_missing_ts = int(timestamps.isna().sum())
    frame["timestamp"] = timestamps.fillna(fill_timestamp) if num_missing_ts else timestamps
    num_missing_val = int(frame["value"].isna().sum())

    if weight_column and weight_column in frame.columns:
        frame[weight_column] = (
            pd.to_numeric(frame[weight_column], errors="coerce").fillna(0).astype("float64")
        )
    else:
        weight_column = ""

    frame["value"] = frame["value"].replace([np.inf, -np.inf], np.nan)
    for column in REGION_LEVELS:
        if column in text_columns:
            frame[column] = frame[column].str.replace("//", "", regex=False)

    invalid = (frame["timestamp"] >= MAX_TIMESTAMP_MS).to_numpy()
    num_invalid_ts = int(invalid.sum())
    if num_invalid_ts:
        frame = frame.loc[~invalid]
    return Validated(
        frame.reset_index(drop=True), weight_column, num_missing_ts, num_missing_val, num_invalid_ts, dropped
    )


# ================================================================ 3. configuration, region and qualifier lists


def region_columns(frame: pd.DataFrame) -> list[str]:
    """Region columns present, by level (``region_levels`` of results.json)."""
    return [c for c in REGION_LEVELS if c in frame.columns]


def has_coordinates(frame: pd.DataFrame) -> bool:
    """Tiles need both ``lat`` and ``lng`` columns (an all-null one was dropped by validation)."""
    return all(c in frame.columns for c in LAT_LNG)


def qualifier_columns(frame: pd.DataFrame, weight_column: str) -> list[str]:
    """Every column that is not a required one nor the weight column, in column order."""
    return [c for c in frame.columns if c not in REQUIRED_COLUMNS and c != weight_column]


def plan_outputs(selected_output_tasks: Sequence[str] | None, coordinates: bool) -> dict[str, bool]:
    """Which output tasks run, and whether results.json is written (the reference's ``configure_pipeline``).

    None or an empty list runs all five; results.json only when the selection is None or all five
    (so an empty list runs everything but writes no results.json, as in the reference). Tiles also
    need coordinates.
    """
    selected = list(selected_output_tasks) if selected_output_tasks is not None else None
    runs = {task: (not selected) or task in selected for task in OUTPUT_TASKS}
    runs["compute_tiles"] = runs["compute_tiles"] and coordinates
    runs[RECORD_RESULTS] = selected is None or set(selected) == set(OUTPUT_TASKS)
    return runs


def region_ids(frame: pd.DataFrame, present: Sequence[str], level: int) -> pd.Series:
    """Region id at ``level`` (0 = country): levels 0..level joined by ``__``, an absent column as ``"None"``."""
    parts: list[pd.Series | str] = [
        frame[REGION_LEVELS[i]] if REGION_LEVELS[i] in present else MISSING_TEXT for i in range(level + 1)
    ]
    if all(isinstance(part, str) for part in parts):
        constant = REGION_ID_SEPARATOR.join(str(part) for part in parts)
        return pd.Series(np.full(len(frame.index), constant, dtype=object), index=frame.index, dtype="str")
    joined: pd.Series | str = parts[0]
    for part in parts[1:]:
        joined = joined + REGION_ID_SEPARATOR + part
    assert isinstance(joined, pd.Series)
    return joined.astype("str")


def region_lists(feature_rows: pd.DataFrame, present: Sequence[str]) -> dict[str, list[str]] | None:
    """``region_lists.json`` of one feature; None when the input has no region column (nothing is written).

    Level i of the present columns is listed under ``REGION_LEVELS[i]`` (the reference's naming).
    """
    if not present:
        return None
    lists: dict[str, list[str]] = {level: [] for level in REGION_LEVELS}
    for index in range(len(present)):
        lists[REGION_LEVELS[index]] = region_ids(feature_rows, present, index).dropna().unique().tolist()
    return lists


def qualifier_values(feature_rows: pd.DataFrame, qualifiers: Sequence[str]) -> dict[str, list[Any]]:
    """``qualifiers/{qualifier}.json`` of one feature: distinct values in order of first appearance."""
    return {q: feature_rows[q].dropna().unique().tolist() for q in qualifiers}


def qualifier_counts_document(
    values: Mapping[str, Sequence[Any]], thresholds: Mapping[str, Any]
) -> dict[str, Any]:
    """``qualifier_counts.json`` of one feature."""
    return {"thresholds": dict(thresholds), "counts": {q: len(v) for q, v in values.items()}}


def limit_qualifier_map(
    qualifier_map: Mapping[str, Sequence[str]], counts: Mapping[str, Mapping[str, int]], max_count: int
) -> dict[str, list[str]]:
    """The reference's ``apply_qualifier_count_limit``: per feature (present in ``counts``), its mapped
    qualifiers that are columns with at most ``max_count`` distinct values."""
    limited: dict[str, list[str]] = {}
    for feature, qualifiers in qualifier_map.items():
        if feature not in counts:
            continue
        feature_counts = counts[feature]
        limited[feature] = [q for q in qualifiers if q in feature_counts and feature_counts[q] <= max_count]
    return limited


def feature_qualifiers(limited_map: Mapping[str, Sequence[str]], feature_value: Any) -> list[str]:
    """Qualifiers broken down for one feature (from :func:`limit_qualifier_map`'s result), without repeats.

    The reference looks the feature's *value* up in the map, whose keys are text: a numeric feature (a
    single input file with numbers in ``feature``) never gets a breakdown there, so it gets none here.
    """
    if not isinstance(feature_value, str):
        return []
    return list(dict.fromkeys(limited_map.get(feature_value, [])))


# ================================================================ group sums


def group_aggregate(
    frame: pd.DataFrame, keys: Sequence[str], named: Mapping[str, tuple[str, str]]
) -> pd.DataFrame:
    """``frame.groupby(keys, sort=False, dropna=False).agg(**named)``, groups in order of first appearance,
    except that float sums are always the compensated (Kahan) sums in row order.

    Why: pandas 3.1 adds a group's floats with ``np.add.reduceat`` (pairwise) when the rows happen to be
    grouped together and hold no NaN, and with its compensated Cython kernel otherwise, so a sum would
    depend on how the rows lie; a piece of the rows (one period, some regions) could then differ in the
    last bit from the whole. The reference's pandas (2.1) always used the compensated kernel; so do we.
    Integer sums are exact either way.
    """
    grouped = frame.groupby(list(keys), sort=False, dropna=False)
    float_sums = {n: c for n, (c, how) in named.items() if how == "sum" and frame[c].dtype.kind == "f"}
    others = {n: spec for n, spec in named.items() if n not in float_sums}
    table = grouped.agg(**others) if others else grouped.size().to_frame("_rows").iloc[:, :0]
    if float_sums:
        codes = grouped.ngroup().to_numpy().astype(np.intp)
        columns = list(float_sums.values())
        values = np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float64))
        sums = kahan_group_sums(codes, values, len(table.index))
        for index, name in enumerate(float_sums):
            table[name] = sums[:, index]
    return table[list(named)]


def kahan_group_sums(codes: np.ndarray, values: np.ndarray, ngroups: int) -> np.ndarray:
    """Sums per group (rows ``codes``, 0..ngroups-1) of each column of ``values``, NaN skipped (0 for a group
    without a number), by compensated summation in row order: pandas' own Cython kernel (``group_sum``)."""
    from pandas._libs import groupby as libgroupby

    out = np.zeros((ngroups, values.shape[1]), dtype=np.float64)
    counts = np.zeros(ngroups, dtype=np.int64)
    libgroupby.group_sum(
        out, counts, values, codes, mask=None, result_mask=None, min_count=0, is_datetimelike=False
    )
    return out


# ================================================================ 4. temporal aggregation


def period_start_ms(timestamps: pd.Series | np.ndarray, time_res: str) -> np.ndarray:
    """First instant (UTC, epoch ms) of each timestamp's month or year; 0 for ``all``.

    Like the reference (``to_datetime(unit="ms", errors="coerce")``), a time pandas cannot hold in
    nanoseconds (before 1677) counts as missing and maps to 0.
    """
    values = np.asarray(timestamps, dtype=np.float64)
    out = np.zeros(values.shape, dtype=np.int64)
    if time_res == "all":
        return out
    unit = {"month": "M", "year": "Y"}.get(time_res)
    if unit is None:
        raise ValueError(f"time_res must be 'month', 'year' or 'all', not {time_res!r}")
    valid = np.isfinite(values) & (values >= -MAX_TIMESTAMP_MS) & (values < MAX_TIMESTAMP_MS)
    millis = np.floor(values[valid]).astype(np.int64).astype("datetime64[ms]")
    out[valid] = millis.astype(f"datetime64[{unit}]").astype("datetime64[ms]").astype(np.int64)
    return out


def temporal_aggregation(frame: pd.DataFrame, time_res: str, weight_column: str) -> pd.DataFrame:
    """Points: rows grouped by every column but ``value`` (and the weight), timestamp floored to the period.

    ``t_sum`` (0 for an all-NaN group), ``t_mean``; with weights the group's mean weight and
    ``t_wavg = sum(value * w) / sum(w)``. Rows with a null feature are dropped; rows with a missing
    ``lat``/``lng`` are kept (our difference from the reference).
    """
    return combine_temporal([temporal_partials(frame, time_res, weight_column)], weight_column)


_PARTIAL_SUMS = ("t_sum", "_t_n")
_PARTIAL_WEIGHTED_SUMS = ("_t_wsum", "_t_w", "_t_wn")


# A point's first appearance in the input (:func:`temporal_partials`' ``first_row``): kept through the
# adding of partial sums as their minimum, never a key, so shares of a period's points made apart can
# be put back in the order of the whole.
FIRST_APPEARANCE = "_first"


def temporal_partials(
    frame: pd.DataFrame, time_res: str, weight_column: str, first_row: int | None = None
) -> pd.DataFrame:
    """Sums and counts per point of one part of the rows: the group columns, then ``t_sum`` (NaN skipped),
    ``_t_n`` (non-NaN values) and, with weights, ``_t_wsum, _t_w, _t_wn``. Parts of the same input are
    added up by :func:`combine_temporal` (sums and counts add; means do not). ``first_row``: the input
    position of the part's row labelled 0 (its index holds the others'); each point then carries the
    position of its first row as :data:`FIRST_APPEARANCE`."""
    frame = frame.loc[frame["feature"].notna().to_numpy()]
    weighted = bool(weight_column) and weight_column in frame.columns
    keys = [c for c in frame.columns if c != "value" and not (weighted and c == weight_column)]
    work = frame.assign(timestamp=period_start_ms(frame["timestamp"], time_res))
    aggregations: dict[str, tuple[str, str]] = {"t_sum": ("value", "sum"), "_t_n": ("value", "count")}
    if weighted:
        work["_t_wvalue"] = work["value"] * work[weight_column]
        aggregations |= {
            "_t_wsum": ("_t_wvalue", "sum"),
            "_t_w": (weight_column, "sum"),
            "_t_wn": (weight_column, "count"),
        }
    if first_row is not None:
        work[FIRST_APPEARANCE] = np.int64(first_row) + frame.index.to_numpy(dtype=np.int64)
        aggregations[FIRST_APPEARANCE] = (FIRST_APPEARANCE, "min")
    partials = group_aggregate(work, keys, aggregations).reset_index()
    partials["timestamp"] = partials["timestamp"].astype("int64")
    return partials


def _partial_sum_columns(part: pd.DataFrame, weight_column: str) -> list[str]:
    return [*_PARTIAL_SUMS, *(_PARTIAL_WEIGHTED_SUMS if weight_column and "_t_w" in part.columns else ())]


def partial_key_columns(part: pd.DataFrame, weight_column: str) -> list[str]:
    """The columns of :func:`temporal_partials` that name a point (all but the sums, counts and first
    appearance)."""
    sums = {*_partial_sum_columns(part, weight_column), FIRST_APPEARANCE}
    return [c for c in part.columns if c not in sums]


def add_partials(parts: Sequence[pd.DataFrame], weight_column: str) -> pd.DataFrame:
    """The :func:`temporal_partials` of consecutive parts of the rows (in row order) as one part: groups in
    order of first appearance, sums and counts added, first appearances the earliest (a single part is
    taken as it is). Adding is associative up to float rounding, so parts can be folded as they come
    (a file read in batches)."""
    if len(parts) == 1:
        return parts[0]
    sums = _partial_sum_columns(parts[0], weight_column)
    keys = partial_key_columns(parts[0], weight_column)
    named = {c: (c, "sum") for c in sums}
    if FIRST_APPEARANCE in parts[0].columns:
        named[FIRST_APPEARANCE] = (FIRST_APPEARANCE, "min")
    stacked = pd.concat(list(parts), ignore_index=True, sort=False)
    added = group_aggregate(stacked, keys, named).reset_index()
    added["timestamp"] = added["timestamp"].astype("int64")
    return added


def combine_temporal(parts: Sequence[pd.DataFrame], weight_column: str) -> pd.DataFrame:
    """Points from the :func:`temporal_partials` of the parts of an input, in input order: groups in order of
    first appearance, sums and counts added (a single part is taken as it is), then the means.

    Split inputs give the same points as the whole, up to the rounding of adding partial sums (none
    when the values' sums are exact), as Dask's ``groupby`` in the reference."""
    sums = _partial_sum_columns(parts[0], weight_column)
    keys = partial_key_columns(parts[0], weight_column)
    points = add_partials(parts, weight_column)
    points = points.assign(t_mean=points["t_sum"] / points["_t_n"])
    columns = [*keys, "t_sum", "t_mean"]
    if "_t_w" in sums:
        points[weight_column] = points["_t_w"] / points["_t_wn"]
        points["t_wavg"] = points["_t_wsum"] / points["_t_w"]
        columns += [weight_column, "t_wavg"]
    if FIRST_APPEARANCE in points.columns:  # parts that carry it: the points keep it, last
        columns.append(FIRST_APPEARANCE)
    return points[columns]


# ================================================================ 5. spatial aggregation


def aggregate_columns(aggs: Sequence[str], weighted: bool) -> list[str]:
    """Names and order of the aggregate columns (``s_count`` included)."""
    columns = [f"s_{a}_t_sum" for a in aggs] + [f"s_{a}_t_mean" for a in aggs] + ["s_count"]
    if weighted:
        columns += [f"s_{a}_t_wavg" for a in aggs] + ["s_wavg_t_sum", "s_wavg_t_mean", "s_wavg_t_wavg"]
    return columns


# A period's points are summed a block of this many at a time, in their order: each block's sums are the
# compensated sums of its points, and the blocks' sums are then added one after the other. The same
# whether a period is read whole or a block at a time, so an output task holds at most a block of a large
# period (a ``year`` of a large input holds millions of points) and makes the same objects, bit for bit.
# A period of up to a block (every period of a small input) is summed exactly as before, in one pass. The
# reference adds the sums of its Dask partitions the same way.
PERIOD_BLOCK_ROWS = 100_000
BLOCK = "_block"  # a point's block in its period, when its period has more points than a block


def with_period_blocks(points: pd.DataFrame) -> pd.DataFrame:
    """``points`` (whole periods, in order) with each point's block in its period (:data:`BLOCK`: its
    position among the period's points // :data:`PERIOD_BLOCK_ROWS`) when a period has more points than a
    block; else as they are. Set where whole periods are in hand, before a share of them is taken."""
    block_rows = PERIOD_BLOCK_ROWS
    if BLOCK in points.columns or len(points.index) <= block_rows:
        return points
    positions = points.groupby("timestamp", sort=False).cumcount().to_numpy()
    if positions.max() < block_rows:
        return points
    return points.assign(**{BLOCK: positions // block_rows})


def period_blocks(points: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """The points of each block (:func:`with_period_blocks`) in turn, blocks in order (all of them at once
    when no period is over a block)."""
    points = with_period_blocks(points)
    if BLOCK not in points.columns or points.empty:  # an empty share of a block: its (empty) sums
        yield points
        return
    blocks = points[BLOCK].to_numpy()
    for block in np.unique(blocks).tolist():
        yield points.loc[blocks == block]


def fold_blocks(
    tables: Iterable[pd.DataFrame], add: Callable[[Sequence[pd.DataFrame]], pd.DataFrame]
) -> pd.DataFrame:
    """Blocks' group sums added up one block after the other (``add`` of two tables: each group's sums
    added, a single compensated step over two values being a plain addition): groups in order of first
    appearance. A table is held only while the next is added."""
    total: pd.DataFrame | None = None
    for table in tables:
        total = table if total is None else add([total, table])
    if total is None:
        raise ValueError("no block to add up")
    return total


@dataclass(frozen=True)
class PeriodChunks:
    """The points of one (feature, time resolution) as a sequence of frames, each the points of a run of
    consecutive periods (``runs``, ascending), read when iterated (so only one run's points are held), each
    passed through ``transforms`` in order. A period in ``by_block`` (more points than a run may hold) is
    a run alone, read a block at a time (``read_blocks``: frames of at most :data:`PERIOD_BLOCK_ROWS`
    points, in order, each with its :data:`BLOCK`).

    What makes this exact: every aggregation of the points that the series, extrema and regional outputs
    make groups by a key that holds ``timestamp`` (the period), so each group lies in one period, hence in
    one run; and the points are kept sorted by period (prepare), so groups in order of first appearance
    over the whole frame are the groups of each run in turn. :func:`spatial_aggregation` of the chunks,
    concatenated, is then the aggregation of the whole frame, row for row and bit for bit (a period of
    more than a block summed block by block either way: :data:`PERIOD_BLOCK_ROWS`).

    Why runs, not single periods: an aggregation costs a fixed ~10 ms of pandas per call, and a feature has
    dozens of periods times (levels x qualifiers) aggregations; runs of up to a batch of rows keep the
    memory bound and make that overhead a few calls."""

    read: Callable[[tuple[int, ...]], pd.DataFrame]
    runs: tuple[tuple[int, ...], ...]
    transforms: tuple[Callable[[pd.DataFrame], pd.DataFrame], ...] = ()
    read_blocks: Callable[[int], Iterable[pd.DataFrame]] | None = None
    by_block: frozenset[int] = frozenset()

    def units(self) -> Iterator[Iterator[pd.DataFrame]]:
        """Per run, its frames: the run's points, or a period's blocks in order (each added to the
        previous ones' sums by :func:`fold_blocks`)."""
        for run in self.runs:
            if len(run) == 1 and run[0] in self.by_block and self.read_blocks is not None:
                yield (self._transformed(block) for block in self.read_blocks(run[0]))
            else:
                yield iter([self._transformed(with_period_blocks(self.read(run)))])

    def _transformed(self, frame: pd.DataFrame) -> pd.DataFrame:
        for transform in self.transforms:
            frame = transform(frame)
        return frame

    def map(self, transform: Callable[[pd.DataFrame], pd.DataFrame]) -> PeriodChunks:
        """The same chunks, each then passed through ``transform`` (applied per chunk, so it must act row by
        row or per period)."""
        return PeriodChunks(
            self.read, self.runs, (*self.transforms, transform), self.read_blocks, self.by_block
        )


Points: TypeAlias = pd.DataFrame | PeriodChunks


def by_period_blocks(
    points: Points,
    sums_of: Callable[[pd.DataFrame], pd.DataFrame],
    add: Callable[[Sequence[pd.DataFrame]], pd.DataFrame],
) -> list[pd.DataFrame]:
    """Group sums of the points (``sums_of`` a frame), a period of more than a block summed block by block
    (:func:`fold_blocks`): one table for whole points, one per run for :class:`PeriodChunks`."""
    if isinstance(points, PeriodChunks):
        return [
            fold_blocks((sums_of(block) for frame in unit for block in period_blocks(frame)), add)
            for unit in points.units()
        ]
    return [fold_blocks((sums_of(block) for block in period_blocks(points)), add)]


def spatial_aggregation(
    points: Points, group_by: Sequence[str], aggs: Sequence[str] = SERIES_AGGS, weight_column: str = ""
) -> tuple[pd.DataFrame, list[str]]:
    """The reference's ``run_spatial_aggregation``: points grouped by ``group_by`` (first-appearance order).
    Points given as :class:`PeriodChunks` (``group_by`` must hold ``timestamp``) are aggregated one run of periods
    at a time.

    For ``a`` in ``aggs`` (``sum, mean, min, max``) over ``t_sum`` and ``t_mean``, ``s_count = count(t_mean)``;
    with a weight column also over ``t_wavg`` and ``s_wavg_x = sum(x * w) / sum(w)``. Returns the frame
    (group columns, then the aggregates) and the aggregate column names.
    """
    if isinstance(points, PeriodChunks) and "timestamp" not in group_by:
        raise ValueError(f"points by period can only be grouped by keys holding the period, not {group_by}")
    raws = by_period_blocks(
        points,
        lambda frame: spatial_sums(frame, group_by, aggs, weight_column),
        lambda pair: add_spatial_sums(pair, group_by),
    )
    if not raws:
        raise ValueError("points by period without any period")
    tables = [spatial_table(raw, group_by, aggs, weight_column) for raw in raws]
    return _stacked([table for table, _ in tables]), tables[0][1]


def _filled(tables: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """The tables that hold rows, or the first if none does: an empty one (an empty period's, a block's
    share) may carry other dtypes (object keys), so it is left out unless all are empty."""
    return [table for table in tables if len(table.index)] or list(tables[:1])


def _stacked(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The :func:`_filled` tables one after the other (one taken as it is)."""
    filled = _filled(tables)
    return filled[0] if len(filled) == 1 else pd.concat(filled, ignore_index=True)


def _spatial_values(weight_column: str) -> list[str]:
    return ["t_sum", "t_mean"] + (["t_wavg"] if weight_column else [])


def spatial_sums(
    points: pd.DataFrame, group_by: Sequence[str], aggs: Sequence[str], weight_column: str
) -> pd.DataFrame:
    """What :func:`spatial_aggregation` derives its aggregates from, per group (index: ``group_by``): sums
    and counts of each value (and with a weight column the weights' and weighted values' sums), and the
    minima and maxima ``aggs`` asks for. Sums of disjoint sets of points add up (:func:`add_spatial_sums`),
    so an aggregation can be made a share of the points at a time."""
    weighted = bool(weight_column)
    values = _spatial_values(weight_column)
    work = points
    if weighted:
        weights = points[weight_column]
        work = points.assign(_s_w=weights, **{f"_s_wx_{v}": points[v] * weights for v in values})
    named: dict[str, tuple[str, str]] = {}
    for value in values:
        named[f"_sum_{value}"] = (value, "sum")
        named[f"_n_{value}"] = (value, "count")
        for agg in aggs:
            if agg in ("min", "max"):
                named[f"_{agg}_{value}"] = (value, agg)
            elif agg not in ("sum", "mean"):
                raise ValueError(f"unknown spatial aggregation {agg!r}")
    if weighted:
        named["_w"] = ("_s_w", "sum")
        named |= {f"_wx_{v}": (f"_s_wx_{v}", "sum") for v in values}
    return group_aggregate(work, group_by, named)


def add_spatial_sums(sums: Sequence[pd.DataFrame], group_by: Sequence[str]) -> pd.DataFrame:
    """The :func:`spatial_sums` of disjoint shares of the points as those of them all: sums and counts
    added (compensated, in the order given), minima and maxima of the shares' (NaN skipped); groups in
    order of first appearance (a single share is taken as it is)."""
    shares = _filled(sums)
    if len(shares) == 1:
        return shares[0]
    stacked = pd.concat(shares).reset_index()
    named = {
        column: (
            column,
            "min" if column.startswith("_min_") else "max" if column.startswith("_max_") else "sum",
        )
        for column in shares[0].columns
    }
    return group_aggregate(stacked, group_by, named)


def spatial_table(
    raw: pd.DataFrame, group_by: Sequence[str], aggs: Sequence[str], weight_column: str
) -> tuple[pd.DataFrame, list[str]]:
    """:func:`spatial_aggregation`'s frame and aggregate names from the groups' :func:`spatial_sums`."""
    values = _spatial_values(weight_column)
    table = raw.index.to_frame(index=False) if len(group_by) else pd.DataFrame(index=range(len(raw.index)))
    for value in values:
        for agg in aggs:
            if agg == "sum":
                column = raw[f"_sum_{value}"]
            elif agg == "mean":
                column = raw[f"_sum_{value}"] / raw[f"_n_{value}"]
            else:
                column = raw[f"_{agg}_{value}"]
            table[f"s_{agg}_{value}"] = column.to_numpy(dtype=np.float64)
        if value == "t_mean":
            table["s_count"] = raw["_n_t_mean"].to_numpy(dtype=np.int64)
    if weight_column:
        for value in values:
            table[f"s_wavg_{value}"] = (raw[f"_wx_{value}"] / raw["_w"]).to_numpy(dtype=np.float64)
    columns = aggregate_columns(aggs, bool(weight_column))
    return table[[*group_by, *columns]], columns


# ================================================================ 6-8. global and regional outputs


def _by_timestamp(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("timestamp", kind="stable").reset_index(drop=True)


def global_timeseries(points: Points, weight_column: str) -> pd.DataFrame:
    """``global.csv`` of one feature: ``timestamp`` then the aggregates, one row per period (by time)."""
    table, columns = spatial_aggregation(points, ["timestamp"], SERIES_AGGS, weight_column)
    return _by_timestamp(table[["timestamp", *columns]])


def qualifier_timeseries(points: Points, qualifier: str, weight_column: str) -> dict[str, pd.DataFrame]:
    """``timeseries/qualifiers/{qualifier}/{agg}.csv`` of one feature, per aggregate column (``s_count`` too).

    Wide tables: ``timestamp`` then one column per qualifier value, ordered by the first period holding
    the value, then by first appearance; an empty cell where the combination is missing (which turns that
    column's counts into floats, as the reference's frame-from-dicts does).
    """
    table, columns = spatial_aggregation(points, ["timestamp", qualifier], SERIES_AGGS, weight_column)
    ordered = _by_timestamp(table)
    times = pd.unique(ordered["timestamp"])
    value_order = pd.unique(ordered[qualifier])
    wide_tables: dict[str, pd.DataFrame] = {}
    for column in columns:
        wide = ordered.pivot(index="timestamp", columns=qualifier, values=column).reindex(
            index=times, columns=value_order
        )
        wide.columns = pd.Index([str(c) for c in wide.columns], dtype=object)
        wide = wide.astype("float64")
        if column == "s_count":
            whole = {c: wide[c].astype("int64") for c in wide.columns if not wide[c].isna().any()}
            wide = wide.assign(**whole) if whole else wide
        stamps = pd.DataFrame({"timestamp": np.asarray(times, dtype=np.int64)})
        wide_tables[column] = pd.concat([stamps, wide.reset_index(drop=True)], axis=1)
    return wide_tables


def with_region_id(points: Points, present: Sequence[str], level: int) -> Points:
    if isinstance(points, PeriodChunks):
        return points.map(lambda chunk: with_region_id_frame(chunk, present, level))
    return with_region_id_frame(points, present, level)


def with_region_id_frame(points: pd.DataFrame, present: Sequence[str], level: int) -> pd.DataFrame:
    return points.assign(region_id=region_ids(points, present, level))


@dataclass(frozen=True)
class RegionalAggregate:
    """``regional/{level}/aggs/{timestamp}/default/default.csv`` (``qualifier`` None) or ``.../qualifiers/{qualifier}.csv``."""

    level: str
    timestamp: int
    qualifier: str | None
    table: pd.DataFrame


def regional_aggregates(
    points: Points, present: Sequence[str], qualifiers: Sequence[str], weight_column: str
) -> Iterator[RegionalAggregate]:
    """Per region level, per period: one row per region (``id`` + aggregates), and per qualifier one row per
    (region, qualifier value) (``id, qualifier`` + aggregates). ``qualifiers``: the feature's mapped ones."""
    for index in range(len(present)):
        level = REGION_LEVELS[index]
        regional = with_region_id(points, present, index)
        for qualifier in [None, *qualifiers]:
            extra = [qualifier] if qualifier is not None else []
            table, columns = spatial_aggregation(
                regional, ["timestamp", "region_id", *extra], SERIES_AGGS, weight_column
            )
            renamed = table.rename(columns={"region_id": "id", **dict.fromkeys(extra, "qualifier")})
            output_columns = ["id", *(["qualifier"] if extra else []), *columns]
            for timestamp, rows in renamed.groupby("timestamp", sort=True):
                yield RegionalAggregate(
                    level, int(timestamp), qualifier, rows[output_columns].reset_index(drop=True)
                )


def regional_extrema(
    regional: pd.DataFrame, agg_columns: Sequence[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``extrema.json``: for each aggregate column, up to 20 rows equal to its min (max), newest first
    (ties in row order, as ``nlargest(keep="first")``); an all-NaN column gives empty lists."""
    result: dict[str, dict[str, list[dict[str, Any]]]] = {"min": {}, "max": {}}
    timestamps = regional["timestamp"].to_numpy(dtype=np.int64)
    ids = regional["region_id"].to_numpy(dtype=object)
    for column in agg_columns:
        values = regional[column].to_numpy(dtype=np.float64)
        for side, extreme in (("min", np.nanmin), ("max", np.nanmax)):
            if np.isnan(values).all():
                result[side][column] = []
                continue
            target = extreme(values)
            rows = np.flatnonzero(values == target)
            rows = rows[np.argsort(-timestamps[rows], kind="stable")][:MAX_EXTREMA_ITEMS]
            result[side][column] = [
                {"region_id": str(ids[r]), "timestamp": int(timestamps[r]), "value": float(values[r])}
                for r in rows
            ]
    return result


def regional_extrema_by_level(
    points: Points, present: Sequence[str], weight_column: str
) -> dict[str, dict[str, dict[str, list[dict[str, Any]]]]]:
    """``regional/{level}/stats/default/extrema.json`` of one feature, per level (named by position)."""
    documents = {}
    for index in range(len(present)):
        regional, columns = spatial_aggregation(
            with_region_id(points, present, index), ["timestamp", "region_id"], SERIES_AGGS, weight_column
        )
        documents[REGION_LEVELS[index]] = regional_extrema(regional, [c for c in columns if c != "s_count"])
    return documents


@dataclass(frozen=True)
class RegionalSeries:
    """``regional/{level}/timeseries/default/{region_id}.csv`` or ``.../qualifiers/{qualifier}/{value}/{region_id}.csv``."""

    level: str
    region_id: str
    qualifier: str | None
    qualifier_value: str | None
    table: pd.DataFrame


def regional_timeseries(
    points: Points,
    present: Sequence[str],
    qualifiers: Sequence[str],
    max_qualifier_level: int,
    weight_column: str,
) -> Iterator[RegionalSeries]:
    """One series per region (``timestamp`` + aggregates, by time), and per qualifier value for the first
    ``max_qualifier_level + 1`` present levels. ``qualifiers``: the feature's mapped ones within
    ``regional_timeseries_count``. The i-th present column is named after itself and its ids join up to
    its own level (the reference's ``compute_timeseries_by_region``)."""
    for position, level in enumerate(present):
        regional = with_region_id(points, present, REGION_LEVELS.index(level))
        level_qualifiers: list[str | None] = [None, *(qualifiers if position <= max_qualifier_level else [])]
        for qualifier in level_qualifiers:
            extra = [qualifier] if qualifier is not None else []
            table, columns = spatial_aggregation(
                regional, ["region_id", *extra, "timestamp"], SERIES_AGGS, weight_column
            )
            for key, series in _split_by_time(table, ["region_id", *extra], ["timestamp", *columns]):
                value = str(key[1]) if extra else None
                yield RegionalSeries(level, str(key[0]), qualifier, value, series)


def _split_by_time(
    table: pd.DataFrame, keys: Sequence[str], columns: Sequence[str]
) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    """Groups of ``table`` by ``keys`` (first-appearance order), each with ``columns`` by time: one sort, then slices."""
    if table.empty:
        return
    codes = table.groupby(list(keys), sort=False).ngroup().to_numpy()
    order = np.lexsort((table["timestamp"].to_numpy(), codes))
    ordered = table.iloc[order].reset_index(drop=True)
    sorted_codes = codes[order]
    starts = (
        np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        if len(order)
        else np.zeros(0, dtype=np.int64)
    )
    ends = np.r_[starts[1:], len(order)]
    key_values = [ordered[k].to_numpy(dtype=object) for k in keys]
    selected = ordered[list(columns)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        key = tuple(values[start] for values in key_values)
        yield key, selected.iloc[start:end].reset_index(drop=True)


# ================================================================ 9-10. tiles and grid stats


def cell_x(lng: np.ndarray, zoom: int = MAX_CELL_LEVEL) -> np.ndarray:
    """Slippy-map column: ``int((lng + 180) / 360 * 2**zoom)`` (truncation toward zero, as Python's ``int``)."""
    return np.trunc((np.asarray(lng, dtype=np.float64) + 180.0) / 360.0 * float(2**zoom))


def cell_y(lat: np.ndarray, zoom: int = MAX_CELL_LEVEL) -> np.ndarray:
    """Slippy-map row: ``int((1 - asinh(tan(radians(lat))) / pi) / 2 * 2**zoom)``.

    Computed with :mod:`math` once per distinct latitude, so a point on a cell edge lands where the
    reference's ``math`` puts it (numpy's ``tan``/``arcsinh`` may differ in the last bit).
    """
    lat = np.asarray(lat, dtype=np.float64)
    distinct, inverse = np.unique(lat, return_inverse=True)
    n = 2.0**zoom
    rows = np.array(
        [
            math.trunc((1.0 - math.asinh(math.tan(math.radians(v))) / math.pi) / 2.0 * n)
            for v in distinct.tolist()
        ],
        dtype=np.float64,
    )
    return rows[inverse].reshape(lat.shape)


_SAFE_CELL = float(2**52)


_CELL_COLUMNS = ("timestamp", "cell_x", "cell_y", "s_sum_t_sum", "s_sum_t_mean", "s_count")
_CELL_KEYS = ["timestamp", "cell_x", "cell_y"]


def tile_cells(points: Points) -> pd.DataFrame:
    """Points summed into z14 cells per period: ``timestamp, cell_x, cell_y, s_sum_t_sum, s_sum_t_mean, s_count``.

    Points without finite ``lat``/``lng`` are left out (tiles and grid stats are the only outputs that do).
    Cells keep the order of first appearance (the order the reference adds them into bins). Weights unused.
    A period of more points than a block is summed block by block (:data:`PERIOD_BLOCK_ROWS`).
    """
    tables = by_period_blocks(points, _block_cells, _add_cells)
    return _stacked(tables) if tables else _block_cells(pd.DataFrame())


def _block_cells(points: pd.DataFrame) -> pd.DataFrame:
    """:func:`tile_cells` of points of which no period is over a block."""
    columns = list(_CELL_COLUMNS)
    if not all(c in points.columns for c in LAT_LNG) or points.empty:
        return pd.DataFrame(
            {
                c: pd.Series(
                    dtype="int64" if c in ("timestamp", "cell_x", "cell_y", "s_count") else "float64"
                )
                for c in columns
            }
        )
    lat = pd.to_numeric(points["lat"], errors="coerce").to_numpy(dtype=np.float64)
    lng = pd.to_numeric(points["lng"], errors="coerce").to_numpy(dtype=np.float64)
    located = np.isfinite(lat) & np.isfinite(lng)
    xs = cell_x(lng[located])
    ys = cell_y(lat[located])
    sane = (np.abs(xs) < _SAFE_CELL) & (np.abs(ys) < _SAFE_CELL)  # absurd coordinates crash the reference
    rows = points.loc[located].loc[sane]
    work = pd.DataFrame(
        {
            "timestamp": rows["timestamp"].to_numpy(dtype=np.int64),
            "cell_x": xs[sane].astype(np.int64),
            "cell_y": ys[sane].astype(np.int64),
            "t_sum": rows["t_sum"].to_numpy(dtype=np.float64),
            "t_mean": rows["t_mean"].to_numpy(dtype=np.float64),
        }
    )
    cells = group_aggregate(
        work,
        _CELL_KEYS,
        {
            "s_sum_t_sum": ("t_sum", "sum"),
            "s_sum_t_mean": ("t_mean", "sum"),
            "s_count": ("t_mean", "count"),
        },
    ).reset_index()
    cells["s_count"] = cells["s_count"].astype("int64")
    return cells[columns]


def _add_cells(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Cells of consecutive blocks of points as those of all of them (sums and counts added)."""
    filled = _filled(tables)
    if len(filled) == 1:
        return filled[0]
    stacked = pd.concat(filled, ignore_index=True)
    added = group_aggregate(
        stacked, _CELL_KEYS, {c: (c, "sum") for c in ("s_sum_t_sum", "s_sum_t_mean", "s_count")}
    ).reset_index()
    added["s_count"] = added["s_count"].astype("int64")
    return added[list(_CELL_COLUMNS)]


@dataclass(frozen=True)
class TileData:
    """One tile of one period: bins (``(sx - 64x) + (sy - 64y) * 64``) with their sums and counts."""

    timestamp: int
    z: int
    x: int
    y: int
    bins: np.ndarray
    s_sum_t_sum: np.ndarray
    s_sum_t_mean: np.ndarray
    weight: np.ndarray

    def encode(self) -> bytes:
        """``tiles.Tile`` bytes; ``weight`` is the bin's ``s_count``, ``totalBins`` 4096."""
        return encode_tile_arrays(
            self.z, self.x, self.y, self.bins, self.s_sum_t_sum, self.s_sum_t_mean, self.weight, TOTAL_BINS
        )


@dataclass(frozen=True)
class LevelTiles:
    """All tiles of one zoom (cell level - 6) of one feature: per tile ``timestamps, xs, ys`` and the offset of
    its first bin in ``starts``; per bin (ascending within a tile) ``bins`` and their sums and counts."""

    z: int
    timestamps: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    starts: np.ndarray
    bins: np.ndarray
    s_sum_t_sum: np.ndarray
    s_sum_t_mean: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def tiles(self) -> Iterator[TileData]:
        ends = np.r_[self.starts[1:], len(self.bins)].tolist() if len(self.starts) else []
        for index, (start, end) in enumerate(zip(self.starts.tolist(), ends, strict=True)):
            yield TileData(
                int(self.timestamps[index]),
                self.z,
                int(self.xs[index]),
                int(self.ys[index]),
                self.bins[start:end],
                self.s_sum_t_sum[start:end],
                self.s_sum_t_mean[start:end],
                self.weight[start:end],
            )

    def encoded(self) -> Iterator[tuple[int, int, int, int, bytes]]:
        """``(timestamp, z, x, y, tile bytes)`` of every tile, encoded in one vectorised pass."""
        blobs = encode_tiles(
            self.z,
            self.xs,
            self.ys,
            self.starts,
            self.bins,
            self.s_sum_t_sum,
            self.s_sum_t_mean,
            self.weight,
            TOTAL_BINS,
        )
        for timestamp, x, y, blob in zip(
            self.timestamps.tolist(), self.xs.tolist(), self.ys.tolist(), blobs, strict=True
        ):
            yield timestamp, self.z, x, y, blob


def level_tiles(cells: pd.DataFrame, cell_level: int) -> LevelTiles:
    """Tiles of zoom ``cell_level - 6``: each z14 cell added into its level-``cell_level`` parent's bin.

    Bins are summed by plain sequential addition in cell order (the reference's ``+=`` per cell), not
    by a compensated sum. Tiles with a negative x or y (latitudes beyond the web-map's) are left out.
    """
    shift = MAX_CELL_LEVEL - cell_level
    parent_x = cells["cell_x"].to_numpy(dtype=np.int64) >> shift
    parent_y = cells["cell_y"].to_numpy(dtype=np.int64) >> shift
    tile_x, tile_y = parent_x >> LEVEL_DIFF, parent_y >> LEVEL_DIFF
    keep = (tile_x >= 0) & (tile_y >= 0)
    frame = pd.DataFrame(
        {
            "timestamp": cells["timestamp"].to_numpy(dtype=np.int64)[keep],
            "tile_x": tile_x[keep],
            "tile_y": tile_y[keep],
            "bin": (
                (parent_x - (tile_x << LEVEL_DIFF)) + (parent_y - (tile_y << LEVEL_DIFF)) * BINS_PER_SIDE
            )[keep],
        }
    )
    grouped = frame.groupby(["timestamp", "tile_x", "tile_y", "bin"], sort=True)
    codes = grouped.ngroup().to_numpy()
    sums, means, weights = (np.zeros(grouped.ngroups) for _ in range(3))
    np.add.at(sums, codes, cells["s_sum_t_sum"].to_numpy(dtype=np.float64)[keep])
    np.add.at(means, codes, cells["s_sum_t_mean"].to_numpy(dtype=np.float64)[keep])
    np.add.at(weights, codes, cells["s_count"].to_numpy(dtype=np.float64)[keep])
    keys = grouped.size().index.to_frame(index=False)
    ts, xs, ys, bins = (keys[c].to_numpy(dtype=np.int64) for c in ("timestamp", "tile_x", "tile_y", "bin"))
    starts = np.flatnonzero(np.r_[True, (ts[1:] != ts[:-1]) | (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])])
    if len(ts) == 0:
        starts = np.zeros(0, dtype=np.int64)
    return LevelTiles(
        cell_level - LEVEL_DIFF, ts[starts], xs[starts], ys[starts], starts, bins, sums, means, weights
    )


def tiles_from_cells(cells: pd.DataFrame) -> Iterator[TileData]:
    """Every tile of one feature: cell levels 14 down to 6 (tile zooms 8 down to 0)."""
    for cell_level in range(MAX_CELL_LEVEL, MIN_CELL_LEVEL - 1, -1):
        yield from level_tiles(cells, cell_level).tiles()


def encoded_tiles(cells: pd.DataFrame) -> Iterator[tuple[int, int, int, int, bytes]]:
    """``(timestamp, z, x, y, tile bytes)`` of every tile of one feature, zoom 8 down to 0."""
    for cell_level in range(MAX_CELL_LEVEL, MIN_CELL_LEVEL - 1, -1):
        yield from level_tiles(cells, cell_level).encoded()


def grid_stats(cells: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """``stats/grid/{timestamp}.csv`` of one feature: per cell level 6..14 (``zoom``), min and max over cells of
    ``s_sum_t_sum, s_sum_t_mean`` and of their means per cell (``/ s_count``). Includes cells whose tile is
    not written (negative y), as the reference does."""
    if cells.empty:
        return {}
    rows: list[pd.DataFrame] = []
    for cell_level in range(MAX_CELL_LEVEL, MIN_CELL_LEVEL - 1, -1):
        shift = MAX_CELL_LEVEL - cell_level
        parents = pd.DataFrame(
            {
                "timestamp": cells["timestamp"].to_numpy(dtype=np.int64),
                "px": cells["cell_x"].to_numpy(dtype=np.int64) >> shift,
                "py": cells["cell_y"].to_numpy(dtype=np.int64) >> shift,
                "s_sum_t_sum": cells["s_sum_t_sum"].to_numpy(dtype=np.float64),
                "s_sum_t_mean": cells["s_sum_t_mean"].to_numpy(dtype=np.float64),
                "s_count": cells["s_count"].to_numpy(dtype=np.int64),
            }
        )
        summed = group_aggregate(
            parents,
            ["timestamp", "px", "py"],
            {c: (c, "sum") for c in ("s_sum_t_sum", "s_sum_t_mean", "s_count")},
        ).reset_index()
        summed["s_mean_t_sum"] = summed["s_sum_t_sum"] / summed["s_count"]
        summed["s_mean_t_mean"] = summed["s_sum_t_mean"] / summed["s_count"]
        values = ["s_sum_t_sum", "s_sum_t_mean", "s_mean_t_sum", "s_mean_t_mean"]
        stats = summed.groupby("timestamp", sort=False)[values].agg(["min", "max"])
        stats.columns = [f"{agg}_{value}" for value, agg in stats.columns.to_flat_index()]
        stats = stats.reset_index()
        stats.insert(1, "zoom", cell_level)
        rows.append(stats)
    combined = pd.concat(rows, ignore_index=True)
    return {
        int(timestamp): table.sort_values("zoom", kind="stable")[list(GRID_STATS_COLUMNS)].reset_index(
            drop=True
        )
        for timestamp, table in combined.groupby("timestamp", sort=True)
    }


# ================================================================ 11. model summary and results.json


SUMMARY_GROUPS = ("feature", "timestamp")


def output_summary(points_all: pd.DataFrame, weight_column: str) -> list[dict[str, Any]]:
    """``output_agg_values`` entries (models only): per feature, ``min, max, sum, mean`` of the ``all``-period
    points, ``s_count`` left out, ``feature`` as ``name``; rounded to 10 decimals and NaN as null, because
    the reference goes through pandas' ``to_json`` (whose encoder this reuses)."""
    return output_summary_of([summary_sums(points_all, weight_column)], weight_column)


def summary_sums(points_all: pd.DataFrame, weight_column: str) -> pd.DataFrame:
    """The :func:`spatial_sums` of the output summary for a share of the ``all``-period points (shares
    disjoint in points: :func:`output_summary_of` adds them)."""
    return spatial_sums(points_all, SUMMARY_GROUPS, SUMMARY_AGGS, weight_column)


def output_summary_of(shares: Sequence[pd.DataFrame], weight_column: str) -> list[dict[str, Any]]:
    """:func:`output_summary` from the :func:`summary_sums` of disjoint shares of the points."""
    raw = add_spatial_sums(shares, SUMMARY_GROUPS)
    table, columns = spatial_table(raw, SUMMARY_GROUPS, SUMMARY_AGGS, weight_column)
    columns = [c for c in columns if c != "s_count"]
    records = table[["feature", *columns]].rename(columns={"feature": "name"})
    parsed: list[dict[str, Any]] = json.loads(records.to_json(orient="records"))
    return parsed


def results_document(
    *,
    num_rows: int,
    rows_per_feature: Mapping[str, int],
    num_missing_ts: int,
    num_invalid_ts: int,
    num_missing_val: int,
    present_regions: Sequence[str],
    features: Sequence[Any],
    raw_count_threshold: int,
    has_tiles: bool,
    weight_column: str,
    month_timeseries_size: Mapping[str, int] | None,
    year_timeseries_size: Mapping[str, int] | None,
    output_agg_values: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """``results.json`` (the reference's ``record_results``); ``output_agg_values`` only for models."""
    data_info: dict[str, Any] = {
        "num_rows": int(num_rows),
        "num_rows_per_feature": dict(rows_per_feature),
        "num_missing_ts": int(num_missing_ts),
        "num_invalid_ts": int(num_invalid_ts),
        "num_missing_val": int(num_missing_val),
        "region_levels": [*present_regions, *(["grid data"] if has_tiles else [])],
        "features": list(features),
        "raw_count_threshold": int(raw_count_threshold),
        "has_tiles": bool(has_tiles),
        "has_monthly": True,
        "has_annual": True,
        "has_weights": weight_column != "",
    }
    if month_timeseries_size is not None:
        data_info["month_timeseries_size"] = dict(month_timeseries_size)
    if year_timeseries_size is not None:
        data_info["year_timeseries_size"] = dict(year_timeseries_size)
    document: dict[str, Any] = {"data_info": data_info}
    if output_agg_values is not None:
        document["output_agg_values"] = [dict(v) for v in output_agg_values]
    return document


def native_features(frame: pd.DataFrame) -> list[Any]:
    """``features`` of results.json: distinct non-null features as JSON values (text, or numbers when the
    single input file had numeric features, as in the reference)."""
    values = frame["feature"].dropna().unique()
    return [v.item() if isinstance(v, np.generic) else v for v in values.tolist()]


# ================================================================ objects of one feature


ObjectStream = Iterator[tuple[str, bytes]]


def info_objects(
    data_id: str,
    run_id: str,
    feature: str,
    lists: Mapping[str, Sequence[str]] | None,
    values: Mapping[str, Sequence[Any]],
    thresholds: Mapping[str, Any],
) -> ObjectStream:
    """``raw/{feature}/info/``: region lists (none without any region column), one JSON of distinct values
    per qualifier, and the qualifier counts with the thresholds."""
    if lists is not None:
        yield layout.region_lists_json(data_id, run_id, feature), json_bytes(lists)
    for qualifier, distinct in values.items():
        yield layout.qualifier_values_json(data_id, run_id, feature, qualifier), json_bytes(distinct)
    yield (
        layout.qualifier_counts_json(data_id, run_id, feature),
        json_bytes(qualifier_counts_document(values, thresholds)),
    )


@dataclass(frozen=True)
class FeatureContext:
    """What the outputs of one (feature, time resolution) depend on besides its points.

    ``breakdowns``: the feature's qualifiers for the global series and the regional aggregates (within
    ``max_count``); ``regional_qualifiers``: those for the regional series (within
    ``regional_timeseries_count``), broken down for the first ``max_qualifier_level + 1`` levels."""

    data_id: str
    run_id: str
    time_res: str
    feature: str
    present: tuple[str, ...]
    weight_column: str
    breakdowns: tuple[str, ...]
    regional_qualifiers: tuple[str, ...]
    max_qualifier_level: int
    coordinates: bool


def global_timeseries_objects(points: Points, ctx: FeatureContext) -> ObjectStream:
    """``compute_global_timeseries``: ``global.csv`` and per breakdown qualifier one CSV per aggregate."""
    d, r, t, f = ctx.data_id, ctx.run_id, ctx.time_res, ctx.feature
    yield layout.global_timeseries_csv(d, r, t, f), csv_bytes(global_timeseries(points, ctx.weight_column))
    for qualifier in ctx.breakdowns:
        for agg, table in qualifier_timeseries(points, qualifier, ctx.weight_column).items():
            yield layout.qualifier_timeseries_csv(d, r, t, f, qualifier, agg), csv_bytes(table)


def regional_stats_objects(points: Points, ctx: FeatureContext) -> ObjectStream:
    """``compute_regional_stats``: ``extrema.json`` per region level."""
    for level, document in regional_extrema_by_level(points, ctx.present, ctx.weight_column).items():
        yield (
            layout.regional_extrema_json(ctx.data_id, ctx.run_id, ctx.time_res, ctx.feature, level),
            json_bytes(document),
        )


def regional_timeseries_objects(points: Points, ctx: FeatureContext) -> ObjectStream:
    """``compute_regional_timeseries``: one CSV per region (and per qualifier value on the first levels)."""
    d, r, t, f = ctx.data_id, ctx.run_id, ctx.time_res, ctx.feature
    items = regional_timeseries(
        points, ctx.present, ctx.regional_qualifiers, ctx.max_qualifier_level, ctx.weight_column
    )
    for item in items:
        if item.qualifier is None:
            name = layout.regional_timeseries_csv(d, r, t, f, item.level, item.region_id)
        else:
            assert item.qualifier_value is not None
            name = layout.regional_qualifier_timeseries_csv(
                d, r, t, f, item.level, item.qualifier, item.qualifier_value, item.region_id
            )
        yield name, csv_bytes(item.table)


def regional_aggregation_objects(points: Points, ctx: FeatureContext) -> ObjectStream:
    """``compute_regional_aggregation``: per level and period one CSV of regions (and one per qualifier)."""
    d, r, t, f = ctx.data_id, ctx.run_id, ctx.time_res, ctx.feature
    for aggregate in regional_aggregates(points, ctx.present, ctx.breakdowns, ctx.weight_column):
        if aggregate.qualifier is None:
            name = layout.regional_aggregate_csv(d, r, t, f, aggregate.level, aggregate.timestamp)
        else:
            name = layout.regional_qualifier_aggregate_csv(
                d, r, t, f, aggregate.level, aggregate.timestamp, aggregate.qualifier
            )
        yield name, csv_bytes(aggregate.table)


def tiles_objects(points: Points, ctx: FeatureContext) -> ObjectStream:
    """``compute_tiles``: grid stats per period, then the tiles, zoom 8 down to 0 (nothing without coordinates)."""
    if not ctx.coordinates:
        return
    d, r, t, f = ctx.data_id, ctx.run_id, ctx.time_res, ctx.feature
    cells = tile_cells(points)
    for timestamp, table in grid_stats(cells).items():
        yield layout.grid_stats_csv(d, r, t, f, timestamp), csv_bytes(table)
    for timestamp, z, x, y, blob in encoded_tiles(cells):
        yield layout.tile(d, r, t, f, timestamp, z, x, y), blob


# Every family's objects, from points given whole or as PeriodChunks.
FAMILY_OBJECTS: dict[str, Callable[[Points, FeatureContext], ObjectStream]] = {
    "compute_global_timeseries": global_timeseries_objects,
    "compute_regional_stats": regional_stats_objects,
    "compute_regional_timeseries": regional_timeseries_objects,
    "compute_regional_aggregation": regional_aggregation_objects,
    "compute_tiles": tiles_objects,
}
# The families whose objects are each of one period: made period by period (a run of periods at a time),
# so that only one run's objects are held; the others' objects span periods.
PER_PERIOD_FAMILIES = frozenset({"compute_regional_aggregation", "compute_tiles"})


def feature_context(
    params: Parameters,
    time_res: str,
    feature: str,
    native: Any,
    present: Sequence[str],
    weight_column: str,
    counts: Mapping[str, Mapping[str, int]],
    coordinates: bool,
) -> FeatureContext:
    """The context of one (feature, time resolution): ``qualifier_map`` limited by the thresholds and the
    qualifier counts of every feature (``counts``), looked up by the feature's value as the reference does."""
    thresholds = params.qualifier_thresholds
    mapped = limit_qualifier_map(params.qualifier_map, counts, int(thresholds["max_count"]))
    mapped_regional = limit_qualifier_map(mapped, counts, int(thresholds["regional_timeseries_count"]))
    return FeatureContext(
        data_id=params.data_id, run_id=params.run_id, time_res=time_res, feature=feature, present=tuple(present),
        weight_column=weight_column, breakdowns=tuple(feature_qualifiers(mapped, native)),
        regional_qualifiers=tuple(feature_qualifiers(mapped_regional, native)),
        max_qualifier_level=int(thresholds["regional_timeseries_max_level"]), coordinates=coordinates,
    )  # fmt: skip


def selected_families(selected_output_tasks: Sequence[str] | None) -> list[str]:
    """The output tasks that run, in the reference's order: all five for None or an empty selection."""
    return [task for task in OUTPUT_TASKS if not selected_output_tasks or task in selected_output_tasks]


# ================================================================ the whole run, in memory


@dataclass(frozen=True)
class Parameters:
    """The reference flow's parameters (defaults as there)."""

    data_id: str
    run_id: str
    is_indicator: bool = False
    qualifier_map: Mapping[str, Sequence[str]] = field(default_factory=dict)
    weight_column: str = ""
    selected_output_tasks: Sequence[str] | None = None
    qualifier_thresholds: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_QUALIFIER_THRESHOLDS)
    )
    raw_count_threshold: int = DEFAULT_RAW_COUNT_THRESHOLD
    fill_timestamp: int = 0


def run_in_memory(frames: Sequence[tuple[str, pd.DataFrame]], params: Parameters) -> dict[str, bytes]:
    """Every object of a run, ``{key: bytes}``: all stages chained, single process.

    Small inputs only (tests, the oracle of the workflow's outputs); the workflow runs the same functions
    per (feature, time resolution) on Dask.
    """
    out: dict[str, bytes] = {}
    d, r = params.data_id, params.run_id
    raw = concat_input_frames(frames)
    rows_per_feature = raw_rows_per_feature(raw)
    for key, rows in split_by_feature(raw).items():
        table = raw_table(rows, params.raw_count_threshold)
        if table is not None:
            out[layout.raw_csv(d, r, key)] = csv_bytes(table)

    checked = validate_and_fix(raw, params.weight_column, params.fill_timestamp)
    frame, weight = checked.frame, checked.weight_column
    present = region_columns(frame)
    coordinates = has_coordinates(frame)
    runs = plan_outputs(params.selected_output_tasks, coordinates)
    qualifiers = qualifier_columns(frame, weight)
    by_feature = split_by_feature(frame)

    counts: dict[str, dict[str, int]] = {}
    for key, rows in by_feature.items():
        values = qualifier_values(rows, qualifiers)
        counts[key] = {q: len(v) for q, v in values.items()}
        out.update(info_objects(d, r, key, region_lists(rows, present), values, params.qualifier_thresholds))

    families = selected_families(params.selected_output_tasks)
    sizes: dict[str, dict[str, int]] = {}
    for time_res in TIME_RESOLUTIONS:
        sizes[time_res] = {}
        for key, rows in by_feature.items():
            points = temporal_aggregation(rows, time_res, weight)
            sizes[time_res][key] = int(points["timestamp"].nunique())
            ctx = feature_context(
                params, time_res, key, rows["feature"].iloc[0], present, weight, counts, coordinates
            )
            for family in families:
                out.update(FAMILY_OBJECTS[family](points, ctx))

    if runs[RECORD_RESULTS]:
        summary = None
        if not params.is_indicator:
            summary = []
            for rows in by_feature.values():
                summary += output_summary(temporal_aggregation(rows, "all", weight), weight)
        document = results_document(
            num_rows=len(raw.index),
            rows_per_feature=rows_per_feature,
            num_missing_ts=checked.num_missing_ts,
            num_invalid_ts=checked.num_invalid_ts,
            num_missing_val=checked.num_missing_val,
            present_regions=present,
            features=native_features(frame),
            raw_count_threshold=params.raw_count_threshold,
            has_tiles=runs["compute_tiles"],
            weight_column=weight,
            month_timeseries_size=sizes["month"],
            year_timeseries_size=sizes["year"],
            output_agg_values=summary,
        )
        out[layout.results_json(d, r)] = json_bytes(document)
    return out
