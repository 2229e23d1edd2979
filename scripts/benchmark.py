#!/usr/bin/env python
"""Throughput and S3 request budget of TimeSync extraction, measured in one run on the
same cores against a local S3 server.

    .venv/bin/python scripts/benchmark.py            # archive: 40 plots x 300 acquisitions; measured: 1984-1999
    .venv/bin/python scripts/benchmark.py --quick    # 12 plots x 24 acquisitions, a smoke test
    .venv/bin/python scripts/benchmark.py --datetime all --a-plots 8 --keep-archive   # everything

The first run builds the archive (1078 items, 7,546 COGs, 7.9 GB; ~20 min of CPU) and
uploads it (~1 min); ``--keep-archive`` keeps the server's copy for later runs.

What it does:

1. Builds a synthetic Landsat C2 ARD archive (``pipeline.demo.archive``; >= 40 plots on 4
   ARD tiles, plots sharing tiles, >= 300 acquisitions) or reuses it from
   ``--cache-dir`` (keyed by the spec), starts SeaweedFS behind the counting proxy
   (``tests/servers/s3.py``, 127.0.0.1 only) and uploads it to ``s3://usgs-landsat-ard``
   with the real key layout (items' ``alternate.s3.href``). Neither is timed.
2. Measures, each in its own process tree (sampled every 0.2 s for RSS and CPU):

   a-single  the recipe as the spec states it, written plainly (``bench_lib.recipe_plot``):
             one plot at a time; per observation open every item's qa_pixel and read the
             plot pixel, then open each band file and read its boundless window (rasterio
             ``boundless=True``, fill 0; qa_pixel opened a second time); mosaic, rescale,
             mask, composites, stretch, PNG (Pillow defaults), CSV into a local directory.
             GDAL defaults apart from what reaching the bucket needs. One process.
   a-dask    the same function, one Dask task per plot, on a LocalCluster with the
             pipeline's worker layout (``--workers`` processes x ``--threads``).
   b         the pipeline: ``luigi --module pipeline.timesync TimeSyncProject`` with its
             defaults (``--asset-href s3``, luigi.cfg of the repo, embedded LocalCluster),
             the archive endpoint given with ``--archive-endpoint-url``, outputs to a
             local directory (``--output s3`` writes to a bucket on the same server).
             Timed from command start to exit (search, planning, extraction, series, ingest).
   c         the floor: only the GDAL reads the outputs need, no recipe, no writes:
             acquisition-major (each thread takes an acquisition and reads every plot's
             windows from one set of open handles); qa_pixel is read at the plot only (the
             fill test; it is also the CSV's qa, and nothing else in the outputs uses QA);
             for usable observations the six optical windows of every item. ``--c-qa rows``
             or ``pixel`` also read the QA window (pixel: the pipeline's read plan).

   Throughput is plot-observations per second of wall time of the measurement's command,
   where a plot-observation is one (plot, acquisition day) pair the plot's chip tiles
   have items for, whether it is written or skipped as fill at the plot.
3. Prints a Markdown report: machine, versions, workload, per-measurement throughput,
   CPU, S3 requests per plot-observation by method (counted by the proxy), peak RSS per
   process, ratios and the targets. ``--json FILE`` keeps the numbers.

Every measurement uses the acquisitions of ``--datetime`` (default 1984-1999, 116 of the
300 dates, so that the default run stays near 20 minutes on 2 cores; b gets the same
``--datetime``). a-single and a-dask run on a subset of the plots (``--a-plots``, spread
over the plot file) because the plain loop is slow; their per-plot-observation figures do
not depend on how many plots run (one plot at a time, nothing shared between plots).
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

import bench_lib as B  # noqa: E402

PY = sys.executable
LUIGI = str(Path(sys.executable).with_name("luigi"))
OUT_BUCKET = "timesync-bench-out"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--plots",
        type=int,
        default=40,
        help="plots in the archive and in the pipeline run (>= 10; default 40)",
    )
    ap.add_argument(
        "--acquisitions", type=int, default=300, help="acquisition dates in the archive (default 300)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 12 plots x 24 acquisitions, a on 4 plots (< 3 min once cached)",
    )
    ap.add_argument(
        "--datetime",
        default=None,
        help="acquisition interval every measurement uses, YYYY-MM-DD/YYYY-MM-DD (passed to b as --datetime); "
        "default: all for --quick, 1984-01-01/1999-12-31 otherwise (about a third of the dates, so that "
        "the default run fits in ~20 min); 'all' for everything",
    )
    ap.add_argument(
        "--a-plots", type=int, default=4, help="plots the plain loop (a-single, a-dask) runs on (default 4)"
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Dask worker processes for a-dask and b (default: luigi.cfg's 0 = number of cores)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads per Dask worker for a-dask and b (default 2, as luigi.cfg)",
    )
    ap.add_argument("--c-procs", type=int, default=1, help="floor: reader processes (default 1)")
    ap.add_argument("--c-threads", type=int, default=4, help="floor: reader threads per process (default 4)")
    ap.add_argument(
        "--c-qa",
        choices=["centre", "rows", "pixel"],
        default="centre",
        help="floor's qa_pixel reads: centre (default) = only the 1-pixel read at the plot, which is all the "
        "outputs use (fill test, the CSV's qa; the mask comes from the optical bands); rows = the QA "
        "window too, its rows in the plot's block row first (fill test from them); pixel = 1-pixel read, "
        "then the QA window (the pipeline's read plan today)",
    )
    ap.add_argument(
        "--c-sweep",
        action="store_true",
        help="floor: also try procs x threads in {1,2} x {2,4,8} on the a-subset first and use the best",
    )
    ap.add_argument(
        "--output",
        choices=["local", "s3"],
        default="local",
        help="where b writes (default local dir); s3 = a bucket on the same server",
    )
    ap.add_argument("--skip-a", action="store_true", help="skip a-single and a-dask")
    ap.add_argument("--skip-a-single", action="store_true")
    ap.add_argument("--skip-a-dask", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--skip-c", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="skip comparing a's outputs with b's")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="after the timed runs, run b again under py-spy (all processes) and print where time goes",
    )
    ap.add_argument("--py-spy", default="", help="py-spy binary (default: on PATH or /tmp/tools/bin/py-spy)")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache" / "bench-archive",
        help="archive cache (default .cache/bench-archive)",
    )
    ap.add_argument("--rebuild", action="store_true", help="rebuild the archive even if cached")
    ap.add_argument(
        "--keep-archive",
        action="store_true",
        help="keep the server's copy of the archive (SeaweedFS data next to the cached build) so later runs "
        "skip the upload; without it, and unless an earlier run kept one, the copy is deleted at exit "
        "(the local build itself is always cached)",
    )
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir, removed at exit)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the scratch directory (outputs, logs)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.plots, args.acquisitions = 12, 24
        args.a_plots = min(args.a_plots, 3)
    if args.datetime is None:
        args.datetime = "all" if args.quick else "1984-01-01/1999-12-31"
    if args.datetime == "all":
        args.datetime = ""
    args.workers = args.workers or (os.cpu_count() or 1)
    if args.skip_a:
        args.skip_a_single = args.skip_a_dask = True
    return args


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Phase:
    """One measured command: its own process tree, request counts reset before it."""

    def __init__(self, name: str, server: Any, env: dict[str, str], logdir: Path):
        self.name, self.server, self.env, self.logdir = name, server, env, logdir
        self.result: dict[str, Any] = {"name": name}

    def run(
        self, cmd: list[str], *, cwd: Path, child_result: Path | None = None, timeout: float = 7200
    ) -> dict[str, Any]:
        srv = self.server
        srv.reset_counts()
        weed_pid = srv.weed.pid if srv.weed else None
        weed0 = B.proc_cpu(weed_pid) if weed_pid else 0.0
        kids0, self0 = children_cpu(), self_cpu()
        load0 = os.getloadavg()
        logf = open(self.logdir / f"{self.name}.log", "w")  # noqa: SIM115  (the child writes it; closed after wait)
        log(f"{self.name}: {' '.join(cmd[:6])} ...")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sampler = B.TreeSampler(proc.pid, label=self.label).start()
        lines: list[tuple[float, str]] = []

        def pump() -> None:  # each output line with its time since the start
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                t = time.perf_counter() - t0
                lines.append((t, line))
                logf.write(f"{t:9.3f} {line}\n")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            wall = time.perf_counter() - t0
            reader.join(timeout=10)
            sampler.stop()
            logf.close()
        self.result["task_seconds"] = luigi_task_seconds(lines, wall)
        r = self.result
        r.update(
            rc=rc,
            wall=wall,
            cmd=cmd,
            cpu=children_cpu() - kids0,
            server_cpu=(B.proc_cpu(weed_pid) - weed0 if weed_pid else 0.0) + (self_cpu() - self0),
            weed_cpu=B.proc_cpu(weed_pid) - weed0 if weed_pid else 0.0,
            proxy_cpu=self_cpu() - self0,  # the counting proxy's threads (and this process's sampler)
            archive_requests=srv.request_counts(B.BUCKET),
            archive_bytes=sum(srv.response_bytes(B.BUCKET).values()),
            out_requests=srv.request_counts(OUT_BUCKET),
            processes=sampler.report(),
            load=(load0, os.getloadavg()),
        )
        if child_result is not None and child_result.exists():
            r["child"] = json.loads(child_result.read_text())
        if rc != 0:
            tail = (self.logdir / f"{self.name}.log").read_text(errors="replace")[-3000:]
            log(f"{self.name} FAILED (exit {rc}); log tail:\n{tail}")
        else:
            log(f"{self.name}: {wall:.1f} s")
        return r

    def label(self, p: Any) -> str:
        """Process role for the RSS table: the measured command, Dask workers (spawned
        children of a Dask-using phase), other children."""
        try:
            cmd = " ".join(p.cmdline())
        except Exception:
            cmd = ""
        if "spawn_main" in cmd or "multiprocessing" in cmd:
            role = "dask worker" if self.name.startswith(("a-dask", "b")) else "reader process"
        elif "luigi" in cmd and "py-spy" not in cmd:
            role = "luigi (scheduler + task runner)"
        elif "bench_lib.py" in cmd:
            role = "main"
        elif "py-spy" in cmd:
            role = "py-spy"
        else:
            role = p.name()
        return f"{role} [{p.pid}]"


_TASK_RE = re.compile(r"\b(running|done|failed)\s+(TimeSync\w+)\(")


def luigi_task_seconds(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds per Luigi task family, from the timestamped 'running X(' / 'done X(' lines
    (one luigi worker runs tasks one at a time); 'startup' until the first task runs,
    'teardown' after the last one ends."""
    out: dict[str, float] = {}
    current: tuple[str, float] | None = None
    first = last = None
    for t, line in lines:
        m = _TASK_RE.search(line)
        if not m:
            continue
        what, family = m.groups()
        if what == "running":
            current = (family, t)
            first = t if first is None else first
        elif current and current[0] == family:
            out[family] = out.get(family, 0.0) + t - current[1]
            current = None
            last = t
    if first is not None and lines:
        out["startup"] = first
        out["teardown"] = wall - (last or first)
    return out


