"""TimeSync as Luigi tasks. Tasks are thin: they name targets and requirements and call
:class:`~pipeline.timesync.engine.Project`.

The normal run schedules few tasks: ``TimeSyncProject`` -> one ``TimeSyncReport`` and one
``TimeSyncIngest`` per project id -> ``TimeSyncPlotBatch`` tasks of ``[timesync] plots_per_task`` plots each ->
one ``TimeSyncSearch`` per ARD tile. A batch's completeness comes from listings (four per
plot; on S3 a batch's plots are checked concurrently), or locally, for plots recorded
complete, from a snapshot of their directories' stats (see engine.Project.plots_complete);
its run hands the missing observations to Dask. ``TimeSyncPlot`` and
``TimeSyncObservation`` exist to run or rerun one plot or one observation by name; the
normal run never schedules them, because Luigi's scheduler slows quadratically with the
number of tasks and a project has millions of observations.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from functools import cached_property
from typing import Any

import luigi

from pipeline import cluster  # noqa: F401  (registers the [dask] section for luigi.cfg and --dask-* flags)
from pipeline.config import archive, output
from pipeline.errors import InputError, PipelineError
from pipeline.failures import FailuresRecorded, UnusableItem
from pipeline.grid import Tile
from pipeline.progress import Progress
from pipeline.task_base import DryRunTask, UnitTask
from pipeline.timesync import layout, report, summary
from pipeline.timesync.engine import BatchOutcome, Project, RunOptions
from pipeline.timesync.plots import check_id
from targets.store import Store
from targets.target import StoreTarget

log = logging.getLogger("pipeline.timesync")


class timesync(luigi.Config):
    """[timesync]: how work is cut into pieces."""

    plots_per_task = luigi.IntParameter(default=50, description="plots per scheduled batch task")
    observations_per_dask_task = luigi.IntParameter(
        default=24, description="observations per Dask task (>= ~100 ms of work each)"
    )


_projects: dict[tuple[Any, ...], Project] = {}


def project_for(options: RunOptions) -> Project:
    """One Project per parameter set and process (it caches plots and searches)."""
    key = (options, archive().access(options.asset_href), output().s3_options())
    if key not in _projects:
        _projects[key] = Project(options, store=Store(options.project_dir, key[2]), access=key[1])
    return _projects[key]


class ChoiceParameter(luigi.Parameter):
    """One of ``choices``; a wrong value is an input error naming the option."""

    def __init__(
        self, *, choices: tuple[str, ...], option: str, description: str = "", **kwargs: Any
    ) -> None:
        self.choices = choices
        self.option = option
        super().__init__(description=f"{description} Choices: {{{', '.join(choices)}}}", **kwargs)

    def normalize(self, x: Any) -> Any:
        if isinstance(x, str) and x not in self.choices:
            raise InputError(f"{x!r} is not one of {', '.join(self.choices)}", field=self.option)
        return x


class IntOptionParameter(luigi.IntParameter):
    """An integer; text that is not one is an input error naming the option."""

    def __init__(self, *args: Any, option: str, **kwargs: Any) -> None:
        self.option = option
        super().__init__(*args, **kwargs)

    def parse(self, x: str) -> int:
        try:
            return int(x)
        except ValueError:
            raise InputError(f"{x!r} is not an integer", field=self.option) from None


class IdParameter(luigi.Parameter):
    """A project or plot id given on the command line: the same rule as in the plot file,
    so no id can make a target leave the project directory."""

    def normalize(self, x: Any) -> Any:
        if isinstance(x, str):
            check_id(x, source="command line", line=None, field="id")
        return x


class ObsKeyParameter(luigi.Parameter):
    """YYYY_DDD."""

    def normalize(self, x: Any) -> Any:
        if isinstance(x, str) and not re.fullmatch(r"\d{4}_\d{3}", x):
            raise InputError(
                f"{x!r} is not YYYY_DDD (year and zero-padded day of year)",
                source="command line",
                field="date",
            )
        return x


class _TimeSyncTask(UnitTask):
    """Parameters every TimeSync task shares (they decide the outputs)."""

    plot_file = luigi.Parameter(
        description="CSV with header project_id,plot_id,x,y (integer metres, ARD Albers)"
    )
    project_dir = luigi.Parameter(description="output directory: a local path or s3://bucket/prefix")
    catalog = luigi.Parameter(
        description="STAC API root (http/https) or a local catalogue file (NDJSON items or a FeatureCollection)"
    )
    region = ChoiceParameter(
        choices=("CU", "AK", "HI"), option="region", default="CU", description="ARD grid region."
    )
    datetime = luigi.Parameter(
        default="1984-01-01/..",
        description="acquisition interval, e.g. 1984-01/2022-12-31 (default: 1984 on)",
    )
    asset_href = ChoiceParameter(
        choices=("s3", "href"),
        option="asset-href",
        default="s3",
        description="read assets[band].alternate.s3.href (s3) or assets[band].href (href).",
    )
    collection = luigi.Parameter(default="landsat-c2ard-sr", description="STAC collection")
    chip_size = IntOptionParameter(
        option="chip-size", default=255, description="chip width and height in pixels (odd)"
    )

    @property
    def run_options(self) -> RunOptions:
        return RunOptions(
            plot_file=self.plot_file, project_dir=self.project_dir, catalog=self.catalog, region=self.region,
            datetime=self.datetime, asset_href=self.asset_href, collection=self.collection, chip_size=self.chip_size,
        )  # fmt: skip

    @property
    def project(self) -> Project:
        return project_for(self.run_options)

    def shared(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _TimeSyncTask.get_param_names()}

    def __repr__(self) -> str:
        """The family and the parameters that tell this task from the run's others (every task
        of a run shares the plot file, project directory, catalogue...): log lines stay short.
        The full parameters are in the task id and the scheduler."""
        return short_repr(self, _TimeSyncTask.get_param_names())


def short_repr(task: luigi.Task, shared: Iterable[str]) -> str:
    common = set(shared)
    params = [
        f"{name}={getattr(task, name)}"
        for name, p in task.get_params()
        if p.significant and name not in common
    ]
    return f"{task.get_task_family()}({', '.join(params)})"


class TimeSyncSearch(_TimeSyncTask):
    """The catalogue search of one ARD tile, kept as a state file so reruns never search
    again. Every plot whose chip touches the tile reads it."""

    tile_h = luigi.IntParameter()
    tile_v = luigi.IntParameter()

    @property
    def tile(self) -> Tile:
        return Tile(self.tile_h, self.tile_v)

    def output(self) -> StoreTarget:
        return StoreTarget(self.project.store, self.project.search_rel(self.tile))

    def is_complete(self) -> bool:
        # Every batch of the tile asks; a search state is never deleted during a run, so a
        # True answer is kept (UnitTask): one check per tile and run. A kept search with
        # unusable items is repeated once per run (the catalogue may have been fixed since):
        # see Project.search_is_current.
        return self.project.search_is_current(self.tile)

    def run(self) -> None:
        self.show_status(f"searching {self.catalog} for tile h{self.tile.hh}v{self.tile.vv}")
        doc = self.project.run_search(self.tile)
        self.output().write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        self.project.forget_search(self.tile)


class _PlotsTask(_TimeSyncTask):
    """A task over some plots: requires their tiles' searches, complete when every plot is."""

    def selected_plots(self) -> list[Any]:
        raise NotImplementedError

    def requires(self) -> list[TimeSyncSearch]:
        tiles = sorted({t for p in self.selected_plots() for t in self.project.tiles_of(p)})
        return [TimeSyncSearch(**self.shared(), tile_h=t.h, tile_v=t.v) for t in tiles]

    # A plot's series is written even when an item of its tiles is unusable (the rest of
    # the project completes); the run must still fail: by this task, or (for the batches of
    # a project run) by TimeSyncProject once the ingest files and the report are written.
    fail_on_unusable = True

    def is_complete(self) -> bool:
        # Outputs are not deleted during a run, so a True answer is kept for the task
        # instance (UnitTask): dependants ask again without new listings.
        done = all(r.complete() for r in self.requires()) and self.project.plots_complete(
            self.selected_plots()
        )
        if not done:
            summary.note_pending_batch(self.task_id)
        return done

    def progress_label(self) -> str:
        return f"TimeSync {self!r}"

    def run(self) -> None:
        plots = self.selected_plots()
        self.show_status(f"planning {len(plots)} plots")
        started = time.time()
        tracker = Progress(0, "observations", label=self.progress_label(), report=self.progress, logger=log)
        per_task = timesync().observations_per_dask_task
        outcome = self.project.process(
            plots, jobs_per_task=per_task, progress=lambda done, total, _: tracker.update(done, total)
        )
        summary.record_batch(self.task_id, outcome, started=started, plots=len(plots))
        log.info(
            "%s",
            summary.batch_line(self.progress_label(), outcome, plots=len(plots), seconds=tracker.elapsed),
        )
        if outcome.written or outcome.fill or outcome.failed or outcome.plots_done:
            for project_id in {p.project_id for p in plots}:  # its view of the project is now stale
                self.project.store.delete(layout.report_index(project_id))
        _raise_failures(outcome, unusable=outcome.unusable if self.fail_on_unusable else [])


