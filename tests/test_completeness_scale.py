"""Completeness at scale (issue 4): a finished project is recognised from a recorded
snapshot of directory stats without listings, a single deleted output is still found; on
S3 a check costs the four listings per plot and no per-plot HEAD; the ingest files are
written in bounded memory and byte for byte as before; stale temporaries are removed; the
fill results of a plot with a failed observation are recorded.

The projects here are synthetic and finished (empty chip files, real series rows), made by
the planning benchmark's own generators (``scripts/bench_planning.py``): no raster is read.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.timesync import layout
from pipeline.timesync.engine import Project, RunOptions, parse_csv_rows
from pipeline.timesync.extract import ObservationResult
from pipeline.timesync.recipe import SPECTRAL_COLUMNS
from scripts.bench_planning import (
    DEFAULT_TILES,
    _create_chunk,
    acquisition_dates,
    make_catalogue,
    make_plots,
    sensor_of,
)
from targets.s3config import S3Options
from targets.store import TEMP_MARK, Store
from tests.helpers import luigi_env, run_luigi

HOUR_AGO_NS = time.time_ns() - 3600 * 10**9


@dataclass
class Finished:
    """A synthetic finished project on local disk."""

    base: Path  # the catalogue and plot file
    plots: list[tuple[str, str, int, int, str]]  # project_id, plot_id, x, y, hv
    keys: list[str]
    project_dir: Path

    def options(self, project_dir: str | None = None) -> RunOptions:
        return RunOptions(plot_file=str(self.base / "plots.csv"), project_dir=project_dir or str(self.project_dir),
                          catalog=str(self.base / "catalog.ndjson"), asset_href="href")  # fmt: skip

    def project(self, store: Store | None = None, project_dir: str | None = None) -> Project:
        opts = self.options(project_dir)
        return Project(opts, store=store or Store(opts.project_dir), access=None)  # type: ignore[arg-type]


def make_finished(base: Path, n: int, m: int, *, tiles: int = 2, projects: int = 1) -> Finished:
    """N plots x M observations, every output present, the searches as the pipeline keeps
    them, the ingest files and manifest; every directory dated an hour ago (settled)."""
    base.mkdir(parents=True, exist_ok=True)
    tile_list = list(DEFAULT_TILES[:tiles])
    dates = acquisition_dates(m)
    _, dt_texts = make_catalogue(base / "catalog.ndjson", dates, tile_list)
    plots = make_plots(base / "plots.csv", n, tile_list, projects)
    keys = [layout.obs_key(d.year, d.timetuple().tm_yday) for d in dates]
    fin = Finished(base, plots, keys, base / "project")
    project = fin.project()
    for tile in sorted({t for p in project.plots for t in project.tiles_of(p)}):
        project.store.write_text(
            project.search_rel(tile), json.dumps(project.run_search(tile), separators=(",", ":")) + "\n"
        )
    for pid in sorted({p[0] for p in plots}):
        for sub in ("", "series", "tc", "b743", "b432"):
            (fin.project_dir / f"prj_{pid}" / sub).mkdir(parents=True, exist_ok=True)
    rows_meta = [
        (sensor_of(d), str(d.year), str(d.timetuple().tm_yday), dt)
        for d, dt in zip(dates, dt_texts, strict=True)
    ]
    _create_chunk((str(fin.project_dir), [(p, q, hv) for p, q, _, _, hv in plots], keys, rows_meta, True))
    for pid in project.project_ids():
        project.write_ingest(pid)
    age_everything(fin.project_dir)
    return fin


def age_everything(root: Path) -> None:
    """Date every directory an hour back: a project finished long ago (directory stats are
    what completeness snapshots compare)."""
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        os.utime(dirpath, ns=(HOUR_AGO_NS, HOUR_AGO_NS))


class ListingCounter:
    """Counts the local listings a Project makes (Store.names_in, list_names, iter_names)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        for name in ("names_in", "list_names", "iter_names"):
            original = getattr(Store, name)

            def counted(
                store: Store, rel_dir: str, *args: Any, _name: str = name, _original: Any = original
            ) -> Any:
                self.calls[rel_dir] += 1
                return _original(store, rel_dir, *args)

            monkeypatch.setattr(Store, name, counted)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@pytest.fixture(autouse=True)
