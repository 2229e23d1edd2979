"""The Causemos prepare stage reads each input file in batches of rows: the result must not depend on the
batch size. Files are written with pyarrow so that their dtypes depend on the rows as pandas reads them
(an int64 column with a null somewhere is float64 for the whole file but int64 in the batches without
one; a bool column with a null is object), with columns that are null in a whole batch, strings,
categorical and numeric qualifiers, integer feature ids, rows without lat/lng, NaN and +-inf values, null
and invalid timestamps. Every result of :func:`pipeline.causemos.prepare.prepare` (the JSON record,
the raw and info objects, the points per feature and period) read in batches of 7 rows is compared with
the whole file read at once, exactly; and a few of them with the in-memory recipe on the concatenated
input, so the check is not the streaming code against itself. A full luigi run with ``batch_rows = 7``
is compared byte for byte with the in-memory recipe.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.causemos import prepare as prepare_module
from pipeline.causemos import recipe
from pipeline.causemos.outputs import object_digest
from pipeline.causemos.settings import parse_settings
from pipeline.causemos.sources import Source, iter_frames
from targets.s3config import S3Options
from targets.store import Store

SMALL_BATCH = 7
WHOLE = 1_000_000
MONTH_MS = [1640995200000, 1643673600000, 1646092800000, 1672531200000]  # 2022-01..03, 2023-01
INVALID_TS = 10**13


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    return pa.array(values, type=kind)


def table_a(n: int = 45) -> pa.Table:
    """Text features; a null timestamp and an invalid one late in the file (timestamp int64 in the first
    batches, float64 for the file); ``admin2`` null in the whole first batch; ``year`` int64 with one
    null in the last batch (text ``2022.0`` everywhere); ``flag`` bool with a null; ``camp`` categorical;
    ``score`` null in the first batch only; rows without lat/lng; NaN and +-inf values; weights."""
    rng = np.random.default_rng(3)
    timestamps: list[int | None] = [int(MONTH_MS[i % 4] + 86_400_000 * (i % 9)) for i in range(n)]
    timestamps[30] = None
    timestamps[33] = INVALID_TS
    admin2: list[str | None] = [None if i < SMALL_BATCH else f"Zone {i % 3}" for i in range(n)]
    year: list[int | None] = [2022 + i % 2 for i in range(n)]
    year[n - 2] = None
    flag: list[bool | None] = [i % 3 == 0 for i in range(n)]
    flag[20] = None
    score: list[int | None] = [None if i < SMALL_BATCH else i % 4 for i in range(n)]
    lat: list[float | None] = [round(5.0 + (i % 6) * 0.7, 3) for i in range(n)]
    lng: list[float | None] = [round(30.0 + (i % 5) * 0.9, 3) for i in range(n)]
    for i in (2, 9, 16, 40):
        lat[i] = lng[i] = None
    values: list[float | None] = [float(v) / 4.0 for v in rng.integers(-8, 40, n)]
    values[4], values[12], values[13] = None, float("inf"), float("-inf")
    features = ["F1", "F2", "F1", "F3"]
    return pa.table({
        "timestamp": _column(timestamps, pa.int64()),
        "country": _column(["Ethiopia" if i % 2 else "South//Sudan" for i in range(n)], pa.string()),
        "admin1": _column([f"Region{i % 4}" for i in range(n)], pa.string()),
        "admin2": _column(admin2, pa.string()),
        "admin3": _column([f"W{i % 5}" for i in range(n)], pa.string()),
        "lat": _column(lat, pa.float64()),
        "lng": _column(lng, pa.float64()),
        "feature": _column([features[i % 4] for i in range(n)], pa.string()),
        "value": _column(values, pa.float64()),
        "year": _column(year, pa.int64()),
        "flag": _column(flag, pa.bool_()),
        "score": _column(score, pa.int64()),
        "camp": pa.array([["north", "south", "east"][i % 3] for i in range(n)]).dictionary_encode(),
        "w": _column([float(1 + i % 3) / 2.0 for i in range(n)], pa.float64()),
    })  # fmt: skip


def table_b(n: int = 30) -> pa.Table:
    """A second file: ``admin3`` numeric (text in a: both become text, nulls ``"None"``), no ``score`` nor
    ``camp``, a qualifier ``source`` of its own, a null ``admin3`` in one batch only."""
    admin3: list[int | None] = [1 + i % 3 for i in range(n)]
    admin3[25] = None
    return pa.table({
        "timestamp": _column([int(MONTH_MS[(i + 1) % 4] + 3_600_000 * i) for i in range(n)], pa.int64()),
        "country": _column(["Ethiopia"] * n, pa.string()),
        "admin1": _column([f"Region{i % 2}" for i in range(n)], pa.string()),
        "admin2": _column([f"Zone {i % 2}" for i in range(n)], pa.string()),
        "admin3": _column(admin3, pa.int64()),
        "lat": _column([None if i % 11 == 0 else 6.0 + i * 0.01 for i in range(n)], pa.float64()),
        "lng": _column([None if i % 11 == 0 else 33.0 for i in range(n)], pa.float64()),
        "feature": _column(["F2" if i % 2 else "F4" for i in range(n)], pa.string()),
        "value": _column([float(i % 7) / 2.0 for i in range(n)], pa.float64()),
        "year": _column([2023] * n, pa.int64()),
        "flag": _column([True] * n, pa.bool_()),
        "source": _column(["radio" if i % 3 else "survey" for i in range(n)], pa.string()),
        "w": _column([1.0] * n, pa.float64()),
    })  # fmt: skip


def table_ids(n: int = 40) -> pa.Table:
    """One file with integer feature ids and a null feature in the last batch (ids are ``10.0`` for the
    file), an int qualifier null in one batch only, no lat/lng and no region column."""
    feature: list[int | None] = [10 if i % 3 else 20 for i in range(n)]
    feature[n - 3] = None
    code: list[int | None] = [i % 4 for i in range(n)]
    for i in range(14, 21):
        code[i] = None
    return pa.table({
        "timestamp": _column([int(MONTH_MS[i % 4]) for i in range(n)], pa.int64()),
        "feature": _column(feature, pa.int64()),
        "value": _column([float(i % 9) - 2.5 for i in range(n)], pa.float64()),
        "code": _column(code, pa.int64()),
    })  # fmt: skip


def write(table: pa.Table, path: Path) -> str:
    pq.write_table(table, path, compression="gzip", row_group_size=16)
    return str(path)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0")
    with Client(cluster) as c:
        yield c
    cluster.close()


def settings_for(paths: list[str], **options: Any) -> Any:
    return parse_settings(
        data_id="d", run_id="r", data_paths=",".join(paths), dest="/unused", indicator=options.get("indicator", False),
        qualifier_map=json.dumps(options.get("qualifier_map", {})), weight_column=options.get("weight", ""),
        selected_output_tasks="", qualifier_thresholds="", raw_count_threshold=options.get("raw", 20),
        fill_timestamp=MONTH_MS[1] + 5, input_s3=S3Options(),
    )  # fmt: skip


def prepared(client: Any, settings: Any, batch_rows: int) -> dict[str, Any]:
    """The stage's record, objects and points (read back from the files it wrote) with batches of
    ``batch_rows`` rows, its state in a temporary store."""
    with tempfile.TemporaryDirectory(prefix="causemos-prepare-") as root:
        return spooled_prepare(client, settings, batch_rows, Path(root))


def assert_same(streamed: dict[str, Any], whole: dict[str, Any]) -> None:
    assert json.dumps(streamed["info"]) == json.dumps(whole["info"])  # same values, same order
    assert streamed["objects"] == whole["objects"]
    assert list(streamed["points"]) == list(whole["points"])
    for key, frame in whole["points"].items():
        pd.testing.assert_frame_equal(streamed["points"][key], frame, check_exact=True)


# ================================================================ reading in batches


def test_batches_cover_the_file_in_order(tmp_path: Path) -> None:
    path = write(table_a(), tmp_path / "a.parquet.gzip")
    batches = list(iter_frames(Source(path), SMALL_BATCH))
    sizes = [len(b.index) for b in batches]
    assert sum(sizes) == 45 and max(sizes) <= SMALL_BATCH and len(sizes) >= 7
    whole = pd.read_parquet(path)
    assert batches[0]["timestamp"].dtype == "int64" and whole["timestamp"].dtype == "float64"
    schema = None
    for batch in batches:
        schema = prepare_module.fold_dtypes(schema, batch)
    assert schema is not None
    assert schema.dtypes.to_dict() == whole.dtypes.to_dict()
    fitted = pd.concat([prepare_module.fit_dtypes(b, schema) for b in batches], ignore_index=True)
    pd.testing.assert_frame_equal(fitted, whole, check_exact=True)


def test_empty_file_gives_its_columns(tmp_path: Path) -> None:
    path = write(table_a().slice(0, 0), tmp_path / "empty.parquet")
    (frame,) = list(iter_frames(Source(path), SMALL_BATCH))
    assert list(frame.columns) == list(pd.read_parquet(path).columns) and len(frame.index) == 0


def test_scan_counts_features_with_the_files_dtype(tmp_path: Path) -> None:
    path = write(table_ids(), tmp_path / "ids.parquet")
    streamed = prepare_module.scan_source(Source(path), SMALL_BATCH)
    whole = pd.read_parquet(path)
    assert streamed.feature_rows == recipe.raw_rows_per_feature(whole) == {"20.0": 14, "10.0": 25}
    assert streamed.rows == 40
    assert streamed.schema.dtypes.to_dict() == whole.dtypes.to_dict()
    assert streamed.blank == frozenset()


# ================================================================ the stage: batches of 7 rows == the whole file


def test_two_files_in_batches_same_as_whole(tmp_path: Path, client: Any) -> None:
    paths = [write(table_a(), tmp_path / "a.parquet.gzip"), write(table_b(), tmp_path / "b.parquet.gzip")]
    settings = settings_for(paths, qualifier_map={"F1": ["year", "camp"], "F2": ["source"]}, raw=12)
    whole = prepared(client, settings, WHOLE)
    streamed = prepared(client, settings, SMALL_BATCH)
    assert_same(streamed, whole)
    # not vacuous: the dtype cases are there, and the whole-file figures are the in-memory recipe's
    frames = [(Path(p).name, pd.read_parquet(p)) for p in paths]
    raw = recipe.concat_input_frames(frames)
    assert whole["info"]["rows_per_feature"] == recipe.raw_rows_per_feature(raw)
    checked = recipe.validate_and_fix(raw, "", settings.fill_timestamp)
    assert whole["info"]["num_missing_ts"] == checked.num_missing_ts == 1
    assert whole["info"]["num_invalid_ts"] == checked.num_invalid_ts == 1
    assert whole["info"]["num_missing_val"] == checked.num_missing_val == 1
    assert set(checked.frame["year"]) == {"2022.0", "2023.0", "None"}
    assert set(checked.frame["admin3"]) >= {"None", "1.0", "W0"}
    f2 = checked.frame[checked.frame["feature"] == "F2"]
    # the points are kept sorted by period, each period's points in their order (prepare.combine_points)
    want = recipe.temporal_aggregation(f2, "month", "").drop(columns=["feature"])
    want = want.sort_values("timestamp", kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(streamed["points"][("F2", "month")], want, check_exact=True)
    lists = json.loads(streamed["objects"]["d/r/raw/F1/info/region_lists.json"])
    assert lists == recipe.region_lists(
        checked.frame[checked.frame["feature"] == "F1"], ["country", "admin1", "admin2", "admin3"]
    )
    assert any(k.endswith("raw.csv") for k in streamed["objects"]) and not any(
        "/F1/" in k and k.endswith("raw.csv") for k in streamed["objects"]
    )  # F1 has more rows than the threshold


def test_one_file_weighted_in_batches_same_as_whole(tmp_path: Path, client: Any) -> None:
    paths = [write(table_a(), tmp_path / "a.parquet")]
    settings = settings_for(paths, weight="w", qualifier_map={"F1": ["camp", "flag"]}, raw=100)
    whole = prepared(client, settings, WHOLE)
    streamed = prepared(client, settings, SMALL_BATCH)
    assert_same(streamed, whole)
    assert whole["info"]["qualifiers"] == ["year", "flag", "score", "camp"]
    assert "d/r/raw/F1/info/qualifiers/flag.json" in streamed["objects"]
    assert sorted(json.loads(streamed["objects"]["d/r/raw/F1/info/qualifiers/flag.json"])) == [
        "False",
        "None",
        "True",
    ]
    assert len(whole["info"]["output_agg_values"]) == 3


def test_integer_ids_without_places_in_batches_same_as_whole(tmp_path: Path, client: Any) -> None:
    paths = [write(table_ids(), tmp_path / "ids.parquet")]
    settings = settings_for(paths, indicator=True)
    whole = prepared(client, settings, WHOLE)
    streamed = prepared(client, settings, SMALL_BATCH)
    assert_same(streamed, whole)
    assert whole["info"]["natives"] == [20.0, 10.0] and not whole["info"]["coordinates"]
    rows = table_ids().to_pylist()
    codes = ["None" if r["code"] is None else str(float(r["code"])) for r in rows if r["feature"] == 10]
    assert json.loads(streamed["objects"]["d/r/raw/10.0/info/qualifiers/code.json"]) == list(
        dict.fromkeys(codes)
    )
    assert "None" in codes and "1.0" in codes


# ================================================================ spooled: features of more rows than a batch


def spooled_prepare(client: Any, settings: Any, batch_rows: int, root: Path) -> dict[str, Any]:
    """The stage's record (without where the points were written), objects and points (read back from
    their files, each checked to be a row group per period) with its state under ``root``."""
    settings = dataclasses.replace(settings, batch_rows=batch_rows)
    result = prepare_module.prepare(client, settings, Store(str(root)), "fp")
    points: dict[tuple[str, str], pd.DataFrame] = {}
    for feature in result.info["features"]:
        for time_res, written in feature["points"].items():
            path = root / written["key"]
            parquet = pq.ParquetFile(path)
            stamps = [
                parquet.metadata.row_group(i).column(0).statistics
                for i in range(parquet.metadata.num_row_groups)
            ]
            periods = [int(s.min) for s in stamps]
            # row groups each of one period, periods ascending (pieces.PointsFile reads a period alone); a
            # period in several only when it has more points than a batch (the merge holds a batch)
            assert all(int(s.min) == int(s.max) for s in stamps) and periods == sorted(periods)
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
            for period in set(periods):
                held = [size for size, p in zip(sizes, periods, strict=True) if p == period]
                assert len(held) == 1 or (sum(held) > batch_rows and all(s >= batch_rows for s in held[:-1]))
            assert (
                written["digest"] == object_digest(path.read_bytes())
                and written["size"] == path.stat().st_size
            )
            points[(feature["key"], time_res)] = pd.read_parquet(path)
            feature["points"][time_res] = {k: written[k] for k in ("rows", "timestamps")}
    return {"info": result.info, "objects": result.objects, "points": points}


SPOOL_CASES = {
    "two files": (lambda d: [write(table_a(), d / "a.parquet.gzip"), write(table_b(), d / "b.parquet.gzip")],
                  {"qualifier_map": {"F1": ["year", "camp"], "F2": ["source"]}, "raw": 12}),
    "weighted": (lambda d: [write(table_a(), d / "a.parquet")], {"weight": "w", "raw": 100}),
    "integer ids": (lambda d: [write(table_ids(), d / "ids.parquet")], {"indicator": True}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SPOOL_CASES))
def test_spooled_features_give_the_whole_files_points(case: str, tmp_path: Path, client: Any) -> None:
    """With batches of 7 rows every feature is spooled (its partial sums written to the store in
    buckets by a hash of the whole point, combined a bucket at a time and merged period by period,
    a period's shares put back in order of first appearance): the points files, the record (the
    summary of the ``all`` points included) and the objects equal the whole file's in memory."""
    files, options = SPOOL_CASES[case]
    settings = settings_for(files(tmp_path), **options)
    whole = prepared(client, settings, WHOLE)
    spooled = spooled_prepare(client, settings, SMALL_BATCH, tmp_path / "store")
    assert_same(spooled, whole)
    spool = sorted((tmp_path / "store").rglob("spool/**/*.parquet"))
    buckets = {p.name.split("-")[1] for p in spool}
    assert len(buckets) > 1 and {p.parent.parent.parent.name for p in spool} >= {"month", "year"}
    # periods shared by buckets: the merge restored their points' order (else assert_same fails)
    periods_in: dict[tuple[str, str, int], set[str]] = {}
    for path in spool:
        if path.parent.parent.parent.name in ("month", "year"):
            feature, res = path.parent.parent.name, path.parent.parent.parent.name
            for period in pd.read_parquet(path, columns=["timestamp"])["timestamp"].unique():
                periods_in.setdefault((res, feature, int(period)), set()).add(path.name.split("-")[1])
    assert any(len(b) > 1 for b in periods_in.values())
    if not settings.is_indicator:
        assert whole["info"]["output_agg_values"] and {p.parent.parent.parent.name for p in spool} >= {"all"}


