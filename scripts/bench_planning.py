#!/usr/bin/env python
"""Planning and completeness at scale: is a FINISHED TimeSync project recognised as
finished quickly, with few scheduled tasks, few S3 requests and bounded memory?

    .venv/bin/python scripts/bench_planning.py                 # 2,000 plots x 500 observations (4M files) + S3 + RSS run
    .venv/bin/python scripts/bench_planning.py --quick         # 200 x 100 local, 50 x 50 on S3, RSS run skipped (smoke test)
    .venv/bin/python scripts/bench_planning.py --full          # adds 10,000 x 1,000 (40M files) if inodes and disk allow

The issue it answers: "Luigi's local scheduler with one worker took 4.6 s for 1,000
trivial tasks and 118 s for 5,000. A project of 10,000 plots x 1,500 observations must
therefore never become millions of scheduled tasks. Show: planning/completeness of a
finished 10,000-plot x 1,000-observation project on local disk in < 30 s, and on S3 with
one listing per plot prefix (count the requests); peak RSS of any worker < 1 GiB for a
1,000-plot run."

What it does (everything under ``--workdir``, removed at the end unless ``--keep``):

1. Synthesises finished projects without rasters. A catalogue file (NDJSON STAC items
   shaped like ``pipeline/demo/archive.py``'s: ``landsat-c2ard-sr``, datetime, grid
   h/v/region, ``proj:transform``/``proj:shape``, assets blue..qa_pixel with ``href`` and
   ``alternate.s3.href`` that need not exist) holding M acquisitions over ``--tiles`` ARD
   tiles, and a plot file of N plots on a lattice inside those tiles, away from their
   edges, so every chip lies in one tile and every plot has exactly M observations. Then
   every output the completeness check looks at: per plot and observation the CSV and the
   three PNGs (empty files made with ``os.mknod``: completeness never reads them) at the
   paths of ``pipeline/timesync/layout.py``; per plot the series CSV (real rows, so the
   ingest step has the real volume); the catalogue searches as the pipeline writes them
   (``Project.run_search`` per tile); the ingest files and manifest
   (``Project.write_ingest``, run in a child process whose peak RSS is measured); the
   report marker ``report/prj_{id}/index.html``. File creation runs in ``--create-procs``
   processes and its rate is reported.
2. Local disk: ``luigi --module pipeline.timesync TimeSyncProject ... --asset-href href
   --local-scheduler`` on each finished project (smallest first: N/4 x M/4, N/4 x M, N x M,
   so the scaling can be seen, after a 25 x 10 baseline that gives the fixed cost of a
   run). The first run of each size finds the project complete from listings and records
   the completeness snapshot (directory stats, in ``EO_EXTRACT_CACHE``, set to
   ``--workdir``/snapshot-cache and emptied before each size); the following runs answer
   from the snapshot. Both are reported and extrapolated separately: wall time, CPU time, peak RSS (exact: wait4 through a small trampoline process,
   see TRAMPOLINE), tasks Luigi scheduled (its execution summary) and the pipeline's
   "Nothing to do" line. The largest size is run again under cProfile to show where the
   time goes, and three ways of answering "is every plot complete?" are timed in-process
   on it (the pipeline's listings; os.listdir with C-level set checks; one stat per
   directory, as a recorded mtime snapshot would need). The times are extrapolated to
   10,000 x 1,000 (unless ``--full`` ran it), and the report says so.
3. S3: a smaller finished project (``--s3-plots`` x ``--s3-observations``) is synthesised
   locally, uploaded to a SeaweedFS server (``tests/servers/s3.py``; 127.0.0.1 only) with a
   thread pool of boto3 ``put_object`` calls (empty bodies for the empty outputs; straight
   to the gateway, not through the counting proxy; the rate is reported), then the same
   complete run with ``--project-dir s3://...`` and ``--output-endpoint-url`` the counting
   proxy; requests are counted at the proxy by method and classified by what they touch.
   The run is repeated under py-spy (s3fs works on an event-loop thread that cProfile does
   not see), and the same listings are made with a plain boto3 client, with botocore's
   default response parsing and with ``LastModified`` left unparsed, to price the parsing.
4. Peak RSS of a real 1,000-plot run: a synthetic archive with real COGs
   (``ArchiveSpec(n_extra_plots=...)``, cached under ``.cache/bench-planning``; its build
   time is reported; it is built in a child process), the pipeline run from nothing: the
   exact peak of the largest process of the tree (wait4) and each process's VmHWM sampled
   every 0.2 s (luigi process, Dask nanny and worker processes); then the rerun of the
   finished project. ``--skip-rss`` leaves it out.

Other jobs may be running on the machine: the report gives the load average before and
after each measurement and CPU seconds next to wall seconds. Ratios within one run are
more meaningful than absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile  # noqa: F401  (the profiled run uses ``python -m cProfile``)
import json
import math
import os
import platform
import pstats
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers import without_aws_endpoint  # noqa: E402

LUIGI = str(Path(sys.executable).with_name("luigi"))
REGION = "CU"
DEFAULT_TILES = ((3, 4), (4, 4), (3, 5), (4, 5), (5, 4), (5, 5), (3, 6), (4, 6))
BANDS = ("blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel")
KINDS = ("tc", "b743", "b432")
S3_BUCKET = "bench-planning"
GIB = 2**30


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# =============================================================================================
# 1. Synthetic finished project
# =============================================================================================


def acquisition_dates(m: int) -> list[date]:
    """M distinct days from 1984 on, evenly spread (9-day steps when they fit)."""
    start, end = date(1984, 3, 1), date(2024, 12, 31)
    step = max(1, min(9, (end - start).days // max(m, 1)))
    days = [start + timedelta(days=i * step) for i in range(m)]
    if days and days[-1] > end:
        raise SystemExit(f"{m} observations do not fit between {start} and {end} one per day")
    return days


def sensor_of(d: date) -> str:
    return "LT05" if d.year < 1999 else ("LE07" if d.year < 2013 else "LC08")


def make_catalogue(path: Path, dates: list[date], tiles: list[tuple[int, int]]) -> tuple[int, list[str]]:
    """NDJSON items, one per acquisition and tile; returns (items, datetime strings by date)."""
    from pipeline.grid import TILE_SIZE, get_region

    region = get_region(REGION)
    dt_texts = []
    n = 0
    with open(path, "w") as f:
        for i, d in enumerate(dates):
            sensor = sensor_of(d)
            dt = f"{d.isoformat()}T18:{i % 60:02d}:{(7 * i) % 60:02d}.{(i * 7919) % 1000000:06d}Z"
            dt_texts.append(dt)
            for h, v in tiles:
                ulx, uly = region.x0 + h * TILE_SIZE, region.y0 - v * TILE_SIZE
                item_id = f"{sensor}_{REGION}_{h:03d}{v:03d}_{d:%Y%m%d}_20210501_02_SR"
                key = f"collection02/oli-tirs/{d.year}/{REGION}/{h:03d}/{v:03d}/{item_id}"
                assets = {
                    b: {
                        "href": f"/nonexistent/usgs-landsat-ard/{key}/{item_id}_{b.upper()}.TIF",
                        "type": "image/vnd.stac.geotiff; cloud-optimized=true",
                        "alternate": {
                            "s3": {
                                "storage:platform": "AWS",
                                "storage:requester_pays": True,
                                "href": f"s3://usgs-landsat-ard/{key}/{item_id}_{b.upper()}.TIF",
                            }
                        },
                    }
                    for b in BANDS
                }
                item = {
                    "type": "Feature",
                    "stac_version": "1.0.0",
                    "id": item_id,
                    "collection": "landsat-c2ard-sr",
                    "bbox": [0, 0, 0, 0],
                    "geometry": None,
                    "properties": {
                        "datetime": dt,
                        "landsat:grid_horizontal": f"{h:02d}",
                        "landsat:grid_vertical": f"{v:02d}",
                        "landsat:grid_region": REGION,
                        "landsat:fill": 10.0,
                        "proj:shape": [5000, 5000],
                        "proj:transform": [30, 0, ulx, 0, -30, uly],
                    },
                    "assets": assets,
                }
                f.write(json.dumps(item, separators=(",", ":")) + "\n")
                n += 1
    return n, dt_texts


def make_plots(
    path: Path, n: int, tiles: list[tuple[int, int]], projects: int
) -> list[tuple[str, str, int, int, str]]:
    """N plots on a lattice inside the tiles (chips at least 200 px from every tile edge),
    in ``projects`` contiguous project ids; returns (project_id, plot_id, x, y, hv)."""
    from pipeline.grid import PIXEL_SIZE, TILE_PIXELS, get_region

    region = get_region(REGION)
    per_tile = math.ceil(n / len(tiles))
    k = max(1, math.ceil(math.sqrt(per_tile)))
    margin = 127 + 200
    span = TILE_PIXELS - 2 * margin
    rows = []
    per_project = math.ceil(n / projects)
    for i in range(n):
        t, j = divmod(i, per_tile)
        h, v = tiles[t]
        gx = h * TILE_PIXELS + margin + (j % k) * span // max(k - 1, 1)
        gy = v * TILE_PIXELS + margin + (j // k) * span // max(k - 1, 1)
        x = region.x0 + gx * PIXEL_SIZE + PIXEL_SIZE // 2
        y = region.y0 - gy * PIXEL_SIZE - PIXEL_SIZE // 2
        rows.append((str(1001 + i // per_project), f"{i:05d}", x, y, f"{h:02d}{v:02d}"))
    with open(path, "w") as f:
        f.write("project_id,plot_id,x,y\n")
        f.writelines(f"{p},{q},{x},{y}\n" for p, q, x, y, _ in rows)
    return rows


def _create_chunk(args: tuple) -> tuple[int, int]:
    """Worker: every output file of some plots. Returns (files, bytes of series)."""
    root, plots, keys, rows_meta, series_rows = args
    mode = stat.S_IFREG | 0o644
    files = 0
    nbytes = 0
    prj_fds: dict[str, int] = {}
    try:
        for pid, plot_id, hv in plots:
            prj = os.path.join(root, f"prj_{pid}")
            if pid not in prj_fds:
                prj_fds[pid] = os.open(prj, os.O_RDONLY | os.O_DIRECTORY)
            for kind in KINDS:
                d = os.path.join(prj, kind, f"plot_{plot_id}")
                os.makedirs(d, exist_ok=True)
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    for k in keys:
                        os.mknod(f"plot_{plot_id}_{k}.png", mode, dir_fd=fd)
                finally:
                    os.close(fd)
            fd = prj_fds[pid]
            for k in keys:
                os.mknod(f"{plot_id}_spectral_files_set_{k}.csv", mode, dir_fd=fd)
            files += 4 * len(keys)
            lines = ["sensor,project_id,plot_id,hv,year,doy,blue,green,red,nir,swir1,swir2,qa,date\n"]
            if series_rows:
                for n, (sensor, year, doy, dt) in enumerate(rows_meta):
                    b = 300 + (n * 37 + int(plot_id)) % 900
                    lines.append(
                        f"{sensor},{pid},{plot_id},{hv},{year},{doy},{b},{b + 150},{b + 80},{b + 2400},{b + 1200},{b + 500},1,{dt}\n"
                    )
            text = "".join(lines).encode()
            with open(os.path.join(prj, "series", f"plot_{plot_id}_series.csv"), "wb") as f:
                f.write(text)
            nbytes += len(text)
            files += 1
    finally:
        for fd in prj_fds.values():
            os.close(fd)
    return files, nbytes


def needed_inodes(n: int, m: int) -> int:
    return n * (4 * m + 1 + 3) + 1000  # files + chip dirs + state


def check_space(sizes: list[tuple[int, int]], where: Path, *, keep: bool) -> tuple[bool, str]:
    """Enough free inodes and bytes for the sizes (all at once when kept, else the largest)?"""
    st = os.statvfs(where)
    free_inodes = st.f_favail
    free_bytes = st.f_bavail * st.f_frsize
    per = [needed_inodes(n, m) for n, m in sizes]
    need_i = sum(per) if keep else max(per)
    # bytes: directory blocks (~64 B per entry), series + ingest rows (~90 B each, twice)
    need_b = (
        sum(64 * 4 * n * m + 2 * 90 * n * m for n, m in sizes)
        if keep
        else max(64 * 4 * n * m + 2 * 90 * n * m for n, m in sizes)
    )
    ok = need_i * 1.10 < free_inodes and need_b * 1.5 < free_bytes
    msg = (
        f"needs ~{need_i:,} inodes and ~{need_b / GIB:.1f} GiB; {where} has {free_inodes:,} inodes and "
        f"{free_bytes / GIB:.0f} GiB free"
    )
    return ok, msg


class Synth:
    """One synthetic finished project: paths and what making it cost."""

    def __init__(self, base: Path, n: int, m: int, tiles: list[tuple[int, int]], projects: int) -> None:
        self.base = base
        self.n, self.m, self.tiles, self.projects = n, m, tiles, projects
        self.catalog = base / "catalog.ndjson"
        self.plot_file = base / "plots.csv"
        self.project_dir = base / "project"
        self.marker = base / "synth.json"
        self.info: dict[str, Any] = {}

    @property
    def params(self) -> dict[str, Any]:
        return {"n": self.n, "m": self.m, "tiles": self.tiles, "projects": self.projects}

    def luigi_args(self, project_dir: str | None = None) -> list[str]:
        return [
            "TimeSyncProject",
            "--plot-file",
            str(self.plot_file),
            "--project-dir",
            project_dir or str(self.project_dir),
            "--catalog",
            str(self.catalog),
            "--asset-href",
            "href",
            "--local-scheduler",
        ]

    def build(self, *, procs: int, series_rows: bool = True, reuse: bool = False) -> dict[str, Any]:
        if reuse and self.marker.exists():
            info = json.loads(self.marker.read_text())
            if info.get("params") == json.loads(json.dumps(self.params)):
                log(f"reusing finished project {self.base} ({self.n} x {self.m})")
                self.info = info | {"reused": True}
                return self.info
        if self.base.exists():
            remove_tree(self.base)
        self.base.mkdir(parents=True)
        from pipeline.timesync.engine import Project, RunOptions
        from pipeline.timesync.layout import obs_key
        from targets.store import Store

        info: dict[str, Any] = {"params": self.params}
        t0 = time.perf_counter()
        dates = acquisition_dates(self.m)
        info["items"], dt_texts = make_catalogue(self.catalog, dates, self.tiles)
        plots = make_plots(self.plot_file, self.n, self.tiles, self.projects)
        info["catalogue_s"] = time.perf_counter() - t0

        # the catalogue searches, exactly as TimeSyncSearch.run writes them
        t0 = time.perf_counter()
        opts = RunOptions(
            plot_file=str(self.plot_file),
            project_dir=str(self.project_dir),
            catalog=str(self.catalog),
            asset_href="href",
        )
        project = Project(opts, store=Store(str(self.project_dir)), access=None)  # type: ignore[arg-type]
        tiles = sorted({t for p in project.plots for t in project.tiles_of(p)})
        for tile in tiles:
            doc = project.run_search(tile)
            project.store.write_text(project.search_rel(tile), json.dumps(doc, separators=(",", ":")) + "\n")
        # every plot's chip in one tile, every plot with exactly M observations
        bad = [p for p in project.plots if len(project.tiles_of(p)) != 1]
        if bad:
            raise SystemExit(f"synthetic plot {bad[0]} has a chip on several tiles")
        keys = [obs_key(d.year, d.timetuple().tm_yday) for d in dates]
        for tile in tiles:
            p = next(p for p in project.plots if project.tiles_of(p) == [tile])
            got = [o.key for o in project.observations(p)]
            if got != keys:
                raise SystemExit(
                    f"plot {p.plot_id}: the pipeline plans {len(got)} observations, expected {len(keys)}"
                )
        info["search_s"] = time.perf_counter() - t0

        # the outputs
        for pid in sorted({p[0] for p in plots}):
            for sub in ("", "series", *KINDS):
                (self.project_dir / f"prj_{pid}" / sub).mkdir(parents=True, exist_ok=True)
        rows_meta = [
            (sensor_of(d), str(d.year), str(d.timetuple().tm_yday), dt)
            for d, dt in zip(dates, dt_texts, strict=True)
        ]
        chunk = max(1, min(50, self.n // (procs * 8) or 1))
        work = [
            (
                str(self.project_dir),
                [(p, q, hv) for p, q, _, _, hv in plots[i : i + chunk]],
                keys,
                rows_meta,
                series_rows,
            )
            for i in range(0, len(plots), chunk)
        ]
        t0 = time.perf_counter()
        files = nbytes = 0
        last = t0
        with get_context("fork").Pool(procs) as pool:
            for done, (f, b) in enumerate(pool.imap_unordered(_create_chunk, work), 1):
                files += f
                nbytes += b
                if time.perf_counter() - last > 15:
                    last = time.perf_counter()
                    log(
                        f"  created {files:,} files ({files / (last - t0):,.0f}/s), {done}/{len(work)} chunks"
                    )
        info["create_s"] = time.perf_counter() - t0
        info["files"] = files
        info["series_bytes"] = nbytes
        info["create_rate"] = files / info["create_s"]

        # ingest files + manifest in a child process (its peak RSS is what the ingest task needs)
        t0 = time.perf_counter()
        res = run_measured(
            [sys.executable, __file__, "_ingest", "--base", str(self.base)],
            cwd=self.base,
            label="ingest",
            sample=False,
        )
        if res["rc"] != 0:
            raise SystemExit(f"write_ingest failed:\n{res['tail']}")
        info["ingest"] = {
            "wall_s": res["wall"],
            "cpu_s": res["cpu"],
            "peak_rss": res["maxrss"],
            "rows": self.n * self.m if series_rows else 0,
            **json.loads(res["stdout"].strip().splitlines()[-1]),
        }
        for pid in sorted({p[0] for p in plots}):
            marker = self.project_dir / "report" / f"prj_{pid}" / "index.html"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("<!doctype html><title>synthetic report marker</title>\n")
        info["ingest_and_marker_s"] = time.perf_counter() - t0

        # sanity: the pipeline's own check says complete for a sample of plots
        t0 = time.perf_counter()
        project = Project(opts, store=Store(str(self.project_dir)), access=None)  # type: ignore[arg-type]
        for p in project.plots[:: max(1, len(project.plots) // 5)]:
            st = project.plot_status(p)
            if not st.complete:
                raise SystemExit(
                    f"synthetic plot {p.project_id}/{p.plot_id} is not complete: {len(st.missing)} missing, series {st.series_exists}"
                )
        for pid in project.project_ids():
            if not project.ingest_complete(pid):
                raise SystemExit(f"synthetic project {pid}: ingest not complete")
        info["sanity_s"] = time.perf_counter() - t0
        self.marker.write_text(json.dumps(info, indent=1) + "\n")
        self.info = info
        return info


def measure_batches(synth: Synth, plots_per_task: int = 25, reps: int = 3) -> dict[str, Any]:
    """Unprofiled cost of one ``Project.batches`` call (it sorts all of a project's plots
    by tile, computing each plot's chip tiles) on the synthetic project, in this process."""
    from pipeline.timesync.engine import Project, RunOptions
    from targets.store import Store

    opts = RunOptions(
        plot_file=str(synth.plot_file),
        project_dir=str(synth.project_dir),
        catalog=str(synth.catalog),
        asset_href="href",
    )
    project = Project(opts, store=Store(opts.project_dir), access=None)  # type: ignore[arg-type]
    _ = project.plots
    pids = project.project_ids()
    for pid in pids:  # the first call sorts; the run's other calls reuse it (Project caches batches)
        project.batches(pid, plots_per_task)
    t0 = time.perf_counter()
    for _ in range(reps):
        for pid in pids:
            project.batches(pid, plots_per_task)
    one = (time.perf_counter() - t0) / reps / len(pids)
    per_project = math.ceil(synth.n / len(pids))
    calls = len(pids) * (
        2 * math.ceil(per_project / plots_per_task) + 1
    )  # 2 per batch complete() + Ingest.requires
    return {"n": synth.n, "one_call_s": one, "calls": calls, "total_s": one * calls}


def measure_alternatives(synth: Synth) -> dict[str, Any]:
    """In this process, on the synthetic project, three ways to answer "is every plot
    complete?" (no Luigi): the pipeline's own Project.plot_status; the same listings with
    os.listdir and C-level set checks against the expected names; and what a recorded
    snapshot of directory mtimes would need (one stat per chip directory and series file,
    one of the flat CSV directory). CPU and wall seconds for all plots."""
    from pipeline.timesync import layout
    from pipeline.timesync.engine import Project, RunOptions
    from targets.store import Store

    opts = RunOptions(
        plot_file=str(synth.plot_file),
        project_dir=str(synth.project_dir),
        catalog=str(synth.catalog),
        asset_href="href",
    )

    def fresh() -> Any:
        pr = Project(opts, store=Store(opts.project_dir), access=None)  # type: ignore[arg-type]
        for p in pr.plots:
            pr.observations(p)  # planning is not what is compared here
        return pr

    out: dict[str, Any] = {"n": synth.n, "m": synth.m}

    pr = fresh()
    c0, w0 = time.process_time(), time.perf_counter()
    ok = all(pr.plot_status(p).complete for p in pr.plots)
    out["current"] = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "complete": ok}

    pr = fresh()
    root = synth.project_dir
    c0, w0 = time.process_time(), time.perf_counter()
    ok = True
    index: dict[str, dict[str, list[str]]] = {}
    for p in pr.plots:
        if p.project_id not in index:
            idx: dict[str, list[str]] = {}
            for name in os.listdir(root / layout.project_dir(p.project_id)):
                plot_id, sep, rest = name.partition("_spectral_files_set_")
                if sep:
                    idx.setdefault(plot_id, []).append(rest)
            index[p.project_id] = idx
        keys = [o.key for o in pr.observations(p)]
        ok = ok and set(index[p.project_id].get(p.plot_id, ())).issuperset([k + ".csv" for k in keys])
        for kind in KINDS:
            have = set(os.listdir(root / layout.chip_dir(kind, p.project_id, p.plot_id)))
            ok = ok and have.issuperset([f"plot_{p.plot_id}_{k}.png" for k in keys])
        ok = ok and os.path.isfile(root / layout.series_csv(p.project_id, p.plot_id))
    out["listdir"] = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "complete": ok}

    c0, w0 = time.process_time(), time.perf_counter()
    snap = [os.stat(root / layout.project_dir(pid)).st_mtime_ns for pid in pr.project_ids()]
    for p in pr.plots:
        for kind in KINDS:
            snap.append(os.stat(root / layout.chip_dir(kind, p.project_id, p.plot_id)).st_mtime_ns)
        snap.append(os.stat(root / layout.series_csv(p.project_id, p.plot_id)).st_mtime_ns)
    out["stat"] = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "stats": len(snap)}
    return out


