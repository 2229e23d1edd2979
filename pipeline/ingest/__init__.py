"""Landsat Collection 2 scene bundles -> Cloud Optimized GeoTIFFs, a static STAC catalogue,
thumbnails and browse pages, as a Luigi workflow.

Run it with ``luigi --module pipeline.ingest IngestScenes --source ... --dest ... --local-scheduler``
(and ``IngestDryRun``); :mod:`.tasks` shows the DAG.

The per-scene recipe, as plain functions, each usable on its own:

- :mod:`.bundle`: read a ``<product_id>.tar`` / ``.tar.gz`` / ``.tgz`` in place (members listed
  with :mod:`tarfile`, rasters opened through GDAL's ``/vsitar/`` or their byte range); the
  scene's product id, level, sensor, year, path and row; a truncated bundle or a missing band
  is refused with the bundle and member named.
- :mod:`.cog`: one raster member -> one COG (GDAL's COG driver: DEFLATE, integer predictor,
  512 x 512 blocks, internal overviews, NEAREST for the QA bit-mask bands), pixel for pixel.
- :mod:`.thumbs`: the RGB thumbnails (3 % and 15 % of full size, 1-99 % stretch per channel).
- :mod:`.items`: the scene's STAC Item as stactools-landsat builds it.
- :mod:`.layout`: every output name under the destination.

The workflow: :mod:`.sources` (what ``--source`` names), :mod:`.engine` (one scene, on Dask),
:mod:`.catalogue` (relative items, collections, catalog.json, items.parquet, what is current),
:mod:`.pages` (browse pages), :mod:`.summary`, :mod:`.estimate` (dry run), :mod:`.tasks`.
"""

from pipeline import _luigi_setup
from pipeline.ingest import summary
from pipeline.ingest.tasks import (
    IngestCatalog,
    IngestCollection,
    IngestDryRun,
    IngestParquet,
    IngestPathRow,
    IngestScene,
    IngestScenes,
    IngestTopIndex,
)

_luigi_setup.install()
summary.install()

__all__ = [
    "IngestCatalog", "IngestCollection", "IngestDryRun", "IngestParquet", "IngestPathRow", "IngestScene", "IngestScenes",
    "IngestTopIndex",
]  # fmt: skip
