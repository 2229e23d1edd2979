"""HLS monthly median composites and training samples as Luigi tasks. Tasks are thin: they
name targets and requirements and call :mod:`pipeline.hls.engine`.

::

    HlsComposites (tiles file, or bbox + years)
    └── HlsComposite  per tile-year        (its months' COGs, then the manifest)
        └── HlsSearch per tile-year        (both collections, kept as a state file)

    HlsSamples (points file)
    ├── HlsPlacement per year              (which tile serves each point; unplaced.csv)
    │   └── HlsSearch per candidate tile-year
    └── HlsSampleTile per (tile, year)     (Zarr chips, then the centre parquet)
        └── HlsComposite
"""

from __future__ import annotations

import csv
import io
import json
import logging
from functools import cached_property
from typing import Any

import luigi

from pipeline import cluster  # also registers [dask] for luigi.cfg and --dask-* flags
from pipeline.catalog import shared_catalog
from pipeline.config import (  # [output]: the S3 endpoint of s3:// project directories (--output-*)
    BlobSigningConfig,
    output,
)
from pipeline.errors import InputError
from pipeline.failures import Failure, FailureRecord, FailuresRecorded, write_record, write_unusable
from pipeline.hls import layout, summary
from pipeline.hls.engine import (
    MonthResult,
    TileYearPlan,
    jdump,
    place_points,
    plan_tile_year,
    points_fingerprint,
    run_months,
    sample_tile,
    scenes_digest,
    search_doc,
)
from pipeline.hls.inputs import Point, TileYear, parse_bbox, parse_years, read_points_file, read_tiles_file
from pipeline.mgrs_grid import tiles_in_bbox, tiles_near
from pipeline.progress import Progress
from pipeline.raster import ArchiveAccess
from pipeline.task_base import DryRunTask, UnitTask
from targets.store import Store
from targets.target import StoreTarget

log = logging.getLogger("pipeline.hls")


class hls(BlobSigningConfig, cluster.InProcessDask):
    """[hls]: how HLS assets are reached (the signing settings every blob-reading workflow has)
    and where the months are composited."""


def access_for(cfg: hls | None = None) -> ArchiveAccess:
    return (cfg or hls()).access()


catalog_for = shared_catalog


def store_for(project_dir: str) -> Store:
    return Store(project_dir, output().s3_options())


def catalog_fingerprint(catalog: str) -> str:
    import hashlib

    return hashlib.sha1(f"hls2|{catalog}".encode()).hexdigest()[:12]


class _HlsTask(UnitTask):
    catalog = luigi.Parameter(
        description="STAC API root (http/https) or a local catalogue file (NDJSON items or a FeatureCollection)"
    )
    project_dir = luigi.Parameter(
        description="output directory: a local path, s3://bucket/prefix or az://container/prefix"
    )

    @property
    def store(self) -> Store:
        return store_for(self.project_dir)

    def common(self) -> dict[str, Any]:
        return {"catalog": self.catalog, "project_dir": self.project_dir}


class HlsSearch(_HlsTask):
    """Both HLS collections' items of one tile-year, kept as a state file, so reruns never
    search again, except where the last search returned items the run could not use (the
    catalogue may have been fixed since)."""

    tile = luigi.Parameter()
    year = luigi.IntParameter()

    def output(self) -> StoreTarget:
        return StoreTarget(
            self.store, layout.search_state(catalog_fingerprint(self.catalog), self.tile, self.year)
        )

    def is_complete(self) -> bool:
        return self.output().exists() and not self.store.exists(layout.unusable_record(self.tile, self.year))

    def run(self) -> None:
        self.show_status(f"searching {self.catalog} for {self.tile} {self.year}")
        doc = search_doc(catalog_for(self.catalog), self.tile, self.year)
        self.output().write_text(jdump(doc))
        self.mark_complete()

    def plan(self) -> TileYearPlan:
        doc = json.loads(self.output().read_text())
        return plan_tile_year(self.tile, self.year, doc["items"])


