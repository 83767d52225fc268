#!/usr/bin/env bash
# GPU check: correctness vs float32 and throughput (fp32/fp16/bf16, token-budget batches)
# on one CUDA device, in under 5 minutes. Exits 0 with a message when no CUDA device exists.
#   bash benchmarks/gpu_check.sh            # uses $PYTHON, else python
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"
exec timeout 290 "$PY" benchmarks/gpu_check.py "$@"
