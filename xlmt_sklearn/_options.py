"""Every option of the estimators, declared once.

One :class:`Option` per parameter: its default, what it accepts, a one-line
description, whether it changes the vectors (and so the cache key) and how,
whether changing it after ``fit`` needs a new ``fit``, and how the command line
exposes it. From this table are derived

* the estimators' ``_parameter_constraints`` (:func:`xlmt_sklearn._params.constraints`),
* the parameters ``transform`` checks against their fitted values (:func:`refit_names`),
* the option part of every cache key (:func:`key_options`),
* the command line's model and vector flags and how they become estimator
  parameters (:func:`add_flags`, :func:`estimator_params`).

A test checks each estimator's ``__init__`` signature and docstring against the
table. Adding an option touches three places: its :class:`Option` here, the
estimator's ``__init__`` (signature, assignment, docstring entry) and the code it
changes (docs/architecture.md, "Adding an option").

Plain data and the standard library only, so that the command line builds its
parser (and refuses a bad argument) without importing scikit-learn, torch or
transformers.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

__all__ = [
    "ADAPTED",
    "BACKENDS",
    "BATCHINGS",
    "DEFAULT_MODEL",
    "DTYPES",
    "GRANULARITIES",
    "HEAD_INITS",
    "LAYER_AGGREGATIONS",
    "MISSING_POLICIES",
    "OBJECTIVES",
    "OPTIONS",
    "POOLING_MODES",
    "PREPROCESSORS",
    "QUANTIZE_MODES",
    "TRUNCATION_MODES",
    "WORD_VECTORS",
    "Above",
    "AtLeast",
    "Choice",
    "Flag",
    "Fraction",
    "Methods",
    "Option",
    "add_flags",
    "estimator_params",
    "key_options",
    "options_of",
    "refit_names",
]

#: The estimators' and the command line's default model: XLM-T.
DEFAULT_MODEL = "cardiffnlp/twitter-xlm-roberta-base"
POOLING_MODES = ("mean", "cls", "max", "mean_max")
LAYER_AGGREGATIONS = ("mean", "concat")
TRUNCATION_MODES = ("warn", "error", "window")
MISSING_POLICIES = ("error", "empty", "zeros")
#: The built-in backends (the command line's choices; the estimators also take any runtime
#: registered with :func:`xlmt_sklearn.backends._runtime.register_runtime`).
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZE_MODES = ("int8",)
PREPROCESSORS = ("xlmt",)
GRANULARITIES = ("subword", "word")
WORD_VECTORS = ("first", "mean")
TOKEN_OUTPUTS = ("ragged", "padded", "frame")
CACHE_DTYPES = ("float32", "float16")

POOLED, TOKENS = "pooled", "tokens"  # the estimators' kinds (``ModelFeaturizerMixin._kind``)
#: The fine-tuned vectorizer's options: the pooled ones and its training ones.
ADAPTED = "adapted"
OBJECTIVES = ("classification", "contrastive")
#: "random": consecutive texts of a seeded random order; "length": batches of similar-length
#: texts (fewer pad tokens), in a seeded random order.
BATCHINGS = ("random", "length")
#: ``train_head_init``: a random head, or a logistic regression on the base model's features.
HEAD_INITS = ("random", "probe")
BOTH = (POOLED, TOKENS)


# ------------------------------------------------------------------ constraints
@dataclass(frozen=True)
class Choice:
    """One of ``values`` (a string option)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class AtLeast:
    """An int >= ``low``."""

    low: int


@dataclass(frozen=True)
class Above:
    """A real number > ``low``."""

    low: float


@dataclass(frozen=True)
class Fraction:
    """A real number in (0, 1] (``closed="right"``) or [0, 1) (``closed="left"``)."""

    closed: str = "right"


@dataclass(frozen=True)
class Methods:
    """Any object with these methods."""

    names: tuple[str, ...]


#: Stands for "a runtime in the registry" (built-in or registered later).
RUNTIME = "registered runtime"


# --------------------------------------------------------------- command line
def positive_int(value: str) -> int:
    """``--batch-size 8``: an int >= 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def non_negative_int(value: str) -> int:
    """``--stride 0``: an int >= 0."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return n


def tokens_cap(value: str) -> int | str | None:
    """``--max-tokens``: a positive int, ``auto`` or ``none``."""
    named = {"auto": "auto", "none": None}
    return named[value.lower()] if value.lower() in named else positive_int(value)


