#!/usr/bin/env bash
# The README's second command: set up everything the tests need, then run them.
# Extra arguments go to pytest (e.g. scripts/test.sh -k e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
