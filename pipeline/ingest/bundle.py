"""Read a Landsat Collection 2 scene bundle in place: its members, its scene, its completeness.

A bundle is the ``<product_id>.tar`` (or ``.tar.gz`` / ``.tgz``) that the USGS bulk download
delivers for one scene. Nothing is extracted to disk: the member list comes from the tar
headers (:mod:`tarfile`, reading only headers on an uncompressed tar), the small text members
(``MTL.txt`` / ``MTL.xml`` / ``MTL.json`` / ``ANG.txt``) are read into memory during that one
pass, and raster members are opened by GDAL in place: through ``/vsitar/``
(:meth:`Bundle.gdal_path`), or, in an uncompressed tar whose member offsets the listing
found, as the member's byte range of the file (``/vsisubfile/``, :meth:`Bundle.read_path`: no
tar scan per open, one ranged read per block on ``s3://``). A compressed bundle cannot be
read at an offset; the workflow streams it once instead (:func:`iter_members`).

Bundles on ``s3://`` are read with the options of a :class:`~pipeline.ingest.access.SourceAccess`
(endpoint, region, profile; credentials from the environment).

:func:`open_bundle` refuses a bundle that cannot be published whole, with a
:class:`BundleError` that names the bundle, the member and the reason:

- a truncated or corrupt tar (a member's data runs past the end of the file, or the
  compressed stream ends early): the member named is the one cut;
- a missing band: every ``.TIF`` the MTL's ``PRODUCT_CONTENTS`` lists (``FILE_NAME_*``), the
  RGB bands the thumbnails need and ``QA_PIXEL`` must be members;
- no ``MTL.xml`` nor ``MTL.txt`` (the item is built from one of them), or, for OLI/TIRS, no
  ``ANG.txt`` (stactools-landsat takes the OLI footprint from it).
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import IO, Literal
from urllib.parse import urlparse

from lxml import etree

from pipeline.errors import PipelineError
from pipeline.ingest.access import SourceAccess

BUNDLE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

MemberKind = Literal["raster", "mtl_txt", "mtl_xml", "mtl_json", "ang", "other"]

# Small text members kept in memory while listing (the item and the copies need them).
TEXT_KINDS: dict[str, MemberKind] = {
    "MTL.txt": "mtl_txt",
    "MTL.xml": "mtl_xml",
    "MTL.json": "mtl_json",
    "ANG.txt": "ang",
}

SENSOR_DIRS = {"M": "mss", "T": "tm", "E": "etm", "C": "oli-tirs", "O": "oli-tirs"}

_PRODUCT_ID = re.compile(
    r"^L(?P<sensor>[COTEM])(?P<satellite>\d{2})_(?P<processing>L1TP|L1GT|L1GS|L2SP|L2SR)_"
    r"(?P<path>\d{3})(?P<row>\d{3})_(?P<acquired>\d{8})_(?P<processed>\d{8})_"
    r"(?P<collection>\d{2})_(?P<category>T1|T2|RT)$"
)
_MTL_NAME = re.compile(
    r"^(?P<product_id>L[COTEM]\d{2}_L\d[A-Z]{2}_\d{6}_\d{8}_\d{8}_\d{2}_[A-Z0-9]{2})_MTL\.(txt|xml|json)$"
)


class BundleError(PipelineError):
    """A bundle that cannot be published: names the bundle, the member (if one) and why."""

    def __init__(self, bundle: str, reason: str, *, member: str = "") -> None:
        self.bundle = bundle
        self.member = member
        self.reason = reason
        where = f"bundle {bundle}" + (f", member {member}" if member else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class SceneId:
    """What a Collection 2 product id says: ``LXSS_LLLL_PPPRRR_YYYYMMDD_yyyymmdd_CC_TX``."""

    product_id: str
    sensor_letter: str  # C, O, T, E or M (the X of LXSS)
    satellite: int
    processing_level: str  # L1TP, L1GT, L1GS, L2SP or L2SR
    path: int
    row: int
    acquired: dt.date
    processed: dt.date
    collection_category: str

    @property
    def level(self) -> str:
        """``level-1`` or ``level-2``: the first path part of the USGS bucket layout."""
        return f"level-{self.processing_level[1]}"

    @property
    def sensor(self) -> str:
        """``oli-tirs``, ``etm``, ``tm`` or ``mss`` (Landsat 8/9 ``LT08`` is TIRS-only: oli-tirs)."""
        if self.satellite >= 8:
            return "oli-tirs"
        return SENSOR_DIRS[self.sensor_letter]

    @property
    def year(self) -> int:
        return self.acquired.year

    @property
    def item_id(self) -> str:
        """The product id without its processing date (as stactools-landsat's ``item_id``)."""
        parts = self.product_id.split("_")
        return "_".join(parts[:4] + parts[-2:])

    @property
    def collection_id(self) -> str:
        """``landsat-c2-l1`` or ``landsat-c2-l2`` (stactools-landsat's collection ids)."""
        return f"landsat-c2-l{self.processing_level[1]}"


def parse_product_id(product_id: str, *, bundle: str = "") -> SceneId:
    """The scene a product id names; a :class:`BundleError` if it is not a Collection 2 id."""
    match = _PRODUCT_ID.match(product_id)
    if match is None:
        raise BundleError(bundle or product_id, f"{product_id!r} is not a Landsat Collection 2 product id")
    try:
        acquired = dt.datetime.strptime(match["acquired"], "%Y%m%d").date()
        processed = dt.datetime.strptime(match["processed"], "%Y%m%d").date()
    except ValueError as error:
        raise BundleError(bundle or product_id, f"{product_id!r} has an impossible date ({error})") from error
    return SceneId(
        product_id=product_id,
        sensor_letter=match["sensor"],
        satellite=int(match["satellite"]),
        processing_level=match["processing"],
        path=int(match["path"]),
        row=int(match["row"]),
        acquired=acquired,
        processed=processed,
        collection_category=match["category"],
    )


@dataclass(frozen=True)
class Member:
    """One file of a bundle. ``suffix`` is what follows ``{product_id}_`` without the
    extension for rasters (``SR_B4``, ``QA_PIXEL``, ``B6_VCID_1``), the whole tail for text
    members (``MTL.txt``) and the base name for anything else."""

    name: str  # path inside the tar
    size: int
    kind: MemberKind
    suffix: str
    offset: int = -1  # where the member's data starts in an uncompressed tar; -1 = unknown / compressed

    @property
    def filename(self) -> str:
        return posixpath.basename(self.name)


def classify_member(name: str, size: int, product_id: str, offset: int = -1) -> Member:
    """Sort one tar member into raster / MTL.txt / MTL.xml / MTL.json / ANG.txt / other."""
    base = posixpath.basename(name)
    prefix = f"{product_id}_"
    if not base.startswith(prefix):
        return Member(name=name, size=size, kind="other", suffix=base, offset=offset)
    tail = base[len(prefix) :]
    if tail in TEXT_KINDS:
        return Member(name=name, size=size, kind=TEXT_KINDS[tail], suffix=tail, offset=offset)
    stem, dot, extension = tail.rpartition(".")
    if dot and extension.lower() in ("tif", "tiff") and stem:
        return Member(name=name, size=size, kind="raster", suffix=stem, offset=offset)
    return Member(name=name, size=size, kind="other", suffix=tail, offset=offset)


@dataclass(frozen=True)
class Bundle:
    """A listed bundle: where it is, its scene, its members and its text members' bytes."""

    href: str
    scene: SceneId
    members: tuple[Member, ...]
    texts: Mapping[str, bytes] = field(default_factory=dict)  # text member's name -> bytes
    compressed: bool = False  # gzip / bzip2 / xz: members can only be streamed, in tar order
    file_size: int = 0  # bytes of the bundle file itself (compressed size)

    @property
    def rasters(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.kind == "raster")

    def raster(self, suffix: str) -> Member | None:
        return next((m for m in self.members if m.kind == "raster" and m.suffix == suffix), None)

    def text_member(self, kind: MemberKind) -> Member | None:
        return next((m for m in self.members if m.kind == kind), None)

    def has_file(self, filename: str) -> bool:
        return any(m.filename == filename for m in self.members)

    def gdal_path(self, member: Member) -> str:
        """The member as GDAL opens it in place: ``/vsitar/<bundle>/<member>``."""
        return f"/vsitar/{vsi_path(self.href)}/{member.name}"

    def read_path(self, member: Member) -> str:
        """The cheapest GDAL path to the member: its byte range of an uncompressed tar
        (``/vsisubfile/<offset>_<size>,<bundle>``: nothing to scan when opened), else
        :meth:`gdal_path`."""
        if not self.compressed and member.offset >= 0:
            return f"/vsisubfile/{member.offset}_{member.size},{vsi_path(self.href)}"
        return self.gdal_path(member)

    def without_texts(self) -> Bundle:
        """The same bundle without the text members' bytes (what a Dask task needs to read rasters)."""
        return replace(self, texts={})

    @property
    def size(self) -> int:
        """Bytes of all members (what the bundle holds, not its compressed size)."""
        return sum(m.size for m in self.members)


def vsi_path(href: str) -> str:
    """A local path or URL as GDAL's virtual file system names it (``/vsis3/``, ``/vsicurl/``)."""
    parsed = urlparse(href)
    if parsed.scheme in ("", "file"):
        return os.path.abspath(parsed.path if parsed.scheme == "file" else href)
    if parsed.scheme == "s3":
        return f"/vsis3/{parsed.netloc}{parsed.path}"
    if parsed.scheme in ("az", "abfs"):
        return f"/vsiaz/{parsed.netloc}{parsed.path}"
    if parsed.scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    raise BundleError(href, f"unsupported location scheme {parsed.scheme!r}")


def bundle_stem(href: str) -> str:
    """The bundle's file name without ``.tar`` / ``.tar.gz`` / ``.tgz``."""
    base = posixpath.basename(urlparse(href).path) if urlparse(href).scheme else os.path.basename(href)
    for suffix in BUNDLE_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def is_bundle_name(name: str) -> bool:
    return name.endswith(BUNDLE_SUFFIXES)


def is_compressed_name(href: str) -> bool:
    return (
        urlparse(href).path.endswith((".tar.gz", ".tgz"))
        if "://" in href
        else href.endswith((".tar.gz", ".tgz"))
    )


@contextmanager
def _open_binary(
    href: str, access: SourceAccess | None = None, *, sequential: bool = False
) -> Iterator[IO[bytes]]:
    """The bundle as a seekable binary file: local files directly, URLs through fsspec.

    ``sequential``: the whole file will be read in order (a compressed stream), so remote
    reads use large blocks; otherwise (tar headers of an uncompressed bundle, one per
    member, far apart) small ones, so listing a 1 GB bundle reads kilobytes, not the file."""
    parsed = urlparse(href)
    try:
        if parsed.scheme in ("", "file"):
            with open(parsed.path if parsed.scheme == "file" else href, "rb") as local:
                yield local
        else:
            fs = (access or SourceAccess()).filesystem(parsed.scheme)
            block_size = 8 * 1024 * 1024 if sequential else 64 * 1024
            path = f"{parsed.netloc}{parsed.path}"
            with fs.open(path, "rb", block_size=block_size, cache_type="readahead") as remote:
                yield remote
    except FileNotFoundError as error:
        raise BundleError(href, "not found") from error


def _is_compressed(head: bytes) -> bool:
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _open_tar(raw: IO[bytes], href: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=raw, mode="r:*")
    except _READ_ERRORS as error:
        raise BundleError(href, f"not a readable tar archive ({error})") from error


@dataclass(frozen=True)
class _Listing:
    entries: list[tuple[str, int, int]]  # name, size, data offset (-1 when compressed)
    texts: dict[str, bytes]
    compressed: bool
    file_size: int


def _list_tar(href: str, access: SourceAccess | None = None) -> _Listing:
    """Every regular member (name, size, offset) and the bytes of the text members, in one pass.

    Raises :class:`BundleError` naming the member whose data is cut when the file ends early.
    """
    entries: list[tuple[str, int, int]] = []
    texts: dict[str, bytes] = {}
    with _open_binary(href, access, sequential=is_compressed_name(href)) as raw:
        total = raw.seek(0, os.SEEK_END)
        raw.seek(0)
        compressed = _is_compressed(raw.read(6))
        raw.seek(0)
        with _open_tar(raw, href) as archive:
            last: tarfile.TarInfo | None = None
            try:
                for info in archive:
                    if not info.isfile():
                        continue
                    last = info
                    if not compressed and info.offset_data + info.size > total:
                        raise BundleError(
                            href,
                            f"truncated: its data ends at byte {info.offset_data + info.size:,} but the file has {total:,} bytes",
                            member=info.name,
                        )
                    entries.append((info.name, info.size, -1 if compressed else info.offset_data))
                    tail = posixpath.basename(info.name).rpartition("_")[2]
                    if tail in TEXT_KINDS:
                        texts[info.name] = _read_whole(archive, info)
                if compressed and last is not None:
                    _check_last_byte(archive, last)
            except BundleError:
                raise
            except _READ_ERRORS as error:
                name = last.name if last is not None else ""
                reason = f"truncated or corrupt archive, read stopped in or after this member ({error})"
                raise BundleError(href, reason, member=name) from error
    if not entries:
        raise BundleError(href, "the archive holds no file")
    return _Listing(entries, texts, compressed, total)


def _read_whole(archive: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(info)
    if handle is None:
        return b""
    data = handle.read()
    if len(data) != info.size:
        raise EOFError(f"{len(data)} of {info.size} bytes")
    return data


def _check_last_byte(archive: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    """A compressed stream cut inside the last member is only seen by reading to its end."""
    if info.size == 0:
        return
    handle = archive.extractfile(info)
    if handle is None:
        return
    handle.seek(info.size - 1)
    if len(handle.read(1)) != 1:
        raise EOFError("the compressed stream ends inside this member")


def _product_id_of(href: str, names: list[str]) -> str:
    """The product id from the MTL member's name; else from the bundle's file name."""
    for name in names:
        match = _MTL_NAME.match(posixpath.basename(name))
        if match:
            return match["product_id"]
    stem = bundle_stem(href)
    if _PRODUCT_ID.match(stem):
        return stem
    raise BundleError(
        href, "no *_MTL.txt / *_MTL.xml / *_MTL.json member and the file name is not a product id"
    )


def thumbnail_band_suffixes(scene: SceneId) -> tuple[str, str, str]:
    """The red, green and blue bands of the thumbnails: Level-2 reflectance or Level-1 DN."""
    if scene.sensor == "oli-tirs":
        bands = ("B4", "B3", "B2")
    elif scene.sensor == "mss":  # no blue band: false colour, near-infrared / red / green
        bands = ("B3", "B2", "B1") if scene.satellite >= 4 else ("B6", "B5", "B4")
    else:
        bands = ("B3", "B2", "B1")
    if scene.level == "level-2":
        return (f"SR_{bands[0]}", f"SR_{bands[1]}", f"SR_{bands[2]}")
    return bands


def required_raster_suffixes(scene: SceneId) -> tuple[str, ...]:
    """Bands every bundle of this kind must hold, whatever its MTL lists."""
    return tuple(dict.fromkeys((*thumbnail_band_suffixes(scene), "QA_PIXEL")))


def mtl_listed_files(mtl_bytes: bytes, kind: MemberKind) -> dict[str, str]:
    """``PRODUCT_CONTENTS``' ``FILE_NAME_*`` entries of an MTL (XML or ODL text): key -> file."""
    listed: dict[str, str] = {}
    if kind == "mtl_xml":
        root = etree.fromstring(mtl_bytes)
        contents = root.find("PRODUCT_CONTENTS")
        for element in contents if contents is not None else []:
            if isinstance(element.tag, str) and element.tag.startswith("FILE_NAME_") and element.text:
                listed[element.tag] = element.text.strip()
        return listed
    in_contents = False
    for raw_line in mtl_bytes.decode("utf-8", "replace").splitlines():
        line = raw_line.strip()
        if line == "GROUP = PRODUCT_CONTENTS":
            in_contents = True
        elif line == "END_GROUP = PRODUCT_CONTENTS":
            break
        elif in_contents and line.startswith("FILE_NAME_"):
            key, _, value = line.partition(" = ")
            listed[key.strip()] = value.strip().strip('"')
    return listed


def preferred_mtl(bundle: Bundle) -> Member | None:
    """The MTL the item is built from: ``MTL.xml``, else ``MTL.txt``."""
    return bundle.text_member("mtl_xml") or bundle.text_member("mtl_txt")


def text_bytes(bundle: Bundle, member: Member) -> bytes:
    return bundle.texts[member.name]


def check_complete(bundle: Bundle) -> None:
    """Raise :class:`BundleError` for the first thing that keeps the scene from being whole."""
    mtl = preferred_mtl(bundle)
    if mtl is None:
        raise BundleError(
            bundle.href, f"no {bundle.scene.product_id}_MTL.xml nor _MTL.txt: the item is built from one"
        )
    try:
        listed = mtl_listed_files(text_bytes(bundle, mtl), mtl.kind)
    except (etree.XMLSyntaxError, ValueError) as error:
        raise BundleError(bundle.href, f"unreadable MTL ({error})", member=mtl.name) from error
    for key, filename in listed.items():
        if filename.upper().endswith(".TIF") and not bundle.has_file(filename):
            raise BundleError(
                bundle.href,
                f"missing: the MTL lists it ({key}) but the bundle has no such member",
                member=filename,
            )
    for suffix in required_raster_suffixes(bundle.scene):
        if bundle.raster(suffix) is None:
            filename = f"{bundle.scene.product_id}_{suffix}.TIF"
            raise BundleError(
                bundle.href, "missing: a band the scene needs (thumbnails, QA)", member=filename
            )
    if bundle.scene.sensor == "oli-tirs" and bundle.text_member("ang") is None:
        filename = f"{bundle.scene.product_id}_ANG.txt"
        raise BundleError(
            bundle.href, "missing: stactools-landsat takes the OLI/TIRS footprint from it", member=filename
        )


def list_bundle(href: str, access: SourceAccess | None = None) -> Bundle:
    """List and classify a bundle's members (no completeness check: see :func:`open_bundle`)."""
    listing = _list_tar(href, access)
    product_id = _product_id_of(href, [name for name, _, _ in listing.entries])
    scene = parse_product_id(product_id, bundle=href)
    members = tuple(classify_member(name, size, product_id, offset) for name, size, offset in listing.entries)
    texts = {
        m.name: listing.texts[m.name]
        for m in members
        if m.kind in TEXT_KINDS.values() and m.name in listing.texts
    }
    return Bundle(
        href=href,
        scene=scene,
        members=members,
        texts=texts,
        compressed=listing.compressed,
        file_size=listing.file_size,
    )


def open_bundle(href: str, access: SourceAccess | None = None) -> Bundle:
    """List a bundle and check it is whole; :class:`BundleError` names what is wrong."""
    bundle = list_bundle(href, access)
    check_complete(bundle)
    return bundle


def iter_members(bundle: Bundle, access: SourceAccess | None = None) -> Iterator[tuple[Member, IO[bytes]]]:
    """Every member of the bundle with a file object over its data, in tar order, from one
    sequential read of the bundle (the way to read a compressed bundle: no member can be
    reached without decompressing everything before it). Read each member's data before
    taking the next. Errors name the bundle and the member being read."""
    by_name = {m.name: m for m in bundle.members}
    current = ""
    try:
        with (
            _open_binary(bundle.href, access, sequential=True) as raw,
            tarfile.open(fileobj=raw, mode="r|*") as archive,
        ):
            for info in archive:
                member = by_name.get(info.name)
                if member is None or not info.isfile():
                    continue
                current = info.name
                handle = archive.extractfile(info)
                if handle is not None:
                    yield member, handle
    except _READ_ERRORS as error:
        raise BundleError(bundle.href, f"truncated or corrupt archive ({error})", member=current) from error
