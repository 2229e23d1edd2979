"""Process-wide Luigi defaults, installed on import of a workflow module: a failed run is
visible, and the console reads like a mature command line tool's. Luigi's own command line
and logging options stay as they are; this only sets defaults and shapes log records.

- Exit codes: Luigi's defaults exit 0 when tasks failed; a pipeline run that failed must
  not look like success to a shell or CI. Values already in the user's config win.
- Console: INFO and above by default (Luigi's own default is DEBUG: "Asking scheduler for
  work...", every completeness check); ``--log-level DEBUG`` (or ``[core] log_level``, or
  a ``logging_conf_file``) still shows everything. At INFO, Luigi's bookkeeping lines
  (each task's scheduler status, "running"/"done", worker start and stop, e-mail notes)
  are DEBUG records, and its multi-line execution summary is one line; what a person
  follows are the workflows' own lines (searches, one progress line per batch) and the
  closing summary (:mod:`pipeline.runstats`).
- Errors: our own errors (:class:`~pipeline.errors.PipelineError`) and Luigi's parameter
  errors are messages for the user, not bugs: their tracebacks are dropped, leaving one
  line. When an input error stops the run before it starts (a bad plot file makes a
  task's ``complete()`` or ``requires()`` raise, a bad option fails the command line), the
  reason is recorded as the run's stop reason and printed as the LAST line of the run by
  the closing summary, instead of sitting inside a WARNING about ``complete()``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from typing import Any

from pipeline import runstats, scratch
from pipeline.errors import PipelineError

RETCODES = {
    "unhandled_exception": "4",
    "missing_data": "20",
    "task_failed": "30",
    "already_running": "10",
    "scheduling_error": "35",
    "not_run": "25",
}
DEFAULT_LOG_LEVEL = "INFO"

_TRACEBACK = "Traceback (most recent call last):"
_LUIGI = "luigi-interface"

# Luigi's INFO lines that are bookkeeping, not events a person follows (DEBUG shows them).
_BOOKKEEPING = (
    "Informed scheduler that task",
    "Done scheduling tasks",
    "Running Worker with",
    "[pid %s] Worker %s running",
    "[pid %s] Worker %s done",
    "[pid %s] Worker %s new requirements",
    "Not sending email to",
    "Sending email to",
    "Did not schedule %s, will load it dynamically",
)
_SCHEDULING_ERROR = (
    "Will not run "  # "... or any dependencies due to error in complete()/deps() method:\n<traceback>"
)
_UNCAUGHT = "Uncaught exception in luigi"
_SUMMARY = "===== Luigi Execution Summary ====="
_TASK_FAILED = "[pid %s] Worker %s failed    %s"


def _is_user_error(exc: BaseException | None) -> bool:
    """Our errors and a bad command-line value (Luigi's ParameterException): not bugs."""
    from luigi.parameter import ParameterException

    return isinstance(exc, (PipelineError, ParameterException))


def _is_user_error_type(qualified_name: str) -> bool:
    """The same test for an exception known only by its name in a formatted traceback."""
    from luigi.parameter import ParameterException

    module, _, name = qualified_name.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None) if module else None
    return isinstance(cls, type) and issubclass(cls, (PipelineError, ParameterException))


def _demote(record: logging.LogRecord) -> logging.LogRecord:
    record.levelno = logging.DEBUG
    record.levelname = logging.getLevelName(logging.DEBUG)
    return record


def _one_line(record: logging.LogRecord, text: str) -> logging.LogRecord:
    record.msg = text
    record.args = ()
    record.exc_info = None
    record.exc_text = None
    return record


def _last_error(formatted: str) -> tuple[str, str]:
    """(exception type, message) from the last line of a formatted traceback."""
    lines = formatted.strip().splitlines()
    error_type, _, message = (lines[-1] if lines else "").partition(": ")
    return error_type.strip(), message.strip()


def _stop(reason: str, record: logging.LogRecord, one_line: str) -> logging.LogRecord:
    """An input error stopped (part of) the run: the closing summary prints ``reason`` last,
    so the log record becomes DEBUG; without a summary in this process, one line."""
    runstats.record_stop(reason)
    if runstats.installed():
        return _demote(_one_line(record, one_line))
    return _one_line(record, one_line)


