"""A local stand-in for Planetary Computer's SAS token service, issuing real tokens for
Azurite's containers.

    GET /api/sas/v1/token/{account}/{container}   -> 200 {"msft:expiry": "...Z", "token": "se=...&sig=..."}
    GET /api/sas/v1/token/{collection}            -> the same, for a collection mapped to a container
    anything else, an unknown account or a missing container                 -> 404

Tokens are container SAS query strings (read + list) from
``azure.storage.blob.generate_container_sas`` with the emulator's account key, valid for
``token_ttl_seconds``; ``msft:expiry`` is their ``se``. The planetary-computer SDK fetches
from here when ``PC_SDK_SAS_URL`` is ``service.sas_url``.

The service counts requests per path (tests assert token caching), can require the
``Ocp-Apim-Subscription-Key`` header (401 without the right one), and can fail the next N
requests with a status (the SDK retries 429/5xx). Stdlib ``http.server`` in a daemon thread,
on 127.0.0.1 and a free port.

    from tests.servers.sas_token import sas_token_service   # session fixture, needs `azurite`
    monkeypatch.setenv("PC_SDK_SAS_URL", sas_token_service.sas_url)
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from tests.servers.azurite import AzuriteServer, container_sas

TOKEN_PATH = "/api/sas/v1/token"
SUBSCRIPTION_HEADER = "Ocp-Apim-Subscription-Key"


@dataclass
class TokenRequest:
    """One request as the service saw it."""

    path: str
    status: int
    subscription_key: str | None
    at: datetime


@dataclass
class SasTokenService:
    """The running service. ``sas_url`` is what ``PC_SDK_SAS_URL`` takes. Mutable settings
    (``token_ttl_seconds``, ``subscription_key``, ``collections``) apply to the next request."""

    azurite: AzuriteServer
    token_ttl_seconds: float = 3600
    subscription_key: str | None = None
    collections: dict[str, tuple[str, str]] = field(
        default_factory=dict
    )  # collection -> (account, container)
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _counts: Counter = field(default_factory=Counter, repr=False)
    _log: list[TokenRequest] = field(default_factory=list, repr=False)
    _failures: list[int] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sas_url(self) -> str:
        """``http://127.0.0.1:PORT/api/sas/v1/token`` (the SDK appends ``/{account}/{container}``)."""
        return f"{self.url}{TOKEN_PATH}"

    def token_url(self, account: str, container: str) -> str:
        return f"{self.sas_url}/{account}/{container}"

    # -- observation ---------------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        """Requests per path (every status), e.g. ``{"/api/sas/v1/token/devstoreaccount1/hls2": 1}``."""
        with self._lock:
            return dict(self._counts)

    def count(self, account: str, container: str) -> int:
        """Requests for one container's token."""
        with self._lock:
            return self._counts[f"{TOKEN_PATH}/{account}/{container}"]

    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Forget counts, the request log and pending failures (settings stay)."""
        with self._lock:
            self._counts.clear()
            self._log.clear()
            self._failures.clear()

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` requests with ``status`` (counted like any other)."""
        with self._lock:
            self._failures.extend([status] * n)

    # -- serving -------------------------------------------------------------------------

    def _answer(self, path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._counts[path] += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return failure, {"detail": "injected failure"}
        if self.subscription_key is not None and headers.get(SUBSCRIPTION_HEADER) != self.subscription_key:
            return 401, {"detail": f"missing or wrong {SUBSCRIPTION_HEADER}"}
        if not path.startswith(TOKEN_PATH + "/"):
            return 404, {"detail": "not found"}
        parts = [p for p in path[len(TOKEN_PATH) + 1 :].split("/") if p]
        if len(parts) == 1 and parts[0] in self.collections:
            account, container = self.collections[parts[0]]
        elif len(parts) == 2:
            account, container = parts
        else:
            return 404, {"detail": f"unknown collection or malformed path {path}"}
        if account != self.azurite.account_name or not self._container_exists(container):
            return 404, {"detail": f"no container {container!r} in account {account!r}"}
        expiry = (datetime.now(UTC) + timedelta(seconds=self.token_ttl_seconds)).replace(microsecond=0)
        token = container_sas(account, self.azurite.account_key, container, expiry, permission="rl")
        return 200, {"msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": token}

    def _container_exists(self, container: str) -> bool:
        try:
            return bool(self.azurite.service_client().get_container_client(container).exists())
        except Exception:
            return False

    def start(self) -> SasTokenService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                status, body = service._answer(path, self.headers)
                with service._lock:
                    service._log.append(
                        TokenRequest(path, status, self.headers.get(SUBSCRIPTION_HEADER), datetime.now(UTC))
                    )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sas-token-service", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sas_token_service(
    azurite: AzuriteServer,
    *,
    token_ttl_seconds: float = 3600,
    subscription_key: str | None = None,
    collections: dict[str, tuple[str, str]] | None = None,
    port: int = 0,
) -> SasTokenService:
    """Start a token service for ``azurite``'s account (``port`` 0: a free one)."""
    return SasTokenService(
        azurite,
        token_ttl_seconds=token_ttl_seconds,
        subscription_key=subscription_key,
        collections=dict(collections or {}),
        port=port,
    ).start()


try:
    import pytest
except ImportError:  # pragma: no cover - used outside pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def sas_token_service(azurite: AzuriteServer) -> Iterator[SasTokenService]:
        """One token service per session for the session's Azurite, hls2-l30 / hls2-s30
        mapped to container ``hls2``. Shared: call ``reset()`` before counting, and put back
        any setting a test changes (``token_ttl_seconds``, ``subscription_key``)."""
        account = azurite.account_name
        service = start_sas_token_service(
            azurite, collections={"hls2-l30": (account, "hls2"), "hls2-s30": (account, "hls2")}
        )
        try:
            yield service
        finally:
            service.stop()
