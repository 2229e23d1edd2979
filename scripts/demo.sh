#!/usr/bin/env bash
# The README's first command: set up, build the offline demo archive, run TimeSync on it.
# Run it again and it does nothing (every target is already complete) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ ! -f demo/archive/catalog/items.ndjson ]; then
  echo "building the synthetic Landsat C2 ARD demo archive in demo/archive ..."
  .venv/bin/python scripts/make_demo_archive.py demo/archive
fi
set +e
LUIGI_CONFIG_PATH="$PWD/luigi.cfg" .venv/bin/luigi --module pipeline.timesync TimeSyncProject \
  --plot-file demo/archive/plots.csv \
  --project-dir demo/project \
  --catalog demo/archive/catalog/items.ndjson \
  --asset-href href \
  --local-scheduler "$@"
status=$?
set -e
csv=$(find demo/project -name '*_spectral_files_set_*.csv' 2>/dev/null | wc -l)
png=$(find demo/project -path demo/project/report -prune -o -name '*.png' -print 2>/dev/null | wc -l)
ingest=$(find demo/project -maxdepth 1 -name '*_region_spectrals.csv' 2>/dev/null | wc -l)
echo
echo "demo outputs in $PWD/demo/project: $csv observation CSVs, $png PNG chips, $ingest ingest files"
echo "(per-plot time series in demo/project/prj_*/series/; QA report: demo/project/report/index.html)"
exit $status
