#!/usr/bin/env python3
"""Start or stop a central Luigi scheduler (``luigid``) whose files all live in one directory.

    .venv/bin/python scripts/luigid.py start --dir DIR [--port 8082] [--host 127.0.0.1]
    .venv/bin/python scripts/luigid.py status --dir DIR
    .venv/bin/python scripts/luigid.py stop --dir DIR

``start`` writes DIR/luigid.cfg (the ``[scheduler]`` section of the project's luigi.cfg,
with task history off, DONE tasks kept for at least an hour and the state file in DIR),
runs ``luigid --background --pidfile DIR/luigid.pid --logdir DIR/log --state-path
DIR/luigid-state.pickle --address HOST --port PORT``, waits until its API answers and
prints the URL (the web UI is URL/static/visualiser/index.html). It binds 127.0.0.1 unless
--host says otherwise. If a luigid from DIR is already running, it prints its URL and
exits 0. ``stop`` sends SIGTERM (luigid saves its state), then SIGKILL after --timeout s.

Point a run at it with ``--scheduler-host HOST --scheduler-port PORT`` instead of
``--local-scheduler``.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORCED = {"record_task_history": "false"}
MIN_REMOVE_DELAY = 3600.0


def luigid_command() -> str:
    sibling = Path(sys.executable).with_name("luigid")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("luigid")
    if not found:
        sys.exit("luigid not found: run scripts/setup.sh and use .venv/bin/python")
    return found


def write_config(d: Path) -> Path:
    """DIR/luigid.cfg: the project's [scheduler] settings plus this server's own."""
    project = configparser.ConfigParser(interpolation=None)
    project.read(REPO / "luigi.cfg")
    values = dict(project["scheduler"]) if project.has_section("scheduler") else {}
    values.update(FORCED)
    try:
        remove_delay = float(values.get("remove_delay", 0))
    except ValueError:
        remove_delay = 0.0
    values["remove_delay"] = str(max(remove_delay, MIN_REMOVE_DELAY))
    values["state_path"] = str(d / "luigid-state.pickle")
    lines = [
        "# written by scripts/luigid.py start (from the [scheduler] section of luigi.cfg)",
        "[scheduler]",
    ]
    lines += [f"{k} = {v}" for k, v in values.items()]
    path = d / "luigid.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def alive(pid: int) -> bool:
    """True for a running process (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_pid(d: Path) -> int | None:
    try:
        pid = int((d / "luigid.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/worker_list?data=%7B%7D", timeout=2) as r:
            return r.status == 200 and "response" in json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def recorded_url(d: Path) -> str | None:
    try:
        return (d / "luigid.url").read_text().strip() or None
    except OSError:
        return None


def log_tail(d: Path, n: int = 30) -> str:
    out = []
    for p in sorted((d / "log").glob("luigi-server*")):
        lines = p.read_text(errors="replace").splitlines()[-n:]
        if lines:
            out.append(f"--- {p}\n" + "\n".join(lines))
    return "\n".join(out)


def start(d: Path, host: str, port: int, timeout: float) -> int:
    d.mkdir(parents=True, exist_ok=True)
    pid, url = read_pid(d), recorded_url(d)
    if pid and url and answers(url):
        print(url)
        print(f"luigid already running from {d} (pid {pid})", file=sys.stderr)
        return 0
    if pid:
        print(
            f"a luigid from {d} (pid {pid}) is running but does not answer; run stop first", file=sys.stderr
        )
        return 1
    (d / "luigid.pid").unlink(missing_ok=True)
    (d / "log").mkdir(exist_ok=True)
    cfg = write_config(d)
    url = f"http://{host}:{port}"
    if answers(url):
        print(f"something else already answers at {url}; choose another --port", file=sys.stderr)
        return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI_")}
    env["LUIGI_CONFIG_PATH"] = str(cfg)
    cmd = [
        luigid_command(), "--background", "--pidfile", str(d / "luigid.pid"), "--logdir", str(d / "log"),
        "--state-path", str(d / "luigid-state.pickle"), "--address", host, "--port", str(port),
    ]  # fmt: skip
    # --background daemonizes (python-daemon): this call returns once the daemon is detached.
    proc = subprocess.run(
        cmd, cwd=d, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr + log_tail(d), file=sys.stderr)
        return 1
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if answers(url):
            (d / "luigid.url").write_text(url + "\n")
            print(url)
            print(
                f"luigid pid {read_pid(d)}; web UI {url}/static/visualiser/index.html; logs in {d / 'log'}",
                file=sys.stderr,
            )
            return 0
        if time.monotonic() > started + 5 and not read_pid(d):
            break  # the daemon did not write its pidfile in 5 s, or it died (port taken?)
        time.sleep(0.2)
    print(f"luigid did not answer at {url}\n{log_tail(d)}", file=sys.stderr)
    pid = read_pid(d)
    if pid:
        os.kill(pid, signal.SIGTERM)
    return 1


def stop(d: Path, timeout: float) -> int:
    pid = read_pid(d)
    if pid is None:
        print(f"no luigid running from {d}", file=sys.stderr)
        (d / "luigid.pid").unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)  # luigid saves its state file on SIGTERM
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_pid(d) == pid:
        time.sleep(0.1)
    if read_pid(d) == pid:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    (d / "luigid.pid").unlink(missing_ok=True)
    (d / "luigid.url").unlink(missing_ok=True)
    print(f"stopped luigid pid {pid}", file=sys.stderr)
    return 0


def status(d: Path) -> int:
    pid, url = read_pid(d), recorded_url(d)
    if pid and url and answers(url):
        print(url)
        return 0
    print(f"no luigid answering from {d}" + (f" (pid {pid} is alive)" if pid else ""), file=sys.stderr)
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start luigid in the background and print its URL")
    p_start.add_argument(
        "--dir", required=True, type=Path, help="state file, config, pidfile and logs go here"
    )
    p_start.add_argument("--port", type=int, default=8082)
    p_start.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p_start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it to answer")
    p_stop = sub.add_parser("stop", help="stop the luigid started from --dir")
    p_stop.add_argument("--dir", required=True, type=Path)
    p_stop.add_argument("--timeout", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    p_status = sub.add_parser("status", help="print the URL if the luigid from --dir answers (exit 3 if not)")
    p_status.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    d = args.dir.resolve()
    if args.command == "start":
        return start(d, args.host, args.port, args.timeout)
    if args.command == "stop":
        return stop(d, args.timeout)
    return status(d)


if __name__ == "__main__":
    sys.exit(main())
