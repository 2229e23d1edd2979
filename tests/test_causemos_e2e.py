"""Causemos end to end: the luigi command line on generated parquet inputs (local files, served over
HTTP, and from the S3 server), outputs to a local directory and to S3.

Every output key and every byte is compared with :func:`pipeline.causemos.recipe.run_in_memory` (the
oracle), tiles also decoded, and a few cells, tile bins and counts are computed here again by hand
from the raw rows, so the check is not the same code twice. Then: a second run writes nothing; a
rerun over changed input leaves no stale object (locally and on S3); a run killed with SIGKILL midway
and rerun ends with exactly the clean run's files; bad options stop the run with one line naming the
option and write nothing; the dry run counts what the run writes.

Most runs use an external Dask cluster named by ``WM_DASK_SCHEDULER`` (the reference's variable);
the killed run uses the embedded one.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.causemos import pieces, recipe
from pipeline.causemos.outputs import same_object_key
from pipeline.causemos.tiles import decode_tile, tiles_equal
from tests.helpers import LUIGI, REPO, kill_when, luigi_env, run_luigi

pytestmark = pytest.mark.slow

MODULE = "pipeline.causemos"
DATA_ID, RUN_ID = "model-1", "run-1"
BASE = f"{DATA_ID}/{RUN_ID}/"
MONTHS = [
    1640995200000,
    1643673600000,
    1646092800000,
    1648771200000,
    1672531200000,
    1675209600000,
]  # 2022-01..04, 2023-01..02
DAY = 86_400_000
INVALID_TS = 10**13  # >= int64.max / 1e6 ms: counted and dropped
QUALIFIER_MAP = {"F1": ["camp"], "F2": ["camp", "source"]}
RAW_THRESHOLD = 150  # one feature has more rows: no raw.csv for it


# ================================================================ inputs


def _points(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Places in Ethiopia and South Sudan: regions down to admin3, coordinates (some missing)."""
    countries = np.array(["Ethiopia", "South//Sudan"])  # "//" is removed from region names
    frame = pd.DataFrame({
        "country": countries[rng.integers(0, 2, n)],
        "admin1": np.array(["Afar", "Amhara", "Jonglei"])[rng.integers(0, 3, n)],
        "admin2": np.array(["Zone 1", "Zone 2"])[rng.integers(0, 2, n)],
        "admin3": np.array(["W1", "W2", "W3"])[rng.integers(0, 3, n)],
        "lat": np.round(rng.uniform(3.0, 14.0, n), 3),
        "lng": np.round(rng.uniform(28.0, 44.0, n), 3),
    })  # fmt: skip
    frame.loc[[3, 11], ["lat", "lng"]] = np.nan
    return frame


def _rows(rng: np.random.Generator, places: pd.DataFrame, n: int, features: list[str]) -> pd.DataFrame:
    pick = rng.integers(0, len(places.index), n)
    frame = places.iloc[pick].reset_index(drop=True)
    frame.insert(
        0, "timestamp", np.array(MONTHS)[rng.integers(0, len(MONTHS), n)] + rng.integers(0, 25 * DAY, n)
    )
    frame["feature"] = np.array(features)[rng.integers(0, len(features), n)]
    frame["value"] = rng.integers(-8, 40, n) / 4.0  # quarters: every sum is exact in any order
    frame["w"] = rng.integers(1, 5, n) / 2.0
    return frame


def write_inputs(directory: Path, seed: int, *, changed: bool = False) -> list[Path]:
    """Two numeric files with mismatched columns and dtypes, and a string-values file (skipped).

    a: F1, F2; qualifier ``camp``; a whitespace-only column (dropped); null and missing values, +-inf.
    b: F2, F3 (F3 only here); qualifier ``source``; ``admin3`` numeric (text in a: both become text);
    a null timestamp, an invalid one. ``changed``: F3 gone, F1 without South Sudan, other values.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    places = _points(rng, 24)
    a = _rows(rng, places, 260, ["F1", "F1", "F2"])
    a["camp"] = np.array(["north", "south", "Explosions/Remote violence"])[rng.integers(0, 3, len(a.index))]
    a["notes"] = "  "
    a.loc[5, "value"] = np.nan
    a.loc[6, "value"] = np.inf
    a.loc[7, "value"] = -np.inf
    a.loc[8, "timestamp"] = INVALID_TS
    b = _rows(rng, places, 140, ["F2", "F3"])
    b["admin3"] = rng.integers(1, 4, len(b.index))
    b["source"] = np.array(["radio", "survey"])[rng.integers(0, 2, len(b.index))]
    b["timestamp"] = b["timestamp"].astype("float64")
    b.loc[2, "timestamp"] = np.nan  # filled with --fill-timestamp
    b.loc[4, "timestamp"] = INVALID_TS
    if changed:
        a = a[~((a["feature"] == "F1") & (a["country"] == "South//Sudan"))]
        a.loc[a.index[:40], "value"] += 0.5
        b = b[b["feature"] != "F3"]
    paths = [directory / "a.parquet.gzip", directory / "b.parquet.gzip", directory / "b_str.parquet.gzip"]
    a.to_parquet(paths[0], compression="gzip", index=False)
    b.to_parquet(paths[1], compression="gzip", index=False)
    b.head(5).assign(value="text").to_parquet(paths[2], compression="gzip", index=False)
    return paths


def read_frames(paths: list[Path]) -> list[tuple[str, pd.DataFrame]]:
    return [(p.name, pd.read_parquet(p)) for p in paths]


def expected(paths: list[Path], **params) -> dict[str, bytes]:
    """The oracle's objects, keys as a directory (or SeaweedFS) keeps them (repeated ``/`` collapse)."""
    out = recipe.run_in_memory(read_frames(paths), recipe.Parameters(DATA_ID, RUN_ID, **params))
    return {same_object_key(k): v for k, v in out.items()}


