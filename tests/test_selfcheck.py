"""Native runtimes on any CPU: no shared compiled-model cache, the first-use
self-check (:mod:`xlmt_sklearn.backends._selfcheck`) and what "auto" and explicit
runtimes do when it fails.

Faults are injected into the check's child process only, through ``tests/_faults``
(a ``sitecustomize`` on ``PYTHONPATH``; see its docstring): the test's own process runs
the real runtime. The suite turns the check off (``tests/conftest.py``); these tests turn
it on, each with its own converted-model folder, so verdicts never leak between tests.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from tests._subprocesses import run_python
from xlmt_sklearn import (
    RuntimeCheckError,
    RuntimeFallbackWarning,
    XLMTVectorizer,
    reset_process_state,
)
from xlmt_sklearn.backends import _auto as bk
from xlmt_sklearn.backends import _selfcheck as sc
from xlmt_sklearn.backends._convert import CONVERTED_ENV

FAULTS = str(Path(__file__).with_name("_faults"))
TEXTS = ["hola mundo", "a somewhat longer text about the weather today 🙂", "ok", "hola mundo"]
CALIBRATION = [f"calibration tweet number {i} about things #{i}" for i in range(24)]


@pytest.fixture
def checked(monkeypatch, tmp_path):
    """Self-check on, a converted-model folder of this test, OpenVINO present."""
    pytest.importorskip("openvino")
    monkeypatch.setenv(sc.SELFCHECK_ENV, "1")
    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))
    monkeypatch.setenv("PYTHONPATH", FAULTS)
    monkeypatch.setenv("XLMT_TEST_FAULT_LOG", str(tmp_path / "checks.log"))
    monkeypatch.setenv("XLMT_TEST_FAULT", "none")
    return tmp_path


def _checks_run(tmp_path: Path) -> int:
    log = tmp_path / "checks.log"
    return len(log.read_text().split()) if log.exists() else 0


def _auto(model_dir, monkeypatch, **kw):
    """backend="auto" choosing OpenVINO (as on a native-bf16 CPU) whatever this CPU is."""
    monkeypatch.delenv(bk.AUTO_BACKEND_ENV, raising=False)
    monkeypatch.setenv("XLMT_SKLEARN_CPU_CLASS", "avx512_bf16")
    # A class whose rule falls back to torch float32 (bf16 on the measured classes), so that
    # a fallback's vectors equal the reference exactly.
    rule = bk.AutoRule("openvino", "float32", "openvino")
    monkeypatch.setitem(bk.AUTO_RULES, "avx512_bf16", rule)
    monkeypatch.setattr(bk, "native_bf16", functools.cache(lambda: True))
    return XLMTVectorizer(str(model_dir), device="cpu", progress=False, **kw)


def _verdicts(tmp_path: Path) -> list[dict]:
    folder = tmp_path / "converted" / "selfcheck"
    return [json.loads(p.read_text())["verdict"] for p in sorted(folder.glob("*.json"))]


# --------------------------------------------------------------- the root cause (#23)
def test_precisions_alternate_in_fresh_processes_on_one_converted_root(tiny_model_dir, tmp_path):
    """float32 -> bf16 -> dynamic int8 -> static int8 -> bf16 -> float32, each in a new
    process on one converted root: every output finite and within its bar of torch float32.
    On an AMX CPU the bf16 run after float32 aborted or returned NaN when all configurations
    shared one OpenVINO compiled-model cache; on every CPU, the invariant the fix relies on:
    no compiled blob is kept at all."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from xlmt_sklearn.backends._openvino import openvino_has_bf16

    ref = XLMTVectorizer(str(tiny_model_dir), backend="torch", device="cpu", progress=False)
    ref = ref.fit_transform(TEXTS)
    bf16 = [dict(dtype="bfloat16")] if openvino_has_bf16() else []
    static = dict(quantize="int8", calibration_texts=CALIBRATION)
    f32, dynamic = dict(dtype="float32"), dict(quantize="int8")
    steps = [f32, *bf16, dynamic, static, *bf16, f32]
    root = tmp_path / "converted"
    for params in steps:
        out = tmp_path / "out.npy"
        code = (
            "import numpy as np; from xlmt_sklearn import XLMTVectorizer\n"
            f"v = XLMTVectorizer({str(tiny_model_dir)!r}, backend='openvino', device='cpu', "
            f"progress=False, **{params!r})\n"
            f"np.save({str(out)!r}, v.fit_transform({TEXTS!r}))\n"
        )
        proc = run_python(code, timeout=300, **{CONVERTED_ENV: str(root)})
        assert proc.returncode == 0, f"{params}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
        got = np.load(out)
        assert np.isfinite(got).all(), params
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        if params.get("quantize"):
            assert cos.min() >= sc.INT8_COSINE, (params, cos)
        elif params["dtype"] == "bfloat16":
            assert cos.min() >= sc.BF16_COSINE, (params, cos)
        else:
            np.testing.assert_allclose(got, ref, atol=sc.FLOAT32_ATOL)
    # The invariant: no compiled blob is kept that another configuration could load.
    assert not (root / "openvino-cache").exists() and not list(root.rglob("*.blob"))


