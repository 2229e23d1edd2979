"""The Causemos recipe, stage by stage, on tiny hand-made frames.

Every expected value is worked out by hand next to the assertion (never by calling the code twice).
Times: 2022-01-01T00:00Z = 1640995200000 ms, 2022-02-01 = +31 days = 1643673600000,
2023-01-01 = 1672531200000, one day = 86400000 ms.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.causemos import layout, recipe
from pipeline.causemos.tiles import TileStats, decode_tile
from pipeline.errors import InputError

JAN = 1640995200000
FEB = 1643673600000
DAY = 86400000
Y2023 = 1672531200000


def _csv(table: pd.DataFrame) -> str:
    return recipe.csv_bytes(table).decode()


def _frame(rows, columns):
    return pd.DataFrame(rows, columns=columns)


# ================================================================ 0. reading


def test_string_values_files_are_skipped():
    assert recipe.is_string_values_file("s3://b/x_str.parquet.gzip")
    assert recipe.is_string_values_file("x_str.12.parquet.gzip")
    assert not recipe.is_string_values_file("x.parquet.gzip")
    assert not recipe.is_string_values_file("x_string.parquet.gzip")
    numeric = _frame([[JAN, "F", 1.0]], ["timestamp", "feature", "value"])
    strings = _frame([[JAN, "F", "text"]], ["timestamp", "feature", "value"])
    combined = recipe.concat_input_frames([("a_str.parquet.gzip", strings), ("a.parquet.gzip", numeric)])
    assert combined["value"].tolist() == [1.0]


def test_reading_fails_like_the_reference():
    empty = _frame([], ["timestamp", "feature", "value"])
    with pytest.raises(InputError, match="No parquet files provided"):
        recipe.concat_input_frames([])
    with pytest.raises(InputError, match="No numeric parquet files"):
        recipe.concat_input_frames([("d_str.parquet.gzip", empty), ("d_str.0.parquet.gzip", empty)])
    with pytest.raises(InputError, match="DataFrame has no rows"):
        recipe.concat_input_frames([("d.parquet.gzip", empty)])
    with pytest.raises(InputError, match="value"):
        recipe.concat_input_frames([("d.parquet", _frame([[1, "F"]], ["timestamp", "feature"]))])


def test_several_files_with_mismatched_columns_and_dtypes():
    first = pd.DataFrame(
        {
            "timestamp": [1, 2],
            "country": ["C", None],
            "admin1": [np.nan, np.nan],  # float in this file ...
            "feature": [1, 2],
            "value": [1.0, 2.0],
            "qual1": ["a", None],
        }
    )
    second = pd.DataFrame(
        {
            "timestamp": [3],
            "country": ["D"],
            "admin1": pd.Series(["A1"], dtype=object),  # ... text in this one: both become text, nulls "None"
            "feature": ["x"],
            "value": [3.0],
            "qual2": ["q"],
            "lat": [1.5],
        }
    )
    combined = recipe.concat_input_frames([("a.parquet.gzip", first), ("b.parquet.gzip", second)])
    assert list(combined.columns) == [
        "timestamp",
        "country",
        "admin1",
        "feature",
        "value",
        "qual1",
        "qual2",
        "lat",
    ]
    assert combined["feature"].tolist() == ["1", "2", "x"]  # cast to text
    assert combined["qual2"].tolist()[:2] == ["", ""]  # added as "" where missing
    assert combined["qual1"].tolist()[2] == ""
    assert combined["qual1"].isna().tolist() == [False, True, False]  # an existing null stays null
    assert combined["admin1"].tolist() == ["None", "None", "A1"]
    assert combined["country"].isna().tolist() == [False, True, False]  # same dtype kind: untouched
    assert combined["lat"].isna().tolist() == [True, True, False]


def test_single_file_keeps_feature_type():
    frame = pd.DataFrame({"timestamp": [1], "feature": [7], "value": [1.0]})
    combined = recipe.concat_input_frames([("only.parquet", frame)])
    assert combined["feature"].tolist() == [7]
    assert recipe.feature_key(combined["feature"].iloc[0]) == "7"


# ================================================================ 1. raw data


def test_raw_rows_and_raw_csv():
    raw = pd.DataFrame(
        {
            "timestamp": [JAN, JAN + 1, JAN + 2, JAN + 3],
            "country": ["Ethiopia", None, "A, B", "Sudan"],
            "feature": ["f1", "f1", "f2", None],
            "value": [0.5, np.nan, 1e-05, 2.0],
            "camp": ['say "hi"', "x", "y", "z"],
        }
    )
    assert recipe.raw_rows_per_feature(raw) == {"f1": 2, "f2": 1}  # the null feature is not counted
    parts = recipe.split_by_feature(raw)
    assert list(parts) == ["f1", "f2"]
    assert _csv(recipe.raw_table(parts["f1"], 2)) == (
        'timestamp,country,value,camp\n1640995200000,Ethiopia,0.5,"say ""hi"""\n1640995200001,,,x\n'
    )
    assert (
        _csv(recipe.raw_table(parts["f2"], 1))
        == 'timestamp,country,value,camp\n1640995200002,"A, B",1e-05,y\n'
    )
    assert recipe.raw_table(parts["f1"], 1) is None  # 2 rows > threshold 1


# ================================================================ 2. validate and fix


def _dirty_input() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": [JAN, None, JAN + 5, 10**13],  # 1e13 ms >= int64.max / 1e6 = 9223372036854.775807
            "country": ["Eth//iopia", None, "a///b", "X"],
            "admin1": [None, None, None, None],  # all null: dropped
            "lat": ["1.5", "abc", None, 2],  # unparseable -> NaN
            "lng": [1.0, 2.0, 3.0, 4.0],
            "feature": ["F", "F", "F", "F"],
            "value": [np.inf, None, -np.inf, 4.0],
            "notes": ["  ", "\t", None, " \n"],  # whitespace only: dropped
            "empty": ["", "", "", ""],  # "" is not whitespace: kept
            "qual": [1.0, None, 2.5, 3.0],
            "w": ["2", None, "x", 0.5],
        }
    )