LOCAL_PARAMS = {
    "qualifier_map": QUALIFIER_MAP,
    "raw_count_threshold": RAW_THRESHOLD,
    "fill_timestamp": MONTHS[2] + 5,
}


def cli_args(task: str, paths: list[str], dest: str, *extra: str) -> list[str]:
    return [
        task, "--data-id", DATA_ID, "--run-id", RUN_ID, "--data-paths", ",".join(paths), "--dest", dest,
        "--qualifier-map", json.dumps(QUALIFIER_MAP), "--raw-count-threshold", str(RAW_THRESHOLD),
        "--fill-timestamp", str(MONTHS[2] + 5), "--causemos-points-per-piece", "25", "--local-scheduler", *extra,
    ]  # fmt: skip


# ================================================================ fixtures


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    return write_inputs(tmp_path_factory.mktemp("causemos-in"), seed=5)


@pytest.fixture(scope="module")
def dask_env(tmp_path_factory, s3_server):
    """An external cluster; its workers read and write S3 themselves, so they get the credentials in their
    environment, as a deployment's workers would."""
    from tests.servers.dask_cluster import start_dask_cluster

    saved = dict(os.environ)
    os.environ.update(s3_server.env())
    try:
        cluster = start_dask_cluster(tmp_path_factory.mktemp("causemos-dask"), n_workers=2, nthreads=2)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield {"WM_DASK_SCHEDULER": cluster.address}
    cluster.stop()


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_luigi(args, cwd=cwd, env=luigi_env(env), module=MODULE, timeout=300)


