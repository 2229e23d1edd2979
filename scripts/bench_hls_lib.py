"""Pieces of ``scripts/bench_hls.py`` (see its docstring): the bench archives (cached), the
workload as the issue defines it (written here from the recipe's text, not imported from
``pipeline.hls``), the three ways that are not the pipeline, the comparison of outputs,
the Azurite + counting-proxy request pass and process-tree sampling.

Each measurement runs in its own process (its own interpreter, GDAL state and Dask
cluster, and a process tree of its own to sample)::

    python scripts/bench_hls_lib.py a --work WORK.json --result R.json   # notebooks' way
    python scripts/bench_hls_lib.py b --work WORK.json --result R.json   # odc-stac
    python scripts/bench_hls_lib.py d --work WORK.json --result R.json   # the read floor

``WORK.json`` (:func:`work_doc`) names the tile-year, its grid, every scene's hrefs, the
cluster (workers, threads, memory limit), the GDAL options and the output directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# ---- the recipe's facts, from the issue text (independent of pipeline.hls) ---------------
BANDS = ("coastal", "blue", "green", "red", "nir_narrow", "swir1", "swir2", "cirrus")
ASSETS = {
    "hls2-l30": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09"),
    "hls2-s30": ("B01", "B02", "B03", "B04", "B8A", "B11", "B12", "B10"),
}
FMASK = "Fmask"
ITEM_ID = re.compile(r"^HLS\.(L30|S30)\.T(\w{5})\.(\d{4})(\d{3})T(\d{6})\.v[\d.]+$")

# GDAL options of the floor (d): what a careful reader sets for COGs behind HTTP (no
# directory listing, no sidecar probes, header in the first GET, adjacent tiles merged).
FLOOR_GDAL = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".TIF,.tif,.tiff,.TIFF",
    "GDAL_INGESTED_BYTES_AT_OPEN": "16384",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "FALSE",
}


def log(msg: str) -> None:
    print(f"[bench-hls {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =============================================================================================
# Archives
# =============================================================================================


def speed_spec(
    n_scenes: int, size: int, seed: int = 0, unique_scenes: int = 24, noise_dn: float = 20.0
) -> Any:
    """The speed comparison's archive: ``n_scenes`` scenes of 10TET in 2019 (L30 and S30
    alternating over the year, as :func:`full_size_hls_spec`) on a ``size`` x ``size``
    window at the tile's top-left corner (3660: the whole tile), every pixel rendered with
    per-pixel noise (``noise_dn`` reflectance DN), DEFLATE level 6 as the generator's demo
    archive: files about 0.8 of their raw int16 size, so decoding costs what it costs on
    real data rather than on a repeated pattern (the memory archive's 256 px pattern
    quantised to 20 DN decodes several times faster). ``unique_scenes`` are rendered, the
    others hard-link their files (the build is ~25 s per unique full-size scene)."""
    from pipeline.demo.hls_archive import (
        FULL_TILE_PX,
        PointSpec,
        TileWindow,
        full_size_hls_spec,
        plan_own,
    )

    if not 256 <= size <= FULL_TILE_PX:
        raise ValueError(f"window size must be 256..{FULL_TILE_PX}")
    base = full_size_hls_spec(n_scenes, seed=seed, unique_scenes=unique_scenes)
    tile, year = base.tiles[0].tile, base.tiles[0].years[0]
    window = TileWindow(tile, 0, 0, size, size, (year,))
    points = tuple(
        PointSpec(f"bench-{k}", tile, r, c, year, plan_own(tile, r, c), "inside", "bench")
        for k, (r, c) in enumerate(
            [(size * 0.25 + 0.3, size * 0.3 + 0.6), (size * 0.7 + 0.2, size * 0.6 + 0.4)]
        )
    )
    return replace(
        base,
        name=f"bench-speed-{size}",
        tiles=(window,),
        points=points,
        pattern_px=None,
        noise_dn=noise_dn,
        quantum_dn=1,
        zlevel=6,
    )


def memory_spec(n_scenes: int, seed: int = 0) -> Any:
    """Deliver 3's archive as the generator defines it: ``full_size_hls_spec(n_scenes)``."""
    from pipeline.demo.hls_archive import full_size_hls_spec

    return full_size_hls_spec(n_scenes, seed=seed)


