"""Synthetic Landsat Collection 2 scene bundles, shaped like the USGS bulk download's.

:func:`build_bundles` writes one ``<product_id>.tar`` (or ``.tar.gz`` / ``.tgz``) per
:class:`BundleSpec` under a directory. A bundle holds the members a real one holds, under
their real names:

- **Level-2 OLI/TIRS** (``LC08_L2SP_...``): ``SR_B1..SR_B7``, ``ST_B10``, ``ST_TRAD``,
  ``ST_URAD``, ``ST_DRAD``, ``ST_ATRAN``, ``ST_EMIS``, ``ST_EMSD``, ``ST_CDIST``, ``ST_QA``,
  ``SR_QA_AEROSOL``, ``QA_PIXEL``, ``QA_RADSAT``, ``ANG.txt``, ``MTL.txt``/``.xml``/``.json``;
- **Level-2 TM** (``LT05_L2SP_...``): ``SR_B1..SR_B5``, ``SR_B7``, ``ST_B6``, the ``ST_*``
  intermediates, ``SR_ATMOS_OPACITY``, ``SR_CLOUD_QA``, ``QA_PIXEL``, ``QA_RADSAT``, text members;
- **Level-1 OLI/TIRS** (``LC08_L1TP_...``): ``B1..B11`` (``B8`` on the 15 m grid,
  ``2 w - 1`` x ``2 h - 1``), ``QA_PIXEL``, ``QA_RADSAT``, ``VAA``/``VZA``/``SAA``/``SZA``.

Data types and nodata are Collection 2's (uint16 reflectance/DN and ``ST_B*`` with nodata 0,
int16 ``ST_*`` / ``SR_ATMOS_OPACITY`` with -9999, uint8 ``SR_QA_AEROSOL`` with 1, ``QA_PIXEL``
fill 1, ``QA_RADSAT`` without nodata). Rasters are tiled 256 x 256 DEFLATE GeoTIFFs on the
scene's UTM grid, reduced in size (``width`` x ``height`` 30 m pixels; the default
1,100 x 1,000 makes two overview levels of 512 x 512 blocks, 2 and 4). Pixels outside a tilted
parallelogram footprint (the shape of a real path/row) are fill; inside, smooth fields plus
noise, and the QA bands hold a few real bit patterns in 3 x 3 patches (so that an averaged
overview would show values that a sampled one cannot).

The MTL is written as ``MTL.txt`` (ODL), ``MTL.xml`` and ``MTL.json`` from one table, with
the real groups and keys: ``PRODUCT_CONTENTS`` (every file name), ``IMAGE_ATTRIBUTES`` (date,
scene centre time, cloud cover, sun angles, WRS path/row), ``PROJECTION_ATTRIBUTES`` (UTM
zone, shapes, corner coordinates in lat/lon and UTM, computed with pyproj),
``LEVEL2_PROCESSING_RECORD`` and the ``LEVEL2_SURFACE_*`` parameters, ``LEVEL1_PROCESSING_RECORD``,
``LEVEL1_MIN_MAX_*``, ``LEVEL1_RADIOMETRIC_RESCALING``, ``LEVEL1_THERMAL_CONSTANTS``,
``LEVEL1_PROJECTION_PARAMETERS``. ``ANG.txt`` carries ``RPC_BAND01``'s L1T size and image
corners (the footprint), which stactools-landsat turns into the OLI geometry.

Broken bundles for the error paths: ``omit`` leaves bands out (the MTL still lists them),
``truncate_at`` cuts the written file inside a member's data (:attr:`BuiltBundle.broken_member`
names it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.io import MemoryFile

from pipeline.ingest.bundle import SceneId, parse_product_id

OLI_L2_RASTERS = (
    "SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "ST_B10",
    "ST_TRAD", "ST_URAD", "ST_DRAD", "ST_ATRAN", "ST_EMIS", "ST_EMSD", "ST_CDIST",
    "SR_QA_AEROSOL", "ST_QA", "QA_PIXEL", "QA_RADSAT",
)  # fmt: skip
TM_L2_RASTERS = (
    "SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "ST_B6", "SR_B7",
    "ST_TRAD", "ST_URAD", "ST_DRAD", "ST_ATRAN", "ST_EMIS", "ST_EMSD", "ST_CDIST",
    "SR_ATMOS_OPACITY", "SR_CLOUD_QA", "ST_QA", "QA_PIXEL", "QA_RADSAT",
)  # fmt: skip
OLI_L1_RASTERS = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11",
    "QA_PIXEL", "QA_RADSAT", "VAA", "VZA", "SAA", "SZA",
)  # fmt: skip

# MTL PRODUCT_CONTENTS key of each raster file (FILE_NAME_{key}, DATA_TYPE_{key}).
FILE_KEYS = {
    **{f"SR_B{n}": f"BAND_{n}" for n in range(1, 8)},
    **{f"B{n}": f"BAND_{n}" for n in range(1, 12)},
    "ST_B10": "BAND_ST_B10",
    "ST_B6": "BAND_ST_B6",
    "ST_TRAD": "THERMAL_RADIANCE",
    "ST_URAD": "UPWELL_RADIANCE",
    "ST_DRAD": "DOWNWELL_RADIANCE",
    "ST_ATRAN": "ATMOSPHERIC_TRANSMITTANCE",
    "ST_EMIS": "EMISSIVITY",
    "ST_EMSD": "EMISSIVITY_STDEV",
    "ST_CDIST": "CLOUD_DISTANCE",
    "SR_ATMOS_OPACITY": "ATMOSPHERIC_OPACITY",
    "SR_QA_AEROSOL": "QUALITY_L2_AEROSOL",
    "SR_CLOUD_QA": "QUALITY_L2_SURFACE_REFLECTANCE_CLOUD",
    "ST_QA": "QUALITY_L2_SURFACE_TEMPERATURE",
    "QA_PIXEL": "QUALITY_L1_PIXEL",
    "QA_RADSAT": "QUALITY_L1_RADIOMETRIC_SATURATION",
    "VAA": "ANGLE_SENSOR_AZIMUTH_BAND_4",
    "VZA": "ANGLE_SENSOR_ZENITH_BAND_4",
    "SAA": "ANGLE_SOLAR_AZIMUTH_BAND_4",
    "SZA": "ANGLE_SOLAR_ZENITH_BAND_4",
}

# Real QA values: OLI clear land 21824, water 21952, high-confidence cloud 22280, shadow 23888,
# cirrus 54596; TM clear 5440, water 5504, cloud 5896, shadow 7440.
QA_PIXEL_VALUES = {"oli-tirs": (21824, 21952, 22280, 23888, 54596), "tm": (5440, 5504, 5896, 7440, 13664)}
AEROSOL_VALUES = (2, 66, 96, 160, 224, 228)
CLOUD_QA_VALUES = (0, 1, 2, 4, 8, 32)

# Footprint: the scene's four image corners as (line, sample) fractions, top/right/bottom/left,
# the tilt of a descending daytime WRS-2 scene (from a real ANG.txt's RPC_BAND01 corners).
FOOTPRINT = ((0.0006, 0.2147), (0.2063, 0.9994), (0.9994, 0.7835), (0.7897, 0.0001))

DEFAULT_WIDTH = 1100
DEFAULT_HEIGHT = 1000


@dataclass(frozen=True)
class BundleSpec:
    """One synthetic bundle. ``ul_x``/``ul_y``: UTM centre of the first 30 m pixel."""

    product_id: str
    scene_center_time: str
    cloud_cover: float
    cloud_cover_land: float
    sun_azimuth: float
    sun_elevation: float
    utm_zone: int
    ul_x: float
    ul_y: float
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    metadata: tuple[str, ...] = ("MTL.txt", "MTL.xml", "MTL.json", "ANG.txt")
    compression: str = "tar"  # tar, tar.gz or tgz
    omit: tuple[str, ...] = ()  # raster suffixes left out of the tar (still listed in the MTL)
    truncate_at: float | None = None  # cut the written file at this fraction of its bytes
    seed: int = 0

    @property
    def scene(self) -> SceneId:
        return parse_product_id(self.product_id)

    @property
    def filename(self) -> str:
        return f"{self.product_id}.{self.compression}"

    @property
    def datetime(self) -> dt.datetime:
        """The acquisition time the MTL states (DATE_ACQUIRED + SCENE_CENTER_TIME), UTC."""
        clock = dt.datetime.strptime(self.scene_center_time.rstrip("Z")[:15], "%H:%M:%S.%f").time()
        return dt.datetime.combine(self.scene.acquired, clock, tzinfo=dt.UTC)

    @property
    def epsg(self) -> int:
        return 32600 + self.utm_zone

    @property
    def raster_suffixes(self) -> tuple[str, ...]:
        scene = self.scene
        if scene.level == "level-1":
            return OLI_L1_RASTERS
        return OLI_L2_RASTERS if scene.sensor == "oli-tirs" else TM_L2_RASTERS

    def grid_shape(self, suffix: str) -> tuple[int, int]:
        """(height, width) of a raster: the pan band is on the 15 m grid, ``2 n - 1`` pixels."""
        if self.scene.level == "level-1" and suffix == "B8":
            return 2 * self.height - 1, 2 * self.width - 1
        return self.height, self.width

    def transform(self, suffix: str) -> list[float]:
        """GDAL geotransform as the 6 affine coefficients (a, b, c, d, e, f)."""
        gsd = 15.0 if self.grid_shape(suffix) != (self.height, self.width) else 30.0
        return [gsd, 0.0, self.ul_x - gsd / 2, 0.0, -gsd, self.ul_y + gsd / 2]


@dataclass(frozen=True)
class BuiltBundle:
    spec: BundleSpec
    path: str
    members: tuple[str, ...]  # member names in the tar (before any truncation)
    broken_member: str | None  # the member a truncated / incomplete bundle's error must name


def demo_specs(
    width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT, bad_size: int = 300
) -> list[BundleSpec]:
    """The demo set: Level-2 OLI (``.tar``), Level-2 TM (``.tar.gz``, no ``MTL.json``),
    Level-1 OLI (``.tar``, ``MTL.txt`` and ``.json`` but no ``MTL.xml``), a truncated tar and
    a bundle without ``SR_B4`` (both ``bad_size`` x ``bad_size``)."""
    oli_l2 = BundleSpec(
        product_id="LC08_L2SP_047027_20201204_20210313_02_T1",
        scene_center_time="19:02:11.1944860Z",
        cloud_cover=1.55,
        cloud_cover_land=1.90,
        sun_azimuth=164.91405951,
        sun_elevation=18.80722985,
        utm_zone=10,
        ul_x=353700.0,
        ul_y=5374200.0,
        width=width,
        height=height,
        seed=1,
    )
    tm_l2 = BundleSpec(
        product_id="LT05_L2SP_010020_19860219_20200918_02_T1",
        scene_center_time="14:36:57.5930380Z",
        cloud_cover=53.0,
        cloud_cover_land=42.0,
        sun_azimuth=153.18242297,
        sun_elevation=18.19826473,
        utm_zone=20,
        ul_x=459600.0,
        ul_y=6465000.0,
        width=width,
        height=height,
        metadata=("MTL.txt", "MTL.xml", "ANG.txt"),
        compression="tar.gz",
        seed=2,
    )
    oli_l1 = BundleSpec(
        product_id="LC08_L1TP_047027_20220301_20220309_02_T1",
        scene_center_time="19:01:52.6003640Z",
        cloud_cover=12.38,
        cloud_cover_land=14.02,
        sun_azimuth=151.42114861,
        sun_elevation=33.12651947,
        utm_zone=10,
        ul_x=353400.0,
        ul_y=5374500.0,
        width=width,
        height=height,
        metadata=("MTL.txt", "MTL.json", "ANG.txt"),
        seed=3,
    )
    truncated = replace(
        oli_l2, product_id="LC08_L2SP_047028_20201204_20210313_02_T1", ul_y=5218200.0,
        width=bad_size, height=bad_size, truncate_at=0.6, seed=4,
    )  # fmt: skip
    missing_red = replace(
        oli_l2, product_id="LC08_L2SP_046027_20201213_20210313_02_T1", ul_x=473700.0,
        width=bad_size, height=bad_size, omit=("SR_B4",), seed=5,
    )  # fmt: skip
    return [oli_l2, tm_l2, oli_l1, truncated, missing_red]


# ---------------------------------------------------------------- rasters


def _footprint_mask(height: int, width: int) -> np.ndarray:
    """True inside the tilted parallelogram footprint (a convex polygon)."""
    rows = np.arange(height, dtype=np.float64)[:, None] / max(height - 1, 1)
    cols = np.arange(width, dtype=np.float64)[None, :] / max(width - 1, 1)
    inside = np.ones((height, width), dtype=bool)
    for (r0, c0), (r1, c1) in zip(FOOTPRINT, FOOTPRINT[1:] + FOOTPRINT[:1], strict=True):
        inside &= (c1 - c0) * (rows - r0) - (r1 - r0) * (cols - c0) >= 0
    return inside


def _smooth_field(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth 0..1 field: a few products of sinusoids (cheap separable terms)."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    field = np.zeros((height, width), dtype=np.float32)
    for _ in range(4):
        fy, fx = rng.uniform(1, 9, size=2)
        py, px = rng.uniform(0, 2 * math.pi, size=2)
        field += np.sin(2 * math.pi * fy * y + py) * np.cos(2 * math.pi * fx * x + px)
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def _patches(
    height: int, width: int, values: Sequence[int], rng: np.random.Generator, size: int = 3
) -> np.ndarray:
    """Categorical 3 x 3 patches of ``values``."""
    cells = rng.integers(0, len(values), size=(height // size + 1, width // size + 1))
    full = np.repeat(np.repeat(cells, size, axis=0), size, axis=1)[:height, :width]
    return np.asarray(values)[full]


def _band_profile(suffix: str) -> tuple[str, float | None]:
    """(dtype, nodata) of a Collection 2 raster."""
    if suffix in ("QA_PIXEL",):
        return "uint16", 1
    if suffix == "QA_RADSAT":
        return "uint16", None
    if suffix == "SR_QA_AEROSOL":
        return "uint8", 1
    if suffix == "SR_CLOUD_QA":
        return "uint8", None
    if suffix in ("VAA", "VZA", "SAA", "SZA"):
        return "int16", None
    if (suffix.startswith("ST_") and not suffix.startswith("ST_B")) or suffix == "SR_ATMOS_OPACITY":
        return "int16", -9999
    return "uint16", 0


def _render(spec: BundleSpec, suffix: str, rng: np.random.Generator) -> np.ndarray:
    height, width = spec.grid_shape(suffix)
    inside = _footprint_mask(height, width)
    sensor = spec.scene.sensor
    dtype, nodata = _band_profile(suffix)
    field = _smooth_field(height, width, rng)
    noise = rng.normal(0.0, 1.0, size=(height, width)).astype(np.float32)
    if suffix == "QA_PIXEL":
        values = _patches(height, width, QA_PIXEL_VALUES[sensor], rng)
    elif suffix == "QA_RADSAT":
        values = np.where(
            rng.random((height, width)) < 0.02, 1 << rng.integers(0, 8, size=(height, width)), 0
        )
    elif suffix == "SR_QA_AEROSOL":
        values = _patches(height, width, AEROSOL_VALUES, rng)
    elif suffix == "SR_CLOUD_QA":
        values = _patches(height, width, CLOUD_QA_VALUES, rng)
    elif suffix in ("VAA", "VZA", "SAA", "SZA"):
        base = {"VAA": -9800.0, "VZA": 200.0, "SAA": 15000.0, "SZA": 5600.0}[suffix]
        values = base + 600.0 * field
    elif suffix.startswith("SR_B"):
        values = (0.03 + 0.35 * field) / 2.75e-5 + 7273 + 120 * noise  # reflectance 0.03..0.38
    elif suffix.startswith("ST_B"):
        values = (265.0 + 30.0 * field - 149.0) / 0.00341802 + 60 * noise  # 265..295 K
    elif suffix.startswith("ST_") or suffix == "SR_ATMOS_OPACITY":
        values = 500 + 8000 * field + 40 * noise
    else:  # Level-1 DN
        thermal = suffix in ("B10", "B11")
        values = (20000 + 6000 * field if thermal else 6500 + 14000 * field) + 150 * noise
    info = np.iinfo(np.dtype(dtype))
    data: np.ndarray = np.clip(np.rint(values), info.min + 2, info.max).astype(dtype)
    fill = nodata if nodata is not None else (1 if suffix == "QA_PIXEL" else 0)
    data[~inside] = fill
    return data


def _geotiff_bytes(spec: BundleSpec, suffix: str, data: np.ndarray) -> bytes:
    dtype, nodata = _band_profile(suffix)
    height, width = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": dtype,
        "crs": f"EPSG:{spec.epsg}",
        "transform": Affine(*spec.transform(suffix)),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "DEFLATE",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with MemoryFile() as memory:
        with memory.open(**profile) as out:
            out.write(data, 1)
        return bytes(memory.read())


# ---------------------------------------------------------------- MTL and ANG

Entry = tuple[str, str, bool]  # key, value, quoted in ODL
Group = tuple[str, list[Entry]]


def _q(key: str, value: str) -> Entry:
    return (key, value, True)


def _n(key: str, value: float | str) -> Entry:
    return (key, str(value), False)


def _pairs(
    pattern: str, bands: Sequence[int], first: tuple[str, object], second: tuple[str, object]
) -> list[Entry]:
    """``pattern.format(kind, band)`` entries, the two kinds of each band together (as USGS orders them)."""
    return [_n(pattern.format(kind, n), str(value)) for n in bands for kind, value in (first, second)]


def _corners(spec: BundleSpec) -> dict[str, tuple[float, float, float, float]]:
    """Corner name -> (x, y, lat, lon) of the 30 m grid's corner pixel centres."""
    right = spec.ul_x + (spec.width - 1) * 30.0
    bottom = spec.ul_y - (spec.height - 1) * 30.0
    to_lonlat = Transformer.from_crs(f"EPSG:{spec.epsg}", "EPSG:4326", always_xy=True)
    corners = {}
    for name, (x, y) in {
        "UL": (spec.ul_x, spec.ul_y),
        "UR": (right, spec.ul_y),
        "LL": (spec.ul_x, bottom),
        "LR": (right, bottom),
    }.items():
        lon, lat = to_lonlat.transform(x, y)
        corners[name] = (x, y, lat, lon)
    return corners


