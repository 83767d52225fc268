"""OpenVINO and ONNX Runtime backends against torch, conversion storage, the "auto" rule.

Tolerances (measured on the tiny fixtures): float32 runtimes differ from torch by
< 1e-6 (max abs), asserted at 1e-4; OpenVINO bf16 by ~1e-4, asserted as cosine
>= 0.999 per row; int8 on either runtime has cosine >= 0.9998 per row (pooled
vectors and tokens) to torch float32, asserted at :data:`INT8_COSINE`. Converted
models go to one session folder (``XLMT_SKLEARN_CONVERTED_DIR``), so each (model,
layers, runtime, weights) converts once.
"""

from __future__ import annotations

import json
import multiprocessing
import sys

import numpy as np
import pytest
from sklearn.base import clone

from tests import _convert_worker
from tests._runtime_cases import INT8_COSINE, LONG, TEXTS
from tests._runtime_cases import cosines as _cosines
from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn._state import reset_state
from xlmt_sklearn.backends import _auto as bk
from xlmt_sklearn.backends import _openvino as ov_rt
from xlmt_sklearn.backends import _runtime as rt
from xlmt_sklearn.backends._convert import (
    CONVERTED_ENV,
    converted_root,
    ensure_converted,
    is_complete,
)
from xlmt_sklearn.backends._int8 import OPENVINO_INT8_SCHEME

#: The built-in runtimes and the plugin defined in the tests (tests/_eager_runtime.py).
RUNTIMES = ["openvino", "onnxruntime", "eager-test"]
ATOL = 1e-4


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    if not rt.runtime_installed(request.param):
        pytest.skip(f"{request.param} is not installed")
    return request.param


@pytest.fixture
def int8_runtime(runtime) -> str:
    """A runtime that has int8."""
    if rt.runtime_encoder_class(runtime).int8_tool is None:
        pytest.skip(f"{runtime} has no int8")
    if not rt.int8_installed(runtime):
        pytest.skip(f"{rt.runtime_encoder_class(runtime).int8_tool} is not installed")
    return runtime


def _pair(cls, model_dir, backend, **kw):
    common = dict(device="cpu", progress=False, **kw)
    return cls(str(model_dir), backend="torch", **common), cls(
        str(model_dir), backend=backend, dtype="float32", **common
    )


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_max"])
def test_pooled_matches_torch(tiny_model_dir, runtime, pooling):
    ref, other = _pair(XLMTVectorizer, tiny_model_dir, runtime, pooling=pooling, normalize=True)
    got = other.fit_transform(TEXTS)
    np.testing.assert_allclose(got, ref.fit_transform(TEXTS), atol=ATOL)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), other.n_features_out_)


@pytest.mark.slow  # two more conversions per runtime
@pytest.mark.parametrize(("layers", "how"), [([0, -1], "mean"), ([1, 2], "concat")])
def test_layers_match_torch(tiny_model_dir, runtime, layers, how):
    ref, other = _pair(
        XLMTVectorizer, tiny_model_dir, runtime, layers=layers, layer_aggregation=how,
        pooling="mean_max",
    )  # fmt: skip
    np.testing.assert_allclose(other.fit_transform(TEXTS), ref.fit_transform(TEXTS), atol=ATOL)


def test_windows_and_missing_match_torch(tiny_model_dir, runtime):
    ref, other = _pair(
        XLMTVectorizer, tiny_model_dir, runtime, max_length=16, truncation="window",
        missing="zeros",
    )  # fmt: skip
    texts = [*TEXTS, LONG, None]
    got = other.fit_transform(texts)
    np.testing.assert_allclose(got, ref.fit_transform(texts), atol=ATOL)
    assert not got[-1].any() and got[-2].any()