def spec_key(spec: Any) -> str:
    doc = json.dumps(asdict(spec), sort_keys=True, default=str)
    n = len(spec.scenes)
    size = spec.tiles[0].width
    return f"{spec.name}-n{n}-{size}px-s{spec.seed}-{hashlib.sha1(doc.encode()).hexdigest()[:10]}"


def ensure_archive(cache_dir: Path, spec: Any, *, rebuild: bool = False) -> tuple[Path, dict[str, Any]]:
    """The archive of ``spec`` under ``cache_dir/<key>``, built once (``bench-complete.json``
    is written last). Returns its root and the build facts."""
    from pipeline.demo.hls_archive import build_hls_archive

    root = cache_dir / spec_key(spec)
    done = root / "bench-complete.json"
    if rebuild or not done.exists():
        log(f"building {root.name} (cached for later runs) ...")
        t0, cpu0 = time.perf_counter(), _own_cpu()
        built = build_hls_archive(root, spec, overwrite=True)
        done.write_text(
            json.dumps(
                {
                    "n_items": len(built.items),
                    "n_files": built.n_files,
                    "total_bytes": built.total_bytes,
                    "wall_seconds": round(time.perf_counter() - t0, 1),
                    "cpu_seconds": round(_own_cpu() - cpu0, 1),
                    "built": datetime.now().isoformat(timespec="seconds"),
                    "reused": False,
                }
            )
            + "\n"
        )
        facts = json.loads(done.read_text())
    else:
        facts = dict(json.loads(done.read_text()), reused=True)
    return root, facts


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def read_items(ndjson: Path) -> list[dict[str, Any]]:
    with open(ndjson) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_catalog(items: list[dict[str, Any]], root: Path, tile: str, year: int) -> tuple[Path, Path]:
    """A catalogue file of ``items`` and its ``tile,year`` file under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    catalog, tiles = root / "items.ndjson", root / "tiles.csv"
    catalog.write_text("".join(json.dumps(i, separators=(",", ":")) + "\n" for i in items))
    tiles.write_text(f"tile,year\n{tile},{year}\n")
    return catalog, tiles


def spread_subset(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` of the items, spread evenly over time (so every month keeps a share)."""
    ordered = sorted(items, key=lambda i: (i["properties"]["datetime"], i["id"]))
    if n >= len(ordered):
        return ordered
    return [ordered[math.floor(k * len(ordered) / n)] for k in range(n)]


def warm_page_cache(paths: list[Path]) -> tuple[int, float]:
    """Read every file once (not timed) so that no measurement pays the disk and the first
    one is not penalised: every way then reads from the page cache alike."""
    t0, total = time.perf_counter(), 0
    seen: set[tuple[int, int]] = set()
    for p in paths:
        st = p.stat()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        with open(p, "rb") as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
    return total, time.perf_counter() - t0


# =============================================================================================
# Workload: the tile-year's scenes, written from the text
# =============================================================================================


def item_datetime(item: dict[str, Any]) -> datetime:
    text = item["properties"]["datetime"]
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?", text)
    if not m:
        raise ValueError(f"{item['id']}: datetime {text!r}")
    *whole, frac = m.groups()
    return datetime(*map(int, whole), int(((frac or "") + "000000")[:6]), tzinfo=UTC)


def tile_year_scenes(items: list[dict[str, Any]], tile: str, year: int) -> list[dict[str, Any]]:
    """Every item of the tile (named in its id) and UTC year, by datetime: id, collection,
    datetime (ISO, naive UTC), month, the 8 band hrefs in recipe order and Fmask's href."""
    scenes = []
    for it in items:
        m = ITEM_ID.match(it["id"])
        if not m or m.group(2) != tile:
            continue
        when = item_datetime(it)
        if when.year != year:
            continue
        keys = ASSETS[it["collection"]]
        scenes.append(
            {
                "id": it["id"],
                "collection": it["collection"],
                "datetime": when.replace(tzinfo=None).isoformat(),
                "month": when.month,
                "bands": [it["assets"][k]["href"] for k in keys],
                "fmask": it["assets"][FMASK]["href"],
            }
        )
    return sorted(scenes, key=lambda s: (s["datetime"], s["id"]))


