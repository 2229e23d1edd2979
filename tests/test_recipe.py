"""The recipe, cell by cell, on small hand-made arrays. Expected values were worked out by
hand from the spec's formulas (shown next to each)."""

import numpy as np
import pytest

from pipeline.timesync import recipe


def test_rescale_truncates_toward_zero_and_maps_fill():
    dn = [0, 1, 7000, 7272, 7273, 8000, 10000, 43636, 65535]
    # (DN * 0.0000275 - 0.2) * 10000: -2000, -1999.725, -75, -0.2, +0.075, 200 - 0.0..., 750, 9999.9, 16022.125
    # DN 8000: 0.22 - 0.2 = 0.02 -> 200 on paper, 199.99999999999997 in float64, which truncates to 199:
    # the contract is "computed in float64", so 199 it is.
    assert recipe.rescale(dn).tolist() == [-2000, -1999, -75, 0, 0, 199, 750, 9999, 16022]
    assert recipe.rescale(dn).dtype == np.int16


def test_rescale_is_trunc_not_floor():
    # floor(-1999.725) = -2000 would turn a valid dark pixel into fill.
    assert recipe.rescale([1])[0] == -1999


def test_mask_any_band_fill():
    optical = np.full((6, 2, 2), 500, dtype=np.int16)
    optical[3, 0, 1] = -2000  # one band only
    optical[:, 1, 1] = -2000  # all bands
    assert recipe.mask_of(optical).tolist() == [[False, True], [False, True]]


def _pixel(blue, green, red, nir, swir1, swir2):
    return np.array([blue, green, red, nir, swir1, swir2], dtype=np.int16).reshape(6, 1, 1)


def test_tasseled_cap_by_hand():
    tc = recipe.tasseled_cap(_pixel(500, 1000, 1500, 3000, 2000, 1000)).ravel()
    # brightness: 102.15 + 415.8 + 828.6 + 1722.3 + 624.8 + 230.3 = 3923.95
    # greenness: -80.15 - 281.9 - 740.1 + 2382.0 - 0.4 - 144.6 = 1134.85
    # wetness: 15.75 + 202.1 + 465.3 + 478.2 - 1361.2 - 610.9 = -810.75
    assert tc == pytest.approx([3923.95, 1134.85, -810.75], abs=1e-9)


def test_composites_and_stretch_by_hand():
    px = _pixel(500, 1000, 1500, 3000, 2000, 1000)
    no_mask = np.zeros((1, 1), dtype=bool)
    tc = recipe.stretch(recipe.composite("tc", px), recipe.STRETCH["tc"], no_mask).ravel().tolist()
    # 255/4988*(3923.95-604) = 169.7; 255/3098*(1134.85-49) = 89.4; 255/3088*(-810.75+2245) = 118.4
    assert tc == [169, 89, 118]
    b743 = recipe.stretch(recipe.composite("b743", px), recipe.STRETCH["b743"], no_mask).ravel().tolist()
    # swir2 1000: 255/4600*1904 = 105.5; nir 3000: 255/4800*2849 = 151.4; red 1500: 255/2800*1800 = 163.9
    assert b743 == [105, 151, 163]
    b432 = recipe.stretch(recipe.composite("b432", px), recipe.STRETCH["b432"], no_mask).ravel().tolist()
    # nir 3000 -> 151; red 1500 -> 163; green 1000: 255/1100*950 = 220.2
    assert b432 == [151, 163, 220]


def test_stretch_clips_and_masks():
    channels = np.array([[[-5000.0, 99999.0]]] * 3)  # (3, 1, 2)
    out = recipe.stretch(channels, ((0, 100),) * 3, np.zeros((1, 2), dtype=bool))
    assert out[:, 0, :].tolist() == [[0, 255]] * 3
    masked = recipe.stretch(channels, ((0, 100),) * 3, np.array([[False, True]]))
    assert masked[:, 0, 1].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "qa, expected",
    [
        (21824, 0),  # OLI clear land: bit 6 set
        (5440, 0),  # TM/ETM+ clear land
        (1 << 7, 0),  # water
        (1, 1),  # fill
        (1 | 1 << 6, 1),  # fill wins over clear
        (1 << 3 | 1 << 1, 1),  # cloud, dilated cloud, not clear
        (1 << 4, 1),  # shadow only
        (0, 1),  # neither clear nor water
    ],
)
def test_qa_flag(qa, expected):
    assert recipe.qa_flag(qa) == expected


