"""Local scratch directories that a killed process does not leave behind for good.

Every workflow builds files locally before moving or uploading them whole (a COG, a Zarr, a points
file, an ingest bundle), in a temporary directory it removes when done. A process killed with
``SIGKILL`` (or a machine that lost power) cannot remove it, and a month composite's directory can be
hundreds of MB. So each process makes its directories inside one of its own,
``{base}/eo-extract.{pid}.{start}`` (``start``: the process's start time in clock ticks since boot, so a
reused pid is not taken for the dead process), and the first time a process makes one under a base it
removes the directories there of processes that no longer run; so does every run at its start, under the
system's temporary directory (``pipeline._luigi_setup``), even one that has nothing left to build.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator

OWNER_PREFIX = "eo-extract."
_OWNER = re.compile(r"^eo-extract\.(\d+)\.(\d+)$")

_owned: dict[tuple[int, str], str] = {}  # (pid, base) -> the process's directory under base (a fork's own)
_lock = threading.Lock()


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22); None when it
    does not run (or there is no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def sweep(base: str) -> list[str]:
    """Remove the scratch directories under ``base`` of processes that no longer run; returns them
    (none on a machine without ``/proc``, where that cannot be told)."""
    if not os.path.isdir("/proc"):
        return []
    try:
        names = os.listdir(base)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _OWNER.match(name)
        if match is None or process_start(int(match.group(1))) == int(match.group(2)):
            continue
        path = os.path.join(base, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _owner_dir(base: str) -> str:
    key = (os.getpid(), os.path.abspath(base))
    with _lock:
        known = _owned.get(key)
        if known is not None:
            os.makedirs(known, exist_ok=True)
            return known
        path = os.path.join(key[1], f"{OWNER_PREFIX}{key[0]}.{process_start(key[0]) or 0}")
        os.makedirs(path, exist_ok=True)
        _owned[key] = path
        atexit.register(_remove_if_empty, path)
    sweep(key[1])
    return path


def _remove_if_empty(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


def scratch_dir(prefix: str, base: str | None = None) -> str:
    """A new directory (``tempfile.mkdtemp``) in this process's scratch under ``base`` (the system's
    temporary directory by default); the caller removes it when done."""
    return tempfile.mkdtemp(prefix=prefix, dir=_owner_dir(base or tempfile.gettempdir()))


@contextlib.contextmanager
def temporary_dir(prefix: str, base: str | None = None) -> Iterator[str]:
    """:func:`scratch_dir` removed on leaving the block (as ``tempfile.TemporaryDirectory``)."""
    path = scratch_dir(prefix, base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
