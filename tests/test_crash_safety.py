"""Killed at any instant: a run SIGKILLed (its whole process group: luigi and the Dask
worker processes) at a chosen moment, then rerun, gives exactly a clean run's outputs,
never shows an unfinished file under a target's name, and the rerun redoes only what was
unfinished.

These are three trials of ``scripts/crash_trials.py`` (which runs >= 20 random ones):
kills aimed at the moments where atomicity and resumability are hardest, each with a
fixed seed:

- between an observation's PNGs and its CSV (CSV renames slowed like a slow disk);
- inside the ingest step (TimeSyncIngest), after its first ``*_region_spectrals.csv``;
- during S3 uploads (project directory ``s3://`` on SeaweedFS, 15 % of PUTs held 1 s by
  the fault proxy, so PUTs are in flight at the kill).

Every check and its wording is in ``scripts/crash_trials.py`` (``Trial.problems``).
"""

from __future__ import annotations

import importlib.util
import random
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def _load_crash_trials():
    name = "crash_trials"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "crash_trials.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


crash_trials = _load_crash_trials()


@pytest.fixture(scope="module")
def harness(small_archive, tmp_path_factory):
    h = crash_trials.Harness(small_archive, tmp_path_factory.mktemp("crash"))
    clean = h.clean  # one clean run: its files are the reference, and it equals the oracle
    assert len(clean.tree) > 200
    return h


def _report(trial) -> str:
    return trial.line() + "".join(f"\n  - {p}" for p in trial.problems)


def test_kill_between_an_observations_pngs_and_its_csv(harness):
    trial = harness.local_trial(1, "mid-observation", random.Random(11))
    print(_report(trial))
    # the kill landed where intended: some outputs done, some not, renames in flight
    assert trial.complete_files > 0 and trial.missing > 0, _report(trial)
    assert not trial.finished_before_kill
    assert trial.temporaries, "the kill should have caught CSVs written under their temporary names"
    assert trial.problems == [], _report(trial)


def test_kill_during_the_ingest_step(harness):
    trial = harness.local_trial(2, "ingest", random.Random(12))
    print(_report(trial))
    assert not trial.finished_before_kill
    ingest = sum(1 for k in harness.clean.tree if k.endswith(crash_trials.INGEST_SUFFIX))
    assert 0 < trial.ingest_files_at_kill < ingest, _report(trial)
    assert trial.problems == [], _report(trial)


@pytest.mark.s3
def test_kill_during_s3_uploads(harness, s3_server):
    s3_server.create_bucket("crash-trials")
    s3 = crash_trials.S3Context(s3_server, "crash-trials")
    trial = harness.s3_trial(3, "upload", random.Random(13), s3)
    print(_report(trial))
    assert trial.complete_files > 0 and trial.missing > 0, _report(trial)
    assert trial.problems == [], _report(trial)