@pytest.mark.parametrize(
    "model", ["tiny_model_dir", pytest.param("real_tok_model_dir", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("granularity", ["subword", "word"])
def test_tokens_match_torch(request, model, runtime, granularity):
    ref, other = _pair(
        XLMTTokenVectorizer, request.getfixturevalue(model), runtime, granularity=granularity,
        max_length=24, truncation="window",
    )  # fmt: skip
    texts = [*TEXTS, LONG]
    got, want = other.fit_transform(texts), ref.fit_transform(texts)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=ATOL)


# ------------------------------------------------------------------------- int8
def _int8_pair(cls, model_dir, backend, **kw):
    common = dict(device="cpu", progress=False, **kw)
    return cls(str(model_dir), backend="torch", **common), cls(
        str(model_dir), backend=backend, quantize="int8", **common
    )


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_max"])
def test_int8_pooled_close_to_torch_float32(tiny_model_dir, int8_runtime, pooling):
    ref, int8 = _int8_pair(
        XLMTVectorizer, tiny_model_dir, int8_runtime, pooling=pooling, max_length=32,
        truncation="window",
    )  # fmt: skip
    texts = [*TEXTS, LONG]
    got, want = int8.fit_transform(texts), ref.fit_transform(texts)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _cosines(got, want).min() >= INT8_COSINE
    assert np.abs(got - want).max() > 0  # the int8 model ran, not the float32 one


@pytest.mark.parametrize("granularity", ["subword", "word"])
def test_int8_tokens_close_to_torch_float32(tiny_model_dir, int8_runtime, granularity):
    ref, int8 = _int8_pair(
        XLMTTokenVectorizer, tiny_model_dir, int8_runtime, granularity=granularity, max_length=24,
        truncation="window",
    )  # fmt: skip
    texts = [*TEXTS, LONG]
    got, want = int8.fit_transform(texts), ref.fit_transform(texts)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert min(_cosines(g, w).min() for g, w in zip(got, want, strict=True)) >= INT8_COSINE


def test_int8_is_converted_once_next_to_float32(tiny_model_dir, int8_runtime):
    from xlmt_sklearn.backends._runtime import runtime_encoder_class

    def int8_scheme(name):
        return runtime_encoder_class(name).int8_scheme(None)

    vec = XLMTVectorizer(str(tiny_model_dir), backend=int8_runtime, quantize="int8", device="cpu",
                         progress=False).fit()  # fmt: skip
    vec.transform(TEXTS)
    (encoder,) = vec._encoders()
    assert encoder.fingerprint["quantize"] == int8_scheme(int8_runtime)
    folders = {
        json.loads(p.read_text())["model"]["weights"]: p.parent
        for p in converted_root().glob("*/manifest.json")
        if json.loads(p.read_text())["model"].items()
        >= {"runtime": int8_runtime, "model": str(tiny_model_dir), "layers": [-1]}.items()
    }
    assert set(folders) == {"float32", int8_scheme(int8_runtime)}
    assert all(is_complete(f) for f in folders.values())
    int8_bytes, float_bytes = (
        sum(p.stat().st_size for p in folders[w].iterdir())
        for w in (int8_scheme(int8_runtime), "float32")
    )
    assert int8_bytes < float_bytes  # int8 weights stored


def test_openvino_int8_needs_nncf(tiny_model_dir, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    vec = XLMTVectorizer(str(tiny_model_dir), backend="openvino", quantize="int8", device="cpu")
    with pytest.raises(ImportError, match=r'nncf .* pip install "xlmt-sklearn\[openvino\]"'):
        vec.fit()


def test_openvino_bf16_close_to_float32(tiny_model_dir):
    pytest.importorskip("openvino")
    if not ov_rt.openvino_has_bf16():
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 / AMX)")
    vec = XLMTVectorizer(str(tiny_model_dir), backend="openvino", device="cpu", progress=False)
    ref = clone(vec).set_params(backend="torch").fit_transform(TEXTS)
    assert vec.fit()._encoders()[0].dtype == "bfloat16"  # "auto" on this CPU
    assert _cosines(vec.transform(TEXTS), ref).min() >= 0.999


def test_batch_plan_and_order_within_tolerance(tiny_model_dir, runtime):
    """Float32 runtimes: batch size and order change nothing beyond 1e-5. OpenVINO bf16
    and int8 (activations quantized per batch or per group): vectors vary with batch
    composition (padding, blocking), within cosine 0.999."""
    texts = [*TEXTS, LONG, "ok", "a bit longer text with a few words"]
    order = np.random.default_rng(0).permutation(len(texts))
    dtypes = ["float32"] + (["auto"] if runtime == "openvino" and ov_rt.openvino_has_bf16() else [])
    int8 = [("auto", "int8")] if rt.runtime_encoder_class(runtime).int8_tool else []
    for dtype, quantize in [*((d, None) for d in dtypes), *int8]:
        vec = XLMTVectorizer(str(tiny_model_dir), backend=runtime, dtype=dtype, device="cpu",
                             quantize=quantize, progress=False)  # fmt: skip
        ref = clone(vec).set_params(batch_size=32).fit_transform(texts)
        one = clone(vec).set_params(batch_size=1).fit_transform(texts)
        shuffled = clone(vec).set_params(batch_size=3).fit_transform([texts[i] for i in order])
        for got in (one, shuffled[np.argsort(order)]):
            if dtype == "float32" and quantize is None:
                np.testing.assert_allclose(got, ref, atol=1e-5)
            else:
                assert _cosines(got, ref).min() >= 0.999


def _keys(est) -> list[bytes]:
    est.fit()
    return est._cache_keys(["hello"], est._encoders())


def test_cache_keys_differ_by_backend_and_precision(tiny_model_dir):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    base = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False)
    variants = [
        dict(backend="torch"),
        dict(backend="openvino", dtype="float32"),
        dict(backend="onnxruntime"),
        dict(backend="torch", dtype="bfloat16"),
        dict(backend="torch", quantize="int8"),
        dict(backend="openvino", dtype="float32", quantize="int8"),
        dict(backend="onnxruntime", quantize="int8"),
    ]
    if ov_rt.openvino_has_bf16():
        variants.append(dict(backend="openvino", dtype="bfloat16"))
    keys = [_keys(clone(base).set_params(**v))[0] for v in variants]
    assert len(set(keys)) == len(keys)
    # The torch encoder's fingerprint is what it was before backends existed: old caches hit.
    assert clone(base).set_params(backend="torch").fit()._encoders()[0].fingerprint == {
        "dtype": "float32", "quantize": None,
    }  # fmt: skip


def test_runtime_vectors_are_cached_apart(tiny_model_dir, runtime, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    ref, other = _pair(XLMTVectorizer, tiny_model_dir, runtime, cache=cache)
    ref.fit_transform(TEXTS)
    other.fit()
    keys = other._cache_keys(["hola"], other._encoders())
    from xlmt_sklearn.store._adapt import as_cache

    assert as_cache(cache).get_many(keys)[0] is None  # torch's entry is not served
    np.testing.assert_allclose(other.transform(TEXTS), ref.transform(TEXTS), atol=ATOL)


# ------------------------------------------------------------- converted storage
def _fake_build(payload: bytes):
    def build(folder):
        (folder / "model.bin").write_bytes(payload)

    return build


def test_half_written_or_corrupt_copy_is_rebuilt(tmp_path):
    final = ensure_converted("a" * 32, {}, _fake_build(b"good" * 100), root=tmp_path)
    assert is_complete(final) and (final / "model.bin").read_bytes() == b"good" * 100
    (final / "model.bin").write_bytes(b"bad!" * 100)  # same size, other content
    assert not is_complete(final)
    again = ensure_converted("a" * 32, {}, _fake_build(b"good" * 100), root=tmp_path)
    assert again == final and (final / "model.bin").read_bytes() == b"good" * 100
    (final / "manifest.json").unlink()  # a folder without its manifest: half-written
    assert not is_complete(final)
    ensure_converted("a" * 32, {}, _fake_build(b"new!" * 100), root=tmp_path)
    assert (final / "model.bin").read_bytes() == b"new!" * 100 and is_complete(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]  # no temp left


def test_corrupt_runtime_model_is_rebuilt_end_to_end(tiny_model_dir, runtime):
    ref, other = _pair(XLMTVectorizer, tiny_model_dir, runtime, pooling="cls")
    want = ref.fit_transform(TEXTS)
    other.fit_transform(TEXTS)
    used = {"runtime": runtime, "model": str(tiny_model_dir), "layers": [-1], "weights": "float32"}
    manifests = [
        p for p in converted_root().glob("*/manifest.json")
        if used.items() <= json.loads(p.read_text())["model"].items()
    ]  # fmt: skip
    assert len(manifests) == 1
    for m in manifests:
        for name in json.loads(m.read_text())["files"]:
            path = m.parent / name
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    reset_state("runtimes")  # a new process: nothing compiled yet
    np.testing.assert_allclose(other.transform(TEXTS), want, atol=ATOL)
    assert all(is_complete(m.parent) for m in manifests)


def test_two_processes_converting_at_once_keep_one_good_copy(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_convert_worker.convert, args=(str(tmp_path), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    finals = {results.get(timeout=5), results.get(timeout=5)}
    assert len(finals) == 1
    (final,) = finals
    assert is_complete(tmp_path / (final.rsplit("/", 1)[-1]))
    assert (tmp_path / ("k" * 32) / "model.bin").read_bytes() == _convert_worker.PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["k" * 32]  # the loser's copy is gone


def test_converted_dir_env_is_validated(monkeypatch, tmp_path):
    monkeypatch.setenv(CONVERTED_ENV, "relative/folder")
    with pytest.raises(ValueError, match=f"{CONVERTED_ENV} must be an absolute path"):
        converted_root()
    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "x"))
    assert converted_root() == tmp_path / "x"
    monkeypatch.delenv(CONVERTED_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert converted_root() == tmp_path / "xlmt_sklearn" / "converted"


# ------------------------------------------------------------------ choosing one
def test_runtime_refuses_a_tokenizer_that_is_not_the_models(tiny_model_dir, runtime, tmp_path):
    """Without tokenizer.json transformers builds a 5-token tokenizer (every word <unk>):
    the runtimes refuse it as torch does, though they never load the torch model."""
    import shutil

    from xlmt_sklearn import ModelLoadError

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    vec = XLMTVectorizer(str(folder), backend=runtime, dtype="float32", device="cpu").fit()
    with pytest.raises(ModelLoadError, match="tokens but the model expects"):
        vec.transform(TEXTS)


def test_missing_runtime_names_the_extra(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    vec = XLMTVectorizer(str(tiny_model_dir), backend="openvino", device="cpu")
    with pytest.raises(ImportError, match=r'pip install "xlmt-sklearn\[openvino\]"'):
        vec.fit()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(backend="onnxruntime", dtype="bfloat16"), "computes in float32"),
        (dict(backend="openvino", dtype="float16"), "got dtype='float16'"),
        (dict(backend="onnxruntime", compile=True), "runs on backend='torch' only"),
        (dict(backend="openvino", compile=True, quantize="int8"), "set compile=False"),
        (dict(backend="openvino", quantize="int8", dtype="bfloat16"), "computes in float32"),
        (dict(backend="openvino", device="cuda:0"), "runs on the CPU"),
    ],
)
def test_runtime_refuses_what_it_cannot_do(tiny_model_dir, params, match):
    pytest.importorskip(params["backend"])
    with pytest.raises(ValueError, match=match):
        XLMTVectorizer(str(tiny_model_dir), **params).fit()


def test_auto_rule(monkeypatch):
    """The rule of an AVX-512 BF16 CPU (every class: tests/test_auto_rule.py)."""
    monkeypatch.delenv(bk.AUTO_BACKEND_ENV)
    monkeypatch.setenv("XLMT_SKLEARN_CPU_CLASS", "avx512_bf16")
    monkeypatch.setattr(bk, "native_bf16", lambda: True)
    monkeypatch.setattr(rt, "runtime_installed", lambda b: True)
    monkeypatch.setattr(rt, "int8_installed", lambda b: True)  # the rule, not the install

    def resolve(device="cpu", quantize=None, compile=False, dtype="auto"):
        return bk.resolve_backend("auto", device, quantize=quantize, compile=compile, dtype=dtype)

    assert resolve() == "openvino"
    assert resolve(dtype="bfloat16") == "openvino"
    assert resolve(dtype="float32") == "torch"  # torch float32 is the reference
    monkeypatch.setattr(bk, "int8_installed", lambda b: True)
    assert resolve(quantize="int8") == "openvino"  # OpenVINO int8: faster, closer to fp32
    monkeypatch.setattr(bk, "int8_installed", lambda b: False)  # no NNCF
    assert resolve(quantize="int8") == "torch"
    monkeypatch.setattr(bk, "int8_installed", lambda b: True)
    assert resolve(compile=True) == "torch"
    monkeypatch.setattr(bk, "_wants_cpu", lambda device: False)  # a GPU
    assert resolve(device="auto") == "torch"
    monkeypatch.setattr(bk, "_wants_cpu", lambda device: True)
    monkeypatch.setattr(bk, "native_bf16", lambda: False)  # AVX2-only, or no OpenVINO
    assert resolve() == "torch"
    assert resolve(quantize="int8") == "torch"
    monkeypatch.setenv(bk.AUTO_BACKEND_ENV, "onnxruntime")
    assert resolve() == "onnxruntime"
    assert resolve(quantize="int8") == "onnxruntime"
    monkeypatch.setenv(bk.AUTO_BACKEND_ENV, "torch")
    assert resolve(quantize="int8") == "torch"
    monkeypatch.setenv(bk.AUTO_BACKEND_ENV, "tensorflow")
    with pytest.raises(ValueError, match=f"{bk.AUTO_BACKEND_ENV} must be one of"):
        resolve()


def test_native_bf16_needs_openvino(monkeypatch):
    bk.native_bf16.cache_clear()
    monkeypatch.setitem(sys.modules, "openvino", None)
    try:
        assert bk.native_bf16() is False
    finally:
        bk.native_bf16.cache_clear()


def test_auto_uses_openvino_where_the_rule_says(tiny_model_dir, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv(bk.AUTO_BACKEND_ENV, "openvino")
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False).fit()
    (encoder,) = vec._encoders()
    assert isinstance(encoder, ov_rt.OpenVINOEncoder)
    ref = clone(vec).set_params(backend="torch").fit_transform(TEXTS)
    assert _cosines(vec.transform(TEXTS), ref).min() >= 0.999


def test_reset_process_state_drops_compiled_runtimes(tiny_model_dir, runtime):
    from xlmt_sklearn import reset_process_state

    vec = XLMTVectorizer(str(tiny_model_dir), backend=runtime, dtype="float32", device="cpu")
    want = vec.fit_transform(TEXTS)
    assert rt.compiled_count() >= 1
    bk.native_bf16()
    reset_process_state(models=False)  # keeps them: the slow part to rebuild
    assert rt.compiled_count() >= 1
    reset_process_state()
    assert rt.compiled_count() == 0 and bk.native_bf16.cache_info().currsize == 0
    np.testing.assert_array_equal(vec.transform(TEXTS), want)  # compiled again, same vectors


def test_cli_backend_option(tiny_model_dir, runtime, tmp_path, monkeypatch):
    from xlmt_sklearn._options import BACKENDS
    from xlmt_sklearn.cli import main

    if runtime not in BACKENDS:
        pytest.skip("the command line takes the built-in backends (plugins: the Python API)")

    # A fresh process's view: nothing compiled, an empty folder of converted models.
    reset_state("runtimes")
    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))

    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS[:3]), encoding="utf-8")
    outs = {}
    for backend in ("torch", runtime):
        out = tmp_path / f"{backend}.npy"
        argv = ["embed", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--device",
                "cpu", "--no-progress", "--backend", backend, "--dtype", "float32"]  # fmt: skip
        assert main(argv) == 0
        outs[backend] = np.load(out)
    assert outs["torch"].shape == (3, 32)
    np.testing.assert_allclose(outs[runtime], outs["torch"], atol=ATOL)
    (manifest,) = (tmp_path / "converted").glob("*/manifest.json")  # the runtime ran
    assert json.loads(manifest.read_text())["model"]["runtime"] == runtime


