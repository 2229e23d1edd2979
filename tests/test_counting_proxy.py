"""The counting proxy in front of the S3 server keeps upstream connections for GET/HEAD
and survives a server that drops a kept connection (plain HTTP servers, no SeaweedFS)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.servers.counting_proxy import CountingProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise
    served_on_connection = 0
    drop_after: int | None = None  # close the connection silently after this many responses

    def setup(self) -> None:
        super().setup()
        self.served_on_connection = 0

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.served_on_connection += 1
        if self.drop_after is not None and self.served_on_connection >= self.drop_after:
            self.close_connection = True  # no "Connection: close" header: the proxy finds out later

    def do_GET(self) -> None:
        self._answer(f"GET {self.path}".encode())

    def do_HEAD(self) -> None:
        self._answer(b"")

    def do_PUT(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        self._answer(b"put " + self.rfile.read(n))


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _Handler.drop_after = None


def _proxy(server: ThreadingHTTPServer) -> CountingProxy:
    host, port = server.server_address[:2]
    return CountingProxy(str(host), int(port))


def test_gets_on_one_client_connection_share_one_upstream_connection(upstream: ThreadingHTTPServer) -> None:
    proxy = _proxy(upstream)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        for i in range(6):
            conn.request("HEAD" if i == 3 else "GET", f"/bucket/key{i}")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert body == (b"" if i == 3 else f"GET /bucket/key{i}".encode())
        assert proxy.upstream_connections == 1
        conn.request("PUT", "/bucket/up", body=b"abc")  # a request with a body gets its own
        resp = conn.getresponse()
        assert resp.read() == b"put abc"
        assert proxy.upstream_connections == 2
        assert proxy.counts()["GET"] == 5 and proxy.counts()["HEAD"] == 1 and proxy.counts()["PUT"] == 1
        conn.close()
    finally:
        proxy.stop()


def test_a_kept_connection_the_server_dropped_is_replaced(upstream: ThreadingHTTPServer) -> None:
    _Handler.drop_after = 2  # every upstream connection dies silently after two responses
    proxy = _proxy(upstream)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        for i in range(7):
            conn.request("GET", f"/bucket/k{i}")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, f"GET /bucket/k{i}".encode())
        assert proxy.counts()["GET"] == 7  # each request counted once, retries included
        assert proxy.upstream_connections == 4  # 7 responses, 2 per connection
        conn.close()
    finally:
        proxy.stop()
