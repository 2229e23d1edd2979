"""Scratch directories: made in a directory of the process, and those of dead processes swept away."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline import scratch


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_scratch_directory_lives_in_the_processes_own(tmp_path):
    made = scratch.scratch_dir("hls-10TET-2019-05-", str(tmp_path))
    owner = os.path.dirname(made)
    assert os.path.basename(owner) == f"eo-extract.{os.getpid()}.{scratch.process_start(os.getpid())}"
    assert os.path.dirname(owner) == str(tmp_path)
    assert os.path.basename(made).startswith("hls-10TET-2019-05-") and os.path.isdir(made)
    assert os.path.dirname(scratch.scratch_dir("cog-", str(tmp_path))) == owner  # one per process


def test_directories_of_processes_that_no_longer_run_are_swept(tmp_path):
    dead = tmp_path / f"eo-extract.{_dead_pid()}.12345"
    (dead / "hls-10TET-2019-05-abc").mkdir(parents=True)
    (dead / "hls-10TET-2019-05-abc" / "cog.tif").write_bytes(b"half a COG")
    # a running process whose pid a dead one had: its start time differs, so it is gone too
    reused = tmp_path / f"eo-extract.{os.getppid()}.{(scratch.process_start(os.getppid()) or 0) + 1}"
    reused.mkdir()
    alive = tmp_path / f"eo-extract.{os.getppid()}.{scratch.process_start(os.getppid())}"
    (alive / "ingest-x").mkdir(parents=True)
    other = tmp_path / "someone-elses"
    other.mkdir()
    with scratch.temporary_dir("ingest-item-", str(tmp_path)) as mine:
        assert os.path.isdir(mine)
        assert not dead.exists() and not reused.exists()
        assert (alive / "ingest-x").is_dir() and other.is_dir()
    assert not os.path.exists(mine)  # removed on leaving the block
    assert scratch.sweep(str(tmp_path)) == []  # nothing else to remove: ours and the parent's run


def test_a_killed_process_leaves_its_scratch_to_the_next(tmp_path):
    code = (
        "import os, sys; from pipeline import scratch; "
        f"d = scratch.scratch_dir('hls-', {str(tmp_path)!r}); open(os.path.join(d, 'cog.tif'), 'wb').write(b'x'); "
        "print(d, flush=True); os.kill(os.getpid(), 9)"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert child.returncode == -9
    left = child.stdout.strip()
    assert os.path.isfile(os.path.join(left, "cog.tif"))  # what kill -9 leaves
    scratch.scratch_dir("hls-", str(tmp_path))
    assert not os.path.exists(os.path.dirname(left))  # the next process swept it


def test_a_killed_runs_summary_figures_are_swept_too(tmp_path):
    """The closing summary's per-run directory is scratch of the run's process: kill -9 leaves
    it, the next run removes it."""
    from pipeline import runstats

    code = (
        "import os; from pipeline import runstats; runstats.install(); "
        "runstats.record('timesync', 'plots', {'plots': 3}); "
        f"print(os.environ[{runstats.ENV!r}], flush=True); os.kill(os.getpid(), 9)"
    )
    env = {k: v for k, v in os.environ.items() if k != runstats.ENV}
    env["TMPDIR"] = str(tmp_path)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert child.returncode == -9, child.stderr
    left = child.stdout.strip()
    assert os.listdir(left) and os.path.dirname(os.path.dirname(left)) == str(tmp_path)  # figures left
    scratch.scratch_dir("pipeline-run-", str(tmp_path))
    assert not os.path.exists(os.path.dirname(left))  # the next process swept it
