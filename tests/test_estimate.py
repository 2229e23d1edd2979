"""The dry run's request model on hand-made items (the end-to-end check against counted
requests is in test_s3_pipeline.py)."""

from pipeline.timesync.estimate import CostModel, _blocks, piece_cost
from pipeline.timesync.extract import ObservationJob
from pipeline.timesync.plan import ItemRef, Observation

ULX, ULY = -2115585.0, 2714805.0
T = (30.0, 0.0, ULX, 0.0, -30.0, ULY)
HREFS = tuple(
    f"s3://b/{band}.TIF" for band in ("blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel")
)


def item(fill=None, transform=T):
    return ItemRef(
        "LC08_CU_003004_20200101_20200102_02_SR",
        "2020-01-01T00:00:00Z",
        2020,
        1,
        "0304",
        HREFS,
        transform,
        (5000, 5000),
        fill,
    )


def at(row, col):
    return ULX + col * 30 + 15, ULY - row * 30 - 15


def test_blocks():
    # rows 173..427 cross the block boundary at 256: two block rows; cols -27..227 clip to 0..227: one block
    assert _blocks(item(), *at(300, 100), 255) == {(0, 0), (1, 0)}
    # rows 256..510 lie in block row 1 only; cols 2873..3127 cross 3072: two blocks
    assert _blocks(item(), *at(383, 3000), 255) == {(1, 11), (1, 12)}
    # a window entirely west of the raster
    assert _blocks(item(), ULX - 200 * 30, ULY - 100, 255) == set()
    assert _blocks(item(transform=None), *at(300, 100), 255) is None


def test_piece_cost_counts_headers_once_and_fill_chance():
    obs = Observation(2020, 1, (item(fill=0.0),))
    apart = [ObservationJob("p", str(i), *at(300, 100 + 900 * i), 255, obs) for i in range(3)]
    gets, _, fill = piece_cost(apart, CostModel())
    # 7 files opened once for the piece (7 GETs); per job: the QA tile at the plot (1) and
    # one coalesced GET per optical window (6); the QA window is never read
    assert fill == 0.0
    assert gets == 7 + 3 * (1 + 6)
    # without coalescing: one GET per block row the window touches (2 here)
    gets, _, _ = piece_cost(apart, CostModel(merge_gap_bytes=0))
    assert gets == 7 + 3 * (1 + 12)


def test_piece_cost_counts_shared_tiles_once():
    # three plots a pixel apart: their windows and QA pixels lie in the same tiles
    obs = Observation(2020, 1, (item(fill=0.0),))
    close = [ObservationJob("p", str(i), *at(300, 100 + i), 255, obs) for i in range(3)]
    gets, _, _ = piece_cost(close, CostModel())
    assert gets == 7 + 1 + 6


def test_piece_cost_when_the_plot_is_surely_fill():
    obs = Observation(2020, 1, (item(fill=100.0),))
    gets, _, fill = piece_cost([ObservationJob("p", "1", *at(300, 100), 255, obs)], CostModel())
    assert fill == 1.0
    assert gets == 1 + 1  # the QA header and the QA block at the plot; no band file opened
