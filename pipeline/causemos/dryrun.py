"""The dry run: what a run would write, counted exactly, without writing.

The number of objects of a run depends on the data (regions, periods, points, tile cells), so it is
not estimated from the rows: the prepare stage and every piece run on Dask as in the run, each object's
bytes counted instead of written. What the stage writes for the pieces (the spooled partial sums and the
points) goes to a *scratch* store of the dry run's own, never to the destination, and is deleted after:
so the dry run's memory is bounded as the run's is (points held in the cluster grow with the rows: a
4-million-row input killed the workers).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pipeline.causemos import pieces, recipe
from pipeline.causemos.prepare import feature_context, prepare, results_bytes
from pipeline.causemos.settings import RunSettings, prepare_fingerprint
from pipeline.errors import InputError
from targets.store import Store

RAW = "raw (raw.csv)"
INFO = "info (region and qualifier lists)"
RESULTS = "results.json"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class Estimate:
    rows: int
    features: list[str]
    families: dict[str, tuple[int, int]] = field(default_factory=dict)  # family -> (objects, bytes)


def estimate(
    client: Any, settings: RunSettings, scratch: Store, points_per_piece: int, max_pieces: int
) -> Estimate:
    """What the run would write, per output family, with ``scratch`` (a store every Dask worker can read
    and write) holding the stage's working files."""
    prepared = prepare(client, settings, scratch, prepare_fingerprint(settings))
    info = prepared.info
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, data in prepared.objects.items():
        family = RAW if key.endswith("/raw/raw.csv") else INFO
        counts[family][0] += 1
        counts[family][1] += len(data)
    futures = []
    for entry in info["features"]:
        for time_res in recipe.TIME_RESOLUTIONS:
            points = pieces.state_points(scratch, entry["points"][time_res], settings.batch_rows)
            context = feature_context(info, settings, entry, time_res)
            for family in settings.families:
                plan = pieces.plan_pieces(
                    family, context, points_rows=int(entry["points"][time_res]["rows"]),
                    periods=int(entry["points"][time_res]["timestamps"]), level0_regions=int(entry["level0_regions"]),
                    separator_in_level0=bool(info["first_level_separator"]), points_per_piece=points_per_piece,
                    max_parts=pieces.max_parts_for(client, max_pieces),
                )  # fmt: skip
                futures += [
                    (family, client.submit(pieces.run_piece, p, points, None, None, pure=False)) for p in plan
                ]
    for family, result in zip([f for f, _ in futures], client.gather([f for _, f in futures]), strict=True):
        counts[family][0] += len(result.objects)
        counts[family][1] += result.bytes_total
    if settings.records_results:
        counts[RESULTS] = [1, len(results_bytes(info, settings))]
    order = [RAW, INFO, *recipe.OUTPUT_TASKS, RESULTS]
    families = {name: (counts[name][0], counts[name][1]) for name in order if name in counts}
    return Estimate(int(info["num_rows"]), [f["key"] for f in info["features"]], families)


def format_estimate(result: Estimate, settings: RunSettings, already_complete: bool) -> str:
    """The dry run's table, printed at the end of the run."""
    width = max(len(name) for name in [*result.families, "total"]) + 2
    lines = [
        f"Causemos dry run: {settings.data_id}/{settings.run_id} -> {settings.dest}",
        f"input: {len(settings.sources)} file(s), {result.rows:,} rows, {len(result.features)} feature(s): "
        + ", ".join(result.features[:10])
        + (" ..." if len(result.features) > 10 else ""),
        f"{'output family':<{width}}{'objects':>12}{'bytes':>16}",
    ]
    for name, (objects, size) in result.families.items():
        lines.append(f"{name:<{width}}{objects:>12,}{size:>16,}")
    total_objects = sum(o for o, _ in result.families.values())
    total_bytes = sum(b for _, b in result.families.values())
    lines.append(f"{'total':<{width}}{total_objects:>12,}{total_bytes:>16,}")
    lines.append(
        "the run is already complete: nothing would be written"
        if already_complete
        else "the run is not complete: a run writes the objects above that are missing or changed"
    )
    return "\n".join(lines) + "\n"


def scratch_location(configured: str, scheduler: str) -> str:
    """Where the dry run keeps its working files: a unique folder under ``[causemos] dry_run_scratch``
    (``configured``); empty for a temporary directory of this machine, which the embedded cluster's
    workers and those of a scheduler on this machine share. A scheduler elsewhere needs the option: its
    workers could not read this machine's directory (checked before anything runs)."""
    if configured:
        return f"{configured.rstrip('/')}/causemos-dry-run-{uuid.uuid4().hex}"
    host = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}").hostname or ""
    if scheduler and host not in LOOPBACK_HOSTS:
        raise InputError(
            f"the Dask scheduler {scheduler} is not on this machine: set it to a directory or URL its "
            "workers can read and write",
            field="[causemos] dry_run_scratch",
        )
    return ""
