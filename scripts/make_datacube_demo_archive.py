#!/usr/bin/env python3
"""Write the synthetic Sentinel-2 L2A + Sentinel-1 RTC + Copernicus DEM archive (Planetary Computer
shaped) used by the offline datacube demo and tests.

    python scripts/make_datacube_demo_archive.py OUT_DIR [--small] [--seed N] [--force]

See ``--help`` and :mod:`pipeline.demo.datacube_archive`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from pipeline.demo.datacube_archive import main
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline.demo.datacube_archive import main

if __name__ == "__main__":
    sys.exit(main())
