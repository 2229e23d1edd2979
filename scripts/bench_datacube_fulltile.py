"""The synthetic whole Sentinel-2 tile of the datacube benchmarks (issue 14): its files (built
once, cached) and, for ``scripts/bench_datacube.py --tile SIZE``, a STAC catalogue of them.

Files (``build_tile``): S2 10 m bands (B02 B03 B04 B08) SIZE x SIZE uint16 and the 20 m bands
and SCL at half that, GeoTIFFs tiled in 1024-pixel blocks as Planetary Computer's COGs, DEFLATE;
two S1 RTC items (``vh``, ``vv`` float32, nodata -32768) on UTM grids offset by (3 m, -7 m),
overlapping over a third of the tile; one Copernicus-DEM-like tile in EPSG:4326 at 1 arcsecond
covering it all. Pixel values are cheap patterns (nothing is dropped: every chip is written).
Used by ``scripts/bench_datacube_memory.py`` (one process, ``engine.chip_batch``) and
``scripts/bench_datacube.py --tile`` (the old script and the workflow side by side).

Catalogue (``fulltile_archive``): ``dates`` S2 items of tile 10TET (one per year, in the years
the old script tries first for sample row 0, so neither way searches an empty year), each with
two S1 items a day later (the union is needed: neither covers the tile) and one DEM item; every
date's items point at the same files (what is measured is the stacking and chipping, not the
archive's variety). Item properties and asset keys as ``pipeline.demo.datacube_archive`` writes
them (its helpers build the footprints, the sample file and the collections).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

EPSG = 32610  # 10TET's zone and grid origin
X0, Y0 = 499980.0, 5300040.0
MGRS = "10TET"
BLOCK = 1024  # Planetary Computer's S2 COGs use 1024-pixel blocks
STRIP = 1024  # rows written at a time: the builder never holds a whole band either
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
S2_ORDER = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _write(path: Path, crs: int, transform: Any, width: int, height: int, dtype: str, nodata: float | None,
           fill: Any) -> None:  # fmt: skip
    """A tiled DEFLATE GeoTIFF written strip by strip: ``fill(row0, rows, width)`` gives each strip."""
    import rasterio
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": dtype, "crs": f"EPSG:{crs}",
        "transform": transform, "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "DEFLATE",
        "nodata": nodata, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    tmp = path.with_name(path.name + ".part")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row0 in range(0, height, STRIP):
            rows = min(STRIP, height - row0)
            dst.write(fill(row0, rows, width)[None], window=Window(0, row0, width, rows))
    tmp.rename(path)


def build_tile(root: Path, size: int) -> dict[str, Any]:
    """The (tile, date)'s files under ``root`` (built once); returns the DateJob's fields."""
    import numpy as np
    from affine import Affine
    from pyproj import Transformer

    root.mkdir(parents=True, exist_ok=True)
    done = root / "job.json"
    if done.exists():
        return dict(json.loads(done.read_text()))

    def pattern(scale: int, offset: int, dtype: str) -> Any:
        def fill(row0: int, rows: int, width: int) -> Any:
            r = np.arange(row0, row0 + rows, dtype=np.int64)[:, None]
            c = np.arange(width, dtype=np.int64)[None, :]
            return ((r * 7 + c * 3 + offset) % scale + 1).astype(dtype)

        return fill

    hrefs: dict[str, str] = {}
    t10 = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)
    t20 = Affine(20.0, 0.0, X0, 0.0, -20.0, Y0)
    for i, band in enumerate(S2_ORDER):
        path = root / f"T10TET_{band}.tif"
        hrefs[band] = str(path)
        if path.exists():
            continue
        if band in S2_10M:
            _write(path, EPSG, t10, size, size, "uint16", 0, pattern(4000, 100 * i, "uint16"))
        else:
            _write(path, EPSG, t20, size // 2, size // 2, "uint16", 0, pattern(4000, 100 * i, "uint16"))
    scl = root / "T10TET_SCL.tif"
    if not scl.exists():  # class 4 (vegetation) everywhere: every chip is kept and written
        _write(
            scl, EPSG, t20, size // 2, size // 2, "uint8", 0, lambda r0, n, w: np.full((n, w), 4, np.uint8)
        )
    # Two S1 items: A over columns 0 .. 0.65 SIZE, B over 0.35 SIZE .. SIZE (B earlier, A wins).
    s1 = []
    for name, c0, c1 in (("B", 0.35, 1.0), ("A", 0.0, 0.65)):
        x0 = X0 + 10.0 * round(c0 * size) - 200.0 + 3.0
        width = round((c1 - c0) * size) + 40
        t = Affine(10.0, 0.0, x0, 0.0, -10.0, Y0 + 200.0 - 7.0)
        pair = []
        for pol, scale in (("vh", 0.01), ("vv", 0.05)):
            path = root / f"S1_{name}_{pol}.tif"
            pair.append(str(path))
            if not path.exists():
                base = pattern(997, ord(name), "float32")
                _write(path, EPSG, t, width, size + 40, "float32", -32768.0,
                       lambda r0, n, w, base=base, scale=scale: base(r0, n, w) * scale)  # fmt: skip
        s1.append(tuple(pair))
    # The DEM: 1 arcsecond in EPSG:4326 around the tile's footprint, half a pixel shifted as the real COGs.
    dem = root / "DEM.tif"
    if not dem.exists():
        xs = [X0, X0 + 10.0 * size, X0, X0 + 10.0 * size]
        ys = [Y0, Y0, Y0 - 10.0 * size, Y0 - 10.0 * size]
        lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(xs, ys)
        res = 1.0 / 3600.0
        west, north = np.floor(min(lon) * 100) / 100 - res / 2, np.ceil(max(lat) * 100) / 100 + res / 2
        width = int(np.ceil((max(lon) + 0.01 - west) / res))
        height = int(np.ceil((north - min(lat) + 0.01) / res))
        t = Affine(res, 0.0, west, 0.0, -res, north)
        _write(dem, 4326, t, width, height, "float32", None, pattern(2000, 5, "float32"))
    job = {
        "mgrs": MGRS, "day": "2020-06-14", "version": "02", "epsg": EPSG, "transform": list(t10)[:6],
        "width": size, "height": size, "s2_id": "S2B_MSIL2A_20200614T190411_R013_T10TET_FULL",
        "s2_bands": [hrefs[b] for b in S2_ORDER], "scl": str(scl), "s1": s1, "dem": [str(dem)],
    }  # fmt: skip
    done.write_text(json.dumps(job, indent=1))
    return job


# --------------------------------------------------------------------------------------------
# The STAC catalogue of the tile (scripts/bench_datacube.py --tile)
# --------------------------------------------------------------------------------------------


def _file_proj(path: str) -> tuple[int, dict[str, Any], tuple[float, float, float, float]]:
    """(EPSG, proj:shape + proj:transform + proj:bbox, bounds) of a GeoTIFF, read from the file."""
    import rasterio

    with rasterio.open(path) as ds:
        t, b = ds.transform, ds.bounds
        proj = {
            "proj:bbox": [b.left, b.bottom, b.right, b.top],
            "proj:shape": [ds.height, ds.width],
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        }
        return int(ds.crs.to_epsg()), proj, (b.left, b.bottom, b.right, b.top)


def _feature(collection: str, ident: str, epsg: int, bounds: tuple[float, float, float, float],
             props: dict[str, Any], assets: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    from pipeline.demo import datacube_archive as dca

    geometry, bbox = dca._polygon(dca._rect_lonlat(epsg, bounds))
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": ident, "geometry": geometry, "bbox": bbox,
        "properties": props, "links": dca._links(collection, ident), "assets": assets, "collection": collection,
    }  # fmt: skip


def _asset(href: str, title: str, **extra: Any) -> dict[str, Any]:
    from pipeline.demo import datacube_archive as dca

    return {"href": href, "type": dca.COG_TYPE, "roles": ["data"], "title": title, **extra}


def tile_items(job: dict[str, Any], dates: int) -> list[dict[str, Any]]:
    """``dates`` S2 items (each with its two S1 items) and the DEM item, all on ``job``'s files."""
    from pipeline.demo import datacube_archive as dca

    s2_assets: dict[str, Any] = {}
    for band, href in (*zip(S2_ORDER, job["s2_bands"], strict=True), ("SCL", job["scl"])):
        _, proj, _ = _file_proj(href)
        s2_assets[band] = _asset(href, band, gsd=proj["proj:transform"][0], **proj)
        if band != "SCL":
            s2_assets[band]["eo:bands"] = [{"name": band, "description": band}]
    size = int(job["width"])
    s2_bounds = (X0, Y0 - 10.0 * size, X0 + 10.0 * size, Y0)
    items: list[dict[str, Any]] = []
    for k, year in enumerate(dca.year_order(0)[:dates]):
        when = datetime(year, 6, 14 + k, 19, 4, 11, tzinfo=UTC)
        ident = f"S2B_MSIL2A_{when:%Y%m%dT%H%M%S}_R013_T{MGRS}_FULLTILE"
        props = {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z", "platform": "Sentinel-2B",
            "proj:epsg": EPSG, "instruments": ["msi"], "s2:mgrs_tile": MGRS, "constellation": "Sentinel 2",
            "eo:cloud_cover": 5.0, "s2:nodata_pixel_percentage": 0.0, "sat:orbit_state": "descending",
            "s2:processing_baseline": "02.12", "s2:product_type": "S2MSI2A",
        }  # fmt: skip
        items.append(_feature(dca.S2_COLLECTION, ident, EPSG, s2_bounds, props, s2_assets))
        # A day later; "B" 10 minutes before "A" (where they overlap, A is the later one and wins).
        for (vh, vv), minutes in zip(job["s1"], (0, 10), strict=True):
            t = when + timedelta(days=1, minutes=minutes)
            epsg, proj, bounds = _file_proj(vh)
            nodata = [{"nodata": dca.S1_NODATA, "data_type": "float32", "spatial_resolution": 10}]
            assets = {pol: _asset(href, pol.upper(), **{"raster:bands": nodata})
                      for pol, href in (("vh", vh), ("vv", vv))}  # fmt: skip
            props = {
                "datetime": dca._s1_time(t), "platform": "SENTINEL-1A", **proj, "proj:epsg": epsg,
                "sat:orbit_state": "descending", "sar:product_type": "GRD", "sar:polarizations": ["VV", "VH"],
                "constellation": "Sentinel-1", "sar:instrument_mode": "IW",
            }  # fmt: skip
            s1_id = f"S1A_IW_GRDH_1SDV_{t:%Y%m%dT%H%M%S}_{Path(vh).stem.removesuffix('_vh')}_rtc"
            items.append(_feature(dca.S1_COLLECTION, s1_id, epsg, bounds, props, assets))
    epsg, proj, bounds = _file_proj(job["dem"][0])
    props = {"gsd": 30, "datetime": "2021-04-22T00:00:00Z", "platform": "TanDEM-X", **proj, "proj:epsg": epsg}
    dem_id = "Copernicus_DSM_COG_10_FULLTILE_DEM"
    items.append(
        _feature(dca.DEM_COLLECTION, dem_id, epsg, bounds, props, {"data": _asset(job["dem"][0], "dem")})
    )
    return items


