#!/usr/bin/env python
"""Crash trials: SIGKILL a TimeSync run at a random instant, rerun it, check the result.

    .venv/bin/python scripts/crash_trials.py                      # 20 local + 4 S3 trials
    .venv/bin/python scripts/crash_trials.py --trials 40 --seed 7 --s3-trials 0
    .venv/bin/python scripts/crash_trials.py --modes ingest,mid-observation --trials 6
    .venv/bin/python scripts/crash_trials.py --workflow hls --trials 12      # the HLS workflow

Each trial starts ``luigi --module pipeline.timesync TimeSyncProject ...`` exactly as a
user does (its own session and process group, so the Dask worker processes are in it),
kills the whole group with SIGKILL at a random moment, reruns the same command to
completion and checks:

1. after the kill, every file under a name that is not a dot-temporary is complete:
   byte-equal to the file of that name in a clean run (nothing half-written, nothing
   unexpected); dot-temporaries are listed (never a target's name: targets never start
   with ``.``), and no process of the killed run survives;
2. after the rerun (exit 0), the outputs equal the independent oracle
   (``tests/oracle.compare_tree``, leftover dot-temporaries aside) and every file is
   byte-equal to the clean run's; the pipeline's own listings never return a leftover
   temporary;
3. the rerun redid only unfinished work: every file present after the kill keeps its
   inode and mtime (S3: no PUT of its key), and the files the rerun wrote are exactly
   the ones that were missing.

Kill moments (``--modes``, picked at random per trial):

- ``time``: uniformly in [0, duration of a clean run];
- ``files``: as soon as the k-th file (k random) appears in the project directory;
- ``mid-observation``: CSV renames slowed to 0.5 s (a slow disk, through a
  ``sitecustomize`` hook on ``os.replace`` in the run's processes only), killed once k
  PNGs exist and a CSV is waiting under its temporary name, i.e. while observations have
  their PNGs but not yet their CSV;
- ``ingest``: ingest-file renames slowed to 0.5 s, killed when the first
  ``*_region_spectrals.csv`` appears (inside TimeSyncIngest);
- S3 trials (``--s3-trials``; project directory ``s3://`` on a SeaweedFS server started
  here, through tests/servers/fault_proxy.py): ``upload`` delays 15 % of the PUTs by 1 s
  and kills after k objects exist, so uploads are in flight at the kill; ``s3-ingest``
  delays every ingest-file PUT by 1 s and kills after the first one exists.

HLS (``--workflow hls``): a run is ``HlsComposites`` then ``HlsSamples`` (one shell, one
process group) on the small synthetic HLS archive (``small_hls_spec``); the clean run's
composites are checked against the independent oracle (``tests/hls_oracle.py``) and every
trial's final files against the clean run's, byte for byte. Kill moments: ``time``,
``files`` (as above), ``mid-cog`` (composite renames slowed to 0.5 s, killed while a COG
waits under its temporary name), ``mid-samples`` (the Zarr store's rename slowed, killed
while a sample store waits under its temporary name). A Zarr store rewritten by the rerun
because its completion marker (the ``_centre.parquet``) was missing is not a rewrite of
finished work: the marker is what makes it finished.

Exit status 0 when every trial passed; the figures are printed and, with ``--json``,
written to a file. ``tests/test_crash_safety.py`` runs a few of these trials in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import oracle  # noqa: E402
from tests.helpers import LUIGI, luigi_env, timesync_args, without_aws_endpoint  # noqa: E402

LOCAL_MODES = ("time", "files", "mid-observation", "ingest")
HLS_MODES = ("time", "files", "mid-cog", "mid-samples")
HLS_COG_RE = r"/composites/[^/]+/\d{4}/[^/]+\.tif$"
HLS_ZARR_RE = r"/samples/\d{4}/[^/]+\.zarr$"
ZARR_METADATA = (".zmetadata", ".zarray", ".zattrs", ".zgroup")
S3_MODES = ("upload", "s3-ingest")
INGEST_SUFFIX = "_region_spectrals.csv"
OBS_CSV_RE = r"_spectral_files_set_\d{4}_\d{3}\.csv$"
INGEST_RE = r"_region_spectrals\.csv$"

# Loaded first by every Python process of the run (PYTHONPATH): makes os.replace slow for
# chosen target names, like a slow disk, so a kill lands inside a chosen phase. The
# pipeline's code is not touched; without CRASH_TRIALS_SLOW_REPLACE nothing changes.
SITECUSTOMIZE = """\
import json as _json, os as _os, re as _re, time as _time
_spec = _os.environ.get("CRASH_TRIALS_SLOW_REPLACE")
if _spec:
    _rules = [(_re.compile(p), float(s)) for p, s in _json.loads(_spec)]
    _replace = _os.replace
    def _slow_replace(src, dst, *args, **kwargs):
        for rx, seconds in _rules:
            if rx.search(_os.fspath(dst)):
                _time.sleep(seconds)
                break
        return _replace(src, dst, *args, **kwargs)
    _os.replace = _slow_replace
