"""Items a search returns that the run cannot use are never dropped silently (issue 11,
part 2): classified with the field and reason (pipeline/timesync/plan.py), recorded under
``_state/`` (pipeline/failures.py), named at the end of the run, shown in the QA report,
counted by the dry run, the exit status non-zero; a rerun after the catalogue is fixed picks
them up and gives exactly the recipe's outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.failures import (
    Failure,
    FailureRecord,
    UnusableItem,
    read_record,
    read_unusable,
    unique_items,
    write_record,
    write_unusable,
)
from pipeline.timesync.plan import acquisition_date, classify_items, group_observations, id_date, id_tile
from targets.store import Store
from tests import oracle
from tests.helpers import run_luigi, timesync_args

BANDS = ("blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel")
TILE = ("CU", 3, 4)


def item(item_id: str = "LC08_CU_003004_20200110_20200120_02_SR", **props: object) -> dict:
    p = {
        "datetime": "2020-01-10T18:00:00Z",
        "landsat:grid_horizontal": "03",
        "landsat:grid_vertical": "04",
        "landsat:grid_region": "CU",
    }
    p.update(props)
    return {
        "type": "Feature", "id": item_id, "collection": "landsat-c2ard-sr", "_source": "items.ndjson, line 7",
        "properties": {k: v for k, v in p.items() if v is not None},
        "assets": {b: {"href": f"/data/{item_id}_{b}.TIF"} for b in BANDS},
    }  # fmt: skip


# ---- classification ------------------------------------------------------------------------
def test_ids_name_their_tile_and_acquisition_date():
    assert id_tile("LT05_CU_003004_19970129_20210603_02_SR") == ("CU", 3, 4)
    assert id_date("LT05_CU_003004_19970129_20210603_02_SR") == (1997, 29)
    assert id_tile("HLS.S30.T10TET.2019150T190921.v2.0") is None and id_date("x") is None
    assert id_date("LT05_CU_003004_19971329_20210603_02_SR") is None  # month 13
    assert acquisition_date(item(datetime="not-a-date")) == (2020, 10)  # from the id
    assert acquisition_date({"id": "x", "properties": {"datetime": "not-a-date"}}) is None


@pytest.mark.parametrize(
    "change, field, reason, searched",
    [
        ({"datetime": "not-a-date"}, "properties.datetime", "unparsable datetime 'not-a-date'", TILE),
        ({"datetime": None}, "properties.datetime", "missing datetime", TILE),
        (
            {"landsat:grid_vertical": None},
            "properties.landsat:grid_vertical",
            "missing or malformed grid property None",
            TILE,
        ),
        (
            {"landsat:grid_region": None},
            "properties.landsat:grid_region",
            "missing or malformed grid property None",
            TILE,
        ),
        # properties that contradict the id: returned by the search of the properties' tile
        (
            {"landsat:grid_vertical": "05"},
            "properties.landsat:grid_vertical",
            "'05' does not match the tile its id names (CU h003 v004)",
            ("CU", 3, 5),
        ),
        (
            {"landsat:grid_region": "AK"},
            "properties.landsat:grid_region",
            "'AK' does not match the tile its id names (CU h003 v004)",
            ("AK", 3, 4),
        ),
    ],
)
def test_an_unusable_item_is_named_with_its_field_and_reason(change, field, reason, searched):
    good = item("LC08_CU_003004_20200126_20200201_02_SR", datetime="2020-01-26T18:00:00Z")
    bad = item(**change)
    refs, rejected = classify_items([good, bad], "href", collection="landsat-c2ard-sr", tile=searched)
    assert [r.id for r in refs] == [good["id"]]
    (r,) = rejected
    assert r.item == UnusableItem(
        "landsat-c2ard-sr", bad["id"], f"field {field!r}: {reason}", "items.ndjson, line 7"
    )
    assert r.item.describe() == f"items.ndjson, line 7 (item {bad['id']}), field {field!r}: {reason}"
    assert r.date == (2020, 10)  # its acquisition, from the datetime or else the id


def test_missing_assets_and_hrefs_are_unusable_per_asset_href():
    no_red = item()
    del no_red["assets"]["red"]
    plain = item("LC08_CU_003004_20200126_20200201_02_SR")  # plain hrefs only
    refs, rejected = classify_items([no_red, plain], "href", collection="c", tile=TILE)
    assert [r.id for r in refs] == [plain["id"]] and [r.item.reason for r in rejected] == [
        "field 'assets.red': missing asset 'red'"
    ]
    refs, rejected = classify_items([plain], "s3", collection="c", tile=TILE)
    assert refs == [] and [r.item.reason for r in rejected] == [
        "field 'assets.blue.alternate.s3.href': missing href"
    ]


def test_an_item_without_grid_properties_belongs_to_the_tile_its_id_names():
    """A search that cannot decide the grid equality returns such an item for every tile:
    only the search of the tile its id names reports it (once per project, not per tile)."""
    orphan = item("LC08_CU_004004_20200110_20200120_02_SR", **{"landsat:grid_horizontal": None})
    assert classify_items([orphan], "href", collection="c", tile=TILE) == ([], [])
    _, rejected = classify_items([orphan], "href", collection="c", tile=("CU", 4, 4))
    assert [r.item.id for r in rejected] == [orphan["id"]]
    nameless = {**orphan, "id": "some-other-id"}
    _, rejected = classify_items([nameless], "href", collection="c", tile=TILE)
    assert (
        len(rejected) == 1 and rejected[0].tile is None
    )  # no tile to tell: reported here, may lie under any plot
    assert rejected[0].date == (2020, 10)


def test_an_undated_unusable_item_blocks_every_acquisition_of_the_tile():
    refs, _ = classify_items(
        [item(), item("LC08_CU_003004_20200126_20200201_02_SR", datetime="2020-01-26T18:00:00Z")],
        "href",
        collection="c",
        tile=TILE,
    )
    obs = group_observations([refs], [[(None, None, "item x: no date")]])
    assert [(o.key, o.unusable) for o in obs] == [
        ("2020_010", ("item x: no date",)),
        ("2020_026", ("item x: no date",)),
    ]


# ---- records -------------------------------------------------------------------------------
def test_records_round_trip_and_an_empty_record_is_no_file(tmp_path):
    store = Store(str(tmp_path))
    a = UnusableItem("c", "b-item", "field 'x': bad", "f.ndjson, line 2")
    b = UnusableItem("c", "a-item", "field 'y': bad")
    write_unusable(store, "_state/unusable.json", [a, b, a])
    assert read_unusable(store, "_state/unusable.json") == [b, a]  # each once, by id
    record = FailureRecord(
        [Failure("2002_172", "RasterReadError: x", "prj 1 plot 2 2002_172", ("t1", "t2"), 2)],
        [a],
        {"plot_id": "2"},
    )
    write_record(store, "_state/failed/plot_2.json", record)
    assert read_record(store, "_state/failed/plot_2.json") == record
    doc = json.loads((tmp_path / "_state/failed/plot_2.json").read_text())
    assert (
        doc["plot_id"] == "2" and doc["failed"][0]["key"] == "2002_172" and doc["failed"][0]["attempts"] == 2
    )
    write_unusable(store, "_state/unusable.json", [])
    write_record(store, "_state/failed/plot_2.json", FailureRecord(context={"plot_id": "2"}))
    assert (
        not (tmp_path / "_state/unusable.json").exists()
        and not (tmp_path / "_state/failed/plot_2.json").exists()
    )
    assert read_record(store, "_state/failed/plot_2.json") == FailureRecord()
    (tmp_path / "old.json").write_text(json.dumps([a.to_json()]))  # a bare list, as HLS wrote it
    assert read_unusable(store, "old.json") == [a]
    assert unique_items([a, b, a]) == [b, a]


# ---- a kept search with unusable items is repeated by the next run ----------------------------------
class ItemsCatalog:
    """A catalogue that returns given items for every search (what LocalCatalog returns for an
    item whose grid properties are missing: it cannot decide the equality)."""

    description = "test catalogue"

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def search(self, *, collection, interval, equals):
        return list(self.items)


def test_a_search_with_unusable_items_is_current_only_in_the_run_that_made_it(tmp_path, monkeypatch):
    from pipeline import runstats
    from pipeline.grid import Tile
    from pipeline.raster import ArchiveAccess
    from pipeline.timesync.engine import Project, RunOptions

    plots = tmp_path / "plots.csv"
    plots.write_text("project_id,plot_id,x,y\n1,a,-2067570,2663790\n")  # tile 003004 only
    broken = item("LC08_CU_003004_20200126_20200201_02_SR", datetime="not-a-date")
    orphan = item(
        "LC08_CU_004004_20200110_20200120_02_SR", **{"landsat:grid_vertical": None}
    )  # another tile's

    def project(items: list[dict]) -> Project:
        p = Project(
            RunOptions(str(plots), str(tmp_path / "p"), "catalog.ndjson", asset_href="href"),
            store=Store(str(tmp_path / "p")),
            access=ArchiveAccess(asset_href="href"),
        )
        p.__dict__["catalog"] = ItemsCatalog(items)
        return p

    tile = Tile(3, 4)
    monkeypatch.setenv(runstats.ENV, str(tmp_path / "run1"))
    (tmp_path / "run1").mkdir()
    first = project([item(), broken, orphan])
    assert not first.search_is_current(tile)  # no search yet
    first.store.write_text(first.search_rel(tile), json.dumps(first.run_search(tile)))
    assert first.search_is_current(tile)  # made by this run
    (plot,) = first.plots
    assert [u.id for u in first.unusable_of(plot)] == [broken["id"]]  # the orphan is tile 004004's
    assert [o.key for o in first.observations(plot)] == ["2020_010"]
    assert first.observations(plot)[0].unusable == ()  # the broken item is of 2020_026, by its id
    assert [u.id for u in first.project_unusable()] == [broken["id"]]

    monkeypatch.setenv(runstats.ENV, str(tmp_path / "run2"))
    (tmp_path / "run2").mkdir()
    assert not project([]).search_is_current(tile)  # the next run searches again
    clean = project([item()])
    clean.store.write_text(clean.search_rel(tile), json.dumps(clean.run_search(tile)))
    monkeypatch.setenv(runstats.ENV, str(tmp_path / "run3"))
    (tmp_path / "run3").mkdir()
    assert project([]).search_is_current(tile)  # nothing unusable: kept for good


# ---- the command line ------------------------------------------------------------------------
def _catalog_with(archive, path: Path, index: int, change) -> tuple[Path, dict]:
    lines = Path(archive.catalog_ndjson).read_text().splitlines()
    victim = json.loads(lines[index])
    change(victim)
    lines[index] = json.dumps(victim)
    path.write_text("\n".join(lines) + "\n")
    return path, victim


def _tail(err: str, n: int = 30) -> str:
    return "\n".join(err.strip().splitlines()[-n:])


@pytest.mark.slow
def test_an_item_without_a_date_is_named_recorded_reported_and_picked_up_after_the_fix(
    small_archive, tmp_path
):
    index = 24
    catalog, victim = _catalog_with(
        small_archive,
        tmp_path / "items.ndjson",
        index,
        lambda i: i["properties"].update(datetime="not-a-date"),
    )
    project = tmp_path / "project"
    args = timesync_args(small_archive, project, catalog=str(catalog))

    # the dry run counts it, names it and exits non-zero; it reads no pixel and writes no output
    dry = run_luigi(["TimeSyncDryRun", *args[1:]], cwd=tmp_path)
    assert dry.returncode != 0, _tail(dry.stderr)
    assert re.search(r"total(\s+\S+){9}\s+1\n", dry.stderr), _tail(dry.stderr)  # the "unusable" column
    assert victim["id"] in _tail(dry.stderr, 2) and "not-a-date" in _tail(dry.stderr, 2)
    assert {p.name for p in project.iterdir()} == {"_state"}

    first = run_luigi(args, cwd=tmp_path)
    err = first.stderr
    assert first.returncode != 0, _tail(err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert (
        f"{catalog}, line {index + 1} (item {victim['id']}), field 'properties.datetime': unparsable datetime 'not-a-date'"
        in last
    )
    assert sum(victim["id"] in line for line in err.splitlines()) == 1  # named once, at the end
    # recorded under _state/ for every plot of its tile, and shown in the QA report
    records = [json.loads(p.read_text()) for p in project.glob("_state/prj_*/failed/plot_*.json")]
    assert records and all(
        [u["id"] for u in r["unusable"]] == [victim["id"]] and r["failed"] == [] for r in records
    )
    plot_ids = {(r["project_id"], r["plot_id"]) for r in records}
    for prj, pid in plot_ids:
        page = (project / f"report/prj_{prj}/plot_{pid}.html").read_text()
        assert victim["id"] in page and "unparsable datetime" in page
    index_html = (project / f"report/prj_{next(iter(plot_ids))[0]}/index.html").read_text()
    assert "unusable catalogue items" in index_html
    # everything else: the recipe's outputs without that item
    kept = [
        ln for i, ln in enumerate(Path(small_archive.catalog_ndjson).read_text().splitlines()) if i != index
    ]
    without = tmp_path / "without.ndjson"
    without.write_text("\n".join(kept) + "\n")
    assert (
        oracle.compare_tree(
            project, oracle.expected_outputs(without, small_archive.plot_file, asset_href="href")
        )
        == []
    )

    # unchanged catalogue: searched again, still named, still non-zero
    again = run_luigi(args, cwd=tmp_path)
    assert again.returncode != 0 and victim["id"] in _tail(again.stderr, 2), _tail(again.stderr)

    # the catalogue fixed: the rerun picks the item up, the records go, exit 0, the recipe's outputs
    catalog.write_text(Path(small_archive.catalog_ndjson).read_text())
    fixed = run_luigi(args, cwd=tmp_path)
    assert fixed.returncode == 0, _tail(fixed.stderr)
    assert "UNUSABLE" not in fixed.stderr
    assert not list(project.glob("_state/prj_*/failed/plot_*.json"))
    assert (
        oracle.compare_tree(
            project,
            oracle.expected_outputs(small_archive.catalog_ndjson, small_archive.plot_file, asset_href="href"),
        )
        == []
    )
    assert (
        'id="unusable"'
        not in (
            project / f"report/prj_{next(iter(plot_ids))[0]}/plot_{next(iter(plot_ids))[1]}.html"
        ).read_text()
    )


def _projects_on_tile(plot_file: Path, item_id: str) -> tuple[list[str], list[str]]:
    """(project ids with a plot whose chip reaches the item's tile, the other project ids)."""
    import csv

    from pipeline.grid import chip_tiles, get_region

    region, h, v = id_tile(item_id) or ("", -1, -1)
    with open(plot_file, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    on = {
        r["project_id"]
        for r in rows
        if any(
            (t.h, t.v) == (h, v) for t in chip_tiles(get_region(region), int(r["x"]), int(r["y"]), 255, 255)
        )
    }
    return sorted(on), sorted({r["project_id"] for r in rows} - on)


@pytest.mark.parametrize("task", ["TimeSyncIngest", "TimeSyncReport"])
def test_a_project_task_run_alone_fails_for_an_unusable_item(small_archive, tmp_path, task):
    """TimeSyncIngest or TimeSyncReport as the root task: everything written, but the run
    exits non-zero and names the unusable item last, as TimeSyncProject does."""
    index = 24
    catalog, victim = _catalog_with(
        small_archive,
        tmp_path / "items.ndjson",
        index,
        lambda i: i["properties"].update(datetime="not-a-date"),
    )
    affected, _others = _projects_on_tile(small_archive.plot_file, victim["id"])
    assert affected
    project = tmp_path / "project"
    args = timesync_args(small_archive, project, catalog=str(catalog))
    run = run_luigi([task, *args[1:], "--project-id", affected[0]], cwd=tmp_path)
    assert run.returncode == 30, _tail(run.stderr)
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert victim["id"] in last and "unparsable datetime 'not-a-date'" in last, _tail(run.stderr)
    # everything of the project is written all the same: its per-year ingest files
    assert list(project.glob(f"*_prj_{affected[0]}_region_spectrals.csv")), sorted(
        p.name for p in project.iterdir()
    )
    if task == "TimeSyncReport":
        assert (project / f"report/prj_{affected[0]}/index.html").exists()
