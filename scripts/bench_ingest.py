#!/usr/bin/env python
"""Scene ingest: the incumbent's commands, this workflow and GDAL's COG driver (the floor),
side by side in one run, on the same synthetic bundles and the same cores.

    .venv/bin/python scripts/bench_ingest.py                      # 2 Level-2 OLI scenes, 7,000 x 7,000 px
    .venv/bin/python scripts/bench_ingest.py --size 3000 --scenes 2   # smaller, ~4x faster
    .venv/bin/python scripts/bench_ingest.py --ways c,b --repeat 2    # interleaved repetitions

The bundles (``<product_id>.tar``, as the USGS bulk download delivers them: 19 raster members
of a Level-2 OLI/TIRS scene, ``uint16``/``int16``/``uint8``, 256 x 256 DEFLATE tiles, MTL.txt,
.xml, .json and ANG.txt) are made by :mod:`pipeline.demo.landsat_bundles` and cached under
``--cache-dir``. Their page cache is warmed before every measurement (not timed).

  a  the incumbent (``landsat-pds/landsat_ingestor``: ``l8_process_scene.process`` after the
     download, i.e. ``splitter.split`` then ``thumbnailer.thumbnail``), its steps in its order,
     one scene per process as it runs them: ``tar x`` of the whole bundle to disk, then per
     ``.TIF`` (directory order) ``gdal_translate -co COMPRESS=DEFLATE -co PREDICTOR=2 -co
     TILED=YES -co BLOCKXSIZE=512 -co BLOCKYSIZE=512`` to ``*_wrk.tif`` renamed over the
     original, and ``gdaladdo -ro -r average|nearest --config COMPRESS_OVERVIEW DEFLATE
     --config PREDICTOR_OVERVIEW 2 --config GDAL_TIFF_OVR_BLOCKSIZE 512 FILE 3 9 27 81``
     (external ``.ovr``; ``nearest`` for the QA bit masks, as it chose for ``BQA``); then the
     thumbnails: red/green/blue read at 15 % and 3 % through GDAL's average resampling, one
     65,536-bin histogram, 1 % tails, JPEG. Re-implemented here (rasterio for its
     ``osgeo.gdal`` calls, ``SR_B4/3/2`` for its ``B4/3/2``), no code of it copied. Not run:
     its index.html and gzip CSV scene line (milliseconds), its S3 upload. ``--jobs`` scenes
     at a time.
  b  this workflow, the whole command: ``luigi --module pipeline.ingest IngestScenes --source
     CACHE --dest OUT --local-scheduler`` (start-up, the embedded Dask cluster, every COG,
     thumbnails, items, collections, catalog.json, items.parquet, browse pages, summary).
  c  the floor: per raster member, ``gdal_translate -of COG -co COMPRESS=DEFLATE -co
     PREDICTOR=YES -co BLOCKSIZE=512 -co OVERVIEW_RESAMPLING=AVERAGE|NEAREST`` reading the
     member in place (``/vsitar/``), ``--jobs`` members at a time. COGs only.

Each way runs in its own process tree (sampled every 0.2 s): wall seconds, CPU seconds (the
reaped tree's rusage), MB/s (raster member bytes read / wall second), output bytes, the peak
RSS of the whole tree and of its largest process, the 1-minute load average before and after.
Printed: b / c (target <= 1.2) and a / b. The machine may be shared: compare ratios from one
run (``--repeat`` interleaves the ways), and look at the load averages beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.ingest.cog import BLOCKSIZE, QA_BITMASK_SUFFIXES  # noqa: E402

LUIGI = str(Path(sys.executable).with_name("luigi"))
WAYS = ("c", "b", "a")
LABELS = {
    "a": "a: incumbent (tar x; gdal_translate + gdaladdo .ovr per band; JPEG thumbnails)",
    "b": "b: this workflow (luigi IngestScenes, whole catalogue)",
    "c": "c: floor (gdal_translate -of COG per band, /vsitar/)",
}
# The incumbent's overview factors (ingestor/splitter.py) and thumbnail tail trim (thumbnailer.py).
INCUMBENT_LEVELS = ("3", "9", "27", "81")
INCUMBENT_TAIL_TRIM = 0.01


# ---------------------------------------------------------------- bundles


def bench_specs(size: int, scenes: int) -> list[Any]:
    """``scenes`` Level-2 OLI/TIRS bundles of ``size`` x ``size`` pixels, on neighbouring rows."""
    from pipeline.demo.landsat_bundles import demo_specs

    first = demo_specs(size, size)[0]
    specs = []
    for n in range(scenes):
        row = 27 + n
        product_id = first.product_id.replace("_047027_", f"_047{row:03d}_")
        specs.append(
            dataclasses.replace(first, product_id=product_id, ul_y=first.ul_y - n * 156_000.0, seed=100 + n)
        )
    return specs


def ensure_bundles(cache: Path, size: int, scenes: int) -> list[Path]:
    """The bench bundles under ``cache/{size}px``, built once (a bundle is written whole)."""
    from pipeline.demo.landsat_bundles import build_bundle

    root = cache / f"{size}px"
    paths = []
    for spec in bench_specs(size, scenes):
        path = root / spec.filename
        if not path.exists():
            log(f"building {path.name} ({size} x {size} px) ...")
            tmp = cache / f".building-{os.getpid()}"
            built = build_bundle(str(tmp), spec)
            root.mkdir(parents=True, exist_ok=True)
            os.replace(built.path, path)
            shutil.rmtree(tmp, ignore_errors=True)
        paths.append(path)
    return paths


def raster_members(bundle: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(bundle, "r:") as archive:
        return [m for m in archive.getmembers() if m.name.endswith(".TIF")]


def suffix_of(member_name: str) -> str:
    """``SR_B4`` of ``LC08_L2SP_..._T1_SR_B4.TIF`` (the product id has 7 ``_`` parts)."""
    return "_".join(Path(member_name).stem.split("_")[7:])


def warm(paths: Sequence[Path]) -> None:
    """Read the bundles once so every way starts from the page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


