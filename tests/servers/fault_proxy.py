"""A fault-injecting HTTP reverse proxy for tests: put it between the pipeline and a real
server (S3, STAC API) and make a chosen fraction of requests, or the requests for one
chosen object, fail with 500/503 SlowDown, a delay, or a reset connection.

The client's Host header is forwarded unchanged, so AWS signatures made for the proxy's
address verify upstream and a STAC API builds its ``next`` links pointing at the proxy.
Responses are buffered whole (test objects are small). Faults are decided by a seeded
random generator, so a run is reproducible.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class FaultRule:
    """Which requests fail and how. ``kind``: "503" (SlowDown), "500", "delay", "reset"."""

    kind: str
    fraction: float = 1.0  # of the matching requests
    match: Callable[[str, str], bool] = lambda method, path: True  # (method, path) -> applies?
    delay: float = 2.0
    limit: int | None = None  # at most this many faults from this rule


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0
    counts: Counter = field(default_factory=Counter)
    port: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self._fired: Counter = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rule = proxy._choose(self.command, self.path)
                if rule is not None and rule.kind == "reset":
                    # RST instead of FIN: the client sees "connection reset by peer"
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if rule is not None and rule.kind in ("500", "503"):
                    payload = SLOWDOWN if rule.kind == "503" else b"internal error (injected)"
                    self.send_response(int(rule.kind))
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Content-Type", "application/xml")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if rule is not None and rule.kind == "delay":
                    time.sleep(rule.delay)
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "keep-alive", "expect")
                }
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "keep-alive", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _choose(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            self.counts["requests"] += 1
            for i, rule in enumerate(self.rules):
                if not rule.match(method, path):
                    continue
                if rule.limit is not None and self._fired[i] >= rule.limit:
                    continue
                if self._random.random() < rule.fraction:
                    self._fired[i] += 1
                    self.counts[rule.kind] += 1
                    return rule
        return None

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
