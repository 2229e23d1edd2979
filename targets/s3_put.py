"""Many small PUTs to S3 at a low CPU cost per object: what bounds a Causemos run is the object count
(tens of thousands of tiles and CSVs of a few hundred bytes each), and on a shared machine the client's
CPU per PUT is what the run waits for.

Measured on the local S3 server (one thread, 1,500 objects of 300 bytes): botocore's
``generate_presigned_url`` costs ~0.18 ms of CPU per object and a urllib3 ``PoolManager`` PUT ~0.37 ms;
a SigV4 signature made here (the signing key is derived once per day and region, so an object costs one
SHA-256 and one HMAC) costs ~0.02 ms and a PUT on a kept-alive ``http.client`` connection ~0.17 ms.

The request is the one :meth:`targets.store.Store.write_many` sends (a presigned PUT: query-string
SigV4, ``host`` the only signed header, ``UNSIGNED-PAYLOAD``), to the URL botocore would presign: the
endpoint, addressing style and signing region are read from one URL botocore presigns, the credentials
from botocore's resolver (frozen again for every batch, so refreshed credentials are picked up). Stores
that need more (requester pays) go through ``Store.write_many``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from pipeline.errors import StorageError
from targets.store import S3_PUT_THREADS, Store

ALGORITHM = "AWS4-HMAC-SHA256"
EXPIRES_S = 900
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 5  # as Store.write_many: 4 retries, backoff 0.5 s doubling
BACKOFF_S = 0.5
PROBE_KEY = "causemos-probe-key"


@dataclass(frozen=True)
class Endpoint:
    """Where the PUTs of one bucket go and how they are signed (learnt from a botocore presigned URL)."""

    scheme: str
    netloc: str  # host[:port], as signed in the ``host`` header
    path_prefix: str  # "/bucket/" (path style) or "/" (virtual-hosted style)
    region: str


def endpoint_of(presigned_url: str, bucket: str) -> Endpoint:
    """The endpoint of a URL botocore presigned for ``PROBE_KEY`` in ``bucket``."""
    parts = urlsplit(presigned_url)
    if not parts.path.endswith(PROBE_KEY):
        raise StorageError(
            f"cannot read the S3 endpoint of bucket {bucket} from {parts.scheme}://{parts.netloc}"
        )
    credential = parse_qs(parts.query).get("X-Amz-Credential", [""])[0].split("/")
    if len(credential) != 5:
        raise StorageError(f"cannot read the signing region of bucket {bucket}")
    return Endpoint(parts.scheme, parts.netloc, parts.path[: -len(PROBE_KEY)], credential[2])


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None


class Signer:
    """Query-string SigV4 for PUTs (botocore's presigning of ``put_object``, without its per-call cost)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._keys: dict[tuple[str, str], bytes] = {}

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            key = _hmac(("AWS4" + secret).encode("utf-8"), day)
            for part in (self.endpoint.region, "s3", "aws4_request"):
                key = _hmac(key, part)
            self._keys = {(secret, day): key}  # one day and secret at a time
            cached = key
        return cached

    def path(self, key: str) -> str:
        """The URL path of ``key`` (bucket-relative), encoded as botocore encodes it."""
        return self.endpoint.path_prefix + quote(key, safe="/~")

    def path_and_query(self, key: str, credentials: Credentials, now: datetime) -> str:
        """The request target (path and query) of a PUT of ``key``, signed at ``now``."""
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        scope = f"{day}/{self.endpoint.region}/s3/aws4_request"
        params = {
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{credentials.access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(EXPIRES_S),
            "X-Amz-SignedHeaders": "host",
        }
        if credentials.token:
            params["X-Amz-Security-Token"] = credentials.token
        query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params.items()))
        path = self.path(key)
        canonical = f"PUT\n{path}\n{query}\nhost:{self.endpoint.netloc}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        signature = hmac.new(
            self._signing_key(credentials.secret_key, day), to_sign.encode("utf-8"), hashlib.sha256
        )
        return f"{path}?{query}&X-Amz-Signature={signature.hexdigest()}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


class _Connections(threading.local):
    connection: http.client.HTTPConnection | None = None


class FastPutter:
    """PUTs of one S3 store's objects on ``S3_PUT_THREADS`` threads, one kept-alive connection each."""

    def __init__(self, store: Store) -> None:
        import botocore.session

        options = store.s3.resolved()
        self.store = store
        self.bucket, _, root_key = store.root.partition("/")
        self.prefix = f"{root_key}/" if root_key else ""
        probe = store.lister.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": PROBE_KEY}, ExpiresIn=EXPIRES_S
        )
        self.endpoint = endpoint_of(probe, self.bucket)
        self.signer = Signer(self.endpoint)
        self.session = botocore.session.Session(profile=options.profile or None)
        self._local = _Connections()
        self._context = (
            ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
            if self.endpoint.scheme == "https"
            else None
        )
        self.pool = ThreadPoolExecutor(S3_PUT_THREADS, thread_name_prefix="causemos-put")

    def credentials(self) -> Credentials:
        found = self.session.get_credentials()
        if found is None:
            raise StorageError(f"no AWS credentials to write to s3://{self.bucket}")
        frozen = found.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def write_many(self, objects: Mapping[str, bytes]) -> None:
        """Write every ``{store-relative key: data}``; returns when all are written, raises the first
        error (objects already written stay: each PUT is whole)."""
        if not objects:
            return
        credentials = self.credentials()
        futures = [self.pool.submit(self._put, rel, data, credentials) for rel, data in objects.items()]
        for future in futures:
            future.result()

    def _connection(self) -> http.client.HTTPConnection:
        connection = self._local.connection
        if connection is None:
            if self._context is not None:
                connection = http.client.HTTPSConnection(
                    self.endpoint.netloc, timeout=60, context=self._context
                )
            else:
                connection = http.client.HTTPConnection(self.endpoint.netloc, timeout=60)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        if self._local.connection is not None:
            self._local.connection.close()
            self._local.connection = None

    def _put(self, rel: str, data: bytes, credentials: Credentials) -> None:
        key = self.prefix + rel.lstrip("/")
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            target = self.signer.path_and_query(key, credentials, datetime.now(UTC))
            try:
                connection = self._connection()
                connection.request("PUT", target, body=data, headers={"Host": self.endpoint.netloc})
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as e:  # reset, refused, timed out: a new connection
                self._drop_connection()
                problem = f"{type(e).__name__}: {e}"
                continue
            if response.status == 200:
                return
            problem = f"HTTP {response.status}: {body.decode('utf-8', 'replace')[:300]}"
            if response.status not in RETRY_STATUSES:
                break
        raise StorageError(f"cannot write s3://{self.bucket}/{key}: {problem}")


_putters: dict[tuple[int, str, Any], FastPutter] = {}
_putters_lock = threading.Lock()


def fast_putter(store: Store) -> FastPutter | None:
    """This process's putter for an S3 store's bucket; None where ``Store.write_many`` must do it
    (not S3, or requester pays)."""
    if not store.is_s3 or store.s3.requester_pays:
        return None
    key = (os.getpid(), store.url, store.s3)
    with _putters_lock:
        if key not in _putters:
            _putters[key] = FastPutter(store)
        return _putters[key]
