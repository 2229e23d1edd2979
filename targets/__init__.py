"""Output locations and how we know they are finished: fsspec-backed stores (local or
``s3://``) with atomic writes and one-listing completeness checks, and Luigi targets."""

from targets.s3config import S3Options
from targets.store import Store
from targets.target import StoreTarget

__all__ = ["S3Options", "Store", "StoreTarget"]
