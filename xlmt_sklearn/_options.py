"""The values each string option of the estimators accepts, in one place.

Plain tuples without imports, so that the command line can build its parser
(and refuse a bad argument) without importing scikit-learn, torch or
transformers; :mod:`xlmt_sklearn._params` builds the estimators' constraints
from the same tuples.
"""

from __future__ import annotations

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "DTYPES",
    "GRANULARITIES",
    "LAYER_AGGREGATIONS",
    "MISSING_POLICIES",
    "POOLING_MODES",
    "PREPROCESSORS",
    "QUANTIZE_MODES",
    "TRUNCATION_MODES",
    "WORD_VECTORS",
]

#: The estimators' and the command line's default model: XLM-T.
DEFAULT_MODEL = "cardiffnlp/twitter-xlm-roberta-base"
POOLING_MODES = ("mean", "cls", "max", "mean_max")
LAYER_AGGREGATIONS = ("mean", "concat")
TRUNCATION_MODES = ("warn", "error", "window")
MISSING_POLICIES = ("error", "empty", "zeros")
#: The built-in backends (the command line's choices; the estimators also take any runtime
#: registered with :func:`xlmt_sklearn._encoders_runtime.register_runtime`).
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZE_MODES = ("int8",)
PREPROCESSORS = ("xlmt",)
GRANULARITIES = ("subword", "word")
WORD_VECTORS = ("first", "mean")
