"""Shared fixtures: generated archives (built once per session) and the real servers."""

from __future__ import annotations

import os

import pytest

from pipeline.demo.archive import build_archive, small_spec


@pytest.fixture(scope="session", autouse=True)
def completeness_cache(tmp_path_factory: pytest.TempPathFactory):
    """The completeness snapshots of every run the tests make (and the luigi processes
    they start) go to the session's temp dir, not the user's ~/.cache."""
    saved = os.environ.get("EO_EXTRACT_CACHE")
    os.environ["EO_EXTRACT_CACHE"] = str(tmp_path_factory.mktemp("eo-extract-cache"))
    yield
    if saved is None:
        os.environ.pop("EO_EXTRACT_CACHE", None)
    else:
        os.environ["EO_EXTRACT_CACHE"] = saved


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic Landsat ARD archive (2x2 tiles) with plots on edges and corners."""
    return build_archive(tmp_path_factory.mktemp("archive"), small_spec(seed=1))


@pytest.fixture(scope="session")
def dense_archive(tmp_path_factory: pytest.TempPathFactory):
    """Like small_archive, but every block written (fill too), as in the real archive: reads
    cost the ranged GETs they cost on USGS files (S3 request counts, the dry run)."""
    from dataclasses import replace

    return build_archive(tmp_path_factory.mktemp("dense"), replace(small_spec(seed=3), sparse_fill=False))


@pytest.fixture(scope="session")
def other_archive(tmp_path_factory: pytest.TempPathFactory):
    """An archive of the same shape the pipeline has not seen: another seed."""
    return build_archive(tmp_path_factory.mktemp("archive2"), small_spec(seed=7))


# The real servers, started once per session by the tests themselves.
from tests.servers.azurite import azurite  # noqa: E402,F401
from tests.servers.s3 import s3_server  # noqa: E402,F401
from tests.servers.sas_token import sas_token_service  # noqa: E402,F401
from tests.servers.stac import stac_server  # noqa: E402,F401


@pytest.fixture(scope="session")
def small_hls_archive(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic HLS v2 archive: 10TET + 10TFT windows, 2019-2020, edge and unplaced points."""
    from pipeline.demo.hls_archive import build_hls_archive, small_hls_spec

    return build_hls_archive(tmp_path_factory.mktemp("hls-archive"), small_hls_spec(seed=1))
