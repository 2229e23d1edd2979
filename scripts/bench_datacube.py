#!/usr/bin/env python
"""Datacube chips (issue 14): the old Clay ``scripts/datacube.py`` against this workflow's
``DatacubeTile``, on one synthetic archive, the same STAC API, the same tile and cores, in one run.

    .venv/bin/python scripts/bench_datacube.py                # 512 px chips, tile window 4 x 3 chips
    .venv/bin/python scripts/bench_datacube.py --chips 8x6    # a bigger window (2 x 2 the pixels)

  old  Clay-foundation/model ``scripts/datacube.py`` at c6a8365 (with its ``tile.py``), run by
       ``scripts/bench_datacube_ref_runner.py`` in its own venv (stackstac, pystac-client,
       planetary-computer, rioxarray): pystac-client searches with CQL2, a ``stackstac.stack`` of
       the whole S2 item, S1 and DEM mosaics on its grid, ``.compute()`` of the whole tile, then
       chipping; unchanged but for the STAC root, a no-op signing and a local copy in place of
       ``aws s3 sync``. Dask's default threaded scheduler (one thread per core).
  new  ``luigi --module pipeline.datacube DatacubeTile --index N ... --local-scheduler`` (the whole
       command: start-up, searches, chips, manifests) with luigi.cfg as it is: its chips on an
       in-process Dask cluster of one worker with one thread per core ([datacube] dask_in_process;
       the old script's layout: same cores, threads); and, for comparison, on [dask]'s worker
       processes (``--new processes``: ``--datacube-dask-in-process false``).

Both read the same local COGs (page cache warmed first, not timed) and search the same pgstac
STAC API (``scripts/stac_server.py``: stac-fastapi-pgstac, CQL2 filter) through
``tests/servers/counting_proxy.py``, which counts every STAC request. Each run's process tree is
sampled every 0.1 s (``bench_lib.TreeSampler``): peak RSS (sum over the tree at its largest, and
the largest process) and bytes read from files (``/proc/PID/io`` rchar, the tree's sum).

Then the outputs are compared: chips present in both (same name) must hold the same values in
all 13 bands; the old chips' transforms are reported against the new (the old script's half-pixel
shift); a date or chip only one of them has is listed (the old script's defects: a neighbour
tile's scene picked by datetime, S1 coverage decided from one scene). Prints a Markdown report
with chips per second, peak memory, requests and the ratios (new : old), and the 1-minute load
average at the start and end of each run.

Setup (once): ``fetch`` github:Clay-foundation/model (a bare mirror), then

    mkdir -p .cache/datacube-ref && git --git-dir=MIRROR archive c6a8365 scripts/datacube.py scripts/tile.py \
        | tar -x -C .cache/datacube-ref
    python3.11 -m venv .cache/datacube-ref-venv && .cache/datacube-ref-venv/bin/pip install \
        stackstac==0.5.0 pystac==1.9.0 pystac-client==0.7.5 'numpy<2' 'geopandas>=0.14,<0.15' \
        planetary-computer pyogrio click rioxarray xarray 'dask[array]' rasterio psutil shapely

(the versions its ``conda-lock.yml`` pins where newer ones break it: newer pystac renames
``proj:epsg``, numpy 2 breaks stackstac's cast check). ``--tile`` hrefs are absolute paths:
build the tile with an absolute ``--cache-dir`` (the default is).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
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

from bench_lib import TreeSampler  # noqa: E402 - from scripts/, put on sys.path above

REF_DIR = REPO / ".cache" / "datacube-ref" / "scripts"
REF_PYTHON = REPO / ".cache" / "datacube-ref-venv" / "bin" / "python"
RUNNER = REPO / "scripts" / "bench_datacube_ref_runner.py"
LUIGI = str(Path(sys.executable).with_name("luigi"))
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_reference() -> None:
    if (
        not (REF_DIR / "datacube.py").is_file()
        or not (REF_DIR / "tile.py").is_file()
        or not REF_PYTHON.is_file()
    ):
        doc = __doc__ or ""
        sys.exit("the old script is not set up:\n" + doc[doc.index("Setup (once)") :])


def ensure_archive(cache: Path, chips_x: int, chips_y: int, chip: int) -> Any:
    """The synthetic archive (pipeline/demo/datacube_archive.py) with 512 px chips, built once.
    Its DEM items are 0.5 degree cells (the tests' 0.02 degree cells would give a window of
    4 x 3 chips ~120 DEM items to mosaic; a real tile has 2-4)."""
    from pipeline.demo.datacube_archive import DatacubeArchiveSpec, make_datacube_archive

    spec = DatacubeArchiveSpec(chip_size=chip, chips_x=chips_x, chips_y=chips_y, remainder=10, dem_cell=0.5)
    root = cache / f"archive-c{chip}-{chips_x}x{chips_y}-dem50"
    done = root / "built.json"
    if not done.exists():
        log(f"building the archive in {root} (once)")
        archive = make_datacube_archive(root, spec, overwrite=True)
        done.write_text(json.dumps({"build_seconds": archive.build_seconds}))
        return archive
    return make_archive_view(root, spec)


def make_archive_view(root: Path, spec: Any) -> Any:
    """The archive's paths and items, read back from a built archive."""
    from types import SimpleNamespace

    items = [
        json.loads(line) for line in (root / "catalog" / "items.ndjson").read_text().splitlines() if line
    ]
    collections = {p.stem: p for p in sorted((root / "catalog" / "collections").glob("*.json"))}
    return SimpleNamespace(
        root=root, spec=spec, items=items, sample_path=root / "sample.fgb",
        collection_paths=collections, manifest=json.loads((root / "archive.json").read_text()),
    )  # fmt: skip


