#!/usr/bin/env bash
# Smoke run of the UMSAB quality benchmark (benchmarks/umsab_quality.py --smoke):
# a tiny random 4-layer model built in a temp dir, ~30 texts per split and
# language, the whole selection / baseline / report path, well under a minute
# on an idle machine; then benchmarks/adapted_quality.py --smoke in its three
# training modes (english, all, each: about 4 minutes together). Nothing is
# written into the repository.
# Needs the UMSAB data in ../shared (beside the checkout); skips cleanly without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -d ../shared/data/umsab ]; then
  echo "50-quality-smoke: ../shared/data/umsab is absent; skipping the UMSAB quality smoke run."
  exit 0
fi
XLMT_SHARED="$(cd ../shared && pwd)" python benchmarks/umsab_quality.py --smoke
XLMT_SHARED="$(cd ../shared && pwd)" python benchmarks/adapted_quality.py --smoke
# The multilingual mode with a two-member union, a feature suffix, a layer-wise decay and the
# per-language choice among them; one fine-tune per language.
XLMT_SHARED="$(cd ../shared && pwd)" python benchmarks/adapted_quality.py --smoke --train all \
  --variants seeds+normalize=true,plain+decay=0.5 --choose
XLMT_SHARED="$(cd ../shared && pwd)" python benchmarks/adapted_quality.py --smoke --train each \
  --variants plain
