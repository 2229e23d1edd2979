"""The closing summary of a run: plots and observations done, already done, skipped for
fill, failed; where the outputs are; how to rerun what failed.

Tasks may run in forked Luigi worker processes, so each records its figures as a small
JSON file in a per-run temporary directory named by an environment variable that the
children inherit; the process that imported this module first prints the summary at exit,
after Luigi's own execution summary.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import asdict
from typing import Any

ENV = "PIPELINE_RUN_STATS"


def _stats_dir() -> str | None:
    return os.environ.get(ENV)


def _write(name: str, doc: dict[str, Any]) -> None:
    d = _stats_dir()
    if not d or not os.path.isdir(d):
        return
    tmp = os.path.join(d, f".{name}.{uuid.uuid4().hex}")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(d, name + ".json"))


def record_project(project: Any, *, plots_per_task: int) -> None:
    _write(
        "project",
        {
            "plots": len(project.plots),
            "projects": project.project_ids(),
            "project_dir": project.store.url,
            "plot_file": project.options.plot_file,
        },
    )


def record_batch(task_id: str, outcome: Any) -> None:
    doc = asdict(outcome)
    doc["failed"] = [{"project_id": r.project_id, "plot_id": r.plot_id, "key": r.key, "error": r.error} for r in outcome.failed]
    _write(f"batch-{uuid.uuid5(uuid.NAMESPACE_OID, task_id).hex}", doc)


def record_ingest(project_id: str, files: int) -> None:
    _write(f"ingest-{project_id}", {"project_id": project_id, "files": files})


def record_text(name: str, text: str) -> None:
    """A block of text printed at the end of the run (the dry run's table)."""
    _write(f"text-{name}", {"text": text})


def render(stats_dir: str) -> str | None:
    docs: dict[str, Any] = {}
    for name in os.listdir(stats_dir):
        if name.endswith(".json") and not name.startswith("."):
            with open(os.path.join(stats_dir, name)) as f:
                docs[name[:-5]] = json.load(f)
    texts = "".join(d["text"] for k, d in sorted(docs.items()) if k.startswith("text-"))
    project = docs.get("project")
    if project is None:
        return texts or None
    batches = [d for k, d in docs.items() if k.startswith("batch-")]
    ingests = [d for k, d in docs.items() if k.startswith("ingest-")]
    written = sum(b["written"] for b in batches)
    fill = sum(b["fill"] for b in batches)
    failed = [f for b in batches for f in b["failed"]]
    plots_updated = sum(b["plots_done"] for b in batches)
    plots_failed = sum(b["plots_failed"] for b in batches)
    already = project["plots"] - plots_updated - plots_failed
    lines = ["", "===== TimeSync summary ====="]
    if not batches and not ingests:
        lines.append(f"Nothing to do: all {project['plots']} plots of {len(project['projects'])} project(s) were already complete.")
    else:
        lines.append(
            f"plots: {project['plots']} in {len(project['projects'])} project(s): {plots_updated} brought up to date, "
            f"{already} already done, {plots_failed} with failures"
        )
        lines.append(f"observations this run: {written} written, {fill} skipped for fill at the plot, {len(failed)} failed")
        if ingests:
            lines.append(f"ingest files: written for project(s) {', '.join(d['project_id'] for d in ingests)}")
    lines.append(f"outputs: {project['project_dir']}")
    lines.append(f"QA report: {project['project_dir'].rstrip('/')}/report/index.html")
    if failed:
        for f in failed[:10]:
            lines.append(f"  FAILED prj {f['project_id']} plot {f['plot_id']} {f['key']}: {f['error']}")
        if len(failed) > 10:
            lines.append(f"  ... and {len(failed) - 10} more")
        lines.append("Rerun the same command to retry only what failed (finished outputs are kept).")
    return texts + "\n".join(lines) + "\n"


def _print_at_exit(stats_dir: str, owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return
    try:
        text = render(stats_dir)
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)


def install() -> None:
    """Called on import: the first process of a run owns the stats directory."""
    if _stats_dir():
        return
    d = tempfile.mkdtemp(prefix="pipeline-run-")
    os.environ[ENV] = d
    atexit.register(_print_at_exit, d, os.getpid())
