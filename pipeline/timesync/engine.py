"""TimeSync planning, completeness and execution, independent of Luigi.

A :class:`Project` is everything a run's parameters decide: where outputs go, the plots,
the catalogue searches per ARD tile, how assets are read. Luigi tasks hold one and call
it; the same code answers "is this plot done?" for a 25-plot batch task, a one-plot task
and a one-observation task.

Completeness of a plot's observations comes from listings, not per-file checks: one
listing of the plot's CSV name prefix and one of each chip directory. Observations skipped
because the plot pixel is fill have no outputs; they are remembered in a per-plot fill
record under ``_state/``.

Locally, a finished project is recognised without listings: when a plot is found (or, at
the end of a run, made) complete, the (inode, mtime) of its directories are recorded in a
completeness snapshot (in the machine's cache, see :func:`snapshot_cache_dir`); any
create, delete or rename in a directory changes its mtime, so a plot whose directories
still have the recorded stats is still complete. On S3 a batch's plots are checked concurrently, with one listing of the series
names per batch instead of one HEAD per plot.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.timesync.estimate import CostModel, Estimate

from pipeline import runstats
from pipeline.catalog import Catalog, open_catalog
from pipeline.datetimes import Interval, parse_interval
from pipeline.errors import InputError, PipelineError
from pipeline.failures import Failure, FailureRecord, UnusableItem, read_record, unique_items, write_record
from pipeline.grid import Region, Tile, chip_tiles, get_region, tile_of
from pipeline.raster import ArchiveAccess
from pipeline.scratch import temporary_dir
from pipeline.timesync import layout
from pipeline.timesync.extract import ObservationJob, ObservationResult, run_batch
from pipeline.timesync.plan import (
    GRID_H,
    GRID_REGION,
    GRID_V,
    ItemRef,
    Observation,
    Rejected,
    classify_items,
    fingerprint,
    group_observations,
    tile_key,
)  # fmt: skip
from pipeline.timesync.plots import Plot, read_plot_file
from pipeline.timesync.recipe import ALL_BANDS, SPECTRAL_COLUMNS, format_csv
from targets.store import ABSENT, Stat, Store

log = logging.getLogger("pipeline.timesync")

ProgressCallback = Callable[[int, int, str], None]

# A directory changed within this many ns may change again within the same mtime tick
# without its mtime moving: its stat proves nothing yet.
SETTLED_NS = 2_000_000_000
S3_CHECK_THREADS = 16  # concurrent plot checks on S3 (each 4 listings, ~90 ms of latency)
SNAPSHOT_FORMAT = 1
SnapshotEntry = list[Any]  # [plan digest, *stats flattened]: see Project.current_entry


@dataclass(frozen=True)
class RunOptions:
    """The parameters that decide a TimeSync project's outputs."""

    plot_file: str
    project_dir: str
    catalog: str
    region: str = "CU"
    datetime: str = "1984-01-01/.."
    asset_href: str = "s3"
    collection: str = "landsat-c2ard-sr"
    chip_size: int = 255


@dataclass
class PlotStatus:
    plot: Plot
    observations: list[Observation]
    missing: list[Observation]
    fill_keys: set[str]
    series_exists: bool
    # files of missing observations that exist already (a run killed mid-observation):
    # kept, not rewritten
    partial: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing and self.series_exists


@dataclass
class BatchOutcome:
    written: int = 0
    fill: int = 0
    failed: list[ObservationResult] = field(default_factory=list)
    plots_done: int = 0
    plots_failed: int = 0
    already_done_plots: int = 0
    unusable: list[UnusableItem] = field(default_factory=list)  # items of the plots' tiles the run cannot use


