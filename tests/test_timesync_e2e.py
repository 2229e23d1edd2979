"""End to end: the luigi command line on generated archives, checked file by file, cell by
cell and pixel by pixel against tests/oracle.py, an independent implementation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests import oracle
from tests.helpers import outputs_only, run_luigi, snapshot, timesync_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(small_archive, tmp_path_factory):
    """One full run of the small archive, shared by the tests that only look at it."""
    project = tmp_path_factory.mktemp("run") / "project"
    proc = run_luigi(timesync_args(small_archive, project), cwd=project.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = oracle.expected_outputs(
        small_archive.catalog_ndjson, small_archive.plot_file, asset_href="href"
    )
    return project, proc, expected


def test_outputs_equal_the_recipe(finished_run):
    project, proc, expected = finished_run
    assert oracle.compare_tree(project, expected) == []
    pngs = [k for k in expected if k.endswith(".png")]
    assert len(pngs) >= 30  # the archive is not trivially empty
    assert "TimeSync summary" in proc.stderr
    assert f"{len(pngs) // 3} written" in proc.stderr


def test_second_run_writes_nothing(finished_run, small_archive):
    project, _, _ = finished_run
    before = snapshot(project)
    proc = run_luigi(timesync_args(small_archive, project), cwd=project.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(project) == before
    assert "Nothing to do" in proc.stderr


def test_unseen_archive_and_feature_collection(other_archive, tmp_path):
    """Another seed (dates, plots, pixels the code has never seen), read from the
    FeatureCollection form of the catalogue."""
    project = tmp_path / "p"
    proc = run_luigi(
        timesync_args(other_archive, project, catalog=str(other_archive.catalog_geojson)), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = oracle.expected_outputs(
        other_archive.catalog_ndjson, other_archive.plot_file, asset_href="href"
    )
    assert oracle.compare_tree(project, expected) == []


def test_datetime_range(small_archive, tmp_path):
    project = tmp_path / "p"
    proc = run_luigi(timesync_args(small_archive, project, "--datetime", "1984-01/2012-12-31"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = oracle.expected_outputs(
        small_archive.catalog_ndjson,
        small_archive.plot_file,
        asset_href="href",
        datetime_range=("1984-01", "2012-12-31"),
    )
    assert oracle.compare_tree(project, expected) == []
    assert not any(k.startswith(("2013", "2020", "2023")) for k in expected)


@pytest.mark.parametrize("victim_kind", ["png", "obs_csv", "series", "ingest"])
def test_deleted_output_is_recreated_and_nothing_else_changes(
    finished_run, small_archive, tmp_path, victim_kind
):
    base, _, expected = finished_run
    project = tmp_path / "project"
    shutil.copytree(base, project)
    before = outputs_only(snapshot(project))  # the report is a view: refreshed after any change
    pick = {
        "png": lambda k: k.endswith(".png") and "/b743/" in k,
        "obs_csv": lambda k: "_spectral_files_set_" in k,
        "series": lambda k: "/series/" in k,
        "ingest": lambda k: k.endswith("_region_spectrals.csv"),
    }[victim_kind]
    victim = sorted(k for k in before if pick(k))[len([k for k in before if pick(k)]) // 2]
    (project / victim).unlink()
    proc = run_luigi(timesync_args(small_archive, project), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = outputs_only(snapshot(project))
    assert set(after) == set(before)
    assert {k: v[1] for k, v in after.items()} == {
        k: v[1] for k, v in before.items()
    }  # same content everywhere
    assert oracle.compare_tree(project, expected) == []


def test_one_observation_by_name(finished_run, small_archive, tmp_path):
    base, _, expected = finished_run
    project = tmp_path / "project"
    shutil.copytree(base, project)
    csv_key = sorted(k for k in expected if "_spectral_files_set_" in k)[0]
    prj = csv_key.split("/")[0][len("prj_") :]
    plot_id, date = Path(csv_key).stem.split("_spectral_files_set_")
    files = [
        k for k in expected if k.endswith(f"plot_{plot_id}_{date}.png") and k.startswith(f"prj_{prj}/")
    ] + [csv_key]
    assert len(files) == 4
    for k in files:
        (project / k).unlink()
    args = timesync_args(small_archive, project)
    args[0] = "TimeSyncObservation"
    proc = run_luigi([*args, "--project-id", prj, "--plot-id", plot_id, "--date", date], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert oracle.compare_tree(project, expected) == []


def test_bad_plot_file_fails_cleanly_and_writes_nothing(small_archive, tmp_path):
    plots = tmp_path / "plots.csv"
    lines = Path(small_archive.plot_file).read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",12x"
    plots.write_text("\n".join(lines) + "\n")
    project = tmp_path / "project"
    args = timesync_args(small_archive, project)
    args[args.index("--plot-file") + 1] = str(plots)
    proc = run_luigi(args, cwd=tmp_path)
    assert proc.returncode != 0
    assert f"{plots}, line 3, field 'y': '12x' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not project.exists()


def test_search_results_are_kept_and_not_repeated(finished_run):
    project, _, _ = finished_run
    searches = list((project / "_state" / "search").rglob("*.json"))
    assert len(searches) >= 4  # one per tile of the 2 x 2 block
    doc = json.loads(searches[0].read_text())
    assert doc["items"] and all(set(i["assets"]) >= {"qa_pixel", "red"} for i in doc["items"])
