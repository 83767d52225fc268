"""``xlmt_sklearn.internals``: the one door benchmarks and tools use into the package.

Benchmarks and notebooks import the public API, and what they need from underneath
only through :mod:`xlmt_sklearn.internals` (docs/architecture.md). The scan reads every
import, lazy ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from xlmt_sklearn import XLMTVectorizer, internals

REPO = Path(__file__).resolve().parents[1]


def _private(module: str) -> bool:
    return module.startswith("xlmt_sklearn") and any(
        part.startswith("_") for part in module.split(".")[1:]
    )


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_every_listed_name_resolves():
    missing = [name for name in internals.__all__ if not hasattr(internals, name)]
    assert not missing
    assert "encoders" in internals.__all__ and "calibration" in internals.__all__


@pytest.mark.parametrize("folder", ["benchmarks", "notebooks"])
def test_benchmarks_and_notebooks_import_no_private_module(folder):
    scripts = sorted((REPO / folder).glob("*.py"))
    if not scripts:
        pytest.skip(f"no {folder}/ in this checkout")
    found = sorted(
        (path.name, module) for path in scripts for module in _imports(path) if _private(module)
    )
    assert not found, f"import these through xlmt_sklearn.internals instead: {found}"


def test_encoders_of_a_fitted_estimator_load_nothing(tiny_model_dir):
    from xlmt_sklearn.internals import load_count

    vec = XLMTVectorizer(str(tiny_model_dir), backend="torch", device="cpu").fit()
    before = load_count()
    (encoder,) = internals.encoders(vec)
    assert encoder.name == "torch"
    assert load_count() == before
    assert internals.calibration(vec) is None


def test_the_benchmarks_switches_change_timing_not_vectors(tiny_model_dir, monkeypatch):
    """``forward_seconds``, ``FLOW_TUNING.sort_batches`` and ``XLMT_SKLEARN_PACKED=0``:
    what bench_tuning.py compares, with the same vectors."""
    from xlmt_sklearn.internals import FLOW_TUNING, forward_seconds

    texts = [f"text number {i} " + "word " * (i % 7) for i in range(20)]
    vec = XLMTVectorizer(str(tiny_model_dir), backend="torch", device="cpu", batch_size=4).fit()
    with forward_seconds() as spent:
        want = vec.transform(texts)
    assert len(spent) >= 5 and all(s > 0 for s in spent)  # one per batch
    monkeypatch.setattr(FLOW_TUNING, "sort_batches", False)
    monkeypatch.setenv("XLMT_SKLEARN_PACKED", "0")
    with forward_seconds() as spent:
        got = vec.transform(texts)
    assert len(spent) == 5  # 20 texts in input order, 4 a batch
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
