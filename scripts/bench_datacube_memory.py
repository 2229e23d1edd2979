#!/usr/bin/env python
"""Peak memory of the datacube workflow's chip stacking on one whole 10980 x 10980 tile
(issue 14, Deliver 3): every chip of a synthetic full-size (tile, date) stacked, filtered and
written in ONE process, one thread, as a Dask worker does it (``engine.chip_batch``).

    .venv/bin/python scripts/bench_datacube_memory.py                 # 10980 px, 512 px chips: 441 chips
    .venv/bin/python scripts/bench_datacube_memory.py --size 2560     # a quick smaller run

The tile (built once, cached under ``--cache-dir``, default ``.cache/bench-datacube/fulltile-SIZE``):
S2 10 m bands (B02 B03 B04 B08) SIZE x SIZE uint16 and the 20 m bands and SCL at half that,
GeoTIFFs tiled in 1024-pixel blocks as Planetary Computer's COGs, DEFLATE; two S1 RTC items
(``vh``, ``vv`` float32, nodata -32768) on UTM grids offset by (3 m, -7 m), overlapping over a
third of the tile; one Copernicus-DEM-like tile in EPSG:4326 at 1 arcsecond covering it all.
Pixel values are cheap patterns (nothing is dropped: every chip is written).

The measurement runs in a child process (a fresh interpreter; its own GDAL cache): the peak
RSS is the child's ``VmHWM`` (the kernel's exact high-water mark of its memory; not
``ru_maxrss``, which keeps the parent's peak across fork + exec, and the parent may just have
built the tile), next to its peak before the first chip (the interpreter and the workflow's
modules; rasterio and GDAL load with the first chip). Prints chips, wall and CPU seconds, chips
per second (wall and CPU) and the 1-minute load average at the start and the end (the machine
is shared: the throughput is not a benchmark, the memory is).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))

from bench_datacube_fulltile import build_tile  # noqa: E402 - from scripts/, put on sys.path above


def high_water_mark() -> int:
    """This process's peak RSS in bytes (``VmHWM`` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(job_path: Path, chip_size: int, dest: Path) -> None:
    """The child: every chip of the job in this process, one thread; prints one JSON line."""
    from datetime import date

    from pipeline.datacube import engine
    from pipeline.raster import ArchiveAccess
    from targets.store import Store

    doc = json.loads(job_path.read_text())
    job = engine.DateJob(
        doc["mgrs"], date.fromisoformat(doc["day"]), doc["version"], chip_size, doc["epsg"],
        tuple(doc["transform"]), doc["width"], doc["height"], doc["s2_id"], tuple(doc["s2_bands"]), doc["scl"],
        tuple(tuple(p) for p in doc["s1"]), tuple(doc["dem"]),
    )  # fmt: skip
    numbers = job.chip_numbers()
    before = high_water_mark()
    started, cpu = time.perf_counter(), time.process_time()
    result = engine.chip_batch(
        job, numbers, Store(str(dest)), ArchiveAccess(asset_href="href", requester_pays=False)
    )
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    kinds: dict[str, int] = {}
    for chip in result.chips:
        kinds[chip.status] = kinds.get(chip.status, 0) + 1
    print(json.dumps({
        "chips": len(numbers), "statuses": kinds, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
        "rss_before_first_chip": before, "peak_rss": high_water_mark(),
        "files_opened": result.opened,
    }))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=10980, help="tile width and height in 10 m pixels (even)")
    p.add_argument("--chip-size", type=int, default=512)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--dest", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        measure(args.child, args.chip_size, args.dest)
        return 0
    if args.size % 2:
        p.error("--size must be even (the 20 m bands tile it)")
    cache = args.cache_dir or REPO / ".cache" / "bench-datacube" / f"fulltile-{args.size}"
    t = time.perf_counter()
    build_tile(cache, args.size)
    print(
        f"tile {args.size} x {args.size} in {cache} ready ({time.perf_counter() - t:.0f} s)", file=sys.stderr
    )
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="datacube-mem-") as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GDAL_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(cache / "job.json"), "--chip-size", str(args.chip_size),
             "--dest", out], capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        written = sum(1 for _ in Path(out).rglob("*.tif"))
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return 1
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    print(f"full-tile memory: {args.size} x {args.size} px, {r['chips']} chips of {args.chip_size} "
          f"({r['statuses']}, {written} files written) in one process, one thread")  # fmt: skip
    print(
        f"  peak RSS {r['peak_rss'] / mib:.0f} MiB (before the first chip {r['rss_before_first_chip'] / mib:.0f} MiB)"
    )
    print(f"  {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU: {r['chips'] / r['seconds']:.2f} chips/s, "
          f"{r['chips'] / r['cpu_seconds']:.2f} chips per CPU second; "
          f"load average (1 min) {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
