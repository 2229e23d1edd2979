"""The QA report as a project lead sees it: real pages opened from the file system in
headless Chromium (Debian's ``chromium``, driven by Python Playwright), screenshots kept in
``test-artifacts/``, and assertions on what the browser shows: rows, counts, chips that
loaded, the composite toggle, sorting, keyboard navigation."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.timesync import report
from tests.helpers import REPO
from tests.test_report import disk_truth, plot_ids_of, shared_report

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = REPO / "test-artifacts"
VIEWPORT = {"width": 1400, "height": 900}


def ensure_chromium() -> str:
    """Debian's chromium, installed with apt-get when absent (idempotent; waits for the dpkg lock)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            f"{CHROMIUM} is missing and cannot be installed here: run `apt-get install -y chromium` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    install = ["apt-get", "install", "-y", "-q", *lock, "chromium"]
    if subprocess.run(install, env=env, capture_output=True, text=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q", *lock], env=env, capture_output=True, text=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(CHROMIUM):
            pytest.fail(f"apt-get install chromium failed:\n{proc.stderr[-3000:]}")
    return CHROMIUM


@pytest.fixture(scope="module")
def run(small_archive, tmp_path_factory) -> dict[str, Any]:
    return shared_report(small_archive, tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = ensure_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Python playwright is missing: pip install playwright (never `playwright install`: Debian's chromium is used)"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield pg
        assert errors == [], errors  # no script error, no failed load reported by the page
    finally:
        context.close()


def url(path: Path) -> str:
    return path.resolve().as_uri()


def shot(pg: Any, name: str, *, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / name
    pg.screenshot(path=str(out), full_page=full_page)
    assert out.stat().st_size > 10_000
    return out


def load_every_image(pg: Any, selector: str = "img") -> None:
    """Bring each image into view (chips load lazily), then wait until all have pixels."""
    pg.evaluate(
        """async (sel) => {
            for (const img of document.querySelectorAll(sel)) { img.scrollIntoView(); await new Promise(r => setTimeout(r, 15)); }
            window.scrollTo(0, 0);
        }""",
        selector,
    )
    pg.wait_for_function(
        "(sel) => Array.from(document.querySelectorAll(sel)).every(i => i.complete && i.naturalWidth > 0)",
        arg=selector,
        timeout=30_000,
    )


def busiest_plot(run: dict[str, Any], small_archive: Any) -> tuple[str, str, dict[str, Any]]:
    """The plot with the most cloudy observations (then the most written): the page to look at."""
    best = None
    for pid in run["written"]:
        for plot_id in plot_ids_of(small_archive.plot_file, pid):
            t = disk_truth(run["dir"], pid, plot_id)
            score = (t["cloudy"], t["written"])
            if best is None or score > best[0]:
                best = (score, pid, plot_id, t)
    assert best is not None
    return best[1], best[2], best[3]


def test_index_shows_one_row_per_plot_with_the_counts(run, small_archive, page):
    pid = "1001"
    page.goto(url(run["dir"] / report.report_index(pid)))
    expected = plot_ids_of(small_archive.plot_file, pid)
    rows = page.locator("#plots tbody tr.plot")
    assert rows.count() == len(expected)
    shown = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        cells = {
            c: row.locator(f'td[data-col="{c}"]').inner_text().strip()
            for c in ("written", "fill", "cloudy", "failed")
        }
        shown[row.get_attribute("data-plot")] = cells
    for plot_id in expected:
        t = disk_truth(run["dir"], pid, plot_id)
        assert shown[plot_id] == {
            "written": str(t["written"]),
            "fill": str(t["fill"]),
            "cloudy": str(t["cloudy"]),
            "failed": "0",
        }
    assert page.locator("svg.spark").count() == len(expected)
    assert (
        page.locator("svg.spark polyline").count() >= len(expected) - 1
    )  # an NBR line in (almost) every row
    assert page.locator(".card").first.is_visible()
    shot(page, "report_index.png")

    # sorting: click "written" twice, rows follow
    header = page.locator("#plots thead th", has_text="written")
    header.click()
    values = [int(v) for v in page.locator('#plots tbody td[data-col="written"]').all_inner_texts()]
    assert values == sorted(values)
    header.click()
    values = [int(v) for v in page.locator('#plots tbody td[data-col="written"]').all_inner_texts()]
    assert values == sorted(values, reverse=True)
    # filtering by plot id
    page.fill("#filter", expected[0])
    assert page.locator("#plots tbody tr.plot:visible").count() >= 1
    assert page.locator("#shown").inner_text() == str(page.locator("#plots tbody tr.plot:visible").count())
    # a click on a row opens the plot page
    page.fill("#filter", "")
    page.locator(f'#plots tbody tr.plot[data-plot="{expected[0]}"] td[data-col="written"]').click()
    page.wait_for_url(f"**/plot_{expected[0]}.html")


def test_plot_page_filmstrip_toggle_and_trajectories(run, small_archive, page):
    pid, plot_id, truth = busiest_plot(run, small_archive)
    assert truth["cloudy"] > 0
    page.goto(url(run["dir"] / report.plot_page(pid, plot_id)))
    chips = page.locator("#filmstrip figure.chip img")
    assert chips.count() == truth["written"]
    load_every_image(page)
    widths = page.eval_on_selector_all("#filmstrip img", "imgs => imgs.map(i => i.naturalWidth)")
    assert widths == [255] * truth["written"]  # every chip loaded, at its real size
    assert page.eval_on_selector("#trajectories", "i => i.naturalWidth") == 1080
    srcs = page.eval_on_selector_all("#filmstrip img", "imgs => imgs.map(i => i.getAttribute('src'))")
    assert all(f"/b743/plot_{plot_id}/" in s for s in srcs)
    assert [
        page.locator("#filmstrip figure.chip").nth(i).get_attribute("data-key") for i in range(chips.count())
    ] == truth["keys"]

    # the cloudy chips carry a visible badge and the red frame; the others none
    cloudy = page.locator("#filmstrip figure.chip.cloudy")
    assert cloudy.count() == truth["cloudy"]
    for i in range(cloudy.count()):
        badge = cloudy.nth(i).locator(".badge", has_text="CLOUDY")
        badge.scroll_into_view_if_needed()
        assert badge.is_visible()
        assert cloudy.nth(i).evaluate("f => getComputedStyle(f).borderTopColor") == "rgb(224, 49, 49)"
    assert page.locator("#filmstrip figure.chip:not(.cloudy) .badge", has_text="CLOUDY").count() == 0
    # the date under each chip
    first = truth["rows"][truth["keys"][0]]["date"][:10]
    assert first in page.locator("#filmstrip figure.chip figcaption").first.inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "report_plot_b743.png")
    shot(page, "report_plot_full.png", full_page=True)

    # the toggle switches the filmstrip to tc, and the tc chips load
    page.click('#kinds button[data-kind="tc"]')
    assert page.get_attribute('#kinds button[data-kind="tc"]', "aria-pressed") == "true"
    assert page.get_attribute('#kinds button[data-kind="b743"]', "aria-pressed") == "false"
    load_every_image(page, "#filmstrip img")
    srcs = page.eval_on_selector_all("#filmstrip img", "imgs => imgs.map(i => i.getAttribute('src'))")
    assert all(f"../../prj_{pid}/tc/plot_{plot_id}/" in s for s in srcs) and len(srcs) == truth["written"]
    widths = page.eval_on_selector_all(
        "#filmstrip img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert widths == [255] * truth["written"]
    hrefs = page.eval_on_selector_all("#filmstrip a.frame", "as => as.map(a => a.getAttribute('href'))")
    assert hrefs == srcs  # a click on the chip opens the full-size tc PNG
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "report_plot_tc.png")

    # keyboard: 3 is b432; hide cloudy hides exactly the cloudy chips
    page.keyboard.press("3")
    assert "/b432/" in page.locator("#filmstrip img").first.get_attribute("src")
    page.check("#hidecloudy")
    assert page.locator("#filmstrip figure.chip:visible").count() == truth["written"] - truth["cloudy"]
    page.uncheck("#hidecloudy")


def test_navigation_between_plots_and_projects(run, small_archive, page):
    pid = "1001"
    ids = sorted(plot_ids_of(small_archive.plot_file, pid))
    page.goto(url(run["dir"] / report.plot_page(pid, ids[0])))
    assert page.locator("#prev").count() == 0  # the first plot has no previous one
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/plot_{ids[1]}.html")
    page.click("#next")
    page.wait_for_url(f"**/plot_{ids[2]}.html")
    page.keyboard.press("u")
    page.wait_for_url(f"**/prj_{pid}/index.html")
    page.click("header a:has-text('all projects')")
    page.wait_for_url("**/report/index.html")
    projects = page.locator("tr.project")
    assert projects.count() == len(run["written"])
    shot(page, "report_projects.png")
    page.click('tr.project[data-project="0042"] a')
    page.wait_for_url("**/prj_0042/index.html")
    assert page.locator("#plots tbody tr.plot").count() == len(plot_ids_of(small_archive.plot_file, "0042"))
