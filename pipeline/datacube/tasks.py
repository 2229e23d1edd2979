"""Sentinel-2 + Sentinel-1 + DEM chip datacubes as Luigi tasks. Tasks are thin: they name targets
and requirements and call :mod:`pipeline.datacube.engine`.

::

    DatacubeSample (sample file, --index N | --indexes N-M | every row)
    └── DatacubeReport                     (report/datacube/: a QA page per (tile, date))
        └── DatacubeTile per row           (yields its dates' DatacubeTileDate)
            ├── DatacubeSelection per row  (the date selection, _state/datacube/selection/...)
            └── DatacubeTileDate per date  (chips as Dask tasks, then the manifest)
    DatacubeDryRun                         (selections only; tiles, dates, bytes, requests)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any, TypeVar

import luigi

from pipeline import cluster  # also registers [dask] for luigi.cfg and --dask-* flags
from pipeline.catalog import shared_catalog
from pipeline.config import (  # [output]: the S3 endpoint of s3:// destinations (--output-*)
    BlobSigningConfig,
    output,
)
from pipeline.datacube import engine, layout, recipe, summary
from pipeline.datacube.inputs import SampleTile, read_sample, select_rows
from pipeline.failures import Failure, FailureRecord, FailuresRecorded, read_record, write_record
from pipeline.progress import Progress
from pipeline.raster import ArchiveAccess
from pipeline.task_base import DryRunTask, UnitTask
from targets.store import Store
from targets.target import StoreTarget

log = logging.getLogger("pipeline.datacube")

T = TypeVar("T")


def make(cls: Callable[..., T], **params: Any) -> T:
    """A task or config object: luigi's constructors are untyped (``*args, **kwargs``), so they
    are called through this one typed seam."""
    return cls(**params)


class datacube(BlobSigningConfig, cluster.InProcessDask):
    """[datacube]: how the sources are reached (the signing settings every blob-reading workflow
    has) and how work is cut."""

    version = luigi.Parameter(
        default=recipe.DEFAULT_VERSION, description="the chips' version (names and paths)"
    )
    chips_per_dask_task = luigi.IntParameter(
        default=engine.DEFAULT_CHIPS_PER_DASK_TASK, description="chips stacked by one Dask task"
    )


def access_for(cfg: datacube | None = None) -> ArchiveAccess:
    return (cfg or make(datacube)).access()


_samples: dict[str, list[SampleTile]] = {}
catalog_for = shared_catalog


def sample_of(path: str) -> list[SampleTile]:
    if path not in _samples:
        _samples[path] = read_sample(path)
    return _samples[path]


def store_for(dest: str) -> Store:
    return Store(dest, make(output).s3_options())


def _json(store: Store, rel: str) -> Any:
    try:
        return json.loads(store.read_text(rel))
    except FileNotFoundError:
        return None


class _DatacubeTask(UnitTask):
    sample = luigi.Parameter(description="MGRS sample: FlatGeobuf or GeoPackage, EPSG:4326, property name")
    catalog = luigi.Parameter(
        description="STAC API root (http/https) or a local catalogue file (NDJSON items or a FeatureCollection)"
    )
    dest = luigi.Parameter(
        description="output directory: a local path, s3://bucket/prefix or az://container/prefix"
    )
    dates_per_tile = luigi.IntParameter(default=recipe.DEFAULT_DATES_PER_TILE, description="dates per tile")
    dateranges = luigi.Parameter(
        default="", description="START/END[,START/END...] (YYYY-MM-DD) instead of the years 2017-2023"
    )
    chip_size = luigi.IntParameter(
        default=recipe.DEFAULT_CHIP_SIZE, description="chip width and height (pixels)"
    )
    subset = luigi.Parameter(
        default="", description="x0,y0,x1,y1: only the chips meeting this pixel window of the S2 grid"
    )

    @property
    def store(self) -> Store:
        return store_for(str(self.dest))

    def common(self) -> dict[str, Any]:
        return {
            "sample": self.sample, "catalog": self.catalog, "dest": self.dest, "dates_per_tile": self.dates_per_tile,
            "dateranges": self.dateranges, "chip_size": self.chip_size, "subset": self.subset,
        }  # fmt: skip

    def rows(self, index: int = -1, indexes: str = "") -> list[SampleTile]:
        return select_rows(sample_of(str(self.sample)), index, indexes)


class DatacubeSelection(_DatacubeTask):
    """A tile's dates: per period the S2 attempts and their S1 matches, kept as a state file, so
    reruns never search again."""

    index = luigi.IntParameter()

    @property
    def tile(self) -> SampleTile:
        return self.rows(int(self.index))[0]

    def periods(self) -> list[recipe.Period]:
        ranges = recipe.parse_dateranges(str(self.dateranges)) if self.dateranges else None
        return recipe.search_periods(int(self.index), ranges)

    def output(self) -> StoreTarget:
        fingerprint = engine.selection_fingerprint(
            str(self.catalog), str(self.dateranges), int(self.dates_per_tile)
        )
        return StoreTarget(self.store, layout.selection_state(fingerprint, int(self.index), self.tile.mgrs))

    def run(self) -> None:
        tile = self.tile
        self.show_status(f"selecting the dates of {tile.mgrs} (row {tile.index})")
        doc = engine.select_tile(
            catalog_for(str(self.catalog)), tile.index, tile.mgrs, self.periods(), int(self.dates_per_tile)
        )
        self.output().write_text(engine.jdump(doc))
        self._selection = doc
        summary.record_selection(doc)

    def selection(self) -> dict[str, Any]:
        """The state file's document, read once per task instance (luigi reuses an instance for
        the same parameters, so the (tile, date) tasks' output() calls cost no further GET)."""
        cached: dict[str, Any] | None = getattr(self, "_selection", None)
        if cached is None:
            cached = json.loads(self.output().read_text())
            self._selection = cached
        return cached