def test_validate_and_fix_counts_and_fixes():
    checked = recipe.validate_and_fix(_dirty_input(), "w", 7)
    frame = checked.frame
    assert checked.dropped_columns == ("admin1", "notes")
    assert checked.num_missing_ts == 1
    assert checked.num_missing_val == 1  # None only: +-inf are not counted as missing
    assert checked.num_invalid_ts == 1
    assert checked.weight_column == "w"
    assert list(frame.columns) == [
        "timestamp",
        "country",
        "lat",
        "lng",
        "feature",
        "value",
        "empty",
        "qual",
        "w",
    ]
    assert frame["timestamp"].tolist() == [JAN, 7, JAN + 5]
    assert frame["country"].tolist() == ["Ethiopia", "None", "a/b"]  # "//" removed left to right
    assert frame["lat"].tolist()[0] == 1.5 and frame["lat"].isna().tolist() == [False, True, True]
    assert frame["value"].isna().all()  # inf, None, -inf
    assert frame["empty"].tolist() == ["", "", ""]
    assert frame["qual"].tolist() == ["1.0", "None", "2.5"]  # text, as the reference's astype("string")
    assert frame["w"].tolist() == [2.0, 0.0, 0.0] and frame["w"].dtype == np.float64


def test_validate_without_weight_or_with_blank_weight():
    assert recipe.validate_and_fix(_dirty_input(), "", 0).weight_column == ""
    assert recipe.validate_and_fix(_dirty_input(), "absent", 0).weight_column == ""
    assert recipe.validate_and_fix(_dirty_input(), "notes", 0).weight_column == ""  # dropped as blank


def test_all_null_lat_disables_tiles_but_keeps_lng():
    raw = pd.DataFrame({"timestamp": [1], "lat": [None], "lng": [3.0], "feature": ["F"], "value": [1.0]})
    frame = recipe.validate_and_fix(raw, "", 0).frame
    assert "lat" not in frame.columns and "lng" in frame.columns
    assert not recipe.has_coordinates(frame)


def test_unparseable_values_fail():
    raw = pd.DataFrame({"timestamp": [1], "feature": ["F"], "value": ["many"]})
    with pytest.raises(InputError, match="value"):
        recipe.validate_and_fix(raw, "", 0)


# ================================================================ 3. lists and configuration


def test_region_ids_and_lists():
    rows = pd.DataFrame(
        {
            "country": ["E", "E", "S"],
            "admin1": ["A", "B", "A"],
            "admin2": ["x y", "z", "w"],
            "admin3": ["1", "2", "3"],
        }
    )
    present = recipe.region_columns(rows)
    assert recipe.region_ids(rows, present, 2).tolist() == ["E__A__x y", "E__B__z", "S__A__w"]
    assert recipe.region_lists(rows, present) == {
        "country": ["E", "S"],
        "admin1": ["E__A", "E__B", "S__A"],
        "admin2": ["E__A__x y", "E__B__z", "S__A__w"],
        "admin3": ["E__A__x y__1", "E__B__z__2", "S__A__w__3"],
    }


def test_region_levels_with_a_gap_follow_the_reference():
    rows = pd.DataFrame({"country": ["E", "E"], "admin2": ["Z1", "Z2"]})
    present = recipe.region_columns(rows)
    assert present == ["country", "admin2"]
    # the second present column is listed as "admin1", joined with a missing admin1
    assert recipe.region_lists(rows, present) == {
        "country": ["E"],
        "admin1": ["E__None"],
        "admin2": [],
        "admin3": [],
    }
    assert recipe.region_ids(rows, ["admin1"], 0).tolist() == ["None", "None"]  # no country column
    assert recipe.region_lists(pd.DataFrame({"feature": ["F"]}), []) is None


def test_region_ids_are_the_rows_joined_whatever_repeats_collide_or_is_missing():
    """Every row's id is its own columns joined (a missing level as "None"), combinations that join
    to the same text share it, and the frame's index is kept."""
    rows = pd.DataFrame(
        {
            "country": ["a__b", "a", "a__b", "x", "a"],
            "admin1": ["c", "b__c", "c", "y", "q"],
            "admin2": ["m", "n", "m", "m", "n"],
        },
        index=[10, 11, 12, 13, 14],
    )
    cases = [
        (0, ["country", "admin1"]),
        (1, ["country", "admin1"]),
        (2, ["country", "admin2"]),
        (2, ["admin1"]),
    ]
    for level, present in cases:
        got = recipe.region_ids(rows, present, level)
        columns = [
            rows[c] if c in present else pd.Series("None", index=rows.index)
            for c in recipe.REGION_LEVELS[: level + 1]
        ]
        want = [recipe.REGION_ID_SEPARATOR.join(values) for values in zip(*columns, strict=True)]
        assert got.tolist() == want and list(got.index) == [10, 11, 12, 13, 14], (level, present)
    # two combinations that join to one text: one id
    assert recipe.region_ids(rows, ["country", "admin1"], 1).tolist()[:3] == ["a__b__c"] * 3
    assert recipe.region_ids(rows.iloc[:0], ["country"], 1).tolist() == []


def test_qualifier_columns_values_counts_and_limits():
    frame = pd.DataFrame(
        {
            "timestamp": [1, 2, 3],
            "country": ["C"] * 3,
            "lat": [1.0] * 3,
            "lng": [1.0] * 3,
            "feature": ["F"] * 3,
            "value": [1.0] * 3,
            "camp": ["b", "a", "b"],
            "w": [1.0] * 3,
            "kind": ["k"] * 3,
        }
    )
    assert recipe.qualifier_columns(frame, "w") == ["camp", "kind"]
    values = recipe.qualifier_values(frame, ["camp", "kind"])
    assert values == {"camp": ["b", "a"], "kind": ["k"]}
    thresholds = {"max_count": 1, "regional_timeseries_count": 1, "regional_timeseries_max_level": 0}
    assert recipe.qualifier_counts_document(values, thresholds) == {
        "thresholds": thresholds,
        "counts": {"camp": 2, "kind": 1},
    }
    counts = {"f1": {"q1": 10, "q2": 8, "q3": 10}, "f2": {"q1": 15}, "f3": {"q1": 5}}
    qualifier_map = {"f1": ["q1", "q2", "q3", "nope"], "f2": ["q1"], "f3": ["q1"], "unknown": ["q1"]}
    assert recipe.limit_qualifier_map(qualifier_map, counts, 9) == {"f1": ["q2"], "f2": [], "f3": ["q1"]}
    assert recipe.limit_qualifier_map(qualifier_map, counts, 10) == {
        "f1": ["q1", "q2", "q3"],
        "f2": [],
        "f3": ["q1"],
    }