def layer_list(value: str) -> list[int]:
    """``--layers -4,-3,-2,-1``: comma-separated hidden-state indices."""
    try:
        layers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as -1 or -4,-3,-2,-1; got {value!r}"
        ) from None
    if not layers:
        raise argparse.ArgumentTypeError("expected at least one layer index")
    return layers


@dataclass(frozen=True)
class Flag:
    """How the command line exposes an option: ``--<name-with-dashes>`` in ``group``.

    ``help`` is the option's one-line description when empty; ``%(default)s``
    works as in argparse. The choices come from the option's :class:`Choice`.
    """

    group: str
    help: str = ""
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    switch: bool = False  # a boolean option: ``--flag`` sets True
    choices: tuple[str, ...] | None = None  # instead of the option's own Choice


# --------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One estimator parameter.

    Attributes
    ----------
    name, default : the parameter and its default.
    accepts : what it accepts: types, ``None``, sklearn constraint strings
        (``"boolean"``, ``"array-like"``), ``callable``, :class:`Choice`,
        :class:`AtLeast`, :class:`Methods` or :data:`RUNTIME`.
    doc : one line, for people (the command line's help).
    key : how it enters the cache key. ``None``: it does not change a vector;
        ``"identity"``: through the pinned model; ``"encoder"``: through the
        encoder's resolved fingerprint (backend, precision); ``"store"``: the
        stored precision; ``"option"``: as :attr:`key_value` of the estimator.
    key_value : the key's value, from the fitted estimator (``"option"`` only).
    refit : whether ``transform`` needs a new ``fit`` after ``set_params`` changes it.
    estimators : which estimator kinds take it.
    cli : its command-line flag, or None (not exposed, or by a flag of the CLI's own).
    """

    name: str
    default: Any
    accepts: tuple[Any, ...]
    doc: str
    key: str | None = None
    key_value: Callable[[Any], Any] | None = None
    refit: bool = False
    estimators: tuple[str, ...] = BOTH
    cli: Flag | None = field(default=None, compare=False)


def _attr(name: str, convert: Callable[[Any], Any] = lambda v: v) -> Callable[[Any], Any]:
    return lambda est: convert(getattr(est, name))


def _preprocess_key(est: Any) -> Any:
    from .flow._preprocess import preprocess_identity_key

    return preprocess_identity_key(est.preprocess)


def _stride_key(est: Any) -> int | None:
    return est._stride() if est.truncation == "window" else None


OPTIONS: tuple[Option, ...] = (
    Option("model", DEFAULT_MODEL, (str, os.PathLike), "hub id or local folder "
           "(save_pretrained output; default: %(default)s)", key="identity", refit=True,
           cli=Flag("model")),
    Option("revision", None, (str, None), "hub branch, tag or commit", key="identity",
           refit=True, cli=Flag("model")),
    Option("pooling", "mean", (Choice(POOLING_MODES),), "how token vectors become one "
           "vector per text (default: %(default)s)", key="option", key_value=_attr("pooling"),
           refit=True, estimators=(POOLED,), cli=Flag("vectors")),
    Option("granularity", "subword", (Choice(GRANULARITIES),), "one vector per model "
           "subword or per input word (default: %(default)s)", estimators=(TOKENS,),
           cli=Flag("tokens", "--tokens: one vector per model subword or per input word "
                    "(default: %(default)s)")),
    Option("word_vector", "first", (Choice(WORD_VECTORS),), "a word's vector: its first "
           "subword's (Spark NLP) or their mean", estimators=(TOKENS,),
           cli=Flag("tokens", "--tokens --granularity word: first subword's vector (Spark "
                    "NLP) or their mean")),
    Option("word_splitter", None, (callable, None), "how a text splits into words",
           estimators=(TOKENS,)),
    Option("special_tokens", False, ("boolean",), "keep the special tokens' vectors",
           estimators=(TOKENS,)),
    Option("output", "ragged", (Choice(TOKEN_OUTPUTS),), "the token output's container",
           estimators=(TOKENS,)),
    Option("layers", -1, (Integral, "array-like"), "hidden-state layers, comma-separated "
           "(0 = embeddings, -1 = last; default: -1)", key="option",
           key_value=lambda est: list(est.layers_), refit=True,
           cli=Flag("vectors", type=layer_list, metavar="L[,L...]")),
    Option("layer_aggregation", "mean", (Choice(LAYER_AGGREGATIONS),), "how several "
           "--layers are combined (default: %(default)s)", key="option",
           key_value=lambda est: est.layer_aggregation if len(est.layers_) > 1 else None,
           refit=True, cli=Flag("vectors")),
    Option("normalize", False, ("boolean",), "L2-normalise every vector", key="option",
           key_value=_attr("normalize", bool), estimators=(POOLED,),
           cli=Flag("vectors", switch=True)),
    Option("preprocess", "xlmt", (Choice(PREPROCESSORS), callable, None), "how texts are "
           "normalised first (XLM-T's rule: @handles -> @user, links -> http)", key="option",
           key_value=_preprocess_key),  # the CLI's --preprocess adds "none"
    Option("prefix", None, (str, None), 'text put before every input, e.g. "query: " for E5 '
           'models ("{text}" = template)', key="option", key_value=_attr("prefix"),
           cli=Flag("vectors")),
    Option("max_length", 128, (AtLeast(3),), "longest input in tokens, special tokens "
           "included (default: %(default)s)", key="option", key_value=_attr("max_length", int),
           refit=True, cli=Flag("vectors", type=positive_int, metavar="N")),
    Option("truncation", "warn", (Choice(TRUNCATION_MODES),), "longer texts: truncate with "
           "a warning, fail, or encode in overlapping windows", key="option",
           key_value=lambda est: "window" if est.truncation == "window" else "truncate",
           cli=Flag("vectors")),
    Option("stride", None, (AtLeast(0), None), "tokens shared by consecutive windows "
           "(--truncation window; default max-length/4)", key="option", key_value=_stride_key,
           cli=Flag("vectors", type=non_negative_int, metavar="N")),
    Option("missing", "error", (Choice(MISSING_POLICIES),), "missing values (an empty "
           "csv/tsv field, a null in jsonl/parquet): fail (default), embed as the empty text, "
           "or zero rows. An empty text (an empty line of a .txt, \"\" in jsonl/parquet) is a "
           "text and is always embedded", cli=Flag("vectors")),
    Option("batch_size", 32, (AtLeast(1),), "texts per forward pass (default: %(default)s)",
           cli=Flag("model", type=positive_int, metavar="N")),
    Option("max_tokens", "auto", (AtLeast(1), Choice(("auto",)), None), "most padded tokens "
           "per forward pass: a number, 'none', or 'auto' (sized for the GPU's free memory; "
           "no cap on a CPU) (default: %(default)s)",
           cli=Flag("model", type=tokens_cap, metavar="N|auto|none")),
    Option("device", "auto", (str, list, tuple, None), "auto (default), cpu, cuda, cuda:N "
           "or mps", cli=Flag("model")),
    Option("backend", "auto", (RUNTIME,), "what computes the model (default: auto = "
           "OpenVINO bf16 on CPUs with native bf16 when installed, torch bf16 on those CPUs "
           "without it, else torch float32; docs/backends.md)", key="encoder",
           cli=Flag("model", choices=BACKENDS)),  # the built-in ones: no plugins in a CLI
    Option("dtype", "auto", (Choice(DTYPES),), "compute dtype (default: auto = bf16 where "
           "--backend auto picks OpenVINO or torch on an AVX-512 BF16/AMX CPU, "
           "float32 elsewhere on CPU, bf16/fp16 on GPU)", key="encoder", refit=True,
           cli=Flag("model")),
    Option("quantize", None, (Choice(QUANTIZE_MODES), None), "int8 weights and activations "
           "(CPU only; torch or the runtime's own int8)", key="encoder", refit=True,
           cli=Flag("model")),
    Option("calibration_texts", None, ("array-like", Choice(("vocabulary",)), None),
           "texts from which static int8 fixes its activation scales", key="encoder",
           refit=True),  # the CLI's --calibration-file reads them from a file
    Option("compile", False, ("boolean",), "torch.compile the model"),
    Option("cache", None, (str, os.PathLike, Methods(("get_many", "put_many")), None),
           "per-text disk cache"),  # the CLI's --cache-dir
    Option("cache_dtype", "float32", (Choice(CACHE_DTYPES),), "precision of stored token "
           "matrices", key="store", estimators=(TOKENS,)),
    Option("cache_layers", None, (Choice(("all",)), "array-like", None), "per-layer "
           "statistics a cache miss stores", refit=True, estimators=(POOLED,)),
    Option("progress", "auto", (Choice(("auto", "log")), "boolean"), "progress bar or log "
           "lines"),  # the CLI's --progress/--no-progress
    Option("trust_remote_code", False, ("boolean",), "allow model code from the hub",
           key="identity", refit=True),
    # The fine-tuned vectorizer's training options: they change the vectors through the
    # adapted encoder's content, which the pinned identity hashes.
    Option("objective", "classification", (Choice(OBJECTIVES),), "training loss",
           key="identity", refit=True, estimators=(ADAPTED,)),
    Option("epochs", 2, (AtLeast(1),), "passes over the training texts", key="identity",
           refit=True, estimators=(ADAPTED,)),
    Option("learning_rate", 2e-4, (Above(0.0),),
           "AdamW's peak learning rate", key="identity", refit=True, estimators=(ADAPTED,)),
    Option("train_batch_size", 16, (AtLeast(1),), "texts per training step", key="identity",
           refit=True, estimators=(ADAPTED,)),
    Option("train_max_length", 96, (AtLeast(2),), "tokens per training text",
           key="identity", refit=True, estimators=(ADAPTED,)),
    Option("train_batching", "random", (Choice(BATCHINGS),), "how training texts are cut into "
           "batches", key="identity", refit=True, estimators=(ADAPTED,)),
    Option("train_embeddings", False, ("boolean",), "whether the fine-tune updates the "
           "word-embedding table", key="identity", refit=True, estimators=(ADAPTED,)),
    Option("train_frozen_layers", 0, (AtLeast(0),), "the lowest transformer layers the "
           "fine-tune keeps as in the base model", key="identity", refit=True,
           estimators=(ADAPTED,)),
    Option("train_layer_decay", 0.8, (Fraction(),), "each lower layer's learning rate "
           "as a fraction of the one above", key="identity", refit=True,
           estimators=(ADAPTED,)),
    Option("train_average", 0.0, (Fraction("left"),), "the share of the last training "
           "steps whose weights the adapted encoder averages", key="identity", refit=True,
           estimators=(ADAPTED,)),
    Option("train_head_init", "random", (Choice(HEAD_INITS),), "the classification head's "
           "starting weights", key="identity", refit=True, estimators=(ADAPTED,)),
    Option("train_label_smoothing", 0.0, (Fraction("left"),), "label smoothing of the "
           "classification loss", key="identity", refit=True, estimators=(ADAPTED,)),
    Option("seed", 0, (AtLeast(0),), "seeds the fine-tune", key="identity", refit=True,
           estimators=(ADAPTED,)),
    Option("train_dtype", "auto", (Choice(("auto", "float32", "bfloat16")),), "precision of "
           "the fine-tune's matrix products", key="identity", refit=True, estimators=(ADAPTED,)),
    Option("cv", None, (AtLeast(2), None), "folds of fit_transform's cross-fitting",
           estimators=(ADAPTED,)),
    Option("adapted_dir", None, (str, os.PathLike, None), "where adapted encoders are kept",
           estimators=(ADAPTED,)),
    Option("store_weights_in_pickle", False, ("boolean",), "pickles carry the adapted "
           "encoder", estimators=(ADAPTED,)),
)  # fmt: skip


def options_of(kind: str) -> Iterator[Option]:
    """The options an estimator of ``kind`` (``"pooled"``, ``"tokens"``, ``"adapted"``) takes."""
    return (
        o for o in OPTIONS if kind in o.estimators or (kind == ADAPTED and POOLED in o.estimators)
    )


def refit_names(kind: str) -> tuple[str, ...]:
    """The parameters whose change after ``fit`` needs a new ``fit``."""
    return tuple(o.name for o in options_of(kind) if o.refit)


def key_options(est: Any, kind: str | None) -> dict[str, Any]:
    """The vector-changing options' part of the cache key, from a fitted estimator of
    ``kind`` (None: the options every estimator takes)."""
    chosen = options_of(kind) if kind else (o for o in OPTIONS if o.estimators == BOTH)
    return {o.name: o.key_value(est) for o in chosen if o.key_value is not None}


def add_flags(groups: dict[str, Any], kind: str | None = None) -> None:
    """Add each declared flag to its argparse group (``kind``: one estimator's only)."""
    for o in OPTIONS:
        if o.cli is None or (kind is not None and kind not in o.estimators):
            continue
        group = groups[o.cli.group]
        flag = "--" + o.name.replace("_", "-")
        if o.cli.switch:
            group.add_argument(flag, action="store_true", help=o.cli.help or o.doc)
            continue
        own = next((c.values for c in o.accepts if isinstance(c, Choice)), None)
        choices = o.cli.choices or own
        group.add_argument(
            flag, default=o.default, type=o.cli.type, metavar=o.cli.metavar,
            choices=None if o.cli.type else choices, help=o.cli.help or o.doc,
        )  # fmt: skip


def estimator_params(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The estimator parameters the declared flags of ``args`` give."""
    return {o.name: getattr(args, o.name) for o in options_of(kind) if o.cli is not None}
