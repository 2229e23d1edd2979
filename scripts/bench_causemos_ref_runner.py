"""Run the reference Causemos flow (slow-tortoise's "Data Pipeline", Prefect 1) once, in its own venv.

    .cache/causemos-ref-venv/bin/python scripts/bench_causemos_ref_runner.py PARAMS_JSON

Started by scripts/bench_causemos_lib.py with the working directory at the reference's checkout
(``flows`` importable) and the reference's environment variables set (``WM_DEST_TYPE=s3``,
``WM_S3_DEST_URL``...): the flow reads them at import. PARAMS_JSON is the flow's parameters. Exits 0
only when the flow run succeeded. This file runs under the reference's Python packages, not ours.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    parameters = json.loads(sys.argv[1])
    from flows.data_pipeline import flow  # the reference's flow, from the working directory

    state = flow.run(parameters=parameters)
    failed = [str(task) for task, task_state in state.result.items() if task_state.is_failed()]
    if not state.is_successful() or failed:
        sys.exit(f"reference flow failed: {state.message}; failed tasks: {failed}")


if __name__ == "__main__":
    main()