def _l1_product_id(scene: SceneId) -> str:
    parts = scene.product_id.split("_")
    return "_".join([parts[0], "L1TP", *parts[2:]])


def _scene_id(scene: SceneId) -> str:
    """LANDSAT_SCENE_ID: LXSPPPRRRYYYYDDDGSIVV."""
    station = "LGN" if scene.sensor == "oli-tirs" else "PAC"
    return (
        f"L{scene.sensor_letter}{scene.satellite % 10}{scene.path:03d}{scene.row:03d}"
        f"{scene.acquired.year}{scene.acquired.timetuple().tm_yday:03d}{station}00"
    )


def _l1_rasters(spec: BundleSpec) -> tuple[str, ...]:
    """The Level-1 product's rasters (listed in LEVEL1_PROCESSING_RECORD)."""
    if spec.scene.sensor == "oli-tirs":
        return OLI_L1_RASTERS
    return ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "QA_PIXEL", "QA_RADSAT", "VAA", "VZA", "SAA", "SZA")


def mtl_groups(spec: BundleSpec) -> list[Group]:
    """The MTL as ordered groups of (key, value, quoted) entries."""
    scene = spec.scene
    oli = scene.sensor == "oli-tirs"
    level2 = scene.level == "level-2"
    pid = scene.product_id
    l1_pid = _l1_product_id(scene)
    doi_l2 = "https://doi.org/10.5066/P9OGBGM6" if oli else "https://doi.org/10.5066/P9IAXOVV"
    doi_l1 = "https://doi.org/10.5066/P975CC9B" if oli else "https://doi.org/10.5066/P918ROHC"
    rasters = spec.raster_suffixes
    product_keys = [(FILE_KEYS[s], s) for s in rasters]
    contents: list[Entry] = [
        _q("ORIGIN", "Image courtesy of the U.S. Geological Survey"),
        _q("DIGITAL_OBJECT_IDENTIFIER", doi_l2 if level2 else doi_l1),
        _q("LANDSAT_PRODUCT_ID", pid),
        _q("PROCESSING_LEVEL", scene.processing_level),
        _n("COLLECTION_NUMBER", "02"),
        _q("COLLECTION_CATEGORY", scene.collection_category),
        _q("OUTPUT_FORMAT", "GEOTIFF"),
        *[_q(f"FILE_NAME_{key}", f"{pid}_{suffix}.TIF") for key, suffix in product_keys],
        _q("FILE_NAME_ANGLE_COEFFICIENT", f"{pid}_ANG.txt"),
        _q("FILE_NAME_METADATA_ODL", f"{pid}_MTL.txt"),
        _q("FILE_NAME_METADATA_XML", f"{pid}_MTL.xml"),
        *[_q(f"DATA_TYPE_{key}", _band_profile(suffix)[0].upper()) for key, suffix in product_keys],
    ]
    n_bands = 11 if oli else 7
    image: list[Entry] = [
        _q("SPACECRAFT_ID", f"LANDSAT_{scene.satellite}"),
        _q("SENSOR_ID", "OLI_TIRS" if oli else "TM"),
        _n("WRS_TYPE", 2),
        _n("WRS_PATH", scene.path),
        _n("WRS_ROW", scene.row),
    ]
    if oli:
        image += [
            _q("NADIR_OFFNADIR", "NADIR"),
            _n("TARGET_WRS_PATH", scene.path),
            _n("TARGET_WRS_ROW", scene.row),
        ]
    image += [
        _n("DATE_ACQUIRED", scene.acquired.isoformat()),
        _q("SCENE_CENTER_TIME", spec.scene_center_time),
        _q("STATION_ID", "LGN" if oli else "PAC"),
        _n("CLOUD_COVER", f"{spec.cloud_cover:.2f}"),
        _n("CLOUD_COVER_LAND", f"{spec.cloud_cover_land:.2f}"),
    ]
    image += [_n("IMAGE_QUALITY_OLI", 9), _n("IMAGE_QUALITY_TIRS", 9)] if oli else [_n("IMAGE_QUALITY", 9)]
    image += [_q(f"SATURATION_BAND_{n}", "N") for n in range(1, 10 if oli else 8)]
    if oli:
        image.append(_n("ROLL_ANGLE", "-0.001"))
    image += [
        _n("SUN_AZIMUTH", f"{spec.sun_azimuth:.8f}"),
        _n("SUN_ELEVATION", f"{spec.sun_elevation:.8f}"),
        _n("EARTH_SUN_DISTANCE", "0.9854607"),
    ]
    if oli:
        image += [
            _q("TRUNCATION_OLI", "UPPER"),
            _q("TIRS_SSM_MODEL", "FINAL"),
            _q("TIRS_SSM_POSITION_STATUS", "ESTIMATED"),
        ]
    else:
        image += [_q("SENSOR_MODE", "SAM"), _q("SENSOR_MODE_SLC", "ON"), _q("SENSOR_ANOMALIES", "NONE")]
    projection: list[Entry] = [
        _q("MAP_PROJECTION", "UTM"),
        _q("DATUM", "WGS84"),
        _q("ELLIPSOID", "WGS84"),
        _n("UTM_ZONE", spec.utm_zone),
    ]
    if not level2 and oli:
        projection.append(_n("GRID_CELL_SIZE_PANCHROMATIC", "15.00"))
    projection += [_n("GRID_CELL_SIZE_REFLECTIVE", "30.00"), _n("GRID_CELL_SIZE_THERMAL", "30.00")]
    if not level2 and oli:
        projection += [
            _n("PANCHROMATIC_LINES", 2 * spec.height - 1),
            _n("PANCHROMATIC_SAMPLES", 2 * spec.width - 1),
        ]
    projection += [
        _n("REFLECTIVE_LINES", spec.height),
        _n("REFLECTIVE_SAMPLES", spec.width),
        _n("THERMAL_LINES", spec.height),
        _n("THERMAL_SAMPLES", spec.width),
        _q("ORIENTATION", "NORTH_UP"),
    ]
    corners = _corners(spec)
    for name, (_, _, lat, lon) in corners.items():
        projection += [
            _n(f"CORNER_{name}_LAT_PRODUCT", f"{lat:.5f}"),
            _n(f"CORNER_{name}_LON_PRODUCT", f"{lon:.5f}"),
        ]
    for name, (x, y, _, _) in corners.items():
        projection += [
            _n(f"CORNER_{name}_PROJECTION_X_PRODUCT", f"{x:.3f}"),
            _n(f"CORNER_{name}_PROJECTION_Y_PRODUCT", f"{y:.3f}"),
        ]
    generated_l1 = f"{scene.processed.isoformat()}T05:35:53Z"
    generated_l2 = f"{scene.processed.isoformat()}T05:55:12Z"
    groups: list[Group] = [
        ("PRODUCT_CONTENTS", contents),
        ("IMAGE_ATTRIBUTES", image),
        ("PROJECTION_ATTRIBUTES", projection),
    ]
    if level2:
        st_band = "ST_B10" if oli else "ST_B6"
        sr_bands = [int(s[4:]) for s in rasters if s.startswith("SR_B")]
        groups.append((
            "LEVEL2_PROCESSING_RECORD",
            [
                _q("ORIGIN", "Image courtesy of the U.S. Geological Survey"),
                _q("DIGITAL_OBJECT_IDENTIFIER", doi_l2),
                _q("REQUEST_ID", "L2"),
                _q("LANDSAT_PRODUCT_ID", pid),
                _q("PROCESSING_LEVEL", scene.processing_level),
                _q("OUTPUT_FORMAT", "GEOTIFF"),
                _q("DATE_PRODUCT_GENERATED", generated_l2),
                _q("PROCESSING_SOFTWARE_VERSION", "LPGS_15.4.0"),
                _q("ALGORITHM_SOURCE_SURFACE_REFLECTANCE", "LaSRC_1.5.0" if oli else "LEDAPS_3.4.0"),
                _q("DATA_SOURCE_OZONE", "MODIS" if oli else "TOMS"),
                _q("DATA_SOURCE_PRESSURE", "Calculated" if oli else "NCEP"),
                _q("DATA_SOURCE_WATER_VAPOR", "MODIS" if oli else "NCEP"),
                _q("DATA_SOURCE_AIR_TEMPERATURE", "MODIS" if oli else "NCEP"),
                _q("ALGORITHM_SOURCE_SURFACE_TEMPERATURE", "st_1.3.0"),
                _q("DATA_SOURCE_REANALYSIS", "GEOS-5 FP-IT" if oli else "MERRA-2"),
            ],
        ))  # fmt: skip
        reflectance: list[Entry] = []
        for n in sr_bands:
            reflectance += [
                _n(f"REFLECTANCE_MAXIMUM_BAND_{n}", "1.602213"),
                _n(f"REFLECTANCE_MINIMUM_BAND_{n}", "-0.199972"),
            ]
        for n in sr_bands:
            reflectance += [_n(f"QUANTIZE_CAL_MAX_BAND_{n}", 65535), _n(f"QUANTIZE_CAL_MIN_BAND_{n}", 1)]
        reflectance += [_n(f"REFLECTANCE_MULT_BAND_{n}", "2.75e-05") for n in sr_bands]
        reflectance += [_n(f"REFLECTANCE_ADD_BAND_{n}", "-0.2") for n in sr_bands]
        groups.append(("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS", reflectance))
        groups.append((
            "LEVEL2_SURFACE_TEMPERATURE_PARAMETERS",
            [
                _n(f"TEMPERATURE_MAXIMUM_BAND_{st_band}", "372.999941"),
                _n(f"TEMPERATURE_MINIMUM_BAND_{st_band}", "149.003418"),
                _n(f"QUANTIZE_CAL_MAXIMUM_BAND_{st_band}", 65535),
                _n(f"QUANTIZE_CAL_MINIMUM_BAND_{st_band}", 1),
                _n(f"TEMPERATURE_MULT_BAND_{st_band}", "0.00341802"),
                _n(f"TEMPERATURE_ADD_BAND_{st_band}", "149.0"),
            ],
        ))  # fmt: skip
    l1_files = [(FILE_KEYS[s], s) for s in _l1_rasters(spec)]
    groups.append((
        "LEVEL1_PROCESSING_RECORD",
        [
            _q("ORIGIN", "Image courtesy of the U.S. Geological Survey"),
            _q("DIGITAL_OBJECT_IDENTIFIER", doi_l1),
            _q("REQUEST_ID", "L2" if level2 else "1885324_00001"),
            _q("LANDSAT_SCENE_ID", _scene_id(scene)),
            _q("LANDSAT_PRODUCT_ID", l1_pid),
            _q("PROCESSING_LEVEL", "L1TP"),
            _q("COLLECTION_CATEGORY", scene.collection_category),
            _q("OUTPUT_FORMAT", "GEOTIFF"),
            _q("DATE_PRODUCT_GENERATED", generated_l1),
            _q("PROCESSING_SOFTWARE_VERSION", "LPGS_15.4.0"),
            *[_q(f"FILE_NAME_{key}", f"{l1_pid}_{suffix}.TIF") for key, suffix in l1_files],
            _q("FILE_NAME_ANGLE_COEFFICIENT", f"{l1_pid}_ANG.txt"),
            _q("FILE_NAME_METADATA_ODL", f"{l1_pid}_MTL.txt"),
            _q("FILE_NAME_METADATA_XML", f"{l1_pid}_MTL.xml"),
            _q("DATA_SOURCE_ELEVATION", "GLS2000"),
            _n("GROUND_CONTROL_POINTS_VERSION", 5),
            _n("GROUND_CONTROL_POINTS_MODEL", 839),
            _n("GEOMETRIC_RMSE_MODEL", "9.026"),
            _n("GEOMETRIC_RMSE_MODEL_Y", "7.842"),
            _n("GEOMETRIC_RMSE_MODEL_X", "4.471"),
        ],
    ))  # fmt: skip
    reflective = [n for n in range(1, n_bands + 1) if n not in ((10, 11) if oli else (6,))]
    all_bands = range(1, n_bands + 1)
    cal_max = 65535 if oli else 255
    groups.append(
        (
            "LEVEL1_MIN_MAX_RADIANCE",
            _pairs("RADIANCE_{}_BAND_{}", all_bands, ("MAXIMUM", "622.76880"), ("MINIMUM", "-51.42845")),
        )
    )
    groups.append(
        (
            "LEVEL1_MIN_MAX_REFLECTANCE",
            _pairs("REFLECTANCE_{}_BAND_{}", reflective, ("MAXIMUM", "1.210700"), ("MINIMUM", "-0.099980")),
        )
    )
    groups.append(
        (
            "LEVEL1_MIN_MAX_PIXEL_VALUE",
            _pairs("QUANTIZE_CAL_{}_BAND_{}", all_bands, ("MAX", cal_max), ("MIN", 1)),
        )
    )
    rescaling: list[Entry] = [
        _n(f"RADIANCE_MULT_BAND_{n}", f"{0.0102880 + 0.0001 * n:.4E}") for n in range(1, n_bands + 1)
    ]
    rescaling += [_n(f"RADIANCE_ADD_BAND_{n}", f"{-51.43874 + 0.5 * n:.5f}") for n in range(1, n_bands + 1)]
    rescaling += [_n(f"REFLECTANCE_MULT_BAND_{n}", "2.0000E-05") for n in reflective]
    rescaling += [_n(f"REFLECTANCE_ADD_BAND_{n}", "-0.100000") for n in reflective]
    groups.append(("LEVEL1_RADIOMETRIC_RESCALING", rescaling))
    thermal = (
        [(10, "774.8853", "1321.0789"), (11, "480.8883", "1201.1442")] if oli else [(6, "607.76", "1260.56")]
    )
    groups.append((
        "LEVEL1_THERMAL_CONSTANTS",
        [entry for n, k1, k2 in thermal for entry in (_n(f"K1_CONSTANT_BAND_{n}", k1), _n(f"K2_CONSTANT_BAND_{n}", k2))],
    ))  # fmt: skip
    l1_projection: list[Entry] = [
        _q("MAP_PROJECTION", "UTM"),
        _q("DATUM", "WGS84"),
        _q("ELLIPSOID", "WGS84"),
        _n("UTM_ZONE", spec.utm_zone),
    ]
    if oli:
        l1_projection.append(_n("GRID_CELL_SIZE_PANCHROMATIC", "15.00"))
    l1_projection += [
        _n("GRID_CELL_SIZE_REFLECTIVE", "30.00"),
        _n("GRID_CELL_SIZE_THERMAL", "30.00"),
        _q("ORIENTATION", "NORTH_UP"),
        _q("RESAMPLING_OPTION", "CUBIC_CONVOLUTION"),
    ]
    groups.append(("LEVEL1_PROJECTION_PARAMETERS", l1_projection))
    return groups