class Project:
    def __init__(self, options: RunOptions, *, store: Store, access: ArchiveAccess) -> None:
        self.options = options
        self.store = store
        self.access = access
        self._searches: dict[Tile, list[ItemRef]] = {}
        self._rejected: dict[Tile, list[Rejected]] = {}  # the unusable items of each tile's search
        self._observations: dict[tuple[Tile, ...], list[Observation]] = {}
        self._csv_indexes: dict[str, tuple[int, dict[str, set[str]]]] = {}
        self._plots_of: dict[str, list[Plot]] = {}
        self._batches: dict[tuple[str, int], list[list[Plot]]] = {}
        self._tiles: dict[Plot, list[Tile]] = {}
        self._plan_digests: dict[tuple[Tile, ...], str] = {}
        self._observation_keys: dict[tuple[Tile, ...], list[str]] = {}
        # plots seen complete in this process: outputs are not deleted during a run
        self._known_complete: set[tuple[str, str]] = set()
        self._snapshots: dict[str, tuple[Stat, dict[str, SnapshotEntry]]] = {}  # as read, by file stat
        self._pending: dict[str, dict[str, SnapshotEntry]] = {}  # verified, not yet saved

    # ---- parameters, validated -------------------------------------------------------
    @cached_property
    def region(self) -> Region:
        return get_region(self.options.region)

    @cached_property
    def interval(self) -> Interval:
        try:
            return parse_interval(self.options.datetime)
        except ValueError as e:
            raise InputError(str(e), field="datetime") from None

    @cached_property
    def plots(self) -> list[Plot]:
        chip = self.options.chip_size
        if chip <= 0 or chip % 2 == 0:
            raise InputError(
                f"chip size {chip} must be a positive odd number (the plot pixel is the centre)",
                field="chip-size",
            )
        if self.options.asset_href not in ("s3", "href"):
            raise InputError(f"{self.options.asset_href!r} is not one of s3, href", field="asset-href")
        _ = self.interval
        return read_plot_file(self.options.plot_file, self.region)

    def validate(self) -> None:
        """Every fatal input problem, before anything is written: the parameters, the plot
        file, and a local catalogue file (read whole, once)."""
        _ = self.plots
        if not self.options.catalog.startswith(("http://", "https://")):
            if not Path(self.options.catalog).is_file():
                raise InputError(
                    "catalogue file not found (give an http(s) STAC API root or a local item file)",
                    source=self.options.catalog,
                    field="catalog",
                )
            _ = self.catalog
        self.store.check()

    @cached_property
    def catalog(self) -> Catalog:
        return open_catalog(self.options.catalog)

    def project_ids(self) -> list[str]:
        return sorted({p.project_id for p in self.plots})

    def plots_of(self, project_id: str) -> list[Plot]:
        """A project's plots, ordered by tile then id so that batches share tiles (sorted
        once per process: every batch task asks)."""
        if project_id not in self._plots_of:
            mine = (p for p in self.plots if p.project_id == project_id)
            self._plots_of[project_id] = sorted(mine, key=lambda p: (self.tiles_of(p)[0], p.plot_id))
        return self._plots_of[project_id]

    @cached_property
    def _plot_index(self) -> dict[tuple[str, str], Plot]:
        return {(p.project_id, p.plot_id): p for p in self.plots}

    def plot(self, project_id: str, plot_id: str) -> Plot:
        try:
            return self._plot_index[(project_id, plot_id)]
        except KeyError:
            raise InputError(
                f"no plot ({project_id}, {plot_id}) in the plot file",
                source=self.options.plot_file,
                field="plot_id",
            ) from None

    def batches(self, project_id: str, plots_per_batch: int) -> list[list[Plot]]:
        key = (project_id, plots_per_batch)
        if key not in self._batches:
            plots = self.plots_of(project_id)
            self._batches[key] = [
                plots[i : i + plots_per_batch] for i in range(0, len(plots), plots_per_batch)
            ]
        return self._batches[key]

    def tiles_of(self, plot: Plot) -> list[Tile]:
        if plot not in self._tiles:
            self._tiles[plot] = chip_tiles(
                self.region, plot.x, plot.y, self.options.chip_size, self.options.chip_size
            )
        return self._tiles[plot]

    # ---- catalogue searches (one state file per ARD tile) ---------------------------
    @cached_property
    def search_fingerprint(self) -> str:
        o = self.options
        return fingerprint(o.catalog, o.collection, self.interval.to_stac(), o.region, STATE_FORMAT)

    def search_rel(self, tile: Tile) -> str:
        return layout.search_state(self.search_fingerprint, self.region.code, f"{tile.h:03d}{tile.v:03d}")

    def run_search(self, tile: Tile) -> dict[str, Any]:
        """Search one tile and return the state document (items trimmed to what is used)."""
        catalog = self.catalog
        equals = {GRID_H: tile.hh, GRID_V: tile.vv, GRID_REGION: self.region.code}
        started = time.perf_counter()
        items = catalog.search(collection=self.options.collection, interval=self.interval, equals=equals)
        log.info(
            "searched %s tile h%sv%s: %d items in %.1f s",
            catalog.description,
            tile.hh,
            tile.vv,
            len(items),
            time.perf_counter() - started,
        )
        doc: dict[str, Any] = {
            "catalog": catalog.description,
            "collection": self.options.collection,
            "datetime": self.interval.to_stac(),
            "query": equals,
            "items": [_trim(item) for item in items],
        }
        if self._classify(tile, doc)[1]:
            # A search with unusable items is repeated by the next run (the catalogue may be
            # fixed by then); only such a search says which run made it, so a clean search's
            # state is the same bytes whichever run wrote it.
            doc["run"] = runstats.run_id()
        return doc

    def _classify(self, tile: Tile, doc: dict[str, Any]) -> tuple[list[ItemRef], list[Rejected]]:
        tile_id = (self.region.code, tile.h, tile.v)
        return classify_items(
            doc["items"], self.options.asset_href, collection=self.options.collection, tile=tile_id
        )

    def tile_items(self, tile: Tile) -> list[ItemRef]:
        """The usable items of the tile's search (its unusable ones: :meth:`tile_unusable`)."""
        if tile not in self._searches:
            doc = json.loads(self.store.read_text(self.search_rel(tile)))
            self._searches[tile], self._rejected[tile] = self._classify(tile, doc)
        return self._searches[tile]

    def tile_unusable(self, tile: Tile) -> list[Rejected]:
        """The items of the tile's search that the run cannot use, with their acquisitions."""
        self.tile_items(tile)
        return self._rejected[tile]

    def search_is_current(self, tile: Tile) -> bool:
        """Is the tile's kept search the one to use? It is, unless it holds unusable items and
        an earlier run made it: the catalogue may have been fixed since, so the search is
        repeated once per run while it has any (a rerun picks up a fixed item). A current
        search is kept for the plans (read once per run); a stale one is not, since this
        process searches again, and may fork the workers that use it."""
        if tile in self._searches:
            return True  # read, and found current, before
        try:
            doc = json.loads(self.store.read_text(self.search_rel(tile)))
        except FileNotFoundError:
            return False
        refs, rejected = self._classify(tile, doc)
        if rejected and doc.get("run") != runstats.run_id():
            return False
        self._searches[tile], self._rejected[tile] = refs, rejected
        return True

    def forget_search(self, tile: Tile) -> None:
        """Drop what this process derived from the tile's search (after it was redone)."""
        self._searches.pop(tile, None)
        self._rejected.pop(tile, None)
        for cache in (self._observations, self._observation_keys, self._plan_digests):
            for tiles in [t for t in cache if tile in t]:
                del cache[tiles]

    def observations(self, plot: Plot) -> list[Observation]:
        tiles = tuple(self.tiles_of(plot))
        if tiles not in self._observations:
            items = [self.tile_items(t) for t in tiles]
            self._observations[tiles] = group_observations(
                items, [[r.entry() for r in self._rejected[t]] for t in tiles]
            )
        return self._observations[tiles]

    def unusable_of(self, plot: Plot) -> list[UnusableItem]:
        """The unusable items of the plot's tiles' searches, each once."""
        return unique_items(r.item for t in self.tiles_of(plot) for r in self.tile_unusable(t))

    def project_unusable(self, project_id: str | None = None) -> list[UnusableItem]:
        """The unusable items over every plot of one project (or of the plot file), each once."""
        plots = self.plots if project_id is None else self.plots_of(project_id)
        tiles = sorted({t for p in plots for t in self.tiles_of(p)})
        return unique_items(r.item for t in tiles for r in self.tile_unusable(t))

    def observation_keys(self, plot: Plot) -> list[str]:
        """The keys of ``observations(plot)``, made once per tile set (not per plot)."""
        tiles = tuple(self.tiles_of(plot))
        if tiles not in self._observation_keys:
            self._observation_keys[tiles] = [o.key for o in self.observations(plot)]
        return self._observation_keys[tiles]

    def plan_digest(self, plot: Plot) -> str:
        """A short hash of the plot's observation keys: a completeness snapshot holds only
        while the plan it was taken under is the same (a search may be redone)."""
        tiles = tuple(self.tiles_of(plot))
        if tiles not in self._plan_digests:
            self._plan_digests[tiles] = fingerprint(self.observation_keys(plot))
        return self._plan_digests[tiles]

    # ---- completeness ----------------------------------------------------------------
    def fill_keys(self, plot: Plot) -> set[str]:
        """The plot's fill record, read afresh: other processes (luigi workers, other
        machines) write it, so a cached answer could hide their work."""
        try:
            return set(
                json.loads(self.store.read_text(layout.fill_record(plot.project_id, plot.plot_id)))["fill"]
            )
        except FileNotFoundError:
            return set()

    def csv_keys(self, plot: Plot) -> set[str]:
        """Keys of the plot's observation CSVs. On S3: one prefix listing. Locally all plots'
        CSVs share one directory (the spec's layout), so it is scanned once into an index of
        plot -> keys, reused while the directory's mtime is unchanged (any create, delete or
        rename in it changes the mtime, in this process or another)."""
        prj_dir = layout.project_dir(plot.project_id)
        prefix = layout.obs_csv_prefix(plot.plot_id)
        if self.store.is_s3:
            return {n[len(prefix) : -4] for n in self.store.list_names(prj_dir, prefix) if n.endswith(".csv")}
        index = self._csv_index(prj_dir)
        return index.get(plot.plot_id, set())

    def _csv_index(self, prj_dir: str) -> dict[str, set[str]]:
        stat_time = time.time_ns()
        mtime = self.store.stat(prj_dir)[1]
        if mtime == 0:
            return {}
        cached = self._csv_indexes.get(prj_dir)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        index: dict[str, set[str]] = {}
        marker = "_spectral_files_set_"
        intern = sys.intern  # the same few thousand keys recur for every plot: store each once
        for name in self.store.iter_names(prj_dir):
            plot_id, sep, rest = name.partition(marker)
            if sep and rest.endswith(".csv"):
                keys = index.get(plot_id)
                if keys is None:
                    keys = index[plot_id] = set()
                keys.add(intern(rest[:-4]))
        # A directory changed within the last seconds may change again within the same
        # mtime tick: do not trust the cache for it.
        if stat_time - mtime > SETTLED_NS:
            self._csv_indexes[prj_dir] = (mtime, index)
        return index

    def existing_files(self, plot: Plot) -> dict[str, set[str]]:
        """Observation keys present per kind ("csv", "tc", "b743", "b432"): the CSVs (see
        csv_keys) and one listing of each chip directory."""
        present, _ = self._existing_files(plot)
        return present

    def _existing_files(self, plot: Plot) -> tuple[dict[str, set[str]], int]:
        """existing_files, and how many temporaries the local chip listings still hold."""
        pid, prj = plot.plot_id, plot.project_id
        present = {"csv": set(self.csv_keys(plot))}  # a copy: the local index is shared
        chip_prefix = f"plot_{pid}_"
        n = len(chip_prefix)
        temporaries = 0
        for kind in layout.COMPOSITE_DIRS:
            rel_dir = layout.chip_dir(kind, prj, pid)
            if self.store.is_s3:
                names: Iterable[str] = self.store.list_names(rel_dir, chip_prefix)
            else:
                listing = self.store.names_in(rel_dir)
                names, temporaries = listing.names, temporaries + listing.temporaries
            present[kind] = {
                name[n:-4] for name in names if name.startswith(chip_prefix) and name.endswith(".png")
            }
        return present, temporaries

    def existing_keys(self, plot: Plot) -> set[str]:
        """Keys of observations whose four files all exist."""
        return set.intersection(*self.existing_files(plot).values())

    def plot_status(self, plot: Plot, *, series_names: set[str] | None = None) -> PlotStatus:
        """What the plot has and lacks, from its listings. ``series_names``: the names in
        the project's series directory when the caller listed them (S3: one listing per
        batch instead of one HEAD per plot). Locally a complete plot is remembered for the
        completeness snapshot (see current_entry)."""
        observations = self.observations(plot)
        stat_time = time.time_ns()
        entry_before = None if self.store.is_s3 else self.current_entry(plot)  # stats before the listings
        present, temporaries = self._existing_files(plot)
        done = set.intersection(*present.values())
        remaining = [
            o for o, key in zip(observations, self.observation_keys(plot), strict=True) if key not in done
        ]
        fill = self.fill_keys(plot) if remaining else set()
        missing = [o for o in remaining if o.key not in fill]
        series_exists = False
        if not missing:
            series_name = layout.series_csv(plot.project_id, plot.plot_id).rsplit("/", 1)[1]
            series_exists = (
                series_name in series_names
                if series_names is not None
                else self.store.exists(layout.series_csv(plot.project_id, plot.plot_id))
            )
        partial = {
            o.key: frozenset(
                rel
                for kind, rel in zip(
                    ("tc", "b743", "b432", "csv"),
                    layout.obs_files(plot.project_id, plot.plot_id, o.key),
                    strict=True,
                )
                if o.key in present[kind]
            )
            for o in missing
        }
        status = PlotStatus(
            plot, observations, missing, fill, series_exists, {k: v for k, v in partial.items() if v}
        )
        if status.complete and entry_before is not None and not temporaries:
            self._remember(plot, entry_before, stat_time)
        return status

    def status_of(self, plot: Plot) -> PlotStatus:
        """:meth:`plot_status` without the listings when the plot is known complete: seen
        complete by this process (the run that just finished it), or, locally, its
        completeness snapshot entry still matches. What the report and the dry run use:
        after a run that changed one plot of 10,000, they list one plot, not all."""
        key = (plot.project_id, plot.plot_id)
        if key not in self._known_complete:
            recorded = None if self.store.is_s3 else self.snapshot(plot.project_id).get(plot.plot_id)
            if recorded is None or recorded != self.current_entry(plot):
                return self.plot_status(plot)
            self._known_complete.add(key)
        return PlotStatus(plot, self.observations(plot), [], self.fill_keys(plot), True)

    # ---- completeness of many plots: snapshots (local), concurrency (S3) -------------
    def current_entry(self, plot: Plot, csv_dir_stat: Stat | None = None) -> SnapshotEntry:
        """What a snapshot records of a complete plot: its plan digest and the stats of the
        flat CSV directory (``csv_dir_stat`` if the caller has it), its three chip
        directories, its series and its fill record."""
        prj, pid = plot.project_id, plot.plot_id
        entry: SnapshotEntry = [
            self.plan_digest(plot),
            *(csv_dir_stat or self.store.stat(layout.project_dir(prj))),
        ]
        for rel in (
            *(layout.chip_dir(k, prj, pid) for k in layout.COMPOSITE_DIRS),
            layout.series_csv(prj, pid),
            layout.fill_record(prj, pid),
        ):
            entry.extend(self.store.stat(rel))
        return entry

    def _remember(self, plot: Plot, entry: SnapshotEntry, stat_time: int) -> None:
        """Keep a complete plot's entry for the next save if its directories had settled
        when they were stat'ed (``stat_time``: just before; entry[2:9:2] are the mtimes of
        the CSV and chip directories): a later change then always moves their mtime."""
        if any(mtime and stat_time - mtime <= SETTLED_NS for mtime in entry[2:9:2]):
            return
        self._pending.setdefault(plot.project_id, {})[plot.plot_id] = entry

    @cached_property
    def snapshot_store(self) -> Store:
        """Where this local project's completeness snapshots are kept: a directory of the
        machine's cache named after the project directory's path."""
        return Store(os.path.join(snapshot_cache_dir(), fingerprint(self.store.root, SNAPSHOT_FORMAT)))

    def snapshot(self, project_id: str) -> dict[str, SnapshotEntry]:
        """The project's recorded completeness snapshot (plot id -> entry), re-read only
        when its file changed."""
        rel = layout.completeness_snapshot(project_id)
        file_stat = self.snapshot_store.stat(rel)
        cached = self._snapshots.get(project_id)
        if cached is not None and cached[0] == file_stat:
            return cached[1]
        plots: dict[str, SnapshotEntry] = {}
        if file_stat != ABSENT:
            try:
                doc = json.loads(self.snapshot_store.read_text(rel))
                if doc.get("format") == SNAPSHOT_FORMAT and doc.get("project_dir") == self.store.root:
                    plots = dict(doc["plots"])
            except (OSError, ValueError, KeyError, TypeError, PipelineError):
                plots = {}  # unreadable: ignore it, it only saves work
        self._snapshots[project_id] = (file_stat, plots)
        return plots

    def save_snapshot(self, project_id: str) -> int:
        """Merge the entries verified since the last save into the project's snapshot file;
        returns how many were new. Written only when something changed, so a run that finds
        everything as recorded writes nothing."""
        pending = self._pending.pop(project_id, {})
        recorded = self.snapshot(project_id)
        new = {pid: e for pid, e in pending.items() if recorded.get(pid) != e}
        if not new:
            return 0
        plots = {**recorded, **new}
        doc = {"format": SNAPSHOT_FORMAT, "project_dir": self.store.root, "plots": plots}
        try:
            self.snapshot_store.write_text(
                layout.completeness_snapshot(project_id), json.dumps(doc, separators=(",", ":")) + "\n"
            )
        except PipelineError as e:  # a cache: the next run lists again, nothing is lost
            log.warning("completeness snapshot not saved: %s", e)
            return 0
        return len(new)

    def plots_complete(self, plots: list[Plot]) -> bool:
        """Is every plot complete? Plots already seen complete in this process are not
        checked again. Locally, a plot whose snapshot entry still matches is complete
        without a listing; the others are listed. On S3, plots are checked concurrently."""
        todo = [p for p in plots if (p.project_id, p.plot_id) not in self._known_complete]
        if not todo:
            return True
        if self.store.is_s3:
            return self._plots_complete_s3(todo)
        snapshots = {prj: self.snapshot(prj) for prj in {p.project_id for p in todo}}
        csv_dir_stats = {prj: self.store.stat(layout.project_dir(prj)) for prj in snapshots}
        for plot in todo:
            recorded = snapshots[plot.project_id].get(plot.plot_id)
            snapshot_stale = recorded is None or recorded != self.current_entry(
                plot, csv_dir_stats[plot.project_id]
            )
            if snapshot_stale and not self.plot_status(plot).complete:
                return False
            self._known_complete.add((plot.project_id, plot.plot_id))
        return True

    def _plots_complete_s3(self, plots: list[Plot]) -> bool:
        for plot in plots:
            self.observation_keys(plot)  # plan here: the caches are filled by one thread
        series = self._series_names(plots)
        with ThreadPoolExecutor(max_workers=S3_CHECK_THREADS) as pool:
            futures: list[Future[PlotStatus]] = [
                pool.submit(self.plot_status, p, series_names=series) for p in plots
            ]
            for future in futures:
                if not future.result().complete:
                    for f in futures:
                        f.cancel()
                    return False
        self._known_complete.update((p.project_id, p.plot_id) for p in plots)
        return True

    def _series_names(self, plots: list[Plot]) -> set[str]:
        """Names in the series directories of the plots' projects that can be theirs: one
        listing per project, narrowed to the plot ids' common prefix (a batch's ids are
        usually neighbours)."""
        names: set[str] = set()
        for project_id in sorted({p.project_id for p in plots}):
            ids = [p.plot_id for p in plots if p.project_id == project_id]
            series_dir = layout.series_csv(project_id, ids[0]).rsplit("/", 1)[0]
            names |= self.store.list_names(series_dir, "plot_" + os.path.commonprefix(ids))  # noqa: RUF071  (a string prefix is meant: plot ids)
        return names

    def record_completeness(self, project_id: str) -> int:
        """After a run made the project complete: wait until its directories have settled
        (at most ~2 s), list every plot whose snapshot entry does not match, and save the
        snapshot, so the next run needs no listing. Local projects only; returns how many
        entries were saved."""
        if self.store.is_s3:
            return 0
        plots = self.plots_of(project_id)
        entries = {p.plot_id: self.current_entry(p) for p in plots}
        newest = max((m for e in entries.values() for m in e[2:9:2]), default=0)
        wait_ns = newest + SETTLED_NS + 50_000_000 - time.time_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        recorded = self.snapshot(project_id)
        for plot in plots:
            if recorded.get(plot.plot_id) != self.current_entry(plot):
                self.plot_status(plot)  # remembered when complete
        self._sweep_temporaries(project_id)
        return self.save_snapshot(project_id)

    def _sweep_temporaries(self, project_id: str) -> None:
        """Stale temporaries in the directories completeness checks never list (a killed
        writer's debris): the series and the project's state directories."""
        prj = layout.project_dir(project_id)
        for rel_dir in (
            f"{prj}/series",
            f"{layout.STATE}/{prj}",
            f"{layout.STATE}/{prj}/fill",
            f"{layout.STATE}/{prj}/failed",
            "",
        ):
            self.store.names_in(rel_dir)

    # ---- execution ------------------------------------------------------------------
    def job(self, plot: Plot, obs: Observation, existing: frozenset[str] = frozenset()) -> ObservationJob:
        own = tile_of(self.region, plot.x, plot.y)
        p = plot
        return ObservationJob(
            p.project_id, p.plot_id, p.x, p.y, self.options.chip_size, obs, existing, tile_key(own.h, own.v)
        )

    def jobs_for(self, status: PlotStatus) -> list[ObservationJob]:
        return [self.job(status.plot, o, status.partial.get(o.key, frozenset())) for o in status.missing]

    def execute(
        self, jobs: list[ObservationJob], *, jobs_per_task: int, progress: ProgressCallback | None = None
    ) -> list[ObservationResult]:
        """Run jobs on the Dask cluster in pieces of ``jobs_per_task`` observations, grouped
        so that a piece reads the same acquisitions (observation-major order)."""
        if not jobs:
            return []
        from pipeline.cluster import run_each

        pieces = pack_by_acquisition(jobs, jobs_per_task)
        calls = [(piece, self.store, self.access) for piece in pieces]
        results: list[ObservationResult] = []
        for _, future in run_each(run_batch, calls, name="timesync"):
            results.extend(future.result())
            if progress:
                progress(len(results), len(jobs), "observations")
        return results

    def process(
        self, plots: Iterable[Plot], *, jobs_per_task: int, progress: ProgressCallback | None = None
    ) -> BatchOutcome:
        """Bring every given plot up to date: missing observations, fill record, series."""
        outcome = BatchOutcome()
        statuses = [self.plot_status(p) for p in plots]
        todo = [s for s in statuses if not s.complete]
        outcome.already_done_plots = len(statuses) - len(todo)
        outcome.unusable = unique_items(u for s in statuses for u in self.unusable_of(s.plot))
        self._refresh_records([s.plot for s in statuses if s.complete])
        jobs = [j for s in todo for j in self.jobs_for(s)]
        results = self.execute(jobs, jobs_per_task=jobs_per_task, progress=progress)
        by_plot: dict[tuple[str, str], list[ObservationResult]] = {}
        for r in results:
            by_plot.setdefault((r.project_id, r.plot_id), []).append(r)
        for status in todo:
            p = status.plot
            mine = by_plot.get((p.project_id, p.plot_id), [])
            failed = [r for r in mine if r.status == "failed"]
            outcome.written += sum(r.status == "written" for r in mine)
            outcome.fill += sum(r.status == "fill" for r in mine)
            outcome.failed.extend(failed)
            if failed:
                outcome.plots_failed += 1
                self.record_failures(p, failed)
                new_fill = {r.key for r in mine if r.status == "fill"}
                if new_fill:  # so the rerun does not read them again
                    self.record_fill(p, new_fill)
                continue  # no series for a plot with a failed observation: its rerun does it
            self.finish_plot(status, mine)
            outcome.plots_done += 1
        return outcome

    def failure_record(self, plot: Plot) -> FailureRecord:
        """What the plot lacks after its last attempt: failed observations and the unusable
        items of its tiles (no file, an empty record, once it is whole)."""
        return read_record(self.store, layout.failure_record(plot.project_id, plot.plot_id))

    def failures(self, plot: Plot) -> list[dict[str, Any]]:
        """The plot's failed observations from its last attempt (empty once it succeeded)."""
        return [f.to_json() for f in self.failure_record(plot).failed]

    def _write_record(self, plot: Plot, failed: list[Failure], unusable: list[UnusableItem]) -> None:
        context = {"project_id": plot.project_id, "plot_id": plot.plot_id}
        write_record(
            self.store,
            layout.failure_record(plot.project_id, plot.plot_id),
            FailureRecord(failed, unusable, context),
        )

    def record_failures(self, plot: Plot, failed: list[ObservationResult]) -> None:
        previous = {f.key: f for f in self.failure_record(plot).failed}
        self._write_record(
            plot,
            [
                Failure(
                    key=r.key,
                    error=r.error,
                    what=f"prj {plot.project_id} plot {plot.plot_id} {r.key}",
                    targets=tuple(
                        self.store.uri(rel) for rel in layout.obs_files(plot.project_id, plot.plot_id, r.key)
                    ),
                    attempts=(previous[r.key].attempts if r.key in previous else 0) + 1,
                )
                for r in failed
            ],
            self.unusable_of(plot),
        )

    def _refresh_records(self, plots: list[Plot]) -> None:
        """Complete plots keep a record only of the unusable items their tiles still have
        (none once the catalogue is fixed or the item removed). One listing of the project's
        record directory finds the plots that have one."""
        by_project: dict[str, list[Plot]] = {}
        for plot in plots:
            by_project.setdefault(plot.project_id, []).append(plot)
        for project_id, mine in by_project.items():
            record_dir = layout.failure_record(project_id, "x").rsplit("/", 1)[0]
            recorded = self.store.list_names(record_dir, "plot_")
            for plot in mine:
                unusable = self.unusable_of(plot)
                if (
                    not unusable
                    and layout.failure_record(project_id, plot.plot_id).rsplit("/", 1)[1] not in recorded
                ):
                    continue
                record = self.failure_record(plot)
                if record.failed or record.unusable != unusable:  # a complete plot has no failed observation
                    self._write_record(plot, [], unusable)

    def record_fill(self, plot: Plot, keys: set[str]) -> None:
        """Add observation keys to the plot's fill record (read, merge, atomic rewrite)."""
        fill = self.fill_keys(plot) | keys
        self.store.write_text(
            layout.fill_record(plot.project_id, plot.plot_id),
            json.dumps({"fill": sorted(fill)}, indent=0) + "\n",
        )

    def finish_plot(self, status: PlotStatus, results: list[ObservationResult]) -> None:
        """Write the fill record (if it changed) and the per-plot time series."""
        p = status.plot
        new_fill = {r.key for r in results if r.status == "fill"}
        recorded = self.fill_keys(p)
        fill = (status.fill_keys | recorded | new_fill) & {o.key for o in status.observations}
        if fill != recorded:
            self.record_fill(p, fill)
        fresh = {r.key: list(r.row) for r in results if r.status == "written" and r.row}
        rows = []
        for o in status.observations:
            if o.key in fill:
                continue
            row = fresh.get(o.key)
            if row is None:
                row = read_obs_row(self.store, layout.obs_csv(p.project_id, p.plot_id, o.key))
            rows.append(row)
        self.store.write_text(layout.series_csv(p.project_id, p.plot_id), format_csv(rows))
        self._write_record(p, [], self.unusable_of(p))  # last: the plot is whole (but for unusable items)

    # ---- the dry run ------------------------------------------------------------------
    def estimate(
        self, project_id: str, *, plots_per_batch: int, jobs_per_task: int, model: CostModel
    ) -> Estimate:
        """What running ``project_id`` will need, from the catalogue searches and listings
        only: the same batches and Dask pieces the run will use (see estimate.py)."""
        from pipeline.timesync.estimate import Estimate, piece_cost

        est = Estimate(project_id)
        est.unusable = self.project_unusable(project_id)
        for batch in self.batches(project_id, plots_per_batch):
            jobs: list[ObservationJob] = []
            for plot in batch:
                status = self.status_of(plot)
                est.plots += 1
                est.tiles.update(t.hv for t in self.tiles_of(plot))
                est.observations += len(status.observations)
                est.fill_known += len(status.fill_keys & {o.key for o in status.observations})
                est.done += len(status.observations) - len(status.missing)
                jobs.extend(self.jobs_for(status))
            est.to_process += len(jobs)
            for piece in pack_by_acquisition(jobs, jobs_per_task):
                gets, nbytes, fill = piece_cost(piece, model)
                est.get_requests += gets
                est.bytes += nbytes
                est.expected_fill += fill
        est.output_writes = 4 * (est.to_process - est.expected_fill)
        return est

    # ---- per project: TimeSync server ingest files ------------------------------------
    def ingest_fingerprint(self, project_id: str) -> str:
        o = self.options
        plots = [(p.plot_id, p.x, p.y) for p in self.plots_of(project_id)]
        return fingerprint(plots, self.search_fingerprint, o.asset_href, o.chip_size)

    def ingest_expected(self, project_id: str) -> list[str] | None:
        """Files the manifest promises, or None when there is no manifest yet."""
        try:
            doc = json.loads(
                self.store.read_text(layout.ingest_manifest(project_id, self.ingest_fingerprint(project_id)))
            )
        except FileNotFoundError:
            return None
        return list(doc["files"])

    def ingest_complete(self, project_id: str) -> bool:
        expected = self.ingest_expected(project_id)
        if expected is None:
            return False
        present = self.store.list_names("")
        return all(name in present for name in expected)

    def write_ingest(self, project_id: str) -> list[str]:
        """The per-year ingest files of a project, in bounded memory: every plot's series
        is read once, in plot id order, and its rows are appended to a spool file per year
        (a local temporary directory, removed after); each year's file is then complete
        and already sorted by (plot_id, doy), and is written (unless identical) alone."""
        plots = self.plots_of(project_id)
        with temporary_dir("ingest-spool-") as spool_dir:
            years = self._spool_rows_by_year(project_id, plots, spool_dir)
            present = self.store.list_names("", "")
            files = []
            for year in sorted(years):
                rel = layout.ingest_csv(project_id, year)
                files.append(rel)
                data = _sorted_year_rows(os.path.join(spool_dir, f"{year}.csv"))
                if rel in present and self.store.read_bytes(rel) == data:
                    continue  # already right (an earlier, interrupted ingest): keep its bytes
                self.store.write_bytes(rel, data)
                del data
        manifest = {"project_id": project_id, "files": files, "plots": len(plots)}
        self.store.write_text(
            layout.ingest_manifest(project_id, self.ingest_fingerprint(project_id)),
            json.dumps(manifest, indent=1) + "\n",
        )
        return files

    def _spool_rows_by_year(self, project_id: str, plots: list[Plot], spool_dir: str) -> set[int]:
        """Append each row, as its ingest line, to ``spool_dir/{year}.csv``; returns the years."""
        year_col = SPECTRAL_COLUMNS.index("year")
        spools: dict[int, Any] = {}
        with contextlib.ExitStack() as open_spools:
            for text in self._series_texts(sorted(plots, key=lambda p: p.plot_id)):
                for line in text.splitlines()[1:]:
                    if not line:
                        continue
                    year = int(line.split(",", year_col + 1)[year_col])
                    spool = spools.get(year)
                    if spool is None:
                        spool = spools[year] = open_spools.enter_context(
                            open(os.path.join(spool_dir, f"{year}.csv"), "w", encoding="utf-8", newline="")
                        )
                    spool.write(f"{project_id},{line}\n")
        return set(spools)

    def _series_texts(self, plots: list[Plot]) -> Iterator[str]:
        """The plots' series CSVs in order; on S3 read 16 at a time, a chunk ahead at most."""
        threads = 16 if self.store.is_s3 else 1
        chunk = 4 * threads
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for i in range(0, len(plots), chunk):
                rels = [layout.series_csv(p.project_id, p.plot_id) for p in plots[i : i + chunk]]
                yield from pool.map(self.store.read_text, rels)


