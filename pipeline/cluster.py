"""A Dask client for the current task run: an existing scheduler when configured
(``PIPELINE_DASK_SCHEDULER``, ``[dask] scheduler_address`` in luigi.cfg, or
``WM_DASK_SCHEDULER``: the Causemos reference flow's variable, accepted as an alias), otherwise an
embedded ``LocalCluster`` started on first use and kept for the life of the process (Luigi
runs tasks in the scheduling process with one worker; with ``--workers N`` each task runs
in a forked process, which gets its own).

A workflow may ask for its embedded cluster's workers as threads of this process
(``in_process_threads``, e.g. ``[datacube] dask_in_process``): work that is GDAL and numpy, which
release the GIL, uses every core from threads, while each worker process would repeat the
interpreter, its modules, GDAL's block cache and malloc's arenas (see luigi.cfg [datacube])."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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


_state: dict[str, Any] = {"pid": None, "client": None, "cluster": None}


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


def get_client(config: dask | None = None, *, in_process_threads: int | None = None) -> Any:
    """The process's Dask client, created on first call. ``in_process_threads``: when the call
    starts an embedded cluster, one worker in this process with that many threads instead of
    [dask]'s layout (an existing scheduler, or a client this process has already, is used as
    it is: the first call of the process decides)."""
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
        if in_process_threads is not None:
            n_workers, threads_per_worker, processes = 1, max(1, in_process_threads), False
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
            dashboard_address=None,
            # Loopback only; in-process workers use inproc:// and take no host.
            **({"host": "127.0.0.1"} if processes else {}),
        )
        client = Client(cluster)
        log.info(
            "started an embedded Dask LocalCluster: %d workers x %d threads (%s)",
            n_workers,
            threads_per_worker,
            "processes" if processes else "threads",
        )
    if _state["pid"] is None:
        atexit.register(_close)
    _state.update(pid=os.getpid(), client=client, cluster=cluster)
    return client


def dask_threads(in_process: bool, threads: int) -> int | None:
    """A workflow's Dask layout when the pipeline starts its own cluster, from its config's
    ``dask_in_process`` and ``dask_threads`` (e.g. [datacube], [hls]): ``threads`` threads of
    the luigi process (0: one per core), to pass as ``in_process_threads``, or None for
    [dask]'s layout (``in_process`` false).

    Why threads: work that is GDAL reads and decoding, numpy and DEFLATE releases the GIL, so
    one process's threads keep every core busy, while each worker process holds its own
    interpreter and modules (~120 MiB), GDAL block cache (up to 64 MiB) and malloc arenas, and
    [dask]'s default (a worker process per core, 2 threads each) also has twice the work in
    flight. See luigi.cfg [datacube] and [hls] for the measured figures."""
    if not in_process:
        return None
    return threads if threads > 0 else (os.cpu_count() or 1)


class InProcessDask(luigi.Config):
    """A workflow config's choice of Dask layout for an embedded cluster (``dask_in_process``,
    ``dask_threads``: [datacube], [hls]); an existing scheduler is used as it is."""

    dask_in_process = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="an embedded Dask cluster's work on threads of the luigi process (true) or on "
        "[dask]'s worker processes (false); an existing scheduler is used as it is",
    )
    dask_threads = luigi.IntParameter(
        default=0, description="with dask_in_process: threads for the work; 0 = one per core"
    )

    def in_process_threads(self) -> int | None:
        """``in_process_threads`` for :func:`run_each` (see :func:`dask_threads`)."""
        return dask_threads(bool(self.dask_in_process), int(self.dask_threads))


class Submitted:
    """Calls submitted to the Dask cluster by :func:`run_each`. Iterating yields ``(index of the
    call, its future)`` in the order they finish, for the caller to take ``result()`` (raising)
    or look at the exception. Leaving the loop early (a ``break``, an exception, the task being
    killed), or the ``with`` block around it, cancels the calls not yet finished, so no orphan
    keeps writing after its task has given up."""

    def __init__(self, futures: list[Any]) -> None:
        self.futures = futures

    def __len__(self) -> int:
        return len(self.futures)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if not self.futures:
            return
        from distributed import as_completed

        index = {future.key: i for i, future in enumerate(self.futures)}
        try:
            for future in as_completed(self.futures):
                yield index[future.key], future
        finally:
            self.cancel()

    def cancel(self) -> None:
        for future in self.futures:
            if not future.done():
                future.cancel()

    def __enter__(self) -> Submitted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def run_each(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    *,
    name: str,
    labels: Sequence[str] = (),
    in_process_threads: int | None = None,
) -> Submitted:
    """``fn(*call)`` for every call, one Dask task each, submitted now (see :class:`Submitted`
    for taking the results). ``in_process_threads``: see :func:`get_client`.

    Every workflow's calls write outputs, so none is ``pure`` (Dask must not merge two calls
    with equal arguments, or skip one it thinks it has), and each key is unique to this
    process and instant (``{name}-{label}-{pid}-{ns}``): a second luigi worker, or a rerun on a
    long-lived cluster, never collides with a key still held."""
    if not calls:
        return Submitted([])
    client = get_client(in_process_threads=in_process_threads)
    pid = os.getpid()
    return Submitted(
        [
            client.submit(
                fn, *call, pure=False, key=f"{name}-{labels[i] if labels else i}-{pid}-{time.monotonic_ns()}"
            )
            for i, call in enumerate(calls)
        ]
    )