def mtl_txt(groups: list[Group]) -> str:
    """ODL text, as USGS writes it: ``GROUP = X`` ... ``END_GROUP = X``, then ``END``."""
    lines = ["GROUP = LANDSAT_METADATA_FILE"]
    for name, entries in groups:
        lines.append(f"  GROUP = {name}")
        lines += [
            f'    {key} = "{value}"' if quoted else f"    {key} = {value}" for key, value, quoted in entries
        ]
        lines.append(f"  END_GROUP = {name}")
    lines += ["END_GROUP = LANDSAT_METADATA_FILE", "END", ""]
    return "\n".join(lines)


def mtl_xml(groups: list[Group]) -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<LANDSAT_METADATA_FILE>"]
    for name, entries in groups:
        lines.append(f"  <{name}>")
        lines += [f"    <{key}>{value}</{key}>" for key, value, _ in entries]
        lines.append(f"  </{name}>")
    lines += ["</LANDSAT_METADATA_FILE>", ""]
    return "\n".join(lines)


def mtl_json(groups: list[Group]) -> str:
    return json.dumps(
        {
            "LANDSAT_METADATA_FILE": {
                name: {key: value for key, value, _ in entries} for name, entries in groups
            }
        }
    )


def ang_txt(spec: BundleSpec) -> str:
    """An angle coefficient file with the groups stactools reads (``RPC_BAND01`` corners)."""
    scene = spec.scene
    h, w = spec.height, spec.width
    lines_ = ", ".join(f"{r * (h - 1):11.6f}" for r, _ in FOOTPRINT)
    samps = ", ".join(f"{c * (w - 1):11.6f}" for _, c in FOOTPRINT)
    corners = _corners(spec)
    corner_lines = [
        f"  {n}_CORNER = ({corners[n][0]:12.3f}, {corners[n][1]:13.3f})" for n in ("UL", "UR", "LL", "LR")
    ]
    return "\n".join([
        "GROUP = FILE_HEADER",
        f'  LANDSAT_SCENE_ID = "{_scene_id(scene)}"',
        f'  SPACECRAFT_ID = "LANDSAT_{scene.satellite}"',
        f"  NUMBER_OF_BANDS = {11 if scene.sensor == 'oli-tirs' else 7}",
        "END_GROUP = FILE_HEADER",
        "GROUP = PROJECTION",
        "  ELLIPSOID_AXES = (6378137.000000, 6356752.314200)",
        '  MAP_PROJECTION = "UTM"',
        '  PROJECTION_UNITS = "METERS"',
        '  DATUM = "WGS84"',
        '  ELLIPSOID = "WGS84"',
        f"  UTM_ZONE = {spec.utm_zone}",
        *corner_lines,
        "END_GROUP = PROJECTION",
        "GROUP = RPC_BAND01",
        "  BAND01_NUMBER_OF_SCAS = 14",
        f"  BAND01_NUM_L1T_LINES = {h}",
        f"  BAND01_NUM_L1T_SAMPS = {w}",
        f"  BAND01_L1T_IMAGE_CORNER_LINES = ({lines_})",
        f"  BAND01_L1T_IMAGE_CORNER_SAMPS = ({samps})",
        "  BAND01_PIXEL_SIZE = 30.000",
        "END_GROUP = RPC_BAND01",
        "END",
        "",
    ])  # fmt: skip


