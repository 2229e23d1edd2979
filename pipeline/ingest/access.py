"""How bundles on ``s3://`` are reached: the same settings for fsspec (listing the source,
reading tar headers, streaming a compressed bundle) and for GDAL (``/vsis3/`` reads of the
raster members on Dask workers).

Holds no credentials: botocore and GDAL take them from the profile or the environment
(``AWS_ACCESS_KEY_ID`` ...), in whichever process reads. Empty fields fall back to the
standard AWS environment variables (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_PROFILE``), as :class:`targets.s3config.S3Options` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from targets.s3config import S3Options

# Remote members are read whole, in order, by the COG driver: large ranged reads, no
# directory listings looked for next to a member, retries on throttling.
GDAL_REMOTE_READ = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_CHUNK_SIZE": str(4 * 1024 * 1024),
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 * 1024 * 1024),
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
}


@dataclass(frozen=True)
class SourceAccess:
    """Where the source bucket's S3 endpoint is. Picklable (travels to Dask workers)."""

    endpoint_url: str = ""  # "" = AWS (or the environment's AWS_ENDPOINT_URL_S3)
    region: str = ""
    profile: str = ""
    requester_pays: bool = False

    def s3_options(self) -> S3Options:
        return S3Options(
            endpoint_url=self.endpoint_url,
            region=self.region,
            profile=self.profile,
            requester_pays=self.requester_pays,
        )

    def filesystem(self, scheme: str = "s3") -> Any:
        """An fsspec filesystem for ``scheme`` (``s3`` with these options; others as fsspec has them)."""
        import fsspec

        if scheme == "s3":
            return fsspec.filesystem("s3", skip_instance_cache=True, **self.s3_options().s3fs_kwargs())
        return fsspec.filesystem(scheme)

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration for ``/vsis3/`` reads of the source (an S3-compatible server
        that is not AWS: path-style URLs, plain HTTP when its URL says so)."""
        resolved = self.s3_options().resolved()
        options = dict(GDAL_REMOTE_READ)
        if resolved.endpoint_url:
            parsed = urlparse(
                resolved.endpoint_url
                if "://" in resolved.endpoint_url
                else f"https://{resolved.endpoint_url}"
            )
            options.update(
                AWS_S3_ENDPOINT=parsed.netloc,
                AWS_HTTPS="NO" if parsed.scheme == "http" else "YES",
                AWS_VIRTUAL_HOSTING="FALSE",
            )
        if resolved.region:
            options["AWS_REGION"] = resolved.region
        if resolved.profile:
            options["AWS_PROFILE"] = resolved.profile
        if resolved.requester_pays:
            options["AWS_REQUEST_PAYER"] = "requester"
        return options
