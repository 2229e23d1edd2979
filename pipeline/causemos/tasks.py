"""The Causemos post-processing run as Luigi tasks. Tasks are thin: they name their state and outputs
and hand the work to :mod:`pipeline.causemos.prepare` and :mod:`pipeline.causemos.pieces` on Dask.

::

    CausemosRun                       results.json, then _state/.../run.json (the run's completion record)
    ├── CausemosPrepare               raw/ and info/ objects, points parquet per (feature, period), prepare.json
    └── CausemosOutputs  per (feature, time resolution, output task)      [known once prepare has run]
        └── CausemosPrepare

    CausemosDryRun                    rows, features, objects and bytes per output family; writes nothing

Each task owns its keys through a manifest (:mod:`pipeline.causemos.outputs`): complete when the
manifest is finished, has the fingerprint of the task's inputs, and every key it names is listed; a
rerun writes only objects whose bytes changed and deletes the keys the new set lacks.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any
from urllib.parse import unquote

import luigi

from pipeline import cluster
from pipeline.causemos import layout, pieces, recipe, summary
from pipeline.causemos.layout import (
    failure_record_key,
    family_manifest_key,
    manifests_prefix,
    points_prefix,
    prepare_info_key,
    prepare_manifest_key,
    run_marker_key,
    state_prefix,
)
from pipeline.causemos.outputs import ObjectWriter, OwnedOutputs, read_manifest
from pipeline.causemos.prepare import feature_context, prepare, results_bytes
from pipeline.causemos.settings import (
    RunSettings,
    causemos,
    family_fingerprint,
    parse_settings,
    prepare_fingerprint,
    run_fingerprint,
)
from pipeline.config import output
from pipeline.failures import Failure, FailureRecord, FailuresRecorded, write_record
from pipeline.progress import Progress
from pipeline.scratch import scratch_dir
from pipeline.task_base import DryRunTask, UnitTask
from targets.store import Store, shared_store
from targets.target import StoreTarget

log = logging.getLogger("pipeline.causemos")


def store_for(dest: str) -> Store:
    return shared_store(Store(dest, output().s3_options()))


def _read_json(store: Store, key: str) -> Any:
    try:
        return json.loads(store.read_bytes(key))
    except FileNotFoundError:
        return None


class _CausemosTask(UnitTask):
    data_id = luigi.Parameter(description="the model or indicator id (the first key segment)")
    run_id = luigi.Parameter(description='the run id ("indicator" for indicators; the second key segment)')
    data_paths = luigi.Parameter(
        description="comma-separated parquet files: local paths, s3:// or https:// URLs (*_str.parquet.gzip skipped)"
    )
    dest = luigi.Parameter(
        description="where the outputs go (the reference's bucket): a local directory or s3://bucket/prefix"
    )
    indicator = luigi.BoolParameter(
        default=False, description="the data is an indicator (results.json without output_agg_values)"
    )
    qualifier_map = luigi.Parameter(
        default="", description="JSON {feature: [qualifier column, ...]}: the breakdowns to compute"
    )
    weight_column = luigi.Parameter(default="", description="column of weights for the weighted averages")
    selected_output_tasks = luigi.Parameter(
        default="",
        description="comma-separated output tasks to run (default all; results.json only with all)",
    )
    qualifier_thresholds = luigi.Parameter(
        default="",
        description='JSON {"max_count": 10000, "regional_timeseries_count": 100, "regional_timeseries_max_level": 1}',
    )
    raw_count_threshold = luigi.IntParameter(
        default=recipe.DEFAULT_RAW_COUNT_THRESHOLD,
        description="raw.csv only for features with at most this many rows",
    )
    fill_timestamp = luigi.IntParameter(
        default=0, description="timestamp (epoch ms) given to rows without one"
    )

    @cached_property
    def settings(self) -> RunSettings:
        return parse_settings(
            data_id=self.data_id, run_id=self.run_id, data_paths=self.data_paths, dest=self.dest, indicator=self.indicator,
            qualifier_map=self.qualifier_map, weight_column=self.weight_column,
            selected_output_tasks=self.selected_output_tasks, qualifier_thresholds=self.qualifier_thresholds,
            raw_count_threshold=self.raw_count_threshold, fill_timestamp=self.fill_timestamp, input_s3=causemos().input_s3(),
            batch_rows=causemos().batch_rows,
        )  # fmt: skip

    @property
    def store(self) -> Store:
        return store_for(self.dest)

    @property
    def base(self) -> str:
        return layout.run_prefix(self.data_id, self.run_id)

    def common(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CausemosTask.get_param_names()}

    def prepare_info(self) -> dict[str, Any] | None:
        info = _read_json(self.store, prepare_info_key(self.data_id, self.run_id))
        return info if isinstance(info, dict) else None


class CausemosPrepare(_CausemosTask):
    """Read, validate and temporally aggregate the input on Dask; write the raw and info objects and the
    points (state parquet per feature and period), then ``prepare.json``: the stage's record."""

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, prepare_info_key(self.data_id, self.run_id))

    @cached_property
    def fingerprint(self) -> str:
        return prepare_fingerprint(self.settings)

    def owned(self) -> OwnedOutputs:
        d, r = self.data_id, self.run_id
        return OwnedOutputs(
            self.store, prepare_manifest_key(d, r), self.base, [f"{self.base}raw/"], self.fingerprint
        )

    def is_complete(self) -> bool:
        # the fingerprint looks at every input first: a missing one stops the run before it starts
        fingerprint = self.fingerprint
        info = self.prepare_info()
        done = bool(
            info
            and info.get("fingerprint") == fingerprint
            and self.owned().is_complete()
            and self._points_present(info)
        )
        if done and info is not None:
            summary.record_already_done("prepare", int(info.get("objects", 0)))
        return done

    def _points_present(self, info: Mapping[str, Any]) -> bool:
        listed = self.store.list_tree(f"{points_prefix(self.data_id, self.run_id)}{self.fingerprint}/").keys
        return all(p["key"] in listed for f in info["features"] for p in f["points"].values())

    def run(self) -> None:
        started = time.perf_counter()
        store = self.store
        store.check()
        self.show_status("reading and aggregating the input on Dask")
        prepared = prepare(cluster.get_client(), self.settings, store, self.fingerprint)
        # The output tasks come next, alone on the cluster: worker heaps grown by reading and adding up
        # the input (~300-370 MiB each at 4 million rows) would sit under every output piece.
        cluster.renew_embedded_workers()
        info = prepared.info
        summary.record_input(info["num_rows"], len(info["features"]), len(self.settings.sources))
        owned = self.owned()
        writer = ObjectWriter(store, owned.begin())
        try:
            writer.put_all(prepared.objects.items())
        finally:
            stats = writer.close()
        deleted = owned.finish(stats.objects)
        keep = {p["key"] for f in info["features"] for p in f["points"].values()}
        old_points = store.list_tree(points_prefix(self.data_id, self.run_id))
        store.delete_many(
            (old_points.keys - keep) | set(old_points.temporaries),
            prune_below=points_prefix(self.data_id, self.run_id),
        )
        self.output().write_bytes(json.dumps(info, indent=1).encode("utf-8"))
        summary.record_task(
            "prepare",
            written=stats.written,
            unchanged=stats.unchanged,
            deleted=deleted,
            bytes_written=stats.bytes_written,
            seconds=time.perf_counter() - started,
        )
        log.info(
            "prepared %s/%s: %d rows, %d feature(s); %d raw/info object(s) written, %d unchanged, %d stale deleted",
            self.data_id,
            self.run_id,
            info["num_rows"],
            len(info["features"]),
            stats.written,
            stats.unchanged,
            deleted,
        )
        self.mark_complete()