def items_for_both(archive: Any, index: int) -> list[dict[str, Any]]:
    """The archive's items less the S2 scenes of the row's years that have S2 candidates but no
    S1 match (the archive's "year without S1" case): on such a year, with fewer than 20
    candidates, the old script's ``iloc[index]`` raises IndexError at the 3rd attempt and the
    run dies (on Planetary Computer a tile-year has more than 20 low-cloud scenes). Both runs
    search the same reduced catalogue."""
    manifest = getattr(archive, "manifest", None) or json.loads((archive.root / "archive.json").read_text())
    skipped = {int(y) for y in manifest["skipped_years"].get(str(index), {})}
    mgrs = manifest["tiles"][index]
    return [
        it for it in archive.items
        if not (it["collection"] == "sentinel-2-l2a" and it["properties"].get("s2:mgrs_tile") == mgrs
                and int(it["properties"]["datetime"][:4]) in skipped)
    ]  # fmt: skip


def warm_page_cache(items: list[dict[str, Any]]) -> int:
    total = 0
    for item in items:
        for asset in item["assets"].values():
            path = Path(asset["href"])
            if path.is_file():
                with path.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        total += len(chunk)
    return total


def stac_classify(method: str, target: str) -> str:
    path = target.partition("?")[0].rstrip("/")
    return f"{method} {path.rsplit('/', 1)[-1] or '/'}"


def stac_split(target: str) -> tuple[str, str, str]:
    path, _, query = target.partition("?")
    return "stac", path, query


class TreeIO:
    """Largest rchar seen per process of a tree (bytes read through read(2) and friends), the
    largest sum of RSS over the tree, and the memory guard: when the machine's available memory
    falls below ``min_available`` bytes the tree's process group is killed (``stopped``)."""

    def __init__(self, root_pid: int, min_available: int = 0) -> None:
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(root_pid)
        self.rchar: dict[int, int] = {}
        self.total_rss_peak = 0
        self.min_available = min_available
        self.stopped: dict[str, int] | None = None  # the tree's RSS and available bytes when stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ps = self.psutil
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except ps.Error:
                procs = []
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                    self.rchar[p.pid] = max(self.rchar.get(p.pid, 0), p.io_counters().read_chars)
                except ps.Error:
                    continue
            self.total_rss_peak = max(self.total_rss_peak, rss)
            available = ps.virtual_memory().available
            if self.min_available and self.stopped is None and available < self.min_available:
                # The run was started in its own session: its process group is its tree.
                self.stopped = {"rss": rss, "available": available}
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.root.pid, signal.SIGKILL)
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(
    cmd: list[str], env: dict[str, str], cwd: Path, proxy: Any, min_available: int = 0
) -> dict[str, Any]:
    """Run ``cmd`` sampled: wall seconds, peak RSS (tree sum, largest process), rchar, STAC requests;
    killed (``stopped`` set, not an error) if available memory falls below ``min_available``."""
    proxy.reset()
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sampler = TreeSampler(proc.pid, interval=0.1).start()
    io = TreeIO(proc.pid, min_available)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    sampler.stop()
    io.stop()
    if proc.returncode != 0 and io.stopped is None:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode})\n{out[-3000:]}\n{err[-6000:]}")
    per_process = sampler.report()
    return {
        "seconds": seconds, "load_start": load0, "load_end": os.getloadavg()[0],
        "peak_rss_tree": io.total_rss_peak, "peak_rss_process": max(r for _, r, _ in per_process),
        "processes": len(per_process), "stopped": io.stopped, "per_process": per_process,
        "cpu_seconds": sum(c for _, _, c in per_process), "rchar": sum(io.rchar.values()),
        "requests": dict(sorted((k, v) for k, v in proxy.counts().items() if v)), "stderr": err, "stdout": out,
    }  # fmt: skip


