"""Datetime parsing and search intervals, with the semantics of pystac-client.

Item datetimes carry 0 to 9 fractional digits (LandsatLook writes 0..7), a ``Z`` or an
offset, and some servers (Planetary Computer S1 RTC) a space instead of ``T``: parse all
of them. Search intervals such as ``1984-01/2022-12-31`` expand exactly as pystac-client
expands them before sending (start of the first period, last second of the last), so a
local catalogue file and a STAC API answer the same search identically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateutil.relativedelta import relativedelta

_ITEM_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|z|[+-]\d{2}:?\d{2})?$"
)
# Same grammar as pystac_client.item_search.DATETIME_REGEX.
_INTERVAL_COMPONENT = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(?P<remainder>([Tt])\d{2}:\d{2}:\d{2}(\.\d+)?"
    r"(?P<tz_info>[Zz]|([-+])(\d{2}):(\d{2}))?)?)?)?$"
)


def parse_item_datetime(text: str) -> datetime:
    """Parse an item datetime leniently to an aware UTC datetime.

    Raises ValueError naming the text when it is not an ISO 8601 datetime.
    """
    m = _ITEM_DATETIME.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"unparsable datetime {text!r}")
    year, month, day, hour, minute, second, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))  # beyond microseconds: truncated, as Python must
    dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=UTC)
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        dt = dt - sign * offset
    return dt


@dataclass(frozen=True)
class Interval:
    """A closed datetime interval; ``None`` is open."""

    start: datetime | None
    end: datetime | None

    def contains(self, dt: datetime) -> bool:
        return (self.start is None or dt >= self.start) and (self.end is None or dt <= self.end)

    def to_stac(self) -> str:
        """The interval as pystac-client sends it (``start/end``, ``..`` for open)."""
        return f"{_iso(self.start)}/{_iso(self.end)}"


def _iso(dt: datetime | None) -> str:
    if dt is None:
        return ".."
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat("T") + "Z"


def _component(text: str) -> tuple[datetime | None, datetime | None]:
    """(start, end) of one interval component at its own resolution."""
    if text in ("", ".."):
        return None, None
    m = _INTERVAL_COMPONENT.match(text)
    if not m:
        raise ValueError(f"invalid datetime {text!r}: expected YYYY, YYYY-MM, YYYY-MM-DD or an ISO datetime")
    if m.group("remainder"):
        dt = parse_item_datetime(text)
        return dt, dt
    try:
        return _period(m)
    except ValueError as e:
        raise ValueError(f"invalid datetime {text!r}: {e}") from None


def _period(m: re.Match[str]) -> tuple[datetime, datetime]:
    year = int(m.group("year"))
    if m.group("day"):
        start = datetime(year, int(m.group("month")), int(m.group("day")), tzinfo=UTC)
        end = start + relativedelta(days=1, seconds=-1)
    elif m.group("month"):
        start = datetime(year, int(m.group("month")), 1, tzinfo=UTC)
        end = start + relativedelta(months=1, seconds=-1)
    else:
        start = datetime(year, 1, 1, tzinfo=UTC)
        end = start + relativedelta(years=1, seconds=-1)
    return start, end


def parse_interval(text: str) -> Interval:
    """Parse ``start/end`` (either side may be ``..`` or empty) or a single period."""
    parts = text.strip().split("/")
    if len(parts) == 1:
        start, end = _component(parts[0])
        if start is None:
            raise ValueError("an interval needs at least one bound")
        return Interval(start, end)
    if len(parts) != 2:
        raise ValueError(f"invalid interval {text!r}: more than two components")
    start, _ = _component(parts[0])
    _, end = _component(parts[1])
    if start is None and end is None:
        raise ValueError(f"invalid interval {text!r}: both ends open")
    if start is not None and end is not None and start > end:
        raise ValueError(f"invalid interval {text!r}: start after end")
    return Interval(start, end)
