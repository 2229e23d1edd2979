"""Publishing one scene: the work between the thin Luigi task and the per-scene recipe.

Order, so that a run killed at any instant never leaves a scene that looks published but
is not whole (the item JSON is the scene's completion marker, and the catalogue, pages and
parquet only list scenes whose item JSON exists):

1. list the bundle and check it is whole (:func:`~pipeline.ingest.bundle.open_bundle`): a
   truncated tar or a missing band is refused here, before anything is written;
2. an item JSON already there (a scene being repaired or overwritten) is deleted first;
3. the conversions go to the Dask cluster: one task per raster member of an uncompressed
   tar (GDAL reads the member's byte range in place), one task for the thumbnails; a
   compressed bundle cannot be read at an offset, so one task streams it once, in tar
   order, converting the members already read on a few threads while it reads on. Each
   COG is built in a temporary directory and moved or uploaded whole
   (:meth:`targets.store.Store.put_file`: a rename, one PUT or a multipart upload, never
   half-visible);
4. meanwhile, here: the item (stactools-landsat, :mod:`.items`) and the copies of the text
   members (``MTL.*``, ``ANG.txt``);
5. once every file is in place: the scene's ``index.html``, then the item JSON, last.

A bundle found bad on the way (:class:`~pipeline.ingest.bundle.BundleError`: an unreadable
member, an item stactools cannot build) publishes nothing: the scene's files written so
far are removed again, and the outcome names the bundle, the member and the reason. Any
other error (the destination unreachable, a bug) is raised: it is not the bundle's fault.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import rasterio
from rasterio.io import MemoryFile

from pipeline.ingest import catalogue, cog, layout, pages, thumbs
from pipeline.ingest.access import SourceAccess
from pipeline.ingest.bundle import (
    Bundle,
    BundleError,
    Member,
    SceneId,
    iter_members,
    open_bundle,
    parse_product_id,
    thumbnail_band_suffixes,
)
from pipeline.scratch import scratch_dir
from targets.store import Store

log = logging.getLogger("pipeline.ingest")

TEXT_KINDS = ("mtl_txt", "mtl_xml", "mtl_json", "ang")


@dataclass(frozen=True)
class FileResult:
    """One file written: its key under the destination, its bytes, the member bytes read."""

    rel: str
    size: int
    bytes_in: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class TaskOutcome:
    """What one Dask task wrote, or why the bundle is bad (``reason`` non-empty)."""

    files: tuple[FileResult, ...] = ()
    reason: str = ""
    member: str = ""


@dataclass
class SceneOutcome:
    """What publishing one bundle did."""

    bundle: str
    stem: str
    status: str  # "published" or "failed"
    scene: SceneId | None = None
    reason: str = ""
    member: str = ""
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    bundle_bytes: int = 0  # size of the bundle file (compressed size)

    @property
    def bytes_in(self) -> int:
        return sum(f.bytes_in for f in self.files)

    @property
    def bytes_out(self) -> int:
        return sum(f.size for f in self.files)


def _bad(error: BundleError) -> TaskOutcome:
    return TaskOutcome(reason=error.reason, member=error.member)


# ---------------------------------------------------------------- Dask tasks

_worker_stores: dict[tuple[str, object], Store] = {}


def worker_store(store: Store) -> Store:
    """The process's own Store for ``store``'s root: a Store arrives pickled with every Dask
    task, without its filesystem, and making an S3 client costs ~0.2 s of CPU (botocore loads
    its service model for each new session): one per worker process instead of one per file."""
    key = (store.url, store.s3)
    if key not in _worker_stores:
        _worker_stores[key] = store
    return _worker_stores[key]


def _temp_dir(workdir: str) -> str:
    return scratch_dir("ingest-", workdir or None)  # workdir made if missing


def _cog_to_store(
    source_path: str, member: Member, store: Store, rel: str, workdir: str, num_threads: int
) -> FileResult:
    """Convert the raster at ``source_path`` in a temporary directory, then put it whole."""
    started = time.perf_counter()
    tmp = _temp_dir(workdir)
    try:
        local = os.path.join(tmp, posixpath.basename(rel))
        cog.write_cog(source_path, local, member.suffix, num_threads=num_threads)
        size = os.path.getsize(local)
        store.put_file(rel, local)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FileResult(rel, size, member.size, time.perf_counter() - started)


def convert_member(
    bundle: Bundle, member: Member, store: Store, rel: str, gdal_options: dict[str, str], workdir: str
) -> TaskOutcome:
    """Dask task: one raster member of an uncompressed bundle -> its COG at ``rel``."""
    try:
        with rasterio.Env(**gdal_options):
            return TaskOutcome(
                (_cog_to_store(bundle.read_path(member), member, worker_store(store), rel, workdir, 1),)
            )
    except cog.RASTER_ERRORS as error:
        return TaskOutcome(reason=f"unreadable raster ({error})", member=member.name)


def _put_thumbnails(
    rendered: thumbs.Thumbnails, scene: SceneId, store: Store, started: float
) -> tuple[FileResult, ...]:
    small, large = layout.thumb_small(scene), layout.thumb_large(scene)
    store.write_bytes(small, rendered.small_jpeg)
    store.write_bytes(large, rendered.large_jpeg)
    seconds = time.perf_counter() - started
    return (
        FileResult(small, len(rendered.small_jpeg), 0, seconds),
        FileResult(large, len(rendered.large_jpeg), 0, 0.0),
    )


def make_thumbnails(bundle: Bundle, store: Store, gdal_options: dict[str, str]) -> TaskOutcome:
    """Dask task: the two thumbnails of an uncompressed bundle, read in place."""
    started = time.perf_counter()
    try:
        members = thumbs.thumbnail_members(bundle)
        paths = (bundle.read_path(members[0]), bundle.read_path(members[1]), bundle.read_path(members[2]))
        with rasterio.Env(**gdal_options):
            rendered = thumbs.bundle_thumbnails(bundle, members, paths)
    except BundleError as error:
        return _bad(error)
    return TaskOutcome(_put_thumbnails(rendered, bundle.scene, worker_store(store), started))


def _convert_in_memory(
    memory: MemoryFile, member: Member, store: Store, rel: str, gdal_options: dict[str, str], workdir: str
) -> FileResult:
    """One streamed member, held in a GDAL memory file, to its COG (GDAL options are per thread)."""
    with rasterio.Env(**gdal_options):
        return _cog_to_store(memory.name, member, store, rel, workdir, 1)


def convert_streamed(
    bundle: Bundle,
    store: Store,
    access: SourceAccess,
    gdal_options: dict[str, str],
    workdir: str,
    num_threads: int,
) -> TaskOutcome:
    """Dask task: every raster member of a compressed bundle, from one sequential read of it,
    then the thumbnails. The read (decompression) goes on while ``num_threads`` threads convert
    the members already read (GDAL works without the GIL); at most two members per thread are
    held in memory, and the thumbnail bands until the end."""
    store = worker_store(store)
    files: list[FileResult] = []
    kept: dict[str, MemoryFile] = {}
    wanted = set(thumbnail_band_suffixes(bundle.scene))
    pending: dict[Future[FileResult], tuple[Member, MemoryFile]] = {}
    threads = max(1, num_threads)

    def settle(done: set[Future[FileResult]]) -> None:
        for future in done:
            member, memory = pending.pop(future)
            if member.suffix not in wanted:
                memory.close()
            try:
                files.append(future.result())
            except cog.RASTER_ERRORS as error:
                raise BundleError(bundle.href, f"unreadable raster ({error})", member=member.name) from error

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            try:
                for member, handle in iter_members(bundle, access):
                    if member.kind != "raster":
                        continue
                    memory = MemoryFile(handle.read())
                    if member.suffix in wanted:
                        kept[member.suffix] = memory
                    rel = layout.cog(bundle.scene, member.suffix)
                    pending[
                        pool.submit(_convert_in_memory, memory, member, store, rel, gdal_options, workdir)
                    ] = (member, memory)
                    if len(pending) >= 2 * threads:
                        settle(wait(pending, return_when=FIRST_COMPLETED).done)
                settle(wait(pending).done)
            finally:
                wait(pending)  # no thread may still write when the scene's files are removed
                for _, memory in pending.values():
                    memory.close()
        started = time.perf_counter()
        members = thumbs.thumbnail_members(bundle)
        paths = (kept[members[0].suffix].name, kept[members[1].suffix].name, kept[members[2].suffix].name)
        with rasterio.Env(**gdal_options):
            rendered = thumbs.bundle_thumbnails(bundle, members, paths)
        files.extend(_put_thumbnails(rendered, bundle.scene, store, started))
    except BundleError as error:
        return _bad(error)
    finally:
        for memory in kept.values():
            memory.close()
    return TaskOutcome(tuple(files))


# ---------------------------------------------------------------- one scene


ProgressCallback = Callable[[int, int], None]


def _call(fn: Callable[..., TaskOutcome], *args: Any) -> TaskOutcome:
    return fn(*args)


def conversion_calls(
    bundle: Bundle, store: Store, access: SourceAccess, workdir: str, threads_per_task: int
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The scene's Dask tasks, as ``(function, *arguments)`` calls and their labels: a COG per
    raster member and the thumbnails (uncompressed), or one streaming task (compressed)."""
    light = bundle.without_texts()
    gdal_options = access.gdal_options()
    stem = bundle.scene.product_id
    if bundle.compressed:
        return [(convert_streamed, light, store, access, gdal_options, workdir, threads_per_task)], [
            f"{stem}-stream"
        ]
    calls: list[tuple[Any, ...]] = []
    labels = []
    # largest first: the pan band does not finish last
    for member in sorted(bundle.rasters, key=lambda m: -m.size):
        target = layout.cog(bundle.scene, member.suffix)
        calls.append((convert_member, light, member, store, target, gdal_options, workdir))
        labels.append(f"{stem}-{member.suffix}")
    calls.append((make_thumbnails, light, store, gdal_options))
    labels.append(f"{stem}-thumbs")
    return calls, labels


