"""The datacube inputs a user writes: the MGRS sample file (FlatGeobuf or GeoPackage, EPSG:4326,
property ``name`` = MGRS id, the tile's polygon) and the ``--index`` / ``--indexes`` choice of its
rows. Validated whole before anything runs; errors name the file, row and field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.mgrs_grid import check_tile_id

EXTENSIONS = (".fgb", ".gpkg")


@dataclass(frozen=True)
class SampleTile:
    """One row of the sample file: its 0-based row index (the unit of work's id, and the seed
    of its year order), the MGRS id and the polygon's bounds (lon/lat)."""

    index: int
    mgrs: str
    bounds: tuple[float, float, float, float]


def read_sample(path: str | Path) -> list[SampleTile]:
    """Every row of the sample file, in file order."""
    source = str(path)
    p = Path(path)
    if p.suffix.lower() not in EXTENSIONS:
        raise InputError(
            f"expected a FlatGeobuf (.fgb) or GeoPackage (.gpkg) file, not {p.suffix!r}", source=source
        )
    if not p.is_file():
        raise InputError("sample file not found", source=source)
    import pyogrio  # type: ignore[import-untyped]

    try:
        frame: Any = pyogrio.read_dataframe(p)
    except Exception as e:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise InputError(f"cannot read the sample file: {e}", source=source) from None
    crs = frame.crs
    if crs is None or crs.to_epsg() != 4326:
        raise InputError(f"the layer's CRS is {crs and crs.to_string()!r}, not EPSG:4326", source=source)
    if "name" not in frame.columns:
        raise InputError(
            f"no property 'name' (the MGRS id); the properties are {', '.join(map(str, frame.columns[:-1]))}",
            source=source,
            field="name",
        )
    if len(frame) == 0:
        raise InputError("no rows in the sample file", source=source)
    tiles = []
    for index, (name, geometry) in enumerate(zip(frame["name"], frame.geometry, strict=True)):
        where = f"row {index}"
        if not isinstance(name, str):
            raise InputError(
                f"{where}: {name!r} is not an MGRS id such as 59GML", source=source, field="name"
            )
        mgrs = check_tile_id(name, source=f"{source}, {where}", field="name")
        if geometry is None or geometry.is_empty:
            raise InputError(f"{where} ({mgrs}): no geometry", source=source, field="geometry")
        minx, miny, maxx, maxy = (float(v) for v in geometry.bounds)
        tiles.append(SampleTile(index, mgrs, (minx, miny, maxx, maxy)))
    return tiles


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_indexes(text: str, rows: int) -> list[int]:
    """``0-99`` or ``3,7,10-12`` (both ends inclusive) -> sorted row indexes, each checked against
    the sample's ``rows``."""
    chosen: set[int] = set()
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise InputError(f"{part.strip()!r} is not N or N-M", field="indexes")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError(f"{part.strip()!r}: end before start", field="indexes")
        if hi >= rows:
            raise InputError(f"{part.strip()!r}: the sample has rows 0-{rows - 1}", field="indexes")
        chosen.update(range(lo, hi + 1))
    return sorted(chosen)


def select_rows(sample: list[SampleTile], index: int, indexes: str) -> list[SampleTile]:
    """The rows a run works on: ``--index N``, ``--indexes N-M``, or every row (neither given)."""
    if index >= 0 and indexes:
        raise InputError("give --index or --indexes, not both", field="indexes")
    if index >= 0:
        if index >= len(sample):
            raise InputError(f"{index}: the sample has rows 0-{len(sample) - 1}", field="index")
        return [sample[index]]
    if indexes:
        return [sample[i] for i in parse_indexes(indexes, len(sample))]
    return list(sample)
