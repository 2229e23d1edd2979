#!/usr/bin/env python3
"""Write the synthetic Landsat C2 ARD archive used by the offline demo and the tests.

    python scripts/make_demo_archive.py OUT_DIR [--small] [--seed N] [--acquisitions N] ...

See ``--help`` and :mod:`pipeline.demo.archive`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from pipeline.demo.archive import main
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline.demo.archive import main

if __name__ == "__main__":
    sys.exit(main())
