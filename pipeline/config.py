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


class BlobSigningConfig(luigi.Config):
    """The settings of a workflow that reads Planetary-Computer-style blob storage (SAS tokens).
    A workflow's own section subclasses it (``class hls(BlobSigningConfig)`` is ``[hls]``), so
    every such workflow is configured alike and gets its ArchiveAccess from :meth:`access`."""

    signing = luigi.ChoiceParameter(
        choices=["auto", "none", "planetary-computer"], default="auto",
        description="sign blob hrefs with Planetary Computer SAS tokens (auto: when an href is an Azure blob URL)",
    )  # fmt: skip
    sas_url = luigi.Parameter(
        default="", description="token service root; empty = PC_SDK_SAS_URL or Planetary Computer's"
    )
    path_style_blob_hosts = luigi.Parameter(
        default="",
        description="comma-separated host:port of blob endpoints with the account in the path (Azurite)",
    )

    def access(self) -> ArchiveAccess:
        """Assets read by their ``href`` (no requester-pays S3), signed where they are read."""
        from pipeline.signing import Signing

        hosts = tuple(h.strip() for h in str(self.path_style_blob_hosts).split(",") if h.strip())
        # "auto" signs only what is blob storage (Signing.sign leaves every other href alone)
        mode = "none" if self.signing == "none" else "planetary-computer"
        return ArchiveAccess(
            asset_href="href", requester_pays=False, signing=Signing(mode, str(self.sas_url), hosts)
        )