def _raise_failures(outcome: BatchOutcome, *, unusable: list[UnusableItem]) -> None:
    """Fail the task when observations failed (or, when given, items were unusable); each
    one is recorded and listed at the end of the run, the message names the first."""
    if outcome.failed:
        first = outcome.failed[0]
        raise FailuresRecorded(
            f"{len(outcome.failed)} observation(s) of {outcome.plots_failed} plot(s) failed; "
            f"first: prj {first.project_id} plot {first.plot_id} {first.key}: {first.error}. "
            "Everything else is written; rerun the same command to retry only what failed."
        )
    if unusable:
        raise_unusable(unusable)


def raise_unusable(unusable: list[UnusableItem], consequence: str = "everything else is written") -> None:
    """Fail the task: catalogue items could not be used (they are listed at the end of the run)."""
    summary.record_unusable(unusable)
    raise FailuresRecorded(
        f"{len(unusable)} catalogue item(s) could not be used (listed at the end); {consequence}. "
        "Fix the catalogue and rerun the same command: the searches are repeated and the items picked up."
    )


class TimeSyncPlotBatch(_PlotsTask):
    """``plots_per_task`` plots of one project (ordered by tile): the unit the normal run schedules."""

    project_id = IdParameter()
    batch = luigi.IntParameter()
    plots_per_task = luigi.IntParameter()
    # Every project's extraction before any project's report: the cluster stays busy, and
    # a report's completeness snapshot, which waits until its directories are 2 s old,
    # finds them settled while the other projects' reports ran.
    priority = 10

    fail_on_unusable = False  # TimeSyncProject fails for them, after the ingest files and the report

    def selected_plots(self) -> list[Any]:
        return self.project.batches(self.project_id, self.plots_per_task)[self.batch]

    def progress_label(self) -> str:
        n = len(self.project.batches(self.project_id, self.plots_per_task))
        return f"TimeSync prj {self.project_id} batch {self.batch + 1}/{n}"


