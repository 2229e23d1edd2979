"""Running the luigi command line the way a user does, and looking at what it wrote."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LUIGI = str(Path(sys.executable).with_name("luigi"))


def luigi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["LUIGI_CONFIG_PATH"] = str(REPO / "luigi.cfg")
    env.pop("PIPELINE_RUN_STATS", None)  # each run owns its summary
    env.update(extra or {})
    return env


def run_luigi(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    module: str = "pipeline.timesync",
) -> subprocess.CompletedProcess[str]:
    """``luigi --module MODULE ARGS`` as a subprocess; output captured."""
    cmd = [LUIGI, "--module", module, *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env or luigi_env(), capture_output=True, text=True, timeout=timeout
    )


def timesync_args(archive, project_dir: Path | str, *extra: str, catalog: str | None = None) -> list[str]:
    return [
        "TimeSyncProject",
        "--plot-file", str(archive.plot_file),
        "--project-dir", str(project_dir),
        "--catalog", catalog or str(archive.catalog_ndjson),
        "--asset-href", "href",
        "--local-scheduler",
        *extra,
    ]  # fmt: skip


def snapshot(root: Path) -> dict[str, tuple[float, str]]:
    """relative path -> (mtime_ns, sha1) of every file under root."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def outputs_only(snap: dict[str, tuple[float, str]]) -> dict[str, tuple[float, str]]:
    return {k: v for k, v in snap.items() if not k.startswith(("_state", "report"))}


# Variables that would point boto3 at an endpoint or profile: a run against a test server must
# take its endpoint from the luigi.cfg options on its command line, never from these.
AWS_ENDPOINT_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_S3_ENDPOINT",
    "AWS_HTTPS",
    "AWS_VIRTUAL_HOSTING",
    "AWS_PROFILE",
)


def without_aws_endpoint(env: dict[str, str]) -> dict[str, str]:
    """``env`` less :data:`AWS_ENDPOINT_VARIABLES` (changed in place and returned)."""
    for k in AWS_ENDPOINT_VARIABLES:
        env.pop(k, None)
    return env


def credentials_only(server) -> dict[str, str]:
    """A luigi run's environment with only what a user sets for an S3 server: its keys (the
    endpoint comes from luigi.cfg options on the command line, never from AWS_* variables)."""
    env = luigi_env(
        {
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return without_aws_endpoint(env)


def kill_when(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    ready: Callable[[], bool],
    delay: float = 0.0,
    timeout: float = 60.0,
) -> bool:
    """Start ``command`` in a process group of its own and SIGKILL the whole group (luigi and any
    worker it started) ``delay`` seconds after ``ready()`` is first true, unless it has ended by
    then; whether it was killed. The group has been waited for when this returns."""
    import signal
    import time

    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        return True
    finally:
        proc.wait(timeout=30)
