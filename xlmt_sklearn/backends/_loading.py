"""Loading a pinned model: tokenizer and weights on first use, kept in a per-process LRU.

:func:`get_model` loads model + tokenizer on first use and keeps them in a registry
keyed by :class:`ModelSpec`, so the clones a grid search makes -- and every task on
a Spark worker -- share one load. Estimators never hold a model, which keeps
pickles small and ``transform`` free of side effects on ``self``. With
:mod:`xlmt_sklearn._model` (the identity), the only module that imports
``transformers``.
"""

from __future__ import annotations

__all__ = [
    "LoadedModel", "ModelSpec", "clear_model_registry", "get_model", "get_tokenizer",
    "load_count", "max_models", "quiet_loading", "warn_missing_weights",
]  # fmt: skip

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._env import env_int
from .._errors import ModelLoadError
from .._model import _folder_hash, looks_like_path
from .._state import owns
from ._registry import LRURegistry


def max_models() -> int:
    """Models kept loaded per process: ``XLMT_SKLEARN_MAX_MODELS`` (default 2, at least 1)."""
    return env_int("XLMT_SKLEARN_MAX_MODELS", 2, minimum=1)


@dataclass(frozen=True)
class ModelSpec:
    """Registry key: everything that decides which weights run where, and how."""

    name: str
    revision: str | None
    content_hash: str
    device: str
    dtype: str
    quantize: str | None = None
    compile: bool = False
    trust_remote_code: bool = False


@dataclass
class LoadedModel:
    """A ready model and its tokenizer, as held by the registry."""

    model: Any
    tokenizer: Any
    device: str
    dtype: str
    special_prefix: list[int] = field(default_factory=list)
    special_suffix: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


#: Loaded models by spec, built once per spec (other specs load meanwhile).
_REGISTRY = LRURegistry()


_TOKENIZERS: dict[tuple, Any] = {}


#: Guards the tokenizers and the registry's dictionary work (never a model load).
_REGISTRY_LOCK = _REGISTRY.lock


_LOADS = {"model": 0, "tokenizer": 0}


def load_count() -> dict[str, int]:
    """How many models/tokenizers this process has loaded (for tests and logs)."""
    return dict(_LOADS)


def loaded_models() -> dict[ModelSpec, LoadedModel]:
    """The models this process holds now, by their spec (a copy; for tests and logs)."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY.items())


def clear_model_registry() -> None:
    """Drop every loaded model and tokenizer of this process (frees memory)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
        _TOKENIZERS.clear()


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a single sequence gets before and after its content."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k : k + len(bare)] == bare:
            return list(full[:k]), list(full[k + len(bare) :])
    raise ModelLoadError("Cannot locate the content between the tokenizer's special tokens.")


