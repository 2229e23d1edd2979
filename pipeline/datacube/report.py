"""The datacube QA view: per (tile, date) the kept chips (green) and dropped chips (red, with the
reason on hover) outlined on an RGB thumbnail of the S2 scene, with the S1 VV mosaic and the DEM
beside it on the same grid; an index of every tile (with why a tile has no date) and date. Built
on the shared report frame (:mod:`pipeline.report`); reads thumbnails through the raster seam
(S2 decimated from its overviews, S1 and DEM warped onto a coarse version of the S2 grid)."""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import report as frame
from pipeline.datacube import engine, layout, recipe
from pipeline.raster import ArchiveAccess, RasterReader
from targets.store import Store

THUMB = 256  # pixels across a thumbnail
RGB = ("B04", "B03", "B02")
PAGE_DIR = posixpath.dirname(layout.report_index())


@dataclass
class ChipBox:
    number: int
    kept: bool
    reason: str
    left: float  # percent of the thumbnail
    top: float
    size_x: float
    size_y: float


def _coarse_grid(job: engine.DateJob) -> tuple[tuple[float, ...], int, int]:
    scale = max(1, math.ceil(max(job.width, job.height) / THUMB))
    a, b, c, d, e, f = job.transform[:6]
    return (a * scale, b, c, d, e * scale, f), max(1, job.width // scale), max(1, job.height // scale)


def _thumbnails(job: engine.DateJob, access: ArchiveAccess) -> dict[str, npt.NDArray[np.float32]]:
    transform, width, height = _coarse_grid(job)
    with RasterReader(access) as reader:
        rgb = np.stack(
            [
                reader.dataset(job.s2_bands[recipe.S2_BANDS.index(b)])
                .read(1, out_shape=(height, width))
                .astype(np.float32)
                for b in RGB
            ]
        )
        rgb[rgb == 0] = np.nan

        def mosaic(hrefs: tuple[str, ...]) -> npt.NDArray[np.float32]:
            out = np.full((height, width), np.nan, dtype=np.float32)
            for href in hrefs:
                data = reader.warped(href, job.epsg, transform, width, height, fill=np.nan).astype(np.float32)
                out[~np.isnan(data)] = data[~np.isnan(data)]
            return out

        return {"rgb": rgb, "vv": mosaic(tuple(vv for _, vv in job.s1)), "dem": mosaic(job.dem)}


def _gray_png(values: npt.NDArray[np.float32]) -> bytes:
    """A single band stretched 2-98 % to gray (NaN black)."""
    return frame.rgb_png(np.stack([values, values, values]))


def _boxes(job: engine.DateJob, manifest: dict[str, Any]) -> list[ChipBox]:
    """Each chip of the manifest as a box in percent of the thumbnails, which cover the grid's
    first ``width // scale * scale`` columns and rows."""
    transform, width, height = _coarse_grid(job)
    scale = round(transform[0] / job.transform[0])
    across, down = width * scale, height * scale
    boxes = []
    verdicts = [(k["number"], True, "kept") for k in manifest["kept"]]
    verdicts += [(d["number"], False, d["reason"]) for d in manifest["dropped"]]
    for number, kept, reason in sorted(verdicts):
        col, row = recipe.chip_offset(number, job.width, job.height, job.chip_size)
        boxes.append(ChipBox(
            number, kept, reason, 100 * col / across, 100 * row / down,
            100 * job.chip_size / across, 100 * job.chip_size / down,
        ))  # fmt: skip
    return boxes


def write_date_page(
    store: Store, entry: dict[str, Any], job: engine.DateJob, scope: str, access: ArchiveAccess
) -> dict[str, Any]:
    """The (tile, date)'s page and images (drawn when the page is missing); its index row."""
    rel = layout.report_page(job.version, job.mgrs, job.day)
    manifest = json.loads(store.read_text(layout.chip_manifest(job.version, job.mgrs, job.day, scope)))
    stem = f"{job.day:%Y-%m-%d}"
    row = {
        "mgrs": job.mgrs, "date": stem, "page": posixpath.relpath(rel, PAGE_DIR), "s2": job.s2_id,
        "kept": len(manifest["kept"]), "dropped": len(manifest["dropped"]),
    }  # fmt: skip
    if store.exists(rel):
        return row
    images = _thumbnails(job, access)
    page_dir = posixpath.dirname(rel)
    pngs = {
        "rgb": frame.rgb_png(images["rgb"]),
        "vv": _gray_png(images["vv"]),
        "dem": _gray_png(images["dem"]),
    }
    image_links = {}
    for view, png in pngs.items():
        image = layout.report_image(job.version, job.mgrs, job.day, view)
        store.write_bytes(image, png)
        image_links[view] = posixpath.relpath(image, page_dir)
    frame.write_page(
        store, rel, "datacube_date.html",
        title=f"{job.mgrs} {stem} · datacube QA", generator="pipeline.datacube.report", project_dir=store.url,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), mgrs=job.mgrs, date=stem, images=image_links,
        s2=job.s2_id, s1=[s["id"] for s in entry["s1"]], dem=[d["id"] for d in entry["dem"]],
        boxes=_boxes(job, manifest), manifest=manifest, index=posixpath.relpath(layout.report_index(), page_dir),
        chip_dir=posixpath.relpath(layout.chip_dir(job.version, job.mgrs, job.day), page_dir),
    )  # fmt: skip
    return row


def write_report(
    store: Store,
    tiles: list[tuple[dict[str, Any], list[tuple[dict[str, Any], engine.DateJob, str]]]],
    access: ArchiveAccess,
) -> str:
    """``tiles``: per row its selection document and its (entry, job, scope) per date."""
    rows = []
    for selection, dates in tiles:
        skipped = [
            f"{p['period']}: {p['reason']}" for p in selection["periods"] if p.get("status") == "skipped"
        ]
        rows.append({
            "index": selection["index"], "mgrs": selection["mgrs"], "skipped": skipped,
            "dates": [write_date_page(store, entry, job, scope, access) for entry, job, scope in dates],
        })  # fmt: skip
    rel = layout.report_index()
    frame.write_page(
        store, rel, "datacube_index.html",
        title="Sentinel-2/1 + DEM chip datacubes · QA", generator="pipeline.datacube.report", project_dir=store.url,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), tiles=rows,
        kept=sum(d["kept"] for r in rows for d in r["dates"]), dropped=sum(d["dropped"] for r in rows for d in r["dates"]),
    )  # fmt: skip
    return rel
