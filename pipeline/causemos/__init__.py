"""Causemos post-processing (the Dojo-to-Causemos "Data Pipeline"), contract in ``shared/spec/causemos.md``.

Run it with ``luigi --module pipeline.causemos CausemosRun --help`` (and ``CausemosDryRun``).

:mod:`pipeline.causemos.recipe` holds the computation as pure pandas/numpy functions,
:mod:`pipeline.causemos.layout` every output key, :mod:`pipeline.causemos.tiles` the tile protobuf;
:mod:`pipeline.causemos.tasks` the Luigi tasks, :mod:`pipeline.causemos.prepare` and
:mod:`pipeline.causemos.pieces` their work on Dask, :mod:`pipeline.causemos.outputs` how objects are
written, listed, deleted and recorded.
"""

from pipeline import _luigi_setup
from pipeline.causemos import summary
from pipeline.causemos.tasks import (
    CausemosDryRun,
    CausemosOutputs,
    CausemosPrepare,
    CausemosRun,
)

_luigi_setup.install()
summary.install()

__all__ = ["CausemosDryRun", "CausemosOutputs", "CausemosPrepare", "CausemosRun"]
