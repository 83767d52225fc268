"""xlmt_sklearn._distributed: the helpers that Spark and Dask share (no Spark, no Dask here)."""

from __future__ import annotations

import numpy as np
import pytest

from tests._subprocesses import run_python
from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn._distributed import (
    check_no_nulls,
    check_num_threads,
    fitted_payload,
    is_token_vectorizer,
    rebuild,
    set_torch_threads,
)


def test_neither_integration_imports_the_other():
    """Dask used to import its helpers from the Spark module."""
    code = (
        "import sys; sys.modules['pyspark'] = None; sys.modules['dask'] = None\n"
        "import xlmt_sklearn.dask\n"
        "assert 'xlmt_sklearn.spark' not in sys.modules\n"
        "import xlmt_sklearn.spark\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_payload_round_trip_equals_the_fitted_estimator(tiny_model_dir):
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=True, pooling="cls")
    cls, params, state = fitted_payload(vec)
    assert cls is XLMTVectorizer and not hasattr(vec, "model_identity_")  # fitted on a clone
    assert params["progress"] is False and params["pooling"] == "cls"
    assert state and all(k.endswith("_") for k in state)
    assert {k for k in state if k.startswith("_")} == {"_fitted_params_"}
    est = rebuild(cls, params, state)
    texts = ["hello world", "@maria hola"]
    expected = vec.set_params(progress=False).fit_transform(texts)
    np.testing.assert_allclose(est.transform(texts), expected, atol=1e-6)


def test_payload_of_a_vectorizer_changed_after_fit_is_refused(tiny_model_dir):
    """Workers would run the new parameters with the old fitted state: refuse on the driver."""
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit()
    cls, params, state = fitted_payload(vec)
    vec.set_params(layers=0)
    with pytest.raises(ValueError, match=r"'layers' parameter\(s\) .* changed after fit"):
        fitted_payload(vec)
    # A worker rebuilt from a payload checks too.
    est = rebuild(cls, {**params, "layers": 0}, state)
    with pytest.raises(ValueError, match="changed after fit"):
        est.transform(["hello"])


def test_payload_refuses_what_is_not_a_transformer():
    with pytest.raises(TypeError, match="Expected a scikit-learn transformer"):
        fitted_payload(object())


def test_is_token_vectorizer():
    assert is_token_vectorizer(XLMTTokenVectorizer)
    assert not is_token_vectorizer(XLMTVectorizer)
    assert not is_token_vectorizer(XLMTTokenVectorizer())  # an instance is not a class


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_num_threads_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match="num_threads must be a positive int or None"):
        check_num_threads(value)


def test_num_threads_accepts_ints_and_none():
    assert check_num_threads(None) is None
    assert check_num_threads(np.int64(3)) == 3 and type(check_num_threads(np.int64(3))) is int


def test_set_torch_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert set_torch_threads(2) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_torch_threads(None) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "lots")
        assert set_torch_threads(None) == 1
    finally:
        torch.set_num_threads(before)


def test_null_rows_are_refused_only_under_missing_error():
    values = ["a", None, float("nan"), "b"]
    with pytest.raises(ValueError, match=r"Column 'text' has null values \(2 of 4 rows in p 3\)"):
        check_no_nulls(XLMTVectorizer(), values, "text", where="in p 3", drop_hint="drop them")
    with pytest.raises(ValueError, match=r"The input column has null values .*\(drop them\)"):
        check_no_nulls(XLMTVectorizer(), values, None, where="here", drop_hint="drop them")
    for missing in ("empty", "zeros"):
        check_no_nulls(XLMTVectorizer(missing=missing), values, "t", where="", drop_hint="")
    check_no_nulls(XLMTVectorizer(), ["a", ""], "t", where="", drop_hint="")  # "" is a text