def test_no_compiled_model_cache_is_kept(tiny_model_dir, tmp_path, monkeypatch):
    """The shared cache of 0.x (one blob for every precision) is deleted, none is written."""
    pytest.importorskip("openvino")
    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path))
    legacy = tmp_path / "openvino-cache" / "14177724049866877725.blob"
    legacy.parent.mkdir()
    legacy.write_bytes(b"a blob of the shared layout")
    reset_process_state()
    vec = XLMTVectorizer(str(tiny_model_dir), backend="openvino", dtype="float32", device="cpu")
    vec.fit().transform(TEXTS)
    assert not legacy.parent.exists()
    assert not list(tmp_path.rglob("*.blob"))


# --------------------------------------------------------------------- the self-check
def test_a_good_runtime_passes_once_and_is_stored(tiny_model_dir, checked, monkeypatch):
    vec = _auto(tiny_model_dir, monkeypatch, cache=str(checked / "c.sqlite"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeFallbackWarning)
        got = vec.fit_transform(TEXTS)
    assert vec._encoders()[0].name == "openvino" and vec.backend_.startswith("openvino (")
    assert _checks_run(checked) == 1
    (verdict,) = _verdicts(checked)
    assert verdict["ok"] and verdict["reason"] == "passed"
    assert verdict["measures"]["finite"] and verdict["measures"]["rows"] == 16
    # A new process state (as a new process) reads the verdict: no second check.
    reset_process_state()
    assert np.array_equal(clone(vec).fit_transform(TEXTS), got)
    assert _checks_run(checked) == 1
    # Another thread count is another configuration: checked on its own.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2 if before != 2 else 1)
    try:
        clone(vec).fit().transform(["new text"])
    finally:
        torch.set_num_threads(before)
    assert _checks_run(checked) == 2 and len(_verdicts(checked)) == 2


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("abort", r"crashed \(SIGABRT\)"),
        ("nan", r"non-finite values"),
        ("wrong", r"disagrees with torch float32: (lowest cosine|max abs)"),
        ("hang", r"hung: no answer in 8 s"),
    ],
)
def test_a_failed_check_falls_back_under_auto_and_raises_when_explicit(
    tiny_model_dir, checked, monkeypatch, fault, reason
):
    monkeypatch.setenv("XLMT_TEST_FAULT", fault)
    # 8 s only where the hang is the fault: on a loaded machine a crashing child can take
    # longer than that to start, and would then be reported as hung.
    monkeypatch.setenv(sc.SELFCHECK_TIMEOUT_ENV, "8" if fault == "hang" else "120")
    torch_ref = XLMTVectorizer(str(tiny_model_dir), backend="torch", device="cpu", progress=False)
    expected = torch_ref.fit_transform(TEXTS)
    vec = _auto(tiny_model_dir, monkeypatch)
    with pytest.warns(RuntimeFallbackWarning, match=reason) as record:
        got = vec.fit_transform(TEXTS)
    assert np.array_equal(got, expected)  # torch float32, exactly
    assert clone(vec).fit().backend_ == "torch (float32)"  # fit reads the stored verdict
    message = str(record[0].message)
    assert "uses torch instead of openvino" in message and "delete that file" in message
    assert record[0].filename == __file__  # points at the user's line
    (verdict,) = _verdicts(checked)
    assert not verdict["ok"] and verdict["path"] in message
    # Once per process: no second warning, no second check.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeFallbackWarning)
        vec.transform(TEXTS)
    explicit = clone(vec).set_params(backend="openvino")
    with pytest.raises(RuntimeCheckError, match=reason) as err:
        explicit.fit().transform(TEXTS)
    assert "backend='openvino'" in str(err.value) and err.value.verdict.path in str(err.value)
    assert _checks_run(checked) == 1


