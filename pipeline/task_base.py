"""The base of every workflow's tasks: luigi.Task with the worker's status callbacks typed.

Luigi's ``Task.__init__`` sets ``set_status_message`` and ``set_progress_percentage`` to
``None``; the worker replaces them with callables before ``run()``. Luigi's annotations
therefore give them the type ``None`` and mypy reports every call as '"None" not callable'.
They cannot be re-declared here: an annotation in a Task class body becomes a constructor
field (``luigi.Task`` is a ``dataclass_transform``), and mypy rejects a ClassVar or method
over luigi's instance attribute. So the workflows call these two typed methods instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import luigi


class PipelineTask(luigi.Task):
    """A luigi.Task with typed access to the worker's status callbacks (set before ``run()``)."""

    def show_status(self, message: str) -> None:
        """The status message the central scheduler's UI shows for this task."""
        cast("Callable[[str], None]", self.set_status_message)(message)

    def show_progress(self, percent: float) -> None:
        """The progress bar the central scheduler's UI shows for this task (0-100)."""
        cast("Callable[[float], None]", self.set_progress_percentage)(percent)

    def progress(self, done: int, total: int, what: str) -> None:
        """``done/total what`` as the task's status and progress bar (a
        :class:`pipeline.progress.Progress` report callback)."""
        self.show_progress(round(100 * done / max(total, 1)))
        self.show_status(f"{done}/{total} {what}")


class UnitTask(PipelineTask):
    """A unit of work whose completeness is checked against its store (a marker written last,
    a listing of what it names): :meth:`is_complete`. Luigi asks ``complete()`` many times per
    run (scheduling, every dependant's check, after ``run()``), and each answer costs requests,
    so a positive one is kept for the instance; ``run()`` calls :meth:`mark_complete` when it
    has written the marker. A negative answer is never kept: work done by another worker
    meanwhile is seen."""

    def is_complete(self) -> bool:
        """Luigi's default: every output exists."""
        return bool(super().complete())  # type: ignore[no-untyped-call]

    def complete(self) -> bool:
        if getattr(self, "_known_complete", False):
            return True
        done = self.is_complete()
        if done:
            self.mark_complete()
        return done

    def mark_complete(self) -> None:
        self._known_complete = True


class DryRunTask(PipelineTask):
    """Before the bill: a task that is never complete, plans the run it stands for (searches
    and listings; no pixel read, no output written) and records :meth:`estimate`'s text, which
    the closing summary prints."""

    dry_run_name = "dry-run"

    def complete(self) -> bool:
        return False

    def estimate(self) -> str:
        raise NotImplementedError

    def run(self) -> None:
        from pipeline import runstats

        runstats.record_text(self.dry_run_name, self.estimate())
