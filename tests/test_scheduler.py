"""The pipeline against a real central scheduler (luigid): outputs, the scheduler's JSON API
(task states, status messages, progress, error text of a failed task), and
scripts/luigid.py.

Two runs share the session's luigid (tests/test_web_ui.py looks at the same scheduler):
the small archive with ``--workers 2``, and the same archive through a copy of its
catalogue in which one item's qa_pixel points at a truncated copy of its COG, so that one
observation really fails to read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rasterio

from tests import oracle
from tests.helpers import REPO, run_luigi, timesync_args
from tests.servers.luigid import LuigidServer, free_port, luigid_server, session_singleton  # noqa: F401

pytestmark = pytest.mark.slow

# Families every TimeSyncProject run schedules (others, e.g. a per-project report, may be added).
FAMILIES = {"TimeSyncProject", "TimeSyncIngest", "TimeSyncPlotBatch", "TimeSyncSearch"}


def central(
    archive, project_dir: Path, server: LuigidServer, *extra: str, catalog: str | None = None
) -> list[str]:
    """timesync_args for a run against ``server`` instead of the local scheduler."""
    args = [a for a in timesync_args(archive, project_dir, catalog=catalog) if a != "--local-scheduler"]
    return [*args, *server.scheduler_args(), *extra]


def small_expected(request: pytest.FixtureRequest, archive) -> dict[str, Any]:
    """The oracle's outputs for the small archive (computed once per session)."""
    return session_singleton(
        request,
        "oracle-small",
        lambda: oracle.expected_outputs(archive.catalog_ndjson, archive.plot_file, asset_href="href"),
        lambda _: None,
    )


def tasks_of(server: LuigidServer, project_dir: Path, status: str = "") -> dict[str, dict[str, Any]]:
    """The scheduler's tasks of one run (told apart by their project_dir parameter)."""
    return {
        tid: t
        for tid, t in server.task_list(status).items()
        if t["params"].get("project_dir") == str(project_dir)
    }


# --------------------------------------------------------------------------------------
# A real broken asset
# --------------------------------------------------------------------------------------


@dataclass
class BrokenAsset:
    catalog: Path  # the copied catalogue (NDJSON)
    item_id: str
    band: str
    path: Path  # the truncated COG the item now points at
    project_id: str
    plot_id: str
    key: str  # YYYY_DDD of the observation that must fail


def truncated_cog(src: Path, dst: Path) -> None:
    """Copy a COG cut just after the start of its first data block: the header and
    every IFD are intact (it opens), but no block with content can be read."""
    offsets = []
    with rasterio.open(src) as ds:
        rows, cols = (
            (ds.height + ds.block_shapes[0][0] - 1) // ds.block_shapes[0][0],
            (ds.width + ds.block_shapes[0][1] - 1) // ds.block_shapes[0][1],
        )
        for r in range(rows):
            for c in range(cols):
                value = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)
                if value and int(value):
                    offsets.append(int(value))
    data = src.read_bytes()
    cut = min(offsets) + 16 if offsets else len(data) // 2
    assert cut < len(data)
    dst.write_bytes(data[:cut])


def break_one_asset(archive, expected: dict[str, Any], workdir: Path, band: str = "qa_pixel") -> BrokenAsset:
    """Copy the catalogue; point ``band`` of the item behind one expected observation at a
    truncated copy of its COG."""
    workdir.mkdir(parents=True, exist_ok=True)
    items = [
        json.loads(line) for line in Path(archive.catalog_ndjson).read_text().splitlines() if line.strip()
    ]
    plots = {(p["project_id"], p["plot_id"]): p for p in oracle.read_plots(archive.plot_file)}
    pattern = re.compile(r"^prj_(?P<prj>[^/]+)/(?P<plot>.+)_spectral_files_set_(?P<key>\d{4}_\d{3})\.csv$")
    for name in sorted(expected):
        m = pattern.match(name)
        if not m:
            continue
        plot = plots[(m["prj"], m["plot"])]
        h, v = oracle.tile_of(plot["x"], plot["y"])
        for item in items:
            props = item["properties"]
            year, doy = oracle.year_doy(props["datetime"])
            if (int(props["landsat:grid_horizontal"]), int(props["landsat:grid_vertical"])) == (
                h,
                v,
            ) and oracle.yyyy_ddd(year, doy) == m["key"]:
                src = Path(item["assets"][band]["href"])
                broken = workdir / f"truncated_{src.name}"
                truncated_cog(src, broken)
                item["assets"][band]["href"] = str(broken)
                catalog = workdir / "items.ndjson"
                catalog.write_text("".join(json.dumps(i) + "\n" for i in items))
                return BrokenAsset(catalog, item["id"], band, broken, m["prj"], m["plot"], m["key"])
    raise AssertionError("no observation to break in the small archive")