class DatacubeTileDate(_DatacubeTask):
    """One (tile, date)'s chips, as Dask tasks, then its manifest (every chip kept or dropped,
    with the reason), written last: the (tile, date)'s completion marker. A chip is written
    whole under its final name, so a rerun after a kill or a failure stacks only the chips that
    are not there yet."""

    index = luigi.IntParameter()
    day = luigi.DateParameter()

    def requires(self) -> DatacubeSelection:
        return make(DatacubeSelection, **self.common(), index=self.index)

    def entry(self) -> dict[str, Any]:
        selection = self.requires().selection()
        for entry in selection["dates"]:
            if entry["date"] == f"{self.day:%Y-%m-%d}":
                return dict(entry)
        raise KeyError(f"{selection['mgrs']} has no selected date {self.day}")

    def job(self) -> engine.DateJob:
        cfg = make(datacube)
        return engine.DateJob.from_entry(
            self.requires().tile.mgrs, self.entry(), str(cfg.version), int(self.chip_size)
        )

    def plan(self) -> tuple[engine.DateJob, list[int], str]:
        """The job, the chips of this run and its scope name."""
        job = self.job()
        subset = recipe.parse_subset(str(self.subset)) if self.subset else None
        numbers = job.chip_numbers(subset)
        window = engine.snapped_window(job, numbers) if subset else None
        return job, numbers, layout.scope_name(job.chip_size, window)

    def output(self) -> StoreTarget:
        job, _, scope = self.plan()
        return StoreTarget(self.store, layout.chip_manifest(job.version, job.mgrs, job.day, scope))

    def is_complete(self) -> bool:
        if not (self.requires().complete() and self.output().exists()):
            return False
        job, _, _ = self.plan()
        manifest = json.loads(self.output().read_text())
        present = self.store.list_names(layout.chip_dir(job.version, job.mgrs, job.day))
        return all(k["path"].rsplit("/", 1)[-1] in present for k in manifest["kept"])

    def run(self) -> None:
        store = self.store
        job, numbers, scope = self.plan()
        entry = self.entry()
        present = store.list_names(layout.chip_dir(job.version, job.mgrs, job.day))
        kept_before = [n for n in numbers if job.chip_path(n).rsplit("/", 1)[-1] in present]
        record_rel = layout.failure_record(job.version, job.mgrs, job.day, scope)
        previous = read_record(store, record_rel).context
        dropped: dict[int, str] = {}
        if previous.get("s2") == job.s2_id:  # a failed attempt's verdicts on the same scene hold
            dropped = {
                int(n): str(r) for n, r in (previous.get("dropped") or {}).items() if int(n) in numbers
            }
        todo = [n for n in numbers if n not in dropped and n not in kept_before]
        label = f"{job.mgrs} {job.day:%Y-%m-%d}"
        cfg = make(datacube)
        tracker = Progress(len(todo), "chips", label=label, report=self.progress, logger=log)
        results, opened = engine.run_chips(
            job,
            todo,
            store,
            access_for(),
            int(cfg.chips_per_dask_task),
            lambda d, t: tracker.update(d, t),
            cfg.in_process_threads(),
        )
        kept = kept_before + [r.number for r in results if r.status == "kept"]
        dropped.update({r.number: r.reason for r in results if r.status == "dropped"})
        failed = [r for r in results if r.status == "failed"]
        if todo:
            tracker.finish(
                f"{len(kept)} kept, {len(dropped)} dropped, {len(failed)} failed, {opened} files opened"
            )
        summary.record_date(label, kept=len(kept) - len(kept_before), kept_before=len(kept_before),
                            dropped=len(dropped), failed=[(f"{label} chip {r.number:04d}", r.reason) for r in failed[:3]],
                            failed_chips=len(failed))  # fmt: skip
        if failed:
            failure = Failure(
                key=f"{job.day:%Y-%m-%d}",
                error=f"{len(failed)} of {len(numbers)} chip(s) could not be read; first: {failed[0].reason}",
                what=label,
                targets=tuple(job.chip_path(r.number) for r in failed),
            )
            context = {"mgrs": job.mgrs, "date": f"{job.day:%Y-%m-%d}", "scope": scope, "s2": job.s2_id,
                       "dropped": {str(n): r for n, r in dropped.items()}}  # fmt: skip
            write_record(store, record_rel, FailureRecord(failed=[failure], context=context))
            raise FailuresRecorded(
                f"{label}: {len(failed)} chip(s) failed; rerun the same command to retry them"
            )
        store.delete(layout.report_page(job.version, job.mgrs, job.day))  # now stale
        window = engine.snapped_window(job, numbers) if self.subset else None
        self.output().write_text(engine.jdump(engine.manifest_doc(job, entry, scope, window, kept, dropped)))
        store.delete(record_rel)
        self.mark_complete()