def _sorted_year_rows(spool_path: str) -> bytes:
    """A year's spooled ingest lines, ordered by (plot_id, doy) as the ingest file wants.
    Appended in plot id order from date-ordered series, they already are: the spool is
    returned as it is after a check, and only sorted when a series was out of order."""
    plot_col, doy_col = (
        1 + SPECTRAL_COLUMNS.index("plot_id"),
        1 + SPECTRAL_COLUMNS.index("doy"),
    )  # +1: project_id1

    def order(line: str) -> tuple[str, int]:
        cells = line.split(",", max(plot_col, doy_col) + 1)
        return cells[plot_col], int(cells[doy_col])

    with open(spool_path, encoding="utf-8", newline="\n") as f:
        in_order = all(a <= b for a, b in itertools.pairwise(map(order, f)))  # one line at a time
    if in_order:
        with open(spool_path, "rb") as raw:
            return raw.read()
    with open(spool_path, encoding="utf-8", newline="\n") as f:
        lines = [line.rstrip("\n") for line in f]
    lines.sort(key=order)  # stable: equal keys keep their order, as before
    return "".join(line + "\n" for line in lines).encode("utf-8")


def snapshot_cache_dir() -> str:
    """The machine's completeness-snapshot cache: ``$EO_EXTRACT_CACHE``, else
    ``$XDG_CACHE_HOME/eo-extract``, else ``~/.cache/eo-extract``; then ``completeness``."""
    root = os.environ.get("EO_EXTRACT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "eo-extract"
    )
    return os.path.join(root, "completeness")