def test_plan_outputs():
    everything = recipe.plan_outputs(None, True)
    assert all(everything.values()) and set(everything) == {*recipe.OUTPUT_TASKS, "record_results"}
    no_coords = recipe.plan_outputs(None, False)
    assert no_coords["compute_tiles"] is False and no_coords["record_results"] is True
    some = recipe.plan_outputs(["compute_global_timeseries", "compute_regional_aggregation", "bogus"], True)
    assert [t for t in recipe.OUTPUT_TASKS if some[t]] == [
        "compute_global_timeseries",
        "compute_regional_aggregation",
    ]
    assert some["record_results"] is False
    empty = recipe.plan_outputs([], True)  # the reference runs everything, but writes no results.json
    assert all(empty[t] for t in recipe.OUTPUT_TASKS) and empty["record_results"] is False
    assert recipe.plan_outputs(list(reversed(recipe.OUTPUT_TASKS)), True)["record_results"] is True


# ================================================================ 4. temporal aggregation


def test_period_starts_by_hand():
    stamps = np.array([JAN, JAN + 15 * DAY + 123, FEB - 1, FEB, -1, -1e14, 0.5])
    assert recipe.period_start_ms(stamps, "month").tolist() == [
        JAN,
        JAN,
        JAN,
        FEB,
        -31 * DAY,  # 1969-12-31T23:59:59.999 -> 1969-12-01
        0,  # 1653: not representable in pandas nanoseconds -> missing -> 0, as in the reference
        0,
    ]
    assert recipe.period_start_ms(stamps, "year").tolist() == [JAN, JAN, JAN, JAN, -365 * DAY, 0, 0]
    assert recipe.period_start_ms(np.array([Y2023 + 5]), "year").tolist() == [Y2023]
    assert recipe.period_start_ms(stamps, "all").tolist() == [0] * 7


def test_temporal_aggregation_month_year_all():
    frame = _frame(
        [
            [JAN + 1, "A", 1.1, 1.0, "F1", 1.0, "a"],
            [JAN + 14 * DAY, "A", 1.1, 1.0, "F1", 3.0, "a"],
            [FEB + 1, "A", 1.1, 1.0, "F1", 1.5, "a"],
            [JAN + 2, "B", 2.1, 2.0, "F1", np.nan, "a"],
            [JAN + 3, "B", 2.1, 2.0, "F1", np.nan, "a"],
            [JAN + 4, "A", 1.1, 1.0, "F1", 5.0, "b"],
            [Y2023, "A", 1.1, 1.0, "F1", 2.0, "a"],
        ],
        ["timestamp", "country", "lat", "lng", "feature", "value", "q"],
    )
    month = recipe.temporal_aggregation(frame, "month", "")
    assert list(month.columns) == ["timestamp", "country", "lat", "lng", "feature", "q", "t_sum", "t_mean"]
    got = month[["timestamp", "country", "q", "t_sum", "t_mean"]].values.tolist()
    # B's two values are NaN: t_sum 0, t_mean NaN; groups in order of first appearance
    assert got[0] == [JAN, "A", "a", 4.0, 2.0]
    assert got[1] == [FEB, "A", "a", 1.5, 1.5]
    assert got[2][:4] == [JAN, "B", "a", 0.0] and math.isnan(got[2][4])
    assert got[3] == [JAN, "A", "b", 5.0, 5.0]
    assert got[4] == [Y2023, "A", "a", 2.0, 2.0]
    year = recipe.temporal_aggregation(frame, "year", "")
    assert year[["timestamp", "country", "q", "t_sum"]].values.tolist() == [
        [JAN, "A", "a", 5.5],
        [JAN, "B", "a", 0.0],
        [JAN, "A", "b", 5.0],
        [Y2023, "A", "a", 2.0],
    ]
    everything = recipe.temporal_aggregation(frame, "all", "")
    # A/a over all time: 1 + 3 + 1.5 + 2 = 7.5 over 4 rows = 1.875
    assert everything[["timestamp", "country", "q", "t_sum", "t_mean"]].values.tolist()[0] == [
        0,
        "A",
        "a",
        7.5,
        1.875,
    ]


def test_temporal_keeps_rows_without_coordinates_and_drops_null_features():
    frame = _frame(
        [
            [JAN, np.nan, np.nan, "F", 1.0],
            [JAN + 1, np.nan, np.nan, "F", 2.0],
            [JAN, 1.0, np.nan, "F", 4.0],
            [JAN, 1.0, 1.0, None, 8.0],
        ],
        ["timestamp", "lat", "lng", "feature", "value"],
    )
    points = recipe.temporal_aggregation(frame, "month", "")
    assert points["t_sum"].tolist() == [3.0, 4.0]  # the reference would have lost both (NaN group keys)
    assert points["lat"].isna().tolist() == [True, False]


def test_temporal_weighted_average_by_hand():
    frame = _frame(
        [
            [JAN, "F", 1.0, 1.0],
            [JAN + 1, "F", 3.0, 3.0],
            [FEB, "F", np.nan, 2.0],
            [FEB + 1, "F", 4.0, 2.0],
        ],
        ["timestamp", "feature", "value", "w"],
    )
    points = recipe.temporal_aggregation(frame, "month", "w")
    assert list(points.columns) == ["timestamp", "feature", "t_sum", "t_mean", "w", "t_wavg"]
    # Jan: t_wavg (1*1 + 3*3) / (1 + 3) = 2.5, weight mean 2; Feb: (4*2) / (2 + 2) = 2.0 (NaN value's weight counts)
    assert points[["t_sum", "t_mean", "w", "t_wavg"]].values.tolist() == [
        [4.0, 2.0, 2.0, 2.5],
        [4.0, 4.0, 2.0, 2.0],
    ]