# ---------------------------------------------------------------- tar


def bundle_members(spec: BundleSpec) -> list[tuple[str, bytes]]:
    """(member name, bytes) of the bundle, in name order (as the USGS tars list them)."""
    rng = np.random.default_rng(spec.seed)
    pid = spec.product_id
    members: list[tuple[str, bytes]] = []
    for suffix in spec.raster_suffixes:
        data = _render(spec, suffix, rng)
        if suffix not in spec.omit:
            members.append((f"{pid}_{suffix}.TIF", _geotiff_bytes(spec, suffix, data)))
    groups = mtl_groups(spec)
    texts = {
        "MTL.txt": mtl_txt(groups),
        "MTL.xml": mtl_xml(groups),
        "MTL.json": mtl_json(groups),
        "ANG.txt": ang_txt(spec),
    }
    members += [(f"{pid}_{tail}", texts[tail].encode()) for tail in spec.metadata]
    return sorted(members)


def _tar_bytes(members: list[tuple[str, bytes]], compression: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w" if compression == "tar" else "w:gz", format=tarfile.USTAR_FORMAT
    ) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _cut_inside_member(tar: bytes, fraction: float) -> tuple[int, str]:
    """A cut in the middle of the data of the member that holds ``fraction`` of the tar's bytes."""
    target = int(len(tar) * fraction)
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        for info in archive:
            if info.offset <= target < info.offset_data + info.size:
                return info.offset_data + info.size // 2, info.name
    raise ValueError(f"no member at byte {target}")


