"""Luigi targets over a :class:`~targets.store.Store`."""

from __future__ import annotations

import luigi

from targets.store import Store


class StoreTarget(luigi.Target):
    """One file under a store root; ``exists()`` is one stat (local) or HEAD (S3)."""

    def __init__(self, store: Store, rel: str) -> None:
        self.store = store
        self.rel = rel

    @property
    def path(self) -> str:
        return self.store.uri(self.rel)

    def exists(self) -> bool:
        return self.store.exists(self.rel)

    def read_text(self) -> str:
        return self.store.read_text(self.rel)

    def write_text(self, text: str) -> None:
        self.store.write_text(self.rel, text)

    def write_bytes(self, data: bytes) -> None:
        self.store.write_bytes(self.rel, data)

    def __repr__(self) -> str:
        return f"StoreTarget({self.path!r})"
