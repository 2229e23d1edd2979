"""A real Azure Blob Storage emulator (Azurite, from npm) for tests: private containers that
answer only SAS-signed (or SharedKey) requests, as Planetary Computer's storage accounts do.

    from tests.servers.azurite import start_azurite
    server = start_azurite(tmp_path)                     # ~1-2 s
    server.create_container("hls2")                      # private: anonymous reads are refused
    server.upload_tree(archive.data_dir, "hls2")
    url = server.blob_url_of("hls2", key) + "?" + server.container_sas("hls2", 3600)
    server.stop()

or the session fixture ``azurite`` (import it into a conftest).

Azurite is installed by ``scripts/setup.sh test`` into ``.cache/azurite`` (``AZURITE_BLOB``
overrides the binary). It listens on 127.0.0.1 only, on a free port, keeps its data under
the work dir, and runs in its own process group (killed at stop, or with the test process).
Account: the emulator's well-known ``devstoreaccount1`` and key. Blob URLs are path-style:
``http://127.0.0.1:PORT/devstoreaccount1/{container}/{key}``.
"""

from __future__ import annotations

import atexit
import mimetypes
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from tests.servers._proc import group_alive, kill_process_group, pdeathsig_preexec

REPO = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# The emulator's well-known development account (public in Azure's documentation).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteNotFoundError(RuntimeError):
    pass


def find_azurite_blob() -> str:
    """The ``azurite-blob`` executable: ``$AZURITE_BLOB`` or ``.cache/azurite`` (setup.sh test)."""
    path = os.environ.get("AZURITE_BLOB") or str(AZURITE_BIN)
    if not os.access(path, os.X_OK):
        raise AzuriteNotFoundError(
            f"azurite-blob not found at {path}: run `scripts/setup.sh test` (npm install --prefix .cache/azurite azurite@3)"
        )
    return path


