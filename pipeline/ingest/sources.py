"""The bundles a run ingests, from ``--source``: a local directory (searched recursively),
an ``s3://`` prefix (every object under it), one bundle, or a list file (one local path or
URL per line; blank lines and ``#`` comments skipped; relative paths are relative to the
list file).

Bundles are the files named ``*.tar``, ``*.tar.gz`` or ``*.tgz``. Two bundles of one scene
(the same file name less its extension) would write the same outputs: refused, naming
both. A list file naming a file that does not exist or is not a bundle is refused with its
line, before anything runs.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from urllib.parse import urlparse

from pipeline.errors import InputError
from pipeline.ingest.access import SourceAccess
from pipeline.ingest.bundle import BundleError, SceneId, bundle_stem, is_bundle_name, parse_product_id


@dataclass(frozen=True)
class SourceBundle:
    """One bundle of the source: where it is and how many bytes it has."""

    href: str  # absolute local path, or s3://bucket/key
    size: int

    @property
    def stem(self) -> str:
        return bundle_stem(self.href)

    def scene_from_name(self) -> SceneId | None:
        """The scene the file name states (USGS names bundles by product id), else None."""
        try:
            return parse_product_id(self.stem, bundle=self.href)
        except BundleError:
            return None


def _is_remote(location: str) -> bool:
    return "://" in location and urlparse(location).scheme not in ("", "file")


def _local_path(location: str) -> str:
    return os.path.abspath(location.removeprefix("file://"))


def _list_local_dir(root: str) -> list[SourceBundle]:
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in names:
            if is_bundle_name(name) and not name.startswith("."):
                path = os.path.join(directory, name)
                found.append(SourceBundle(path, os.path.getsize(path)))
    return found


def _list_s3_prefix(url: str, access: SourceAccess) -> list[SourceBundle]:
    parsed = urlparse(url)
    fs = access.filesystem("s3")
    base = f"{parsed.netloc}{parsed.path}".rstrip("/")
    try:
        if is_bundle_name(base) and fs.isfile(base):
            return [SourceBundle(f"s3://{base}", int(fs.info(base)["size"]))]
        listed = fs.find(base, detail=True)
    except Exception as error:  # network, credentials, missing bucket: say where
        raise InputError(f"cannot list the source: {error}", source=url, field="source") from error
    return [
        SourceBundle(f"s3://{key}", int(info.get("size") or 0))
        for key, info in listed.items()
        if is_bundle_name(key) and not posixpath.basename(key).startswith(".")
    ]


def _read_list_file(path: str, access: SourceAccess) -> list[SourceBundle]:
    found = []
    base = os.path.dirname(path)
    with open(path, encoding="utf-8") as listing:
        for number, raw in enumerate(listing, start=1):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            if not is_bundle_name(entry):
                raise InputError(
                    f"{entry!r} is not a bundle (.tar, .tar.gz, .tgz)",
                    source=path,
                    line=number,
                    field="source",
                )
            if _is_remote(entry):
                found.append(_remote_bundle(entry, access, path, number))
                continue
            local = entry if os.path.isabs(entry) else os.path.join(base, entry)
            if not os.path.isfile(local):
                raise InputError(f"{entry!r} does not exist", source=path, line=number, field="source")
            found.append(SourceBundle(os.path.abspath(local), os.path.getsize(local)))
    return found


def _remote_bundle(url: str, access: SourceAccess, list_file: str, line: int) -> SourceBundle:
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        raise InputError(
            f"{url!r}: only local paths and s3:// URLs are read", source=list_file, line=line, field="source"
        )
    try:
        info = access.filesystem("s3").info(f"{parsed.netloc}{parsed.path}")
    except FileNotFoundError as error:
        raise InputError(f"{url!r} does not exist", source=list_file, line=line, field="source") from error
    except Exception as error:
        raise InputError(
            f"cannot reach {url!r}: {error}", source=list_file, line=line, field="source"
        ) from error
    return SourceBundle(url, int(info.get("size") or 0))


def list_source(source: str, access: SourceAccess | None = None) -> list[SourceBundle]:
    """Every bundle of ``source``, sorted by location; :class:`InputError` when there is none,
    when the source cannot be read, or when two bundles are of one scene."""
    access = access or SourceAccess()
    if not source:
        raise InputError(
            "give --source: a directory, an s3:// prefix or a list file of bundles", field="source"
        )
    if _is_remote(source):
        if urlparse(source).scheme != "s3":
            raise InputError("only local paths and s3:// prefixes are read", source=source, field="source")
        bundles = _list_s3_prefix(source, access)
    else:
        path = _local_path(source)
        if os.path.isdir(path):
            bundles = _list_local_dir(path)
        elif os.path.isfile(path):
            bundles = (
                [SourceBundle(path, os.path.getsize(path))]
                if is_bundle_name(path)
                else _read_list_file(path, access)
            )
        else:
            raise InputError("no such directory or file", source=source, field="source")
    if not bundles:
        raise InputError("no bundle (*.tar, *.tar.gz, *.tgz) found", source=source, field="source")
    return _unique_scenes(sorted(bundles, key=lambda b: b.href), source)


def _unique_scenes(bundles: list[SourceBundle], source: str) -> list[SourceBundle]:
    seen: dict[str, SourceBundle] = {}
    for bundle in bundles:
        other = seen.get(bundle.stem)
        if other is not None and other.href != bundle.href:
            raise InputError(
                f"two bundles of one scene: {other.href} and {bundle.href}", source=source, field="source"
            )
        seen[bundle.stem] = bundle
    return list(seen.values())
