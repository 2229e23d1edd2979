"""A storage root (local directory or ``s3://bucket/prefix``) reached through fsspec.

Every write is atomic: a local file is written under a temporary dot-name in the same
directory and renamed into place; an S3 object is one PUT (or a multipart upload, which
S3 makes visible only when complete). So a run killed at any instant never leaves a file
under a target's name that is not finished.
"""

from __future__ import annotations

import contextlib
import html
import os
import posixpath
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, cast
from urllib.parse import unquote_plus

from pipeline.errors import StorageError
from targets.s3config import S3Options

TEMP_MARK = ".tmp-"  # temporary names are ".{name}.tmp-{pid}-{uuid}": never a target's name
# A temporary older than this is debris of a killed writer (a write takes well under a
# second); younger ones may belong to a live writer on another machine and are left alone.
STALE_TEMP_SECONDS = 3600.0

Stat = tuple[int, int]  # (st_ino, st_mtime_ns) of a local file or directory; (0, 0) = absent
ABSENT: Stat = (0, 0)


class DirNames(NamedTuple):
    names: list[str]
    temporaries: int  # temporaries still there (a live writer's, or too young to remove)


def _keep_timestamp_text(value: str) -> str:
    """botocore parses every listed key's LastModified with dateutil (a third of a
    listing's CPU); nothing here uses it, so it stays text."""
    return value


@dataclass
class Listing:
    """Every key under a prefix (root-relative) and, locally, the temporaries found there
    (a killed writer's ``.name.tmp-...``), never counted as keys."""

    keys: set[str] = field(default_factory=set)
    temporaries: list[str] = field(default_factory=list)


# Concurrent writes of many small objects (write_many): the object count, not the bytes,
# is what costs when a workflow writes hundreds of thousands of tiles and CSVs.
S3_PUT_THREADS = 32  # presigned PUTs in flight per process (blocking urllib3: the GIL is released)
LOCAL_WRITE_THREADS = 8
_write_pools: dict[str, ThreadPoolExecutor] = {}
_write_pools_lock = threading.Lock()