def pack_by_acquisition(jobs: list[ObservationJob], jobs_per_task: int) -> list[list[ObservationJob]]:
    """Pieces of about ``jobs_per_task`` jobs in which the jobs of one acquisition (all the
    plots that read its files) stay together, so each band file is opened, and its header
    fetched, once per piece rather than once per plot; deterministic, so the dry run can
    count the same opens."""
    groups: dict[str, list[ObservationJob]] = {}
    for job in sorted(jobs, key=lambda j: (j.obs.key, j.project_id, j.plot_id)):
        groups.setdefault(job.obs.key, []).append(job)
    pieces: list[list[ObservationJob]] = []
    current: list[ObservationJob] = []
    for group in groups.values():
        if current and len(current) + len(group) > jobs_per_task:
            pieces.append(current)
            current = []
        current.extend(group)  # a group larger than a piece stays whole: its files are shared
    if current:
        pieces.append(current)
    return pieces


def parse_csv_rows(text: str) -> list[list[str]]:
    """Rows (without header) of a CSV written by :func:`format_csv`."""
    lines = text.splitlines()
    return [line.split(",") for line in lines[1:] if line]


def read_obs_row(store: Store, rel: str) -> list[str]:
    rows = parse_csv_rows(store.read_text(rel))
    if len(rows) != 1:
        raise PipelineError(f"{store.uri(rel)}: expected a header and one row")
    return rows[0]


KEPT_PROPERTIES = ("datetime", GRID_H, GRID_V, GRID_REGION, "proj:transform", "proj:shape", "landsat:fill")
STATE_FORMAT = 2  # bump when the search state keeps different fields


def _trim(item: dict[str, Any]) -> dict[str, Any]:
    """What the state file keeps of an item: id, datetime, grid properties and the seven
    assets' hrefs (both plain and alternate.s3)."""
    props = item.get("properties") or {}
    assets = item.get("assets") or {}
    kept_assets = {}
    for band in ALL_BANDS:
        a = assets.get(band)
        if isinstance(a, dict):
            kept = {"href": a.get("href")}
            s3 = (
                ((a.get("alternate") or {}).get("s3") or {}).get("href")
                if isinstance(a.get("alternate"), dict)
                else None
            )
            if s3:
                kept["alternate"] = {"s3": {"href": s3}}
            kept_assets[band] = kept
    trimmed = {
        "type": "Feature",
        "id": item.get("id"),
        "collection": item.get("collection"),
        "properties": {k: props[k] for k in KEPT_PROPERTIES if k in props},
        "assets": kept_assets,
    }
    if "_source" in item:
        trimmed["_source"] = item["_source"]
    return trimmed
