"""Models converted for OpenVINO and ONNX Runtime: built once, stored, reused.

A converted model is a folder ``<root>/<key>/``. ``key`` hashes everything
that decides the exported graph: the model's pinned identity (hub id and
commit, or a local folder's content hash, not its path), the runtime, the
hidden states the graph outputs (the estimator's ``layers``) and the
precision of the stored weights (float32: the runtime's own precision hint
picks bf16 at compile time; or an int8 scheme of
:mod:`xlmt_sklearn.backends._int8`, built from the float32 folder). ``root``
is ``$XLMT_SKLEARN_CONVERTED_DIR`` when set, else
``~/.cache/xlmt_sklearn/converted`` (``$XDG_CACHE_HOME`` is honoured).

Safe with concurrent processes: each builds in its own ``.tmp-*`` folder
next to the final one, writes ``manifest.json`` last (its key, the size and
SHA-256 of every file) and renames the folder into place in one step. The first
rename wins; a later process finds a complete copy and discards its own. A
folder whose manifest is missing, names another key (a folder copied under
another model's name) or does not match its files (half-written, edited,
truncated) is never used: it is moved aside and rebuilt.

Only folders this package provably made are ever deleted: its own name pattern
(``.tmp-<key>-<id>``, ``.trash-<id>``) with an owner file inside (process id,
host, start time). A temporary folder whose owner process on this host is gone
(killed mid-conversion) is removed at the next conversion; one of another host
after a day. A root that cannot be written is used as is when it holds the
model; otherwise, and when the disk fills up, the error names the folder, the
space needed and ``XLMT_SKLEARN_CONVERTED_DIR``.

The exported graph takes ``input_ids`` and ``attention_mask`` (int64,
dynamic batch and sequence axes) and returns one float32 array of shape
``(len(layers), batch, seq, hidden)``: the chosen ``hidden_states``, stacked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._state import owns

__all__ = [
    "CONVERTED_ENV",
    "conversion_key",
    "converted_root",
    "discard",
    "ensure_converted",
    "export_onnx",
    "export_openvino",
    "is_complete",
    "mark_used",
    "read_manifest",
]

logger = logging.getLogger("xlmt_sklearn")

#: Environment variable naming the folder of converted models.
CONVERTED_ENV = "XLMT_SKLEARN_CONVERTED_DIR"
#: Bumped when the exported graph's contract changes (old folders are then ignored).
CONVERT_FORMAT = 1
_MANIFEST = "manifest.json"
#: Inside every temporary folder: who made it (see :func:`_remove_stale`).
_OWNER = ".xlmt-owner.json"
#: The names of the temporary folders this module makes (and may delete).
_OURS = re.compile(r"\.(tmp-[0-9a-f]{8}|trash)-[0-9a-f]{32}")
_STALE_TMP_S = 24 * 3600.0


def converted_root() -> Path:
    """The folder holding converted models (see the module docstring)."""
    from .._env import env_dir

    root = env_dir(CONVERTED_ENV)
    if root is not None:
        return root
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join("~", ".cache")
    return Path(os.path.expanduser(base)) / "xlmt_sklearn" / "converted"


def conversion_key(**fields: Any) -> str:
    """Folder name of a converted model: a hash of what decides its graph.

    Examples
    --------
    >>> conversion_key(runtime="openvino", layers=[-1]) == conversion_key(
    ...     layers=[-1], runtime="openvino")
    True
    """
    blob = json.dumps({"format": CONVERT_FORMAT, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: Folders this process verified, with the (name, size, mtime, inode) of each file then:
#: a folder whose files still carry the same stamps is not hashed again (a recompile after
#: a thread-count change, another estimator on the same model).
_VERIFIED: dict[str, tuple] = {}


def _stamp(folder: Path, names: Any) -> tuple:
    out = []
    for name in sorted(names):
        st = (folder / name).stat()
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """``folder``'s manifest when it names the folder's key, else None (no manifest, an
    unreadable one, or another model's folder copied under this name)."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != folder.name:
        return None
    return manifest


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a whole converted model: its manifest matches every file.

    Every file is hashed the first time a process checks the folder (about 1 s
    per GB); later checks in the process compare size, mtime and inode only.
    """
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    try:
        files = manifest["files"]
        if manifest.get("format") != CONVERT_FORMAT or not files:
            return False
        stamp = _stamp(folder, files)
        if _VERIFIED.get(str(folder)) == stamp:
            return True
        for name, meta in files.items():
            path = folder / name
            if path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    _VERIFIED[str(folder)] = stamp
    return True


def mark_used(folder: Path) -> None:
    """Record a use of a converted folder: its mtime, which ``xlmt-sklearn converted``
    reports and prunes by. A folder that cannot be written (a read-only root, another
    user's) keeps its time."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def _write_manifest(folder: Path, key: str, describe: dict[str, Any]) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != _OWNER
    }
    manifest = {"format": CONVERT_FORMAT, "key": key, "model": describe, "files": files}
    tmp = folder / (_MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, folder / _MANIFEST)


def _claim(folder: Path) -> None:
    """Write the owner file of a temporary folder this process is about to fill."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    (folder / _OWNER).write_text(json.dumps(owner), encoding="utf-8")


def _remove_stale(root: Path) -> None:
    """Delete the temporary folders of dead conversions, and only those (module docstring)."""
    from .._machine import pid_alive

    now, host = time.time(), socket.gethostname()
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for p in entries:
        if not _OURS.fullmatch(p.name) or p.is_symlink() or not p.is_dir():
            continue
        try:
            owner = json.loads((p / _OWNER).read_text(encoding="utf-8"))
            pid, started = int(owner["pid"]), float(owner["started"])
            mine = owner["host"] == host
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no owner file: not provably ours
        if (mine and not pid_alive(pid)) or now - started > _STALE_TMP_S:
            shutil.rmtree(p, ignore_errors=True)


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _unwritable(root: Path, exc: OSError) -> OSError:
    from .._env import env_dir

    where = "XLMT_SKLEARN_CONVERTED_DIR" if env_dir(CONVERTED_ENV) else "the default folder"
    return OSError(
        exc.errno,
        f"Cannot write a converted model into {root} ({exc.strerror or exc}), and the model is "
        f"not converted there yet ({where}). Make the folder writable, or set "
        f"{CONVERTED_ENV} to a writable folder (an absolute path); a read-only folder that "
        "already holds the converted model is used as is.",
    )


def _disk_full(exc: BaseException, root: Path, need: int | None) -> OSError | None:
    """An ``OSError`` that says the disk is full, when that is why ``exc`` happened."""
    free = _free_bytes(root)
    said = any(
        getattr(e, "errno", None) == errno.ENOSPC or "no space left" in str(e).lower()
        for e in (exc, exc.__cause__, exc.__context__) if e is not None
    )  # fmt: skip
    low = free is not None and free < max(need or 0, 64 * 2**20)
    if not (said or low):
        return None
    needs = f"about {need / 2**20:,.0f} MB" if need else "about the size of the model's weights"
    has = f"{free / 2**20:,.0f} MB free" if free is not None else "free space unknown"
    return OSError(
        errno.ENOSPC,
        f"The disk holding {root} is full ({has}; the converted model needs {needs}): the "
        f"conversion stopped ({type(exc).__name__}: {exc}) and left nothing behind. Free space, "
        f"or set {CONVERTED_ENV} to a folder on a larger disk.",
    )


def ensure_converted(
    key: str,
    describe: dict[str, Any],
    build: Callable[[Path], None],
    root: Path | None = None,
    need: int | None = None,
) -> Path:
    """The folder of converted model ``key``, built by ``build(tmp_folder)`` if needed.

    Parameters
    ----------
    key : str
        From :func:`conversion_key`.
    describe : dict
        What the model is (written into its manifest, for people).
    build : callable (folder) -> None
        Writes the converted model's files into an empty folder.
    root : Path, optional
        Default: :func:`converted_root`.
    need : int, optional
        About how many bytes the converted files take (for the disk-full message).

    Returns
    -------
    Path
        A folder that :func:`is_complete` accepted.

    Raises
    ------
    OSError
        The root cannot be written and lacks the model, or the disk filled up
        (``errno.ENOSPC``); the message names the folder and the fix.
    """
    root = converted_root() if root is None else root
    final = root / key
    if is_complete(final):
        mark_used(final)
        return final
    tmp = root / f".tmp-{key[:8]}-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        tmp.mkdir()
        _claim(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unwritable(root, exc) from exc
    try:
        what = describe.get("model", key)
        runtime = describe.get("runtime")
        if describe.get("weights", "float32") != "float32":
            runtime = f"{runtime} int8"
        sys.stderr.write(
            f"xlmt_sklearn: converting {what} for {runtime} (once; kept in {final})...\n"
        )
        start = time.perf_counter()
        try:
            build(tmp)
            _write_manifest(tmp, key, describe)
        except Exception as exc:
            full = _disk_full(exc, root, need)
            if full is not None:
                raise full from exc
            raise
        sys.stderr.write(f"xlmt_sklearn: converted in {time.perf_counter() - start:.1f} s\n")
        return _install(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, final: Path) -> Path:
    """Rename ``tmp`` into place, unless a complete copy got there first."""
    for _ in range(5):
        try:
            os.rename(tmp, final)
            return final
        except OSError:
            if is_complete(final):  # another process won the race: use its copy
                return final
            # A broken copy (half-written, corrupt): move it aside, then retry.
            try:
                if not discard(final):
                    continue  # someone else moved it meanwhile
            except OSError:
                continue
            logger.warning("Rebuilt the incomplete converted model in %s", final)
    raise OSError(f"Could not install the converted model in {final}.")


def discard(folder: Path) -> bool:
    """Move ``folder`` aside (``.trash-<id>``, with this process's owner file, so that the
    next conversion finishes an interrupted deletion), then delete it; False when it was
    gone already. Raises ``OSError`` when it cannot be moved."""
    with contextlib.suppress(OSError):  # unwritable: moved aside all the same if it can be
        _claim(folder)
    trash = folder.parent / f".trash-{uuid.uuid4().hex}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


# ------------------------------------------------------------------------- export
def _hidden_states_module(model: Any, layers: tuple[int, ...]) -> Any:
    """``model`` wrapped to return the stacked ``hidden_states[layers]``."""
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            if tuple(layers) == (-1,):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                return out.last_hidden_state.unsqueeze(0)
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            )
            return torch.stack([out.hidden_states[i] for i in layers])

    return HiddenStates().eval()


def _example_inputs(model: Any) -> tuple[Any, Any]:
    """A padded batch of two rows: tracing sees a real mask, not an all-ones one."""
    import torch

    config = model.config
    pad = int(getattr(config, "pad_token_id", None) or 0)
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 2, pad, pad, pad]], dtype=torch.int64)
    ids = ids.clamp(max=int(config.vocab_size) - 1)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]], dtype=torch.int64)
    return ids, mask


def _eager(model: Any) -> Any:
    """The plain attention path (SDPA/flex masks do not trace to every runtime).

    The model (a fresh load, only exported) also gets no loss function: tracing reads
    every attribute, and transformers' ``loss_function`` property then logs "loss_type=None
    ... ForCausalLMLoss", noise about training that never happens here.
    """
    model._loss_function = None
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
    else:  # older transformers
        model.config._attn_implementation = "eager"
    return model


def export_openvino(model: Any, layers: tuple[int, ...], folder: Path) -> None:
    """Write ``model`` (float32 torch) as OpenVINO IR ``model.xml``/``model.bin``."""
    import openvino as ov
    import torch

    wrapped = _hidden_states_module(_eager(model), layers)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter, not the user's concern
        ov_model = ov.convert_model(wrapped, example_input=_example_inputs(model))
    for inp, name in zip(ov_model.inputs, ("input_ids", "attention_mask"), strict=True):
        inp.get_tensor().set_names({name})
    ov.save_model(ov_model, str(folder / "model.xml"), compress_to_fp16=False)


def export_onnx(model: Any, layers: tuple[int, ...], folder: Path) -> None:
    """Write ``model`` (float32 torch) as ONNX ``model.onnx`` (TorchScript exporter)."""
    import torch

    wrapped = _hidden_states_module(_eager(model), layers)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped, _example_inputs(model), str(folder / "model.onnx"),
            input_names=["input_ids", "attention_mask"], output_names=["hidden_states"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes,
                          "hidden_states": {1: "batch", 2: "sequence"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip


@owns("runtimes")
def _reset_verified() -> None:
    _VERIFIED.clear()