def snapshot_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own completeness-snapshot cache (luigi subprocesses inherit it)."""
    cache = tmp_path / "snapshot-cache"
    monkeypatch.setenv("EO_EXTRACT_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    return make_finished(tmp_path_factory.mktemp("finished"), 40, 30)


@pytest.fixture
def copy_of(finished: Finished, tmp_path: Path):
    """A fresh copy of the finished project (new inodes, dates kept an hour back)."""
    import shutil

    def make() -> Finished:
        dest = tmp_path / "copy"
        shutil.copytree(finished.project_dir, dest, symlinks=True)
        age_everything(dest)
        return Finished(finished.base, finished.plots, finished.keys, dest)

    return make


# --------------------------------------------------------------------------- local snapshots
def test_finished_project_is_recognised_without_listings_after_one_check(copy_of, monkeypatch):
    fin = copy_of()
    first = fin.project()
    plots = first.plots_of("1001")
    counter = ListingCounter(monkeypatch)
    assert first.plots_complete(plots)
    assert counter.total == 1 + 3 * len(plots)  # the flat CSV directory once, 3 chip dirs per plot
    assert first.save_snapshot("1001") == len(plots)
    assert Path(first.snapshot_store.path(layout.completeness_snapshot("1001"))).is_file()
    assert not list(fin.project_dir.rglob("*completeness*"))  # the project's own files are untouched

    counter.calls.clear()
    again = fin.project()  # a new run: nothing known in memory
    assert again.plots_complete(plots)
    assert counter.total == 0
    assert again.save_snapshot("1001") == 0  # nothing new: nothing written


@pytest.mark.parametrize("victim", ["png", "csv", "series"])
def test_one_deleted_output_of_a_snapshotted_project_is_found(copy_of, monkeypatch, victim):
    fin = copy_of()
    p = fin.project()
    assert p.plots_complete(p.plots_of("1001"))
    p.save_snapshot("1001")
    age_everything(fin.project_dir)  # the snapshot file too: as if written long ago

    plot = p.plots_of("1001")[17]
    key = fin.keys[len(fin.keys) // 2]
    rel = {
        "png": layout.chip_png("b743", "1001", plot.plot_id, key),
        "csv": layout.obs_csv("1001", plot.plot_id, key),
        "series": layout.series_csv("1001", plot.plot_id),
    }[victim]
    os.unlink(fin.project_dir / rel)

    rerun = fin.project()
    counter = ListingCounter(monkeypatch)
    assert not rerun.plots_complete(rerun.plots_of("1001"))
    status = rerun.plot_status(plot)
    assert not status.complete
    if victim == "series":
        assert status.missing == [] and not status.series_exists
    else:
        assert [o.key for o in status.missing] == [key]
    # every other plot answered from the snapshot: none of their chip directories listed
    chip_dirs = [d for d in counter.calls if "/tc/" in d or "/b743/" in d or "/b432/" in d]
    if victim == "csv":  # the flat CSV directory changed: plots before the victim re-listed
        assert all(f"plot_{q.plot_id}" in " ".join(chip_dirs) for q in rerun.plots_of("1001")[:17])
    else:
        assert {d.rsplit("plot_", 1)[1] for d in chip_dirs} == {plot.plot_id}


def test_report_and_dry_run_status_comes_from_the_snapshot(copy_of, monkeypatch):
    """Project.status_of (what the report and the dry run use) lists no plot whose snapshot
    entry matches, and lists, and finds the gap in, the one plot that changed."""
    fin = copy_of()
    p = fin.project()
    plots = p.plots_of("1001")
    assert p.plots_complete(plots)
    p.save_snapshot("1001")
    age_everything(fin.project_dir)
    victim = plots[5]
    key = fin.keys[3]
    os.unlink(fin.project_dir / layout.chip_png("tc", "1001", victim.plot_id, key))

    rerun = fin.project()
    counter = ListingCounter(monkeypatch)
    statuses = {q.plot_id: rerun.status_of(q) for q in plots}
    chip_dirs = {d for d in counter.calls if "/tc/" in d or "/b743/" in d or "/b432/" in d}
    assert {d.rsplit("plot_", 1)[1] for d in chip_dirs} == {victim.plot_id}  # only the changed plot listed
    assert [o.key for o in statuses[victim.plot_id].missing] == [key]
    for q in plots:
        if q is not victim:
            listed = rerun.plot_status(q)  # the listing agrees with the snapshot's answer
            assert statuses[q.plot_id].complete and listed.complete
            assert statuses[q.plot_id].observations == listed.observations
            assert statuses[q.plot_id].fill_keys == rerun.fill_keys(q)


def test_fresh_directories_are_not_trusted(copy_of):
    fin = copy_of()
    p = fin.project()
    plot = p.plots_of("1001")[3]
    chip_dir = fin.project_dir / layout.chip_dir("tc", "1001", plot.plot_id)
    (chip_dir / "unrelated.txt").write_text("x")  # the directory changed just now
    assert p.plots_complete(p.plots_of("1001"))
    p.save_snapshot("1001")
    recorded = p.snapshot("1001")
    assert plot.plot_id not in recorded  # its stat may still change within the same tick
    assert len(recorded) == len(p.plots_of("1001")) - 1


def test_a_changed_plan_or_fill_record_voids_the_snapshot(copy_of, monkeypatch):
    fin = copy_of()
    p = fin.project()
    plots = p.plots_of("1001")
    assert p.plots_complete(plots)
    p.save_snapshot("1001")
    plot = plots[5]
    fill = fin.project_dir / layout.fill_record("1001", plot.plot_id)
    fill.parent.mkdir(parents=True, exist_ok=True)
    fill.write_text(json.dumps({"fill": []}) + "\n")
    rerun = fin.project()
    counter = ListingCounter(monkeypatch)
    assert rerun.plots_complete(plots)
    assert {d for d in counter.calls if d.endswith(f"plot_{plot.plot_id}")} == {
        layout.chip_dir(k, "1001", plot.plot_id) for k in layout.COMPOSITE_DIRS
    }

    counter.calls.clear()
    other = fin.project()
    monkeypatch.setattr(Project, "plan_digest", lambda self, plot: "another-search")
    assert other.plots_complete(plots)
    assert counter.total == 1 + 3 * len(plots)  # nothing matched: everything listed again


def test_luigi_rerun_of_a_finished_project_answers_from_the_snapshot_and_writes_nothing(copy_of, tmp_path):
    """The command line: the run that first finds the project complete records the
    snapshot; the next one answers from it and writes nothing at all."""
    fin = copy_of()
    for pid in ("1001",):
        marker = fin.project_dir / "report" / f"prj_{pid}" / "index.html"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("<!doctype html><title>marker</title>\n")
    args = ["TimeSyncProject", "--plot-file", str(fin.base / "plots.csv"), "--project-dir", str(fin.project_dir),
            "--catalog", str(fin.base / "catalog.ndjson"), "--asset-href", "href", "--local-scheduler"]  # fmt: skip
    first = run_luigi(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Nothing to do" in first.stderr
    snapshot_file = Path(fin.project().snapshot_store.path(layout.completeness_snapshot("1001")))
    assert len(json.loads(snapshot_file.read_text())["plots"]) == len(fin.plots)
    before = {p: p.stat().st_mtime_ns for p in fin.project_dir.rglob("*")}
    snapshot_mtime = snapshot_file.stat().st_mtime_ns
    second = run_luigi(args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Nothing to do" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in fin.project_dir.rglob("*")} == before
    assert snapshot_file.stat().st_mtime_ns == snapshot_mtime  # all as recorded: not rewritten


def test_completeness_of_many_plots_costs_stats_not_listings(tmp_path, monkeypatch):
    """400 plots x 100 observations (160,400 files): the second check lists nothing and
    makes five stats per plot."""
    fin = make_finished(tmp_path / "big", 400, 100, tiles=4)
    p = fin.project()
    plots = p.plots_of("1001")
    t0 = time.process_time()
    assert p.plots_complete(plots)
    listed = time.process_time() - t0
    p.save_snapshot("1001")
    rerun = fin.project()
    for plot in plots:
        rerun.observations(plot)  # planning is not what is measured
    counter = ListingCounter(monkeypatch)
    stats = Counter[str]()
    original = Store.stat
    monkeypatch.setattr(Store, "stat", lambda store, rel: (stats.update(["stat"]), original(store, rel))[1])
    t0 = time.process_time()
    assert rerun.plots_complete(plots)
    from_snapshot = time.process_time() - t0
    assert counter.total == 0
    assert (
        stats["stat"] == 5 * len(plots) + 2
    )  # per plot 3 chip dirs, series, fill; the CSV dir and the snapshot file once
    assert from_snapshot < listed / 5, (from_snapshot, listed)


# --------------------------------------------------------------------------- temporaries
def test_stale_temporaries_are_removed_when_listed_young_ones_kept(copy_of):
    fin = copy_of()
    p = fin.project()
    plot = p.plots_of("1001")[0]
    chip_dir = fin.project_dir / layout.chip_dir("tc", "1001", plot.plot_id)
    stale = chip_dir / f".plot_{plot.plot_id}_{fin.keys[0]}.png{TEMP_MARK}123-deadbeef"
    young = chip_dir / f".plot_{plot.plot_id}_{fin.keys[1]}.png{TEMP_MARK}456-cafecafe"
    stale.write_bytes(b"half")
    young.write_bytes(b"half")
    os.utime(stale, ns=(HOUR_AGO_NS - 10**9, HOUR_AGO_NS - 10**9))
    os.utime(chip_dir, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    assert p.plot_status(plot).complete
    assert not stale.exists() and young.exists()  # the young one may be a live writer's
    p.save_snapshot("1001")
    assert plot.plot_id not in p.snapshot("1001")  # so its directory is listed again later

    series_tmp = fin.project_dir / f"prj_1001/series/.plot_x_series.csv{TEMP_MARK}1-00000000"
    series_tmp.write_bytes(b"")
    os.utime(series_tmp, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    p.record_completeness("1001")  # the end of a run sweeps the directories never listed
    assert not series_tmp.exists()


# --------------------------------------------------------------------------- fill of failed plots
def test_fill_of_a_plot_with_a_failed_observation_is_recorded(copy_of, monkeypatch):
    fin = copy_of()
    p = fin.project()
    plot = p.plots_of("1001")[2]
    fill_key, failed_key, written_key = fin.keys[3], fin.keys[4], fin.keys[5]
    for key in (fill_key, failed_key, written_key):
        for rel in layout.obs_files("1001", plot.plot_id, key):
            os.unlink(fin.project_dir / rel)
    seen: list[list[str]] = []

    def fake_execute(jobs, *, jobs_per_task, progress=None):
        seen.append(sorted(j.obs.key for j in jobs))
        results = []
        for j in jobs:
            status = {fill_key: "fill", failed_key: "failed"}.get(j.obs.key, "written")
            if status == "written":
                for rel in layout.obs_files(j.project_id, j.plot_id, j.obs.key):
                    (fin.project_dir / rel).touch()
            results.append(
                ObservationResult(
                    j.project_id, j.plot_id, j.obs.key, status, None, "boom" if status == "failed" else ""
                )
            )
        return results

    monkeypatch.setattr(p, "execute", fake_execute)
    outcome = p.process([plot], jobs_per_task=24)
    assert outcome.plots_failed == 1 and outcome.fill == 1
    assert p.fill_keys(plot) == {fill_key}
    assert [f["key"] for f in p.failures(plot)] == [failed_key]
    p.process([plot], jobs_per_task=24)  # the rerun: only the failed observation again
    assert seen == [sorted([fill_key, failed_key, written_key]), [failed_key]]


# --------------------------------------------------------------------------- ingest
def old_write_ingest_texts(project: Project, project_id: str) -> dict[str, str]:
    """The ingest files as the previous, all-in-memory implementation made them."""
    by_year: dict[int, list[list[str]]] = {}
    year_col, doy_col, plot_col = (SPECTRAL_COLUMNS.index(c) for c in ("year", "doy", "plot_id"))
    for plot in project.plots_of(project_id):
        for row in parse_csv_rows(project.store.read_text(layout.series_csv(plot.project_id, plot.plot_id))):
            by_year.setdefault(int(row[year_col]), []).append(row)
    out = {}
    for year in sorted(by_year):
        rows = sorted(by_year[year], key=lambda r: (r[plot_col], int(r[doy_col])))
        out[layout.ingest_csv(project_id, year)] = "".join(",".join([project_id, *r]) + "\n" for r in rows)
    return out


def test_ingest_is_byte_identical_and_streams(tmp_path):
    fin = make_finished(tmp_path / "p", 120, 200, tiles=4, projects=2)
    p = fin.project()
    # one series out of date order: the year files must still come out sorted
    victim = p.store.path(layout.series_csv("1001", p.plots_of("1001")[0].plot_id))
    lines = Path(victim).read_text().splitlines(keepends=True)
    Path(victim).write_text(lines[0] + "".join(reversed(lines[1:])))
    for project_id in p.project_ids():
        tracemalloc.start()
        expected = old_write_ingest_texts(p, project_id)
        _, old_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        for rel in expected:
            p.store.delete(rel)
        tracemalloc.start()
        files = p.write_ingest(project_id)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert files == list(expected)
        assert {rel: p.store.read_text(rel) for rel in files} == expected
        # a year's rows and a few series texts, not every row of the project
        year_bytes = max(len(text) for text in expected.values())
        assert peak < old_peak / 5 and peak < 6 * year_bytes + 500_000, (peak, old_peak, year_bytes)
        assert p.ingest_complete(project_id)
        mtimes = {rel: os.stat(p.store.path(rel)).st_mtime_ns for rel in files}
        p.write_ingest(project_id)  # identical files are not rewritten
        assert {rel: os.stat(p.store.path(rel)).st_mtime_ns for rel in files} == mtimes
    assert not list(tmp_path.glob("**/ingest-spool-*"))


# --------------------------------------------------------------------------- S3: requests
S3_BUCKET = "completeness-scale"


@pytest.fixture(scope="module")
def finished_on_s3(s3_server, tmp_path_factory):
    """A finished 30-plot x 20-observation project uploaded to the S3 server (straight to
    the gateway, uncounted)."""
    import boto3
    from botocore.config import Config

    fin = make_finished(tmp_path_factory.mktemp("s3fin"), 30, 20, tiles=2)
    marker = fin.project_dir / "report" / "prj_1001" / "index.html"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("<!doctype html><title>marker</title>\n")
    s3_server.create_bucket(S3_BUCKET)
    client = boto3.client("s3", endpoint_url=s3_server.direct_endpoint_url or s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name=s3_server.region, config=Config(s3={"addressing_style": "path"}))  # fmt: skip
    files = [f for f in fin.project_dir.rglob("*") if f.is_file()]
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda f: client.put_object(
                    Bucket=S3_BUCKET,
                    Key=f"prj/{f.relative_to(fin.project_dir).as_posix()}",
                    Body=f.read_bytes(),
                ),
                files,
            )
        )
    return fin, s3_server


def s3_store(server) -> Store:
    return Store(f"s3://{S3_BUCKET}/prj", S3Options(endpoint_url=server.endpoint_url, region=server.region))


@pytest.mark.s3
def test_s3_completeness_lists_four_prefixes_per_plot_and_heads_nothing(finished_on_s3, monkeypatch):
    fin, server = finished_on_s3
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    store = s3_store(server)
    p = fin.project(store=store, project_dir=store.url)
    plots = p.plots_of("1001")
    tiles = {t for q in plots for t in p.tiles_of(q)}
    server.reset_counts()
    assert p.plots_complete(plots)
    counts = server.request_counts(S3_BUCKET)
    heads = [r.target for r in server.requests() if r.kind == "HEAD"]
    assert counts.get("LIST", 0) == 4 * len(plots) + 1  # 4 prefixes per plot + the series names once
    assert counts.get("HEAD", 0) == 0, heads
    assert counts.get("GET", 0) == len(tiles)  # the search states
    assert sum(counts.values()) == counts.get("LIST", 0) + counts.get("GET", 0)

    # one output gone: found
    victim = f"prj/{layout.chip_png('tc', '1001', plots[7].plot_id, fin.keys[4])}"
    body = server.client().get_object(Bucket=S3_BUCKET, Key=victim)["Body"].read()
    server.client().delete_object(Bucket=S3_BUCKET, Key=victim)
    try:
        assert not fin.project(store=s3_store(server), project_dir=store.url).plots_complete(plots)
    finally:
        server.client().put_object(Bucket=S3_BUCKET, Key=victim, Body=body)


@pytest.mark.s3
@pytest.mark.slow
def test_s3_luigi_rerun_of_a_finished_project_counts(finished_on_s3, tmp_path):
    """The command line on the finished S3 project: 4 LIST per plot, HEADs and GETs a
    handful per run (searches, manifest, report marker), none per plot."""
    fin, server = finished_on_s3
    env = luigi_env(
        {
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    args = ["TimeSyncProject", "--plot-file", str(fin.base / "plots.csv"), "--project-dir", f"s3://{S3_BUCKET}/prj",
            "--catalog", str(fin.base / "catalog.ndjson"), "--asset-href", "href", "--local-scheduler",
            "--output-endpoint-url", server.endpoint_url, "--output-region", server.region]  # fmt: skip
    server.reset_counts()
    proc = run_luigi(args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to do" in proc.stderr
    counts = server.request_counts(S3_BUCKET)
    n = len(fin.plots)
    assert 4 * n <= counts.get("LIST", 0) <= 4 * n + 5, counts
    assert counts.get("HEAD", 0) <= 8, counts
    assert counts.get("GET", 0) <= 8, counts
    assert counts.get("PUT", 0) == 0 and counts.get("DELETE", 0) == 0, counts


@pytest.mark.s3
def test_s3_listing_pages_like_s3fs(s3_server, monkeypatch):
    """The listing behind completeness (presigned ListObjectsV2, keys read with a regex)
    pages past 1,000 keys, leaves out deeper keys and dot-names, and costs one LIST per
    page."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.create_bucket(S3_BUCKET)
    client = s3_server.client()
    names = [f"plot_a_{i:05d}.png" for i in range(1050)] + [
        "plot_b_00001.png",
        ".plot_a_1.png.tmp-1-2",
        "plot_a_x&y.png",
    ]
    keys = [f"paged/dir/{n}" for n in names] + ["paged/dir/plot_a_sub/deeper.png"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=S3_BUCKET, Key=k, Body=b""), keys))
    store = Store(
        f"s3://{S3_BUCKET}/paged", S3Options(endpoint_url=s3_server.endpoint_url, region=s3_server.region)
    )
    s3_server.reset_counts()
    got = store.list_names("dir", "plot_a_")
    assert s3_server.request_counts(S3_BUCKET).get("LIST") == 2  # 1,051 keys: two pages
    assert got == {n for n in names if n.startswith("plot_a_")}
    assert store.list_names("", "") == set()  # only a "directory" at the root
    assert store.list_names("dir", "nothing") == set()