def write_text_copies(bundle: Bundle, store: Store) -> list[FileResult]:
    """The metadata members (``MTL.txt/.xml/.json``, ``ANG.txt``), copied as they are."""
    written = []
    for member in bundle.members:
        if member.kind in TEXT_KINDS and member.name in bundle.texts:
            rel = layout.metadata_copy(bundle.scene, member.suffix)
            data = bundle.texts[member.name]
            store.write_bytes(rel, data)
            written.append(FileResult(rel, len(data)))
    return written


def remove_scene_outputs(store: Store, scene: SceneId) -> None:
    """Unpublish a scene that failed half way: its item first, then every file of it."""
    store.delete(layout.item_json(scene))
    store.delete_tree(layout.scene_dir(scene))


def publish_scene(
    bundle_href: str, store: Store, access: SourceAccess, *, workdir: str = "", threads_per_task: int = 2,
    progress: ProgressCallback | None = None,
) -> SceneOutcome:  # fmt: skip
    """Convert and publish one bundle (see the module docstring for the order)."""
    from pipeline.cluster import run_each
    from pipeline.ingest.bundle import bundle_stem

    started = time.perf_counter()
    stem = bundle_stem(bundle_href)
    try:
        bundle = open_bundle(bundle_href, access)
    except BundleError as error:
        named = scene_from_name(stem)
        return SceneOutcome(bundle_href, stem, "failed", named, reason=error.reason, member=error.member)
    scene = bundle.scene
    here = layout.scene_dir(scene)
    if store.exists(layout.item_json(scene)):
        store.delete(layout.item_json(scene))  # unpublished while its files are replaced
    catalogue.sweep_temporaries(store, here)
    calls, labels = conversion_calls(bundle, store, access, workdir, threads_per_task)
    files: list[FileResult] = []
    failure: BundleError | None = None
    item: dict[str, Any] = {}
    # Submitted first, so the item is built while the bands convert; leaving the block by an
    # exception cancels what has not finished.
    with run_each(_call, calls, name="ingest", labels=labels) as running:
        try:
            item = catalogue.relative_item(build_item(bundle, store.url), scene)
        except BundleError as error:
            failure = error
        files.extend(write_text_copies(bundle, store))
        # Every task runs to its end even after one found the bundle bad: a task still running
        # could otherwise put a file after the scene's files were removed.
        for done, (_, future) in enumerate(running, start=1):
            outcome: TaskOutcome = future.result()
            if progress is not None:
                progress(done, len(calls))
            files.extend(outcome.files)
            if outcome.reason and failure is None:
                failure = BundleError(bundle_href, outcome.reason, member=outcome.member)
    if failure is None:
        failure = _missing_asset_files(bundle_href, item, files)
    if failure is not None:
        remove_scene_outputs(store, scene)
        return SceneOutcome(
            bundle_href, stem, "failed", scene, failure.reason, failure.member,
            seconds=time.perf_counter() - started, bundle_bytes=bundle.file_size,
        )  # fmt: skip
    pages.write_scene_page(store, scene, item, bundle, files)
    store.write_text(layout.item_json(scene), catalogue.dump(item))  # last: the scene is published
    return SceneOutcome(
        bundle_href,
        stem,
        "published",
        scene,
        files=files,
        seconds=time.perf_counter() - started,
        bundle_bytes=bundle.file_size,
    )


