"""The HLS monthly median recipe, cell by cell on small hand-made arrays (expected values worked
out by hand, shown next to each), and the fast composite proven bit-equal to np.nanmedian."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.hls import recipe

N_BANDS = len(recipe.BANDS)
RED = recipe.BANDS.index("red")
SWIR1 = recipe.BANDS.index("swir1")


def test_band_and_asset_tables():
    assert recipe.BANDS == ("coastal", "blue", "green", "red", "nir_narrow", "swir1", "swir2", "cirrus")
    assert (*recipe.BANDS, "valid_count") == recipe.OUTPUT_BANDS
    assert recipe.ASSET_KEYS["hls2-l30"] == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09")
    assert recipe.ASSET_KEYS["hls2-s30"] == ("B01", "B02", "B03", "B04", "B8A", "B11", "B12", "B10")
    assert recipe.FMASK_KEY == "Fmask"


@pytest.mark.parametrize(
    "value, usable",
    [
        (0, True),  # clear
        (1 << 0, True),  # cirrus: kept
        (1 << 1, False),  # cloud
        (1 << 2, False),  # adjacent to cloud/shadow
        (1 << 3, False),  # cloud shadow
        (1 << 4, True),  # snow/ice: kept
        (1 << 5, True),  # water: kept
        (1 << 6, True),  # aerosol level 1 (low)
        (1 << 7, True),  # aerosol level 2 (moderate)
        (3 << 6, False),  # aerosol level 3 (high)
        (255, False),  # fill
        (1 | 16 | 32 | 128, True),  # cirrus + snow + water + moderate aerosol: all kept
        (16 | 32 | 8, False),  # snow + water + shadow
        (3 << 6 | 1, False),  # high aerosol over cirrus
        (254, False),  # everything but cirrus
    ],
)
def test_fmask_each_bit(value, usable):
    assert recipe.fmask_value_usable(value) is usable
    assert recipe.fmask_usable(np.array([[value]], dtype=np.uint8)).tolist() == [[usable]]


def test_fmask_array_matches_the_bit_rule_over_all_values():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    v = values.astype(int)
    rule = ((v & 0b1110) == 0) & (((v >> 6) & 3) != 3) & (v != 255)
    assert np.array_equal(recipe.fmask_usable(values), rule)
    assert np.array_equal(
        recipe.fmask_usable(values).reshape(-1), [recipe.fmask_value_usable(v) for v in range(256)]
    )
    with pytest.raises(TypeError):
        recipe.fmask_usable(values.astype(np.int16))


def _block(values_per_scene, fmask_per_scene):
    """bands (n, 8, 1, cols) with the same values in every band, and fmask (n, 1, cols)."""
    values = np.array(values_per_scene, dtype=np.int16)[:, None, None, :]
    bands = np.repeat(values, N_BANDS, axis=1).copy()
    fmask = np.array(fmask_per_scene, dtype=np.uint8)[:, None, :]
    return bands, fmask


def test_composite_by_hand():
    # 4 scenes x 6 pixels; band k holds the listed value + k (boundary pixels c3 red, c5 excepted).
    bands, fmask = _block(
        [
            [100, 5000, 1, 10, 1, 0],
            [9000, 400, 2, 20, 2, 10000],
            [300, 600, 3, 31, 3, 10000],
            [700, 7, 4, 40, 4, 0],
        ],
        [
            [0, 3 << 6, 255, 0, 2, 0],
            [2, 16, 0, 0, 255, 0],
            [0, 32, 8, 0, 3 << 6, 0],
            [0, 1, 4, 0, 8, 0],
        ],
    )
    bands[:, :, :, :5] += np.arange(N_BANDS, dtype=np.int16)[None, :, None, None]
    bands[:, RED, 0, 3] = [-9999, 23, 10001, 43]  # fill and one-too-high: out for red only
    bands[:, SWIR1, 0, 5] = -9999  # swir1 all fill at c5: NaN there, valid_count unaffected
    out = recipe.composite_block(bands, fmask)
    assert out.shape == (9, 1, 6) and out.dtype == np.float32
    k = np.arange(N_BANDS, dtype=np.float32)
    # c0: scene 1 cloud -> {100, 300, 700} + k -> 300 + k
    assert out[:N_BANDS, 0, 0].tolist() == (300 + k).tolist()
    # c1: scene 0 high aerosol; snow, water, cirrus kept -> {400, 600, 7} + k -> 400 + k
    assert out[:N_BANDS, 0, 1].tolist() == (400 + k).tolist()
    # c2: fill, shadow, adjacent out -> {2} + k
    assert out[:N_BANDS, 0, 2].tolist() == (2 + k).tolist()
    # c3: all clear, {10, 20, 31, 40} + k -> even: (20 + 31) / 2 + k = 25.5 + k; red: {23, 43} -> 33
    expected_c3 = (25.5 + k).tolist()
    expected_c3[RED] = 33.0
    assert out[:N_BANDS, 0, 3].tolist() == expected_c3
    # c4: cloud, fill, high aerosol, shadow: nothing usable
    assert np.isnan(out[:N_BANDS, 0, 4]).all()
    # c5: 0 and 10000 are inside the range: {0, 10000, 10000, 0} -> (0 + 10000) / 2; swir1 all fill -> NaN
    expected_c5 = [5000.0] * N_BANDS
    expected_c5[SWIR1] = np.nan
    np.testing.assert_array_equal(out[:N_BANDS, 0, 5], expected_c5)
    # valid_count is the Fmask test only: c3 counts all 4 despite red's range test, c5 all 4 despite swir1
    assert out[recipe.VALID_COUNT_INDEX, 0].tolist() == [3, 3, 1, 4, 0, 4]


def test_composite_one_and_two_scenes():
    one, fmask_one = _block([[42, 7, -9999]], [[0, 2, 0]])
    out = recipe.composite_block(one, fmask_one)
    np.testing.assert_array_equal(out[0, 0], [42, np.nan, np.nan])
    assert out[8, 0].tolist() == [1, 0, 1]
    two, fmask_two = _block([[1, 5, 9], [2, 6, 10]], [[0, 0, 2], [0, 64, 0]])
    out = recipe.composite_block(two, fmask_two)
    assert out[0, 0].tolist() == [1.5, 5.5, 10.0]  # even count: mean of the two middle ones
    assert out[8, 0].tolist() == [2, 2, 1]


def test_composite_leaves_its_inputs_alone():
    bands, fmask = _block([[3, 1], [2, 4], [1, 9]], [[0, 2], [0, 0], [255, 0]])
    bands_before, fmask_before = bands.copy(), fmask.copy()
    recipe.composite_block(bands, fmask)
    assert np.array_equal(bands, bands_before) and np.array_equal(fmask, fmask_before)


def test_composite_refuses_bad_blocks():
    bands, fmask = _block([[1, 2]], [[0, 0]])
    with pytest.raises(ValueError, match="at least one scene"):
        recipe.composite_block(bands[:0], fmask[:0])
    with pytest.raises(ValueError):
        recipe.composite_block(bands[:, :7], fmask)
    with pytest.raises(ValueError):
        recipe.composite_block(bands, fmask[:, :, :1])
    with pytest.raises(TypeError):
        recipe.composite_block(bands.astype(np.int32), fmask)
    with pytest.raises(TypeError):
        recipe.composite_block(bands, fmask.astype(np.int16))


def _nanmedian_composite(bands, fmask):
    """The contract, literally: per band np.nanmedian over a float32 stack with NaN at unusable values."""
    usable = recipe.fmask_usable(fmask)
    out = np.empty((9, *fmask.shape[1:]), dtype=np.float32)
    for k in range(N_BANDS):
        v = bands[:, k]
        stack = np.where(usable & (v >= 0) & (v <= 10000), v.astype(np.float32), np.float32(np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice encountered"
            out[k] = np.nanmedian(stack, axis=0)
    out[8] = usable.sum(axis=0)
    return out


@pytest.mark.parametrize(
    "seed, n_scenes, rows, cols, cloudiness",
    [
        (0, 1, 8, 8, 0.3),
        (1, 2, 9, 7, 0.5),
        (2, 3, 16, 16, 0.0),
        (3, 4, 5, 11, 0.9),
        (4, 5, 16, 16, 0.5),
        (5, 8, 12, 12, 0.7),
        (6, 13, 16, 16, 0.4),
        (7, 17, 10, 10, 0.95),
        (8, 30, 20, 20, 0.5),
        (9, 33, 8, 8, 0.6),
        (10, 40, 16, 16, 0.8),
    ],
)
def test_composite_bit_equal_to_nanmedian(seed, n_scenes, rows, cols, cloudiness):
    rng = np.random.default_rng(seed)
    bands = rng.integers(0, 10001, size=(n_scenes, N_BANDS, rows, cols), dtype=np.int16)
    bands[rng.random(bands.shape) < 0.1] = recipe.REFLECTANCE_FILL
    bands[rng.random(bands.shape) < 0.05] = rng.integers(-32768, 32767, dtype=np.int16)  # anything in int16
    bands[rng.random(bands.shape) < 0.02] = 10001
    bands[rng.random(bands.shape) < 0.02] = 10000
    bands[rng.random(bands.shape) < 0.02] = 0
    bands[:, :, 0, 0] = bands[0, :, 0, 0]  # ties
    fmask = rng.integers(0, 256, size=(n_scenes, rows, cols), dtype=np.uint8) & np.uint8(
        0b0111_0001
    )  # usable bits only
    clouded = rng.random(fmask.shape) < cloudiness
    fmask[clouded] = rng.choice(np.array([2, 4, 8, 192, 255], dtype=np.uint8), size=int(clouded.sum()))
    fmask[:, rows - 1, :] = 2  # a row of all-masked pixels
    out = recipe.composite_block(bands, fmask)
    expected = _nanmedian_composite(bands, fmask)
    assert out.dtype == np.float32 and out.shape == (9, rows, cols)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))  # bit for bit, NaNs included
    counts = np.count_nonzero((bands >= 0) & (bands <= 10000) & recipe.fmask_usable(fmask)[:, None], axis=0)
    assert (
        (counts % 2 == 0).any() and (counts % 2 == 1).any() and (counts == 0).any()
    )  # every case was exercised


@pytest.mark.parametrize("n_scenes", range(1, 21))
def test_composite_bit_equal_to_nanmedian_for_every_scene_count_to_20(n_scenes):
    # Months have 2..20 scenes: every count, with every usable count 0..n at some pixel (so
    # all-NaN pixels and even counts), values spread over 0..10000 with ties and out-of-range ones.
    rng = np.random.default_rng(100 + n_scenes)
    rows, cols = 6, 64
    bands = rng.integers(0, 10001, size=(n_scenes, N_BANDS, rows, cols), dtype=np.int16)
    bands[rng.random(bands.shape) < 0.3] = rng.integers(0, 4, dtype=np.int16)  # many ties
    bands[rng.random(bands.shape) < 0.05] = recipe.REFLECTANCE_FILL
    bands[rng.random(bands.shape) < 0.03] = 10001
    fmask = np.zeros((n_scenes, rows, cols), dtype=np.uint8)
    wanted = np.arange(rows * cols).reshape(rows, cols) % (n_scenes + 1)  # usable scenes per pixel
    order = rng.permuted(np.broadcast_to(np.arange(n_scenes)[:, None, None], fmask.shape), axis=0)
    fmask[order >= wanted] = 2  # cloud: each pixel keeps `wanted` scenes, chosen at random
    out = recipe.composite_block(bands, fmask)
    expected = _nanmedian_composite(bands, fmask)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))  # bit for bit, NaNs included
    assert out[recipe.VALID_COUNT_INDEX].tolist() == wanted.tolist()
    counts = np.count_nonzero((bands >= 0) & (bands <= 10000) & recipe.fmask_usable(fmask)[:, None], axis=0)
    assert (counts == 0).any() and (n_scenes == 1 or (counts % 2 == 0).any())


@pytest.mark.parametrize("n_scenes", [3, recipe.SELECT_MAX_SCENES + 1])
def test_band_by_band_writes_into_a_view_of_a_larger_buffer(n_scenes):
    # The engine composites each window straight into its row of blocks: a strided view.
    rng = np.random.default_rng(n_scenes)
    bands = rng.integers(-100, 10100, size=(n_scenes, N_BANDS, 8, 6), dtype=np.int16)
    fmask = np.where(rng.random((n_scenes, 8, 6)) < 0.3, 2, 0).astype(np.uint8)
    buffer = np.full((9, 10, 20), -1.0, dtype=np.float32)
    view = buffer[:, 1:9, 7:13]
    block = recipe.BandByBand(fmask, view)
    for k in range(N_BANDS):
        block.band_values()[...] = bands[:, k]
        block.add_band(k)
    assert block.out is view
    expected = recipe.composite_block(bands, fmask)
    assert np.array_equal(view.view(np.uint32), expected.view(np.uint32))
    outside = np.ones(buffer.shape, dtype=bool)
    outside[:, 1:9, 7:13] = False
    assert (buffer[outside] == -1.0).all()  # nothing written outside the window
    with pytest.raises(ValueError):
        recipe.BandByBand(fmask, buffer[:, :8, :5])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 12, 20, 24])
def test_median_by_select_is_the_gathered_median(n):
    # The two ways of taking the median from the sorted planes agree bit for bit.
    rng = np.random.default_rng(n)
    work = rng.integers(0, 10001, size=(n + 1, 16, 16), dtype=np.uint16)
    work[:n, rng.random((16, 16)) < 0.2] = 0xFFFF  # no usable value at a fifth of the pixels
    work[rng.random(work.shape) < 0.3] = 0xFFFF
    count = recipe._count_usable(work, n)
    plane_of = recipe._sort_planes(work, n)
    gathered, selected = np.empty((16, 16), np.float32), np.empty((16, 16), np.float32)
    recipe._median_of_sorted(work, plane_of, count, out=gathered)
    recipe._median_by_select(work, plane_of, count, recipe._SelectScratch.of(16, 16), out=selected)
    assert np.array_equal(gathered.view(np.uint32), selected.view(np.uint32))
    assert np.isnan(selected[count == 0]).all() and (count == 0).any()


@pytest.mark.parametrize("n", range(1, 15))
def test_sorting_network_orders_the_lower_half_for_every_01_input(n):
    # 0-1 principle: a comparator network that selects correctly on all 0/1 inputs does on all inputs.
    inputs = np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.uint8).T.copy()  # (n, 2**n)
    for a, b in recipe.sorting_network(n):
        inputs[a], inputs[b] = np.minimum(inputs[a], inputs[b]), np.maximum(inputs[a], inputs[b])
    expected = np.sort(np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.uint8).T, axis=0)
    assert np.array_equal(inputs[: n // 2 + 1], expected[: n // 2 + 1])


def test_sorting_network_on_random_values_up_to_64():
    rng = np.random.default_rng(11)
    for n in range(1, 65):
        values = rng.integers(0, 50, size=(n, 200))
        for a, b in recipe.sorting_network(n):
            values[a], values[b] = np.minimum(values[a], values[b]), np.maximum(values[a], values[b])
        assert all(a < b < n for a, b in recipe.sorting_network(n))
        assert np.array_equal(values[: n // 2 + 1], np.sort(values, axis=0)[: n // 2 + 1]), n


@pytest.mark.parametrize(
    "col, row, chip_size, origin",
    [
        (100.2, 50.7, 32, (84, 35)),  # round(100.2) = 100, round(50.7) = 51; minus 16
        (10.5, 11.5, 32, (-6, -4)),  # exact halves go to the even integer: 10 and 12
        (2.5, 3.5, 4, (0, 2)),  # 2 - 2, 4 - 2
        (-0.5, 0.49999, 2, (-1, -1)),  # round(-0.5) = 0 and round(0.49999) = 0, minus 1
        (7.6, 7.4, 5, (6, 5)),  # odd chip: 8 - 2, 7 - 2
    ],
)
def test_chip_origin(col, row, chip_size, origin):
    assert recipe.chip_origin(col, row, chip_size) == origin
    assert all(type(v) is int for v in recipe.chip_origin(np.float32(col), np.float64(row), chip_size))


def test_chip_fits_at_the_edges():
    assert recipe.chip_fits(0, 0, 32, 100, 80)
    assert recipe.chip_fits(
        68, 48, 32, 100, 80
    )  # touches the last column and row: 68 + 32 = 100, 48 + 32 = 80
    assert not recipe.chip_fits(69, 48, 32, 100, 80)  # one column more
    assert not recipe.chip_fits(68, 49, 32, 100, 80)  # one row more
    assert not recipe.chip_fits(-1, 0, 32, 100, 80)
    assert not recipe.chip_fits(0, -1, 32, 100, 80)
    assert recipe.chip_fits(0, 0, 32, 32, 32)
    assert not recipe.chip_fits(0, 0, 32, 31, 32)


def test_chip_placement_from_a_point_near_the_edge():
    # width 3660 (an HLS tile): col 3643.4 -> round 3643 -> col0 3627, 3627 + 32 = 3659 <= 3660: fits;
    # col 3644.5 -> round 3644 (even) -> 3628 + 32 = 3660: fits; 3644.6 -> 3645 -> 3629 + 32 > 3660;
    # col 3645.5 -> 3646: no. Low edge: 15.5 -> 16 (even) -> col0 0: fits; 15.4 -> 15 -> -1 and 14.5 -> 14 -> -2: no.
    cases = [(3643.4, True), (3644.5, True), (3644.6, False), (3645.5, False)]
    cases += [(15.5, True), (16.5, True), (15.4, False), (14.5, False)]
    for col, fits in cases:
        col0, row0 = recipe.chip_origin(col, 1000.0, 32)
        assert recipe.chip_fits(col0, row0, 32, 3660, 3660) is fits, col


def test_choose_tile():
    inside = (1000.0, 1000.0, 3660, 3660)
    edge = (3650.0, 1000.0, 3660, 3660)  # chip would reach past the last column
    # own tile preferred even when others fit and sort first
    assert recipe.choose_tile("33UUP", {"32UQE": inside, "33UUP": inside, "33UUQ": inside}) == "33UUP"
    # own does not fit: the first of the others by tile id
    assert (
        recipe.choose_tile("33UUP", {"33UVP": inside, "33UUP": edge, "32UQE": edge, "33UUQ": inside})
        == "33UUQ"
    )
    # own tile not among the candidates
    assert recipe.choose_tile("33UUP", {"33UVP": inside, "33UUQ": inside}) == "33UUQ"
    # fits nowhere
    assert recipe.choose_tile("33UUP", {"33UUP": edge, "33UVP": (-3.0, 5.0, 3660, 3660)}) is None
    assert recipe.choose_tile("33UUP", {}) is None
    # the chip size matters: a 4-pixel chip fits where a 32-pixel one does not
    assert recipe.choose_tile("33UUP", {"33UUP": edge}, chip_size=4) == "33UUP"


def _numbered_composite(height, width):
    """(9, H, W) float32 whose value names its band, row and col: band * 10000 + row * 100 + col."""
    b, r, c = np.meshgrid(np.arange(9), np.arange(height), np.arange(width), indexing="ij")
    return (b * 10000 + r * 100 + c).astype(np.float32)


def test_cut_chip_and_centre_values():
    composite = _numbered_composite(10, 12)
    chip = recipe.cut_chip(composite, col0=5, row0=2, chip_size=4)
    assert chip.shape == (8, 4, 4) and chip.dtype == np.float32
    assert chip[0, 0].tolist() == [205, 206, 207, 208]  # row 2, cols 5..8
    assert chip[7, 3, 3] == 7 * 10000 + 5 * 100 + 8
    chip[:] = -1  # a copy: the composite is untouched
    assert composite[0, 2, 5] == 205
    medians, valid_count = recipe.centre_values(composite, col0=5, row0=2, chip_size=4)
    # chip pixel [2, 2] (y, then x) = composite row 4, col 7
    assert medians.dtype == np.float32 and medians.tolist() == [k * 10000 + 407 for k in range(8)]
    assert valid_count == 8 * 10000 + 407 and type(valid_count) is int
    with pytest.raises(ValueError):
        recipe.cut_chip(composite, col0=9, row0=0, chip_size=4)  # 9 + 4 > 12
    with pytest.raises(ValueError):
        recipe.centre_values(composite, col0=-1, row0=0, chip_size=4)


def test_centre_pixel_is_the_points_pixel():
    composite = _numbered_composite(40, 40)
    for col, row, chip_size in [(20.4, 17.6, 32), (19.5, 20.5, 32), (20.0, 20.0, 5)]:
        col0, row0 = recipe.chip_origin(col, row, chip_size)
        medians, _ = recipe.centre_values(composite, col0, row0, chip_size)
        chip = recipe.cut_chip(composite, col0, row0, chip_size)
        assert medians[0] == round(row) * 100 + round(col) == chip[0, chip_size // 2, chip_size // 2]


def test_empty_chips_and_centres():
    chips = recipe.empty_chips(3, 32)
    assert chips.shape == (3, 12, 8, 32, 32) and chips.dtype == np.float32 and np.isnan(chips).all()
    centres = recipe.empty_centres(2)
    assert centres.shape == (2, 12, 9) and centres.dtype == np.float32
    assert np.isnan(centres[..., :8]).all() and (centres[..., 8] == 0).all()


def test_centre_table_layout():
    centres = recipe.empty_centres(2)
    centres[0, 2] = [1, 2, 3, 4, 5, 6, 7, 8.5, 3]  # point "a", March
    centres[1, 11] = [10, 20, 30, 40, 50, 60, 70, 80, 1]  # point "007", December
    table = recipe.centre_table(["a", "007"], [45.5, -12.25], [7.0, 130.125], 2021, centres)
    assert list(table.columns) == [
        "id", "lat", "lon", "year", "month",
        "coastal", "blue", "green", "red", "nir_narrow", "swir1", "swir2", "cirrus", "valid_count",
    ]  # fmt: skip
    assert len(table) == 24
    assert table["id"].tolist() == ["a"] * 12 + ["007"] * 12  # ids kept as given: "007" stays text
    numbered = recipe.centre_table(np.array([5, 9], dtype=np.int64), [0.0, 0.0], [0.0, 0.0], 2021, centres)
    assert numbered["id"].tolist() == [5] * 12 + [9] * 12 and numbered["id"].dtype == np.int64
    assert table["month"].tolist() == list(range(1, 13)) * 2
    assert (
        (table["year"] == 2021).all() and table["year"].dtype == np.int32 and table["month"].dtype == np.int32
    )
    assert table["lat"].tolist() == [45.5] * 12 + [-12.25] * 12 and table["lon"].dtype == np.float64
    assert all(table[band].dtype == np.float32 for band in recipe.BANDS)
    assert table["valid_count"].dtype == np.int32
    march_a = table.iloc[2]
    assert march_a["month"] == 3 and march_a["cirrus"] == 8.5 and march_a["valid_count"] == 3
    december = table.iloc[23]
    assert december["id"] == "007" and december["coastal"] == 10 and december["valid_count"] == 1
    others = table.drop(index=[2, 23])
    assert others[list(recipe.BANDS)].isna().all().all() and (others["valid_count"] == 0).all()


def test_centre_table_refuses_bad_centres():
    centres = recipe.empty_centres(1)
    with pytest.raises(ValueError, match="valid_count"):
        recipe.centre_table(["a"], [0.0], [0.0], 2020, np.full((1, 12, 9), np.nan))  # NaN valid_count
    with pytest.raises(ValueError):
        recipe.centre_table(["a", "b"], [0.0, 1.0], [0.0, 1.0], 2020, centres)  # 2 ids, 1 point of centres
    empty = recipe.centre_table([], [], [], 2020, recipe.empty_centres(0))
    assert (
        isinstance(empty, pd.DataFrame)
        and len(empty) == 0
        and list(empty.columns) == list(recipe.CENTRE_COLUMNS)
    )


def test_a_workspace_reused_across_windows_of_other_sizes_gives_the_same_composites():
    # The engine keeps one Workspace per month: windows of other sizes and scene counts
    # (a month's edge windows, half-block windows, Fmask-dropped scenes) reuse its buffers,
    # which hold the previous window's values; every composite is still the fresh one's.
    rng = np.random.default_rng(7)
    workspace = recipe.Workspace()
    shapes = [(4, 16, 16), (4, 16, 16), (2, 9, 5), (6, 16, 20), (30, 8, 8), (1, 3, 4), (4, 16, 16)]
    for n_scenes, rows, cols in shapes:
        bands = rng.integers(-100, 10100, size=(n_scenes, N_BANDS, rows, cols), dtype=np.int16)
        fmask = rng.choice(np.array([0, 2, 32, 64, 192, 255], dtype=np.uint8), size=(n_scenes, rows, cols))
        out = np.full((9, rows, cols), -1.0, dtype=np.float32)
        block = recipe.BandByBand(fmask, out, workspace)
        for k in range(N_BANDS):
            block.band_values()[...] = bands[:, k]
            block.add_band(k)
        expected = recipe.composite_block(bands, fmask)
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_workspace_arrays_are_views_of_one_buffer_per_name():
    ws = recipe.Workspace()
    a = ws.array("a", (4, 5), np.uint16)
    a[...] = 7
    b = ws.array("b", (4, 5), np.uint16)
    b[...] = 9
    assert (a == 7).all()  # names never share memory
    smaller = ws.array("a", (3, 2), np.float32)
    assert smaller.shape == (3, 2) and smaller.dtype == np.float32 and smaller.flags.c_contiguous
    assert np.shares_memory(smaller, a)  # the same buffer, reused
    larger = ws.array("a", (10, 10), np.uint16)
    assert larger.shape == (10, 10) and not np.shares_memory(larger, b)


def test_fmask_usable_into_given_arrays_is_the_same():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out, scratch = np.empty((16, 16), dtype=bool), np.empty((16, 16), dtype=bool)
    got = recipe.fmask_usable(values, out, scratch)
    assert got is out
    assert np.array_equal(got, recipe.fmask_usable(values))
