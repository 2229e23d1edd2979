"""The objects a task owns: where its state lives, how its keys are listed, written and deleted, and
the manifest that makes reruns write nothing twice and leave nothing stale.

Why a manifest: a run writes hundreds of thousands of small objects under keys named by the data
(regions, periods, tiles); when the input changes, keys of the earlier run that the new one does not
make must go. Each task records the keys it owns and a digest of each object in a manifest under
``_state/``. A task that reruns

1. reads its manifest and lists its key prefixes (one paged listing per prefix, never a HEAD per key);
2. rewrites the manifest as *in progress* before it writes anything, so a run killed from now on is
   never mistaken for a finished one, and digests of an earlier run are no longer trusted after it;
3. writes every object whose digest differs from the one trusted for its key (one PUT per object on
   S3, many in flight; temporary name and rename locally), journalling what it wrote;
4. deletes the keys the previous manifest had, and any key under its prefixes (a killed run's), that
   the new set lacks, and the temporaries a killed writer left there;
5. writes the manifest as finished: the completion record of the task.

A task is complete when its finished manifest has the fingerprint of its current inputs and every key
it names is listed.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import blake2b

from targets.s3_put import fast_putter
from targets.store import Listing, Store, shared_store

JOURNAL_SAVE_S = 5.0  # an in-progress manifest is rewritten at most this often while pieces finish


def same_object_key(key: str) -> str:
    """The key as a filesystem or a filer-backed store (SeaweedFS) keeps it: repeated ``/`` collapse.

    An empty qualifier value makes ``.../qualifiers/camp//Ethiopia.csv``: AWS keeps the empty segment,
    a local directory and SeaweedFS do not. Keys are written as the reference names them; whether a key
    is present, or is one of a task's, is decided on this form, so either backend agrees."""
    return _REPEATED_SLASHES.sub("/", key)


_REPEATED_SLASHES = re.compile(r"/{2,}")


def object_digest(data: bytes) -> str:
    """16 hex digits of BLAKE2b: tells an unchanged object from a changed one."""
    return blake2b(data, digest_size=8).hexdigest()


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """:func:`object_digest` of a local file's bytes, read a chunk at a time."""
    digest = blake2b(digest_size=8)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- writing


BATCH_OBJECTS = 512
BATCH_BYTES = 16 << 20


@dataclass
class WriteStats:
    written: int = 0
    unchanged: int = 0
    bytes_written: int = 0
    bytes_total: int = 0
    objects: dict[str, str] = field(default_factory=dict)  # key -> digest, everything produced


class ObjectWriter:
    """Writes many small objects concurrently, skipping those whose digest is the trusted one.

    Objects go out in batches of up to 512 (16 MiB), one batch being written while the next is made: on
    S3 through :mod:`targets.s3_put` (one PUT per object, many in flight, at a third of
    ``Store.write_many``'s CPU per object), elsewhere through :meth:`Store.write_many` (locally: temporary
    files renamed into place). ``store=None`` writes nothing (the dry run counts).
    """

    def __init__(self, store: Store | None, trusted: Mapping[str, str] | None = None) -> None:
        self.store = shared_store(store) if store is not None else None
        self.trusted = trusted or {}
        self.stats = WriteStats()
        self._batch: dict[str, bytes] = {}
        self._batch_bytes = 0
        self._pending: list[Future[None]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._write_many: Callable[[Mapping[str, bytes]], None] | None = None
        if self.store is not None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="causemos-batch")
            putter = fast_putter(self.store)
            self._write_many = putter.write_many if putter is not None else self.store.write_many

    def put(self, key: str, data: bytes) -> None:
        digest = object_digest(data)
        self.stats.objects[key] = digest
        self.stats.bytes_total += len(data)
        if self.trusted.get(key) == digest:
            self.stats.unchanged += 1
            return
        self.stats.written += 1
        self.stats.bytes_written += len(data)
        if self.store is None:
            return
        self._batch[key] = data
        self._batch_bytes += len(data)
        if len(self._batch) >= BATCH_OBJECTS or self._batch_bytes >= BATCH_BYTES:
            self._flush()

    def put_all(self, objects: Iterable[tuple[str, bytes]]) -> None:
        for key, data in objects:
            self.put(key, data)

    def _flush(self) -> None:
        if not self._batch or self._write_many is None or self._pool is None:
            return
        batch, self._batch, self._batch_bytes = self._batch, {}, 0
        self._wait(keep=1)  # one batch in flight while the next is made
        self._pending.append(self._pool.submit(self._write_many, batch))

    def _wait(self, keep: int) -> None:
        while len(self._pending) > keep:
            self._pending.pop(0).result()

    def close(self) -> WriteStats:
        """Write what is left and wait for every write; raises the first write error."""
        try:
            self._flush()
            self._wait(keep=0)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        return self.stats


# ---------------------------------------------------------------- manifests