def chips_of(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(root.rglob("claytile_*.tif"))}


def compare(old_root: Path, new_root: Path) -> dict[str, Any]:
    """Chips by name: equal values (NaN = NaN) where both have them; the old transforms' offset."""
    import numpy as np
    import rasterio

    old, new = chips_of(old_root), chips_of(new_root)
    both = sorted(set(old) & set(new))
    equal, unequal, offsets = [], [], set()
    cells: dict[str, list[int]] = {}  # band -> [equal cells, cells]
    for name in both:
        with rasterio.open(old[name]) as a, rasterio.open(new[name]) as b:
            va, vb = a.read(), b.read()
            same_cells = (va == vb) | (np.isnan(va) & np.isnan(vb))
            (equal if bool(same_cells.all()) else unequal).append(name)
            for i, band in enumerate(b.descriptions):
                counts = cells.setdefault(str(band), [0, 0])
                counts[0] += int(same_cells[i].sum())
                counts[1] += same_cells[i].size
            ta, tb = a.transform, b.transform
            offsets.add(((ta.c - tb.c) / tb.a, (ta.f - tb.f) / tb.e, a.crs == b.crs, a.count, b.count))
    return {
        "old_only": sorted(set(old) - set(new)), "new_only": sorted(set(new) - set(old)), "both": len(both),
        "equal": len(equal), "unequal": unequal, "offsets_px": sorted(offsets),
        "equal_cells": {band: n / total for band, (n, total) in cells.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--chips", default="4x3", help="the tile window in chips, COLSxROWS (>= 4x3)")
    p.add_argument("--chip-size", type=int, default=512, help="the old script's TILE_SIZE is 512")
    p.add_argument("--index", type=int, default=0, help="the sample row")
    p.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench-datacube")
    p.add_argument("--keep", type=Path, default=None, help="keep both outputs under this directory")
    p.add_argument("--tile", type=int, default=0, metavar="SIZE",
                   help="instead of --chips: a whole SIZE x SIZE tile (10980 = a real S2 tile; "
                        "scripts/bench_datacube_fulltile.py), --dates dates")  # fmt: skip
    p.add_argument("--dates", type=int, default=3, help="with --tile: dates in the catalogue (1-3)")
    p.add_argument("--dates-per-tile", type=int, default=0,
                   help="both ways' dates per tile (the old script's DATES_PER_LOCATION); default 3, "
                        "with --tile --dates (so neither searches years without a scene)")  # fmt: skip
    p.add_argument("--new", default="default,processes",
                   help="the workflow's Dask layouts to run, comma-separated: default = luigi.cfg as it is "
                        "(the chips on threads of the luigi process, [datacube] dask_in_process); processes = "
                        "[dask]'s worker processes (--datacube-dask-in-process false); threads = 1 in-process "
                        "worker x one thread per core given on the command line (the old script's layout)")  # fmt: skip
    p.add_argument("--min-available-gib", type=float, default=3.0,
                   help="memory guard: a run is killed (and reported as stopped) when the machine's "
                        "available memory falls below this")  # fmt: skip
    args = p.parse_args(argv)
    layouts = [m.strip() for m in args.new.split(",") if m.strip()]
    if not layouts or set(layouts) - set(NEW_LAYOUTS):
        p.error(f"--new: choose from {', '.join(NEW_LAYOUTS)}")
    chips_x, chips_y = (int(v) for v in args.chips.lower().split("x"))
    ensure_reference()

    from tests.servers.counting_proxy import CountingProxy
    from tests.servers.stac import start_stac_server

    dates_per_tile = args.dates_per_tile or (args.dates if args.tile else 3)
    args.dates_per_tile = dates_per_tile  # for the report
    if args.tile:
        from bench_datacube_fulltile import fulltile_archive

        archive = fulltile_archive(args.cache_dir, args.tile, args.chip_size, args.dates)
    else:
        archive = ensure_archive(args.cache_dir, chips_x, chips_y, args.chip_size)
    work = Path(tempfile.mkdtemp(prefix="bench-datacube-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    log("starting the pgstac STAC API")
    server = start_stac_server(args.cache_dir / "stac")
    try:
        items = items_for_both(archive, args.index)
        log(f"{len(items)} of the archive's {len(archive.items)} items in the STAC API")
        for i, (cid, path) in enumerate(sorted(archive.collection_paths.items())):
            server.load_items(
                [it for it in items if it["collection"] == cid],
                json.loads(path.read_text()),
                append=i > 0,
            )
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        proxy = CountingProxy(
            "127.0.0.1", port, classify=stac_classify, split_target=stac_split, track_headers=()
        )
        stac = f"http://127.0.0.1:{proxy.port}"
        log(f"warming the page cache: {warm_page_cache(items) / MIB:.0f} MiB")
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(REPO / "luigi.cfg"), "PYTHONUNBUFFERED": "1"}
        env.pop("PIPELINE_RUN_STATS", None)
        guard = int(args.min_available_gib * 1024 * MIB)
        results: dict[str, dict[str, Any]] = {}
        log("old: Clay scripts/datacube.py")
        outs = {"old": work / "old"}
        results["old"] = run_measured(
            [str(REF_PYTHON), str(RUNNER), "--ref-dir", str(REF_DIR), "--stac", stac,
             "--sample", str(archive.sample_path), "--index", str(args.index), "--out", str(outs["old"]),
             "--dates-per-tile", str(dates_per_tile)],
            env, work, proxy, guard,
        )  # fmt: skip
        if results["old"]["stopped"]:
            log(f"old: STOPPED by the memory guard ({results['old']['stopped']})")
        for layout in layouts:
            log(f"new: luigi DatacubeTile, Dask {layout}")
            outs[layout] = work / f"new-{layout}"
            results[layout] = run_measured(
                [LUIGI, "--module", "pipeline.datacube", "DatacubeTile", "--index", str(args.index),
                 "--sample", str(archive.sample_path), "--catalog", stac, "--dest", str(outs[layout]),
                 "--chip-size", str(args.chip_size), "--dates-per-tile", str(dates_per_tile),
                 "--local-scheduler", *NEW_LAYOUTS[layout]],
                env, work, proxy, guard,
            )  # fmt: skip
        proxy.stop()
    finally:
        server.stop()
    log("comparing the outputs")
    cmp = compare(outs["old"], outs[layouts[0]])
    report(args, archive, results, cmp, outs, layouts)
    return 0


CORES = os.cpu_count() or 2
# The workflow's Dask layouts (luigi command-line overrides of luigi.cfg [dask]).
NEW_LAYOUTS: dict[str, list[str]] = {
    "default": [],  # luigi.cfg as it is: [datacube] dask_in_process = true, one thread per core
    # [dask]'s layout: a LocalCluster of worker processes (n_workers 0 = one per core, 2 threads each)
    "processes": ["--datacube-dask-in-process", "false"],
    "threads": [
        "--datacube-dask-in-process",
        "false",
        "--dask-n-workers",
        "1",
        "--dask-threads-per-worker",
        str(CORES),
        "--dask-processes",
        "false",
    ],
}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def report(args: Any, archive: Any, results: dict[str, dict[str, Any]], cmp: dict[str, Any],
           outs: dict[str, Path], layouts: list[str]) -> None:  # fmt: skip
    spec = archive.spec
    chips = {k: len(chips_of(root)) for k, root in outs.items()}
    what = (
        f"a whole {spec.width} x {spec.height} px tile"
        if args.tile
        else f"a {spec.width} x {spec.height} px tile window"
    )
    print(f"## Datacube chips: old Clay scripts/datacube.py vs DatacubeTile (sample row {args.index})\n")
    print(f"Archive: {what} (chips {spec.chips_x} x {spec.chips_y} of {spec.chip_size}), "
          f"{len(archive.items)} items; dates per tile {args.dates_per_tile}; {CORES} cores; "
          f"memory guard: available < {args.min_available_gib:g} GiB.\n")  # fmt: skip
    print("| | wall s | CPU s | chips written | chips/s | chips per CPU s | peak RSS tree MiB | largest process MiB | "
          "processes | file bytes read MiB | STAC requests | load start / end |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    labels = {"old": "old script (1 process, Dask threads)",
              "default": "DatacubeTile, luigi.cfg as it is (chips on threads of the luigi process)",
              "processes": "DatacubeTile, [dask] worker processes (--datacube-dask-in-process false)",
              "threads": f"DatacubeTile, 1 in-process Dask worker x {CORES} threads ([dask] flags)"}  # fmt: skip
    for key in ("old", *layouts):
        r = results[key]
        stopped = " **STOPPED by the memory guard**" if r["stopped"] else ""
        print(f"| {labels[key]}{stopped} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {chips[key]} | "
              f"{ratio(chips[key], r['seconds']):.2f} | {ratio(chips[key], r['cpu_seconds']):.2f} | "
              f"{r['peak_rss_tree'] / MIB:.0f} | {r['peak_rss_process'] / MIB:.0f} | {r['processes']} | "
              f"{r['rchar'] / MIB:.0f} | {sum(r['requests'].values())} {r['requests']} | "
              f"{r['load_start']:.2f} / {r['load_end']:.2f} |")  # fmt: skip
    o = results["old"]
    for key in ("old", *layouts):
        if st := results[key]["stopped"]:
            print(f"\n{labels[key]} was STOPPED by the memory guard: its tree held {st['rss'] / MIB:.0f} MiB "
                  f"when available memory fell to {st['available'] / MIB:.0f} MiB; its figures are lower "
                  "bounds (its chips are those of the dates it finished).")  # fmt: skip
    print("\nRatios new : old (chips/s; chips per CPU second; peak RSS of the tree; STAC requests):")
    for key in layouts:
        n = results[key]
        cps = ratio(ratio(chips[key], n["seconds"]), ratio(chips["old"], o["seconds"]))
        per_cpu = ratio(ratio(chips[key], n["cpu_seconds"]), ratio(chips["old"], o["cpu_seconds"]))
        rss = ratio(n["peak_rss_tree"], o["peak_rss_tree"])
        print(f"- {labels[key]}: chips/s x{cps:.2f}; per CPU s x{per_cpu:.2f}; peak RSS x{rss:.3f} "
              f"({ratio(1, rss):.1f} times less); requests {sum(n['requests'].values())} vs "
              f"{sum(o['requests'].values())}.")  # fmt: skip
    print("\nPer process (peak RSS MiB / CPU s): " + "; ".join(
        f"{labels[key].split(',')[-1].strip()}: " + ", ".join(
            f"{name.split('[')[0]} {rss / MIB:.0f}/{cpu:.1f}" for name, rss, cpu in results[key]["per_process"]
        ) for key in ("old", *layouts)
    ) + ".")  # fmt: skip
    print("\nPeak RSS tree: the largest sum of RSS over the command's process and all its descendants, sampled "
          "every 0.1 s (old: the Python process running datacube.py, its Dask threads and GDAL; new: the luigi "
          "process (tasks, Dask scheduler and, for default and threads, the worker) plus, for processes, the "
          "Dask worker processes (their nannies run in the luigi process). Neither includes the STAC API server (shared) nor this script.")  # fmt: skip
    print(f"\nOutputs (old vs {layouts[0]}): {cmp['both']} chips in both, {cmp['equal']} equal in every cell of every band; "
          f"old-only {cmp['old_only'] or 'none'}; new-only {cmp['new_only'] or 'none'}.")  # fmt: skip
    if cmp["unequal"]:
        print(
            "Cells equal per band: " + ", ".join(f"{b} {f:.2%}" for b, f in cmp["equal_cells"].items()) + "."
        )
    for dx, dy, same_crs, count_old, count_new in cmp["offsets_px"]:
        print(f"Old chips' origin vs new: {dx:+.2f} px in x, {dy:+.2f} px in y (same CRS: {same_crs}; "
              f"bands {count_old} vs {count_new}).")  # fmt: skip
    dates = {k: sorted({p.parent.name for p in chips_of(root).values()}) for k, root in outs.items()}
    print("Dates with chips: " + "; ".join(f"{k} {v}" for k, v in dates.items()) + ".")


if __name__ == "__main__":
    sys.exit(main())
