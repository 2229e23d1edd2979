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


DEFAULT_MAX_OPEN = 256


def allow_open_files(wanted: int) -> None:
    """Raise this process's soft limit of open files towards ``wanted`` (never above the hard
    limit, never lowered): a local raster held open is a file descriptor, and a reader that
    keeps a month's hundreds of files open on each of several threads can pass the common
    soft limit of 1024 while the hard limit allows far more."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        with contextlib.suppress(ValueError, OSError):  # not allowed here: the reads will say so
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


class RasterReader:
    """Reads windows and pixels from many rasters inside one GDAL environment.

    Use as a context manager, in the thread that reads (GDAL options are thread-local).
    ``max_open``: datasets kept open, least recently used closed first; a caller that reads
    the same set of files over and over (window after window) must keep them all, or each
    read of the cycle misses: a reopen, and the decoded blocks of the closed handle gone.
    More than the default raises the open-file limit to match, for a reader on each of the
    process's threads (a local raster is a file descriptor).
    """

    def __init__(self, access: ArchiveAccess, *, max_open: int = DEFAULT_MAX_OPEN) -> None:
        self.access = access.resolved()
        self.max_open = max_open
        if max_open > DEFAULT_MAX_OPEN:
            allow_open_files(max_open * 2 * (os.cpu_count() or 1) + DEFAULT_MAX_OPEN)
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

    def nearest(self, href: str, centres: PixelCentres, *, fill: float) -> npt.NDArray[Any]:
        """:meth:`warped` onto ``centres``' grid, computed as nearest neighbour is defined: each
        output pixel centre, in the file's CRS (:meth:`PixelCentres.in_crs`: one coordinate
        transformation per CRS, shared by every file on it), takes the value of the source
        pixel containing it (``floor`` of its source pixel coordinates); ``fill`` outside the
        file and on its nodata value. Only the source window the centres span is read (none
        when they all miss the file). Same values as the warper with an exact transformer, for
        a fraction of its cost: files on one CRS share the centres' transformation, files on
        one grid (an S1 item's vh and vv) their source pixels
        (:meth:`PixelCentres.source_pixels`). A file whose validity is not
        a plain nodata value (an alpha band, an internal mask) goes through :meth:`warped`."""
        from rasterio.enums import MaskFlags

        ds = self.dataset(href)
        if ds.crs is None or ds.mask_flag_enums[0] not in ([MaskFlags.all_valid], [MaskFlags.nodata]):
            return self.warped(
                href, centres.epsg, centres.transform, centres.width, centres.height, fill=fill
            )
        dtype = np.dtype(ds.dtypes[0])
        if np.isnan(fill) and dtype.kind not in "fc":
            dtype = np.dtype(np.float32)
        out = np.full((centres.height, centres.width), fill, dtype=dtype)
        try:
            pixels = centres.source_pixels(ds.crs, ds.transform, ds.width, ds.height)
            if pixels is None:
                return out
            from rasterio.windows import Window

            data = ds.read(1, window=Window(*pixels.window))
        except Exception as e:
            raise RasterReadError(
                f"cannot read {href} onto EPSG:{centres.epsg} {tuple(centres.transform[:6])}: {e}"
            ) from e
        values = data[pixels.rows, pixels.cols]
        nodata = ds.nodata
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
            values = np.where(values == nodata, fill, values)
        out[pixels.inside] = values
        return out

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


class PixelCentres:
    """The centres of the pixels of a grid ``(epsg, transform, width, height)`` (rasterio
    ``Affine`` order), in the grid's CRS and in each source CRS asked for (once per CRS and
    kept: an S1 item's ``vh`` and ``vv``, and the tiles of a DEM mosaic, share one mapping). For
    :meth:`RasterReader.nearest`.

    In another CRS the centres are PROJ's (pyproj) exact images on a lattice every
    :data:`LATTICE_STEP` pixels and interpolated between (PROJ on every centre of a 512 x 512
    chip costs 40-70 ms of CPU, more than the rest of a chip's S1 and DEM), with a bound on the
    interpolation error measured against exact images at the middle of every lattice edge
    (where a bilinear interpolation's error peaks), times :data:`LATTICE_SAFETY`. A centre whose
    interpolated source pixel coordinate is within that bound of a pixel edge is transformed
    exactly (:meth:`exact`): every centre then falls in the pixel its exact image falls in."""

    def __init__(self, epsg: int, transform: Sequence[float], width: int, height: int) -> None:
        from affine import Affine

        self.epsg, self.transform, self.width, self.height = epsg, tuple(transform[:6]), width, height
        cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        x, y = Affine(*self.transform) @ (cols, rows)
        self.x: npt.NDArray[np.float64] = np.asarray(x, dtype=np.float64)
        self.y: npt.NDArray[np.float64] = np.asarray(y, dtype=np.float64)
        self._in_crs: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]] = {}
        self._bounds: dict[str, tuple[float, float, float, float] | None] = {}
        self._pixels: dict[tuple[str, tuple[float, ...], int, int], SourcePixels | None] = {}

    def _same_crs(self, crs: Any) -> bool:
        return _same_crs(self.epsg, crs.to_wkt())

    def source_pixels(self, crs: Any, transform: Any, width: int, height: int) -> SourcePixels | None:
        """Which pixel of a source grid ``(crs, transform, width, height)`` (a rasterio CRS and
        ``Affine``) each centre falls in; None when none falls in the grid. Kept per grid:
        every file on one grid shares it."""
        key = (crs.to_wkt(), tuple(transform)[:6], width, height)
        if key not in self._pixels:
            self._pixels[key] = self._source_pixels(crs, transform, width, height)
        return self._pixels[key]

    def _source_pixels(self, crs: Any, transform: Any, width: int, height: int) -> SourcePixels | None:
        x, y, error = self.in_crs(crs)
        inverse = ~transform
        if self._misses(crs, inverse, error, width, height):
            return None
        cols, rows = inverse @ (x, y)
        if error > 0:  # interpolated: centres near a pixel edge (or unbounded) exactly
            cols, rows = _exact_near_edges(self, crs, inverse, cols, rows, error)
        with np.errstate(invalid="ignore"):  # a point PROJ cannot transform is inf: outside
            inside = (cols >= 0) & (rows >= 0) & (cols < width) & (rows < height)
        if not inside.any():
            return None
        col = np.floor(cols[inside]).astype(np.intp)
        row = np.floor(rows[inside]).astype(np.intp)
        c0, r0 = int(col.min()), int(row.min())
        window = (c0, r0, int(col.max()) + 1 - c0, int(row.max()) + 1 - r0)
        return SourcePixels(inside, row - r0, col - c0, window)

    def _misses(self, crs: Any, inverse: Any, error: float, width: int, height: int) -> bool:
        """Whether the centres' bounding box in ``crs`` (widened by ``error``) lies wholly off
        the grid: a DEM tile beside the chip costs no per-centre work."""
        if not np.isfinite(error):
            return False
        key = crs.to_wkt()
        if key not in self._bounds:
            x, y, _ = self.in_crs(crs)
            finite = np.isfinite(x) & np.isfinite(y)  # the others are outside every grid
            self._bounds[key] = (
                (
                    float(x[finite].min()),
                    float(x[finite].max()),
                    float(y[finite].min()),
                    float(y[finite].max()),
                )
                if finite.any()
                else None
            )
        bounds = self._bounds[key]
        if bounds is None:
            return True
        x0, x1, y0, y1 = bounds[0] - error, bounds[1] + error, bounds[2] - error, bounds[3] + error
        cols, rows = inverse @ (np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
        return bool(cols.max() < 0 or rows.max() < 0 or cols.min() >= width or rows.min() >= height)

    def in_crs(self, crs: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
        """The centres' coordinates in ``crs`` (a rasterio CRS), x (easting, longitude) first,
        and a bound on their error in ``crs`` units (0: exact; ``inf``: not bounded, see
        :meth:`exact`)."""
        key = crs.to_wkt()
        found = self._in_crs.get(key)
        if found is None:
            found = (self.x, self.y, 0.0) if self._same_crs(crs) else self._interpolated(key)
            self._in_crs[key] = found
        return found

    def exact(
        self, crs: Any, where: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The exact images in ``crs`` of the centres ``where`` is True (PROJ's ``inf`` where
        a point has none), as the 1-d arrays ``x[where]``, ``y[where]``."""
        if self._same_crs(crs):
            return self.x[where], self.y[where]
        xs, ys = _transformer(self.epsg, crs.to_wkt()).transform(self.x[where], self.y[where])
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)

    def _interpolated(self, wkt: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
        transformer = _transformer(self.epsg, wkt)
        rows = _lattice(self.height)
        cols = _lattice(self.width)
        exact = transformer.transform(self.x[np.ix_(rows, cols)], self.y[np.ix_(rows, cols)])
        x = _bilinear(np.asarray(exact[0]), rows, cols, self.height, self.width)
        y = _bilinear(np.asarray(exact[1]), rows, cols, self.height, self.width)
        # the middle of every lattice edge, along the rows and along the columns
        mid_rows, mid_cols = (rows[:-1] + rows[1:]) // 2, (cols[:-1] + cols[1:]) // 2
        error = 0.0
        for r, c in ((rows, mid_cols), (mid_rows, cols)):
            ix = np.ix_(r, c)
            ex, ey = transformer.transform(self.x[ix], self.y[ix])
            with np.errstate(invalid="ignore"):
                error += float(np.max(np.maximum(np.abs(x[ix] - ex), np.abs(y[ix] - ey)), initial=0.0))
        scale = float(np.max(np.abs(np.concatenate([np.ravel(exact[0]), np.ravel(exact[1])]))))
        bound = LATTICE_SAFETY * error + 64 * np.finfo(np.float64).eps * scale  # + rounding
        return x, y, bound if np.isfinite(bound) else float("inf")


@dataclass(frozen=True)
class SourcePixels:
    """The source pixels under a grid's centres: ``inside`` (the grid's shape) marks the
    centres that fall in the source, ``rows`` and ``cols`` (one per such centre, row-major)
    their pixel within ``window`` = (col_off, row_off, width, height) of the source."""

    inside: npt.NDArray[np.bool_]
    rows: npt.NDArray[np.intp]
    cols: npt.NDArray[np.intp]
    window: tuple[int, int, int, int]


_SAME_CRS: dict[tuple[int, str], bool] = {}


def _same_crs(epsg: int, wkt: str) -> bool:
    """Whether the CRS ``wkt`` is EPSG:``epsg`` (pyproj's equality; cached: it costs ~0.5 ms)."""
    key = (epsg, wkt)
    found = _SAME_CRS.get(key)
    if found is None:
        from pyproj import CRS
        from rasterio.crs import CRS as RasterioCRS

        found = bool(CRS.from_wkt(wkt) == CRS.from_user_input(RasterioCRS.from_epsg(epsg)))
        _SAME_CRS[key] = found
    return found


# The lattice of exact points: every 16 pixels (a 512 px chip: 33 x 33 points; PROJ's bilinear
# interpolation error over 160 m of UTM is ~1e-5 of a 10 m pixel).
LATTICE_STEP = 16
# The measured interpolation error is multiplied by this to bound it everywhere.
LATTICE_SAFETY = 8.0


def _lattice(size: int) -> npt.NDArray[np.intp]:
    return np.unique(np.r_[np.arange(0, size, LATTICE_STEP), size - 1]).astype(np.intp)


def _bilinear(
    values: npt.NDArray[np.float64],
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
    height: int,
    width: int,
) -> npt.NDArray[np.float64]:
    """``values`` given at lattice pixels ``rows x cols``, linearly interpolated to every pixel
    of a ``height x width`` grid (along the columns, then the rows)."""

    def weights(
        points: npt.NDArray[np.intp], size: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        at = np.arange(size)
        k = np.clip(np.searchsorted(points, at, side="right") - 1, 0, max(len(points) - 2, 0))
        if len(points) < 2:
            return k, np.zeros(size)
        return k, (at - points[k]) / (points[k + 1] - points[k])

    k, t = weights(cols, width)
    along = values[:, k] if len(cols) < 2 else values[:, k] * (1 - t) + values[:, k + 1] * t
    k, t = weights(rows, height)
    if len(rows) < 2:
        return np.ascontiguousarray(along[k])
    return along[k] * (1 - t)[:, None] + along[k + 1] * t[:, None]


def _exact_near_edges(
    centres: PixelCentres,
    crs: Any,
    inverse: Any,
    cols: npt.NDArray[np.float64],
    rows: npt.NDArray[np.float64],
    error: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Source pixel coordinates ``cols``, ``rows`` (from interpolated centres, off by at most
    ``error`` in ``crs`` units) with those that may lie in another pixel than their exact image
    replaced by the exact ones."""
    margin = error * (abs(inverse.a) + abs(inverse.b) + abs(inverse.d) + abs(inverse.e))  # in pixels
    with np.errstate(invalid="ignore"):
        near = (np.abs(cols - np.round(cols)) <= margin) | (np.abs(rows - np.round(rows)) <= margin)
        near |= ~(np.isfinite(cols) & np.isfinite(rows))
    if near.any():
        cols, rows = cols.copy(), rows.copy()
        cols[near], rows[near] = inverse @ centres.exact(crs, near)
    return cols, rows


_TRANSFORMERS: dict[tuple[int, str, int], Any] = {}
_TRANSFORMERS_LOCK = threading.Lock()


def _transformer(epsg: int, wkt: str) -> Any:
    """A pyproj ``Transformer`` from EPSG:``epsg`` to the CRS ``wkt``, x first; one per pair
    and thread (creating one costs milliseconds; a Transformer is not shared across threads)."""
    key = (epsg, wkt, threading.get_ident())
    with _TRANSFORMERS_LOCK:
        found = _TRANSFORMERS.get(key)
    if found is None:
        from pyproj import Transformer
        from rasterio.crs import CRS

        # rasterio CRS objects, as tests/datacube_oracle.py passes them: the same PROJ pipeline
        found = Transformer.from_crs(CRS.from_epsg(epsg), CRS.from_wkt(wkt), always_xy=True)
        with _TRANSFORMERS_LOCK:
            _TRANSFORMERS[key] = found
    return found


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