class TimeSyncPlot(_PlotsTask):
    """One plot by name: its missing observations, fill record and time series."""

    project_id = IdParameter()
    plot_id = IdParameter()

    def selected_plots(self) -> list[Any]:
        return [self.project.plot(self.project_id, self.plot_id)]

    def output(self) -> StoreTarget:
        return StoreTarget(self.project.store, layout.series_csv(self.project_id, self.plot_id))


class TimeSyncObservation(_TimeSyncTask):
    """One observation by name (``--date YYYY_DDD``): its CSV and three PNGs."""

    project_id = IdParameter()
    plot_id = IdParameter()
    date = ObsKeyParameter(description="YYYY_DDD")

    def requires(self) -> list[TimeSyncSearch]:
        plot = self.project.plot(self.project_id, self.plot_id)
        return [TimeSyncSearch(**self.shared(), tile_h=t.h, tile_v=t.v) for t in self.project.tiles_of(plot)]

    def output(self) -> list[StoreTarget]:
        return [
            StoreTarget(self.project.store, rel)
            for rel in layout.obs_files(self.project_id, self.plot_id, self.date)
        ]

    def complete(self) -> bool:
        if all(t.exists() for t in self.output()):
            return True
        plot = self.project.plot(self.project_id, self.plot_id)
        return self.date in self.project.fill_keys(plot)

    @cached_property
    def observation(self) -> Any:
        plot = self.project.plot(self.project_id, self.plot_id)
        for o in self.project.observations(plot):
            if o.key == self.date:
                return o
        raise PipelineError(
            f"plot {self.project_id}/{self.plot_id} has no observation {self.date} in the catalogue search"
        )

    def run(self) -> None:
        project = self.project
        plot = project.plot(self.project_id, self.plot_id)
        (result,) = project.execute([project.job(plot, self.observation)], jobs_per_task=1)
        if result.status == "failed":
            raise PipelineError(
                f"observation {self.date} of plot {self.project_id}/{self.plot_id} failed: {result.error}"
            )
        if result.status == "fill":
            project.record_fill(plot, {self.date})