def tile_grid(items: list[dict[str, Any]], tile: str) -> dict[str, Any]:
    for it in items:
        if ITEM_ID.match(it["id"]) and it["id"].split(".")[2][1:] == tile:
            p = it["properties"]
            return {
                "epsg": int(p["proj:epsg"]),
                "transform": [float(v) for v in p["proj:transform"][:6]],
                "height": int(p["proj:shape"][0]),
                "width": int(p["proj:shape"][1]),
            }
    raise KeyError(tile)


def work_doc(
    items: list[dict[str, Any]],
    tile: str,
    year: int,
    out_dir: Path,
    *,
    workers: int,
    threads: int,
    memory_limit: str,
    gdal: dict[str, str] | None = None,
    b_chunk: int = 1024,
    d_mode: str = "strips",
) -> dict[str, Any]:
    return {
        "tile": tile,
        "year": year,
        "grid": tile_grid(items, tile),
        "scenes": tile_year_scenes(items, tile, year),
        "items": [it for it in items if it["id"].split(".")[2][1:] == tile],
        "out": str(out_dir),
        "workers": workers,
        "threads": threads,
        "memory_limit": memory_limit,
        "gdal": gdal or {},
        "b_chunk": b_chunk,
        "d_mode": d_mode,
    }


# =============================================================================================
# The ways that are not the pipeline (each runs in its own process: see main())
# =============================================================================================


def _cluster(work: dict[str, Any]) -> tuple[Any, Any, float]:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=work["workers"],
        threads_per_worker=work["threads"],
        processes=True,
        memory_limit=work["memory_limit"],
        dashboard_address=None,
        host="127.0.0.1",
    )
    client = Client(cluster)
    return cluster, client, time.perf_counter() - t0


def read_whole_file(href: str, gdal: dict[str, str]) -> Any:
    """What the notebooks did per asset: open the file and read all of it (one Dask chunk)."""
    import rasterio

    with rasterio.Env(**gdal), rasterio.open(_gdal_name(href)) as ds:
        return ds.read(1)


def _gdal_name(href: str) -> str:
    return "/vsicurl/" + href if href.startswith(("http://", "https://")) else href


def usable_fmask(fmask: Any) -> Any:
    """The issue's Fmask test, by explicit bit tests (works on numpy, dask and xarray)."""
    cloud, adjacent, shadow = (fmask & 2) > 0, (fmask & 4) > 0, (fmask & 8) > 0
    aerosol_high = ((fmask >> 6) & 3) == 3
    return ~(cloud | adjacent | shadow | aerosol_high | (fmask == 255))


def monthly_median(refl: Any, fmask: Any) -> Any:
    """``refl`` (time, band, y, x) int16 and ``fmask`` (time, y, x) uint8 DataArrays with a
    time coordinate -> Dataset ``median`` (month, band, y, x) float32 and ``valid_count``
    (month, y, x) float32: the notebooks' ``groupby('time.month').median()``."""
    import xarray as xr

    usable = usable_fmask(fmask)
    ok = usable & (refl >= 0) & (refl <= 10000)
    masked = refl.astype("float32").where(ok)
    median = masked.groupby("time.month").median("time", skipna=True).astype("float32")
    count = usable.groupby("time.month").sum("time").astype("float32")
    return xr.Dataset({"median": median, "valid_count": count})


def _to_zarr(ds: Any, path: str) -> None:
    """Uncompressed Zarr written by the workers (the cheapest sink: the comparison favours
    the ways that use it, the pipeline writes DEFLATE COGs with overviews)."""
    for v in ds.data_vars.values():
        v.encoding.clear()
    enc = {name: {"compressors": None} for name in ds.data_vars}
    ds.to_zarr(path, mode="w", encoding=enc, consolidated=True, zarr_format=3)


