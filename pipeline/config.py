"""Configuration sections of luigi.cfg shared by the workflows. Each is also settable on
the command line (``--archive-endpoint-url ...``) and falls back to the standard AWS
environment variables where that is the convention. No section holds credentials:
botocore and GDAL resolve them from the profile or the environment."""

from __future__ import annotations

import luigi

from pipeline.raster import DEFAULT_MERGE_GAP_BYTES, ArchiveAccess
from targets.s3config import S3Options


class archive(luigi.Config):
    """[archive]: where the Landsat archive's assets are read from."""

    endpoint_url = luigi.Parameter(
        default="", description="S3 endpoint of the archive; empty = AWS (or AWS_ENDPOINT_URL_S3)"
    )
    region = luigi.Parameter(default="us-west-2", description="AWS region of the archive bucket")
    profile = luigi.Parameter(
        default="", description="AWS profile for archive reads; empty = environment/default chain"
    )
    requester_pays = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="send x-amz-request-payer: requester (usgs-landsat-ard needs it)",
    )
    merge_gap_bytes = luigi.IntParameter(
        default=DEFAULT_MERGE_GAP_BYTES,
        description="fetch a window's block rows in one GET when at most this many bytes lie between them (0 = one GET per block row: fewer bytes, more requests)",
    )

    def access(self, asset_href: str) -> ArchiveAccess:
        if self.merge_gap_bytes < 0:
            from pipeline.errors import InputError

            raise InputError(f"{self.merge_gap_bytes} is negative", field="archive.merge_gap_bytes")
        return ArchiveAccess(
            asset_href=asset_href, endpoint_url=self.endpoint_url, region=self.region, profile=self.profile,
            requester_pays=self.requester_pays, merge_gap_bytes=self.merge_gap_bytes,
        )  # fmt: skip


class output(luigi.Config):
    """[output]: the S3 endpoint for s3:// project directories (MinIO, SeaweedFS, AWS)."""

    endpoint_url = luigi.Parameter(
        default="", description="S3 endpoint for outputs; empty = AWS (or AWS_ENDPOINT_URL_S3)"
    )
    region = luigi.Parameter(default="", description="region for outputs")
    profile = luigi.Parameter(default="", description="AWS profile for outputs")

    def s3_options(self) -> S3Options:
        return S3Options(endpoint_url=self.endpoint_url, region=self.region, profile=self.profile)
