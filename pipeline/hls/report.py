"""The HLS QA view: per tile-year a monthly RGB filmstrip of the composites with each
month's ``valid_count`` map under it, so months that are mostly cloud show at a glance;
unusable items and failed months listed. Built on the shared report frame
(:mod:`pipeline.report`); reads only the composites' overviews and the state records."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline import report as frame
from pipeline.failures import read_record, read_unusable
from pipeline.hls import layout, recipe
from pipeline.hls.engine import open_output_raster
from targets.store import Store

THUMB = 128  # pixels across a filmstrip cell
CLOUDY_FRACTION = 0.5  # a month is marked when more than this share of pixels has no usable scene
RGB = (recipe.BANDS.index("red"), recipe.BANDS.index("green"), recipe.BANDS.index("blue"))
MONTH_LABELS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class MonthCell:
    label: str
    rgb: str = ""
    count: str = ""
    cog: str = ""
    scenes: int = 0
    empty_pct: int = 0
    cloudy: bool = False


def _thumbnail(store: Store, rel: str) -> np.ndarray:
    """The 9 bands at about THUMB pixels across, from the COG's overviews (decimated read)."""
    with open_output_raster(store, rel) as ds:
        scale = max(1, max(ds.width, ds.height) // THUMB)
        shape = (ds.count, max(1, ds.height // scale), max(1, ds.width // scale))
        data: np.ndarray = np.asarray(ds.read(out_shape=shape, resampling=_nearest()), dtype=np.float32)
        return data


def _nearest() -> Any:
    from rasterio.enums import Resampling

    return Resampling.nearest


PAGE_DIR = posixpath.dirname(layout.report_index())
# Per month image: the composite's scenes digest it was drawn from and its empty share, so a
# rerun redraws only the months whose composite changed.
FIGURES = f"{PAGE_DIR}/img/figures.json"


@dataclass
class _Drawing:
    rgb_png: bytes
    count_png: bytes
    empty: float  # share of pixels with no usable scene


def _draw(store: Store, rel: str, scenes: int) -> _Drawing:
    """A month's filmstrip images, from its COG's overviews."""
    data = _thumbnail(store, rel)
    counts = data[recipe.VALID_COUNT_INDEX]
    return _Drawing(
        frame.rgb_png(data[list(RGB)]), frame.colormap_png(counts, vmax=scenes), float(np.mean(counts <= 0))
    )


# Months drawn at once: a drawing is a COG's overview read and decoded by GDAL, and PNG
# encoding, which release the GIL; drawn one after another they are ~0.3 s of a 12-month
# run's closing wall time on one core.
DRAW_THREADS = 4


def _drawings(store: Store, todo: dict[str, tuple[str, int]]) -> dict[str, _Drawing]:
    """:func:`_draw` of each image name's ``(COG, scenes)``, on threads."""
    if len(todo) <= 1:
        return {img: _draw(store, rel, scenes) for img, (rel, scenes) in todo.items()}
    from concurrent.futures import ThreadPoolExecutor

    threads = min(len(todo), DRAW_THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hls-report") as pool:
        futures = {img: pool.submit(_draw, store, rel, scenes) for img, (rel, scenes) in todo.items()}
        return {img: future.result() for img, future in futures.items()}


def tile_year_cells(
    store: Store, tile: str, year: int, manifest: dict[str, Any], drawn: dict[str, Any]
) -> tuple[list[MonthCell], int]:
    entries = {month: (manifest.get("months") or {}).get(str(month)) for month in recipe.MONTHS}
    image = {month: f"img/{tile}_{year}-{month:02d}" for month in recipe.MONTHS}
    todo = {
        image[month]: (layout.composite_tif(tile, year, month), len(entry["scenes"]))
        for month, entry in entries.items()
        if entry and (not drawn.get(image[month]) or drawn[image[month]]["digest"] != entry["digest"])
    }
    drawings = _drawings(store, todo)
    cells = []
    scenes_total = 0
    for month in recipe.MONTHS:
        cell = MonthCell(MONTH_LABELS[month - 1])
        entry = entries[month]
        if entry:
            rel = layout.composite_tif(tile, year, month)
            img = image[month]
            if img in drawings:
                drawing = drawings[img]
                store.write_bytes(f"{PAGE_DIR}/{img}_rgb.png", drawing.rgb_png)
                store.write_bytes(f"{PAGE_DIR}/{img}_count.png", drawing.count_png)
                drawn[img] = {"digest": entry["digest"], "empty": drawing.empty}
            known = drawn[img]
            cell.rgb, cell.count = f"{img}_rgb.png", f"{img}_count.png"
            cell.cog = posixpath.relpath(rel, PAGE_DIR)
            cell.scenes = len(entry["scenes"])
            cell.empty_pct = round(100 * known["empty"])
            cell.cloudy = known["empty"] > CLOUDY_FRACTION
            scenes_total += cell.scenes
        cells.append(cell)
    return cells, scenes_total


def write_report(store: Store, tile_years: list[tuple[str, int]]) -> str:
    rows = []
    unusable: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    months_written = 0
    drawn: dict[str, Any] = _json(store, FIGURES) or {}
    before = json.dumps(drawn, sort_keys=True)
    for tile, year in tile_years:
        manifest = _json(store, layout.composite_manifest(tile, year)) or {}
        cells, scenes = tile_year_cells(store, tile, year, manifest, drawn)
        months_written += sum(1 for c in cells if c.rgb)
        rows.append({"tile": tile, "year": year, "months": cells, "scenes": scenes})
        for u in read_unusable(store, layout.unusable_record(tile, year)):
            unusable.append({"where": f"{tile} {year}", "id": u.id, "reason": u.reason})
        for f in read_record(store, layout.failure_record(tile, year)).failed:
            failed.append({"what": f.what, "error": f.error})
    if json.dumps(drawn, sort_keys=True) != before:
        store.write_text(FIGURES, json.dumps(drawn, sort_keys=True) + "\n")
    rel = layout.report_index()
    frame.write_page(
        store, rel, "hls_index.html",
        title="HLS monthly composites · QA", generator="pipeline.hls.report", project_dir=store.url,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), tile_years=rows, unusable=unusable,
        failed=failed, months_written=months_written, cloudy_fraction=CLOUDY_FRACTION,
    )  # fmt: skip
    return rel


def _json(store: Store, rel: str) -> Any:
    try:
        return json.loads(store.read_text(rel))
    except FileNotFoundError:
        return None