# --------------------------------------------------------------------------------------
# The two runs, shared with tests/test_web_ui.py
# --------------------------------------------------------------------------------------


@dataclass
class SchedulerRuns:
    server: LuigidServer
    archive: Any
    expected: dict[str, Any]
    good_project: Path
    good: subprocess.CompletedProcess
    bad_project: Path
    bad: subprocess.CompletedProcess
    broken: BrokenAsset


def do_scheduler_runs(
    server: LuigidServer, archive, expected: dict[str, Any], workdir: Path
) -> SchedulerRuns:
    good_project = workdir / "good" / "project"
    good_project.parent.mkdir(parents=True)
    good = run_luigi(central(archive, good_project, server, "--workers", "2"), cwd=good_project.parent)
    broken = break_one_asset(archive, expected, workdir / "broken-catalog")
    bad_project = workdir / "bad" / "project"
    bad_project.parent.mkdir(parents=True)
    bad = run_luigi(
        central(archive, bad_project, server, catalog=str(broken.catalog)), cwd=bad_project.parent
    )
    return SchedulerRuns(server, archive, expected, good_project, good, bad_project, bad, broken)


@pytest.fixture(scope="session")
def scheduler_runs(request, luigid_server, small_archive, tmp_path_factory) -> SchedulerRuns:  # noqa: F811
    expected = small_expected(request, small_archive)
    return session_singleton(
        request,
        "scheduler-runs",
        lambda: do_scheduler_runs(luigid_server, small_archive, expected, tmp_path_factory.mktemp("central")),
        lambda _: None,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_run_with_two_workers_against_luigid_equals_the_oracle(scheduler_runs):
    runs = scheduler_runs
    assert runs.good.returncode == 0, runs.good.stderr[-4000:]
    assert oracle.compare_tree(runs.good_project, runs.expected) == []
    assert runs.server.alive()


def test_scheduler_lists_the_runs_tasks_done(scheduler_runs):
    runs = scheduler_runs
    tasks = tasks_of(runs.server, runs.good_project)
    assert {t["name"] for t in tasks.values()} >= FAMILIES
    assert {t["status"] for t in tasks.values()} == {"DONE"}, {
        t["display_name"]: t["status"] for t in tasks.values()
    }
    done = tasks_of(runs.server, runs.good_project, "DONE")
    assert set(done) == set(tasks)
    n_projects = len({p["project_id"] for p in oracle.read_plots(runs.archive.plot_file)})
    names = [t["name"] for t in done.values()]
    assert names.count("TimeSyncProject") == 1
    assert names.count("TimeSyncIngest") == n_projects
    assert names.count("TimeSyncPlotBatch") >= n_projects
    assert names.count("TimeSyncSearch") >= 4  # the 2 x 2 tiles of the small archive


def test_status_messages_and_progress_are_visible_in_the_scheduler(scheduler_runs):
    server = scheduler_runs.server
    batches = {
        tid: t
        for tid, t in tasks_of(server, scheduler_runs.good_project, "DONE").items()
        if t["name"] == "TimeSyncPlotBatch"
    }
    assert batches
    seen = []
    for tid in batches:
        message = server.api("get_task_status_message", task_id=tid)["statusMessage"]
        progress = server.api("get_task_progress_percentage", task_id=tid)["progressPercentage"]
        seen.append((message, progress))
        m = re.fullmatch(r"(\d+)/(\d+) observations", message or "")
        if m and int(m[2]) > 0:
            assert m[1] == m[2], message  # DONE: every observation accounted for
            assert progress == 100
    assert any(re.fullmatch(r"(\d+)/\1 observations", msg or "") and pct == 100 for msg, pct in seen), seen
    searches = [
        t for t in tasks_of(server, scheduler_runs.good_project).values() if t["name"] == "TimeSyncSearch"
    ]
    assert all((t["status_message"] or "").startswith("searching ") for t in searches), [
        t["status_message"] for t in searches
    ]


def test_broken_asset_fails_its_batch_and_the_scheduler_shows_the_error(scheduler_runs):
    runs = scheduler_runs
    broken = runs.broken
    assert runs.bad.returncode != 0, runs.bad.stderr[-3000:]
    tasks = tasks_of(runs.server, runs.bad_project)
    failed = {tid: t for tid, t in runs.server.task_list("FAILED").items() if tid in tasks}
    assert failed, {t["display_name"]: t["status"] for t in tasks.values()}
    assert {t["name"] for t in failed.values()} == {"TimeSyncPlotBatch"}
    ours = [
        tid for tid, t in failed.items() if t["params"]["project_id"] == broken.project_id
    ]  # the batch holding the plot of the broken observation
    assert ours, failed
    for tid in failed:
        error = runs.server.api("fetch_error", task_id=tid)["error"]
        assert broken.path.name in error, error
        assert "failed" in error and "Traceback" in error, error
    # Upstream of the failure: nothing ran; the searches are done.
    assert all(t["status"] == "DONE" for t in tasks.values() if t["name"] == "TimeSyncSearch")
    assert all(t["status"] != "DONE" for t in tasks.values() if t["name"] in ("TimeSyncProject",))
    assert all(
        t["status"] != "DONE"
        for t in tasks.values()
        if t["name"] == "TimeSyncIngest" and t["params"]["project_id"] == broken.project_id
    )
    # The run's own report names the observation and the file.
    assert broken.path.name in runs.bad.stderr
    assert f"prj {broken.project_id} plot {broken.plot_id} {broken.key}" in runs.bad.stderr


def test_broken_asset_run_writes_everything_else(scheduler_runs):
    """Only outputs are missing (nothing wrong is written): the broken observation's four
    files, the series of the plots it failed, and their projects' ingest files."""
    runs = scheduler_runs
    b = runs.broken
    differences = oracle.compare_tree(runs.bad_project, runs.expected)
    assert differences
    assert all(d.startswith("missing: ") for d in differences), differences
    missing = {d[len("missing: ") :] for d in differences}
    assert f"prj_{b.project_id}/{b.plot_id}_spectral_files_set_{b.key}.csv" in missing
    for kind in ("tc", "b743", "b432"):
        assert f"prj_{b.project_id}/{kind}/plot_{b.plot_id}/plot_{b.plot_id}_{b.key}.png" in missing
    for name in missing:
        assert name.endswith((f"_{b.key}.csv", f"_{b.key}.png", "_series.csv", "_region_spectrals.csv")), name


def test_luigid_script_starts_and_stops_a_background_scheduler(tmp_path):
    script = [sys.executable, str(REPO / "scripts" / "luigid.py")]
    d = tmp_path / "luigid"
    port = free_port()
    started = subprocess.run(
        [*script, "start", "--dir", str(d), "--port", str(port)], capture_output=True, text=True, timeout=60
    )
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url == f"http://127.0.0.1:{port}"
        pid = int((d / "luigid.pid").read_text())
        with urllib.request.urlopen(f"{url}/static/visualiser/index.html", timeout=5) as r:
            assert b"taskTable" in r.read()
        with urllib.request.urlopen(
            f"{url}/api/task_list?data=%7B%22status%22%3A%22DONE%22%7D", timeout=5
        ) as r:
            assert json.loads(r.read()) == {"response": {}}
        cfg = (d / "luigid.cfg").read_text()
        assert "record_task_history = false" in cfg and f"state_path = {d / 'luigid-state.pickle'}" in cfg
        assert (d / "log" / "luigi-server.log").exists()
        again = subprocess.run(
            [*script, "start", "--dir", str(d), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0 and again.stdout.strip() == url and "already running" in again.stderr
        status = subprocess.run(
            [*script, "status", "--dir", str(d)], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0 and status.stdout.strip() == url
    finally:
        stopped = subprocess.run(
            [*script, "stop", "--dir", str(d)], capture_output=True, text=True, timeout=60
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not (d / "luigid.pid").exists()
    assert not _alive(pid)
    assert (d / "luigid-state.pickle").exists()  # saved on SIGTERM
    status = subprocess.run([*script, "status", "--dir", str(d)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 3