class TimeSyncIngest(_TimeSyncTask):
    """The TimeSync server ingest files of one project, ``{YYYY}_prj_{id}_region_spectrals.csv``,
    written once all of its plots are done."""

    project_id = IdParameter()
    # Run alone (the root task), it fails when an item of the project's tiles could not be
    # used, as a project run does; under TimeSyncReport the report, or the project, fails
    # for them after everything is written.
    fail_on_unusable = luigi.BoolParameter(
        default=True, significant=False, visibility=luigi.parameter.ParameterVisibility.PRIVATE
    )

    def requires(self) -> list[TimeSyncPlotBatch]:
        n = timesync().plots_per_task
        count = len(self.project.batches(self.project_id, n))
        return [
            TimeSyncPlotBatch(**self.shared(), project_id=self.project_id, batch=i, plots_per_task=n)
            for i in range(count)
        ]

    def output(self) -> StoreTarget:
        return StoreTarget(
            self.project.store,
            layout.ingest_manifest(self.project_id, self.project.ingest_fingerprint(self.project_id)),
        )

    def complete(self) -> bool:
        # Also every batch: Luigi does not look below a complete task, and a deleted chip
        # must be found even when the ingest files are all there. The project's plots are
        # checked in one call first (on S3 concurrently; the batches then answer from the
        # plots known complete), and what was verified is saved in the completeness
        # snapshot, so the next run recognises the finished project without listings.
        project = self.project
        if not project.ingest_complete(self.project_id):
            return False
        plots = project.plots_of(self.project_id)
        tiles = sorted({t for p in plots for t in project.tiles_of(p)})
        if not all(TimeSyncSearch(**self.shared(), tile_h=t.h, tile_v=t.v).complete() for t in tiles):
            return False
        done = project.plots_complete(plots) and all(b.complete() for b in self.requires())
        project.save_snapshot(self.project_id)
        return done

    def run(self) -> None:
        self.show_status("combining plot series into per-year ingest files")
        project = self.project
        files = project.write_ingest(self.project_id)
        project.store.delete(layout.report_index(self.project_id))
        summary.record_ingest(self.project_id, len(files))
        log.info("project %s: %d ingest files", self.project_id, len(files))
        _fail_if_unusable(self.fail_on_unusable, project, self.project_id)


def _fail_if_unusable(fail: bool, project: Any, project_id: str) -> None:
    """The end of a project's ingest or report run as the root task: fail for the project's
    unusable catalogue items (named at the end of the run), everything else being written."""
    if fail:
        unusable = project.project_unusable(project_id)
        if unusable:
            raise_unusable(unusable)


class TimeSyncReport(_TimeSyncTask):
    """The visual QA report of one project (``report/prj_{id}/index.html`` and its pages),
    written after the ingest files; rewritten whenever a run changed the project."""

    project_id = IdParameter()
    fail_on_unusable = TimeSyncIngest.fail_on_unusable  # see there

    def requires(self) -> TimeSyncIngest:
        return TimeSyncIngest(**self.shared(), project_id=self.project_id, fail_on_unusable=False)

    def output(self) -> StoreTarget:
        return StoreTarget(self.project.store, layout.report_index(self.project_id))

    def complete(self) -> bool:
        # The ingest (and through it every batch) too: Luigi does not look below a complete task.
        return self.output().exists() and self.requires().complete()

    def run(self) -> None:
        self.show_status("writing the QA report")
        started = time.perf_counter()
        files = report.write_report(self.project, self.project_id, progress=self.progress)
        log.info(
            "project %s: QA report written (%d files, %.1f s)",
            self.project_id,
            len(files),
            time.perf_counter() - started,
        )
        # Last in the run, so that the plots' directories have mostly settled (a snapshot
        # trusts only directories unchanged for 2 s): the wait overlaps the report.
        self.show_status("recording the completeness snapshot")
        saved = self.project.record_completeness(self.project_id)
        log.debug("project %s: completeness snapshot of %d plot(s) recorded", self.project_id, saved)
        _fail_if_unusable(self.fail_on_unusable, self.project, self.project_id)


