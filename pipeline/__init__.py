"""Earth-observation extraction pipelines as Luigi file-target DAGs.

Shared pieces: :mod:`pipeline.catalog` (STAC search), :mod:`pipeline.grid` (ARD grids),
:mod:`pipeline.raster` (the one raster-reading seam), :mod:`pipeline.cluster` (Dask client),
:mod:`targets` (fsspec-backed targets). Workflows: :mod:`pipeline.timesync`.
"""

__version__ = "0.1.0"
