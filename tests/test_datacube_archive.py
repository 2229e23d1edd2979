"""The synthetic datacube archive (pipeline.demo.datacube_archive) has the shape of Planetary
Computer's items and every case it claims; the independent oracle (tests/datacube_oracle.py) is
self-consistent (per-chip and whole-grid warps give the same pixels)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import shape

from pipeline.demo.datacube_archive import (
    CONTAINERS,
    DatacubeArchive,
    DatacubeArchiveSpec,
    items_with_href_base,
    make_datacube_archive,
)
from tests import datacube_oracle as oracle

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "stac-examples"
REFERENCE_FILES = {
    "sentinel-2-l2a": "planetary-computer-sentinel-2-l2a-item.json",
    "sentinel-1-rtc": "planetary-computer-sentinel-1-rtc-item.json",
    "cop-dem-glo-30": "planetary-computer-cop-dem-glo-30-item.json",
}
S2_ASSETS = {"B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL"}
DTYPES = {"sentinel-2-l2a": {"uint16", "uint8"}, "sentinel-1-rtc": {"float32"}, "cop-dem-glo-30": {"float32"}}


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> DatacubeArchive:
    return make_datacube_archive(tmp_path_factory.mktemp("datacube") / "archive")


def _of(a: DatacubeArchive, collection: str) -> list[dict[str, Any]]:
    return [it for it in a.items if it["collection"] == collection]


def _when(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))


def _reference(collection: str) -> dict[str, Any]:
    if not (REFERENCE / REFERENCE_FILES[collection]).exists():
        pytest.skip(f"reference examples not found under {REFERENCE}")
    return json.loads((REFERENCE / REFERENCE_FILES[collection]).read_text())  # type: ignore[no-any-return]


# --- shape of the items --------------------------------------------------------------------------


@pytest.mark.parametrize("collection", sorted(REFERENCE_FILES))
def test_items_parse_with_pystac_and_use_the_reference_names(
    archive: DatacubeArchive, collection: str
) -> None:
    import pystac

    ref = _reference(collection)
    mine = _of(archive, collection)
    assert mine
    for it in mine:
        item = pystac.Item.from_dict(it)
        assert item.collection_id == collection
        assert set(it["properties"]) <= set(ref["properties"]), set(it["properties"]) - set(ref["properties"])
        assert set(it["assets"]) <= set(ref["assets"])
        for key, asset in it["assets"].items():
            for name in asset:
                assert name == "href" or name in ref["assets"][key], (collection, key, name)
    needed = {
        "sentinel-2-l2a": {
            "datetime",
            "s2:mgrs_tile",
            "eo:cloud_cover",
            "s2:nodata_pixel_percentage",
            "proj:epsg",
        },
        "sentinel-1-rtc": {
            "datetime",
            "sat:orbit_state",
            "proj:epsg",
            "proj:bbox",
            "proj:shape",
            "proj:transform",
        },
        "cop-dem-glo-30": {"datetime", "proj:epsg", "proj:shape", "proj:transform"},
    }[collection]
    assert all(needed <= set(it["properties"]) for it in mine)
    assets = {"sentinel-2-l2a": S2_ASSETS, "sentinel-1-rtc": {"vh", "vv"}, "cop-dem-glo-30": {"data"}}[
        collection
    ]
    assert all(set(it["assets"]) == assets for it in mine)


def test_datetime_forms_are_planetary_computers(archive: DatacubeArchive) -> None:
    for it in _of(archive, "sentinel-1-rtc"):
        text = it["properties"]["datetime"]
        assert text[10] == " " and text.endswith("+00:00"), text
        assert it["properties"]["start_datetime"][10] == " "
    for it in _of(archive, "sentinel-2-l2a"):
        text = it["properties"]["datetime"]
        assert text[10] == "T" and text.endswith("Z"), text


def test_files_are_cogs_on_the_grids_the_items_state(archive: DatacubeArchive) -> None:
    s2_lattice = set()
    s1_lattice = set()
    for it in archive.items:
        props = it["properties"]
        for key, asset in it["assets"].items():
            with rasterio.open(asset["href"]) as ds:
                assert ds.driver == "GTiff" and ds.profile.get("tiled") and ds.overviews(1), asset["href"]
                assert ds.nodata is not None
                assert ds.dtypes[0] in DTYPES[it["collection"]]
                doc = asset if "proj:transform" in asset else props
                assert ds.crs.to_epsg() == props["proj:epsg"]
                assert list(ds.transform)[:6] == pytest.approx(doc["proj:transform"][:6], abs=1e-9)
                assert [ds.height, ds.width] == doc["proj:shape"]
                if it["collection"] == "sentinel-2-l2a":
                    assert ds.res == ((10.0, 10.0) if key in {"B02", "B03", "B04", "B08"} else (20.0, 20.0))
                    s2_lattice.add((ds.transform.c % 10, ds.transform.f % 10))
                elif it["collection"] == "sentinel-1-rtc":
                    assert ds.res == (10.0, 10.0) and ds.crs.to_epsg() in (32610, 32611)
                    assert ds.nodata == -32768
                    s1_lattice.add((ds.transform.c % 10, ds.transform.f % 10))
                else:
                    assert ds.crs.to_epsg() == 4326 and ds.res[0] == pytest.approx(1 / 3600)
                    assert np.isnan(ds.nodata)
    assert not s2_lattice & s1_lattice  # S1 pixels are offset from the S2 lattice: warps are real
    assert {it["properties"]["proj:epsg"] for it in _of(archive, "sentinel-1-rtc")} == {32610, 32611}


def test_values_look_real(archive: DatacubeArchive) -> None:
    s2 = archive.item(archive.expected[0][0].s2_id)
    with rasterio.open(s2["assets"]["B08"]["href"]) as ds:
        nir = ds.read(1)
    assert 1000 < float(np.median(nir)) < 5000 and nir.min() >= 1
    s1 = archive.item(archive.expected[0][0].s1_ids[0])
    with rasterio.open(s1["assets"]["vv"]["href"]) as ds:
        vv = ds.read(1, masked=True)
    assert 0.005 < float(np.ma.median(vv)) < 1.0  # linear power, not dB
    dem = archive.item(archive.expected[0][0].dem_ids[0])
    with rasterio.open(dem["assets"]["data"]["href"]) as ds:
        elev = ds.read(1)
    assert 0 < float(np.nanmedian(elev)) < 3000


def test_catalogue_sample_and_href_rebasing(archive: DatacubeArchive) -> None:
    import geopandas as gpd

    from pipeline.catalog import LocalCatalog
    from pipeline.datetimes import Interval

    catalog = LocalCatalog.load(archive.catalog_path)
    assert sorted(it["id"] for it in catalog.items) == sorted(it["id"] for it in archive.items)
    year = archive.expected[0][0].date.year
    interval = Interval(datetime.fromisoformat(f"{year}-01-01T00:00:00+00:00"),
                        datetime.fromisoformat(f"{year}-12-31T23:59:59+00:00"))  # fmt: skip
    found = catalog.search(collection="sentinel-2-l2a", interval=interval, equals={"s2:mgrs_tile": "10TET"})
    assert found and all(it["properties"]["s2:mgrs_tile"] == "10TET" for it in found)
    sample = gpd.read_file(archive.sample_path)
    assert sample.crs.to_epsg() == 4326 and list(sample["name"]) == archive.tiles
    for row, name in enumerate(archive.tiles):
        own = [
            shape(it["geometry"])
            for it in _of(archive, "sentinel-2-l2a")
            if it["properties"]["s2:mgrs_tile"] == name
        ]
        assert own and all(fp.contains(sample.geometry[row]) for fp in own)
    rebased = items_with_href_base(archive.items, "http://127.0.0.1:10000/devstoreaccount1/")
    for old, new in zip(archive.items, rebased, strict=True):
        for key, asset in new["assets"].items():
            _base, _sep, rest = asset["href"].partition("devstoreaccount1/")
            assert rest.split("/")[0] in {c for _a, c in CONTAINERS.values()}
            assert (archive.data_dir / rest).resolve() == Path(old["assets"][key]["href"]).resolve()


# --- the selection cases -------------------------------------------------------------------------


def test_expected_selection_agrees_with_the_recipe(archive: DatacubeArchive) -> None:
    """The archive's truth is by construction; the recipe's pure functions must find the same."""
    from pipeline.datacube import recipe

    s2, s1, dem = (_of(archive, c) for c in ("sentinel-2-l2a", "sentinel-1-rtc", "cop-dem-glo-30"))
    for index, mgrs in enumerate(archive.tiles):
        got = []
        for period in recipe.search_periods(index):
            interval = recipe.period_interval(period)
            for candidate in recipe.s2_candidates([i for i in s2 if interval.contains(_when(i))], mgrs):
                match = recipe.s1_match(candidate, s1)
                if match:
                    ids = tuple(sorted(d["id"] for d in recipe.dem_items(candidate, dem)))
                    got.append((candidate["id"], tuple(m["id"] for m in match), ids))
                    break
        assert got == [(e.s2_id, e.s1_ids, e.dem_ids) for e in archive.expected[index]]
    assert archive.expected_for(0, 2) == archive.expected[0][:2]
    assert archive.expected[1] == []


def test_the_neighbours_scene_is_a_real_trap(archive: DatacubeArchive) -> None:
    assert archive.case("neighbour-scene").day == archive.expected[0][0].date
    picked = archive.item(archive.expected[0][0].s2_id)
    others = [it for it in _of(archive, "sentinel-2-l2a") if it["properties"]["s2:mgrs_tile"] != "10TET"
              and it["properties"]["datetime"] == picked["properties"]["datetime"]]  # fmt: skip
    assert len(others) == 1
    neighbour = others[0]
    assert neighbour["properties"]["eo:cloud_cover"] < picked["properties"]["eo:cloud_cover"]
    assert (
        shape(neighbour["geometry"]).intersection(shape(picked["geometry"])).area
        > 0.1 * shape(picked["geometry"]).area
    )


def test_s1_union_orbit_split_and_window_cases(archive: DatacubeArchive) -> None:
    exp = archive.expected[0][0]
    s2 = archive.item(exp.s2_id)
    fp = shape(s2["geometry"])
    a, b = (archive.item(i) for i in exp.s1_ids)
    assert fp.difference(shape(a["geometry"])).area > 0.2 * fp.area  # A alone does not cover
    assert fp.difference(shape(a["geometry"]).union(shape(b["geometry"]))).area < 1e-9 * fp.area
    assert _when(a) > _when(b)  # A is later: it wins where both have data
    near = [it for it in _of(archive, "sentinel-1-rtc") if abs((_when(it) - _when(s2)).days) <= 5
            and it["id"] not in exp.s1_ids and shape(it["geometry"]).intersects(fp)]  # fmt: skip
    desc = [it for it in near if it["properties"]["sat:orbit_state"] == "descending"]
    assert desc and all(abs(_when(d) - _when(s2)) < abs(_when(a) - _when(s2)) for d in desc)
    assert all(
        shape(d["geometry"]).intersection(fp).area < shape(a["geometry"]).intersection(fp).area for d in desc
    )
    outside = [it for it in near if it["properties"]["sat:orbit_state"] == "ascending"]
    assert outside and all((_when(o).date() - _when(s2).date()).days == 4 for o in outside)
    assert all(abs(_when(o) - _when(s2)) < abs(_when(b) - _when(s2)) for o in outside)  # nearer than B
    no_s1_year = archive.case("year-without-s1").year
    assert any(_when(it).year == no_s1_year for it in _of(archive, "sentinel-2-l2a"))
    assert not any(_when(it).year == no_s1_year for it in _of(archive, "sentinel-1-rtc"))


# --- the chip cases, through the oracle ----------------------------------------------------------


def _dropped_by_design(a: DatacubeArchive, day: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    for case in a.cases:
        if (
            case.outcome.startswith("dropped")
            and case.tile_index == 0
            and (case.day is None or case.day == day)
        ):
            for chip in case.chips:
                out.setdefault(chip, case.outcome)
    return out


def _check_chip_cases(a: DatacubeArchive) -> None:
    n_chips = a.spec.chips_x * a.spec.chips_y
    for exp in a.expected[0]:
        chips = oracle.chips_of(a.items, exp, a.spec.chip_size)
        assert sorted(chips) == list(range(1, n_chips + 1))
        dropped = _dropped_by_design(a, exp.date)
        assert {n for n, c in chips.items() if not c.kept} == set(dropped), exp.date
        for n, outcome in dropped.items():
            want = {
                "SCL": "SCL >= 30%",
                "B02": "B02 == 0",
                "NaN in vh": "NaN in vh",
                "NaN in dem": "NaN in dem",
            }
            assert any(k in outcome and v in chips[n].reasons for k, v in want.items()), (
                n,
                outcome,
                chips[n].reasons,
            )


def test_chip_cases_hold(archive: DatacubeArchive) -> None:
    _check_chip_cases(archive)
    kept_names = {c.name for c in archive.cases if c.outcome == "kept"}
    assert {"clouds-under-30", "clouds-just-under-30", "good-scl-classes"} <= kept_names
    exp = archive.expected[0][0]
    chips = oracle.chips_of(archive.items, exp, archive.spec.chip_size)
    c = archive.spec.chip_size
    bad = {n: float(np.isin(ch.scl, oracle.BAD_SCL).mean()) for n, ch in chips.items()}
    assert bad[archive.case("clouds-at-30").chips[0]] == pytest.approx(
        np.ceil(0.3 * (c // 2) ** 2) / (c // 2) ** 2
    )
    assert 0.29 < bad[archive.case("clouds-just-under-30").chips[0]] < 0.3
    assert 0 < bad[archive.case("clouds-under-30").chips[0]] < 0.3


def test_the_later_s1_scene_wins_and_no_data_does_not_paint(archive: DatacubeArchive) -> None:
    exp = archive.expected[0][0]
    a, b = (archive.item(i) for i in exp.s1_ids)
    later_first = oracle.chips(archive.item(exp.s2_id), [a, b], [], archive.spec.chip_size)
    only_b = oracle.chips(archive.item(exp.s2_id), [b], [], archive.spec.chip_size)
    only_a = oracle.chips(archive.item(exp.s2_id), [a], [], archive.spec.chip_size)
    both_a_and_b = shows_b_through_a = 0
    for n, chip in later_first.items():
        va, vb, v = only_a[n].data[11], only_b[n].data[11], chip.data[11]
        overlap = ~np.isnan(va) & ~np.isnan(vb)
        assert np.array_equal(v[overlap], va[overlap])  # A (later) wins
        b_only = np.isnan(va) & ~np.isnan(vb)
        assert np.array_equal(v[b_only], vb[b_only])
        both_a_and_b += int(overlap.sum())
        shows_b_through_a += int(b_only.sum())
        assert not np.array_equal(va[overlap], vb[overlap]) or not overlap.any()  # the order matters
    assert both_a_and_b > 0 and shows_b_through_a > 0
    # A's raster runs on with -32768 past its geometry, over the footprint: no-data must not paint.
    with rasterio.open(a["assets"]["vv"]["href"]) as ds:
        raw = ds.read(1)
    assert (raw == -32768).any() and not np.isnan(raw).any()


@pytest.mark.parametrize("mode", ["whole"])
def test_whole_grid_and_per_chip_warps_give_the_same_pixels(archive: DatacubeArchive, mode: str) -> None:
    for exp in archive.expected[0]:
        per_chip = oracle.chips_of(archive.items, exp, archive.spec.chip_size)
        whole = oracle.chips_of(archive.items, exp, archive.spec.chip_size, mode=mode)
        for n, chip in per_chip.items():
            assert oracle.nan_equal(chip.data, whole[n].data), (exp.date, n)
            assert np.array_equal(chip.scl, whole[n].scl)
            assert chip.transform == whole[n].transform


def test_oracle_chip_georeferencing_has_no_half_pixel_shift(archive: DatacubeArchive) -> None:
    exp = archive.expected[0][0]
    s2 = archive.item(exp.s2_id)
    x0, y0 = s2["assets"]["B02"]["proj:transform"][2], s2["assets"]["B02"]["proj:transform"][5]
    chips = oracle.chips_of(archive.items, exp, archive.spec.chip_size, numbers={1, archive.spec.chips_x + 2})
    c = archive.spec.chip_size
    assert (chips[1].transform.c, chips[1].transform.f) == (x0, y0)
    second = chips[archive.spec.chips_x + 2]
    assert (second.transform.c, second.transform.f) == (x0 + 10 * c, y0 - 10 * c)
    with rasterio.open(s2["assets"]["B04"]["href"]) as ds:
        assert np.array_equal(second.data[2], ds.read(1)[c : 2 * c, c : 2 * c].astype(np.float32))


def test_cases_hold_for_128_pixel_chips(tmp_path: Path) -> None:
    a = make_datacube_archive(tmp_path / "a128", DatacubeArchiveSpec(chip_size=128))
    assert (a.spec.width, a.spec.height) == (4 * 128 + 10, 3 * 128 + 10)
    _check_chip_cases(a)


def test_same_seed_same_archive(archive: DatacubeArchive, tmp_path: Path) -> None:
    again = make_datacube_archive(tmp_path / "again", archive.spec)

    def digest(a: DatacubeArchive) -> dict[str, str]:
        out = {}
        for it in a.items:
            for key, asset in it["assets"].items():
                with rasterio.open(asset["href"]) as ds:
                    out[f"{it['id']}/{key}"] = hashlib.sha256(ds.read().tobytes()).hexdigest()
        return out

    def relative(a: DatacubeArchive) -> list[str]:
        return [json.dumps(it, sort_keys=True).replace(str(a.root), "ROOT") for it in a.items]

    assert relative(again) == relative(archive)
    assert digest(again) == digest(archive)
    other = make_datacube_archive(tmp_path / "other", DatacubeArchiveSpec(seed=5))
    assert digest(other) != digest(archive)


def test_refuses_to_overwrite_unless_asked(archive: DatacubeArchive, tmp_path: Path) -> None:
    root = tmp_path / "x"
    make_datacube_archive(root)
    with pytest.raises(FileExistsError):
        make_datacube_archive(root)
    assert make_datacube_archive(root, overwrite=True).items


def test_footprints_are_valid_polygons(archive: DatacubeArchive) -> None:
    for it in archive.items:
        geom = shape(it["geometry"])
        assert geom.is_valid and geom.area > 0 and shapely.box(*it["bbox"]).buffer(1e-9).contains(geom)


# --- served: pgstac STAC API (CQL2) and Azurite (private containers, SAS) -----------------------


@pytest.mark.slow
@pytest.mark.stac
def test_items_load_into_pgstac_and_files_read_from_azurite_with_sas(
    archive: DatacubeArchive, stac_server: Any, azurite: Any
) -> None:
    """The items (S1 datetimes with a space included) load into pgstac and come back from CQL2
    and bbox searches as the local catalogue gives them; the data uploaded as the three private
    containers is readable through the rebased hrefs with a container SAS, not without."""
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses

    for _account, container in CONTAINERS.values():
        azurite.upload_tree(archive.data_dir / container, container)
    items = items_with_href_base(archive.items, azurite.blob_url)
    for name, path in archive.collection_paths.items():
        stac_server.load_items([it for it in items if it["collection"] == name], json.loads(path.read_text()))
    client = Client.open(stac_server.url)
    assert client.conforms_to(ConformanceClasses.FILTER)
    exp = archive.expected[0][0]
    s2 = archive.item(exp.s2_id)
    year = exp.date.year
    found = client.search(
        collections=["sentinel-2-l2a"], datetime=f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
        filter={"op": "=", "args": [{"property": "s2:mgrs_tile"}, "10TET"]}, filter_lang="cql2-json",
        method="POST",
    )  # fmt: skip
    want = {it["id"] for it in _of(archive, "sentinel-2-l2a")
            if it["properties"]["s2:mgrs_tile"] == "10TET" and _when(it).year == year}  # fmt: skip
    assert {it["id"] for it in found.items_as_dicts()} == want and exp.s2_id in want
    day = exp.date
    window = (
        f"{day.fromordinal(day.toordinal() - 3)}T00:00:00Z/{day.fromordinal(day.toordinal() + 3)}T23:59:59Z"
    )
    s1 = list(
        client.search(collections=["sentinel-1-rtc"], bbox=s2["bbox"], datetime=window).items_as_dicts()
    )
    assert set(exp.s1_ids) <= {it["id"] for it in s1}
    for it in s1:  # pgstac parsed the space-separated datetimes as the same instants
        assert _when(it) == _when(archive.item(it["id"]))
    href = next(it for it in items if it["id"] == exp.s1_ids[0])["assets"]["vv"]["href"]
    container = href.split(azurite.blob_url + "/", 1)[1].split("/", 1)[0]
    local = archive.item(exp.s1_ids[0])["assets"]["vv"]["href"]
    with rasterio.open(f"{href}?{azurite.container_sas(container)}") as ds, rasterio.open(local) as mine:
        assert np.array_equal(ds.read(1), mine.read(1))
    with pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(href).close()
