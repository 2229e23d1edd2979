"""Process-wide Luigi defaults that make a failed run visible, installed on import of a
workflow module.

- Exit codes: Luigi's defaults exit 0 when tasks failed; a pipeline run that failed must
  not look like success to a shell or CI. Values already in the user's config win.
- Our own errors (:class:`~pipeline.errors.PipelineError`) are messages for the user, not
  bugs: their tracebacks are dropped from Luigi's log lines, leaving one clear line.
"""

from __future__ import annotations

import logging

from pipeline.errors import PipelineError

RETCODES = {
    "unhandled_exception": "4",
    "missing_data": "20",
    "task_failed": "30",
    "already_running": "10",
    "scheduling_error": "35",
    "not_run": "25",
}


_TRACEBACK = "Traceback (most recent call last):"


def _is_parameter_error(exc: BaseException | None) -> bool:
    """A bad command-line value (Luigi's ParameterException): a user error, not a bug."""
    from luigi.parameter import ParameterException

    return isinstance(exc, ParameterException)


def _concise(record: logging.LogRecord) -> logging.LogRecord:
    if not record.name.startswith("luigi"):
        return record
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, PipelineError) or _is_parameter_error(exc):
        record.msg = f"{record.getMessage()} {exc}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
    elif isinstance(record.msg, str) and _TRACEBACK in record.msg:
        # Scheduling errors arrive with the traceback already formatted into the message.
        head, _, tb = record.msg.partition(_TRACEBACK)
        last = tb.strip().splitlines()[-1] if tb.strip() else ""
        error_type, _, message = last.partition(": ")
        if error_type.startswith("pipeline.errors."):
            record.msg = head.rstrip().rstrip(":") + f": {message}"
    return record


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
    # Luigi (re)configures its loggers when a run starts, dropping filters added now; a
    # record factory survives that.
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        return _concise(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    # Our own messages (skipped items, searches, ingest files) in Luigi's format on stderr;
    # Luigi configures only its own loggers.
    ours = logging.getLogger("pipeline")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False
