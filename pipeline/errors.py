"""One exception hierarchy for the package.

Every error a user can cause names the file, line or field it comes from, so the message
alone is enough to fix the input.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error raised on purpose by this package."""


class InputError(PipelineError):
    """Bad user input: a plot file, a parameter, a catalogue item.

    ``source`` is the file (or parameter) and ``line``/``field`` say where in it.
    """

    def __init__(self, message: str, *, source: str = "", line: int | None = None, field: str = "") -> None:
        self.source = source
        self.line = line
        self.field = field
        parts = [source] if source else []
        if line is not None:
            parts.append(f"line {line}")
        if field:
            parts.append(f"field {field!r}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {message}" if where else message)


class GridError(InputError):
    """A point or bounding box outside a region's ARD grid, or an unknown region."""


class CatalogError(PipelineError):
    """The catalogue could not be searched, or answered something unusable."""


class ItemError(CatalogError, InputError):
    """One catalogue item is malformed (missing asset, grid property, datetime)."""


class RasterReadError(PipelineError):
    """An asset could not be opened or read (not a GeoTIFF, truncated, access denied)."""


class StorageError(PipelineError):
    """An output location could not be listed or written."""
