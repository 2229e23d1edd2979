"""A storage root (local directory or ``s3://bucket/prefix``) reached through fsspec.

Every write is atomic: a local file is written under a temporary dot-name in the same
directory and renamed into place; an S3 object is one PUT (or a multipart upload, which
S3 makes visible only when complete). So a run killed at any instant never leaves a file
under a target's name that is not finished.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Any

import fsspec

from pipeline.errors import StorageError
from targets.s3config import S3Options

TEMP_MARK = ".tmp-"  # temporary names are ".{name}.tmp-{pid}-{uuid}": never a target's name


class Store:
    """Relative paths (posix) under one root, on a local or S3 filesystem."""

    def __init__(self, url: str, s3: S3Options | None = None) -> None:
        self.url = url.rstrip("/") if url != "/" else url
        self.s3 = s3 or S3Options()
        self.is_s3 = self.url.startswith("s3://")
        if self.is_s3:
            self.root = self.url[len("s3://") :]
        elif self.url.startswith("file://"):
            self.root = os.path.abspath(self.url[len("file://") :])
        else:
            self.root = os.path.abspath(self.url)
        self._fs: Any = None

    # Stores travel to Dask workers: send the recipe for the filesystem, not its sockets.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None
        return state

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def fs(self) -> Any:
        if self._fs is None:
            if self.is_s3:
                self._fs = fsspec.filesystem("s3", **self.s3.s3fs_kwargs())
                self._fs.retries = 1  # botocore already retried (see S3Options)
            else:
                self._fs = fsspec.filesystem("file")
        return self._fs

    def check(self) -> None:
        """Fail early, once, with a clear error when the root cannot be reached (missing
        bucket, wrong endpoint, missing or wrong credentials). One listing request."""
        if self.is_s3:
            self.list_names("", "_state")

    def path(self, rel: str) -> str:
        rel = rel.lstrip("/")
        if rel.startswith("../") or "/../" in rel or rel == "..":
            raise StorageError(f"{rel!r} would leave the project directory {self.url}")
        return posixpath.join(self.root, rel) if self.is_s3 else os.path.join(self.root, *rel.split("/"))

    def uri(self, rel: str) -> str:
        return ("s3://" if self.is_s3 else "") + self.path(rel)

    def exists(self, rel: str) -> bool:
        if not self.is_s3:
            return os.path.isfile(self.path(rel))
        try:
            return bool(self.fs.isfile(self.path(rel)))
        except Exception as e:  # network, credentials: say where
            raise StorageError(f"cannot check {self.uri(rel)}: {e}") from e

    def read_bytes(self, rel: str) -> bytes:
        try:
            if not self.is_s3:
                with open(self.path(rel), "rb") as f:
                    return f.read()
            return bytes(self.fs.cat_file(self.path(rel)))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise StorageError(f"cannot read {self.uri(rel)}: {e}") from e

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically."""
        target = self.path(rel)
        try:
            if self.is_s3:
                self.fs.pipe_file(target, data)  # one PUT: the object appears whole or not at all
                return
            directory, name = os.path.split(target)
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, f".{name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"cannot write {self.uri(rel)}: {e}") from e

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def delete(self, rel: str) -> None:
        try:
            if self.is_s3:
                self.fs.rm_file(self.path(rel))
            else:
                os.unlink(self.path(rel))
        except FileNotFoundError:
            pass

    def list_names(self, rel_dir: str, prefix: str = "") -> set[str]:
        """Names of the files directly in ``rel_dir`` that start with ``prefix``, from one
        listing (S3: one ListObjectsV2 with that key prefix, paged). Temporary files are
        never returned."""
        base = self.path(rel_dir)
        try:
            if not self.is_s3:
                try:
                    with os.scandir(base) as it:
                        return {
                            e.name for e in it
                            if e.name.startswith(prefix) and not e.name.startswith(".") and e.is_file()
                        }  # fmt: skip
                except FileNotFoundError:
                    return set()
            keys = self.fs.find(base, prefix=prefix, maxdepth=1)
        except Exception as e:
            raise StorageError(f"cannot list {self.uri(rel_dir)}: {e}") from e
        names = set()
        for key in keys:
            name = key.rsplit("/", 1)[-1]
            if "/" in key[len(base) + 1 :] or name.startswith("."):
                continue
            names.add(name)
        return names
