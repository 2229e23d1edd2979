"""Where an S3 endpoint is and how to sign for it, for outputs (fsspec/s3fs).

Values come from the caller (luigi.cfg through the pipeline's config classes), falling back
to the standard AWS environment (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``,
``AWS_PROFILE``, ``AWS_REGION``). Credentials are never stored here: botocore resolves
them from the profile or the environment, so they cannot leak into task parameters,
logs or pickled task state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str = ""  # "" = AWS itself; "http://127.0.0.1:8333" for MinIO/SeaweedFS
    region: str = ""
    profile: str = ""
    requester_pays: bool = False

    def resolved(self) -> S3Options:
        """Fill empty fields from the standard AWS environment variables."""
        return S3Options(
            endpoint_url=self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL", ""),
            region=self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", ""),
            profile=self.profile or os.environ.get("AWS_PROFILE", ""),
            requester_pays=self.requester_pays,
        )

    def s3fs_kwargs(self) -> dict[str, object]:
        o = self.resolved()
        client_kwargs: dict[str, object] = {}
        if o.endpoint_url:
            client_kwargs["endpoint_url"] = o.endpoint_url
        if o.region:
            client_kwargs["region_name"] = o.region
        kwargs: dict[str, object] = {
            "client_kwargs": client_kwargs,
            "requester_pays": o.requester_pays,
            # Listings are how completeness is decided: never answer them from a stale cache.
            "use_listings_cache": False,
            # botocore retries throttling/5xx with backoff (bounded: 5 attempts); s3fs's own
            # retry loop on top would multiply them (5 x 5 = 25 PUTs for one failing write).
            "config_kwargs": {"retries": {"max_attempts": 5, "mode": "standard"}},
        }
        if o.profile:
            kwargs["profile"] = o.profile
        return kwargs
