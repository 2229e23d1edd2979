"""The paths a demo archive builder writes under its root, cleared before a rebuild."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path


def clear_owned(root: Path, owned: Sequence[Path], overwrite: bool) -> None:
    """Make way for a new archive under ``root``: when any of ``owned`` (the files and
    directories the builder writes) exists, remove them all with ``overwrite``, else refuse
    (FileExistsError). Nothing else under ``root`` is touched."""
    if not any(p.exists() for p in owned):
        return
    if not overwrite:
        raise FileExistsError(f"{root} already holds an archive (use overwrite=True / --force)")
    for p in owned:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
