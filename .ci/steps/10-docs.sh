#!/usr/bin/env bash
# Docs: the mkdocs-material site with the API reference from the docstrings; warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/../.."
export NO_MKDOCS_2_WARNING=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdocs build --strict -d "$out"
