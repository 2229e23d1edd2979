#!/usr/bin/env python
"""Generate a Causemos-shaped model output (long parquet tables) for demos and measurements.

    .venv/bin/python scripts/make_causemos_demo_input.py OUT_DIR [--rows 200000] [--files 2]
        [--features 3] [--months 60] [--regions 2000] [--points 5000] [--seed 1]

Writes ``OUT_DIR/part-{i}.parquet.gzip`` (gzip-compressed parquet, as Dojo publishes them) plus one
``part-0_str.parquet.gzip`` holding string values (the pipeline skips it, as the reference does), and
prints the ``--data-paths`` value to use. The shape follows the issue's benchmark: features x monthly
periods, admin regions over four levels (country > admin1 > admin2 > admin3), points spread over a
continent (each point inside one admin3 region), a qualifier with 8 values and one with 300; a few
rows without coordinates, without a value or with ``+-inf``. Values are multiples of 1/4, so every
sum is exact whatever the order of adding (outputs compare exactly with the in-memory recipe).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd


def make_frame(rows: int, features: int, months: int, regions: int, points: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    countries = max(1, regions // 400)
    # a region tree: country -> 4 admin1 -> 5 admin2 -> admin3 (to about `regions` regions in all)
    admin3_total = max(1, regions - countries * (1 + 4 + 20))
    tree = pd.DataFrame({
        "country": [f"Country {i % countries}" for i in range(admin3_total)],
        "admin1": [f"Province {(i // countries) % 4}" for i in range(admin3_total)],
        "admin2": [f"District {(i // (countries * 4)) % 5}" for i in range(admin3_total)],
        "admin3": [f"Ward {i}" for i in range(admin3_total)],
    })  # fmt: skip
    point_region = rng.integers(0, admin3_total, points)
    lat = np.round(rng.uniform(-34.0, 37.0, points), 4)  # Africa-sized
    lng = np.round(rng.uniform(-17.0, 51.0, points), 4)
    starts = pd.date_range("2015-01-01", periods=months, freq="MS").as_unit("ms").asi8
    p = rng.integers(0, points, rows)
    frame = pd.DataFrame({
        "timestamp": starts[rng.integers(0, months, rows)] + rng.integers(0, 27 * 86_400_000, rows),
        "country": tree["country"].to_numpy()[point_region[p]],
        "admin1": tree["admin1"].to_numpy()[point_region[p]],
        "admin2": tree["admin2"].to_numpy()[point_region[p]],
        "admin3": tree["admin3"].to_numpy()[point_region[p]],
        "lat": lat[p],
        "lng": lng[p],
        "feature": np.array([f"feature_{i}" for i in range(features)])[rng.integers(0, features, rows)],
        "value": rng.integers(-400, 4000, rows) / 4.0,
        "event_type": np.array([f"type {i}" for i in range(8)])[rng.integers(0, 8, rows)],
        "actor": np.array([f"actor {i:03d}" for i in range(300)])[rng.integers(0, 300, rows)],
    })  # fmt: skip
    frame.loc[frame.sample(frac=0.01, random_state=seed).index, ["lat", "lng"]] = np.nan
    frame.loc[frame.sample(frac=0.002, random_state=seed + 1).index, "value"] = np.nan
    frame.loc[frame.sample(n=min(3, rows), random_state=seed + 2).index, "value"] = np.inf
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--months", type=int, default=60)
    parser.add_argument("--regions", type=int, default=2000)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    frame = make_frame(args.rows, args.features, args.months, args.regions, args.points, args.seed)
    paths = []
    for index, part in enumerate(np.array_split(np.arange(len(frame.index)), args.files)):
        path = os.path.abspath(os.path.join(args.out_dir, f"part-{index}.parquet.gzip"))
        frame.iloc[part].to_parquet(path, compression="gzip", index=False)
        paths.append(path)
    strings = frame.head(10).assign(value=lambda f: f["value"].astype(str))
    strings_path = os.path.abspath(os.path.join(args.out_dir, "part-0_str.parquet.gzip"))
    strings.to_parquet(strings_path, compression="gzip", index=False)
    print(",".join([*paths, strings_path]))


if __name__ == "__main__":
    main()