def _temporary_beside(target: str) -> str:
    """A temporary name in ``target``'s directory (made if missing): a rename from it onto
    ``target`` is atomic, and listings know it for a temporary (:data:`TEMP_MARK`)."""
    directory, name = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f".{name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def _storage_errors(doing: str, uri: str) -> Iterator[None]:
    """Any error of the block but a StorageError as a StorageError that names ``uri``:
    "cannot {doing} {uri}: {error}"."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        raise StorageError(f"cannot {doing} {uri}: {e}") from e


@contextlib.contextmanager
def _replaced(target: str, uri: str) -> Iterator[str]:
    """A temporary name beside ``target`` for the block to write, renamed onto ``target``
    when the block ends and removed when it fails: ``target`` is whole or untouched. The
    block's own errors pass as they are; making the directory or the rename fail as a
    StorageError naming ``uri``."""
    with _storage_errors("write", uri):
        tmp = _temporary_beside(target)
    try:
        yield tmp
        with _storage_errors("write", uri):
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_pool(kind: str, threads: int) -> ThreadPoolExecutor:
    """One pool per process and kind, made on first use (a forked process makes its own)."""
    key = f"{kind}-{os.getpid()}"
    with _write_pools_lock:
        if key not in _write_pools:
            _write_pools[key] = ThreadPoolExecutor(threads, thread_name_prefix=f"store-{kind}")
        return _write_pools[key]


class _KeyLister:
    """ListObjectsV2 pages fetched through presigned URLs and read with a regular
    expression; PUTs through presigned URLs too. Completeness lists every output key of a
    project (40 million for 10,000 plots x 1,000 observations); botocore's XML parsing and
    s3fs's bookkeeping cost ~40 us of CPU per key, a ``<Key>`` regex ~1 us, and blocking
    urllib3 requests let threads overlap for real. Same request per page as s3fs: one GET
    ?list-type=2 with the prefix and '/' as delimiter (or none, for a whole tree). A PUT
    costs ~0.58 ms of client CPU this way against ~1.16 ms through s3fs (measured on the
    local S3 server), which is what bounds a writer of many small objects."""

    _KEY = re.compile(r"<Key>([^<]*)</Key>")
    _TOKEN = re.compile(r"<NextContinuationToken>([^<]*)</NextContinuationToken>")

    def __init__(self, options: S3Options) -> None:
        import botocore.session
        import urllib3
        from botocore.config import Config

        o = options.resolved()
        session = botocore.session.Session(profile=o.profile or None)
        self.client = session.create_client(
            "s3", endpoint_url=o.endpoint_url or None, region_name=o.region or None,
            config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
        )  # fmt: skip
        self.requester_pays = o.requester_pays
        retries = urllib3.Retry(
            total=4,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "PUT"}),  # a PUT of the same bytes is idempotent
        )
        self.http = urllib3.PoolManager(maxsize=S3_PUT_THREADS, retries=retries)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """One PUT of ``data`` to ``key`` (the object appears whole or not at all)."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if self.requester_pays:
            params["RequestPayer"] = "requester"
        url = self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=900)
        response = self.http.request("PUT", url, body=data)
        if response.status != 200:
            body = response.data.decode("utf-8", "replace")
            raise StorageError(f"cannot write s3://{bucket}/{key}: HTTP {response.status}: {body[:300]}")

    def keys(self, bucket: str, prefix: str, delimiter: str = "/") -> list[str]:
        keys: list[str] = []
        token = ""
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "EncodingType": "url"}
            if delimiter:
                params["Delimiter"] = delimiter
            if token:
                params["ContinuationToken"] = token
            if self.requester_pays:
                params["RequestPayer"] = "requester"
            url = self.client.generate_presigned_url("list_objects_v2", Params=params, ExpiresIn=900)
            response = self.http.request("GET", url)
            body = response.data.decode("utf-8")
            if response.status != 200:
                raise StorageError(f"listing s3://{bucket}/{prefix}: HTTP {response.status}: {body[:300]}")
            keys.extend(unquote_plus(html.unescape(k)) for k in self._KEY.findall(body))
            if "<IsTruncated>true</IsTruncated>" not in body:
                return keys
            match = self._TOKEN.search(body)
            if match is None:
                raise StorageError(
                    f"listing s3://{bucket}/{prefix}: truncated page without a continuation token"
                )
            token = html.unescape(match.group(1))