def scene_from_name(stem: str) -> SceneId | None:
    """The scene a bundle's file name states (USGS names bundles by product id), else None."""
    try:
        return parse_product_id(stem)
    except BundleError:
        return None


def build_item(bundle: Bundle, dest: str) -> dict[str, Any]:
    """The scene's item as stactools-landsat builds it (:mod:`.items`), as a dict.

    stactools says, as warnings, what this workflow already knows and documents: that an ANG
    footprint is wound clockwise (the antimeridian package reverses it) and that TM/ETM+
    footprints are the MTL's bounding box (no USGS geometry lookup offline)."""
    from pipeline.ingest import items as item_recipe

    stactools_log = logging.getLogger("stactools.landsat.stac")
    level = stactools_log.level
    stactools_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The exterior ring of this shape is wound clockwise")
            doc: dict[str, Any] = item_recipe.create_scene_item(bundle, dest).to_dict(transform_hrefs=False)
    finally:
        stactools_log.setLevel(level)
    return doc


def _missing_asset_files(
    bundle_href: str, item: dict[str, Any], files: list[FileResult]
) -> BundleError | None:
    """An asset whose file this run did not write (never expected: a guard for the marker)."""
    written = {posixpath.basename(f.rel) for f in files}
    for key, asset in item["assets"].items():
        name = posixpath.basename(asset["href"])
        if name not in written:
            return BundleError(
                bundle_href, f"asset {key!r} has no file: nothing was written for it", member=name
            )
    return None
