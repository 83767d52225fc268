"""OpenVINO static int8 (``calibration_texts``): against torch float32, keys, errors, "auto".

Tolerance: on the tiny fixtures static int8 has cosine >= 0.99998 per row to torch
float32 (pooled and tokens), asserted at ``INT8_COSINE`` like the dynamic int8 of
tests/test_backends.py; real weights: docs/backends.md, "Static int8".
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from sklearn.base import clone

from tests._runtime_cases import INT8_COSINE, LONG, TEXTS
from tests._runtime_cases import cosines as _cosines
from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn._state import reset_state
from xlmt_sklearn.backends import _auto as bk
from xlmt_sklearn.backends import _int8 as ri
from xlmt_sklearn.backends import _openvino as ov_rt
from xlmt_sklearn.backends._convert import CONVERTED_ENV, converted_root
from xlmt_sklearn.backends._int8 import Calibration

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module", autouse=True)
def _own_converted_dir(tmp_path_factory):
    """Static int8 folders of the shared tiny models stay out of the session's folder,
    whose contents other modules' tests list (tests/test_backends.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CONVERTED_ENV, str(tmp_path_factory.mktemp("converted-static")))
        yield


CALIBRATION = [
    "a tweet to calibrate on, about the weather 🙂",
    "bonjour tout le monde",
    "@someone hola, ¿qué tal? http://example.com",
    LONG,
]


def _static(cls, model_dir, **kw):
    common = dict(device="cpu", progress=False, **kw)
    ref = cls(str(model_dir), backend="torch", **common)
    return ref, cls(
        str(model_dir), backend="openvino", quantize="int8", calibration_texts=CALIBRATION,
        **common,
    )  # fmt: skip


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_max"])
def test_static_int8_pooled_close_to_torch_float32(tiny_model_dir, pooling):
    ref, static = _static(
        XLMTVectorizer, tiny_model_dir, pooling=pooling, max_length=32, truncation="window"
    )
    texts = [*TEXTS, LONG]
    got, want = static.fit_transform(texts), ref.fit_transform(texts)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _cosines(got, want).min() >= INT8_COSINE
    dynamic = clone(static).set_params(calibration_texts=None).fit_transform(texts)
    assert np.abs(got - dynamic).max() > 0  # the static model ran, not the dynamic one


@pytest.mark.parametrize("granularity", ["subword", "word"])
def test_static_int8_tokens_close_to_torch_float32(tiny_model_dir, granularity):
    ref, static = _static(
        XLMTTokenVectorizer, tiny_model_dir, granularity=granularity, max_length=24,
        truncation="window",
    )  # fmt: skip
    texts = [*TEXTS, LONG]
    got, want = static.fit_transform(texts), ref.fit_transform(texts)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert min(_cosines(g, w).min() for g, w in zip(got, want, strict=True)) >= INT8_COSINE


def test_static_int8_layers_close_to_torch_float32(tiny_model_dir):
    ref, static = _static(
        XLMTVectorizer, tiny_model_dir, layers=[0, -1], layer_aggregation="concat"
    )
    got, want = static.fit_transform(TEXTS), ref.fit_transform(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 64)
    assert _cosines(got, want).min() >= INT8_COSINE


def test_calibration_is_what_the_model_sees():
    vec = XLMTVectorizer(
        "unused", quantize="int8", prefix="query: ", max_length=40,
        calibration_texts=["@alice hi", "@bob hi", "ciao", "ciao"],
    )  # fmt: skip
    calibration = vec._calibration()  # preprocessed ("@user"), prefixed, distinct
    assert calibration == Calibration(("query: @user hi", "query: ciao"), 40)
    many = Calibration.of((f"text {i}" for i in range(1000)), 128)
    assert many.texts == tuple(f"text {i}" for i in range(ri.CALIBRATION_MAX_TEXTS))
    calls = []
    vec.set_params(calibration_texts=[f"t{i % 400}" for i in range(10_000)],
                   preprocess=lambda t: calls.append(t) or t.upper())  # fmt: skip
    calibration = vec._calibration()
    assert calibration.texts[:2] == ("query: T0", "query: T1")
    assert len(calibration.texts) == ri.CALIBRATION_MAX_TEXTS
    assert 300 <= len(calls) < 300 + 64  # only what is used is preprocessed (in chunks of 64)
    assert Calibration.of(["a"], 128).digest != Calibration.of(["a"], 64).digest


