"""Landsat scene bundles -> COGs, a static STAC catalogue and browse pages, as Luigi tasks.
Tasks are thin: they name targets and requirements and call :mod:`pipeline.ingest.engine`
(one scene), :mod:`pipeline.ingest.catalogue` and :mod:`pipeline.ingest.pages`.

::

    IngestScenes (--source, --dest)       fails at the end when a bundle was bad
    ├── IngestScene per bundle            COGs + thumbnails on Dask, copies, index.html,
    │                                     then the item JSON (the completion marker)
    └── after every scene (yielded by IngestScenes once its scenes are done):
        ├── IngestCatalog                 catalog.json
        │   └── IngestCollection per collection   {collection_id}/collection.json
        ├── IngestParquet                 items.parquet (after the collections it carries)
        └── IngestTopIndex                index.html
            └── IngestPathRow per path/row        pathrow/{PPP}/{RRR}/thumbindex.html

    IngestDryRun (--source, --dest)       scenes, bytes in, objects out; writes nothing

The catalogue tasks cover every scene published under ``--dest`` (this run's and earlier
runs'), read from one listing; each is current when the items it lists are the ones it was
built from (:func:`pipeline.ingest.catalogue.is_current`), so a rerun writes nothing and a
run that published more scenes rebuilds exactly what lists them. They are yielded only
after the scenes, because whether they are current can only be known then.

A bad bundle does not fail its task (the catalogue must still be built from the rest): the
task records the bundle, member and reason (closing summary, ``_state/ingest/failed/``) and
counts as done for this run; ``IngestScenes`` then fails, so the exit status is non-zero,
and the next run tries the bundle again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
from collections.abc import Iterator
from typing import Any

import luigi

from pipeline import cluster  # noqa: F401  (registers [dask] for luigi.cfg and --dask-* flags)
from pipeline.config import output  # [output]: the S3 endpoint of s3:// destinations (--output-*)
from pipeline.failures import Failure, FailureRecord, FailuresRecorded, write_record
from pipeline.ingest import catalogue, engine, layout, pages, summary
from pipeline.ingest.access import SourceAccess
from pipeline.ingest.bundle import BundleError, SceneId, bundle_stem, list_bundle
from pipeline.ingest.sources import SourceBundle, list_source
from pipeline.progress import Progress
from pipeline.scratch import temporary_dir
from pipeline.task_base import DryRunTask, UnitTask
from targets.store import Store
from targets.target import StoreTarget

log = logging.getLogger("pipeline.ingest")


class ingest(luigi.Config):
    """[ingest]: where source bundles on s3:// are read from, and where conversions work."""

    source_endpoint_url = luigi.Parameter(
        default="", description="S3 endpoint of s3:// sources; empty = AWS (or AWS_ENDPOINT_URL_S3)"
    )
    source_region = luigi.Parameter(default="", description="region of the source bucket")
    source_profile = luigi.Parameter(
        default="", description="AWS profile for source reads; empty = environment/default chain"
    )
    source_requester_pays = luigi.BoolParameter(
        default=False,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="send x-amz-request-payer: requester on source reads",
    )
    workdir = luigi.Parameter(
        default="",
        description="local directory for COGs being built; empty = the system's temporary directory",
    )
    threads_per_stream = luigi.IntParameter(
        default=2, description="DEFLATE threads of a compressed bundle's conversion (one Dask task)"
    )


def access_for(cfg: ingest | None = None) -> SourceAccess:
    c = cfg or ingest()
    return SourceAccess(c.source_endpoint_url, c.source_region, c.source_profile, c.source_requester_pays)


def store_for(dest: str) -> Store:
    return Store(dest, output().s3_options())


def where(dest: str) -> str:
    """The destination as the user can open it: absolute when local."""
    store = store_for(dest)
    return store.url if not store.is_local else store.root


_sources: dict[str, list[SourceBundle]] = {}


def source_bundles(source: str) -> list[SourceBundle]:
    """The source's bundles, listed once per process (InputError before anything runs)."""
    if source not in _sources:
        _sources[source] = list_source(source, access_for())
    return _sources[source]


_scenes: dict[str, SceneId | None] = {}


def scene_of_bundle(href: str) -> SceneId | None:
    """The scene a bundle holds: from its name (USGS names bundles by product id), else from
    its MTL member's name (one listing); None when neither says."""
    if href not in _scenes:
        scene = SourceBundle(href, 0).scene_from_name()
        if scene is None:
            try:
                scene = list_bundle(href, access_for()).scene
            except BundleError:
                scene = None
        _scenes[href] = scene
    return _scenes[href]


