"""Pieces of ``scripts/benchmark.py`` (see its docstring): the bench archive cache, the
S3 upload, the workload (plots, items, observations) as the spec defines it, the plain
recipe loop (a), the read floor (c), process-tree sampling and machine facts.

Also a small command line, used by the benchmark to run each measurement in its own
process (so every measurement has its own GDAL state, its own interpreter and its own
process tree to sample)::

    python scripts/bench_lib.py a-single  --work WORK.json --out DIR --result R.json
    python scripts/bench_lib.py a-dask    --work WORK.json --out DIR --result R.json --workers 2 --threads 2
    python scripts/bench_lib.py c         --work WORK.json --result R.json --procs 1 --threads 4
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BUCKET = "usgs-landsat-ard"
OPTICAL = ("blue", "green", "red", "nir08", "swir16", "swir22")
QA = "qa_pixel"
BANDS = (*OPTICAL, QA)
TILE_PX = 5000
PIXEL = 30
REGIONS = {"CU": (-2565585, 3314805), "AK": (-2201715, 2474325), "HI": (-444345, 2168895)}


# =============================================================================================
# Bench archive: built once per spec, cached
# =============================================================================================


def bench_spec(plots: int, acquisitions: int, seed: int = 0, context_px: int = 0, dense: bool = True):
    """An ArchiveSpec with ``plots`` plots in total (the generator always makes its 10
    special plots, the rest are ordinary ones spread over the 4 default tiles) and
    ``acquisitions`` dates. ``context_px=0``: content only where chips are (the reads are
    the same; the archive is a third smaller and faster to build). ``dense``: every block
    written, as in the USGS files (``sparse_fill=False``), so reads cost what they cost there."""
    from pipeline.demo.archive import ArchiveSpec

    specials = 10
    if plots < specials:
        raise ValueError(f"--plots must be >= {specials} (the generator's special plots)")
    extra = {} if dense else {"sparse_fill": True}
    if dense:
        extra["sparse_fill"] = False
    return ArchiveSpec(
        n_acquisitions=acquisitions, n_extra_plots=plots - specials, seed=seed, context_px=context_px, **extra
    )


def spec_key(spec: Any) -> str:
    d = asdict(spec)
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    n_plots = 10 + spec.n_extra_plots
    fill = "sparse" if getattr(spec, "sparse_fill", True) else "dense"
    return f"p{n_plots}-a{spec.n_acquisitions}-t{len(spec.tiles)}-s{spec.seed}-c{spec.context_px}-{fill}-{digest}"


@dataclass
class ArchiveInfo:
    root: Path
    bucket_dir: Path
    catalog_ndjson: Path
    plot_file: Path
    n_items: int
    n_files: int
    total_bytes: int
    build_seconds: float  # of the build that made it (from its manifest)
    build_cpu_seconds: float | None
    reused: bool


def ensure_archive(
    cache_dir: Path, spec: Any, *, rebuild: bool = False, workers: int | None = None, log=print
) -> ArchiveInfo:
    """The archive for ``spec`` under ``cache_dir/<key>``, built if missing. A build is
    complete when ``bench-complete.json`` exists (written last)."""
    from pipeline.demo.archive import build_archive

    root = cache_dir / spec_key(spec)
    done = root / "bench-complete.json"
    reused = done.exists() and not rebuild
    if not reused:
        log(f"building the bench archive in {root} (once per spec; later runs reuse it) ...")
        root.mkdir(parents=True, exist_ok=True)
        cpu0 = _tree_cpu_self()
        t0 = time.perf_counter()
        built = build_archive(root, spec, workers=workers, overwrite=True)
        wall = time.perf_counter() - t0
        cpu = _tree_cpu_self() - cpu0
        done.write_text(
            json.dumps(
                {
                    "wall_seconds": round(wall, 1),
                    "cpu_seconds": round(cpu, 1),
                    "n_items": len(built.items),
                    "n_files": built.n_files,
                    "total_bytes": built.total_bytes,
                    "built": datetime.now().isoformat(timespec="seconds"),
                }
            )
            + "\n"
        )
    meta = json.loads(done.read_text())
    return ArchiveInfo(
        root=root,
        bucket_dir=root / BUCKET,
        catalog_ndjson=root / "catalog" / "items.ndjson",
        plot_file=root / "plots.csv",
        n_items=meta["n_items"],
        n_files=meta["n_files"],
        total_bytes=meta["total_bytes"],
        build_seconds=meta["wall_seconds"],
        build_cpu_seconds=meta.get("cpu_seconds"),
        reused=reused,
    )


def _tree_cpu_self() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def upload_archive(
    server: Any, archive: ArchiveInfo, *, threads: int = 8, log=print
) -> tuple[int, float, bool]:
    """Upload the bucket content to ``usgs-landsat-ard`` through the server's *direct*
    (uncounted) endpoint, in parallel; skipped when the marker object of this archive is
    already there (a kept server data dir). Returns (files, seconds, skipped)."""
    import boto3
    from botocore.config import Config

    key = archive.root.name
    client = boto3.client(
        "s3",
        endpoint_url=server.direct_endpoint_url or server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(
            s3={"addressing_style": "path"}, max_pool_connections=threads * 2, retries={"max_attempts": 5}
        ),
    )
    for b in (BUCKET, "bench-meta"):
        try:
            client.create_bucket(Bucket=b)
        except Exception as e:  # already there (kept data dir)
            if "BucketAlready" not in type(e).__name__ and "BucketAlready" not in str(e):
                raise
    marker = f"uploaded/{key}.json"
    try:
        client.head_object(Bucket="bench-meta", Key=marker)
        return archive.n_files, 0.0, True
    except Exception:
        pass
    files = sorted(p for p in archive.bucket_dir.rglob("*") if p.is_file())
    log(f"uploading {len(files)} files ({archive.total_bytes / 1e9:.1f} GB) to s3://{BUCKET} ...")
    t0 = time.perf_counter()

    def put(p: Path) -> None:
        client.upload_file(str(p), BUCKET, p.relative_to(archive.bucket_dir).as_posix())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, files))
    client.put_object(Bucket="bench-meta", Key=marker, Body=json.dumps({"files": len(files)}).encode())
    return len(files), time.perf_counter() - t0, False


# =============================================================================================
# Workload: plots, items per tile, observations (as the spec defines them)
# =============================================================================================


@dataclass
class Item:
    id: str
    datetime: str
    year: int
    doy: int
    h: int
    v: int
    hrefs: dict[str, str]  # band -> s3:// href (alternate.s3.href)

    @property
    def sensor(self) -> str:
        return self.id.split("_", 1)[0]

    @property
    def hv(self) -> str:
        return f"{self.h:02d}{self.v:02d}"


@dataclass
class PlotRow:
    project_id: str
    plot_id: str
    x: int
    y: int


def parse_datetime(text: str) -> datetime:
    """Item datetimes with 0..n fractional digits and a Z."""
    t = text.rstrip("Z").replace("z", "")
    if "." in t:
        base, frac = t.split(".", 1)
        return datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(microsecond=int((frac + "000000")[:6]))
    return datetime.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")


def load_items(
    ndjson: Path, region: str = "CU", interval: str | None = None
) -> dict[tuple[int, int], list[Item]]:
    """The catalogue file searched per ARD tile: items by (h, v), in datetime order.
    ``interval``: "YYYY-MM-DD/YYYY-MM-DD" (both days included), as ``--datetime``."""
    lo = hi = None
    if interval:
        a, b = interval.split("/")
        lo = datetime.strptime(a, "%Y-%m-%d").date() if a not in ("", "..") else None
        hi = datetime.strptime(b, "%Y-%m-%d").date() if b not in ("", "..") else None
    by_tile: dict[tuple[int, int], list[Item]] = defaultdict(list)
    with open(ndjson) as f:
        for line in f:
            if not line.strip():
                continue
            it = json.loads(line)
            p = it["properties"]
            if p.get("landsat:grid_region") != region:
                continue
            dt = parse_datetime(p["datetime"])
            if (lo and dt.date() < lo) or (hi and dt.date() > hi):
                continue
            tt = dt.timetuple()
            hrefs = {b: it["assets"][b]["alternate"]["s3"]["href"] for b in BANDS}
            h, v = int(p["landsat:grid_horizontal"]), int(p["landsat:grid_vertical"])
            by_tile[(h, v)].append(Item(it["id"], p["datetime"], tt.tm_year, tt.tm_yday, h, v, hrefs))
    for items in by_tile.values():
        items.sort(key=lambda i: parse_datetime(i.datetime))
    return dict(by_tile)


def read_plots(path: Path) -> list[PlotRow]:
    with open(path, newline="") as f:
        return [PlotRow(r["project_id"], r["plot_id"], int(r["x"]), int(r["y"])) for r in csv.DictReader(f)]


def write_plots(path: Path, plots: list[PlotRow]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["project_id", "plot_id", "x", "y"])
        w.writerows([p.project_id, p.plot_id, p.x, p.y] for p in plots)


def chip_tiles(x: int, y: int, chip: int, region: str = "CU") -> list[tuple[int, int]]:
    """Spec, per plot 1: tiles from the upper-left to the lower-right chip corner."""
    x0, y0 = REGIONS[region]
    half = (chip // 2) * PIXEL
    h0, v0 = math.floor((x - half - x0) / 150000), math.floor((y0 - (y + half)) / 150000)
    h1, v1 = math.floor((x + half - x0) / 150000), math.floor((y0 - (y - half)) / 150000)
    return [(h, v) for h in range(h0, h1 + 1) for v in range(v0, v1 + 1)]


def observations(
    plot: PlotRow, by_tile: dict[tuple[int, int], list[Item]], chip: int
) -> list[tuple[int, int, list[Item]]]:
    """Spec, per plot 2: items of the chip's tiles (search order: h, then v) grouped by
    year and day of year; sorted by date."""
    groups: dict[tuple[int, int], list[Item]] = {}
    for t in chip_tiles(plot.x, plot.y, chip):
        for it in by_tile.get(t, []):
            groups.setdefault((it.year, it.doy), []).append(it)
    return [(y, d, its) for (y, d), its in sorted(groups.items())]


def gdal_path(href: str) -> str:
    return "/vsis3/" + href[len("s3://") :] if href.startswith("s3://") else href


# =============================================================================================
# (a) the plain recipe, written the way the spec describes it
# =============================================================================================

TC = (
    (0.2043, 0.4158, 0.5524, 0.5741, 0.3124, 0.2303),
    (-0.1603, -0.2819, -0.4934, 0.7940, -0.0002, -0.1446),
    (0.0315, 0.2021, 0.3102, 0.1594, -0.6806, -0.6109),
)
STRETCH = {
    "tc": ((604, 5592), (49, 3147), (-2245, 843)),
    "b743": ((-904, 3696), (151, 4951), (-300, 2500)),
    "b432": ((151, 4951), (-300, 2500), (50, 1150)),
}
COLUMNS = "sensor,project_id,plot_id,hv,year,doy,blue,green,red,nir,swir1,swir2,qa,date"


def user_env(endpoint_host: str, region: str):
    """The GDAL environment a user sets up to read the requester-pays bucket from this
    endpoint: credentials from the environment, the endpoint, path-style, plain HTTP,
    requester pays. Nothing else (GDAL defaults otherwise)."""
    import rasterio
    from rasterio.session import AWSSession

    session = AWSSession(region_name=region, endpoint_url=endpoint_host, requester_pays=True)
    return rasterio.Env(session=session, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE")


def recipe_plot(plot: PlotRow, by_tile: dict, chip: int, out_dir: str) -> dict[str, int]:
    """One plot, recipe step by step: for each observation, the fill test (open each item's
    qa_pixel, read the pixel), then each band file opened and its boundless window read
    (qa_pixel opened a second time), mosaic by addition, rescale, mask, composites,
    stretch, PNG (Pillow defaults), CSV. Returns counts."""
    import numpy as np
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    half = chip // 2
    n = {"plot_obs": 0, "written": 0, "fill": 0, "item_reads": 0}
    for year, doy, items in observations(plot, by_tile, chip):
        n["plot_obs"] += 1
        key = f"{year}_{doy:03d}"
        usable = False
        for it in items:  # 3.1 fill test at the plot
            with rasterio.open(gdal_path(it.hrefs[QA])) as ds:
                row, col = ds.index(plot.x, plot.y, op=math.floor)
                if 0 <= row < ds.height and 0 <= col < ds.width:
                    v = int(ds.read(1, window=Window(col, row, 1, 1))[0, 0])
                    if not v & 1:
                        usable = True
        if not usable:
            n["fill"] += 1
            continue
        mos = {}
        for band in BANDS:  # 3.2 read + mosaic
            acc = np.zeros((chip, chip), dtype=np.int64)
            for it in items:
                with rasterio.open(gdal_path(it.hrefs[band])) as ds:
                    row, col = ds.index(plot.x, plot.y, op=math.floor)
                    acc += ds.read(
                        1, window=Window(col - half, row - half, chip, chip), boundless=True, fill_value=0
                    )
            mos[band] = acc
        n["item_reads"] += len(items)
        sr = np.stack(
            [
                np.trunc((mos[b].astype(np.float64) * 0.0000275 - 0.2) * 10000).astype(np.int16)
                for b in OPTICAL
            ]
        )  # 3.3
        mask = np.any(sr == -2000, axis=0)  # 3.4
        x = sr.astype(np.float64)
        comps = {
            "tc": np.stack(
                [sum((c * x[i] for i, c in enumerate(coef[1:], 1)), coef[0] * x[0]) for coef in TC]
            ),
            "b743": x[[5, 3, 2]],
            "b432": x[[3, 2, 1]],
        }
        base = Path(out_dir) / f"prj_{plot.project_id}"
        for name, ch in comps.items():  # 3.5-3.7
            rgb = np.empty((chip, chip, 3), dtype=np.uint8)
            for k, (lo, hi) in enumerate(STRETCH[name]):
                rgb[:, :, k] = np.clip((255 / (hi - lo)) * (ch[k] - lo), 0, 255).astype(np.uint8)
            rgb[mask] = 0
            d = base / name / f"plot_{plot.plot_id}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb, "RGB").save(d / f"plot_{plot.plot_id}_{key}.png")
        first = items[0]  # 3.8
        qa = int(mos[QA][half, half])
        qa_flag = 1 if qa & 1 else (0 if qa & (64 | 128) else 1)
        row = [
            first.sensor,
            plot.project_id,
            plot.plot_id,
            first.hv,
            str(year),
            str(doy),
            *(str(int(v)) for v in sr[:, half, half]),
            str(qa_flag),
            first.datetime,
        ]
        base.mkdir(parents=True, exist_ok=True)
        (base / f"{plot.plot_id}_spectral_files_set_{key}.csv").write_text(
            COLUMNS + "\n" + ",".join(row) + "\n"
        )
        n["written"] += 1
    return n


def _recipe_plot_task(
    plot: PlotRow,
    ndjson: str,
    chip: int,
    out_dir: str,
    endpoint_host: str,
    region: str,
    interval: str | None = None,
) -> dict[str, int]:
    """What a user's Dask task looks like: one plot, its own rasterio.Env."""
    by_tile = _items_cached(ndjson, interval)
    with user_env(endpoint_host, region):
        return recipe_plot(plot, by_tile, chip, out_dir)


