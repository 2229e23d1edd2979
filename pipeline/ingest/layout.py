"""Every output name of the Landsat ingest, relative to ``--dest`` (join with :func:`href`).

Per scene, under ``collection02/{level}/{sensor}/{YYYY}/{PPP}/{RRR}/{product_id}/`` (the USGS
bucket's layout; ``level`` = ``level-1`` / ``level-2``, ``sensor`` = ``oli-tirs`` / ``etm`` /
``tm`` / ``mss``, ``YYYY`` the acquisition year, ``PPP``/``RRR`` the WRS path and row)::

    {product_id}_{SUFFIX}.TIF           one COG per raster member (SR_B4, QA_PIXEL, B6_VCID_1, ...)
    {product_id}_MTL.txt|.xml|.json     copies of the metadata members the bundle has
    {product_id}_ANG.txt
    {product_id}_thumb_small.jpeg       3 % thumbnail   (stactools-landsat's ``thumbnail`` href)
    {product_id}_thumb_large.jpeg       15 % thumbnail  (its ``reduced_resolution_browse`` href)
    index.html                          the scene's browse page
    {item_id}.json                      the STAC item: written last, the scene's completion marker

Over the scenes::

    catalog.json                        root catalogue -> one collection per product family
    {collection_id}/collection.json     landsat-c2-l1, landsat-c2-l2
    items.parquet                       every item (stac-geoparquet)
    index.html                          top browse page over path/rows
    pathrow/{PPP}/{RRR}/thumbindex.html a path/row's small thumbnails by date
    _state/ingest/failed/{bundle_stem}.json  why a bundle was not published (file name less .tar)
    _state/ingest/built/{name}.json     the items a catalogue file or page was built from (digest)
"""

from __future__ import annotations

import posixpath
import re

from pipeline.ingest.bundle import BundleError, SceneId, parse_product_id

STATE = "_state/ingest"
COLLECTION_IDS = ("landsat-c2-l1", "landsat-c2-l2")


def href(dest: str, key: str) -> str:
    """``dest`` (a local directory or ``s3://bucket/prefix``) joined with a relative key."""
    return f"{dest.rstrip('/')}/{key}"


def scene_dir(scene: SceneId) -> str:
    return f"collection02/{scene.level}/{scene.sensor}/{scene.year:04d}/{scene.path:03d}/{scene.row:03d}/{scene.product_id}"


def scene_file(scene: SceneId, tail: str) -> str:
    """``{scene_dir}/{product_id}_{tail}``: the name stactools-landsat gives every scene file."""
    return f"{scene_dir(scene)}/{scene.product_id}_{tail}"


def cog(scene: SceneId, suffix: str) -> str:
    """The COG of the raster member ``{product_id}_{suffix}.TIF``."""
    return scene_file(scene, f"{suffix}.TIF")


def metadata_copy(scene: SceneId, tail: str) -> str:
    """The copy of a text member: ``tail`` is ``MTL.txt``, ``MTL.xml``, ``MTL.json`` or ``ANG.txt``."""
    return scene_file(scene, tail)


def thumb_small(scene: SceneId) -> str:
    return scene_file(scene, "thumb_small.jpeg")


def thumb_large(scene: SceneId) -> str:
    return scene_file(scene, "thumb_large.jpeg")


def item_json(scene: SceneId) -> str:
    """Written after every other file of the scene: its completion marker."""
    return f"{scene_dir(scene)}/{scene.item_id}.json"


def scene_index(scene: SceneId) -> str:
    return f"{scene_dir(scene)}/index.html"


def catalog_json() -> str:
    return "catalog.json"


def collection_json(collection_id: str) -> str:
    return f"{collection_id}/collection.json"


def items_parquet() -> str:
    return "items.parquet"


def top_index() -> str:
    return "index.html"


def pathrow_index(path: int, row: int) -> str:
    return f"pathrow/{path:03d}/{row:03d}/thumbindex.html"


def failed_dir() -> str:
    return f"{STATE}/failed"


def built_record(name: str) -> str:
    """What the catalogue file or page ``name`` was last built from (see :mod:`.catalogue`)."""
    return f"{STATE}/built/{name}.json"


SCENE_ROOT = "collection02"
_ITEM_KEY = re.compile(
    r"^collection02/level-[12]/(?:oli-tirs|etm|tm|mss)/\d{4}/\d{3}/\d{3}/"
    r"(?P<product_id>[A-Z0-9_]+)/(?P<item_id>[A-Z0-9_]+)\.json$"
)


def scene_of_item_key(key: str) -> SceneId | None:
    """The scene whose item JSON ``key`` is (a key under :func:`item_json`'s layout), else None."""
    match = _ITEM_KEY.match(key)
    if match is None:
        return None
    try:
        scene = parse_product_id(match["product_id"])
    except BundleError:
        return None
    return scene if item_json(scene) == key else None


def relative(target: str, from_dir: str) -> str:
    """``target`` (a key under dest) as a link from a file in ``from_dir`` (a key directory)."""
    return posixpath.relpath(target, from_dir or ".")


def failure_record(bundle_stem: str) -> str:
    """Why a bundle published nothing (reason, member); removed once the scene is published."""
    return f"{STATE}/failed/{bundle_stem}.json"
