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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EPSG = 32610  # 10TET's zone and grid origin
X0, Y0 = 499980.0, 5300040.0
BLOCK = 1024  # Planetary Computer's S2 COGs use 1024-pixel blocks
STRIP = 1024  # rows written at a time: the builder never holds a whole band either
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
S2_ORDER = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _write(path: Path, crs: int, transform: Any, width: int, height: int, dtype: str, nodata: float | None,
           fill: Any) -> None:  # fmt: skip
    """A tiled DEFLATE GeoTIFF written strip by strip: ``fill(row0, rows, width)`` gives each strip."""
    import rasterio
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": dtype, "crs": f"EPSG:{crs}",
        "transform": transform, "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "DEFLATE",
        "nodata": nodata, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    tmp = path.with_name(path.name + ".part")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row0 in range(0, height, STRIP):
            rows = min(STRIP, height - row0)
            dst.write(fill(row0, rows, width)[None], window=Window(0, row0, width, rows))
    tmp.rename(path)


def build_tile(root: Path, size: int) -> dict[str, Any]:
    """The (tile, date)'s files under ``root`` (built once); returns the DateJob's fields."""
    import numpy as np
    from affine import Affine
    from pyproj import Transformer

    root.mkdir(parents=True, exist_ok=True)
    done = root / "job.json"
    if done.exists():
        return json.loads(done.read_text())

    def pattern(scale: int, offset: int, dtype: str):
        def fill(row0: int, rows: int, width: int):
            r = np.arange(row0, row0 + rows, dtype=np.int64)[:, None]
            c = np.arange(width, dtype=np.int64)[None, :]
            return ((r * 7 + c * 3 + offset) % scale + 1).astype(dtype)

        return fill

    hrefs: dict[str, str] = {}
    t10 = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)
    t20 = Affine(20.0, 0.0, X0, 0.0, -20.0, Y0)
    for i, band in enumerate(S2_ORDER):
        path = root / f"T10TET_{band}.tif"
        hrefs[band] = str(path)
        if path.exists():
            continue
        if band in S2_10M:
            _write(path, EPSG, t10, size, size, "uint16", 0, pattern(4000, 100 * i, "uint16"))
        else:
            _write(path, EPSG, t20, size // 2, size // 2, "uint16", 0, pattern(4000, 100 * i, "uint16"))
    scl = root / "T10TET_SCL.tif"
    if not scl.exists():  # class 4 (vegetation) everywhere: every chip is kept and written
        _write(
            scl, EPSG, t20, size // 2, size // 2, "uint8", 0, lambda r0, n, w: np.full((n, w), 4, np.uint8)
        )
    # Two S1 items: A over columns 0 .. 0.65 SIZE, B over 0.35 SIZE .. SIZE (B earlier, A wins).
    s1 = []
    for name, c0, c1 in (("B", 0.35, 1.0), ("A", 0.0, 0.65)):
        x0 = X0 + 10.0 * round(c0 * size) - 200.0 + 3.0
        width = round((c1 - c0) * size) + 40
        t = Affine(10.0, 0.0, x0, 0.0, -10.0, Y0 + 200.0 - 7.0)
        pair = []
        for pol, scale in (("vh", 0.01), ("vv", 0.05)):
            path = root / f"S1_{name}_{pol}.tif"
            pair.append(str(path))
            if not path.exists():
                base = pattern(997, ord(name), "float32")
                _write(path, EPSG, t, width, size + 40, "float32", -32768.0,
                       lambda r0, n, w, base=base, scale=scale: base(r0, n, w) * scale)  # fmt: skip
        s1.append(tuple(pair))
    # The DEM: 1 arcsecond in EPSG:4326 around the tile's footprint, half a pixel shifted as the real COGs.
    dem = root / "DEM.tif"
    if not dem.exists():
        xs = [X0, X0 + 10.0 * size, X0, X0 + 10.0 * size]
        ys = [Y0, Y0, Y0 - 10.0 * size, Y0 - 10.0 * size]
        lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(xs, ys)
        res = 1.0 / 3600.0
        west, north = np.floor(min(lon) * 100) / 100 - res / 2, np.ceil(max(lat) * 100) / 100 + res / 2
        width = int(np.ceil((max(lon) + 0.01 - west) / res))
        height = int(np.ceil((north - min(lat) + 0.01) / res))
        t = Affine(res, 0.0, west, 0.0, -res, north)
        _write(dem, 4326, t, width, height, "float32", None, pattern(2000, 5, "float32"))
    job = {
        "mgrs": "10TET", "day": "2020-06-14", "version": "02", "epsg": EPSG, "transform": list(t10)[:6],
        "width": size, "height": size, "s2_id": "S2B_MSIL2A_20200614T190411_R013_T10TET_FULL",
        "s2_bands": [hrefs[b] for b in S2_ORDER], "scl": str(scl), "s1": s1, "dem": [str(dem)],
    }  # fmt: skip
    done.write_text(json.dumps(job, indent=1))
    return job


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
