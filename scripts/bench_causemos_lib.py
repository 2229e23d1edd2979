"""Shared by scripts/compare_causemos_reference.py and scripts/bench_causemos.py: an input table, a local
S3 server, one run of the reference flow and one of ours (both writing to that server, each timed with
its process tree's peak RSS), the objects they wrote, and the contract's comparison of two output sets.

The reference is uncharted-causemos/slow-tortoise at 6a0f89a (the last commit of January 2024), unpacked
under .cache/causemos-ref, with its pinned packages in .cache/causemos-ref-venv (see ``ensure_reference``).
Its code is not part of this repository.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.causemos.tiles import Tile, decode_tile  # noqa: E402

REFERENCE_REPO = "uncharted-causemos/slow-tortoise"
REFERENCE_COMMIT = "6a0f89a"  # 2024-01-31, the last commit of January 2024
REFERENCE_DIR = REPO / ".cache" / "causemos-ref"
REFERENCE_VENV = REPO / ".cache" / "causemos-ref-venv"
REFERENCE_PACKAGES = [  # setup.py's install_requires; numpy < 2 because pandas 2.1.1 is built on numpy 1
    "prefect==1.4.1", "dask[dataframe,distributed]==2023.9.2", "pandas==2.1.1", "fastparquet==2023.8.0",
    "bokeh==3.2.2", "boto3==1.29.0", "protobuf==4.25.0", "numpy==1.26.4",
]  # fmt: skip
RUNNER = REPO / "scripts" / "bench_causemos_ref_runner.py"

# Where rows without coordinates get a stand-in position for the reference's second run (see
# ``with_stand_in_coordinates``): outside every generated point, inside the tile grid.
STAND_IN_LAT = -45.0
STAND_IN_LNG = -60.0


# ============================================================================ the reference's environment


def ensure_reference() -> Path:
    """The reference's Python; says how to build it when missing."""
    python = REFERENCE_VENV / "bin" / "python"
    if not (REFERENCE_DIR / "flows" / "data_pipeline.py").is_file() or not python.is_file():
        sys.exit(
            "the reference is not set up. Fetch github:"
            + REFERENCE_REPO
            + " (a bare mirror), then:\n"
            + f"  mkdir -p {REFERENCE_DIR} && git --git-dir=MIRROR archive {REFERENCE_COMMIT} | tar -x -C {REFERENCE_DIR}\n"
            + f"  python3.11 -m venv {REFERENCE_VENV} && {REFERENCE_VENV}/bin/pip install "
            + " ".join(f"'{p}'" for p in REFERENCE_PACKAGES)
        )
    return python


# ============================================================================ input