def compact_summary(text: str) -> str:
    """Luigi's execution summary in one line: ``Luigi: scheduled 11 tasks: 11 ran
    successfully. This progress looks :) because ...``."""
    head, parts, verdict = "", [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Scheduled ") and line.endswith(" of which:"):
            head = line[: -len(" of which:")].replace("Scheduled", "scheduled", 1)
        elif line.startswith("* "):
            parts.append(line[2:].rstrip(":").replace(", among these", ""))
        elif line == "Did not run any tasks":
            parts.append("none ran")
        elif line.startswith("This progress looks"):
            verdict = line
    body = f"Luigi: {head}: {', '.join(parts)}." if head else "Luigi:"
    return f"{body} {verdict}".strip()


def _shape(record: logging.LogRecord) -> logging.LogRecord:
    """Every log record passes here once, as it is made (see :func:`install`)."""
    if not record.name.startswith("luigi"):
        return record
    exc = record.exc_info[1] if record.exc_info else None
    msg = record.msg if isinstance(record.msg, str) else ""
    if record.levelno == logging.INFO and msg.startswith(_BOOKKEEPING):
        return _demote(record)
    if record.levelno == logging.INFO and msg.endswith("was stopped. Shutting down Keep-Alive thread"):
        return _demote(record)
    if record.levelno == logging.INFO and _SUMMARY in msg:
        if logging.getLogger(_LUIGI).isEnabledFor(logging.DEBUG):
            return record  # --log-level DEBUG: Luigi's own block, task by task
        return _one_line(record, compact_summary(msg))
    if msg.startswith(_UNCAUGHT) and exc is not None:
        if _is_user_error(exc):
            return _stop(str(exc), record, f"{_UNCAUGHT}: {exc}")
        runstats.record_stop(f"{type(exc).__name__}: {exc}")  # a bug: the traceback stays
        return record
    if msg.startswith(_SCHEDULING_ERROR) and _TRACEBACK in msg:
        # Scheduling errors arrive with the traceback already formatted into the message.
        head, _, tb = msg.partition(_TRACEBACK)
        error_type, message = _last_error(tb)
        if _is_user_error_type(error_type):
            return _stop(message, record, head.rstrip().rstrip(":") + f": {message}")
        runstats.record_stop(f"{error_type.rpartition('.')[2]}: {message}")
        return record
    if msg == _TASK_FAILED and isinstance(record.args, tuple) and len(record.args) == 3:
        pid, _, task = record.args
        if _is_user_error(exc):  # our error: its message, not a traceback
            return _one_line(record, f"{task!r} failed: {exc}")
        record.msg, record.args = "[pid %s] %r failed:", (pid, task)  # a bug: the traceback follows
        return record
    if _is_user_error(exc):
        return _one_line(record, f"{record.getMessage()} {exc}")
    return record


class _ConsoleFilter(logging.Filter):
    """Our loggers print at the level Luigi's console uses (``--log-level``), INFO before
    Luigi has configured logging or when it is not running at all."""

    def filter(self, record: logging.LogRecord) -> bool:
        luigi_logger = logging.getLogger(_LUIGI)
        if luigi_logger.level == logging.NOTSET:  # Luigi has not set up its console (yet)
            return record.levelno >= logging.INFO
        return luigi_logger.isEnabledFor(record.levelno)


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    import luigi.configuration

    config = luigi.configuration.get_config()
    if not config.has_section("retcode"):
        config.add_section("retcode")
    for key, value in RETCODES.items():
        if not config.has_option("retcode", key):
            config.set("retcode", key, value)
    if not config.has_section("core"):
        config.add_section("core")
    if not config.has_option("core", "log_level"):
        config.set("core", "log_level", DEFAULT_LOG_LEVEL)  # --log-level on the command line wins
    runstats.install()
    # Working directories a killed run left (pipeline.scratch) go when the next run starts, even
    # one that has nothing left to build.
    scratch.sweep(tempfile.gettempdir())
    # With several luigi workers each forked task process starts its own embedded Dask
    # cluster, whose scheduler serves its HTTP endpoints on 8787 or, when that is taken, on
    # another port: harmless, but distributed says so in a four-line warning each time.
    warnings.filterwarnings(
        "ignore", message=r"Port \d+ is already in use", category=UserWarning, module=r"distributed\."
    )
    # Luigi (re)configures its loggers when a run starts, dropping filters added now; a
    # record factory survives that, and sees each record once, as it is made.
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _shape(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    # Our own messages (searches, progress, ingest files) in Luigi's format on stderr;
    # Luigi configures only its own loggers.
    ours = logging.getLogger("pipeline")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler.addFilter(_ConsoleFilter())
        ours.addHandler(handler)
        ours.setLevel(logging.DEBUG)
        ours.propagate = False
