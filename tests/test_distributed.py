"""A distributed run: one central scheduler (luigid), two separate ``luigi`` worker processes
started at the same time with the same command, and an external Dask cluster (a ``dask
scheduler`` and two ``dask worker`` processes) that both send their observations to. The
outputs must equal the oracle's and a single-process run's, byte for byte (CSV) and pixel
for pixel (PNG).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import oracle
from tests.helpers import LUIGI, luigi_env, run_luigi, timesync_args
from tests.servers.dask_cluster import DaskCluster, start_dask_cluster
from tests.servers.luigid import start_luigid
from tests.test_scheduler import central, small_expected, tasks_of

pytestmark = pytest.mark.slow

PLOTS_PER_TASK = 2
# Exit codes (luigi.cfg [retcode]) a worker may end with when the other worker ran some of
# the tasks it scheduled: 0 = it ran the root task; 10 = already_running ("being run by
# another worker"); 25 = not_run ("not granted run permission" because the other had it).
# task_failed (30), scheduling_error (35), missing_data (20), unhandled (4) are failures.
SHARED_WORK_CODES = {0, 10, 25}


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory) -> DaskCluster:
    cluster = start_dask_cluster(tmp_path_factory.mktemp("dask"), n_workers=2, nthreads=1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def single_process_run(small_archive, tmp_path_factory) -> Path:
    """The reference: one luigi process, local scheduler, its embedded Dask cluster."""
    project = tmp_path_factory.mktemp("single") / "project"
    proc = run_luigi(timesync_args(small_archive, project), cwd=project.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return project


def tree_contents(project: Path) -> dict[str, Any]:
    """A project directory as compare_tree's 'expected': CSV text, decoded PNG pixels
    (of the files compare_tree looks at: not _state/, report pages or .html)."""
    out: dict[str, Any] = {}
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and not oracle._ignored(rel):
            out[rel] = oracle.decode_png(path) if rel.endswith(".png") else path.read_text()
    return out


def executed_per_dask_worker(cluster: DaskCluster) -> dict[str, int]:
    from distributed import Client

    with Client(cluster.address, timeout="10s") as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def digest(log: str) -> str:
    """A luigi log's errors and execution summary (the rest is scheduling chatter)."""
    lines = log.splitlines()
    keep = [line for line in lines if line.startswith("ERROR") or "Error:" in line or "Unfulfilled" in line]
    if "===== Luigi Execution Summary =====" in log:
        keep.append(log.split("===== Luigi Execution Summary =====")[1].strip())
    return "\n".join(keep)[-6000:]