def ingest_child(base: Path) -> int:
    """``_ingest``: Project.write_ingest for each project id of a synthetic project."""
    from pipeline.timesync.engine import Project, RunOptions
    from targets.store import Store

    opts = RunOptions(
        plot_file=str(base / "plots.csv"),
        project_dir=str(base / "project"),
        catalog=str(base / "catalog.ndjson"),
        asset_href="href",
    )
    project = Project(opts, store=Store(opts.project_dir), access=None)  # type: ignore[arg-type]
    _ = project.plots
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    files = 0
    t0 = time.perf_counter()
    for pid in project.project_ids():
        files += len(project.write_ingest(pid))
    secs = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    print(json.dumps({"ingest_files": files, "rss_before": before, "rss_peak": peak, "write_ingest_s": secs}))
    return 0


def remove_tree(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)
    return time.perf_counter() - t0


# =============================================================================================
# Running a command: wall, CPU, exact peak RSS (wait4) and sampled process-tree RSS
# =============================================================================================


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if len(cmdline) > 2 and cmdline[1] == "-c" and "wait4" in cmdline[2]:
        return "trampoline"
    if "spawn_main" in text or "multiprocessing" in text or "forkserver" in text:
        return "dask worker/nanny child"
    if "distributed" in text:
        return "dask"
    if "luigi" in text:
        return "luigi"
    return os.path.basename(cmdline[0]) if cmdline else "?"


