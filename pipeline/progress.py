"""Progress of a long piece of work, for a person at a terminal and for Luigi's scheduler.

:class:`Progress` counts units (observations, months) toward a known total. Every step goes
to an optional callback (a task's ``set_status_message`` / ``set_progress_percentage``, so
the central scheduler's UI shows "52/120 observations"); a log line with the count, the
rate and the time left goes to the console at most every ``interval`` seconds, and once at
the end. A short piece of work therefore prints one line, a long one a line every half
minute, never a line per unit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

StatusCallback = Callable[[int, int, str], None]  # (done, total, unit)

log = logging.getLogger("pipeline.progress")


def format_duration(seconds: float) -> str:
    """``7s``, ``3m05s``, ``2h04m``: short enough for a progress line."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_rate(per_second: float) -> str:
    """``47.3``, ``1,204``: a rate as a person reads it."""
    return f"{per_second:,.1f}" if per_second < 100 else f"{per_second:,.0f}"


class Progress:
    """``total`` units of ``unit`` under ``label``; call :meth:`advance` as units finish and
    :meth:`finish` at the end (which logs the closing line once, with ``detail`` appended)."""

    def __init__(
        self, total: int, unit: str, *, label: str, report: StatusCallback | None = None,
        logger: logging.Logger | None = None, interval: float = 30.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.total = total
        self.unit = unit
        self.label = label
        self.report = report
        self.log = logger or log
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.started = clock()
        self._last_line = self.started
        self._finished = False

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        """Units per second so far (0 before the first unit)."""
        elapsed = self.elapsed
        return self.done / elapsed if self.done and elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None while there is no rate yet."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        """Set the count of finished units (and the total, when it is known only now: work is
        often planned after its clock started); report it, and log a line if ``interval``
        passed since the last one."""
        self.done = done
        if total is not None:
            self.total = total
        if self.report:
            self.report(done, self.total, self.unit)
        now = self.clock()
        if done < self.total and now - self._last_line >= self.interval:
            self._last_line = now
            self.log.info("%s", self.line())

    def line(self) -> str:
        """``LABEL: 120/500 observations, 47.3/s, ETA 8s``."""
        eta = self.eta
        return (
            f"{self.label}: {self.done:,}/{self.total:,} {self.unit}, {format_rate(self.rate)}/s, "
            f"ETA {format_duration(eta) if eta is not None else '?'}"
        )

    def finish(self, detail: str = "") -> str:
        """Log (once) and return the closing line: ``LABEL: 500/500 observations in 11s
        (45.0/s)`` and ``detail``."""
        line = f"{self.label}: {self.done:,}/{self.total:,} {self.unit} in {format_duration(self.elapsed)}"
        if self.done and self.elapsed > 0:
            line += f" ({format_rate(self.rate)}/s)"
        if detail:
            line += f"; {detail}"
        if not self._finished:
            self._finished = True
            self.log.info("%s", line)
        return line