def test_calibration_is_part_of_the_cache_key_and_the_converted_model(
    tiny_model_dir, monkeypatch, tmp_path
):
    reset_state("runtimes")
    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))
    built = []
    quantize = ri.quantize_openvino_static
    monkeypatch.setattr(ri, "quantize_openvino_static", lambda *a: built.append(a) or quantize(*a))
    base = XLMTVectorizer(str(tiny_model_dir), device="cpu", backend="openvino", quantize="int8",
                          progress=False)  # fmt: skip

    def key(**params):
        vec = clone(base).set_params(**params).fit()
        return vec._cache_keys(["hola"], vec._encoders())[0]

    keys = [key(), key(calibration_texts=CALIBRATION), key(calibration_texts=CALIBRATION[:2])]
    assert len(set(keys)) == 3  # dynamic, and each calibration set apart
    same = key(calibration_texts=(*CALIBRATION, CALIBRATION[0]))  # a duplicate, a tuple
    assert same == keys[1]

    vec = clone(base).set_params(calibration_texts=CALIBRATION).fit()
    first = vec.transform(TEXTS)
    reset_state("runtimes")  # another process's view
    np.testing.assert_array_equal(clone(vec).fit().transform(TEXTS), first)
    assert len(built) == 1  # converted once, then reused from disk
    (samples,) = {len(b[2]) for b in built}
    assert samples == len(CALIBRATION)  # one unpadded sample per text
    weights = {
        json.loads(p.read_text())["model"]["weights"]
        for p in converted_root().glob("*/manifest.json")
    }
    assert weights == {"float32", vec._encoders()[0].scheme}


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(quantize=None), ValueError, "calibrates quantize='int8'; got quantize=None"),
        (dict(backend="torch"), ValueError, "resolves to 'torch' here: use backend='openvino'"),
        (dict(backend="onnxruntime"), ValueError, "resolves to 'onnxruntime'"),
        (dict(calibration_texts="one text"), ValueError, "'calibration_texts' parameter"),
        (dict(calibration_texts=["a", 3]), ValueError, r"positions \[1\] are not strings"),
        (dict(calibration_texts=[]), ValueError, "non-empty list of texts.*; got none"),
    ],
)
def test_calibration_errors_name_the_parameter_and_the_fix(tiny_model_dir, params, error, match):
    kw = dict(backend="auto", quantize="int8", calibration_texts=CALIBRATION, device="cpu")
    with pytest.raises(error, match=match):
        XLMTVectorizer(str(tiny_model_dir), **{**kw, **params}).fit()


def test_calibration_needs_openvino_and_nncf(tiny_model_dir, monkeypatch):
    vec = XLMTVectorizer(str(tiny_model_dir), quantize="int8", calibration_texts=CALIBRATION,
                         device="cpu")  # fmt: skip
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(ImportError, match=r'nncf .* pip install "xlmt-sklearn\[openvino\]"'):
        vec.fit()
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r'pip install "xlmt-sklearn\[openvino\]"'):
        vec.fit()


def test_auto_with_calibration_is_openvino_on_any_cpu(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(bk, "native_bf16", lambda: False)  # e.g. AVX2 only
    monkeypatch.setenv(bk.AUTO_BACKEND_ENV, "torch")  # calibration texts ask for OpenVINO
    vec = XLMTVectorizer(str(tiny_model_dir), quantize="int8", calibration_texts=CALIBRATION,
                         device="cpu").fit()  # fmt: skip
    (encoder,) = vec._encoders()
    assert isinstance(encoder, ov_rt.OpenVINOEncoder) and encoder.calibration is not None
    assert encoder.fingerprint["quantize"].startswith("int8:nncf-quantize:")
    with pytest.raises(ValueError, match="resolves to 'torch'"):
        clone(vec).set_params(device="cuda").fit()


def test_changing_calibration_after_fit_requires_fit(tiny_model_dir):
    vec = XLMTVectorizer(str(tiny_model_dir), quantize="int8", calibration_texts=CALIBRATION,
                         device="cpu").fit()  # fmt: skip
    vec.set_params(calibration_texts=CALIBRATION[:1])
    with pytest.raises(ValueError, match=r"'calibration_texts' parameter.* changed after fit"):
        vec.transform(TEXTS)


def test_cli_calibration_file(tiny_model_dir, tmp_path):
    from xlmt_sklearn.cli import main

    src, calib = tmp_path / "in.txt", tmp_path / "calibration.txt"
    src.write_text("\n".join(TEXTS[:3]), encoding="utf-8")
    calib.write_text("\n".join(CALIBRATION[:3]) + "\n\n", encoding="utf-8")
    argv = ["embed", str(src), "--model", str(tiny_model_dir), "--device", "cpu",
            "--no-progress", "--quantize", "int8"]  # fmt: skip
    assert main([*argv, "-o", str(tmp_path / "s.npy"), "--calibration-file", str(calib)]) == 0
    want = XLMTVectorizer(
        str(tiny_model_dir), device="cpu", quantize="int8", backend="openvino",
        calibration_texts=CALIBRATION[:3], progress=False,
    ).fit_transform(TEXTS[:3])  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, atol=1e-6)
    missing = ["-o", str(tmp_path / "t.npy"), "--calibration-file", str(tmp_path / "no")]
    assert main([*argv, *missing]) == 2  # fails before the model loads


def test_spark_and_dask_workers_get_the_calibration(tiny_model_dir):
    """Workers rebuild the estimator from its parameters (``_distributed``): same vectors."""
    from xlmt_sklearn._distributed import fitted_payload, rebuild

    vec = XLMTVectorizer(str(tiny_model_dir), quantize="int8", calibration_texts=CALIBRATION,
                         device="cpu", progress=False).fit()  # fmt: skip
    worker = rebuild(*fitted_payload(vec))
    assert worker._encoders()[0].scheme == vec._encoders()[0].scheme
    np.testing.assert_array_equal(worker.transform(TEXTS), vec.transform(TEXTS))