class TreeSampler:
    """Every ``interval`` s, for a process and its descendants, from /proc: each process's
    VmHWM (the kernel's high-water mark of its resident set since its exec, so a spike
    between two samples is not missed; only its last < ``interval`` s go unseen) and the
    sum of their current VmRSS."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak: dict[int, int] = {}
        self.role: dict[int, str] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    @staticmethod
    def _children() -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                ppid = int(s[s.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
        return kids

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        kids = self._children()
        todo, tree = [self.pid], []
        while todo:
            p = todo.pop()
            tree.append(p)
            todo.extend(kids.get(p, []))
        total = 0
        for p in tree:
            try:
                with open(f"/proc/{p}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if line.startswith(("VmHWM", "VmRSS")))
                hwm = int(fields["VmHWM"].split()[0]) * 1024
                rss = int(fields["VmRSS"].split()[0]) * 1024
                if p not in self.role:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        self.role[p] = _role([a.decode(errors="replace") for a in f.read().split(b"\0") if a])
            except (OSError, ValueError, KeyError, IndexError):
                continue
            total += rss
            self.peak[p] = max(self.peak.get(p, 0), hwm)
        self.peak_total = max(self.peak_total, total)

    def by_role(self) -> dict[str, tuple[int, int]]:
        """role -> (processes, largest VmHWM of one of them)."""
        out: dict[str, tuple[int, int]] = {}
        for pid, rss in self.peak.items():
            role = self.role.get(pid, "?")
            if role == "trampoline":
                continue
            n, mx = out.get(role, (0, 0))
            out[role] = (n + 1, max(mx, rss))
        return out


# A small process between this one and the measured command. Linux keeps, across exec,
# the high-water RSS of the memory image the exec replaced (the parent's, when spawned
# with vfork as subprocess does), so ru_maxrss of a child of a big benchmark process
# reports the benchmark's own peak. The trampoline is small; what wait4 gives it for the
# command is the exact peak RSS of the largest process of the command's tree (the command
# and every descendant it reaped), plus the tree's CPU seconds.
TRAMPOLINE = """
import json, os, subprocess, sys
out = sys.argv[1]
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
with open(out, "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss": ru.ru_maxrss * 1024, "cpu": ru.ru_utime + ru.ru_stime}, f)
"""


def run_measured(
    cmd: list[str],
    *,
    cwd: Path,
    label: str,
    env: dict[str, str] | None = None,
    sample: bool = True,
    timeout: float = 7200,
) -> dict[str, Any]:
    cwd.mkdir(parents=True, exist_ok=True)
    out_path, err_path = cwd / f"{label}.stdout", cwd / f"{label}.stderr"
    load_before = loadavg()
    t0 = time.perf_counter()
    ru_path = cwd / f"{label}.rusage.json"
    ru_path.unlink(missing_ok=True)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(ru_path), *cmd], cwd=cwd, env=env, stdout=out, stderr=err
        )
        sampler = TreeSampler(proc.pid).start() if sample else None
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in TreeSampler._children().get(proc.pid, []):
                os.kill(child, 9)
            proc.wait()
        wall = time.perf_counter() - t0
        if sampler:
            sampler.stop()
    ru = (
        json.loads(ru_path.read_text())
        if ru_path.exists()
        else {"rc": proc.returncode, "maxrss": 0, "cpu": float("nan")}
    )
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    text = stdout + "\n" + stderr
    sched = re.search(r"Scheduled (\d+) tasks", text)
    return {
        "cmd": cmd,
        "rc": ru["rc"],
        "wall": wall,
        "cpu": ru["cpu"],
        "maxrss": ru["maxrss"],
        "scheduled": int(sched.group(1)) if sched else None,
        "nothing_to_do": next(
            (ln.strip() for ln in text.splitlines() if ln.startswith("Nothing to do")), None
        ),
        "luigi_summary": _luigi_summary(text),
        "stdout": stdout,
        "tail": text[-3000:],
        "tree": sampler.by_role() if sampler else {},
        "tree_total": sampler.peak_total if sampler else 0,
        "load_before": load_before,
        "load_after": loadavg(),
        "log": str(err_path),
    }


def _luigi_summary(text: str) -> str:
    m = re.search(
        r"===== Luigi Execution Summary =====\n(.*?)\n===== Luigi Execution Summary =====", text, re.S
    )
    return m.group(1).strip() if m else ""


def luigi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from tests.helpers import luigi_env as _env

    return _env(extra)


# =============================================================================================
# 2. Profile of the completeness run
# =============================================================================================

# (label, file suffix, function name) -> cumulative time; a function may appear at several lines
WATCH = [
    ("whole luigi command (luigi.cmdline)", "luigi/cmdline.py", "luigi_run"),
    ("imports (importlib _find_and_load)", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("Luigi Worker.add (complete() calls + scheduling)", "luigi/worker.py", "add"),
    ("Luigi scheduler.add_task (RPC into the local scheduler)", "luigi/scheduler.py", "add_task"),
    ("Luigi Worker.run (run loop)", "luigi/worker.py", "run"),
    (
        "TimeSyncReport.complete (everything below: nested)",
        "pipeline/timesync/tasks.py",
        "complete@TimeSyncReport",
    ),
    ("  TimeSyncIngest.complete", "pipeline/timesync/tasks.py", "complete@TimeSyncIngest"),
    (
        "  TimeSyncPlotBatch.complete (_PlotsTask, all batches)",
        "pipeline/timesync/tasks.py",
        "complete@_PlotsTask",
    ),
    ("  tasks requires() (builds the task instances)", "pipeline/timesync/tasks.py", "requires"),
    ("  Project.plots (read + validate plot file)", "pipeline/timesync/plots.py", "read_plot_file"),
    ("  Project.batches (sorts all plots, per call)", "pipeline/timesync/engine.py", "batches"),
    ("  Project.plots_of", "pipeline/timesync/engine.py", "plots_of"),
    ("  Project.tiles_of (chip_tiles)", "pipeline/timesync/engine.py", "tiles_of"),
    ("  Project.ingest_fingerprint", "pipeline/timesync/engine.py", "ingest_fingerprint"),
    ("  Project.ingest_complete (root listing + manifest)", "pipeline/timesync/engine.py", "ingest_complete"),
    ("  Project.plot_status (per plot)", "pipeline/timesync/engine.py", "plot_status"),
    (
        "    Project.observations (plan: search state -> observations)",
        "pipeline/timesync/engine.py",
        "observations",
    ),
    ("      Project.tile_items (read search state, item_ref)", "pipeline/timesync/engine.py", "tile_items"),
    ("    Project.existing_keys (listings + set ops)", "pipeline/timesync/engine.py", "existing_keys"),
    ("      Project._csv_index (scan of the flat prj_ dir)", "pipeline/timesync/engine.py", "_csv_index"),
    ("      Store.list_names (all listings)", "targets/store.py", "list_names"),
    ("        its set comprehension (scandir iteration + name filters)", "targets/store.py", "<setcomp>"),
    ("      existing_keys set comprehensions (names -> keys)", "pipeline/timesync/engine.py", "<setcomp>"),
    ("    Store.exists (series, search state, markers)", "targets/store.py", "exists"),
    ("  Luigi Task instantiation (get_param_values, config lookups)", "luigi/task.py", "get_param_values"),
    (
        "  os.scandir calls (opening; iteration is in the set comprehension)",
        "~",
        "<built-in method posix.scandir>",
    ),
    ("  DirEntry.is_file", "~", "<method 'is_file' of 'posix.DirEntry' objects>"),
]


def profile_summary(prof: Path, top: int = 25) -> dict[str, Any]:
    st = pstats.Stats(str(prof))
    raw = st.stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    total = max((v[3] for k, v in raw.items() if k[2] == "luigi_run"), default=None) or st.total_tt

    def agg(suffix: str, func: str) -> tuple[int, float, float]:
        line = None
        if "@" in func:  # a method of a class in pipeline/timesync/tasks.py: match its line
            import ast

            func, cls = func.split("@")
            tree = ast.parse((REPO / suffix).read_text())
            node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
            line = next(n.lineno for n in node.body if isinstance(n, ast.FunctionDef) and n.name == func)
        nc = tt = ct = 0
        for (f, ln, fn), (_cc, n, t, c, _callers) in raw.items():
            if fn == func and (f.endswith(suffix) or f == suffix) and (line is None or ln == line):
                nc += n
                tt += t
                ct += c
        return nc, tt, ct

    watched = [(label, *agg(s, f)) for label, s, f in WATCH]
    # list_names split by caller
    by_caller: dict[str, tuple[int, float]] = {}
    for (f, _l, fn), (_cc, _n, _t, _c, callers) in raw.items():
        if fn == "list_names" and f.endswith("targets/store.py"):
            for (_cf, _cl, cfn), cv in callers.items():
                n0, c0 = by_caller.get(cfn, (0, 0.0))
                by_caller[cfn] = (n0 + cv[1], c0 + cv[3])

    def short(k: tuple[str, int, str]) -> str:
        f, line, fn = k
        for marker in ("site-packages/", str(REPO) + "/"):
            if marker in f:
                f = f.split(marker, 1)[1]
        return f"{f}:{line}({fn})" if line else fn

    packages: dict[str, float] = {}
    for (f, _l, fn), (_cc, _n, t, _c, _callers) in raw.items():
        if f == "~":
            pkg = (
                "builtins/C calls ("
                + (
                    "I/O, scandir, sockets, select"
                    if any(
                        x in fn
                        for x in (
                            "scandir",
                            "posix",
                            "socket",
                            "select",
                            "read",
                            "recv",
                            "send",
                            "io.open",
                            "stat",
                        )
                    )
                    else "other"
                )
                + ")"
            )
        elif "site-packages/" in f:
            pkg = f.split("site-packages/", 1)[1].split("/", 1)[0]
        elif str(REPO) in f:
            pkg = f.split(str(REPO) + "/", 1)[1].split("/", 1)[0] + " (this repo)"
        elif "importlib" in f:
            pkg = "imports"
        else:
            pkg = "stdlib " + f.rsplit("/", 1)[-1].replace(".py", "")
        packages[pkg] = packages.get(pkg, 0.0) + t
    items = list(raw.items())
    by_ct = sorted(items, key=lambda kv: -kv[1][3])
    by_tt = sorted(items, key=lambda kv: -kv[1][2])
    return {
        "total": total,
        "watched": watched,
        "list_names_by_caller": by_caller,
        "self_by_package": sorted(packages.items(), key=lambda kv: -kv[1])[:14],
        "top_cumulative": [(short(k), v[1], v[2], v[3]) for k, v in by_ct[:top]],
        "top_self": [(short(k), v[1], v[2], v[3]) for k, v in by_tt[:top]],
    }


# =============================================================================================
# 3. S3
# =============================================================================================

# s3fs runs its requests on an event loop in another thread, which cProfile does not see:
# the S3 run is sampled with py-spy (all threads, idle samples left out) instead.
PYSPY_WATCH = [
    ("botocore response parsing (XML)", ("botocore/parsers.py",)),
    ("  of which dateutil (LastModified of every key)", ("dateutil/",)),
    (
        "botocore/aiobotocore request building + signing",
        (
            "botocore/auth.py",
            "botocore/signers.py",
            "botocore/endpoint.py",
            "aiobotocore/endpoint.py",
            "botocore/handlers.py",
            "botocore/hooks.py",
            "aiobotocore/hooks.py",
        ),
    ),
    ("aiohttp / sockets", ("aiohttp/",)),
    ("s3fs listing (_lsdir, _iterdir)", ("_lsdir (s3fs", "_iterdir (s3fs")),
    ("s3fs exists/info (HEAD)", ("_info (s3fs", "_isfile", "_exists (s3fs")),
    ("Store.list_names", ("list_names (targets/store.py",)),
    ("Project.plot_status", ("plot_status (pipeline/timesync/engine.py",)),
    ("Project.batches", ("batches (pipeline/timesync/engine.py",)),
    ("imports", ("_find_and_load",)),
]


def listing_cpu(
    server: Any, bucket: str, prefix: str, plots: list[tuple[str, str]], *, raw_timestamps: bool
) -> dict[str, Any]:
    """CPU of this process to list every plot's 4 prefixes with a plain boto3 client
    (ListObjectsV2, paged), with botocore's default timestamp parsing or with
    ``LastModified`` left as text (``timestamp_parser`` of the response parser factory)."""
    import boto3
    import botocore.session
    from botocore.config import Config

    sess = botocore.session.get_session()
    if raw_timestamps:
        sess.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=lambda value: value
        )
    client = boto3.session.Session(botocore_session=sess).client(
        "s3",
        endpoint_url=server.direct_endpoint_url or server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}),
    )
    client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", MaxKeys=1)  # connection and endpoint set up
    keys = requests = 0
    c0, w0 = time.process_time(), time.perf_counter()
    pages = client.get_paginator("list_objects_v2")
    for pid, plot_id in plots:
        for pre in (
            f"{prefix}/prj_{pid}/{plot_id}_spectral_files_set_",
            *(f"{prefix}/prj_{pid}/{k}/plot_{plot_id}/plot_{plot_id}_" for k in KINDS),
        ):
            for page in pages.paginate(Bucket=bucket, Prefix=pre):
                requests += 1
                keys += len(page.get("Contents", ()))
    return {
        "cpu": time.process_time() - c0,
        "wall": time.perf_counter() - w0,
        "keys": keys,
        "requests": requests,
    }


def listing_cpu_store(server: Any, bucket: str, prefix: str, plots: list[tuple[str, str]]) -> dict[str, Any]:
    """The same listings through the pipeline's own ``Store.list_names`` (presigned
    ListObjectsV2 and a key regex), one thread, so its CPU per key compares with the above."""
    from targets.s3config import S3Options
    from targets.store import Store

    env = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key})
    try:
        store = Store(
            f"s3://{bucket}/{prefix}",
            S3Options(endpoint_url=server.direct_endpoint_url or server.endpoint_url, region=server.region),
        )
        store.list_names("", "_state")  # connection and signer set up
        keys = 0
        c0, w0 = time.process_time(), time.perf_counter()
        for pid, plot_id in plots:
            keys += len(store.list_names(f"prj_{pid}", f"{plot_id}_spectral_files_set_"))
            for k in KINDS:
                keys += len(store.list_names(f"prj_{pid}/{k}/plot_{plot_id}", f"plot_{plot_id}_"))
        return {
            "cpu": time.process_time() - c0,
            "wall": time.perf_counter() - w0,
            "keys": keys,
            "requests": 4 * len(plots),
        }
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def find_py_spy(explicit: str = "") -> str | None:
    for cand in (
        explicit,
        shutil.which("py-spy") or "",
        str(Path(sys.executable).with_name("py-spy")),
        "/tmp/tools/bin/py-spy",
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def pyspy_summary(raw: Path, top: int = 15) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> samples in all, inclusive share of the watched
    parts, own (leaf) samples by package and the top leaf functions."""
    total = 0
    incl = {label: 0 for label, _ in PYSPY_WATCH}
    by_pkg: dict[str, int] = {}
    leaves: dict[str, int] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        try:
            count = int(n)
        except ValueError:
            continue
        total += count
        for label, needles in PYSPY_WATCH:
            if any(nd in stack for nd in needles):
                incl[label] += count
        leaf = stack.rsplit(";", 1)[-1]
        loc = leaf[leaf.find("(") + 1 : leaf.rfind(")")] if "(" in leaf else ""
        for marker in ("site-packages/", str(REPO) + "/"):
            if marker in loc:
                loc = loc.split(marker, 1)[1]
        if not loc:
            pkg = "(no Python frame)"
        elif "importlib" in loc:
            pkg = "imports"
        elif loc.startswith(("pipeline/", "targets/")):
            pkg = "this repo"
        elif "/" in loc and not loc.startswith(("/", "<")):
            pkg = loc.split("/", 1)[0]
        else:
            pkg = loc.rsplit("/", 1)[-1].split(":")[0].replace(".py", "")
        by_pkg[pkg] = by_pkg.get(pkg, 0) + count
        for marker in ("site-packages/", str(REPO) + "/"):
            leaf = leaf.replace(marker, "")
        leaf = leaf or "(no Python frame)"
        leaves[leaf] = leaves.get(leaf, 0) + count
    return {
        "samples": total,
        "inclusive": incl,
        "by_package": sorted(by_pkg.items(), key=lambda kv: -kv[1])[:12],
        "top_leaves": sorted(leaves.items(), key=lambda kv: -kv[1])[:top],
    }


