"""A scene's STAC Item, as stactools-landsat builds it, pointing at the scene's COGs.

The item comes from the bundle's ``MTL.xml`` (``MTL.txt`` when the bundle has no XML) through
:func:`stactools.landsat.stac.create_item_from_mtl_metadata`, the function behind
stactools-landsat 0.5's ``create_item``: id without the processing date, eo / raster / view /
projection / landsat / classification / grid / scientific extensions, asset keys, roles,
``eo:bands`` and ``raster:bands`` as it gives them. What this module adds or changes:

- **hrefs**: the ``base_href`` stactools appends ``_{SUFFIX}.TIF`` (and ``_MTL.txt``,
  ``_thumb_small.jpeg`` ...) to is the scene's directory under ``dest`` (:mod:`.layout`), so
  every asset names the COG, the metadata copy or the thumbnail this workflow writes.
  stactools' ``thumbnail`` and ``reduced_resolution_browse`` assets already name
  ``_thumb_small.jpeg`` / ``_thumb_large.jpeg``: they stay, and :mod:`.thumbs` writes them.
- **no network**: the USGS geometry lookup (a STAC API query) is off; the footprint is what
  stactools derives offline: from ``ANG.txt`` for OLI/TIRS (read from the bundle through a
  temporary copy, the one file stactools insists on opening by href), the MTL's bbox for the
  other sensors.
- **only files the bundle has**: stactools lists every asset a product *can* have (``MTL.json``,
  ``SR_ATMOS_OPACITY`` ...); an asset whose file is not a member of the bundle is dropped.
- **Level-1 OLI/TIRS, ETM+ and TM**: stactools-landsat covers Level-1 for MSS only (for the
  others it would list the Level-2 ``SR_B*`` files). The item is built by the same function,
  then its band assets are replaced by the Level-1 ones under the asset keys of LandsatLook's
  ``landsat-c2l1`` collection (:data:`LEVEL1_BANDS`: ``coastal`` ... ``swir22``, ``pan``,
  ``cirrus``, ``lwir11``/``lwir12`` (TM/ETM ``lwir``, ETM ``lwir_high``), ``qa_pixel``,
  ``qa_radsat``, ``VAA``/``VZA``/``SAA``/``SZA``, ``MTL.txt``/``MTL.xml``/``MTL.json``/``ANG.txt``),
  with ``eo:bands`` from stactools' own fragments where it has the band, ``raster:bands`` with
  the MTL's radiance rescaling as scale/offset (what stactools does for MSS), the panchromatic
  band's own ``proj:shape``/``proj:transform`` and the Level-1 DOI the MTL states.
- **created**: the MTL's ``DATE_PRODUCT_GENERATED`` (:func:`product_generated`), not the
  time of the run: the same bundle always gives byte-identical item JSON.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterBand, RasterExtension
from pystac.extensions.scientific import ScientificExtension
from stactools.core.io.xml import XmlElement
from stactools.landsat.ang_metadata import AngError
from stactools.landsat.constants import SENSORS, Sensor
from stactools.landsat.fragments import Fragments
from stactools.landsat.mtl_metadata import MTLError, MtlMetadata
from stactools.landsat.stac import create_item_from_mtl_metadata

from pipeline.ingest import layout
from pipeline.ingest.bundle import Bundle, BundleError, Member, SceneId, preferred_mtl, text_bytes
from pipeline.scratch import temporary_dir

RADIANCE_UNIT = "watt/steradian/square_meter/micrometer"


@dataclass(frozen=True)
class Level1Band:
    """One Level-1 raster asset: LandsatLook key, file suffix, title, eo band (or None)."""

    key: str
    suffix: str
    title: str
    eo_band: dict[str, Any] | None = None
    grid: str = "reflective"  # reflective, thermal, pan or angle


def _eo(name: str, common_name: str, description: str, center: float, fwhm: float) -> dict[str, Any]:
    return {
        "name": name,
        "common_name": common_name,
        "description": description,
        "center_wavelength": center,
        "full_width_half_max": fwhm,
    }


_ANGLES = (
    Level1Band("VAA", "VAA", "View Azimuth Angle Band", grid="angle"),
    Level1Band("VZA", "VZA", "View Zenith Angle Band", grid="angle"),
    Level1Band("SAA", "SAA", "Solar Azimuth Angle Band", grid="angle"),
    Level1Band("SZA", "SZA", "Solar Zenith Angle Band", grid="angle"),
)

# eo:bands stactools-landsat has no fragment for (its fragments are the Level-2 bands).
_OLI_PAN = _eo("OLI_B8", "pan", "Panchromatic", 0.59, 0.18)
_OLI_CIRRUS = _eo("OLI_B9", "cirrus", "Cirrus", 1.37, 0.02)
_TIRS_B11 = _eo("TIRS_B11", "lwir12", "Long-wave infrared", 12.0, 1.01)
_ETM_PAN = _eo("ETM_B8", "pan", "Panchromatic", 0.71, 0.38)

LEVEL1_BANDS: dict[str, tuple[Level1Band, ...]] = {
    "oli-tirs": (
        Level1Band("coastal", "B1", "Coastal/Aerosol Band (B1)"),
        Level1Band("blue", "B2", "Blue Band (B2)"),
        Level1Band("green", "B3", "Green Band (B3)"),
        Level1Band("red", "B4", "Red Band (B4)"),
        Level1Band("nir08", "B5", "Near Infrared Band 0.8 (B5)"),
        Level1Band("swir16", "B6", "Short-wave Infrared Band 1.6 (B6)"),
        Level1Band("swir22", "B7", "Short-wave Infrared Band 2.2 (B7)"),
        Level1Band("pan", "B8", "Panchromatic Band (B8)", _OLI_PAN, grid="pan"),
        Level1Band("cirrus", "B9", "Cirrus Band (B9)", _OLI_CIRRUS),
        Level1Band("lwir11", "B10", "Thermal Infrared Band 10.9 (B10)", grid="thermal"),
        Level1Band("lwir12", "B11", "Thermal Infrared Band 12.0 (B11)", _TIRS_B11, grid="thermal"),
        *_ANGLES,
    ),
    "etm": (
        Level1Band("blue", "B1", "Blue Band (B1)"),
        Level1Band("green", "B2", "Green Band (B2)"),
        Level1Band("red", "B3", "Red Band (B3)"),
        Level1Band("nir08", "B4", "Near Infrared Band 0.8 (B4)"),
        Level1Band("swir16", "B5", "Short-wave Infrared Band 1.6 (B5)"),
        Level1Band("lwir", "B6_VCID_1", "Thermal Infrared Band, low gain (B6_VCID_1)", grid="thermal"),
        Level1Band("lwir_high", "B6_VCID_2", "Thermal Infrared Band, high gain (B6_VCID_2)", grid="thermal"),
        Level1Band("swir22", "B7", "Short-wave Infrared Band 2.2 (B7)"),
        Level1Band("pan", "B8", "Panchromatic Band (B8)", _ETM_PAN, grid="pan"),
        *_ANGLES,
    ),
    "tm": (
        Level1Band("blue", "B1", "Blue Band (B1)"),
        Level1Band("green", "B2", "Green Band (B2)"),
        Level1Band("red", "B3", "Red Band (B3)"),
        Level1Band("nir08", "B4", "Near Infrared Band 0.8 (B4)"),
        Level1Band("swir16", "B5", "Short-wave Infrared Band 1.6 (B5)"),
        Level1Band("lwir", "B6", "Thermal Infrared Band (B6)", grid="thermal"),
        Level1Band("swir22", "B7", "Short-wave Infrared Band 2.2 (B7)"),
        *_ANGLES,
    ),
}

# LandsatLook landsat-c2l1's keys for the metadata files (stactools: mtl.txt, mtl.xml, mtl.json, ang).
LEVEL1_METADATA_KEYS = {"mtl.txt": "MTL.txt", "mtl.xml": "MTL.xml", "mtl.json": "MTL.json", "ang": "ANG.txt"}

_SENSOR_TITLES = {"oli-tirs": "Landsat 8-9 OLI/TIRS", "etm": "Landsat 7 ETM+", "tm": "Landsat 4-5 TM"}
_STACTOOLS_SENSORS = {"oli-tirs": Sensor.OLI_TIRS, "etm": Sensor.ETM, "tm": Sensor.TM, "mss": Sensor.MSS}


def scene_base_href(dest: str, scene: SceneId) -> str:
    """``{dest}/{scene_dir}/{product_id}``: stactools appends ``_{suffix}`` to it."""
    return layout.href(dest, f"{layout.scene_dir(scene)}/{scene.product_id}")


def stactools_supported(scene: SceneId) -> bool:
    """stactools-landsat reads C (OLI/TIRS), E, T (TM) and M products; not OLI-only / TIRS-only."""
    return scene.sensor_letter in ("C", "E", "M") or (scene.sensor_letter == "T" and scene.satellite < 8)


def load_mtl(bundle: Bundle, workdir: str) -> tuple[MtlMetadata, Member]:
    """The bundle's MTL (XML preferred) parsed by stactools-landsat; checked against the scene."""
    member = preferred_mtl(bundle)
    if member is None:
        raise BundleError(bundle.href, "no MTL.xml nor MTL.txt")
    path = os.path.join(workdir, member.filename)
    with open(path, "wb") as copy:
        copy.write(text_bytes(bundle, member))
    try:
        mtl = MtlMetadata.from_file(path) if member.kind == "mtl_xml" else MtlMetadata.from_text_file(path)
        product_id = mtl.product_id
    except (MTLError, ValueError, SyntaxError) as error:
        raise BundleError(bundle.href, f"unreadable MTL ({error})", member=member.name) from error
    if product_id != bundle.scene.product_id:
        raise BundleError(
            bundle.href, f"the MTL is for {product_id}, not {bundle.scene.product_id}", member=member.name
        )
    return mtl, member


