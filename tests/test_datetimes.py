from datetime import UTC, datetime

import pytest
from pystac_client.item_search import ItemSearch

from pipeline.datetimes import parse_interval, parse_item_datetime


@pytest.mark.parametrize(
    "text, micro",
    [
        ("2022-12-29T17:06:14Z", 0),
        ("2022-12-29T17:06:14.3Z", 300000),
        ("2022-12-29T17:06:14.348463Z", 348463),
        ("2022-12-29T17:06:14.3484639Z", 348463),  # 7 digits: beyond microseconds truncated
        ("2022-12-29 17:06:14.34+00:00", 340000),  # space instead of T (PC S1 RTC)
    ],
)
def test_item_datetimes(text, micro):
    dt = parse_item_datetime(text)
    assert (dt.year, dt.month, dt.day, dt.hour, dt.second, dt.microsecond) == (2022, 12, 29, 17, 14, micro)


def test_offset_converted_to_utc():
    assert parse_item_datetime("2022-12-31T23:30:00-02:00") == datetime(2023, 1, 1, 1, 30, tzinfo=UTC)


def test_unparsable():
    with pytest.raises(ValueError, match="unparsable datetime 'yesterday'"):
        parse_item_datetime("yesterday")


@pytest.mark.parametrize(
    "text", ["1984-01/2022-12-31", "1984-01-01/..", "2020", "../2000-06", "2001-02-03T04:05:06Z/2001-02-04"]
)
def test_intervals_match_pystac_client(text):
    """The local catalogue must answer exactly what the STAC API is asked."""
    expected = ItemSearch(url="http://unused", datetime=text).get_parameters()["datetime"]
    assert parse_interval(text).to_stac() == expected


def test_interval_bounds_inclusive():
    iv = parse_interval("1984-01/2022-12-31")
    assert iv.contains(parse_item_datetime("2022-12-31T23:59:59Z"))
    assert not iv.contains(parse_item_datetime("2023-01-01T00:00:00Z"))
    assert iv.contains(parse_item_datetime("1984-01-01T00:00:00Z"))


def test_bad_intervals():
    for bad in ["1984-13", "../..", "2020/2019", "a/b/c"]:
        with pytest.raises(ValueError):
            parse_interval(bad)
