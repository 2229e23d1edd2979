"""The Landsat ingest recipe, scene by scene, on synthetic Collection 2 bundles
(:mod:`pipeline.demo.landsat_bundles`): bundle reading and refusal, COG conversion, overview
resampling, thumbnails, STAC items. Expected values come from the bundle specs (what the MTL
was written from) and from the bundle members themselves, read independently through GDAL."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import posixpath
import re
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from PIL import Image
from pystac.validation import JsonSchemaSTACValidator
from rasterio.enums import Resampling
from rio_cogeo.cogeo import cog_validate

from pipeline.demo.landsat_bundles import BuiltBundle, BundleSpec, build_bundles, demo_specs
from pipeline.ingest import bundle as bundle_mod
from pipeline.ingest import catalogue, cog, engine, items, layout, thumbs
from pipeline.ingest.bundle import Bundle, BundleError, open_bundle, parse_product_id

# stactools-landsat's ANG footprint is wound clockwise (as from real ANG files); the antimeridian
# package it calls reverses it and says so.
pytestmark = pytest.mark.filterwarnings("ignore:The exterior ring of this shape is wound clockwise")

GOOD = ("LC08_L2SP_047027_20201204_20210313_02_T1", "LT05_L2SP_010020_19860219_20200918_02_T1",
        "LC08_L1TP_047027_20220301_20220309_02_T1")  # fmt: skip
TRUNCATED = "LC08_L2SP_047028_20201204_20210313_02_T1"
MISSING_RED = "LC08_L2SP_046027_20201213_20210313_02_T1"


@dataclasses.dataclass
class Converted:
    built: BuiltBundle
    bundle: Bundle
    cogs: dict[str, str]  # suffix -> COG path
    results: list[cog.CogResult]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltBundle]:
    root = tmp_path_factory.mktemp("bundles")
    return {built.spec.product_id: built for built in build_bundles(str(root), demo_specs())}


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("dest"))


@pytest.fixture(scope="module")
def converted(bundles: dict[str, BuiltBundle], dest: str) -> dict[str, Converted]:
    """Every raster member of the three good bundles converted, once, to its COG location."""
    out = {}
    for product_id in GOOD:
        built = bundles[product_id]
        bundle = open_bundle(built.path)
        cogs, results = {}, []
        for member in bundle.rasters:
            path = layout.href(dest, layout.cog(bundle.scene, member.suffix))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            results.append(cog.member_to_file(bundle, member, path))
            cogs[member.suffix] = path
        out[product_id] = Converted(built, bundle, cogs, results)
    return out


# ---------------------------------------------------------------- bundles


def test_product_ids_give_level_sensor_year_path_row():
    cases = {
        "LC08_L2SP_047027_20201204_20210313_02_T1": ("level-2", "oli-tirs", 2020, 47, 27),
        "LC09_L1GT_001200_20240502_20240513_02_T2": ("level-1", "oli-tirs", 2024, 1, 200),
        "LT05_L2SP_010020_19860219_20200918_02_T1": ("level-2", "tm", 1986, 10, 20),
        "LE07_L2SR_092013_20211007_20211104_02_T2": ("level-2", "etm", 2021, 92, 13),
        "LM01_L1GS_001010_19720908_20200909_02_T2": ("level-1", "mss", 1972, 1, 10),
        "LT08_L1GT_100220_20230101_20230110_02_RT": ("level-1", "oli-tirs", 2023, 100, 220),
    }
    for product_id, (level, sensor, year, path, row) in cases.items():
        scene = parse_product_id(product_id)
        assert (scene.level, scene.sensor, scene.year, scene.path, scene.row) == (
            level,
            sensor,
            year,
            path,
            row,
        )
    assert parse_product_id(GOOD[0]).item_id == "LC08_L2SP_047027_20201204_02_T1"
    assert parse_product_id(GOOD[0]).collection_id == "landsat-c2-l2"
    with pytest.raises(BundleError, match="not a Landsat Collection 2 product id"):
        parse_product_id("LC08_L2SP_047027_20201204_02_T1")


def test_thumbnail_bands_per_level_and_sensor():
    assert bundle_mod.thumbnail_band_suffixes(parse_product_id(GOOD[0])) == ("SR_B4", "SR_B3", "SR_B2")
    assert bundle_mod.thumbnail_band_suffixes(parse_product_id(GOOD[1])) == ("SR_B3", "SR_B2", "SR_B1")
    assert bundle_mod.thumbnail_band_suffixes(parse_product_id(GOOD[2])) == ("B4", "B3", "B2")
    assert bundle_mod.thumbnail_band_suffixes(
        parse_product_id("LE07_L1TP_044033_20210329_20210424_02_T1")
    ) == ("B3", "B2", "B1")


def test_bundles_listed_in_place_and_classified(bundles: dict[str, BuiltBundle]):
    for product_id in GOOD:
        built = bundles[product_id]
        bundle = open_bundle(built.path)
        spec = built.spec
        assert bundle.scene.product_id == product_id
        assert sorted(m.suffix for m in bundle.rasters) == sorted(spec.raster_suffixes)
        texts = {m.suffix for m in bundle.members if m.kind in ("mtl_txt", "mtl_xml", "mtl_json", "ang")}
        assert texts == set(spec.metadata)
        assert not [m for m in bundle.members if m.kind == "other"]
        assert {m.name for m in bundle.members} == set(built.members)
        red = bundle.raster(bundle_mod.thumbnail_band_suffixes(bundle.scene)[0])
        assert red is not None
        path = bundle.gdal_path(red)
        assert path == f"/vsitar/{os.path.abspath(built.path)}/{red.name}"
        with rasterio.open(path) as src:  # GDAL reads the member inside the tar
            assert (src.height, src.width) == (spec.height, spec.width)
        mtl = bundle_mod.preferred_mtl(bundle)
        assert mtl is not None and mtl.suffix == ("MTL.xml" if "MTL.xml" in spec.metadata else "MTL.txt")


def test_tgz_bundles_and_locations(bundles: dict[str, BuiltBundle], tmp_path):
    tar_gz = bundles[GOOD[1]].path
    tgz = tmp_path / (GOOD[1] + ".tgz")
    os.symlink(tar_gz, tgz)
    bundle = open_bundle(str(tgz))
    assert bundle.scene.product_id == GOOD[1]
    assert bundle_mod.bundle_stem(str(tgz)) == bundle_mod.bundle_stem(tar_gz) == GOOD[1]
    member = bundle.raster("QA_PIXEL")
    assert member is not None
    with rasterio.open(bundle.gdal_path(member)) as src:
        assert src.read(1)[0, 0] == 1  # the footprint's corner is fill
    assert bundle_mod.vsi_path("s3://bucket/in/x.tar") == "/vsis3/bucket/in/x.tar"
    assert bundle_mod.vsi_path("https://h/x.tar") == "/vsicurl/https://h/x.tar"


def test_truncated_tar_names_bundle_and_member(bundles: dict[str, BuiltBundle]):
    built = bundles[TRUNCATED]
    with pytest.raises(BundleError) as caught:
        open_bundle(built.path)
    assert caught.value.bundle == built.path and caught.value.member == built.broken_member
    assert built.path in str(caught.value) and str(built.broken_member) in str(caught.value)
    assert "truncated" in str(caught.value)


def test_truncated_gzip_bundle_names_bundle_and_member(bundles: dict[str, BuiltBundle], tmp_path):
    whole = Path(bundles[GOOD[1]].path).read_bytes()
    cut = tmp_path / f"{GOOD[1]}.tar.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(BundleError) as caught:
        open_bundle(str(cut))
    assert caught.value.bundle == str(cut)
    assert caught.value.member in bundles[GOOD[1]].members
    assert str(cut) in str(caught.value) and caught.value.member in str(caught.value)


def test_missing_band_names_bundle_and_member(bundles: dict[str, BuiltBundle]):
    built = bundles[MISSING_RED]
    assert built.broken_member == f"{MISSING_RED}_SR_B4.TIF"
    with pytest.raises(BundleError) as caught:
        open_bundle(built.path)
    assert caught.value.bundle == built.path and caught.value.member == built.broken_member
    assert f"bundle {built.path}, member {built.broken_member}: missing" in str(caught.value)
    listed = bundle_mod.list_bundle(built.path)  # listing alone works: the tar is fine
    assert listed.raster("SR_B4") is None and listed.raster("SR_B3") is not None


def test_missing_band_not_listed_in_mtl_is_still_required(bundles: dict[str, BuiltBundle]):
    bundle = bundle_mod.list_bundle(bundles[GOOD[2]].path)
    without_red = dataclasses.replace(bundle, members=tuple(m for m in bundle.members if m.suffix != "B4"))
    mtl = bundle_mod.preferred_mtl(bundle)
    assert mtl is not None
    texts = dict(bundle.texts)
    lines = texts[mtl.name].decode().splitlines(keepends=True)
    texts[mtl.name] = "".join(
        line for line in lines if "_B4.TIF" not in line
    ).encode()  # the MTL no longer lists B4
    assert "B4.TIF" not in str(bundle_mod.mtl_listed_files(texts[mtl.name], mtl.kind))
    with pytest.raises(
        BundleError, match=r"member LC08_L1TP_047027_20220301_20220309_02_T1_B4\.TIF: missing"
    ):
        bundle_mod.check_complete(dataclasses.replace(without_red, texts=texts))


# ---------------------------------------------------------------- COGs


def test_every_cog_is_valid_and_pixel_identical(converted: dict[str, Converted]):
    for conv in converted.values():
        assert set(conv.cogs) == {m.suffix for m in conv.bundle.rasters}
        for member in conv.bundle.rasters:
            path = conv.cogs[member.suffix]
            is_valid, errors, warnings = cog_validate(path, strict=True, quiet=True)
            assert is_valid, (path, errors, warnings)
            with rasterio.open(conv.bundle.gdal_path(member)) as src, rasterio.open(path) as out:
                assert out.profile["blockxsize"] == out.profile["blockysize"] == cog.BLOCKSIZE
                structure = out.tags(ns="IMAGE_STRUCTURE")
                assert (structure["COMPRESSION"], structure["PREDICTOR"], structure["LAYOUT"]) == (
                    "DEFLATE",
                    "2",
                    "COG",
                )
                assert (out.dtypes, out.nodata, out.crs, out.transform) == (
                    src.dtypes,
                    src.nodata,
                    src.crs,
                    src.transform,
                )
                assert np.array_equal(out.read(1), src.read(1)), path
                # overviews halve down to the first level that fits in one block
                factors = out.overviews(1)
                assert factors == [2**k for k in range(1, len(factors) + 1)]
                last = max(-(-out.width // factors[-1]), -(-out.height // factors[-1]))
                before = max(-(-out.width // (factors[-1] // 2)), -(-out.height // (factors[-1] // 2)))
                assert last <= cog.BLOCKSIZE < before


def test_cog_bytes_equal_the_file(converted: dict[str, Converted]):
    conv = converted[GOOD[0]]
    member = conv.bundle.raster("QA_PIXEL")
    assert member is not None
    data, result = cog.member_to_bytes(conv.bundle, member)
    assert data == Path(conv.cogs["QA_PIXEL"]).read_bytes()
    assert result.bytes_out == len(data) and result.bytes_in == member.size


def _overview(path: str) -> np.ndarray:
    with rasterio.open(path, OVERVIEW_LEVEL=0) as src:
        return src.read(1)


def test_qa_overviews_are_sampled_other_bands_averaged(converted: dict[str, Converted]):
    qa_checked = set()
    for conv in converted.values():
        for suffix, path in conv.cogs.items():
            if cog.overview_resampling(suffix) != "NEAREST":
                continue
            with rasterio.open(path) as full:
                values = set(np.unique(full.read(1)).tolist())
            assert set(np.unique(_overview(path)).tolist()) <= values, suffix  # NEAREST: no new value
            qa_checked.add(suffix)
        red = conv.cogs[bundle_mod.thumbnail_band_suffixes(conv.bundle.scene)[0]]
        with rasterio.open(red) as full:
            data = full.read(1).astype(np.float64)
        h, w = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2
        means = data[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        centre = (slice(h // 4 - 20, h // 4 + 20), slice(w // 4 - 20, w // 4 + 20))  # inside the footprint
        assert np.abs(_overview(red)[centre] - means[centre]).max() <= 1  # AVERAGE of each 2 x 2
    assert qa_checked == {"QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL", "SR_CLOUD_QA", "ST_QA"}
    assert cog.overview_resampling("SR_B4") == "AVERAGE" and cog.overview_resampling("B8") == "AVERAGE"


# ---------------------------------------------------------------- thumbnails


def test_thumbnail_sizes_and_stretch(converted: dict[str, Converted]):
    for conv in converted.values():
        spec = conv.built.spec
        thumbnails = thumbs.scene_thumbnails(conv.bundle)
        small_size = thumbs.thumbnail_size(spec.width, spec.height, 0.03)
        large_size = thumbs.thumbnail_size(spec.width, spec.height, 0.15)
        assert small_size == (round(spec.width * 0.03), round(spec.height * 0.03)) == (33, 30)
        assert large_size == (165, 150)
        assert Image.open(io.BytesIO(thumbnails.small_jpeg)).size == small_size
        assert Image.open(io.BytesIO(thumbnails.large_jpeg)).size == large_size
        assert Image.open(io.BytesIO(thumbnails.large_jpeg)).format == "JPEG"
        # independent averaging (from the COGs, full resolution) and percentiles
        paths = [conv.cogs[s] for s in bundle_mod.thumbnail_band_suffixes(conv.bundle.scene)]
        large, fills = [], []
        for path in paths:
            with rasterio.open(path, OVERVIEW_LEVEL="NONE") as src:
                large.append(
                    src.read(
                        1, out_shape=large_size[::-1], resampling=Resampling.average, out_dtype="float32"
                    )
                )
                fills.append(large[-1] == src.nodata)  # all inputs fill: GDAL writes nodata
        fill = np.any(fills, axis=0)
        assert 0.1 < fill.mean() < 0.6  # the tilted footprint leaves fill corners
        for channel, band in enumerate(large):
            low, high = np.percentile(band[~fill], [1, 99])
            assert thumbnails.limits[channel] == pytest.approx((low, high))
            stretched = thumbnails.large_rgb[channel][~fill]
            assert 0.005 < (stretched == 0).mean() < 0.02 and 0.005 < (stretched == 255).mean() < 0.02
            assert (thumbnails.large_rgb[channel][fill] == 0).all()
            with rasterio.open(paths[channel]) as src:
                full = src.read(1, masked=True)
            assert float(band[~fill].mean()) == pytest.approx(float(full.mean()), rel=0.02)
        # the small thumbnail uses the large one's limits, not its own
        small = thumbs.read_rgb(tuple(paths), *small_size)  # type: ignore[arg-type]
        assert np.array_equal(thumbnails.small_rgb, thumbs.apply_stretch(small, thumbnails.limits))


# ---------------------------------------------------------------- items


def _expected_hrefs(dest: str, bundle: Bundle) -> dict[str, str]:
    scene = bundle.scene
    files = {m.filename: layout.href(dest, layout.cog(scene, m.suffix)) for m in bundle.rasters}
    for m in bundle.members:
        if m.kind in ("mtl_txt", "mtl_xml", "mtl_json", "ang"):
            files[m.filename] = layout.href(dest, layout.metadata_copy(scene, m.suffix))
    files[posixpath.basename(layout.thumb_small(scene))] = layout.href(dest, layout.thumb_small(scene))
    files[posixpath.basename(layout.thumb_large(scene))] = layout.href(dest, layout.thumb_large(scene))
    return files


L2_OLI_KEYS = {
    "thumbnail", "reduced_resolution_browse", "mtl.json", "mtl.txt", "mtl.xml", "ang", "qa_pixel", "qa_radsat",
    "coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "qa_aerosol", "lwir11", "atran", "cdist",
    "drad", "urad", "trad", "emis", "emsd", "qa",
}  # fmt: skip
L2_TM_KEYS = (L2_OLI_KEYS - {"coastal", "qa_aerosol", "lwir11", "mtl.json"}) | {
    "lwir",
    "atmos_opacity",
    "cloud_qa",
}
L1_OLI_KEYS = {
    "thumbnail", "reduced_resolution_browse", "MTL.txt", "MTL.json", "ANG.txt", "qa_pixel", "qa_radsat",
    "coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "pan", "cirrus", "lwir11", "lwir12",
    "VAA", "VZA", "SAA", "SZA",
}  # fmt: skip


def test_items_state_what_the_mtl_states(converted: dict[str, Converted], dest: str):
    keys = {GOOD[0]: L2_OLI_KEYS, GOOD[1]: L2_TM_KEYS, GOOD[2]: L1_OLI_KEYS}
    for product_id, conv in converted.items():
        spec: BundleSpec = conv.built.spec
        item = items.create_scene_item(conv.bundle, dest)
        props = item.properties
        assert (
            item.id
            == conv.bundle.scene.item_id
            == "_".join(product_id.split("_")[:4] + product_id.split("_")[-2:])
        )
        assert item.datetime == spec.datetime
        assert props["eo:cloud_cover"] == spec.cloud_cover
        assert props["landsat:cloud_cover_land"] == spec.cloud_cover_land
        assert (props["landsat:wrs_path"], props["landsat:wrs_row"]) == (
            f"{spec.scene.path:03d}",
            f"{spec.scene.row:03d}",
        )
        assert props["landsat:correction"] == spec.scene.processing_level
        assert props.get("proj:code", f"EPSG:{props.get('proj:epsg')}") == f"EPSG:{spec.epsg}"
        assert props["proj:shape"] == [spec.height, spec.width]
        red = conv.cogs[bundle_mod.thumbnail_band_suffixes(conv.bundle.scene)[0]]
        with rasterio.open(red) as src:
            assert props["proj:transform"] == pytest.approx(list(src.transform)[:6])
        assert props["view:sun_azimuth"] == pytest.approx(spec.sun_azimuth)
        assert props["view:sun_elevation"] == pytest.approx(spec.sun_elevation)
        west, south, east, north = item.bbox
        assert west < east and south < north
        assert set(item.assets) == keys[product_id], product_id
        expected = _expected_hrefs(dest, conv.bundle)
        for key, asset in item.assets.items():
            assert asset.href == expected[posixpath.basename(asset.href)], key
        assert {posixpath.basename(a.href) for a in item.assets.values()} >= {
            m.filename for m in conv.bundle.rasters
        }
        assert not items.unreferenced_rasters(item, conv.bundle)
        assert item.assets["thumbnail"].href == layout.href(dest, layout.thumb_small(conv.bundle.scene))
        assert item.assets["reduced_resolution_browse"].href == layout.href(
            dest, layout.thumb_large(conv.bundle.scene)
        )
        assert layout.item_json(conv.bundle.scene).endswith(f"{product_id}/{item.id}.json")


def test_level1_assets_as_landsatlook(converted: dict[str, Converted], dest: str):
    conv = converted[GOOD[2]]
    item = items.create_scene_item(conv.bundle, dest)
    assert item.assets["red"].href.endswith("_B4.TIF") and item.assets["pan"].href.endswith("_B8.TIF")
    assert item.assets["lwir12"].href.endswith("_B11.TIF") and item.assets["SZA"].href.endswith("_SZA.TIF")
    assert item.assets["red"].extra_fields["eo:bands"][0]["common_name"] == "red"
    assert item.assets["cirrus"].extra_fields["eo:bands"][0]["common_name"] == "cirrus"
    raster = item.assets["red"].extra_fields["raster:bands"][0]
    assert raster["data_type"] == "uint16" and raster["nodata"] == 0 and raster["scale"] > 0
    with rasterio.open(conv.cogs["B8"]) as pan:
        assert item.assets["pan"].extra_fields["proj:shape"] == [pan.height, pan.width]
        assert item.assets["pan"].extra_fields["proj:transform"] == pytest.approx(list(pan.transform)[:6])
    assert item.properties["sci:doi"] == "10.5066/P975CC9B"
    assert item.properties["landsat:correction"] == "L1TP"
    assert not any(a.href.endswith("_MTL.xml") for a in item.assets.values())  # the bundle has none


def test_item_from_mtl_txt_equals_item_from_mtl_xml(converted: dict[str, Converted], dest: str):
    bundle = converted[GOOD[0]].bundle
    txt_only = dataclasses.replace(bundle, members=tuple(m for m in bundle.members if m.kind != "mtl_xml"))
    from_xml = items.create_scene_item(bundle, dest).to_dict()
    from_txt = items.create_scene_item(txt_only, dest).to_dict()
    from_xml["assets"].pop("mtl.xml")
    assert from_txt == from_xml  # ``created`` included: both state when the product was generated


def mtl_txt_value(bundle: Bundle, group: str, key: str) -> str:
    """``key``'s value in ``group`` of the bundle's MTL.txt, read here without stactools."""
    member = bundle.text_member("mtl_txt")
    assert member is not None
    text = bundle.texts[member.name].decode()
    body = text.split(f"GROUP = {group}\n", 1)[1].split(f"END_GROUP = {group}\n", 1)[0]
    found = re.search(rf"^\s*{key} = \"?([^\"\n]*)\"?$", body, re.MULTILINE)
    assert found is not None, (group, key)
    return found.group(1)


def test_item_created_is_when_the_product_was_generated_and_identical_on_rerun(
    converted: dict[str, Converted], tmp_path: Path
):
    """``created`` is the MTL's DATE_PRODUCT_GENERATED of the scene's level (not the time of
    the run): building the item again, to another destination, gives the same item JSON bytes."""
    for product_id, conv in converted.items():
        scene = conv.bundle.scene
        record = "LEVEL2_PROCESSING_RECORD" if scene.level == "level-2" else "LEVEL1_PROCESSING_RECORD"
        expected = mtl_txt_value(conv.bundle, record, "DATE_PRODUCT_GENERATED")
        first = catalogue.dump(catalogue.relative_item(engine.build_item(conv.bundle, str(tmp_path)), scene))
        again = catalogue.dump(catalogue.relative_item(engine.build_item(conv.bundle, "s3://b/p"), scene))
        assert first == again, product_id
        assert json.loads(first)["properties"]["created"] == expected, product_id


def test_unreadable_product_date_names_bundle_member_and_field(converted: dict[str, Converted], dest: str):
    bundle = converted[GOOD[0]].bundle
    mtl = bundle_mod.preferred_mtl(bundle)
    assert mtl is not None and mtl.kind == "mtl_xml"
    xml = bundle.texts[mtl.name].decode()
    broken = re.sub(
        r"(<LEVEL2_PROCESSING_RECORD>.*?<DATE_PRODUCT_GENERATED>)[^<]*", r"\g<1>13/03/2021", xml, flags=re.S
    )
    assert broken != xml
    bad = dataclasses.replace(bundle, texts={**bundle.texts, mtl.name: broken.encode()})
    with pytest.raises(BundleError) as caught:
        items.create_scene_item(bad, dest)
    message = str(caught.value)
    assert bundle.href in message and mtl.name in message
    assert "LEVEL2_PROCESSING_RECORD/DATE_PRODUCT_GENERATED" in message and "13/03/2021" in message


def _check_structure(d: dict[str, Any]) -> None:
    """What the extension schemas require of these items (checked by hand: no network)."""
    props = d["properties"]
    assert d["type"] == "Feature" and d["geometry"]["type"] in ("Polygon", "MultiPolygon")
    for field in ("landsat:scene_id", "landsat:collection_category", "landsat:collection_number", "landsat:wrs_type",
                  "landsat:wrs_path", "landsat:wrs_row", "landsat:cloud_cover_land", "landsat:correction"):  # fmt: skip
        assert field in props, field
    assert props["landsat:collection_number"] == "02" and props["landsat:wrs_type"] == "2"
    assert 0 <= props["eo:cloud_cover"] <= 100 and -1 <= props["landsat:cloud_cover_land"] <= 100
    assert 0 <= props["view:sun_azimuth"] <= 360 and -90 <= props["view:sun_elevation"] <= 90
    assert props["proj:code"].startswith("EPSG:") and len(props["proj:transform"]) in (6, 9)
    assert props["grid:code"] == f"WRS2-{props['landsat:wrs_path']}{props['landsat:wrs_row']}"
    for extension in (
        "eo",
        "raster",
        "view",
        "projection",
        "landsat",
        "classification",
        "grid",
        "scientific",
    ):
        assert any(f"/{extension}/" in uri for uri in d["stac_extensions"]), extension
    for key, asset in d["assets"].items():
        assert asset["href"] and asset["type"] and asset["roles"], key
        for band in asset.get("raster:bands", []):
            assert band["data_type"] in ("uint8", "uint16", "int16"), key
        for band in asset.get("eo:bands", []):
            assert band["name"] and band["common_name"], key


def test_items_validate_offline_core_schema_and_structure(converted: dict[str, Converted], dest: str):
    validator = JsonSchemaSTACValidator()
    for conv in converted.values():
        d = items.create_scene_item(conv.bundle, dest).to_dict()
        pystac.Item.from_dict(d)  # round-trips
        assert validator.validate_core(
            d, pystac.STACObjectType.ITEM, d["stac_version"]
        )  # bundled with pystac
        _check_structure(d)


def test_raster_within_one_block_gets_no_overview(bundles: dict[str, BuiltBundle], tmp_path):
    bundle = bundle_mod.list_bundle(bundles[MISSING_RED].path)  # 300 x 300: fits one 512 block
    member = bundle.raster("SR_B3")
    assert member is not None
    path = str(tmp_path / member.filename)
    cog.member_to_file(bundle, member, path)
    assert cog_validate(path, strict=True, quiet=True)[0]
    with rasterio.open(path) as out, rasterio.open(bundle.gdal_path(member)) as src:
        assert out.overviews(1) == [] and np.array_equal(out.read(1), src.read(1))


def test_unreadable_member_names_bundle_and_member(bundles: dict[str, BuiltBundle], tmp_path):
    bundle = bundle_mod.list_bundle(bundles[GOOD[0]].path)
    mtl = bundle.text_member("mtl_txt")
    assert mtl is not None
    not_a_raster = dataclasses.replace(mtl, kind="raster", suffix="SR_B9")
    with pytest.raises(BundleError) as caught:
        cog.member_to_file(bundle, not_a_raster, str(tmp_path / "x.TIF"))
    assert caught.value.member == mtl.name and "unreadable raster" in str(caught.value)


def test_items_on_s3_destination(converted: dict[str, Converted]):
    bundle = converted[GOOD[0]].bundle
    item = items.create_scene_item(bundle, "s3://bucket/landsat/")
    assert item.assets["red"].href == (
        "s3://bucket/landsat/collection02/level-2/oli-tirs/2020/047/027/"
        "LC08_L2SP_047027_20201204_20210313_02_T1/LC08_L2SP_047027_20201204_20210313_02_T1_SR_B4.TIF"
    )
