#!/usr/bin/env python
"""Runs the old Clay ``scripts/datacube.py`` (Clay-foundation/model at c6a8365, not part of this
repository: ``scripts/bench_datacube.py`` puts it under ``.cache/datacube-ref``) on one sample row,
unchanged except for where it talks to: the STAC API root (``STAC_API``), the Planetary Computer
signing (a no-op: the archive is local files), the final ``aws s3 sync`` of each date's chips
(a local copy into ``--out/{version}/{mgrs}/{date}``) and, with ``--dates-per-tile``, its
``DATES_PER_LOCATION`` (3; the workflow's ``--dates-per-tile``). Runs in the reference's own venv
(``.cache/datacube-ref-venv``: stackstac, pystac-client, planetary-computer, rioxarray, ...).

    .cache/datacube-ref-venv/bin/python scripts/bench_datacube_ref_runner.py \
        --ref-dir .cache/datacube-ref/scripts --stac http://127.0.0.1:PORT --sample S.fgb --index 0 --out DIR
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ref-dir", type=Path, required=True)
    p.add_argument("--stac", required=True)
    p.add_argument("--sample", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dates-per-tile", type=int, default=0, help="the script's DATES_PER_LOCATION (0: its 3)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.ref_dir.resolve()))
    import datacube  # type: ignore[import-not-found]  # the reference, from --ref-dir
    import planetary_computer
    import tile  # type: ignore[import-not-found]

    datacube.STAC_API = args.stac
    if args.dates_per_tile:
        datacube.DATES_PER_LOCATION = args.dates_per_tile

    def no_signing(obj: Any) -> Any:
        return obj

    planetary_computer.sign_inplace = no_signing
    datacube.pc.sign_inplace = no_signing

    def local_sync(cmd: list[str], check: bool = False, **_: Any) -> None:
        # ["aws", "s3", "sync", dir, "s3://{bucket}/{version}/{mgrs}/{date}", "--no-progress"]
        src, url = cmd[3], cmd[4]
        rel = url.split("://", 1)[1].split("/", 1)[1]
        shutil.copytree(src, args.out / rel, dirs_exist_ok=True)

    tile.subprocess = SimpleNamespace(run=local_sync)
    main_args = ["--sample", args.sample, "--index", str(args.index), "--bucket", "bench"]
    datacube.main.main(args=main_args, standalone_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
