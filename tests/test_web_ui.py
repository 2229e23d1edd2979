"""The central scheduler's web UI (luigi's visualiser) in a real headless Chromium, after the
runs of tests/test_scheduler.py: the project's tasks are listed DONE, the batch broken by a
truncated COG is FAILED and its error text shows in the traceback dialog.

Screenshots go to test-artifacts/web-ui/ (gitignored). Debian's chromium and the pinned
playwright are installed by tests/servers/browser.py when missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO
from tests.servers.browser import chromium_page
from tests.servers.luigid import luigid_server  # noqa: F401
from tests.test_scheduler import FAMILIES, SchedulerRuns, scheduler_runs, tasks_of  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts" / "web-ui"

ROWS_JS = """() => Array.from(document.querySelectorAll('#taskTable tbody tr')).map(
    tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()))"""


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


def open_task_list(page: Any, url: str, fragment: str = "") -> list[list[str]]:
    """Load the visualiser's task list (all entries on one page) and return its rows as
    [status, name, details, priority, time, actions] texts."""
    page.goto(f"{url}/static/visualiser/index.html#length=100{fragment}")
    page.wait_for_function(
        "() => document.querySelectorAll('#taskTable tbody tr td').length > 1", timeout=20000
    )
    page.wait_for_load_state("networkidle")
    return page.evaluate(ROWS_JS)


def rows_of(rows: list[list[str]], project_dir: Path, family: str | None = None) -> list[list[str]]:
    return [r for r in rows if str(project_dir) in r[2] and (family is None or r[1] == family)]


def test_visualiser_lists_done_and_failed_tasks_and_shows_the_error(
    scheduler_runs: SchedulerRuns,  # noqa: F811  (the fixture imported above)
    artifacts: Path,
):
    runs = scheduler_runs
    url = runs.server.url
    with chromium_page() as page:
        rows = open_task_list(page, url)
        page.screenshot(path=str(artifacts / "1-task-list.png"), full_page=True)

        good = rows_of(rows, runs.good_project)
        assert {r[1] for r in good} >= FAMILIES, rows
        assert all(r[0] == "DONE" for r in good), good
        assert len(good) == len(tasks_of(runs.server, runs.good_project))
        bad_batches = rows_of(rows, runs.bad_project, "TimeSyncPlotBatch")
        assert any(r[0] == "FAILED" for r in bad_batches), bad_batches

        # Only the batches, both runs: DONE ones of the good run, the FAILED one(s) of the other.
        rows = open_task_list(page, url, "&family=TimeSyncPlotBatch")
        assert {r[1] for r in rows} == {"TimeSyncPlotBatch"}, rows
        assert {r[0] for r in rows_of(rows, runs.good_project)} == {"DONE"}
        assert "FAILED" in {r[0] for r in rows_of(rows, runs.bad_project)}
        page.screenshot(path=str(artifacts / "2-batches-done-and-failed.png"), full_page=True)

        # A DONE batch's status message (the comment icon).
        done_row = (
            page.locator("#taskTable tbody tr", has_text=str(runs.good_project)).filter(has_text="DONE").first
        )
        done_row.locator(".statusMessage").click()
        modal = page.locator("#statusMessageModal")
        modal.wait_for(state="visible", timeout=10000)
        page.wait_for_timeout(500)  # the fade-in
        message = modal.locator("pre").first.inner_text()
        assert (
            message.endswith(" observations")
            and message.split(" ")[0].split("/")[0] == message.split(" ")[0].split("/")[1]
        ), message
        page.screenshot(path=str(artifacts / "3-status-message.png"))
        modal.locator("button[data-dismiss=modal]").first.click()
        modal.wait_for(state="hidden", timeout=10000)

        # The FAILED batch's traceback (the bug icon): the error text names the broken file.
        failed_row = (
            page.locator("#taskTable tbody tr", has_text=str(runs.bad_project))
            .filter(has_text="FAILED")
            .first
        )
        failed_row.locator(".showError").click()
        modal = page.locator("#errorModal")
        modal.wait_for(state="visible", timeout=10000)
        # Wrap the traceback (it scrolls sideways otherwise) so the screenshot shows the message.
        page.add_style_tag(
            content="#errorModal .modal-dialog { width: 90%; } #errorModal pre { white-space: pre-wrap; word-break: break-all; max-height: none; }"
        )
        page.wait_for_timeout(500)
        error = modal.locator("pre").first.inner_text()
        assert runs.broken.path.name in error, error
        assert "observation(s)" in error and "failed" in error, error
        assert "Traceback" in modal.inner_text()
        page.screenshot(path=str(artifacts / "4-failed-task-error.png"))

    for name in ("1-task-list", "2-batches-done-and-failed", "3-status-message", "4-failed-task-error"):
        png = artifacts / f"{name}.png"
        assert png.stat().st_size > 10_000, png
