"""The HLS input files: tiles (tile,year) and points (id,lat,lon,year + extra columns),
validated whole, errors naming file, line and field; what spreadsheets write works."""

from __future__ import annotations

import pytest

from pipeline.errors import InputError
from pipeline.hls.inputs import Point, TileYear, parse_bbox, parse_years, read_points_file, read_tiles_file


def test_tiles_file_with_bom_crlf_and_duplicates(tmp_path):
    f = tmp_path / "tiles.csv"
    f.write_bytes("\ufefftile,year,note\r\n10TET,2019,a\r\n10tft,2020,b\r\n10TET,2019,c\r\n\r\n".encode())
    assert read_tiles_file(f) == [TileYear("10TET", 2019), TileYear("10TFT", 2020)]


def test_points_file_keeps_extra_columns_and_quoted_ids(tmp_path):
    f = tmp_path / "points.csv"
    f.write_text('id,lat,lon,year,site\n"007",47.5,-122.5,2019,"a, b"\nx-1,47.6,-122.4,2020,c\n')
    pts = read_points_file(f)
    assert pts == [Point("007", 47.5, -122.5, 2019, 2), Point("x-1", 47.6, -122.4, 2020, 3)]
    assert pts[0].extra == (("site", "a, b"),)


@pytest.mark.parametrize(
    "content, where",
    [
        ("", "line 1"),
        ("id,lat,lon\n", "missing column(s) year"),
        ("id,lat,lon,year\n", "line 2: no rows"),
        ("id,lat,lon,year\na,47,-122\n", "line 2: 3 fields where the header has 4"),
        ("id,lat,lon,year\na,north,-122,2019\n", "line 2, field 'lat': 'north' is not a number"),
        ("id,lat,lon,year\na,47,-190,2019\n", "line 2, field 'lon'"),
        ("id,lat,lon,year\na,85,-122,2019\n", "line 2, field 'lat'"),
        ("id,lat,lon,year\na,47,-122,19\n", "line 2, field 'year'"),
        (
            "id,lat,lon,year\na,47,-122,2019\na,47,-122,2019\n",
            "line 3, field 'id': duplicate id 'a' (first on line 2)",
        ),
        ("id,lat,lon,year\n,47,-122,2019\n", "line 2, field 'id'"),
    ],
)
def test_bad_points_files(tmp_path, content, where):
    f = tmp_path / "points.csv"
    f.write_text(content)
    with pytest.raises(InputError) as e:
        read_points_file(f)
    assert str(f) in str(e.value) and where in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="tiles file not found"):
        read_tiles_file(tmp_path / "nope.csv")


def test_bbox_and_years():
    assert parse_bbox("-122.5,47,-121.5,47.5") == (-122.5, 47.0, -121.5, 47.5)
    assert parse_years("2019,2018-2020") == [2018, 2019, 2020]
    for bad in ["1,2,3", "a,b,c,d", "-121,47,-122,48"]:
        with pytest.raises(InputError, match="field 'bbox'"):
            parse_bbox(bad)
    with pytest.raises(InputError, match="field 'year'"):
        parse_years("20x9")
