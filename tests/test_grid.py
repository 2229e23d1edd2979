import pytest

from pipeline.errors import GridError
from pipeline.grid import REGIONS, Tile, chip_bbox, chip_tiles, chip_window, get_region, pixel_of, tile_of

CU, AK, HI = REGIONS["CU"], REGIONS["AK"], REGIONS["HI"]


def test_tile_of_origin_and_edges():
    assert tile_of(CU, -2565585, 3314805) == Tile(0, 0)
    # exactly on the vertical edge between h02 and h03: floor puts it in h03
    assert tile_of(CU, -2565585 + 3 * 150000, 3314805 - 10) == Tile(3, 0)
    # exactly on the horizontal edge between v03 and v04: (Y0 - y) / 150000 = 4 -> v04
    assert tile_of(CU, -2565585 + 10, 3314805 - 4 * 150000) == Tile(0, 4)
    # one metre above that edge is still v03
    assert tile_of(CU, -2565585 + 10, 3314805 - 4 * 150000 + 1) == Tile(0, 3)


def test_tile_of_alaska_and_hawaii():
    # AK (C2): X0 -2201715, Y0 2474325. x = X0 + 3*150000 + 10 -> h03; y = Y0 - 2*150000 - 10 -> v02
    assert tile_of(AK, -2201715 + 450010, 2474325 - 300010) == Tile(3, 2)
    # HI: X0 -444345, Y0 2168895. (-100000 + 444345) / 150000 = 2.29 -> h02; (2168895 - 2000000) / 150000 = 1.13 -> v01
    assert tile_of(HI, -100000, 2000000) == Tile(2, 1)


@pytest.mark.parametrize(
    "region, x, y",
    [
        ("CU", -2565586, 3000000),  # 1 m west of the grid
        ("CU", 0, 3314806),  # 1 m north of the grid
        ("CU", -2565585 + 33 * 150000, 2000000),  # east edge is outside (h 33 does not exist)
        ("HI", -444345 + 5 * 150000, 2000000),
        ("AK", 0, 2474325 - 14 * 150000),  # v 14 does not exist
    ],
)
def test_outside_grid_is_an_error(region, x, y):
    with pytest.raises(GridError, match="outside the"):
        tile_of(REGIONS[region], x, y)


def test_unknown_region():
    with pytest.raises(GridError, match="unknown region 'XX'"):
        get_region("XX")


def test_chip_bbox_and_tiles():
    assert chip_bbox(1000, 2000, 255, 255) == (1000 - 3810, 2000 + 3810, 1000 + 3810, 2000 - 3810)
    edge_x = -2565585 + 4 * 150000  # edge between h03 and h04
    inside_v = 3314805 - 4 * 150000 - 75000  # middle of v04
    # 100 m east of the edge: chip reaches back 3810 m into h03
    assert chip_tiles(CU, edge_x + 100, inside_v, 255, 255) == [Tile(3, 4), Tile(4, 4)]
    # far from edges: one tile
    assert chip_tiles(CU, edge_x + 75000, inside_v, 255, 255) == [Tile(4, 4)]
    # near a corner: four tiles, ascending h then v
    corner_y = 3314805 - 5 * 150000
    assert chip_tiles(CU, edge_x - 100, corner_y + 100, 255, 255) == [
        Tile(3, 4),
        Tile(3, 5),
        Tile(4, 4),
        Tile(4, 5),
    ]


def test_chip_tiles_clip_at_grid_edge():
    # plot 100 m inside the west edge: chip would reach h -1, which does not exist
    assert chip_tiles(CU, -2565585 + 100, 3314805 - 75000, 255, 255) == [Tile(0, 0)]


def test_pixel_and_window_placement():
    transform = (30.0, 0.0, -1965585.0, 0.0, -30.0, 2714805.0)
    assert pixel_of(transform, -1965585 + 60, 2714805 - 60) == (
        2,
        2,
    )  # on a pixel corner: the pixel right/below
    assert pixel_of(transform, -1965585 + 59, 2714805 - 1) == (0, 1)
    assert pixel_of(transform, -1965585 - 1, 2714805 + 1) == (-1, -1)  # outside: negative, caller decides
    assert chip_window(100, 200, 255, 255) == (100 - 127, 200 - 127, 255, 255)
