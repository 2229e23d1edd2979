"""Sentinel-2 + Sentinel-1 + Copernicus DEM chip datacubes per MGRS tile (issue 14, the Clay
training-data pipeline).

:mod:`pipeline.datacube.recipe` states the recipe as pure functions (scene selection, the S2 grid,
chip numbering and the chip filter); :mod:`pipeline.datacube.layout` names every output and state
file.
"""
