#!/usr/bin/env bash
# The wheel builds, carries py.typed and the CLI entry point, and imports from outside the checkout.
set -euo pipefail
out=$(mktemp -d)
python -m build --wheel --outdir "$out/dist" . >/dev/null
whl=$(ls "$out"/dist/*.whl)
python - "$whl" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "xlmt_sklearn/py.typed" in names, names
assert any(n.endswith("entry_points.txt") for n in names)
assert not any(n.startswith("tests/") for n in names), "tests leaked into the wheel"
print("wheel ok:", sys.argv[1].rsplit("/", 1)[-1], len(names), "files")
PY
pip install -q --no-deps --target "$out/site" "$whl"
(cd "$out" && PYTHONPATH="$out/site" python -c "import sys, xlmt_sklearn; assert xlmt_sklearn.__file__.startswith('$out/site'); assert 'torch' not in sys.modules; print('imports from the wheel:', xlmt_sklearn.__version__)")
rm -rf "$out"