FAMILY_PREFIXES: dict[str, tuple[str, ...]] = {
    "compute_global_timeseries": ("timeseries/",),
    "compute_regional_stats": tuple(f"regional/{level}/stats/" for level in recipe.REGION_LEVELS),
    "compute_regional_timeseries": tuple(f"regional/{level}/timeseries/" for level in recipe.REGION_LEVELS),
    "compute_regional_aggregation": tuple(f"regional/{level}/aggs/" for level in recipe.REGION_LEVELS),
    "compute_tiles": ("tiles/", "stats/grid/"),
}


def family_owned(
    store: Store,
    data_id: str,
    run_id: str,
    time_res: str,
    feature: str,
    family: str,
    fingerprint: str,
    features: Sequence[str],
) -> OwnedOutputs:
    """The keys one output task owns: its family's prefixes under the feature's, less those of features
    whose name extends this one's (``a/b`` lives inside ``a``'s directory)."""
    own = layout.feature_prefix(data_id, run_id, time_res, feature)
    nested = [
        layout.feature_prefix(data_id, run_id, time_res, f)
        for f in features
        if f != feature and f.startswith(feature + "/")
    ]

    def foreign(key: str) -> bool:
        return any(key.startswith(prefix) for prefix in nested)

    return OwnedOutputs(
        store, family_manifest_key(data_id, run_id, time_res, feature, family), layout.run_prefix(data_id, run_id),
        [own + p for p in FAMILY_PREFIXES[family]], fingerprint, foreign,
    )  # fmt: skip


