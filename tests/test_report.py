"""The visual QA report (pipeline/timesync/report.py) of a real pipeline run on the small
synthetic archive: what its pages say is checked against figures computed here, straight
from the files on disk, and every link it holds must resolve."""

from __future__ import annotations

import csv
import json
import math
import os
import posixpath
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from pipeline.failures import FailureRecord, UnusableItem, write_record
from pipeline.raster import ArchiveAccess
from pipeline.timesync import layout, report
from pipeline.timesync.engine import Project, RunOptions
from pipeline.timesync.recipe import tasseled_cap
from targets.s3config import S3Options
from targets.store import Store
from tests.helpers import run_luigi, timesync_args

pytestmark = pytest.mark.slow


# ---- running the pipeline and the report --------------------------------------------------
class RecordingStore(Store):
    """A local Store that remembers the order of its writes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writes: list[str] = []

    def write_bytes(self, rel: str, data: bytes) -> None:
        super().write_bytes(rel, data)
        self.writes.append(rel)


def make_project(archive: Any, project_dir: Path | str, store: Store | None = None) -> Project:
    """A Project as the Luigi tasks build it (same parameters as the run)."""
    opts = RunOptions(
        plot_file=str(archive.plot_file),
        project_dir=str(project_dir),
        catalog=str(archive.catalog_ndjson),
        asset_href="href",
    )
    return Project(opts, store=store or Store(str(project_dir)), access=ArchiveAccess(asset_href="href"))


def run_pipeline(archive: Any, workdir: Path) -> Path:
    project_dir = workdir / "project"
    proc = run_luigi(timesync_args(archive, project_dir), cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return project_dir


def build_report(archive: Any, workdir: Path) -> dict[str, Any]:
    """Run the pipeline once, then write the report of every project id."""
    project_dir = run_pipeline(archive, workdir)
    store = RecordingStore(str(project_dir))
    project = make_project(archive, project_dir, store)
    written = {}
    for pid in project.project_ids():
        before = len(store.writes)
        files = report.write_report(project, pid)
        written[pid] = (files, store.writes[before:])
    return {"dir": project_dir, "project": project, "written": written}


_built: dict[str, dict[str, Any]] = {}


def shared_report(archive: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One pipeline run and report per archive and session, shared by this module and the
    browser tests (neither changes it: tests that alter files work on a copy)."""
    key = str(archive.root)
    if key not in _built:
        _built[key] = build_report(archive, tmp_path_factory.mktemp("report"))
    return _built[key]


@pytest.fixture(scope="module")
def run(small_archive, tmp_path_factory):
    return shared_report(small_archive, tmp_path_factory)


# ---- what the files on disk say, computed independently ----------------------------------
def plot_ids_of(plot_file: Path, project_id: str) -> list[str]:
    with open(plot_file, newline="") as f:
        return [r["plot_id"] for r in csv.DictReader(f) if r["project_id"] == project_id]


def disk_truth(project_dir: Path, project_id: str, plot_id: str) -> dict[str, Any]:
    """Counts of one plot from the observation CSVs, chips and state records on disk."""
    prefix = f"{plot_id}_spectral_files_set_"
    prj = project_dir / f"prj_{project_id}"
    csvs = sorted(p for p in prj.glob(f"{prefix}*.csv"))
    keys = [p.name[len(prefix) : -4] for p in csvs]
    rows = {}
    for k, p in zip(keys, csvs, strict=True):
        with open(p, newline="") as f:
            (row,) = list(csv.DictReader(f))
        rows[k] = row
    fill_path = project_dir / "_state" / f"prj_{project_id}" / "fill" / f"plot_{plot_id}.json"
    fill = json.loads(fill_path.read_text())["fill"] if fill_path.exists() else []
    failed_path = project_dir / "_state" / f"prj_{project_id}" / "failed" / f"plot_{plot_id}.json"
    failed = json.loads(failed_path.read_text())["failed"] if failed_path.exists() else []
    b743 = sorted(p.name for p in (prj / "b743" / f"plot_{plot_id}").glob("*.png"))
    years = sorted(int(k[:4]) for k in keys)
    return {
        "keys": keys,
        "rows": rows,
        "written": len(keys),
        "b743": len(b743),
        "fill": len(fill),
        "cloudy": sum(r["qa"] == "1" for r in rows.values()),
        "cloudy_keys": {k for k, r in rows.items() if r["qa"] == "1"},
        "failed": len(failed),
        "first": years[0] if years else None,
        "last": years[-1] if years else None,
    }


