"""The QA view of a finished Causemos run, read from the output directory alone: per feature, the
global monthly series (an inline SVG plot), a map of the z4 tiles' sums at the newest month (a PNG
mosaic of the tiles' 64 x 64 bins), the regions with the extreme values, and an excerpt of the newest
month's regional aggregates.

    .venv/bin/python -m pipeline.causemos.report --dest DIR|s3://... --data-id ID --run-id RUN

The page goes to ``_qa/causemos/{data_id}/{run_id}/index.html`` under ``--dest`` (outside the run's
prefix: the dashboard's key set stays the reference's), images inline, so it opens from disk as one file.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline.causemos import layout, recipe
from pipeline.causemos.tiles import decode_tile
from pipeline.errors import InputError
from pipeline.report import colormap_png, render
from targets.store import Store

MAP_ZOOM = 4
BINS = 64  # a tile is 64 x 64 bins
EXCERPT_ROWS = 15
PLOT_W, PLOT_H = 640, 180


@dataclass
class FeatureView:
    name: str
    periods: int = 0
    series_svg: str = ""  # points of the polyline, "x,y x,y ..."
    series_range: tuple[float, float] = (0.0, 0.0)
    series_span: tuple[str, str] = ("", "")
    map_png: str = ""  # data: URI
    map_label: str = ""
    extremes: list[dict[str, Any]] = field(default_factory=list)
    aggregate_header: list[str] = field(default_factory=list)
    aggregate_rows: list[list[str]] = field(default_factory=list)
    aggregate_label: str = ""


def month_label(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m")


def read_csv(store: Store, key: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.read_text(key))))


def series_polyline(timestamps: Sequence[int], values: Sequence[float]) -> tuple[str, tuple[float, float]]:
    """SVG polyline points of ``values`` over time, scaled into the plot box (NaN gaps skipped)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "", (0.0, 0.0)
    lo, hi = min(finite), max(finite)
    t0, t1 = min(timestamps), max(timestamps)
    points = []
    for t, v in zip(timestamps, values, strict=True):
        if not math.isfinite(v):
            continue
        x = (t - t0) / max(t1 - t0, 1) * PLOT_W
        y = PLOT_H - (v - lo) / max(hi - lo, 1e-12) * PLOT_H
        points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points), (lo, hi)


def z4_mosaic(store: Store, keys: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    """The ``s_sum_t_sum`` of the z4 tiles ``keys`` as one array over their bounding box of tiles."""
    tiles = [decode_tile(store.read_bytes(k)) for k in keys]
    if not tiles:
        return None
    xs, ys = [t.x for t in tiles], [t.y for t in tiles]
    x0, y0 = min(xs), min(ys)
    grid = np.full(((max(ys) - y0 + 1) * BINS, (max(xs) - x0 + 1) * BINS), np.nan)
    for t in tiles:
        for index, stats in t.stats.items():
            row, col = (t.y - y0) * BINS + index // BINS, (t.x - x0) * BINS + index % BINS
            grid[row, col] = stats.s_sum_t_sum
    return grid


def feature_view(store: Store, data_id: str, run_id: str, feature: str, levels: Sequence[str]) -> FeatureView:
    view = FeatureView(feature)
    series = read_csv(store, layout.global_timeseries_csv(data_id, run_id, "month", feature))
    series.sort(key=lambda r: int(r["timestamp"]))
    timestamps = [int(r["timestamp"]) for r in series]
    view.periods = len(series)
    if series:
        values = [float(r["s_sum_t_sum"]) if r["s_sum_t_sum"] else math.nan for r in series]
        view.series_svg, view.series_range = series_polyline(timestamps, values)
        view.series_span = (month_label(timestamps[0]), month_label(timestamps[-1]))
    prefix = layout.feature_prefix(data_id, run_id, "month", feature)
    tile_keys = sorted(
        k for k in store.list_tree(f"{prefix}tiles/").keys if k.rsplit("/", 1)[-1].count("-") == 3
    )
    if tile_keys:
        newest = max(int(k.rsplit("/", 1)[-1].split("-")[0]) for k in tile_keys)
        z4 = [k for k in tile_keys if k.rsplit("/", 1)[-1].startswith(f"{newest}-{MAP_ZOOM}-")]
        grid = z4_mosaic(store, z4)
        if grid is not None:
            finite = grid[np.isfinite(grid)]
            vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
            png = colormap_png(np.where(np.isfinite(grid), np.maximum(grid, 0), 0), vmax)
            view.map_png = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            view.map_label = f"{month_label(newest)}, {len(z4)} z{MAP_ZOOM} tile(s), 99th percentile {vmax:g}"
    if levels:
        level = levels[min(1, len(levels) - 1)]
        try:
            extrema = json.loads(
                store.read_bytes(layout.regional_extrema_json(data_id, run_id, "month", feature, level))
            )
        except FileNotFoundError:
            extrema = {}
        for kind in ("max", "min"):
            for entry in extrema.get(kind, {}).get("s_sum_t_sum", [])[:5]:
                view.extremes.append(
                    {"kind": kind, "level": level, **entry, "month": month_label(int(entry["timestamp"]))}
                )
        if timestamps:
            key = layout.regional_aggregate_csv(data_id, run_id, "month", feature, level, timestamps[-1])
            try:
                rows = read_csv(store, key)
            except FileNotFoundError:
                rows = []
            rows.sort(key=lambda r: -float(r["s_sum_t_sum"]) if r["s_sum_t_sum"] else math.inf)
            if rows:
                view.aggregate_header = list(rows[0])
                view.aggregate_rows = [[r[c] for c in view.aggregate_header] for r in rows[:EXCERPT_ROWS]]
                view.aggregate_label = (
                    f"{level}, {month_label(timestamps[-1])}: {len(rows)} regions, largest s_sum_t_sum first"
                )
    return view


def build_report(store: Store, data_id: str, run_id: str) -> str:
    """Render the page for a finished run; raises :class:`InputError` when the run has no results.json."""
    try:
        results = json.loads(store.read_bytes(layout.results_json(data_id, run_id)))
    except FileNotFoundError:
        raise InputError(
            f"no finished run at {store.uri(layout.run_prefix(data_id, run_id))} (no results.json)"
        ) from None
    info = results["data_info"]
    levels = [level for level in info.get("region_levels", []) if level in recipe.REGION_LEVELS]
    features = [feature_view(store, data_id, run_id, str(f), levels) for f in info["features"]]
    return render(
        "causemos_run.html",
        title=f"Causemos run {data_id}/{run_id}",
        generator="pipeline.causemos.report",
        dest=store.url,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        info=info,
        features=features,
        plot_w=PLOT_W,
        plot_h=PLOT_H,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="QA page of a finished Causemos run")
    parser.add_argument("--dest", required=True)
    parser.add_argument("--data-id", required=True)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    from pipeline.config import output

    store = Store(args.dest, output().s3_options())
    page = build_report(store, args.data_id, args.run_id)
    store.write_text(layout.report_html(args.data_id, args.run_id), page)
    print(store.uri(layout.report_html(args.data_id, args.run_id)))


if __name__ == "__main__":
    main()
