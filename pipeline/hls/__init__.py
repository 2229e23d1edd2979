"""HLS monthly median composites and training samples (Planetary Computer ``hls2-l30`` /
``hls2-s30``): a COG per MGRS tile, year and month, and chips around points.

Run it with ``luigi --module pipeline.hls HlsComposites --help`` (and ``HlsSamples``,
``HlsDryRun``).
"""

from pipeline import _luigi_setup
from pipeline.hls import summary
from pipeline.hls.tasks import (
    HlsComposite,
    HlsComposites,
    HlsDryRun,
    HlsPlacement,
    HlsReport,
    HlsSamples,
    HlsSampleTile,
    HlsSearch,
)

_luigi_setup.install()
summary.install()

__all__ = [
    "HlsComposite",
    "HlsComposites",
    "HlsDryRun",
    "HlsPlacement",
    "HlsReport",
    "HlsSampleTile",
    "HlsSamples",
    "HlsSearch",
]