def _ang_reader(bundle: Bundle, workdir: str) -> Callable[[str], str]:
    """stactools reads ``{base_href}_ANG.txt`` by href: point it at a copy of the member."""
    member = bundle.text_member("ang")
    if member is None:
        return lambda href: href
    path = os.path.join(workdir, member.filename)
    with open(path, "wb") as copy:
        copy.write(text_bytes(bundle, member))
    return lambda href: path if href.endswith("_ANG.txt") else href


def create_scene_item(bundle: Bundle, dest: str) -> pystac.Item:
    """The scene's STAC Item, asset hrefs on ``dest`` (a directory or ``s3://`` prefix)."""
    scene = bundle.scene
    if not stactools_supported(scene):
        raise BundleError(
            bundle.href, f"unsupported sensor: {scene.product_id[:4]} (OLI-only / TIRS-only products)"
        )
    base_href = scene_base_href(dest, scene)
    with temporary_dir("ingest-item-") as workdir:
        mtl, mtl_member = load_mtl(bundle, workdir)
        # before stactools, which also parses this field but says neither which nor why
        created = product_generated(mtl, scene, bundle.href, mtl_member.name)
        try:
            item: pystac.Item = create_item_from_mtl_metadata(
                base_href, mtl, use_usgs_geometry=False, read_href_modifier=_ang_reader(bundle, workdir)
            )
        except (MTLError, AngError, KeyError, ValueError, IndexError) as error:
            raise BundleError(
                bundle.href, f"stactools-landsat cannot build the item ({error})", member=mtl_member.name
            ) from error
        if scene.level == "level-1" and scene.sensor != "mss":
            _use_level1_assets(item, scene, mtl, base_href)
        item.common_metadata.created = created
    drop_absent_assets(item, bundle)
    return item