class DatacubeTile(_DatacubeTask):
    """Every selected date of one row of the sample (none is a recorded outcome, not an error)."""

    index = luigi.IntParameter()

    def requires(self) -> DatacubeSelection:
        return make(DatacubeSelection, **self.common(), index=self.index)

    def date_tasks(self) -> list[DatacubeTileDate]:
        doc = self.requires().selection()
        return [
            make(DatacubeTileDate, **self.common(), index=self.index, day=date.fromisoformat(d["date"]))
            for d in doc["dates"]
        ]

    def is_complete(self) -> bool:
        return bool(self.requires().complete() and all(t.complete() for t in self.date_tasks()))

    def run(self) -> Iterator[list[DatacubeTileDate]]:
        yield self.date_tasks()


class DatacubeReport(_DatacubeTask):
    """The QA view of the rows asked for: ``report/datacube/index.html`` and a page per (tile,
    date), written after their chips, rewritten when a run changed one of them."""

    index = luigi.IntParameter(default=-1)
    indexes = luigi.Parameter(default="")

    def requires(self) -> list[DatacubeTile]:
        return [
            make(DatacubeTile, **self.common(), index=t.index)
            for t in self.rows(int(self.index), str(self.indexes))
        ]

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, layout.report_index())

    def is_complete(self) -> bool:
        # Luigi does not look below a complete task: the tiles too.
        return bool(self.output().exists() and all(r.complete() for r in self.requires()))

    def run(self) -> None:
        from pipeline.datacube.report import write_report

        self.show_status("writing the QA view")
        tiles = []
        for tile in self.requires():
            dates = [(t, t.plan()) for t in tile.date_tasks()]
            tiles.append(
                (tile.requires().selection(), [(t.entry(), job, scope) for t, (job, _, scope) in dates])
            )
        write_report(self.store, tiles, access_for())


