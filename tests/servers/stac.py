"""A real STAC API for the tests: pgstac on Debian's PostgreSQL 15 + PostGIS behind
stac-fastapi-pgstac (uvicorn), both on 127.0.0.1, started by the tests themselves.

Everything heavy is done by ``scripts/stac_server.py`` (run as a subprocess, so the STAC
server's own pinned packages live in ``.cache/stac-venv`` and never in the project venv).

    from tests.servers.stac import stac_server  # noqa: F401   (in tests/conftest.py)

    def test_x(stac_server):
        stac_server.load_items(make_ard_items())        # replaces the collection's items
        Client.open(stac_server.url) ...

The ``stac_server`` fixture is session-scoped and shared: each test loads the items it needs
(``load_items`` replaces the collection's items). Setup failures FAIL the tests, never skip.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "stac_server.py"
COLLECTION_ID = "landsat-c2ard-sr"


class StacServerError(RuntimeError):
    pass


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise StacServerError(f"{' '.join(cmd)} timed out after {timeout}s\n{e.stderr or ''}") from None
    if proc.returncode != 0:
        raise StacServerError(
            f"{' '.join(cmd)} failed ({proc.returncode})\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def setup_stac_server(timeout: float = 1800) -> None:
    """Install PostgreSQL/PostGIS (apt, if missing) and the STAC venv (if missing). Idempotent."""
    _run(["setup"], timeout)


@dataclass
class StacServer:
    url: str  # API root, e.g. http://127.0.0.1:PORT
    workdir: Path = field(repr=False)
    start_seconds: float = field(default=0.0, compare=False)
    collection_id: str = COLLECTION_ID
    _loads: int = field(default=0, repr=False, compare=False)

    def load_items(
        self, items: list[dict] | Path, collection: dict | None = None, *, append: bool = False
    ) -> None:
        """(Re)load: upsert ``collection`` (default: the built-in ``landsat-c2ard-sr``), delete
        that collection's items (unless ``append``) and load ``items`` (dicts or an ndjson file)."""
        self._loads += 1
        args = ["load", "--dir", str(self.workdir)]
        if isinstance(items, (str, Path)):
            args += ["--items", str(Path(items).resolve())]
        else:
            path = self.workdir / f"items-{self._loads}.ndjson"
            with open(path, "w", encoding="utf-8") as f:
                for item in items:
                    f.write(json.dumps(item) + "\n")
            args += ["--items", str(path)]
        if collection is not None:
            cpath = self.workdir / f"collection-{self._loads}.json"
            cpath.write_text(json.dumps(collection))
            args += ["--collection", str(cpath)]
            self.collection_id = collection["id"]
        if append:
            args.append("--append")
        _run(args, timeout=600)

    def stop(self) -> None:
        _run(["stop", "--dir", str(self.workdir), "--clean"], timeout=120)


