"""A tiny transparent HTTP/1.1 reverse proxy that counts requests exactly.

It sits in front of a real server (SeaweedFS S3) on 127.0.0.1 and forwards every
request byte-for-byte: request line, all headers (Host included, so AWS SigV4
signatures made for the proxy's address still verify upstream), bodies with
Content-Length or chunked framing copied verbatim, responses likewise (Range,
Content-Range, ETag, ... untouched). Bodies are streamed in 64 KiB pieces.

Each request is classified (for S3: GET/HEAD/PUT/POST/DELETE/LIST) and counted
*before* it is forwarded, so once a client call returns, the counts include it. Its
status and response size are recorded once the body has been relayed: a client may
read its response an instant before ``status_counts``/``response_bytes`` include it.

Upstream connections: a GET or HEAD without a body reuses the client connection's
previous upstream connection when the server kept it open (checked for a close before
reuse; one retry on a fresh connection if a reused one fails before any response byte);
every other request gets its own. A new TCP connection per request cost SeaweedFS
~0.8 ms of CPU per request, a third of its cost per ranged GET, on the cores the
benchmarks measure.
``Expect: 100-continue`` is answered by the proxy itself and not forwarded
(SigV4 never signs ``expect``).
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

_CHUNK = 64 * 1024
_MAX_LINE = 65536
_MAX_HEADERS = 256

# Query parameters that make a bucket-level GET a listing (ListObjects v1/v2,
# ListObjectVersions, ListMultipartUploads). A bucket-level GET with none of
# these and no query at all is also a listing (ListObjects v1).
S3_LIST_PARAMS = frozenset(
    {
        "list-type",
        "prefix",
        "delimiter",
        "marker",
        "continuation-token",
        "start-after",
        "max-keys",
        "encoding-type",
        "fetch-owner",
        "versions",
        "uploads",
        "key-marker",
        "version-id-marker",
        "upload-id-marker",
    }
)

BASE_KINDS = ("GET", "HEAD", "PUT", "POST", "DELETE", "LIST")


def split_s3_path(target: str) -> tuple[str, str, str]:
    """'/bucket/some/key?x=1' -> ('bucket', 'some/key', 'x=1') (path-style addressing)."""
    path, _, query = target.partition("?")
    if "://" in path:  # absolute-form request target
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    bucket, _, key = path.lstrip("/").partition("/")
    return unquote(bucket), unquote(key), query


def classify_s3(method: str, target: str) -> str:
    """Request kind: the HTTP method, except listings (GET on the service root or on a
    bucket with no key and a listing query / no query), which are 'LIST'."""
    method = method.upper()
    if method != "GET":
        return method
    bucket, key, query = split_s3_path(target)
    if key:
        return "GET"
    if not bucket:
        return "LIST"  # ListBuckets
    params = parse_qs(query, keep_blank_values=True)
    if not params or S3_LIST_PARAMS.intersection(params):
        return "LIST"
    return "GET"  # bucket sub-resources: ?location, ?acl, ?policy, ...


@dataclass
class RequestRecord:
    method: str
    kind: str
    target: str  # raw request target, e.g. '/bucket/key?x=1'
    bucket: str
    key: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ', '
    status: int | None = None
    request_bytes: int = 0  # body bytes received from the client
    response_bytes: int = 0  # body bytes sent to the client
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None


class _Stats:
    """Exact counters keyed by (bucket, kind, tracked header values), plus a bounded log."""

    def __init__(self, track_headers: tuple[str, ...], record_limit: int):
        self.track_headers = tuple(h.lower() for h in track_headers)
        self.lock = threading.Lock()
        self.record_limit = record_limit
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.counts: collections.Counter = collections.Counter()
            self.resp_bytes: collections.Counter = collections.Counter()
            self.req_bytes: collections.Counter = collections.Counter()
            self.statuses: collections.Counter = collections.Counter()
            self.records: collections.deque[RequestRecord] = collections.deque(maxlen=self.record_limit)
            self.records_dropped = 0


class CountingProxy:
    """Transparent counting reverse proxy: 127.0.0.1:<port> -> upstream_host:upstream_port."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        classify: Callable[[str, str], str] = classify_s3,
        split_target: Callable[[str], tuple[str, str, str]] = split_s3_path,
        track_headers: tuple[str, ...] = ("x-amz-request-payer",),
        record_limit: int = 50_000,
        connect_timeout: float = 10.0,
    ):
        self.upstream = (upstream_host, upstream_port)
        self.classify = classify
        self.split_target = split_target
        self.connect_timeout = connect_timeout
        self._stats = _Stats(track_headers, record_limit)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, listen_port))
        self._listener.listen(256)
        self.host, self.port = self._listener.getsockname()[:2]
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.upstream_connections = 0  # TCP connections opened to the server (reuse saves them)
        self.client_connections = 0  # TCP connections clients opened to the proxy
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"counting-proxy-{self.port}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ queries
    @property
    def track_headers(self) -> tuple[str, ...]:
        return self._stats.track_headers

    def counts(self, bucket: str | None = None) -> dict[str, int]:
        """Exact request counts by kind (GET/HEAD/PUT/POST/DELETE/LIST always present)."""
        out = dict.fromkeys(BASE_KINDS, 0)
        with self._stats.lock:
            for (b, kind, _), n in self._stats.counts.items():
                if bucket is None or b == bucket:
                    out[kind] = out.get(kind, 0) + n
        return out

    def header_counts(
        self, name: str, value: str | None = None, *, bucket: str | None = None
    ) -> dict[str, int]:
        """Exact counts by kind of requests that carried header ``name`` (with ``value``,
        compared case-insensitively, if given). Only for headers in ``track_headers``."""
        name = name.lower()
        if name not in self._stats.track_headers:
            raise KeyError(f"header {name!r} is not tracked; tracked: {self._stats.track_headers}")
        i = self._stats.track_headers.index(name)
        out = dict.fromkeys(BASE_KINDS, 0)
        with self._stats.lock:
            for (b, kind, values), n in self._stats.counts.items():
                v = values[i]
                if v is None or (bucket is not None and b != bucket):
                    continue
                if value is None or v.lower() == value.lower():
                    out[kind] = out.get(kind, 0) + n
        return out

    def response_bytes(self, bucket: str | None = None) -> dict[str, int]:
        """Exact response body bytes sent to clients, by kind."""
        return self._sum_by_kind(self._stats.resp_bytes, bucket)

    def request_bytes(self, bucket: str | None = None) -> dict[str, int]:
        """Exact request body bytes received from clients, by kind."""
        return self._sum_by_kind(self._stats.req_bytes, bucket)

    def status_counts(self) -> dict[tuple[str, int], int]:
        """{(kind, status): n}; status 502 means the proxy could not reach the server."""
        with self._stats.lock:
            return dict(self._stats.statuses)

    def records(self) -> list[RequestRecord]:
        """The last ``record_limit`` requests (see ``records_dropped``), oldest first."""
        with self._stats.lock:
            return list(self._stats.records)

    @property
    def records_dropped(self) -> int:
        return self._stats.records_dropped

    def reset(self) -> None:
        self._stats.reset()

    def _sum_by_kind(self, counter: collections.Counter, bucket: str | None) -> dict[str, int]:
        out = dict.fromkeys(BASE_KINDS, 0)
        with self._stats.lock:
            for (b, kind), n in counter.items():
                if bucket is None or b == bucket:
                    out[kind] = out.get(kind, 0) + n
        return out

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(timeout=2)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                csock, _ = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.01)
                continue
            with self._conns_lock:
                self.client_connections += 1
            threading.Thread(target=self._serve_client, args=(csock,), daemon=True).start()

    def _track(self, s: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(s)

    def _untrack(self, s: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(s)
        with contextlib.suppress(OSError):
            s.close()

    # ------------------------------------------------------------------ proxying
    def _serve_client(self, csock: socket.socket) -> None:
        self._track(csock)
        csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cfile = csock.makefile("rb", buffering=_CHUNK)
        kept = _Upstream()
        try:
            while not self._closed.is_set():
                if not self._one_exchange(csock, cfile, kept):
                    break
        except (OSError, ValueError, _ProtocolError):
            pass
        finally:
            kept.close()
            with contextlib.suppress(OSError):
                cfile.close()
            self._untrack(csock)

    def _connect(self) -> tuple[socket.socket, object]:
        usock = socket.create_connection(self.upstream, timeout=self.connect_timeout)
        with self._conns_lock:
            self.upstream_connections += 1
        usock.settimeout(None)
        usock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return usock, usock.makefile("rb", buffering=_CHUNK)

    def _one_exchange(self, csock: socket.socket, cfile, kept: _Upstream) -> bool:
        """Proxy one request/response. Returns False when the client connection must close."""
        head = _read_head(cfile)
        if head is None:
            return False
        request_line, header_lines, headers = head
        try:
            method, target, version = request_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            raise _ProtocolError("bad request line") from None
        kind = self.classify(method, target)
        bucket, key, _ = self.split_target(target)
        tracked = tuple(headers.get(h) for h in self._stats.track_headers)
        rec = RequestRecord(method=method, kind=kind, target=target, bucket=bucket, key=key, headers=headers)
        st = self._stats
        with st.lock:
            st.counts[(bucket, kind, tracked)] += 1
            if len(st.records) == st.records.maxlen:
                st.records_dropped += 1
            st.records.append(rec)

        expect_continue = "100-continue" in headers.get("expect", "").lower()
        out_head = (
            request_line + b"".join(h for h in header_lines if not h.lower().startswith(b"expect:")) + b"\r\n"
        )
        client_close = _wants_close(version, headers)
        # Only a bodiless GET/HEAD may go over a kept connection: it can be resent as is
        # if that connection turns out dead before the response starts.
        reusable = method.upper() in ("GET", "HEAD") and not _has_body(headers)

        for attempt in (0, 1):
            reused = False
            if reusable and kept.alive():
                usock, ufile = kept.take()
                reused = True
            else:
                kept.close()
                try:
                    usock, ufile = self._connect()
                except OSError:
                    # Drain nothing; answer 502 and drop the connection (the body may be unread).
                    self._finish(rec, kind, bucket, 502, 0)
                    csock.sendall(
                        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    return False
            keep_upstream = False
            try:
                upstream_ok = True
                try:
                    usock.sendall(out_head)
                except OSError:
                    upstream_ok = False
                if reused and not upstream_ok and attempt == 0:
                    continue  # the kept connection was dead: resend on a fresh one
                if expect_continue and attempt == 0:
                    csock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

                # ---- request body, verbatim
                sink = _Sink(usock) if upstream_ok else _Sink(None)
                rec.request_bytes = _copy_body(cfile, sink.write, headers, request=True)
                with st.lock:
                    st.req_bytes[(bucket, kind)] += rec.request_bytes

                # ---- response head (skip interim 1xx; we already sent our own 100)
                while True:
                    try:
                        rhead = _read_head(ufile)
                    except OSError:
                        rhead = None
                    if rhead is None:
                        if reused and attempt == 0:
                            break  # dead kept connection, nothing relayed yet: retry
                        self._finish(rec, kind, bucket, 502, 0)
                        csock.sendall(
                            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        return False
                    status_line, rheader_lines, rheaders = rhead
                    parts = status_line.decode("latin-1").split(" ", 2)
                    try:
                        status = int(parts[1])
                    except (IndexError, ValueError):
                        raise _ProtocolError("bad status line") from None
                    if 100 <= status < 200 and status != 101:
                        if status != 100:
                            csock.sendall(status_line + b"".join(rheader_lines) + b"\r\n")
                        continue
                    break
                if rhead is None:
                    continue
                rec.status = status
                csock.sendall(status_line + b"".join(rheader_lines) + b"\r\n")

                # ---- response body, verbatim
                no_body = method.upper() == "HEAD" or status in (204, 304)
                framed = (
                    no_body
                    or "content-length" in rheaders
                    or "chunked" in rheaders.get("transfer-encoding", "").lower()
                )
                nbytes = 0 if no_body else _copy_body(ufile, csock.sendall, rheaders, request=False)
                self._finish(rec, kind, bucket, status, nbytes)
                resp_version = parts[0]
                server_close = _wants_close(resp_version, rheaders)
                keep_upstream = framed and not server_close
                return framed and not client_close and not server_close
            finally:
                if keep_upstream:
                    kept.put(usock, ufile)
                else:
                    _close_pair(usock, ufile)
        return False  # not reached: the second attempt returns

    def _finish(self, rec: RequestRecord, kind: str, bucket: str, status: int, nbytes: int) -> None:
        rec.status = status
        rec.response_bytes = nbytes
        rec.seconds = time.monotonic() - rec.started
        with self._stats.lock:
            self._stats.resp_bytes[(bucket, kind)] += nbytes
            self._stats.statuses[(kind, status)] += 1


class _ProtocolError(Exception):
    pass


def _has_body(headers: dict[str, str]) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower() or headers.get(
        "content-length", "0"
    ).strip() not in ("", "0")


def _close_pair(sock: socket.socket, f) -> None:
    for c in (f, sock):
        with contextlib.suppress(OSError):
            c.close()


class _Upstream:
    """The upstream connection a client connection keeps between requests."""

    def __init__(self) -> None:
        self.pair: tuple[socket.socket, object] | None = None

    def alive(self) -> bool:
        """Kept and not closed by the server: an idle HTTP/1.1 connection has nothing to
        read, so a readable one is at EOF (or has stray bytes) and is dropped."""
        if self.pair is None:
            return False
        sock = self.pair[0]
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            readable = [sock]
        if readable:
            self.close()
            return False
        return True

    def take(self) -> tuple[socket.socket, object]:
        assert self.pair is not None
        pair, self.pair = self.pair, None
        return pair

    def put(self, sock: socket.socket, f) -> None:
        self.close()
        self.pair = (sock, f)

    def close(self) -> None:
        if self.pair is not None:
            _close_pair(*self.pair)
            self.pair = None


class _Sink:
    """Writes to the upstream socket; after a write error, silently discards (so the
    client's body is still drained and the upstream's early response can be relayed)."""

    def __init__(self, sock: socket.socket | None):
        self.sock = sock

    def write(self, data: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.sock = None


def _read_head(f) -> tuple[bytes, list[bytes], dict[str, str]] | None:
    """Read a start line and header lines. None on clean EOF before the start line."""
    start = f.readline(_MAX_LINE)
    while start in (b"\r\n", b"\n"):  # tolerate stray CRLFs between messages
        start = f.readline(_MAX_LINE)
    if not start:
        return None
    if not start.endswith(b"\n"):
        raise _ProtocolError("start line too long or truncated")
    lines: list[bytes] = []
    headers: dict[str, str] = {}
    while True:
        line = f.readline(_MAX_LINE)
        if not line:
            raise _ProtocolError("EOF in headers")
        if line in (b"\r\n", b"\n"):
            break
        if len(lines) >= _MAX_HEADERS:
            raise _ProtocolError("too many headers")
        lines.append(line)
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _ProtocolError("bad header line")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return start, lines, headers


def _wants_close(version: str, headers: dict[str, str]) -> bool:
    conn = headers.get("connection", "").lower()
    if "close" in conn:
        return True
    return bool(version.strip().upper() == "HTTP/1.0" and "keep-alive" not in conn)


def _copy_n(src, write, n: int) -> int:
    done = 0
    while done < n:
        data = src.read1(min(_CHUNK, n - done))
        if not data:
            raise _ProtocolError("EOF in body")
        write(data)
        done += len(data)
    return done


def _copy_body(src, write, headers: dict[str, str], *, request: bool) -> int:
    """Copy a message body verbatim (framing included). Returns payload bytes (without
    chunk framing)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            line = src.readline(_MAX_LINE)
            if not line.endswith(b"\n"):
                raise _ProtocolError("bad chunk size line")
            write(line)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _ProtocolError("bad chunk size") from None
            if size == 0:
                while True:  # trailers, then the final CRLF
                    t = src.readline(_MAX_LINE)
                    if not t:
                        raise _ProtocolError("EOF in trailers")
                    write(t)
                    if t in (b"\r\n", b"\n"):
                        return total
            _copy_n(src, write, size)
            crlf = src.readline(_MAX_LINE)
            write(crlf)
            total += size
    if "content-length" in headers:
        try:
            n = int(headers["content-length"].split(",")[0].strip())
        except ValueError:
            raise _ProtocolError("bad content-length") from None
        return _copy_n(src, write, n)
    if request:
        return 0  # requests without framing have no body
    total = 0  # response delimited by connection close
    while True:
        data = src.read1(_CHUNK)
        if not data:
            return total
        write(data)
        total += len(data)