def test_a_first_conversion_blocks_only_the_threads_that_want_that_model(monkeypatch):
    """Converting and compiling one model (minutes on a real one) holds a lock of its own:
    another model's session is served meanwhile, and the model is built once."""
    import threading

    release, started, builds = threading.Event(), threading.Event(), []

    class Slow(rt.RuntimeEncoder):
        name = "openvino"

        def converted(self, layers, weights=None):
            return layers

        def _compile(self, folder, threads):
            builds.append(folder)
            if folder == (0,):
                started.set()
                assert release.wait(30)
            return ("compiled", folder)

        _export = _quantize = _run = None

    reset_state("runtimes")
    encoder, got = Slow("spec", "float32"), []
    first = threading.Thread(target=lambda: got.append(encoder.session((0,))))
    first.start()
    assert started.wait(30)
    other = threading.Thread(target=lambda: got.append(encoder.session((1,))))
    other.start()
    other.join(timeout=10)
    blocked = other.is_alive()
    same = threading.Thread(target=lambda: got.append(encoder.session((0,))))
    same.start()
    release.set()
    for t in (first, other, same):
        t.join(timeout=30)
    assert not blocked, "another model's session waited for the slow conversion"
    assert builds.count((0,)) == 1 and builds.count((1,)) == 1
    zero = [g for g in got if g[0] == ("compiled", (0,))]
    assert len(zero) == 2 and zero[0] is zero[1]


