"""A Dask client for the current task run: an existing scheduler when configured
(``PIPELINE_DASK_SCHEDULER``, ``[dask] scheduler_address`` in luigi.cfg, or
``WM_DASK_SCHEDULER``: the Causemos reference flow's variable, accepted as an alias), otherwise an
embedded ``LocalCluster`` started on first use and kept for the life of the process (Luigi
runs tasks in the scheduling process with one worker; with ``--workers N`` each task runs
in a forked process, which gets its own).

A workflow may ask for its work on threads of this process instead (``in_process_threads``,
e.g. ``[datacube] dask_in_process``, ``[hls] dask_in_process``): when no scheduler is configured
and the process has no client yet, :func:`run_each` runs the calls on a thread pool of its own,
with no Dask cluster at all. Work that is GDAL and numpy, which release the GIL, uses every core
from threads, while each worker process would repeat the interpreter, its modules, GDAL's block
cache and malloc's arenas (see luigi.cfg [datacube]); and an embedded cluster of threads would
only add its import, scheduler, event loop and shutdown (~1 s of wall time and ~1 s of CPU per
run measured on scripts/bench_hls.py) to what the calls need."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import luigi

log = logging.getLogger(__name__)

# Where an existing scheduler is named, first found wins: our variable, then luigi.cfg, then the
# variable of the Causemos reference flow (uncharted-causemos/slow-tortoise), so its deployments'
# environment works unchanged.
SCHEDULER_ENV = "PIPELINE_DASK_SCHEDULER"
REFERENCE_SCHEDULER_ENV = "WM_DASK_SCHEDULER"


class dask(luigi.Config):
    """Section [dask] of luigi.cfg."""

    scheduler_address = luigi.Parameter(
        default="", description="tcp://host:port of an existing Dask scheduler; empty = embedded LocalCluster"
    )
    n_workers = luigi.IntParameter(
        default=0, description="LocalCluster worker processes; 0 = number of cores"
    )
    threads_per_worker = luigi.IntParameter(
        default=2, description="threads per LocalCluster worker (reads release the GIL)"
    )
    processes = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="LocalCluster workers as processes (true) or threads of this process (false)",
    )
    memory_limit = luigi.Parameter(default="2GiB", description="LocalCluster memory limit per worker")


# What a worker logs, with a traceback, when a heartbeat of it fails.
_HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat."
_CLOSING = ("closing", "closing_gracefully", "closed")  # distributed.core.Status names


class _ClosingHeartbeatFilter(logging.Filter):
    """Drops the heartbeat failure a worker logs when its own closing cut that heartbeat.

    Worker.close closes the worker's connections while a heartbeat may still await the
    scheduler's reply (dask/distributed#7105); the heartbeat then logs an error and a traceback
    on the run's stderr at every close that meets one in flight (more often on a loaded
    machine), about nothing: the worker was leaving. A heartbeat that fails while every worker
    of the process runs is a real sign of trouble and is kept. One filter per process; workers
    in threads of one process share it."""

    def __init__(self) -> None:
        super().__init__()
        self.workers: weakref.WeakSet[Any] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != _HEARTBEAT_FAILED:
            return True
        return not any(getattr(w.status, "name", "") in _CLOSING for w in list(self.workers))


_closing_heartbeat_filter = _ClosingHeartbeatFilter()  # this process's


def _watch_closing(worker: Any) -> None:
    logging.getLogger("distributed.worker").addFilter(_closing_heartbeat_filter)  # once: a no-op after
    _closing_heartbeat_filter.workers.add(worker)


def _quiet_closing_heartbeats_plugin() -> Any:
    """A worker plugin (the scheduler gives it to every worker, restarted ones too) that
    keeps a closing worker's cut heartbeat off stderr: see :class:`_ClosingHeartbeatFilter`."""
    from distributed.diagnostics.plugin import WorkerPlugin  # distributed: only once a cluster is made

    class QuietClosingHeartbeats(WorkerPlugin):
        name = "pipeline-quiet-closing-heartbeats"

        def setup(self, worker: Any) -> None:
            _watch_closing(worker)

    return QuietClosingHeartbeats()


_state: dict[str, Any] = {"pid": None, "client": None, "cluster": None, "processes": False}


def _close() -> None:
    client, cluster = _state.get("client"), _state.get("cluster")
    for thing in (client, cluster):
        if thing is not None:
            with contextlib.suppress(Exception):  # shutting down: nothing useful to do with an error
                thing.close()
    _state.update(client=None, cluster=None)


def has_client() -> bool:
    """Whether this process has its Dask client already (asking for it then costs nothing)."""
    return _state["client"] is not None and _state["pid"] == os.getpid()