# ================================================================ 5. spatial aggregation


def test_spatial_sum_mean_count_by_hand():
    points = _frame(
        [
            [JAN, "x", 4.0, 2.0, 1.0, 1.0],
            [JAN, "y", 10.0, 5.0, 2.0, 3.0],
            [JAN, "z", 8.0, np.nan, 1.0, np.nan],
            [FEB, "x", 6.0, 3.0, 4.0, 2.0],
        ],
        ["timestamp", "place", "t_sum", "t_mean", "w", "t_wavg"],
    )
    table, columns = recipe.spatial_aggregation(points, ["timestamp"])
    assert columns == ["s_sum_t_sum", "s_mean_t_sum", "s_sum_t_mean", "s_mean_t_mean", "s_count"]
    # Jan: sum 22, mean 22/3; t_mean sum 7 (NaN skipped), mean 7/2; count of non-NaN t_mean 2
    assert table.values.tolist()[0] == [JAN, 22.0, 22.0 / 3, 7.0, 3.5, 2]
    assert table.values.tolist()[1] == [FEB, 6.0, 6.0, 3.0, 3.0, 1]

    weighted, columns = recipe.spatial_aggregation(points, ["timestamp"], ("sum", "mean"), "w")
    assert columns[5:] == ["s_sum_t_wavg", "s_mean_t_wavg", "s_wavg_t_sum", "s_wavg_t_mean", "s_wavg_t_wavg"]
    jan = weighted.iloc[0]
    assert jan["s_sum_t_wavg"] == 4.0 and jan["s_mean_t_wavg"] == 2.0
    assert jan["s_wavg_t_sum"] == (4 * 1 + 10 * 2 + 8 * 1) / 4  # 8.0
    assert jan["s_wavg_t_mean"] == (2 * 1 + 5 * 2) / 4  # NaN * w skipped, w still in the denominator: 3.0
    assert jan["s_wavg_t_wavg"] == (1 * 1 + 3 * 2) / 4  # 1.75

    summary, columns = recipe.spatial_aggregation(points, ["timestamp"], recipe.SUMMARY_AGGS)
    assert columns[:4] == ["s_min_t_sum", "s_max_t_sum", "s_sum_t_sum", "s_mean_t_sum"]
    assert summary.iloc[0][["s_min_t_sum", "s_max_t_sum", "s_min_t_mean", "s_max_t_mean"]].tolist() == [
        4.0,
        10.0,
        2.0,
        5.0,
    ]


# ================================================================ 6-8. global and regional outputs


def test_global_timeseries_csv_exactly():
    points = _frame(
        [
            [FEB, "Ethiopia", 6.0, 3.0],
            [JAN, "Ethiopia", 4.0, 2.0],
            [JAN, "South Sudan", 60.0, 30.0],
            [FEB, "South Sudan", 80.0, 0.8],
        ],
        ["timestamp", "country", "t_sum", "t_mean"],
    )
    assert _csv(recipe.global_timeseries(points, "")) == (
        "timestamp,s_sum_t_sum,s_mean_t_sum,s_sum_t_mean,s_mean_t_mean,s_count\n"
        "1640995200000,64.0,32.0,32.0,16.0,2\n"
        "1643673600000,86.0,43.0,3.8,1.9,2\n"
    )


def test_qualifier_timeseries_column_order_and_empty_cells():
    # Input order: (Feb, b) first, then Jan z, Jan a, Feb a. Columns: Jan's values in input order (z, a), then b.
    points = _frame(
        [
            [FEB, "b", 1.0, 1.0],
            [JAN, "z", 2.0, 2.0],
            [JAN, "a", 4.0, 4.0],
            [JAN, "a", 6.0, np.nan],
            [FEB, "a", 8.0, 8.0],
        ],
        ["timestamp", "q", "t_sum", "t_mean"],
    )
    tables = recipe.qualifier_timeseries(points, "q", "")
    assert list(tables) == ["s_sum_t_sum", "s_mean_t_sum", "s_sum_t_mean", "s_mean_t_mean", "s_count"]
    assert _csv(tables["s_sum_t_sum"]) == "timestamp,z,a,b\n1640995200000,2.0,10.0,\n1643673600000,,8.0,1.0\n"
    # a has a count in both periods: integers; z and b miss one: floats, as the reference's frame of dicts
    assert _csv(tables["s_count"]) == "timestamp,z,a,b\n1640995200000,1.0,1,\n1643673600000,,1,1.0\n"
    assert (
        _csv(tables["s_mean_t_mean"]) == "timestamp,z,a,b\n1640995200000,2.0,4.0,\n1643673600000,,8.0,1.0\n"
    )


def _regional_points() -> pd.DataFrame:
    # The reference's own regional test input at t=0 and t=1 (t_sum, t_mean per point)
    return _frame(
        [
            [0, "A", "AA", "AAA", "AAAA", 4.0, 2.0],
            [0, "A", "AA", "AAA", "AAAA", 10.0, 5.0],
            [0, "A", "AA", "AAB", "AABD", 8.0, 4.0],
            [0, "A", "AA", "AAB", "AABE", 3.0, 1.0],
            [0, "B", "BA", "BAB", "BABB", 60.0, 30.0],
            [0, "B", "BB", "BBB", "BBBB", 10.0, 2.0],
            [1, "A", "AA", "AAA", "AAAA", 2.0, 1.0],
            [1, "A", "AA", "AAA", "AAAA", 4.0, 1.0],
            [1, "A", "AA", "AAB", "AABD", 8.0, 2.0],
            [1, "A", "AA", "AAB", "AABE", 10.0, 2.0],
            [1, "B", "BA", "BAB", "BABB", 90.0, 30.0],
            [1, "B", "BB", "BBB", "BBBB", 80.0, 20.0],
        ],
        ["timestamp", "country", "admin1", "admin2", "admin3", "t_sum", "t_mean"],
    )


