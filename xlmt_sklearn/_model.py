"""Model identity: which model a fitted estimator pinned, read from its config only.

:func:`resolve_identity` reads ``config.json`` only (never the weights) and pins
what a fitted estimator must reuse later: the hub commit hash, or a content hash
of a local folder (:class:`ModelIdentity`, what pickles carry). Also the checks
of a model name before anything loads, and the hub's offline hints. Loading the
weights is :mod:`xlmt_sklearn.backends._loading`'s; with it, the only modules that
import ``huggingface_hub`` and ``transformers``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._digests import file_digest, reset_digests
from ._errors import ModelLoadError, ModelNotFoundError
from ._state import owns

__all__ = ["ModelIdentity", "check_model_name", "looks_like_path", "resolve_identity"]

# Files whose content decides what the model computes (weights, config, tokenizer).
_CONTENT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".pt")


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


#: In an adapted folder (:mod:`xlmt_sklearn.adapt`): when and how it was trained, not
#: what it computes, so a re-trained identical folder keeps its identity.
_NOT_CONTENT = frozenset({"adapted.json"})


def _folder_hash(folder: Path) -> str:
    """SHA-256 over the content files of ``folder`` (each file's digest remembered by
    its inode, size, mtime and ctime: :mod:`xlmt_sklearn._digests`)."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith(_CONTENT_SUFFIXES) and p.name not in _NOT_CONTENT
    )
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        h.update(bytes.fromhex(file_digest(p)))
    return h.hexdigest()


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


@owns("model_hashes")
def _reset_model_hashes() -> None:
    reset_digests()