# ---------------------------------------------------------------- ways a and c (in a child process)


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def incumbent_compress(path: Path) -> None:
    """splitter.py's ``internally_compress``: tiled DEFLATE copy to ``*_wrk.tif``, renamed over."""
    work = path.with_name(path.stem + "_wrk.tif")
    run(
        ["gdal_translate", str(path), str(work), "-q", "-co", "COMPRESS=DEFLATE", "-co", "PREDICTOR=2",
         "-co", "TILED=YES", "-co", "BLOCKXSIZE=512", "-co", "BLOCKYSIZE=512"]
    )  # fmt: skip
    path.unlink()
    os.rename(work, path)


def incumbent_pyramid(path: Path) -> None:
    """splitter.py's ``build_pyramid``: external ``.ovr`` at 3, 9, 27, 81. It samples ``BQA``
    (the Collection 1 bit mask) with nearest; here its Collection 2 successors, the QA bit masks."""
    resampling = "nearest" if suffix_of(path.name) in QA_BITMASK_SUFFIXES else "average"
    run(
        ["gdaladdo", "-q", "-ro", "-r", resampling, "--config", "COMPRESS_OVERVIEW", "DEFLATE",
         "--config", "PREDICTOR_OVERVIEW", "2", "--config", "GDAL_TIFF_OVR_BLOCKSIZE", "512",
         str(path), *INCUMBENT_LEVELS]
    )  # fmt: skip


def thumbnail_band(scene_dir: Path, root_scene: str, band: int) -> Path:
    """The incumbent reads ``_B4/_B3/_B2``; a Collection 2 Level-2 bundle names them ``_SR_B*``."""
    level2 = scene_dir / f"{root_scene}_SR_B{band}.TIF"
    return level2 if level2.exists() else scene_dir / f"{root_scene}_B{band}.TIF"