def build_bundle(root: str, spec: BundleSpec) -> BuiltBundle:
    members = bundle_members(spec)
    data = _tar_bytes(members, spec.compression)
    broken: str | None = None
    if spec.truncate_at is not None:
        if spec.compression != "tar":
            raise ValueError("truncate_at is for uncompressed tars (the member cut is computed from offsets)")
        cut, broken = _cut_inside_member(data, spec.truncate_at)
        data = data[:cut]
    elif spec.omit:
        broken = f"{spec.product_id}_{spec.omit[0]}.TIF"
    path = os.path.join(root, spec.filename)
    os.makedirs(root, exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    return BuiltBundle(spec=spec, path=path, members=tuple(name for name, _ in members), broken_member=broken)


def build_bundles(root: str, specs: Sequence[BundleSpec] | None = None) -> list[BuiltBundle]:
    """Write every bundle of ``specs`` (default :func:`demo_specs`) under ``root``."""
    return [build_bundle(root, spec) for spec in (specs if specs is not None else demo_specs())]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic Landsat Collection 2 scene bundles.")
    parser.add_argument("root", help="directory to write the bundles into")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="30 m pixels per line")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT, help="lines")
    args = parser.parse_args(argv)
    for built in build_bundles(args.root, demo_specs(args.width, args.height)):
        note = f" (broken: {built.broken_member})" if built.broken_member else ""
        print(f"{built.path}: {os.path.getsize(built.path):,} bytes{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