class TimeSyncDryRun(DryRunTask, _TimeSyncTask):
    """Before the bill: per project, how many plots, tiles and observations, how many are
    already done, and the S3 GET requests, bytes and requester-pays cost the run will
    need. Searches the catalogue (kept, so the run does not search again) and lists the
    outputs; reads no pixel and writes no output. Runs every time it is asked."""

    price_per_1000_get = luigi.FloatParameter(
        default=0.0004, description="USD per 1,000 GET requests on the archive"
    )
    default_fill_percent = luigi.FloatParameter(
        default=30.0, description="chance (%) the plot pixel is fill when an item has no landsat:fill"
    )

    def requires(self) -> list[TimeSyncSearch]:
        project = self.project
        project.validate()
        tiles = sorted({t for p in project.plots for t in project.tiles_of(p)})
        return [TimeSyncSearch(**self.shared(), tile_h=t.h, tile_v=t.v) for t in tiles]

    dry_run_name = "timesync-dry-run"

    def estimate(self) -> str:
        from pipeline.timesync.estimate import CostModel, format_estimates

        model = CostModel(
            price_per_1000_get=self.price_per_1000_get, default_fill_percent=self.default_fill_percent,
            merge_gap_bytes=self.project.access.merge_gap_bytes,
        )  # fmt: skip
        cfg = timesync()
        project = self.project
        estimates = [
            project.estimate(
                p,
                plots_per_batch=cfg.plots_per_task,
                jobs_per_task=cfg.observations_per_dask_task,
                model=model,
            )
            for p in project.project_ids()
        ]
        return format_estimates(estimates, model, project.store.url)

    def run(self) -> None:
        super().run()
        unusable = self.project.project_unusable()
        if unusable:
            raise_unusable(unusable, "the run would miss their acquisitions")


class TimeSyncProject(luigi.WrapperTask):
    """The whole plot file: every project id's observations, series and ingest files.

    luigi --module pipeline.timesync TimeSyncProject --plot-file PLOTS.csv
          --project-dir DIR_OR_S3_URL --catalog CATALOG [--region CU]
          [--datetime 1984-01/2022-12-31] [--asset-href s3|href] --local-scheduler
    """

    plot_file = _TimeSyncTask.plot_file
    project_dir = _TimeSyncTask.project_dir
    catalog = _TimeSyncTask.catalog
    region = _TimeSyncTask.region
    datetime = _TimeSyncTask.datetime
    asset_href = _TimeSyncTask.asset_href
    collection = _TimeSyncTask.collection
    chip_size = _TimeSyncTask.chip_size

    def requires(self) -> list[TimeSyncReport]:
        project = project_for(RunOptions(**self.shared()))
        project.validate()  # fatal input errors stop the run here, before anything is written
        summary.record_project(project, plots_per_task=timesync().plots_per_task)
        return [
            TimeSyncReport(**self.shared(), project_id=p, fail_on_unusable=False)
            for p in project.project_ids()
        ]

    def shared(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _TimeSyncTask.get_param_names()}

    def run(self) -> None:
        """Runs only when a requirement was not complete when the run started: every project
        is now written; the run still fails if an item of the catalogue could not be used
        (each is named at the end; the next run searches those tiles again)."""
        unusable = project_for(RunOptions(**self.shared())).project_unusable()
        if unusable:
            raise_unusable(unusable)

    def __repr__(self) -> str:
        return f"TimeSyncProject(plot_file={self.plot_file})"