@dataclass
class Manifest:
    """What a task owns. ``complete``: ``objects`` are its outputs for ``fingerprint``. In progress:
    ``objects`` are what an earlier run left (to delete if not made again; their digests are no longer
    trusted) and ``journal`` what the run with ``fingerprint`` wrote so far."""

    fingerprint: str
    complete: bool
    objects: dict[str, str]
    journal: dict[str, str] = field(default_factory=dict)

    def to_bytes(self, base: str) -> bytes:
        doc = {
            "fingerprint": self.fingerprint,
            "complete": self.complete,
            "objects": {_relative(k, base): v for k, v in sorted(self.objects.items())},
            "journal": {_relative(k, base): v for k, v in sorted(self.journal.items())},
        }
        return gzip.compress(json.dumps(doc, separators=(",", ":")).encode("utf-8"), compresslevel=5, mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes, base: str) -> Manifest:
        doc = json.loads(gzip.decompress(data))
        return cls(
            fingerprint=str(doc["fingerprint"]), complete=bool(doc["complete"]),
            objects={base + k: str(v) for k, v in doc.get("objects", {}).items()},
            journal={base + k: str(v) for k, v in doc.get("journal", {}).items()},
        )  # fmt: skip


def _relative(key: str, base: str) -> str:
    if not key.startswith(base):
        raise ValueError(f"{key!r} is not under {base!r}")
    return key[len(base) :]


def read_manifest(store: Store, rel: str, base: str) -> Manifest | None:
    try:
        return Manifest.from_bytes(store.read_bytes(rel), base)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError):  # a damaged manifest: as none, the task reruns
        return None


class OwnedOutputs:
    """The manifest protocol of one task (see the module's docstring).

    ``base``: the run's prefix (``{data_id}/{run_id}/``), keys are stored relative to it; ``prefixes``:
    where the task's keys live (store-relative, ``/``-terminated); ``foreign``: keys under those prefixes
    that belong to another task (a feature named ``a/b`` lives under feature ``a``'s directory).
    """

    def __init__(
        self,
        store: Store,
        manifest_key: str,
        base: str,
        prefixes: Iterable[str],
        fingerprint: str,
        foreign: Callable[[str], bool] = lambda key: False,
    ) -> None:
        self.store = store
        self.manifest_key = manifest_key
        self.base = base
        self.prefixes = list(prefixes)
        self.fingerprint = fingerprint
        self.foreign = foreign
        self.previous: Manifest | None = None
        self.listing = Listing()
        self.leftover: dict[str, str] = {}
        self.journal: dict[str, str] = {}
        self._saved_at = 0.0

    def list_owned(self) -> Listing:
        """The keys under the task's prefixes that are not another task's (one listing per prefix)."""
        listing = Listing()
        for prefix in self.prefixes:
            part = self.store.list_tree(prefix)
            listing.keys |= {k for k in part.keys if not self.foreign(k)}
            listing.temporaries += [t for t in part.temporaries if not self.foreign(t)]
        return listing

    def finished_manifest(self) -> Manifest | None:
        """The manifest when it says the task finished with the current fingerprint."""
        manifest = read_manifest(self.store, self.manifest_key, self.base)
        if manifest is None or not manifest.complete or manifest.fingerprint != self.fingerprint:
            return None
        return manifest

    def is_complete(self) -> bool:
        manifest = self.finished_manifest()
        if manifest is None:
            return False
        if not manifest.objects:
            return True
        listed = {same_object_key(k) for k in self.list_owned().keys}
        return all(same_object_key(k) in listed for k in manifest.objects)

    def begin(self) -> dict[str, str]:
        """Steps 1-2: read and list; mark the manifest in progress. Returns the trusted digests: those of
        a finished earlier run, or those the interrupted run with the same fingerprint journalled, for
        keys that are listed."""
        self.previous = read_manifest(self.store, self.manifest_key, self.base)
        self.listing = self.list_owned()
        present = {same_object_key(k) for k in self.listing.keys}
        trusted: dict[str, str] = {}
        self.leftover = {}
        self.journal = {}
        if self.previous is not None:
            self.leftover = {**self.previous.objects, **self.previous.journal}
            if self.previous.complete:
                trusted = {k: v for k, v in self.previous.objects.items() if same_object_key(k) in present}
            elif self.previous.fingerprint == self.fingerprint:
                trusted = {k: v for k, v in self.previous.journal.items() if same_object_key(k) in present}
                self.journal = dict(trusted)
        self._save(force=True)
        return trusted

    def add(self, objects: Mapping[str, str]) -> None:
        """Step 3: objects written (or found unchanged) by a finished piece of the work."""
        self.journal.update(objects)
        self._save(force=False)

    def _save(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._saved_at < JOURNAL_SAVE_S:
            return
        manifest = Manifest(self.fingerprint, False, dict(self.leftover), dict(self.journal))
        self.store.write_bytes(self.manifest_key, manifest.to_bytes(self.base))
        self._saved_at = now

    def interrupted(self) -> None:
        """Some work failed: keep what was journalled, so the rerun trusts it."""
        self._save(force=True)

    def finish(self, objects: Mapping[str, str]) -> int:
        """Steps 4-5: delete what the new set lacks, and debris; record the finished manifest. Returns the
        number of stale keys deleted."""
        made = {same_object_key(k) for k in objects}
        stale = {k for k in set(self.leftover) | self.listing.keys if same_object_key(k) not in made}
        deleted = self.store.delete_many(stale, prune_below=self.base)
        for temporary in self.listing.temporaries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.store.path(temporary))
        manifest = Manifest(self.fingerprint, True, dict(objects))
        self.store.write_bytes(self.manifest_key, manifest.to_bytes(self.base))
        return deleted