def averaged(path: Path, percent: int) -> Any:
    """thumbnailer.py's ``get_band``: the band read at ``percent`` % through GDAL's average
    resampling (which uses the ``.ovr`` levels just built)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        shape = (int(src.height * percent / 100.0), int(src.width * percent / 100.0))
        return src.read(1, out_shape=shape, resampling=Resampling.average)


def common_stretch(large: Any) -> tuple[int, int]:
    """thumbnailer.py's ``get_scale``: one 65,536-bin histogram of all three channels, 0 (fill)
    left out, the values where 1 % of the pixels lie below / above."""
    import numpy as np

    histogram = np.histogram(large, 65536, (-0.5, 65535.5))[0]
    histogram[0] = 0
    tail = histogram.sum() * INCUMBENT_TAIL_TRIM
    low = int(np.argmax(np.cumsum(histogram) > tail))
    high = len(histogram) - 1 - int(np.argmax(np.cumsum(histogram[::-1]) > tail))
    return low, high


def save_jpeg(rgb: Any, low: int, high: int, path: Path) -> None:
    """thumbnailer.py's ``scale_image`` + ``gdal_array.SaveArray(..., format='JPEG')``."""
    import numpy as np
    import rasterio

    scaled = np.clip(255 * (rgb.astype("float32") - low) / max(high - low, 1), 0, 255).astype("uint8")
    profile = {"driver": "JPEG", "count": 3, "height": scaled.shape[1], "width": scaled.shape[2]}
    with rasterio.open(path, "w", dtype="uint8", **profile) as dst:
        dst.write(scaled)


def incumbent_thumbnails(scene_dir: Path, root_scene: str) -> None:
    """thumbnailer.py's ``thumbnail``: red/green/blue at 15 % and 3 %, both stretched by the
    large one's histogram, written as ``_thumb_large.jpg`` / ``_thumb_small.jpg``."""
    import numpy as np

    bands = [thumbnail_band(scene_dir, root_scene, n) for n in (4, 3, 2)]
    large = np.array([averaged(path, 15) for path in bands])
    small = np.array([averaged(path, 3) for path in bands])
    low, high = common_stretch(large)
    save_jpeg(large, low, high, scene_dir / f"{root_scene}_thumb_large.jpg")
    save_jpeg(small, low, high, scene_dir / f"{root_scene}_thumb_small.jpg")
    for aux in scene_dir.glob("*.aux.xml"):
        aux.unlink()


def incumbent_scene(bundle: Path, out: Path) -> None:
    """One downloaded scene as ``l8_process_scene.process`` handles it, in its order:
    ``splitter.split`` (``tar x`` of the whole bundle into the scene directory, then per
    ``.TIF`` in directory order: compress, then pyramid), then ``thumbnailer.thumbnail``."""
    root_scene = bundle.name.split(".")[0]
    scene_dir = out / root_scene
    scene_dir.mkdir(parents=True)
    run(["tar", "xf", str(bundle), f"--directory={scene_dir}"])
    for name in os.listdir(scene_dir):
        if name.endswith(".TIF"):
            incumbent_compress(scene_dir / name)
            incumbent_pyramid(scene_dir / name)
    incumbent_thumbnails(scene_dir, root_scene)


def run_incumbent(bundles: Sequence[Path], out: Path, jobs: int) -> None:
    """``jobs`` scenes at a time (the incumbent processes a scene in one process, one command
    after another: more cores serve it only as more scenes at once)."""
    out.mkdir(parents=True)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda bundle: incumbent_scene(bundle, out), bundles))


def floor_band(bundle: Path, member: str, out: Path) -> None:
    suffix = suffix_of(member)
    resampling = "NEAREST" if suffix in QA_BITMASK_SUFFIXES else "AVERAGE"
    run(
        ["gdal_translate", "-q", "-of", "COG", "-co", "COMPRESS=DEFLATE", "-co", "PREDICTOR=YES",
         "-co", f"BLOCKSIZE={BLOCKSIZE}", "-co", f"OVERVIEW_RESAMPLING={resampling}",
         "--config", "GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR",
         f"/vsitar/{bundle}/{member}", str(out / Path(member).name)]
    )  # fmt: skip


def run_floor(bundles: Sequence[Path], out: Path, jobs: int) -> None:
    """Every raster member of every bundle, largest first, ``jobs`` at a time."""
    work: list[tuple[int, Path, str]] = []
    for bundle in bundles:
        work += [(m.size, bundle, m.name) for m in raster_members(bundle)]
    work.sort(key=lambda w: -w[0])
    out.mkdir(parents=True)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda w: floor_band(w[1], w[2], out), work))