class HlsComposite(_HlsTask):
    """One tile-year's monthly composites: a COG per month with at least one item, then the
    manifest (months, their scenes' digest, the grid) as the completion marker. A month's
    COG carries the digest of the scenes it was made from, so a COG of an older catalogue
    state is rebuilt, and one of a month that no longer has scenes is removed."""

    tile = luigi.Parameter()
    year = luigi.IntParameter()

    def requires(self) -> HlsSearch:
        return HlsSearch(**self.common(), tile=self.tile, year=self.year)

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, layout.composite_manifest(self.tile, self.year))

    def is_complete(self) -> bool:
        if not (self.requires().complete() and self.output().exists()):
            return False
        manifest = json.loads(self.output().read_text())
        present = self.store.list_names(layout.composite_dir(self.tile, self.year))
        return all(layout.composite_name(self.tile, self.year, int(m)) in present for m in manifest["months"])

    def run(self) -> None:
        store = self.store
        plan = self.requires().plan()
        months = plan.months()
        present = store.list_names(layout.composite_dir(self.tile, self.year))
        previous = _read_json(store, layout.composite_manifest(self.tile, self.year)) or {}
        jobs = []
        for month, scenes in months.items():
            name = layout.composite_name(self.tile, self.year, month)
            digest = scenes_digest(scenes)
            if name in present and _month_digest(store, self.tile, self.year, month, previous) == digest:
                continue
            assert plan.grid is not None
            jobs.append((self.tile, self.year, month, plan.grid, scenes))
        for name in sorted(present):  # months without scenes now: stale outputs
            stale_month = _month_of_name(name)
            if stale_month is not None and stale_month not in months:
                store.delete(f"{layout.composite_dir(self.tile, self.year)}/{name}")
        self.show_status(f"{self.tile} {self.year}: {len(jobs)} of {len(months)} months to composite")

        tracker = Progress(
            len(jobs), "months", label=f"{self.tile} {self.year}", report=self.progress, logger=log
        )

        def progress(done: int, total: int, result: MonthResult) -> None:
            tracker.update(done)
            if result.status == "failed":
                log.warning("%s %d-%02d failed: %s", result.tile, result.year, result.month, result.error)

        if jobs:
            store.delete(layout.report_index())  # its view of the project is now stale
        cfg = hls()
        threads = cfg.in_process_threads()
        results = run_months(jobs, store, access_for(cfg), progress, threads)
        if jobs:
            tracker.finish(
                f"{len(months) - len(jobs)} already done, {sum(len(sc) for sc in months.values())} scenes"
            )
        failed = [
            Failure(
                key=f"{r.month:02d}",
                error=r.error,
                what=f"{r.tile} {r.year}-{r.month:02d}",
                targets=(layout.composite_tif(r.tile, r.year, r.month),),
            )
            for r in results
            if r.status == "failed"
        ]
        summary.record_composites(self.tile, self.year, plan, results, skipped=len(months) - len(jobs))
        context = {"tile": self.tile, "year": self.year}
        write_record(
            store, layout.failure_record(self.tile, self.year), FailureRecord(failed=failed, context=context)
        )
        write_unusable(store, layout.unusable_record(self.tile, self.year), plan.unusable)
        if failed or plan.unusable:
            raise FailuresRecorded(
                f"{self.tile} {self.year}: {len(failed)} month(s) failed, {len(plan.unusable)} unusable item(s). "
                "Everything else is written; rerun the same command to retry only what failed."
            )
        manifest = {
            "tile": self.tile, "year": self.year, "grid": plan.grid.to_json() if plan.grid else None,
            "months": {str(m): {"scenes": [s.id for s in sc], "digest": scenes_digest(sc)} for m, sc in months.items()},
        }  # fmt: skip
        self.output().write_text(jdump(manifest))


def _read_json(store: Store, rel: str) -> Any:
    try:
        return json.loads(store.read_text(rel))
    except FileNotFoundError:
        return None


