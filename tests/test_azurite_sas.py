"""Azurite (private containers) and the local Planetary-Computer-style SAS token service:
anonymous reads are refused, tokens from the service open blobs, GDAL reads a COG through
/vsicurl/ with a signed URL, and the planetary-computer SDK fetches (and caches) tokens from
the service when PC_SDK_SAS_URL points at it."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
import rasterio

from pipeline.demo.hls_archive import (
    HlsArchive,
    build_hls_archive,
    items_with_href_base,
    small_hls_spec,
)
from tests.servers.azurite import ACCOUNT_NAME, AzuriteServer, azurite, start_azurite  # noqa: F401
from tests.servers.sas_token import (  # noqa: F401
    SUBSCRIPTION_HEADER,
    sas_token_service,
    start_sas_token_service,
)

CONTAINER = "hls2"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and body of a GET (HTTP errors are answers here, not exceptions)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def hls_archive(tmp_path_factory: pytest.TempPathFactory) -> HlsArchive:
    return build_hls_archive(tmp_path_factory.mktemp("hls-az"), small_hls_spec(seed=4))


@pytest.fixture(scope="module")
def uploaded(azurite: AzuriteServer, hls_archive: HlsArchive) -> list[dict]:  # noqa: F811
    """The archive's data/ tree in Azurite's private container ``hls2``; items pointing there."""
    keys = azurite.upload_tree(hls_archive.data_dir, CONTAINER)
    assert set(keys) == set(hls_archive.files)
    return items_with_href_base(hls_archive.items, azurite.container_url(CONTAINER))


@pytest.fixture
def pc_sdk(monkeypatch: pytest.MonkeyPatch, sas_token_service):  # noqa: F811
    """The planetary-computer SDK pointed at the local service, with fresh settings and an
    empty token cache before and after (Settings.get is lru_cached; tokens are cached per URL)."""
    from planetary_computer import sas
    from planetary_computer.settings import Settings

    monkeypatch.setenv("PC_SDK_SAS_URL", sas_token_service.sas_url)
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    Settings.get.cache_clear()
    sas.TOKEN_CACHE.clear()
    sas_token_service.reset()
    yield sas
    Settings.get.cache_clear()
    sas.TOKEN_CACHE.clear()
    sas_token_service.subscription_key = None
    sas_token_service.token_ttl_seconds = 3600
    sas_token_service.reset()


# -- Azurite -----------------------------------------------------------------------------------


def test_anonymous_reads_are_refused(azurite, uploaded):  # noqa: F811
    href = uploaded[0]["assets"]["Fmask"]["href"]
    assert href.startswith(f"http://127.0.0.1:{azurite.port}/{ACCOUNT_NAME}/{CONTAINER}/")
    status, _ = _get(href)
    assert status in (401, 403, 404, 409), status
    status, _ = _get(f"{azurite.container_url(CONTAINER)}?restype=container&comp=list")
    assert status in (401, 403, 404, 409), status


def test_container_sas_opens_blobs_and_only_its_own_container(azurite, hls_archive, uploaded):  # noqa: F811
    item, local = uploaded[0], hls_archive.items[0]
    href = item["assets"]["B04"]["href"]
    status, body = _get(f"{href}?{azurite.container_sas(CONTAINER, 600)}")
    assert status == 200
    assert body == Path(local["assets"]["B04"]["href"]).read_bytes()
    azurite.create_container("other")
    status, _ = _get(f"{href}?{azurite.container_sas('other', 600)}")
    assert status == 403, "a token for another container does not open this one"
    status, _ = _get(f"{href}?{azurite.container_sas(CONTAINER, -120)}")
    assert status == 403, "an expired token is refused"
    status, listing = _get(
        f"{azurite.container_url(CONTAINER)}?restype=container&comp=list&maxresults=5&"
        f"{azurite.container_sas(CONTAINER, 600)}"
    )
    assert status == 200 and b"<Blob>" in listing, "read + list: the token lists the container"


def test_rasterio_reads_a_cog_through_vsicurl_with_a_signed_url(azurite, hls_archive, uploaded):  # noqa: F811
    token = azurite.container_sas(CONTAINER, 600)
    item = next(i for i in uploaded if i["collection"] == "hls2-s30")
    local = next(i for i in hls_archive.items if i["id"] == item["id"])
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="0"):
        for key in ("B8A", "Fmask"):
            with (
                rasterio.open("/vsicurl/" + item["assets"][key]["href"] + "?" + token) as remote,
                rasterio.open(local["assets"][key]["href"]) as disk,
            ):
                assert remote.profile == disk.profile
                assert remote.overviews(1) == disk.overviews(1)
                assert np.array_equal(remote.read(1), disk.read(1))
                win = ((17, 49), (100, 132))
                assert np.array_equal(remote.read(1, window=win), disk.read(1, window=win))
        with pytest.raises(rasterio.errors.RasterioIOError):
            rasterio.open("/vsicurl/" + item["assets"]["B02"]["href"])  # unsigned


def test_start_and_stop_kill_the_process_group(tmp_path):
    server = start_azurite(tmp_path / "az")
    try:
        assert server.alive()
        assert server.command[1:] == [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(server.port),
            "--location",
            str(tmp_path / "az" / "data"),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]
        server.create_container("own-container")
        assert [c.name for c in server.service_client().list_containers()] == ["own-container"]
    finally:
        server.stop()
    assert not server.alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


# -- the token service -------------------------------------------------------------------------


def test_token_service_issues_real_container_tokens(sas_token_service, azurite, uploaded):  # noqa: F811
    sas_token_service.reset()
    status, body = _get(f"{sas_token_service.sas_url}/{ACCOUNT_NAME}/{CONTAINER}")
    assert status == 200
    doc = json.loads(body)
    assert set(doc) == {"msft:expiry", "token"}
    expiry = datetime.strptime(doc["msft:expiry"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    left = (expiry - datetime.now(UTC)).total_seconds()
    assert 3500 < left <= 3600
    token = doc["token"]
    assert not token.startswith("?")
    q = parse_qs(token)
    assert q["sr"] == ["c"] and q["sp"] == ["rl"] and q["se"] == [doc["msft:expiry"]] and "sig" in q
    href = uploaded[1]["assets"]["B03"]["href"]
    status, data = _get(f"{href}?{token}")
    assert status == 200 and len(data) > 1000
    # The collection form of the path, as PC also serves it.
    status, body = _get(f"{sas_token_service.sas_url}/hls2-s30")
    assert status == 200 and _get(f"{href}?{json.loads(body)['token']}")[0] == 200
    assert sas_token_service.count(ACCOUNT_NAME, CONTAINER) == 1
    assert sas_token_service.request_counts() == {
        f"/api/sas/v1/token/{ACCOUNT_NAME}/{CONTAINER}": 1,
        "/api/sas/v1/token/hls2-s30": 1,
    }


@pytest.mark.parametrize(
    "path",
    [
        f"/api/sas/v1/token/otheraccount/{CONTAINER}",
        f"/api/sas/v1/token/{ACCOUNT_NAME}/no-such-container",
        "/api/sas/v1/token/unknown-collection",
        f"/api/sas/v1/token/{ACCOUNT_NAME}/{CONTAINER}/extra",
        "/api/other",
    ],
)
def test_token_service_404s_for_unknown_containers(sas_token_service, uploaded, path):  # noqa: F811
    status, body = _get(sas_token_service.url + path)
    assert status == 404
    assert "token" not in json.loads(body)


def test_token_service_can_require_a_subscription_key(sas_token_service, uploaded):  # noqa: F811
    url = f"{sas_token_service.sas_url}/{ACCOUNT_NAME}/{CONTAINER}"
    sas_token_service.subscription_key = "k-123"
    try:
        assert _get(url)[0] == 401
        assert _get(url, {SUBSCRIPTION_HEADER: "wrong"})[0] == 401
        assert _get(url, {SUBSCRIPTION_HEADER: "k-123"})[0] == 200
    finally:
        sas_token_service.subscription_key = None
    assert [r.subscription_key for r in sas_token_service.requests()[-3:]] == [None, "wrong", "k-123"]


def test_token_ttl_is_configurable(azurite, uploaded):  # noqa: F811
    with start_sas_token_service(azurite, token_ttl_seconds=5) as service:
        status, body = _get(f"{service.sas_url}/{ACCOUNT_NAME}/{CONTAINER}")
        expiry = datetime.strptime(json.loads(body)["msft:expiry"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert status == 200 and 0 < (expiry - datetime.now(UTC)).total_seconds() <= 5


# -- the planetary-computer SDK against the local service ---------------------------------------


def test_sdk_fetches_tokens_from_the_local_service_and_caches_them(pc_sdk, sas_token_service, uploaded):  # noqa: F811
    first = pc_sdk.get_token(ACCOUNT_NAME, CONTAINER)
    assert sas_token_service.count(ACCOUNT_NAME, CONTAINER) == 1
    second = pc_sdk.get_token(ACCOUNT_NAME, CONTAINER)
    assert second is first, "served from the SDK's cache"
    assert sas_token_service.count(ACCOUNT_NAME, CONTAINER) == 1
    assert 3500 < first.ttl() <= 3600
    signed = first.sign(uploaded[2]["assets"]["Fmask"]["href"]).href
    assert _get(signed)[0] == 200


def test_sdk_refetches_a_token_close_to_expiry(pc_sdk, sas_token_service, uploaded):  # noqa: F811
    sas_token_service.token_ttl_seconds = 30  # the SDK refreshes tokens with < 60 s left
    pc_sdk.get_token(ACCOUNT_NAME, CONTAINER)
    pc_sdk.get_token(ACCOUNT_NAME, CONTAINER)
    assert sas_token_service.count(ACCOUNT_NAME, CONTAINER) == 2


def test_sdk_retries_transient_failures(pc_sdk, sas_token_service, uploaded):  # noqa: F811
    sas_token_service.fail_next(2, 503)
    token = pc_sdk.get_token(ACCOUNT_NAME, CONTAINER, retry_backoff_factor=0.01)
    assert sas_token_service.count(ACCOUNT_NAME, CONTAINER) == 3
    assert [r.status for r in sas_token_service.requests()] == [503, 503, 200]
    assert _get(token.sign(uploaded[0]["assets"]["B01"]["href"]).href)[0] == 200


def test_sdk_sends_the_subscription_key(pc_sdk, sas_token_service, monkeypatch, uploaded):  # noqa: F811
    import requests
    from planetary_computer.settings import Settings

    sas_token_service.subscription_key = "pc-key"
    with pytest.raises(requests.HTTPError):
        pc_sdk.get_token(ACCOUNT_NAME, CONTAINER)
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "pc-key")
    Settings.get.cache_clear()
    assert pc_sdk.get_token(ACCOUNT_NAME, CONTAINER).token
    assert [r.status for r in sas_token_service.requests()] == [401, 200]
    assert sas_token_service.requests()[-1].subscription_key == "pc-key"
