"""The plot file: ``project_id,plot_id,x,y`` (extra columns ignored), validated whole
before anything runs, with errors that name the file, line and field."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.grid import Region, Tile, tile_of

REQUIRED_COLUMNS = ("project_id", "plot_id", "x", "y")
# Ids become file and directory names: letters, digits, '.', '-', '_' only, no '..'.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Plot:
    project_id: str
    plot_id: str
    x: int
    y: int
    line: int = 0  # line in the plot file, for messages

    @property
    def name(self) -> str:
        return f"{self.project_id}/{self.plot_id}"


def check_id(value: str, *, source: str, line: int | None, field: str) -> str:
    if not value:
        raise InputError("empty id", source=source, line=line, field=field)
    if not _ID.match(value) or ".." in value or "_spectral_files_set_" in value:
        raise InputError(
            f"id {value!r} may only hold letters, digits, '.', '-' and '_' (no '/', spaces or '..'), "
            "because it becomes part of file names",
            source=source, line=line, field=field,
        )  # fmt: skip
    return value


def _coordinate(value: str, *, source: str, line: int, field: str) -> int:
    text = value.strip()
    if _INT.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"{text!r} is not a number", source=source, line=line, field=field) from None
    raise InputError(
        f"{number!r} is not an integer: coordinates are integer metres in the ARD Albers grid",
        source=source, line=line, field=field,
    )  # fmt: skip


def read_plot_file(path: str | Path, region: Region) -> list[Plot]:
    """Every plot of the file, in file order. Raises :class:`InputError` on the first
    problem: missing file or columns, no plots, bad ids or coordinates, duplicates,
    points outside the region's grid."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError("plot file not found", source=source, field="plot-file") from None
    except OSError as e:
        raise InputError(f"cannot read plot file: {e.strerror}", source=source, field="plot-file") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM from spreadsheet exports is not part of the header
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})", source=source) from None
    if not text.strip():
        raise InputError(
            "empty plot file: expected a header project_id,plot_id,x,y and plot rows", source=source, line=1
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader)]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; the header is {','.join(header)!r}, "
            f"expected {','.join(REQUIRED_COLUMNS)}",
            source=source, line=1,
        )  # fmt: skip
    index = {c: header.index(c) for c in REQUIRED_COLUMNS}
    plots: list[Plot] = []
    seen: dict[tuple[str, str], int] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise InputError(f"{len(row)} fields, the header has {len(header)}", source=source, line=line)
        project_id = check_id(row[index["project_id"]].strip(), source=source, line=line, field="project_id")
        plot_id = check_id(row[index["plot_id"]].strip(), source=source, line=line, field="plot_id")
        x = _coordinate(row[index["x"]], source=source, line=line, field="x")
        y = _coordinate(row[index["y"]], source=source, line=line, field="y")
        key = (project_id, plot_id)
        if key in seen:
            raise InputError(
                f"duplicate plot (project_id {project_id!r}, plot_id {plot_id!r}), first on line {seen[key]}",
                source=source, line=line, field="plot_id",
            )  # fmt: skip
        seen[key] = line
        try:
            tile_of(region, x, y)
        except InputError as e:
            raise InputError(str(e), source=source, line=line, field="x,y") from None
        plots.append(Plot(project_id, plot_id, x, y, line))
    if not plots:
        raise InputError("no plots: the file has a header but no rows", source=source, line=2)
    return plots


def plot_tile(region: Region, plot: Plot) -> Tile:
    return tile_of(region, plot.x, plot.y)
