"""The datacube workflow end to end, through the luigi command line.

On the synthetic archive (pipeline/demo/datacube_archive.py: the issue's cases) every chip is
checked against tests/datacube_oracle.py, an independent implementation: the set of chips, names,
band order, values cell by cell, tags, georeferencing, the drop reasons in the manifest, the dates
and items selected; the same through the pgstac STAC API (CQL2) with the assets on Azurite read
with SAS tokens and the chips written to ``az://``.

On a toy archive made here (two tiles sharing one small scene; tests/test_datacube_engine.py's
independent nearest-neighbour stack): reruns, a failed (tile, date) redone alone, subset runs,
the dry run, bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import Polygon, box, mapping

from pipeline.datacube import engine, recipe
from tests.helpers import luigi_env, run_luigi, snapshot
from tests.test_datacube_engine import expected_chip, make_toy_scene

pytestmark = pytest.mark.slow

MODULE = "pipeline.datacube"
CHIP = 32
DAY = "2020-05-17"
S2_IDS = {
    "33TXN": "S2A_MSIL2A_20200517T100031_R122_T33TXN_20200517T120000",
    "33TXM": "S2A_MSIL2A_20200517T100031_R122_T33TXM_20200517T120000",
}
S1_DATETIMES = ("2020-05-16 05:00:00.123+00:00", "2020-05-18 05:00:00.5+00:00")  # PC's space separator


@dataclass
class ToyArchive:
    root: Path
    items: list[dict]
    catalog: Path
    sample: Path
    jobs: dict[str, engine.DateJob]  # per MGRS id: the expected (tile, date)


def _lonlat_polygon(path: str, west_half: bool = False) -> Polygon:
    with rasterio.open(path) as ds:
        b, epsg = ds.bounds, ds.crs.to_epsg()
        right = b.left + (ds.width // 2) * ds.transform.a if west_half else b.right
    if epsg == 4326:
        return box(*b)
    xs, ys = Transformer.from_crs(epsg, 4326, always_xy=True).transform(
        [b.left, right, right, b.left], [b.top, b.top, b.bottom, b.bottom]
    )
    return Polygon(list(zip(xs, ys, strict=True)))


def _feature(item_id: str, collection: str, geometry: Polygon, props: dict, assets: dict) -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
        "geometry": mapping(geometry), "bbox": list(geometry.bounds), "properties": props, "assets": assets,
        "links": [],
    }  # fmt: skip


def build_toy_archive(root: Path) -> ToyArchive:
    """Two rows (33TXN, 33TXM) whose S2 items share the toy scene's grid (the second reads its
    own copy of B03, so it can be broken alone); two S1 items: the later (nearer in time) covers
    only the west half, so their union is needed and the later wins where both have data; two
    DEM items, one with a NaN edge."""
    import geopandas as gpd

    job = make_toy_scene(root / "data")
    b03 = Path(job.s2_bands[1])
    shutil.copy(b03, b03.with_name("B03_m.tif"))
    jobs = {
        "33TXN": replace(job, s2_id=S2_IDS["33TXN"]),
        "33TXM": replace(
            job, mgrs="33TXM", s2_id=S2_IDS["33TXM"],
            s2_bands=(job.s2_bands[0], str(b03.with_name("B03_m.tif")), *job.s2_bands[2:]),
        ),
    }  # fmt: skip
    footprint = _lonlat_polygon(job.s2_bands[0])
    items = []
    for mgrs, j in jobs.items():
        assets: dict[str, dict] = {}
        for name, href in zip(recipe.S2_BANDS, j.s2_bands, strict=True):
            with rasterio.open(href) as ds:
                assets[name] = {
                    "href": href,
                    "proj:shape": [ds.height, ds.width],
                    "proj:transform": list(ds.transform)[:6],
                }
        assets["SCL"] = {"href": j.scl}
        props = {"datetime": f"{DAY}T10:00:31.024000Z", "s2:mgrs_tile": mgrs, "eo:cloud_cover": 5.0,
                 "s2:nodata_pixel_percentage": 0.0, "proj:epsg": 32633}  # fmt: skip
        items.append(_feature(j.s2_id, recipe.S2_COLLECTION, footprint, props, assets))
    for i, ((vh, vv), when) in enumerate(zip(job.s1, S1_DATETIMES, strict=True)):
        props = {"datetime": when.replace(" ", "T", 1), "start_datetime": when, "end_datetime": when,
                 "sat:orbit_state": "descending", "proj:epsg": 32634}  # fmt: skip
        footprint_s1 = _lonlat_polygon(vh, west_half=i == 1)  # the later one has data in its west half
        items.append(_feature(f"S1A_IW_GRDH_1SDV_2020051{6 + 2 * i}_rtc", recipe.S1_COLLECTION, footprint_s1,
                              props, {"vh": {"href": vh}, "vv": {"href": vv}}))  # fmt: skip
    for i, href in enumerate(job.dem):
        items.append(_feature(f"Copernicus_DSM_COG_10_N45_00_E01{4 + i}_00_DEM", recipe.DEM_COLLECTION,
                              _lonlat_polygon(href), {"datetime": "2021-04-22T00:00:00Z", "proj:epsg": 4326},
                              {"data": {"href": href}}))  # fmt: skip
    catalog = root / "items.ndjson"
    catalog.write_text("".join(json.dumps(i) + "\n" for i in items))
    sample = root / "sample.fgb"
    gpd.GeoDataFrame({"name": list(jobs)}, geometry=[footprint, footprint], crs="EPSG:4326").to_file(sample)
    return ToyArchive(root, items, catalog, sample, jobs)


def independent_drop_reason(bands: np.ndarray, scl: np.ndarray) -> str | None:
    if (bands[0] == 0).any():
        return "B02 has 0"
    for i, name in ((10, "vh"), (11, "vv"), (12, "dem")):
        if np.isnan(bands[i]).any():
            return f"NaN in {name}"
    bad = np.isin(scl, (0, 1, 3, 8, 9, 10)).mean()
    return "cloud/shadow/nodata SCL >= 30%" if bad >= 0.3 else None


def datacube(
    archive: ToyArchive,
    dest: Path | str,
    *extra: str,
    task: str = "DatacubeSample",
    catalog: str = "",
    env=None,
):
    args = [task, "--sample", str(archive.sample), "--catalog", catalog or str(archive.catalog), "--dest", str(dest),
            "--chip-size", str(CHIP), "--local-scheduler", "--dask-n-workers", "1", "--dask-processes", "false", *extra]  # fmt: skip
    return run_luigi(args, cwd=archive.root, env=env or luigi_env(), module=MODULE)


def check_chips(archive: ToyArchive, root: Path, mgrs: str, numbers: list[int]) -> dict[int, str | None]:
    """Every chip of ``numbers``: present exactly when kept, equal cell by cell, named, banded,
    tagged and georeferenced as the recipe states; the verdicts."""
    job = archive.jobs[mgrs]
    verdicts = {}
    for number in numbers:
        want, scl = expected_chip(job, number)
        reason = independent_drop_reason(want, scl)
        verdicts[number] = reason
        path = root / "02" / mgrs / DAY / f"claytile_{mgrs}_{DAY.replace('-', '')}_v02_{number:04d}.tif"
        assert path.exists() == (reason is None), (mgrs, number, reason)
        if reason is None:
            col, row = recipe.chip_offset(number, job.width, job.height, CHIP)
            with rasterio.open(path) as ds:
                assert ds.descriptions == (
                    "B02",
                    "B03",
                    "B04",
                    "B05",
                    "B06",
                    "B07",
                    "B08",
                    "B8A",
                    "B11",
                    "B12",
                    "vh",
                    "vv",
                    "dem",
                )
                assert ds.dtypes == ("float32",) * 13
                assert ds.tags()["date"] == DAY
                assert ds.crs.to_epsg() == 32633
                assert tuple(ds.transform)[:6] == (
                    10.0,
                    0.0,
                    500_000.0 + 10 * col,
                    0.0,
                    -10.0,
                    5_000_000.0 - 10 * row,
                )
                assert (ds.width, ds.height) == (CHIP, CHIP)
                assert ds.profile["compress"].lower() == "deflate"
                np.testing.assert_array_equal(ds.read(), want.astype(np.float32))
    return verdicts


def manifest(root: Path, mgrs: str, scope: str = f"c{CHIP}") -> dict:
    return json.loads(
        (root / "_state" / "datacube" / "manifests" / "v02" / mgrs / DAY / f"{scope}.json").read_text()
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> ToyArchive:
    return build_toy_archive(tmp_path_factory.mktemp("datacube-archive"))


@pytest.fixture(scope="module")
def full_run(archive, tmp_path_factory):
    dest = tmp_path_factory.mktemp("datacube") / "out"
    proc = datacube(archive, dest)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dest, proc


def test_every_kept_chip_equals_the_independent_stack(archive, full_run):
    dest, proc = full_run
    for mgrs in archive.jobs:
        verdicts = check_chips(archive, dest, mgrs, [1, 2, 3, 4])
        assert verdicts[1] is None and all(verdicts[n] for n in (2, 3, 4))  # the toy has each case
        doc = manifest(dest, mgrs)
        assert [k["number"] for k in doc["kept"]] == [n for n, r in verdicts.items() if r is None]
        assert {d["number"]: d["reason"] for d in doc["dropped"]} == {n: r for n, r in verdicts.items() if r}
        assert doc["s2"] == S2_IDS[mgrs] and doc["scope"] == f"c{CHIP}"
        # both S1 items (the nearer one covers only half), in paint order: the later one last
        assert doc["s1"] == ["S1A_IW_GRDH_1SDV_20200516_rtc", "S1A_IW_GRDH_1SDV_20200518_rtc"]
        assert len(doc["dem"]) == 2
    chips = sorted(p.name for p in dest.rglob("*.tif"))
    assert chips == ["claytile_33TXM_20200517_v02_0001.tif", "claytile_33TXN_20200517_v02_0001.tif"]
    assert "Datacube summary" in proc.stderr and "2 written" in proc.stderr


def test_selection_states_say_why_each_year_was_skipped(archive, full_run):
    dest, _ = full_run
    states = sorted((dest / "_state" / "datacube" / "selection").rglob("*.json"))
    assert [p.name for p in states] == ["000000_33TXN.json", "000001_33TXM.json"]
    doc = json.loads(states[0].read_text())
    assert [d["date"] for d in doc["dates"]] == [DAY]
    assert doc["dates"][0]["s2"]["id"] == S2_IDS["33TXN"]
    years = [p["period"][:4] for p in doc["periods"]]
    assert years == [str(y) for y in recipe.year_order(0)]  # random.seed(0); random.shuffle
    for period in doc["periods"]:
        if period["period"].startswith("2020"):
            assert period["status"] == "matched"
        else:
            assert period["status"] == "skipped" and "no S2 item of 33TXN" in period["reason"]


def test_qa_view_outlines_kept_and_dropped_chips(full_run):
    dest, _ = full_run
    index = (dest / "report" / "datacube" / "index.html").read_text()
    assert "33TXN" in index and "v02/33TXN/2020-05-17.html" in index
    page = (dest / "report" / "datacube" / "v02" / "33TXN" / f"{DAY}.html").read_text()
    assert page.count('class="chip dropped"') == 3 and page.count('class="chip"') == 1
    assert "NaN in dem" in page
    for kind in ("rgb", "vv", "dem"):
        assert (dest / "report" / "datacube" / "v02" / "33TXN" / f"{DAY}_{kind}.png").stat().st_size > 100
        assert f'src="{DAY}_{kind}.png"' in page  # the page shows it


def test_rerun_writes_nothing(archive, full_run):
    dest, _ = full_run
    before = snapshot(dest)
    proc = datacube(archive, dest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to do" in proc.stderr
    assert snapshot(dest) == before


def test_a_failed_tile_date_is_recorded_and_redone_alone(tmp_path):
    archive = build_toy_archive(tmp_path / "a")
    broken = Path(archive.jobs["33TXM"].s2_bands[1])
    good = broken.read_bytes()
    broken.write_bytes(b"not a tiff")
    dest = tmp_path / "out"
    proc = datacube(archive, dest)
    assert proc.returncode == 30, proc.stderr[-3000:]
    assert "FAILED 33TXM 2020-05-17" in proc.stderr and "B03_m.tif" in proc.stderr
    record = dest / "_state" / "datacube" / "failed" / "v02" / "33TXM" / DAY / f"c{CHIP}.json"
    assert json.loads(record.read_text())["failed"][0]["targets"]
    assert not (dest / "02" / "33TXM").exists() and not list(
        (dest / "_state").rglob("manifests/v02/33TXM/*/*.json")
    )
    done = snapshot(dest / "02" / "33TXN")
    assert len(done) == 1
    broken.write_bytes(good)
    proc = datacube(archive, dest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(dest / "02" / "33TXN") == done  # the finished (tile, date) untouched
    check_chips(archive, dest, "33TXM", [1, 2, 3, 4])
    assert not record.exists()


def test_subset_run_keeps_chip_numbers_and_never_marks_the_full_tile(archive, tmp_path):
    dest = tmp_path / "out"
    proc = datacube(archive, dest, "--index", "0", "--subset", "0,40,40,41")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = manifest(dest, "33TXN", f"c{CHIP}_0-32-64-64")  # snapped outward to chips 3 and 4
    assert doc["kept"] == [] and [d["number"] for d in doc["dropped"]] == [3, 4]
    assert not (dest / "_state" / "datacube" / "manifests" / "v02" / "33TXN" / DAY / f"c{CHIP}.json").exists()
    proc = datacube(archive, dest, "--index", "0", "--subset", "5,5,6,6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_chips(archive, dest, "33TXN", [1])
    assert [k["number"] for k in manifest(dest, "33TXN", f"c{CHIP}_0-0-32-32")["kept"]] == [1]
    proc = datacube(archive, dest, "--index", "0")  # the full run finds chip 1 written
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 already there" in proc.stderr
    check_chips(archive, dest, "33TXN", [1, 2, 3, 4])


def test_dry_run_reads_no_pixel_and_writes_no_chip(archive, tmp_path):
    dest = tmp_path / "out"
    proc = datacube(archive, dest, "--indexes", "0-1", task="DatacubeDryRun")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Datacube dry run" in proc.stderr
    rows = [
        line.split()
        for line in proc.stderr.splitlines()
        if line.split()[:2] in (["0", "33TXN"], ["1", "33TXM"])
    ]
    assert [(r[2], r[3], r[4]) for r in rows] == [(DAY, "4", "0"), (DAY, "4", "0")]
    assert not list(dest.rglob("*.tif")) and not (dest / "_state" / "datacube" / "manifests").exists()


def test_bad_sample_names_the_row_and_writes_nothing(archive, tmp_path):
    import geopandas as gpd

    bad = tmp_path / "bad.fgb"
    gpd.GeoDataFrame(
        {"name": ["33TXN", "not-a-tile"]}, geometry=[box(0, 0, 1, 1)] * 2, crs="EPSG:4326"
    ).to_file(bad)
    dest = tmp_path / "out"
    proc = datacube(replace(archive, sample=bad), dest)
    assert proc.returncode != 0
    assert "bad.fgb, row 1" in proc.stderr.strip().splitlines()[-1] and "'name'" in proc.stderr
    assert not dest.exists()


# ---- the synthetic archive and the oracle ------------------------------------------------------

ARCHIVE_CHIP = 64
ORACLE_REASON = {"B02 == 0": "B02 has 0", "SCL >= 30%": "cloud/shadow/nodata SCL >= 30%"}


@pytest.fixture(scope="module")
def cases_archive(tmp_path_factory):
    from pipeline.demo.datacube_archive import DatacubeArchiveSpec, make_datacube_archive

    return make_datacube_archive(
        tmp_path_factory.mktemp("datacube-cases"), DatacubeArchiveSpec(chip_size=ARCHIVE_CHIP)
    )


def run_archive(archive, dest: Path | str, *extra: str, catalog: str = "", env=None):
    args = ["DatacubeSample", "--sample", str(archive.sample_path), "--catalog", catalog or str(archive.catalog_path),
            "--dest", str(dest), "--chip-size", str(ARCHIVE_CHIP), "--local-scheduler", "--dask-n-workers", "1",
            "--dask-processes", "false", *extra]  # fmt: skip
    return run_luigi(args, cwd=archive.root, env=env or luigi_env(), module=MODULE)


def exact_job(items: list[dict], want, mgrs: str) -> engine.DateJob:
    """The (tile, date) as the archive expects it (ids from its expected list, the grid from the
    B02 file, S1 in time order), for the by-hand stack of tests/test_datacube_engine.py."""
    from datetime import datetime

    by_id = {it["id"]: it for it in items}
    s2 = by_id[want.s2_id]
    with rasterio.open(s2["assets"]["B02"]["href"]) as ds:
        epsg, transform, width, height = ds.crs.to_epsg(), tuple(ds.transform)[:6], ds.width, ds.height
    s1 = sorted(
        (by_id[i] for i in want.s1_ids),
        key=lambda it: datetime.fromisoformat(it["properties"]["datetime"].replace("Z", "+00:00")),
    )
    return engine.DateJob(
        mgrs, want.date, "02", ARCHIVE_CHIP, epsg, transform, width, height, want.s2_id,
        tuple(s2["assets"][b]["href"] for b in recipe.S2_BANDS), s2["assets"]["SCL"]["href"],
        tuple((it["assets"]["vh"]["href"], it["assets"]["vv"]["href"]) for it in s1),
        tuple(by_id[i]["assets"]["data"]["href"] for i in want.dem_ids),
    )  # fmt: skip


def check_against_oracle(archive, root: Path, items: list[dict]) -> int:
    """Every (tile, date) the archive expects: its selection, its manifest and every chip, against
    tests/datacube_oracle.py (chip set, names, bands, tags, georeferencing, drop reasons, and every
    cell exactly: its default method samples the source pixel under each pixel centre with pyproj)
    and cell by cell against the by-hand nearest neighbour of tests/test_datacube_engine.py.
    Returns the number of chips kept."""
    import tests.datacube_oracle as oracle

    kept_total = 0
    for index, mgrs in enumerate(archive.tiles):
        expected = archive.expected_for(index, 3)
        selection = json.loads(
            next((root / "_state" / "datacube" / "selection").rglob(f"{index:06d}_{mgrs}.json")).read_text()
        )
        assert [d["date"] for d in selection["dates"]] == [f"{e.date:%Y-%m-%d}" for e in expected]
        for entry, want in zip(selection["dates"], expected, strict=True):
            assert entry["s2"]["id"] == want.s2_id
            assert entry["s1_chosen"] == list(want.s1_ids)
            assert [d["id"] for d in entry["dem"]] == list(want.dem_ids)
            day = f"{want.date:%Y-%m-%d}"
            chips = oracle.chips_of(items, want, ARCHIVE_CHIP)
            job = exact_job(items, want, mgrs)
            doc = json.loads(
                (
                    root / "_state" / "datacube" / "manifests" / "v02" / mgrs / day / f"c{ARCHIVE_CHIP}.json"
                ).read_text()
            )
            assert [k["number"] for k in doc["kept"]] == sorted(n for n, c in chips.items() if c.kept)
            assert {d["number"]: d["reason"] for d in doc["dropped"]} == {
                n: ORACLE_REASON.get(c.reasons[0], c.reasons[0]) for n, c in chips.items() if not c.kept
            }
            directory = root / "02" / mgrs / day
            names = sorted(p.name for p in directory.glob("*.tif")) if directory.exists() else []
            assert names == [
                f"claytile_{mgrs}_{want.date:%Y%m%d}_v02_{n:04d}.tif"
                for n, c in sorted(chips.items())
                if c.kept
            ]
            for number, chip in chips.items():
                if not chip.kept:
                    continue
                with rasterio.open(
                    directory / f"claytile_{mgrs}_{want.date:%Y%m%d}_v02_{number:04d}.tif"
                ) as ds:
                    assert ds.descriptions == oracle.BANDS and ds.dtypes == ("float32",) * 13
                    assert ds.tags()["date"] == day
                    assert ds.crs == chip.crs and ds.transform == chip.transform
                    assert ds.profile["compress"].lower() == "deflate"
                    got = ds.read()
                exact, _ = expected_chip(job, number)
                assert oracle.nan_equal(got, exact.astype(np.float32)), (mgrs, day, number)
                off = ~((got == chip.data) | (np.isnan(got) & np.isnan(chip.data)))
                assert not off.any(), (mgrs, day, number, int(off.sum()))
                kept_total += 1
    return kept_total


@pytest.fixture(scope="module")
def cases_run(cases_archive, tmp_path_factory):
    dest = tmp_path_factory.mktemp("datacube-cases-out") / "out"
    proc = run_archive(cases_archive, dest)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dest, proc


def test_archive_chips_equal_the_oracle(cases_archive, cases_run):
    dest, proc = cases_run
    kept = check_against_oracle(cases_archive, dest, cases_archive.items)
    assert kept >= 20
    # every case the archive lays out leaves its mark where it should
    for case in cases_archive.cases:
        if case.outcome.startswith("dropped") and case.day is not None:
            doc = json.loads(
                (
                    dest
                    / "_state"
                    / "datacube"
                    / "manifests"
                    / "v02"
                    / case.mgrs
                    / f"{case.day:%Y-%m-%d}"
                    / f"c{ARCHIVE_CHIP}.json"
                ).read_text()
            )
            assert set(case.chips) <= {d["number"] for d in doc["dropped"]}, case.name
    assert f"chips: {kept} written" in proc.stderr


def test_archive_tile_without_a_date_is_an_outcome(cases_archive, cases_run):
    dest, proc = cases_run
    case = cases_archive.case("no-date-at-all")
    doc = json.loads(
        next(
            (dest / "_state" / "datacube" / "selection").rglob(f"{case.tile_index:06d}_{case.mgrs}.json")
        ).read_text()
    )
    assert doc["dates"] == []
    skipped = {p["period"][:4]: p for p in doc["periods"] if p["status"] == "skipped"}
    assert set(cases_archive.skipped_years[case.tile_index]) <= {int(y) for y in skipped}
    assert f"NO DATE row {case.tile_index} {case.mgrs}" in proc.stderr
    index = (dest / "report" / "datacube" / "index.html").read_text()
    assert "no date:" in index and case.mgrs in index


# ---- through the pgstac STAC API (CQL2), the assets on Azurite read with SAS tokens, chips to az://


@pytest.mark.stac
def test_archive_through_the_stac_api_with_sas_signed_blobs_to_az(
    cases_archive, azurite, sas_token_service, stac_server, tmp_path
):
    import adlfs
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses

    from pipeline.demo.datacube_archive import items_with_href_base

    # the S2 search by s2:mgrs_tile goes out as CQL2 (pipeline.catalog picks it from the conformance)
    assert Client.open(stac_server.url).conforms_to(ConformanceClasses.FILTER)
    for container in sorted(p.name for p in cases_archive.data_dir.iterdir() if p.is_dir()):
        azurite.upload_tree(cases_archive.data_dir / container, container)
    outputs = "datacube-outputs"
    azurite.create_container(outputs)
    items = items_with_href_base(cases_archive.items, azurite.blob_url)
    for i, (cid, path) in enumerate(sorted(cases_archive.collection_paths.items())):
        stac_server.load_items(
            [it for it in items if it["collection"] == cid], json.loads(path.read_text()), append=i > 0
        )
    env = luigi_env(
        {
            "PC_SDK_SAS_URL": sas_token_service.sas_url,
            "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        }
    )
    hosts = ("--datacube-path-style-blob-hosts", azurite.host_port)
    sas_token_service.reset()
    dest = f"az://{outputs}/run1"
    proc = run_archive(cases_archive, dest, *hosts, catalog=stac_server.url, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    tokens = sum(sas_token_service.request_counts().values())
    assert 1 <= tokens <= 12, sas_token_service.request_counts()  # per container and process, not per file
    local = tmp_path / "copy"
    adlfs.AzureBlobFileSystem(connection_string=azurite.connection_string).get(
        f"{outputs}/run1", str(local), recursive=True
    )
    assert check_against_oracle(cases_archive, local, cases_archive.items) >= 20
    # a rerun reads no pixel: no token asked for, nothing written
    sas_token_service.reset()
    proc = run_archive(cases_archive, dest, *hosts, catalog=stac_server.url, env=env)
    assert proc.returncode == 0 and "nothing to do" in proc.stderr, proc.stderr[-3000:]
    assert sum(sas_token_service.request_counts().values()) == 0


def test_kill_9_at_any_instant_leaves_only_whole_chips(cases_archive, tmp_path):
    """The run killed (SIGKILL, the whole process group) at several instants: every chip under its
    final name is whole and every manifest lists only chips that are there; the rerun completes
    the rest and equals the oracle."""
    from tests.helpers import LUIGI, kill_when

    dest = tmp_path / "out"
    args = [LUIGI, "--module", MODULE, "DatacubeSample", "--sample", str(cases_archive.sample_path), "--catalog",
            str(cases_archive.catalog_path), "--dest", str(dest), "--chip-size", str(ARCHIVE_CHIP), "--local-scheduler",
            "--dask-n-workers", "1", "--dask-processes", "false"]  # fmt: skip
    interrupted = 0
    for delay in (0.0, 0.5):  # after the run's first chip appeared
        before = {str(p) for p in dest.rglob("*.tif")}

        def new_chip(before: set[str] = before) -> bool:
            return bool({str(p) for p in dest.rglob("*.tif")} - before)

        interrupted += kill_when(args, cwd=tmp_path, env=luigi_env(), ready=new_chip, delay=delay)
        for chip in dest.rglob("claytile_*.tif"):
            with rasterio.open(chip) as ds:
                assert ds.count == 13 and ds.read().shape == (13, ARCHIVE_CHIP, ARCHIVE_CHIP)
        for path in dest.rglob("manifests/**/*.json"):
            doc = json.loads(path.read_text())
            assert all((dest / k["path"]).exists() for k in doc["kept"])
    assert interrupted >= 1
    proc = run_archive(cases_archive, dest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert check_against_oracle(cases_archive, dest, cases_archive.items) >= 20
