#!/usr/bin/env bash
# The README's second command: set up everything the tests need, check lint, format and
# types, then run the tests. Extra arguments go to pytest (e.g. scripts/test.sh -k e2e).
# A lint, format or type error fails the command before any test runs, as a failing test does.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
echo "== ruff check, ruff format --check, mypy (strict on pipeline/ and targets/) =="
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