def test_spooled_points_without_a_spool_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing was spooled"):
        prepare_module.write_spooled_points(
            [[]], 3, "", __import__("targets.store").store.Store(str(tmp_path)), "x.parquet", 100
        )


def test_random_floats_in_batches_equal_up_to_rounding(tmp_path: Path, client: Any) -> None:
    """Values whose sums round: batches add partial sums (as files and the reference's Dask partitions
    do), so sums agree to the last bits; everything else exactly."""
    table = table_a(200)
    rng = np.random.default_rng(11)
    table = table.set_column(
        table.schema.get_field_index("value"), "value", pa.array(rng.normal(3.0, 10.0, 200))
    )
    paths = [write(table, tmp_path / "floats.parquet")]
    settings = settings_for(paths)
    whole = prepared(client, settings, WHOLE)
    streamed = prepared(client, settings, SMALL_BATCH)
    assert streamed["objects"] == whole["objects"]
    for key, frame in whole["points"].items():
        pd.testing.assert_frame_equal(
            streamed["points"][key], frame, check_exact=False, rtol=1e-12, atol=1e-12
        )


# ================================================================ the command line with batches of 7 rows


@pytest.mark.slow
def test_luigi_run_in_batches_equals_the_recipe(tmp_path: Path) -> None:
    from tests.helpers import REPO
    from tests.test_causemos_e2e import (
        LOCAL_PARAMS,
        assert_same_objects,
        cli_args,
        config_with_batch_rows,
        expected,
        run,
        tree,
        write_inputs,
    )

    inputs = write_inputs(tmp_path / "in", seed=5)
    config = config_with_batch_rows(tmp_path, 7)
    dest = tmp_path / "bucket"
    proc = run(
        cli_args("CausemosRun", [str(p) for p in inputs], str(dest)),
        tmp_path,
        {"LUIGI_CONFIG_PATH": config, "WM_DASK_SCHEDULER": ""},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_same_objects(tree(dest), expected(inputs, **LOCAL_PARAMS))
    assert (dest / "model-1/run-1/results/results.json").exists()
    # the run did read in batches of 7 rows: luigi's configuration names the setting
    env = {**os.environ, "LUIGI_CONFIG_PATH": config}
    got = subprocess.run(
        [sys.executable, "-c", "from pipeline.causemos.settings import causemos; print(causemos().batch_rows)"],
        env=env, cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert got.stdout.strip() == "7"


def test_shares_merge_in_order_of_first_appearance_a_table_at_a_time() -> None:
    """Shares of a period, each in order of first appearance, read in small tables: merged in that order,
    a few tables at a time (each at most a table of each share); a share out of order is an error, not a silent misorder."""
    first = recipe.FIRST_APPEARANCE
    rng = np.random.default_rng(3)
    order = rng.permutation(60)
    shares = [np.sort(order[i::3]) for i in range(3)]  # three interleaved shares of 0..59

    def stream(index: int, values: np.ndarray, size: int) -> Any:
        for start in range(0, len(values), size):
            yield pa.table({first: values[start : start + size], "v": values[start : start + size] * 2.0})

    merged = list(
        prepare_module._merge_in_order([stream(i, v, 4) for i, v in enumerate(shares)], ["a", "b", "c"])
    )
    joined = pa.concat_tables(merged)
    assert joined.column(first).to_pylist() == list(range(60))
    assert joined.column("v").to_pylist() == [2.0 * v for v in range(60)]
    assert len(merged) > 3 and max(t.num_rows for t in merged) <= 3 * 4
    with pytest.raises(ValueError, match="b: points not in order of first appearance"):
        list(
            prepare_module._merge_in_order(
                [stream(0, shares[0], 4), stream(1, shares[1][::-1], 4)], ["a", "b"]
            )
        )
