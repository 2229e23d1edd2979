#!/usr/bin/env python
"""Many small objects to S3, side by side: s3fs ``pipe`` (64 connections: how the Causemos writer sent
its batches before) against ``Store.write_many`` (presigned PUTs on threads), on a local SeaweedFS.

    .venv/bin/python scripts/bench_causemos_writes.py [--objects 3000] [--size 1500] [--reps 3]

Prints, per repetition and way, objects/s, client CPU per object, the PUTs counted by the server's
proxy, and os.getloadavg(); then the median ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from targets.s3config import S3Options  # noqa: E402
from targets.store import Store  # noqa: E402
from tests.servers.s3 import start_s3_server  # noqa: E402


def s3fs_pipe(options: S3Options, paths: dict[str, bytes]) -> None:
    import fsspec

    kwargs: dict[str, Any] = dict(options.s3fs_kwargs())
    config = dict(kwargs.pop("config_kwargs", {}) or {})
    config["max_pool_connections"] = 64
    fs = fsspec.filesystem("s3", skip_instance_cache=True, config_kwargs=config, **kwargs)
    for start in range(0, len(paths), 512):  # the writer's batches
        fs.pipe(dict(list(paths.items())[start : start + 512]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--size", type=int, default=1500)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        server = start_s3_server(Path(workdir))
        try:
            os.environ.update(server.env())
            bucket = server.create_bucket("bench-writes")
            options = S3Options(endpoint_url=server.endpoint_url)
            payload = os.urandom(args.size)
            rates: dict[str, list[float]] = {"s3fs pipe": [], "Store.write_many": []}
            for rep in range(args.reps):
                for way in rates:
                    objects = {f"r{rep}/{way[:4]}/region {i}/f.csv": payload for i in range(args.objects)}
                    server.reset_counts()
                    cpu, wall = time.process_time(), time.perf_counter()
                    if way == "s3fs pipe":
                        s3fs_pipe(options, {f"{bucket}/{k}": v for k, v in objects.items()})
                    else:
                        Store(f"s3://{bucket}", options).write_many(objects)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    puts = server.request_counts(bucket).get("PUT", 0)
                    rates[way].append(args.objects / wall)
                    print(
                        f"rep {rep + 1} {way:<17} {args.objects / wall:7.0f} objects/s  "
                        f"{1000 * cpu / args.objects:.2f} ms CPU/object  PUTs {puts}  "
                        f"loadavg {os.getloadavg()[0]:.1f}"
                    )
            old, new = (statistics.median(v) for v in rates.values())
            print(f"median: s3fs pipe {old:.0f}/s, write_many {new:.0f}/s, ratio {new / old:.2f}x")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
