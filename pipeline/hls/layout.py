"""Every output and state name of the HLS workflow, in one place.

Outputs (under ``--project-dir``):

- ``composites/{tile}/{year}/{tile}_{year}-{MM}.tif``: a month's median composite (COG).
- ``samples/{year}/{tile}.zarr``: chips of the points placed in the tile.
- ``samples/{year}/{tile}_centre.parquet``: their centre pixels, one row per point and month.
- ``samples/{year}/unplaced.csv``: points of the year whose chip fits in no tile.

State under ``_state/hls/``: catalogue searches per tile-year, the composite manifest of a
tile-year (written after its months' COGs: the tile-year's completion marker), the
placement of a points file's year, failure records and unusable items.
"""

from __future__ import annotations

STATE = "_state/hls"


def composite_dir(tile: str, year: int) -> str:
    return f"composites/{tile}/{year:04d}"


def composite_name(tile: str, year: int, month: int) -> str:
    return f"{tile}_{year:04d}-{month:02d}.tif"


def composite_tif(tile: str, year: int, month: int) -> str:
    return f"{composite_dir(tile, year)}/{composite_name(tile, year, month)}"


def samples_zarr(year: int, tile: str) -> str:
    return f"samples/{year:04d}/{tile}.zarr"


def samples_centre(year: int, tile: str) -> str:
    """Written after the tile's Zarr store: the (tile, year) samples' completion marker."""
    return f"samples/{year:04d}/{tile}_centre.parquet"


def unplaced_csv(year: int) -> str:
    return f"samples/{year:04d}/unplaced.csv"


def search_state(fingerprint: str, tile: str, year: int) -> str:
    return f"{STATE}/search/{fingerprint}/{tile}_{year:04d}.json"


def composite_manifest(tile: str, year: int) -> str:
    """The months written for a tile-year, their scenes and the grid; written last."""
    return f"{STATE}/composites/{tile}_{year:04d}.json"


def placement_state(fingerprint: str, year: int) -> str:
    return f"{STATE}/placement/{fingerprint}/{year:04d}.json"


def failure_record(tile: str, year: int) -> str:
    """The failed months of a tile-year's last attempt; removed once it is complete."""
    return f"{STATE}/failed/{tile}_{year:04d}.json"


def unusable_record(tile: str, year: int) -> str:
    """Items the tile-year's search returned that the run cannot use (id, reason)."""
    return f"{STATE}/unusable/{tile}_{year:04d}.json"


def report_index() -> str:
    return "report/hls/index.html"
