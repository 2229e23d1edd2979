#!/usr/bin/env bash
# Create .venv and install the project (with the test extras if asked: setup.sh test).
# Idempotent: reinstalls only when setup.cfg changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
stamp=".venv/.installed-$(sha1sum setup.cfg pyproject.toml | sha1sum | cut -c1-12)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  echo "installing the project into .venv ($spec)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
  touch "$stamp"
fi
# Azurite (the Azure Blob Storage emulator, from npm) for the Planetary-Computer-style tests:
# tests/servers/azurite.py runs .cache/azurite/node_modules/.bin/azurite-blob.
azurite_version="3.35.0"
if [ "$extras" = "test" ] && [ ! -x .cache/azurite/node_modules/.bin/azurite-blob ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm (apt) for Azurite"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "installing Azurite ${azurite_version} into .cache/azurite"
  mkdir -p .cache/azurite
  npm install --prefix .cache/azurite --no-audit --no-fund --loglevel=error "azurite@${azurite_version}" >/dev/null
fi