def upload_project(server: Any, src: Path, bucket: str, prefix: str, threads: int) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server.direct_endpoint_url or server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=threads * 2,
            retries={"max_attempts": 10, "mode": "standard"},
        ),
    )
    files = []
    for dirpath, _dirs, names in os.walk(src):
        for name in names:
            p = os.path.join(dirpath, name)
            files.append((p, os.path.relpath(p, src).replace(os.sep, "/")))
    nbytes = 0

    def put(item: tuple[str, str]) -> int:
        path, rel = item
        size = os.path.getsize(path)
        body = b""
        if size:
            with open(path, "rb") as f:
                body = f.read()
        client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=body)
        return size

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for size in pool.map(put, files, chunksize=64):
            nbytes += size
    wall = time.perf_counter() - t0
    return {
        "objects": len(files),
        "bytes": nbytes,
        "wall": wall,
        "rate": len(files) / wall,
        "threads": threads,
    }


def classify_requests(records: list[Any], bucket: str) -> dict[str, int]:
    """What each counted request touched: LIST by its prefix, HEAD/GET by key kind."""
    out: dict[str, int] = {}
    for r in records:
        if r.bucket != bucket:
            continue
        if r.kind == "LIST":
            q = parse_qs(urlsplit(r.target).query)
            prefix = unquote((q.get("prefix") or [""])[0])
            if "_spectral_files_set_" in prefix:
                what = "LIST plot CSV name prefix"
            elif any(f"/{k}/plot_" in prefix for k in KINDS):
                what = "LIST plot chip directory"
            elif prefix.count("/") <= 1:
                what = f"LIST project root ({prefix or '/'})"
            else:
                what = f"LIST other ({prefix[:60]})"
        else:
            key = r.key
            if "/_state/search/" in key:
                what = "search state"
            elif "/series/" in key:
                what = "plot series"
            elif "/report/" in key:
                what = "report marker"
            elif "/ingest_" in key:
                what = "ingest manifest"
            elif "/fill/" in key:
                what = "fill record"
            else:
                what = "other " + key.rsplit("/", 1)[-1][:40]
            what = f"{r.kind} {what}"
        out[what] = out.get(what, 0) + 1
    return dict(sorted(out.items()))


# =============================================================================================
# 4. A real 1,000-plot run
# =============================================================================================


def rss_archive(cache: Path, plots: int, acquisitions: int) -> tuple[Any, float, bool]:
    """The archive of the real run, built (in a child process: building takes GiBs that
    this process would otherwise keep) or found in the cache."""
    root = cache / f"arch-p{plots}-a{acquisitions}-c0"
    manifest = root / "built.json"
    if manifest.exists():
        info = json.loads(manifest.read_text())
        return info, info["build_seconds"], True
    r = run_measured(
        [
            sys.executable,
            __file__,
            "_build_archive",
            "--root",
            str(root),
            "--plots",
            str(plots),
            "--acquisitions",
            str(acquisitions),
        ],
        cwd=cache,
        label=f"build-p{plots}-a{acquisitions}",
        sample=False,
        timeout=7200,
    )
    if r["rc"] != 0 or not manifest.exists():
        raise RuntimeError(f"archive build failed:\n{r['tail']}")
    info = json.loads(manifest.read_text())
    info["build_peak_rss"] = r["maxrss"]
    manifest.write_text(json.dumps(info, indent=1) + "\n")
    return info, info["build_seconds"], False