def start_stac_server(workdir: Path, *, port: int | None = None, timeout: float = 120) -> StacServer:
    """Start PostgreSQL + the STAC API in ``workdir`` with the collection loaded and no items.
    Runs the (idempotent) setup first; its install time is not bounded by ``timeout``."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    setup_stac_server()
    t = time.monotonic()
    args = ["start", "--dir", str(workdir), "--timeout", str(timeout)]
    if port:
        args += ["--port", str(port)]
    proc = _run(args, timeout=timeout * 3)
    url = proc.stdout.strip().splitlines()[-1].strip()
    if not url.startswith("http://127.0.0.1:"):
        raise StacServerError(f"unexpected output from stac_server.py start: {proc.stdout!r}")
    server = StacServer(url=url, workdir=workdir, start_seconds=time.monotonic() - t)
    atexit.register(_stop_quietly, server)  # in case the session dies before its finalizer
    return server


def _stop_quietly(server: StacServer) -> None:
    with contextlib.suppress(Exception):
        server.stop()


_shared: dict[str, Any] = {"server": None, "users": 0}


@pytest.fixture(scope="session")
def stac_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StacServer]:
    """A running pgstac STAC API (collection ``landsat-c2ard-sr``, no items yet).

    One server per session even when this fixture is imported into several modules/conftests
    (each import is its own fixture definition for pytest)."""
    if _shared["server"] is None:
        error = None
        try:
            _shared["server"] = start_stac_server(tmp_path_factory.mktemp("stac-server"))
        except StacServerError as e:
            error = str(e)
        if error is not None:  # fail (never skip), outside the except: no chained traceback
            pytest.fail(f"STAC server could not be set up/started:\n{error}", pytrace=False)
    _shared["users"] += 1
    try:
        yield _shared["server"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            server, _shared["server"] = _shared["server"], None
            server.stop()


# --------------------------------------------------------------------------- fixture items

# CONUS ARD grid (EPSG:5070-like Albers): origin and 150 km tiles, see pipeline/grid.py
_CU_X0, _CU_Y0, _TILE = -2565585, 3314805, 150000
_ALBERS_CU = (
    "+proj=aea +lat_0=23 +lon_0=-96 +lat_1=29.5 +lat_2=45.5 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
)

# sensor by date: (platform, instrument(s), product prefix)
_SENSORS = [
    (datetime(1984, 3, 1, tzinfo=UTC), "LANDSAT_5", ["TM"], "LT05"),
    (datetime(1999, 6, 1, tzinfo=UTC), "LANDSAT_7", ["ETM"], "LE07"),
    (datetime(2013, 4, 11, tzinfo=UTC), "LANDSAT_8", ["OLI", "TIRS"], "LC08"),
    (datetime(2021, 11, 1, tzinfo=UTC), "LANDSAT_9", ["OLI", "TIRS"], "LC09"),
]


def _tile_lonlat_ring(h: int, v: int) -> list[list[float]]:
    xmin, ymax = _CU_X0 + h * _TILE, _CU_Y0 - v * _TILE
    xs = [xmin, xmin, xmin + _TILE, xmin + _TILE, xmin]
    ys = [ymax, ymax - _TILE, ymax - _TILE, ymax, ymax]
    try:
        from rasterio.crs import CRS
        from rasterio.warp import transform

        lons, lats = transform(CRS.from_proj4(_ALBERS_CU), CRS.from_epsg(4326), xs, ys)
    except Exception:  # rasterio missing/broken: a rough linear stand-in, still in the US
        lons = [-125.0 + (x - _CU_X0) / 85000.0 for x in xs]
        lats = [50.0 - (_CU_Y0 - y) / 111000.0 for y in ys]
    return [[round(lon, 9), round(lat, 9)] for lon, lat in zip(lons, lats, strict=True)]


def format_datetime(dt: datetime, digits: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.f{digits}]Z``; digits 0..9 (7+ digits: extra digits appended)."""
    base = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if digits == 0:
        return base + "Z"
    frac = f"{dt.microsecond:06d}" + "5037"  # deterministic sub-microsecond digits
    return f"{base}.{frac[:digits]}Z"


