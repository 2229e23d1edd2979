"""The closing summary of an ingest run: bundles published, already published, failed
(bundle, member, reason); bytes read and written and the conversion rate; which catalogue
files and pages were rebuilt; where the outputs are. Recorded through the shared run-stats
mechanism (forked luigi workers included) and printed once, at exit."""

from __future__ import annotations

from typing import Any

from pipeline import runstats
from pipeline.failures import Failure

WORKFLOW = "ingest"


def record_run(source: str, dest: str, bundles: int) -> None:
    runstats.record(WORKFLOW, "run", {"source": source, "dest": dest, "bundles": bundles})


def scene_doc_name(stem: str) -> str:
    return f"scene-{stem}"


def record_scene(outcome: Any, bundle_size: int) -> None:
    """One bundle's outcome (a :class:`pipeline.ingest.engine.SceneOutcome`)."""
    runstats.record(
        WORKFLOW,
        scene_doc_name(outcome.stem),
        {
            "bundle": outcome.bundle, "stem": outcome.stem, "status": outcome.status, "reason": outcome.reason,
            "member": outcome.member, "bundle_bytes": bundle_size, "bytes_in": outcome.bytes_in,
            "bytes_out": outcome.bytes_out, "files": len(outcome.files), "seconds": outcome.seconds,
            "item": outcome.scene.item_id if outcome.scene is not None and outcome.status == "published" else "",
        },
    )  # fmt: skip


def attempted(stem: str) -> dict[str, Any] | None:
    """The outcome recorded for the bundle in this run (any process of it), if any."""
    return runstats.read(WORKFLOW).get(scene_doc_name(stem))


def published_in_run() -> frozenset[str]:
    """The bundles (stems) this run published so far, in any of its processes."""
    return frozenset(
        d["stem"]
        for k, d in runstats.read(WORKFLOW).items()
        if k.startswith("scene-") and d["status"] == "published"
    )


def record_built(name: str, items: int) -> None:
    runstats.record(WORKFLOW, f"built-{name}", {"name": name, "items": items})


def built_in_this_run(name: str) -> bool:
    return f"built-{name}" in runstats.read(WORKFLOW)


def failure_of(doc: dict[str, Any]) -> Failure:
    error = f"{doc['member']}: {doc['reason']}" if doc.get("member") else str(doc["reason"])
    return Failure(key=str(doc["stem"]), error=error, what=f"bundle {doc['bundle']}")


def render(docs: dict[str, dict[str, Any]]) -> runstats.Rendered | None:
    run = docs.get("run")
    scenes = [d for k, d in sorted(docs.items()) if k.startswith("scene-")]
    built = [d for k, d in sorted(docs.items()) if k.startswith("built-")]
    if run is None and not scenes:
        return None
    published = [d for d in scenes if d["status"] == "published"]
    failed = [d for d in scenes if d["status"] == "failed"]
    lines: list[str] = []
    if run is not None:
        before = run["bundles"] - len(scenes)
        lines.append(
            f"bundles: {run['bundles']} in the source: {len(published)} published now, {before} already published, "
            f"{len(failed)} failed"
        )
    if published:
        bytes_in = sum(d["bytes_in"] for d in published)
        seconds = sum(d["seconds"] for d in published)
        rate = bytes_in / 1e6 / seconds if seconds > 0 else 0.0
        lines.append(
            f"read {sum(d['bundle_bytes'] for d in published) / 1e6:,.1f} MB of bundles ({bytes_in / 1e6:,.1f} MB of rasters), "
            f"wrote {sum(d['bytes_out'] for d in published) / 1e6:,.1f} MB in {sum(d['files'] for d in published)} files; "
            f"{seconds:,.1f} s publishing ({rate:,.1f} MB/s of rasters)"
        )
    if built:
        names = [d["name"] for d in built]
        lines.append(f"catalogue: rebuilt {len(names)} file(s): {', '.join(_short(names))}")
    elif run is not None:
        lines.append("catalogue: up to date (nothing rebuilt)")
    if run is not None:
        dest = str(run["dest"]).rstrip("/")
        lines.append(f"outputs: {dest} (browse: {dest}/index.html, STAC: {dest}/catalog.json)")
    advice = []
    if failed:
        advice.append(
            "Bad bundles published nothing (reasons below; recorded in _state/ingest/failed/). Replace them and rerun "
            "the same command: only they are read again."
        )
    return runstats.Rendered(
        title="Landsat ingest summary", lines=lines, failed=[failure_of(d) for d in failed], advice=advice
    )


def _short(names: list[str], limit: int = 8) -> list[str]:
    return names if len(names) <= limit else [*names[:limit], f"... and {len(names) - limit} more"]


def install() -> None:
    runstats.install()
    runstats.set_renderer(WORKFLOW, render)
