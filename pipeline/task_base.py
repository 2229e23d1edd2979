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
