#!/usr/bin/env bash
# Benchmark smoke runs: every benchmark script end to end on a tiny model (no docs written).
# Checks the plumbing (and output equality with sentence-transformers), not speed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python benchmarks/bench_throughput.py --smoke
python benchmarks/bench_cache.py --smoke
python benchmarks/bench_tuning.py --smoke
PYTHON=python bash benchmarks/gpu_check.sh   # prints a message and exits 0 without CUDA
python benchmarks/gpu_check.py --simulate-on-cpu --n 48 --n-check 24
python benchmarks/bench_memory.py --smoke
python benchmarks/int8_quality.py --smoke
python benchmarks/bench_openvino_int8.py --smoke
python benchmarks/bench_search.py --smoke
python benchmarks/bench_main_job.py --smoke
python benchmarks/bench_selfcheck.py --smoke
python benchmarks/bench_njobs.py --smoke
python benchmarks/bench_amx.py --smoke
python benchmarks/int8_quality.py --smoke --backend openvino --calibrate vocabulary
python benchmarks/finetune_steps.py --smoke
