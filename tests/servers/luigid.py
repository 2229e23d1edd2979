"""A real central Luigi scheduler (``luigid``) for tests.

    from tests.servers.luigid import start_luigid
    server = start_luigid(tmp_path)            # ~1 s; binds 127.0.0.1 on a free port
    run_luigi([..., *server.scheduler_args()])  # --scheduler-host/--scheduler-port
    server.task_list("DONE")                    # {task_id: {...}} from the JSON API
    server.api("fetch_error", task_id=tid)      # any RPC method of luigi's scheduler
    server.stop()

or the session fixture ``luigid_server`` (import it into a test module or conftest; it is
started once per session however many modules import it).

luigid runs in the foreground of its own process group (so ``stop`` ends all of it) and,
unless told otherwise, dies with the thread that started it (PR_SET_PDEATHSIG), so no
scheduler outlives a killed pytest. Its state file, log and configuration live in the
work dir; its configuration is a ``[scheduler]`` section written there (LUIGI_CONFIG_PATH):
task history off, DONE tasks kept for an hour, and by default a FAILED task stays FAILED
for an hour (retry_delay) so a test, or a person, can still see it later in the session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers._proc import kill_process_group, pdeathsig_preexec  # re-exported for dask_cluster

LUIGID = str(Path(sys.executable).with_name("luigid"))

DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "record_task_history": "false",
    "remove_delay": 3600,
    "retry_delay": 3600,
    "retry_count": 2,
    "worker_disconnect_delay": 60,
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_scheduler_config(path: Path, state_path: Path, overrides: dict[str, Any] | None = None) -> Path:
    values = {**DEFAULT_SCHEDULER_CONFIG, **(overrides or {}), "state_path": str(state_path)}
    lines = ["# written by tests/servers/luigid.py", "[scheduler]"]
    lines += [f"{k} = {v}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class LuigidServer:
    url: str
    host: str
    port: int
    workdir: Path
    log_path: Path
    out_path: Path
    proc: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        kill_process_group(self.proc.pid, grace, self.proc)

    def scheduler_args(self) -> list[str]:
        """luigi command-line options that point a run at this scheduler."""
        return ["--scheduler-host", self.host, "--scheduler-port", str(self.port)]

    def api(self, method: str, timeout: float = 10.0, **data: Any) -> Any:
        """``GET /api/METHOD?data=JSON`` -> the ``response`` member of the answer."""
        query = urllib.parse.urlencode({"data": json.dumps(data)})
        with urllib.request.urlopen(f"{self.url}/api/{method}?{query}", timeout=timeout) as r:
            return json.loads(r.read())["response"]

    def task_list(self, status: str = "", **kwargs: Any) -> dict[str, dict[str, Any]]:
        """{task_id: task} with that status (all statuses when empty), never truncated."""
        return self.api("task_list", status=status, limit=False, **kwargs)

    def log_tail(self, n: int = 60) -> str:
        text = ""
        for p in (self.out_path, self.log_path):
            if p.exists():
                text += f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-n:]) + "\n"
        return text


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/worker_list?data=%7B%7D", timeout=1) as r:
            return r.status == 200 and "response" in json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def start_luigid(
    workdir: Path | str,
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    scheduler_config: dict[str, Any] | None = None,
    die_with_parent: bool = True,
    timeout: float = 30.0,
    attempts: int = 3,
) -> LuigidServer:
    """Start ``luigid`` on ``host`` (loopback) and ``port`` (a free one when None), with its
    state, logs and config under ``workdir``; return once its JSON API answers."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "log").mkdir(exist_ok=True)
    cfg = write_scheduler_config(workdir / "luigid.cfg", workdir / "luigid-state.pickle", scheduler_config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI_")}
    env["LUIGI_CONFIG_PATH"] = str(cfg)
    out_path = workdir / "luigid.out"
    last_error = ""
    for _attempt in range(attempts if port is None else 1):
        chosen = port or free_port(host)
        cmd = [LUIGID, "--address", host, "--port", str(chosen), "--logdir", str(workdir / "log"),
               "--state-path", str(workdir / "luigid-state.pickle")]  # fmt: skip
        with open(out_path, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=pdeathsig_preexec() if die_with_parent else None,
            )  # fmt: skip
        url = f"http://{host}:{chosen}"
        server = LuigidServer(
            url, host, chosen, workdir, workdir / "log" / "luigi-server.log", out_path, proc
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _answers(url):
                return server
            time.sleep(0.1)
        last_error = server.log_tail()
        server.stop()
    raise RuntimeError(f"luigid did not start in {workdir}:\n{last_error}")


def session_singleton(
    request: pytest.FixtureRequest, key: str, factory: Callable[[], Any], stop: Callable[[Any], None]
) -> Any:
    """One object per pytest session even when the fixture is imported into several
    modules (each import makes its own fixture definition)."""
    config = request.config
    cache = config.__dict__.setdefault("_eosession_singletons", {})
    if key not in cache:
        value = factory()
        cache[key] = value
        config.add_cleanup(lambda: stop(cache.pop(key)))
    return cache[key]


@pytest.fixture(scope="session")
def luigid_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LuigidServer]:
    """A central scheduler for the whole session (tests that need a fresh one call
    ``start_luigid`` themselves)."""
    server = session_singleton(
        request, "luigid", lambda: start_luigid(tmp_path_factory.mktemp("luigid")), lambda s: s.stop()
    )
    assert server.alive(), server.log_tail()
    yield server