# ---- a small DOM, enough to ask questions of the pages ------------------------------------
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text_parts: list[str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(self.text_parts) + "".join(c.text() for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [
            n for n in self.walk()
            if (tag is None or n.tag == tag) and (cls is None or cls in n.classes) and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]  # fmt: skip


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in _VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent  # type: ignore[assignment]
        if n is not self.root:
            self.cur = n.parent  # type: ignore[assignment]

    def handle_data(self, data: str) -> None:
        self.cur.text_parts.append(data)


def parse_html(path: Path) -> Node:
    b = _Builder()
    b.feed(path.read_text(encoding="utf-8"))
    return b.root


LINK_ATTRS = ("href", "src", "data-b743", "data-tc", "data-b432", "data-href")


def links_of(root: Node) -> list[str]:
    return [n.attrs[a] for n in root.walk() for a in LINK_ATTRS if a in n.attrs]


def resolve(page: Path, link: str) -> Path:
    parts = urlsplit(link)
    assert not parts.scheme and not parts.netloc and not link.startswith("/"), (
        f"{page.name}: not a relative link: {link}"
    )
    return Path(os.path.normpath(page.parent / unquote(parts.path)))


def index_rows(project_dir: Path, pid: str) -> dict[str, dict[str, str]]:
    root = parse_html(project_dir / report.report_index(pid))
    rows = {}
    for tr in root.find_all("tr", cls="plot"):
        cells = {
            td.attrs["data-col"]: td.attrs["data-v"] for td in tr.find_all("td") if "data-col" in td.attrs
        }
        rows[tr.attrs["data-plot"]] = cells
    return rows


# ---- the tests ------------------------------------------------------------------------------
def test_writes_exactly_report_files_with_the_index_last(run):
    project_dir, project = run["dir"], run["project"]
    all_expected = set()
    for pid, (files, writes) in run["written"].items():
        assert files == report.report_files(project, pid)
        # The pipeline's own report drew every figure from the same data: kept, not redrawn
        # (test_figures_are_drawn_again_only_when_their_data_changed). The rest once each.
        figures = {report.plot_figure(pid, p.plot_id) for p in project.plots_of(pid)}
        assert sorted(writes) == sorted(f for f in files if f not in figures)
        assert (
            writes[-3:]
            == files[-3:]
            == [report.report_summary(pid), report.top_index(), report.report_index(pid)]
        )
        assert writes[-1] == report.report_index(pid) == f"report/prj_{pid}/index.html"
        all_expected |= set(files)
    on_disk = {
        p.relative_to(project_dir).as_posix() for p in (project_dir / "report").rglob("*") if p.is_file()
    }
    assert on_disk == all_expected  # nothing else, no temporary files left behind
    assert len(run["written"]) == 2  # the small archive has two project ids


def test_index_has_one_row_per_plot_with_counts_from_disk(run, small_archive):
    project_dir = run["dir"]
    for pid in run["written"]:
        rows = index_rows(project_dir, pid)
        expected_ids = plot_ids_of(small_archive.plot_file, pid)
        assert sorted(rows) == sorted(expected_ids)
        assert list(rows) == sorted(expected_ids)  # the table starts sorted by plot id
        for plot_id, cells in rows.items():
            truth = disk_truth(project_dir, pid, plot_id)
            assert truth["written"] == truth["b743"]
            assert int(cells["written"]) == truth["written"], plot_id
            assert int(cells["fill"]) == truth["fill"], plot_id
            assert int(cells["cloudy"]) == truth["cloudy"], plot_id
            assert int(cells["failed"]) == truth["failed"] == 0, plot_id
            assert int(cells["pending"]) == 0
            assert int(cells["obs"]) == truth["written"] + truth["fill"]
            assert cells["first"] == str(truth["first"]) and cells["last"] == str(truth["last"])
            assert cells["status"] == "complete"
    # the archive has cloudy and fill observations, so these counts are not trivially 0
    truths = [
        disk_truth(project_dir, pid, p)
        for pid in run["written"]
        for p in plot_ids_of(small_archive.plot_file, pid)
    ]
    assert sum(t["cloudy"] for t in truths) > 0 and sum(t["fill"] for t in truths) > 0


def test_summary_cards_and_summary_json(run):
    project_dir = run["dir"]
    for pid in run["written"]:
        doc = json.loads((project_dir / report.report_summary(pid)).read_text())
        rows = index_rows(project_dir, pid)
        assert doc["plots"] == len(rows)
        for k in ("written", "fill", "cloudy", "failed"):
            assert doc[k] == sum(int(r[k]) for r in rows.values())
        root = parse_html(project_dir / report.report_index(pid))
        cards = {
            c.find_all("span")[0].text(): c.find_all("b")[0].text() for c in root.find_all("div", cls="card")
        }
        assert cards["plots"] == str(len(rows))
        assert cards["observations written"] == str(doc["written"])
        assert cards["cloudy (qa 1)"] == str(doc["cloudy"])


def test_every_link_is_relative_and_resolves(run):
    project_dir = run["dir"]
    pages = sorted((project_dir / "report").rglob("*.html"))
    plot_pages = [
        f for files, _ in run["written"].values() for f in files if f.endswith(".html") and "/plot_" in f
    ]
    assert len(pages) == 1 + len(run["written"]) + len(plot_pages)  # top index, project indexes, plot pages
    checked = 0
    for page in pages:
        for link in links_of(parse_html(page)):
            target = resolve(page, link)
            assert target.exists(), f"{page.relative_to(project_dir)}: {link} -> {target} does not exist"
            assert project_dir in target.parents, f"{link} leaves the project directory"
            checked += 1
    assert checked > 100
    # the example of the issue: a plot page reaches a chip two folders up
    page = next(p for p in pages if p.name.startswith("plot_"))
    assert any(link.startswith("../../prj_") and "/b743/" in link for link in links_of(parse_html(page)))


def test_plot_pages_show_every_chip_in_date_order_and_mark_cloudy(run, small_archive):
    project_dir = run["dir"]
    seen_cloudy = 0
    for pid in run["written"]:
        for plot_id in plot_ids_of(small_archive.plot_file, pid):
            truth = disk_truth(project_dir, pid, plot_id)
            root = parse_html(project_dir / report.plot_page(pid, plot_id))
            chips = root.find_all("figure", cls="chip")
            assert [c.attrs["data-key"] for c in chips] == truth["keys"]  # sorted names = date order
            cloudy = {c.attrs["data-key"] for c in chips if "cloudy" in c.classes}
            assert cloudy == truth["cloudy_keys"]
            for c in chips:
                badges = [b.text() for b in c.find_all("span", cls="badge")]
                assert ("CLOUDY" in badges) == (c.attrs["data-key"] in truth["cloudy_keys"])
                (img,) = c.find_all("img")
                key = c.attrs["data-key"]
                assert img.attrs["src"] == f"../../prj_{pid}/b743/plot_{plot_id}/plot_{plot_id}_{key}.png"
                assert img.attrs["data-tc"] == f"../../prj_{pid}/tc/plot_{plot_id}/plot_{plot_id}_{key}.png"
                assert (
                    img.attrs["data-b432"] == f"../../prj_{pid}/b432/plot_{plot_id}/plot_{plot_id}_{key}.png"
                )
                caption = c.find_all("figcaption")[0].text()
                assert truth["rows"][key]["date"][:10] in caption  # the date under the chip
            table_cloudy = {
                tr.attrs["data-key"] for tr in root.find_all("tr", cls="obs") if "cloudy" in tr.classes
            }
            assert table_cloudy == truth["cloudy_keys"]
            assert len(root.find_all("tr", cls="obs")) == truth["written"]
            seen_cloudy += len(cloudy)
            # the trajectory figure is a real PNG
            (fig,) = root.find_all("img", id="trajectories")
            png = resolve(project_dir / report.plot_page(pid, plot_id), fig.attrs["src"]).read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert seen_cloudy > 0


def test_pages_are_self_contained(run):
    for page in (run["dir"] / "report").rglob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text, page
        root = parse_html(page)
        assert not root.find_all("link") and all("src" not in s.attrs for s in root.find_all("script"))


def test_top_index_links_every_project(run):
    project_dir = run["dir"]
    root = parse_html(project_dir / report.top_index())
    rows = root.find_all("tr", cls="project")
    assert sorted(r.attrs["data-project"] for r in rows) == sorted(run["written"])
    for r in rows:
        (a,) = r.find_all("a")
        assert a.attrs["href"] == f"prj_{r.attrs['data-project']}/index.html"


def test_indices_follow_the_recipe():
    values = (512, 734, 655, 3120, 1890, 977)
    got = report.spectral_indices(values)
    _blue, _green, red, nir, _swir1, swir2 = values
    assert got["nbr"] == pytest.approx((nir - swir2) / (nir + swir2), abs=1e-12)
    assert got["ndvi"] == pytest.approx((nir - red) / (nir + red), abs=1e-12)
    tc = tasseled_cap(np.array(values, dtype=np.int16).reshape(6, 1, 1))[:, 0, 0]
    assert [got["tcb"], got["tcg"], got["tcw"]] == pytest.approx(list(tc), abs=1e-9)
    # a fill band (-2000) or a zero denominator gives no index instead of nonsense
    assert all(math.isnan(v) for v in report.spectral_indices((512, 734, 655, 3120, 1890, -2000)).values())
    assert math.isnan(report.spectral_indices((1, 1, 0, 0, 1, 0))["nbr"])
    assert math.isnan(report.spectral_indices((40, 50, 30, 12, -2, -3))["nbr"])  # water: negative swir2
    assert report.spectral_indices((40, 50, 30, 12, -2, -3))["ndvi"] == pytest.approx((12 - 30) / (12 + 30))


def test_failed_and_unfinished_plots(run, small_archive, tmp_path):
    """A plot whose last attempt failed and one with an observation not yet written: the
    report says so, counts only what exists, and still links only to existing files."""
    project_dir = tmp_path / "project"
    shutil.copytree(run["dir"], project_dir)
    shutil.rmtree(project_dir / "report")
    pid = "1001"
    ids = [
        p
        for p in plot_ids_of(small_archive.plot_file, pid)
        if disk_truth(project_dir, pid, p)["written"] >= 2
    ]
    failed_plot, pending_plot = ids[0], ids[1]
    victims = {}
    for plot_id in (failed_plot, pending_plot):
        key = disk_truth(project_dir, pid, plot_id)["keys"][1]
        victims[plot_id] = key
        for rel in layout.obs_files(pid, plot_id, key):
            (project_dir / rel).unlink()
    record = project_dir / layout.failure_record(pid, failed_plot)
    record.parent.mkdir(parents=True, exist_ok=True)
    error = "StorageError: cannot read s3://usgs-landsat-ard/...: <timeout & retry>"
    record.write_text(
        json.dumps(
            {
                "project_id": pid,
                "plot_id": failed_plot,
                "failed": [{"key": victims[failed_plot], "targets": [], "error": error, "attempts": 2}],
            }
        )
    )

    project = make_project(small_archive, project_dir)
    report.write_report(project, pid)
    rows = index_rows(project_dir, pid)
    for plot_id, status, failed, pending in (
        (failed_plot, "failed", 1, 0),
        (pending_plot, "incomplete", 0, 1),
    ):
        truth = disk_truth(project_dir, pid, plot_id)
        cells = rows[plot_id]
        assert cells["status"] == status
        assert (int(cells["failed"]), int(cells["pending"])) == (failed, pending)
        assert int(cells["written"]) == truth["written"]
        assert int(cells["obs"]) == truth["written"] + truth["fill"] + 1
        page = parse_html(project_dir / report.plot_page(pid, plot_id))
        assert victims[plot_id] not in [c.attrs["data-key"] for c in page.find_all("figure", cls="chip")]
    text = (project_dir / report.plot_page(pid, failed_plot)).read_text()
    assert "timeout &amp; retry" in text and victims[failed_plot] in text  # escaped, with its key
    assert victims[pending_plot] in (project_dir / report.plot_page(pid, pending_plot)).read_text()
    index = parse_html(project_dir / report.report_index(pid))
    problems = {
        tr.attrs["data-plot"] for tr in index.find_all("tr", cls="plot") if tr.attrs["data-problem"] == "1"
    }
    assert problems == {failed_plot, pending_plot}
    for page in (project_dir / "report").rglob("*.html"):
        for link in links_of(parse_html(page)):
            assert resolve(page, link).exists(), (page.name, link)


def test_unusable_items_are_shown_counted_and_mark_the_plot(run, small_archive, tmp_path):
    """A complete plot whose record names a catalogue item the run could not use: the index
    counts it (a card and a column) and marks the plot as a problem; its page names the item
    and the reason, escaped."""
    project_dir = tmp_path / "project"
    shutil.copytree(run["dir"], project_dir)
    shutil.rmtree(project_dir / "report")
    pid = "1001"
    plot_id = plot_ids_of(small_archive.plot_file, pid)[0]
    reason = "field 'properties.datetime': unparsable datetime '<not a date>'"
    item = UnusableItem(
        "landsat-c2ard-sr", "LT05_CU_003004_19970129_20210603_02_SR", reason, "items.ndjson, line 25"
    )
    record = FailureRecord(unusable=[item], context={"project_id": pid, "plot_id": plot_id})
    write_record(Store(str(project_dir)), layout.failure_record(pid, plot_id), record)

    project = make_project(small_archive, project_dir)
    report.write_report(project, pid)
    rows = index_rows(project_dir, pid)
    assert int(rows[plot_id]["unusable"]) == 1 and rows[plot_id]["status"] == "complete"
    assert all(int(cells["unusable"]) == 0 for other, cells in rows.items() if other != plot_id)
    index = parse_html(project_dir / report.report_index(pid))
    problems = {
        tr.attrs["data-plot"] for tr in index.find_all("tr", cls="plot") if tr.attrs["data-problem"] == "1"
    }
    assert problems == {plot_id}
    summary = json.loads((project_dir / report.report_summary(pid)).read_text())
    assert summary["unusable"] == 1
    text = (project_dir / report.plot_page(pid, plot_id)).read_text()
    assert (
        'id="unusable"' in text
        and item.id in text
        and "unparsable datetime" in text
        and "&lt;not a date&gt;" in text
    )
    assert "items.ndjson, line 25" in text


def test_rel_link():
    page = report.plot_page("1001", "001")
    assert (
        report.rel_link(page, layout.chip_png("b743", "1001", "001", "2002_172"))
        == "../../prj_1001/b743/plot_001/plot_001_2002_172.png"
    )
    assert report.rel_link(page, report.report_index("1001")) == "index.html"
    assert report.rel_link(report.top_index(), report.report_index("0042")) == "prj_0042/index.html"
    assert (
        posixpath.normpath(
            posixpath.join("report/prj_1001", report.rel_link(page, "1984_prj_1001_region_spectrals.csv"))
        )
        == "1984_prj_1001_region_spectrals.csv"
    )


@pytest.mark.s3
def test_report_on_s3_works_when_synced(run, small_archive, s3_server, tmp_path, monkeypatch):
    """Written to s3:// through the store, downloaded, the report's links resolve."""
    bucket = s3_server.create_bucket("timesync-report")
    s3_server.upload_dir(run["dir"], bucket, prefix="proj")
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store = Store(
        f"s3://{bucket}/proj", S3Options(endpoint_url=s3_server.endpoint_url, region=s3_server.region)
    )
    project = make_project(small_archive, f"s3://{bucket}/proj", store)
    s3_server.fs().rm(f"{bucket}/proj/report", recursive=True)
    files = report.write_report(project, "1001")
    assert files == report.report_files(project, "1001")
    fs = s3_server.fs()
    local = tmp_path / "synced"
    for key in fs.find(f"{bucket}/proj"):
        target = local / key[len(f"{bucket}/proj/") :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(key))
    assert {p.relative_to(local).as_posix() for p in (local / "report").rglob("*") if p.is_file()} == set(
        files
    )
    for page in (local / "report").rglob("*.html"):
        for link in links_of(parse_html(page)):
            assert resolve(page, link).exists(), (page.name, link)
    # the same counts as the local report
    assert index_rows(local, "1001") == index_rows(run["dir"], "1001")


def test_figures_drawn_on_dask_equal_figures_drawn_here(run, monkeypatch):
    """From FIGURES_ON_DASK_FROM plots on, the trajectory PNGs are drawn on the Dask cluster:
    the same bytes, in plot order."""
    project = run["project"]
    pid = max(project.project_ids(), key=lambda p: len(project.plots_of(p)))
    reports = [report.collect(project, p) for p in report._ordered(project.plots_of(pid))]
    assert len(reports) >= 3
    axis = report.TimeAxis(1984.0, 2025.0)
    here = [report.render_trajectories(rep, axis) for rep in reports]
    monkeypatch.setattr(report, "FIGURES_ON_DASK_FROM", 2)
    from pipeline.cluster import get_client

    submitted = []
    client = get_client()
    real_map = client.map
    monkeypatch.setattr(client, "map", lambda *a, **k: submitted.append(a) or real_map(*a, **k))
    on_dask = list(report._rendered_figures(reports, axis))
    assert len(submitted) == 1  # it did go to the cluster
    assert on_dask == here


def test_a_reused_figure_frame_draws_what_a_fresh_figure_draws(run):
    """Each thread reuses one figure frame for every plot it draws: a plot drawn after other
    plots (with other y ranges, cloudy, snow and fill marks) equals the same plot drawn on a
    fresh frame, byte for byte."""
    import threading

    project = run["project"]
    pid = max(project.project_ids(), key=lambda p: len(project.plots_of(p)))
    reports = [report.collect(project, p) for p in report._ordered(project.plots_of(pid))]
    axis = report.TimeAxis(1984.0, 2025.0)
    assert any(r.fill for r in reports) and any(r.cloudy for r in reports)

    def fresh(rep: report.PlotReport) -> bytes:  # a new thread: a new frame
        out: list[bytes] = []
        thread = threading.Thread(target=lambda: out.append(report.render_trajectories(rep, axis)))
        thread.start()
        thread.join()
        return out[0]

    reused = [report.render_trajectories(rep, axis) for rep in [*reports, *reversed(reports)]]
    for i, rep in enumerate(reports):
        expected = fresh(rep)
        assert reused[i] == expected and reused[-1 - i] == expected, rep.plot_id


def test_figures_are_drawn_again_only_when_their_data_changed(run, small_archive, tmp_path):
    """A report draws a plot's trajectory figure only when what it shows changed since the
    last report (its digest in img/figures.json) or the figure is missing; the pages,
    summary and indexes are always written."""
    project_dir = tmp_path / "project"
    shutil.copytree(run["dir"], project_dir)
    pid = "1001"
    store = RecordingStore(str(project_dir))
    project = make_project(small_archive, project_dir, store)
    files = report.report_files(project, pid)
    figure_of = {p.plot_id: report.plot_figure(pid, p.plot_id) for p in project.plots_of(pid)}

    def figures_written() -> set[str]:
        before = len(store.writes)
        assert report.write_report(project, pid) == files
        writes = store.writes[before:]
        assert writes[-1] == report.report_index(pid)
        assert sorted(w for w in writes if w not in figure_of.values()) == sorted(
            f for f in files if f not in figure_of.values()
        )
        return {w for w in writes if w in figure_of.values()}

    (project_dir / report.figure_manifest(pid)).unlink()
    assert figures_written() == set(figure_of.values())  # no record of what was drawn: all
    assert figures_written() == set()  # nothing changed: none
    ids = [
        p
        for p in plot_ids_of(small_archive.plot_file, pid)
        if disk_truth(project_dir, pid, p)["written"] >= 2
    ]
    changed, removed = ids[0], ids[1]
    key = disk_truth(project_dir, pid, changed)["keys"][0]
    (project_dir / layout.obs_csv(pid, changed, key)).unlink()  # the plot now lacks an observation
    (project_dir / figure_of[removed]).unlink()
    assert figures_written() == {figure_of[changed], figure_of[removed]}
    # the redrawn figure is the one a fresh report draws for the plot as it is now
    rep = report.collect(project, project.plot(pid, changed))
    assert key in rep.pending
    manifest = json.loads((project_dir / report.figure_manifest(pid)).read_text())
    axis = report.TimeAxis(*_axis_of(project, pid))
    assert manifest["plots"][changed] == report.figure_digest(rep, axis)
    assert (project_dir / figure_of[changed]).read_bytes() == report.render_trajectories(rep, axis)


def _axis_of(project: Project, pid: str) -> tuple[float, float]:
    reports = [report.collect(project, p) for p in report._ordered(project.plots_of(pid))]
    ctx = report._Context.of(project, pid, reports)
    return ctx.t0, ctx.t1


# ---- the pages' content, computed here from the files on disk -------------------------------
BAND_NAMES = ("blue", "green", "red", "nir", "swir1", "swir2")


def _bands_of(row: dict[str, str]) -> list[int]:
    return [int(row[b]) for b in BAND_NAMES]


def _snow_like(row: dict[str, str]) -> bool:
    """qa 0 with NDSI >= 0.4 and bright nir and green (the report's snow hint)."""
    blue, green, red, nir, swir1, swir2 = _bands_of(row)
    if row["qa"] == "1" or -2000 in (blue, green, red, nir, swir1, swir2) or green + swir1 <= 0:
        return False
    return (green - swir1) / (green + swir1) >= 0.4 and nir > 1100 and green > 1000


def _nd(row: dict[str, str], a: str, b: str) -> float | None:
    """A normalized difference of two bands; None where the report leaves it out."""
    values = _bands_of(row)
    x, y = int(row[a]), int(row[b])
    if -2000 in values or x < 0 or y < 0 or x + y == 0:
        return None
    return (x - y) / (x + y)


def test_plot_pages_navigate_in_plot_order_and_count_from_disk(run, small_archive):
    project_dir = run["dir"]
    for pid in run["written"]:
        ids = sorted(plot_ids_of(small_archive.plot_file, pid))
        for i, plot_id in enumerate(ids):
            root = parse_html(project_dir / report.plot_page(pid, plot_id))
            for name, label, j in (("prev", "← previous", i - 1), ("next", "next →", i + 1)):
                links = root.find_all("a", id=name)
                if 0 <= j < len(ids):
                    (a,) = links
                    assert (a.attrs["href"], a.text(), a.attrs["title"]) == (
                        f"plot_{ids[j]}.html",
                        label,
                        f"plot {ids[j]}",
                    )
                else:  # first or last plot: a greyed label, no link
                    assert not links and label in [s.text() for s in root.find_all("span", cls="off")]
            (up,) = root.find_all("a", id="up")
            assert (up.attrs["href"], up.text()) == ("index.html", f"project {pid}")
            truth = disk_truth(project_dir, pid, plot_id)
            cards = {
                c.find_all("span")[0].text(): c.find_all("b")[0].text()
                for c in root.find_all("div", cls="card")
            }
            assert cards == {
                "in catalogue": str(truth["written"] + truth["fill"]),
                "written": str(truth["written"]),
                "skipped for fill": str(truth["fill"]),
                "cloudy (qa 1)": str(truth["cloudy"]),
                "snow? (qa 0)": str(sum(_snow_like(r) for r in truth["rows"].values())),
                "failed": "0",
                "pending": "0",
                "unusable items": "0",
            }
            assert ("warn" in root.find_all("div", cls="card")[3].classes) == (truth["cloudy"] > 0)


def test_observation_table_rows_are_the_csv_rows(run, small_archive):
    """Every written observation is a table row whose cells are its CSV values (and NBR,
    NDVI computed here), in date order, each with a link to its CSV."""
    project_dir = run["dir"]
    checked = 0
    for pid in run["written"]:
        for plot_id in plot_ids_of(small_archive.plot_file, pid):
            truth = disk_truth(project_dir, pid, plot_id)
            page = project_dir / report.plot_page(pid, plot_id)
            trs = parse_html(page).find_all("tr", cls="obs")
            assert [tr.attrs["data-key"] for tr in trs] == truth["keys"]
            for tr in trs:
                row = truth["rows"][tr.attrs["data-key"]]
                cells = [td.text() for td in tr.find_all("td")]
                flag = "cloudy" if row["qa"] == "1" else ("snow?" if _snow_like(row) else "")
                nbr, ndvi = _nd(row, "nir", "swir2"), _nd(row, "nir", "red")
                assert cells[:12] == [
                    row["date"][:10], f"{int(row['doy']):03d}", row["sensor"], row["hv"], row["qa"], flag,
                    *(str(v) for v in _bands_of(row)),
                ]  # fmt: skip
                assert cells[12:14] == ["–" if v is None else f"{v:.3f}" for v in (nbr, ndvi)]
                tc = tasseled_cap(np.array(_bands_of(row), dtype=np.int16).reshape(6, 1, 1))[:, 0, 0]
                for text, value in zip(cells[14:17], tc, strict=True):
                    if -2000 in _bands_of(row):  # a fill band: no index
                        assert text == "–"
                    else:
                        assert abs(float(text) - float(value)) <= 0.5 + 1e-6, (text, value)
                assert cells[17] == "csv"
                (a,) = tr.find_all("a")
                assert (
                    resolve(page, a.attrs["href"]).name
                    == f"{plot_id}_spectral_files_set_{tr.attrs['data-key']}.csv"
                )
                checked += 1
    assert checked > 20


def test_index_sparklines_draw_each_plots_nbr(run, small_archive):
    """Each index row ends in an inline SVG of the plot's NBR: a line through its clear
    observations, a red dot per cloudy one, all inside the drawing."""
    project_dir = run["dir"]
    for pid in run["written"]:
        index = parse_html(project_dir / report.report_index(pid))
        for tr in index.find_all("tr", cls="plot"):
            truth = disk_truth(project_dir, pid, tr.attrs["data-plot"])
            rows = truth["rows"].values()
            clear = [
                r for r in rows if r["qa"] != "1" and not _snow_like(r) and _nd(r, "nir", "swir2") is not None
            ]
            cloudy = [r for r in rows if r["qa"] == "1" and _nd(r, "nir", "swir2") is not None]
            (svg,) = tr.find_all("svg", cls="spark")
            assert (svg.attrs["width"], svg.attrs["height"], svg.attrs["viewbox"]) == (
                "220",
                "30",
                "0 0 220 30",
            )
            lines = svg.find_all("polyline")
            if len(clear) < 2:
                assert not lines
            if lines:
                points = [tuple(map(int, p.split(","))) for p in lines[0].attrs["points"].split()]
                assert 2 <= len(points) <= len(clear)
                assert all(0 <= x <= 220 and 0 <= y <= 30 for x, y in points)
            kinds = {p.attrs["class"] for p in svg.find_all("path")} - {"zero"}
            assert ("clear" in kinds) == bool(clear) and ("cloudy" in kinds) == bool(cloudy)


def test_top_index_shows_each_projects_summary(run):
    project_dir = run["dir"]
    root = parse_html(project_dir / report.top_index())
    rows = root.find_all("tr", cls="project")
    assert len(rows) == len(run["written"])
    for tr in rows:
        pid = tr.attrs["data-project"]
        doc = json.loads((project_dir / report.report_summary(pid)).read_text())
        columns = (
            "plots",
            "plots_complete",
            "plots_failed",
            "written",
            "fill",
            "cloudy",
            "failed",
            "unusable",
        )
        assert [td.text() for td in tr.find_all("td")] == [
            pid,
            *(str(doc[k]) for k in columns),
            doc["generated"],
        ]


def test_pages_are_built_on_the_shared_frame_and_autoescaped(run, small_archive, tmp_path):
    """The pages come from the report frame's templates (autoescaped): text from the
    catalogue or a failure that looks like markup is shown as text, never run."""
    project_dir = tmp_path / "project"
    shutil.copytree(run["dir"], project_dir)
    pid = "1001"
    plot_id = plot_ids_of(small_archive.plot_file, pid)[0]
    item = UnusableItem(
        "landsat-c2ard-sr",
        '<img src=x onerror="alert(1)">',
        "<script>alert('reason')</script> & more",
        "line 7",
    )
    error = '<script>alert("error")</script>'
    record = FailureRecord(failed=[], unusable=[item], context={"project_id": pid, "plot_id": plot_id})
    write_record(Store(str(project_dir)), layout.failure_record(pid, plot_id), record)
    doc = json.loads((project_dir / layout.failure_record(pid, plot_id)).read_text())
    key = disk_truth(project_dir, pid, plot_id)["keys"][0]
    doc["failed"] = [{"key": key, "targets": [], "error": error, "attempts": 1}]
    (project_dir / layout.failure_record(pid, plot_id)).write_text(json.dumps(doc))
    report.write_report(make_project(small_archive, project_dir), pid)

    page = project_dir / report.plot_page(pid, plot_id)
    root = parse_html(page)
    assert len(root.find_all("script")) == 1  # the page's own
    assert not [i for i in root.find_all("img") if i.attrs.get("src") == "x"]
    (li,) = root.find_all("ul", id="unusable")[0].find_all("li")
    assert [li.find_all("b")[0].text(), li.find_all("code")[0].text()] == [item.id, item.describe()]
    assert root.find_all("ul", id="failed")[0].find_all("code")[0].text() == error
    for html_page in (project_dir / "report").rglob("*.html"):
        root = parse_html(html_page)
        (meta,) = [m for m in root.find_all("meta") if m.attrs.get("name") == "generator"]
        assert meta.attrs["content"] == "pipeline.timesync.report"
        assert len(root.find_all("style")) == 1 and len(root.find_all("header", cls="top")) == 1
        assert len(root.find_all("main")) == 1
    # the markup is in the templates, not in the module
    source = Path(report.__file__).read_text()
    assert not re.findall(r"<(?:td|tr|th|div|span|table|a|p|svg|path|h\d|ul|li|img|figure)\b", source)


def test_frame_blocks_leave_other_pages_unchanged():
    """The blocks TimeSync fills (style, scripts) render the frame's own defaults elsewhere."""
    from pipeline import report as frame

    page = frame.render("base.html", title="t", generator="g")
    assert "<script" not in page and "</main>\n</body></html>" in page
    assert "body{font:14px/1.4 system-ui,sans-serif;" in page and "<style>\nbody{" in page