def test_a_stored_failure_is_not_checked_again_by_another_process(
    tiny_model_dir, checked, monkeypatch
):
    monkeypatch.setenv("XLMT_TEST_FAULT", "nan")
    with pytest.warns(RuntimeFallbackWarning, match="non-finite"):
        _auto(tiny_model_dir, monkeypatch).fit_transform(TEXTS)
    code = (
        "import warnings, torch; from xlmt_sklearn import XLMTVectorizer\n"
        "from xlmt_sklearn.backends import _auto as bk\n"
        "torch.set_num_threads(1)  # as this process: the same configuration\n"
        "bk.native_bf16 = lambda: True\n"
        f"v = XLMTVectorizer({str(tiny_model_dir)!r}, device='cpu', progress=False)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    v.fit().transform({TEXTS!r})\n"
        "print(v._encoders()[0].name, [type(x.message).__name__ for x in w])\n"
    )
    env = {"XLMT_TEST_FAULT": "none", bk.AUTO_BACKEND_ENV: ""}
    proc = run_python(code, timeout=300, **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch ['RuntimeFallbackWarning']" in proc.stdout
    assert "checking it" not in proc.stderr
    assert _checks_run(checked) == 1


def test_checks_off_runs_no_child(tiny_model_dir, checked, monkeypatch):
    monkeypatch.setenv(sc.SELFCHECK_ENV, "0")
    monkeypatch.setenv("XLMT_TEST_FAULT", "abort")
    vec = _auto(tiny_model_dir, monkeypatch)
    vec.fit_transform(TEXTS)
    assert vec._encoders()[0].name == "openvino"
    assert _checks_run(checked) == 0 and not (checked / "converted" / "selfcheck").exists()


def test_bad_environment_values_name_the_variable(monkeypatch):
    monkeypatch.setenv(sc.SELFCHECK_ENV, "maybe")
    with pytest.raises(ValueError, match="XLMT_SKLEARN_SELFCHECK must be 1 or 0"):
        sc.selfcheck_enabled()
    monkeypatch.setenv(sc.SELFCHECK_ENV, "1")
    monkeypatch.setenv(sc.SELFCHECK_TIMEOUT_ENV, "0")
    with pytest.raises(ValueError, match="XLMT_SKLEARN_SELFCHECK_TIMEOUT must be an integer"):
        sc._timeout()


def test_verdict_key_covers_cpu_versions_model_precision_threads(tiny_model_dir):
    pytest.importorskip("openvino")
    from xlmt_sklearn.backends._runtime import runtime_encoder

    ident = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().model_identity_
    f32 = runtime_encoder("openvino", ident, "float32", False)
    fields = sc.verdict_fields(f32, (-1,), 2)
    assert set(fields) == {
        "format", "cpu", "runtime", "runtime_version", "torch", "converted", "precision",
        "quantize", "threads",
    }  # fmt: skip
    assert fields["cpu"]["model"] and fields["precision"] == "float32"
    assert sc.verdict_fields(f32, (-1,), 1) != fields
    assert sc.verdict_fields(f32, (-2, -1), 2)["converted"] != fields["converted"]
    int8 = runtime_encoder("openvino", ident, "float32", False, quantize="int8")
    assert sc.verdict_fields(int8, (-1,), 2)["quantize"] == int8.scheme


def test_child_judges_at_each_precisions_bar():
    class Enc:
        def __init__(self, dtype, scheme=None):
            self.dtype, self.scheme = dtype, scheme

    good = {"finite": True, "max_abs": 5e-5, "min_cosine": 0.9995}
    assert sc._judge(Enc("float32"), dict(good))[0]
    assert not sc._judge(Enc("float32"), {**good, "max_abs": 2e-4})[0]
    assert sc._judge(Enc("bfloat16"), {**good, "max_abs": 0.1})[0]
    assert not sc._judge(Enc("bfloat16"), {**good, "min_cosine": 0.998})[0]
    assert sc._judge(Enc("float32", "int8:x"), {**good, "min_cosine": 0.991})[0]
    assert not sc._judge(Enc("float32", "int8:x"), {**good, "min_cosine": 0.98})[0]
    ok, reason, _ = sc._judge(Enc("float32"), {**good, "finite": False})
    assert not ok and "non-finite" in reason


def test_exit_reasons_name_the_signal():
    assert sc._exit_reason(-6) == "it crashed (SIGABRT)"
    assert sc._exit_reason(-11) == "it crashed (SIGSEGV)"
    assert sc._exit_reason(3) == "it failed (exit status 3)"
    assert sc._exit_reason(0) == "it exited without a result"


def test_a_torn_verdict_is_checked_again(tmp_path):
    path = tmp_path / "v.json"
    path.write_text('{"verdict": {"ok": tr')
    assert sc._read(path) is None
    v = sc.Verdict(False, "it crashed (SIGABRT)", "x", str(path), 1.0, {}, "boom")
    sc._write(path, v, {"k": 1})
    assert sc._read(path) == v
    assert sys.platform == "win32" or not list(tmp_path.glob(".*part"))


def test_fit_converts_and_checks_nothing(tiny_model_dir, checked, monkeypatch):
    """``backend_`` comes from the rule and a stored verdict only: a Spark driver (or a
    laptop that ships the estimator) never converts a model or runs a check in ``fit``."""
    monkeypatch.setenv("XLMT_TEST_FAULT", "abort")
    vec = _auto(tiny_model_dir, monkeypatch).fit()
    assert vec.backend_.startswith("openvino (")
    assert _checks_run(checked) == 0 and not (checked / "converted").exists()