def scheduler_address(config: dask) -> str:
    """The existing scheduler to connect to; empty = start an embedded cluster."""
    return (
        os.environ.get(SCHEDULER_ENV)
        or config.scheduler_address
        or os.environ.get(REFERENCE_SCHEDULER_ENV, "")
    )


def get_client(config: dask | None = None) -> Any:
    """The process's Dask client, created on first call: an existing scheduler's, or an
    embedded cluster's in [dask]'s layout."""
    from distributed import Client, LocalCluster

    if has_client():
        return _state["client"]
    cfg = config or dask()
    address = scheduler_address(cfg)
    if address:
        log.info("connecting to the Dask scheduler at %s", address)
        client = Client(address, timeout="30s")
        cluster = None
    else:
        n_workers = cfg.n_workers or (os.cpu_count() or 1)
        threads_per_worker = cfg.threads_per_worker
        processes = cfg.processes
        import multiprocessing

        if processes and multiprocessing.parent_process() is not None:
            # A forked luigi task process (--workers N) ends with os._exit: worker processes
            # it spawned would be left to die noisily. Threads of this process instead.
            processes = False
        from dask import config as dask_config

        # distributed's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then
        # maps and unmaps every array over 64 KB, and a 255 x 255 chip makes dozens per
        # observation; measured 30.4 -> 21.6 ms of CPU per observation without it.
        environ = {
            k: v
            for k, v in dask_config.get("distributed.nanny.pre-spawn-environ", {}).items()
            if k != "MALLOC_TRIM_THRESHOLD_"
        }
        dask_config.set({"distributed.nanny.pre-spawn-environ": environ})
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            memory_limit=cfg.memory_limit,
            # The scheduler's HTTP server (its dashboard, with bokeh installed; health and
            # metrics) on a free loopback port: None would take 8787, where another Dask
            # dashboard often runs, and warn on every run that it moved.
            dashboard_address="127.0.0.1:0",
            # Loopback only; in-process workers use inproc:// and take no host.
            **({"host": "127.0.0.1"} if processes else {}),
        )
        client = Client(cluster)
        # Our cluster, so our workers' logs: not on a scheduler elsewhere.
        client.register_plugin(_quiet_closing_heartbeats_plugin())
        log.info(
            "started an embedded Dask LocalCluster: %d workers x %d threads (%s), dashboard %s",
            n_workers,
            threads_per_worker,
            "processes" if processes else "threads",
            client.dashboard_link,
        )
    if _state["pid"] is None:
        atexit.register(_close)
    _state.update(pid=os.getpid(), client=client, cluster=cluster, processes=bool(cluster and processes))
    return client


def renew_embedded_workers(timeout: float = 60.0) -> bool:
    """Restart the worker processes of the embedded cluster this process started (no-op on a
    scheduler elsewhere, whose workers are not ours, and on threads of this process); True if
    they were. For the end of a stage that leaves its workers' heaps grown (freed memory that
    glibc and Arrow's allocator keep) before a stage of other work: call it only when nothing
    else runs on the cluster. A failure to restart is logged, not raised (the work goes on in
    the workers as they are)."""
    if not has_client() or not _state["processes"]:  # processes: of an embedded cluster only
        return False
    try:
        _state["client"].restart(timeout=timeout, wait_for_workers=True)
    except Exception as exc:  # memory hygiene only: never the reason a run fails
        log.warning("could not restart the embedded Dask workers: %s", exc)
        return False
    return True


def dask_threads(in_process: bool, threads: int) -> int | None:
    """Where a workflow's calls run when no scheduler is configured, from its config's
    ``dask_in_process`` and ``dask_threads`` (e.g. [datacube], [hls]): ``threads`` threads of
    the luigi process (0: one per core), to pass as ``in_process_threads``, or None for an
    embedded cluster in [dask]'s layout (``in_process`` false).

    Why threads: work that is GDAL reads and decoding, numpy and DEFLATE releases the GIL, so
    one process's threads keep every core busy, while each worker process holds its own
    interpreter and modules (~120 MiB), GDAL block cache (up to 64 MiB) and malloc arenas, and
    [dask]'s default (a worker process per core, 2 threads each) also has twice the work in
    flight. See luigi.cfg [datacube] and [hls] for the measured figures."""
    if not in_process:
        return None
    return threads if threads > 0 else (os.cpu_count() or 1)