def build_archive_child(root: Path, plots: int, acquisitions: int) -> int:
    from pipeline.demo.archive import ArchiveSpec, build_archive

    spec = ArchiveSpec(n_acquisitions=acquisitions, n_extra_plots=max(0, plots - 10), context_px=0)
    t0 = time.perf_counter()
    built = build_archive(root, spec, overwrite=True)
    secs = time.perf_counter() - t0
    info = {
        "plot_file": str(built.plot_file),
        "catalog": str(built.catalog_ndjson),
        "plots": len(built.plots),
        "items": len(built.items),
        "files": built.n_files,
        "bytes": built.total_bytes,
        "build_seconds": secs,
        "plot_observations": sum(len(p.get("observation_dates", [])) for p in built.plots),
    }
    (root / "built.json").write_text(json.dumps(info, indent=1) + "\n")
    return 0


# =============================================================================================
# Machine facts and report
# =============================================================================================


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except Exception:
        return "?"


def code_fingerprint() -> str:
    """sha1 of the code a run executes (pipeline/, targets/, luigi.cfg), whatever git says:
    other sessions may commit or edit while a long benchmark runs."""
    import hashlib

    h = hashlib.sha1()
    for path in sorted(
        [*(REPO / "pipeline").rglob("*.py"), *(REPO / "targets").rglob("*.py"), REPO / "luigi.cfg"]
    ):
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    mem = 0
    with contextlib.suppress(OSError, StopIteration):
        mem = (
            int(
                next(
                    line.split()[1]
                    for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal")
                )
            )
            * 1024
        )
    versions = {"python": platform.python_version()}
    for mod in ("luigi", "s3fs", "botocore", "distributed"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "-"
    versions["eo-extract"] = git_rev()
    versions["pipeline code sha1"] = code_fingerprint()
    fs = ""
    with contextlib.suppress(Exception):
        fs = subprocess.run(["stat", "-f", "-c", "%T", "/"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "mem_gib": mem / GIB,
        "cpu": cpu,
        "kernel": platform.release(),
        "load": loadavg(),
        "versions": versions,
        "fs": fs,
    }


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def fit_and_extrapolate(
    points: list[tuple[int, int, float]], base: tuple[int, int, float] | None, target: tuple[int, int]
) -> dict[str, Any]:
    """Extrapolations of the time of a complete run to ``target`` (N, M):

    - ``proportional``: the largest run's time minus the fixed cost (the baseline run of a
      tiny project: interpreter, imports, Luigi start), scaled by plot-observations, plus
      the fixed cost;
    - ``fit``: t = c0 + c1*N + c2*N*M, c0 the baseline, c1 and c2 by least squares over
      the other sizes (needs two sizes that differ in M at equal N or vice versa)."""
    out: dict[str, Any] = {}
    big = max(points, key=lambda p: p[0] * p[1])
    n, m, t = big
    c0 = base[2] if base else 0.0
    out["c0"] = c0
    out["proportional"] = c0 + max(t - c0, 0.0) * (target[0] * target[1]) / (n * m)
    pts = sorted(set(points))
    if len({(p[0], p[1]) for p in pts}) >= 2:
        import numpy as np

        a = np.array([[p[0], p[0] * p[1]] for p in pts], dtype=float)
        b = np.array([p[2] - c0 for p in pts])
        (c1, c2), *_ = np.linalg.lstsq(a, b, rcond=None)
        out["fit"] = {
            "c0_s": c0,
            "per_plot_ms": c1 * 1e3,
            "per_plot_obs_us": c2 * 1e6,
            "noisy": bool(c1 < 0 or c2 < 0),
        }
        out["fit_prediction"] = c0 + c1 * target[0] + c2 * target[0] * target[1]
    return out


def render(res: dict[str, Any], args: argparse.Namespace) -> str:
    L: list[str] = []
    w = L.append
    mf = res["machine"]
    w("# Planning / completeness benchmark (scripts/bench_planning.py)")
    w("")
    w(
        f"date {mf['date']}   host {mf['host']}   {mf['nproc']} cores ({mf['cpu']}), {mf['mem_gib']:.1f} GiB RAM, "
        f"kernel {mf['kernel']}, project fs {mf['fs']}"
    )
    w(
        f"load average (1/5/15 min) at start {mf['load']}, at end {res.get('load_end', '?')}   "
        f"versions: {', '.join(f'{k} {v}' for k, v in mf['versions'].items())}"
    )
    w(
        "Other jobs share this machine: wall times include waiting for a core; CPU seconds are given next to them."
    )
    if res.get("code_end") and res["code_end"] != mf["versions"].get("pipeline code sha1"):
        w(
            f"WARNING: the pipeline code (pipeline/, targets/, luigi.cfg) changed during the run: sha1 {mf['versions'].get('pipeline code sha1')} "
            f"at start, {res['code_end']} at the end (git {mf['versions'].get('eo-extract')} -> {res.get('rev_end')})."
        )
    else:
        w(
            f"pipeline code (pipeline/, targets/, luigi.cfg) unchanged during the run (git {mf['versions'].get('eo-extract')} at start, {res.get('rev_end')} at the end)"
        )
    w("")

    w("## 1. Synthetic finished projects (no rasters)")
    w("")
    w(
        "| plots x obs | tiles | files | catalogue items | create files | rate | series bytes | search state | write_ingest (child) | ingest peak RSS | rm -rf |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in res["local"]:
        i = s["synth"]
        ing = i.get("ingest", {})
        reused = " (reused)" if i.get("reused") else ""
        w(
            f"| {s['n']:,} x {s['m']:,}{reused} | {len(s['tiles'])} | {i['files']:,} | {i['items']:,} | {i['create_s']:.1f} s "
            f"| {i['create_rate']:,.0f} files/s | {mib(i['series_bytes'])} | {i['search_s']:.1f} s | {ing.get('wall_s', 0):.1f} s wall / "
            f"{ing.get('cpu_s', 0):.1f} s CPU, {ing.get('rows', 0):,} rows | {mib(ing.get('peak_rss', 0))} "
            f"(+{mib(ing.get('rss_peak', 0) - ing.get('rss_before', 0))} in write_ingest) | "
            f"{s.get('rm_s', float('nan')):.1f} s |"
        )
    w(
        f"(files: 4 per plot-observation + 1 series per plot; created with os.mknod in {args.create_procs} processes)"
    )
    w("")

    w(
        "## 2. Complete run on local disk: `luigi --module pipeline.timesync TimeSyncProject ... --asset-href href --local-scheduler`"
    )
    w("")
    w(
        "| plots x obs | plot-obs | check | wall | CPU | peak RSS (exact) | tasks scheduled | exit | pipeline says | load before -> after |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    for s in res["local"]:
        for r in s["runs"]:
            w(
                f"| {s['n']:,} x {s['m']:,} | {s['n'] * s['m']:,} | {r.get('check', '')} | {r['wall']:.1f} s | {r['cpu']:.1f} s | {mib(r['maxrss'])} | "
                f"{r['scheduled']} | {r['rc']} | {(r['nothing_to_do'] or 'NOT nothing to do')[:60]} | {r['load_before']} -> {r['load_after']} |"
            )
    w("")
    if res["local"]:
        main = res["local"][-1]
        r0 = main["runs"][0]
        w("Luigi's execution summary of the largest run:")
        w("```")
        w(r0["luigi_summary"] or "(none found)")
        w("```")
        ex = res.get("extrapolation")
        if ex:
            w("")
            w(f"### Scaling to {args.target_plots:,} plots x {args.target_obs:,} observations")
            pts = ", ".join(f"{n:,}x{m:,}: {t:.1f} s" for n, m, t in ex["points"])
            b = ex.get("baseline")
            w(
                f"measured (best wall of each size, runs answered from the completeness snapshot): {pts}"
                + (f"; baseline {b[0]}x{b[1]} (fixed cost of a run): {b[2]:.2f} s" if b else "")
            )
            if "first_points" in ex:
                fp = ", ".join(f"{n:,}x{m:,}: {t:.1f} s" for n, m, t in ex["first_points"])
                w(
                    f"first run of each size (listings; records the snapshot): {fp}; scaled by plot-observations to the target: "
                    f"{ex['first_proportional']:.1f} s wall, {ex['first_proportional_cpu']:.1f} s CPU"
                )
            w(
                "(the snapshot runs make a fixed number of stats per plot: scaling them by plot-observations, as below, overstates them)"
            )
            if ex.get("measured_full"):
                w(f"MEASURED at full size: {ex['measured_full']:.1f} s wall (target < 30 s)")
            else:
                w(f"NOT run at full size ({ex['why_not_full']}); extrapolated:")
                w(
                    f"- linear: fixed cost + (largest run - fixed cost) x plot-observations ratio: {ex['proportional']:.1f} s wall "
                    f"(same on CPU seconds: {ex['proportional_cpu']:.1f} s)"
                )
                if "fit_prediction" in ex:
                    f = ex["fit"]
                    w(
                        f"- fit t = c0 + c1*N + c2*N*M (c0 = baseline) over the sizes, wall: {f['per_plot_ms']:.3f} ms per plot, "
                        f"{f['per_plot_obs_us']:.3f} us per plot-observation -> {ex['fit_prediction']:.1f} s"
                        + (
                            "  (a negative coefficient: the sizes are too close for the noise)"
                            if f["noisy"]
                            else ""
                        )
                    )
                if "fit_prediction_cpu" in ex:
                    f = ex["fit_cpu"]
                    w(
                        f"- same fit on CPU seconds: {f['per_plot_ms']:.3f} ms per plot, "
                        f"{f['per_plot_obs_us']:.3f} us per plot-observation -> {ex['fit_prediction_cpu']:.1f} s"
                    )
                if "batches_s" in ex:
                    w(
                        f"- the one superlinear term found in the profile, Project.batches (every batch task re-sorts all plots of the "
                        f"project, twice per complete()): {ex['batches_s']:.2f} s (profiled) at the largest size, grows with N^2: "
                        f"~{ex['batches_at_target_s']:.1f} s (profiled) at {args.target_plots:,} plots, of which the linear "
                        f"extrapolation already holds ~{ex['batches_linear_share_s']:.1f} s"
                    )
                if "batches_unprof" in ex:
                    bt = ex["batches_unprof"]
                    w(
                        f"- measured without the profiler: one Project.batches call {bt['one_call_s'] * 1e3:.1f} ms at {bt['n']:,} plots, "
                        f"{bt['calls']} calls per complete run = {bt['total_s']:.2f} s; at {args.target_plots:,} plots one call is "
                        f"~{bt['one_call_s'] * 1e3 * args.target_plots / bt['n']:.0f} ms and a run makes "
                        f"{2 * math.ceil(args.target_plots / args.projects / 25) * args.projects + args.projects} calls = "
                        f"~{ex['batches_unprof_target_s']:.0f} s (N^2)"
                    )
                    w(
                        f"- linear extrapolation with that term taken as N^2 instead of N*M: **{ex['adjusted']:.0f} s wall**"
                    )
                if "rss_per_plot_obs" in ex:
                    w(
                        f"- peak RSS of the complete run grows ~{ex['rss_per_plot_obs']:.0f} B per plot-observation between the two largest "
                        f"sizes (the per-plot CSV key index and listings): ~{mib(ex['rss_at_target'])} at {args.target_plots:,} x "
                        f"{args.target_obs:,}, ~{mib(ex['rss_at_1000'])} at 1,000 x {args.target_obs:,}"
                    )
                w(
                    f"- ratio largest / smallest size: time x{ex['time_ratio']:.2f} for work x{ex['work_ratio']:.2f} plot-observations "
                    f"(plots x{ex['plot_ratio']:.2f})"
                )
                w("  (linear extrapolation from a smaller machine-state sample: a guide, not a measurement)")
        prof = res.get("profile")
        if prof:
            w("")
            w(
                f"### Where the time goes (cProfile of the {main['n']:,} x {main['m']:,} run; profiled wall {prof['wall']:.1f} s, "
                f"unprofiled {r0['wall']:.1f} s; luigi_run {prof['summary']['total']:.1f} s inside the profiler)"
            )
            w("")
            w("| what | calls | self s | cumulative s | share of luigi_run |")
            w("|---|---|---|---|---|")
            tot = prof["summary"]["total"] or 1
            for label, nc, tt, ct in prof["summary"]["watched"]:
                if nc:
                    w(f"| {label} | {nc:,} | {tt:.2f} | {ct:.2f} | {100 * ct / tot:.0f}% |")
            lb = prof["summary"]["list_names_by_caller"]
            if lb:
                w("")
                w(
                    "Store.list_names by caller: "
                    + ", ".join(
                        f"{k}: {n:,} calls {c:.2f} s"
                        for k, (n, c) in sorted(lb.items(), key=lambda kv: -kv[1][1])
                    )
                )
            w("")
            w(
                "Own (self) time by package: "
                + ", ".join(f"{k} {v:.2f} s" for k, v in prof["summary"]["self_by_package"] if v >= 0.05)
            )
            w("")
            w("Top entries by cumulative time:")
            w("```")
            w(f"{'ncalls':>10} {'tottime':>8} {'cumtime':>8}  function")
            for name, nc, tt, ct in prof["summary"]["top_cumulative"]:
                w(f"{nc:>10,} {tt:>8.2f} {ct:>8.2f}  {name}")
            w("```")
            w("Top entries by own (self) time:")
            w("```")
            w(f"{'ncalls':>10} {'tottime':>8} {'cumtime':>8}  function")
            for name, nc, tt, ct in prof["summary"]["top_self"]:
                w(f"{nc:>10,} {tt:>8.2f} {ct:>8.2f}  {name}")
            w("```")
    w("")

    alt = res.get("alternatives")
    if alt:
        work = alt["n"] * alt["m"]
        scale = (args.target_plots * args.target_obs) / work
        w("")
        w(
            f"### Completeness without Luigi, three ways, in one process, on the {alt['n']:,} x {alt['m']:,} project"
        )
        w("")
        w(
            f"| method | CPU s | wall s | per plot-observation (CPU) | {args.target_plots:,} x {args.target_obs:,} (CPU, linear) |"
        )
        w("|---|---|---|---|---|")
        for key, label, sc in (
            (
                "current",
                "Project.plot_status for every plot (the pipeline's check: scandir listings, key sets)",
                scale,
            ),
            ("listdir", "same listings with os.listdir, compared as C-level sets of expected names", scale),
            (
                "stat",
                "a recorded snapshot of directory mtimes: 3 chip-dir stats + series stat per plot, 1 flat-dir stat",
                args.target_plots / alt["n"],
            ),
        ):
            d = alt[key]
            w(
                f"| {label} | {d['cpu']:.2f} | {d['wall']:.2f} | {1e6 * d['cpu'] / work:.2f} us | {d['cpu'] * sc:.1f} s |"
            )
        w(
            "(the stat row scales with plots, not observations; the flat CSV directory still needs one listing whenever its mtime changed)"
        )
        w("")

    s3 = res.get("s3")
    if s3:
        w(
            f"## 3. Complete run on S3 (SeaweedFS {s3.get('weed_version', '')} on 127.0.0.1, counted at the proxy)"
        )
        w("")
        if s3.get("error"):
            w(f"FAILED: {s3['error']}")
        else:
            up = s3["upload"]
            w(
                f"project {s3['n']:,} plots x {s3['m']:,} observations; synthesised locally in {s3['synth']['create_s']:.1f} s, "
                f"uploaded {up['objects']:,} objects ({mib(up['bytes'])}) with {up['threads']} threads of boto3 put_object "
                f"in {up['wall']:.1f} s = {up['rate']:,.0f} objects/s (straight to the S3 gateway)"
            )
            r = s3["run"]
            w(
                f"complete run: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, peak RSS {mib(r['maxrss'])}, tasks scheduled {r['scheduled']}, "
                f"exit {r['rc']}, pipeline says: {r['nothing_to_do'] or 'NOT nothing to do'}"
            )
            c = s3["counts"]
            n = s3["n"]
            w("")
            w("| request | count | per plot |")
            w("|---|---|---|")
            for k in sorted(c):
                if c[k]:
                    w(f"| {k} | {c[k]:,} | {c[k] / n:.3f} |")
            w(f"| total | {sum(c.values()):,} | {sum(c.values()) / n:.3f} |")
            w("")
            w("by what they touch:")
            w("")
            w("| request | count | per plot |")
            w("|---|---|---|")
            for k, v in s3["classified"].items():
                w(f"| {k} | {v:,} | {v / n:.3f} |")
            w("")
            tot = sum(c.values())
            T, Mt = args.target_plots, args.target_obs
            pages = math.ceil(Mt / 1000)
            t_heads = c.get("HEAD", 0)  # per run, not per plot: searches, report marker
            t_lists = 4 * T * pages + (c.get("LIST", 0) - 4 * n)
            w(
                f"Per plot: {r['wall'] / n * 1e3:.0f} ms wall, {r['cpu'] / n * 1e3:.0f} ms CPU, whole run divided by plots (a batch's plots are checked by 16 threads); "
                f"CPU {r['cpu'] / tot * 1e3:.1f} ms per request, {r['cpu'] / s3['keys_listed'] * 1e6:.0f} us per key listed "
                f"({s3['keys_listed']:,} keys in all)."
            )
            w(
                f"At {T:,} x {Mt:,}: {t_lists:,} LIST + ~{t_heads:,} HEAD requests; at this run's rate ~{r['wall'] / tot * (t_lists + t_heads):,.0f} s "
                f"(scaled by requests) to ~{r['cpu'] / s3['keys_listed'] * 4 * T * Mt:,.0f} s CPU (scaled by keys listed, {4 * T * Mt:,}) "
                f"against a server on the same machine; a guide, not a measurement."
            )
            sp = s3.get("profile")
            if sp:
                ps = sp["summary"]
                tot_s = max(ps["samples"], 1)
                w("")
                w(
                    f"py-spy of the same S3 run (all threads, {sp['rate']} samples/s, busy samples only: {ps['samples']:,}; run {sp['wall']:.1f} s):"
                )
                w("")
                w("| part (inclusive) | share of busy samples |")
                w("|---|---|")
                for label, k in ps["inclusive"].items():
                    w(f"| {label} | {100 * k / tot_s:.0f}% |")
                w("")
                w(
                    "own (leaf) samples by package: "
                    + ", ".join(f"{k} {100 * v / tot_s:.0f}%" for k, v in ps["by_package"])
                )
                w("```")
                w("  share  leaf function (top by own samples)")
                for name, k in ps["top_leaves"]:
                    w(f"{100 * k / tot_s:6.1f}%  {name[:150]}")
                w("```")
            elif s3.get("profile_error"):
                w(s3["profile_error"])
            lc = s3.get("listing_cpu")
            if lc:
                d, r_ = lc["default"], lc["raw_timestamps"]
                w("")
                w(
                    f"The same {d['requests']:,} listings ({d['keys']:,} keys) with a plain boto3 client in the benchmark process: "
                    f"{d['cpu']:.2f} s CPU ({1e6 * d['cpu'] / max(d['keys'], 1):.0f} us per key, {1e3 * d['cpu'] / max(d['requests'], 1):.1f} ms per request) "
                    f"with botocore's default parsing; {r_['cpu']:.2f} s CPU ({1e6 * r_['cpu'] / max(r_['keys'], 1):.0f} us per key) with "
                    f"LastModified left as text (timestamp_parser = identity): x{d['cpu'] / max(r_['cpu'], 1e-9):.1f}."
                )
                st = lc.get("store")
                if st:
                    w(
                        f"Through the pipeline's Store.list_names (presigned ListObjectsV2 read with a key regex): {st['cpu']:.2f} s CPU "
                        f"({1e6 * st['cpu'] / max(st['keys'], 1):.1f} us per key), {st['wall']:.1f} s wall for {st['keys']:,} keys: "
                        f"x{d['cpu'] / max(st['cpu'], 1e-9):.1f} less CPU than botocore's default parsing."
                    )
            w("")
            w(
                f"Expected with one listing per plot prefix: 4 LIST per plot (CSV name prefix + 3 chip directories) while a prefix "
                f"holds <= 1,000 keys; S3 pages ListObjectsV2 at 1,000 keys, so at {args.target_obs:,} observations each listing "
                f"is ceil(M/1000) = {math.ceil(args.target_obs / 1000)} page(s) and 1,500 observations need 2."
            )
        w("")

    rs = res.get("rss")
    if rs:
        w("## 4. Peak RSS of a real run from nothing (synthetic archive with real COGs)")
        w("")
        if rs.get("error"):
            w(f"FAILED: {rs['error']}")
        else:
            a = rs["archive"]
            w(
                f"archive: {a['plots']:,} plots, {a['items']:,} items, {a['files']:,} files, {mib(a['bytes'])}; built in "
                f"{rs['build_s']:.0f} s{' (cached, from an earlier run)' if rs['cached'] else ''}"
            )
            r = rs["run"]
            w(
                f"run: wall {r['wall']:.1f} s, CPU of the process tree {r['cpu']:.1f} s, exit {r['rc']}, tasks scheduled {r['scheduled']}, "
                f"load {r['load_before']} -> {r['load_after']}"
            )
            w("")
            w("| process role | processes | peak RSS of one process |")
            w("|---|---|---|")
            w(
                f"| largest process of the whole tree (exact: wait4 through a small trampoline) | - | {mib(r['maxrss'])} |"
            )
            for role, (k, mx) in sorted(r["tree"].items()):
                w(f"| {role} (VmHWM, sampled every 0.2 s) | {k} | {mib(mx)} |")
            w(f"| sum of the tree's VmRSS at one instant (sampled) | | {mib(r['tree_total'])} |")
            w("")
            w("Luigi's execution summary:")
            w("```")
            w(r["luigi_summary"] or r["tail"][-1500:])
            w("```")
            if rs.get("recheck"):
                rr = rs["recheck"]
                w(
                    f"rerun of the finished {a['plots']:,}-plot project: wall {rr['wall']:.1f} s, peak RSS {mib(rr['maxrss'])}, "
                    f"tasks scheduled {rr['scheduled']}, {rr['nothing_to_do'] or 'NOT nothing to do'}"
                )
        w("")

    w("## Targets")
    w("")
    for line in res.get("verdicts", []):
        w(f"- {line}")
    return "\n".join(L) + "\n"


# =============================================================================================
# main
# =============================================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--plots", type=int, default=2000, help="plots of the largest local project (default 2000)"
    )
    ap.add_argument("--observations", type=int, default=500, help="observations per plot (default 500)")
    ap.add_argument(
        "--tiles", type=int, default=4, help="ARD tiles the plots are spread over (1-8, default 4)"
    )
    ap.add_argument(
        "--projects",
        type=int,
        default=1,
        help="project ids the plots are split into (default 1: one flat CSV directory)",
    )
    ap.add_argument(
        "--full", action="store_true", help="also run 10,000 x 1,000 (40M files) when inodes and disk allow"
    )
    ap.add_argument(
        "--no-scaling",
        action="store_true",
        help="only the largest local size (no N/4 x M/4 and N/4 x M points)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="complete runs per local size (default 2; the best is used for scaling)",
    )
    ap.add_argument("--create-procs", type=int, default=2, help="processes creating files (default 2)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument(
        "--py-spy",
        default="",
        help="py-spy binary for the S3 profile (default: PATH, next to python, /tmp/tools/bin)",
    )
    ap.add_argument("--s3-plots", type=int, default=200)
    ap.add_argument("--s3-observations", type=int, default=200)
    ap.add_argument("--upload-threads", type=int, default=16)
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--skip-local", action="store_true", help="leave out parts 1-2 (local projects)")
    ap.add_argument(
        "--rss-plots", type=int, default=1000, help="plots of the real-run RSS measurement (default 1000)"
    )
    ap.add_argument(
        "--rss-acquisitions", type=int, default=6, help="acquisitions of its archive (default 6, the minimum)"
    )
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: 200 x 100 local, 50 x 50 S3, no RSS run"
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/bench_planning"),
        help="scratch (default /tmp/bench_planning)",
    )
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache" / "bench-planning",
        help="archive cache for the RSS run",
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the synthetic projects (and reuse them next time)"
    )
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--target-plots", type=int, default=10000)
    ap.add_argument("--target-obs", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.quick:
        args.plots, args.observations, args.s3_plots, args.s3_observations, args.skip_rss = (
            200,
            100,
            50,
            50,
            True,
        )
    if not 1 <= args.tiles <= len(DEFAULT_TILES):
        ap.error(f"--tiles must be 1..{len(DEFAULT_TILES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_ingest":
        ap = argparse.ArgumentParser()
        ap.add_argument("_ingest")
        ap.add_argument("--base", type=Path, required=True)
        return ingest_child(ap.parse_args().base)
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_build_archive":
        ap = argparse.ArgumentParser()
        ap.add_argument("_build_archive")
        ap.add_argument("--root", type=Path, required=True)
        ap.add_argument("--plots", type=int, required=True)
        ap.add_argument("--acquisitions", type=int, required=True)
        a = ap.parse_args()
        return build_archive_child(a.root, a.plots, a.acquisitions)
    args = parse_args(argv)
    res: dict[str, Any] = {"machine": machine(), "local": []}
    log(f"machine: {res['machine']['nproc']} cores, load {res['machine']['load']}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    tiles = list(DEFAULT_TILES[: args.tiles])
    N, M = args.plots, args.observations
    sizes = (
        [(N, M)]
        if args.no_scaling
        else sorted(
            {(max(25, N // 4), max(10, M // 4)), (max(25, N // 4), M), (N, M)}, key=lambda s: s[0] * s[1]
        )
    )
    full = (args.target_plots, args.target_obs)
    why_not_full = "--full not given"
    if args.full and full not in sizes:
        ok, msg = check_space([full], args.workdir, keep=False)
        if ok:
            sizes.append(full)
        else:
            why_not_full = f"not enough room: {msg}"
            log(f"--full refused: {why_not_full}")
    ok, msg = check_space(sizes, args.workdir, keep=args.keep)
    log(f"space: {msg}")
    if not ok:
        raise SystemExit(f"not enough room for {sizes}: {msg}")
    os.environ["EO_EXTRACT_CACHE"] = str(args.workdir / "snapshot-cache")  # luigi runs inherit it
    env = luigi_env()
    baseline = (25, 10)

    # ---- 1 + 2: local (a tiny baseline first: the fixed cost of a run)
    for n, m in [] if args.skip_local else [baseline, *[s for s in sizes if s != baseline]]:
        synth = Synth(args.workdir / f"local-{n}x{m}", n, m, tiles, args.projects)
        log(f"synthesising {n:,} plots x {m:,} observations ({needed_inodes(n, m):,} inodes)")
        info = synth.build(procs=args.create_procs, reuse=args.keep)
        log(
            f"  {info['files']:,} files in {info['create_s']:.1f} s ({info['create_rate']:,.0f}/s); ingest {info['ingest']['wall_s']:.1f} s, "
            f"peak RSS {mib(info['ingest']['peak_rss'])}"
        )
        entry: dict[str, Any] = {
            "n": n,
            "m": m,
            "tiles": tiles,
            "synth": info,
            "runs": [],
            "baseline": (n, m) == baseline,
        }
        shutil.rmtree(args.workdir / "snapshot-cache", ignore_errors=True)  # the first run lists
        for k in range(max(args.repeat, 3) if (n, m) == baseline else max(args.repeat, 2)):
            r = run_measured(
                [LUIGI, "--module", "pipeline.timesync", *synth.luigi_args()],
                cwd=synth.base / "runs",
                label=f"complete-{k}",
                env=env,
            )
            r["check"] = "listings" if k == 0 else "snapshot"
            log(
                f"  complete run {k + 1} ({r['check']}): {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, {mib(r['maxrss'])}, scheduled {r['scheduled']}, rc {r['rc']}, "
                f"{'nothing to do' if r['nothing_to_do'] else 'SOMETHING TO DO'}"
            )
            if r["rc"] != 0 or not r["nothing_to_do"]:
                log(r["tail"])
            r.pop("stdout")
            entry["runs"].append(r)
        if (n, m) == max(sizes, key=lambda s: s[0] * s[1]):
            res["batches"] = measure_batches(synth)
            res["alternatives"] = measure_alternatives(synth)
            log(f"  alternatives: {res['alternatives']}")
        if (n, m) == max(sizes, key=lambda s: s[0] * s[1]) and not args.no_profile:
            prof = synth.base / "runs" / "complete.prof"
            r = run_measured(
                [
                    sys.executable,
                    "-m",
                    "cProfile",
                    "-o",
                    str(prof),
                    LUIGI,
                    "--module",
                    "pipeline.timesync",
                    *synth.luigi_args(),
                ],
                cwd=synth.base / "runs",
                label="profile",
                env=env,
                sample=False,
            )
            log(f"  profiled run: {r['wall']:.1f} s, rc {r['rc']}")
            if prof.exists():
                res["profile"] = {"wall": r["wall"], "summary": profile_summary(prof)}
                shutil.copy(prof, args.workdir / f"complete-{n}x{m}.prof")
        if not args.keep:
            entry["rm_s"] = remove_tree(synth.base)
            log(f"  removed in {entry['rm_s']:.1f} s")
        res["local"].append(entry)

    ex: dict[str, Any] = {}
    if res["local"]:
        ex = extrapolate(res, args, full, why_not_full)

    # ---- 3: S3
    if not args.skip_s3:
        res["s3"] = run_s3(args, tiles, env)

    # ---- 4: RSS of a real run
    if not args.skip_rss:
        res["rss"] = run_rss(args, env)

    finish(res, args, ex, full)
    return 0


def _runs(e: dict[str, Any], check: str) -> list[dict[str, Any]]:
    """An entry's runs of one kind ("listings": the first; "snapshot": the others), or all
    of them when there is none of that kind."""
    return [r for r in e["runs"] if r.get("check") == check] or e["runs"]


def extrapolate(
    res: dict[str, Any], args: argparse.Namespace, full: tuple[int, int], why_not_full: str
) -> dict[str, Any]:
    # the runs answered from the snapshot: what every rerun of a finished project costs
    pts = [
        (e["n"], e["m"], min(r["wall"] for r in _runs(e, "snapshot")))
        for e in res["local"]
        if not e.get("baseline")
    ]
    pts_cpu = [
        (e["n"], e["m"], min(r["cpu"] for r in _runs(e, "snapshot")))
        for e in res["local"]
        if not e.get("baseline")
    ]
    base = next(
        ((e["n"], e["m"], min(r["wall"] for r in e["runs"])) for e in res["local"] if e.get("baseline")), None
    )
    base_cpu = next(
        ((e["n"], e["m"], min(r["cpu"] for r in e["runs"])) for e in res["local"] if e.get("baseline")), None
    )
    ex: dict[str, Any] = {"points": pts, "baseline": base, "why_not_full": why_not_full}
    # the first run after the project was made (or copied): listings, records the snapshot
    first = [(e["n"], e["m"], _runs(e, "listings")[0]["wall"]) for e in res["local"] if not e.get("baseline")]
    first_cpu = [
        (e["n"], e["m"], _runs(e, "listings")[0]["cpu"]) for e in res["local"] if not e.get("baseline")
    ]
    ex["first_points"] = first
    ex["first_proportional"] = fit_and_extrapolate(first, base, full)["proportional"]
    ex["first_proportional_cpu"] = fit_and_extrapolate(first_cpu, base_cpu, full)["proportional"]
    full_pts = [p for p in pts if (p[0], p[1]) == full]
    if full_pts:
        ex["measured_full"] = full_pts[0][2]
    ex.update(fit_and_extrapolate(pts, base, full))
    cpu_ex = fit_and_extrapolate(pts_cpu, base_cpu, full)
    ex["proportional_cpu"] = cpu_ex["proportional"]
    if "fit_prediction" in cpu_ex:
        ex["fit_cpu"], ex["fit_prediction_cpu"] = cpu_ex["fit"], cpu_ex["fit_prediction"]
    # the one term that grows faster than plots: Project.batches re-sorts all plots per call
    prof = res.get("profile")
    if prof:
        hi_n = max(pts, key=lambda p: p[0] * p[1])[0]
        quad = next(
            (
                ct
                for label, nc, tt, ct in prof["summary"]["watched"]
                if label.strip().startswith("Project.batches")
            ),
            0.0,
        )
        scale = prof["summary"]["total"] / max(prof["wall"], 1e-9)  # profiler overhead folded out roughly
        ex["batches_s"] = quad
        ex["batches_at_target_s"] = quad * (full[0] / hi_n) ** 2
        ex["batches_linear_share_s"] = (
            quad
            * (full[0] * full[1])
            / max(1, max(pts, key=lambda p: p[0] * p[1])[0] * max(pts, key=lambda p: p[0] * p[1])[1])
        )
        ex["profile_overhead"] = scale
    rss_pts = sorted(
        (e["n"] * e["m"], max(r["maxrss"] for r in e["runs"])) for e in res["local"] if not e.get("baseline")
    )
    if len(rss_pts) >= 2:
        (w0, r0), (w1, r1) = rss_pts[-2], rss_pts[-1]
        slope = (r1 - r0) / max(1, w1 - w0)
        ex["rss_per_plot_obs"] = slope
        ex["rss_at_target"] = r1 + slope * (full[0] * full[1] - w1)
        ex["rss_at_1000"] = r1 + slope * (1000 * full[1] - w1)
    bt = res.get("batches")
    if bt:
        hi_n, hi_m = max(pts, key=lambda p: p[0] * p[1])[:2]
        calls_target = 2 * math.ceil(full[0] / args.projects / 25) * args.projects + args.projects
        ex["batches_unprof"] = bt
        ex["batches_unprof_target_s"] = bt["one_call_s"] * (full[0] / hi_n) * calls_target
        ex["batches_unprof_linear_share_s"] = bt["total_s"] * (full[0] * full[1]) / (hi_n * hi_m)
        ex["adjusted"] = (
            ex["proportional"] + ex["batches_unprof_target_s"] - ex["batches_unprof_linear_share_s"]
        )
    lo, hi = min(pts, key=lambda p: p[0] * p[1]), max(pts, key=lambda p: p[0] * p[1])
    ex["time_ratio"] = hi[2] / lo[2]
    ex["work_ratio"] = (hi[0] * hi[1]) / (lo[0] * lo[1])
    ex["plot_ratio"] = hi[0] / lo[0]
    res["extrapolation"] = ex
    return ex


def finish(res: dict[str, Any], args: argparse.Namespace, ex: dict[str, Any], full: tuple[int, int]) -> None:
    v = []
    if ex:
        best = ex.get("measured_full") or ex.get("adjusted") or ex["proportional"]
        how = "measured" if ex.get("measured_full") else "extrapolated"
        v.append(
            f"local completeness of {full[0]:,} x {full[1]:,} in < 30 s (a rerun of a finished project: from the completeness snapshot): "
            f"{how} {best:.0f} s wall -> {'MET' if best < 30 else 'NOT MET'}"
        )
        if "first_proportional" in ex:
            v.append(
                f"the first check after a project was made or copied (listings; records the snapshot): extrapolated "
                f"{ex['first_proportional']:.0f} s wall / {ex['first_proportional_cpu']:.0f} s CPU"
            )
    if ex and "rss_at_target" in ex:
        v.append(
            f"peak RSS of the completeness check (the luigi process): measured {mib(max(r['maxrss'] for r in res['local'][-1]['runs']))} at "
            f"{res['local'][-1]['n']:,} x {res['local'][-1]['m']:,}; extrapolated {mib(ex['rss_at_1000'])} at 1,000 x {full[1]:,} "
            f"({'< 1 GiB' if ex['rss_at_1000'] < GIB else '>= 1 GiB'}) and {mib(ex['rss_at_target'])} at {full[0]:,} x {full[1]:,} "
            f"({'< 1 GiB' if ex['rss_at_target'] < GIB else '>= 1 GiB'})"
        )
    all_nothing = all(r["nothing_to_do"] and r["rc"] == 0 for e in res["local"] for r in e["runs"])
    if res["local"]:
        v.append(
            f"every local complete run said 'Nothing to do' and exited 0: {'yes' if all_nothing else 'NO'}; tasks scheduled: "
            f"{sorted({r['scheduled'] for e in res['local'] for r in e['runs']})}"
        )
    s3 = res.get("s3")
    if s3 and not s3.get("error"):
        lists = s3["counts"].get("LIST", 0)
        per_plot_list = lists / s3["n"]
        v.append(
            f"S3: {per_plot_list:.2f} LIST per plot ({lists:,} for {s3['n']:,} plots; 4 per plot = one per prefix), "
            f"{sum(s3['counts'].values()) / s3['n']:.2f} requests per plot in all"
        )
    rs = res.get("rss")
    if rs and not rs.get("error"):
        peak = max([rs["run"]["maxrss"], *[mx for _k, mx in rs["run"]["tree"].values()]])
        v.append(
            f"peak RSS of any process in the {rs['archive']['plots']:,}-plot real run: {mib(peak)} -> {'MET' if peak < GIB else 'NOT MET'} (< 1 GiB)"
        )
    ing = [(e["n"], e["m"], e["synth"]["ingest"]) for e in res["local"]]
    if ing:
        n, m, d = max(ing, key=lambda t: t[0] * t[1])
        grow = d.get("rss_peak", d["peak_rss"]) - d.get("rss_before", 0)
        per_row = grow / max(1, n * m)
        v.append(
            f"write_ingest (the work of the TimeSyncIngest task, in the luigi worker process) peaked at {mib(d['peak_rss'])} for "
            f"{n * m:,} series rows, +{mib(grow)} over the process before it (~{per_row:,.0f} B per row): "
            f"{full[0]:,} x {full[1]:,} would need ~{d.get('rss_before', 0) / GIB + per_row * full[0] * full[1] / GIB:.1f} GiB, "
            f"1,000 x {full[1]:,} ~{d.get('rss_before', 0) / GIB + per_row * 1000 * full[1] / GIB:.2f} GiB "
            f"-> {'MET' if d.get('rss_before', 0) + per_row * 1000 * full[1] < GIB else 'NOT MET'} for a 1,000-plot x {full[1]:,}-observation project"
        )
    res["verdicts"] = v
    res["load_end"] = loadavg()
    res["rev_end"] = git_rev()
    res["code_end"] = code_fingerprint()
    text = render(res, args)
    print(text)
    (args.workdir / "report.md").write_text(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    if not args.keep:
        for p in args.workdir.glob("local-*"):
            remove_tree(p)


def run_s3(args: argparse.Namespace, tiles: list[tuple[int, int]], env: dict[str, str]) -> dict[str, Any]:
    from tests.servers.s3 import find_weed, start_s3_server

    out: dict[str, Any] = {"n": args.s3_plots, "m": args.s3_observations}
    synth = Synth(
        args.workdir / f"s3src-{args.s3_plots}x{args.s3_observations}",
        args.s3_plots,
        args.s3_observations,
        tiles,
        args.projects,
    )
    log(f"S3: synthesising {args.s3_plots} x {args.s3_observations} locally")
    out["synth"] = synth.build(procs=args.create_procs, reuse=args.keep)
    server_dir = args.workdir / "s3server"
    if server_dir.exists():
        remove_tree(server_dir)
    server = None
    try:
        try:
            out["weed_version"] = subprocess.run(
                [find_weed(), "version"], capture_output=True, text=True, timeout=20
            ).stdout.split()[2]
        except Exception:
            out["weed_version"] = ""
        server = start_s3_server(server_dir)
        server.create_bucket(S3_BUCKET)
        log(f"S3: server up in {server.startup_seconds:.1f} s; uploading")
        out["upload"] = upload_project(server, synth.project_dir, S3_BUCKET, "prj-run", args.upload_threads)
        log(
            f"S3: uploaded {out['upload']['objects']:,} objects in {out['upload']['wall']:.1f} s ({out['upload']['rate']:,.0f}/s)"
        )
        s3env = dict(env)
        s3env.update(
            {
                "AWS_ACCESS_KEY_ID": server.access_key,
                "AWS_SECRET_ACCESS_KEY": server.secret_key,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        without_aws_endpoint(s3env)
        cmd = [
            LUIGI,
            "--module",
            "pipeline.timesync",
            *synth.luigi_args(f"s3://{S3_BUCKET}/prj-run"),
            "--output-endpoint-url",
            server.endpoint_url,
            "--output-region",
            server.region,
        ]
        server.reset_counts()
        r = run_measured(cmd, cwd=synth.base / "runs", label="s3-complete", env=s3env)
        out["counts"] = server.request_counts(S3_BUCKET)
        out["all_buckets"] = server.request_counts()
        out["classified"] = classify_requests(server.requests(), S3_BUCKET)
        log(f"S3: complete run {r['wall']:.1f} s, rc {r['rc']}, counts {out['counts']}")
        if r["rc"] != 0 or not r["nothing_to_do"]:
            log(r["tail"])
        r.pop("stdout")
        out["run"] = r
        out["keys_listed"] = 4 * args.s3_plots * args.s3_observations
        spy = find_py_spy(args.py_spy)
        if not args.no_profile and spy:
            raw = synth.base / "runs" / "s3.pyspy.txt"
            rp = run_measured(
                [spy, "record", "--format", "raw", "--rate", "200", "--output", str(raw), "--", *cmd],
                cwd=synth.base / "runs",
                label="s3-profile",
                env=s3env,
                sample=False,
            )
            if raw.exists():
                out["profile"] = {"wall": rp["wall"], "summary": pyspy_summary(raw), "rate": 200}
                shutil.copy(
                    raw, args.workdir / f"s3-complete-{args.s3_plots}x{args.s3_observations}.pyspy.txt"
                )
        elif not spy:
            out["profile_error"] = "py-spy not found (pip install py-spy, or --py-spy PATH)"
        plots = [
            (r[0], r[1]) for r in (line.split(",") for line in synth.plot_file.read_text().splitlines()[1:])
        ]
        out["listing_cpu"] = {
            "default": listing_cpu(server, S3_BUCKET, "prj-run", plots, raw_timestamps=False),
            "raw_timestamps": listing_cpu(server, S3_BUCKET, "prj-run", plots, raw_timestamps=True),
            "store": listing_cpu_store(server, S3_BUCKET, "prj-run", plots),
        }
        log(f"S3: listing CPU {out['listing_cpu']}")
    except Exception as e:  # report, do not lose the local figures
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"S3 part failed: {out['error']}")
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            remove_tree(server_dir)
            remove_tree(synth.base)
    return out


def run_rss(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        log(
            f"RSS: archive with {args.rss_plots} plots x {args.rss_acquisitions} acquisitions (cached under {args.cache_dir})"
        )
        info, secs, cached = rss_archive(args.cache_dir, args.rss_plots, args.rss_acquisitions)
        out.update(archive=info, build_s=secs, cached=cached)
        log(f"RSS: archive ready ({'cached' if cached else f'built in {secs:.0f} s'})")
        proj = args.workdir / "rss-project"
        if proj.exists():
            remove_tree(proj)
        cmd = [
            LUIGI,
            "--module",
            "pipeline.timesync",
            "TimeSyncProject",
            "--plot-file",
            info["plot_file"],
            "--project-dir",
            str(proj),
            "--catalog",
            info["catalog"],
            "--asset-href",
            "href",
            "--local-scheduler",
        ]
        r = run_measured(cmd, cwd=args.workdir / "rss-runs", label="rss-run", env=env)
        log(f"RSS: run {r['wall']:.1f} s, rc {r['rc']}, luigi peak {mib(r['maxrss'])}, tree {r['tree']}")
        if r["rc"] != 0:
            log(r["tail"])
        r.pop("stdout")
        out["run"] = r
        r2 = run_measured(cmd, cwd=args.workdir / "rss-runs", label="rss-recheck", env=env)
        r2.pop("stdout")
        out["recheck"] = r2
        if not args.keep:
            remove_tree(proj)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"RSS part failed: {out['error']}")
    return out


if __name__ == "__main__":
    sys.exit(main())
