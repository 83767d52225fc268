"""``quantize="int8"`` on the CPU runtimes: ONNX Runtime and OpenVINO.

Both start from the runtime's float32 converted model (:mod:`xlmt_sklearn.backends._convert`)
and write an int8 copy of it once, into its own converted-model folder (same
atomic rename and manifest checks), keyed by the scheme string below: a change
of scheme is a new folder and a new cache key, never a reuse.

ONNX Runtime (:data:`ONNXRUNTIME_INT8_SCHEME`)
    ``onnxruntime.quantization.quantize_dynamic``: weights int8 (``QInt8``), one
    scale per output channel; activations quantized per batch at run time
    (``DynamicQuantizeLinear`` + ``MatMulInteger``). The embedding tables
    (``Gather``) are stored int8 too. As for torch int8
    (:mod:`xlmt_sklearn.backends._quantize`), the width-reducing matmuls (the feed-forward
    down-projections, whose GELU inputs carry outlier features) stay float32:
    on multilingual-e5-small's real weights, quantizing them as well drops the
    cosine to float32 from 0.998 (min, 300 UMSAB tweets) to 0.987
    (docs/backends.md, "Int8 on the runtimes").

OpenVINO (:data:`OPENVINO_INT8_SCHEME`)
    NNCF's ``compress_weights`` (int8, asymmetric, one scale and zero point per
    output channel, every matmul and embedding): int8 weights, activations in the
    compute precision, which the CPU plugin quantizes on the fly per group of
    :data:`OPENVINO_DQ_GROUP` values (``DYNAMIC_QUANTIZATION_GROUP_SIZE``, set
    explicitly so that a change of the plugin's default cannot change vectors;
    the size was chosen by ``benchmarks/bench_openvino_int8.py``: docs/backends.md,
    "Group size"). Activations never see one scale for a
    whole tensor, so the down-projections need no exception.

OpenVINO static int8 (:func:`openvino_static_scheme`, with ``calibration_texts``)
    NNCF's ``quantize`` (post-training quantization, ``ModelType.TRANSFORMER``):
    int8 weights (symmetric, per output channel) and int8 activations whose
    scales are fixed from the calibration texts (one per tensor), so no
    activation is quantized at run time: faster than the dynamic scheme
    (docs/backends.md, "Static int8").
    One scale per tensor is what the feed-forward down-projections' outlier
    features punish; SmoothQuant moves part of their range into the weights
    (alpha :data:`OPENVINO_SMOOTH_QUANT_ALPHA`, chosen in
    ``benchmarks/bench_openvino_int8.py``). Keeping the down-projections in float
    instead costs the whole speed gain. The calibration texts are part of the
    scheme string (a digest), so another calibration set is another converted
    model and another cache key.

Calibration from the vocabulary (``calibration_texts="vocabulary"``)
    Without texts of the user's, static int8 is calibrated on pseudo-texts drawn
    from the tokenizer itself (:func:`vocabulary_samples`): token ids sampled by
    a SentencePiece unigram tokenizer's own piece probabilities (XLM-R, XLM-T,
    multilingual-e5), seeded, so the same tokenizer always gives the same model.
    Such rows cover the scripts and subwords of every language the model was
    trained on in the proportions of its training text, which is what the
    activation ranges need; the cosine to float32 and the UMSAB macro-F1 of this
    calibration against real tweets are in docs/backends.md ("Int8 on AMX").
    ``backend="auto"`` uses it for ``quantize="int8"`` on AMX CPUs
    (:mod:`xlmt_sklearn.backends._auto`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CALIBRATION_MAX_TEXTS",
    "ONNXRUNTIME_INT8_SCHEME",
    "OPENVINO_DQ_GROUP",
    "OPENVINO_INT8_SCHEME",
    "OPENVINO_SMOOTH_QUANT_ALPHA",
    "VOCABULARY",
    "Calibration",
    "calibration_samples",
    "compress_openvino",
    "has_unigram",
    "openvino_static_scheme",
    "quantize_onnx",
    "quantize_openvino_static",
    "require_unigram",
    "unigram_scores",
    "vocabulary_samples",
    "width_reducing_matmuls",
]

#: What ONNX Runtime int8 does; part of the cache fingerprint and the converted folder's key.
ONNXRUNTIME_INT8_SCHEME = "int8:onnxruntime-dynamic:qint8-per-channel:gather-int8:ffn-down-fp32"
#: Group size of OpenVINO's run-time activation quantization for int8 weights.
OPENVINO_DQ_GROUP = 128
#: What OpenVINO int8 does; part of the cache fingerprint and the converted folder's key.
OPENVINO_INT8_SCHEME = (
    f"int8:nncf-compress-weights:int8-asym-per-channel:dynamic-quantization-{OPENVINO_DQ_GROUP}"
)


#: SmoothQuant's alpha for the matmuls of OpenVINO static int8.
OPENVINO_SMOOTH_QUANT_ALPHA = 0.75
#: At most this many distinct calibration texts are used (the first ones).
CALIBRATION_MAX_TEXTS = 300
#: The ``calibration_texts`` value that calibrates on the tokenizer's vocabulary.
VOCABULARY = "vocabulary"
#: Token counts of the vocabulary's pseudo-texts (without special tokens): one piece to a
#: paragraph, drawn log-uniformly (short texts as often as long ones); at most
#: ``max_length`` with the special tokens.
VOCABULARY_LENGTHS = (1, 64)
#: Share of the pseudo-texts that repeat one piece ("🔥🔥🔥", "!!!!"), as tweets do: their
#: activations differ from mixed text (a self-check of e5-small failed without them).
VOCABULARY_REPEATS = 0.2


@dataclass(frozen=True)
class Calibration:
    """The texts that fix static int8's activation scales, as the model sees them.

    Attributes
    ----------
    texts : tuple of str
        Preprocessed, prefixed, distinct, at most :data:`CALIBRATION_MAX_TEXTS`.
    max_length : int
        Each text is truncated to this many tokens, as in encoding.
    """

    texts: tuple[str, ...]
    max_length: int
    #: Pseudo-texts from the tokenizer's vocabulary instead of ``texts`` (which is empty):
    #: :func:`vocabulary_samples`.
    vocabulary: bool = False

    @classmethod
    def from_vocabulary(cls, max_length: int) -> Calibration:
        """Calibration on :data:`CALIBRATION_MAX_TEXTS` pseudo-texts of the tokenizer's own
        vocabulary (:func:`vocabulary_samples`)."""
        return cls((), int(max_length), vocabulary=True)

    @classmethod
    def of(cls, texts: Iterable[str], max_length: int) -> Calibration:
        """The first :data:`CALIBRATION_MAX_TEXTS` distinct ``texts`` (an iterable is read
        only as far as they go)."""
        distinct: dict[str, None] = {}
        for text in texts:
            distinct.setdefault(text, None)
            if len(distinct) == CALIBRATION_MAX_TEXTS:
                break
        return cls(tuple(distinct), int(max_length))

    @functools.cached_property
    def digest(self) -> str:
        """A short hash of the texts and ``max_length`` (part of the scheme string, which
        keys the compiled model of every batch: computed once)."""
        if self.vocabulary:  # the samples follow from the tokenizer (in the model's key)
            blob = json.dumps(
                ["vocabulary-2", self.max_length, VOCABULARY_LENGTHS, VOCABULARY_REPEATS]
            )
            return "vocabulary-" + hashlib.sha256(blob.encode()).hexdigest()[:8]
        blob = json.dumps([self.max_length, list(self.texts)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def openvino_static_scheme(calibration: Calibration) -> str:
    """The scheme string of OpenVINO static int8 calibrated on ``calibration``."""
    return (
        "int8:nncf-quantize:transformer:static-activations:"
        f"smoothquant-{OPENVINO_SMOOTH_QUANT_ALPHA}:calibration-{calibration.digest}"
    )


# ------------------------------------------------------------------ ONNX Runtime
def width_reducing_matmuls(graph: Any) -> list[str]:
    """Names of the ``MatMul`` nodes of an ONNX ``graph`` whose constant weight narrows the width.

    A weight initializer of shape ``(in, out)`` with ``out < in``: torch's
    ``nn.Linear`` with fewer outputs than inputs, exported (the rule of
    :func:`xlmt_sklearn.backends._quantize._int8_layer_names`).
    """
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    names = []
    for node in graph.node:
        shape = shapes.get(node.input[1]) if node.op_type == "MatMul" else None
        if shape is not None and len(shape) == 2 and shape[1] < shape[0]:
            names.append(node.name)
    return names


def quantize_onnx(float_folder: Path, folder: Path) -> None:
    """Write ``folder/model.onnx``: the float32 ``float_folder/model.onnx`` with int8 weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    model = onnx.load(str(float_folder / "model.onnx"))
    # ORT's quantization pre-processing (symbolic shape inference) fails on these
    # graphs ("Incomplete symbolic shape inference"); quantize_dynamic runs onnx's
    # shape inference itself. The tag only stops its advice to pre-process, which it
    # sends through logging.warning (configuring the root logger of the user's program).
    add_pre_process_metadata(model)
    quantize_dynamic(
        model, str(folder / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        nodes_to_exclude=width_reducing_matmuls(model.graph),
        extra_options={"MatMulConstBOnly": True},
    )  # fmt: skip


# ---------------------------------------------------------------------- OpenVINO
def compress_openvino(float_folder: Path, folder: Path) -> None:
    """Write ``folder/model.xml``/``.bin``: the float32 IR of ``float_folder`` with int8 weights."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(float_folder / "model.xml"))
    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.ERROR)  # its statistics table goes to stdout
    try:
        # Its progress bar (rich) goes to stdout too: stderr, beside our own messages,
        # keeps stdout for the program's output (the command line writes vectors there).
        with contextlib.redirect_stdout(sys.stderr):
            model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    finally:
        nncf.set_log_level(level)
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)


def calibration_samples(tokenizer: Any, calibration: Calibration) -> list[dict[str, Any]]:
    """NNCF's calibration inputs: one unpadded text each (``input_ids``, ``attention_mask``,
    shape (1, n_tokens)), so that padding never enters the activation ranges."""
    import numpy as np

    if calibration.vocabulary:
        rows = vocabulary_samples(tokenizer, calibration.max_length)
    else:
        enc = tokenizer(list(calibration.texts), truncation=True, max_length=calibration.max_length)
        rows = enc["input_ids"]
    ids = [np.asarray([r], dtype=np.int64) for r in rows]
    return [{"input_ids": i, "attention_mask": np.ones_like(i)} for i in ids]


def has_unigram(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` has unigram piece probabilities (cheap: no vocabulary is read)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "Unigram"


def require_unigram(tokenizer: Any, model: str = "this model") -> None:
    """Refuse ``calibration_texts="vocabulary"`` for a tokenizer without unigram probabilities."""
    if not has_unigram(tokenizer):
        raise ValueError(
            f"calibration_texts={VOCABULARY!r} draws pseudo-texts from a SentencePiece unigram "
            f"tokenizer's piece probabilities (XLM-R, XLM-T, multilingual-e5); the tokenizer of "
            f"{model} ({type(tokenizer).__name__}) has none: pass "
            "calibration_texts=<a list of texts like the ones you will encode>."
        )


def unigram_scores(tokenizer: Any) -> Any:
    """Each token id's log-probability in a SentencePiece unigram tokenizer, else None.

    Special tokens and ``<...>`` control pieces get ``-inf`` (never drawn).
    """
    import numpy as np

    if not has_unigram(tokenizer):
        return None
    vocab = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["vocab"]
    scores = np.array([float(score) for _, score in vocab])
    control = [i for i, (piece, _) in enumerate(vocab) if piece[:1] == "<" and piece[-1:] == ">"]
    special = [i for i in getattr(tokenizer, "all_special_ids", ()) if 0 <= i < len(scores)]
    scores[control + special] = -np.inf
    return scores


def vocabulary_samples(
    tokenizer: Any, max_length: int, n: int = CALIBRATION_MAX_TEXTS, seed: int = 0
) -> list[list[int]]:
    """``n`` pseudo-texts as token id rows (special tokens included), drawn from the
    tokenizer's unigram probabilities (:func:`unigram_scores`) with ``seed``.

    Raises
    ------
    ValueError
        The tokenizer is not a SentencePiece unigram one (it has no piece probabilities).
    """
    import numpy as np

    require_unigram(tokenizer)
    scores = unigram_scores(tokenizer)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    from ._loading import _special_tokens

    before, after = _special_tokens(tokenizer)
    n_special = len(before) + len(after)
    low, high = VOCABULARY_LENGTHS
    high = max(1, min(high, int(max_length) - n_special))
    low = min(low, high)
    lengths = np.exp(rng.uniform(np.log(low), np.log(high + 1), size=n)).astype(np.int64)
    lengths = np.clip(lengths, low, high)
    drawn = rng.choice(len(probs), size=int(lengths.sum()), p=probs)
    repeat = rng.random(n) < VOCABULARY_REPEATS
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    rows = []
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        body = [int(drawn[a])] * (b - a) if repeat[k] else drawn[a:b].tolist()
        rows.append([*before, *body, *after])
    return rows


def quantize_openvino_static(
    float_folder: Path,
    folder: Path,
    samples: list[dict[str, Any]],
    alpha: float = OPENVINO_SMOOTH_QUANT_ALPHA,
    ignored: Sequence[str] = (),
) -> None:
    """Write ``folder/model.xml``/``.bin``: the float32 IR of ``float_folder``, statically int8.

    ``samples``: :func:`calibration_samples`; ``alpha``: SmoothQuant's, for the
    matmuls; ``ignored``: names of operations left in float. The scheme string
    names the shipped settings; the others are for ``benchmarks/bench_openvino_int8.py``.
    """
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(float_folder / "model.xml"))
    smooth = nncf.AdvancedSmoothQuantParameters(matmul=alpha)
    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its progress bar (see above)
            model = nncf.quantize(
                model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(samples), ignored_scope=nncf.IgnoredScope(names=list(ignored)),
                advanced_parameters=nncf.AdvancedQuantizationParameters(smooth_quant_alphas=smooth),
            )  # fmt: skip
    finally:
        nncf.set_log_level(level)
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)


def openvino_int8_config() -> dict[str, Any]:
    """Compile options of an int8 OpenVINO model (see the module docstring)."""
    return {"DYNAMIC_QUANTIZATION_GROUP_SIZE": OPENVINO_DQ_GROUP}
