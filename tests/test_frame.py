"""The shared frame's pieces the HLS workflow added: MGRS grids, area searches of a local
catalogue, SAS signing of blob hrefs (through the Planetary Computer SDK against a local
token service), and whole-file / whole-tree writes of a store."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.catalog import LocalCatalog
from pipeline.datetimes import parse_interval
from pipeline.errors import InputError, ItemError
from pipeline.mgrs_grid import (
    TileGrid,
    check_tile_id,
    grid_of_item,
    lonlat_bbox,
    lonlat_to,
    nominal_grid,
    tile_of,
    tiles_in_bbox,
    tiles_near,
    to_lonlat,
)
from pipeline.signing import Signing
from targets.store import Store

# ---- MGRS -------------------------------------------------------------------------------


def test_nominal_grids_of_real_tiles():
    # 10TET: transform [30, 0, 499980, 0, -30, 5300040] (an HLS / Sentinel-2 fact)
    g = nominal_grid("10TET")
    assert (g.epsg, g.transform, g.width, g.height) == (
        32610,
        (30.0, 0.0, 499980.0, 0.0, -30.0, 5300040.0),
        3660,
        3660,
    )
    assert nominal_grid("10TFT").transform[2] == 599980.0  # the real 10TFT is snapped to 600000
    assert nominal_grid("55HBU").epsg == 32755  # southern hemisphere


def test_tile_of_and_neighbours():
    x, y = 550000.0, 5250000.0  # the middle of 10TET's square
    lon, lat = to_lonlat(32610, x, y)
    assert tile_of(lat, lon) == "10TET"
    assert tiles_near(lat, lon, 10_000) == ["10TET"]  # 50 km from every edge
    lon, lat = to_lonlat(32610, 600_500.0, 5250000.0)  # 500 m east of the ET/FT boundary
    assert tile_of(lat, lon) == "10TFT"
    assert tiles_near(lat, lon, 10_000)[:2] == ["10TFT", "10TET"]
    x2, y2 = lonlat_to(32610, lon, lat)
    assert (x2, y2) == pytest.approx((600_500.0, 5250000.0), abs=1e-3)


def test_tiles_in_bbox_and_lonlat_bbox():
    box = lonlat_bbox(nominal_grid("10TET"))
    assert box[0] < -122.9 < box[2] and box[1] < 47.4 < box[3]
    assert tiles_in_bbox((-122.6, 47.3, -122.4, 47.4)) == ["10TET"]
    assert set(tiles_in_bbox((-121.9, 47.3, -121.3, 47.4))) == {"10TET", "10TFT"}


@pytest.mark.parametrize(
    "text, ok",
    [
        ("10TET", "10TET"),
        ("010tet", "10TET"),
        ("61TET", None),
        ("10IET", None),
        ("XXTET", None),
        ("10TE", None),
    ],
)
def test_check_tile_id(text, ok):
    if ok:
        assert check_tile_id(text) == ok
    else:
        with pytest.raises(InputError, match="field 'tile'"):
            check_tile_id(text)


def _item(**props):
    base = {
        "proj:epsg": 32610,
        "proj:transform": [30, 0, 499980, 0, -30, 5300040],
        "proj:shape": [3660, 3660],
    }
    base.update(props)
    return {"id": "x", "properties": {k: v for k, v in base.items() if v is not None}}


def test_grid_of_item():
    g = grid_of_item(_item())
    assert g == TileGrid(32610, (30.0, 0.0, 499980.0, 0.0, -30.0, 5300040.0), 3660, 3660)
    assert grid_of_item(_item(**{"proj:transform": [30, 0, 499980, 0, -30, 5300040, 0, 0, 1]})) == g
    assert TileGrid.from_json(g.to_json()) == g
    for bad, field in [
        ({"proj:epsg": None}, "proj:epsg"),
        ({"proj:epsg": "32610"}, "proj:epsg"),
        ({"proj:transform": [30, 0, 1]}, "proj:transform"),
        ({"proj:transform": [30, 1, 0, 0, -30, 0]}, "proj:transform"),
        ({"proj:shape": [3660]}, "proj:shape"),
    ]:
        with pytest.raises(ItemError, match=field):
            grid_of_item(_item(**bad))


# ---- area searches ----------------------------------------------------------------------


def test_local_search_bbox_narrows_by_id_and_keeps_unparsable_datetimes(tmp_path):
    def feature(iid, dt, box):
        return {
            "type": "Feature",
            "id": iid,
            "collection": "hls2-l30",
            "bbox": box,
            "geometry": None,
            "properties": {"datetime": dt},
            "assets": {},
        }

    items = [
        feature("HLS.L30.T10TET.2019183T185921.v2.0", "2019-07-02T18:59:21Z", [-123, 46.8, -121.5, 47.8]),
        feature(
            "HLS.L30.T10TFT.2019183T185921.v2.0", "2019-07-02T18:59:21Z", [-121.7, 46.8, -120.2, 47.8]
        ),  # neighbour
        feature(
            "HLS.L30.T10TET.2020001T185921.v2.0", "2020-01-01T18:59:21Z", [-123, 46.8, -121.5, 47.8]
        ),  # other year
        feature("HLS.L30.T10TET.2019200T185921.v2.0", "not-a-date", [-123, 46.8, -121.5, 47.8]),
        feature(
            "HLS.L30.T10TET.2019001T185921.v2.0", "2019-01-01T00:00:00Z", [-100, 30, -99, 31]
        ),  # elsewhere
    ]
    path = tmp_path / "items.ndjson"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    cat = LocalCatalog.load(path)
    found = cat.search_bbox(
        collection="hls2-l30",
        interval=parse_interval("2019-01-01/2019-12-31"),
        bbox=(-122.5, 47.0, -121.6, 47.5),
        id_prefix="HLS.L30.T10TET.",
    )
    assert [i["id"] for i in found] == [
        "HLS.L30.T10TET.2019183T185921.v2.0",
        "HLS.L30.T10TET.2019200T185921.v2.0",
    ]
    assert (
        cat.search_bbox(collection="hls2-s30", interval=parse_interval("2019"), bbox=(-180, -80, 180, 84))
        == []
    )


# ---- signing ----------------------------------------------------------------------------


class _TokenService:
    """A token endpoint shaped like Planetary Computer's: counts requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append(self.path)
                account, container = self.path.rstrip("/").split("/")[-2:]
                body = json.dumps(
                    {
                        "msft:expiry": "2099-01-01T00:00:00Z",
                        "token": f"sv=2024&sp=rl&sig={account}-{container}",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/sas/v1/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def token_service(monkeypatch):
    from planetary_computer import sas
    from planetary_computer.settings import Settings

    service = _TokenService()
    monkeypatch.setenv("PC_SDK_SAS_URL", service.url)
    Settings.get.cache_clear()
    sas.TOKEN_CACHE.clear()
    yield service
    service.server.shutdown()
    Settings.get.cache_clear()
    sas.TOKEN_CACHE.clear()


def test_signing_blob_urls_through_the_sdk_with_a_cached_token(token_service):
    s = Signing("planetary-computer", token_service.url, ("127.0.0.1:10000",))
    href = "https://hls2euwest.blob.core.windows.net/hls2/L30/10TET/x.B01.tif"
    assert s.sign(href) == href + "?sv=2024&sp=rl&sig=hls2euwest-hls2"
    assert s.sign(href.replace("B01", "B02")).endswith("sig=hls2euwest-hls2")
    emulator = "http://127.0.0.1:10000/devstoreaccount1/hls2/L30/x.tif"
    assert s.sign(emulator) == emulator + "?sv=2024&sp=rl&sig=devstoreaccount1-hls2"
    assert token_service.requests == [
        "/api/sas/v1/token/hls2euwest/hls2",
        "/api/sas/v1/token/devstoreaccount1/hls2",
    ]
    # not blob storage, signed already, local files, signing off: unchanged, no request
    for href in [
        "https://example.com/a.tif",
        emulator + "?se=1&sig=x",
        "/data/a.tif",
        "http://127.0.0.1:9999/acc/c/a.tif",
    ]:
        assert s.sign(href) == href
    assert (
        Signing("none").sign("https://a.blob.core.windows.net/c/x.tif")
        == "https://a.blob.core.windows.net/c/x.tif"
    )
    assert len(token_service.requests) == 2


# ---- stores -----------------------------------------------------------------------------


def test_put_file_and_tree_are_whole_or_absent(tmp_path):
    store = Store(str(tmp_path / "out"))
    src = tmp_path / "cog.tif"
    src.write_bytes(b"cog")
    store.put_file("composites/10TET/2019/a.tif", str(src))
    assert not src.exists() and store.read_bytes("composites/10TET/2019/a.tif") == b"cog"
    tree = tmp_path / "z"
    (tree / "chips").mkdir(parents=True)
    (tree / "chips" / "0.0").write_bytes(b"1")
    (tree / ".zmetadata").write_text("{}")
    store.put_tree("samples/2019/10TET.zarr", str(tree))
    assert sorted(os.listdir(tmp_path / "out" / "samples" / "2019" / "10TET.zarr")) == [".zmetadata", "chips"]
    tree2 = tmp_path / "z2"
    tree2.mkdir()
    (tree2 / ".zmetadata").write_text('{"new": 1}')
    store.put_tree("samples/2019/10TET.zarr", str(tree2))  # a rebuilt store replaces the old one
    assert os.listdir(tmp_path / "out" / "samples" / "2019" / "10TET.zarr") == [".zmetadata"]
    assert not [n for n in os.listdir(tmp_path / "out" / "samples" / "2019") if n.startswith(".")]


def test_allow_open_files_raises_the_soft_limit_up_to_the_hard_one_and_never_lowers_it():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import resource
        from pipeline.raster import allow_open_files
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        allow_open_files(1000)
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        allow_open_files(300)
        kept = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        allow_open_files(10**9)  # up to the hard limit, no further
        top = resource.getrlimit(resource.RLIMIT_NOFILE)
        print(raised == min(1000, hard), kept == raised, hard == resource.RLIM_INFINITY or top == (hard, hard))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]


# ---- the task frame: Dask plumbing, completeness kept once true, dry runs ------------------


@pytest.fixture(scope="module")
def threaded_cluster():
    """The process's Dask client (pipeline.cluster.get_client) on an embedded cluster of threads."""
    import luigi.configuration

    from pipeline import cluster

    config = luigi.configuration.get_config()
    config.set("dask", "processes", "false")
    config.set("dask", "n_workers", "1")
    try:
        yield cluster.get_client()
    finally:
        cluster._close()
        config.remove_option("dask", "processes")
        config.remove_option("dask", "n_workers")


def _add(a: int, b: int) -> int:
    return a + b


_release = threading.Event()  # module level: Dask pickles a call's arguments, and a lock cannot be


def _wait_for_release(wait: bool) -> bool:
    return _release.wait(30) if wait else True


def test_run_each_runs_every_call_once_and_names_its_keys(threaded_cluster):
    from pipeline.cluster import run_each

    calls = [(i, 100) for i in range(7)]
    seen = {}
    for index, future in run_each(_add, calls, name="frame", labels=[f"call{i}" for i in range(7)]):
        assert index not in seen
        seen[index] = (future.result(), future.key)
    assert {i: r for i, (r, _) in seen.items()} == {i: i + 100 for i in range(7)}
    assert all(key.startswith(f"frame-call{i}-{os.getpid()}-") for i, (_, key) in seen.items())
    assert list(run_each(_add, [], name="frame")) == []


def test_run_each_cancels_what_is_unfinished_when_the_caller_leaves(threaded_cluster):
    from pipeline.cluster import run_each

    running = run_each(_wait_for_release, [(True,)] * 3 + [(False,)], name="frame")
    blocked = running.futures[:3]

    class Stop(Exception):
        pass

    with pytest.raises(Stop), running:
        raise Stop  # e.g. building the item failed before any result was taken
    assert all(f.status == "cancelled" for f in blocked)
    _release.set()


@pytest.fixture()
def no_dask_client(monkeypatch):
    """This process as a fresh luigi process: no scheduler configured, no Dask client yet."""
    from pipeline import cluster

    monkeypatch.delenv(cluster.SCHEDULER_ENV, raising=False)
    monkeypatch.delenv(cluster.REFERENCE_SCHEDULER_ENV, raising=False)
    monkeypatch.setattr(cluster, "_state", {"pid": None, "client": None, "cluster": None})
    return cluster


def _thread_and_sum(a: int, b: int) -> tuple[int, str, int]:
    return os.getpid(), threading.current_thread().name, a + b


def test_run_each_on_own_threads_runs_every_call_once_on_that_many_threads(no_dask_client):
    cluster = no_dask_client
    entered = threading.Barrier(3, timeout=10)

    def call(i: int) -> tuple[int, str, int]:
        if i < 3:
            entered.wait()  # the first three calls run at once: three threads
        return _thread_and_sum(i, 100)

    assert cluster.on_own_threads(3) and not cluster.on_own_threads(None)
    running = cluster.run_each(call, [(i,) for i in range(7)], name="frame", in_process_threads=3)
    seen = {}
    for index, future in running:
        assert index not in seen
        seen[index] = future.result()
    assert {i: total for i, (_, _, total) in seen.items()} == {i: i + 100 for i in range(7)}
    assert {pid for pid, _, _ in seen.values()} == {os.getpid()}
    threads = {name for _, name, _ in seen.values()}
    assert len(threads) == 3 and all(name.startswith("frame_") for name in threads)
    assert not cluster.has_client()  # no Dask cluster was started for them
    assert list(cluster.run_each(call, [], name="frame", in_process_threads=3)) == []


def test_run_each_uses_a_client_the_process_has_rather_than_threads(no_dask_client, monkeypatch):
    cluster = no_dask_client
    submitted = []

    class Client:
        def submit(self, fn, *args, pure, key):
            submitted.append((args, pure, key.split("-")[0]))
            return None

    monkeypatch.setattr(cluster, "_state", {"pid": os.getpid(), "client": Client(), "cluster": None})
    assert not cluster.on_own_threads(3)
    running = cluster.run_each(_add, [(1, 2)], name="frame", in_process_threads=3)
    assert submitted == [((1, 2), False, "frame")] and not running.on_threads


def test_kept_per_thread_lives_with_a_pool_thread_and_nowhere_else(no_dask_client):
    cluster = no_dask_client

    def kept() -> list[int]:
        return cluster.kept_per_thread("frame-scratch", list)

    # The objects themselves, held: an id alone could be a freed object's address reused.
    objects = [f.result() for _, f in cluster.run_each(kept, [()] * 4, name="frame", in_process_threads=1)]
    assert all(o is objects[0] for o in objects)  # one thread: its four calls shared one object
    assert cluster.kept_per_thread("frame-scratch", list) is not cluster.kept_per_thread(
        "frame-scratch", list
    )


def test_leaving_own_threads_early_cancels_the_queued_calls_and_waits_for_the_running(no_dask_client):
    cluster = no_dask_client
    started, release = threading.Event(), threading.Event()

    def call(first: bool) -> str:
        if first:
            started.set()
            release.wait(10)
            return "finished"
        return "ran"

    class Stop(Exception):
        pass

    running = cluster.run_each(call, [(True,), (False,), (False,)], name="frame", in_process_threads=1)
    assert started.wait(10)
    threading.Timer(0.3, release.set).start()
    with pytest.raises(Stop), running:
        raise Stop  # e.g. a later step failed before any result was taken
    first, *queued = running.futures
    assert first.done() and first.result() == "finished"  # the running call ended before the block did
    assert all(f.cancelled() for f in queued)


def test_unit_task_keeps_a_true_answer_and_asks_again_after_a_false_one():
    import luigi

    from pipeline.task_base import UnitTask

    answers = [False, True, False]
    asked = []

    class Unit(UnitTask):
        name = luigi.Parameter()

        def is_complete(self) -> bool:
            asked.append(1)
            return answers[len(asked) - 1]

    task = Unit(name="frame-unit")
    assert [task.complete() for _ in range(4)] == [False, True, True, True]
    assert len(asked) == 2  # the third answer (False) was never asked for

    class Written(UnitTask):
        name = luigi.Parameter()

        def is_complete(self) -> bool:
            raise AssertionError("run() said it is complete")

    written = Written(name="frame-written")
    written.mark_complete()
    assert written.complete()


def test_dry_run_task_is_never_complete_and_records_its_estimate(monkeypatch):
    import luigi

    from pipeline import runstats
    from pipeline.task_base import DryRunTask

    recorded = []
    monkeypatch.setattr(runstats, "record_text", lambda name, text: recorded.append((name, text)))

    class Estimate(DryRunTask):
        dry_run_name = "frame-dry-run"
        files = luigi.IntParameter()

        def estimate(self) -> str:
            return f"{self.files} files to read"

    task = Estimate(files=3)
    assert not task.complete()
    task.run()
    assert not task.complete()
    assert recorded == [("frame-dry-run", "3 files to read")]