_ITEMS: dict[str, Any] = {}


def _items_cached(ndjson: str, interval: str | None = None) -> dict:
    key = f"{ndjson}|{interval}"
    if key not in _ITEMS:
        _ITEMS[key] = load_items(Path(ndjson), interval=interval)
    return _ITEMS[key]


def run_a_single(work: dict, out_dir: str) -> dict[str, Any]:
    plots = [PlotRow(**p) for p in work["plots"]]
    by_tile = load_items(Path(work["catalog"]), interval=work.get("datetime"))
    t0 = time.perf_counter()
    total: dict[str, int] = defaultdict(int)
    with user_env(work["endpoint_host"], work["region"]):
        for p in plots:
            for k, v in recipe_plot(p, by_tile, work["chip"], out_dir).items():
                total[k] += v
    return {"seconds": time.perf_counter() - t0, **total}


def run_a_dask(
    work: dict, out_dir: str, workers: int, threads: int, processes: bool = True
) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    plots = [PlotRow(**p) for p in work["plots"]]
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=processes,
            dashboard_address=None,
            **({"host": "127.0.0.1"} if processes else {}),
        ) as cluster,
        Client(cluster) as client,
    ):
        t_cluster = time.perf_counter() - t0
        futures = client.map(
            _recipe_plot_task,
            plots,
            ndjson=work["catalog"],
            chip=work["chip"],
            out_dir=out_dir,
            endpoint_host=work["endpoint_host"],
            region=work["region"],
            interval=work.get("datetime"),
            pure=False,
        )
        total: dict[str, int] = defaultdict(int)
        for r in client.gather(futures):
            for k, v in r.items():
                total[k] += v
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cluster_start_seconds": t_cluster, **total}