def azurite_command(binary: str, port: int, location: Path) -> list[str]:
    """The command line: blob service only, loopback, no access log, no telemetry (the machine
    has no internet), any x-ms-version the SDK sends (``--skipApiVersionCheck``), unsupported
    headers ignored (``--loose``)."""
    return [
        binary,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(location),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
    ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AzuriteServer:
    """A running Azurite blob service."""

    port: int
    workdir: Path
    pid: int
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    command: list[str] = field(default_factory=list)
    startup_seconds: float = 0.0
    account_name: str = ACCOUNT_NAME
    account_key: str = field(default=ACCOUNT_KEY, repr=False)
    stopped: bool = False

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``: what ``pipeline.signing.Signing.path_style_hosts`` lists."""
        return f"127.0.0.1:{self.port}"

    @property
    def blob_url(self) -> str:
        """``http://127.0.0.1:PORT/devstoreaccount1``: the account's blob endpoint."""
        return f"http://{self.host_port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_url};"
        )

    def container_url(self, container: str) -> str:
        return f"{self.blob_url}/{container}"

    def blob_url_of(self, container: str, key: str) -> str:
        return f"{self.blob_url}/{container}/{key.lstrip('/')}"

    def service_client(self) -> Any:
        """A SharedKey-authenticated ``BlobServiceClient`` (full access)."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str, *, exist_ok: bool = True) -> str:
        """Create a *private* container (no anonymous access); returns its URL."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self.service_client().create_container(name)  # public_access None: private
        except ResourceExistsError:
            if not exist_ok:
                raise
        return self.container_url(name)

    def upload_tree(
        self, local_dir: Path | str, container: str, prefix: str = "", *, workers: int = 4
    ) -> list[str]:
        """Upload every file under ``local_dir`` to ``container`` as ``{prefix}/{relative path}``
        (the container is created if missing). Returns the keys, sorted."""
        from azure.storage.blob import ContentSettings

        root = Path(local_dir)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        self.create_container(container)
        client = self.service_client().get_container_client(container)
        pre = prefix.strip("/")

        def put(path: Path) -> str:
            key = path.relative_to(root).as_posix()
            key = f"{pre}/{key}" if pre else key
            ctype = (
                "image/tiff"
                if path.suffix.lower() in (".tif", ".tiff")
                else (mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            )
            with open(path, "rb") as f:
                client.upload_blob(
                    key, f, overwrite=True, content_settings=ContentSettings(content_type=ctype)
                )
            return key

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sorted(pool.map(put, files))

    def container_sas(self, container: str, expiry_seconds: float = 3600, *, permission: str = "rl") -> str:
        """A container SAS query string (no leading ``?``) signed with the account key:
        read + list by default, valid for ``expiry_seconds``."""
        return container_sas(
            self.account_name,
            self.account_key,
            container,
            datetime.now(UTC) + timedelta(seconds=expiry_seconds),
            permission=permission,
        )

    def signed_url(self, container: str, key: str, expiry_seconds: float = 3600) -> str:
        return f"{self.blob_url_of(container, key)}?{self.container_sas(container, expiry_seconds)}"

    def alive(self) -> bool:
        return group_alive(self.pid, self.proc)

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, grace: float = 3.0) -> None:
        """Kill Azurite's process group (SIGTERM, then SIGKILL after ``grace`` s). Only once:
        a later call (e.g. the atexit hook) must not signal a group that reused the id."""
        if self.stopped:
            return
        self.stopped = True
        kill_process_group(self.pid, grace, self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def container_sas(
    account_name: str, account_key: str, container: str, expiry: datetime, *, permission: str = "rl"
) -> str:
    """``azure.storage.blob.generate_container_sas`` for ``permission`` (letters of "racwdl")."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return str(
        generate_container_sas(
            account_name,
            container,
            account_key=account_key,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=expiry,
        )
    )


def _ready(server: AzuriteServer) -> str | None:
    """None once a SharedKey-signed request (list containers) succeeds, else why not."""
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=1):
            pass
    except OSError as e:
        return f"connect: {e}"
    try:
        list(server.service_client().list_containers(results_per_page=1))
    except Exception as e:
        return f"list containers: {e!r}"
    return None


def start_azurite(
    workdir: Path | str,
    *,
    port: int | None = None,
    timeout: float = 30.0,
    die_with_parent: bool | None = None,
    attempts: int = 3,
) -> AzuriteServer:
    """Start ``azurite-blob`` with its data under ``workdir``; return once signed requests
    work. Retries with a fresh port if one was taken between choosing and binding it.
    ``die_with_parent`` (default: when called from the main thread) kills the server with
    this process even on SIGKILL. Stopped at interpreter exit if not before."""
    binary = find_azurite_blob()  # raises: tests fail, they do not skip
    workdir = Path(workdir).resolve()
    location = workdir / "data"
    location.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "azurite.log"
    if die_with_parent is None:
        die_with_parent = threading.current_thread() is threading.main_thread()
    last = ""
    for attempt in range(1, attempts + 1):
        chosen = port or _free_port()
        cmd = azurite_command(binary, chosen, location)
        t0 = time.monotonic()
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
                env={k: v for k, v in os.environ.items() if not k.startswith("AZURE_")},
            )
        server = AzuriteServer(
            port=chosen, workdir=workdir, pid=proc.pid, proc=proc, log_path=log_path, command=cmd
        )
        delay = 0.05
        while True:
            if proc.poll() is not None:
                last = f"azurite-blob exited with code {proc.returncode}"
                break
            why = _ready(server)
            if why is None:
                server.startup_seconds = time.monotonic() - t0
                atexit.register(server.stop, 1.0)
                return server
            if time.monotonic() - t0 > timeout:
                server.stop(grace=1)
                raise RuntimeError(
                    f"Azurite not ready after {timeout:.0f} s ({why}); log {log_path}:\n{server.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        server.stop(grace=0.5)
        if "EADDRINUSE" not in server.log_tail(20) or port:
            break
        last += " (the port was taken meanwhile; retrying)"
    raise RuntimeError(f"Azurite failed to start: {last}; log {log_path}:\n{server.log_tail()}")


try:
    import pytest
except ImportError:  # pragma: no cover - used outside pytest
    pytest = None  # type: ignore[assignment]

_shared: dict[str, Any] = {"server": None, "users": 0}
_shared_lock = threading.Lock()

if pytest is not None:

    @pytest.fixture(scope="session")
    def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
        """One Azurite blob service per test session (containers persist across tests: use
        your own container names). Fails, never skips, when Azurite is not installed.
        Importing this fixture into several conftests or modules still gives one server."""
        with _shared_lock:
            if _shared["server"] is None:
                _shared["server"] = start_azurite(tmp_path_factory.mktemp("azurite"))
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