def pick_subset(plots: list[B.PlotRow], n: int) -> list[B.PlotRow]:
    """n plots spread evenly over the plot file (special and ordinary plots alike)."""
    if n >= len(plots):
        return list(plots)
    step = len(plots) / n
    return [plots[int(i * step)] for i in range(n)]


def workload_stats(plots: list[B.PlotRow], by_tile: dict, chip: int) -> dict[str, Any]:
    obs = [(p, o) for p in plots for o in B.observations(p, by_tile, chip)]
    n_items = sum(len(o[2]) for _p, o in obs)
    days = {(o[0], o[1]) for _p, o in obs}
    return {
        "plots": len(plots),
        "plot_obs": len(obs),
        "items_per_plot_obs": n_items / max(len(obs), 1),
        "acquisitions": len(days),
    }


def count_outputs(out: Path) -> dict[str, int]:
    csvs = pngs = 0
    for dirpath, _dirs, files in os.walk(out):
        if "/_state" in dirpath or dirpath.endswith("_state"):
            continue
        for f in files:
            if "_spectral_files_set_" in f and f.endswith(".csv"):
                csvs += 1
            elif f.endswith(".png"):
                pngs += 1
    return {"csv": csvs, "png": pngs}


def compare_a_b(a_out: Path, b_out: Path, png_sample: int = 150) -> str:
    """a's outputs against b's: every CSV byte-identical, a sample of PNGs pixel-identical."""
    import numpy as np
    from PIL import Image

    a_csv = sorted(a_out.rglob("*_spectral_files_set_*.csv"))
    bad = [
        p
        for p in a_csv
        if not (b_out / p.relative_to(a_out)).exists()
        or (b_out / p.relative_to(a_out)).read_bytes() != p.read_bytes()
    ]
    pngs = sorted(a_out.rglob("*.png"))
    step = max(1, len(pngs) // png_sample)
    sample = pngs[::step]
    bad_png = 0
    for p in sample:
        q = b_out / p.relative_to(a_out)
        if not q.exists() or not np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q))):
            bad_png += 1
    return (
        f"{len(a_csv) - len(bad)}/{len(a_csv)} CSVs byte-identical, "
        f"{len(sample) - bad_png}/{len(sample)} sampled PNGs pixel-identical"
    )


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.servers.s3 import start_s3_server

    facts = B.machine_facts()
    spec = B.bench_spec(args.plots, args.acquisitions, args.seed)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    archive = B.ensure_archive(args.cache_dir.resolve(), spec, rebuild=args.rebuild, log=log)
    kept_s3 = archive.root / "s3"
    if not archive.reused:
        shutil.rmtree(kept_s3, ignore_errors=True)  # a server copy of an earlier build is stale

    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="eo-bench-")).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    logdir = scratch / "logs"
    logdir.mkdir(exist_ok=True)
    # A copy kept by an earlier --keep-archive run is reused (no upload); otherwise the
    # server's data lives in the scratch directory and goes with it.
    s3_dir = kept_s3 if (args.keep_archive or kept_s3.exists()) else scratch / "s3"
    log(f"starting SeaweedFS in {s3_dir}")
    server = start_s3_server(s3_dir, timeout=60)
    results: dict[str, Any] = {
        "facts": facts,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    try:
        n_up, up_s, skipped = B.upload_archive(server, archive, log=log)
        log(
            f"archive in s3://{B.BUCKET}: {n_up} files"
            + (" (already uploaded)" if skipped else f", uploaded in {up_s:.0f} s")
        )
        if args.output == "s3":
            server.create_bucket(OUT_BUCKET)

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "GDAL_", "CPL_", "VSI_", "PIPELINE_"))
        }
        env.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_EC2_METADATA_DISABLED="true",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            LUIGI_CONFIG_PATH=str(REPO / "luigi.cfg"),
            PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'scripts'}",
        )

        plots = B.read_plots(archive.plot_file)
        by_tile = B.load_items(archive.catalog_ndjson, interval=args.datetime or None)
        chip = spec.chip_size
        subset = pick_subset(plots, args.a_plots)
        work_all = {
            "plots": [vars(p) for p in plots],
            "catalog": str(archive.catalog_ndjson),
            "chip": chip,
            "endpoint_host": server.host_port,
            "region": server.region,
            "datetime": args.datetime or None,
        }
        work_sub = dict(work_all, plots=[vars(p) for p in subset])
        (scratch / "work_all.json").write_text(json.dumps(work_all))
        (scratch / "work_sub.json").write_text(json.dumps(work_sub))
        B.write_plots(scratch / "plots_sub.csv", subset)
        wl_all, wl_sub = workload_stats(plots, by_tile, chip), workload_stats(subset, by_tile, chip)
        results["workload"] = {
            "all": wl_all,
            "subset": wl_sub,
            "subset_ids": [f"{p.project_id}/{p.plot_id}" for p in subset],
        }
        results["archive"] = {
            "key": archive.root.name,
            "n_items": archive.n_items,
            "n_files": archive.n_files,
            "gb": archive.total_bytes / 1e9,
            "build_seconds": archive.build_seconds,
            "build_cpu_seconds": archive.build_cpu_seconds,
            "reused": archive.reused,
            "tiles": [f"h{h:02d}v{v:02d}" for h, v in spec.tiles],
            "upload_seconds": up_s,
            "upload_skipped": skipped,
        }
        phases: dict[str, dict[str, Any]] = {}

        if not args.skip_a_single:
            out = scratch / "a-single"
            res = scratch / "a-single.json"
            ph = Phase("a-single", server, env, logdir)
            phases["a-single"] = ph.run(
                [
                    PY,
                    str(REPO / "scripts" / "bench_lib.py"),
                    "a-single",
                    "--work",
                    str(scratch / "work_sub.json"),
                    "--out",
                    str(out),
                    "--result",
                    str(res),
                ],
                cwd=scratch,
                child_result=res,
            )
            phases["a-single"]["plot_obs"] = wl_sub["plot_obs"]
        if not args.skip_a_dask:
            out = scratch / "a-dask"
            res = scratch / "a-dask.json"
            ph = Phase("a-dask", server, env, logdir)
            phases["a-dask"] = ph.run(
                [
                    PY,
                    str(REPO / "scripts" / "bench_lib.py"),
                    "a-dask",
                    "--work",
                    str(scratch / "work_sub.json"),
                    "--out",
                    str(out),
                    "--result",
                    str(res),
                    "--workers",
                    str(args.workers),
                    "--threads",
                    str(args.threads),
                ],
                cwd=scratch,
                child_result=res,
            )
            phases["a-dask"]["plot_obs"] = wl_sub["plot_obs"]

        b_out = scratch / "b-project"
        if not args.skip_b:
            project_dir = f"s3://{OUT_BUCKET}/b-project" if args.output == "s3" else str(b_out)
            cmd = [
                LUIGI,
                "--module",
                "pipeline.timesync",
                "TimeSyncProject",
                "--plot-file",
                str(archive.plot_file),
                "--project-dir",
                project_dir,
                "--catalog",
                str(archive.catalog_ndjson),
                "--archive-endpoint-url",
                server.endpoint_url,
                "--archive-region",
                server.region,
                "--dask-n-workers",
                str(args.workers),
                "--dask-threads-per-worker",
                str(args.threads),
                "--local-scheduler",
            ]
            if args.datetime:
                cmd += ["--datetime", args.datetime]
            if args.output == "s3":
                cmd += ["--output-endpoint-url", server.endpoint_url, "--output-region", server.region]
            (scratch / "b-cwd").mkdir(exist_ok=True)
            ph = Phase("b", server, env, logdir)
            phases["b"] = ph.run(cmd, cwd=scratch / "b-cwd")
            phases["b"]["plot_obs"] = wl_all["plot_obs"]
            if args.output == "local":
                phases["b"]["outputs"] = count_outputs(b_out)
            else:
                fs = server.fs()
                keys = fs.find(f"{OUT_BUCKET}/b-project")
                phases["b"]["outputs"] = {
                    "csv": sum("_spectral_files_set_" in k for k in keys),
                    "png": sum(k.endswith(".png") for k in keys),
                }

        if not args.skip_c:
            c_procs, c_threads = args.c_procs, args.c_threads
            if args.c_sweep:
                best = None
                sweep = []
                for procs in (1, 2):
                    for threads in (2, 4, 8):
                        res = scratch / f"c-sweep-{procs}x{threads}.json"
                        r = Phase(f"c-sweep-{procs}x{threads}", server, env, logdir).run(
                            [
                                PY,
                                str(REPO / "scripts" / "bench_lib.py"),
                                "c",
                                "--work",
                                str(scratch / "work_sub.json"),
                                "--result",
                                str(res),
                                "--procs",
                                str(procs),
                                "--threads",
                                str(threads),
                                "--qa",
                                args.c_qa,
                            ],
                            cwd=scratch,
                            child_result=res,
                        )
                        rate = wl_sub["plot_obs"] / r["wall"]
                        sweep.append((procs, threads, rate))
                        if best is None or rate > best[2]:
                            best = (procs, threads, rate)
                results["c_sweep"] = sweep
                c_procs, c_threads = best[0], best[1]
            res = scratch / "c.json"
            ph = Phase("c", server, env, logdir)
            phases["c"] = ph.run(
                [
                    PY,
                    str(REPO / "scripts" / "bench_lib.py"),
                    "c",
                    "--work",
                    str(scratch / "work_all.json"),
                    "--result",
                    str(res),
                    "--procs",
                    str(c_procs),
                    "--threads",
                    str(c_threads),
                    "--qa",
                    args.c_qa,
                ],
                cwd=scratch,
                child_result=res,
            )
            phases["c"]["plot_obs"] = wl_all["plot_obs"]
            qa_text = {
                "centre": "qa_pixel read at the plot only (no QA window)",
                "rows": "QA window read, fill test from its rows in the plot's block row",
                "pixel": "1-pixel QA read, then the QA window",
            }[args.c_qa]
            phases["c"]["config"] = (
                f"{c_procs} process{'es' if c_procs > 1 else ''} x {c_threads} threads, one handle per file per "
                f"thread and acquisition, {qa_text}"
            )

        if not args.no_check and "a-single" in phases and "b" in phases and args.output == "local":
            results["check"] = compare_a_b(scratch / "a-single", b_out)

        if args.profile and "b" in phases:
            results["profile"] = profile_b(args, server, env, logdir, scratch, archive)

        results["phases"] = phases
        text = report(results, args)
        print(text, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    finally:
        server.stop()
        shutil.rmtree(scratch / "s3", ignore_errors=True)
        if args.keep_outputs or args.workdir:
            log(f"outputs and logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    failed = [n for n, p in results.get("phases", {}).items() if p.get("rc")]
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# Profile of b (py-spy over the whole process tree)
# ---------------------------------------------------------------------------------------------


def find_py_spy(explicit: str) -> str | None:
    for cand in (explicit, shutil.which("py-spy") or "", "/tmp/tools/bin/py-spy"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def profile_b(
    args: argparse.Namespace,
    server: Any,
    env: dict[str, str],
    logdir: Path,
    scratch: Path,
    archive: B.ArchiveInfo,
) -> dict[str, Any]:
    spy = find_py_spy(args.py_spy)
    if not spy:
        return {"error": "py-spy not found (pip install py-spy, or --py-spy PATH)"}
    out = scratch / "b-profile"
    raw = scratch / "b-profile.txt"
    cmd = [
        spy,
        "record",
        "--subprocesses",
        "--nonblocking",
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--",
        LUIGI,
        "--module",
        "pipeline.timesync",
        "TimeSyncProject",
        "--plot-file",
        str(archive.plot_file),
        "--project-dir",
        str(out),
        "--catalog",
        str(archive.catalog_ndjson),
        "--archive-endpoint-url",
        server.endpoint_url,
        "--archive-region",
        server.region,
        "--dask-n-workers",
        str(args.workers),
        "--dask-threads-per-worker",
        str(args.threads),
        "--local-scheduler",
    ]
    if args.datetime:
        cmd += ["--datetime", args.datetime]
    (scratch / "b-cwd2").mkdir(exist_ok=True)
    r = Phase("b-profile", server, env, logdir).run(cmd, cwd=scratch / "b-cwd2")
    if not raw.exists():
        return {"error": f"py-spy wrote nothing (exit {r['rc']}); see {logdir / 'b-profile.log'}"}
    return {"wall": r["wall"], "summary": summarize_raw_profile(raw)}


# What a sample is doing: the innermost frame that matches decides (py-spy shows Python
# frames only, so time inside GDAL, zlib or numpy shows as the Python line that called it).
PROFILE_BUCKETS = [
    ("waiting in the event loop (select/poll)", ("selectors.py", "select (", "poll (")),
    ("PNG encode", ("pipeline/png.py", "encode_rgb_png")),
    (
        "dataset open / GDAL env",
        (
            "RasterReader.dataset (",
            "open (rasterio/__init__",
            "rasterio/env.py",
            "rasterio/session.py",
            "RasterReader.__enter__",
            "RasterReader.__exit__",
        ),
    ),
    (
        "raster reads (GDAL: S3 round trips + decode)",
        (
            "RasterReader.window (",
            "RasterReader.pixel (",
            "read_rows",
            "qa_rows_first",
            "rasterio/windows.py",
        ),
    ),
    ("recipe numpy", ("recipe.py",)),
    ("output writes", ("targets/",)),
    ("extract glue", ("extract.py",)),
    ("Dask / distributed machinery", ("distributed/", "tornado/", "asyncio/", "msgpack", "pickle", "dask/")),
    ("imports", ("importlib", "<frozen")),
    (
        "Luigi, planning, listings, report",
        ("luigi/", "engine.py", "plan.py", "catalog.py", "report.py", "summary.py", "layout.py", "plots.py"),
    ),
]


_PROCESS_FRAME = re.compile(r'process \d+:"[^"]*";?')


def _bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in PROFILE_BUCKETS:
            if any(nd in frame for nd in needles):
                return name
    return "other"


def summarize_raw_profile(raw: Path) -> list[tuple[str, float, str]]:
    """py-spy raw (collapsed) stacks -> share of (active) samples per process role and
    bucket, and the top innermost frames of the Dask workers."""
    by_role: dict[str, dict[str, int]] = {}
    leaves: dict[str, int] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        try:
            count = int(n)
        except ValueError:
            continue
        role = "Dask workers" if "spawn_main" in stack else "luigi process"
        frames = [f for f in _PROCESS_FRAME.sub("", stack).split(";") if f]
        bucket = _bucket(frames)
        by_role.setdefault(role, {})
        by_role[role][bucket] = by_role[role].get(bucket, 0) + count
        if role == "Dask workers" and frames:
            leaves[frames[-1]] = leaves.get(frames[-1], 0) + count
    out = []
    grand = sum(sum(b.values()) for b in by_role.values()) or 1
    for role in sorted(by_role):
        buckets = by_role[role]
        tot = sum(buckets.values())
        out.append((role, 100.0 * tot / grand, "(all of this process kind)"))
        for bucket, n in sorted(buckets.items(), key=lambda kv: -kv[1]):
            out.append((f"  {role}", 100.0 * n / grand, bucket))
    wtot = sum(leaves.values()) or 1
    for leaf, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:10]:
        out.append(("Dask workers, innermost frame", 100.0 * n / wtot, leaf[:120]))
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

LABELS = {
    "a-single": "a-single: plain recipe loop, 1 process",
    "a-dask": "a-dask: plain recipe, Dask task per plot",
    "b": "b: pipeline, luigi CLI defaults",
    "c": "c: floor, GDAL window reads only",
}


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    f, ar, wl, ph = results["facts"], results["archive"], results["workload"], results["phases"]
    v = f["versions"]
    L: list[str] = []
    L.append(
        "### TimeSync extraction benchmark (`scripts/benchmark.py" + (" --quick" if args.quick else "") + "`)"
    )
    L.append("")
    L.append(
        f"- date: {f['date']}; machine: {f['nproc']} cores ({f['cpu_model']}), {f['ram_gib']} GiB RAM, Linux {f['kernel']}; "
        f"load average at start {f['load_avg'][0]:.1f} / {f['load_avg'][1]:.1f} / {f['load_avg'][2]:.1f} (1/5/15 min)"
    )
    L.append("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    L.append(
        f"- archive: {args.plots} plots on {len(ar['tiles'])} ARD tiles ({', '.join(ar['tiles'])}), {args.acquisitions} acquisitions "
        f"1984-2024, {fmt_int(ar['n_items'])} items, {fmt_int(ar['n_files'])} COGs, {ar['gb']:.1f} GB "
        f"({'reused from cache' if ar['reused'] else 'built'}; build {ar['build_seconds']:.0f} s wall"
        + (f", {ar['build_cpu_seconds']:.0f} s CPU" if ar.get("build_cpu_seconds") else "")
        + "), "
        f"served from s3://{B.BUCKET} by SeaweedFS on 127.0.0.1 behind the counting proxy (same machine, same cores)"
    )
    a_, s_ = wl["all"], wl["subset"]
    L.append(
        f"- workload: acquisitions {args.datetime.replace('/', ' to ') if args.datetime else 'all'} "
        f"({a_['acquisitions']} dates); b and c: {fmt_int(a_['plot_obs'])} plot-observations ({a_['plots']} plots, "
        f"{a_['items_per_plot_obs']:.2f} items each); a-single and a-dask: {fmt_int(s_['plot_obs'])} plot-observations "
        f"({s_['plots']} plots spread over the plot file, {s_['items_per_plot_obs']:.2f} items each)"
    )
    L.append(
        f"- Dask (a-dask and b): LocalCluster, {args.workers} worker processes x {args.threads} threads; "
        f"b writes to {'a local directory' if args.output == 'local' else 's3://' + OUT_BUCKET + ' on the same server'}; "
        f"c: {ph.get('c', {}).get('config', '-')}"
    )
    L.append("")
    L.append(
        "| measurement | plot-obs (written + fill) | wall s | plot-obs/s | CPU ms/plot-obs | server CPU ms/plot-obs | CPU-bound ceiling plot-obs/s | GET | HEAD | LIST | other | requests/plot-obs | MB read/plot-obs |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rates: dict[str, float] = {}
    nproc = f["nproc"] or 1
    for name in ("a-single", "a-dask", "b", "c"):
        p = ph.get(name)
        if not p:
            continue
        n = p["plot_obs"]
        rate = n / p["wall"] if p["wall"] else 0.0
        if p.get("rc") == 0:
            rates[name] = rate
        req = p["archive_requests"]
        other = sum(val for k, val in req.items() if k not in ("GET", "HEAD", "LIST"))
        total = sum(req.values())
        child = p.get("child", {})
        written = child.get("written", p.get("outputs", {}).get("csv"))
        split = f"{fmt_int(written)} + {fmt_int(n - written)}" if isinstance(written, int) else "?"
        flag = "" if p.get("rc") == 0 else f" (FAILED, exit {p.get('rc')})"
        cpu_ms, srv_ms = 1000 * p["cpu"] / n, 1000 * p["server_cpu"] / n
        ceiling = nproc * 1000 / (cpu_ms + srv_ms) if cpu_ms + srv_ms else 0.0
        L.append(
            f"| {LABELS[name]}{flag} | {fmt_int(n)} ({split}) | {p['wall']:.1f} | **{rate:.1f}** | "
            f"{cpu_ms:.0f} | {srv_ms:.0f} | {ceiling:.0f} | {req['GET'] / n:.2f} | {req['HEAD'] / n:.2f} | "
            f"{req['LIST'] / n:.2f} | {other / n:.2f} | **{total / n:.2f}** | {p['archive_bytes'] / n / 1e6:.2f} |"
        )
    L.append("")
    L.append(
        "plot-obs/s is plot-observations (written + skipped as fill at the plot) per second of the command's wall time. "
        "Requests are the archive bucket's, counted at the server (the proxy). CPU is the measured process tree's "
        "(user + system); server CPU is SeaweedFS plus the counting proxy, on the same cores; the CPU-bound ceiling "
        f"is {nproc} cores / (both CPUs per plot-observation): the rate if the cores did nothing else and nothing waited."
    )
    if "b" in ph and args.output == "s3":
        o = ph["b"]["out_requests"]
        n = ph["b"]["plot_obs"]
        L.append(
            "b's output bucket: "
            + ", ".join(f"{k} {val / n:.2f}" for k, val in o.items() if val)
            + " requests per plot-observation."
        )
    ts = ph.get("b", {}).get("task_seconds") or {}
    if ts:
        order = [
            "startup",
            "TimeSyncSearch",
            "TimeSyncPlotBatch",
            "TimeSyncIngest",
            "TimeSyncReport",
            "teardown",
        ]
        parts = [f"{k} {ts[k]:.1f}" for k in order if k in ts] + [
            f"{k} {v:.1f}" for k, v in ts.items() if k not in order
        ]
        L.append("b's wall time by Luigi task family (s): " + ", ".join(parts) + ".")
        if ts.get("TimeSyncPlotBatch"):
            L.append(
                f"b counting only its TimeSyncPlotBatch tasks (the extraction proper): "
                f"{ph['b']['plot_obs'] / ts['TimeSyncPlotBatch']:.1f} plot-obs/s."
            )
    L.append("")
    ratio_lines = []
    b_batch = None
    if "b" in rates and ts.get("TimeSyncPlotBatch"):
        b_batch = ph["b"]["plot_obs"] / ts["TimeSyncPlotBatch"]
    if "b" in rates:
        for ref in ("a-single", "a-dask", "c"):
            if rates.get(ref):
                extra = f" ({b_batch / rates[ref]:.2f} counting b's extraction tasks only)" if b_batch else ""
                ratio_lines.append(f"b / {ref} = **{rates['b'] / rates[ref]:.2f}**{extra}")
    if ratio_lines:
        L.append("Ratios of plot-observations per second (b: whole command): " + "; ".join(ratio_lines) + ".")
    ceilings = {
        name: p["plot_obs"] / (p["cpu"] + p["server_cpu"])
        for name, p in ph.items()
        if p.get("rc") == 0 and p["cpu"] + p["server_cpu"] > 0
    }
    if "b" in ceilings:
        parts = [
            f"b / {ref} = {ceilings['b'] / ceilings[ref]:.2f}"
            for ref in ("a-single", "a-dask", "c")
            if ref in ceilings
        ]
        if parts:
            L.append(
                "Ratios of CPU-bound ceilings (plot-observations per CPU second of the measured tree and the server; "
                "other jobs on the machine move them far less than the wall-clock ratios): "
                + "; ".join(parts)
                + "."
            )
    loads = [
        f"{name} {p['load'][0][0]:.1f} -> {p['load'][1][0]:.1f}" for name, p in ph.items() if p.get("load")
    ]
    if loads:
        L.append(
            "1-minute load average at the start -> end of each measurement (each measurement's own processes count "
            f"too; on an idle machine it stays near {nproc}): " + ", ".join(loads) + "."
        )
    split = [
        f"{name} {p['weed_cpu']:.1f} + {p['proxy_cpu']:.1f}" for name, p in ph.items() if "weed_cpu" in p
    ]
    if split:
        L.append(
            "Server CPU seconds, SeaweedFS + counting proxy (the proxy keeps one upstream connection per client "
            "connection; a new one per request cost SeaweedFS ~0.8 ms per GET): " + ", ".join(split) + "."
        )
    tgt = []
    if "b" in rates and "a-dask" in rates:
        r = rates["b"] / rates["a-dask"]
        tgt.append(f"b >= 5 x a-dask: {r:.2f} x ({'met' if r >= 5 else 'not met'})")
    if "b" in rates and "c" in rates:
        r = rates["b"] / rates["c"]
        tgt.append(f"b >= 60% of c: {100 * r:.0f}% ({'met' if r >= 0.6 else 'not met'})")
    if "b" in ph:
        n = ph["b"]["plot_obs"]
        per = sum(ph["b"]["archive_requests"].values()) / n
        tgt.append(f"<= 10 S3 requests per plot-observation: {per:.2f} ({'met' if per <= 10 else 'not met'})")
    if tgt:
        L.append("Targets: " + "; ".join(tgt) + ".")
        if args.quick:
            L.append(
                "(--quick is a smoke test: on 12 plots x 24 acquisitions the run's fixed costs (cluster start, "
                "report, a file header per handful of observations) dominate; the targets are read on the default run.)"
            )
    if "check" in results:
        L.append(f"Same outputs: a-single vs b on a's plots: {results['check']}.")
    if results.get("c_sweep"):
        L.append(
            "Floor sweep on a's plots (plot-obs/s): "
            + ", ".join(f"{p}p x {t}t {r:.1f}" for p, t, r in results["c_sweep"])
            + "."
        )
    L.append("")
    L.append("Peak RSS per process (sampled every 0.2 s) and its CPU seconds:")
    L.append("")
    L.append("| measurement | process | peak RSS MiB | CPU s |")
    L.append("|---|---|---:|---:|")
    for name in ("a-single", "a-dask", "b", "c"):
        p = ph.get(name)
        if not p:
            continue
        for label, rss, cpu in p["processes"]:
            if rss < 20 * 2**20:
                continue  # shell wrappers, resource trackers
            L.append(f"| {name} | {label} | {rss / 2**20:.0f} | {cpu:.1f} |")
    prof = results.get("profile")
    if prof:
        L.append("")
        if "error" in prof:
            L.append(f"Profile of b: {prof['error']}")
        else:
            L.append(
                f"Profile of b (py-spy --subprocesses, 100 Hz, active threads only; b run again under the profiler: "
                f"{prof['wall']:.0f} s); % of all samples (last rows: % of worker samples):"
            )
            L.append("")
            L.append("| process | % | where |")
            L.append("|---|---:|---|")
            for role, pct, what in prof["summary"]:
                if pct >= 1.0:
                    L.append(f"| {role} | {pct:.1f} | {what.replace('|', '/')} |")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