def test_fill_test():
    assert recipe.is_fill(None)  # raster does not contain the point
    assert recipe.is_fill(1)
    assert not recipe.is_fill(21824)


def test_process_observation_end_to_end_small():
    # 3 x 3 chip, mosaic of two items that do not overlap (left column from one, rest from the other)
    a = np.zeros((7, 3, 3), dtype=np.uint16)
    b = np.zeros((7, 3, 3), dtype=np.uint16)
    a[:, :, 0] = 10000  # DN 10000 -> 750
    a[6, :, 0] = 21824
    b[:, :, 1:] = 20000  # DN 20000 -> 0.55 - 0.2 = 0.35 -> 3500
    b[6, :, 1:] = 21824
    b[2, 0, 2] = 0  # red fill at one pixel -> that pixel masked
    m = recipe.mosaic([a, b])
    res = recipe.process_observation(m)
    assert res.centre == (3500,) * 6
    assert res.qa == 0
    # masked pixel (row 0, col 2) is black in every image
    for img in res.images.values():
        assert img.shape == (3, 3, 3) and img.dtype == np.uint8
        assert img[0, 2].tolist() == [0, 0, 0]
    # b432 at (0, 0): nir 750 -> 255/4800*599 = 31.8; red 750 -> 255/2800*1050 = 95.6; green 750 -> 255/1100*700 = 162.3
    assert res.images["b432"][0, 0].tolist() == [31, 95, 162]


def test_spectral_row_and_csv_text():
    row = recipe.spectral_row(
        sensor="LC08", project_id="p1", plot_id="007", hv="0304", year=2015, doy=7,
        centre=(1, -2, 3, 4, 5, 6), qa=0, date="2015-01-07T17:00:00.12Z",
    )  # fmt: skip
    text = recipe.format_csv([row])
    assert text == (
        "sensor,project_id,plot_id,hv,year,doy,blue,green,red,nir,swir1,swir2,qa,date\n"
        "LC08,p1,007,0304,2015,7,1,-2,3,4,5,6,0,2015-01-07T17:00:00.12Z\n"
    )


def test_process_optical_equals_the_recipe_steps_over_the_uint16_range():
    """process_optical's lookup tables give exactly what rescale, composite and stretch give."""
    rng = np.random.default_rng(5)
    dn = rng.integers(0, 1 << 16, size=(6, 64, 64), dtype=np.uint16)
    dn[:, 0, :] = np.arange(64, dtype=np.uint16)[None, :] * 1024 + 1023  # both ends of the range
    dn[:, 1, :] = np.arange(64, dtype=np.uint16)[None, :]
    dn[2, 5, 5] = 0  # fill in one band
    for optical_dn in (dn, dn.astype(np.int64)):  # a single window, a mosaic
        res = recipe.process_optical(optical_dn, 21824)
        optical = recipe.rescale(optical_dn)
        mask = recipe.mask_of(optical)
        for name in recipe.COMPOSITES:
            expected = np.moveaxis(
                recipe.stretch(recipe.composite(name, optical), recipe.STRETCH[name], mask), 0, -1
            )
            assert np.array_equal(res.images[name], expected), name
        assert res.centre == tuple(int(v) for v in optical[:, 32, 32])
        assert res.qa == 0


# ---- tasseled cap: the recipe's own np.tensordot, bit for bit -------------------------------


def _recipe_tasseled_cap(optical: np.ndarray) -> np.ndarray:
    """The tasseled cap exactly as the recipe computes it: the six rescaled int16 bands
    stacked on the last axis, one np.tensordot per channel with the coefficients as a list."""
    arr = np.stack([optical[i].astype(np.int16) for i in range(6)], axis=2)
    return np.stack([np.tensordot(arr, list(c), axes=1) for c in recipe.TC_COEFFICIENTS])