def run_a(work: dict[str, Any]) -> dict[str, Any]:
    """(a) the notebooks' way: each band file one Dask chunk (a delayed whole-file rasterio
    read), stacked (time, band, y, x); mask; ``groupby('time.month').median()``."""
    import dask
    import dask.array as da
    import numpy as np
    import pandas as pd
    import xarray as xr

    g, scenes, gdal = work["grid"], work["scenes"], work["gdal"]
    shape = (g["height"], g["width"])
    t0 = time.perf_counter()
    cluster, client, t_cluster = _cluster(work)
    try:
        reader = dask.delayed(read_whole_file, pure=True)
        refl = da.stack(
            [
                da.stack([da.from_delayed(reader(h, gdal), shape, np.int16) for h in s["bands"]])
                for s in scenes
            ]
        )
        fm = da.stack([da.from_delayed(reader(s["fmask"], gdal), shape, np.uint8) for s in scenes])
        times = pd.DatetimeIndex([s["datetime"] for s in scenes])
        refl_x = xr.DataArray(
            refl, dims=("time", "band", "y", "x"), coords={"time": times, "band": list(BANDS)}
        )
        fm_x = xr.DataArray(fm, dims=("time", "y", "x"), coords={"time": times})
        t1 = time.perf_counter()
        _to_zarr(monthly_median(refl_x, fm_x), os.path.join(work["out"], "a.zarr"))
        compute = time.perf_counter() - t1
    finally:
        client.close()
        cluster.close()
    return {
        "seconds": time.perf_counter() - t0,
        "cluster_start_seconds": t_cluster,
        "compute_seconds": compute,
        "output": os.path.join(work["out"], "a.zarr"),
    }


def stac_cfg() -> dict[str, Any]:
    """odc-stac's per-collection configuration: the 8 common names as aliases of each
    collection's assets, dtypes and nodata of the HLS v2 files (the items carry no raster
    extension)."""
    assets = {"*": {"data_type": "int16", "nodata": -9999}, FMASK: {"data_type": "uint8", "nodata": 255}}
    return {
        c: {"aliases": dict(zip(BANDS, keys, strict=True)), "assets": assets} for c, keys in ASSETS.items()
    }


def run_b(work: dict[str, Any]) -> dict[str, Any]:
    """(b) the modern idiom: ``odc.stac.load`` of the tile-year's L30 and S30 items on the
    tile's own grid (GeoBox from the items' proj:*, so no resampling), ``groupby="id"``
    (one time slice per item: "solar_day" would fuse an L30 and an S30 scene of the same
    day into one slice, first valid pixel wins, which is not the recipe), ``chunks`` x/y
    ``b_chunk``; mask; ``groupby('time.month').median()``."""
    import odc.stac
    import pystac
    from affine import Affine
    from odc.geo.geobox import GeoBox

    g = work["grid"]
    t0 = time.perf_counter()
    cluster, client, t_cluster = _cluster(work)
    try:
        odc.stac.configure_rio(cloud_defaults=True, client=client)
        # Without their links: pystac resolves an absolute local path against the item's
        # https self link otherwise (the offline archive's hrefs are local paths).
        items = [
            pystac.Item.from_dict({**d, "links": []}) for d in work["items"] if _in_year(d, work["year"])
        ]
        gbox = GeoBox((g["height"], g["width"]), Affine(*g["transform"]), f"EPSG:{g['epsg']}")
        chunk = work["b_chunk"]
        ds = odc.stac.load(
            items,
            bands=[*BANDS, FMASK],
            geobox=gbox,
            groupby="id",
            chunks={"x": chunk, "y": chunk},
            stac_cfg=stac_cfg(),
            resampling="nearest",
            fail_on_error=True,
        )
        refl = ds[list(BANDS)].to_dataarray("band").transpose("time", "band", "y", "x")
        t1 = time.perf_counter()
        _to_zarr(monthly_median(refl, ds[FMASK]), os.path.join(work["out"], "b.zarr"))
        compute = time.perf_counter() - t1
    finally:
        client.close()
        cluster.close()
    return {
        "seconds": time.perf_counter() - t0,
        "cluster_start_seconds": t_cluster,
        "compute_seconds": compute,
        "output": os.path.join(work["out"], "b.zarr"),
        "n_items": len(items),
    }


def _in_year(item: dict[str, Any], year: int) -> bool:
    return item_datetime(item).year == year


