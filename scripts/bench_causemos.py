#!/usr/bin/env python
"""Benchmark: the reference Causemos flow (slow-tortoise, January 2024) against our workflow, in one run.

    .venv/bin/python scripts/bench_causemos.py [--rows 100000] [--months 24] [--regions 600] [--points 200]
        [--features 3] [--seed 1] [--no-check] [--workdir DIR]

Generates the issue's kind of input with scripts/make_causemos_demo_input.py's generator (features x
monthly periods, admin regions over 4 levels, points spread over a continent, a qualifier with 8 values
and one with 300; a few NaN and +-inf values), with every row given coordinates so that every output must
agree (rows without coordinates are the deliberate difference, checked by
scripts/compare_causemos_reference.py). Starts one local S3 server (SeaweedFS behind the counting
proxy) and runs, one after the other on the same cores: the reference (its pinned venv, its
LocalDaskExecutor, boto3 writes) into one bucket, ours (luigi CausemosRun, embedded Dask cluster) into
another. Prints per side: wall time, rows/s, objects written, S3 requests, peak RSS of the process tree,
the load average before and after; then the throughput ratio (issue target: 5x) and, unless
--no-check, whether the two buckets hold the same keys and equal objects (the contract's comparison).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_causemos_lib import (
    Params,
    RunFigures,
    bucket_objects,
    compare_outputs,
    ensure_reference,
    run_ours,
    run_reference,
    with_stand_in_coordinates,
    write_input,
)

from tests.servers.s3 import start_s3_server


def demo_generator():  # type: ignore[no-untyped-def]
    """make_frame of scripts/make_causemos_demo_input.py (a script, not a package)."""
    path = Path(__file__).resolve().parent / "make_causemos_demo_input.py"
    spec = importlib.util.spec_from_file_location("make_causemos_demo_input", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_frame


def side(
    name: str, fig: RunFigures, rows: int, objects: int, requests: dict[str, int], load: tuple[float, float]
) -> str:
    asked = {k: v for k, v in requests.items() if v}
    return (
        f"{name:10} wall {fig.seconds:7.1f} s  {rows / fig.seconds:9,.0f} rows/s  objects {objects:7,}  "
        f"peak RSS {fig.peak_rss_mib:6.0f} MiB  requests {json.dumps(asked)}  loadavg {load[0]:.1f} -> {load[1]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--regions", type=int, default=600)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-check", action="store_true", help="skip comparing the two output sets")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    ensure_reference()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="causemos-bench-"))
    frame = demo_generator()(args.rows, args.features, args.months, args.regions, args.points, args.seed)
    frame = with_stand_in_coordinates(frame)
    paths = write_input(frame, workdir / "input")
    params = Params(
        data_id="bench-model", run_id="run-1", qualifier_map={"feature_0": ["event_type", "actor"]}
    )
    print(
        f"input: {len(frame.index):,} rows, {args.features} features, {args.months} months, ~{args.regions} regions, "
        f"{args.points} points, 2 files; qualifier map {params.qualifier_map}; cores {os.cpu_count()}",
        flush=True,
    )
    server = start_s3_server(workdir / "s3")
    try:
        lines, figures, objects = [], {}, {}
        for name in ("reference", "ours"):
            bucket = server.create_bucket(f"bench-{name}")
            server.reset_counts()
            before = os.getloadavg()[0]
            if name == "reference":
                fig = run_reference(params, paths, server, bucket)
            else:
                fig = run_ours(params, paths, server, bucket, workdir / "luigi")
            load = (before, os.getloadavg()[0])
            requests = server.request_counts(bucket)
            listing = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
            keys = [o["Key"] for page in listing for o in page.get("Contents", [])]
            outputs = [k for k in keys if not k.startswith("_state/")]
            figures[name], objects[name] = fig, (bucket, len(outputs), len(keys) - len(outputs))
            line = side(name, fig, len(frame.index), len(outputs), requests, load)
            if len(keys) != len(outputs):
                line += f"  (+{len(keys) - len(outputs)} bookkeeping objects under _state/)"
            lines.append(line)
            print(line, flush=True)
        ratio = figures["reference"].seconds / figures["ours"].seconds
        print(f"throughput ratio ours / reference: {ratio:.1f}x (target 5x)")
        if not args.no_check:
            ours = bucket_objects(server, objects["ours"][0])
            ref = bucket_objects(server, objects["reference"][0])
            verdicts = compare_outputs(ours, ref, ref)
            same = all(v.ok for v in verdicts)
            print(
                f"outputs: {'the same keys and equal objects' if same else 'DIFFERENT'} ({len(ref):,} objects)"
            )
            for verdict in verdicts:
                if not verdict.ok:
                    print("   " + verdict.line())
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"done at loadavg {os.getloadavg()[0]:.1f} ({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