# =============================================================================================
# (c) the floor: only the window reads the outputs need
# =============================================================================================

FLOOR_GDAL = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".TIF,.tif",
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
}


def floor_units(work: dict) -> list[dict[str, Any]]:
    """Acquisition-major units of work: per acquisition day, every plot that has it as an
    observation, with its items. Each unit's files are opened once (by the thread that
    takes it) and every plot's windows read from those handles."""
    plots = [PlotRow(**p) for p in work["plots"]]
    by_tile = load_items(Path(work["catalog"]), interval=work.get("datetime"))
    units: dict[tuple[int, int], list[tuple[PlotRow, list[Item]]]] = defaultdict(list)
    for p in plots:
        for y, d, items in observations(p, by_tile, work["chip"]):
            units[(y, d)].append((p, items))
    return [{"key": k, "jobs": v} for k, v in sorted(units.items())]


def _floor_worker(
    units: list[dict],
    chip: int,
    endpoint_host: str,
    region: str,
    threads: int,
    gdal: dict[str, str],
    qa_mode: str = "centre",
) -> dict[str, int]:
    import numpy as np
    import rasterio
    from rasterio.session import AWSSession
    from rasterio.windows import Window

    half = chip // 2
    q: queue.Queue = queue.Queue()
    for u in units:
        q.put(u)
    totals = defaultdict(int)
    lock = threading.Lock()

    def work() -> None:
        session = AWSSession(region_name=region, endpoint_url=endpoint_host, requester_pays=True)
        n = defaultdict(int)
        with rasterio.Env(session=session, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE", **gdal):
            while True:
                try:
                    unit = q.get_nowait()
                except queue.Empty:
                    break
                handles: dict[str, Any] = {}

                def ds_of(href: str, handles: dict[str, Any] = handles) -> Any:
                    ds = handles.get(href)
                    if ds is None:
                        ds = handles[href] = rasterio.open(gdal_path(href))
                    return ds

                def read_rows(ds: Any, out: Any, r0: int, c0: int, ra: int, rb: int) -> None:
                    """Rows ra..rb (raster rows, clipped) of the window at (r0, c0) into out."""
                    ra, rb = max(ra, 0), min(rb, ds.height)
                    ca, cb = max(c0, 0), min(c0 + chip, ds.width)
                    if ra < rb and ca < cb:
                        out[ra - r0 : rb - r0, ca - c0 : cb - c0] = ds.read(
                            1, window=Window(ca, ra, cb - ca, rb - ra)
                        )

                try:
                    for p, items in unit["jobs"]:
                        n["plot_obs"] += 1
                        usable = False
                        qa_done: dict[str, Any] = {}
                        for it in items:
                            ds = ds_of(it.hrefs[QA])
                            row, col = ds.index(p.x, p.y, op=math.floor)
                            if not (0 <= row < ds.height and 0 <= col < ds.width):
                                continue
                            if qa_mode == "rows":
                                # the window's rows inside the plot's block row: one ranged GET,
                                # the fill test, and a third of the QA window already read
                                r0, c0 = row - half, col - half
                                bh = ds.block_shapes[0][0]
                                b0 = (row // bh) * bh
                                out = np.zeros((chip, chip), dtype=np.uint16)
                                read_rows(ds, out, r0, c0, max(r0, b0), min(r0 + chip, b0 + bh))
                                qa_done[it.id] = (out, max(r0, b0), min(r0 + chip, b0 + bh))
                                value = int(out[half, half])
                            else:
                                value = int(ds.read(1, window=Window(col, row, 1, 1))[0, 0])
                            if not value & 1:
                                usable = True
                        if not usable:
                            n["fill"] += 1
                            continue
                        n["written"] += 1
                        n["item_reads"] += len(items)
                        # qa_mode "centre": the outputs use qa_pixel only at the plot (the CSV's
                        # qa; the mask comes from the optical bands), which the fill test read
                        for band in OPTICAL if qa_mode == "centre" else BANDS:
                            for it in items:
                                ds = ds_of(it.hrefs[band])
                                row, col = ds.index(p.x, p.y, op=math.floor)
                                r0, c0 = row - half, col - half
                                if band == QA and it.id in qa_done:  # the rest of the QA window
                                    out, ra, rb = qa_done[it.id]
                                    read_rows(ds, out, r0, c0, r0, ra)
                                    read_rows(ds, out, r0, c0, rb, r0 + chip)
                                else:  # in-bounds read + paste = boundless
                                    out = np.zeros((chip, chip), dtype=np.uint16)
                                    read_rows(ds, out, r0, c0, r0, r0 + chip)
                finally:
                    for ds in handles.values():
                        ds.close()
        with lock:
            for k, v in n.items():
                totals[k] += v

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return dict(totals)


def _floor_proc(args: tuple) -> dict[str, int]:
    return _floor_worker(*args)


def run_c(
    work: dict, procs: int, threads: int, gdal_extra: dict[str, str] | None = None, qa_mode: str = "centre"
) -> dict[str, Any]:
    import multiprocessing as mp

    gdal = dict(FLOOR_GDAL, **(gdal_extra or {}))
    units = floor_units(work)
    t0 = time.perf_counter()
    if procs <= 1:
        total = _floor_worker(
            units, work["chip"], work["endpoint_host"], work["region"], threads, gdal, qa_mode
        )
    else:
        # units interleaved over processes (acquisitions stay whole)
        shares = [units[i::procs] for i in range(procs)]
        ctx = mp.get_context("spawn")
        with ctx.Pool(procs) as pool:
            parts = pool.map(
                _floor_proc,
                [
                    (s, work["chip"], work["endpoint_host"], work["region"], threads, gdal, qa_mode)
                    for s in shares
                ],
            )
        total = defaultdict(int)
        for part in parts:
            for k, v in part.items():
                total[k] += v
    return {"seconds": time.perf_counter() - t0, **total}


# =============================================================================================
# Process-tree sampling (RSS, CPU) and machine facts
# =============================================================================================


class TreeSampler:
    """Samples a process and its descendants every ``interval`` s in a thread: max RSS per
    process, and the last seen CPU times per process (user + system)."""

    def __init__(self, root_pid: int, interval: float = 0.2, label=None):
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.label = label or _label
        self.peak: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        ps = self.psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except ps.Error:
            return
        for p in procs:
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    if p.pid not in self.names:
                        self.names[p.pid] = self.label(p)
            except ps.Error:
                continue
            self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
            self.cpu[p.pid] = t.user + t.system + getattr(t, "children_user", 0) * 0

    def report(self) -> list[tuple[str, int, float]]:
        """(label, peak RSS bytes, cpu seconds) per process, in first-seen order."""
        return [
            (self.names.get(pid, str(pid)), rss, self.cpu.get(pid, 0.0)) for pid, rss in self.peak.items()
        ]


def _label(p: Any) -> str:
    try:
        cmd = p.cmdline()
    except Exception:
        cmd = []
    text = " ".join(cmd)
    if "distributed" in text and (
        "nanny" in text.lower() or "spawn_main" in text or "multiprocessing" in text
    ):
        role = "dask-worker" if "spawn_main" in text or "multiprocessing" in text else "dask"
    elif "luigi" in text:
        role = "luigi"
    elif "bench_lib.py" in text:
        role = "bench:" + (
            cmd[cmd.index(next(c for c in cmd if c.endswith("bench_lib.py"))) + 1] if len(cmd) > 2 else "?"
        )
    elif "multiprocessing" in text or "spawn_main" in text:
        role = "child"
    else:
        role = p.name()
    return f"{role}[{p.pid}]"


def proc_cpu(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def machine_facts() -> dict[str, Any]:
    import psutil

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for mod in ("rasterio", "numpy", "PIL", "dask", "distributed", "luigi", "s3fs", "botocore", "psutil"):
        try:
            m = __import__(mod)
            versions[mod if mod != "PIL" else "Pillow"] = getattr(m, "__version__", "?")
        except Exception:
            versions[mod] = "-"
    try:
        import rasterio

        versions["GDAL"] = rasterio.__gdal_version__
    except Exception:
        pass
    try:
        from tests.servers.s3 import find_weed

        out = subprocess.run([find_weed(), "version"], capture_output=True, text=True, timeout=20).stdout
        words = out.split()  # "version 8000GB 4.48 pypi linux amd64"
        versions["SeaweedFS"] = next((w for w in words if w[:1].isdigit() and "." in w), "?")
    except Exception:
        versions["SeaweedFS"] = "?"
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        versions["eo-extract"] = rev + ("+dirty" if dirty else "")
    except Exception:
        pass
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu_model or platform.processor(),
        "kernel": platform.release(),
        "load_avg": os.getloadavg(),
        "versions": versions,
    }


# =============================================================================================
# Command line (one measurement per process)
# =============================================================================================


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["a-single", "a-dask", "c"])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--result", required=True, type=Path)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--gdal", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--qa",
        choices=["centre", "rows", "pixel"],
        default="centre",
        help="c: centre = 1-pixel QA read at the plot (fill test and the CSV's qa) and no QA window; "
        "rows = QA window, its rows in the plot's block row first (fill test); pixel = 1-pixel read, then the QA window",
    )
    args = ap.parse_args(argv)
    work = json.loads(args.work.read_text())
    if args.what == "a-single":
        res = run_a_single(work, str(args.out))
    elif args.what == "a-dask":
        res = run_a_dask(work, str(args.out), args.workers, args.threads)
    else:
        res = run_c(work, args.procs, args.threads, dict(kv.split("=", 1) for kv in args.gdal), args.qa)
    args.result.write_text(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    # Run through the importable module, not __main__, so that what Dask and
    # multiprocessing pickle (functions, PlotRow, Item) refers to ``bench_lib``.
    import bench_lib

    sys.exit(bench_lib.main())