def test_regional_aggregates_by_hand():
    points = _regional_points()
    aggregates = {
        (a.level, a.timestamp, a.qualifier): a.table
        for a in recipe.regional_aggregates(points, list(recipe.REGION_LEVELS), [], "")
    }
    assert len(aggregates) == 8  # 4 levels x 2 periods
    # A__AA at t=1: t_sum 2+4+8+10 = 24, mean 6; t_mean 1+1+2+2 = 6, mean 1.5; 4 points (the spec's row)
    assert _csv(aggregates[("admin1", 1, None)]) == (
        "id,s_sum_t_sum,s_mean_t_sum,s_sum_t_mean,s_mean_t_mean,s_count\n"
        "A__AA,24.0,6.0,6.0,1.5,4\n"
        "B__BA,90.0,90.0,30.0,30.0,1\n"
        "B__BB,80.0,80.0,20.0,20.0,1\n"
    )
    # country A at t=0: 4+10+8+3 = 25, /4 = 6.25; 2+5+4+1 = 12, /4 = 3
    assert aggregates[("country", 0, None)].values.tolist()[0] == ["A", 25.0, 6.25, 12.0, 3.0, 4]


def test_regional_qualifier_aggregates_by_hand():
    points = _frame(
        [
            [0, "A", "AA", "qa", "q1", 4.0, 2.0],
            [0, "A", "AB", "qa", "q1", 10.0, 5.0],
            [0, "A", "AA", "qa", "q2", 4.0, 2.0],
            [0, "A", "AB", "qb", "q2", 10.0, 5.0],
        ],
        ["timestamp", "country", "admin1", "qual1", "qual2", "t_sum", "t_mean"],
    )
    got = {
        (a.level, a.qualifier): a.table
        for a in recipe.regional_aggregates(points, ["country", "admin1"], ["qual2"], "")
    }
    assert set(got) == {("country", None), ("country", "qual2"), ("admin1", None), ("admin1", "qual2")}
    assert _csv(got[("country", "qual2")]) == (
        "id,qualifier,s_sum_t_sum,s_mean_t_sum,s_sum_t_mean,s_mean_t_mean,s_count\n"
        "A,q1,14.0,7.0,7.0,3.5,2\n"
        "A,q2,14.0,7.0,7.0,3.5,2\n"
    )


def test_regional_extrema_newest_first_and_capped():
    regional = _frame(
        [[1, "A", 20.0], [2, "A", 10.0], [3, "A", 10.0], [1, "B", 20.0], [2, "B", 20.0], [3, "B", 10.0]],
        ["timestamp", "region_id", "s_sum_t_sum"],
    )
    regional["s_mean_t_mean"] = np.nan
    result = recipe.regional_extrema(regional, ["s_sum_t_sum", "s_mean_t_mean"])
    assert result["min"]["s_sum_t_sum"] == [
        {"region_id": "A", "timestamp": 3, "value": 10.0},
        {"region_id": "B", "timestamp": 3, "value": 10.0},
        {"region_id": "A", "timestamp": 2, "value": 10.0},
    ]
    assert [(r["region_id"], r["timestamp"]) for r in result["max"]["s_sum_t_sum"]] == [
        ("B", 2),
        ("A", 1),
        ("B", 1),
    ]
    assert result["min"]["s_mean_t_mean"] == [] and result["max"]["s_mean_t_mean"] == []
    many = _frame([[t, "A", 1.0] for t in range(1, 23)], ["timestamp", "region_id", "s_sum_t_sum"])
    capped = recipe.regional_extrema(many, ["s_sum_t_sum"])["max"]["s_sum_t_sum"]
    assert [r["timestamp"] for r in capped] == list(range(22, 2, -1))  # 20 newest of 22


def test_regional_extrema_by_level_leaves_out_count():
    documents = recipe.regional_extrema_by_level(_regional_points(), list(recipe.REGION_LEVELS), "")
    assert list(documents) == list(recipe.REGION_LEVELS)
    country = documents["country"]
    assert list(country["min"]) == ["s_sum_t_sum", "s_mean_t_sum", "s_sum_t_mean", "s_mean_t_mean"]
    # country rows: A t0 25, B t0 70, A t1 24, B t1 170
    assert country["min"]["s_sum_t_sum"] == [{"region_id": "A", "timestamp": 1, "value": 24.0}]
    assert country["max"]["s_sum_t_sum"] == [{"region_id": "B", "timestamp": 1, "value": 170.0}]


def test_regional_series_thresholds():
    points = _frame(
        [
            [0, "A", "AA", "qa", "q1", 4.0, 2.0],
            [0, "A", "AB", "qa", "q1", 10.0, 5.0],
            [1, "A", "AA", "qa", "q2", 16.0, 4.0],
            [1, "A", "AB", "qa", "q2", 30.0, 15.0],
        ],
        ["timestamp", "country", "admin1", "qual1", "qual2", "t_sum", "t_mean"],
    )
    items = list(recipe.regional_timeseries(points, ["country", "admin1"], ["qual2"], 0, ""))
    names = sorted((i.level, i.region_id, i.qualifier or "", i.qualifier_value or "") for i in items)
    assert names == [
        ("admin1", "A__AA", "", ""),
        ("admin1", "A__AB", "", ""),  # level 1 > max level 0: no qualifier series
        ("country", "A", "", ""),
        ("country", "A", "qual2", "q1"),
        ("country", "A", "qual2", "q2"),
    ]
    by_name = {(i.level, i.region_id, i.qualifier_value): i.table for i in items}
    assert _csv(by_name[("country", "A", None)]) == (
        "timestamp,s_sum_t_sum,s_mean_t_sum,s_sum_t_mean,s_mean_t_mean,s_count\n0,14.0,7.0,7.0,3.5,2\n1,46.0,23.0,19.0,9.5,2\n"
    )
    assert _csv(by_name[("country", "A", "q2")]) == (
        "timestamp,s_sum_t_sum,s_mean_t_sum,s_sum_t_mean,s_mean_t_mean,s_count\n1,46.0,23.0,19.0,9.5,2\n"
    )
    # with a gap, a series level is named after its column and its ids join up to that column's level
    gap = _frame([[0, "E", "Z", 1.0, 1.0]], ["timestamp", "country", "admin2", "t_sum", "t_mean"])
    assert [
        (i.level, i.region_id) for i in recipe.regional_timeseries(gap, ["country", "admin2"], [], 1, "")
    ] == [("country", "E"), ("admin2", "E__None__Z")]


