#!/usr/bin/env python3
"""Write the synthetic HLS v2 archive (Planetary Computer hls2-l30 / hls2-s30 shaped) used by
the offline HLS demo, the tests and the memory benchmark.

    python scripts/make_hls_demo_archive.py OUT_DIR [--small | --full-size N_SCENES] [--seed N] [--force]

See ``--help`` and :mod:`pipeline.demo.hls_archive`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from pipeline.demo.hls_archive import main
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline.demo.hls_archive import main

if __name__ == "__main__":
    sys.exit(main())
