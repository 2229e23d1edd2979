"""Every output and state name of the datacube workflow, in one place.

Outputs (under ``--dest``), one GeoTIFF per kept chip::

    {version}/{mgrs}/{YYYY-MM-DD}/claytile_{mgrs}_{YYYYMMDD}_v{version}_{NNNN}.tif

``YYYY-MM-DD`` is the UTC date of the Sentinel-2 item, ``NNNN`` the chip's 1-based row-major
position in the full tile's chip grid, zero-padded to at least 4 digits (as the old script wrote
it), so a subset run and a full run never give one name to two different chips.

State under ``_state/datacube/``:

- ``selection/{fingerprint}/{index:06d}_{mgrs}.json``: a tile's date selection (which S2, S1 and
  DEM ids per date, and why each year or attempt was skipped). Keyed by the sample row index as
  well as the MGRS id because the year order derives from the index. ``fingerprint`` is a digest
  of whatever decides the selection (catalogue, periods, dates per tile, thresholds), computed by
  the tasks, so changing one of those selects again instead of reusing a stale file.
- ``manifests/v{version}/{mgrs}/{YYYY-MM-DD}/{scope}.json``: written last for a (tile, date):
  every chip kept and every chip dropped with its reason; the (tile, date)'s completion marker.
  ``scope`` (:func:`scope_name`) tells a full run from a subset run, so a subset run's manifest
  never marks the full (tile, date) complete.
- ``failed/v{version}/{mgrs}/{YYYY-MM-DD}/{scope}.json``: the last failed attempt of a
  (tile, date); removed once it is complete.
"""

from __future__ import annotations

from datetime import date

STATE = "_state/datacube"
CHIP_PREFIX = "claytile"


def chip_dir(version: str, mgrs: str, day: date) -> str:
    """The directory (key prefix) holding one (tile, date)'s chips."""
    return f"{version}/{mgrs}/{day:%Y-%m-%d}"


def chip_name(mgrs: str, day: date, version: str, number: int) -> str:
    """``claytile_{mgrs}_{YYYYMMDD}_v{version}_{NNNN}.tif``; ``number`` is 1-based."""
    if number < 1:
        raise ValueError(f"chip numbers are 1-based, got {number}")
    return f"{CHIP_PREFIX}_{mgrs}_{day:%Y%m%d}_v{version}_{number:04d}.tif"


def chip_path(version: str, mgrs: str, day: date, number: int) -> str:
    """A chip's key relative to ``--dest``."""
    return f"{chip_dir(version, mgrs, day)}/{chip_name(mgrs, day, version, number)}"


def scope_name(chip_size: int, window: tuple[int, int, int, int] | None = None) -> str:
    """``c512`` for a full-grid run, ``c512_x0-y0-x1-y1`` for a subset run (``window`` is the
    subset snapped to whole chips, in pixels, end-exclusive): what the run's chips cover."""
    if window is None:
        return f"c{chip_size}"
    x0, y0, x1, y1 = window
    return f"c{chip_size}_{x0}-{y0}-{x1}-{y1}"


def selection_state(fingerprint: str, index: int, mgrs: str) -> str:
    """A tile's date selection (see the module docstring)."""
    return f"{STATE}/selection/{fingerprint}/{index:06d}_{mgrs}.json"


def chip_manifest(version: str, mgrs: str, day: date, scope: str) -> str:
    """The chips kept and dropped (with reasons) of a (tile, date); written last."""
    return f"{STATE}/manifests/v{version}/{mgrs}/{day:%Y-%m-%d}/{scope}.json"


def failure_record(version: str, mgrs: str, day: date, scope: str) -> str:
    """The last failed attempt of a (tile, date); removed once it is complete."""
    return f"{STATE}/failed/v{version}/{mgrs}/{day:%Y-%m-%d}/{scope}.json"


def report_index() -> str:
    return "report/datacube/index.html"


def report_page(version: str, mgrs: str, day: date) -> str:
    """The QA view of one (tile, date): kept and dropped chips over the S2 RGB, S1 VV, DEM."""
    return f"report/datacube/v{version}/{mgrs}/{day:%Y-%m-%d}.html"


def report_image(version: str, mgrs: str, day: date, view: str) -> str:
    """An image of a (tile, date)'s QA page, beside it: ``view`` ``rgb`` (S2), ``vv`` (S1), ``dem``."""
    return f"report/datacube/v{version}/{mgrs}/{day:%Y-%m-%d}_{view}.png"
