"""From catalogue items to observations (pipeline/timesync/plan.py)."""

from pipeline.timesync.plan import ItemRef, group_observations, item_date

HREFS = tuple(
    f"s3://b/{band}.TIF" for band in ("blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel")
)


def ref(item_id: str, year: int, doy: int, hv: str) -> ItemRef:
    return ItemRef(item_id, f"{year}-01-01T00:00:00Z", year, doy, hv, HREFS)


def test_items_of_one_acquisition_on_two_tiles_make_one_observation_in_search_order():
    west = [ref("a", 2020, 10, "003004"), ref("b", 2020, 26, "003004")]
    east = [ref("c", 2020, 10, "004004")]
    obs = group_observations([west, east])
    assert [(o.key, [i.id for i in o.items]) for o in obs] == [("2020_010", ["a", "c"]), ("2020_026", ["b"])]
    assert all(o.unusable == () for o in obs)


def test_a_rejected_item_marks_its_acquisition_unusable():
    west = [ref("a", 2020, 10, "003004"), ref("b", 2020, 26, "003004")]
    east_rejected = [(2020, 10, "item c: missing asset 'red'"), (2021, 5, "item d: missing asset 'red'")]
    obs = group_observations([west, []], [[], east_rejected])
    assert [(o.key, o.unusable) for o in obs] == [
        ("2020_010", ("item c: missing asset 'red'",)),
        ("2020_026", ()),
    ]
    # 2021_005 had only the rejected item: no observation at all (nothing would be partial)


def test_item_date():
    assert item_date({"properties": {"datetime": "2020-02-01T17:00:00Z"}}) == (2020, 32)
    assert item_date({"properties": {"datetime": "not a date"}}) is None
    assert item_date({"properties": {}}) is None
    assert item_date({}) is None
