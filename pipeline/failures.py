"""What a run could not do, kept where the next run, the QA report and the user can find it.

Two kinds of record, shared by every workflow:

- :class:`Failure`: one unit of work (an observation, a month) that was attempted and
  failed, with the error and the files it should have written. The rerun retries it.
- :class:`UnusableItem`: an item a catalogue search returned that the run cannot use (no
  parseable datetime, a required asset missing, grid properties absent or contradicting
  its id). Nothing was attempted, and nothing may be silently missing either: the item is
  named in the closing summary, recorded under the project's ``_state/``, shown in the QA
  report and counted by the dry run, and the run exits non-zero. A rerun after the
  catalogue is fixed picks the item up.

Records are small JSON files written atomically through a :class:`~targets.store.Store`
(local or ``s3://``); an empty record is deleted rather than written, so "no file" means
"nothing wrong". Readers accept what older versions wrote (a bare list of items).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError
from targets.store import Store


@dataclass(frozen=True)
class UnusableItem:
    """An item a search returned that the run cannot use, and why.

    ``reason`` names the field and what is wrong with it ("field 'properties.datetime':
    unparsable datetime 'not-a-date'"); ``source`` says where the item came from (a
    catalogue file and line, or empty for a STAC API item)."""

    collection: str
    id: str
    reason: str
    source: str = ""

    def describe(self) -> str:
        """One line naming the item and the reason: ``SOURCE (item ID), REASON``."""
        where = (
            f"{self.source} (item {self.id or '<no id>'})" if self.source else f"item {self.id or '<no id>'}"
        )
        return f"{where}, {self.reason}" if self.reason.startswith("field ") else f"{where}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"collection": self.collection, "id": self.id, "reason": self.reason, "source": self.source}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UnusableItem:
        return cls(
            str(doc.get("collection", "")),
            str(doc.get("id", "")),
            str(doc.get("reason", "")),
            str(doc.get("source", "")),
        )


@dataclass(frozen=True)
class Failure:
    """One failed unit of work: ``key`` names it within its record (an observation date, a
    month), ``what`` names it for a person ("prj 1001 plot 007 2002_172"), ``targets`` are
    the files it should have written, ``attempts`` counts the runs that tried."""

    key: str
    error: str
    what: str = ""
    targets: tuple[str, ...] = ()
    attempts: int = 1

    def describe(self) -> str:
        return f"{self.what or self.key}: {self.error}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "key": self.key,
            "targets": list(self.targets),
            "error": self.error,
            "attempts": self.attempts,
        }
        if self.what:
            doc["what"] = self.what
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Failure:
        return cls(
            key=str(doc.get("key", "")), error=str(doc.get("error", "")), what=str(doc.get("what", "")),
            targets=tuple(str(t) for t in doc.get("targets", ())), attempts=int(doc.get("attempts", 1)),
        )  # fmt: skip


@dataclass
class FailureRecord:
    """What one unit of a project (a plot, a tile-year) lacks: failed work and unusable items,
    with the identifying fields the workflow adds (``context``: project and plot ids...)."""

    failed: list[Failure] = field(default_factory=list)
    unusable: list[UnusableItem] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.failed or self.unusable)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.context,
            "failed": [f.to_json() for f in self.failed],
            "unusable": [u.to_json() for u in self.unusable],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FailureRecord:
        context = {k: v for k, v in doc.items() if k not in ("failed", "unusable")}
        return cls(
            [Failure.from_json(f) for f in doc.get("failed") or []],
            [UnusableItem.from_json(u) for u in doc.get("unusable") or []],
            context,
        )


class FailuresRecorded(PipelineError):
    """Raised by a task whose failures or unusable items were recorded in detail (in the run
    stats and under ``_state/``): the task fails, so the exit status is non-zero, and the
    closing summary lists each one; the task's own message need not repeat them."""


def unique_items(items: Iterable[UnusableItem]) -> list[UnusableItem]:
    """Each item once (several tiles' searches or plots can report the same item), sorted by
    collection and id."""
    seen: dict[tuple[str, str, str], UnusableItem] = {}
    for item in items:
        seen.setdefault((item.collection, item.id, item.reason), item)
    return sorted(seen.values(), key=lambda u: (u.collection, u.id, u.reason))


def write_record(store: Store, rel_path: str, record: FailureRecord) -> None:
    """Write ``record`` at ``rel_path`` (atomically), or delete the file when it is empty."""
    if record:
        store.write_text(rel_path, json.dumps(record.to_json(), indent=1) + "\n")
    else:
        store.delete(rel_path)


def read_record(store: Store, rel_path: str) -> FailureRecord:
    """The record at ``rel_path``; an empty record when there is none."""
    try:
        doc = json.loads(store.read_text(rel_path))
    except FileNotFoundError:
        return FailureRecord()
    if isinstance(doc, list):  # a bare list of unusable items
        return FailureRecord(unusable=[UnusableItem.from_json(u) for u in doc])
    return FailureRecord.from_json(doc)


def write_unusable(store: Store, rel_path: str, items: Sequence[UnusableItem]) -> None:
    """Record the unusable items of one search (or tile, or project) at ``rel_path``; the file
    is deleted when there are none, so a fixed catalogue leaves no stale record."""
    write_record(store, rel_path, FailureRecord(unusable=unique_items(items)))


def read_unusable(store: Store, rel_path: str) -> list[UnusableItem]:
    """The unusable items recorded at ``rel_path`` (none when there is no file)."""
    return read_record(store, rel_path).unusable
