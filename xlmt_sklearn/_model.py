"""Model identity, lazy loading and the process-wide model registry.

The only module that imports ``transformers`` (and ``huggingface_hub``).

* :func:`resolve_identity` reads ``config.json`` only (never the weights) and
  pins what a fitted estimator must reuse later: the hub commit hash, or a
  content hash of a local folder.
* :func:`get_model` loads model + tokenizer on first use and keeps them in a
  small per-process LRU registry keyed by :class:`ModelSpec`, so the clones a
  grid search makes -- and every task on a Spark worker -- share one load.
  Estimators never hold a model, which keeps pickles small and ``transform``
  free of side effects on ``self``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import socket
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._env import env_int
from ._errors import ModelLoadError, ModelNotFoundError
from ._state import owns
from .backends._registry import LRURegistry

__all__ = [
    "LoadedModel",
    "ModelIdentity",
    "ModelSpec",
    "clear_model_registry",
    "get_model",
    "get_tokenizer",
    "load_count",
    "resolve_identity",
]

# Files whose content decides what the model computes (weights, config, tokenizer).
_CONTENT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".pt")


def max_models() -> int:
    """Models kept loaded per process: ``XLMT_SKLEARN_MAX_MODELS`` (default 2, at least 1)."""
    return env_int("XLMT_SKLEARN_MAX_MODELS", 2, minimum=1)


def _offline_hint(model: str) -> str:
    return (
        "To work offline, download the model once (e.g. `hf download "
        f"{model}` or `AutoModel.from_pretrained('{model}').save_pretrained('my-model')`) "
        "and pass the local folder: XLMTVectorizer(model='path/to/my-model'); or set "
        "HF_HUB_OFFLINE=1 with the model already in the Hugging Face cache."
    )


def looks_like_path(model: str | os.PathLike) -> bool:
    """True when ``model`` must be read as a filesystem path, never a hub id.

    A ``PathLike``, anything starting with ``/``, ``.``, ``~`` or a Windows
    drive, and any existing directory are paths. ``../x`` and ``/abs`` never
    fall back to a hub id.
    """
    if isinstance(model, os.PathLike):
        return True
    s = str(model)
    if s.startswith(("/", ".", "~", "\\")) or (len(s) > 1 and s[1] == ":"):
        return True
    return os.path.isdir(s)


def check_model_name(name: str) -> None:
    """The checks of a model name that read no file: a local folder exists and holds a
    config and weights; a hub id is not a mistyped local path.

    Cheap (no torch, no transformers): the command line calls it before anything else.

    Raises
    ------
    ModelNotFoundError
        With what is missing and how to fix it.
    """
    if not looks_like_path(name):
        _refuse_local_typo(name)
        return
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"Model folder {name!r} does not exist (resolved to {folder.absolute()}). "
            "A name that starts with '/', '.' or '~' is always read as a local path."
        )
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"Model folder {name!r} has no config.json; save a model there with "
            "model.save_pretrained(folder) and tokenizer.save_pretrained(folder)."
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelNotFoundError(f"Model folder {name!r} has no weights (*.safetensors or *.bin).")


def _refuse_local_typo(name: str) -> None:
    """``models/e5-smal`` when ``models/`` is a local folder: a mistyped path, not a hub id."""
    head, sep, _ = name.partition("/")
    if not sep or not head or not os.path.isdir(head):
        return
    parent = Path(name).parent
    near = (
        difflib.get_close_matches(Path(name).name, os.listdir(parent), n=3)
        if (parent.is_dir())
        else []
    )
    hint = f" Close matches in {str(parent)!r}: {', '.join(near)}." if near else ""
    raise ModelNotFoundError(
        f"Model folder {name!r} does not exist, but {head!r} is a local folder, so this "
        f"looks like a mistyped path rather than a Hugging Face hub id.{hint} To use the "
        f"hub id anyway, run from a directory without a {head!r} folder."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (False when ``HF_HUB_OFFLINE``).

    Behind a proxy (``HTTPS_PROXY`` and the like) a direct connection proves nothing:
    the answer is True and the hub client, which uses the proxy, decides.
    """
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlsplit(constants.ENDPOINT)
    if url.scheme in getproxies():
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ModelIdentity:
    """What a fitted estimator pins about its model (picklable, no weights).

    Attributes
    ----------
    name : str
        The hub id, or the local folder as the user gave it.
    local : bool
        Whether ``name`` is a local folder.
    revision : str or None
        The resolved hub commit hash (None for a local folder).
    content_hash : str
        The commit hash for a hub model; a SHA-256 over the weight, config and
        tokenizer files of a local folder.
    hidden_size, num_hidden_layers, max_positions : int
        From ``config.json``; ``max_positions`` is the longest input in tokens.
    model_type : str
    """

    name: str
    local: bool
    revision: str | None
    content_hash: str
    hidden_size: int
    num_hidden_layers: int
    max_positions: int
    model_type: str


_HASH_MEMO: dict[tuple, str] = {}