def _month_of_name(name: str) -> int | None:
    stem = name[:-4] if name.endswith(".tif") else ""
    try:
        return int(stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _month_digest(store: Store, tile: str, year: int, month: int, manifest: dict[str, Any]) -> str:
    """The scenes digest a month's COG was made from: from the manifest, else its own tag."""
    entry = (manifest.get("months") or {}).get(str(month))
    if entry:
        return str(entry["digest"])
    from pipeline.hls.engine import open_output_raster

    try:
        with open_output_raster(store, layout.composite_tif(tile, year, month)) as ds:
            return str(ds.tags().get("HLS_SCENES_DIGEST", ""))
    except Exception:  # unreadable: rebuild it
        return ""


class HlsComposites(luigi.WrapperTask):
    """Monthly median composites of every tile-year asked for.

    luigi --module pipeline.hls HlsComposites --tiles TILES.csv --catalog CATALOG
          --project-dir DIR_OR_URL --local-scheduler
    (or --bbox minlon,minlat,maxlon,maxlat --years 2019,2020 instead of --tiles)
    """

    catalog = _HlsTask.catalog
    project_dir = _HlsTask.project_dir
    tiles = luigi.Parameter(default="", description="CSV with header tile,year")
    bbox = luigi.Parameter(
        default="", description="minlon,minlat,maxlon,maxlat (with --years): every MGRS tile meeting it"
    )
    years = luigi.Parameter(default="", description="years for --bbox, e.g. 2019,2020 or 2018-2020")

    def tile_years(self) -> list[TileYear]:
        return selected_tile_years(self.tiles, self.bbox, self.years)

    def requires(self) -> HlsReport:
        tys = self.tile_years()
        summary.record_run("composites", self.project_dir, tile_years=len(tys))
        return HlsReport(
            catalog=self.catalog,
            project_dir=self.project_dir,
            tiles=self.tiles,
            bbox=self.bbox,
            years=self.years,
        )


class HlsReport(_HlsTask):
    """The QA view of the tile-years asked for (``report/hls/index.html``): written after
    their composites, rewritten whenever a run changed one of them."""

    tiles = HlsComposites.tiles
    bbox = HlsComposites.bbox
    years = HlsComposites.years

    def requires(self) -> list[HlsComposite]:
        tys = selected_tile_years(self.tiles, self.bbox, self.years)
        return [HlsComposite(**self.common(), tile=t.tile, year=t.year) for t in tys]

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, layout.report_index())

    def is_complete(self) -> bool:
        # Luigi does not look below a complete task: the composites too.
        return self.output().exists() and all(r.complete() for r in self.requires())

    def run(self) -> None:
        from pipeline.hls.report import write_report

        self.show_status("writing the QA report")
        write_report(self.store, [(r.tile, r.year) for r in self.requires()])


def selected_tile_years(tiles: str, bbox: str, years: str) -> list[TileYear]:
    if tiles and (bbox or years):
        raise InputError("give either --tiles or --bbox with --years, not both", field="tiles")
    if tiles:
        return read_tiles_file(tiles)
    if not (bbox and years):
        raise InputError(
            "give --tiles TILES.csv, or --bbox minlon,minlat,maxlon,maxlat with --years", field="tiles"
        )
    box, ys = parse_bbox(bbox), parse_years(years)
    return [TileYear(t, y) for t in tiles_in_bbox(box) for y in ys]


class _PointsTask(_HlsTask):
    points = luigi.Parameter(description="CSV with header id,lat,lon,year (WGS84; extra columns kept)")
    chip_size = luigi.IntParameter(default=32, description="chip width and height in pixels")

    @cached_property
    def all_points(self) -> list[Point]:
        return _points(self.points)

    def points_common(self) -> dict[str, Any]:
        return {**self.common(), "points": self.points, "chip_size": self.chip_size}

    @property
    def fingerprint(self) -> str:
        return points_fingerprint(self.all_points, self.chip_size)


_points_cache: dict[str, list[Point]] = {}


def _points(path: str) -> list[Point]:
    if path not in _points_cache:
        _points_cache[path] = read_points_file(path)
    return _points_cache[path]


def candidate_tiles(point: Point, chip_size: int) -> list[str]:
    """The tiles that could hold the point's chip: its own, and those of any square within a
    chip plus 10 km (a 109.8 km tile reaches 9.8 km into its east and south neighbours)."""
    return tiles_near(point.lat, point.lon, chip_size * 30.0 + 10_000)


