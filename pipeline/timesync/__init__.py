"""TimeSync extraction: for every plot and usable Landsat acquisition, three 255 x 255 PNG
chips and one row of spectral values (``shared/spec/timesync.md``).

Run it with ``luigi --module pipeline.timesync TimeSyncProject --help``.
"""

from pipeline import _luigi_setup
from pipeline.timesync import summary
from pipeline.timesync.tasks import (
    TimeSyncDryRun,
    TimeSyncIngest,
    TimeSyncObservation,
    TimeSyncPlot,
    TimeSyncPlotBatch,
    TimeSyncProject,
    TimeSyncReport,
    TimeSyncSearch,
)

_luigi_setup.install()
summary.install()

__all__ = [
    "TimeSyncDryRun",
    "TimeSyncIngest",
    "TimeSyncObservation",
    "TimeSyncPlot",
    "TimeSyncPlotBatch",
    "TimeSyncProject",
    "TimeSyncReport",
    "TimeSyncSearch",
]