def read_every_block(href: str, gdal: dict[str, str], mode: str) -> int:
    """(d)'s unit: decode every block of one file once, through rasterio; nothing else.
    ``strips``: full-width strips of 512 rows (each 256 px input tile decoded once; what
    the pipeline's 512 windows read, with fewer calls); ``whole``: one read of the file."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.Env(**gdal), rasterio.open(_gdal_name(href)) as ds:
        if mode == "whole":
            return int(ds.read(1).size)
        n = 0
        for row in range(0, ds.height, 512):
            n += int(ds.read(1, window=Window(0, row, ds.width, min(512, ds.height - row))).size)
        return n


def run_d(work: dict[str, Any]) -> dict[str, Any]:
    """(d) the floor: one Dask task per file (every band and Fmask of every scene), on the
    same cluster layout; timed from submit to the last result (cluster start apart)."""
    t0 = time.perf_counter()
    cluster, client, t_cluster = _cluster(work)
    try:
        hrefs = [h for s in work["scenes"] for h in (s["fmask"], *s["bands"])]
        t1 = time.perf_counter()
        futures = client.map(read_every_block, hrefs, gdal=work["gdal"], mode=work["d_mode"], pure=False)
        pixels = sum(client.gather(futures))
        compute = time.perf_counter() - t1
    finally:
        client.close()
        cluster.close()
    return {
        "seconds": time.perf_counter() - t0,
        "cluster_start_seconds": t_cluster,
        "compute_seconds": compute,
        "files": len(hrefs),
        "pixels": pixels,
    }


# =============================================================================================
# Agreement: every pixel of the 8 medians and valid_count
# =============================================================================================


def compare_outputs(
    project: Path, tile: str, year: int, months: list[int], others: dict[str, str]
) -> dict[str, Any]:
    """The pipeline's month COGs against each other way's Zarr output, band by band: equal
    where both are numbers, both NaN elsewhere. Returns per way: months compared, values
    compared, values that differ, and the first difference."""
    import numpy as np
    import rasterio
    import xarray as xr

    out: dict[str, Any] = {}
    opened = {name: xr.open_zarr(path, consolidated=True) for name, path in others.items()}
    stats = {name: {"months": 0, "values": 0, "differ": 0, "first": None, "missing": []} for name in others}
    for name, ds in opened.items():
        have = [int(m) for m in ds["month"].values]
        stats[name]["extra_months"] = sorted(set(have) - set(months))
        stats[name]["missing"] = sorted(set(months) - set(have))
    for month in months:
        cog = project / "composites" / tile / str(year) / f"{tile}_{year}-{month:02d}.tif"
        with rasterio.open(cog) as src:
            for b in range(len(BANDS) + 1):
                mine = src.read(b + 1)
                for name, ds in opened.items():
                    if month in stats[name]["missing"]:
                        continue
                    if b < len(BANDS):
                        theirs = ds["median"].sel(month=month).isel(band=b).values
                    else:
                        theirs = ds["valid_count"].sel(month=month).values
                    same = (mine == theirs) | (np.isnan(mine) & np.isnan(theirs))
                    st = stats[name]
                    st["values"] += int(same.size)
                    bad = int(same.size - np.count_nonzero(same))
                    if bad and st["first"] is None:
                        r, c = np.argwhere(~same)[0]
                        st["first"] = {
                            "month": month,
                            "band": (*BANDS, "valid_count")[b],
                            "row": int(r),
                            "col": int(c),
                            "pipeline": float(mine[r, c]),
                            name: float(theirs[r, c]),
                        }
                    st["differ"] += bad
        for name in opened:
            if month not in stats[name]["missing"]:
                stats[name]["months"] += 1
    for name, st in stats.items():
        st["agree"] = (
            st["differ"] == 0 and not st["missing"] and not st["extra_months"] and st["months"] == len(months)
        )
        out[name] = st
    return out


# =============================================================================================
# Process-tree sampling, memory guard, machine facts
# =============================================================================================


def process_role(p: Any) -> str:
    import psutil

    try:
        text = " ".join(p.cmdline())
    except psutil.Error:
        text = ""
    if "resource_tracker" in text:
        return "resource-tracker"
    if "spawn_main" in text or "multiprocessing-fork" in text:
        return "dask-worker"
    if "luigi" in text:
        return "luigi"
    m = re.search(r"bench_hls_lib\.py (\w+)", text)
    if m:
        return f"bench-{m.group(1)} (client, scheduler, nannies)"
    return p.name()


def kill_tree(root_pid: int) -> None:
    """SIGKILL a process and its descendants, by pid (our own measurement's tree only)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


class MemoryGuard:
    """Kills a measurement's process tree when the machine's available memory falls below
    ``floor_bytes`` (the machine has no swap: the alternative is the kernel's OOM killer
    picking a process, maybe someone else's). Records that it did."""

    def __init__(self, root_pid: int, floor_bytes: int, interval: float = 0.25):
        import psutil

        self.psutil, self.root_pid, self.floor, self.interval = psutil, root_pid, floor_bytes, interval
        self.tripped: str | None = None
        self.min_available = psutil.virtual_memory().available
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MemoryGuard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        ps = self.psutil
        while not self._stop.wait(self.interval):
            avail = ps.virtual_memory().available
            self.min_available = min(self.min_available, avail)
            if avail < self.floor and self.tripped is None:
                self.tripped = f"stopped: machine memory available fell to {avail / 2**30:.1f} GiB"
                kill_tree(self.root_pid)


def machine_facts() -> dict[str, Any]:
    import platform
    import subprocess

    import psutil

    cpu_model = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu_model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "rasterio", "xarray", "dask", "distributed", "odc.stac", "zarr", "luigi"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            versions[mod] = str(getattr(m, "__version__", "?"))
        except ImportError:
            versions[mod] = "-"
    import rasterio

    versions["GDAL"] = rasterio.__gdal_version__
    try:
        git = ["git", "-C", str(REPO)]
        rev = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        versions["eo-extract"] = rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError) as e:
        versions["eo-extract"] = f"? ({e})"
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu_model,
        "load_avg": os.getloadavg(),
        "versions": versions,
    }