def make_ard_item(
    h: str,
    v: str,
    region: str,
    when: datetime,
    *,
    frac_digits: int = 6,
    collection: str = COLLECTION_ID,
    asset_root: str = "https://landsatlook.usgs.gov/data",
    s3_root: str = "s3://usgs-landsat-ard",
) -> dict[str, Any]:
    """One item shaped like LandsatLook's landsat-c2ard-sr items (grid properties are two-digit
    strings, e.g. h="03", v="04", region="CU")."""
    platform, instruments, prefix = "LANDSAT_4", ["TM"], "LT04"
    for since, p, i, x in _SENSORS:
        if when >= since:
            platform, instruments, prefix = p, i, x
    hi, vi = int(h), int(v)
    acq = when.strftime("%Y%m%d")
    proc_date = (when + timedelta(days=30)).strftime("%Y%m%d")
    product = f"{prefix}_{region}_{hi:03d}{vi:03d}_{acq}_{proc_date}_02"
    item_id = f"{product}_SR"
    sensor_dir = {"LT04": "tm", "LT05": "tm", "LE07": "etm", "LC08": "oli-tirs", "LC09": "oli-tirs"}[prefix]
    rel = f"collection02/{sensor_dir}/{when:%Y}/{region}/{hi:03d}/{vi:03d}/{product}"
    bands = {
        "blue": ("B2" if prefix.startswith("LC") else "B1"),
        "green": ("B3" if prefix.startswith("LC") else "B2"),
        "red": ("B4" if prefix.startswith("LC") else "B3"),
        "nir08": ("B5" if prefix.startswith("LC") else "B4"),
        "swir16": ("B6" if prefix.startswith("LC") else "B5"),
        "swir22": "B7",
    }
    assets: dict[str, Any] = {}
    for key, b in bands.items():
        fname = f"{product}_SR_{b}.TIF"
        assets[key] = {
            "href": f"{asset_root}/{rel}/{fname}",
            "type": "image/vnd.stac.geotiff; cloud-optimized=true",
            "title": f"{key} band ({b})",
            "alternate": {
                "s3": {
                    "storage:platform": "AWS",
                    "storage:requester_pays": True,
                    "href": f"{s3_root}/{rel}/{fname}",
                }
            },
            "roles": ["data"],
        }
    fname = f"{product}_QA_PIXEL.TIF"
    assets["qa_pixel"] = {
        "href": f"{asset_root}/{rel}/{fname}",
        "type": "image/vnd.stac.geotiff; cloud-optimized=true",
        "title": "Pixel Quality Assessment Band",
        "alternate": {
            "s3": {
                "storage:platform": "AWS",
                "storage:requester_pays": True,
                "href": f"{s3_root}/{rel}/{fname}",
            }
        },
        "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
    }
    ring = _tile_lonlat_ring(hi, vi)
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    xmin, ymax = _CU_X0 + hi * _TILE, _CU_Y0 - vi * _TILE
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://landsat.usgs.gov/stac/landsat-ard-extension/v1.1.1/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/alternate-assets/v1.1.0/schema.json",
            "https://stac-extensions.github.io/storage/v1.0.0/schema.json",
        ],
        "id": item_id,
        "description": "Landsat Collection 2 ARD Surface Reflectance Product",
        "collection": collection,
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "datetime": format_datetime(when, frac_digits),
            "platform": platform,
            "instruments": instruments,
            "eo:cloud_cover": round((hi * 7 + vi * 3 + when.toordinal()) % 100 * 0.97, 2),
            "landsat:grid_horizontal": f"{hi:02d}",
            "landsat:grid_vertical": f"{vi:02d}",
            "landsat:grid_region": region,
            "landsat:scene_count": 2,
            "landsat:collection_category": "A1",
            "landsat:collection_number": "02",
            "landsat:correction": "SR",
            "proj:epsg": None,
            "proj:shape": [5000, 5000],
            "proj:transform": [30, 0, xmin, 0, -30, ymax],
            "created": f"{(when + timedelta(days=30)):%Y-%m-%d}T07:01:25.794Z",
            "updated": f"{(when + timedelta(days=30)):%Y-%m-%d}T07:01:25.794Z",
        },
        "links": [],
        "assets": assets,
    }


DEFAULT_TILES: tuple[tuple[str, str, str], ...] = (("03", "04", "CU"), ("03", "05", "CU"), ("04", "04", "CU"))


def make_ard_items(
    tiles: Iterable[tuple[str, str, str]] = DEFAULT_TILES,
    n_dates: int = 30,
    *,
    start: datetime = datetime(1984, 4, 2, 17, 21, 5, 123456, tzinfo=UTC),
    end: datetime = datetime(2024, 6, 30, 18, 2, 44, 654321, tzinfo=UTC),
    **item_kwargs: Any,
) -> list[dict[str, Any]]:
    """``len(tiles) * n_dates`` items: dates spread evenly from ``start`` to ``end`` (the default
    range runs past 2022 so a 1984..2022 search excludes some), shifted a little per tile, with
    fractional-second digits cycling through 0..7 as LandsatLook's do."""
    items = []
    step = (end - start) / max(n_dates - 1, 1)
    for t_index, (h, v, region) in enumerate(tiles):
        for d in range(n_dates):
            when = start + step * d + timedelta(minutes=t_index * 3, microseconds=t_index * 1001)
            items.append(make_ard_item(h, v, region, when, frac_digits=(d + t_index) % 8, **item_kwargs))
    return items