# ================================================================ 9-10. tiles and grid stats


def test_cells_at_known_points_by_hand():
    # x = int((lng + 180) / 360 * 16384), y = int((1 - asinh(tan(lat)) / pi) / 2 * 16384), truncated toward zero
    lat = np.array([0.0, 10.168, 9.55, -10.0, 89.0])
    lng = np.array([0.0, 40.646, 31.65, -60.0, 10.0])
    # (0,0): 180/360*16384 = 8192; asinh(tan 0) = 0 -> 8192
    # (10.168, 40.646): 220.646/360*16384 = 10041.84; tan 0.17747 rad = 0.17933, asinh 0.17839, /pi 0.05678,
    #                   (1 - 0.05678)/2*16384 = 7726.79
    # (9.55, 31.65): 211.65/360*16384 = 9632.43; tan = 0.16823, asinh 0.16745, /pi 0.05330 -> 7755.34
    # (-10, -60): 120/360*16384 = 5461.33; tan -0.17633, asinh -0.17543, /pi -0.05584, (1.05584)/2*16384 = 8649.44
    # (89, 10): 190/360*16384 = 8647.11; tan 57.29, asinh 4.7413, /pi 1.50922, (1 - 1.50922)/2*16384 = -4171.5 -> -4171
    assert recipe.cell_x(lng).astype(int).tolist() == [8192, 10041, 9632, 5461, 8647]
    assert recipe.cell_y(lat).astype(int).tolist() == [8192, 7726, 7755, 8649, -4171]


def _cells() -> pd.DataFrame:
    return _frame(
        [
            [0, 10041, 7726, 96.0, 48.0, 3],
            [0, 9632, 7755, 120.0, 60.0, 2],
            [0, 10040, 7726, 10.0, 1.0, 1],  # same level-13 parent as (10041, 7726)
        ],
        ["timestamp", "cell_x", "cell_y", "s_sum_t_sum", "s_sum_t_mean", "s_count"],
    )


def test_tile_bins_by_hand():
    tiles = {(t.timestamp, t.z, t.x, t.y): t for t in recipe.tiles_from_cells(_cells())}
    # tile x at cell level L is x >> (20 - L): 10041 >> 9 = 19 but 9632 >> 9 = 18, both >> 10 = 9; so the two
    # cells have separate tiles at z8..z5 and share one at z4..z0: 4 * 2 + 5
    assert len(tiles) == 13
    # z8 (level 14): (10041>>6, 7726>>6) = (156, 120); bin (10041 - 9984) + (7726 - 7680) * 64 = 57 + 2944 = 3001
    z8 = tiles[(0, 8, 156, 120)]
    assert dict(zip(z8.bins.tolist(), z8.s_sum_t_sum.tolist(), strict=True)) == {3001: 96.0, 3000: 10.0}
    # z7 (level 13): parents (5020, 3863) from both 10041 and 10040; tile (78, 60); bin 28 + 23 * 64 = 1500
    z7 = tiles[(0, 7, 78, 60)]
    assert z7.bins.tolist() == [1500]
    assert (z7.s_sum_t_sum.tolist(), z7.s_sum_t_mean.tolist(), z7.weight.tolist()) == ([106.0], [49.0], [4.0])
    # z0 (level 6): parents (10041>>8, 7726>>8) = (39, 30) -> bin 39 + 30*64 = 1959; (9632>>8, 7755>>8) = (37, 30) -> 1957
    z0 = tiles[(0, 0, 0, 0)]
    assert dict(zip(z0.bins.tolist(), z0.weight.tolist(), strict=True)) == {1957: 2.0, 1959: 4.0}
    decoded = decode_tile(z0.encode())
    assert (decoded.z, decoded.x, decoded.y, decoded.total_bins) == (0, 0, 0, 4096)
    assert decoded.stats == {
        1957: TileStats(s_sum_t_sum=120.0, s_sum_t_mean=60.0, weight=2.0),
        1959: TileStats(s_sum_t_sum=106.0, s_sum_t_mean=49.0, weight=4.0),
    }


def test_tiles_skip_negative_rows_but_grid_stats_keep_them():
    cells = _frame(
        [[5, 8647, -4171, 1.0, 1.0, 1]],
        ["timestamp", "cell_x", "cell_y", "s_sum_t_sum", "s_sum_t_mean", "s_count"],
    )
    assert list(recipe.tiles_from_cells(cells)) == []
    assert list(recipe.grid_stats(cells)) == [5]


def test_bins_add_sequentially_in_cell_order():
    # 1e16 + 1 + 1 in that order is 1e16 (each +1 is lost); a compensated sum would give 1e16 + 2
    cells = _frame(
        [[0, 0, 0, 1e16, 0.0, 1], [0, 1, 0, 1.0, 0.0, 1], [0, 0, 1, 1.0, 0.0, 1]],
        ["timestamp", "cell_x", "cell_y", "s_sum_t_sum", "s_sum_t_mean", "s_count"],
    )
    top = [t for t in recipe.tiles_from_cells(cells) if t.z == 7]
    assert [t.s_sum_t_sum.tolist() for t in top] == [[1e16]]


def test_grid_stats_by_hand():
    stats = recipe.grid_stats(_cells())
    assert list(stats) == [0]
    table = stats[0]
    assert list(table.columns) == list(recipe.GRID_STATS_COLUMNS)
    assert table["zoom"].tolist() == list(range(6, 15))
    # level 14: cells 96/3, 120/2, 10/1 -> sums min 10 max 120; t_mean sums 1..60; means 10..60, 1..30
    assert table.iloc[8].tolist() == [14, 10.0, 120.0, 1.0, 60.0, 10.0, 60.0, 1.0, 30.0]
    # level <= 13: (96+10)/4 and 120/2 -> sums 106, 120; t_mean 49, 60; means 26.5, 60; 12.25, 30
    assert table.iloc[0].tolist() == [6, 106.0, 120.0, 49.0, 60.0, 26.5, 60.0, 12.25, 30.0]
    assert _csv(table).splitlines()[0] == ",".join(recipe.GRID_STATS_COLUMNS)