def make_input(
    rows: int, seed: int, *, months: int = 24, countries: int = 3, points: int = 400
) -> pd.DataFrame:
    """A Dojo-shaped long table: 3 features; country > admin1 > admin2 > admin3 (some rows lack admin3 or
    admin2, one name holds ``//``); points inside admin3 regions; ~3 % of rows without lat/lng (and a few
    with only lat missing); one qualifier with 4 values (some null), one with 150 (above the regional
    series threshold of 100); monthly timestamps with a day offset from 2019 on; a few missing values and
    ``+-inf``. Values are multiples of 1/4 so that sums are exact whatever the order of adding."""
    rng = np.random.default_rng(seed)
    admin3 = [
        (f"Country {c}", f"Province {c}.{a}" if (c, a) != (1, 2) else "Upper//Nile", f"District {c}.{a}.{d}", f"Ward {c}.{a}.{d}.{w}")
        for c in range(countries) for a in range(3) for d in range(3) for w in range(3)
    ]  # fmt: skip
    point_region = rng.integers(0, len(admin3), points)
    point_lat = np.round(rng.uniform(-30.0, 30.0, points), 4)
    point_lng = np.round(rng.uniform(-10.0, 45.0, points), 4)
    starts = pd.date_range("2019-01-01", periods=months, freq="MS").as_unit("ms").asi8
    p = rng.integers(0, points, rows)
    regions = np.array(admin3, dtype=object)[point_region[p]]
    frame = pd.DataFrame({
        "timestamp": starts[rng.integers(0, months, rows)] + rng.integers(0, 27 * 86_400_000, rows),
        "country": regions[:, 0], "admin1": regions[:, 1], "admin2": regions[:, 2], "admin3": regions[:, 3],
        "lat": point_lat[p], "lng": point_lng[p],
        "feature": np.array(["rainfall", "crop production", "prices"])[rng.integers(0, 3, rows)],
        "value": rng.integers(-40, 400, rows) / 4.0,
        "event_type": np.array(["Battles", "Protests", "Riots", "Explosions"])[rng.integers(0, 4, rows)],
        "source": np.array([f"source {i:03d}" for i in range(150)])[rng.integers(0, 150, rows)],
    })  # fmt: skip
    frame = frame.astype({"event_type": object, "source": object})
    pick = np.random.default_rng(seed + 1)
    rows_at = lambda n: pick.choice(rows, size=n, replace=False)  # noqa: E731
    frame.loc[rows_at(rows // 30), ["lat", "lng"]] = np.nan
    frame.loc[rows_at(max(1, rows // 300)), "lat"] = np.nan
    frame.loc[rows_at(rows // 20), "admin3"] = None
    frame.loc[rows_at(rows // 50), ["admin2", "admin3"]] = None
    frame.loc[rows_at(rows // 40), "event_type"] = None
    frame.loc[rows_at(max(1, rows // 200)), "value"] = np.nan
    frame.loc[rows_at(3), "value"] = np.inf
    frame.loc[rows_at(2), "value"] = -np.inf
    return frame


def write_input(frame: pd.DataFrame, directory: Path, files: int = 2) -> list[str]:
    """``part-{i}.parquet.gzip`` files (gzip-compressed parquet, as Dojo publishes them)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, part in enumerate(np.array_split(np.arange(len(frame.index)), files)):
        path = directory / f"part-{index}.parquet.gzip"
        frame.iloc[part].to_parquet(path, compression="gzip", index=False)
        paths.append(str(path))
    return paths


def with_stand_in_coordinates(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with missing lat/lng replaced by one stand-in position. The reference drops rows without
    coordinates from every aggregated output; ours keeps them where no coordinate is needed (deliberate
    difference 1), grouping them as one point per (timestamp, regions, qualifiers) like any other
    position. The reference run on this table is therefore what ours must equal in series, regional
    outputs, extrema and the model summary (not in tiles and grid stats, which use the real positions).
    Unparseable lat/lng text counts as missing, as the validation makes it null."""
    coordinates = {name: pd.to_numeric(frame[name], errors="coerce") for name in ("lat", "lng")}  # text too
    return frame.assign(**coordinates).fillna({"lat": STAND_IN_LAT, "lng": STAND_IN_LNG})


# ============================================================================ runs


@dataclass
class RunFigures:
    seconds: float
    peak_rss_mib: float
    stderr_tail: str = ""
    stderr: str = ""  # the whole log (for profiling scripts)


@dataclass
class Params:
    """The flow's parameters, in the reference's names."""

    data_id: str = "compare-model"
    run_id: str = "run-1"
    indicator: bool = False
    qualifier_map: dict[str, list[str]] = field(default_factory=dict)
    weight_column: str = ""
    qualifier_thresholds: dict[str, int] | None = None
    raw_count_threshold: int = 10000
    fill_timestamp: int = 0

    def reference(self, paths: list[str], bucket: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_id": self.data_id, "run_id": self.run_id, "data_paths": paths, "is_indicator": self.indicator,
            "qualifier_map": self.qualifier_map, "weight_column": self.weight_column,
            "raw_count_threshold": self.raw_count_threshold, "fill_timestamp": self.fill_timestamp,
            "indicator_bucket": bucket, "model_bucket": bucket,
        }  # fmt: skip
        if self.qualifier_thresholds is not None:
            out["qualifier_thresholds"] = self.qualifier_thresholds
        return out

    def ours(self, paths: list[str], dest: str) -> list[str]:
        args = [
            "--data-id", self.data_id, "--run-id", self.run_id, "--data-paths", ",".join(paths), "--dest", dest,
            "--qualifier-map", json.dumps(self.qualifier_map), "--raw-count-threshold", str(self.raw_count_threshold),
            "--fill-timestamp", str(self.fill_timestamp),
        ]  # fmt: skip
        if self.indicator:
            args.append("--indicator")
        if self.weight_column:
            args += ["--weight-column", self.weight_column]
        if self.qualifier_thresholds is not None:
            args += ["--qualifier-thresholds", json.dumps(self.qualifier_thresholds)]
        return args


def _tree_rss_kib(root: int) -> int:
    """Summed RSS (KiB) of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(name))
        rss[int(name)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 7200) -> RunFigures:
    """Run ``args``; wall time and the process tree's peak RSS (sampled every 0.2 s); exit on failure."""
    started = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=devnull, stderr=subprocess.PIPE, text=True)
        peak = 0
        stderr_chunks: list[str] = []
        import threading

        reader = threading.Thread(
            target=lambda: stderr_chunks.append(proc.stderr.read() if proc.stderr else "")
        )
        reader.start()
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kib(proc.pid))
            if time.perf_counter() - started > timeout:
                proc.kill()
            time.sleep(0.2)
        reader.join()
    seconds = time.perf_counter() - started
    stderr = "".join(stderr_chunks)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{stderr[-4000:]}")
    return RunFigures(seconds=seconds, peak_rss_mib=peak / 1024, stderr_tail=stderr[-2000:], stderr=stderr)


def _clean_env(server_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WM_", "PIPELINE_", "AWS_", "LUIGI_"))}
    env.update(server_env)
    return env


def run_reference(
    params: Params, paths: list[str], server: Any, bucket: str, *, scheduler: str = ""
) -> RunFigures:
    """The reference flow on its LocalDaskExecutor (threads; ``scheduler`` = a Dask address instead),
    writing with boto3 to ``bucket`` on the local S3 server."""
    python = ensure_reference()
    env = _clean_env(server.env())
    env.update({
        "WM_DEST_TYPE": "s3", "WM_S3_DEST_URL": server.endpoint_url, "WM_S3_DEST_KEY": server.access_key,
        "WM_S3_DEST_SECRET": server.secret_key, "WM_RUN_CONFIG_TYPE": "local", "WM_DASK_SCHEDULER": scheduler,
        "PREFECT__LOGGING__LEVEL": "WARNING", "PYTHONPATH": str(REFERENCE_DIR),
    })  # fmt: skip
    args = [str(python), str(RUNNER), json.dumps(params.reference(paths, bucket))]
    return run_measured(args, cwd=REFERENCE_DIR, env=env)


def run_ours(
    params: Params,
    paths: list[str],
    server: Any,
    bucket: str,
    workdir: Path,
    *extra: str,
    batch_rows: int = 0,
) -> RunFigures:
    """``luigi --module pipeline.causemos CausemosRun`` with the embedded Dask cluster, writing to
    ``s3://bucket`` on the local S3 server; ``batch_rows``: luigi.cfg's ``[causemos] batch_rows`` replaced
    (small values make every points table be read period by period)."""
    env = _clean_env(server.env())
    env["LUIGI_CONFIG_PATH"] = str(REPO / "luigi.cfg")
    if batch_rows:
        config = re.sub(
            r"(?m)^batch_rows\s*=.*$", f"batch_rows = {batch_rows}", (REPO / "luigi.cfg").read_text()
        )
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "luigi.cfg").write_text(config)
        env["LUIGI_CONFIG_PATH"] = str(workdir / "luigi.cfg")
    luigi = REPO / ".venv" / "bin" / "luigi"
    args = [str(luigi), "--module", "pipeline.causemos", "CausemosRun", *params.ours(paths, f"s3://{bucket}")]
    workdir.mkdir(parents=True, exist_ok=True)
    return run_measured([*args, *extra, "--local-scheduler"], cwd=workdir, env=env)


def bucket_objects(server: Any, bucket: str, *, skip_prefix: str = "_state/") -> dict[str, bytes]:
    """Every object of ``bucket`` (our run's bookkeeping under ``_state/`` left out)."""
    from concurrent.futures import ThreadPoolExecutor

    client = server.client(max_pool_connections=16)
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
        if not obj["Key"].startswith(skip_prefix)
    ]
    with ThreadPoolExecutor(16) as pool:
        bodies = pool.map(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys)
        return dict(zip(keys, bodies, strict=True))


# ============================================================================ comparison

FAMILIES: list[tuple[str, Callable[[str], bool]]] = [
    ("raw.csv", lambda k: k.endswith("/raw/raw.csv")),
    ("region_lists.json", lambda k: k.endswith("/info/region_lists.json")),
    ("qualifier_counts.json", lambda k: k.endswith("/info/qualifier_counts.json")),
    ("qualifier value lists", lambda k: "/info/qualifiers/" in k),
    ("results.json", lambda k: k.endswith("/results/results.json")),
    ("global series", lambda k: k.endswith("/timeseries/global/global.csv")),
    ("qualifier series", lambda k: "/timeseries/qualifiers/" in k and "/regional/" not in k),
    ("regional extrema", lambda k: k.endswith("/stats/default/extrema.json")),
    ("regional series", lambda k: "/regional/" in k and "/timeseries/default/" in k),
    ("regional qualifier series", lambda k: "/regional/" in k and "/timeseries/qualifiers/" in k),
    ("regional aggs", lambda k: "/aggs/" in k and "/default/default.csv" in k),
    ("regional qualifier aggs", lambda k: "/aggs/" in k and "/qualifiers/" in k),
    ("grid stats", lambda k: "/stats/grid/" in k),
    ("tiles", lambda k: k.endswith(".tile")),
]
# Families the rows without coordinates change (deliberate difference 1): compared with the reference's
# run on the stand-in table. The rest: with its run on the table itself.
COORDINATE_FREE = {
    "global series", "qualifier series", "regional extrema", "regional series", "regional qualifier series",
    "regional aggs", "regional qualifier aggs",
}  # fmt: skip


def family_of(key: str) -> str:
    for name, test in FAMILIES:
        if test(key):
            return name
    return "other"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _cells_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    na, nb = _number(a), _number(b)
    return na is not None and nb is not None and _close(na, nb)


def _canonical_cell(text: str) -> str:
    """Numbers by value (11 significant digits, so that sums in another order compare equal)."""
    value = _number(text)
    if value is None or text.strip() == "":
        return text
    if math.isnan(value):
        return "nan"
    return f"{value + 0.0:.11g}"


def compare_csv(ours: bytes, ref: bytes) -> str | None:
    """None when equal as the contract says (header equal, rows equal as a multiset, numbers by value);
    else what differs."""
    a = list(csv.reader(io.StringIO(ours.decode())))
    b = list(csv.reader(io.StringIO(ref.decode())))
    if not a or not b:
        return None if a == b else f"empty vs not: {len(a)} / {len(b)} lines"
    if a[0] != b[0]:
        if sorted(a[0]) == sorted(b[0]):
            order = [a[0].index(name) for name in b[0]]
            a = [[row[i] for i in order] for row in a]
            head = f"column order differs: ours {a[0][:6]} ref {b[0][:6]}; "
            a[0] = b[0]
        else:
            return f"header: ours {a[0]} ref {b[0]}"
    else:
        head = ""
    ra = Counter(tuple(_canonical_cell(c) for c in row) for row in a[1:])
    rb = Counter(tuple(_canonical_cell(c) for c in row) for row in b[1:])
    if ra == rb:
        return head.rstrip("; ") or None
    only_a, only_b = list((ra - rb).elements()), list((rb - ra).elements())
    if len(only_a) == len(only_b) and _rows_close(only_a, only_b):
        return head.rstrip("; ") or None
    return f"{head}{len(a) - 1} vs {len(b) - 1} rows; ours only {only_a[:2]}; ref only {only_b[:2]}"


def _rows_close(a: list[tuple[str, ...]], b: list[tuple[str, ...]]) -> bool:
    """Leftover rows pair up with numbers equal within tolerance (sorted the same way)."""
    return all(
        len(x) == len(y) and all(_cells_equal(p, q) for p, q in zip(x, y, strict=True))
        for x, y in zip(sorted(a), sorted(b), strict=True)
    )


def _canonical_json(value: Any) -> Any:
    """JSON as data: lists as multisets (their order is not part of the contract), numbers by value."""
    if isinstance(value, dict):
        return {k: _canonical_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_canonical_json(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return "nan" if math.isnan(value) else f"{value + 0.0:.11g}"
    return value


def compare_json(ours: bytes, ref: bytes, *, ignore: Iterable[str] = ()) -> str | None:
    a, b = json.loads(ours), json.loads(ref)
    for path in ignore:  # "data_info.x" or "output_agg_values"
        for doc in (a, b):
            parts = path.split(".")
            node = doc
            for part in parts[:-1]:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(parts[-1], None)
    ca, cb = _canonical_json(a), _canonical_json(b)
    if ca == cb:
        return None
    return f"ours {json.dumps(ca, sort_keys=True)[:300]} ref {json.dumps(cb, sort_keys=True)[:300]}"


def extrema_order_problem(ours: bytes) -> str | None:
    """The one order the contract states: extrema newest timestamp first."""
    for side in json.loads(ours).values():
        for column, rows in side.items():
            stamps = [row["timestamp"] for row in rows]
            if stamps != sorted(stamps, reverse=True):
                return f"{column}: timestamps not newest first: {stamps[:5]}"
    return None


def _tile_fields(tile: Tile) -> dict[str, Any]:
    return {
        "coord": (tile.z, tile.x, tile.y, tile.t, tile.total_bins),
        "bins": {
            k: (s.count, s.sum, s.avg, s.s_sum_t_sum, s.s_sum_t_mean, s.weight) for k, s in tile.stats.items()
        },
    }


def compare_tile(ours: bytes, ref: bytes) -> str | None:
    a, b = _tile_fields(decode_tile(ours)), _tile_fields(decode_tile(ref))
    if a["coord"] != b["coord"]:
        return f"coord ours {a['coord']} ref {b['coord']}"
    if a["bins"].keys() != b["bins"].keys():
        return f"bins ours-only {sorted(a['bins'].keys() - b['bins'].keys())[:5]} ref-only {sorted(b['bins'].keys() - a['bins'].keys())[:5]}"
    for key, values in a["bins"].items():
        if values[0] != b["bins"][key][0] or not all(
            _close(x, y) for x, y in zip(values[1:], b["bins"][key][1:], strict=True)
        ):
            return f"bin {key}: ours {values} ref {b['bins'][key]}"
    return None


def compare_object(key: str, ours: bytes, ref: bytes) -> str | None:
    if key.endswith(".tile"):
        return compare_tile(ours, ref)
    if key.endswith(".json"):
        problem = compare_json(ours, ref)
        if problem is None and key.endswith("extrema.json"):
            problem = extrema_order_problem(ours)
        return problem
    return compare_csv(ours, ref)


@dataclass
class FamilyVerdict:
    family: str
    keys: int = 0
    equal: int = 0
    missing: list[str] = field(default_factory=list)  # in the reference's output, not in ours
    extra: list[str] = field(default_factory=list)  # in ours, not in the reference's
    differing: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def line(self) -> str:
        status = "SAME" if self.ok else "DIFFERENT"
        text = f"{status:9} {self.family:27} {self.equal}/{self.keys} objects equal"
        if self.missing:
            text += f"; {len(self.missing)} missing in ours, e.g. {self.missing[:2]}"
        if self.extra:
            text += f"; {len(self.extra)} only in ours, e.g. {self.extra[:2]}"
        if self.differing:
            key, why = self.differing[0]
            text += f"; {len(self.differing)} differ, e.g. {key}: {why[:400]}"
        for note in self.notes:
            text += f"\n          note: {note}"
        return text


def compare_outputs(
    ours: dict[str, bytes], ref_plain: dict[str, bytes], ref_stand_in: dict[str, bytes]
) -> list[FamilyVerdict]:
    """Per output family: the same keys and equal content. Coordinate-free families against the
    reference's stand-in run; the rest against its plain run. In results.json the model summary
    (``output_agg_values``) is an aggregate over points too, so it comes from the stand-in run."""
    verdicts = {name: FamilyVerdict(name) for name, _ in FAMILIES}
    verdicts["other"] = FamilyVerdict("other")
    for family, verdict in verdicts.items():
        ref = ref_stand_in if family in COORDINATE_FREE else ref_plain
        ref_keys = {k for k in ref if family_of(k) == family}
        our_keys = {k for k in ours if family_of(k) == family}
        verdict.keys = len(ref_keys)
        verdict.missing = sorted(ref_keys - our_keys)
        verdict.extra = sorted(our_keys - ref_keys)
        for key in sorted(ref_keys & our_keys):
            if family == "results.json":
                problem = compare_json(ours[key], ref[key], ignore=["output_agg_values"])
                summary = compare_json(
                    json.dumps(json.loads(ours[key]).get("output_agg_values")).encode(),
                    json.dumps(json.loads(ref_stand_in[key]).get("output_agg_values")).encode(),
                )
                problem = problem or (f"output_agg_values: {summary}" if summary else None)
            else:
                problem = compare_object(key, ours[key], ref[key])
            if problem is None:
                verdict.equal += 1
            elif problem.startswith("column order differs"):
                verdict.equal += 1
                verdict.notes.append(f"{key}: {problem}")
            else:
                verdict.differing.append((key, problem))
        del verdict.notes[3:]
    return [v for v in verdicts.values() if v.keys or v.extra]