def start_worker(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [LUIGI, "--module", "pipeline.timesync", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes


def test_two_luigi_workers_and_an_external_dask_cluster(
    request, small_archive, dask_cluster, single_process_run, tmp_path
):
    expected = small_expected(request, small_archive)
    before = executed_per_dask_worker(dask_cluster)
    server = start_luigid(tmp_path / "luigid")
    try:
        project = tmp_path / "project"
        project.parent.mkdir(exist_ok=True)
        # --no-lock: both workers run on this machine with the same command line (luigi's
        # pid lock would turn the second away). --worker-keep-alive: a worker waits for
        # work that becomes runnable while the other is busy, instead of leaving early.
        args = central(
            small_archive, project, server,
            "--workers", "1", "--worker-keep-alive", "--no-lock", "--timesync-plots-per-task", str(PLOTS_PER_TASK),
        )  # fmt: skip
        env = luigi_env(dask_cluster.env())
        logs = [tmp_path / f"luigi-worker-{i}.log" for i in range(2)]
        procs = [start_worker(args, env, log, tmp_path) for log in logs]
        codes = wait_all(procs, timeout=300)
        texts = [log.read_text() for log in logs]
        report = "\n".join(
            f"--- luigi worker {i} (pid {p.pid}) exit {c}\n{digest(t)}"
            for i, (p, c, t) in enumerate(zip(procs, codes, texts, strict=True))
        )
        assert set(codes) <= SHARED_WORK_CODES, report

        # Everything DONE in the scheduler, and each luigi process ran some of it.
        tasks = tasks_of(server, project)
        assert {t["status"] for t in tasks.values()} == {"DONE"}, {
            t["display_name"]: t["status"] for t in tasks.values()
        }
        plots = oracle.read_plots(small_archive.plot_file)
        per_project = {}
        for p in plots:
            per_project[p["project_id"]] = per_project.get(p["project_id"], 0) + 1
        n_batches = sum(-(-n // PLOTS_PER_TASK) for n in per_project.values())
        assert sum(t["name"] == "TimeSyncPlotBatch" for t in tasks.values()) == n_batches
        ran_by = {}
        for t in tasks.values():
            m = re.search(r"pid=(\d+)", t["worker_running"] or "")
            assert m, t
            ran_by.setdefault(int(m[1]), []).append(t["name"])
        assert set(ran_by) == {p.pid for p in procs}, ran_by  # both workers ran tasks
        for text in texts:
            # each process's console shows the batches it ran (Luigi's per-task lines are DEBUG now)
            assert re.search(r"TimeSync prj \S+ batch \d+/\d+: \d+ plots", text), text[-3000:]

        # The observations ran on the external Dask cluster.
        # Each batch sends its observations as one or more Dask tasks, so there were at
        # least as many as batches holding a plot with an observation to write.
        after = executed_per_dask_worker(dask_cluster)
        plots_with_obs = {
            k.split("/")[0] + "/" + k.split("/")[1].split("_spectral_files_set_")[0]
            for k in expected
            if "_spectral_files_set_" in k
        }
        assert sum(after.values()) - sum(before.values()) >= -(-len(plots_with_obs) // PLOTS_PER_TASK), (
            before,
            after,
        )
        assert dask_cluster.alive(), dask_cluster.log_tail()

        # Outputs: the recipe, and the single-process run's files exactly.
        assert oracle.compare_tree(project, expected) == []
        assert oracle.compare_tree(project, tree_contents(single_process_run)) == []

        # A last run of the same command confirms completion (exit 0, nothing to do).
        check = run_luigi(
            central(small_archive, project, server, "--timesync-plots-per-task", str(PLOTS_PER_TASK)),
            cwd=tmp_path,
            env=env,
        )
        assert check.returncode == 0, check.stderr[-3000:]
        assert "Nothing to do" in check.stderr
    finally:
        server.stop()


def test_worker_processes_see_outputs_written_by_other_processes(small_archive, tmp_path):
    """A process that checked a batch before another process ran it must see it complete
    afterwards. Here: the searches exist (an earlier, interrupted run), so scheduling looks
    at every plot's outputs and fill record; ``--workers 2`` runs each task in a process
    forked from the scheduling one, and the ingest task then checks the batches that
    sibling processes finished. Two luigi workers on a central scheduler meet the same
    situation whenever one checks a batch the other is about to run."""
    project = tmp_path / "project"
    tiles = sorted(
        {t for p in oracle.read_plots(small_archive.plot_file) for t in oracle.chip_tiles(p["x"], p["y"])}
    )
    for h, v in tiles:
        args = timesync_args(small_archive, project)
        args[0] = "TimeSyncSearch"
        proc = run_luigi([*args, "--tile-h", str(h), "--tile-v", str(v)], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(project.glob("prj_*"))
    server = start_luigid(tmp_path / "luigid")
    try:
        proc = run_luigi(central(small_archive, project, server, "--workers", "2"), cwd=tmp_path)
        assert "Unfulfilled dependenc" not in proc.stderr, digest(proc.stderr)
        assert proc.returncode == 0, digest(proc.stderr)
        tasks = tasks_of(server, project)
        assert {t["status"] for t in tasks.values()} == {"DONE"}, {
            t["display_name"]: t["status"] for t in tasks.values()
        }
    finally:
        server.stop()


def test_embedded_cluster_workers_do_not_trim_malloc_on_every_free():
    """distributed's default MALLOC_TRIM_THRESHOLD_=65536 makes glibc map and unmap every
    chip-sized array; the embedded LocalCluster's workers run without it (and keep the
    other pre-spawn settings)."""
    from pipeline.cluster import get_client

    client = get_client()
    assert os.getpid() not in client.run(os.getpid).values()  # worker processes, started by the nanny
    environ = client.run(
        lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}
    )
    assert environ and all(
        e == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"} for e in environ.values()
    ), environ


def test_embedded_workers_are_renewed_between_stages():
    """The embedded cluster's worker processes are restarted: new processes, as many, working."""
    from pipeline import cluster

    client = cluster.get_client()
    before = set(client.run(os.getpid).values())
    assert cluster.renew_embedded_workers()
    after = set(client.run(os.getpid).values())
    assert len(after) == len(before) and not after & before
    assert client.submit(sum, [1, 2, 3]).result() == 6  # and they work


def run_script(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    """``text`` run as the main script of a Python process of its own (with this project importable)."""
    script = tmp_path / name
    script.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


# Run in a process of its own: it closes its embedded cluster at exit, with every worker's
# heartbeat in flight (the scheduler, in this process, answers them 3 s late), the moment
# distributed's workers log a failed heartbeat with a traceback (dask/distributed#7105).
CLOSE_WITH_HEARTBEATS_IN_FLIGHT = """
import asyncio, atexit, logging, sys, time
from pipeline import cluster

def heartbeat_fails_while_running():
    # what distributed's Worker.heartbeat logs when the scheduler cannot be reached
    logging.getLogger("distributed.worker").error("Failed to communicate with scheduler during heartbeat.")

if __name__ == "__main__":
    cut = {"asked": 0, "answered": 0}
    # registered before the cluster's close, so it runs after it
    atexit.register(lambda: print("heartbeats cut:", cut["asked"] - cut["answered"], flush=True))
    client = cluster.get_client()
    print("workers:", len(client.run(heartbeat_fails_while_running)), flush=True)
    scheduler = cluster._state["cluster"].scheduler
    answer = scheduler.handlers["heartbeat_worker"]

    async def late(*args, **kwargs):
        cut["asked"] += 1
        await asyncio.sleep(3)
        cut["answered"] += 1
        return answer(*args, **kwargs)

    scheduler.handlers["heartbeat_worker"] = late
    time.sleep(2)
"""


def test_closing_the_embedded_cluster_cuts_heartbeats_quietly(tmp_path):
    """A worker's heartbeat cut by the worker's own closing is not an error on stderr; a
    heartbeat that fails while the worker runs still is."""
    proc = run_script(tmp_path, "close_with_heartbeats_in_flight.py", CLOSE_WITH_HEARTBEATS_IN_FLIGHT)
    assert proc.returncode == 0, proc.stderr
    cut = re.search(r"heartbeats cut: (\d+)", proc.stdout)
    assert cut and int(cut.group(1)) >= 1, proc.stdout  # the race really happened
    assert "Traceback" not in proc.stderr, proc.stderr
    workers = re.search(r"workers: (\d+)", proc.stdout)
    assert workers and proc.stderr.count("during heartbeat") == int(workers.group(1)) >= 1, proc.stderr


def test_the_embedded_scheduler_serves_http_on_a_free_loopback_port(tmp_path):
    """Beside another Dask dashboard on 8787, the embedded cluster takes a free loopback port
    quietly (distributed's default would move off 8787 with a warning on every run)."""
    proc = run_script(
        tmp_path,
        "beside_a_dashboard.py",
        "import socket\n"
        "from pipeline import cluster\n"
        'if __name__ == "__main__":\n'
        "    other = socket.socket()\n"
        "    try:\n"
        '        other.bind(("127.0.0.1", 8787)); other.listen()\n'
        "    except OSError:\n"
        "        pass  # taken already: the same situation\n"
        "    cluster.get_client()\n"
        '    http = cluster._state["cluster"].scheduler.http_server\n'
        '    print("http:", http.address, http.port, flush=True)\n',
    )
    assert proc.returncode == 0, proc.stderr
    served = re.search(r"http: (\S+) (\d+)", proc.stdout)
    assert served and served.group(1) == "127.0.0.1" and int(served.group(2)) != 8787, proc.stdout
    assert "Warning" not in proc.stderr and "already in use" not in proc.stderr, proc.stderr