"""


# --------------------------------------------------------------------------- trees
@dataclass(frozen=True)
class FileState:
    ident: tuple[Any, ...]  # local: (inode, mtime_ns); S3: (etag, last_modified)
    size: int
    sha1: str


def is_derived(rel: str) -> bool:
    """The QA report (``report/``, ``*.html``): rebuilt by design whenever a run changed the
    project, so it is left out of the byte-for-byte and rewrite checks (as the oracle
    leaves it out of its comparison)."""
    return rel.startswith("report/") or "/report/" in rel or rel.endswith(".html")


def is_temporary(rel: str) -> bool:
    """Targets never start with '.', so a dot-name is a temporary (or someone else's), and so
    is every file inside a dot-directory (a Zarr store's temporary); Zarr's own metadata
    names (``.zarray`` ...) are not."""
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts[:-1]) or (
        parts[-1].startswith(".") and parts[-1] not in ZARR_METADATA
    )


def temporary_root(rel: str) -> str:
    """The path of the temporary that holds ``rel``: its first dot-named component (a
    temporary directory) or ``rel`` itself."""
    parts = rel.split("/")
    for i, p in enumerate(parts[:-1]):
        if p.startswith("."):
            return "/".join(parts[: i + 1])
    return rel


def compare_with_clean(trial: Trial, final: dict[str, FileState], clean: Clean) -> dict[str, FileState]:
    """The rerun's final files under target names (temporaries left out); every one missing,
    unexpected or with other bytes than the clean run's is a problem of the trial."""
    final_targets = {k: v for k, v in final.items() if not is_temporary(k)}
    if set(final_targets) != set(clean.tree):
        trial.problems.append(
            f"after the rerun: missing {sorted(set(clean.tree) - set(final_targets))[:5]}, "
            f"unexpected {sorted(set(final_targets) - set(clean.tree))[:5]}"
        )
    for rel in sorted(set(final_targets) & set(clean.tree)):
        if final_targets[rel].sha1 != clean.tree[rel].sha1:
            trial.problems.append(f"after the rerun: {rel} differs from the clean run's")
    return final_targets


def walk_local(root: Path) -> dict[str, FileState]:
    out: dict[str, FileState] = {}
    if not root.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                st = p.stat()
                data = p.read_bytes()
            except FileNotFoundError:  # renamed away while walking
                continue
            rel = p.relative_to(root).as_posix()
            if is_derived(rel):
                continue
            out[rel] = FileState((st.st_ino, st.st_mtime_ns), st.st_size, hashlib.sha1(data).hexdigest())
    return out


def count_local(root: Path, pred: Callable[[str], bool] = lambda name: True) -> int:
    n = 0
    for _dirpath, _dirs, files in os.walk(root):
        n += sum(1 for f in files if pred(f))
    return n


def walk_s3(fs: Any, prefix: str) -> dict[str, FileState]:
    out: dict[str, FileState] = {}
    prefix = prefix.rstrip("/")
    try:
        found = fs.find(prefix, detail=True)
    except FileNotFoundError:
        return out
    for key, info in found.items():
        rel = key[len(prefix) + 1 :]
        if is_derived(rel):
            continue
        data = fs.cat_file(key)
        out[rel] = FileState(
            (info.get("ETag"), str(info.get("LastModified"))), len(data), hashlib.sha1(data).hexdigest()
        )
    return out


# --------------------------------------------------------------------------- processes
def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, _ppid, pgrp, session = rest[0], rest[1], int(rest[2]), int(rest[3])
        if state in ("Z", "X"):
            continue
        if session == sid or pgrp == sid:
            pids.append(int(entry))
    return pids


def start_run(
    args: list[str], *, cwd: Path, env: dict[str, str], log: Path, commands: list[list[str]] | None = None
) -> subprocess.Popen:
    """The luigi CLI in its own session (pgid = sid = pid): every child is in the group.
    ``commands``: several command lines run one after another by one shell (``&&``) instead."""
    cmd = [LUIGI, "--module", "pipeline.timesync", *args]
    if commands:
        cmd = ["/bin/sh", "-c", " && ".join(shlex.join(c) for c in commands)]
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the run's whole process group; return the pids that outlived it (escaped
    the group: they are killed too, and reported)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and session_members(proc.pid):
        time.sleep(0.05)
    survivors = session_members(proc.pid)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return survivors


def wait_until(proc: subprocess.Popen, cond: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    """Poll ``cond`` until true (-> True) or the process exits / time runs out (-> False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(poll)
    return False


# --------------------------------------------------------------------------- setup
@dataclass
class Clean:
    tree: dict[str, FileState]  # of a clean local run
    duration: float
    expected: dict[str, Any]  # oracle


@dataclass
class Trial:
    index: int
    mode: str
    parameter: float | int | None = None
    killed_after: float = 0.0
    finished_before_kill: bool = False
    files_at_kill: int = 0
    complete_files: int = 0
    ingest_files_at_kill: int = 0
    missing: int = 0
    temporaries: list[str] = field(default_factory=list)
    written_by_rerun: int = 0
    rewritten: list[str] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    rerun_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        status = "ok" if self.ok else f"{len(self.problems)} PROBLEM(S)"
        return (
            f"trial {self.index:2d} {self.mode:15s} param={self.parameter!s:7s} kill@{self.killed_after:5.1f}s "
            f"files@kill={self.files_at_kill:3d} (temps {len(self.temporaries)}) missing={self.missing:3d} "
            f"rerun wrote {self.written_by_rerun:3d} rewrote {len(self.rewritten)} in {self.rerun_seconds:4.1f}s: {status}"
        )


class Harness:
    """Everything the trials share: the archive, a clean run, the oracle's expectation."""

    def __init__(self, archive: Any, workdir: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        self.archive = archive
        self.workdir = Path(workdir)
        self.extra_args = list(extra_args)
        hook = self.workdir / "hook"
        hook.mkdir(parents=True, exist_ok=True)
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.hook_dir = hook
        self._clean: Clean | None = None

    def args(self, project: str) -> list[str]:
        return [*timesync_args(self.archive, project), *self.extra_args]

    def env(
        self, slow: list[tuple[str, float]] | None = None, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        env = luigi_env(extra)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.hook_dir), str(REPO), *filter(None, [env.get("PYTHONPATH", "")])]
        )
        env.pop("CRASH_TRIALS_SLOW_REPLACE", None)
        if slow:
            env["CRASH_TRIALS_SLOW_REPLACE"] = json.dumps(slow)
        return env

    def start(self, project: str, env: dict[str, str], log: Path) -> subprocess.Popen:
        """One run of the workflow on ``project`` in its own process group."""
        return start_run(self.args(project), cwd=self.workdir, env=env, log=log)

    def run(self, project: str, env: dict[str, str], log: Path, timeout: float = 900) -> tuple[int, float]:
        t0 = time.monotonic()
        proc = self.start(project, env, log)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            raise
        return rc, time.monotonic() - t0

    @property
    def clean(self) -> Clean:
        if self._clean is None:
            project = self.workdir / "clean"
            shutil.rmtree(project, ignore_errors=True)
            rc, seconds = self.run(str(project), self.env(), self.workdir / "clean.log")
            if rc != 0:
                raise RuntimeError(
                    f"clean run failed ({rc}):\n{(self.workdir / 'clean.log').read_text()[-4000:]}"
                )
            tree = walk_local(project)
            temps = [k for k in tree if is_temporary(k)]
            if temps:
                raise RuntimeError(f"a clean run left temporaries: {temps}")
            expected = self.expected()
            differences = self.oracle_differences(project, expected)
            if differences:
                raise RuntimeError(f"the clean run differs from the oracle: {differences[:10]}")
            self._clean = Clean(tree, seconds, expected)
        return self._clean

    def expected(self) -> Any:
        """The independent oracle's outputs for the archive."""
        return oracle.expected_outputs(self.archive.catalog_ndjson, self.archive.plot_file, asset_href="href")

    def oracle_differences(self, project: Path, expected: Any) -> list[str]:
        """How the project's outputs differ from the oracle's (leftover temporaries aside)."""
        return [d for d in oracle.compare_tree(project, expected) if not _is_temp_difference(d)]

    def kill_moment(
        self, mode: str, project: Path, clean: Clean, trial: Trial, rng: random.Random
    ) -> tuple[list[tuple[str, float]], Callable[[], bool], float]:
        """For a local trial of ``mode``: renames to slow down, the kill condition, its timeout."""
        n_clean = len(clean.tree)
        n_png = sum(1 for k in clean.tree if k.endswith(".png"))
        if mode == "time":
            trial.parameter = round(rng.uniform(0.3, clean.duration), 2)
            return [], lambda: False, float(trial.parameter)
        if mode == "files":
            trial.parameter = k = rng.randint(1, n_clean - 1)
            return [], lambda: count_local(project) >= k, 600
        if mode == "mid-observation":
            trial.parameter = rng.randint(1, max(1, n_png // 3))

            # ... and a CSV is being renamed (under its dot-temporary name) at that instant
            def csv_waiting() -> bool:
                pngs = count_local(project, lambda n: n.endswith(".png") and not n.startswith("."))
                return pngs >= int(trial.parameter or 0) and (
                    count_local(project, lambda n: n.startswith(".") and ".csv" in n) > 0
                )

            return [(OBS_CSV_RE, 0.5)], csv_waiting, 600
        if mode == "ingest":

            def ingest_written() -> bool:
                return project.is_dir() and any(n.endswith(INGEST_SUFFIX) for n in os.listdir(project))

            return [(INGEST_RE, 0.5)], ingest_written, 600
        raise ValueError(f"unknown local mode {mode!r}")

    def rewrite_allowed(self, rel: str, complete_before: dict[str, FileState]) -> bool:
        """A file complete before the kill that the rerun may replace (none for TimeSync)."""
        return False

    # ----------------------------------------------------------------- local trials
    def local_trial(self, index: int, mode: str, rng: random.Random) -> Trial:
        clean = self.clean
        trial = Trial(index, mode)
        project = self.workdir / f"trial{index:03d}"
        shutil.rmtree(project, ignore_errors=True)
        slow, cond, timeout = self.kill_moment(mode, project, clean, trial, rng)
        t0 = time.monotonic()
        proc = self.start(str(project), self.env(slow), self.workdir / f"trial{index:03d}-killed.log")
        hit = wait_until(proc, cond, timeout)
        trial.killed_after = time.monotonic() - t0
        trial.finished_before_kill = proc.poll() is not None
        if mode != "time" and not hit:
            trial.problems.append(
                f"the kill condition ({mode} {trial.parameter}) never happened; run exit {proc.poll()}"
            )
        trial.survivors = kill_tree(proc)
        if trial.survivors:
            trial.problems.append(f"processes outlived SIGKILL of the process group: {trial.survivors}")
        after = walk_local(project)
        self._check_after_kill(trial, after, clean)
        t1 = time.monotonic()
        rc, _ = self.run(str(project), self.env(), self.workdir / f"trial{index:03d}-rerun.log")
        trial.rerun_seconds = time.monotonic() - t1
        if rc != 0:
            log = (self.workdir / f"trial{index:03d}-rerun.log").read_text(errors="replace")
            trial.problems.append(f"rerun exit status {rc}: {log[-2000:]}")
        final = walk_local(project)
        self._check_after_rerun(trial, after, final, clean)
        differences = self.oracle_differences(project, clean.expected)
        if differences:
            trial.problems.append(f"oracle differences after the rerun: {differences[:5]}")
        self._check_listings(trial, project, final)
        return trial

    # ----------------------------------------------------------------- checks
    def _check_after_kill(self, trial: Trial, after: dict[str, FileState], clean: Clean) -> None:
        trial.files_at_kill = len(after)
        trial.temporaries = sorted(k for k in after if is_temporary(k))
        complete = {k: v for k, v in after.items() if not is_temporary(k)}
        trial.complete_files = len(complete)
        trial.ingest_files_at_kill = sum(1 for k in complete if k.endswith(INGEST_SUFFIX))
        for rel, state in sorted(complete.items()):
            if rel not in clean.tree:
                trial.problems.append(f"after the kill: {rel} exists, but a clean run has no such file")
            elif state.sha1 != clean.tree[rel].sha1:
                trial.problems.append(
                    f"after the kill: {rel} is under a target name but differs from the clean run's (incomplete?)"
                )
        trial.missing = len(set(clean.tree) - set(complete))

    def _check_after_rerun(
        self, trial: Trial, after: dict[str, FileState], final: dict[str, FileState], clean: Clean
    ) -> None:
        final_targets = compare_with_clean(trial, final, clean)
        new_temps = sorted(k for k in final if is_temporary(k) and k not in after)
        if new_temps:
            trial.problems.append(f"the (unkilled) rerun left temporaries: {new_temps[:5]}")
        complete_before = {k: v for k, v in after.items() if not is_temporary(k)}
        trial.rewritten = sorted(
            k
            for k, v in complete_before.items()
            if k in final and final[k].ident != v.ident and not self.rewrite_allowed(k, complete_before)
        )
        written = {
            k
            for k, v in final_targets.items()
            if k not in complete_before
            or (v.ident != complete_before[k].ident and not self.rewrite_allowed(k, complete_before))
        }
        trial.written_by_rerun = len(written)
        if trial.rewritten:
            trial.problems.append(
                f"the rerun rewrote {len(trial.rewritten)} file(s) that were complete before the kill "
                f"(new inode/mtime): {trial.rewritten[:6]}"
            )
        missing = set(clean.tree) - set(complete_before)
        if len(written) > len(missing):
            trial.problems.append(
                f"the rerun wrote {len(written)} files, but only {len(missing)} were missing"
            )

    def _check_listings(self, trial: Trial, project: Path, final: dict[str, FileState]) -> None:
        """Leftover temporaries are never taken for targets by the pipeline's listings."""
        from targets.store import Store

        store = Store(str(project))
        for rel in {temporary_root(k) for k in final if is_temporary(k)}:
            directory, _, name = rel.rpartition("/")
            if name in store.list_names(directory):
                trial.problems.append(
                    f"the pipeline's listing of {directory or '.'} returns the temporary {name}"
                )

    # ----------------------------------------------------------------- S3 trials
    def s3_trial(self, index: int, mode: str, rng: random.Random, s3: S3Context) -> Trial:
        from tests.servers.fault_proxy import FaultProxy, FaultRule

        clean = self.clean
        trial = Trial(index, mode)
        prefix = f"{s3.bucket}/crash-{os.getpid()}-{index:03d}-{rng.randrange(1 << 30):08x}"
        url = f"s3://{prefix}"
        delay = 1.0
        if mode == "upload":
            rules = [FaultRule("delay", 0.15, match=lambda m, p: m == "PUT", delay=delay)]
            trial.parameter = rng.randint(1, max(1, len(clean.tree) - 20))
            k = trial.parameter

            def cond() -> bool:
                return len(s3.fs.find(prefix)) >= k

        elif mode == "s3-ingest":
            rules = [
                FaultRule("delay", 1.0, match=lambda m, p: m == "PUT" and INGEST_SUFFIX in p, delay=delay)
            ]

            def cond() -> bool:
                return any(k.endswith(INGEST_SUFFIX) for k in s3.fs.find(prefix))

        else:
            raise ValueError(f"unknown S3 mode {mode!r}")
        proxy = FaultProxy("127.0.0.1", s3.server.proxy.port, rules=rules, seed=rng.randrange(1 << 30))
        proxy._server.handle_error = lambda request, client_address: (
            None
        )  # a killed client's broken pipe is expected
        try:
            env = without_aws_endpoint(self.env(extra=s3.credentials()))
            args = [*self.args(url), "--output-endpoint-url", proxy.url, "--output-region", s3.server.region]
            t0 = time.monotonic()
            proc = start_run(
                args, cwd=self.workdir, env=env, log=self.workdir / f"trial{index:03d}-killed.log"
            )
            hit = wait_until(proc, cond, 600, poll=0.1)
            trial.killed_after = time.monotonic() - t0
            trial.finished_before_kill = proc.poll() is not None
            if not hit:
                trial.problems.append(
                    f"the kill condition ({mode} {trial.parameter}) never happened; run exit {proc.poll()}"
                )
            trial.survivors = kill_tree(proc)
            if trial.survivors:
                trial.problems.append(f"processes outlived SIGKILL of the process group: {trial.survivors}")
            time.sleep(delay + 1.5)  # PUTs the proxy was holding finish now (as on real S3)
        finally:
            proxy.stop()
        after = walk_s3(s3.fs, prefix)
        self._check_after_kill(trial, after, clean)
        s3.server.reset_counts()
        args = [
            *self.args(url),
            "--output-endpoint-url",
            s3.server.endpoint_url,
            "--output-region",
            s3.server.region,
        ]
        t1 = time.monotonic()
        log = self.workdir / f"trial{index:03d}-rerun.log"
        proc = start_run(args, cwd=self.workdir, env=env, log=log)
        rc = proc.wait(timeout=900)
        trial.rerun_seconds = time.monotonic() - t1
        text = log.read_text(errors="replace")
        if rc != 0:
            trial.problems.append(f"rerun exit status {rc}: {text[-2000:]}")
        if s3.server.secret_key in text or s3.server.secret_key in (
            self.workdir / f"trial{index:03d}-killed.log"
        ).read_text(errors="replace"):
            trial.problems.append("the AWS secret key appears in the run's output")
        sub = prefix[len(s3.bucket) + 1 :] + "/"
        puts = [
            r.key[len(sub) :] for r in s3.server.requests()
            if r.method == "PUT" and r.bucket == s3.bucket and r.key.startswith(sub) and not is_derived(r.key[len(sub) :])
        ]  # fmt: skip
        final = walk_s3(s3.fs, prefix)
        compare_with_clean(trial, final, clean)
        put_keys = set(puts)
        complete_before = {k for k in after if not is_temporary(k)}
        trial.rewritten = sorted(put_keys & complete_before)
        trial.written_by_rerun = len(puts)
        missing = set(clean.tree) - complete_before
        if trial.rewritten:
            trial.problems.append(
                f"the rerun PUT {len(trial.rewritten)} object(s) that were complete before the kill: {trial.rewritten[:6]}"
            )
        if len(puts) > len(missing):
            trial.problems.append(
                f"the rerun made {len(puts)} PUTs, but only {len(missing)} objects were missing"
            )
        differences = oracle.compare_tree(url, clean.expected, storage_options=s3.storage_options())
        if differences:
            trial.problems.append(f"oracle differences after the rerun: {differences[:5]}")
        return trial


class HlsHarness(Harness):
    """The HLS workflow's trials: a run is ``HlsComposites`` then ``HlsSamples`` on the small
    synthetic HLS archive; the oracle is ``tests/hls_oracle.py`` (every composite pixel)."""

    def commands(self, project: str) -> list[list[str]]:
        a = self.archive
        common = [
            "--catalog",
            str(a.catalog),
            "--project-dir",
            project,
            "--local-scheduler",
            *self.extra_args,
        ]
        return [
            [LUIGI, "--module", "pipeline.hls", "HlsComposites", "--tiles", str(a.tiles), *common],
            [LUIGI, "--module", "pipeline.hls", "HlsSamples", "--points", str(a.points), *common],
        ]

    def start(self, project: str, env: dict[str, str], log: Path) -> subprocess.Popen:
        return start_run([], cwd=self.workdir, env=env, log=log, commands=self.commands(project))

    def env(
        self, slow: list[tuple[str, float]] | None = None, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        return super().env(slow, {"DASK_DISTRIBUTED__WORKER__DAEMON": "False", **(extra or {})})

    def tile_years(self) -> list[tuple[str, int]]:
        import csv

        with open(self.archive.tiles, newline="", encoding="utf-8-sig") as f:
            return [(r["tile"], int(r["year"])) for r in csv.DictReader(f)]

    def expected(self) -> Any:
        from tests import hls_oracle

        return {(t, y): hls_oracle.composites(self.archive.items, t, y) for t, y in self.tile_years()}

    def oracle_differences(self, project: Path, expected: Any) -> list[str]:
        import numpy as np
        import rasterio

        from tests import hls_oracle

        out: list[str] = []
        for (tile, year), months in expected.items():
            folder = project / "composites" / tile / str(year)
            names = sorted(p.name for p in folder.glob("*.tif")) if folder.is_dir() else []
            want = [f"{tile}_{year}-{m:02d}.tif" for m in sorted(months)]
            if names != want:
                out.append(f"{tile} {year}: composites {names}, expected {want}")
                continue
            for month, cube in months.items():
                with rasterio.open(folder / f"{tile}_{year}-{month:02d}.tif") as ds:
                    got = ds.read().astype(np.float32)
                if not hls_oracle.nan_equal(got, cube):
                    out.append(f"{tile} {year}-{month:02d}: pixels differ from the oracle")
        return out

    def kill_moment(
        self, mode: str, project: Path, clean: Clean, trial: Trial, rng: random.Random
    ) -> tuple[list[tuple[str, float]], Callable[[], bool], float]:
        if mode in ("time", "files"):
            return super().kill_moment(mode, project, clean, trial, rng)
        if mode == "mid-cog":
            n_cogs = sum(1 for k in clean.tree if k.endswith(".tif"))
            trial.parameter = rng.randint(0, max(0, n_cogs - 1))

            def cog_waiting() -> bool:
                cogs = count_local(project, lambda n: n.endswith(".tif") and not n.startswith("."))
                return cogs >= int(trial.parameter or 0) and (
                    count_local(project, lambda n: n.startswith(".") and ".tif" in n) > 0
                )

            return [(HLS_COG_RE, 0.5)], cog_waiting, 600
        if mode == "mid-samples":

            def zarr_waiting() -> bool:
                walk = os.walk(project / "samples")
                return any(d.startswith(".") and ".zarr" in d for _, dirs, _ in walk for d in dirs)

            return [(HLS_ZARR_RE, 1.0)], zarr_waiting, 600
        raise ValueError(f"unknown HLS mode {mode!r}")

    def rewrite_allowed(self, rel: str, complete_before: dict[str, FileState]) -> bool:
        """A sample Zarr store whose centre table (its completion marker) was missing is
        unfinished work: the rerun rebuilds it whole."""
        if ".zarr/" not in rel:
            return False
        store = rel.split(".zarr/", 1)[0]
        return f"{store}_centre.parquet" not in complete_before


def _is_temp_difference(difference: str) -> bool:
    return difference.startswith("unexpected: ") and is_temporary(difference[len("unexpected: ") :])


@dataclass
class S3Context:
    server: Any  # tests.servers.s3.S3Server
    bucket: str

    def __post_init__(self) -> None:
        self.fs = self.server.fs(use_listings_cache=False)

    def credentials(self) -> dict[str, str]:
        """What a user sets: the keys (endpoints are given on the command line)."""
        return {
            "AWS_ACCESS_KEY_ID": self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def storage_options(self) -> dict[str, Any]:
        return {
            "key": self.server.access_key,
            "secret": self.server.secret_key,
            "client_kwargs": {"endpoint_url": self.server.endpoint_url, "region_name": self.server.region},
            "skip_instance_cache": True,
            "use_listings_cache": False,
        }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workflow",
        choices=("timesync", "hls"),
        default="timesync",
        help="the workflow under trial (default timesync; hls: HlsComposites then HlsSamples, no S3 trials)",
    )
    parser.add_argument("--trials", type=int, default=20, help="local trials (default 20)")
    parser.add_argument(
        "--s3-trials",
        type=int,
        default=4,
        help="S3 trials on a SeaweedFS server started here (default 4; 0 = none)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument(
        "--modes",
        default="",
        help=f"local kill modes to draw from (default {','.join(LOCAL_MODES)}; "
        f"with --workflow hls {','.join(HLS_MODES)})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where archives, projects and logs go (default: a new temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, default=None, help="write every trial's figures here")
    opts = parser.parse_args(argv)

    seed = opts.seed if opts.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    known = HLS_MODES if opts.workflow == "hls" else LOCAL_MODES
    modes = [m.strip() for m in (opts.modes or ",".join(known)).split(",") if m.strip()]
    for m in modes:
        if m not in known:
            parser.error(f"unknown mode {m!r}; choose from {', '.join(known)}")
    if opts.workflow == "hls":
        opts.s3_trials = 0
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="crash-trials-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"crash trials ({opts.workflow}): seed {seed}, {opts.trials} local + {opts.s3_trials} S3 trials, "
        f"work dir {workdir}",
        flush=True,
    )

    harness: Harness
    if opts.workflow == "hls":
        from pipeline.demo.hls_archive import build_hls_archive, small_hls_spec

        harness = HlsHarness(build_hls_archive(workdir / "archive", small_hls_spec(seed=1)), workdir)
    else:
        from pipeline.demo.archive import build_archive, small_spec

        harness = Harness(build_archive(workdir / "archive", small_spec(seed=1)), workdir)
    clean = harness.clean
    print(f"clean run: {clean.duration:.1f} s, {len(clean.tree)} files (equal to the oracle)", flush=True)

    trials: list[Trial] = []
    for i in range(opts.trials):
        # Every mode at least once when there are enough trials, then at random.
        mode = modes[i] if i < len(modes) else rng.choice(modes)
        trial = harness.local_trial(i, mode, rng)
        trials.append(trial)
        print(trial.line(), flush=True)
        for p in trial.problems:
            print(f"    - {p}", flush=True)

    server = None
    if opts.s3_trials:
        from tests.servers.s3 import start_s3_server

        server = start_s3_server(workdir / "s3")
        try:
            server.create_bucket("crash-trials")
            s3 = S3Context(server, "crash-trials")
            for j in range(opts.s3_trials):
                mode = S3_MODES[j % len(S3_MODES)]
                trial = harness.s3_trial(opts.trials + j, mode, rng, s3)
                trials.append(trial)
                print(trial.line(), flush=True)
                for p in trial.problems:
                    print(f"    - {p}", flush=True)
        finally:
            server.stop()

    bad = [t for t in trials if not t.ok]
    temps = sum(len(t.temporaries) for t in trials)
    print(
        f"\n{len(trials)} trials (seed {seed}): {len(trials) - len(bad)} passed, {len(bad)} with problems; "
        f"{temps} dot-temporaries left by kills; "
        f"{sum(t.finished_before_kill for t in trials)} runs finished before their kill",
        flush=True,
    )
    if not bad:
        print(
            "all final outputs identical to the clean run and to the oracle; no rerun rewrote a complete file"
        )
    if opts.json:
        opts.json.write_text(
            json.dumps({"seed": seed, "trials": [dataclasses.asdict(t) for t in trials]}, indent=1)
        )
    if not opts.keep and opts.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
