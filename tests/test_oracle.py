"""Unit tests of the independent TimeSync oracle (tests/oracle.py) on tiny hand-made rasters.

The fixture archive sits in CONUS tiles h03v04 and h04v04:
- raster "A" (tile h03v04): 300 x 300 pixels at the east edge of its tile, top row on the
  tile's top edge, so its last column touches tile h04v04;
- raster "B" (tile h04v04): 300 x 300 pixels at the origin (upper-left corner) of its tile.
Expected values are computed by hand in the comments, not by the oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from tests import oracle

CU_ALBERS = (
    "+proj=aea +lat_0=23 +lon_0=-96 +lat_1=29.5 +lat_2=45.5 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
)

X0, Y0 = -2565585, 3314805
TILE_H03_ULX = X0 + 3 * 150000  # -2115585
TILE_H04_ULX = X0 + 4 * 150000  # -1965585
TILE_V04_ULY = Y0 - 4 * 150000  # 2714805
SIZE = 300
A_ULX = TILE_H04_ULX - SIZE * 30  # -1974585: A's last column ends on the h03/h04 edge
B_ULX = TILE_H04_ULX
ULY = TILE_V04_ULY

# Hand-computed rescaling: trunc(DN * 0.275 - 2000) (exact decimal arithmetic)
A_DN = {"blue": 9082, "green": 10182, "red": 9822, "nir08": 18182, "swir16": 12742, "swir22": 10142}
A_RESCALED = {"blue": 497, "green": 800, "red": 701, "nir08": 3000, "swir16": 1504, "swir22": 789}
B_DN = 10000  # every optical band: 2750 - 2000 = 750
B_RESCALED = 750
CLEAR_OLI = 21824  # bits 6 (clear), 8, 10, 12, 14
CLEAR_TM = 5440  # bits 6, 8, 10, 12


def pixel_centre(ulx: int, row: int, col: int) -> tuple[int, int]:
    return ulx + col * 30 + 15, ULY - row * 30 - 15


# Plots (integer metres)
P42 = pixel_centre(A_ULX, 298, 298)  # (-1965630, 2705850): 2 px west of tile h04, 1 px above A's bottom
P9 = pixel_centre(A_ULX, 100, 100)
P10 = pixel_centre(A_ULX, 150, 60)

BANDS = ["blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel"]


def write_tif(path: Path, array: np.ndarray, ulx: int, uly: int) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype="uint16",
        crs=CU_ALBERS,
        transform=Affine(30, 0, ulx, 0, -30, uly),
    ) as ds:
        ds.write(array.astype(np.uint16), 1)
    return str(path)


def make_item(
    directory: Path,
    item_id: str,
    h: int,
    v: int,
    datetime: str,
    ulx: int,
    bands: dict[str, np.ndarray],
    collection: str = "landsat-c2ard-sr",
    region: str = "CU",
) -> dict:
    assets = {}
    for band in BANDS:
        if bands is None:
            href = f"/nonexistent/{item_id}_{band}.TIF"
        else:
            href = write_tif(directory / f"{item_id}_{band}.TIF", bands[band], ulx, ULY)
        assets[band] = {
            "href": href,
            "alternate": {
                "s3": {"href": f"s3://usgs-landsat-ard/collection02/oli-tirs/{item_id}/{band}.TIF"}
            },
        }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "geometry": None,
        "properties": {
            "datetime": datetime,
            "landsat:grid_horizontal": f"{h:02d}",
            "landsat:grid_vertical": f"{v:02d}",
            "landsat:grid_region": region,
            "proj:epsg": None,
            "proj:shape": [SIZE, SIZE],
            "proj:transform": [30, 0, ulx, 0, -30, ULY],
        },
        "assets": assets,
        "links": [],
    }


def constant_bands(optical: dict[str, int] | int, qa: int) -> dict[str, np.ndarray]:
    bands = {}
    for band in BANDS[:6]:
        value = optical if isinstance(optical, int) else optical[band]
        bands[band] = np.full((SIZE, SIZE), value, dtype=np.uint16)
    bands["qa_pixel"] = np.full((SIZE, SIZE), qa, dtype=np.uint16)
    return bands


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("ard")
    items = []

    # Observation 1: 2020-07-04 (doy 186), tiles h03 and h04; h04's item is earlier in the day
    # but h03 comes first in search order.
    items.append(
        make_item(
            root,
            "LC08_CU_003004_20200704_20200712_02_SR",
            3,
            4,
            "2020-07-04T18:30:05.123Z",
            A_ULX,
            constant_bands(A_DN, CLEAR_OLI),
        )
    )
    items.append(
        make_item(
            root,
            "LC08_CU_004004_20200704_20200712_02_SR",
            4,
            4,
            "2020-07-04T18:29:41Z",
            B_ULX,
            constant_bands(B_DN, CLEAR_OLI),
        )
    )

    # Observation 2: 2020-07-20 (doy 202): qa fill at P42's pixel only -> skipped for P42;
    # the h04 item does not contain P42 (counts as fill too).  Plots 9 and 10 keep it.
    a2 = constant_bands(A_DN, CLEAR_OLI)
    a2["qa_pixel"][298, 298] = 1
    items.append(
        make_item(
            root, "LC08_CU_003004_20200720_20200730_02_SR", 3, 4, "2020-07-20T18:30:11.0000001Z", A_ULX, a2
        )
    )
    items.append(
        make_item(
            root,
            "LC08_CU_004004_20200720_20200730_02_SR",
            4,
            4,
            "2020-07-20T18:29:47.5+00:00",
            B_ULX,
            constant_bands(B_DN, CLEAR_OLI),
        )
    )

    # Observation 3: 2021-01-07 (doy 7), h03 only: at P42 blue DN 7000 (-> -75), green DN 7272
    # (-> 0), qa 2 (dilated cloud, not clear) -> qa flag 1; red DN 0 one pixel west of P42.
    a3 = constant_bands(A_DN, CLEAR_TM)
    a3["blue"][298, 298] = 7000
    a3["green"][298, 298] = 7272
    a3["qa_pixel"][298, 298] = 2
    a3["red"][298, 297] = 0
    items.append(
        make_item(root, "LE07_CU_003004_20210107_20210120_02_SR", 3, 4, "2021-01-07T17:55:03.34Z", A_ULX, a3)
    )

    # Items the searches must not return (their files do not exist).
    items.append(
        make_item(
            root, "LC08_CU_003004_19831231_19831231_02_SR", 3, 4, "1983-12-31T23:59:59.9999999Z", A_ULX, None
        )
    )
    items.append(
        make_item(
            root,
            "LC08_CU_003004_20200801_20200801_02_SR",
            3,
            4,
            "2020-08-01T18:00:00Z",
            A_ULX,
            None,
            collection="landsat-c2l2-sr",
        )
    )
    items.append(
        make_item(
            root,
            "LC08_AK_003004_20200801_20200801_02_SR",
            3,
            4,
            "2020-08-01T18:00:00Z",
            A_ULX,
            None,
            region="AK",
        )
    )

    catalog = root / "catalog.ndjson"
    shuffled = [items[i] for i in (4, 1, 6, 0, 3, 5, 2, 7)]
    catalog.write_text("".join(json.dumps(item) + "\n" for item in shuffled))

    plots = root / "plots.csv"
    plots.write_text(
        "project_id,plot_id,x,y,comment\n"
        f"7,0042,{P42[0]},{P42[1]},mosaic\n"
        f"7,9,{P9[0]},{P9[1]},inside A\n"
        f"7,10,{P10[0]},{P10[1]},inside A\n"
    )
    return {"root": root, "catalog": catalog, "plots": plots, "items": items}


@pytest.fixture(scope="module")
def outputs5(archive):
    return oracle.expected_outputs(archive["catalog"], archive["plots"], chip=5)


HEADER = "sensor,project_id,plot_id,hv,year,doy,blue,green,red,nir,swir1,swir2,qa,date\n"


# ---------------------------------------------------------------------------- arithmetic


def test_rescale_truncates_toward_zero():
    values = oracle.rescale(np.array([7000, 0, 7272, 1, 9082, 43636, 10000], dtype=np.int64))
    assert values.dtype == np.int16
    # 7000*0.275-2000 = -75 (floor would give -76); 7272 -> -0.2 -> 0; 1 -> -1999.725 -> -1999
    assert values.tolist() == [-75, -2000, 0, -1999, 497, 9999, 750]


def test_tasseled_cap_and_stretch_one_pixel():
    rescaled = {band: np.array([[value]], dtype=np.int16) for band, value in A_RESCALED.items()}
    tc = oracle.tasseled_cap(rescaled)
    # brightness = .2043*497 + .4158*800 + .5524*701 + .5741*3000 + .3124*1504 + .2303*789
    assert tc["brightness"][0, 0] == pytest.approx(3195.2658, abs=1e-9)
    assert tc["greenness"][0, 0] == pytest.approx(1616.5473, abs=1e-9)
    assert tc["wetness"][0, 0] == pytest.approx(-632.6368, abs=1e-9)
    # 255 * (3195.2658 - 604) / 4988 = 132.47 -> 132
    assert oracle.stretch(tc["brightness"], 604, 5592).tolist() == [[132]]
    # 255 * (1616.5473 - 49) / 3098 = 129.03 -> 129; 255 * (-632.6368 + 2245) / 3088 = 133.15 -> 133
    assert oracle.stretch(tc["greenness"], 49, 3147).tolist() == [[129]]
    assert oracle.stretch(tc["wetness"], -2245, 843).tolist() == [[133]]


def test_stretch_clips_and_truncates():
    values = np.array([-5000, 50, 51, 1149, 1150, 9999, 600])
    # (255/1100) * (x - 50): 0, 0, 0.23 -> 0, 254.77 -> 254, 255, clip 255, 127.5 -> 127
    assert oracle.stretch(values, 50, 1150).tolist() == [0, 0, 0, 254, 255, 255, 127]
    assert oracle.stretch(values, 50, 1150).dtype == np.uint8


def test_qa_flag():
    assert oracle.qa_flag(CLEAR_OLI) == 0
    assert oracle.qa_flag(CLEAR_TM) == 0
    assert oracle.qa_flag(128) == 0  # water
    assert oracle.qa_flag(64 + 8) == 0  # clear bit wins even with the cloud bit
    assert oracle.qa_flag(65) == 1  # fill + clear
    assert oracle.qa_flag(1) == 1  # fill
    assert oracle.qa_flag(2) == 1  # dilated cloud only
    assert oracle.qa_flag(0) == 1  # nothing set (e.g. outside every raster)


def test_mask_and_composites():
    rescaled = {band: np.array([[value, value]], dtype=np.int16) for band, value in A_RESCALED.items()}
    rescaled["swir16"][0, 1] = -2000
    chips = oracle.composites(rescaled)
    assert chips["tc"][0, 0].tolist() == [132, 129, 133]
    # b743: 255*(789+904)/4600 = 93.85, 255*(3000-151)/4800 = 151.35, 255*(701+300)/2800 = 91.16
    assert chips["b743"][0, 0].tolist() == [93, 151, 91]
    # b432: nir 151, red 91, 255*(800-50)/1100 = 173.86
    assert chips["b432"][0, 0].tolist() == [151, 91, 173]
    for name in ("tc", "b743", "b432"):
        assert chips[name].shape == (1, 2, 3)
        assert chips[name][0, 1].tolist() == [0, 0, 0]


# ---------------------------------------------------------------------------- datetimes, grid, search


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2022-12-29T17:06:14.348463Z", (2022, 363)),
        ("2023-09-09T18:56:17.0Z", (2023, 252)),
        ("2023-09-09T18:56:17Z", (2023, 252)),
        ("2020-12-31T23:59:59.9999999Z", (2020, 366)),
        ("2021-01-07T00:00:00+00:00", (2021, 7)),
        ("2020-12-31T23:30:00-02:00", (2021, 1)),  # UTC day
    ],
)
def test_year_doy(text, expected):
    assert oracle.year_doy(text) == expected


def test_datetime_rejects_garbage():
    with pytest.raises(ValueError):
        oracle.parse_datetime("2020-07-04")
    with pytest.raises(ValueError):
        oracle.parse_datetime("2020-07-04T18:30:05.12345678Z")  # 8 digits


def test_search_filters_and_orders(archive):
    items = oracle.load_catalog(archive["catalog"])
    found = oracle.search_tile(items, 3, 4)
    assert [item["id"] for item in found] == [
        "LC08_CU_003004_20200704_20200712_02_SR",
        "LC08_CU_003004_20200720_20200730_02_SR",
        "LE07_CU_003004_20210107_20210120_02_SR",
    ]
    # date-only end is inclusive of the whole day; start/end closed
    assert len(oracle.search_tile(items, 3, 4, datetime_range=("2020-07-04", "2020-07-20"))) == 2
    assert len(oracle.search_tile(items, 3, 4, datetime_range=("2020-07-05", "2020-07-19"))) == 0
    assert (
        len(oracle.search_tile(items, 3, 4, datetime_range=(None, "2020-07-20T18:30:11Z"))) == 2
    )  # 1983 + 2020-07-04
    assert len(oracle.search_tile(items, 3, 4, datetime_range=(None, None))) == 4
    assert len(oracle.search_tile(items, 3, 4, datetime_range=("1983", "1983-12"))) == 1
    assert len(oracle.search_tile(items, 3, 4, region="AK", datetime_range=(None, None))) == 1  # the AK decoy
    assert len(oracle.search_tile(items, 3, 4, collection="landsat-c2l2-sr")) == 1


def test_feature_collection_catalog(archive, tmp_path):
    collection = tmp_path / "catalog.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": archive["items"]}))
    assert len(oracle.load_catalog(collection)) == len(archive["items"])


def test_tiles():
    assert oracle.tile_of(*P42) == (3, 4)
    assert oracle.chip_tiles(*P42, chip=5) == [(3, 4), (4, 4)]
    assert oracle.chip_tiles(*P42, chip=3) == [(3, 4)]
    assert oracle.chip_tiles(*P9, chip=5) == [(3, 4)]
    assert oracle.chip_tiles(*P9, chip=255) == [(3, 3), (3, 4)]  # row 100 < 127 rows from the top
    # a chip spanning four tiles, in h-then-v order
    corner = (TILE_H04_ULX + 15, TILE_V04_ULY - 15)  # pixel (0, 0) of tile h04v04
    assert oracle.chip_tiles(*corner) == [(3, 3), (3, 4), (4, 3), (4, 4)]
    # clipped to the grid at its corners
    assert oracle.chip_tiles(X0 + 15, Y0 - 15) == [(0, 0)]
    assert oracle.chip_tiles(X0 + 33 * 150000 - 15, Y0 - 22 * 150000 + 15) == [(32, 21)]
    assert oracle.chip_tiles(-444345 + 5 * 150000 - 15, 2168895 - 15, region="HI") == [(4, 0)]


def test_point_outside_grid():
    with pytest.raises(ValueError):
        oracle.check_in_grid(X0 - 1, Y0 - 1)
    with pytest.raises(ValueError):
        oracle.check_in_grid(X0 + 33 * 150000, Y0 - 1)
    oracle.check_in_grid(X0 + 33 * 150000 - 1, Y0 - 22 * 150000 + 1)
    with pytest.raises(ValueError):
        oracle.check_in_grid(-2201715 + 26 * 150000, 2474325 - 1, region="AK")


def test_point_outside_grid_is_an_input_error(archive, tmp_path):
    plots = tmp_path / "plots.csv"
    plots.write_text(f"project_id,plot_id,x,y\n7,1,{X0 - 100},{Y0 - 100}\n")
    with pytest.raises(ValueError):
        oracle.expected_outputs(archive["catalog"], plots, chip=5)


# ---------------------------------------------------------------------------- end to end on fixtures


def test_output_paths(outputs5):
    names = set()
    for plot, stamps in (
        ("0042", ["2020_186", "2021_007"]),
        ("9", ["2020_186", "2020_202", "2021_007"]),
        ("10", ["2020_186", "2020_202", "2021_007"]),
    ):
        for stamp in stamps:
            names.add(f"prj_7/{plot}_spectral_files_set_{stamp}.csv")
            for composite in ("tc", "b743", "b432"):
                names.add(f"prj_7/{composite}/plot_{plot}/plot_{plot}_{stamp}.png")
        names.add(f"prj_7/series/plot_{plot}_series.csv")
    names.add("2020_prj_7_region_spectrals.csv")
    names.add("2021_prj_7_region_spectrals.csv")
    assert set(outputs5) == names


def test_mosaic_across_two_tiles_and_csv_text(outputs5):
    # P42 is in A (h03); sensor/hv/date come from A's item although B's is earlier that day.
    assert outputs5["prj_7/0042_spectral_files_set_2020_186.csv"] == (
        HEADER + "LC08,7,0042,0304,2020,186,497,800,701,3000,1504,789,0,2020-07-04T18:30:05.123Z\n"
    )
    b432 = outputs5["prj_7/b432/plot_0042/plot_0042_2020_186.png"]
    assert b432.shape == (5, 5, 3) and b432.dtype == np.uint8
    # window rows 296..300 / cols 296..300 of A: cols 0-3 from A, col 4 is B's column 0,
    # row 4 is below both rasters (DN 0 -> -2000 -> masked)
    a_pixel = [151, 91, 173]
    b_pixel = [31, 95, 162]  # 255*599/4800 = 31.8, 255*1050/2800 = 95.6, 255*700/1100 = 162.3
    for row in range(4):
        for col in range(4):
            assert b432[row, col].tolist() == a_pixel
        assert b432[row, 4].tolist() == b_pixel
    assert b432[4].tolist() == [[0, 0, 0]] * 5
    tc = outputs5["prj_7/tc/plot_0042/plot_0042_2020_186.png"]
    assert tc[2, 2].tolist() == [132, 129, 133]
    assert tc[4].tolist() == [[0, 0, 0]] * 5


def test_fill_skip(outputs5):
    assert "prj_7/0042_spectral_files_set_2020_202.csv" not in outputs5
    assert "prj_7/tc/plot_0042/plot_0042_2020_202.png" not in outputs5
    assert outputs5["prj_7/9_spectral_files_set_2020_202.csv"] == (
        HEADER + "LC08,7,9,0304,2020,202,497,800,701,3000,1504,789,0,2020-07-20T18:30:11.0000001Z\n"
    )


def test_negative_rescale_qa_and_mask_in_outputs(outputs5):
    assert outputs5["prj_7/0042_spectral_files_set_2021_007.csv"] == (
        HEADER + "LE07,7,0042,0304,2021,7,-75,0,701,3000,1504,789,1,2021-01-07T17:55:03.34Z\n"
    )
    chip = outputs5["prj_7/b743/plot_0042/plot_0042_2021_007.png"]
    assert chip[2, 1].tolist() == [0, 0, 0]  # red DN 0 -> masked
    assert chip[2, 2].tolist() == [93, 151, 91]
    assert chip[4].tolist() == [[0, 0, 0]] * 5


def test_series_and_ingest(outputs5):
    assert outputs5["prj_7/series/plot_0042_series.csv"] == (
        HEADER
        + "LC08,7,0042,0304,2020,186,497,800,701,3000,1504,789,0,2020-07-04T18:30:05.123Z\n"
        + "LE07,7,0042,0304,2021,7,-75,0,701,3000,1504,789,1,2021-01-07T17:55:03.34Z\n"
    )
    lines = outputs5["2020_prj_7_region_spectrals.csv"].split("\n")
    assert lines[-1] == ""
    keys = [(line.split(",")[3], line.split(",")[6]) for line in lines[:-1]]
    # plot_id as strings: "0042" < "10" < "9"; then doy
    assert keys == [("0042", "186"), ("10", "186"), ("10", "202"), ("9", "186"), ("9", "202")]
    assert lines[0] == "7,LC08,7,0042,0304,2020,186,497,800,701,3000,1504,789,0,2020-07-04T18:30:05.123Z"
    assert outputs5["2021_prj_7_region_spectrals.csv"].startswith(
        "7,LE07,7,0042,0304,2021,7,-75,0,701,3000,1504,789,1,2021-01-07T17:55:03.34Z\n7,LE07,7,10,"
    )


def test_empty_series(archive, tmp_path):
    plots = tmp_path / "plots.csv"
    plots.write_text(f"project_id,plot_id,x,y\n7,1,{P9[0]},{P9[1]}\n")
    outputs = oracle.expected_outputs(archive["catalog"], plots, chip=5, datetime_range=("2022", None))
    assert outputs == {"prj_7/series/plot_1_series.csv": HEADER}
    assert (
        oracle.expected_outputs(
            archive["catalog"], plots, chip=5, datetime_range=("2022", None), empty_series=False
        )
        == {}
    )


def test_default_chip_matches_small_chip_centre(archive, outputs5):
    full = oracle.expected_outputs(archive["catalog"], archive["plots"])
    assert set(full) == set(outputs5)
    for name, value in full.items():
        if isinstance(value, str):
            assert value == outputs5[name]
        else:
            assert value.shape == (255, 255, 3) and value.dtype == np.uint8
            assert np.array_equal(value[125:130, 125:130], outputs5[name])


def test_s3_hrefs_with_opener(archive, outputs5):
    mapping = {}
    for item in archive["items"]:
        for asset in item["assets"].values():
            mapping[asset["alternate"]["s3"]["href"]] = asset["href"]
    opened = []

    def opener(location):
        opened.append(location)
        return rasterio.open(mapping[location])

    outputs = oracle.expected_outputs(
        archive["catalog"], archive["plots"], chip=5, asset_href="s3", opener=opener
    )
    assert opened and all(location.startswith("s3://") for location in opened)
    assert set(outputs) == set(outputs5)
    for name in outputs:
        assert (
            np.array_equal(np.asarray(outputs[name]), np.asarray(outputs5[name]))
            if not isinstance(outputs[name], str)
            else outputs[name] == outputs5[name]
        )


# ---------------------------------------------------------------------------- comparison helpers


def write_tree(directory: Path, expected: dict) -> None:
    for name, content in expected.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8"))
        else:
            Image.fromarray(content, mode="RGB").save(path, format="PNG")


def test_decode_png(tmp_path):
    pixels = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    Image.fromarray(pixels, mode="RGB").save(tmp_path / "a.png")
    assert np.array_equal(oracle.decode_png(tmp_path / "a.png"), pixels)
    assert np.array_equal(oracle.decode_png((tmp_path / "a.png").read_bytes()), pixels)
    Image.fromarray(np.zeros((4, 3, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "b.png")
    with pytest.raises(ValueError):
        oracle.decode_png(tmp_path / "b.png")


def test_compare_tree(outputs5, tmp_path):
    write_tree(tmp_path, outputs5)
    (tmp_path / "_state").mkdir()
    (tmp_path / "_state" / "done.json").write_text("{}")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "plot.png").write_bytes(b"x")
    (tmp_path / "index.html").write_text("<html/>")
    assert oracle.compare_tree(tmp_path, outputs5) == []

    (tmp_path / "prj_7/series/plot_9_series.csv").unlink()
    (tmp_path / "prj_7/extra.csv").write_text("x\n")
    csv_path = tmp_path / "prj_7/0042_spectral_files_set_2020_186.csv"
    csv_path.write_bytes(csv_path.read_bytes().replace(b"\n", b"\r\n"))
    png_path = tmp_path / "prj_7/tc/plot_0042/plot_0042_2020_186.png"
    pixels = outputs5["prj_7/tc/plot_0042/plot_0042_2020_186.png"].copy()
    pixels[0, 0, 1] ^= 1
    pixels[3, 2, 0] ^= 4
    Image.fromarray(pixels, mode="RGB").save(png_path)
    rgba_path = tmp_path / "prj_7/b432/plot_9/plot_9_2020_202.png"
    Image.fromarray(np.zeros((5, 5, 4), dtype=np.uint8), mode="RGBA").save(rgba_path)

    differences = oracle.compare_tree(tmp_path, outputs5)
    assert len(differences) == 5, differences
    text = "\n".join(differences)
    assert "missing: prj_7/series/plot_9_series.csv" in text
    assert "unexpected: prj_7/extra.csv" in text
    assert "CSV prj_7/0042_spectral_files_set_2020_186.csv: line 1" in text
    assert "PNG prj_7/tc/plot_0042/plot_0042_2020_186.png: 2 of 25 pixels differ" in text
    assert "PNG prj_7/b432/plot_9/plot_9_2020_202.png: cannot decode" in text


def test_decode_png_rejects_16_bit(tmp_path):
    import struct
    import zlib

    def chunk(kind, payload):
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    raw = b"".join(b"\x00" + b"\x00" * 6 * 2 for _ in range(2))  # 2 x 2, 16-bit RGB
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(ValueError, match="bit depth 16"):
        oracle.decode_png(png)
    assert oracle.decode_png(png, strict=False).shape == (2, 2, 3)
