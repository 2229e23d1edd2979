"""A terminal a person can read (issue 11, part 3): INFO and above by default, one line per
event, a progress line per batch, and a closing summary that always ends with the reason
the run could not start, or with the list of what failed and could not be used. Luigi's
own ``--log-level DEBUG`` still shows everything.

The shared pieces (pipeline/runstats.py, pipeline/progress.py, pipeline/_luigi_setup.py)
are tested on their own; the command line on the small archive."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from pipeline import _luigi_setup, runstats
from pipeline.failures import Failure, UnusableItem
from pipeline.progress import Progress, format_duration
from tests.helpers import run_luigi, timesync_args

LUIGI_SUMMARY = """
===== Luigi Execution Summary =====

Scheduled 11 tasks of which:
* 2 complete ones were encountered:
    - 2 TimeSyncSearch(...)
* 8 ran successfully:
    - 2 TimeSyncIngest(...)
* 1 failed:
    - 1 TimeSyncProject(...)

This progress looks :( because there were failed tasks

===== Luigi Execution Summary =====
"""


# ---- the closing summary (pipeline/runstats.py) -----------------------------------------------
@pytest.fixture
def stats_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(runstats.ENV, str(tmp_path))
    return str(tmp_path)


def _workflow(docs):
    batches = [d for k, d in sorted(docs.items()) if k.startswith("b-")]
    return runstats.Rendered(
        title="Test summary",
        lines=[f"units: {sum(b['n'] for b in batches)}"],
        failed=[(f["what"], f["error"]) for b in batches for f in b["failed"]],
        unusable=[UnusableItem.from_json(u) for b in batches for u in b["unusable"]],
        advice=["Rerun to retry."],
    )


def test_the_summary_ends_with_what_failed_then_the_unusable_items(stats_dir):
    runstats.set_renderer("test-wf", _workflow)
    item = UnusableItem(
        "c", "item-1", "field 'properties.datetime': unparsable datetime 'x'", "cat.ndjson, line 3"
    )
    for i in range(2):  # two batches report the same item: named once
        runstats.record(
            "test-wf",
            f"b-{i}",
            {"n": 5, "failed": [{"what": f"unit {i}", "error": "boom"}], "unusable": [item.to_json()]},
        )
    runstats.record_failure("OtherTask(x=1)", "KeyError: 'y'")  # a task failure no workflow described
    runstats.record_text("table", "a dry-run table\n")
    text = runstats.render(stats_dir)
    lines = text.rstrip("\n").splitlines()
    assert text.startswith("a dry-run table\n")
    assert lines[lines.index("===== Test summary =====") + 1] == "units: 10"
    assert lines[-7:] == [
        "Rerun to retry.",
        "failed: 3",
        "  FAILED unit 0: boom",
        "  FAILED unit 1: boom",
        "  FAILED OtherTask(x=1): KeyError: 'y'",
        "unusable catalogue items: 1 (fix them in the catalogue and rerun; the searches are repeated)",
        "  UNUSABLE cat.ndjson, line 3 (item item-1), field 'properties.datetime': unparsable datetime 'x'",
    ]


def test_when_the_run_could_not_start_the_reason_is_the_last_line(stats_dir):
    runstats.set_renderer("test-wf", _workflow)
    runstats.record("test-wf", "b-0", {"n": 1, "failed": [], "unusable": []})
    runstats.record_stop("plots.csv, line 3, field 'x': '12x' is not a number")
    lines = runstats.render(stats_dir).rstrip("\n").splitlines()
    assert lines[-1] == "ERROR: could not start: plots.csv, line 3, field 'x': '12x' is not a number"
    assert not any("FAILED" in line or "Rerun" in line for line in lines)


def test_failures_unusable_pairs_and_limits(stats_dir):
    lines = runstats.closing_lines(
        [f"u{i}: e" for i in range(runstats.MAX_LISTED + 3)],
        [("HLS.S30.x", "item HLS.S30.x, field 'assets.B04': missing"), ("y", "no grid")],
        [],
        stop_reason=None,
    )
    assert lines[0].startswith("Rerun the same command") and "  ... and 3 more" in lines
    assert lines[-2:] == [
        "  UNUSABLE item HLS.S30.x, field 'assets.B04': missing",
        "  UNUSABLE item y: no grid",
    ]
    assert (
        Failure("2002_172", "RasterReadError: x", "prj 1 plot 7 2002_172").describe()
        == "prj 1 plot 7 2002_172: RasterReadError: x"
    )
    assert runstats.closing_lines([], [], ["advice"], stop_reason=None) == []  # nothing wrong: nothing to add


def test_documents_are_shared_by_every_process_of_the_run(stats_dir):
    runstats.record("wf", "a/b c", {"x": 1})
    assert runstats.read("wf") == {"a/b c": {"x": 1}}
    assert runstats.run_id() == Path(stats_dir).name


# ---- progress lines (pipeline/progress.py) -------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_reports_every_step_and_logs_at_most_every_interval(caplog):
    clock = Clock()
    reported = []
    p = Progress(
        0,
        "observations",
        label="batch 1/3",
        report=lambda d, t, u: reported.append((d, t, u)),
        interval=30,
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        for step in range(1, 11):
            clock.t += 6
            p.update(step * 10, 100)
        final = p.finish("40 written")
    assert reported[-1] == (100, 100, "observations") and len(reported) == 10
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "batch 1/3: 50/100 observations, 1.7/s, ETA 30s"  # after 30 s, not before
    assert lines[-1] == final == "batch 1/3: 100/100 observations in 1m00s (1.7/s); 40 written"
    assert len(lines) == 2
    p.finish()
    assert len(caplog.records) == 2  # the closing line once


def test_format_duration():
    assert [format_duration(s) for s in (0, 7.4, 65, 3600 * 2 + 240, -1, float("inf"))] == [
        "0s",
        "7s",
        "1m05s",
        "2h04m",
        "?",
        "?",
    ]


# ---- shaping Luigi's log records (pipeline/_luigi_setup.py) ---------------------------------------
def _record(
    msg: str, *args: object, level: int = logging.INFO, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("luigi-interface", level, __file__, 1, msg, args, exc_info)


def test_luigi_bookkeeping_is_debug_and_its_summary_one_line():
    for msg, args in [
        ("Informed scheduler that task   %s   has status   %s", ("T_1", "PENDING")),
        ("[pid %s] Worker %s running   %s", (1, "Worker(x)", "T")),
        ("[pid %s] Worker %s done      %s", (1, "Worker(x)", "T")),
        ("Done scheduling tasks", ()),
        ("Running Worker with %d processes", (1,)),
        ("Worker Worker(salt=1) was stopped. Shutting down Keep-Alive thread", ()),
    ]:
        assert _luigi_setup._shape(_record(msg, *args)).levelno == logging.DEBUG, msg
    assert _luigi_setup._shape(_record("something else")).levelno == logging.INFO
    summary = _luigi_setup._shape(_record(LUIGI_SUMMARY))
    assert summary.getMessage() == (
        "Luigi: scheduled 11 tasks: 2 complete ones were encountered, 8 ran successfully, 1 failed. "
        "This progress looks :( because there were failed tasks"
    )


def test_an_input_error_in_scheduling_becomes_the_runs_last_line(stats_dir, monkeypatch):
    monkeypatch.setitem(
        runstats._owner, stats_dir, __import__("os").getpid()
    )  # this process prints the summary
    tb = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
        "pipeline.errors.InputError: plots.csv, line 3, field 'x': '12x' is not a number\n"
    )
    rec = _luigi_setup._shape(
        _record(
            "Will not run T(a=1) or any dependencies due to error in complete() method:\n" + tb,
            level=logging.WARNING,
        )
    )
    assert rec.levelno == logging.DEBUG and "Traceback" not in rec.getMessage()
    assert (
        runstats.render(stats_dir).rstrip().splitlines()[-1]
        == "ERROR: could not start: plots.csv, line 3, field 'x': '12x' is not a number"
    )
    bug = _luigi_setup._shape(
        _record(
            "Will not run T(a=1) or any dependencies due to error in complete() method:\n"
            + tb.replace("pipeline.errors.InputError", "KeyError"),
            level=logging.WARNING,
        )
    )
    assert bug.levelno == logging.WARNING and "Traceback" in bug.getMessage()  # a bug keeps its traceback


# ---- the command line ---------------------------------------------------------------------------
def _nondebug(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("DEBUG")]


@pytest.mark.slow
def test_default_output_fits_one_screen_and_says_how_far_the_run_is(small_archive, tmp_path):
    project = tmp_path / "project"
    proc = run_luigi(timesync_args(small_archive, project, "--timesync-plots-per-task", "3"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.rstrip("\n").splitlines()
    assert len(lines) <= 40, proc.stderr
    assert not any(line.startswith("DEBUG") for line in lines)
    for chatter in (
        "Informed scheduler",
        "Asking scheduler",
        "Checking if",
        "Done scheduling",
        "Worker Worker(",
        "Traceback",
    ):
        assert chatter not in proc.stderr, chatter
    events = [line for line in lines if re.match(r"(INFO|WARNING|ERROR): ", line)]
    summary = lines[lines.index("===== TimeSync summary =====") :]
    assert len(events) + len(summary) + 1 == len(
        lines
    )  # one line per event, then a blank line and the summary
    progress = [line for line in lines if "TimeSync prj" in line]
    n = len(progress)
    assert n >= 4  # 10 plots in batches of 3
    for i, line in enumerate(progress, start=1):
        assert re.search(rf"batch \d+/\d+: \d+ plots, .*; run: {i}/{n} batches", line), line
    assert re.search(
        r"\d+ observations \(\d+ written, \d+ fill\) in \d+s, [\d.,]+ obs/s; run: 1/\d+ batches, ETA \d+",
        progress[0],
    ), progress[0]
    assert summary[-1].startswith("QA report: ")


@pytest.mark.slow
def test_log_level_debug_still_shows_everything(small_archive, tmp_path):
    proc = run_luigi(timesync_args(small_archive, tmp_path / "project", "--log-level", "DEBUG"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for chatter in (
        "DEBUG: Checking if",
        "DEBUG: Informed scheduler that task",
        "DEBUG: Asking scheduler",
        "===== Luigi Execution Summary =====",
    ):
        assert chatter in proc.stderr, chatter


def test_a_bad_plot_file_ends_the_output_with_file_line_and_field(small_archive, tmp_path):
    plots = tmp_path / "plots.csv"
    rows = Path(small_archive.plot_file).read_text().splitlines()
    rows[2] = rows[2].rsplit(",", 1)[0] + ",12x"
    plots.write_text("\n".join(rows) + "\n")
    args = timesync_args(small_archive, tmp_path / "project")
    args[args.index("--plot-file") + 1] = str(plots)
    proc = run_luigi(args, cwd=tmp_path)
    assert proc.returncode != 0
    reason = f"{plots}, line 3, field 'y': '12x' is not a number"
    lines = _nondebug(proc.stderr.rstrip("\n"))
    assert lines[-1] == f"ERROR: could not start: {reason}"
    assert sum(reason in line for line in lines) == 1
    assert "Will not run" not in "\n".join(lines) and "Traceback" not in proc.stderr
    assert len(lines) <= 4, proc.stderr


def test_a_bad_option_ends_the_output_with_the_option(small_archive, tmp_path):
    proc = run_luigi(
        [*timesync_args(small_archive, tmp_path / "project"), "--chip-size", "abc"], cwd=tmp_path
    )
    assert proc.returncode != 0
    lines = _nondebug(proc.stderr.rstrip("\n"))
    assert lines[-1] == "ERROR: could not start: field 'chip-size': 'abc' is not an integer", proc.stderr
    assert "Traceback" not in proc.stderr
