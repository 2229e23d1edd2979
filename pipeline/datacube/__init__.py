"""Sentinel-2 + Sentinel-1 + Copernicus DEM chip datacubes per MGRS tile (issue 14, the Clay
training-data pipeline).

:mod:`pipeline.datacube.recipe` states the recipe as pure functions (scene selection, the S2 grid,
chip numbering and the chip filter); :mod:`pipeline.datacube.layout` names every output and state
file; :mod:`pipeline.datacube.engine` selects dates and stacks chips (on Dask workers);
:mod:`pipeline.datacube.tasks` are the Luigi tasks.

Run it with ``luigi --module pipeline.datacube DatacubeSample --help`` (and ``DatacubeDryRun``).
"""

from pipeline import _luigi_setup
from pipeline.datacube import summary
from pipeline.datacube.tasks import (
    DatacubeDryRun,
    DatacubeReport,
    DatacubeSample,
    DatacubeSelection,
    DatacubeTile,
    DatacubeTileDate,
)

_luigi_setup.install()
summary.install()

__all__ = [
    "DatacubeDryRun",
    "DatacubeReport",
    "DatacubeSample",
    "DatacubeSelection",
    "DatacubeTile",
    "DatacubeTileDate",
]