class IngestScene(UnitTask):
    """One bundle: its COGs, thumbnails and metadata copies, its ``index.html``, then its item
    JSON (the completion marker). Complete when the item JSON and every file it names are
    listed (one listing of the destination serves every scene)."""

    bundle = luigi.Parameter(description="the bundle: a local path or s3:// URL (.tar, .tar.gz, .tgz)")
    dest = luigi.Parameter(description="the destination: a local directory or s3://bucket/prefix")
    overwrite = luigi.BoolParameter(
        default=False, description="convert and publish again even when already published"
    )

    @property
    def store(self) -> Store:
        return store_for(self.dest)

    @property
    def stem(self) -> str:
        return bundle_stem(self.bundle)

    def output(self) -> StoreTarget:
        scene = scene_of_bundle(self.bundle)
        rel = layout.item_json(scene) if scene is not None else layout.failure_record(self.stem)
        return StoreTarget(self.store, rel)

    def is_complete(self) -> bool:
        return (not self.overwrite and self.published()) or summary.attempted(self.stem) is not None

    def published(self) -> bool:
        """The item JSON and every file its assets name, and the scene page, are listed."""
        scene = scene_of_bundle(self.bundle)
        if scene is None:
            return False
        store = self.store
        names = catalogue.tree(store).names_in(layout.scene_dir(scene))
        key = layout.item_json(scene)
        item_name = posixpath.basename(key)
        if item_name not in names:
            return False
        item = catalogue.read_items(store, {key: names[item_name]})[key]
        wanted = {posixpath.basename(a["href"]) for a in item.get("assets", {}).values()}
        wanted.add(posixpath.basename(layout.scene_index(scene)))
        return wanted <= names.keys()

    def run(self) -> None:
        cfg = ingest()
        store = self.store
        self.show_status(f"converting {self.stem}")
        tracker = Progress(0, "Dask tasks", label=self.stem, report=self.progress, logger=log)
        outcome = engine.publish_scene(
            self.bundle, store, access_for(cfg), workdir=cfg.workdir, threads_per_task=cfg.threads_per_stream,
            progress=lambda done, total: tracker.update(done, total),
        )  # fmt: skip
        record = failure_record(outcome)
        sweep_for(store, layout.failure_record(outcome.stem))
        _write_if_changed(store, outcome.stem, record)
        summary.record_scene(outcome, outcome.bundle_bytes)
        if outcome.status == "published":
            tracker.finish(f"published {outcome.bytes_out / 1e6:,.1f} MB")
        else:
            log.warning("bundle %s published nothing: %s", self.bundle, record.failed[0].error)
        self.mark_complete()


def sweep_for(store: Store, *rels: str) -> None:
    """Remove what a killed writer of these files left (their temporaries), before writing them."""
    for rel in rels:
        catalogue.sweep_temporaries(store, posixpath.dirname(rel), posixpath.basename(rel))


def failure_record(outcome: engine.SceneOutcome) -> FailureRecord:
    """What ``_state/ingest/failed/{stem}.json`` holds: empty (no file) once published."""
    if outcome.status == "published":
        return FailureRecord()
    error = f"{outcome.member}: {outcome.reason}" if outcome.member else outcome.reason
    targets = (layout.item_json(outcome.scene),) if outcome.scene is not None else ()
    failure = Failure(key=outcome.stem, error=error, what=f"bundle {outcome.bundle}", targets=targets)
    context = {"bundle": outcome.bundle, "member": outcome.member, "reason": outcome.reason}
    return FailureRecord(failed=[failure], context=context)


def _write_if_changed(store: Store, stem: str, record: FailureRecord) -> None:
    """The failure record, written only when it says something new (a rerun over the same bad
    bundle writes nothing), deleted when there is nothing wrong."""
    rel = layout.failure_record(stem)
    present = stem in catalogue.failed_stems(store)
    if not record:
        if present:
            write_record(store, rel, record)
        return
    if present:
        try:
            old = json.loads(store.read_text(rel))
        except (FileNotFoundError, ValueError):
            old = None
        if old == record.to_json():
            return
    write_record(store, rel, record)


# ---------------------------------------------------------------- the catalogue and pages


