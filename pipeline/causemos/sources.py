"""The input files of a Causemos run: local paths, ``s3://`` and ``http(s)://`` URLs of parquet files.

Two things are asked of a source: its *identity* (cheap: a ``stat``, a HEAD request), which decides
whether a finished run is still up to date, and its *rows* (one GET, read where the work runs, on a
Dask worker). Rows come as a stream of frames of at most a given number of rows
(:func:`iter_frames`): a remote file is first copied to a temporary local file, in chunks, so a
file of any size is read with the memory of one batch. Errors name the source and the option it came
from, so the message alone says what to fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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


COPY_CHUNK_BYTES = 8 << 20


@contextmanager
def _local_file(source: Source) -> Iterator[IO[bytes]]:
    """The file opened for reading: a local one as it is, a remote one copied (one GET, in chunks of
    ``COPY_CHUNK_BYTES``) to a temporary file that is removed on exit, so its bytes never sit in memory."""
    if source.kind == "local":
        try:
            # opened apart from the ``with`` so that only opening maps to "no such file"
            handle: IO[bytes] = open(source.url, "rb")  # noqa: SIM115
        except FileNotFoundError as e:
            raise InputError(f"{source.url}: no such file", field=OPTION) from e
        with handle:
            yield handle
        return
    with tempfile.TemporaryFile(prefix="causemos-input-") as copy:
        try:
            if source.kind == "s3":
                with _s3fs(source.s3).open(source.url, "rb", block_size=COPY_CHUNK_BYTES) as remote:
                    shutil.copyfileobj(remote, copy, COPY_CHUNK_BYTES)
            else:
                with urllib.request.urlopen(source.url, timeout=HTTP_TIMEOUT_S) as response:
                    shutil.copyfileobj(response, copy, COPY_CHUNK_BYTES)
        except FileNotFoundError as e:
            raise InputError(f"{source.url}: no such file", field=OPTION) from e
        except Exception as e:
            raise InputError(f"{source.url}: cannot read it: {_reason(e)}", field=OPTION) from e
        copy.seek(0)
        yield copy


def batch_frame(batch: pa.RecordBatch) -> pd.DataFrame:
    """One record batch as :func:`pandas.read_parquet` converts a whole file (pandas metadata, index
    columns and string dtypes alike). Only the dtypes that depend on the rows (an integer column with a
    null is float, a bool column with a null is object) may differ from the whole file's."""
    return pa.Table.from_batches([batch]).to_pandas()


def iter_frames(source: Source, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows in order, as frames of at most ``batch_rows`` rows; a file without rows gives one
    empty frame with its columns (the dtypes of the schema)."""
    with _local_file(source) as handle:
        try:
            parquet = pq.ParquetFile(handle)
            batches = parquet.iter_batches(batch_size=max(1, int(batch_rows)), use_pandas_metadata=True)
            first = True
            for batch in batches:
                first = False
                yield batch_frame(batch)
            if first:
                yield parquet.schema_arrow.empty_table().to_pandas()
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{source.url}: not a readable parquet file: {_reason(e)}", field=OPTION) from e


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    return f"{type(error).__name__}: {error}"
