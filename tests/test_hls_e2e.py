"""HLS end to end: the luigi command line on a generated hls2-shaped archive, every composite
pixel and every sample checked against tests/hls_oracle.py, an independent implementation;
COGs validated; reruns, deletions and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from tests import hls_oracle as oracle
from tests.helpers import luigi_env, run_luigi, snapshot

pytestmark = pytest.mark.slow

MODULE = "pipeline.hls"


def hls_args(task: str, archive, project: Path | str, *extra: str, catalog: str | None = None) -> list[str]:
    args = [
        task,
        "--catalog",
        catalog or str(archive.catalog),
        "--project-dir",
        str(project),
        "--local-scheduler",
    ]
    if task in ("HlsComposites", "HlsDryRun"):
        args += ["--tiles", str(archive.tiles)]
    if task == "HlsSamples":
        args += ["--points", str(archive.points)]
    return [*args, *extra]


def run_hls(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return run_luigi(
        list(args),
        cwd=cwd,
        env=env or luigi_env({"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}),
        module=MODULE,
    )


@pytest.fixture(scope="module")
def hls_run(small_hls_archive, tmp_path_factory):
    project = tmp_path_factory.mktemp("hls") / "project"
    comp = run_hls(*hls_args("HlsComposites", small_hls_archive, project), cwd=project.parent)
    assert comp.returncode == 0, comp.stderr[-4000:]
    samp = run_hls(*hls_args("HlsSamples", small_hls_archive, project), cwd=project.parent)
    assert samp.returncode == 0, samp.stderr[-4000:]
    return project, comp, samp


def _tile_years(archive) -> list[tuple[str, int]]:
    with open(archive.tiles, newline="", encoding="utf-8-sig") as f:
        return [(r["tile"], int(r["year"])) for r in csv.DictReader(f)]


def test_every_composite_pixel_equals_the_recipe(hls_run, small_hls_archive):
    project, comp, _ = hls_run
    checked = 0
    for tile, year in _tile_years(small_hls_archive):
        expected = oracle.composites(small_hls_archive.items, tile, year)
        assert expected, f"the archive has no items for {tile} {year}"
        written = sorted(p.name for p in (project / "composites" / tile / str(year)).glob("*.tif"))
        assert written == [f"{tile}_{year}-{m:02d}.tif" for m in sorted(expected)]
        epsg, transform, width, height = oracle.tile_grid(small_hls_archive.items, tile)
        for month, want in expected.items():
            path = project / "composites" / tile / str(year) / f"{tile}_{year}-{month:02d}.tif"
            with rasterio.open(path) as ds:
                got = ds.read()
                assert ds.count == 9 and ds.dtypes[0] == "float32"
                assert ds.descriptions == (*oracle.BANDS, "valid_count")
                assert ds.crs.to_epsg() == epsg
                assert list(ds.transform)[:6] == pytest.approx(transform)
                assert (ds.width, ds.height) == (width, height)
                assert np.isnan(ds.nodata)
            assert oracle.nan_equal(got, want), (
                f"{path.name}: {np.sum(~((got == want) | (np.isnan(got) & np.isnan(want))))} pixels differ"
            )
            checked += 1
    assert checked >= 4
    assert "HLS summary" in comp.stderr


def test_composites_are_valid_cogs(hls_run):
    from rio_cogeo.cogeo import cog_validate

    project, _, _ = hls_run
    tifs = sorted((project / "composites").rglob("*.tif"))
    assert tifs
    for path in tifs:
        valid, errors, warnings = cog_validate(str(path), strict=True)
        assert valid, (path.name, errors, warnings)
        with rasterio.open(path) as ds:
            assert ds.block_shapes[0] == (512, 512) or ds.width < 512
            assert ds.profile.get("compress", "").lower() == "deflate"
            assert ds.overviews(1) or max(ds.width, ds.height) <= 512


def test_every_sample_equals_the_recipe(hls_run, small_hls_archive):
    import zarr

    project, _, samp = hls_run
    points = pd.read_csv(small_hls_archive.points, dtype={"id": str})
    tiles_with_data = {t for t, _ in _tile_years(small_hls_archive)}
    placed_count = 0
    unplaced_seen: dict[int, set[str]] = {}
    for year, group in points.groupby("year"):
        composites = {t: oracle.composites(small_hls_archive.items, t, int(year)) for t in tiles_with_data}
        grids = {t: oracle.tile_grid(small_hls_archive.items, t) for t in tiles_with_data if composites[t]}
        with open(project / "samples" / str(year) / "unplaced.csv", newline="") as f:
            unplaced_seen[int(year)] = {r["id"] for r in csv.DictReader(f)}
        for _, p in group.iterrows():
            from pipeline.mgrs_grid import tile_of  # the point's own MGRS square (mgrs package)

            own = tile_of(p.lat, p.lon)
            spots = {t: oracle.chip_place(p.lat, p.lon, g, 32) for t, g in grids.items()}
            fits = sorted(t for t, s in spots.items() if s is not None)
            tile = own if own in fits else (fits[0] if fits else None)
            if tile is None:
                assert p.id in unplaced_seen[int(year)]
                continue
            assert p.id not in unplaced_seen[int(year)]
            store = zarr.open_group(str(project / "samples" / str(year) / f"{tile}.zarr"), mode="r")
            ids = [str(i) for i in store["id"][:]]
            k = ids.index(p.id)
            chips = store["chips"]
            assert chips.shape[1:] == (12, 8, 32, 32)
            c0, r0 = spots[tile]
            centre = pd.read_parquet(project / "samples" / str(year) / f"{tile}_centre.parquet")
            rows = centre[centre["id"].astype(str) == p.id].sort_values("month")
            assert list(rows["month"]) == list(range(1, 13))
            for month in range(1, 13):
                got = chips[k, month - 1]
                row = rows.iloc[month - 1]
                if month in composites[tile]:
                    want = composites[tile][month][:8, r0 : r0 + 32, c0 : c0 + 32]
                    assert oracle.nan_equal(got, want), (p.id, month)
                    cv = composites[tile][month][:, r0 + 16, c0 + 16]
                    assert row["valid_count"] == cv[8]
                    for b, name in enumerate(oracle.BANDS):
                        assert (np.isnan(row[name]) and np.isnan(cv[b])) or row[name] == cv[b]
                else:
                    assert np.all(np.isnan(got))
                    assert row["valid_count"] == 0 and all(np.isnan(row[n]) for n in oracle.BANDS)
            placed_count += 1
    assert placed_count >= 3
    assert any(unplaced_seen.values()), "the archive has a point that fits nowhere"
    assert "UNPLACED" in samp.stderr


def test_edge_point_served_by_the_neighbour(hls_run, small_hls_archive):
    """The point whose chip crosses its own tile's edge is in the neighbour's samples."""
    project, _, _ = hls_run
    edge = small_hls_archive.edge_point  # (id, year, own tile, serving tile)
    pid, year, own, serving = edge
    assert own != serving
    centre = pd.read_parquet(project / "samples" / str(year) / f"{serving}_centre.parquet")
    assert pid in set(centre["id"].astype(str))


def test_rerun_writes_nothing(hls_run, small_hls_archive):
    project, _, _ = hls_run
    before = snapshot(project)
    for task in ("HlsComposites", "HlsSamples"):
        proc = run_hls(*hls_args(task, small_hls_archive, project), cwd=project.parent)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(project) == before


def test_deleted_outputs_are_rebuilt_alone(hls_run, small_hls_archive, tmp_path):
    src, _, _ = hls_run
    project = tmp_path / "project"
    shutil.copytree(src, project)
    cog = next(iter(sorted((project / "composites").rglob("*.tif"))))
    zarr_dir = next(iter(sorted((project / "samples").rglob("*.zarr"))))
    before = snapshot(project)
    cog.unlink()
    shutil.rmtree(zarr_dir)
    for task in ("HlsComposites", "HlsSamples"):
        proc = run_hls(*hls_args(task, small_hls_archive, project), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    after = snapshot(project)
    changed = {k for k in after if after[k] != before.get(k)}
    rebuilt_cog = str(cog.relative_to(project))
    assert rebuilt_cog in changed
    month_images = f"report/hls/img/{cog.stem}_"
    assert all(
        k == rebuilt_cog
        or k.startswith(str(zarr_dir.relative_to(project)))
        or k.startswith(("_state", month_images))
        or k.endswith("_centre.parquet")
        or k in ("report/hls/index.html", "report/hls/img/figures.json")
        for k in changed
    ), sorted(changed)
    with rasterio.open(cog) as a, rasterio.open(src / cog.relative_to(project)) as b:
        assert oracle.nan_equal(a.read(), b.read())


def test_kill_9_at_any_instant_then_rerun_equals_a_clean_run(hls_run, small_hls_archive, tmp_path):
    """HlsComposites killed (SIGKILL, its whole process group) at several instants after its first
    COG appeared, each time resumed by the next attempt: every file under composites/ is a whole
    COG of its final name, byte for byte the clean run's; the rerun rewrites none of them and
    ends with exactly the clean run's composites, and the working directories the killed
    processes left (pipeline.scratch) are gone."""
    import hashlib
    import re

    from tests.helpers import LUIGI, kill_when

    clean, _, _ = hls_run
    project = tmp_path / "project"

    def composites(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted((root / "composites").rglob("*"))
            if p.is_file()
        }

    expected = composites(clean)
    name = re.compile(r"composites/(\w{5})/(\d{4})/\1_\2-\d\d\.tif")
    args = [LUIGI, "--module", MODULE, *hls_args("HlsComposites", small_hls_archive, project),
            "--hls-dask-threads", "1"]  # fmt: skip
    temporary = tmp_path / "tmp"  # the runs' system temporary directory
    temporary.mkdir()
    env = luigi_env({"TMPDIR": str(temporary)})
    interrupted = 0
    kept: dict[str, int] = {}  # every whole COG seen after a kill, with its mtime
    for delay in (0.0, 0.15, 0.4):  # after the attempt's first new COG appeared
        before = set(composites(project)) if project.exists() else set()

        def new_cog(before: set[str] = before) -> bool:
            return project.exists() and bool(set(composites(project)) - before)

        interrupted += kill_when(args, cwd=tmp_path, env=env, ready=new_cog, delay=delay)
        assert list(temporary.glob("eo-extract.*"))  # the killed process's working directories
        now = composites(project)
        assert all(name.fullmatch(k) for k in now), sorted(now)  # no temporary under composites/
        assert {k: v for k, v in now.items() if k in expected} == now  # nothing unknown
        assert all(expected[k] == v for k, v in now.items())  # each one whole, the clean run's bytes
        for k in now:
            mtime = (project / k).stat().st_mtime_ns
            assert kept.setdefault(k, mtime) == mtime, k  # finished work never redone
    assert interrupted >= 1
    final_env = luigi_env({"TMPDIR": str(temporary), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"})
    proc_done = run_hls(*hls_args("HlsComposites", small_hls_archive, project), cwd=tmp_path, env=final_env)
    assert proc_done.returncode == 0, proc_done.stderr[-3000:]
    assert composites(project) == expected
    assert all((project / k).stat().st_mtime_ns == mtime for k, mtime in kept.items())
    assert not list(temporary.glob("eo-extract.*"))  # swept by the run after them, its own removed


def test_dry_run_reads_and_writes_nothing(small_hls_archive, tmp_path):
    project = tmp_path / "p"
    proc = run_hls(*hls_args("HlsDryRun", small_hls_archive, project), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HLS dry run" in proc.stderr
    assert not (project / "composites").exists()
    n_items = sum(1 for _ in small_hls_archive.items)
    assert f" {n_items} " in proc.stderr.split("total", 1)[1].splitlines()[0] + " "


@pytest.mark.parametrize(
    "content, message",
    [
        ("tile,year\n10TET,19x9\n", "line 2, field 'year'"),
        ("tile,year\nXXTET,2019\n", "line 2, field 'tile'"),
        ("tiles,year\n10TET,2019\n", "missing column(s) tile"),
    ],
)
def test_bad_tiles_file(small_hls_archive, tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    proc = run_hls(
        "HlsComposites",
        "--tiles",
        str(bad),
        "--catalog",
        str(small_hls_archive.catalog),
        "--project-dir",
        str(tmp_path / "p"),
        "--local-scheduler",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert str(bad) in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,lat,lon,year\na,47.1,-122.5,2019\na,47.2,-122.5,2019\n", "line 3, field 'id': duplicate id 'a'"),
        ("id,lat,lon,year\na,95,-122.5,2019\n", "line 2, field 'lat'"),
        ("id,lat,lon\na,47,-122.5\n", "missing column(s) year"),
    ],
)
def test_bad_points_file(small_hls_archive, tmp_path, content, message):
    bad = tmp_path / "points.csv"
    bad.write_text(content)
    proc = run_hls(
        "HlsSamples",
        "--points",
        str(bad),
        "--catalog",
        str(small_hls_archive.catalog),
        "--project-dir",
        str(tmp_path / "p"),
        "--local-scheduler",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "p").exists()


def test_unusable_item_is_named_and_fails_the_run(small_hls_archive, tmp_path):
    """An item with an unparsable datetime: named with its reason, recorded, exit non-zero;
    every other month written; picked up once the catalogue is fixed."""
    items = [json.loads(json.dumps(i)) for i in small_hls_archive.items]
    tile, year = _tile_years(small_hls_archive)[0]
    victim = next(i for i in items if oracle.item_tile(i) == tile and oracle.item_month(i)[0] == year)
    good_datetime = victim["properties"]["datetime"]
    victim["properties"]["datetime"] = "not-a-date"
    catalog = tmp_path / "items.ndjson"
    catalog.write_text("".join(json.dumps(i) + "\n" for i in items))
    tiles = tmp_path / "tiles.csv"
    tiles.write_text(f"tile,year\n{tile},{year}\n")
    project = tmp_path / "p"
    args = [
        "HlsComposites",
        "--tiles",
        str(tiles),
        "--catalog",
        str(catalog),
        "--project-dir",
        str(project),
        "--local-scheduler",
    ]
    proc = run_hls(*args, cwd=tmp_path)
    assert proc.returncode != 0
    tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
    assert victim["id"] in tail and "datetime" in tail
    assert (project / "_state" / "hls" / "unusable" / f"{tile}_{year}.json").exists()
    assert list((project / "composites" / tile / str(year)).glob("*.tif"))
    victim["properties"]["datetime"] = good_datetime
    catalog.write_text("".join(json.dumps(i) + "\n" for i in items))
    proc = run_hls(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = oracle.composites(small_hls_archive.items, tile, year)
    for month, want in expected.items():
        with rasterio.open(
            project / "composites" / tile / str(year) / f"{tile}_{year}-{month:02d}.tif"
        ) as ds:
            assert oracle.nan_equal(ds.read(), want), month


def test_bbox_and_years_select_the_tiles_with_items(small_hls_archive, tmp_path):
    """--bbox/--years: every MGRS tile meeting the box; tiles without items cost a search and
    nothing else (no composite, nothing to read)."""
    boxes = [i["bbox"] for i in small_hls_archive.items]
    bbox = f"{min(b[0] for b in boxes)},{min(b[1] for b in boxes)},{max(b[2] for b in boxes)},{max(b[3] for b in boxes)}"
    project = tmp_path / "p"
    # --bbox=...: argparse would take a value starting with '-' (western longitudes) for an option
    args = [
        "HlsDryRun",
        f"--bbox={bbox}",
        "--years",
        "2019",
        "--catalog",
        str(small_hls_archive.catalog),
        "--project-dir",
        str(project),
        "--local-scheduler",
    ]
    proc = run_hls(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split()[0]: line.split()
        for line in proc.stderr.splitlines()
        if line[:2].isdigit() and " 2019 " in line
    }
    assert {"10TET", "10TFT"} <= set(rows)
    expected = {
        t: sum(
            1 for i in small_hls_archive.items if oracle.item_tile(i) == t and oracle.item_month(i)[0] == 2019
        )
        for t in rows
    }
    assert {t: int(r[2]) for t, r in rows.items()} == expected
    assert not (project / "composites").exists()
