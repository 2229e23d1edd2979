"""HLS against real parts: the archive served from Azurite (anonymous access off) and read
with SAS tokens from a local Planetary-Computer-style token service, searched through the
pgstac STAC API, composites and samples written to ``az://`` (Azurite) and to ``s3://``
(SeaweedFS); every composite pixel and sample checked against tests/hls_oracle.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import rasterio

from tests import hls_oracle as oracle
from tests.helpers import luigi_env, run_luigi

pytestmark = [pytest.mark.slow, pytest.mark.stac, pytest.mark.s3]

CONTAINER = "hls2"
OUTPUTS = "hls-outputs"


@pytest.fixture(scope="module")
def served(small_hls_archive, azurite, sas_token_service, stac_server):
    """The archive's data uploaded to a private container and its items, with blob hrefs,
    loaded into the STAC API."""
    from pipeline.demo.hls_archive import items_with_href_base

    azurite.create_container(CONTAINER)
    azurite.upload_tree(small_hls_archive.data_dir, CONTAINER)
    azurite.create_container(OUTPUTS)
    items = items_with_href_base(small_hls_archive.items, azurite.container_url(CONTAINER))
    collections = Path(small_hls_archive.root) / "catalog" / "collections"
    for i, name in enumerate(("hls2-l30", "hls2-s30")):
        collection = json.loads((collections / f"{name}.json").read_text())
        stac_server.load_items([it for it in items if it["collection"] == name], collection, append=i > 0)
    return items


def _env(azurite, sas_token_service, s3=None) -> dict[str, str]:
    extra = {
        "PC_SDK_SAS_URL": sas_token_service.sas_url,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
    }
    if s3 is not None:
        extra.update(s3.env())
    return luigi_env(extra)


def _run(task: str, archive, catalog: str, project: str, env, tmp_path: Path, *extra: str):
    args = [
        task,
        "--catalog",
        catalog,
        "--project-dir",
        project,
        "--local-scheduler",
        "--hls-path-style-blob-hosts",
        env["_HOSTS"],
    ]
    args += ["--tiles", str(archive.tiles)] if task == "HlsComposites" else ["--points", str(archive.points)]
    return run_luigi(
        [*args, *extra],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if k != "_HOSTS"},
        module="pipeline.hls",
    )


def test_composites_and_samples_from_azure_blobs_through_the_stac_api_to_az(
    served, small_hls_archive, azurite, sas_token_service, stac_server, tmp_path
):
    import adlfs

    env = _env(azurite, sas_token_service)
    env["_HOSTS"] = azurite.host_port
    sas_token_service.reset()
    project = f"az://{OUTPUTS}/run1"
    for task in ("HlsComposites", "HlsSamples"):
        proc = _run(task, small_hls_archive, stac_server.url, project, env, tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]
    # one token per container and process that read (the SDK caches it), never one per file
    counts = sas_token_service.request_counts()
    assert 1 <= sum(counts.values()) <= 8, counts

    fs = adlfs.AzureBlobFileSystem(connection_string=azurite.connection_string)
    local = tmp_path / "copy"
    fs.get(f"{OUTPUTS}/run1", str(local), recursive=True)
    with open(small_hls_archive.tiles) as f:
        tile_years = [(line.split(",")[0], int(line.split(",")[1])) for line in f.read().split()[1:]]
    for tile, year in tile_years:
        for month, want in oracle.composites(small_hls_archive.items, tile, year).items():
            with rasterio.open(
                local / "composites" / tile / str(year) / f"{tile}_{year}-{month:02d}.tif"
            ) as ds:
                assert oracle.nan_equal(ds.read(), want), (tile, year, month)
    pid, year, _, serving = small_hls_archive.edge_point
    centre = pd.read_parquet(local / "samples" / str(year) / f"{serving}_centre.parquet")
    assert pid in set(centre["id"].astype(str))
    assert (local / "report" / "hls" / "index.html").exists()
    # a rerun writes nothing and reads no pixel: no new token is asked for
    sas_token_service.reset()
    proc = _run("HlsComposites", small_hls_archive, stac_server.url, project, env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to do" in proc.stderr
    assert sum(sas_token_service.request_counts().values()) == 0


def test_unsigned_reads_fail_with_a_named_error(
    served, small_hls_archive, azurite, sas_token_service, tmp_path
):
    """Signing off: Azurite refuses every read; each month fails with the asset named,
    nothing is written under a final name, and the run exits non-zero."""
    catalog = tmp_path / "items.ndjson"
    catalog.write_text("".join(json.dumps(i) + "\n" for i in served))
    tiles = tmp_path / "tiles.csv"
    tiles.write_text("tile,year\n10TFT,2019\n")
    project = tmp_path / "p"
    env = _env(azurite, sas_token_service)
    args = [
        "HlsComposites",
        "--tiles",
        str(tiles),
        "--catalog",
        str(catalog),
        "--project-dir",
        str(project),
        "--local-scheduler",
        "--hls-signing",
        "none",
    ]
    proc = run_luigi(args, cwd=tmp_path, env=env, module="pipeline.hls")
    assert proc.returncode != 0
    assert "FAILED 10TFT 2019-" in proc.stderr and "cannot open" in proc.stderr
    assert not list(project.rglob("*.tif"))
    record = json.loads((project / "_state" / "hls" / "failed" / "10TFT_2019.json").read_text())
    assert record["failed"] and all(f["targets"] for f in record["failed"])


def test_composites_to_s3(served, small_hls_archive, azurite, sas_token_service, s3_server, tmp_path):
    s3_server.create_bucket("hls-out")
    env = _env(azurite, sas_token_service, s3_server)
    tiles = tmp_path / "tiles.csv"
    tiles.write_text("tile,year\n10TET,2020\n")
    catalog = tmp_path / "items.ndjson"
    catalog.write_text("".join(json.dumps(i) + "\n" for i in served))
    args = [
        "HlsComposites", "--tiles", str(tiles), "--catalog", str(catalog), "--project-dir", "s3://hls-out/p",
        "--local-scheduler", "--hls-path-style-blob-hosts", azurite.host_port, "--output-endpoint-url", s3_server.endpoint_url,
    ]  # fmt: skip
    proc = run_luigi(args, cwd=tmp_path, env=env, module="pipeline.hls")
    assert proc.returncode == 0, proc.stderr[-4000:]
    fs = s3_server.fs()
    for month, want in oracle.composites(small_hls_archive.items, "10TET", 2020).items():
        data = fs.cat_file(f"hls-out/p/composites/10TET/2020/10TET_2020-{month:02d}.tif")
        with rasterio.MemoryFile(data) as mem, mem.open() as ds:
            assert oracle.nan_equal(ds.read(), want), month
