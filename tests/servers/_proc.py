"""Process-group plumbing shared by the test servers (S3, luigid, Dask)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn: the child gets SIGKILL when the thread that started it dies, so no
    server outlives a killed pytest. libc is loaded here, before the fork (the child must
    not import or take locks). None where prctl is unavailable."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGKILL)

    def preexec() -> None:  # pragma: no cover - runs in the child
        prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


def group_alive(pgid: int, proc: subprocess.Popen | None = None) -> bool:
    if proc is not None:
        proc.poll()  # reap a zombie leader
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader that is not our child (waiting for init to reap it) is dead.
    try:
        state = Path(f"/proc/{pgid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def kill_process_group(pgid: int, grace: float = 5.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group ``pgid``, wait up to ``grace`` s, then SIGKILL it.
    ``proc``: the Popen of the leader, if it is our child (so it gets reaped)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        if proc is not None:
            proc.poll()
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid, proc):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_alive(pgid, proc):
        time.sleep(0.05)