def test_tile_cells_leave_out_points_without_coordinates():
    points = _frame(
        [
            [0, 10.168, 40.646, 4.0, 2.0],
            [0, 10.1681, 40.6461, 8.0, np.nan],  # same z14 cell
            [0, np.nan, 40.0, 100.0, 100.0],
            [0, 10.0, np.nan, 100.0, 100.0],
        ],
        ["timestamp", "lat", "lng", "t_sum", "t_mean"],
    )
    cells = recipe.tile_cells(points)
    assert cells.values.tolist() == [[0, 10041, 7726, 12.0, 2.0, 1]]
    assert recipe.tile_cells(points.drop(columns=["lat"])).empty


# ================================================================ 11. summary, results, serialisers


def test_output_summary_rounds_like_the_reference():
    points = _frame(
        [
            [0, "F", 1.0, 1.0 / 3.0],
            [0, "F", 2.0, 0.5],
            [0, "F", 0.0, np.nan],
        ],
        ["timestamp", "feature", "t_sum", "t_mean"],
    )
    (summary,) = recipe.output_summary(points, "")
    assert summary == {
        "name": "F",
        "s_min_t_sum": 0.0,
        "s_max_t_sum": 2.0,
        "s_sum_t_sum": 3.0,
        "s_mean_t_sum": 1.0,
        "s_min_t_mean": 0.3333333333,  # 10 decimals
        "s_max_t_mean": 0.5,
        "s_sum_t_mean": 0.8333333333,
        "s_mean_t_mean": 0.4166666667,
    }


def test_results_document_and_json_bytes():
    document = recipe.results_document(
        num_rows=120,
        rows_per_feature={"f1": 60, "f2": 60},
        num_missing_ts=5,
        num_invalid_ts=10,
        num_missing_val=1,
        present_regions=["country", "admin1"],
        features=["f1", "f2"],
        raw_count_threshold=30,
        has_tiles=True,
        weight_column="",
        month_timeseries_size={"f1": 20, "f2": 30},
        year_timeseries_size={"f1": 10, "f2": 10},
        output_agg_values=None,
    )
    assert recipe.json_bytes(document).decode() == (
        '{"data_info": {"num_rows": 120, "num_rows_per_feature": {"f1": 60, "f2": 60}, "num_missing_ts": 5, '
        '"num_invalid_ts": 10, "num_missing_val": 1, "region_levels": ["country", "admin1", "grid data"], '
        '"features": ["f1", "f2"], "raw_count_threshold": 30, "has_tiles": true, "has_monthly": true, '
        '"has_annual": true, "has_weights": false, "month_timeseries_size": {"f1": 20, "f2": 30}, '
        '"year_timeseries_size": {"f1": 10, "f2": 10}}}'
    )
    assert recipe.json_bytes(["Café"]) == b'["Caf\\u00e9"]'


# ================================================================ the whole run


def _run_input() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": [JAN + 1, JAN + 2, JAN + 3],
            "country": ["E", "E", "E"],
            "lat": [0.0, 0.0, np.nan],
            "lng": [0.0, 0.0, np.nan],
            "feature": ["F", "F", "F"],
            "value": [1.0, 2.0, 4.0],
        }
    )


def test_whole_run_keys_and_the_point_without_coordinates():
    out = recipe.run_in_memory(
        [("in.parquet.gzip", _run_input())], recipe.Parameters("d", "r", is_indicator=True)
    )
    per_period = [
        "timeseries/global/global.csv",
        "regional/country/stats/default/extrema.json",
        "regional/country/timeseries/default/E.csv",
        f"regional/country/aggs/{JAN}/default/default.csv",
        f"stats/grid/{JAN}.csv",
        # one cell (8192, 8192): tile z = L - 6 at (8192 >> (14 - L)) >> 6 for L = 14..6
        *[f"tiles/{JAN}-{z}-{2**z // 2}-{2**z // 2}.tile" for z in range(9)],
    ]
    expected = {
        "d/r/raw/F/raw/raw.csv",
        "d/r/raw/F/info/region_lists.json",
        "d/r/raw/F/info/qualifier_counts.json",
        "d/r/results/results.json",
        *(f"d/r/{res}/F/{name}" for res in ("month", "year") for name in per_period),
    }
    assert set(out) == expected
    # points: (0, 0) with t_sum 1 + 2 = 3, t_mean 1.5; the one without coordinates t_sum 4, t_mean 4.
    # It counts in the series (7, 7/2, 5.5, 5.5/2, 2 points) but not in the grid (3, 1.5, one point)
    assert (
        out["d/r/month/F/timeseries/global/global.csv"].decode().splitlines()[1]
        == f"{JAN},7.0,3.5,5.5,2.75,2"
    )
    assert (
        out[f"d/r/month/F/stats/grid/{JAN}.csv"].decode().splitlines()[1]
        == "6,3.0,3.0,1.5,1.5,3.0,3.0,1.5,1.5"
    )
    results = json.loads(out["d/r/results/results.json"])
    assert results["data_info"]["region_levels"] == ["country", "grid data"]
    assert results["data_info"]["month_timeseries_size"] == {"F": 1}
    assert "output_agg_values" not in results  # indicator
    assert json.loads(out["d/r/raw/F/info/qualifier_counts.json"]) == {
        "thresholds": recipe.DEFAULT_QUALIFIER_THRESHOLDS,
        "counts": {},
    }


