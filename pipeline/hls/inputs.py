"""The HLS inputs a user writes: the tiles file (``tile,year``) and the points file
(``id,lat,lon,year`` plus any extra columns), validated whole before anything runs, with
errors that name the file, line and field."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.mgrs_grid import check_tile_id

_ID = re.compile(r"^[^\x00-\x1f]+$")
YEARS = range(1980, 2101)


@dataclass(frozen=True)
class TileYear:
    tile: str
    year: int


@dataclass(frozen=True)
class Point:
    id: str
    lat: float
    lon: float
    year: int
    line: int = 0
    extra: tuple[tuple[str, str], ...] = field(default=(), compare=False)


def _read_rows(
    path: str | Path, required: tuple[str, ...], what: str
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", source=source) from None
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}", source=source) from None
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's BOM is not part of the header
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})", source=source) from None
    if not text.strip():
        raise InputError(
            f"empty {what}: expected a header {','.join(required)} and rows", source=source, line=1
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader)]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; the header is {','.join(header)}", source=source, line=1
        )
    rows = []
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise InputError(
                f"{len(values)} fields where the header has {len(header)}", source=source, line=line
            )
        rows.append((line, {h: v.strip() for h, v in zip(header, values, strict=True)}))
    if not rows:
        raise InputError(f"no rows in the {what}", source=source, line=2)
    return header, rows


def _year(text: str, *, source: str, line: int | None) -> int:
    if not re.fullmatch(r"\d{4}", text) or int(text) not in YEARS:
        raise InputError(f"{text!r} is not a year (YYYY)", source=source, line=line, field="year")
    return int(text)


def _number(text: str, lo: float, hi: float, *, source: str, line: int, field_name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{text!r} is not a number", source=source, line=line, field=field_name) from None
    if not lo <= value <= hi:
        raise InputError(f"{value!r} is outside {lo:g}..{hi:g}", source=source, line=line, field=field_name)
    return value


def read_tiles_file(path: str | Path) -> list[TileYear]:
    """The ``tile,year`` rows, in file order, duplicates removed."""
    source = str(path)
    _, rows = _read_rows(path, ("tile", "year"), "tiles file")
    seen: dict[TileYear, None] = {}
    for line, row in rows:
        tile = check_tile_id(row["tile"], source=source, line=line)
        seen.setdefault(TileYear(tile, _year(row["year"], source=source, line=line)))
    return list(seen)


def read_points_file(path: str | Path) -> list[Point]:
    """Every point, in file order. Ids are unique; MGRS covers latitudes -80..84."""
    source = str(path)
    header, rows = _read_rows(path, ("id", "lat", "lon", "year"), "points file")
    extra_cols = [h for h in header if h not in ("id", "lat", "lon", "year")]
    points: list[Point] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        pid = row["id"]
        if not pid or not _ID.match(pid):
            raise InputError(
                f"{pid!r} is not an id (empty or with control characters)",
                source=source,
                line=line,
                field="id",
            )
        if pid in first_line:
            raise InputError(
                f"duplicate id {pid!r} (first on line {first_line[pid]})",
                source=source,
                line=line,
                field="id",
            )
        first_line[pid] = line
        lat = _number(row["lat"], -80.0, 83.999999, source=source, line=line, field_name="lat")
        lon = _number(row["lon"], -180.0, 180.0, source=source, line=line, field_name="lon")
        year = _year(row["year"], source=source, line=line)
        points.append(Point(pid, lat, lon, year, line, tuple((c, row[c]) for c in extra_cols)))
    return points


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise InputError(f"{text!r} is not minlon,minlat,maxlon,maxlat", field="bbox")
    try:
        minlon, minlat, maxlon, maxlat = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"{text!r} is not four numbers", field="bbox") from None
    if not (-180 <= minlon < maxlon <= 180 and -80 <= minlat < maxlat <= 84):
        raise InputError(f"{text!r} is not a box with min < max inside -180..180, -80..84", field="bbox")
    return (minlon, minlat, maxlon, maxlat)


def parse_years(text: str) -> list[int]:
    years: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, _, b = part.partition("-")
            lo, hi = _year(a, source="--years", line=None), _year(b, source="--years", line=None)
            years.extend(range(lo, hi + 1))
        elif part:
            years.append(_year(part, source="--years", line=None))
    if not years:
        raise InputError("no year given", field="years")
    return sorted(set(years))