def _source(spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    if looks_like_path(spec.name):
        return os.path.expanduser(spec.name), {}
    return spec.name, {"revision": spec.revision}


def _check_folder(spec: ModelSpec) -> None:
    """Refuse a local folder whose content changed since ``fit`` pinned it.

    Checked before the tokenizer *and* the weights load, so nothing from an
    edited folder ever enters the registry under the pinned identity.
    """
    if looks_like_path(spec.name):
        folder = Path(os.path.expanduser(spec.name))
        if not folder.is_dir():
            raise ModelLoadError(
                f"Model folder {spec.name!r} no longer exists: deleted or moved since the "
                "estimator was fitted (an XLMTFineTunedVectorizer's adapted encoder: pruned by "
                "`xlmt-sklearn adapted prune`, or unpickled on another machine). Fit it again; "
                "an XLMTFineTunedVectorizer pickled with store_weights_in_pickle=True carries "
                "its encoder."
            )
        current = _folder_hash(folder)
        if current != spec.content_hash:
            raise ModelLoadError(
                f"Model folder {spec.name!r} changed since the estimator was fitted "
                f"(content hash {current[:12]} != {spec.content_hash[:12]}). Fit it again."
            )


def get_tokenizer(spec: ModelSpec):
    """Load (once per process) the fast tokenizer of ``spec``'s model."""
    key = (spec.name, spec.revision, spec.content_hash, spec.trust_remote_code)
    with _REGISTRY_LOCK:
        tok = _TOKENIZERS.get(key)
        if tok is not None:
            return tok
        _check_folder(spec)
        from transformers import AutoTokenizer, PretrainedConfig

        src, kw = _source(spec)
        try:
            tok = AutoTokenizer.from_pretrained(
                src, use_fast=True, trust_remote_code=spec.trust_remote_code, **kw
            )
            # The raw config.json (no architecture lookup: an unknown one is the model
            # load's error to report).
            config, _ = PretrainedConfig.get_config_dict(src, **kw)
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot load the tokenizer of model {spec.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        # Here, not at the model's load: runtime backends never load the torch model.
        _check_vocabulary(spec.name, tok, config.get("vocab_size"))
        if not getattr(tok, "is_fast", False):
            raise ModelLoadError(
                f"Model {spec.name!r} has no fast (Rust) tokenizer; xlmt_sklearn needs one for "
                "offsets and word alignment. Save a tokenizer.json with the folder "
                "(AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(folder))."
            )
        _LOADS["tokenizer"] += 1
        _TOKENIZERS[key] = tok
        return tok


def _check_vocabulary(name: str, tokenizer: Any, vocab_size: Any) -> None:
    """Refuse a tokenizer that cannot be the model's own.

    transformers 5 builds an XLM-R tokenizer with only its 5 special tokens
    when the folder lacks tokenizer.json and sentencepiece files -- silently
    turning every word into <unk>. Ids beyond the embedding table would crash.
    """
    n_tok = len(tokenizer)
    n_model = vocab_size if isinstance(vocab_size, int) and vocab_size > 0 else n_tok
    n_special = len(set(tokenizer.all_special_ids))
    if n_tok <= n_special + 5 or n_tok < n_model // 2 or n_tok > n_model + 1000:
        raise ModelLoadError(
            f"The tokenizer of model {name!r} has {n_tok} tokens but the model expects "
            f"{n_model}: the tokenizer files (tokenizer.json or sentencepiece model) are "
            "missing or belong to another model. Save the model's own tokenizer in the folder."
        )


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def get_model(spec: ModelSpec) -> LoadedModel:
    """Return the loaded model for ``spec``, loading it on first use."""
    limit = max_models()  # a bad XLMT_SKLEARN_MAX_MODELS fails before any load

    def load() -> LoadedModel:
        tokenizer = get_tokenizer(spec)  # checked against the model's vocabulary size
        model = _load_model(spec)
        prefix, suffix = _special_tokens(tokenizer)
        with _REGISTRY_LOCK:
            _LOADS["model"] += 1
        return LoadedModel(model, tokenizer, spec.device, spec.dtype, prefix, suffix)

    return _REGISTRY.get_or_build(spec, load, limit)


#: Loggers through which transformers prints its "LOAD REPORT" of missing/unexpected weights.
_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")


class _DropLoadReport(logging.Filter):
    """Hides transformers' LOAD REPORT: :func:`warn_missing_weights` says what matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def warn_missing_weights(name: str, info: dict[str, Any]) -> None:
    """Warn when weights other than the (unused) pooler were missing from the files.

    Encoders saved without their pooler (``add_pooling_layer=False``, most
    sentence-embedding models) load with a freshly initialised pooler that no
    output of this package uses: that is not worth a warning. Any other
    missing weight is random, and so are the vectors.
    """
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        warnings.warn(
            f"Model {name!r} is missing {len(missing)} weights in its files ({shown}); they "
            "were randomly initialised, so its vectors are not meaningful. Is this the "
            "encoder it claims to be?",
            UserWarning,
            stacklevel=2,
        )


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Load with transformers quiet: no per-load progress bar, no LOAD REPORT (the caller
    warns about what matters with :func:`warn_missing_weights`)."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-load bar is noise inside a transform
    quiet = _DropLoadReport()
    loggers = [logging.getLogger(n) for n in _REPORT_LOGGERS]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)
        if bar:
            hf_logging.enable_progress_bar()


def _load_model(spec: ModelSpec):
    import torch
    from transformers import AutoModel

    src, kw = _source(spec)
    # Exactly the pinned content: an edited folder would silently give other
    # vectors (and poison a shared cache).
    _check_folder(spec)
    try:
        with quiet_loading():
            model, info = AutoModel.from_pretrained(
                src, dtype=_torch_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code,
                output_loading_info=True, **kw,
            )  # fmt: skip
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot load model {spec.name!r}: {type(exc).__name__}: {str(exc)[:500]}"
        ) from exc
    warn_missing_weights(spec.name, info)
    if getattr(model.config, "is_decoder", False) and not getattr(
        model.config, "add_cross_attention", False
    ):
        raise ModelLoadError(f"Model {spec.name!r} is configured as a decoder; use an encoder.")
    model.eval()
    if spec.quantize == "int8":
        from ._quantize import quantize_int8

        if spec.device != "cpu":
            raise ValueError("quantize='int8' runs on the CPU only; set device='cpu'.")
        model = quantize_int8(model)
    model.to(spec.device)
    if spec.compile:
        model = torch.compile(model, dynamic=True)
    return model


@owns("models")
def _reset_models() -> None:
    clear_model_registry()
    for key in _LOADS:
        _LOADS[key] = 0
