"""The closing summary of an HLS run: tile-years and months written, already done, failed;
unusable items (id, reason); samples written and points left unplaced; where the
outputs are and how to rerun what failed. Figures are recorded through the shared
run-stats mechanism (forked luigi workers included) and printed once, at exit."""

from __future__ import annotations

from typing import Any

from pipeline import runstats
from pipeline.failures import UnusableItem

WORKFLOW = "hls"


def record_run(kind: str, project_dir: str, **counts: int) -> None:
    runstats.record(WORKFLOW, f"run-{kind}", {"kind": kind, "project_dir": project_dir, **counts})


def record_composites(tile: str, year: int, plan: Any, results: list[Any], *, skipped: int) -> None:
    runstats.record(
        WORKFLOW,
        f"composite-{tile}-{year}",
        {
            "tile": tile,
            "year": year,
            "scenes": len(plan.scenes),
            "months_written": sum(r.status == "written" for r in results),
            "months_done_before": skipped,
            "failed": [
                {"what": f"{tile} {r.year}-{r.month:02d}", "error": r.error}
                for r in results
                if r.status == "failed"
            ],
            "unusable": [u.to_json() for u in plan.unusable],
        },
    )


def record_unplaced(year: int, unplaced: list[tuple[str, str]]) -> None:
    runstats.record(WORKFLOW, f"unplaced-{year}", {"year": year, "unplaced": [list(u) for u in unplaced]})


def record_samples(tile: str, year: int, points: int, months: int) -> None:
    runstats.record(
        WORKFLOW, f"samples-{tile}-{year}", {"tile": tile, "year": year, "points": points, "months": months}
    )


def render(docs: dict[str, dict[str, Any]]) -> runstats.Rendered:
    runs = [d for k, d in docs.items() if k.startswith("run-")]
    composites = [d for k, d in sorted(docs.items()) if k.startswith("composite-")]
    samples = [d for k, d in sorted(docs.items()) if k.startswith("samples-")]
    unplaced = [u for k, d in sorted(docs.items()) if k.startswith("unplaced-") for u in d["unplaced"]]
    lines: list[str] = []
    project_dir = runs[0]["project_dir"] if runs else ""
    tile_years = max((d.get("tile_years", 0) for d in runs), default=0)
    if composites:
        written = sum(d["months_written"] for d in composites)
        before = sum(d["months_done_before"] for d in composites)
        lines.append(
            f"composites: {len(composites)} tile-year(s) worked on"
            + (f" of {tile_years}" if tile_years else "")
            + f": {written} month(s) written, {before} already done, {sum(d['scenes'] for d in composites)} scenes"
        )
    elif tile_years:
        lines.append(f"composites: nothing to do: all {tile_years} tile-year(s) were already complete")
    if samples:
        lines.append(
            f"samples: {sum(d['points'] for d in samples)} point(s) written in {len(samples)} tile-year(s)"
        )
    elif any(d["kind"] == "samples" for d in runs):
        lines.append("samples: nothing to do: every point's samples were already written")
    if unplaced:
        lines.append(f"points unplaced: {len(unplaced)} (listed in samples/YYYY/unplaced.csv)")
        lines += [f"  UNPLACED {pid}: {reason}" for pid, reason in unplaced[:10]]
    if project_dir:
        lines.append(f"outputs: {project_dir}")
    failed = [(f["what"], f["error"]) for d in composites for f in d["failed"]]
    unusable = [UnusableItem.from_json(u) for d in composites for u in d["unusable"]]
    return runstats.Rendered(title="HLS summary", lines=lines, failed=failed, unusable=unusable)


def install() -> None:
    runstats.install()
    runstats.set_renderer(WORKFLOW, render)