def tree(root: Path, *, state: bool = False) -> dict[str, bytes]:
    """Every file under ``root`` (dot-files too), ``_state`` only if asked."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if state or not rel.startswith("_state/"):
                out[rel] = Path(dirpath, name).read_bytes()
    return out


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        k: (os.stat(root / k).st_mtime_ns, hashlib.sha1(v).hexdigest())
        for k, v in tree(root, state=True).items()
    }


def assert_same_objects(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    """Same keys; every object the same bytes; tiles also the same after decoding."""
    assert sorted(set(want) - set(got))[:5] == [] and sorted(set(got) - set(want))[:5] == []
    differing = [k for k in want if got[k] != want[k]]
    assert differing == [], (differing[:3], [(got[k][:200], want[k][:200]) for k in differing[:2]])
    tiles = [k for k in want if k.endswith(".tile")]
    assert tiles and all(tiles_equal(decode_tile(got[k]), decode_tile(want[k])) for k in tiles)


@pytest.fixture(scope="module")
def local_run(inputs, dask_env, tmp_path_factory):
    dest = tmp_path_factory.mktemp("causemos-local") / "bucket"
    proc = run(cli_args("CausemosRun", [str(p) for p in inputs], str(dest)), dest.parent, dask_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dest, proc


# ================================================================ local run: the oracle and the hand


def test_local_run_equals_the_recipe(local_run, inputs):
    dest, proc = local_run
    want = expected(inputs, **LOCAL_PARAMS)
    assert_same_objects(tree(dest), want)
    assert len(want) > 1000
    # the weight column "w" is a qualifier here: listed (as text), not broken down
    assert sorted(json.loads(want[f"{BASE}raw/F1/info/qualifiers/w.json"])) == ["0.5", "1.0", "1.5", "2.0"]
    assert "Causemos summary" in proc.stderr and f"objects written: {len(want):,}" in proc.stderr


def _validated(paths: list[Path], fill: int) -> pd.DataFrame:
    """The input as the contract validates it, computed here without the recipe."""
    frames = [pd.read_parquet(p) for p in paths if not p.name.endswith("_str.parquet.gzip")]
    rows = []
    for frame in frames:
        for record in frame.to_dict("records"):
            ts = record["timestamp"]
            ts = fill if ts is None or (isinstance(ts, float) and math.isnan(ts)) else ts
            if ts >= INVALID_TS:
                continue
            value = record["value"]
            record.update(
                timestamp=int(ts), value=value if value is not None and math.isfinite(value) else math.nan,
                country=str(record["country"]).replace("//", ""), admin3=str(record["admin3"]),
                camp=record.get("camp", ""), source=record.get("source", ""),
            )  # fmt: skip
            rows.append(record)
    return pd.DataFrame(rows)


def _month(ts: int) -> int:
    stamp = pd.Timestamp(ts, unit="ms")
    return int(pd.Timestamp(year=stamp.year, month=stamp.month, day=1).value // 10**6)


def _points_by_hand(rows: pd.DataFrame) -> dict[tuple, list[float]]:
    """Values per point: (period, place, qualifiers) -> finite values (NaN as absent)."""
    points: dict[tuple, list[float]] = defaultdict(list)
    for r in rows.itertuples():
        lat, lng = (None if math.isnan(c) else c for c in (r.lat, r.lng))  # NaN != NaN: one key for "missing"
        key = (_month(r.timestamp), r.country, r.admin1, r.admin2, r.admin3, lat, lng, r.camp, r.source, r.w)
        points[key]  # a point whose values are all NaN still exists (t_sum 0, no count)
        if not math.isnan(r.value):
            points[key].append(r.value)
    return points


def test_cells_tiles_and_counts_by_hand(local_run, inputs):
    dest, _ = local_run
    fill = MONTHS[2] + 5
    rows = _validated(inputs, fill)
    f1 = rows[rows["feature"] == "F1"]
    month = MONTHS[1]
    points = {k: v for k, v in _points_by_hand(f1).items() if k[0] == month}
    sums = [sum(v) for v in points.values()]
    means = [sum(v) / len(v) for v in points.values() if v]
    line = (dest / BASE / "month/F1/timeseries/global/global.csv").read_text().splitlines()
    got = next(r.split(",") for r in line[1:] if r.startswith(str(month)))
    assert float(got[1]) == sum(sums)  # s_sum_t_sum
    assert float(got[2]) == pytest.approx(sum(sums) / len(points))  # s_mean_t_sum
    assert float(got[3]) == pytest.approx(sum(means))  # s_sum_t_mean
    assert int(got[5]) == len(means)  # s_count: points with a value

    # the country aggregate of that month: every F1 value of Ethiopia that month
    eth = f1[(f1["country"] == "Ethiopia") & (f1["timestamp"].map(_month) == month)]
    table = (
        (dest / BASE / f"month/F1/regional/country/aggs/{month}/default/default.csv").read_text().splitlines()
    )
    row = next(r.split(",") for r in table[1:] if r.startswith("Ethiopia,"))
    assert float(row[1]) == eth["value"].sum()  # NaN skipped
    assert {r.split(",")[0] for r in table[1:]} == set(f1[f1["timestamp"].map(_month) == month]["country"])

    # the z0 tile of that month: per level-6 cell, the points' sums and counts (no coordinates: left out)
    bins: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for key, values in points.items():
        lat, lng = key[5], key[6]
        if lat is None or lng is None:
            continue
        x = int((lng + 180) / 360 * 2**14)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**14)
        b = (x >> 8) + (y >> 8) * 64
        bins[b][0] += sum(values)
        bins[b][1] += 1 if values else 0
    tile = decode_tile((dest / BASE / f"month/F1/tiles/{month}-0-0-0.tile").read_bytes())
    assert (tile.z, tile.x, tile.y, tile.total_bins) == (0, 0, 0, 4096)
    assert {b: (s.s_sum_t_sum, s.weight) for b, s in tile.stats.items()} == {
        b: tuple(v) for b, v in bins.items()
    }

    # results.json counts, from the raw files
    frames = [pd.read_parquet(p) for p in inputs[:2]]
    results = json.loads((dest / BASE / "results/results.json").read_text())["data_info"]
    assert results["num_rows"] == sum(len(f.index) for f in frames)
    assert results["num_missing_ts"] == sum(int(f["timestamp"].isna().sum()) for f in frames) == 1
    assert results["num_invalid_ts"] == 2
    assert results["num_missing_val"] == 1  # +-inf are not counted
    assert sorted(results["features"]) == ["F1", "F2", "F3"]
    assert (
        results["month_timeseries_size"]["F3"]
        == rows[rows["feature"] == "F3"]["timestamp"].map(_month).nunique()
    )
    assert results["region_levels"] == ["country", "admin1", "admin2", "admin3", "grid data"]
    assert "output_agg_values" in json.loads((dest / BASE / "results/results.json").read_text())

    # raw.csv: every input row of the feature (before validation), only under the threshold
    counts = pd.concat([f["feature"] for f in frames]).value_counts()
    assert counts.min() <= RAW_THRESHOLD < counts.max()
    for feature, count in counts.items():
        raw = dest / BASE / f"raw/{feature}/raw/raw.csv"
        assert raw.exists() == (count <= RAW_THRESHOLD)
        if raw.exists():
            assert len(raw.read_text().splitlines()) == count + 1
    # qualifier values of F2: both files', "" where a file lacks the column
    camps = json.loads((dest / BASE / "raw/F2/info/qualifiers/camp.json").read_text())
    assert set(camps) == set(rows[rows["feature"] == "F2"]["camp"])
    assert "" in camps
    lists = json.loads((dest / BASE / "raw/F1/info/region_lists.json").read_text())
    assert set(lists["country"]) == {"Ethiopia", "SouthSudan"}
    # a qualifier value with "/" nests the key, as the reference's
    assert (
        dest
        / BASE
        / "month/F1/regional/country/timeseries/qualifiers/camp/Explosions/Remote violence/Ethiopia.csv"
    ).exists()


def test_second_run_writes_nothing(local_run, inputs, dask_env):
    dest, _ = local_run
    before = snapshot(dest)
    proc = run(cli_args("CausemosRun", [str(p) for p in inputs], str(dest)), dest.parent, dask_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(dest) == before
    assert "nothing to do: the run is complete" in proc.stderr


# ================================================================ HTTP inputs


@pytest.fixture(scope="module")
def http_root(inputs):
    handler = partial(_QuietHandler, directory=str(inputs[0].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def test_http_inputs_give_the_same_outputs(local_run, inputs, http_root, dask_env, tmp_path):
    dest = tmp_path / "bucket"
    urls = [f"{http_root}/{p.name}" for p in inputs]
    proc = run(cli_args("CausemosRun", urls, str(dest)), tmp_path, dask_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_same_objects(tree(dest), tree(local_run[0]))


# ================================================================ S3 in and out, weights, indicator


S3_PARAMS = {**LOCAL_PARAMS, "weight_column": "w", "is_indicator": True}


def _s3_objects(s3_server, bucket: str, prefix: str) -> dict[str, bytes]:
    from concurrent.futures import ThreadPoolExecutor

    client = s3_server.client(max_pool_connections=16)
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]
    with ThreadPoolExecutor(16) as pool:
        bodies = pool.map(lambda key: client.get_object(Bucket=bucket, Key=key)["Body"].read(), keys)
        return {key[len(prefix) :]: body for key, body in zip(keys, bodies, strict=True)}


def _upload(s3_server, bucket: str, paths: list[Path], prefix: str) -> list[str]:
    client = s3_server.client()
    for p in paths:
        client.upload_file(str(p), bucket, f"{prefix}/{p.name}")
    return [f"s3://{bucket}/{prefix}/{p.name}" for p in paths]


def test_s3_inputs_and_outputs_rerun_and_change(inputs, s3_server, dask_env, tmp_path):
    bucket = s3_server.create_bucket("causemos-e2e")
    urls = _upload(s3_server, bucket, inputs, "in-1")
    env = {**dask_env, **s3_server.env()}
    dest = f"s3://{bucket}/out"
    args = cli_args("CausemosRun", urls, dest, "--weight-column", "w", "--indicator")
    proc = run(args, tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = {k: v for k, v in _s3_objects(s3_server, bucket, "out/").items() if not k.startswith("_state/")}
    want = expected(inputs, **S3_PARAMS)
    assert_same_objects(got, want)
    document = json.loads(want[f"{BASE}results/results.json"])
    assert document["data_info"]["has_weights"] is True and "output_agg_values" not in document
    assert "s_wavg_t_wavg" in want[f"{BASE}month/F1/timeseries/global/global.csv"].decode()

    s3_server.reset_counts()
    proc = run(args, tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = s3_server.request_counts(bucket)
    print(f"second run, S3 requests: {counts}")
    assert counts.get("PUT", 0) == counts.get("POST", 0) == counts.get("DELETE", 0) == 0, counts
    assert counts.get("HEAD", 0) <= 3, (
        counts
    )  # the two inputs' identities and results.json: no HEAD per object

    changed = write_inputs(tmp_path / "changed", seed=5, changed=True)
    urls = _upload(s3_server, bucket, changed, "in-2")
    proc = run(cli_args("CausemosRun", urls, dest, "--weight-column", "w", "--indicator"), tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = {k: v for k, v in _s3_objects(s3_server, bucket, "out/").items() if not k.startswith("_state/")}
    assert_same_objects(got, expected(changed, **S3_PARAMS))
    assert re.search(r"deleted as stale: [1-9]", proc.stderr)


def config_with_batch_rows(directory: Path, rows: int) -> str:
    """The project's luigi.cfg with ``[causemos] batch_rows = rows``, written to ``directory``; its path."""
    config = re.sub(r"(?m)^batch_rows\s*=.*\n", "", (REPO / "luigi.cfg").read_text())
    config = config.replace("[causemos]\n", f"[causemos]\nbatch_rows = {rows}\n", 1)
    assert config.count("batch_rows") == 1
    (directory / "luigi.cfg").write_text(config)
    return str(directory / "luigi.cfg")


