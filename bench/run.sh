#!/usr/bin/env bash
# The benchmark of issue 6: every stage of shoplake measured beside the tool a user would pick
# instead (DuckDB, installed from PyPI into the checkout's virtual environment), in the same run,
# several runs each; rewrites the generated section of BENCHMARKS.md (bench/run.py says how).
# Usage: bench/run.sh [--scale full|smoke] [--out FILE] [--query-data DIR] [--runs N]
#   --scale full   ~0.9 million records through the pipeline, queries over ~10 million events
#                  (about 12 minutes on 2 cores after the release build); smoke: a few thousand events, to check that
#                  every figure is produced
#   --query-data   keep the 10-million-event lake in DIR and reuse it in later runs
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
bench_python
"$venv/bin/python" bench/run.py --bin "$bin" --work "$work" "$@"
