#!/usr/bin/env python
"""HLS monthly composites: this pipeline against the notebooks' way, odc-stac and the read
floor, on one synthetic archive and the same cores; then its memory at full scale.

    .venv/bin/python scripts/bench_hls.py                  # 40 scenes on a 2048 x 2048 window of 10TET 2019
    .venv/bin/python scripts/bench_hls.py --full-size      # the same on whole 3660 x 3660 tiles
    .venv/bin/python scripts/bench_hls.py --quick          # smoke test (< 2 min once the archive is cached)
    .venv/bin/python scripts/bench_hls.py --memory         # Deliver 3: peak worker RSS at 25/50/100/200 full-size scenes
    .venv/bin/python scripts/bench_hls.py --breakdown      # where one month's time goes in the pipeline's engine

Speed comparison (default). One after another, each in its own process tree (sampled
every 0.2 s for RSS and CPU), on the same archive read from local files (page cache warmed
first, not timed), with the same Dask layout (``--workers`` processes x ``--threads``; c as
luigi.cfg [hls] says: by default its months on threads of the luigi process):

  a  the notebooks' way: each band file one Dask chunk (``dask.array.from_delayed`` of a
     whole-file rasterio read per asset), stacked (time, band, y, x) in xarray; the Fmask
     rule and the 0..10000 range applied with ``where``; ``groupby('time.month').median()``
     and the usable-Fmask count per month; written (uncompressed Zarr) by the workers.
  b  the modern idiom: ``odc.stac.load`` of the tile-year's L30 and S30 items with
     per-collection aliases to the 8 common names + Fmask, on the tile's grid,
     ``groupby="id"``, ``chunks`` x/y ``--b-chunk``; then as a.
  c  this pipeline: ``luigi --module pipeline.hls HlsComposites ... --local-scheduler`` into
     a fresh project directory, the whole command timed (start-up, search, 12 month COGs,
     QA report).
  d  the floor: every block of every file (8 bands + Fmask of every scene) decoded once
     through rasterio, one Dask task per file, nothing else (cluster start not counted).

Then every pixel of the 8 medians and valid_count of c is compared with a's and b's
(NaN where none), and a Markdown report is printed: wall and CPU seconds, scenes per
second, the ratios c : faster of a/b (target >= 3) and c / d (target <= 1.5), peak RSS per
process (Dask workers included), 1-minute load average at the start and end of each run.

Requests are counted in a separate, smaller pass (``--requests``; default a 1024 x 1024
window with the same scenes): the archive uploaded to Azurite (``tests/servers/azurite.py``,
a private container), hrefs signed with SAS tokens from a local Planetary-Computer-style
token service (``tests/servers/sas_token.py``; the pipeline through ``PC_SDK_SAS_URL`` and
``--hls-path-style-blob-hosts``), every request counted by ``tests/servers/counting_proxy.py``
in front of Azurite. Azurite and the proxy share the 2 cores, so that pass is not timed.

Memory (``--memory``): the archive of ``full_size_hls_spec(200)`` (whole 3660 x 3660 tiles);
the pipeline runs on 25, 50, 100 and 200 of its scenes (spread over the year) and the peak
RSS of its largest Dask worker is printed for each; a and b too unless ``--memory-ways c``,
each with a per-worker memory limit and a guard that stops a run whose machine memory
runs low (the machine has no swap).

Archives are built once and cached under ``--cache-dir`` (default ``.cache/bench-hls``,
git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_hls_lib as H  # noqa: E402 - from scripts/, put on sys.path above
from bench_lib import TreeSampler  # noqa: E402

PY = sys.executable
LUIGI = str(Path(sys.executable).with_name("luigi"))
TILE, YEAR = "10TET", 2019
WAYS = ("a", "b", "c", "d")
LABELS = {
    "a": "a: notebooks' way (whole-file chunks, xarray groupby median)",
    "b": "b: odc-stac load + groupby median",
    "c": "c: this pipeline (luigi HlsComposites, whole command)",
    "c-what-if": "c: the pipeline with --pipeline-root's change (luigi HlsComposites, whole command)",
    "d": "d: floor (decode every block once)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--scenes", type=int, default=40, help="scenes in the speed comparison's tile-year (default 40)"
    )
    ap.add_argument(
        "--window",
        type=int,
        default=2048,
        help="window of the tile the speed archive covers, in px (default 2048)",
    )
    ap.add_argument(
        "--full-size",
        action="store_true",
        help="whole 3660 x 3660 tiles for the speed comparison (--window 3660)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 12 scenes on a 512 px window, requests on the same archive",
    )
    ap.add_argument("--skip", default="", help="ways to skip, e.g. a,b")
    ap.add_argument(
        "--workers", type=int, default=2, help="Dask worker processes of every way (default 2, = cores)"
    )
    ap.add_argument(
        "--threads", type=int, default=2, help="threads per Dask worker (default 2, as luigi.cfg)"
    )
    ap.add_argument(
        "--ab-memory-limit",
        default="",
        help="per-worker memory limit of a and b's LocalCluster (default: available RAM less 3 GiB, split over the workers)",
    )
    ap.add_argument("--b-chunk", type=int, default=1024, help="odc-stac chunks x and y (default 1024)")
    ap.add_argument(
        "--d-mode",
        choices=["strips", "whole"],
        default="strips",
        help="floor's reads: 512-row strips (default) or one whole-file read per file",
    )
    ap.add_argument(
        "--requests",
        choices=["small", "main", "off"],
        default="small",
        help="request-count pass over Azurite: small = --requests-window px with the same scenes (default), "
        "main = the speed archive itself, off",
    )
    ap.add_argument("--requests-window", type=int, default=1024)
    ap.add_argument(
        "--memory", action="store_true", help="Deliver 3's memory measurement instead of the speed comparison"
    )
    ap.add_argument(
        "--memory-scenes", default="25,50,100,200", help="scene counts of --memory (default 25,50,100,200)"
    )
    ap.add_argument("--memory-ways", default="c,a,b", help="ways measured by --memory (default c,a,b)")
    ap.add_argument(
        "--memory-timeout",
        type=float,
        default=2700,
        help="--memory: seconds a run may take before it is stopped (and that way not tried on more scenes; default 2700)",
    )
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="time one month of the pipeline's engine in this process: reads, recipe, stripe writes, COG, "
        "and the COG step's variants; plus a cProfile of composite_month",
    )
    ap.add_argument(
        "--breakdown-month",
        type=int,
        default=0,
        help="month of --breakdown (default: the month with most scenes)",
    )
    ap.add_argument(
        "--pipeline-root",
        type=Path,
        help="what-if: run c with this directory first on PYTHONPATH (a copy of the repo's pipeline/ and targets/ "
        "with a proposed change), to measure a change before it is made",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench-hls")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the archives even if cached")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir, removed at exit)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the scratch directory (outputs, logs)")
    ap.add_argument("--no-check", action="store_true", help="skip comparing c's outputs with a's and b's")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.full_size:
        args.window = 3660
    if args.quick:
        args.scenes, args.window, args.requests = 12, 512, "main"
    args.skip = {w.strip() for w in args.skip.split(",") if w.strip()}
    if args.skip - set(WAYS):
        ap.error(f"--skip takes a subset of {','.join(WAYS)}")
    return args


# =============================================================================================
# One measured command
# =============================================================================================


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Phase:
    """Runs one command in its own process tree: wall time, CPU (rusage of the reaped tree,
    or the sampled per-process CPU if larger: processes reparented before exit escape
    rusage), peak RSS per process, load average, output lines with their times."""

    def __init__(self, name: str, env: dict[str, str], logdir: Path, memory_floor: int = 0):
        self.name, self.env, self.logdir, self.memory_floor = name, env, logdir, memory_floor

    def run(self, cmd: list[str], *, cwd: Path, timeout: float = 4 * 3600) -> dict[str, Any]:
        cwd.mkdir(parents=True, exist_ok=True)
        load0, cpu0 = os.getloadavg(), children_cpu()
        logf = open(self.logdir / f"{self.name}.log", "w")  # noqa: SIM115 - written by the pump thread, closed below
        H.log(f"{self.name}: {' '.join(str(c) for c in cmd[:5])} ...")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, label=_label).start()
        guard = H.MemoryGuard(proc.pid, self.memory_floor).start() if self.memory_floor else None
        lines: list[tuple[float, str]] = []
        timed_out = False

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                t = time.perf_counter() - t0
                lines.append((t, line))
                logf.write(f"{t:9.3f} {line}\n")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            H.kill_tree(proc.pid)
            rc = proc.wait()
            timed_out = True
        finally:
            wall = time.perf_counter() - t0
            reader.join(timeout=10)
            sampler.stop()
            if guard:
                guard.stop()
            logf.close()
        processes = sampler.report()
        sampled_cpu = sum(cpu for _, _, cpu in processes)
        return {
            "rc": rc,
            "wall": wall,
            "cpu": max(children_cpu() - cpu0, sampled_cpu),
            "processes": processes,
            "load": (load0, os.getloadavg()),
            "lines": lines,
            "stopped": f"stopped after the {timeout:.0f} s time limit"
            if timed_out
            else (guard.tripped if guard else None),
            "min_available": guard.min_available if guard else None,
            "cmd": [str(c) for c in cmd],
        }


def _label(p: Any) -> str:
    return f"{H.process_role(p)}[{p.pid}]"


def worker_peak(processes: list[tuple[str, int, float]]) -> int:
    return max((rss for label, rss, _ in processes if label.startswith("dask-worker")), default=0)


def largest_process(processes: list[tuple[str, int, float]]) -> tuple[str, int]:
    label, rss, _ = max(processes, key=lambda p: p[1], default=("-", 0, 0.0))
    return label, rss


_MONTHS_DONE = re.compile(r"(\d+)/(\d+) months in (?:(\d+)m)?([\d.]+)s")


def pipeline_phases(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """The pipeline command's wall time cut at its own log lines: start-up (imports, search,
    up to the embedded cluster's start, or the months' thread pool's), compositing (the months, as its progress line
    states them), and the rest (manifest, QA report, summary, shutdown)."""
    started = next(
        (
            t
            for t, line in lines
            if "started an embedded Dask LocalCluster" in line or "threads of this process" in line
        ),
        None,
    )
    done = next(((t, line) for t, line in lines if _MONTHS_DONE.search(line)), None)
    out: dict[str, float] = {}
    if started is not None:
        out["start-up to cluster ready"] = started
    if done is not None:
        m = _MONTHS_DONE.search(done[1])
        assert m
        composite = 60 * int(m.group(3) or 0) + float(m.group(4))
        out["compositing (months)"] = composite
        out["after compositing (report, summary, exit)"] = wall - done[0]
    return out


# =============================================================================================
# The speed comparison
# =============================================================================================


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GDAL_", "CPL_", "VSI_", "PIPELINE_", "AWS_", "DASK_"))
    }
    env.update(
        LUIGI_CONFIG_PATH=str(REPO / "luigi.cfg"),
        PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'scripts'}",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        # numpy's nanmedian warns once per all-NaN pixel: kept (it is the notebooks' cost), not printed
        PYTHONWARNINGS="ignore::RuntimeWarning,ignore::UserWarning,ignore::FutureWarning",
    )
    env.pop("PIPELINE_RUN_STATS", None)
    return env


def ab_memory_limit(args: argparse.Namespace) -> str:
    if args.ab_memory_limit:
        return args.ab_memory_limit
    import psutil

    per = (psutil.virtual_memory().available - 3 * 2**30) / max(1, args.workers)
    return f"{max(1.0, per / 2**30):.1f}GiB"


def run_ways(
    ways: list[str],
    *,
    items: list[dict[str, Any]],
    catalog: Path,
    tiles: Path,
    scratch: Path,
    tag: str,
    args: argparse.Namespace,
    env: dict[str, str],
    logdir: Path,
    gdal_a: dict[str, str],
    gdal_d: dict[str, str],
    luigi_extra: list[str],
    memory_floor: int = 0,
    counter: Any = None,
    timeout: float = 4 * 3600,
) -> dict[str, dict[str, Any]]:
    """Run ``ways`` in order on one archive; each result has wall, CPU, processes, load and
    (with ``counter``) the requests counted while it ran."""
    results: dict[str, dict[str, Any]] = {}
    out = scratch / f"{tag}-out"
    out.mkdir(parents=True, exist_ok=True)
    work = H.work_doc(
        items,
        TILE,
        YEAR,
        out,
        workers=args.workers,
        threads=args.threads,
        memory_limit=ab_memory_limit(args),
        b_chunk=args.b_chunk,
        d_mode=args.d_mode,
    )
    for way in ways:
        if counter is not None:
            counter.reset()
        name = f"{tag}-{way}"
        if way == "c":
            project = scratch / f"{tag}-c-project"
            shutil.rmtree(project, ignore_errors=True)
            cmd = [
                LUIGI,
                "--module",
                "pipeline.hls",
                "HlsComposites",
                "--tiles",
                str(tiles),
                "--catalog",
                str(catalog),
                "--project-dir",
                str(project),
                "--local-scheduler",
                "--dask-n-workers",
                str(args.workers),
                "--dask-threads-per-worker",
                str(args.threads),
                *luigi_extra,
            ]
            c_env = dict(env)
            if args.pipeline_root:
                c_env["PYTHONPATH"] = f"{args.pipeline_root.resolve()}{os.pathsep}{env['PYTHONPATH']}"
            r = Phase(name, c_env, logdir, memory_floor).run(
                cmd, cwd=scratch / f"{tag}-c-cwd", timeout=timeout
            )
            r["project"] = str(project)
            r["split"] = pipeline_phases(r["lines"], r["wall"])
        else:
            w = dict(work, gdal=gdal_d if way == "d" else gdal_a)
            if way in ("a", "b"):
                shutil.rmtree(out / f"{way}.zarr", ignore_errors=True)
            wpath, rpath = scratch / f"{name}-work.json", scratch / f"{name}-result.json"
            wpath.write_text(json.dumps(w))
            rpath.unlink(missing_ok=True)
            r = Phase(name, env, logdir, memory_floor).run(
                [
                    PY,
                    str(REPO / "scripts" / "bench_hls_lib.py"),
                    way,
                    "--work",
                    str(wpath),
                    "--result",
                    str(rpath),
                ],
                cwd=scratch,
                timeout=timeout,
            )
            if rpath.exists():
                r["child"] = json.loads(rpath.read_text())
        if counter is not None:
            r["requests"] = counter.counts()
        r["tail"] = [line for _, line in r.pop("lines")[-25:]]
        results[way] = r
        status = "ok" if r["rc"] == 0 else (r["stopped"] or f"exit {r['rc']}")
        H.log(
            f"{name}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, largest worker "
            f"{worker_peak(r['processes']) / 2**20:.0f} MiB ({status})"
        )
    return results


def speed(args: argparse.Namespace, scratch: Path, logdir: Path, results: dict[str, Any]) -> None:
    spec = H.speed_spec(args.scenes, args.window, args.seed)
    root, facts = H.ensure_archive(args.cache_dir.resolve(), spec, rebuild=args.rebuild)
    items = H.read_items(root / "catalog" / "items.ndjson")
    scenes = H.tile_year_scenes(items, TILE, YEAR)
    files = [Path(h) for s in scenes for h in (*s["bands"], s["fmask"])]
    nbytes, secs = H.warm_page_cache(files)
    H.log(
        f"archive {root.name}: {len(scenes)} scenes, {len(files)} files read once into the page cache "
        f"({nbytes / 1e9:.2f} GB unique, {secs:.0f} s)"
    )
    results["archive"] = dict(
        facts,
        key=root.name,
        scenes=len(scenes),
        files=len(files),
        window=args.window,
        bytes_read=sum(p.stat().st_size for p in files),
        raw_bytes=len(scenes) * args.window**2 * (8 * 2 + 1),
        months=sorted({s["month"] for s in scenes}),
    )
    env = base_env()
    ways = [w for w in WAYS if w not in args.skip]
    res = run_ways(
        ways,
        items=items,
        catalog=root / "catalog" / "items.ndjson",
        tiles=root / "tiles.csv",
        scratch=scratch,
        tag="speed",
        args=args,
        env=env,
        logdir=logdir,
        gdal_a={},
        gdal_d={},
        luigi_extra=[],
        memory_floor=int(1.5 * 2**30),
    )
    results["speed"] = res
    if not args.no_check and "c" in res and res["c"]["rc"] == 0:
        others = {
            w: res[w]["child"]["output"]
            for w in ("a", "b")
            if w in res and res[w]["rc"] == 0 and "child" in res[w]
        }
        if others:
            H.log("comparing every pixel of c with " + " and ".join(others))
            results["check"] = H.compare_outputs(
                Path(res["c"]["project"]), TILE, YEAR, results["archive"]["months"], others
            )
    for w in ("a", "b"):
        if w in res and "child" in res[w]:
            shutil.rmtree(res[w]["child"]["output"], ignore_errors=True)
    if args.requests != "off":
        requests_pass(args, scratch, logdir, results, root if args.requests == "main" else None)


def requests_pass(
    args: argparse.Namespace, scratch: Path, logdir: Path, results: dict[str, Any], root: Path | None
) -> None:
    """Every way again, the archive served by Azurite through the counting proxy; counts only."""
    if root is None:
        spec = H.speed_spec(args.scenes, args.requests_window, args.seed)
        root, _ = H.ensure_archive(args.cache_dir.resolve(), spec, rebuild=args.rebuild)
    items = H.read_items(root / "catalog" / "items.ndjson")
    H.log(f"requests pass: uploading {root.name} to Azurite ...")
    served = H.ServedArchive(scratch / "azurite", root / "data", items)
    try:
        catalog, tiles = H.write_catalog(served.items, scratch / "requests-catalog", TILE, YEAR)
        env = dict(base_env(), **served.env())
        signed = served.signed(served.items)
        ways = [w for w in WAYS if w not in args.skip and (w in ("c", "d") or not args.quick)]
        res = run_ways(
            ways,
            items=signed,
            catalog=catalog,
            tiles=tiles,
            scratch=scratch,
            tag="requests",
            args=args,
            env=env,
            logdir=logdir,
            gdal_a={},
            gdal_d=H.FLOOR_GDAL,
            luigi_extra=["--hls-path-style-blob-hosts", served.host_port],
            memory_floor=int(1.5 * 2**30),
            counter=served,
        )
        scenes = H.tile_year_scenes(items, TILE, YEAR)
        size = H.tile_grid(items, TILE)
        results["requests"] = {
            "archive": root.name,
            "scenes": len(scenes),
            "files": 9 * len(scenes),
            "window": size["width"],
            "upload_seconds": served.upload_seconds,
            "ways": {w: {k: r[k] for k in ("rc", "wall", "requests", "stopped")} for w, r in res.items()},
        }
        for w in ("a", "b"):
            if w in res and "child" in res[w]:
                shutil.rmtree(res[w]["child"]["output"], ignore_errors=True)
    finally:
        served.stop()


# =============================================================================================
# Memory (Deliver 3)
# =============================================================================================


def memory(args: argparse.Namespace, scratch: Path, logdir: Path, results: dict[str, Any]) -> None:
    counts = sorted(int(n) for n in args.memory_scenes.split(","))
    spec = H.memory_spec(max(counts), args.seed)
    root, facts = H.ensure_archive(args.cache_dir.resolve(), spec, rebuild=args.rebuild)
    items = H.read_items(root / "catalog" / "items.ndjson")
    files = [Path(h) for s in H.tile_year_scenes(items, TILE, YEAR) for h in (*s["bands"], s["fmask"])]
    nbytes, secs = H.warm_page_cache(files)
    H.log(
        f"archive {root.name}: {len(files)} files ({nbytes / 1e9:.2f} GB unique) in the page cache ({secs:.0f} s)"
    )
    results["archive"] = dict(facts, key=root.name, window=3660)
    env = base_env()
    ways = [w.strip() for w in args.memory_ways.split(",") if w.strip() and w.strip() not in args.skip]
    table: dict[int, dict[str, Any]] = {}
    gave_up: dict[str, str] = {}
    for way in ways:  # each way over the scene counts, smallest first: a way that fails is not tried larger
        for n in counts:
            if way in gave_up:
                table.setdefault(n, {})[way] = {"skipped": gave_up[way]}
                continue
            subset = H.spread_subset(items, n)
            catalog, tiles = H.write_catalog(subset, scratch / f"memory-{n}-catalog", TILE, YEAR)
            r = run_ways(
                [way],
                items=subset,
                catalog=catalog,
                tiles=tiles,
                scratch=scratch,
                tag=f"memory-{n}",
                args=args,
                env=env,
                logdir=logdir,
                gdal_a={},
                gdal_d={},
                luigi_extra=[],
                memory_floor=2 * 2**30,
                timeout=args.memory_timeout,
            )[way]
            months = H.tile_year_scenes(subset, TILE, YEAR)
            per_month: dict[int, int] = {}
            for s in months:
                per_month[s["month"]] = per_month.get(s["month"], 0) + 1
            entry = {
                "rc": r["rc"],
                "wall": r["wall"],
                "cpu": r["cpu"],
                "worker_peak": worker_peak(r["processes"]),
                "largest": largest_process(r["processes"]),
                "processes": r["processes"],
                "stopped": r["stopped"],
                "max_scenes_per_month": max(per_month.values()),
                "load": r["load"],
                "tail": r["tail"][-8:],
            }
            table.setdefault(n, {})[way] = entry
            if way == "c":
                shutil.rmtree(r["project"], ignore_errors=True)
            else:
                shutil.rmtree(scratch / f"memory-{n}-out", ignore_errors=True)
            if r["rc"] != 0:
                gave_up[way] = f"not run: {r['stopped'] or 'failed'} at {n} scenes"
    results["memory"] = {str(n): v for n, v in table.items()}
    results["memory_limit_ab"] = ab_memory_limit(args)


# =============================================================================================
# Breakdown of one month in the pipeline's engine (in this process)
# =============================================================================================


def breakdown(args: argparse.Namespace, scratch: Path, results: dict[str, Any]) -> None:
    """Time one month's pieces with the engine's own functions (reads through RasterReader,
    recipe.composite_block, a stripes file, engine._to_cog), then the COG step's
    variants on the same stripes, then composite_month itself under cProfile. (The engine
    itself writes no stripes file for a classic-TIFF month: its windows go straight into
    pipeline.hls.cog.CogBuilder; the stripes file stands in for them here.)"""
    import cProfile
    import io
    import pstats

    import numpy as np
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.windows import Window

    from pipeline.hls import engine, recipe
    from pipeline.raster import ArchiveAccess, RasterReader
    from targets.store import Store

    spec = H.speed_spec(args.scenes, args.window, args.seed)
    root, _ = H.ensure_archive(args.cache_dir.resolve(), spec, rebuild=args.rebuild)
    items = H.read_items(root / "catalog" / "items.ndjson")
    plan = engine.plan_tile_year(TILE, YEAR, items)
    months = plan.months()
    month = args.breakdown_month or max(months, key=lambda m: len(months[m]))
    scenes, grid = months[month], plan.grid
    assert grid is not None
    H.warm_page_cache([Path(h) for s in scenes for h in (*s.bands, s.fmask)])
    access = ArchiveAccess(asset_href="href", requester_pays=False)
    out: dict[str, Any] = {"archive": root.name, "month": month, "scenes": len(scenes), "window": grid.width}

    def stripes(path: str, block: int) -> dict[str, float]:
        t = {"Fmask reads": 0.0, "band reads": 0.0, "recipe": 0.0, "stripe writes": 0.0}
        profile = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": len(recipe.OUTPUT_BANDS),
            "dtype": "float32",
            "crs": CRS.from_epsg(grid.epsg),
            "transform": Affine(*grid.transform),
            "nodata": float("nan"),
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "interleave": "band",
            "bigtiff": "IF_SAFER",
        }
        with RasterReader(access) as reader, rasterio.open(path, "w", **profile) as dst:
            for col, row, w, h in engine.windows(grid, len(scenes)):
                c0 = time.process_time()
                fm = np.empty((len(scenes), h, w), np.uint8)
                for i, s in enumerate(scenes):
                    fm[i] = reader.block(s.fmask, col, row, w, h)
                c1 = time.process_time()
                bands = np.empty((len(scenes), len(recipe.BANDS), h, w), np.int16)
                for i, s in enumerate(scenes):
                    for k, href in enumerate(s.bands):
                        bands[i, k] = reader.block(href, col, row, w, h)
                c2 = time.process_time()
                comp = recipe.composite_block(bands, fm)
                c3 = time.process_time()
                dst.write(comp, window=Window(col, row, w, h))
                c4 = time.process_time()
                t["Fmask reads"] += c1 - c0
                t["band reads"] += c2 - c1
                t["recipe"] += c3 - c2
                t["stripe writes"] += c4 - c3
        return t

    def cog(src: str, options: dict[str, str] | None = None) -> tuple[float, int]:
        """engine._to_cog (pipeline.hls.cog's writer) on a copy of ``src``; with ``options``,
        GDAL's COG driver (engine._gdal_cog) with engine.COG_OPTIONS updated by them."""
        dst, work = str(scratch / "breakdown-cog.tif"), str(scratch / "breakdown-src.tif")
        shutil.copy(src, work)
        saved = dict(engine.COG_OPTIONS)
        engine.COG_OPTIONS.update(options or {})
        try:
            c0 = time.process_time()
            # pipeline.hls.cog averages the overviews itself; GDAL's COG driver takes them
            # built in the stripes file (FORCE_USE_EXISTING) unless told to build them
            if options is not None and options.get("OVERVIEWS") not in ("AUTO", "NONE"):
                engine._add_overviews(work)
            (engine._to_cog if options is None else engine._gdal_cog)(work, dst)
            return time.process_time() - c0, os.path.getsize(dst)
        finally:
            engine.COG_OPTIONS.clear()
            engine.COG_OPTIONS.update(saved)

    src512 = str(scratch / "breakdown-stripes-512.tif")
    t = stripes(src512, engine.BLOCK)
    t["overviews + COG (engine._to_cog: pipeline.hls.cog, numpy overviews)"], size = cog(src512)
    out["pieces_cpu"] = t
    out["cog_bytes"] = size
    variants: list[tuple[str, float, int]] = []
    for label, options in (
        (
            "pipeline.hls.cog (numpy AVERAGE overviews, ISA-L DEFLATE level 1; the engine streams its windows into it)",
            None,
        ),
        ("GDAL's COG driver from the same stripes, DEFLATE level 1 (the previous way)", {}),
        ("GDAL's COG driver, DEFLATE level 6 (GDAL's default)", {"LEVEL": "6"}),
        (
            "the COG driver builds the overviews (OVERVIEWS=AUTO, AVERAGE), level 6: the first version",
            {"LEVEL": "6", "OVERVIEWS": "AUTO", "OVERVIEW_RESAMPLING": "AVERAGE"},
        ),
        (
            "GDAL's COG driver, no overviews at all (not the contract; the encode alone)",
            {"OVERVIEWS": "NONE"},
        ),
    ):
        c, size = cog(src512, options)
        variants.append((label, c, size))
    out["cog_variants"] = variants
    store = Store(str(scratch / "breakdown-project"))
    prof = cProfile.Profile()
    w0, c0 = time.perf_counter(), time.process_time()
    prof.enable()
    r = engine.composite_month(TILE, YEAR, month, grid, scenes, store, access)
    prof.disable()
    out["composite_month"] = {
        "status": r.status,
        "wall": time.perf_counter() - w0,
        "cpu": time.process_time() - c0,
    }
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
    out["cprofile"] = buf.getvalue()
    results["breakdown"] = out


# =============================================================================================
# Report
# =============================================================================================


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    f = results["facts"]
    L: list[str] = []
    cmd = (
        "scripts/bench_hls.py"
        + (" --quick" if args.quick else "")
        + (" --memory" if args.memory else "")
        + (" --breakdown" if args.breakdown else "")
    )
    L.append(f"### HLS composites benchmark (`{cmd}`)")
    L.append("")
    L.append(
        f"- date: {f['date']}; machine: {f['nproc']} cores ({f['cpu_model']}), {f['ram_gib']} GiB RAM, shared with other "
        f"jobs; 1-minute load average at start {f['load_avg'][0]:.1f} (5/15 min {f['load_avg'][1]:.1f} / {f['load_avg'][2]:.1f})"
    )
    L.append("- versions: " + ", ".join(f"{k} {v}" for k, v in f["versions"].items()))
    if "speed" in results:
        L += speed_report(results, args)
    if "memory" in results:
        L += memory_report(results, args)
    if "breakdown" in results:
        L += breakdown_report(results["breakdown"])
    return "\n".join(L)


def speed_report(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    ar, ph = results["archive"], results["speed"]
    n = ar["scenes"]
    L = [
        (
            f"- archive: `{ar['key']}`: {n} scenes of {TILE} {YEAR} (L30 and S30), {ar['window']} x {ar['window']} px, "
            f"{len(ar['months'])} months, {ar['files']} files, {ar['bytes_read'] / 1e9:.2f} GB of DEFLATE COGs "
            f"({ar['bytes_read'] / ar['raw_bytes']:.2f} of their raw size), read from local files (page cache warmed first); "
            f"{'reused from cache' if ar.get('reused') else 'built'} ({ar['wall_seconds']:.0f} s)"
        ),
        (
            f"- Dask: LocalCluster, {args.workers} worker processes x {args.threads} threads for a, b and d; c as luigi.cfg "
            f"[hls] says (dask_in_process = true: the months on threads of the luigi process, one per core); a and b with "
            f'memory_limit {ab_memory_limit(args)} per worker (the pipeline: luigi.cfg\'s); b: chunks x/y {args.b_chunk}, groupby="id"; '
            f"d: {args.d_mode}"
        ),
        "",
        "| way | wall s | CPU s | scenes/s | compute s (without cluster start) | largest process peak RSS MiB | largest Dask worker MiB | load 1-min start -> end |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    walls: dict[str, float] = {}
    for way in WAYS:
        p = ph.get(way)
        if not p:
            continue
        ok = p["rc"] == 0
        if ok:
            walls[way] = p["wall"]
        flag = "" if ok else f" (FAILED: {p['stopped'] or 'exit ' + str(p['rc'])})"
        child = p.get("child", {})
        compute = child.get("compute_seconds")
        if way == "c":
            compute = p.get("split", {}).get("compositing (months)")
        label, rss = largest_process(p["processes"])
        label_text = LABELS["c-what-if"] if way == "c" and args.pipeline_root else LABELS[way]
        L.append(
            f"| {label_text}{flag} | {p['wall']:.1f} | {p['cpu']:.1f} | **{n / p['wall']:.2f}** | "
            f"{compute if compute is None else f'{compute:.1f}'} | {mib(rss)} ({label.split('[')[0]}) | "
            f"{mib(worker_peak(p['processes']))} | {p['load'][0][0]:.1f} -> {p['load'][1][0]:.1f} |"
        )
    L.append("")
    split = ph.get("c", {}).get("split")
    if split:
        L.append("c's wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in split.items()) + ".")
    if "c" in walls:
        ab = {w: walls[w] for w in ("a", "b") if w in walls}
        if ab:
            best = min(ab, key=lambda w: ab[w])
            r = ab[best] / walls["c"]
            L.append(
                f"Ratio c : faster of a and b ({best}) = **{r:.2f} x** (target >= 3: {'met' if r >= 3 else 'NOT met'})."
            )
        if "d" in walls:
            r = walls["c"] / walls["d"]
            comp = split.get("compositing (months)") if split else None
            extra = f"; counting c's compositing only {comp / walls['d']:.2f}" if comp else ""
            dc = ph["d"].get("child", {}).get("compute_seconds")
            extra += f"; against d without its cluster start ({dc:.1f} s) {walls['c'] / dc:.2f}" if dc else ""
            L.append(f"Ratio c / d = **{r:.2f}** (target <= 1.5: {'met' if r <= 1.5 else 'NOT met'}{extra}).")
        cpu = {w: ph[w]["cpu"] for w in walls}
        L.append(
            "CPU seconds (the process trees'; less moved by other jobs than wall time): "
            + ", ".join(f"{w} {cpu[w]:.0f}" for w in WAYS if w in cpu)
            + (f"; c / d {cpu['c'] / cpu['d']:.2f}" if "d" in cpu else "")
            + "."
        )
    chk = results.get("check")
    if chk:
        parts = []
        for w, st in chk.items():
            if st["agree"]:
                parts.append(
                    f"c = {w} on all {st['values']:,} values ({st['months']} months x 9 bands x pixels)"
                )
            else:
                parts.append(
                    f"c != {w}: {st['differ']:,} of {st['values']:,} values differ, months missing {st['missing']}, "
                    f"extra {st['extra_months']}, first {st['first']}"
                )
        L.append("Agreement (8 medians and valid_count, NaN = NaN): " + "; ".join(parts) + ".")
    rq = results.get("requests")
    if rq:
        L.append("")
        L.append(
            f"Requests (a separate pass: `{rq['archive']}`, {rq['scenes']} scenes x 9 files on a {rq['window']} px window, "
            f"served by Azurite from a private container behind the counting proxy, SAS-signed; uploaded in "
            f"{rq['upload_seconds']:.0f} s; not timed: Azurite and the proxy share the 2 cores):"
        )
        L.append("")
        L.append("| way | GET | HEAD | LIST | other | requests per file | MB transferred | token requests |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for way in WAYS:
            r = rq["ways"].get(way)
            if not r:
                continue
            q = r["requests"]["requests"]
            other = sum(v for k, v in q.items() if k not in ("GET", "HEAD", "LIST"))
            total = sum(q.values())
            flag = "" if r["rc"] == 0 else f" (FAILED: {r['stopped'] or 'exit ' + str(r['rc'])})"
            L.append(
                f"| {way}{flag} | {q.get('GET', 0):,} | {q.get('HEAD', 0):,} | {q.get('LIST', 0):,} | {other:,} | "
                f"{total / rq['files']:.2f} | {r['requests']['bytes'] / 1e6:,.1f} | {r['requests']['token_requests']} |"
            )
    L.append("")
    L.append("Peak RSS per process (sampled every 0.2 s) and its CPU seconds:")
    L.append("")
    L.append("| way | process | peak RSS MiB | CPU s |")
    L.append("|---|---|---:|---:|")
    for way in WAYS:
        p = ph.get(way)
        for label, rss, cpu in p["processes"] if p else []:
            if rss >= 40 * 2**20:
                L.append(f"| {way} | {label} | {mib(rss)} | {cpu:.1f} |")
    return L


def memory_report(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    mem, ar = results["memory"], results["archive"]
    L = [
        (
            f"- archive: `{ar['key']}` (`full_size_hls_spec({max(int(k) for k in mem)})`: whole 3660 x 3660 tiles, "
            f"{ar['n_items']} items, {ar['n_files']} files); each run takes that many of its scenes spread over the year"
        ),
        (
            f"- Dask: {args.workers} workers x {args.threads} threads; the pipeline with luigi.cfg's memory_limit, a and b with "
            f"{results['memory_limit_ab']} per worker; a run is stopped if the machine's available memory falls below 2 GiB"
        ),
        "",
        "| scenes | most scenes in a month | way | wall s | CPU s | largest Dask worker peak RSS MiB | largest process | status |",
        "|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for n in sorted(mem, key=int):
        for way, e in mem[n].items():
            if "skipped" in e:
                L.append(f"| {n} | | {way} | | | | | {e['skipped']} |")
                continue
            status = "ok" if e["rc"] == 0 else (e["stopped"] or f"exit {e['rc']}")
            label, rss = e["largest"]
            L.append(
                f"| {n} | {e['max_scenes_per_month']} | {way} | {e['wall']:.0f} | {e['cpu']:.0f} | "
                f"**{mib(e['worker_peak'])}** | {label.split('[')[0]} {mib(rss)} | {status} |"
            )
    return L


def breakdown_report(b: dict[str, Any]) -> list[str]:
    t = b["pieces_cpu"]
    total = sum(t.values())
    L = [
        "",
        (
            f"Breakdown of one month in the pipeline's engine (`{b['archive']}`, month {b['month']}: {b['scenes']} scenes, "
            f"{b['window']} px; CPU seconds of this one thread, measured piece by piece):"
        ),
        "",
        "| piece | CPU s | share |",
        "|---|---:|---:|",
    ]
    for k, v in t.items():
        L.append(f"| {k} | {v:.2f} | {100 * v / total:.0f} % |")
    L.append(f"| total | {total:.2f} | |")
    L += [
        "",
        "The COG step's variants on the same composite (CPU s, COG size):",
        "",
        "| variant | CPU s | MB |",
        "|---|---:|---:|",
    ]
    for label, c, s in b["cog_variants"]:
        L.append(f"| {label} | {c:.2f} | {s / 1e6:.1f} |")
    cm = b["composite_month"]
    L += [
        "",
        f"engine.composite_month itself under cProfile: {cm['wall']:.1f} s wall, {cm['cpu']:.1f} s CPU ({cm['status']}):",
        "",
        "```",
        b["cprofile"].strip(),
        "```",
    ]
    return L


# =============================================================================================


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="hls-bench-")).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    logdir = scratch / "logs"
    logdir.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "facts": H.machine_facts(),
        "args": {
            k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
        },
    }
    try:
        if args.breakdown:
            breakdown(args, scratch, results)
        elif args.memory:
            memory(args, scratch, logdir, results)
        else:
            speed(args, scratch, logdir, results)
        print(report(results, args), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    finally:
        if args.keep_outputs or args.workdir:
            H.log(f"outputs and logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    phases = results.get("speed", {})
    return 1 if any(p.get("rc") for p in phases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
