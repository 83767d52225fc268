#!/usr/bin/env bash
# Doctests: every Examples section in the package runs (model-dependent ones are +SKIP).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
rc=0
python -m pytest -q -p no:cacheprovider --doctest-modules xlmt_sklearn -o addopts="" || rc=$?
if [ "$rc" -eq 5 ]; then echo "doctests: none collected" >&2; exit 1; fi
exit "$rc"
