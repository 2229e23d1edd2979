#!/usr/bin/env python
"""Peak memory of one Causemos run: the largest process and the whole process tree (the luigi process
and its Dask workers), sampled from /proc every 0.2 s.

    .venv/bin/python scripts/measure_causemos_memory.py DATA_PATHS DEST [luigi options...]

DATA_PATHS is what scripts/make_causemos_demo_input.py prints. Prints rows, wall time, peak RSS of the
largest process and of the tree, and os.getloadavg() beside them; with a local DEST also the tree's peak
during the prepare stage (until its record, ``_state/.../prepare.json``, appears) and after it (the
output tasks), to tell where memory goes.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pandas as pd


def _tree_rss_kib(root: int) -> dict[int, int]:
    """RSS (KiB) of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
        rss[int(name)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    out: dict[int, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in rss:
            out[pid] = rss[pid]
        stack.extend(children.get(pid, []))
    return out


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data_paths, dest, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    numeric = [p for p in data_paths.split(",") if not p.endswith("_str.parquet.gzip")]
    rows = sum(len(pd.read_parquet(p, columns=["value"]).index) for p in numeric)
    args = [
        sys.executable, "-m", "luigi", "--module", "pipeline.causemos", "CausemosRun", "--data-id", "mem",
        "--run-id", "r1", "--data-paths", data_paths, "--dest", dest, "--local-scheduler", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_tree = peak_one = 0
    peaks = {"prepare": 0, "outputs": 0}  # the tree's peak per stage (local DEST only)
    record = os.path.join(dest, "_state", "causemos", "mem", "r1", "prepare.json")
    while proc.poll() is None:
        sizes = _tree_rss_kib(proc.pid)
        if sizes:
            peak_tree = max(peak_tree, sum(sizes.values()))
            peak_one = max(peak_one, max(sizes.values()))
            stage = "outputs" if glob.glob(record) else "prepare"
            peaks[stage] = max(peaks[stage], sum(sizes.values()))
        time.sleep(0.2)
    stderr = proc.stderr.read() if proc.stderr else ""
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{stderr[-3000:]}")
    print(
        f"rows {rows:,}  files {len(numeric)}  wall {seconds:.1f} s  peak RSS: largest process "
        f"{peak_one / 1024:.0f} MiB, process tree {peak_tree / 1024:.0f} MiB (prepare stage "
        f"{peaks['prepare'] / 1024:.0f}, outputs {peaks['outputs'] / 1024:.0f})  loadavg {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