def _left_to_right(optical: np.ndarray) -> np.ndarray:
    """The same sums taken left to right (what the pipeline computed before)."""
    x = optical.astype(np.float64)
    return np.stack(
        [
            sum((c * x[i] for i, c in enumerate(row[1:], start=1)), row[0] * x[0])
            for row in recipe.TC_COEFFICIENTS
        ]
    )


def _step_pixels(rng: np.random.Generator) -> np.ndarray:
    """Rescaled band values (-1999..16022, never fill) whose exact tasseled-cap value is a
    stretch step of its channel: ``lo + m * (hi - lo) / 5`` is where the stretched value
    turns from ``51 m - 1`` to ``51 m``, and with 4-decimal coefficients it is reachable
    exactly (sum of coefficient * 10000 * band = 10000 lo + 2000 m (hi - lo)). In floating
    point such a pixel lands within ~1e-12 of the step, on a side that depends on the
    summation order. Returns (6, n) int16."""
    coefficients = np.array(
        [[round(c * 10000) for c in row] for row in recipe.TC_COEFFICIENTS], dtype=np.int64
    )
    found = []
    for channel, (lo, hi) in enumerate(recipe.STRETCH["tc"]):
        solve = int(np.argmax(np.abs(coefficients[channel])))  # the band computed from the others
        others = [i for i in range(6) if i != solve]
        for m in range(6):
            target = 10000 * lo + 2000 * m * (hi - lo)
            bands = rng.integers(-1999, 16023, size=(400_000, 6))
            rest = target - bands[:, others] @ coefficients[channel, others]
            exact = rest % coefficients[channel, solve] == 0
            bands = bands[exact]
            bands[:, solve] = rest[exact] // coefficients[channel, solve]
            found.append(bands[(bands[:, solve] > -2000) & (bands[:, solve] <= 16022)])
    return np.concatenate(found).T.astype(np.int16)


def test_tasseled_cap_is_the_recipes_tensordot_over_the_int16_range():
    rng = np.random.default_rng(20)
    random = rng.integers(-(1 << 15), 1 << 15, size=(6, 255, 255)).astype(np.int16)
    random[:, 0, :6] = [[-(1 << 15)] * 6, [(1 << 15) - 1] * 6, [0] * 6, [-2000] * 6, [1] * 6, [-1] * 6]
    steps = _step_pixels(rng)
    assert steps.shape[1] > 300
    for optical in (random, steps.reshape(6, 1, -1), steps[:, : 17 * 13].reshape(6, 17, 13)):
        got = recipe.tasseled_cap(optical)
        want = _recipe_tasseled_cap(optical)
        assert got.dtype == np.float64 and got.shape == want.shape
        assert np.array_equal(got.view(np.uint64), want.view(np.uint64))  # every bit
        assert np.array_equal(
            recipe.tasseled_cap(optical.astype(np.int64)).view(np.uint64), want.view(np.uint64)
        )


def test_tasseled_cap_chips_at_stretch_steps_are_the_recipes():
    """At a stretch step the summation order decides the uint8: the pipeline's chip (through
    process_optical's lookup tables) equals the recipe's tensordot stretched, including
    pixels where a left-to-right sum gives another value."""
    steps = _step_pixels(np.random.default_rng(21))
    optical = steps.reshape(6, 1, -1)
    exact = recipe.tasseled_cap(optical)
    assert np.all(np.abs(exact - _left_to_right(optical)) < 1e-9)  # within 1e-9 of one another ...
    bounds = recipe.STRETCH["tc"]
    no_mask = np.zeros(optical.shape[1:], dtype=bool)
    want = recipe.stretch(_recipe_tasseled_cap(optical), bounds, no_mask)
    assert (
        np.count_nonzero(recipe.stretch(_left_to_right(optical), bounds, no_mask) != want) > 10
    )  # ... yet not the same uint8
    # DN that rescale to these band values, through the fast path of a whole observation
    values, first_dn = np.unique(recipe.rescale(np.arange(1 << 16)), return_index=True)
    dn = first_dn[np.searchsorted(values, steps)].astype(np.uint16).reshape(optical.shape)
    assert np.array_equal(recipe.rescale(dn), optical)
    image = recipe.process_optical(dn, 21824).images["tc"]
    assert np.array_equal(np.moveaxis(image, -1, 0), want)
