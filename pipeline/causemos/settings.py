"""The command line of a Causemos run, checked once, and the fingerprints that decide what is up to date.

Every option is validated before anything runs: a bad one stops the run with one line naming the
option (``field '--qualifier-map': not valid JSON ...``), a non-zero exit status, and nothing written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import luigi

from pipeline.causemos import recipe
from pipeline.causemos.sources import Source, identity, parse_data_paths
from pipeline.config import output
from pipeline.errors import InputError
from targets.s3config import S3Options

# Bumped when a change of the code changes outputs or the state they are made from: every finished run is
# then redone. 2: the points under _state are sorted by period, a parquet row group per period.
FORMAT_VERSION = 2
THRESHOLD_KEYS = tuple(recipe.DEFAULT_QUALIFIER_THRESHOLDS)

# Rows of one input file read and prepared at a time (luigi.cfg [causemos] batch_rows): the prepare
# stage's "partition". Its peak memory is about 1 KiB per row of a batch (the pandas frame and the
# copies that fixing, validating and grouping make) per Dask thread, so 100,000 rows keep a worker
# near 100 MiB, the size Dask recommends for a partition, whatever the size of the file; a batch is
# big enough that its fixed costs (a groupby per feature and period) stay small. The number of
# batches never changes an output (partial sums add up; only float sums may round differently, as
# with the reference's own Dask partitions).
DEFAULT_BATCH_ROWS = 100_000


class causemos(luigi.Config):
    """[causemos]: where S3 inputs are read from, and how an output task's work is cut for Dask."""

    points_per_piece = luigi.IntParameter(
        default=20000,
        description="points per Dask piece of an output task (a piece is a run of periods or a share of the regions)",
    )
    max_pieces = luigi.IntParameter(
        default=0, description="pieces per output task at most; 0 = twice the Dask cluster's threads"
    )
    batch_rows = luigi.IntParameter(
        default=DEFAULT_BATCH_ROWS,
        description="rows of an input file read at a time, and the most points a worker holds at once",
    )
    dry_run_scratch = luigi.Parameter(
        default="",
        description="where the dry run keeps its working state while it counts (a directory or URL every Dask "
        "worker can read and write; a unique folder under it, deleted after); empty = a temporary directory "
        "on this machine, which serves the embedded cluster and workers on this machine",
    )
    input_endpoint_url = luigi.Parameter(
        default="",
        description="S3 endpoint of s3:// inputs; empty = [output] endpoint_url, else AWS_ENDPOINT_URL_S3",
    )
    input_region = luigi.Parameter(default="", description="region of s3:// inputs; empty = [output] region")
    input_profile = luigi.Parameter(
        default="", description="AWS profile for s3:// inputs; empty = [output] profile"
    )

    def input_s3(self) -> S3Options:
        out = output()
        return S3Options(
            endpoint_url=self.input_endpoint_url or out.endpoint_url, region=self.input_region or out.region,
            profile=self.input_profile or out.profile,
        )  # fmt: skip


@dataclass(frozen=True)
class RunSettings:
    """A run's options, parsed: ``selected`` is None for "all five output tasks" (and results.json)."""

    data_id: str
    run_id: str
    sources: tuple[Source, ...]
    dest: str
    is_indicator: bool
    qualifier_map: Mapping[str, tuple[str, ...]]
    weight_column: str
    selected: tuple[str, ...] | None
    thresholds: Mapping[str, Any]
    raw_count_threshold: int
    fill_timestamp: int
    batch_rows: int  # rows of input read at a time, and the most points an output task holds at once

    def parameters(self) -> recipe.Parameters:
        return recipe.Parameters(
            data_id=self.data_id, run_id=self.run_id, is_indicator=self.is_indicator,
            qualifier_map={k: list(v) for k, v in self.qualifier_map.items()}, weight_column=self.weight_column,
            selected_output_tasks=list(self.selected) if self.selected is not None else None,
            qualifier_thresholds=dict(self.thresholds), raw_count_threshold=self.raw_count_threshold,
            fill_timestamp=self.fill_timestamp,
        )  # fmt: skip

    @property
    def families(self) -> list[str]:
        """The output tasks that run (the reference's names), in its order."""
        return recipe.selected_families(self.selected)

    @property
    def records_results(self) -> bool:
        """results.json is written only when all five output tasks run (the reference's rule)."""
        return self.selected is None or set(self.selected) == set(recipe.OUTPUT_TASKS)


def _json_option(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg} at character {e.pos}): {text!r}", field=option) from e


def parse_qualifier_map(text: str) -> dict[str, tuple[str, ...]]:
    """``--qualifier-map``: a JSON object ``{feature: [qualifier column, ...]}``."""
    if not text.strip():
        return {}
    value = _json_option(text, "--qualifier-map")
    if not isinstance(value, dict) or not all(
        isinstance(columns, list) and all(isinstance(c, str) for c in columns) for columns in value.values()
    ):
        raise InputError(
            'must be a JSON object of lists of column names, e.g. {"F1": ["camp"]}', field="--qualifier-map"
        )
    return {str(feature): tuple(columns) for feature, columns in value.items()}