# ---------------------------------------------------------------- measuring a process tree


@dataclasses.dataclass
class Measurement:
    way: str
    rc: int
    wall: float
    cpu: float
    tree_peak_rss: int
    largest_rss: int
    load_before: float
    load_after: float
    bytes_in: int
    bytes_out: int
    files_out: int


class TreeSampler:
    """Peak RSS of a process tree (sum over its processes) and of its largest process."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.tree_peak = 0
        self.largest = 0
        self.cpu_seen: dict[int, float] = {}  # pid -> its own CPU seconds at the last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    rss = int(proc.memory_info().rss)
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                self.cpu_seen[proc.pid] = times.user + times.system
                total += rss
                self.largest = max(self.largest, rss)
            self.tree_peak = max(self.tree_peak, total)
            self._stop.wait(self.interval)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def output_size(out: Path) -> tuple[int, int]:
    """Bytes and files under ``out`` (the incumbent's extracted text members included)."""
    total = files = 0
    for dirpath, _, names in os.walk(out):
        for name in names:
            total += os.path.getsize(os.path.join(dirpath, name))
            files += 1
    return total, files


def measure(
    way: str, cmd: list[str], out: Path, bytes_in: int, env: dict[str, str], logdir: Path
) -> Measurement:
    load_before, cpu_before = os.getloadavg()[0], children_cpu()
    started = time.perf_counter()
    with open(logdir / f"{way}.log", "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        with TreeSampler(proc.pid) as sampler:
            rc = proc.wait()
    wall = time.perf_counter() - started
    bytes_out, files_out = output_size(out)
    # rusage counts the processes the tree reaped; a worker left to exit on its own is only in
    # the samples: the larger of the two
    cpu = max(children_cpu() - cpu_before, sum(sampler.cpu_seen.values()))
    return Measurement(
        way, rc, wall, cpu, sampler.tree_peak, sampler.largest,
        load_before, os.getloadavg()[0], bytes_in, bytes_out, files_out,
    )  # fmt: skip


def way_command(way: str, cache_root: Path, bundles: Sequence[Path], out: Path, jobs: int) -> list[str]:
    if way == "b":
        return [LUIGI, "--module", "pipeline.ingest", "IngestScenes", "--source", str(cache_root),
                "--dest", str(out), "--local-scheduler"]  # fmt: skip
    return [sys.executable, __file__, f"_{way}", "--out", str(out), "--jobs", str(jobs), *map(str, bundles)]


def bench_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GDAL_", "CPL_", "VSI_", "PIPELINE_", "DASK_"))
    }
    env.update(LUIGI_CONFIG_PATH=str(REPO / "luigi.cfg"), PYTHONPATH=str(REPO))
    return env


# ---------------------------------------------------------------- report


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def print_report(results: list[Measurement], args: argparse.Namespace, bundles: Sequence[Path]) -> None:
    print()
    print(f"## Scene ingest benchmark: {len(bundles)} Level-2 OLI bundles, {args.size} x {args.size} px, "
          f"{os.cpu_count()} cores, --jobs {args.jobs}")  # fmt: skip
    print(
        f"bundles: {mb(sum(p.stat().st_size for p in bundles))} MB; raster members read: {mb(results[0].bytes_in)} MB"
    )
    print()
    print(
        "| way | rc | wall s | CPU s | MB/s | out MB | files | tree peak RSS MB | largest process MB | load before/after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {LABELS[r.way]} | {r.rc} | {r.wall:.1f} | {r.cpu:.1f} | {r.bytes_in / 1e6 / r.wall:.1f} | "
            f"{mb(r.bytes_out)} | {r.files_out} | {mb(r.tree_peak_rss)} | {mb(r.largest_rss)} | "
            f"{r.load_before:.2f} / {r.load_after:.2f} |"
        )
    print()
    b_log = args.log_dir / "b.log"
    if (
        "b" in args.ways and b_log.exists()
    ):  # the workflow's own account: publishing vs start-up and catalogue
        for line in b_log.read_text(errors="replace").splitlines():
            if "s publishing" in line or line.startswith("catalogue:"):
                print(f"b (last run) says: {line.strip()}")
        print()
    for repetition in range(args.repeat):
        rep = {r.way: r for r in results[repetition * len(args.ways) : (repetition + 1) * len(args.ways)]}
        parts = []
        if "b" in rep and "c" in rep:
            parts.append(
                f"b / c wall {rep['b'].wall / rep['c'].wall:.2f} (CPU {rep['b'].cpu / rep['c'].cpu:.2f})"
            )
        if "a" in rep and "b" in rep:
            parts.append(
                f"a / b wall {rep['a'].wall / rep['b'].wall:.2f} (CPU {rep['a'].cpu / rep['b'].cpu:.2f})"
            )
        if "a" in rep and "c" in rep:
            parts.append(f"a / c wall {rep['a'].wall / rep['c'].wall:.2f}")
        print(f"repetition {repetition + 1}: " + "; ".join(parts))
    if args.repeat > 1:
        print_medians(results)


def print_medians(results: list[Measurement]) -> None:
    """Per way, the median wall and CPU seconds over the repetitions, and their ratios: on a
    shared machine one repetition can land on a burst of other work."""
    walls = {way: statistics.median(r.wall for r in results if r.way == way) for way in LABELS}
    cpus = {way: statistics.median(r.cpu for r in results if r.way == way) for way in LABELS}
    ways = [way for way in WAYS if any(r.way == way for r in results)]
    print("medians: " + "; ".join(f"{way} {walls[way]:.1f} s wall, {cpus[way]:.1f} s CPU" for way in ways))
    pairs = [(x, y) for x, y in (("b", "c"), ("a", "b"), ("a", "c")) if x in ways and y in ways]
    print(
        "median ratios: "
        + "; ".join(
            f"{x} / {y} wall {walls[x] / walls[y]:.2f} (CPU {cpus[x] / cpus[y]:.2f})" for x, y in pairs
        )
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=7000, help="pixels per side of a 30 m band")
    parser.add_argument("--scenes", type=int, default=2, help="bundles")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="scenes at a time for a, bands at a time for c"
    )
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated, run in this order")
    parser.add_argument("--repeat", type=int, default=1, help="run the ways this many times, interleaved")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench-ingest")
    parser.add_argument("--work-dir", type=Path, default=None, help="outputs (default: CACHE/out, emptied)")
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args(argv)
    args.ways = args.ways.split(",")
    if unknown := set(args.ways) - set(WAYS):
        parser.error(f"unknown ways: {sorted(unknown)}")
    return args