class HlsPlacement(_PointsTask):
    """Which tile serves each point of a year (its own MGRS tile when the whole chip fits,
    else the first overlapping neighbour by id), from the candidate tiles' searches;
    ``samples/{year}/unplaced.csv`` names the points that fit nowhere, with the reason."""

    year = luigi.IntParameter()

    def year_points(self) -> list[Point]:
        return [p for p in self.all_points if p.year == self.year]

    def requires(self) -> list[HlsSearch]:
        tiles = sorted({t for p in self.year_points() for t in candidate_tiles(p, self.chip_size)})
        return [HlsSearch(**self.common(), tile=t, year=self.year) for t in tiles]

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, layout.placement_state(self.fingerprint, self.year))

    def run(self) -> None:
        plans = {s.tile: s.plan() for s in self.requires()}
        placement = place_points(self.year_points(), plans, self.chip_size)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "reason"])
        unplaced = [(pid, d["reason"]) for pid, d in placement.items() if d["tile"] is None]
        w.writerows(unplaced)
        self.store.write_text(layout.unplaced_csv(self.year), buf.getvalue())
        summary.record_unplaced(self.year, unplaced)
        self.output().write_text(jdump(placement))


class HlsSampleTile(_PointsTask):
    """The samples of the points placed in one tile-year: the Zarr store, then the centre
    table (the completion marker)."""

    year = luigi.IntParameter()
    tile = luigi.Parameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "composite": HlsComposite(**self.common(), tile=self.tile, year=self.year),
            "placement": HlsPlacement(**self.points_common(), year=self.year),
        }

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, layout.samples_centre(self.year, self.tile))

    def is_complete(self) -> bool:
        return self.output().exists() and self.store.exists(
            f"{layout.samples_zarr(self.year, self.tile)}/.zmetadata"
        )

    def run(self) -> None:
        placement = json.loads(self.input()["placement"].read_text())
        manifest = json.loads(self.input()["composite"].read_text())
        points = [p for p in self.all_points if p.year == self.year and placement[p.id]["tile"] == self.tile]
        months = sorted(int(m) for m in manifest["months"])
        self.show_status(f"cutting {len(points)} chips x {len(months)} months")
        sample_tile(self.store, self.tile, self.year, months, points, placement, self.chip_size)
        summary.record_samples(self.tile, self.year, len(points), len(months))


class HlsSamples(_PointsTask):
    """Training samples for every point: chips and centre pixels of its year's composites.

    luigi --module pipeline.hls HlsSamples --points POINTS.csv --catalog CATALOG
          --project-dir DIR_OR_URL [--chip-size 32] --local-scheduler
    """

    def years(self) -> list[int]:
        return sorted({p.year for p in self.all_points})

    def requires(self) -> list[HlsPlacement]:
        summary.record_run("samples", self.project_dir, points=len(self.all_points))
        return [HlsPlacement(**self.points_common(), year=y) for y in self.years()]

    def tile_tasks(self) -> list[HlsSampleTile]:
        tasks = []
        for placement in self.requires():
            doc = json.loads(placement.output().read_text())
            for tile in sorted({d["tile"] for d in doc.values() if d["tile"]}):
                tasks.append(HlsSampleTile(**self.points_common(), year=placement.year, tile=tile))
        return tasks

    def is_complete(self) -> bool:
        return all(r.complete() for r in self.requires()) and all(t.complete() for t in self.tile_tasks())

    def run(self) -> Any:
        yield self.tile_tasks()


class HlsDryRun(DryRunTask):
    """Before the bill: per tile-year, the items found, unusable items, months, COGs done and
    to do, the files, bytes and requests the run will read. Searches (kept) and lists the
    outputs; reads no pixel and writes no output."""

    catalog = _HlsTask.catalog
    project_dir = _HlsTask.project_dir
    tiles = HlsComposites.tiles
    bbox = HlsComposites.bbox
    years = HlsComposites.years

    def requires(self) -> list[HlsSearch]:
        tys = selected_tile_years(self.tiles, self.bbox, self.years)
        return [
            HlsSearch(catalog=self.catalog, project_dir=self.project_dir, tile=t.tile, year=t.year)
            for t in tys
        ]

    dry_run_name = "hls-dry-run"

    def estimate(self) -> str:
        from pipeline.hls.estimate import estimate_tile_year, format_estimates

        store = store_for(self.project_dir)
        rows = [estimate_tile_year(s.plan(), store) for s in self.requires()]
        return format_estimates(rows, store.url)


__all__ = [
    "HlsComposite",
    "HlsComposites",
    "HlsDryRun",
    "HlsPlacement",
    "HlsReport",
    "HlsSampleTile",
    "HlsSamples",
    "HlsSearch",
]
