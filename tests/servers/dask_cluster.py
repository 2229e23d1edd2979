"""A real, external Dask cluster for tests: one ``dask scheduler`` and N ``dask worker``
processes, each in its own process group, all on 127.0.0.1.

    from tests.servers.dask_cluster import start_dask_cluster
    cluster = start_dask_cluster(tmp_path, n_workers=2)   # ~3-5 s
    env = {"PIPELINE_DASK_SCHEDULER": cluster.address}     # tcp://127.0.0.1:PORT
    ...
    cluster.stop()

The scheduler listens on a port it picks itself (``--port 0``) and writes its address to a
scheduler file in the work dir, which the workers read, so there is no port race. No
dashboards. Workers import the project's code from the venv (it is installed editable), as
a cluster started by hand from the same venv would. ``stop`` ends all their process groups
(SIGTERM, then SIGKILL). Processes die with the thread that started them
(PR_SET_PDEATHSIG) unless ``die_with_parent=False``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers.luigid import kill_process_group, pdeathsig_preexec

DASK = str(Path(sys.executable).with_name("dask"))


@dataclass
class DaskCluster:
    address: str
    workdir: Path
    scheduler: subprocess.Popen = field(repr=False)
    workers: list[subprocess.Popen] = field(repr=False)

    def env(self) -> dict[str, str]:
        """Environment that points the pipeline at this cluster."""
        return {"PIPELINE_DASK_SCHEDULER": self.address}

    def alive(self) -> bool:
        return all(p.poll() is None for p in [self.scheduler, *self.workers])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every process group at once, SIGKILL what is left after ``grace`` s."""
        procs = [*self.workers, self.scheduler]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            kill_process_group(proc.pid, max(deadline - time.monotonic(), 0.0), proc)

    def worker_info(self) -> dict[str, Any]:
        """The scheduler's view of its workers (name, nthreads, tasks processed...)."""
        from distributed import Client

        with Client(self.address, timeout="10s") as client:
            return client.scheduler_info(n_workers=-1)["workers"]

    def log_tail(self, n: int = 40) -> str:
        text = ""
        for p in sorted(self.workdir.glob("*.log")):
            text += f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-n:]) + "\n"
        return text


def _spawn(cmd: list[str], log: Path, cwd: Path, die_with_parent: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_DASK_SCHEDULER"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=pdeathsig_preexec() if die_with_parent else None,
        )  # fmt: skip


def start_dask_cluster(
    workdir: Path | str,
    n_workers: int = 2,
    *,
    nthreads: int = 1,
    memory_limit: str = "2GiB",
    die_with_parent: bool = True,
    timeout: float = 60.0,
) -> DaskCluster:
    """Start a scheduler and ``n_workers`` single-process workers; return once all workers
    have registered with the scheduler."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scheduler_file = workdir / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    scheduler = _spawn(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
        workdir / "scheduler.log", workdir, die_with_parent,
    )  # fmt: skip
    cluster = DaskCluster("", workdir, scheduler, [])
    deadline = time.monotonic() + timeout
    try:
        while not cluster.address:
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Dask scheduler did not start:\n{cluster.log_tail()}")
            try:
                cluster.address = json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        for i in range(n_workers):
            name = f"worker-{i}"
            cluster.workers.append(
                _spawn(
                    [
                        DASK,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--name",
                        name,
                        "--host",
                        "127.0.0.1",
                        "--nworkers",
                        "1",
                        "--nthreads",
                        str(nthreads),
                        "--memory-limit",
                        memory_limit,
                        "--no-dashboard",
                        "--local-directory",
                        str(workdir / name),
                        "--death-timeout",
                        "60",
                    ],
                    workdir / f"{name}.log",
                    workdir,
                    die_with_parent,
                )
            )
        from distributed import Client

        with Client(cluster.address, timeout=f"{max(deadline - time.monotonic(), 1):.0f}s") as client:
            client.wait_for_workers(n_workers, timeout=max(deadline - time.monotonic(), 1))
        if not cluster.alive():
            raise RuntimeError(f"a Dask process exited:\n{cluster.log_tail()}")
    except BaseException:
        cluster.stop()
        raise
    return cluster