def product_generated(mtl: MtlMetadata, scene: SceneId, bundle_href: str, mtl_name: str) -> dt.datetime:
    """The item's ``created``: when USGS generated the product (the MTL's ``DATE_PRODUCT_GENERATED``
    of the scene's level), not the moment this run built the item (stactools' ``now()``), so
    that a rerun or a second ingest of the same bundle writes the same bytes. An MTL without
    the field gives the product id's processing date (midnight UTC)."""
    record = "LEVEL2_PROCESSING_RECORD" if scene.level == "level-2" else "LEVEL1_PROCESSING_RECORD"
    field = f"{record}/DATE_PRODUCT_GENERATED"
    text = (_mtl_root(mtl).find_text(field) or "").strip()
    if not text:
        return dt.datetime.combine(scene.processed, dt.time(), tzinfo=dt.UTC)
    try:
        generated = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise BundleError(bundle_href, f"{field}: not a date and time ({text!r})", member=mtl_name) from error
    return generated if generated.tzinfo else generated.replace(tzinfo=dt.UTC)


def produced_files(scene: SceneId) -> frozenset[str]:
    """Files of the scene this workflow makes itself (not members of the bundle)."""
    return frozenset(
        {posixpath.basename(layout.thumb_small(scene)), posixpath.basename(layout.thumb_large(scene))}
    )


