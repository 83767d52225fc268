"""Adapted models on disk: one folder per (base model content, training data, options).

``<root>/<key>/`` is a complete ``save_pretrained`` folder plus ``adapted.json`` (what
it was trained from, and how long it took); it appears by an atomic rename, so it is
either whole or absent. The fine-tune itself works in ``<root>/.work-<key>/`` (its
epoch checkpoint survives an interruption, and the next fit resumes from it), under
an exclusive lock, so that two processes fitting the same fold (GridSearchCV with
``n_jobs=2``) train it once: the second waits and reuses the folder.

The root is ``adapted_dir``, else ``XLMT_SKLEARN_ADAPTED_DIR``, else
``~/.cache/xlmt_sklearn/adapted``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._env import env_dir
from .._filelock import file_lock
from .._version import __version__
from ._train import TrainSpec, fine_tune

__all__ = ["ADAPTED_ENV", "INFO", "adapted_key", "adapted_root", "ensure_adapted", "mark_used"]

ADAPTED_ENV = "XLMT_SKLEARN_ADAPTED_DIR"
INFO = "adapted.json"
#: How long a fit waits for another process's fine-tune of the same key.
LOCK_WAIT_S = 6 * 3600.0


def adapted_root(adapted_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds adapted models."""
    if adapted_dir is not None:
        return Path(os.path.expanduser(str(adapted_dir)))
    return env_dir(ADAPTED_ENV) or Path.home() / ".cache" / "xlmt_sklearn" / "adapted"


_LATER_DEFAULTS = {
    ("batching", "random"),
    ("embeddings", True),
    ("frozen_layers", 0),
    ("layer_decay", 1.0),
    ("average", 0.0),
    ("head_init", "random"),
    ("label_smoothing", 0.0),
}


def adapted_key(
    base_content: str, texts: Sequence[str], labels: np.ndarray, spec: TrainSpec
) -> str:
    """Hex key of a fine-tune: base model content, the (text, label) pairs in order,
    the training options and the package's major version."""
    h = hashlib.sha256()
    # Options added later enter only when not at their default: earlier folders keep their keys.
    spec_part = {k: v for k, v in spec.as_dict().items() if (k, v) not in _LATER_DEFAULTS}
    h.update(json.dumps({"base": base_content, "spec": spec_part,
                         "major": __version__.split(".")[0]}, sort_keys=True).encode())  # fmt: skip
    for text, label in zip(texts, labels.tolist(), strict=True):
        h.update(text.encode("utf-8", "surrogatepass") + b"\x00" + str(label).encode() + b"\x01")
    return h.hexdigest()[:32]


def ensure_adapted(
    root: Path,
    key: str,
    base: str | os.PathLike,
    texts: Sequence[str],
    labels: np.ndarray,
    spec: TrainSpec,
    *,
    info: dict[str, Any],
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[Path, bool]:
    """The adapted folder of ``key``, fine-tuned now unless it exists; (folder, trained?)."""
    final = root / key
    if (final / INFO).is_file():
        mark_used(final)
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".work-{key}"
    lock = root / f".lock-{key}"
    busy = (f"Waited {LOCK_WAIT_S:.0f} s for another process's fine-tune ({lock}); remove the "
            "lock file if no fit is running.")  # fmt: skip
    with file_lock(lock, wait_s=LOCK_WAIT_S, poll_s=0.5, timeout_error=lambda: TimeoutError(busy)):
        if (final / INFO).is_file():  # another process trained it while we waited
            mark_used(final)
            return final, False
        work.mkdir(exist_ok=True)
        stats = fine_tune(base, texts, labels, spec, work, device=device, progress=progress)
        model = work / "model"
        meta = {**info, "key": key, "spec": spec.as_dict(), "n_texts": len(texts), **stats,
                "created": time.time(), "writer": f"xlmt_sklearn {__version__}"}  # fmt: skip
        (model / INFO).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        _umask_modes(model)
        os.replace(model, final)
        shutil.rmtree(work, ignore_errors=True)
    return final, True


def mark_used(folder: Path) -> None:
    """Record a use of an adapted folder: its mtime, which ``xlmt-sklearn adapted``
    reports and prunes by. A folder that cannot be written keeps its time."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def _umask_modes(folder: Path) -> None:
    """Give every file of a new adapted folder the mode that ``config.json`` got from the
    umask: safetensors writes the weights 0600 whatever the umask, which would keep
    workers running as another user from reading a folder on a shared path."""
    reference = folder / "config.json"
    if not reference.is_file():
        return
    mode = stat.S_IMODE(reference.stat().st_mode)
    for path in folder.iterdir():
        if path.is_file() and stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)


def read_info(folder: Path) -> dict[str, Any]:
    """What ``adapted.json`` says about an adapted folder."""
    return json.loads((Path(folder) / INFO).read_text(encoding="utf-8"))
