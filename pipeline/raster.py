"""The one seam through which pixels are read.

A :class:`RasterReader` enters one ``rasterio.Env`` for a whole batch of reads (entering
one costs milliseconds) and keeps each dataset open for the batch, so a band file shared
by several plots or observations is opened, and its header fetched, once.

GDAL options are grouped by situation; each says why it is set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

from pipeline.errors import RasterReadError
from pipeline.grid import pixel_of
from pipeline.signing import Signing

log = logging.getLogger(__name__)

# Every remote read (S3 or HTTP).
GDAL_REMOTE = {
    # Opening "x.TIF" must not LIST its directory to look for sidecars: a request (and money) per file.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Never probe for .aux.xml/.ovr/.msk sidecars over the network.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".TIF,.tif,.tiff,.TIFF",
    # Transient 429/5xx and resets: bounded retries, delay doubling from 1 s.
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    # The header and tile index of a 5000 x 5000 COG (20 x 20 blocks + overviews, ~10 KB)
    # come in the first GET; no second round trip, and no pixel bytes fetched blind.
    "GDAL_INGESTED_BYTES_AT_OPEN": "16384",
    # Adjacent tiles of one window come in one ranged GET instead of one per block.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # No per-handle cache on top of vsicurl's: its 32 KB chunks made every open cost a
    # second GET (bytes 16384-32767) after the ingested header.
    "VSI_CACHE": "FALSE",
}

# GDAL's block cache, process-wide. Decoded blocks serve the windows that overlap them,
# which a batch reads close together; GDAL's default (5 % of RAM, 1.2 GB here) let a
# worker grow with the plots of a batch's acquisition group, holding blocks never read
# again. Same GETs, slightly less CPU; GDAL_CACHEMAX in the environment overrides it.
BLOCK_CACHE_BYTES = 64 * 1024 * 1024
_block_cache_bounded = False


def _bound_block_cache() -> None:
    global _block_cache_bounded
    if _block_cache_bounded or "GDAL_CACHEMAX" in os.environ:
        return
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", BLOCK_CACHE_BYTES)  # rasterio: GDALSetCacheMax64, in bytes
    _block_cache_bounded = True


# Remote reads when block rows are coalesced (ArchiveAccess.merge_gap_bytes > 0): the
# window's byte span is fetched first, then GDAL decodes the tiles from vsicurl's cache.
GDAL_COALESCED = {
    # Read each tile range through vsicurl's region cache (the parallel multi-range path
    # bypasses it and would fetch the prefetched tiles again).
    "GDAL_HTTP_MULTIRANGE": "SERIAL",
    # The region cache holds the prefetched spans until their tiles are decoded; a span of
    # real Landsat SR blocks is a few MB, and every thread of the process shares the cache.
    "CPL_VSIL_CURL_CACHE_SIZE": str(128 * 1024 * 1024),
    # The prefetch is a raw-band VRT over the remote file (GDAL's one byte-range read
    # that Python can reach); newer GDALs want raw sources allowed explicitly.
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "YES",
    "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE": "ALL",
}

# Two block rows of a Landsat C2 ARD window are ~1-2 MB apart in the file (the rest of
# the upper row's tiles); one GET for both costs those bytes, which are free inside
# us-west-2 and $0.09/GB to the internet. See README "Requests and bytes".
DEFAULT_MERGE_GAP_BYTES = 4 * 1024 * 1024


# An S3-compatible server that is not AWS (MinIO, SeaweedFS): path-style URLs; plain HTTP
# when the endpoint says http://.
def _custom_endpoint_options(endpoint_url: str) -> dict[str, str]:
    parsed = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    return {
        "AWS_S3_ENDPOINT": parsed.netloc,  # GDAL wants host:port, no scheme
        "AWS_HTTPS": "NO" if parsed.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",  # bucket in the path: custom endpoints have no bucket DNS
    }


@dataclass(frozen=True)
class ArchiveAccess:
    """How to reach the archive's assets. Picklable; holds no credentials (boto3 resolves
    them from ``profile`` or the environment in the process that reads)."""

    asset_href: str = "s3"  # "s3": assets[b].alternate.s3.href; "href": assets[b].href
    endpoint_url: str = ""  # "" = AWS S3
    region: str = "us-west-2"  # usgs-landsat-ard lives in us-west-2
    profile: str = ""
    requester_pays: bool = True
    # Fetch a window's tiles in one GET when the bytes between them are at most this many
    # (0: one GET per run of adjacent tiles, GDAL's own plan).
    merge_gap_bytes: int = DEFAULT_MERGE_GAP_BYTES
    extra_gdal: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # Blob hrefs signed just before they are opened (Planetary Computer SAS tokens).
    signing: Signing = field(default_factory=Signing)

    def resolved(self) -> ArchiveAccess:
        return ArchiveAccess(
            asset_href=self.asset_href,
            endpoint_url=self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL", ""),
            region=self.region or os.environ.get("AWS_REGION", "us-west-2"),
            profile=self.profile or os.environ.get("AWS_PROFILE", ""),
            requester_pays=self.requester_pays,
            merge_gap_bytes=self.merge_gap_bytes,
            extra_gdal=self.extra_gdal,
            signing=self.signing,
        )

    def gdal_options(self) -> dict[str, str]:
        opts = dict(GDAL_REMOTE)  # harmless for local files, needed for every remote href
        if self.merge_gap_bytes > 0:
            opts.update(GDAL_COALESCED)
        if self.endpoint_url:
            opts.update(_custom_endpoint_options(self.endpoint_url))
        opts.update(dict(self.extra_gdal))
        return opts


_BOTO3_SESSIONS: dict[tuple[str | None, ...], Any] = {}
_BOTO3_LOCK = threading.Lock()


# What boto3 resolves credentials from, besides the profile name: a change makes a new session.
_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def _boto3_session(profile: str, region: str) -> Any:
    """One boto3 session per process, profile, region and credential environment: creating
    one costs ~45 ms of CPU (botocore's loaders and event hooks), which once per batch was
    ~1 ms per observation. Its credentials refresh themselves (instance roles, SSO) when
    they near expiry."""
    key = (profile, region, *(os.environ.get(name) for name in _CREDENTIAL_ENV))
    with _BOTO3_LOCK:
        session = _BOTO3_SESSIONS.get(key)
        if session is None:
            import boto3

            session = boto3.Session(profile_name=profile or None, region_name=region or None)
            _BOTO3_SESSIONS[key] = session
        return session


def gdal_path(href: str) -> str:
    """GDAL's name for an href: s3:// -> /vsis3/, http(s):// -> /vsicurl/, else a path."""
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://") :]
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("file://"):
        return href[len("file://") :]
    return href


class RasterReader:
    """Reads windows and pixels from many rasters inside one GDAL environment.

    Use as a context manager, in the thread that reads (GDAL options are thread-local).
    """

    def __init__(self, access: ArchiveAccess, *, max_open: int = 256) -> None:
        self.access = access.resolved()
        self.max_open = max_open
        self._env: Any = None
        self._datasets: OrderedDict[str, Any] = OrderedDict()
        # Files that failed to open, with the error: after GDAL's whole retry chain (about a
        # minute of backoff on a 503), the batch's other reads of the file fail at once.
        self._failed: dict[str, str] = {}
        self.opened = 0

    def __enter__(self) -> RasterReader:
        import rasterio
        from rasterio.session import AWSSession

        options = self.access.gdal_options()
        session = None
        if self.access.asset_href == "s3":
            session = AWSSession(
                session=_boto3_session(self.access.profile, self.access.region),
                endpoint_url=_custom_endpoint_options(self.access.endpoint_url)["AWS_S3_ENDPOINT"]
                if self.access.endpoint_url
                else None,
                requester_pays=self.access.requester_pays,
            )
        self._env = rasterio.Env(session=session, **options) if session else rasterio.Env(**options)
        self._env.__enter__()
        _bound_block_cache()
        return self

    def __exit__(self, *exc: object) -> None:
        for ds in self._datasets.values():
            with contextlib.suppress(Exception):  # closing must not mask the real error
                ds.close()
        self._datasets.clear()
        if self._env is not None:
            self._env.__exit__(*exc)
            self._env = None

    def dataset(self, href: str) -> Any:
        ds = self._datasets.get(href)
        if ds is not None:
            self._datasets.move_to_end(href)
        else:
            import rasterio

            if href in self._failed:
                raise RasterReadError(
                    f"cannot open {href}: {self._failed[href]} (failed earlier in this batch: not tried again)"
                )
            try:
                ds = rasterio.open(gdal_path(self.access.signing.sign(href)))
            except RasterReadError:
                raise
            except Exception as e:
                self._failed[href] = str(e)
                raise RasterReadError(f"cannot open {href}: {e}") from e
            if ds.count < 1:
                raise RasterReadError(f"{href}: no raster band")
            self._datasets[href] = ds
            self.opened += 1
            if len(self._datasets) > self.max_open:  # least recently used handle goes
                _, oldest = self._datasets.popitem(last=False)
                oldest.close()
        return ds

    def pixel(self, href: str, x: float, y: float) -> int | None:
        """Value of band 1 at the pixel containing (x, y); None where the raster does not
        contain the point."""
        ds = self.dataset(href)
        row, col = pixel_of(ds.transform, x, y)
        if not (0 <= row < ds.height and 0 <= col < ds.width):
            return None
        from rasterio.windows import Window

        try:
            return int(ds.read(1, window=Window(col, row, 1, 1))[0, 0])
        except Exception as e:
            raise RasterReadError(f"cannot read {href} at row {row}, col {col}: {e}") from e

    def block(self, href: str, col_off: int, row_off: int, width: int, height: int) -> npt.NDArray[Any]:
        """Band 1 over a pixel window that lies inside the raster (a tile's block: every
        scene of an MGRS tile shares the tile's grid), in the file's own dtype."""
        from rasterio.windows import Window

        ds = self.dataset(href)
        if col_off < 0 or row_off < 0 or col_off + width > ds.width or row_off + height > ds.height:
            raise RasterReadError(
                f"{href}: window cols {col_off}:{col_off + width} rows {row_off}:{row_off + height} "
                f"outside its {ds.width} x {ds.height} grid"
            )
        try:
            return ds.read(1, window=Window(col_off, row_off, width, height))  # type: ignore[no-any-return]
        except Exception as e:
            raise RasterReadError(
                f"cannot read {href} window rows {row_off}:{row_off + height} cols {col_off}:{col_off + width}: {e}"
            ) from e

    def warped(
        self, href: str, epsg: int, transform: Sequence[float], width: int, height: int, *, fill: float
    ) -> npt.NDArray[Any]:
        """Band 1 resampled by nearest neighbour onto the grid ``(epsg, transform, width,
        height)`` (rasterio ``Affine`` order), in the file's dtype, ``fill`` where the file has
        no data (outside it, or its nodata value). Only the source pixels under the grid are
        read, so a chip of a 10980 x 10980 scene costs a chip's worth of memory.

        Nearest neighbour takes, for each output pixel centre, the source pixel containing it.
        A source on the same CRS whose pixels are a whole multiple of the output's and whose
        edges fall on output pixel edges (Sentinel-2's 10 m and 20 m bands on the 10 m grid)
        is read as a window and its pixels repeated: the same values without a warp. Anything
        else goes through GDAL's warper (a ``WarpedVRT``) with a linear-approximation error
        bound of 1e-9 pixel (:data:`WARP_TOLERANCE`) instead of GDAL's default 1/8 pixel, which
        is enough to pick a neighbouring source pixel near pixel edges."""
        ds = self.dataset(href)
        try:
            aligned = _aligned_read(ds, epsg, transform, width, height)
            if aligned is not None:
                data = aligned
            else:
                from affine import Affine
                from rasterio.crs import CRS
                from rasterio.enums import Resampling
                from rasterio.vrt import WarpedVRT

                with WarpedVRT(
                    ds, crs=CRS.from_epsg(epsg), transform=Affine(*transform[:6]), width=width, height=height,
                    resampling=Resampling.nearest, nodata=fill, tolerance=WARP_TOLERANCE,
                ) as vrt:  # fmt: skip
                    return vrt.read(1)  # type: ignore[no-any-return]
        except RasterReadError:
            raise
        except Exception as e:
            raise RasterReadError(f"cannot read {href} onto EPSG:{epsg} {tuple(transform[:6])}: {e}") from e
        nodata = ds.nodata
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)) and nodata != fill:
            data[data == nodata] = fill
        return data

    def window(self, href: str, x: float, y: float, width: int, height: int) -> npt.NDArray[np.uint16]:
        """Band 1 over the ``width x height`` window centred on the pixel of (x, y),
        zero outside the raster (a boundless read, done as an in-bounds read + paste)."""
        band: npt.NDArray[np.uint16] = self.windows([href], x, y, width, height)[0]
        return band

    def windows(
        self, hrefs: list[str], x: float, y: float, width: int, height: int
    ) -> npt.NDArray[np.uint16]:
        """:meth:`window` of several files of one grid (an item's bands), stacked. When
        block rows are coalesced, every file's span is fetched by one prefetch first."""
        from rasterio.windows import Window

        reads = []
        for href in hrefs:
            ds = self.dataset(href)
            row, col = pixel_of(ds.transform, x, y)
            row_off, col_off = row - height // 2, col - width // 2
            r0, r1 = max(row_off, 0), min(row_off + height, ds.height)
            c0, c1 = max(col_off, 0), min(col_off + width, ds.width)
            reads.append((href, ds, row_off, col_off, r0, r1, c0, c1))
        if self.access.merge_gap_bytes > 0:
            spans = [
                (ds.name, start, end)
                for _, ds, _, _, r0, r1, c0, c1 in reads
                if r0 < r1 and c0 < c1 and ds.name.startswith("/vsi")
                for start, end in coalesce_ranges(
                    _tile_ranges(ds, r0, r1, c0, c1), self.access.merge_gap_bytes
                )
            ]
            if spans:
                _prefetch(spans)
        out = np.zeros((len(hrefs), height, width), dtype=reads[0][1].dtypes[0] if reads else np.uint16)
        for i, (href, ds, row_off, col_off, r0, r1, c0, c1) in enumerate(reads):
            if r0 >= r1 or c0 >= c1:
                continue
            try:
                data = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
            except Exception as e:
                raise RasterReadError(f"cannot read {href} window rows {r0}:{r1} cols {c0}:{c1}: {e}") from e
            out[i, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = data
        return out


# The warper's linear-approximation error bound, in pixels: the exact transform in effect (the
# approximation subdivides until it is met). 0 would mean "exact", but rasterio's WarpedVRT
# then fails to create its transformer ("pfnTransformer is NULL", rasterio 1.4).
WARP_TOLERANCE = 1e-9


def _whole(value: float) -> int | None:
    """``value`` as an int when it is one (to 1e-9: transforms carry float noise), else None."""
    r = round(value)
    return int(r) if abs(value - r) < 1e-9 else None


def _aligned_read(
    ds: Any, epsg: int, transform: Sequence[float], width: int, height: int
) -> npt.NDArray[Any] | None:
    """:meth:`RasterReader.warped` without a warp, when the source is on the output's CRS,
    north-up, its pixel a whole multiple ``k`` of the output's, and the output's pixel edges
    on the source's: output pixel ``i`` is then source pixel ``(q + i) // k`` (``q`` the
    output origin's offset in output pixels), which is what nearest neighbour picks. None
    when that does not hold or the window leaves the source (the warper decides then)."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    st = ds.transform
    if b or d or st.b or st.d or a <= 0 or e >= 0 or st.e >= 0 or ds.crs is None:
        return None
    k, k_rows = _whole(st.a / a), _whole(st.e / e)
    q_cols, q_rows = _whole((c - st.c) / a), _whole((st.f - f) / -e)
    if k is None or k < 1 or k != k_rows or q_cols is None or q_rows is None:
        return None
    c0, c1 = q_cols // k, (q_cols + width - 1) // k + 1
    r0, r1 = q_rows // k, (q_rows + height - 1) // k + 1
    if c0 < 0 or r0 < 0 or c1 > ds.width or r1 > ds.height or ds.crs.to_epsg() != epsg:
        return None
    from rasterio.windows import Window

    data = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    if k > 1:
        data = np.repeat(np.repeat(data, k, axis=0), k, axis=1)
    i0, j0 = q_rows - r0 * k, q_cols - c0 * k
    return np.ascontiguousarray(data[i0 : i0 + height, j0 : j0 + width])


def _tile_ranges(ds: Any, r0: int, r1: int, c0: int, c1: int) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of the tiles under rows ``r0:r1``, cols ``c0:c1`` (GDAL
    has them from the header it read at open: no request)."""
    block_rows, block_cols = ds.block_shapes[0]
    ranges = []
    for by in range(r0 // block_rows, (r1 - 1) // block_rows + 1):
        for bx in range(c0 // block_cols, (c1 - 1) // block_cols + 1):
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=1)
            size = ds.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=1)
            if not offset or not size or int(size) == 0:
                continue  # a sparse (absent) tile or a file that is not a tiled TIFF
            ranges.append((int(offset), int(offset) + int(size)))
    return ranges


def coalesce_ranges(ranges: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    """Merge ``[start, end)`` byte ranges whose gap is at most ``max_gap``; spans that are
    already one run of adjacent ranges are left out (GDAL fetches them in one GET itself)."""
    spans: list[tuple[int, int, int]] = []  # start, end, number of separate runs merged
    for start, end in sorted(ranges):
        if spans and start - spans[-1][1] <= max_gap:
            s0, e0, runs = spans[-1]
            spans[-1] = (s0, max(e0, end), runs + (start > e0))
        else:
            spans.append((start, end, 1))
    return [(s0, e0) for s0, e0, runs in spans if runs > 1]


def _prefetch(spans: list[tuple[str, int, int]]) -> None:
    """Read byte spans ``(GDAL name, start, end)`` of remote files (one ranged GET each)
    into vsicurl's cache, where the tile reads then find them (GDAL's VSI read, see
    :mod:`pipeline._vsi`; a raw-band VRT where that cannot be reached).

    An optimisation only: if it fails (a span running past the end of a file, a server
    error after GDAL's retries), the tile reads that follow fetch what they need and report
    any real error themselves."""
    from pipeline import _vsi

    if _vsi.available():
        try:
            _vsi.read_ranges(spans)
        except OSError as e:  # see above: the reads that follow decide
            log.debug("prefetch of %d spans failed: %s", len(spans), e)
        return
    _prefetch_through_vrt(spans)


def _prefetch_through_vrt(spans: list[tuple[str, int, int]]) -> None:
    """:func:`_prefetch` where libgdal's VSI functions cannot be reached: the spans as
    the bands of one raw-band VRT (opening a dataset costs ~1 ms of CPU, so one per
    window, not per file); all bands have the longest span's width, so a shorter span
    reads a little beyond its end."""
    from xml.sax.saxutils import escape

    import rasterio

    width = max(end - start for _, start, end in spans)
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{i}" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativetoVRT="0">{escape(name)}</SourceFilename><ImageOffset>{start}</ImageOffset>'
        f"<PixelOffset>1</PixelOffset><LineOffset>{width}</LineOffset></VRTRasterBand>"
        for i, (name, start, _) in enumerate(spans, 1)
    )
    # a non-identity geotransform keeps rasterio from warning "not georeferenced"
    vrt = f'<VRTDataset rasterXSize="{width}" rasterYSize="1"><GeoTransform>0,1,0,0,0,-1</GeoTransform>{bands}</VRTDataset>'
    try:
        with rasterio.open(vrt) as raw:
            raw.read()
    except Exception as e:  # see above: the reads that follow decide
        log.debug("prefetch of %d spans failed: %s", len(spans), e)