class Store:
    """Relative paths (posix) under one root, on a local or S3 filesystem."""

    def __init__(self, url: str, s3: S3Options | None = None) -> None:
        self.url = url.rstrip("/") if url != "/" else url
        self.s3 = s3 or S3Options()
        self.is_s3 = self.url.startswith("s3://")
        # az://container/prefix (Azure Blob through adlfs; account and credentials from the
        # environment: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with
        # AZURE_STORAGE_SAS_TOKEN / AZURE_STORAGE_ACCOUNT_KEY).
        self.is_az = self.url.startswith(("az://", "abfs://"))
        self.is_local = not (self.is_s3 or self.is_az)
        self.scheme = "s3://" if self.is_s3 else "az://" if self.is_az else ""
        if self.is_s3:
            self.root = self.url[len("s3://") :]
        elif self.is_az:
            self.root = self.url.split("://", 1)[1]
        elif self.url.startswith("file://"):
            self.root = os.path.abspath(self.url[len("file://") :])
        else:
            self.root = os.path.abspath(self.url)
        self._fs: Any = None
        self._lister: _KeyLister | None = None
        self._lister_lock = threading.Lock()

    # Stores travel to Dask workers: send the recipe for the filesystem, not its sockets.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None
        state["_lister"] = None
        del state["_lister_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lister_lock = threading.Lock()

    @property
    def lister(self) -> _KeyLister:
        with self._lister_lock:  # plot checks list from many threads
            if self._lister is None:
                self._lister = _KeyLister(self.s3)
            return self._lister

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def fs(self) -> Any:
        if self._fs is None:
            # imported here: a local project never needs it (~50 ms of every command's start-up)
            import fsspec

            if self.is_s3:
                self._fs = fsspec.filesystem("s3", **self._s3fs_kwargs_with_session())
                self._fs.retries = 1  # botocore already retried (see S3Options)
            elif self.is_az:
                # Listings decide completeness: never from a stale cache.
                self._fs = fsspec.filesystem("az", skip_instance_cache=True, use_listings_cache=False)
            else:
                self._fs = fsspec.filesystem("file")
        return self._fs

    def _s3fs_kwargs_with_session(self) -> dict[str, Any]:
        """s3fs options plus our own aiobotocore session (the profile moves into it), whose
        response parsers leave timestamps as text."""
        from aiobotocore.session import AioSession

        kwargs = dict(self.s3.s3fs_kwargs())
        profile = kwargs.pop("profile", None)
        session = AioSession(profile=profile) if profile else AioSession()
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_keep_timestamp_text
        )
        kwargs["session"] = session
        return kwargs

    def check(self) -> None:
        """Fail early, once, with a clear error when the root cannot be reached (missing
        bucket, wrong endpoint, missing or wrong credentials). One listing request."""
        if not self.is_local:
            try:  # through s3fs/adlfs: their errors name the problem (NoSuchBucket, credentials, ...)
                self.fs.find(self.root, prefix="_state", maxdepth=1)
            except Exception as e:
                raise StorageError(f"cannot list {self.uri('')}: {e}") from e

    def path(self, rel: str) -> str:
        rel = rel.lstrip("/")
        if rel.startswith("../") or "/../" in rel or rel == "..":
            raise StorageError(f"{rel!r} would leave the project directory {self.url}")
        return os.path.join(self.root, *rel.split("/")) if self.is_local else posixpath.join(self.root, rel)

    def uri(self, rel: str) -> str:
        return self.scheme + self.path(rel)

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return os.path.isfile(self.path(rel))
        try:
            return bool(self.fs.isfile(self.path(rel)))
        except Exception as e:  # network, credentials: say where
            raise StorageError(f"cannot check {self.uri(rel)}: {e}") from e

    def read_bytes(self, rel: str) -> bytes:
        try:
            if self.is_local:
                with open(self.path(rel), "rb") as f:
                    return f.read()
            # max_concurrency=1: one GET; otherwise s3fs first HEADs every object for its size
            return bytes(self.fs.cat_file(self.path(rel), max_concurrency=1))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise StorageError(f"cannot read {self.uri(rel)}: {e}") from e

    def open_binary(self, rel: str, block_size: int = 8 << 20) -> IO[bytes]:
        """The object opened for reading, seekable: a local file, or ranged GETs of ``block_size``
        bytes on S3 / Azure (for formats read in parts, such as a parquet file's row groups)."""
        try:
            if self.is_local:
                return open(self.path(rel), "rb")  # the caller closes it
            return cast(IO[bytes], self.fs.open(self.path(rel), "rb", block_size=block_size))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise StorageError(f"cannot open {self.uri(rel)}: {e}") from e

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically."""
        target = self.path(rel)
        with _storage_errors("write", self.uri(rel)):
            if not self.is_local:
                self.fs.pipe_file(target, data)  # one PUT: the object appears whole or not at all
                return
            with _replaced(target, self.uri(rel)) as tmp, open(tmp, "wb") as f:
                f.write(data)

    def put_file(self, rel: str, local_path: str) -> None:
        """Move (local) or upload (S3, Azure) a finished file to ``rel`` atomically: a
        rename in the target's directory; one PUT, an S3 multipart upload (visible only
        when complete) or a committed block blob. ``local_path`` is consumed."""
        target = self.path(rel)
        with _storage_errors("write", self.uri(rel)):
            if not self.is_local:
                self.fs.put_file(local_path, target)
                os.unlink(local_path)
                return
            with _replaced(target, self.uri(rel)) as tmp:
                shutil.move(local_path, tmp)  # a rename when on the same filesystem

    def replaced_locally(self, rel: str) -> contextlib.AbstractContextManager[str]:
        """For a writer that makes a file at a path (GDAL) in a local store: a temporary path
        beside ``rel`` for the block to write, renamed onto ``rel`` when the block ends and
        removed when it fails, so ``rel`` is whole or as it was (no copy of the bytes, as
        :meth:`write_bytes` would need). A listing tells the temporary from a target, and a
        killed writer's is swept as stale (:meth:`remove_stale_temps`)."""
        if not self.is_local:
            raise ValueError(f"{self.uri(rel)}: a path to write at is for a local store only")
        return _replaced(self.path(rel), self.uri(rel))

    def put_tree(self, rel: str, local_dir: str) -> None:
        """Copy a finished local directory (a Zarr store) to ``rel``: locally as a rename of
        a temporary directory (whole or absent); on object stores file by file, which a
        workflow makes safe by writing its completion marker after this returns."""
        target = self.path(rel)
        with _storage_errors("write", self.uri(rel)):
            if not self.is_local:
                if self.fs.exists(target):  # no key of an earlier store may survive
                    self.fs.rm(target, recursive=True)
                for dirpath, _, names in os.walk(local_dir):
                    for name in names:
                        src = os.path.join(dirpath, name)
                        key = posixpath.join(target, os.path.relpath(src, local_dir).replace(os.sep, "/"))
                        self.fs.put_file(src, key)
                shutil.rmtree(local_dir, ignore_errors=True)
                return
            tmp = _temporary_beside(target)
            shutil.move(local_dir, tmp)
            if os.path.isdir(target):  # a rebuilt store replaces the old one
                shutil.rmtree(target)
            os.replace(tmp, target)

    def delete_tree(self, rel: str) -> None:
        try:
            if self.is_local:
                shutil.rmtree(self.path(rel), ignore_errors=True)
            elif self.fs.exists(self.path(rel)):
                self.fs.rm(self.path(rel), recursive=True)
        except FileNotFoundError:
            pass

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def delete(self, rel: str) -> None:
        try:
            if not self.is_local:
                self.fs.rm_file(self.path(rel))
            else:
                os.unlink(self.path(rel))
        except FileNotFoundError:
            pass

    # ---- local directories: stats and raw listings (completeness at scale) ----------
    def stat(self, rel: str) -> Stat:
        """(inode, mtime in ns) of a local file or directory, ABSENT when missing. Any
        create, delete or rename in a directory changes its mtime (and replacing it, its
        inode), so an unchanged stat means unchanged names."""
        try:
            st = os.stat(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return ABSENT
        return (st.st_ino, st.st_mtime_ns)

    def names_in(self, rel_dir: str) -> DirNames:
        """Every name in a local directory (files and subdirectories) except dot-names,
        from one ``os.listdir`` (none when missing). Stale temporaries found on the way
        are removed; younger ones are counted."""
        try:
            names = os.listdir(self.path(rel_dir))
        except (FileNotFoundError, NotADirectoryError):
            return DirNames([], 0)
        dotted = [n for n in names if n.startswith(".")]
        if not dotted:
            return DirNames(names, 0)
        removed = self.remove_stale_temps(rel_dir, dotted)
        temporaries = sum(TEMP_MARK in n for n in dotted) - removed
        return DirNames([n for n in names if not n.startswith(".")], temporaries)

    def iter_names(self, rel_dir: str) -> Iterator[str]:
        """The names of a local directory except dot-names, one at a time (a directory
        of millions of names is never held as a list); stale temporaries are removed
        after the scan."""
        dotted: list[str] = []
        try:
            with os.scandir(self.path(rel_dir)) as it:
                for e in it:
                    if e.name.startswith("."):
                        dotted.append(e.name)
                    else:
                        yield e.name
        except (FileNotFoundError, NotADirectoryError):
            return
        if dotted:
            self.remove_stale_temps(rel_dir, dotted)

    def _local_file_names(self, rel_dir: str, prefix: str) -> set[str]:
        names: set[str] = set()
        dotted: list[str] = []
        try:
            with os.scandir(self.path(rel_dir)) as it:
                for e in it:
                    name = e.name
                    if name.startswith("."):
                        dotted.append(name)
                    elif name.startswith(prefix) and e.is_file():
                        names.add(name)
        except (FileNotFoundError, NotADirectoryError):
            return names
        if dotted:
            self.remove_stale_temps(rel_dir, dotted)
        return names

    def remove_stale_temps(
        self, rel_dir: str, names: Iterable[str], *, max_age_s: float = STALE_TEMP_SECONDS
    ) -> int:
        """Delete the temporaries among ``names`` (in local ``rel_dir``) left by a writer
        killed more than ``max_age_s`` ago; returns how many."""
        if not self.is_local:
            return 0  # object writes are single PUTs: no temporaries
        base = self.path(rel_dir)
        cutoff = time.time() - max_age_s
        removed = 0
        for name in names:
            if not (name.startswith(".") and TEMP_MARK in name):
                continue
            path = os.path.join(base, name)
            try:
                if os.lstat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                pass  # its writer finished or another sweep got it
        return removed

    def list_names(self, rel_dir: str, prefix: str = "") -> set[str]:
        """Names of the files directly in ``rel_dir`` that start with ``prefix``, from one
        listing (S3: one ListObjectsV2 with that key prefix, paged). Temporary files are
        never returned (locally, stale ones are removed)."""
        base = self.path(rel_dir)
        try:
            if self.is_local:
                return self._local_file_names(rel_dir, prefix)
            base = base.rstrip("/")
            if self.is_az:  # adlfs: one paged List Blobs with the directory as prefix
                try:
                    keys = [
                        k for k in self.fs.ls(base, detail=False) if k.rsplit("/", 1)[-1].startswith(prefix)
                    ]
                except FileNotFoundError:
                    return set()
                return {k.rsplit("/", 1)[-1] for k in keys if not k.rsplit("/", 1)[-1].startswith(".")}
            bucket, _, key_dir = base.partition("/")
            keys = [
                f"{bucket}/{k}"
                for k in self.lister.keys(bucket, f"{key_dir}/{prefix}" if key_dir else prefix)
            ]
        except Exception as e:
            raise StorageError(f"cannot list {self.uri(rel_dir)}: {e}") from e
        names = set()
        for key in keys:
            name = key.rsplit("/", 1)[-1]
            if "/" in key[len(base) + 1 :] or name.startswith("."):
                continue
            names.add(name)
        return names

    # ---- many objects at once: whole trees listed, written and deleted -------------
    def list_tree(self, prefix: str) -> Listing:
        """Every key under ``prefix`` (root-relative, ending in ``/``; ``""`` = the whole
        root): one paged ListObjectsV2 without delimiter on S3, one directory walk locally.
        Temporaries are returned apart, never as keys."""
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"a prefix ends with '/': {prefix!r}")
        with _storage_errors("list", self.uri(prefix)):
            if self.is_local:
                return self._list_local_tree(prefix)
            if self.is_s3:
                bucket, _, root_key = self.root.partition("/")
                key_prefix = f"{root_key}/{prefix}" if root_key else prefix
                strip = len(root_key) + 1 if root_key else 0
                return Listing({k[strip:] for k in self.lister.keys(bucket, key_prefix, delimiter="")})
            base = self.root.rstrip("/") + "/"
            try:
                found = self.fs.find(self.path(prefix).rstrip("/"))
            except FileNotFoundError:
                found = []
            return Listing({p[len(base) :] for p in found if p.startswith(base)})

    def _list_local_tree(self, prefix: str) -> Listing:
        listing = Listing()
        for dirpath, _dirs, files in os.walk(self.path(prefix)):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in files:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if name.startswith(".") and TEMP_MARK in name:
                    listing.temporaries.append(rel)
                else:
                    listing.keys.add(rel)
        return listing

    def write_many(self, objects: Mapping[str, bytes]) -> None:
        """Write every ``{rel: data}`` atomically, many at once: on S3 one presigned PUT
        per object, up to ``S3_PUT_THREADS`` in flight; locally a temporary file renamed
        into place, on ``LOCAL_WRITE_THREADS`` threads. Returns when all are written;
        raises the first error (objects already written stay: each is whole)."""
        if not objects:
            return
        if self.is_s3:
            bucket, _, root_key = self.root.partition("/")
            lister = self.lister
            prefix = f"{root_key}/" if root_key else ""

            def put(item: tuple[str, bytes]) -> None:
                rel, data = item
                # connection refused, retries exhausted: say where
                with _storage_errors("write", self.uri(rel)):
                    lister.put(bucket, prefix + rel.lstrip("/"), data)

            pool = _write_pool("s3", S3_PUT_THREADS)
        else:

            def put(item: tuple[str, bytes]) -> None:
                self.write_bytes(*item)

            pool = _write_pool("local", LOCAL_WRITE_THREADS)
        for future in [pool.submit(put, item) for item in objects.items()]:
            future.result()

    def delete_many(self, keys: Iterable[str], *, prune_below: str = "") -> int:
        """Delete ``keys`` (1000 per DeleteObjects request on S3); locally, directories
        left empty are removed up to ``prune_below`` (root-relative; ``""`` = the root).
        Returns how many keys were asked to go (absent ones count: they are gone)."""
        wanted = sorted(set(keys))
        if not wanted:
            return 0
        if self.is_local:
            for key in wanted:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(key))
            self._prune_empty_dirs(wanted, prune_below)
        elif self.is_s3:
            bucket = self.path(wanted[0]).partition("/")[0]
            for start in range(0, len(wanted), 1000):
                chunk = [{"Key": self.path(k).partition("/")[2]} for k in wanted[start : start + 1000]]
                try:
                    response = self.fs.call_s3(
                        "delete_objects", Bucket=bucket, Delete={"Objects": chunk, "Quiet": True}
                    )
                except Exception as e:
                    raise StorageError(f"cannot delete under s3://{bucket}/{chunk[0]['Key']}: {e}") from e
                errors = response.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageError(
                        f"cannot delete s3://{bucket}/{first.get('Key')}: "
                        f"{first.get('Code')} {first.get('Message')}"
                    )
        else:
            for key in wanted:
                self.delete(key)
        return len(wanted)

    def _prune_empty_dirs(self, keys: Iterable[str], prune_below: str) -> None:
        stop = self.path(prune_below).rstrip(os.sep) if prune_below else self.root
        candidates = sorted({os.path.dirname(self.path(k)) for k in keys}, key=len, reverse=True)
        for directory in candidates:
            while directory.startswith(stop) and len(directory) > len(stop):
                try:
                    os.rmdir(directory)  # only when empty
                except OSError:
                    break
                directory = os.path.dirname(directory)


_shared_stores: dict[tuple[str, S3Options], Store] = {}
_shared_stores_lock = threading.Lock()


def shared_store(store: Store) -> Store:
    """This process's :class:`Store` for the same root and S3 options.

    Why: a Store builds its S3 clients on first use (a new aiobotocore session: ~0.3 s
    before the first request, measured on the local S3 server, against ~3 ms for a request
    on a warm client). Tasks and Dask tasks (which receive Stores pickled, without their
    clients) would otherwise pay it per call."""
    key = (store.url, store.s3)
    with _shared_stores_lock:
        if key not in _shared_stores:
            _shared_stores[key] = store
        return _shared_stores[key]
