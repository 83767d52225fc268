#!/usr/bin/env bash
# Spark benchmark, smoke mode: tiny model, ~200 tweets, Spark local[2] vs in-process.
# Checks that the benchmark runs and that Spark's vectors equal in-process ones;
# it writes no results file (the full run does: benchmarks/results/spark.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v java >/dev/null 2>&1; then
  echo "java not found: skipping the Spark benchmark smoke run"
  exit 0
fi
python benchmarks/bench_spark.py --smoke