class CausemosOutputs(_CausemosTask):
    """One output task (the reference's name) of one feature at one time resolution: its objects, computed
    and written by Dask pieces, then its finished manifest."""

    feature = luigi.Parameter(description="the feature's key text")
    time_res = luigi.ChoiceParameter(choices=list(recipe.TIME_RESOLUTIONS))
    output_task = luigi.ChoiceParameter(choices=list(recipe.OUTPUT_TASKS))

    def requires(self) -> CausemosPrepare:
        return CausemosPrepare(**self.common())

    @property
    def name(self) -> str:
        return f"{self.output_task} {self.feature} {self.time_res}"

    def _plan(
        self, info: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, recipe.FeatureContext | None, OwnedOutputs | None]:
        entry = next((f for f in info["features"] if f["key"] == self.feature), None)
        if entry is None:
            return None, None, None
        context = feature_context(info, self.settings, entry, self.time_res)
        fingerprint = family_fingerprint(info["fingerprint"], self.output_task, context)
        owned = family_owned(
            self.store,
            self.data_id,
            self.run_id,
            self.time_res,
            self.feature,
            self.output_task,
            fingerprint,
            [f["key"] for f in info["features"]],
        )
        return entry, context, owned

    def is_complete(self) -> bool:
        if not self.requires().complete():
            return False
        info = self.prepare_info()
        if info is None:
            return False
        entry, _, owned = self._plan(info)
        done = entry is None or owned is None or owned.is_complete()
        if done and owned is not None:
            manifest = owned.finished_manifest()
            summary.record_already_done(self.name, len(manifest.objects) if manifest else 0)
        return done

    def run(self) -> None:
        started = time.perf_counter()
        info = self.requires().prepare_info()
        assert info is not None, "prepare.json is written before any output task runs"
        entry, context, owned = self._plan(info)
        if entry is None or context is None or owned is None:
            self.mark_complete()
            return
        client = cluster.get_client()
        trusted = owned.begin()
        points_info = entry["points"][self.time_res]
        points = pieces.state_points(self.store, points_info, self.settings.batch_rows)
        config = causemos()
        plan = pieces.plan_pieces(
            self.output_task, context, points_rows=int(points_info["rows"]), periods=int(points_info["timestamps"]),
            level0_regions=int(entry["level0_regions"]), separator_in_level0=bool(info["first_level_separator"]),
            points_per_piece=config.points_per_piece, max_parts=pieces.max_parts_for(client, config.max_pieces),
        )  # fmt: skip
        trusted_ref = client.scatter(pieces.Trusted(trusted), hash=False) if trusted else None
        self.show_status(f"{self.name}: {len(plan)} piece(s)")
        results, failures = self._run_pieces(plan, points, trusted_ref, owned)
        written = sum(r.written for r in results)
        unchanged = sum(r.unchanged for r in results)
        bytes_written = sum(r.bytes_written for r in results)
        record_key = failure_record_key(
            self.data_id, self.run_id, self.time_res, self.feature, self.output_task
        )
        if failures:
            owned.interrupted()
            write_record(self.store, record_key, FailureRecord(failed=failures, context={"task": self.name}))
            summary.record_task(
                self.name,
                written=written,
                unchanged=unchanged,
                deleted=0,
                bytes_written=bytes_written,
                seconds=time.perf_counter() - started,
                failed=[(f.what, f.error) for f in failures],
            )
            raise FailuresRecorded(
                f"{self.name}: {len(failures)} of {len(plan)} piece(s) failed; everything else is written"
            )
        objects: dict[str, str] = {}
        for result in results:
            objects.update(result.objects)
        deleted = owned.finish(objects)
        write_record(self.store, record_key, FailureRecord())
        seconds = time.perf_counter() - started
        summary.record_task(
            self.name,
            written=written,
            unchanged=unchanged,
            deleted=deleted,
            bytes_written=bytes_written,
            seconds=seconds,
        )
        # One per (feature, resolution, family): dozens per run. The closing summary has the
        # totals; the line is for someone following one task (--log-level DEBUG).
        log.debug(
            "%s: %d object(s) written, %d unchanged, %d stale deleted (%d piece(s), %.1f s)",
            self.name,
            written,
            unchanged,
            deleted,
            len(plan),
            seconds,
        )
        self.mark_complete()

    def _run_pieces(
        self,
        plan: list[pieces.Piece],
        points: pieces.StatePoints,
        trusted: Any,
        owned: OwnedOutputs,
    ) -> tuple[list[pieces.PieceResult], list[Failure]]:
        calls = [(piece, points, self.store, trusted) for piece in plan]
        running = cluster.run_each(pieces.run_piece, calls, name="causemos")
        tracker = Progress(len(plan), "pieces", label=self.name, report=self.progress, logger=log)
        results: list[pieces.PieceResult] = []
        failures: list[Failure] = []
        for i, future in running:
            piece = plan[i]
            try:
                result = future.result()
            except Exception as e:
                failures.append(
                    Failure(
                        key=piece.label, error=f"{type(e).__name__}: {e}", what=f"{self.name} ({piece.label})"
                    )
                )
            else:
                results.append(result)
                owned.add(result.objects)
            tracker.advance()
        return results, failures


