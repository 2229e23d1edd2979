"""The closing summary of a run, for every workflow: figures recorded by tasks wherever they
ran, printed once at exit by the process the user started.

Luigi may run tasks in forked worker processes, so figures cannot live in memory: each is a
small JSON file in a per-run directory named by the ``PIPELINE_RUN_STATS`` environment
variable, which forked luigi workers and Dask's worker processes inherit. The process that
calls :func:`install` first (the ``luigi`` command) creates the directory and, at exit, after
Luigi's own execution summary, prints the summary and removes it. The directory is scratch of
that process (:mod:`pipeline.scratch`): the one a killed run leaves is removed by the next.

A workflow records its documents with :func:`record` under its own name and registers a
renderer with :func:`set_renderer`; the renderer turns the documents into a
:class:`Rendered` (a title, lines, and the failed work and unusable items it knows of).
The frame, not the workflow, writes the closing lines, so every workflow ends the same way:

- when the run could not start (a bad input file, option or catalogue), the LAST line is
  the reason, naming the file, line and field (:func:`record_stop`; Luigi's scheduling
  errors and uncaught input errors are recorded by ``pipeline._luigi_setup``);
- otherwise, when something failed or an item could not be used, the last lines list them
  (``FAILED what: error``, ``UNUSABLE source (item id), reason``); a task that failed for a
  reason no workflow recorded is listed too (Luigi's failure events). The exit status is
  then non-zero, because a task failed: :class:`pipeline.failures.FailuresRecorded` is the
  exception a workflow raises for what it already recorded.

Public API: :func:`install`, :func:`installed`, :func:`run_id`, :func:`record`,
:func:`record_text`, :func:`record_failure`, :func:`record_unusable`, :func:`record_stop`,
:func:`set_renderer`, :func:`read`, :func:`render`, :class:`Rendered`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from pipeline import scratch
from pipeline.failures import Failure, FailuresRecorded, UnusableItem, unique_items

ENV = "PIPELINE_RUN_STATS"
MAX_LISTED = 20  # failed units and unusable items named in the summary; the rest are counted

log = logging.getLogger("pipeline.runstats")

FailedEntry = tuple[str, str] | Failure  # (what, error)
UnusableEntry = tuple[str, str] | UnusableItem  # (id, reason)


@dataclass
class Rendered:
    """A workflow's part of the closing summary: ``title`` (e.g. "TimeSync summary") and
    ``lines`` under it; ``advice`` printed after them when something failed or was unusable
    (how to rerun; when something failed and there is none, the frame's); ``failed`` and
    ``unusable``, which the frame lists last."""

    title: str
    lines: list[str] = field(default_factory=list)
    failed: Sequence[FailedEntry] = ()
    unusable: Sequence[UnusableEntry] = ()
    advice: list[str] = field(default_factory=list)


Renderer = Callable[[dict[str, dict[str, Any]]], "Rendered | None"]

_renderers: dict[str, Renderer] = {}
_owner: dict[str, int] = {}  # stats dir -> pid of the process that prints it


# ---- the run's directory -----------------------------------------------------------------
def install() -> None:
    """Called on import of a workflow module: the first process of a run creates the stats
    directory and prints the summary at exit; processes it starts inherit the directory.
    Also registers the Luigi event handlers that record task failures (once per process)."""
    _register_luigi_events()
    if os.environ.get(ENV):
        return
    directory = scratch.scratch_dir("pipeline-run-")
    os.environ[ENV] = directory
    _owner[directory] = os.getpid()
    atexit.register(_print_at_exit, directory, os.getpid())


def installed() -> bool:
    """True in the process that will print the summary (so a message recorded for it will
    be seen: callers may then keep it out of the log)."""
    directory = _stats_dir()
    return directory is not None and _owner.get(directory) == os.getpid()


def run_id() -> str:
    """An id of this run, the same in every process of it ("" when no run is installed):
    state written by the run can say which run wrote it."""
    directory = _stats_dir()
    return os.path.basename(directory) if directory else ""


def _stats_dir() -> str | None:
    directory = os.environ.get(ENV)
    return directory if directory and os.path.isdir(directory) else None


def _write(filename: str, doc: dict[str, Any]) -> None:
    directory = _stats_dir()
    if directory is None:
        return
    tmp = os.path.join(directory, f".{filename}.{uuid.uuid4().hex}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(directory, filename))


def _docs(directory: str) -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for filename in sorted(os.listdir(directory)):
        if filename.endswith(".json") and not filename.startswith("."):
            try:
                with open(os.path.join(directory, filename), encoding="utf-8") as f:
                    docs[filename[:-5]] = json.load(f)
            except (OSError, ValueError):
                continue  # a summary is never worth a crash at exit
    return docs


# ---- recording ------------------------------------------------------------------------
def record(workflow: str, name: str, doc: dict[str, Any]) -> None:
    """Record (or replace) the document ``name`` of ``workflow``; the workflow's renderer
    receives every document recorded under its name, keyed by ``name``."""
    _write(f"w~{quote(workflow, safe='')}~{quote(name, safe='')}.json", doc)


def record_text(name: str, text: str) -> None:
    """A block of text printed at the end of the run, before the summaries (a dry run's table)."""
    _write(f"t~{quote(name, safe='')}.json", {"text": text})


def record_failure(what: str, error: str) -> None:
    """Something failed that no workflow document describes (a task's unexpected error)."""
    _write(f"f~{uuid.uuid4().hex}.json", {"what": what, "error": error})


def record_unusable(items: Iterable[UnusableItem]) -> None:
    """Unusable items to list at the end (each once, however often recorded)."""
    for item in items:
        key = uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(item.to_json(), sort_keys=True)).hex
        _write(f"u~{key}.json", item.to_json())


def record_stop(reason: str) -> None:
    """The run could not start, because of ``reason`` (an input error naming its file, line
    and field): printed as the last line of the run."""
    _write("stop.json", {"reason": reason})


def set_renderer(workflow: str, renderer: Renderer) -> None:
    """Register how ``workflow``'s documents become its part of the summary."""
    _renderers[workflow] = renderer


def read(workflow: str) -> dict[str, dict[str, Any]]:
    """The documents of ``workflow`` recorded so far by any process of this run."""
    directory = _stats_dir()
    if directory is None:
        return {}
    prefix = f"w~{quote(workflow, safe='')}~"
    return {unquote(k[len(prefix) :]): d for k, d in _docs(directory).items() if k.startswith(prefix)}


# ---- Luigi's failure events -------------------------------------------------------------
_events_registered = False


def _register_luigi_events() -> None:
    global _events_registered
    if _events_registered:
        return
    _events_registered = True
    import luigi

    luigi.Task.event_handler(luigi.Event.FAILURE)(_on_task_failure)
    luigi.Task.event_handler(luigi.Event.PROCESS_FAILURE)(_on_process_failure)
    luigi.Task.event_handler(luigi.Event.TIMEOUT)(_on_process_failure)


def _on_task_failure(task: Any, exception: BaseException) -> None:
    if isinstance(exception, FailuresRecorded):
        return  # the workflow recorded each failure: the summary lists those
    record_failure(repr(task), f"{type(exception).__name__}: {exception}")


def _on_process_failure(task: Any, error: str) -> None:
    record_failure(
        repr(task), str(error).strip().splitlines()[-1] if str(error).strip() else "worker process failed"
    )


# ---- rendering --------------------------------------------------------------------------
def render(stats_dir: str) -> str | None:
    """The closing summary of the run recorded in ``stats_dir`` (None when there is nothing
    to say)."""
    docs = _docs(stats_dir)
    texts = "".join(str(d.get("text", "")) for k, d in docs.items() if k.startswith("t~"))
    lines: list[str] = []
    failed: list[str] = []
    unusable: list[UnusableEntry] = []
    advice: list[str] = []
    for workflow in sorted({unquote(k.split("~")[1]) for k in docs if k.startswith("w~")}):
        renderer = _renderers.get(workflow)
        prefix = f"w~{quote(workflow, safe='')}~"
        mine = {unquote(k[len(prefix) :]): d for k, d in docs.items() if k.startswith(prefix)}
        try:
            rendered = renderer(mine) if renderer else None
        except Exception as e:
            lines += ["", f"({workflow} summary not available: {type(e).__name__}: {e})"]
            continue
        if rendered is None:
            continue
        lines += ["", f"===== {rendered.title} =====", *rendered.lines]
        failed += [_failed_line(f) for f in rendered.failed]
        unusable += list(rendered.unusable)
        advice += [a for a in rendered.advice if a not in advice]
    failed += [f"{d['what']}: {d['error']}" for k, d in docs.items() if k.startswith("f~")]
    unusable += [UnusableItem.from_json(d) for k, d in docs.items() if k.startswith("u~")]
    stop = docs.get("stop")
    closing = closing_lines(failed, unusable, advice, stop_reason=str(stop["reason"]) if stop else None)
    if not texts and not lines and not closing:
        return None
    body = "\n".join([*lines, *closing])
    return texts + (body + "\n" if body else "")


def _failed_line(entry: FailedEntry) -> str:
    if isinstance(entry, Failure):
        return entry.describe()
    what, error = entry
    return f"{what}: {error}"


def _unusable_line(entry: UnusableEntry) -> str:
    if isinstance(entry, UnusableItem):
        return entry.describe()
    item_id, reason = entry
    return reason if item_id and item_id in reason else f"item {item_id}: {reason}"


def closing_lines(
    failed: Sequence[str],
    unusable: Sequence[UnusableEntry],
    advice: Sequence[str],
    *,
    stop_reason: str | None,
) -> list[str]:
    """The frame's last lines: advice, then what failed, then the unusable items, and when
    the run could not start, the reason as the very last line."""
    lines: list[str] = []
    failed = list(dict.fromkeys(failed))
    unusable_lines = list(dict.fromkeys(_unusable_line(u) for u in _unique(unusable)))
    if failed:
        lines += advice or ["Rerun the same command to retry only what failed (finished outputs are kept)."]
    elif unusable_lines:
        lines += advice
    if failed:
        lines.append(f"failed: {len(failed)}")
        lines += [f"  FAILED {line}" for line in failed[:MAX_LISTED]]
        if len(failed) > MAX_LISTED:
            lines.append(f"  ... and {len(failed) - MAX_LISTED} more")
    if unusable_lines:
        lines.append(
            f"unusable catalogue items: {len(unusable_lines)} (fix them in the catalogue and rerun; the searches are repeated)"
        )
        lines += [f"  UNUSABLE {line}" for line in unusable_lines[:MAX_LISTED]]
        if len(unusable_lines) > MAX_LISTED:
            lines.append(f"  ... and {len(unusable_lines) - MAX_LISTED} more")
    if stop_reason:
        lines += ["", f"ERROR: could not start: {stop_reason}"]
    return lines


def _unique(entries: Sequence[UnusableEntry]) -> list[UnusableEntry]:
    items = unique_items(e for e in entries if isinstance(e, UnusableItem))
    pairs = list(dict.fromkeys(e for e in entries if not isinstance(e, UnusableItem)))
    return [*items, *pairs]


def _print_at_exit(stats_dir: str, owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return  # a forked child inherits the registration, not the job
    try:
        text = render(stats_dir)
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()
    except Exception as e:
        sys.stderr.write(f"(closing summary not available: {type(e).__name__}: {e})\n")
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)
