"""``backend="auto"`` per CPU class, and static int8 calibrated on the tokenizer's vocabulary.

The CPU class is faked with ``XLMT_SKLEARN_CPU_CLASS`` (what the rule reads besides the
flags), so every class's rule runs on any CPU. Tolerances: torch bf16 is held to the bar
of OpenVINO bf16 (cosine >= 0.999 per row to torch float32); vocabulary-calibrated static
int8 to the int8 bar of the tiny fixtures (``INT8_COSINE``; real weights: docs/backends.md,
"Int8 on AMX").
"""

from __future__ import annotations

import numpy as np
import pytest

from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn._machine import CPU_CLASS_ENV, CPU_CLASSES, class_of, cpu_class
from xlmt_sklearn.backends import _auto as bk
from xlmt_sklearn.backends import _onnxruntime as ort_rt
from xlmt_sklearn.backends import _openvino as ov_rt
from xlmt_sklearn.backends import _runtime as rt
from xlmt_sklearn.backends._convert import CONVERTED_ENV
from xlmt_sklearn.backends._int8 import (
    OPENVINO_INT8_SCHEME,
    VOCABULARY_LENGTHS,
    Calibration,
    unigram_scores,
    vocabulary_samples,
)

TEXTS = [
    "hello world this is a tweet about the weather",
    "hola",
    "@user bonjour le monde 😀 #hashtag!!! ciao mondo, tutto bene? 🙂🙂",
    "guten Tag liebe Welt, wie geht's?",
]
#: Cosine per row to torch float32: bf16 (OpenVINO's and torch's) and int8 on the tiny models.
BF16_COSINE = 0.999
INT8_COSINE = 0.999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture
def auto_here(monkeypatch):
    """``"auto"`` decided by the rule (the suite pins ``XLMT_SKLEARN_AUTO_BACKEND=torch``)."""
    monkeypatch.delenv(bk.AUTO_BACKEND_ENV, raising=False)

    def on(cls: str) -> None:
        monkeypatch.setenv(CPU_CLASS_ENV, cls)

    return on


@pytest.fixture
def own_converted(tmp_path, monkeypatch):
    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))


@pytest.fixture(scope="module")
def wordpiece_model_dir(tmp_path_factory):
    """A tiny BERT whose tokenizer is WordPiece: no unigram probabilities."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-wordpiece")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials)
    tok.train_from_iterator(TEXTS * 20, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")  # fmt: skip
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=37, pad_token_id=0)  # fmt: skip
    BertModel(cfg).eval().save_pretrained(folder)
    return folder


# ------------------------------------------------------------------- CPU classes
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"], "amx"),
        (["avx2", "avx512f", "avx512_vnni", "avx512_bf16"], "avx512_bf16"),
        (["avx2", "avx512f", "avx512_vnni"], "avx512"),
        (["avx2", "avx512f"], "avx512"),
        (["avx2", "fma"], "avx2"),
        ([], "other"),
    ],
)
def test_cpu_class_of_flags(flags, expected):
    assert class_of(flags) == expected


def test_cpu_class_env_overrides_and_is_checked(monkeypatch):
    for cls in CPU_CLASSES:
        monkeypatch.setenv(CPU_CLASS_ENV, cls)
        assert cpu_class() == cls
    monkeypatch.setenv(CPU_CLASS_ENV, "sapphire")
    with pytest.raises(ValueError, match=f"{CPU_CLASS_ENV} must be one of amx, avx512_bf16"):
        cpu_class()


def test_every_class_has_a_rule():
    assert set(bk.AUTO_RULES) == set(CPU_CLASSES)
    for rule in bk.AUTO_RULES.values():
        assert rule.runtime in (None, "openvino") and rule.torch_dtype in ("float32", "bfloat16")
        assert rule.int8 in ("torch", "openvino", "openvino-static")


# ------------------------------------------------------------------ the rule
@pytest.mark.parametrize(
    ("cls", "floats", "int8"),
    [
        ("amx", "openvino", "openvino"),
        ("avx512_bf16", "openvino", "openvino"),
        ("avx512", "torch", "torch"),
        ("avx2", "torch", "torch"),
        ("other", "torch", "torch"),
    ],
)
def test_resolve_per_class(auto_here, monkeypatch, cls, floats, int8):
    auto_here(cls)
    monkeypatch.setattr(bk, "native_bf16", lambda: True)  # OpenVINO present, bf16 native
    monkeypatch.setattr(bk, "int8_installed", lambda b: True)
    monkeypatch.setattr(rt, "runtime_installed", lambda b: True)

    def resolve(**kw):
        return bk.resolve_backend("auto", "cpu", **{"quantize": None, "compile": False, **kw})

    assert resolve() == floats
    assert resolve(quantize="int8") == int8
    assert resolve(dtype="float32") == "torch"  # torch float32 stays the reference
    monkeypatch.setattr(bk, "native_bf16", lambda: False)  # no OpenVINO (or no bf16 there)
    assert resolve() == "torch" and resolve(quantize="int8") == "torch"


@pytest.mark.parametrize(
    ("cls", "dtype"),
    [("amx", "bfloat16"), ("avx512_bf16", "bfloat16"), ("avx512", "float32"), ("avx2", "float32")],
)
def test_torch_dtype_per_class_without_openvino(tiny_model_dir, auto_here, monkeypatch, cls,
                                                dtype):  # fmt: skip
    """Where OpenVINO is absent, "auto" is torch, in bf16 on AMX and AVX-512 BF16 (the measured
    winner over torch float32 there), held
    to OpenVINO bf16's bar; an explicit dtype, int8 or backend keeps what it says."""
    auto_here(cls)
    monkeypatch.setattr(bk, "native_bf16", lambda: False)
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False).fit()
    (encoder,) = vec._encoders()
    assert (encoder.name, encoder.dtype) == ("torch", dtype)
    assert vec.backend_ == f"torch ({dtype})"
    ref = XLMTVectorizer(str(tiny_model_dir), device="cpu", backend="torch", dtype="float32",
                         progress=False).fit_transform(TEXTS)  # fmt: skip
    assert _cosines(vec.transform(TEXTS), ref).min() >= BF16_COSINE
    for explicit in (dict(dtype="float32"), dict(backend="torch"), dict(quantize="int8")):
        other = XLMTVectorizer(str(tiny_model_dir), device="cpu", **explicit).fit()
        assert other._encoders()[0].dtype == "float32", explicit


