"""The datacube recipe (issue 14) on hand-made items shaped like Planetary Computer's
(``sentinel-2-l2a``, ``sentinel-1-rtc``, ``cop-dem-glo-30``: same property names and asset keys,
S1 datetimes with a space) with small square footprints, and on small arrays; every expected
value is worked out by hand next to the case."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import pytest

from pipeline.datacube import layout, recipe
from pipeline.errors import InputError, ItemError

# --- hand-made items -------------------------------------------------------------------------------


def polygon(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def s2_item(
    item_id: str,
    when: str = "2020-06-15T10:00:00Z",
    *,
    tile: str = "31UFU",
    cloud: float = 10.0,
    nodata: float = 0.0,
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
) -> dict:
    asset = {
        "proj:bbox": [600000.0, 5690220.0, 709800.0, 5800020.0],
        "proj:shape": [10980, 10980],
        "proj:transform": [10.0, 0.0, 600000.0, 0.0, -10.0, 5800020.0],
        "gsd": 10.0,
    }
    return {
        "type": "Feature",
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "geometry": polygon(*box),
        "properties": {
            "datetime": when,
            "proj:epsg": 32631,
            "s2:mgrs_tile": tile,
            "eo:cloud_cover": cloud,
            "s2:nodata_pixel_percentage": nodata,
        },
        "assets": {"B02": {"href": "b02.tif", **asset}},
    }


def s1_item(
    item_id: str, when: str, box: tuple[float, float, float, float], orbit: str = "descending"
) -> dict:
    return {
        "type": "Feature",
        "id": item_id,
        "collection": "sentinel-1-rtc",
        "geometry": polygon(*box),
        "properties": {"datetime": when, "sat:orbit_state": orbit, "proj:epsg": 32631},
        "assets": {"vh": {"href": "vh.tif"}, "vv": {"href": "vv.tif"}},
    }


def dem_item(item_id: str, box: tuple[float, float, float, float]) -> dict:
    return {
        "type": "Feature",
        "id": item_id,
        "collection": "cop-dem-glo-30",
        "geometry": polygon(*box),
        "properties": {"datetime": "2021-04-22T00:00:00Z", "proj:epsg": 4326},
        "assets": {"data": {"href": "dem.tif"}},
    }


def ids(items) -> list[str]:
    return [it["id"] for it in items]


S2 = s2_item("S2A_T31UFU", "2020-06-15T10:00:00Z")  # footprint: the unit square


# --- years and date ranges -------------------------------------------------------------------------


def test_year_order_is_the_global_seed_shuffle_without_touching_global_state():
    saved = random.getstate()
    try:
        for index in range(51):
            years = [2017, 2018, 2019, 2020, 2021, 2022, 2023]
            random.seed(index)
            random.shuffle(years)  # the old script, verbatim
            # a private Random(index) shuffles identically ...
            private = list(range(2017, 2024))
            random.Random(index).shuffle(private)
            assert private == years, index
            # ... and year_order is that, leaving the global generator where it was
            random.seed(12345)
            before = random.getstate()
            assert recipe.year_order(index) == years, index
            assert random.getstate() == before
    finally:
        random.setstate(saved)


def test_year_order_is_a_permutation_and_differs_between_tiles():
    orders = {tuple(recipe.year_order(i)) for i in range(51)}
    assert all(sorted(o) == list(range(2017, 2024)) for o in orders)
    assert len(orders) > 40  # 51 seeds, 5040 permutations: nearly all distinct
    assert recipe.year_order(3, [2020, 2021]) in ([2020, 2021], [2021, 2020])


def test_search_periods_years_or_explicit_ranges():
    years = recipe.year_order(7)
    assert recipe.search_periods(7) == [(date(y, 1, 1), date(y, 12, 31)) for y in years]
    ranges = [(date(2021, 6, 1), date(2021, 6, 30)), (date(2020, 1, 1), date(2020, 4, 1))]
    assert recipe.search_periods(7, ranges) == ranges  # the given order, not sorted
    interval = recipe.period_interval((date(2020, 1, 1), date(2020, 4, 1)))
    assert interval.to_stac() == "2020-01-01T00:00:00Z/2020-04-01T23:59:59.999999Z"


def test_parse_dateranges():
    assert recipe.parse_dateranges("2020-01-01/2020-04-01, 2021-06-01/2021-06-30") == [
        (date(2020, 1, 1), date(2020, 4, 1)),
        (date(2021, 6, 1), date(2021, 6, 30)),
    ]
    assert recipe.parse_dateranges("2020-02-29/2020-02-29") == [(date(2020, 2, 29), date(2020, 2, 29))]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2020-01-01",
        "2020-01-01/2020-04-01,",
        "2020-01-01/2020-04-01/2020-05-01",
        "2020-04-01/2020-01-01",
        "2020-13-01/2020-12-31",
        "2021-02-29/2021-03-01",
        "2020/2021",
        "2020-1-1/2020-2-1",
        "a/b",
    ],
)
def test_parse_dateranges_rejects_bad_input_naming_the_field(text):
    with pytest.raises(InputError) as e:
        recipe.parse_dateranges(text)
    assert e.value.field == "dateranges"
    assert "dateranges" in str(e.value)


# --- Sentinel-2 ------------------------------------------------------------------------------------


def test_s2_neighbour_tile_scene_is_excluded():
    own = s2_item("own", cloud=30.0)
    neighbour = s2_item("neighbour", tile="31UGU", cloud=1.0)  # same datetime, clearer, other tile
    assert ids(recipe.s2_candidates([neighbour, own], "31UFU")) == ["own"]
    assert recipe.s2_rejection(neighbour, "31UFU") == "tile '31UGU' is not '31UFU'"


def test_s2_thresholds_are_inclusive():
    items = [
        s2_item("cloud50", cloud=50.0),
        s2_item("cloud50.001", cloud=50.001),
        s2_item("nodata20", nodata=20.0),
        s2_item("nodata20.001", nodata=20.001),
        s2_item("cloud-int-50", cloud=50),  # integers as some catalogues write them
    ]
    assert sorted(ids(recipe.s2_candidates(items, "31UFU"))) == ["cloud-int-50", "cloud50", "nodata20"]
    assert recipe.s2_rejection(items[1], "31UFU") == "eo:cloud_cover 50.001 > 50"
    assert recipe.s2_rejection(items[3], "31UFU") == "s2:nodata_pixel_percentage 20.001 > 20"


def test_s2_items_missing_properties_are_rejected_with_a_reason():
    no_cloud = s2_item("no-cloud")
    del no_cloud["properties"]["eo:cloud_cover"]
    bad_time = s2_item("bad-time", when="yesterday")
    assert recipe.s2_candidates([no_cloud, bad_time], "31UFU") == []
    assert recipe.s2_rejection(no_cloud, "31UFU") == "no numeric eo:cloud_cover"
    assert "datetime" in recipe.s2_rejection(bad_time, "31UFU")


def test_s2_order_cloud_then_datetime_then_id():
    items = [
        s2_item("d", "2020-03-01T10:00:00Z", cloud=5.0),
        s2_item("c", "2020-02-01T10:00:00.5Z", cloud=1.0),
        s2_item("b", "2020-02-01T10:00:00Z", cloud=1.0),  # as a string it sorts after "...00.5Z"
        s2_item("a", "2020-02-01T10:00:00.5Z", cloud=1.0),  # same instant as "c": id decides
        s2_item("e", "2020-01-01T10:00:00Z", cloud=0.5),
    ]
    # cloud 0.5 first; then cloud 1.0: 10:00:00 before 10:00:00.5, then a before c; then cloud 5
    assert ids(recipe.s2_candidates(items, "31UFU")) == ["e", "b", "a", "c", "d"]


def test_s2_attempts_are_the_first_twenty_and_ids_are_unique():
    items = [s2_item(f"s{i:02d}", cloud=float(30 - i)) for i in range(25)]
    got = recipe.s2_candidates(items + items[:3], "31UFU")  # a repeated page
    assert ids(got) == [f"s{i:02d}" for i in range(24, 4, -1)]  # cloud 6, 7, ..., 25
    assert ids(recipe.s2_candidates(items, "31UFU", attempts=2)) == ["s24", "s23"]


# --- Sentinel-1 ------------------------------------------------------------------------------------


def test_s1_one_scene_alone_covers():
    whole = s1_item("whole", "2020-06-15 17:00:00.123456+00:00", (-0.5, -0.5, 1.5, 1.5))  # 7 h off
    later = s1_item("later", "2020-06-17 06:00:00+00:00", (-0.5, -0.5, 1.5, 1.5))
    assert ids(recipe.s1_match(S2, [later, whole])) == ["whole"]
    assert recipe.uncovered_fraction(S2, [recipe.s1_match(S2, [later, whole])[0]]) == 0.0


def test_s1_union_of_two_scenes_is_needed():
    # west covers x 0..0.6, east x 0.5..1: neither alone covers, the union does (the old script
    # intersected the scenes' geometries instead and never saw the union covering)
    west = s1_item("west", "2020-06-15 05:00:00+00:00", (-0.2, -0.2, 0.6, 1.2))  # 5 h off
    east = s1_item("east", "2020-06-14 17:00:00+00:00", (0.5, -0.2, 1.2, 1.2))  # 17 h off
    far = s1_item("far", "2020-06-17 17:00:00+00:00", (-1.0, -1.0, 2.0, 2.0))  # covers, 2 days off
    got = recipe.s1_match(S2, [far, east, west])
    # the largest overlap is far's (1.0): descending for all three; nearest first: west, east;
    # west + east cover the square, so far is not added
    assert ids(got) == ["west", "east"]
    assert recipe.uncovered_fraction(S2, got) == 0.0
    assert recipe.uncovered_fraction(S2, got[:1]) == pytest.approx(0.4)


def test_s1_scenes_meeting_along_an_edge_cover_within_tolerance():
    west = s1_item("west", "2020-06-15 05:00:00+00:00", (-0.2, -0.2, 1 / 3, 1.2))
    east = s1_item("east", "2020-06-15 06:00:00+00:00", (1 / 3, -0.2, 1.2, 1.2))
    spare = s1_item("spare", "2020-06-16 06:00:00+00:00", (-0.2, -0.2, 1.2, 1.2))
    # east is 4 h off, west 5 h: east first; the two meet along x = 1/3 and cover the square
    assert ids(recipe.s1_match(S2, [spare, west, east])) == ["east", "west"]


def test_s1_union_short_of_coverage_takes_everything_of_the_orbit():
    a = s1_item("a", "2020-06-15 05:00:00+00:00", (0.0, 0.0, 0.4, 1.0))
    b = s1_item("b", "2020-06-16 05:00:00+00:00", (0.5, 0.0, 1.0, 1.0))  # a gap at x 0.4..0.5
    got = recipe.s1_match(S2, [b, a])
    assert ids(got) == ["a", "b"]
    assert recipe.uncovered_fraction(S2, got) == pytest.approx(0.1)


def test_s1_orbit_state_of_the_largest_overlap_decides():
    near_asc = s1_item(
        "near-asc", "2020-06-15 10:30:00+00:00", (0.0, 0.0, 0.7, 1.0), "ascending"
    )  # overlap 0.7
    big_desc = s1_item(
        "big-desc", "2020-06-17 05:00:00+00:00", (0.0, 0.0, 0.8, 1.0), "descending"
    )  # overlap 0.8
    rest_desc = s1_item("rest-desc", "2020-06-13 05:00:00+00:00", (0.6, 0.0, 1.0, 1.0), "descending")
    rest_asc = s1_item("rest-asc", "2020-06-15 11:00:00+00:00", (0.6, 0.0, 1.0, 1.0), "ascending")
    got = recipe.s1_match(S2, [near_asc, big_desc, rest_desc, rest_asc])
    # descending wins (0.8 > 0.7) although ascending scenes are nearer in time; big-desc is
    # 1 d 19 h off, rest-desc 2 d 5 h off: big-desc first, then rest-desc completes the square
    assert ids(got) == ["big-desc", "rest-desc"]


def test_s1_time_ties_larger_overlap_first_then_id():
    when = "2020-06-15 12:00:00+00:00"  # 2 h after S2
    small = s1_item("a-small", when, (0.5, 0.0, 1.0, 1.0))  # overlap 0.5
    large = s1_item("z-large", when, (0.0, 0.0, 0.9, 1.0))  # overlap 0.9
    twin = s1_item("twin", "2020-06-15 08:00:00+00:00", (0.0, 0.0, 0.5, 1.0))  # also 2 h off, overlap 0.5
    got = recipe.s1_match(S2, [small, twin, large])
    # all 2 h off: z-large first (larger overlap, despite its id), then a-small before twin
    # (equal overlap: by id); z-large + a-small cover the square, so twin is not added
    assert ids(got) == ["z-large", "a-small"]
    full1 = s1_item("b", when, (0.0, 0.0, 1.0, 1.0))
    full2 = s1_item("a", "2020-06-15 08:00:00+00:00", (0.0, 0.0, 1.0, 1.0))
    assert ids(recipe.s1_match(S2, [full1, full2])) == ["a"]  # same distance, same overlap: id


def test_s1_date_window_boundaries_are_calendar_days():
    s2 = s2_item("s2", "2020-06-15T23:30:00Z")
    # Each covers the whole footprint alone, so the match holds the one nearest in time: test
    # each candidate by itself.
    cases = {
        "2020-06-12 00:00:00+00:00": True,  # S2 date - 3, first instant
        "2020-06-11 23:59:59.999999+00:00": False,  # S2 date - 4
        "2020-06-18 23:59:59.999999+00:00": True,  # S2 date + 3, last instant
        "2020-06-19 00:00:00+00:00": False,  # S2 date + 4
        "2020-06-19T01:00:00+02:00": True,  # 2020-06-18 23:00 UTC
        "2020-06-18T23:00:00-02:00": False,  # 2020-06-19 01:00 UTC
        "2020-06-18T12:00:00Z": True,
    }
    for when, included in cases.items():
        got = recipe.s1_match(s2, [s1_item("s1", when, (-1, -1, 2, 2))])
        assert (got is not None) == included, when
    assert recipe.s1_window(s2) == (date(2020, 6, 12), date(2020, 6, 18))
    assert recipe.s1_search_interval(s2).to_stac() == "2020-06-12T00:00:00Z/2020-06-18T23:59:59.999999Z"


def test_s1_date_is_utc_even_when_the_s2_datetime_has_an_offset():
    s2 = s2_item("s2", "2020-06-16T01:00:00+02:00")  # 2020-06-15 23:00 UTC
    assert recipe.item_date(s2) == date(2020, 6, 15)
    assert recipe.s1_match(s2, [s1_item("s1", "2020-06-19 00:00:00+00:00", (-1, -1, 2, 2))]) is None


def test_a_year_with_no_s1_gives_none():
    assert recipe.s1_match(S2, []) is None
    elsewhere = s1_item("elsewhere", "2020-06-15 10:00:00+00:00", (5.0, 5.0, 6.0, 6.0))
    touching = s1_item("touching", "2020-06-15 10:00:00+00:00", (1.0, 0.0, 2.0, 1.0))  # shares an edge only
    too_late = s1_item("too-late", "2020-06-20 10:00:00+00:00", (0.0, 0.0, 1.0, 1.0))
    broken = s1_item("broken", "not a date", (0.0, 0.0, 1.0, 1.0))
    assert recipe.s1_match(S2, [elsewhere, touching, too_late, broken]) is None
    assert "datetime" in recipe.unusable_reason(broken)
    assert recipe.unusable_reason(elsewhere) is None


def test_s1_paint_order_later_acquisition_last():
    a = s1_item("a", "2020-06-16 05:00:00+00:00", (0, 0, 1, 1))
    b = s1_item("b", "2020-06-14T17:00:00Z", (0, 0, 1, 1))
    c = s1_item("c", "2020-06-14 17:00:00+00:00", (0, 0, 1, 1))  # same instant as b: by id
    d = s1_item("d", "2020-06-16 05:00:00.5+00:00", (0, 0, 1, 1))
    assert ids(recipe.s1_paint_order([d, c, a, b])) == ["b", "c", "a", "d"]


# --- DEM -------------------------------------------------------------------------------------------


def test_dem_items_meeting_the_footprint_sorted_by_id():
    items = [
        dem_item("Copernicus_DSM_COG_10_N00_00_E001_00_DEM", (1.0, 0.0, 2.0, 1.0)),  # touches the east edge
        dem_item("Copernicus_DSM_COG_10_N00_00_E000_00_DEM", (0.0, 0.0, 1.0, 1.0)),
        dem_item("Copernicus_DSM_COG_10_S01_00_E000_00_DEM", (0.0, -1.0, 1.0, -0.001)),  # a gap south
        dem_item("Copernicus_DSM_COG_10_N00_00_W001_00_DEM", (-1.0, 0.0, 0.0, 1.0)),
    ]
    assert ids(recipe.dem_items(S2, items)) == [
        "Copernicus_DSM_COG_10_N00_00_E000_00_DEM",
        "Copernicus_DSM_COG_10_N00_00_E001_00_DEM",
        "Copernicus_DSM_COG_10_N00_00_W001_00_DEM",
    ]
    assert recipe.dem_items(S2, []) == []


# --- the S2 grid -----------------------------------------------------------------------------------


def test_s2_grid_from_the_10m_asset():
    grid = recipe.s2_grid(S2)
    assert grid == (32631, (10.0, 0.0, 600000.0, 0.0, -10.0, 5800020.0), 10980, 10980)
    epsg, transform, width, height = grid  # a plain tuple too
    assert (epsg, transform[0], width, height) == (32631, 10.0, 10980, 10980)


def test_s2_grid_sources_proj_code_bbox_only_and_20m_asset():
    item = s2_item("x")
    del item["properties"]["proj:epsg"]
    item["properties"]["proj:code"] = "EPSG:32647"
    b02 = item["assets"]["B02"]
    del b02["proj:transform"], b02["proj:shape"]  # proj:bbox alone
    b02["proj:bbox"] = [399960.0, 8990220.0, 509760.0, 9100020.0]  # 47XML, as in the real item
    assert recipe.s2_grid(item) == (32647, (10.0, 0.0, 399960.0, 0.0, -10.0, 9100020.0), 10980, 10980)
    # only a 20 m asset with transform + shape: same bounds, still a 10 m grid
    item["assets"] = {
        "SCL": {"proj:shape": [5490, 5490], "proj:transform": [20.0, 0.0, 399960.0, 0.0, -20.0, 9100020.0]}
    }
    assert recipe.s2_grid(item) == (32647, (10.0, 0.0, 399960.0, 0.0, -10.0, 9100020.0), 10980, 10980)


def test_s2_grid_errors_name_the_item_and_field():
    no_epsg = s2_item("no-epsg")
    del no_epsg["properties"]["proj:epsg"]
    with pytest.raises(ItemError, match=r"no-epsg.*proj:epsg"):
        recipe.s2_grid(no_epsg)
    no_bounds = s2_item("no-bounds")
    no_bounds["assets"] = {"B02": {"href": "b02.tif"}}
    with pytest.raises(ItemError, match="no-bounds"):
        recipe.s2_grid(no_bounds)
    odd = s2_item("odd")
    odd["assets"]["B02"] = {"proj:bbox": [600000.0, 5690220.0, 709805.0, 5800020.0]}  # 10980.5 px
    with pytest.raises(ItemError, match="whole 10 m pixels"):
        recipe.s2_grid(odd)


# --- chips -----------------------------------------------------------------------------------------


def test_chip_windows_row_major_remainder_dropped():
    assert recipe.chip_windows(1100, 1100, 512) == [(1, 0, 0), (2, 512, 0), (3, 0, 512), (4, 512, 512)]
    assert recipe.chip_windows(1100, 600, 512) == [(1, 0, 0), (2, 512, 0)]
    assert recipe.chip_windows(1024, 1023, 512) == [(1, 0, 0), (2, 512, 0)]
    assert recipe.chip_windows(511, 5000, 512) == []
    full = recipe.chip_windows(10980, 10980, 512)
    assert len(full) == 21 * 21 and full[-1] == (441, 20 * 512, 20 * 512)
    for number, col, row in full:
        assert recipe.chip_offset(number, 10980, 10980, 512) == (col, row)


def test_snap_subset_outward_to_whole_chips_with_full_grid_numbers():
    windows = {n: (c, r) for n, c, r in recipe.chip_windows(1100, 1100, 512)}
    assert recipe.snap_subset(0, 0, 1, 1, 512, 1100, 1100) == [1]
    assert recipe.snap_subset(0, 0, 512, 512, 512, 1100, 1100) == [1]  # end-exclusive: chip 2 not met
    assert recipe.snap_subset(0, 0, 513, 512, 512, 1100, 1100) == [1, 2]
    assert recipe.snap_subset(500, 10, 520, 20, 512, 1100, 1100) == [1, 2]
    assert recipe.snap_subset(600, 600, 700, 700, 512, 1100, 1100) == [4]
    assert recipe.snap_subset(100, 500, 600, 530, 512, 1100, 1100) == [1, 2, 3, 4]
    assert recipe.snap_subset(0, 0, 5000, 5000, 512, 1100, 1100) == [1, 2, 3, 4]  # clipped
    assert recipe.snap_subset(1030, 0, 1100, 100, 512, 1100, 1100) == []  # in the dropped remainder
    # the numbers are those of the full grid: chip 4 of the subset is at the full grid's (512, 512)
    assert windows[4] == (512, 512)
    # a larger grid: a subset in the third column, second row keeps number cols * 1 + 3 = 24
    assert recipe.snap_subset(1100, 600, 1200, 700, 512, 10980, 10980) == [21 + 3]
    assert recipe.chip_offset(24, 10980, 10980, 512) == (1024, 512)
    with pytest.raises(ValueError):
        recipe.snap_subset(10, 10, 10, 20, 512, 1100, 1100)


def test_parse_subset():
    assert recipe.parse_subset("0, 0,1024,512") == (0, 0, 1024, 512)
    for bad in ("0,0,1024", "0,0,a,1", "10,0,5,5", "-1,0,5,5", "0,0,5,0"):
        with pytest.raises(InputError) as e:
            recipe.parse_subset(bad)
        assert e.value.field == "subset"


def test_chip_transform_is_exact_whole_pixel_offset():
    grid = (10.0, 0.0, 399960.0, 0.0, -10.0, 9100020.0)
    assert recipe.chip_transform(grid, 0, 0) == grid
    t = recipe.chip_transform(grid, 512, 1024)
    assert t == (10.0, 0.0, 399960.0 + 5120.0, 0.0, -10.0, 9100020.0 - 10240.0)
    # chip pixel (0, 0)'s upper-left corner is grid pixel (512, 1024)'s: no half-pixel shift
    # (the old script's chips sat 5 m right and down of this)
    _, _, c, _, _, f = t
    assert (c, f) == (grid[2] + 512 * grid[0], grid[5] + 1024 * grid[4])
    # a 9-element transform (as proj:transform may be) is accepted
    assert recipe.chip_transform([*grid, 0.0, 0.0, 1.0], 512, 0) == (
        10.0,
        0.0,
        405080.0,
        0.0,
        -10.0,
        9100020.0,
    )


# --- the chip filter -------------------------------------------------------------------------------


def chip(size: tuple[int, int] = (10, 100)):
    """A chip that passes: B02 1, S1 and DEM finite, SCL 4 (vegetation)."""
    return (
        np.ones(size, np.uint16),
        np.full(size, 0.02, np.float32),
        np.full(size, 0.1, np.float32),
        np.full(size, 120.0, np.float32),
        np.full(size, 4, np.uint8),
    )


def test_a_clean_chip_is_kept():
    assert recipe.drop_reason(*chip()) is None


def test_each_drop_reason():
    b02, vh, vv, dem, scl = chip()
    b02[9, 99] = 0
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "B02 has 0"
    for index, name in ((1, "vh"), (2, "vv"), (3, "dem")):
        arrays = list(chip())
        arrays[index][0, 0] = np.nan
        assert recipe.drop_reason(*arrays) == f"NaN in {name}"
    b02, vh, vv, dem, scl = chip()
    scl[:3, :] = 9  # 300 of 1000
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "cloud/shadow/nodata SCL >= 30%"


def test_drop_reasons_are_checked_in_order():
    b02, vh, vv, dem, scl = chip()
    b02[0, 0] = 0
    vh[0, 0] = vv[0, 0] = dem[0, 0] = np.nan
    scl[:] = 8
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "B02 has 0"
    b02[0, 0] = 1
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "NaN in vh"
    vh[0, 0] = 0.0
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "NaN in vv"
    vv[0, 0] = 0.0
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "NaN in dem"
    dem[0, 0] = 0.0
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "cloud/shadow/nodata SCL >= 30%"


def test_scl_30_percent_boundary():
    b02, vh, vv, dem, scl = chip()  # 1000 pixels
    flat = scl.reshape(-1)
    flat[:299] = 3  # 29.9 %: kept
    assert recipe.drop_reason(b02, vh, vv, dem, scl) is None
    flat[299] = 10  # 30.0 %: dropped
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "cloud/shadow/nodata SCL >= 30%"
    # on a real 512 x 512 chip: 78643 bad pixels = 29.9999 %, kept; 78644 = 30.0003 %, dropped
    b02, vh, vv, dem, scl = chip((512, 512))
    scl.reshape(-1)[:78643] = 1
    assert recipe.drop_reason(b02, vh, vv, dem, scl) is None
    scl.reshape(-1)[78643] = 1
    assert recipe.drop_reason(b02, vh, vv, dem, scl) == "cloud/shadow/nodata SCL >= 30%"


@pytest.mark.parametrize("value, bad", [(v, v in (0, 1, 3, 8, 9, 10)) for v in range(12)])
def test_which_scl_classes_count(value, bad):
    b02, vh, vv, dem, scl = chip()
    scl[:] = value  # 100 % of the chip in that class
    assert (recipe.drop_reason(b02, vh, vv, dem, scl) is not None) == bad


def test_chip_arrays_must_share_a_shape():
    b02, vh, vv, dem, scl = chip()
    with pytest.raises(ValueError):
        recipe.drop_reason(b02, vh, vv, dem[:, :50], scl)


# --- bands and names -------------------------------------------------------------------------------


def test_stack_order_and_assets():
    assert recipe.stack_order() == (
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B11",
        "B12",
        "vh",
        "vv",
        "dem",
    )
    assert (*recipe.stack_order()[:10], "SCL") == recipe.S2_READ_ASSETS
    assert recipe.S1_BANDS == ("vh", "vv") and recipe.DEM_ASSET == "data"


def test_chip_names_and_layout():
    day = date(2020, 6, 5)
    assert recipe.chip_name("59GML", day, "02", 7) == "claytile_59GML_20200605_v02_0007.tif"
    assert recipe.chip_name("59GML", day, "02", 12345) == "claytile_59GML_20200605_v02_12345.tif"
    assert (
        layout.chip_path("02", "59GML", day, 441)
        == "02/59GML/2020-06-05/claytile_59GML_20200605_v02_0441.tif"
    )
    assert layout.selection_state("f00d", 17, "59GML") == "_state/datacube/selection/f00d/000017_59GML.json"
    assert layout.scope_name(512) == "c512"
    assert layout.scope_name(512, (0, 512, 1024, 1024)) == "c512_0-512-1024-1024"
    assert (
        layout.chip_manifest("02", "59GML", day, "c512")
        == "_state/datacube/manifests/v02/59GML/2020-06-05/c512.json"
    )
    assert (
        layout.failure_record("02", "59GML", day, "c512")
        == "_state/datacube/failed/v02/59GML/2020-06-05/c512.json"
    )
    with pytest.raises(ValueError):
        layout.chip_name("59GML", day, "02", 0)
