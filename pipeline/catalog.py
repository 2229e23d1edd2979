"""One search interface, two backends: a STAC API through pystac-client, and a local
catalogue file (newline-delimited JSON items or a FeatureCollection) searched in-process
with the same semantics: collection, closed datetime interval, equality on properties,
every page.

Results are plain item dicts sorted by (datetime, id), so both backends give the same
order whatever order the server or the file had.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.datetimes import Interval, parse_item_datetime
from pipeline.errors import CatalogError, InputError

log = logging.getLogger(__name__)

Item = dict[str, Any]

# Searches are POSTs: urllib3 retries POST only when allowed_methods=None.
RETRY_STATUSES = (429, 500, 502, 503, 504)


BBox = tuple[float, float, float, float]


class Catalog(Protocol):
    """Anything that answers item searches: by properties (the ARD grid's tile numbers) or
    by area (a bounding box, narrowed to ids that start with a prefix: an MGRS tile's
    items are named by it, and neighbouring tiles overlap, so an area alone is not enough)."""

    @property
    def description(self) -> str:
        """What the catalogue is, for messages (its URL or file)."""
        ...

    def search(self, *, collection: str, interval: Interval, equals: dict[str, str]) -> list[Item]:
        """Every item of ``collection`` whose datetime lies in ``interval`` and whose
        properties equal ``equals``, over all pages, sorted by (datetime, id)."""
        ...

    def search_bbox(
        self, *, collection: str, interval: Interval, bbox: BBox, id_prefix: str = ""
    ) -> list[Item]:
        """Every item of ``collection`` whose datetime lies in ``interval``, whose footprint
        meets ``bbox`` (WGS84) and whose id starts with ``id_prefix``, over all pages,
        sorted by (datetime, id). Items without a usable datetime are kept (they sort last)
        so the workflow can name them as unusable."""
        ...


def _bbox_of(item: Item) -> BBox | None:
    box = item.get("bbox")
    if isinstance(box, list) and len(box) in (4, 6):
        if len(box) == 6:
            return (box[0], box[1], box[3], box[4])
        return (box[0], box[1], box[2], box[3])
    coords: list[Any] = []

    def walk(c: Any) -> None:
        if isinstance(c, list) and c and isinstance(c[0], (int, float)):
            coords.append(c)
        elif isinstance(c, list):
            for x in c:
                walk(x)

    walk((item.get("geometry") or {}).get("coordinates"))
    if not coords:
        return None
    return (
        min(c[0] for c in coords),
        min(c[1] for c in coords),
        max(c[0] for c in coords),
        max(c[1] for c in coords),
    )


def _meets(a: BBox, b: BBox) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _sort_key(item: Item) -> tuple[Any, str]:
    try:
        return parse_item_datetime(item["properties"]["datetime"]), item.get("id", "")
    except (KeyError, TypeError, ValueError):
        # Items without a usable datetime sort last; the workflow reports them.
        return parse_item_datetime("9999-12-31T23:59:59Z"), str(item.get("id", ""))


@dataclass
class LocalCatalog:
    """A catalogue file searched in memory. Lines that are not JSON items are input errors
    naming the file and line; they fail the load, because a half-read catalogue would give
    silently wrong searches."""

    path: Path
    items: list[Item]

    @property
    def description(self) -> str:
        return str(self.path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LocalCatalog:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise InputError("catalogue file not found", source=str(p), field="catalog") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read catalogue file: {e}", source=str(p), field="catalog") from None
        items: list[Item] = []
        try:
            doc = json.loads(text)  # a FeatureCollection (or a single item) is one document
        except json.JSONDecodeError:
            doc = None  # newline-delimited JSON: one document per line
        if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
            if not isinstance(doc.get("features"), list):
                raise InputError(
                    "FeatureCollection without a 'features' list", source=str(p), field="features"
                )
            for index, obj in enumerate(doc["features"]):
                if not isinstance(obj, dict) or obj.get("type") != "Feature":
                    raise InputError(
                        "not a STAC item (type is not 'Feature')", source=str(p), field=f"features[{index}]"
                    )
                obj.setdefault("_source", f"{p}: features[{index}]")
                items.append(obj)
            return cls(p, items)
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"not a JSON item: {e.msg}", source=str(p), line=lineno) from None
            if not isinstance(obj, dict) or obj.get("type") != "Feature":
                raise InputError("not a STAC item (type is not 'Feature')", source=str(p), line=lineno)
            obj.setdefault("_source", f"{p}, line {lineno}")
            items.append(obj)
        return cls(p, items)

    def search_bbox(
        self, *, collection: str, interval: Interval, bbox: BBox, id_prefix: str = ""
    ) -> list[Item]:
        found = []
        for item in self.items:
            if item.get("collection") != collection or not str(item.get("id", "")).startswith(id_prefix):
                continue
            box = _bbox_of(item)
            if box is None or not _meets(box, bbox):
                continue
            try:
                dt = parse_item_datetime(str((item.get("properties") or {}).get("datetime")))
            except ValueError:
                found.append(item)  # the workflow names it as unusable
                continue
            if interval.contains(dt):
                found.append(item)
        return sorted(found, key=_sort_key)

    def search(self, *, collection: str, interval: Interval, equals: dict[str, str]) -> list[Item]:
        found = []
        for item in self.items:
            if item.get("collection") != collection:
                continue
            props = item.get("properties") or {}
            if any(k in props and props[k] != v for k, v in equals.items()):
                continue  # a searched property present and different: another tile's item
            # a searched property missing: undecidable; kept, so the workflow names it as unusable
            dt_text = props.get("datetime")
            try:
                dt = parse_item_datetime(dt_text) if dt_text is not None else None
            except ValueError:
                dt = None
            if dt is None:
                # Cannot decide the interval test: keep it so validation reports it by name.
                found.append(item)
                continue
            if interval.contains(dt):
                found.append(item)
        return sorted(found, key=_sort_key)


@dataclass
class StacApiCatalog:
    """A STAC API searched with pystac-client: property filters in CQL2 where the server declares
    the filter extension, else the query extension (required then; both checked in the server's
    conformance), POST searches retried with backoff on 429/5xx, every page."""

    url: str
    page_size: int = 500
    max_retries: int = 5
    backoff_factor: float = 0.5
    timeout: float = 60.0

    def __post_init__(self) -> None:
        self._client: Any = None

    @property
    def description(self) -> str:
        return self.url

    def _open(self) -> Any:
        if self._client is not None:
            return self._client
        from pystac_client import Client
        from pystac_client.conformance import ConformanceClasses
        from pystac_client.stac_api_io import StacApiIO
        from urllib3.util.retry import Retry

        retry = Retry(
            total=self.max_retries,
            backoff_factor=self.backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # None = retry every method; searches are POST
            raise_on_status=False,
        )
        try:
            client = Client.open(self.url, stac_io=StacApiIO(max_retries=retry, timeout=self.timeout))
        except Exception as e:  # pystac-client raises APIError, requests errors, JSON errors
            raise CatalogError(f"cannot open STAC API {self.url}: {e}") from e
        self._require(client, ConformanceClasses.ITEM_SEARCH, "item search")
        self._client = client
        return client

    def _require(self, client: Any, needed: Any, why: str) -> None:
        if not client.conforms_to(needed):
            raise CatalogError(
                f"STAC API {self.url} does not declare conformance to {needed.name} ({needed.valid_uri}); {why} needs it"
            )

    def search_bbox(
        self, *, collection: str, interval: Interval, bbox: BBox, id_prefix: str = ""
    ) -> list[Item]:
        from pystac_client.conformance import ConformanceClasses

        client = self._open()
        options: dict[str, Any] = {}
        if id_prefix and client.conforms_to(ConformanceClasses.FILTER):
            # CQL2: the server narrows to the tile's ids (fewer pages); else filtered here.
            options = {
                "filter": {"op": "like", "args": [{"property": "id"}, f"{id_prefix}%"]},
                "filter_lang": "cql2-json",
            }
        try:
            search = client.search(
                collections=[collection], bbox=list(bbox), datetime=interval.to_stac(), limit=self.page_size,
                method="POST", **options,
            )  # fmt: skip
            items = [i for i in search.items_as_dicts() if str(i.get("id", "")).startswith(id_prefix)]
        except Exception as e:
            raise CatalogError(
                f"search of {self.url} failed ({collection}, bbox {list(bbox)}, {interval.to_stac()}): {e}"
            ) from e
        return sorted(items, key=_sort_key)

    def search(self, *, collection: str, interval: Interval, equals: dict[str, str]) -> list[Item]:
        from pystac_client.conformance import ConformanceClasses

        client = self._open()
        options: dict[str, Any]
        if equals and client.conforms_to(ConformanceClasses.FILTER):
            # CQL2 (the filter extension) where the API declares it; the query extension otherwise.
            tests = [{"op": "=", "args": [{"property": k}, v]} for k, v in equals.items()]
            cql2 = tests[0] if len(tests) == 1 else {"op": "and", "args": tests}
            options = {"filter": cql2, "filter_lang": "cql2-json"}
        else:
            self._require(client, ConformanceClasses.QUERY, "the property filters (query extension)")
            options = {"query": {k: {"eq": v} for k, v in equals.items()}}
        try:
            search = client.search(
                collections=[collection], datetime=interval.to_stac(), limit=self.page_size, method="POST",
                **options,
            )  # fmt: skip
            items = list(search.items_as_dicts())
        except Exception as e:
            raise CatalogError(
                f"search of {self.url} failed ({collection}, {equals}, {interval.to_stac()}): {e}"
            ) from e
        return sorted(items, key=_sort_key)


def open_catalog(spec: str, **api_options: Any) -> Catalog:
    """An http(s) URL is a STAC API root; anything else is a local catalogue file."""
    if spec.startswith(("http://", "https://")):
        return StacApiCatalog(spec, **api_options)
    return LocalCatalog.load(spec)


_opened: dict[str, Catalog] = {}


def shared_catalog(spec: str) -> Catalog:
    """:func:`open_catalog` once per process: a luigi worker asks for the same catalogue in
    every task (a local file is parsed, a STAC API's conformance fetched, only once)."""
    if spec not in _opened:
        _opened[spec] = open_catalog(spec)
    return _opened[spec]
