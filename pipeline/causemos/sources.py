"""The input files of a Causemos run: local paths, ``s3://`` and ``http(s)://`` URLs of parquet files.

Two things are asked of a source: its *identity* (cheap: a ``stat``, a HEAD request), which decides
whether a finished run is still up to date, and its *rows* (one GET, read where the work runs, on a
Dask worker). Errors name the source and the option it came from, so the message alone says what to fix.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from pipeline.errors import InputError
from targets.s3config import S3Options

OPTION = "--data-paths"
HTTP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Source:
    """One input file: ``url`` as given (a local path made absolute), and how to reach S3 if it is there."""

    url: str
    s3: S3Options = field(default_factory=S3Options)

    @property
    def kind(self) -> str:
        """``s3``, ``http`` or ``local``."""
        if self.url.startswith("s3://"):
            return "s3"
        if self.url.startswith(("http://", "https://")):
            return "http"
        return "local"

    @property
    def name(self) -> str:
        """The file name (the reference decides on it whether a file holds string values)."""
        path = urlparse(self.url).path if self.kind != "local" else self.url
        return path.rstrip("/").rsplit("/", 1)[-1]


def parse_data_paths(text: str, s3: S3Options) -> list[Source]:
    """``--data-paths``: comma-separated local paths or URLs, in order (the order of the outputs' columns
    and lists follows it). Local paths become absolute; ``file://`` is accepted."""
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise InputError("give at least one parquet file (local path, s3:// or https:// URL)", field=OPTION)
    sources = []
    for part in parts:
        if not part:
            raise InputError(f"empty entry in {text!r}", field=OPTION)
        part = part.removeprefix("file://")
        scheme = urlparse(part).scheme
        if scheme in ("s3", "http", "https"):
            sources.append(Source(part, s3))
        elif scheme and len(scheme) > 1:  # "C:" is a drive, not a scheme
            raise InputError(
                f"{part}: unsupported scheme {scheme!r} (local path, s3://, http:// or https://)",
                field=OPTION,
            )
        else:
            sources.append(Source(os.path.abspath(part), s3))
    return sources


_filesystems: dict[S3Options, Any] = {}
_fs_lock = threading.Lock()


def _s3fs(options: S3Options) -> Any:
    import fsspec

    with _fs_lock:
        if options not in _filesystems:
            _filesystems[options] = fsspec.filesystem("s3", skip_instance_cache=True, **options.s3fs_kwargs())
        return _filesystems[options]


def identity(source: Source) -> str:
    """What changes when the file changes: size and mtime (local), size and ETag (S3), ETag or
    Last-Modified and length (HTTP; the content's SHA-1 when the server sends neither)."""
    try:
        if source.kind == "local":
            st = os.stat(source.url)
            return f"local:{st.st_size}:{st.st_mtime_ns}"
        if source.kind == "s3":
            info = _s3fs(source.s3).info(source.url)
            return f"s3:{info.get('size')}:{info.get('ETag') or info.get('LastModified')}"
        request = urllib.request.Request(source.url, method="HEAD")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
            length = response.headers.get("Content-Length")
        if etag or modified:
            return f"http:{length}:{etag or modified}"
        return "sha1:" + hashlib.sha1(read_bytes(source)).hexdigest()
    except InputError:
        raise
    except FileNotFoundError as e:
        raise InputError(f"{source.url}: no such file", field=OPTION) from e
    except Exception as e:
        raise InputError(f"{source.url}: cannot reach it: {_reason(e)}", field=OPTION) from e


def read_bytes(source: Source) -> bytes:
    """The whole file, in one GET (or one read)."""
    try:
        if source.kind == "local":
            with open(source.url, "rb") as f:
                return f.read()
        if source.kind == "s3":
            return bytes(_s3fs(source.s3).cat_file(source.url, max_concurrency=1))
        with urllib.request.urlopen(source.url, timeout=HTTP_TIMEOUT_S) as response:
            return bytes(response.read())
    except FileNotFoundError as e:
        raise InputError(f"{source.url}: no such file", field=OPTION) from e
    except Exception as e:
        raise InputError(f"{source.url}: cannot read it: {_reason(e)}", field=OPTION) from e


def read_frame(source: Source) -> pd.DataFrame:
    """The file's rows as pandas reads a parquet file (``.parquet`` or gzip-compressed ``.parquet.gzip``)."""
    data = read_bytes(source)
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as e:
        raise InputError(f"{source.url}: not a readable parquet file: {_reason(e)}", field=OPTION) from e


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    return f"{type(error).__name__}: {error}"