def drop_absent_assets(item: pystac.Item, bundle: Bundle) -> None:
    """Remove every asset whose file the bundle does not have (thumbnails excepted)."""
    produced = produced_files(bundle.scene)
    for key, asset in list(item.assets.items()):
        filename = posixpath.basename(asset.href)
        if filename not in produced and not bundle.has_file(filename):
            del item.assets[key]


def unreferenced_rasters(item: pystac.Item, bundle: Bundle) -> list[Member]:
    """Raster members no asset names (converted all the same; listed on the browse page)."""
    named = {posixpath.basename(asset.href) for asset in item.assets.values()}
    return [m for m in bundle.rasters if m.filename not in named]


def _mtl_root(mtl: MtlMetadata) -> XmlElement:
    # stactools keeps the parsed tree (XML, or the ODL text turned into XML) only here.
    root: XmlElement = mtl._root
    return root


def _mtl_float(mtl: MtlMetadata, xpath: str) -> float | None:
    text = _mtl_root(mtl).find_text(xpath)
    if text is None or text.strip() in ("", "NULL"):
        return None
    return float(text)


def _level1_eo_bands(scene: SceneId) -> dict[str, dict[str, Any]]:
    """stactools' eo:bands fragments (Level-2 bands share the Level-1 bands' optics)."""
    fragments = Fragments(_STACTOOLS_SENSORS[scene.sensor], scene.satellite, "", {})
    return {**fragments.sr_eo_bands(), **fragments.st_eo_bands()}


def _band_raster(mtl: MtlMetadata, band: Level1Band, scene: SceneId) -> dict[str, Any]:
    """raster:bands of a Level-1 band: type from the MTL, radiance rescaling as scale/offset."""
    mtl_band = "BAND_" + band.suffix[1:]
    data_type = _mtl_root(mtl).find_text(f"PRODUCT_CONTENTS/DATA_TYPE_{mtl_band}")
    raster: dict[str, Any] = {
        "data_type": (data_type or ("UINT16" if scene.sensor == "oli-tirs" else "UINT8")).lower(),
        "nodata": 0,
        "spatial_resolution": _grid_gsd(mtl, band.grid),
    }
    mult = _mtl_float(mtl, f"LEVEL1_RADIOMETRIC_RESCALING/RADIANCE_MULT_{mtl_band}")
    add = _mtl_float(mtl, f"LEVEL1_RADIOMETRIC_RESCALING/RADIANCE_ADD_{mtl_band}")
    if mult is not None and add is not None:
        raster.update(unit=RADIANCE_UNIT, scale=mult, offset=add)
    return raster


def _angle_raster(mtl: MtlMetadata, band: Level1Band) -> dict[str, Any]:
    data_type = _mtl_root(mtl).find_text("PRODUCT_CONTENTS/DATA_TYPE_ANGLE_SENSOR_AZIMUTH_BAND_4")
    return {
        "data_type": (data_type or "INT16").lower(),
        "spatial_resolution": _grid_gsd(mtl, band.grid),
        "unit": "degree",
        "scale": 0.01,
    }