def child(argv: Sequence[str]) -> int:
    """``_a`` / ``_c``: one way, run in its own process by :func:`measure`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("way", choices=["_a", "_c"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("bundles", type=Path, nargs="+")
    args = parser.parse_args(argv)
    runner: Callable[[Sequence[Path], Path, int], None] = run_incumbent if args.way == "_a" else run_floor
    runner(args.bundles, args.out, args.jobs)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_a", "_c"):
        return child(argv)
    args = parse_args(argv)
    bundles = ensure_bundles(args.cache_dir, args.size, args.scenes)
    bytes_in = sum(m.size for b in bundles for m in raster_members(b))
    work = args.work_dir or args.cache_dir / "out"
    logdir = args.log_dir = work / "logs"
    env = bench_env()
    results: list[Measurement] = []
    for repetition in range(args.repeat):
        for way in args.ways:
            out = work / way
            shutil.rmtree(out, ignore_errors=True)
            logdir.mkdir(parents=True, exist_ok=True)
            warm(bundles)
            log(f"run {repetition + 1}: {LABELS[way]} (load {os.getloadavg()[0]:.2f})")
            cmd = way_command(way, bundles[0].parent, bundles, out, args.jobs)
            result = measure(way, cmd, out, bytes_in, env, logdir)
            log(f"  {result.wall:.1f} s wall, {result.cpu:.1f} s CPU, rc {result.rc}")
            results.append(result)
            if args.json:  # after every measurement: a run cut short still leaves its figures
                args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    print_report(results, args, bundles)
    return 0 if all(r.rc == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