def test_whole_run_without_coordinates_or_regions_with_qualifiers():
    frame = pd.DataFrame(
        {
            "timestamp": [JAN, JAN, FEB],
            "feature": ["F", "F", "F"],
            "value": [1.0, 2.0, 3.0],
            "camp": ["a", "b", "a"],
            "big": ["1", "2", "3"],
        }
    )
    thresholds = {"max_count": 2, "regional_timeseries_count": 1, "regional_timeseries_max_level": 1}
    params = recipe.Parameters(
        "d", "r", qualifier_map={"F": ["camp", "big"]}, qualifier_thresholds=thresholds
    )
    out = recipe.run_in_memory([("in.parquet", frame)], params)
    assert not any("/tiles/" in k or "/stats/grid/" in k or "/regional/" in k for k in out)
    assert "d/r/raw/F/info/region_lists.json" not in out
    assert json.loads(out["d/r/raw/F/info/qualifiers/big.json"]) == ["1", "2", "3"]
    # big has 3 values > max_count 2: no breakdown; camp has 2: broken down
    assert {k.split("/")[-2] for k in out if "/timeseries/qualifiers/" in k} == {"camp"}
    assert out["d/r/month/F/timeseries/qualifiers/camp/s_sum_t_sum.csv"].decode() == (
        f"timestamp,a,b\n{JAN},1.0,2.0\n{FEB},3.0,\n"
    )
    results = json.loads(out["d/r/results/results.json"])
    assert results["data_info"]["region_levels"] == [] and results["data_info"]["has_tiles"] is False
    assert results["output_agg_values"][0]["s_sum_t_sum"] == 6.0  # model: summary present
    assert layout.results_json("d", "r") in out


def test_encoded_tiles_are_the_tiles():
    cells = _cells()
    by_key = {(t.timestamp, t.z, t.x, t.y): t for t in recipe.tiles_from_cells(cells)}
    encoded = list(recipe.encoded_tiles(cells))
    assert [tuple(key) for *key, _ in encoded] == list(by_key)
    for *key, blob in encoded:
        assert blob == by_key[tuple(key)].encode()


def test_whole_run_with_weights_by_hand():
    frame = pd.DataFrame(
        {
            "timestamp": [JAN, JAN + 1, JAN],
            "country": ["E", "E", "E"],
            "lat": [0.0, 0.0, 10.0],
            "lng": [0.0, 0.0, 10.0],
            "feature": ["F", "F", "F"],
            "value": [2.0, 4.0, 6.0],
            "w": [1.0, 3.0, 2.0],
        }
    )
    out = recipe.run_in_memory([("in.parquet", frame)], recipe.Parameters("d", "r", weight_column="w"))
    # points: A (0,0) t_sum 6, t_mean 3, weight (1+3)/2 = 2, t_wavg (2*1 + 4*3)/4 = 3.5; B t_sum 6, t_mean 6, w 2, t_wavg 6
    # s_wavg_t_sum (6*2 + 6*2)/4 = 6; s_wavg_t_mean (3*2 + 6*2)/4 = 4.5; s_wavg_t_wavg (3.5*2 + 6*2)/4 = 4.75
    assert out["d/r/month/F/timeseries/global/global.csv"].decode() == (
        "timestamp,s_sum_t_sum,s_mean_t_sum,s_sum_t_mean,s_mean_t_mean,s_count,"
        "s_sum_t_wavg,s_mean_t_wavg,s_wavg_t_sum,s_wavg_t_mean,s_wavg_t_wavg\n"
        f"{JAN},12.0,6.0,9.0,4.5,2,9.5,4.75,6.0,4.5,4.75\n"
    )
    assert out[f"d/r/month/F/regional/country/aggs/{JAN}/default/default.csv"].decode().splitlines()[1] == (
        "E,12.0,6.0,9.0,4.5,2,9.5,4.75,6.0,4.5,4.75"
    )
    extrema = json.loads(out["d/r/month/F/regional/country/stats/default/extrema.json"])
    assert extrema["max"]["s_wavg_t_wavg"] == [{"region_id": "E", "timestamp": JAN, "value": 4.75}]
    results = json.loads(out["d/r/results/results.json"])
    assert results["data_info"]["has_weights"] is True
    assert results["output_agg_values"] == [
        {
            "name": "F",
            "s_min_t_sum": 6.0,
            "s_max_t_sum": 6.0,
            "s_sum_t_sum": 12.0,
            "s_mean_t_sum": 6.0,
            "s_min_t_mean": 3.0,
            "s_max_t_mean": 6.0,
            "s_sum_t_mean": 9.0,
            "s_mean_t_mean": 4.5,
            "s_min_t_wavg": 3.5,
            "s_max_t_wavg": 6.0,
            "s_sum_t_wavg": 9.5,
            "s_mean_t_wavg": 4.75,
            "s_wavg_t_sum": 6.0,
            "s_wavg_t_mean": 4.5,
            "s_wavg_t_wavg": 4.75,
        }
    ]
    # tiles carry counts, not weights: the (0,0) point's bin at z8 has weight 1 (one point)
    tile = decode_tile(out[f"d/r/month/F/tiles/{JAN}-8-128-128.tile"])
    assert [(s.s_sum_t_sum, s.s_sum_t_mean, s.weight) for s in tile.stats.values()] == [(6.0, 3.0, 1.0)]


def test_feature_qualifiers_follow_the_reference_lookup():
    limited = {"F": ["camp", "camp", "kind"], "7": ["camp"]}
    assert recipe.feature_qualifiers(limited, "F") == ["camp", "kind"]
    assert recipe.feature_qualifiers(limited, "G") == []
    assert recipe.feature_qualifiers(limited, 7) == []  # numeric feature value: the reference's lookup misses
    frame = pd.DataFrame(
        {"timestamp": [JAN, JAN], "feature": [7, 7], "value": [1.0, 2.0], "camp": ["a", "b"]}
    )
    out = recipe.run_in_memory(
        [("one.parquet", frame)], recipe.Parameters("d", "r", qualifier_map={"7": ["camp"]})
    )
    assert "d/r/raw/7/info/qualifiers/camp.json" in out
    assert not any("/qualifiers/" in k for k in out if "/month/" in k or "/year/" in k)
    assert json.loads(out["d/r/results/results.json"])["data_info"]["features"] == [7]