class _PublishTask(UnitTask):
    """A catalogue file or page built from published items; see the module docstring."""

    dest = IngestScene.dest
    overwrite = IngestScene.overwrite

    name = ""  # the built record's name: _state/ingest/built/{name}.json

    @property
    def store(self) -> Store:
        return store_for(self.dest)

    def rel(self) -> str:
        raise NotImplementedError

    def covered(self, tree: catalogue.Tree) -> dict[str, int]:
        """Item key -> size of the items this file lists."""
        return {k: tree.files[k] for k in tree.published()}

    def built_from(self, tree: catalogue.Tree) -> str:
        """The digest of what this file is built from (the items it lists)."""
        return catalogue.digest(self.covered(tree).items())

    def output(self) -> StoreTarget:
        return StoreTarget(self.store, self.rel())

    def current_tree(self) -> catalogue.Tree:
        return catalogue.tree(self.store, generation=summary.published_in_run())

    def forced(self) -> bool:
        """--overwrite: rebuilt once in this run whatever it was built from."""
        return bool(self.overwrite) and not summary.built_in_this_run(self.name)

    def expects_output(self, tree: catalogue.Tree) -> bool:
        return True

    def is_current(self, tree: catalogue.Tree) -> bool:
        value = self.built_from(tree)
        return catalogue.is_current(
            self.store, self.name, self.rel(), value, expect_output=self.expects_output(tree)
        )

    def is_complete(self) -> bool:
        # Luigi looks no further than a complete task: what it requires must be current too
        done = not self.forced() and self.is_current(self.current_tree())
        return done and all(task.complete() for task in luigi.task.flatten(self.requires()))

    def run(self) -> None:
        store = self.store
        tree = catalogue.tree(store, fresh=True, generation=summary.published_in_run())
        if not self.forced() and self.is_current(tree):
            self.mark_complete()  # it ran for what it requires only: this file is current
            return
        self.show_status(f"writing {self.rel()}")
        sweep_for(store, self.rel(), layout.built_record(self.name))
        count = self.build(store, tree)
        catalogue.record_built(store, self.name, self.built_from(tree), count)
        summary.record_built(self.name, count)
        self.mark_complete()

    def build(self, store: Store, tree: catalogue.Tree) -> int:
        """Write the file from ``tree``; returns how many items it lists."""
        raise NotImplementedError


class _ItemsPage(_PublishTask):
    """A file listing published items, read from their item JSONs; removed when it lists none."""

    def expects_output(self, tree: catalogue.Tree) -> bool:
        return bool(self.covered(tree))

    def build(self, store: Store, tree: catalogue.Tree) -> int:
        covered = self.covered(tree)
        if covered:
            self.write(store, catalogue.read_items(store, covered), tree)
        else:
            store.delete(self.rel())
        return len(covered)

    def write(self, store: Store, items: dict[str, dict[str, Any]], tree: catalogue.Tree) -> None:
        raise NotImplementedError


class IngestCollection(_ItemsPage):
    """``{collection_id}/collection.json``: its items, extents covering them."""

    collection_id = luigi.ChoiceParameter(choices=layout.COLLECTION_IDS)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"collection-{self.collection_id}"

    def rel(self) -> str:
        return layout.collection_json(self.collection_id)

    def covered(self, tree: catalogue.Tree) -> dict[str, int]:
        return {
            k: tree.files[k]
            for k, scene in tree.published().items()
            if scene.collection_id == self.collection_id
        }

    def write(self, store: Store, items: dict[str, dict[str, Any]], tree: catalogue.Tree) -> None:
        store.write_text(self.rel(), catalogue.dump(catalogue.build_collection(self.collection_id, items)))


def collections_of(tree: catalogue.Tree) -> list[str]:
    return sorted({scene.collection_id for scene in tree.published().values()})


def collection_tasks(task: _PublishTask) -> list[IngestCollection]:
    """The collection files of the items published so far, as ``task`` writes them (its
    destination and --overwrite)."""
    return [
        IngestCollection(dest=task.dest, overwrite=task.overwrite, collection_id=c)
        for c in collections_of(task.current_tree())
    ]


class IngestCatalog(_PublishTask):
    """``catalog.json``: the root, linking the collections that have items (rewritten only
    when that set changes; the collections list the items)."""

    name = "catalog"

    def requires(self) -> list[IngestCollection]:
        return collection_tasks(self)

    def rel(self) -> str:
        return layout.catalog_json()

    def built_from(self, tree: catalogue.Tree) -> str:
        return catalogue.digest((), *collections_of(tree))

    def build(self, store: Store, tree: catalogue.Tree) -> int:
        store.write_text(self.rel(), catalogue.dump(catalogue.build_catalog(collections_of(tree))))
        return len(tree.published())


class IngestParquet(_ItemsPage):
    """``items.parquet``: every published item (stac-geoparquet), hrefs relative to it."""

    name = "parquet"

    def requires(self) -> list[IngestCollection]:
        """The collections, which the parquet file carries as its collection metadata."""
        return collection_tasks(self)

    def rel(self) -> str:
        return layout.items_parquet()

    def write(self, store: Store, items: dict[str, dict[str, Any]], tree: catalogue.Tree) -> None:
        collections = {}
        for collection_id in collections_of(tree):
            with contextlib.suppress(FileNotFoundError):
                collections[collection_id] = json.loads(
                    store.read_text(layout.collection_json(collection_id))
                )
        with temporary_dir("ingest-parquet-", ingest().workdir or None) as tmp:  # workdir made if missing
            local = posixpath.join(tmp, "items.parquet")
            catalogue.write_parquet(items, local, collections)
            store.put_file(self.rel(), local)