def parse_thresholds(text: str) -> dict[str, Any]:
    """``--qualifier-thresholds``: a JSON object; the keys given replace the defaults', which must be
    non-negative integers (other keys are kept, as the reference keeps them in qualifier_counts.json)."""
    thresholds: dict[str, Any] = dict(recipe.DEFAULT_QUALIFIER_THRESHOLDS)
    if not text.strip():
        return thresholds
    value = _json_option(text, "--qualifier-thresholds")
    if not isinstance(value, dict):
        raise InputError(
            f"must be a JSON object with keys {', '.join(THRESHOLD_KEYS)}", field="--qualifier-thresholds"
        )
    for key in THRESHOLD_KEYS:
        if key in value and (
            isinstance(value[key], bool) or not isinstance(value[key], int) or value[key] < 0
        ):
            raise InputError(
                f"{key} must be a non-negative integer, not {value[key]!r}", field="--qualifier-thresholds"
            )
    thresholds.update(value)
    return thresholds


def parse_selected(text: str) -> tuple[str, ...] | None:
    """``--selected-output-tasks a,b``: names among the reference's five output tasks; empty = all."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        return None
    unknown = [n for n in names if n not in recipe.OUTPUT_TASKS]
    if unknown:
        raise InputError(
            f"unknown output task(s) {', '.join(unknown)}; choose from {', '.join(recipe.OUTPUT_TASKS)}",
            field="--selected-output-tasks",
        )
    return tuple(dict.fromkeys(names))


def _check_id(value: str, option: str) -> str:
    if not value or value in (".", "..") or "/" in value or value.startswith("_"):
        raise InputError(
            f"{value!r} must be a non-empty name without '/' that does not start with '_'", field=option
        )
    return value


def parse_settings(
    *,
    data_id: str,
    run_id: str,
    data_paths: str,
    dest: str,
    indicator: bool,
    qualifier_map: str,
    weight_column: str,
    selected_output_tasks: str,
    qualifier_thresholds: str,
    raw_count_threshold: int,
    fill_timestamp: int,
    input_s3: S3Options,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> RunSettings:
    """Every option checked, in command-line order; the first bad one raises :class:`InputError`.
    ``batch_rows``: ``[causemos] batch_rows`` (``--causemos-batch-rows``)."""
    if raw_count_threshold < 0:
        raise InputError(f"must not be negative, not {raw_count_threshold}", field="--raw-count-threshold")
    if not dest.strip():
        raise InputError("give a local directory or s3://bucket/prefix", field="--dest")
    if batch_rows < 1:
        raise InputError(
            f"must be a positive number of rows, not {batch_rows}", field="[causemos] batch_rows"
        )
    return RunSettings(
        data_id=_check_id(data_id, "--data-id"),
        run_id=_check_id(run_id, "--run-id"),
        sources=tuple(parse_data_paths(data_paths, input_s3)),
        dest=dest,
        is_indicator=bool(indicator),
        qualifier_map=parse_qualifier_map(qualifier_map),
        weight_column=weight_column,
        selected=parse_selected(selected_output_tasks),
        thresholds=parse_thresholds(qualifier_thresholds),
        raw_count_threshold=int(raw_count_threshold),
        fill_timestamp=int(fill_timestamp),
        batch_rows=int(batch_rows),
    )


# ---------------------------------------------------------------- fingerprints


def digest(document: Any) -> str:
    """A short, stable digest of a JSON-able document (sorted keys)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


_identities: dict[str, str] = {}


def source_identities(sources: Sequence[Source]) -> list[tuple[str, str]]:
    """``(url, identity)`` of every file the run reads (``*_str`` files are never read, so not asked),
    once per process: a run looks at its inputs once, whatever the number of tasks asking."""
    out = []
    for source in sources:
        if recipe.is_string_values_file(source.name):
            continue
        if source.url not in _identities:
            _identities[source.url] = identity(source)
        out.append((source.url, _identities[source.url]))
    return out


def prepare_fingerprint(settings: RunSettings) -> str:
    """What the prepare stage's outputs (raw and info objects, points) depend on."""
    return digest({
        "version": FORMAT_VERSION,
        "stage": "prepare",
        "data_id": settings.data_id,
        "run_id": settings.run_id,
        "sources": source_identities(settings.sources),
        "string_files": [s.url for s in settings.sources if recipe.is_string_values_file(s.name)],
        "weight_column": settings.weight_column,
        "fill_timestamp": settings.fill_timestamp,
        "raw_count_threshold": settings.raw_count_threshold,
        "thresholds": dict(settings.thresholds),
    })  # fmt: skip


def family_fingerprint(prepare_fp: str, family: str, context: recipe.FeatureContext) -> str:
    """What one output task of one (feature, time resolution) depends on: the points and its context."""
    from dataclasses import asdict

    return digest(
        {"version": FORMAT_VERSION, "prepare": prepare_fp, "family": family, "context": asdict(context)}
    )


def run_fingerprint(prepare_fp: str, settings: RunSettings) -> str:
    """What results.json and the run's set of output tasks depend on."""
    return digest({
        "version": FORMAT_VERSION, "prepare": prepare_fp, "selected": settings.selected, "indicator": settings.is_indicator,
        "qualifier_map": {k: list(v) for k, v in settings.qualifier_map.items()}, "thresholds": dict(settings.thresholds),
    })  # fmt: skip
