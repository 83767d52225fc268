#!/usr/bin/env bash
# Spark benchmarks, smoke mode: tiny model; Spark local[2] vs in-process, and the embedding table.
# Checks that the benchmark runs and that Spark's vectors equal in-process ones;
# it writes no results file (the full run does: benchmarks/results/spark.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v java >/dev/null 2>&1; then
  echo "java not found: skipping the Spark benchmark smoke run"
  exit 0
fi
python benchmarks/bench_spark.py --smoke
python benchmarks/bench_spark_table.py --smoke
