#!/usr/bin/env python
"""Compare our Causemos workflow with the reference flow (slow-tortoise, January 2024) on one input.

    .venv/bin/python scripts/compare_causemos_reference.py [--rows 3000] [--seed 7] [--case model|indicator|files|types|bare|all]
        [--workdir DIR] [--keep]

Generates a table (3 features, 3 countries over 4 admin levels with some levels missing, ~3 % of rows
without lat/lng, a 4-value qualifier and a 150-value one, monthly timestamps over 2 years, NaN and
+-inf values) as two parquet files, starts a local S3 server (SeaweedFS), and runs on it, with the same
parameters: the reference on the table, the reference on the table with a stand-in position for rows
without coordinates, and ours. Then compares every output as the contract (issue 12) says: the same
keys; CSV headers and cells equal (numbers by value, rows in any order); JSON equal as data (lists in
any order, extrema newest first); tiles equal after decoding. The families that rows without
coordinates change (series, regional outputs, extrema, the model summary) are compared with the
stand-in run, since ours keeps those rows there (deliberate difference 1); tiles, grid stats, raw data
and lists with the plain run. Prints a verdict per output family and exits 1 if any differs.

Cases: ``model`` (a qualifier map with both qualifiers, default thresholds), ``indicator`` (weights,
``--indicator``, a low ``max_count`` that drops the big qualifier, ``regional_timeseries_max_level`` 2,
a fill timestamp and a raw-count threshold that leaves one feature without raw.csv), ``files`` (three
files with mismatched columns: a qualifier missing from one, an all-whitespace column, an all-null
``admin3``, timestamps past pandas' range, a ``*_str.parquet.gzip`` file to skip), ``types`` (one
file: integer feature ids, numeric qualifiers, lat/lng as text with unparseable cells), ``bare`` (one file
without lat/lng and without any region column: no tiles, no regional outputs, no region lists).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_causemos_lib import (
    Params,
    bucket_objects,
    compare_outputs,
    ensure_reference,
    make_input,
    run_ours,
    run_reference,
    with_stand_in_coordinates,
)

from tests.servers.s3 import start_s3_server


def cases(rows: int) -> dict[str, Params]:
    return {
        "model": Params(
            data_id="compare-model", run_id="run-1",
            qualifier_map={"rainfall": ["event_type", "source"], "crop production": ["event_type"], "prices": ["source"]},
        ),
        "indicator": Params(
            data_id="compare-indicator", run_id="indicator", indicator=True, weight_column="w",
            qualifier_map={"rainfall": ["event_type", "source"], "prices": ["event_type"]},
            qualifier_thresholds={"max_count": 100, "regional_timeseries_count": 100, "regional_timeseries_max_level": 2},
            raw_count_threshold=rows // 3, fill_timestamp=1_556_668_800_000,
        ),
        "files": Params(
            data_id="compare-files", run_id="run-2", qualifier_map={"rainfall": ["source", "event_type"], "prices": ["notes"]},
        ),
        "types": Params(data_id="compare-types", run_id="run-4", qualifier_map={"10": ["year", "score"], "30": ["event_type"]}),
        "bare": Params(data_id="compare-bare", run_id="run-3", qualifier_map={"prices": ["event_type", "source"]}),
    }  # fmt: skip


def tables_for(case: str, rows: int, seed: int) -> list[pd.DataFrame]:
    """The input files' tables."""
    frame = make_input(rows, seed)
    rng = np.random.default_rng(seed + 9)
    if case == "indicator":
        frame["w"] = rng.integers(0, 8, len(frame.index)) / 2.0
        frame.loc[rng.choice(len(frame.index), size=len(frame.index) // 50, replace=False), "w"] = np.nan
        frame.loc[rng.choice(len(frame.index), size=5, replace=False), "timestamp"] = np.nan
    if case == "files":
        frame["admin3"] = None
        frame["notes"] = "  "
        frame.loc[rng.choice(len(frame.index), size=3, replace=False), "timestamp"] = 9_300_000_000_000
        first, second, third = (frame.iloc[part] for part in np.array_split(np.arange(len(frame.index)), 3))
        return [first, second.drop(columns=["source"]), third.drop(columns=["notes"])]
    if case == "types":  # one file: the feature stays an integer; numeric qualifiers; lat/lng as text
        frame["feature"] = frame["feature"].map({"rainfall": 10, "crop production": 20, "prices": 30})
        frame["year"] = (frame["timestamp"] // 31_557_600_000 + 1970).astype("int64")
        frame["score"] = rng.integers(0, 5, len(frame.index)) / 2.0
        frame.loc[rng.choice(len(frame.index), size=40, replace=False), "score"] = np.nan
        frame["lat"] = frame["lat"].map(lambda v: "" if pd.isna(v) else str(v)).astype(object)
        frame.loc[rng.choice(len(frame.index), size=10, replace=False), "lat"] = "n/a"
        frame["lng"] = frame["lng"].astype(str)
        return [frame.drop(columns=["admin2", "admin3", "source"])]
    if case == "bare":
        return [frame.drop(columns=["lat", "lng", "country", "admin1", "admin2", "admin3"])]
    return [frame.iloc[part] for part in np.array_split(np.arange(len(frame.index)), 2)]


def write_tables(tables: list[pd.DataFrame], directory: Path, *, with_strings: bool) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, table in enumerate(tables):
        path = directory / f"part-{index}.parquet.gzip"
        table.to_parquet(path, compression="gzip", index=False)
        paths.append(str(path))
    if with_strings:  # string values: skipped by both
        path = directory / "part-0_str.parquet.gzip"
        tables[0].head(20).assign(value=lambda f: f["value"].astype(str)).to_parquet(path, compression="gzip")
        paths.append(str(path))
    return paths


def compare_case(
    case: str, params: Params, rows: int, seed: int, workdir: Path, server, batch_rows: int = 0
) -> bool:  # type: ignore[no-untyped-def]
    tables = tables_for(case, rows, seed)
    frame = pd.concat(tables)
    plain = write_tables(tables, workdir / case / "plain", with_strings=case == "files")
    stand_in = write_tables(
        [with_stand_in_coordinates(t) if "lat" in t.columns else t for t in tables],
        workdir / case / "stand-in", with_strings=case == "files",
    )  # fmt: skip
    buckets = {name: server.create_bucket(f"{case}-{name}") for name in ("ref", "ref-stand-in", "ours")}
    print(f"\n== case {case}: {len(frame.index):,} rows, parameters {params}", flush=True)
    figures = {
        "ref": run_reference(params, plain, server, buckets["ref"]),
        "ref-stand-in": run_reference(params, stand_in, server, buckets["ref-stand-in"]),
        "ours": run_ours(
            params, plain, server, buckets["ours"], workdir / case / "luigi", batch_rows=batch_rows
        ),
    }
    for name, fig in figures.items():
        print(f"   {name:13} {fig.seconds:7.1f} s  peak RSS {fig.peak_rss_mib:6.0f} MiB", flush=True)
    objects = {name: bucket_objects(server, bucket) for name, bucket in buckets.items()}
    print(
        f"   objects: ref {len(objects['ref'])}, ref on stand-in table {len(objects['ref-stand-in'])}, ours {len(objects['ours'])}"
    )
    verdicts = compare_outputs(objects["ours"], objects["ref"], objects["ref-stand-in"])
    # A control: the comparison is not vacuous when the reference's two runs differ where ours is
    # compared with the stand-in run (the rows without coordinates count there).
    control = compare_outputs(objects["ref"], objects["ref"], objects["ref-stand-in"])
    exercised = sum(len(v.differing) + len(v.missing) + len(v.extra) for v in control)
    print(f"   control: {exercised} objects of the reference's plain run differ from its stand-in run")
    for verdict in verdicts:
        print("   " + verdict.line())
    return all(v.ok for v in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--case", choices=["model", "indicator", "files", "types", "bare", "all"], default="all"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--batch-rows", type=int, default=0,
        help="our [causemos] batch_rows (default: luigi.cfg's); small values read input files in many batches "
        "and make every output from the points one period at a time",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work directory (inputs, S3 data)")
    args = parser.parse_args()
    ensure_reference()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="causemos-compare-"))
    started = time.perf_counter()
    server = start_s3_server(workdir / "s3")
    try:
        selected = cases(args.rows)
        names = list(selected) if args.case == "all" else [args.case]
        results = {
            name: compare_case(name, selected[name], args.rows, args.seed, workdir, server, args.batch_rows)
            for name in names
        }
    finally:
        server.stop()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{time.perf_counter() - started:.0f} s in all, loadavg {os.getloadavg()[0]:.1f}")
    for name, ok in results.items():
        print(
            f"case {name}: {'SAME as the reference (apart from the two deliberate differences)' if ok else 'DIFFERENT'}"
        )
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