def test_auto_int8_is_openvino_int8_on_a_native_bf16_cpu(tiny_model_dir, monkeypatch):
    """A rule whose int8 is OpenVINO's dynamic int8 (the measured classes calibrate on the
    vocabulary: tests/test_auto_rule.py)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    monkeypatch.delenv(bk.AUTO_BACKEND_ENV)
    monkeypatch.setenv("XLMT_SKLEARN_CPU_CLASS", "avx512_bf16")
    rule = bk.AutoRule("openvino", "bfloat16", "openvino")
    monkeypatch.setitem(bk.AUTO_RULES, "avx512_bf16", rule)
    monkeypatch.setattr(bk, "native_bf16", lambda: True)
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", quantize="int8").fit()
    (encoder,) = vec._encoders()
    assert isinstance(encoder, ov_rt.OpenVINOEncoder) and encoder.quantize == "int8"
    assert encoder.fingerprint["quantize"] == OPENVINO_INT8_SCHEME
    ref = clone(vec).set_params(backend="torch", quantize=None).fit_transform(TEXTS)
    assert _cosines(vec.transform(TEXTS), ref).min() >= INT8_COSINE


def test_a_local_model_by_another_path_reuses_its_conversion(
    tiny_model_dir, tmp_path, runtime, monkeypatch
):
    """A converted local folder is keyed by its content: a copy (or a relative path) of the
    same files reuses the conversion instead of converting again."""
    import shutil

    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))  # manifests name 1st path
    copy = tmp_path / "copy-of-tiny"
    shutil.copytree(tiny_model_dir, copy)
    outs, folders = [], []
    for model in (tiny_model_dir, copy):
        vec = XLMTVectorizer(str(model), backend=runtime, dtype="float32", device="cpu",
                             progress=False).fit()  # fmt: skip
        outs.append(vec.transform(TEXTS))
        (encoder,) = vec._encoders()
        folders.append(encoder.converted((-1,)))
    assert folders[0] == folders[1]
    np.testing.assert_array_equal(outs[0], outs[1])
