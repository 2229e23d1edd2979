"""TimeSync's part of the closing summary: plots and observations done, already done,
skipped for fill, failed; ingest files; where the outputs and the QA report are. Failed
observations and unusable catalogue items are listed last by the shared frame
(:mod:`pipeline.runstats`), which also prints the reason when a run could not start.

Tasks record their figures here wherever they run (forked Luigi workers included); the
frame prints the summary once, at exit. The batch tasks also say how far the run is: one
line per batch with the batches done of those the run had to do, the observations per
second and the time left.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from pipeline import runstats
from pipeline.failures import UnusableItem, unique_items
from pipeline.progress import format_duration, format_rate
from pipeline.timesync import layout

WORKFLOW = "timesync"
ADVICE = "Rerun the same command to retry only what failed (finished outputs are kept)."


def _key(task_id: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, task_id).hex


def record_project(project: Any, *, plots_per_task: int) -> None:
    runstats.record(
        WORKFLOW,
        "project",
        {
            "plots": len(project.plots),
            "projects": project.project_ids(),
            "project_dir": project.store.url,
            "plot_file": project.options.plot_file,
            "plots_per_task": plots_per_task,
        },
    )


def note_pending_batch(task_id: str) -> None:
    """A batch the scheduler found incomplete: the run has it to do (progress lines count them)."""
    runstats.record(WORKFLOW, f"pending-{_key(task_id)}", {"task_id": task_id})


def record_batch(task_id: str, outcome: Any, *, started: float, plots: int) -> None:
    """What one batch task did (``started``: its wall-clock start, for the run's ETA)."""
    runstats.record(
        WORKFLOW,
        f"batch-{_key(task_id)}",
        {
            "written": outcome.written,
            "fill": outcome.fill,
            "plots": plots,
            "plots_done": outcome.plots_done,
            "plots_failed": outcome.plots_failed,
            "already_done_plots": outcome.already_done_plots,
            "failed": [
                {"what": f"prj {r.project_id} plot {r.plot_id} {r.key}", "error": r.error}
                for r in outcome.failed
            ],
            "unusable": [u.to_json() for u in outcome.unusable],
            "started": started,
            "finished": time.time(),
        },
    )


def record_ingest(project_id: str, files: int) -> None:
    runstats.record(WORKFLOW, f"ingest-{project_id}", {"project_id": project_id, "files": files})


def record_unusable(items: Iterable[UnusableItem]) -> None:
    """Unusable items found outside a batch (the project's last check, the dry run)."""
    runstats.record_unusable(items)


def batch_line(label: str, outcome: Any, *, plots: int, seconds: float) -> str:
    """The progress line of a finished batch: what it did, its rate, and where the run is
    (batches done of those found incomplete when the run started, and the time left)."""
    processed = outcome.written + outcome.fill + len(outcome.failed)
    if processed:
        rate = f", {format_rate(processed / seconds)} obs/s" if seconds > 0 else ""
        what = (
            f"{plots} plots, {processed} observation{'s' if processed != 1 else ''} "
            f"({outcome.written} written, {outcome.fill} fill"
            + (f", {len(outcome.failed)} failed" if outcome.failed else "")
            + f") in {format_duration(seconds)}{rate}"
        )
    else:
        what = f"{plots} plots, nothing to extract"
    docs = runstats.read(WORKFLOW)
    batches = [d for k, d in docs.items() if k.startswith("batch-")]
    pending = sum(k.startswith("pending-") for k in docs)
    done, total = len(batches), max(pending, len(batches))
    where = f"run: {done}/{total} batches"
    if 0 < done < total:
        first = min(float(d["started"]) for d in batches)
        where += f", ETA {format_duration((time.time() - first) / done * (total - done))}"
    return f"{label}: {what}; {where}"


def render(docs: dict[str, dict[str, Any]]) -> runstats.Rendered | None:
    project = docs.get("project")
    batches = [d for k, d in sorted(docs.items()) if k.startswith("batch-")]
    ingests = [d for k, d in sorted(docs.items()) if k.startswith("ingest-")]
    failed = [(f["what"], f["error"]) for b in batches for f in b["failed"]]
    unusable = unique_items(UnusableItem.from_json(u) for b in batches for u in b.get("unusable", []))
    if project is None:
        if not batches:
            return None
        project = {"plots": sum(b["plots"] for b in batches), "projects": [], "project_dir": ""}
    written = sum(b["written"] for b in batches)
    fill = sum(b["fill"] for b in batches)
    plots_updated = sum(b["plots_done"] for b in batches)
    plots_failed = sum(b["plots_failed"] for b in batches)
    already = project["plots"] - plots_updated - plots_failed
    lines = []
    if not batches and not ingests:
        lines.append(
            f"Nothing to do: all {project['plots']} plots of {len(project['projects'])} project(s) were already complete."
        )
    else:
        lines.append(
            f"plots: {project['plots']} in {len(project['projects'])} project(s): {plots_updated} brought up to date, "
            f"{already} already done, {plots_failed} with failures"
        )
        lines.append(
            f"observations this run: {written} written, {fill} skipped for fill at the plot, {len(failed)} failed"
        )
        if ingests:
            lines.append(
                f"ingest files: written for project(s) {', '.join(d['project_id'] for d in ingests)}"
            )
    if project["project_dir"]:
        lines.append(f"outputs: {project['project_dir']}")
        lines.append(f"QA report: {project['project_dir'].rstrip('/')}/{layout.top_index()}")
    advice = [ADVICE] if failed else []
    return runstats.Rendered(
        title="TimeSync summary", lines=lines, failed=failed, unusable=unusable, advice=advice
    )


def install() -> None:
    """Called on import of pipeline.timesync: the run's stats directory, and this renderer."""
    runstats.install()
    runstats.set_renderer(WORKFLOW, render)