def _grid_gsd(mtl: MtlMetadata, grid: str) -> float:
    reflective = float(mtl.sr_gsd)
    if grid == "pan":
        return _mtl_float(mtl, "LEVEL1_PROJECTION_PARAMETERS/GRID_CELL_SIZE_PANCHROMATIC") or reflective / 2
    return reflective  # Collection 2 delivers thermal and angle bands on the reflective grid


def _pan_projection(mtl: MtlMetadata) -> tuple[list[int], list[float]] | None:
    """The panchromatic grid: its own shape; the reflective grid's first pixel centre."""
    lines = _mtl_float(mtl, "PROJECTION_ATTRIBUTES/PANCHROMATIC_LINES")
    samples = _mtl_float(mtl, "PROJECTION_ATTRIBUTES/PANCHROMATIC_SAMPLES")
    ul_x = _mtl_float(mtl, "PROJECTION_ATTRIBUTES/CORNER_UL_PROJECTION_X_PRODUCT")
    ul_y = _mtl_float(mtl, "PROJECTION_ATTRIBUTES/CORNER_UL_PROJECTION_Y_PRODUCT")
    if lines is None or samples is None or ul_x is None or ul_y is None:
        return None
    gsd = _grid_gsd(mtl, "pan")
    return [int(lines), int(samples)], [gsd, 0.0, ul_x - gsd / 2, 0.0, -gsd, ul_y + gsd / 2]


def _use_level1_assets(item: pystac.Item, scene: SceneId, mtl: MtlMetadata, base_href: str) -> None:
    """Replace stactools' Level-2 band assets of a Level-1 item by the Level-1 bands."""
    fragments = Fragments(_STACTOOLS_SENSORS[scene.sensor], scene.satellite, base_href, {})
    for key in fragments.sr_assets():
        if key not in ("qa_pixel", "qa_radsat"):
            item.assets.pop(key, None)
    for old_key, new_key in LEVEL1_METADATA_KEYS.items():
        if old_key in item.assets:
            asset = item.assets.pop(old_key)
            if asset.description:
                asset.description = asset.description.replace("Level-2", "Level-1")
            item.assets[new_key] = asset
    eo_bands = _level1_eo_bands(scene)
    thermal_gsd = SENSORS[_STACTOOLS_SENSORS[scene.sensor].name].get("thermal_gsd")
    for band in LEVEL1_BANDS[scene.sensor]:
        asset = pystac.Asset(
            href=f"{base_href}_{band.suffix}.TIF",
            title=band.title,
            description=f"Collection 2 Level-1 {band.title}",
            media_type=pystac.MediaType.COG,
            roles=["data"],
        )
        item.add_asset(band.key, asset)
        if band.grid == "angle":
            RasterExtension.ext(asset, add_if_missing=True).bands = [
                RasterBand.create(**_angle_raster(mtl, band))
            ]
            continue
        eo_band = band.eo_band or eo_bands.get(band.key) or eo_bands.get(band.key.removesuffix("_high"))
        if eo_band is not None:
            EOExtension.ext(asset, add_if_missing=True).bands = [Band.create(**eo_band)]
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(**_band_raster(mtl, band, scene))
        ]
        if band.grid == "thermal" and thermal_gsd:
            asset.common_metadata.gsd = thermal_gsd
        elif band.grid == "pan" and (pan := _pan_projection(mtl)) is not None:
            asset.common_metadata.gsd = pan[1][0]
            projection = ProjectionExtension.ext(asset)
            projection.shape, projection.transform = pan
    doi_url = _mtl_root(mtl).find_text("PRODUCT_CONTENTS/DIGITAL_OBJECT_IDENTIFIER")
    if doi_url:
        scientific = ScientificExtension.ext(item, add_if_missing=True)
        scientific.doi = doi_url.strip().removeprefix("https://doi.org/")
        cite = item.get_single_link("cite-as")
        if cite is not None:
            cite.title = f"{_SENSOR_TITLES[scene.sensor]} Collection 2 Level-1"