class InProcessDask(luigi.Config):
    """A workflow config's choice of where its calls run without a scheduler (``dask_in_process``,
    ``dask_threads``: [datacube], [hls]); an existing scheduler is used as it is."""

    dask_in_process = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="without a scheduler, the work on threads of the luigi process (true) or on an "
        "embedded Dask cluster in [dask]'s layout (false); an existing scheduler is used as it is",
    )
    dask_threads = luigi.IntParameter(
        default=0, description="with dask_in_process: threads for the work; 0 = one per core"
    )

    def in_process_threads(self) -> int | None:
        """``in_process_threads`` for :func:`run_each` (see :func:`dask_threads`)."""
        return dask_threads(bool(self.dask_in_process), int(self.dask_threads))


class Submitted:
    """Calls submitted by :func:`run_each`, to the Dask cluster or to a thread pool of this
    process. Iterating yields ``(index of the call, its future)`` in the order they finish, for
    the caller to take ``result()`` (raising) or look at the exception. Leaving the loop early
    (a ``break``, an exception, the task being killed), or the ``with`` block around it,
    cancels the calls not yet started, so no orphan keeps writing after its task has given up;
    on the thread pool it also waits for the running ones (they are this process's threads)."""

    def __init__(self, futures: list[Any], *, on_threads: bool = False) -> None:
        self.futures = futures
        self.on_threads = on_threads

    def __len__(self) -> int:
        return len(self.futures)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if not self.futures:
            return
        index = {id(future): i for i, future in enumerate(self.futures)}
        try:
            for future in self._as_completed():
                yield index[id(future)], future
        finally:
            self.cancel()

    def _as_completed(self) -> Iterator[Any]:
        if self.on_threads:
            from concurrent.futures import as_completed

            return as_completed(self.futures)
        from distributed import as_completed as dask_as_completed

        return iter(dask_as_completed(self.futures))

    def cancel(self) -> None:
        for future in self.futures:
            if not future.done():
                future.cancel()
        if self.on_threads:
            from concurrent.futures import wait

            wait(self.futures)

    def __enter__(self) -> Submitted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


# What a call on one of run_each's pool threads keeps for the next call on the same thread
# (see :func:`kept_per_thread`); absent on every other thread.
_pool_thread = threading.local()

Kept = TypeVar("Kept")


def kept_per_thread(name: str, make: Callable[[], Kept]) -> Kept:
    """``make()``'s object, kept for the later calls on this thread when the call runs on
    :func:`run_each`'s thread pool (working arrays a call would otherwise allocate, and the
    kernel map and zero, anew each time); a new one on any other thread. A Dask worker's
    threads outlive the run, so nothing is kept there; the pool's threads end with the run."""
    kept: dict[str, Any] | None = getattr(_pool_thread, "kept", None)
    if kept is None:
        return make()
    if name not in kept:
        kept[name] = make()
    return kept[name]  # type: ignore[no-any-return]


def _start_pool_thread() -> None:
    _pool_thread.kept = {}


def on_own_threads(in_process_threads: int | None) -> bool:
    """Whether :func:`run_each` with this ``in_process_threads`` runs on a thread pool of this
    process: asked for, with no scheduler configured and no Dask client in the process yet (a
    client there, e.g. an earlier task's or a test's cluster, is used as it is)."""
    return in_process_threads is not None and not has_client() and not scheduler_address(dask())


def run_each(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    *,
    name: str,
    labels: Sequence[str] = (),
    in_process_threads: int | None = None,
) -> Submitted:
    """``fn(*call)`` for every call, submitted now in the calls' order (see :class:`Submitted`
    for taking the results): on ``in_process_threads`` threads of this process when
    :func:`on_own_threads` says so, otherwise one Dask task each on :func:`get_client`'s
    cluster.

    Every workflow's calls write outputs, so none is ``pure`` (Dask must not merge two calls
    with equal arguments, or skip one it thinks it has), and each key is unique to this
    process and instant (``{name}-{label}-{pid}-{ns}``): a second luigi worker, or a rerun on a
    long-lived cluster, never collides with a key still held."""
    if not calls:
        return Submitted([])
    if in_process_threads is not None and on_own_threads(in_process_threads):
        from concurrent.futures import ThreadPoolExecutor

        threads = max(1, in_process_threads)
        log.debug("running %d %s call(s) on %d threads of this process", len(calls), name, threads)
        pool = ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=_start_pool_thread)
        try:
            futures = [pool.submit(fn, *call) for call in calls]
        finally:
            pool.shutdown(wait=False)  # the submitted calls still run; the threads end after them
        return Submitted(futures, on_threads=True)
    client = get_client()
    pid = os.getpid()
    return Submitted(
        [
            client.submit(
                fn, *call, pure=False, key=f"{name}-{labels[i] if labels else i}-{pid}-{time.monotonic_ns()}"
            )
            for i, call in enumerate(calls)
        ]
    )
