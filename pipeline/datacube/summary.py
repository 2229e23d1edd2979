"""The closing summary of a datacube run: tiles selected (with their dates, or why none), chips
written, already done and dropped, (tile, date)s failed; where the outputs are. Figures are
recorded through the shared run-stats mechanism and printed once, at exit."""

from __future__ import annotations

from typing import Any

from pipeline import runstats
from pipeline.failures import UnusableItem

WORKFLOW = "datacube"


def record_run(dest: str, **counts: int) -> None:
    runstats.record(WORKFLOW, "run", {"dest": dest, **counts})


def record_selection(doc: dict[str, Any]) -> None:
    """A tile's selection, made in this run."""
    skipped = [f"{p['period']}: {p['reason']}" for p in doc["periods"] if p.get("status") == "skipped"]
    runstats.record(
        WORKFLOW,
        f"selection-{doc['index']:06d}",
        {
            "index": doc["index"], "mgrs": doc["mgrs"], "dates": [d["date"] for d in doc["dates"]],
            "skipped": skipped, "unusable": doc.get("unusable", []),
        },
    )  # fmt: skip


def record_date(
    label: str, *, kept: int, kept_before: int, dropped: int, failed: list[tuple[str, str]], failed_chips: int
) -> None:
    runstats.record(
        WORKFLOW,
        f"date-{label}",
        {"label": label, "kept": kept, "kept_before": kept_before, "dropped": dropped,
         "failed": [list(f) for f in failed], "failed_chips": failed_chips},
    )  # fmt: skip


def render(docs: dict[str, dict[str, Any]]) -> runstats.Rendered:
    run = docs.get("run", {})
    selections = [d for k, d in sorted(docs.items()) if k.startswith("selection-")]
    dates = [d for k, d in sorted(docs.items()) if k.startswith("date-")]
    lines: list[str] = []
    if selections:
        with_dates = [s for s in selections if s["dates"]]
        lines.append(
            f"tiles selected: {len(selections)}"
            + (f" of {run['tiles']}" if run.get("tiles") else "")
            + f": {sum(len(s['dates']) for s in selections)} date(s); {len(selections) - len(with_dates)} tile(s) without any date"
        )
        for s in selections:
            if not s["dates"]:
                why = s["skipped"][0] if s["skipped"] else "no period tried"
                lines.append(f"  NO DATE row {s['index']} {s['mgrs']}: {why}")
    if dates:
        lines.append(
            f"chips: {sum(d['kept'] for d in dates)} written, {sum(d['kept_before'] for d in dates)} already there, "
            f"{sum(d['dropped'] for d in dates)} dropped, in {len(dates)} (tile, date)(s)"
        )
    elif run.get("tiles") and not selections:
        lines.append(f"nothing to do: all {run['tiles']} tile(s) were already complete")
    if run.get("dest"):
        lines.append(f"outputs: {run['dest']}")
    failed = [(what, error) for d in dates for what, error in d["failed"]]
    unusable = [UnusableItem.from_json(u) for s in selections for u in s["unusable"]]
    advice = ["Rerun the same command to retry only the (tile, date)s that failed (finished chips are kept)."]
    return runstats.Rendered(
        title="Datacube summary", lines=lines, failed=failed, unusable=unusable, advice=advice
    )


def install() -> None:
    runstats.install()
    runstats.set_renderer(WORKFLOW, render)