def pathrows_of(tree: catalogue.Tree) -> list[tuple[int, int]]:
    return sorted({(scene.path, scene.row) for scene in tree.published().values()})


class IngestPathRow(_ItemsPage):
    """``pathrow/{PPP}/{RRR}/thumbindex.html``: the path/row's small thumbnails by date."""

    path = luigi.IntParameter()
    row = luigi.IntParameter()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"pathrow-{self.path:03d}-{self.row:03d}"

    def rel(self) -> str:
        return layout.pathrow_index(self.path, self.row)

    def covered(self, tree: catalogue.Tree) -> dict[str, int]:
        return {
            k: tree.files[k] for k, s in tree.published().items() if (s.path, s.row) == (self.path, self.row)
        }

    def write(self, store: Store, items: dict[str, dict[str, Any]], tree: catalogue.Tree) -> None:
        pages.write_pathrow_page(store, self.path, self.row, items)


class IngestTopIndex(_ItemsPage):
    """``index.html``: every path/row, from which every page is reachable."""

    name = "index"

    def requires(self) -> list[IngestPathRow]:
        tree = self.current_tree()
        return [
            IngestPathRow(dest=self.dest, overwrite=self.overwrite, path=p, row=r)
            for p, r in pathrows_of(tree)
        ]

    def rel(self) -> str:
        return layout.top_index()

    def write(self, store: Store, items: dict[str, dict[str, Any]], tree: catalogue.Tree) -> None:
        published = tree.published()
        by_pathrow: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
        counts: dict[str, int] = {}
        for key, item in items.items():
            scene = published[key]
            by_pathrow.setdefault((scene.path, scene.row), {})[key] = item
            counts[scene.collection_id] = counts.get(scene.collection_id, 0) + 1
        pages.write_top_page(store, by_pathrow, counts)


def publishing_tasks(dest: str, overwrite: bool) -> list[_PublishTask]:
    return [IngestCatalog(dest=dest, overwrite=overwrite), IngestParquet(dest=dest, overwrite=overwrite),
            IngestTopIndex(dest=dest, overwrite=overwrite)]  # fmt: skip


# ---------------------------------------------------------------- the command


class IngestScenes(luigi.Task):
    """Every bundle of the source -> COGs, the STAC catalogue and the browse pages.

    luigi --module pipeline.ingest IngestScenes --source DIR_OR_S3_PREFIX_OR_LIST
          --dest DIR_OR_S3_URL [--overwrite] --local-scheduler
    """

    source = luigi.Parameter(
        description="bundles: a directory, an s3:// prefix, one bundle, or a list file (a path or URL per line)"
    )
    dest = IngestScene.dest
    overwrite = IngestScene.overwrite

    def requires(self) -> list[IngestScene]:
        bundles = source_bundles(self.source)
        summary.record_run(self.source, where(self.dest), len(bundles))
        return [IngestScene(bundle=b.href, dest=self.dest, overwrite=self.overwrite) for b in bundles]

    def complete(self) -> bool:
        if not all(scene.complete() for scene in self.requires()):
            return False
        return all(task.complete() for task in publishing_tasks(self.dest, self.overwrite))

    def run(self) -> Iterator[list[_PublishTask]]:
        catalogue.forget(store_for(self.dest))  # the scenes changed what is published
        yield publishing_tasks(self.dest, self.overwrite)
        stems = {b.stem for b in source_bundles(self.source)}
        failed = [
            d
            for d in (summary.attempted(s) for s in sorted(stems))
            if d is not None and d["status"] == "failed"
        ]
        if failed:
            raise FailuresRecorded(
                f"{len(failed)} bundle(s) published nothing (listed at the end with their reasons); everything else is published."
            )


class IngestDryRun(DryRunTask):
    """Before converting: per bundle, the scene, its bytes, whether it is already published
    or bad, and the objects the run will write. Lists the source and the destination and
    reads the bundles' tar headers (a compressed bundle is read through); writes nothing."""

    source = IngestScenes.source
    dest = IngestScene.dest
    overwrite = IngestScene.overwrite

    dry_run_name = "ingest-dry-run"

    def estimate(self) -> str:
        from pipeline.ingest.estimate import estimate, format_estimate

        bundles = source_bundles(self.source)
        store = store_for(self.dest)
        tasks = [IngestScene(bundle=b.href, dest=self.dest, overwrite=self.overwrite) for b in bundles]
        done = {t.bundle for t in tasks if not self.overwrite and t.published()}
        rows = estimate(bundles, done, access_for(), store)
        return format_estimate(rows, self.source, where(self.dest))


__all__ = [
    "IngestCatalog", "IngestCollection", "IngestDryRun", "IngestParquet", "IngestPathRow", "IngestScene", "IngestScenes",
    "IngestTopIndex",
]  # fmt: skip