class CausemosRun(_CausemosTask):
    """A whole run (the reference's "Data Pipeline" flow):

    luigi --module pipeline.causemos CausemosRun --data-id ID --run-id RUN --data-paths URL[,URL...]
          --dest DIR_OR_S3_URL [--indicator] [--qualifier-map JSON] [--weight-column COL]
          [--selected-output-tasks a,b] [--qualifier-thresholds JSON] [--raw-count-threshold 10000]
          [--fill-timestamp 0] --local-scheduler
    """

    def requires(self) -> CausemosPrepare:
        settings = self.settings  # every option checked before anything runs
        summary.record_run(settings.data_id, settings.run_id, settings.dest)
        return self.prepare_task()

    def prepare_task(self) -> CausemosPrepare:
        return CausemosPrepare(**self.common())

    def output_tasks(self, info: Mapping[str, Any]) -> list[CausemosOutputs]:
        return [
            CausemosOutputs(**self.common(), feature=f["key"], time_res=time_res, output_task=family)
            for f in info["features"] for time_res in recipe.TIME_RESOLUTIONS for family in self.settings.families
        ]  # fmt: skip

    def is_complete(self) -> bool:
        summary.record_run(self.settings.data_id, self.settings.run_id, self.settings.dest)
        prepare_task = self.prepare_task()
        done = False
        if prepare_task.complete():
            info = self.prepare_info()
            marker = _read_json(self.store, run_marker_key(self.data_id, self.run_id))
            expected = run_fingerprint(prepare_task.fingerprint, self.settings)
            done = bool(
                info and isinstance(marker, dict) and marker.get("fingerprint") == expected
                and (not self.settings.records_results or self.store.exists(layout.results_json(self.data_id, self.run_id)))
                and all(task.complete() for task in self.output_tasks(info))
            )  # fmt: skip
            if done and info is not None:
                summary.record_input(info["num_rows"], len(info["features"]), len(self.settings.sources))
                summary.record_complete(int(marker.get("objects", 0)))
        return done

    def run(self) -> Iterator[list[CausemosOutputs]]:
        prepare_task = self.prepare_task()
        info = prepare_task.prepare_info()
        assert info is not None
        tasks = self.output_tasks(info)
        yield tasks
        stale = remove_vanished_features(
            self.store, self.data_id, self.run_id, [f["key"] for f in info["features"]]
        )
        objects = int(info.get("objects", 0)) + sum(_manifest_size(self.store, t) for t in tasks)
        if self.settings.records_results:
            started = time.perf_counter()
            document = results_bytes(info, self.settings)
            self.store.write_bytes(layout.results_json(self.data_id, self.run_id), document)
            objects += 1
            summary.record_task(
                "results.json",
                written=1,
                unchanged=0,
                deleted=0,
                bytes_written=len(document),
                seconds=time.perf_counter() - started,
            )
        marker = {
            "fingerprint": run_fingerprint(prepare_task.fingerprint, self.settings),
            "objects": objects,
            "features": [f["key"] for f in info["features"]],
        }
        self.store.write_bytes(run_marker_key(self.data_id, self.run_id), json.dumps(marker).encode("utf-8"))
        summary.record_input(info["num_rows"], len(info["features"]), len(self.settings.sources))
        summary.record_results(self.settings.records_results, stale)
        self.mark_complete()


