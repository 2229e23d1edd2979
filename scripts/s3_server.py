#!/usr/bin/env python
"""Start/stop a local S3 server (SeaweedFS ``weed mini``, 127.0.0.1 only) for manual
use and benchmarks.

    eval "$(python scripts/s3_server.py start --dir /tmp/s3 [--port 8333])"
    aws s3 ls / python -m ... / gdalinfo /vsis3/...     # env is set
    python scripts/s3_server.py stop --dir /tmp/s3

``start`` prints ``export NAME=value`` lines (endpoint and credentials) on stdout and
returns once S3 answers; the server keeps running in the background, its data under
``--dir`` (kept across restarts). ``env`` prints the lines again, ``status`` says
whether it runs. ``run`` starts it in the foreground behind the counting proxy and, on
Ctrl-C, prints the request counts (GET/HEAD/PUT/POST/DELETE/LIST) before stopping.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.servers.s3 import (  # noqa: E402
    DEFAULT_ACCESS_KEY,
    DEFAULT_REGION,
    DEFAULT_SECRET_KEY,
    S3Server,
    WeedProcess,
    launch_weed,
    start_s3_server,
)

STATE = "server.json"


def _state_path(d: Path) -> Path:
    return d / STATE


def _load(d: Path) -> WeedProcess | None:
    try:
        return WeedProcess.from_json(json.loads(_state_path(d).read_text()))
    except (OSError, ValueError, KeyError):
        return None


def _is_ours(wp: WeedProcess) -> bool:
    """The recorded pid still runs weed on this dir (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{wp.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(cmdline) and cmdline[0].endswith(b"weed") and f"-dir={wp.workdir / 'data'}".encode() in cmdline
    )


def _server(wp: WeedProcess, region: str = DEFAULT_REGION) -> S3Server:
    return S3Server(
        endpoint_url=wp.s3_url,
        host_port=f"127.0.0.1:{wp.s3_port}",
        access_key=wp.access_key,
        secret_key=wp.secret_key,
        region=region,
        direct_endpoint_url=wp.s3_url,
        workdir=wp.workdir,
        startup_seconds=wp.startup_seconds,
        weed=wp,
    )


def _print_env(server: S3Server) -> None:
    for k, v in server.env().items():
        print(f"export {k}={shlex.quote(v)}")


def cmd_start(a: argparse.Namespace) -> int:
    d = a.dir.resolve()
    wp = _load(d)
    if wp is not None and _is_ours(wp):
        print(f"S3 server already running: pid {wp.pid}, {wp.s3_url}", file=sys.stderr)
        _print_env(_server(wp))
        return 0
    wp = launch_weed(
        d,
        s3_port=a.port,
        access_key=a.access_key,
        secret_key=a.secret_key,
        timeout=a.timeout,
        die_with_parent=False,
    )
    wp.proc = None  # keeps running after we exit
    _state_path(d).write_text(json.dumps(wp.to_json(), indent=2))
    _state_path(d).chmod(0o600)
    print(
        f"S3 server started in {wp.startup_seconds:.2f} s: pid {wp.pid}, {wp.s3_url}, log {wp.log_path}",
        file=sys.stderr,
    )
    _print_env(_server(wp))
    return 0


def cmd_stop(a: argparse.Namespace) -> int:
    d = a.dir.resolve()
    wp = _load(d)
    if wp is None:
        print(f"no S3 server state in {d}", file=sys.stderr)
        return 0
    if _is_ours(wp):
        wp.stop(grace=a.grace)
        print(f"S3 server pid {wp.pid} stopped", file=sys.stderr)
    else:
        wp.cleanup_tmp_sockets()
        print(f"S3 server pid {wp.pid} was not running", file=sys.stderr)
    _state_path(d).unlink(missing_ok=True)
    return 0


def cmd_env(a: argparse.Namespace) -> int:
    wp = _load(a.dir.resolve())
    if wp is None or not _is_ours(wp):
        print("S3 server not running", file=sys.stderr)
        return 1
    _print_env(_server(wp))
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    wp = _load(a.dir.resolve())
    if wp is None or not _is_ours(wp):
        print("not running")
        return 1
    print(f"running: pid {wp.pid}, {wp.s3_url}, ports {wp.ports}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_run(a: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM both stop cleanly (SIGINT may arrive ignored in background jobs).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    server = start_s3_server(
        a.dir.resolve(), port=a.port, timeout=a.timeout, access_key=a.access_key, secret_key=a.secret_key
    )
    print(
        f"# S3 server ready in {server.startup_seconds:.2f} s (counting proxy {server.endpoint_url}); Ctrl-C stops",
        file=sys.stderr,
    )
    _print_env(server)
    sys.stdout.flush()
    try:
        while server.weed.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"# request counts: {server.request_counts()}", file=sys.stderr)
        print(f"# response bytes: {server.response_bytes()}", file=sys.stderr)
        server.stop(grace=a.grace)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in [
        ("start", cmd_start),
        ("stop", cmd_stop),
        ("env", cmd_env),
        ("status", cmd_status),
        ("run", cmd_run),
    ]:
        sp = sub.add_parser(name)
        sp.set_defaults(fn=fn)
        sp.add_argument("--dir", type=Path, required=True, help="work dir: data, logs, config, state")
        if name in ("start", "run"):
            sp.add_argument(
                "--port", type=int, default=None, help="S3 port on 127.0.0.1 (default: a free one)"
            )
            sp.add_argument("--timeout", type=float, default=60.0)
            sp.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
            sp.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
        if name in ("stop", "run"):
            sp.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
