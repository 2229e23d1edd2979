"""The pgstac STAC API started by the tests answers like a real STAC API: conformance,
the `query` extension across several pages, closed and open-ended datetime intervals,
item datetimes with 0..7 fractional digits."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime

import pytest
from pystac_client import Client

from tests.servers.stac import COLLECTION_ID, StacServer, make_ard_item, make_ard_items

pytestmark = pytest.mark.stac

GRID_QUERY = {
    "landsat:grid_horizontal": {"eq": "03"},
    "landsat:grid_vertical": {"eq": "04"},
    "landsat:grid_region": {"eq": "CU"},
}
UTC = UTC


def _dt(text: str) -> datetime:
    """Item datetime -> aware datetime (fixture items stay clear of sub-microsecond edges)."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(microsecond=int((frac or "0")[:6].ljust(6, "0")), tzinfo=UTC)


def _fixture_items() -> list[dict]:
    items = make_ard_items()  # 3 CU tiles x 30 dates, 1984..2024, 0..7 fractional digits
    # same h/v, other region: only the region term keeps it out
    items += [make_ard_item("03", "04", "AK", datetime(2001, 7, 4, 20, 1, 2, tzinfo=UTC))]
    # exact-second edges of the interval 1984-01-01/2022-12-31 as pystac-client sends it
    # (1984-01-01T00:00:00Z/2022-12-31T23:59:59Z): inside, inside, outside, outside
    for when, digits in [
        (datetime(1984, 1, 1, 0, 0, 0, tzinfo=UTC), 0),
        (datetime(2022, 12, 31, 23, 59, 59, tzinfo=UTC), 0),
        (datetime(1983, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 6),
        (datetime(2023, 1, 1, 0, 0, 0, tzinfo=UTC), 3),
    ]:
        item = make_ard_item("03", "04", "CU", when, frac_digits=digits)
        item["id"] = f"EDGE_{when:%Y%m%dT%H%M%S}_SR"
        items.append(item)
    return items


def _expected(items: list[dict], start: datetime | None, end: datetime | None) -> list[str]:
    out = []
    for item in items:
        p = item["properties"]
        if (p["landsat:grid_horizontal"], p["landsat:grid_vertical"], p["landsat:grid_region"]) != (
            "03",
            "04",
            "CU",
        ):
            continue
        dt = _dt(p["datetime"])
        if (start is None or dt >= start) and (end is None or dt <= end):
            out.append(item["id"])
    return sorted(out)


@pytest.fixture(scope="module")
def loaded(stac_server: StacServer) -> tuple[StacServer, list[dict]]:
    items = _fixture_items()
    t = time.monotonic()
    stac_server.load_items(items)
    print(
        f"\n[stac] server start {stac_server.start_seconds:.1f}s, load of {len(items)} items {time.monotonic() - t:.1f}s"
    )
    return stac_server, items


def test_conformance_and_collection(loaded):
    server, _ = loaded
    client = Client.open(server.url)
    conforms = client.to_dict()["conformsTo"]
    assert any(c.endswith("/item-search") for c in conforms), conforms
    assert any(c.endswith("/item-search#query") for c in conforms), conforms
    from pystac_client.conformance import ConformanceClasses

    assert client.conforms_to(ConformanceClasses.ITEM_SEARCH)
    assert client.conforms_to(ConformanceClasses.QUERY)
    collection = client.get_collection(COLLECTION_ID)
    assert collection.id == COLLECTION_ID
    assert server.url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_query_extension_across_pages(loaded, method):
    server, items = loaded
    expected = _expected(
        items, datetime(1984, 1, 1, tzinfo=UTC), datetime(2022, 12, 31, 23, 59, 59, tzinfo=UTC)
    )
    assert len(expected) > 3 * 7, "the fixture must force several pages"
    assert "EDGE_19840101T000000_SR" in expected and "EDGE_20221231T235959_SR" in expected
    client = Client.open(server.url)
    t = time.monotonic()
    search = client.search(
        collections=[COLLECTION_ID],
        datetime="1984-01-01/2022-12-31",
        query=GRID_QUERY,
        limit=7,
        method=method,
    )
    pages = list(search.pages_as_dicts())
    elapsed = time.monotonic() - t
    got = [f["id"] for page in pages for f in page["features"]]
    print(
        f"\n[stac] {method} search: {len(got)} items in {len(pages)} pages, {elapsed * 1000:.0f} ms "
        f"({elapsed / len(pages) * 1000:.0f} ms/page)"
    )
    assert len(pages) >= 4
    assert all(len(page["features"]) <= 7 for page in pages)
    assert len(got) == len(set(got)), "an item came back on two pages"
    assert sorted(got) == expected
    for page in pages[:-1]:
        nxt = [link for link in page["links"] if link["rel"] == "next"]
        assert nxt and nxt[0]["href"].startswith(server.url), nxt
    assert not [link for link in pages[-1]["links"] if link["rel"] == "next"]


def test_open_ended_datetime(loaded):
    server, items = loaded
    client = Client.open(server.url)
    search = client.search(collections=[COLLECTION_ID], datetime="1984-01-01/..", query=GRID_QUERY, limit=7)
    got = sorted(i["id"] for i in search.items_as_dicts())
    expected = _expected(items, datetime(1984, 1, 1, tzinfo=UTC), None)
    assert got == expected
    assert "EDGE_20230101T000000_SR" in got and "EDGE_19831231T235959_SR" not in got
    # and open at the start
    search = client.search(collections=[COLLECTION_ID], datetime="../1999-12-31", query=GRID_QUERY, limit=7)
    assert sorted(i["id"] for i in search.items_as_dicts()) == _expected(
        items, None, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    )


def test_datetimes_come_back_verbatim(loaded):
    """0..7 fractional digits are stored and returned as written (pgstac keeps the item JSON)."""
    server, items = loaded
    by_id = {i["id"]: i["properties"]["datetime"] for i in items}
    digits = {len(v.rstrip("Z").partition(".")[2]) for v in by_id.values()}
    assert digits >= set(range(8)), digits
    client = Client.open(server.url)
    got = {
        i["id"]: i["properties"]["datetime"]
        for i in client.search(collections=[COLLECTION_ID], limit=100).items_as_dicts()
    }
    assert got == by_id


def test_load_items_replaces(stac_server: StacServer, loaded):
    """load_items replaces the collection's items; the module's items are put back after."""
    server, items = loaded
    client = Client.open(server.url)
    try:
        server.load_items(items[:2])
        got = sorted(i["id"] for i in client.search(collections=[COLLECTION_ID], limit=50).items_as_dicts())
        assert got == sorted(i["id"] for i in items[:2])
    finally:
        server.load_items(items)


def test_query_latency(loaded):
    """Latency of one POST search page (reported, loosely bounded)."""
    server, _ = loaded
    body = json.dumps(
        {
            "collections": [COLLECTION_ID],
            "datetime": "1984-01-01T00:00:00Z/2022-12-31T23:59:59Z",
            "query": GRID_QUERY,
            "limit": 7,
        }
    ).encode()
    times = []
    for _ in range(20):
        req = urllib.request.Request(
            server.url + "/search", data=body, headers={"Content-Type": "application/json"}
        )
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=30) as r:
            page = json.load(r)
        times.append(time.monotonic() - t)
        assert len(page["features"]) == 7
    times.sort()
    print(f"\n[stac] POST /search page: median {times[10] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    assert times[10] < 2.0
