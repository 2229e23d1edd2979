"""Catalogue searches through a real STAC API (pgstac behind stac-fastapi-pgstac) answer
exactly what the local catalogue file answers, over several pages, and survive 5xx."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from pipeline.catalog import LocalCatalog, StacApiCatalog
from pipeline.datetimes import parse_interval
from pipeline.errors import CatalogError
from tests import oracle
from tests.helpers import run_luigi, timesync_args
from tests.servers.fault_proxy import FaultProxy, FaultRule

pytestmark = pytest.mark.stac

TILES = [(3, 4), (4, 4), (3, 5), (4, 5)]


@pytest.fixture(scope="module")
def loaded_api(stac_server, small_archive):
    stac_server.load_items(small_archive.catalog_ndjson)
    return stac_server


def _search(catalog, h, v, interval):
    items = catalog.search(
        collection="landsat-c2ard-sr",
        interval=parse_interval(interval),
        equals={
            "landsat:grid_horizontal": f"{h:02d}",
            "landsat:grid_vertical": f"{v:02d}",
            "landsat:grid_region": "CU",
        },
    )
    return [(i["id"], i["properties"]["datetime"]) for i in items]


@pytest.mark.parametrize("interval", ["1984-01-01/..", "1984-01/2012-12-31", "2002-05-15/2002-06-21"])
def test_api_search_equals_local_file_over_pages(loaded_api, small_archive, interval):
    local = LocalCatalog.load(small_archive.catalog_ndjson)
    api = StacApiCatalog(loaded_api.url, page_size=2)  # several pages per tile
    total = 0
    for h, v in TILES:
        expected = _search(local, h, v, interval)
        assert _search(api, h, v, interval) == expected
        total += len(expected)
    assert total > 0


def test_search_retries_5xx(loaded_api, small_archive):
    """Searches are POSTs: retried on 503 (urllib3 Retry with allowed_methods=None)."""
    up = urlparse(loaded_api.url)
    proxy = FaultProxy(
        up.hostname,
        up.port,
        rules=[FaultRule("503", match=lambda m, p: m == "POST" and "/search" in p, limit=3)],
    )
    try:
        api = StacApiCatalog(proxy.url, page_size=3, backoff_factor=0.05)
        local = LocalCatalog.load(small_archive.catalog_ndjson)
        assert _search(api, 3, 4, "1984-01-01/..") == _search(local, 3, 4, "1984-01-01/..")
        assert proxy.counts["503"] == 3
    finally:
        proxy.stop()


def test_search_gives_up_with_a_clear_error(loaded_api):
    up = urlparse(loaded_api.url)
    proxy = FaultProxy(up.hostname, up.port, rules=[FaultRule("500", match=lambda m, p: m == "POST")])
    try:
        api = StacApiCatalog(proxy.url, max_retries=2, backoff_factor=0.01)
        with pytest.raises(CatalogError, match=f"search of {proxy.url} failed"):
            _search(api, 3, 4, "1984-01-01/..")
    finally:
        proxy.stop()


@pytest.mark.slow
def test_pipeline_through_the_api_equals_the_recipe(loaded_api, small_archive, tmp_path):
    project = tmp_path / "project"
    proc = run_luigi(timesync_args(small_archive, project, catalog=loaded_api.url), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = oracle.expected_outputs(
        small_archive.catalog_ndjson, small_archive.plot_file, asset_href="href"
    )
    assert oracle.compare_tree(project, expected) == []