def test_s3_run_with_spooled_features_equals_the_recipe(inputs, s3_server, dask_env, tmp_path):
    """``[causemos] batch_rows = 7``: every feature has more rows than a batch, so its partial sums are
    spooled to S3 by the workers, combined a bucket at a time and the points file uploaded whole; the
    outputs equal the recipe's and no spooled object is left behind."""
    bucket = s3_server.create_bucket("causemos-spool")
    urls = _upload(s3_server, bucket, inputs, "in")
    env = {**dask_env, **s3_server.env(), "LUIGI_CONFIG_PATH": config_with_batch_rows(tmp_path, 7)}
    proc = run(cli_args("CausemosRun", urls, f"s3://{bucket}/out"), tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    objects = _s3_objects(s3_server, bucket, "out/")
    got = {k: v for k, v in objects.items() if not k.startswith("_state/")}
    assert_same_objects(got, expected(inputs, **LOCAL_PARAMS))
    state = [k for k in objects if k.startswith("_state/")]
    assert any(k.endswith(".parquet") for k in state) and not [k for k in state if "/spool/" in k]


# ================================================================ changed input, locally


def test_changed_input_leaves_no_stale_object(local_run, dask_env, tmp_path):
    dest = tmp_path / "bucket"
    shutil.copytree(local_run[0], dest)
    changed = write_inputs(tmp_path / "in", seed=5, changed=True)
    before = snapshot(dest)
    proc = run(cli_args("CausemosRun", [str(p) for p in changed], str(dest)), tmp_path, dask_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    want = expected(changed, **LOCAL_PARAMS)
    assert_same_objects(tree(dest), want)
    assert not any(k.startswith((f"{BASE}month/F3/", f"{BASE}raw/F3/")) for k in tree(dest))
    assert not [d for d, dirs, files in os.walk(dest) if not dirs and not files]  # no empty directory left
    # unchanged objects are not rewritten: F2's year tiles outside the changed rows keep their mtime
    after = snapshot(dest)
    kept = [k for k in after if k in before and after[k] == before[k] and not k.startswith("_state/")]
    assert len(kept) > len(want) // 4
    assert "features no longer in the input: 1" in proc.stderr


# ================================================================ killed and rerun


def kill_run_when(args: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool]) -> None:
    """Start the run and SIGKILL it whole (luigi and its embedded Dask workers) once ``ready()``."""
    killed = kill_when([LUIGI, "--module", MODULE, *args], cwd=cwd, env=env, ready=ready, timeout=120)
    assert killed, "the run ended before it could be killed"


def test_killed_run_ends_like_a_clean_one(local_run, inputs, tmp_path):
    """SIGKILL to the whole run (luigi and its embedded Dask workers) once a third of the objects exist,
    then the same command: exactly the clean run's files, no temporary left."""
    dest = tmp_path / "bucket"
    clean = tree(local_run[0])
    args = cli_args("CausemosRun", [str(p) for p in inputs], str(dest), "--dask-n-workers", "2")
    env = luigi_env({"PIPELINE_DASK_SCHEDULER": ""})
    target = len(clean) // 3
    kill_run_when(
        args, env, tmp_path, lambda: sum(len(files) for _, _, files in os.walk(dest / DATA_ID)) >= target
    )
    assert not (dest / BASE / "results/results.json").exists()
    time.sleep(0.5)  # the killed workers' exits
    rerun = run_luigi(args, cwd=tmp_path, env=env, module=MODULE, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert_same_objects(tree(dest), clean)
    assert re.search(r"already there: [1-9]", rerun.stderr)  # work done before the kill was kept


def test_run_killed_while_spooling_ends_like_a_clean_one(local_run, inputs, tmp_path):
    """``batch_rows = 7``: SIGKILL to the whole run once the prepare stage has spooled partial sums, then
    the same command: exactly the clean run's files, and neither spool nor temporary left."""
    dest = tmp_path / "bucket"
    clean = tree(local_run[0])
    args = cli_args("CausemosRun", [str(p) for p in inputs], str(dest), "--dask-n-workers", "2")
    env = luigi_env({"PIPELINE_DASK_SCHEDULER": "", "LUIGI_CONFIG_PATH": config_with_batch_rows(tmp_path, 7)})
    kill_run_when(
        args, env, tmp_path, lambda: any("spool" in d.split(os.sep) for d, _, files in os.walk(dest) if files)
    )
    assert not list(dest.rglob("prepare.json"))  # killed in the prepare stage
    time.sleep(0.5)
    rerun = run_luigi(args, cwd=tmp_path, env=env, module=MODULE, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert_same_objects(tree(dest), clean)
    left = [k for k in tree(dest, state=True) if "/spool/" in k or ".tmp" in k]
    assert left == []


# ================================================================ options and the dry run


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--qualifier-map", '{"F1": ["camp"]', "field '--qualifier-map': not valid JSON"),
        ("--qualifier-map", '["camp"]', "field '--qualifier-map': must be a JSON object"),
        (
            "--selected-output-tasks",
            "compute_tiles,compute_everything",
            "unknown output task(s) compute_everything",
        ),
        (
            "--qualifier-thresholds",
            '{"max_count": "many"}',
            "field '--qualifier-thresholds': max_count must be",
        ),
        (
            "--data-paths",
            "/nonexistent/x.parquet.gzip",
            "field '--data-paths': /nonexistent/x.parquet.gzip: no such file",
        ),
        ("--causemos-batch-rows", "0", "field '[causemos] batch_rows': must be a positive number of rows"),
    ],
)
def test_bad_options_stop_the_run_and_write_nothing(inputs, tmp_path, option, value, message):
    dest = tmp_path / "bucket"
    args = cli_args("CausemosRun", [str(p) for p in inputs], str(dest))
    if option == "--data-paths":
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    proc = run(args, tmp_path, {})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: could not start:") and message in last, proc.stderr[-2000:]
    assert not dest.exists()


def test_dry_run_counts_what_the_run_writes(inputs, dask_env, tmp_path):
    dest = tmp_path / "bucket"
    proc = run(cli_args("CausemosDryRun", [str(p) for p in inputs], str(dest)), tmp_path, dask_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not dest.exists()
    want = expected(inputs, **LOCAL_PARAMS)
    families: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, data in want.items():
        rest = key[len(BASE) :]
        if rest.startswith("raw/"):
            family = "raw" if rest.endswith("/raw/raw.csv") else "info"
        elif rest.startswith("results/"):
            family = "results.json"
        elif "/timeseries/global/" in rest or (
            "/timeseries/qualifiers/" in rest and "/regional/" not in rest
        ):
            family = "compute_global_timeseries"
        elif "/stats/default/" in rest:
            family = "compute_regional_stats"
        elif "/regional/" in rest and "/timeseries/" in rest:
            family = "compute_regional_timeseries"
        elif "/aggs/" in rest:
            family = "compute_regional_aggregation"
        else:
            family = "compute_tiles"
        families[family][0] += 1
        families[family][1] += len(data)
    table = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"^(\S+)(?: \(.*\))?\s{2,}([\d,]+)\s+([\d,]+)$", line)
        if match:
            table[match.group(1)] = [
                int(match.group(2).replace(",", "")),
                int(match.group(3).replace(",", "")),
            ]
    assert {k: v for k, v in table.items() if k != "total"} == {k: list(v) for k, v in families.items()}
    assert table["total"] == [len(want), sum(len(v) for v in want.values())]
    assert re.search(r"input: 2 file\(s\)|input: 3 file\(s\)", proc.stderr) and "3 feature(s)" in proc.stderr
    assert "nothing was written" in proc.stderr


# ================================================================ pieces, in process


def test_pieces_split_the_objects_exactly(inputs):
    """Every output task's pieces make disjoint key sets whose union, byte for byte, is the whole."""
    frame = recipe.validate_and_fix(recipe.concat_input_frames(read_frames(inputs)), "", 0).frame
    rows = frame[frame["feature"] == "F1"]
    points = recipe.temporal_aggregation(rows, "month", "").drop(columns=["feature"])
    ctx = recipe.FeatureContext(
        DATA_ID, RUN_ID, "month", "F1", tuple(recipe.region_columns(frame)), "", ("camp",), ("camp",), 1, True
    )
    for family in recipe.OUTPUT_TASKS:
        whole = dict(recipe.FAMILY_OBJECTS[family](points, ctx))
        plan = pieces.plan_pieces(
            family,
            ctx,
            points_rows=len(points.index),
            periods=points["timestamp"].nunique(),
            level0_regions=2,
            separator_in_level0=False,
            points_per_piece=10,
            max_parts=3,
        )
        assert len(plan) == (
            1 if pieces.SPLIT_BY[family] == "whole" else 2 if pieces.SPLIT_BY[family] == "regions" else 3
        )
        parts = [dict(recipe.FAMILY_OBJECTS[family](pieces.piece_points(points, p), ctx)) for p in plan]
        assert sum(len(p) for p in parts) == len(whole)
        assert {k: v for p in parts for k, v in p.items()} == whole


def test_each_family_reads_only_the_columns_it_is_made_from(tmp_path):
    """Read by period, a family reads the period, the values and weights, and its own regions,
    qualifiers or coordinates: the tiles and the global series no text column."""
    from pipeline.causemos.prepare import points_parquet
    from targets.store import Store

    ctx = recipe.FeatureContext(
        DATA_ID, RUN_ID, "month", "F", ("country", "admin1"), "w", ("camp",), ("source",), 1, True
    )
    values = ["t_sum", "t_mean", "w", "t_wavg"]
    assert pieces.family_columns("compute_tiles", ctx) == ["timestamp", "lat", "lng", *values]
    assert pieces.family_columns("compute_global_timeseries", ctx) == ["timestamp", "camp", *values]
    assert pieces.family_columns("compute_regional_stats", ctx) == ["timestamp", "country", "admin1", *values]
    assert pieces.family_columns("compute_regional_aggregation", ctx) == [
        "timestamp", "country", "admin1", "camp", *values
    ]  # fmt: skip
    assert pieces.family_columns("compute_regional_timeseries", ctx) == [
        "timestamp", "country", "admin1", "source", *values
    ]  # fmt: skip
    points = pd.DataFrame(
        {"country": ["A"], "admin1": ["B"], "camp": ["c"], "source": ["s"], "lat": [1.0], "lng": [2.0],
         "timestamp": [0], "t_sum": [1.0], "t_mean": [1.0], "w": [1.0], "t_wavg": [1.0]}
    )  # fmt: skip
    Store(str(tmp_path)).write_bytes("points.parquet", points_parquet(points))
    source = pieces.PointsFile(pieces.StatePoints(Store(str(tmp_path)), "points.parquet", "digest", 1))
    try:
        assert list(source.read([0], ["timestamp", "admin2", "lat"]).columns) == ["timestamp", "lat"]
        assert list(source.read([0]).columns) == list(points.columns)
    finally:
        source.close()


@pytest.mark.parametrize("block_rows", [recipe.PERIOD_BLOCK_ROWS, 7])
@pytest.mark.parametrize("chunk_rows", [1, 50, 10**9])
def test_points_by_period_make_the_objects_of_the_whole(
    inputs, tmp_path, monkeypatch, chunk_rows, block_rows
):
    """Points too many to hold are written sorted by period, a row group per period, and every family is
    made a run of periods (at most ``chunk_rows`` rows), or a block of a larger period, at a time from them
    (pieces.objects_by_period): the objects equal, byte for byte, those made from the whole points in the
    recipe's own (unsorted) order, whole and in pieces. With blocks of 7 points (periods of 21-30), every
    period is summed block by block, whether read whole or a block at a time."""
    import pyarrow.parquet as pq

    from pipeline.causemos.prepare import combine_points, points_parquet
    from targets.store import Store

    monkeypatch.setattr(recipe, "PERIOD_BLOCK_ROWS", block_rows)
    frame = recipe.validate_and_fix(recipe.concat_input_frames(read_frames(inputs)), "w", 0).frame
    rows = frame[frame["feature"] == "F2"]
    points = recipe.temporal_aggregation(rows, "month", "w").drop(columns=["feature"])
    assert not points["timestamp"].is_monotonic_increasing  # the sort below does move rows
    sorted_points = combine_points([recipe.temporal_partials(rows, "month", "w")], "w")
    store = Store(str(tmp_path))
    store.write_bytes("points.parquet", points_parquet(sorted_points))
    periods = points["timestamp"].nunique()
    rows_of = points["timestamp"].value_counts().to_dict()
    assert max(rows_of.values()) > 1 and periods > 2  # runs of one period and of several both happen
    assert pq.ParquetFile(tmp_path / "points.parquet").metadata.num_row_groups == periods
    ref = pieces.StatePoints(store, "points.parquet", "digest", chunk_rows=chunk_rows)
    ctx = recipe.FeatureContext(
        DATA_ID, RUN_ID, "month", "F2", tuple(recipe.region_columns(frame)), "w", ("camp", "source"),
        ("camp",), 1, True,
    )  # fmt: skip
    read: list[tuple[int, ...]] = []
    blocks: dict[int, list[int]] = defaultdict(list)  # period -> rows of each block read, in turn
    for family in recipe.OUTPUT_TASKS:
        whole = dict(recipe.FAMILY_OBJECTS[family](points, ctx))
        assert whole, family
        for parts in (1, 3):
            plan = pieces.plan_pieces(
                family, ctx, points_rows=len(points.index), periods=periods, level0_regions=2,
                separator_in_level0=False, points_per_piece=1, max_parts=parts,
            )  # fmt: skip
            made: dict[str, bytes] = {}
            for piece in plan:
                source = pieces.PointsFile(ref)
                original, original_blocks = source.read, source.read_blocks

                def read_blocks(period, columns, rows, original_blocks=original_blocks):
                    sizes = []
                    for number, block in enumerate(original_blocks(period, columns, rows)):
                        assert (block[recipe.BLOCK] == number).all()
                        sizes.append(len(block.index))
                        yield block
                    blocks[period].append(sizes)

                source.read = lambda run, columns=None, original=original: (  # type: ignore[method-assign]
                    read.append(tuple(run)) or original(run, columns)
                )
                source.read_blocks = read_blocks  # type: ignore[method-assign]
                try:
                    objects = dict(pieces.objects_by_period(piece, source, chunk_rows))
                finally:
                    source.close()
                assert not set(objects) & set(made), (family, piece.label)
                made.update(objects)
            assert made == whole, (family, parts)
    assert {p for run in read for p in run} | set(blocks) == set(points["timestamp"].tolist())
    for run in read:  # each read a run of consecutive periods within the bound (or a period of a block)
        assert list(run) == sorted(run)
        assert sum(rows_of[p] for p in run) <= max(chunk_rows, block_rows)
    for period, reads in blocks.items():  # a period over the bound: a block at a time, all of it
        assert rows_of[period] > chunk_rows
        for sizes in reads:
            assert sum(sizes) == rows_of[period] and max(sizes) <= block_rows
            assert all(size == block_rows for size in sizes[:-1])
    if chunk_rows == 1:
        assert not read and set(blocks) == set(rows_of)  # every period read by blocks
        if block_rows == 7:
            assert all(len(sizes) > 1 for reads in blocks.values() for sizes in reads)
    if chunk_rows == 50:  # periods of 21-30 rows
        assert {len(run) > 1 for run in read} == {True, False}  # runs of several periods, and of one
        assert not blocks
    if chunk_rows == 10**9:
        assert tuple(sorted(rows_of)) in read  # all periods in one read


def test_a_period_is_read_a_block_at_a_time_across_its_row_groups(tmp_path, monkeypatch):
    """A period written in several row groups (over ``POINTS_ROW_GROUP_ROWS``) read in blocks: blocks of
    exactly the size asked (cut across row groups), in order, together the period as read whole."""
    from pipeline.causemos import prepare
    from targets.store import Store

    monkeypatch.setattr(prepare, "POINTS_ROW_GROUP_ROWS", 10)
    rng = np.random.default_rng(5)
    points = pd.DataFrame({
        "timestamp": np.repeat([0, 1, 2], [4, 37, 9]),
        "country": rng.choice(["A", "B", None], 50),
        "t_sum": rng.normal(size=50), "t_mean": rng.normal(size=50),
    })  # fmt: skip
    Store(str(tmp_path)).write_bytes("points.parquet", prepare.points_parquet(points))
    source = pieces.PointsFile(pieces.StatePoints(Store(str(tmp_path)), "points.parquet", "digest", 1))
    try:
        assert source._parquet.metadata.num_row_groups == 1 + 4 + 1
        for block_rows in (1, 7, 10, 36, 37, 100):
            blocks = list(source.read_blocks(1, ["timestamp", "country", "t_sum"], block_rows))
            assert [len(b.index) for b in blocks[:-1]] == [block_rows] * (len(blocks) - 1)
            assert [int(b[recipe.BLOCK].unique()[0]) for b in blocks] == list(range(len(blocks)))
            joined = pd.concat(blocks, ignore_index=True).drop(columns=[recipe.BLOCK])
            pd.testing.assert_frame_equal(joined, source.read([1], ["timestamp", "country", "t_sum"]))
    finally:
        source.close()


def _kahan(values: list[float]) -> float:
    """Compensated sum in order, NaN skipped (pandas' group_sum, written out)."""
    total = compensation = 0.0
    for value in values:
        if value != value:
            continue
        y = value - compensation
        t = total + y
        compensation = t - total - y
        if compensation != compensation:
            compensation = 0.0
        total = t
    return total


def test_a_period_over_a_block_is_summed_block_by_block(monkeypatch):
    """Sums of a period of more points than a block: each block's compensated sum, the blocks' sums then
    added in order (computed here point by point); a period of up to a block: one compensated sum. Counts,
    minima and maxima of the whole period. Within 1e-12 of the exact sum either way."""
    monkeypatch.setattr(recipe, "PERIOD_BLOCK_ROWS", 50)
    rng = np.random.default_rng(11)
    stamps = np.repeat([7, 3, 5], [180, 50, 20])
    rng.shuffle(stamps)
    values = rng.normal(scale=1e6, size=250) * 10.0 ** rng.integers(-8, 8, 250)
    values[[4, 90]] = np.nan
    points = pd.DataFrame({"timestamp": stamps, "t_sum": values, "t_mean": values / 3})
    table, _ = recipe.spatial_aggregation(points, ["timestamp"], recipe.SUMMARY_AGGS)
    for _, row in table.iterrows():
        period = points[points["timestamp"] == row["timestamp"]]
        for value in ("t_sum", "t_mean"):
            column = period[value].tolist()
            blocks = [_kahan(column[start : start + 50]) for start in range(0, len(column), 50)]
            expected = blocks[0]
            for block in blocks[1:]:
                expected = expected + block
            assert row[f"s_sum_{value}"] == expected, (row["timestamp"], value, len(column))
            assert math.isclose(row[f"s_sum_{value}"], math.fsum(v for v in column if v == v), rel_tol=1e-12)
            assert row[f"s_min_{value}"] == np.nanmin(column) and row[f"s_max_{value}"] == np.nanmax(column)
        assert row["s_count"] == period["t_mean"].notna().sum()
    assert sorted(table["timestamp"]) == [3, 5, 7]
    # read a block at a time, a share of the regions each (none at all in period 7's blocks): the same
    points["country"] = np.where(np.arange(250) % 5 == 0, "A", "B")
    ordered = points.sort_values("timestamp", kind="stable", ignore_index=True)
    ordered.loc[ordered.index[70:], "country"] = "B"  # period 7 (rows 70-249): none of the share
    blocks = {p: [] for p in (3, 5, 7)}
    for period, rows in ordered.groupby("timestamp", sort=True):
        for number, start in enumerate(range(0, len(rows.index), 50)):
            blocks[period].append(rows.iloc[start : start + 50].assign(**{recipe.BLOCK: number}))
    chunks = recipe.PeriodChunks(
        read=lambda run: ordered[ordered["timestamp"].isin(run)],
        runs=((3, 5), (7,)),
        read_blocks=lambda period: iter(blocks[period]),
        by_block=frozenset({7}),
    ).map(lambda frame: frame[frame["country"] == "A"])
    assert [len(b.index) for b in blocks[7]] == [50, 50, 50, 30]
    assert not any((b["country"] == "A").any() for b in blocks[7]) and (ordered["country"] == "A").any()
    shared, _ = recipe.spatial_aggregation(chunks, ["timestamp", "country"], recipe.SUMMARY_AGGS)
    whole, _ = recipe.spatial_aggregation(
        recipe.with_period_blocks(ordered).query("country == 'A'"),
        ["timestamp", "country"],
        recipe.SUMMARY_AGGS,
    )
    pd.testing.assert_frame_equal(shared, whole, check_exact=True)


def test_period_runs_cut_at_the_bound():
    pairs = [(1, 3), (2, 4), (3, 10), (4, 1), (5, 1), (6, 2)]
    assert pieces.period_runs(pairs, 7) == ((1, 2), (3,), (4, 5, 6))
    assert pieces.period_runs(pairs, 3) == ((1,), (2,), (3,), (4, 5), (6,))
    assert pieces.period_runs(pairs, 100) == ((1, 2, 3, 4, 5, 6),)
    assert pieces.period_runs([], 5) == ()


def test_partial_sums_of_split_input_equal_the_whole(inputs):
    frame = recipe.validate_and_fix(recipe.concat_input_frames(read_frames(inputs)), "w", 0).frame
    halves = [frame.iloc[:150], frame.iloc[150:]]
    for time_res in ("month", "year", "all"):
        whole = recipe.temporal_aggregation(frame, time_res, "w")
        combined = recipe.combine_temporal([recipe.temporal_partials(h, time_res, "w") for h in halves], "w")
        pd.testing.assert_frame_equal(combined.reset_index(drop=True), whole.reset_index(drop=True))


def test_points_survive_parquet(inputs):
    frame = recipe.validate_and_fix(recipe.concat_input_frames(read_frames(inputs)), "w", 0).frame
    points = recipe.temporal_aggregation(frame[frame["feature"] == "F2"], "month", "w").drop(
        columns=["feature"]
    )
    buffer = io.BytesIO()
    points.to_parquet(buffer, index=False)
    back = pd.read_parquet(io.BytesIO(buffer.getvalue()))
    ctx = recipe.FeatureContext(
        DATA_ID,
        RUN_ID,
        "month",
        "F2",
        ("country", "admin1", "admin2", "admin3"),
        "w",
        ("camp", "source"),
        ("camp",),
        1,
        True,
    )
    for family in recipe.OUTPUT_TASKS:
        assert dict(recipe.FAMILY_OBJECTS[family](back, ctx)) == dict(
            recipe.FAMILY_OBJECTS[family](points, ctx)
        ), family


def test_group_sums_do_not_depend_on_row_layout():
    """pandas 3.1 sums a group pairwise when its rows lie together without NaN, compensated otherwise;
    the recipe always sums compensated in row order (the reference's pandas 2.1), so a piece of the rows
    gives the whole's bits. Values whose pairwise and sequential sums differ in the last bit:"""
    values = np.array([10 / 3, 10 / 7, 1e-3, 10 / 9] * 11 + [5 / 11] * 7)
    sequential = 0.0
    compensation = 0.0
    for v in values:  # Kahan, by hand
        y = v - compensation
        t = sequential + y
        compensation = (t - sequential) - y
        sequential = t
    assert sequential != float(np.sum(values))  # the two ways really differ here
    alone = pd.DataFrame({"timestamp": 0, "place": "a", "t_sum": values, "t_mean": values})
    mixed = pd.concat([alone, alone.assign(place="b").iloc[:3]]).iloc[np.r_[0, 51, 1:51, 52, 53]]
    for frame in (alone, mixed):
        table, _ = recipe.spatial_aggregation(frame, ["timestamp", "place"])
        assert table.loc[table["place"] == "a", "s_sum_t_sum"].item() == sequential


# ================================================================ the QA view


def test_qa_report_shows_each_feature_from_the_outputs_alone(local_run, tmp_path):
    from pipeline.causemos import layout
    from pipeline.causemos.layout import report_html
    from pipeline.causemos.report import build_report, main
    from pipeline.errors import InputError
    from targets.store import Store

    dest = tmp_path / "copy"
    shutil.copytree(local_run[0], dest)  # the page must not add a key to the module's shared run
    shutil.rmtree(dest / "_state")  # readable from the dashboard's objects alone
    store = Store(str(dest))
    results = json.loads((dest / BASE / "results/results.json").read_text())
    features = [str(f) for f in results["data_info"]["features"]]
    page = build_report(store, DATA_ID, RUN_ID)
    for feature in features:
        assert f'<h2 id="{feature}">' in page
        series = pd.read_csv(dest / layout.global_timeseries_csv(DATA_ID, RUN_ID, "month", feature))
        # one plotted point per month with a value
        plotted = re.search(
            rf'aria-label="global monthly series of {re.escape(feature)}">.*?points="([^"]*)"', page, re.S
        )
        assert plotted is not None
        assert len(plotted.group(1).split()) == int(series["s_sum_t_sum"].notna().sum())
        # the newest month's regional aggregates: the largest region first
        newest = int(series["timestamp"].max())
        level = results["data_info"]["region_levels"][min(1, len(results["data_info"]["region_levels"]) - 1)]
        aggs = pd.read_csv(
            dest / layout.regional_aggregate_csv(DATA_ID, RUN_ID, "month", feature, level, newest)
        )
        top = aggs.sort_values("s_sum_t_sum", ascending=False).iloc[0]["id"]
        assert f'<td class="l">{top}</td>' in page
    assert page.count("data:image/png;base64,") == sum(
        any((dest / layout.feature_prefix(DATA_ID, RUN_ID, "month", f) / "tiles").glob("*-4-*.tile"))
        for f in features
    )
    main(["--dest", str(dest), "--data-id", DATA_ID, "--run-id", RUN_ID])
    assert (dest / report_html(DATA_ID, RUN_ID)).read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(InputError, match=r"no results\.json"):
        build_report(store, DATA_ID, "other-run")


def test_dry_run_scratch_is_one_every_worker_can_reach() -> None:
    """The dry run's working files go to a folder of its own under the configured scratch, else to a
    temporary directory of this machine, which a scheduler elsewhere could not read: that stops the
    dry run before it starts, naming the option."""
    from pipeline.causemos.dryrun import scratch_location
    from pipeline.errors import InputError

    first = scratch_location("s3://bucket/tmp/", "tcp://10.0.0.5:8786")
    second = scratch_location("s3://bucket/tmp", "")
    assert first.startswith("s3://bucket/tmp/causemos-dry-run-") and second.startswith("s3://bucket/tmp/")
    assert first != second  # a folder per dry run: two at once do not share files
    for local in ("", "tcp://127.0.0.1:8786", "localhost:8786", "tcp://[::1]:8786"):
        assert scratch_location("", local) == ""
    with pytest.raises(InputError, match=r"10\.0\.0\.5:8786 is not on this machine") as error:
        scratch_location("", "tcp://10.0.0.5:8786")
    assert error.value.field == "[causemos] dry_run_scratch"