def _manifest_size(store: Store, task: CausemosOutputs) -> int:
    manifest = read_manifest(
        store,
        family_manifest_key(task.data_id, task.run_id, task.time_res, task.feature, task.output_task),
        layout.run_prefix(task.data_id, task.run_id),
    )
    return len(manifest.objects) if manifest is not None and manifest.complete else 0


def remove_vanished_features(store: Store, data_id: str, run_id: str, features: Sequence[str]) -> int:
    """Delete every output of features no longer in the input (found by their manifests, which a task
    writes before its first object), and their manifests. Returns how many features went."""
    current = set(features)
    prefix = manifests_prefix(data_id, run_id)
    vanished: set[str] = set()
    for key in sorted(store.list_tree(prefix).keys):
        parts = key[len(prefix) :].split("/")
        if len(parts) != 3 or not parts[2].endswith(".json.gz"):
            continue
        time_res, feature, family = parts[0], unquote(parts[1]), parts[2][: -len(".json.gz")]
        if feature in current or family not in FAMILY_PREFIXES:
            continue
        owned = family_owned(store, data_id, run_id, time_res, feature, family, "", features)
        manifest = read_manifest(store, key, layout.run_prefix(data_id, run_id))
        leftover = set(manifest.objects) | set(manifest.journal) if manifest is not None else set()
        listing = owned.list_owned()
        store.delete_many(
            leftover | listing.keys | set(listing.temporaries),
            prune_below=layout.run_prefix(data_id, run_id),
        )
        state = [key, failure_record_key(data_id, run_id, time_res, feature, family)]
        store.delete_many(state, prune_below=state_prefix(data_id, run_id))
        vanished.add(feature)
    if vanished:
        log.info(
            "deleted the outputs of %d feature(s) no longer in the input: %s",
            len(vanished),
            ", ".join(sorted(vanished)),
        )
    return len(vanished)


class CausemosDryRun(DryRunTask, _CausemosTask):
    """Before the bill: the input's rows and features, and per output family the objects and bytes the run
    would write (computed on Dask exactly as the run computes them), and whether the run is already
    complete. Writes nothing."""

    def requires(self) -> list[luigi.Task]:
        settings = self.settings
        summary.record_run(settings.data_id, settings.run_id, settings.dest, kind="dry run")
        prepare_fingerprint(settings)  # every input reachable, before anything runs
        _ = self.scratch_location  # a scratch the workers can reach, checked before anything runs
        return []

    dry_run_name = "causemos-dry-run"

    @cached_property
    def scratch_location(self) -> str:
        from pipeline.causemos.dryrun import scratch_location

        return scratch_location(causemos().dry_run_scratch, cluster.scheduler_address(cluster.dask()))

    def estimate(self) -> str:
        from pipeline.causemos.dryrun import estimate, format_estimate

        already = CausemosRun(**self.common()).complete()
        summary.record_run(
            self.data_id, self.run_id, self.dest, kind="dry run"
        )  # the check above recorded a run
        temporary = "" if self.scratch_location else scratch_dir("causemos-dry-run-")
        scratch = store_for(self.scratch_location or temporary)
        try:
            result = estimate(
                cluster.get_client(),
                self.settings,
                scratch,
                causemos().points_per_piece,
                causemos().max_pieces,
            )
        finally:
            if temporary:
                shutil.rmtree(temporary, ignore_errors=True)
            else:
                scratch.delete_tree("")
        return format_estimate(result, self.settings, already)


__all__ = ["CausemosDryRun", "CausemosOutputs", "CausemosPrepare", "CausemosRun"]
