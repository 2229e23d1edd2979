"""The closing summary of a Causemos run: objects written, already there, deleted as stale, failed;
how fast they were written; where the outputs are. Recorded by the tasks through
:mod:`pipeline.runstats` (so forked luigi workers count too) and printed once, at exit."""

from __future__ import annotations

from typing import Any

from pipeline import runstats

WORKFLOW = "causemos"


def record_run(data_id: str, run_id: str, dest: str, *, kind: str = "run") -> None:
    runstats.record(WORKFLOW, "run", {"data_id": data_id, "run_id": run_id, "dest": dest, "kind": kind})


def record_input(rows: int, features: int, sources: int) -> None:
    runstats.record(WORKFLOW, "input", {"rows": rows, "features": features, "sources": sources})


def record_task(
    name: str,
    *,
    written: int,
    unchanged: int,
    deleted: int,
    bytes_written: int,
    seconds: float,
    failed: list[tuple[str, str]] | None = None,
) -> None:
    """A task that ran: objects written, found unchanged, deleted as stale; its failed pieces."""
    runstats.record(WORKFLOW, f"task~{name}", {
        "name": name, "written": written, "unchanged": unchanged, "deleted": deleted, "bytes": bytes_written,
        "seconds": seconds, "failed": [list(f) for f in failed or []],
    })  # fmt: skip


def record_already_done(name: str, objects: int) -> None:
    """A task found complete: its objects are already there."""
    runstats.record(WORKFLOW, f"done~{name}", {"name": name, "objects": objects})


def record_complete(objects: int) -> None:
    """The whole run was complete when asked: nothing to do."""
    runstats.record(WORKFLOW, "complete", {"objects": objects})


def record_results(written: bool, stale_features: int) -> None:
    runstats.record(WORKFLOW, "results", {"written": written, "stale_features": stale_features})


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def render(docs: dict[str, dict[str, Any]]) -> runstats.Rendered | None:
    run = docs.get("run")
    if run is None:
        return None
    tasks = [d for k, d in sorted(docs.items()) if k.startswith("task~")]
    done = [d for k, d in sorted(docs.items()) if k.startswith("done~")]
    lines = [f"run {run['data_id']}/{run['run_id']} -> {run['dest']}"]
    source = docs.get("input")
    if source:
        lines.append(
            f"input: {source['rows']:,} rows in {source['sources']} file(s), {source['features']} feature(s)"
        )
    if run.get("kind") == "dry run":
        return runstats.Rendered(title="Causemos dry run", lines=[*lines, "nothing was written"])
    complete = docs.get("complete")
    if complete is not None and not tasks:
        lines.append(f"nothing to do: the run is complete ({complete['objects']:,} objects already there)")
        return runstats.Rendered(title="Causemos summary", lines=lines)
    if not tasks and not done:
        return runstats.Rendered(title="Causemos summary", lines=lines)
    written = sum(d["written"] for d in tasks)
    unchanged = sum(d["unchanged"] for d in tasks)
    deleted = sum(d["deleted"] for d in tasks)
    there = unchanged + sum(d["objects"] for d in done)
    failed = [(what, error) for d in tasks for what, error in d["failed"]]
    seconds = sum(d["seconds"] for d in tasks if d["written"] or d["unchanged"])
    rate = f", {written / seconds:,.0f} objects/s" if written and seconds > 0 else ""
    lines.append(
        f"objects written: {written:,} ({_mib(sum(d['bytes'] for d in tasks))} in {seconds:,.1f} s{rate}); "
        f"already there: {there:,}; deleted as stale: {deleted:,}; failed pieces: {len(failed)}"
    )
    lines.append(f"tasks: {len(tasks)} ran, {len(done)} already complete")
    results = docs.get("results")
    if results is not None:
        if results["stale_features"]:
            lines.append(
                f"features no longer in the input: {results['stale_features']} (their outputs deleted)"
            )
        lines.append(
            "results.json written"
            if results["written"]
            else "results.json not written (not all output tasks selected)"
        )
    advice = ["Rerun the same command: finished tasks are kept, failed pieces are redone."] if failed else []
    return runstats.Rendered(title="Causemos summary", lines=lines, failed=failed, advice=advice)


def install() -> None:
    runstats.install()
    runstats.set_renderer(WORKFLOW, render)
