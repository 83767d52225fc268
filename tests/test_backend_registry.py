"""Runtimes as plugins: the registry of xlmt_sklearn.backends._runtime (issue #24).

tests/conftest.py registers a runtime defined only in the tests (tests/_eager_runtime.py);
the backend contract tests of tests/test_backends.py run on it. These tests check the
registry itself: names, refusals, and that nothing else needs to know the plugin.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from tests._eager_runtime import EagerRuntime
from xlmt_sklearn import XLMTVectorizer
from xlmt_sklearn.backends import _openvino as ov_rt
from xlmt_sklearn.backends import _runtime as rt

TEXTS = ["hello world", "hola, ¿qué tal?", "guten Tag liebe Welt"]


def test_builtins_and_the_plugin_are_registered():
    assert rt.backend_names()[:4] == ("auto", "torch", "openvino", "onnxruntime")
    assert "eager-test" in rt.backend_names() and rt.RUNTIMES["eager-test"] is EagerRuntime
    assert rt.runtime_encoder_class("openvino") is ov_rt.OpenVINOEncoder


def test_a_plugin_is_a_backend_end_to_end(tiny_model_dir):
    vec = XLMTVectorizer(str(tiny_model_dir), backend="eager-test", device="cpu", progress=False)
    got = vec.fit_transform(TEXTS)
    assert vec.backend_ == "eager-test (float32)"
    (encoder,) = vec._encoders()
    assert isinstance(encoder, EagerRuntime) and encoder.fingerprint["backend"] == "eager-test"
    ref = XLMTVectorizer(str(tiny_model_dir), backend="torch", device="cpu", progress=False)
    np.testing.assert_allclose(got, ref.fit_transform(TEXTS), atol=1e-5)
    assert vec._cache_keys(TEXTS, vec._encoders()) != ref._cache_keys(TEXTS, ref._encoders())


def test_registry_refusals():
    with pytest.raises(ValueError, match="registered already"):
        rt.register_runtime(type("Other", (EagerRuntime,), {}))  # same name, another class
    with pytest.raises(ValueError, match="registered already"):
        rt.register_runtime(type("Torch", (EagerRuntime,), {"name": "torch"}))
    rt.register_runtime(EagerRuntime)  # the same class again: a no-op
    with pytest.raises(ValueError, match="'tensorflow' is not a registered runtime; the backends"):
        rt.runtime_encoder_class("tensorflow")
    with pytest.raises(ValueError, match="'eager-test' has no int8"):
        rt.require_int8("eager-test")
    assert not rt.int8_installed("eager-test")


def test_unregistered_name_is_refused_by_the_estimator(tiny_model_dir):
    cls = type("Gone", (EagerRuntime,), {"name": "gone-test"})
    rt.register_runtime(cls)
    XLMTVectorizer(str(tiny_model_dir), backend="gone-test")._validate_params()
    rt.unregister_runtime("gone-test")
    with pytest.raises(InvalidParameterError, match="'backend' parameter"):
        XLMTVectorizer(str(tiny_model_dir), backend="gone-test")._validate_params()