def fulltile_archive(cache: Path, size: int, chip_size: int, dates: int) -> SimpleNamespace:
    """The tile's files (``build_tile``, cached in ``cache/fulltile-SIZE``), its catalogue
    (``dates`` dates) and a one-row sample file, shaped as ``bench_datacube.py`` expects an archive."""
    from pipeline.demo import datacube_archive as dca

    root = cache / f"fulltile-{size}"
    job = build_tile(root, size)
    items = tile_items(job, dates)
    catalog = root / f"catalog-{dates}d"
    (catalog / "collections").mkdir(parents=True, exist_ok=True)
    collections = {}
    for coll in dca.COLLECTIONS:
        path = catalog / "collections" / f"{coll}.json"
        path.write_text(json.dumps(dca._collection_doc(coll, items), indent=1) + "\n")
        collections[coll] = path
    sample = root / "sample.fgb"
    if not sample.exists():
        dca.write_sample(sample, [(MGRS, dca.Grid(EPSG, X0, Y0, 10.0, size, size))])
    spec = SimpleNamespace(
        width=size, height=size, chip_size=chip_size, chips_x=size // chip_size, chips_y=size // chip_size
    )
    return SimpleNamespace(
        root=root, spec=spec, items=items, sample_path=sample, collection_paths=collections,
        manifest={"tiles": [MGRS], "skipped_years": {}}, dates=dates,
    )  # fmt: skip