def _folder_hash(folder: Path) -> str:
    """SHA-256 over the content files of ``folder``.

    Memoized per process by each file's inode, size, mtime and ctime: a file
    replaced (new inode) or rewritten in place (ctime, which no user call can
    set back, changes even when size and mtime are restored) is hashed again.
    """
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.endswith(_CONTENT_SUFFIXES)
    )
    stats = [(p.name, p.stat()) for p in files]
    stamp = tuple((n, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for n, st in stats)
    key = (str(folder.resolve()), stamp)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + b"\0")
            with open(p, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def _read_config(path: Path, name: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read the config of model {name!r} at {path}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"The config of model {name!r} at {path} is not a JSON object.")
    archs = cfg.get("architectures") or []
    decoder_only = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) and not cfg.get(
        "is_encoder_decoder", False
    )
    if decoder_only and cfg.get("model_type") not in _ENCODER_TYPES:
        raise ModelLoadError(
            f"Model {name!r} is a decoder-only language model ({', '.join(archs)}); "
            "xlmt_sklearn needs a bidirectional encoder (XLM-R, RoBERTa, BERT, E5, ...)."
        )
    if "hidden_size" not in cfg:
        raise ModelLoadError(
            f"The config of model {name!r} has no hidden_size; is it a transformers encoder?"
        )
    return cfg


_ENCODER_TYPES = {
    "bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "distilbert",
    "electra", "deberta", "deberta-v2", "mpnet", "albert", "modernbert",
}  # fmt: skip


def _max_positions(cfg: dict[str, Any]) -> int:
    mpe = int(cfg.get("max_position_embeddings", 512))
    # RoBERTa-family position ids start after the padding index.
    if "roberta" in str(cfg.get("model_type", "")) or cfg.get("model_type") == "camembert":
        mpe -= int(cfg.get("pad_token_id", 1)) + 1
    return mpe


def resolve_identity(
    model: str | os.PathLike, revision: str | None = None
) -> tuple[ModelIdentity, str]:
    """Find ``model`` and read its config, without loading weights.

    Returns the identity and the folder to load from (a local folder or the
    hub snapshot folder).

    Raises
    ------
    ModelNotFoundError
        The folder does not exist, or the hub id/revision can't be found
        (offline, typo, private repository without ``HF_TOKEN``).
    ModelLoadError
        The config is unreadable or describes a decoder-only model.
    """
    name = os.fspath(model)
    check_model_name(name)
    if looks_like_path(model):
        folder = Path(name).expanduser()
        cfg = _read_config(folder / "config.json", name)
        ident = ModelIdentity(
            name=name, local=True, revision=None, content_hash=_folder_hash(folder),
            hidden_size=int(cfg["hidden_size"]),
            num_hidden_layers=int(cfg.get("num_hidden_layers", 0)),
            max_positions=_max_positions(cfg), model_type=str(cfg.get("model_type", "")),
        )  # fmt: skip
        return ident, str(folder)

    from huggingface_hub import hf_hub_download

    # No route to the hub: read the local Hugging Face cache only, at once, instead of
    # retrying for ~25 s before the same answer.
    offline = not _hub_reachable()
    try:
        cfg_path = Path(
            hf_hub_download(name, "config.json", revision=revision, local_files_only=offline)
        )
    except Exception as exc:  # the hub raises many types (offline, 404, auth, HTTP)
        rev = "" if revision is None else f" at revision {revision!r}"
        # Offline, the hub's own text advises "set local_files_only to False", an argument
        # the user never passed: say what happened instead.
        why = (
            f"the hub cannot be reached and it is not in the local cache: {type(exc).__name__}"
            if offline else f"{type(exc).__name__}: {str(exc)[:300]}"
        )  # fmt: skip
        raise ModelNotFoundError(
            f"Cannot find model {name!r}{rev} ({why}). " + _offline_hint(name)
        ) from exc
    commit = cfg_path.parent.name  # .../snapshots/<commit>/config.json
    cfg = _read_config(cfg_path, name)
    ident = ModelIdentity(
        name=name, local=False, revision=commit, content_hash=commit,
        hidden_size=int(cfg["hidden_size"]),
        num_hidden_layers=int(cfg.get("num_hidden_layers", 0)),
        max_positions=_max_positions(cfg), model_type=str(cfg.get("model_type", "")),
    )  # fmt: skip
    return ident, str(cfg_path.parent)


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
        current = _folder_hash(Path(os.path.expanduser(spec.name)))
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
    """Hides transformers' LOAD REPORT: :func:`_warn_missing_weights` says what matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def _warn_missing_weights(name: str, info: dict[str, Any]) -> None:
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


def _load_model(spec: ModelSpec):
    import torch
    from transformers import AutoModel

    src, kw = _source(spec)
    # Exactly the pinned content: an edited folder would silently give other
    # vectors (and poison a shared cache).
    _check_folder(spec)
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-load bar is noise inside a transform
    quiet = _DropLoadReport()
    loggers = [logging.getLogger(n) for n in _REPORT_LOGGERS]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        model, info = AutoModel.from_pretrained(
            src, dtype=_torch_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code,
            output_loading_info=True, **kw,
        )  # fmt: skip
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot load model {spec.name!r}: {type(exc).__name__}: {str(exc)[:500]}"
        ) from exc
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)
        if bar:
            hf_logging.enable_progress_bar()
    _warn_missing_weights(spec.name, info)
    if getattr(model.config, "is_decoder", False) and not getattr(
        model.config, "add_cross_attention", False
    ):
        raise ModelLoadError(f"Model {spec.name!r} is configured as a decoder; use an encoder.")
    model.eval()
    if spec.quantize == "int8":
        from .backends._quantize import quantize_int8

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


@owns("model_hashes")
def _reset_model_hashes() -> None:
    _HASH_MEMO.clear()