# =============================================================================================
# Requests: the archive in Azurite (private container), SAS tokens, a counting proxy
# =============================================================================================


def classify_azure(method: str, target: str) -> str:
    """Blob service request kinds: LIST for ``comp=list``, else the HTTP method."""
    query = target.partition("?")[2]
    if method.upper() == "GET" and re.search(r"(^|&)comp=list(&|$)", query):
        return "LIST"
    return method.upper()


class ServedArchive:
    """The archive's ``data/`` uploaded to Azurite's private container ``hls2``, a local
    Planetary-Computer-style SAS token service for it, and a counting proxy in front of
    Azurite. ``items`` carry blob hrefs through the proxy (unsigned: each reader signs)."""

    def __init__(self, workdir: Path, data_dir: Path, items: list[dict[str, Any]]):
        from pipeline.demo.hls_archive import items_with_href_base
        from tests.servers.azurite import start_azurite
        from tests.servers.counting_proxy import CountingProxy
        from tests.servers.sas_token import start_sas_token_service

        self.azurite = start_azurite(workdir / "azurite", die_with_parent=True)
        t0 = time.perf_counter()
        self.azurite.upload_tree(data_dir, "hls2")
        self.upload_seconds = time.perf_counter() - t0
        self.tokens = start_sas_token_service(self.azurite)
        self.proxy = CountingProxy("127.0.0.1", self.azurite.port, classify=classify_azure, track_headers=())
        self.host_port = f"127.0.0.1:{self.proxy.port}"
        self.items = items_with_href_base(items, f"http://{self.host_port}/{self.azurite.account_name}/hls2")

    def env(self) -> dict[str, str]:
        return {"PC_SDK_SAS_URL": self.tokens.sas_url}

    def signed(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items with SAS-signed hrefs, as ``planetary_computer.sign(item)`` gives a notebook."""
        import copy

        from pipeline.signing import Signing

        signing = Signing("planetary-computer", self.tokens.sas_url, (self.host_port,))
        out = []
        for it in items:
            new = copy.deepcopy(it)
            for a in new["assets"].values():
                a["href"] = signing.sign(a["href"])
            out.append(new)
        return out

    def reset(self) -> None:
        self.proxy.reset()
        self.tokens.reset()

    def counts(self) -> dict[str, Any]:
        return {
            "requests": {k: v for k, v in self.proxy.counts().items() if v},
            "bytes": sum(self.proxy.response_bytes().values()),
            "token_requests": sum(self.tokens.request_counts().values()),
        }

    def stop(self) -> None:
        for stop in (self.proxy.stop, self.tokens.stop, self.azurite.stop):
            try:
                stop()
            except Exception as e:
                log(f"stopping a server: {e!r}")


# =============================================================================================
# Command line: one measurement per process
# =============================================================================================

RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"a": run_a, "b": run_b, "d": run_d}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=sorted(RUNNERS))
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--result", required=True, type=Path)
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message="All-NaN slice encountered")
    res = RUNNERS[args.what](json.loads(args.work.read_text()))
    args.result.write_text(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    # Through the importable module, so that what Dask pickles refers to ``bench_hls_lib``.
    import bench_hls_lib

    sys.exit(bench_hls_lib.main())