class DatacubeSample(luigi.WrapperTask):
    """Chip datacubes of the sample's rows.

    luigi --module pipeline.datacube DatacubeSample --sample SAMPLE.fgb --catalog CATALOG
          --dest DIR_OR_URL [--index N | --indexes 0-99] [--chip-size 512] [--dates-per-tile 3]
          [--subset x0,y0,x1,y1] [--dateranges START/END,...] --local-scheduler
    """

    sample = _DatacubeTask.sample
    catalog = _DatacubeTask.catalog
    dest = _DatacubeTask.dest
    dates_per_tile = _DatacubeTask.dates_per_tile
    dateranges = _DatacubeTask.dateranges
    chip_size = _DatacubeTask.chip_size
    subset = _DatacubeTask.subset
    index = luigi.IntParameter(default=-1, description="one row of the sample (0-based)")
    indexes = luigi.Parameter(default="", description="rows of the sample: 0-99 or 3,7,10-12 (0-based)")

    def requires(self) -> DatacubeReport:
        rows = select_rows(sample_of(str(self.sample)), int(self.index), str(self.indexes))
        _check(self)
        summary.record_run(str(self.dest), tiles=len(rows))
        return make(
            DatacubeReport,
            sample=self.sample, catalog=self.catalog, dest=self.dest, dates_per_tile=self.dates_per_tile,
            dateranges=self.dateranges, chip_size=self.chip_size, subset=self.subset, index=self.index,
            indexes=self.indexes,
        )  # fmt: skip


def _check(task: Any) -> None:
    """The options that are not files, checked before anything runs."""
    from pipeline.errors import InputError

    if task.dateranges:
        recipe.parse_dateranges(str(task.dateranges))
    if task.subset:
        recipe.parse_subset(str(task.subset))
    if int(task.chip_size) <= 0:
        raise InputError(f"{task.chip_size}: must be a positive number of pixels", field="chip_size")
    if int(task.dates_per_tile) <= 0:
        raise InputError(f"{task.dates_per_tile}: must be at least 1", field="dates_per_tile")


class DatacubeDryRun(DryRunTask):
    """Before the bill: per tile the dates selected, chips to write and done, the files, GET
    requests and bytes the run will read. Selects (and keeps the selections); reads no pixel and
    writes no chip."""

    sample = _DatacubeTask.sample
    catalog = _DatacubeTask.catalog
    dest = _DatacubeTask.dest
    dates_per_tile = _DatacubeTask.dates_per_tile
    dateranges = _DatacubeTask.dateranges
    chip_size = _DatacubeTask.chip_size
    subset = _DatacubeTask.subset
    index = DatacubeSample.index
    indexes = DatacubeSample.indexes

    def requires(self) -> list[DatacubeSelection]:
        _check(self)
        rows = select_rows(sample_of(str(self.sample)), int(self.index), str(self.indexes))
        common = {
            "sample": self.sample, "catalog": self.catalog, "dest": self.dest, "dates_per_tile": self.dates_per_tile,
            "dateranges": self.dateranges, "chip_size": self.chip_size, "subset": self.subset,
        }  # fmt: skip
        return [make(DatacubeSelection, **common, index=t.index) for t in rows]

    dry_run_name = "datacube-dry-run"

    def estimate(self) -> str:
        from pipeline.datacube.estimate import estimate_date, format_estimates

        rows = []
        for selection in self.requires():
            doc = selection.selection()
            dates = [make(DatacubeTileDate, **selection.common(), index=selection.index, day=date.fromisoformat(d["date"]))
                     for d in doc["dates"]]  # fmt: skip
            rows.append((doc, [estimate_date(t.store, t.entry(), *t.plan()) for t in dates]))
        return format_estimates(rows, str(self.dest))


__all__ = [
    "DatacubeDryRun",
    "DatacubeReport",
    "DatacubeSample",
    "DatacubeSelection",
    "DatacubeTile",
    "DatacubeTileDate",
    "datacube",
]