def test_auto_bf16_on_amx_is_openvino_bf16(tiny_model_dir, auto_here, own_converted):
    pytest.importorskip("openvino")
    if not ov_rt.openvino_has_bf16():
        pytest.skip("this CPU runs no bf16 natively (OpenVINO's bf16 needs AVX-512 BF16 or AMX)")
    auto_here("amx")
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False).fit()
    assert vec.backend_ == "openvino (bfloat16)"


# ---------------------------------------------------- int8 on AMX: the vocabulary's
def test_vocabulary_samples_are_seeded_tweet_length_rows(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = vocabulary_samples(tok, max_length=128)
    assert rows == vocabulary_samples(tok, max_length=128)  # the same model every time
    assert rows != vocabulary_samples(tok, max_length=128, seed=1)
    assert len(rows) == 300
    body = [r[1:-1] for r in rows]
    assert all(r[0] == tok.cls_token_id and r[-1] == tok.sep_token_id for r in rows)
    low, high = VOCABULARY_LENGTHS
    assert min(map(len, body)) >= low and max(map(len, body)) <= high
    drawn = {i for r in body for i in r}
    assert not drawn & set(tok.all_special_ids)
    assert len(drawn) > 50  # many pieces, not a few frequent ones
    repeated = [r for r in body if len(r) > 1 and len(set(r)) == 1]
    assert 30 <= len(repeated) <= 90  # about a fifth repeat one piece, as "🔥🔥🔥" does
    assert sum(len(r) <= 8 for r in body) > 60  # short texts as often as long ones
    short = vocabulary_samples(tok, max_length=10)
    assert max(map(len, short)) <= 10


def test_vocabulary_needs_unigram_probabilities(wordpiece_model_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    assert unigram_scores(AutoTokenizer.from_pretrained(str(wordpiece_model_dir))) is None
    assert unigram_scores(AutoTokenizer.from_pretrained(str(tiny_model_dir))) is not None
    vec = XLMTVectorizer(str(wordpiece_model_dir), device="cpu", backend="openvino",
                         quantize="int8", calibration_texts="vocabulary")  # fmt: skip
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    with pytest.raises(ValueError, match="calibration_texts='vocabulary' draws pseudo-texts"):
        vec.fit()  # before anything is converted


def test_vocabulary_calibration_is_its_own_scheme():
    vocab = Calibration.from_vocabulary(128)
    assert (
        vocab.digest.startswith("vocabulary-")
        and vocab.digest == Calibration.from_vocabulary(128).digest
    )
    assert vocab.digest != Calibration.from_vocabulary(64).digest
    assert vocab.digest != Calibration.of(["a tweet"], 128).digest


@pytest.mark.parametrize("cls", [XLMTVectorizer, XLMTTokenVectorizer])
def test_explicit_vocabulary_calibration_close_to_torch_float32(tiny_model_dir, own_converted,
                                                               cls):  # fmt: skip
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    kw = dict(device="cpu", progress=False)
    if cls is XLMTTokenVectorizer:
        kw["output"] = "ragged"
    vec = cls(str(tiny_model_dir), backend="openvino", quantize="int8",
              calibration_texts="vocabulary", **kw).fit()  # fmt: skip
    (encoder,) = vec._encoders()
    assert "calibration-vocabulary-" in encoder.fingerprint["quantize"]
    got = vec.transform(TEXTS)
    ref = cls(str(tiny_model_dir), backend="torch", dtype="float32", **kw).fit_transform(TEXTS)
    if cls is XLMTTokenVectorizer:
        got, ref = np.concatenate(list(got)), np.concatenate(list(ref))
    assert np.isfinite(got).all()
    assert _cosines(got, ref).min() >= INT8_COSINE


@pytest.mark.parametrize("cls", ["amx", "avx512_bf16"])
def test_auto_int8_is_static_on_the_vocabulary(
    tiny_model_dir, wordpiece_model_dir, auto_here, own_converted, monkeypatch, cls
):
    """AMX and AVX-512 BF16: "auto" with quantize='int8' is OpenVINO static int8
    calibrated on the vocabulary (the fastest int8 on both; on AMX dynamic int8 is slower
    than bf16); a tokenizer without unigram probabilities keeps the dynamic int8, and so
    does a rule that says dynamic."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    monkeypatch.setattr(bk, "native_bf16", lambda: True)
    auto_here(cls)
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", quantize="int8", progress=False)
    (encoder,) = vec.fit()._encoders()
    assert isinstance(encoder, ov_rt.OpenVINOEncoder) and encoder.calibration.vocabulary
    assert "static-activations" in encoder.fingerprint["quantize"]
    ref = XLMTVectorizer(str(tiny_model_dir), device="cpu", backend="torch",
                         progress=False).fit_transform(TEXTS)  # fmt: skip
    assert _cosines(vec.transform(TEXTS), ref).min() >= INT8_COSINE
    wp = XLMTVectorizer(str(wordpiece_model_dir), device="cpu", quantize="int8").fit()
    assert wp._encoders()[0].fingerprint["quantize"] == OPENVINO_INT8_SCHEME
    monkeypatch.setitem(bk.AUTO_RULES, cls, bk.AutoRule("openvino", "bfloat16", "openvino"))
    (encoder,) = vec.fit()._encoders()
    assert encoder.calibration is None
    assert encoder.fingerprint["quantize"] == OPENVINO_INT8_SCHEME


def test_openvino_prices_a_cut_by_its_precision(monkeypatch):
    """On AMX bf16 and int8 tokens are cheap, calls are not: fewer, larger batches there
    (docs/backends.md, "Batching"); float32, and every other class, keep the price of 16."""
    from xlmt_sklearn.flow._batching import BATCH_OVERHEAD_TOKENS, FAST_BATCH_OVERHEAD_TOKENS

    spec = object()  # stored only: nothing is loaded
    monkeypatch.setenv(CPU_CLASS_ENV, "avx512_bf16")
    assert ov_rt.OpenVINOEncoder(spec, "bfloat16").cut_tokens == BATCH_OVERHEAD_TOKENS
    monkeypatch.setenv(CPU_CLASS_ENV, "amx")
    assert ov_rt.OpenVINOEncoder(spec, "float32").cut_tokens == BATCH_OVERHEAD_TOKENS
    assert ov_rt.OpenVINOEncoder(spec, "bfloat16").cut_tokens == FAST_BATCH_OVERHEAD_TOKENS
    int8 = ov_rt.OpenVINOEncoder(spec, "float32", quantize="int8")
    assert int8.cut_tokens == FAST_BATCH_OVERHEAD_TOKENS
    assert ort_rt.OnnxRuntimeEncoder(spec, "float32").cut_tokens == BATCH_OVERHEAD_TOKENS
