"""The adapted encoders on disk: what each folder holds, its size and last use, and pruning.

Every fine-tune stays in the adapted root (:func:`~._folder.adapted_root`) until someone
deletes it: about the base model's float32 weights (466 MiB for multilingual-e5-small,
1.1 GiB for XLM-T), one per distinct training set and recipe, so one per fold of a grid
search. An interrupted fine-tune leaves its work folder (``.work-<key>``: the last
epoch's checkpoint, which the next fit of the same key resumes from). This module lists
both (``xlmt-sklearn adapted info``) and removes what a rule selects (``xlmt-sklearn
adapted prune``): unused for some days, interrupted, or all.

Only folders this package provably made are listed or removed: a 32-hex-digit name whose
``adapted.json`` names that key, and ``.work-<key>`` folders. A work folder whose
fine-tune is running (its lock is held) is never touched. A folder is moved aside
(``.trash-<id>``) and then deleted, so that no process sees half of one; the next prune
finishes a removal that was interrupted.

A fitted estimator names its folder by key: once the folder is pruned, its ``transform``
fails with an error that says so, and a new ``fit`` trains the fine-tune again (a pickle
made with ``store_weights_in_pickle=True`` restores it when unpickled).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._filelock import file_lock
from .._kept_folders import pick, scan
from ..backends._convert import discard
from ._folder import INFO, adapted_root, mark_used

__all__ = ["AdaptedFolder", "list_adapted", "mark_used", "remove_adapted", "select", "sweep_trash"]

_KEY = re.compile(r"[0-9a-f]{32}")
_WORK = re.compile(r"\.work-([0-9a-f]{32})")
_TRASH = re.compile(r"\.trash-[0-9a-f]{32}")


@dataclass(frozen=True)
class AdaptedFolder:
    """One adapted encoder, or one interrupted fine-tune, on disk."""

    path: Path
    key: str
    base: str  #: the base model's name or folder ("?" for an interrupted fine-tune)
    n_texts: int | None  #: training texts (None for an interrupted fine-tune)
    n_classes: int | None
    bytes: int
    last_used: float  #: seconds since the epoch: the folder's mtime (see ``mark_used``)
    interrupted: bool  #: a ``.work-<key>`` folder: resumable, not usable
    running: bool = False  #: an interrupted one whose fine-tune is running now (its lock held)

    @property
    def state(self) -> str:
        return "training" if self.running else "interrupted" if self.interrupted else "ready"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _read(entry: Path) -> AdaptedFolder | None:
    """The entry's description, or None when it is not provably one of ours."""
    if entry.is_symlink() or not entry.is_dir():
        return None
    try:
        work = _WORK.fullmatch(entry.name)
        if work:
            key = work.group(1)
            with file_lock(entry.parent / f".lock-{key}", wait_s=0.0) as free:
                pass
            return AdaptedFolder(entry, key, "?", None, None, _size(entry), entry.stat().st_mtime,
                                 interrupted=True, running=not free)  # fmt: skip
        if not _KEY.fullmatch(entry.name):
            return None
        info = json.loads((entry / INFO).read_text(encoding="utf-8"))
        if info.get("key") != entry.name:
            return None
        classes = info.get("classes")
        return AdaptedFolder(
            entry, entry.name, str(info.get("base", "?")), int(info.get("n_texts", 0)),
            len(classes) if isinstance(classes, list) else None, _size(entry),
            entry.stat().st_mtime, interrupted=False,
        )  # fmt: skip
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def list_adapted(root: Path | None = None) -> list[AdaptedFolder]:
    """The adapted encoders and interrupted fine-tunes in ``root`` (default: the adapted
    root), least recently used first; anything else in the folder is left out."""
    return scan(adapted_root() if root is None else Path(root), _read)


def select(
    folders: Iterable[AdaptedFolder],
    unused_days: float | None = None,
    interrupted: bool = False,
    everything: bool = False,
    now: float | None = None,
) -> list[AdaptedFolder]:
    """The folders any of the rules picks: unused for more than ``unused_days``, an
    interrupted fine-tune that is not running (``interrupted``), or all (``everything``;
    :func:`remove_adapted` keeps a running one all the same)."""
    rule = (lambda f: f.interrupted and not f.running) if interrupted else None
    return pick(folders, unused_days, rule, everything, now)


def remove_adapted(folder: AdaptedFolder) -> bool:
    """Delete one adapted folder (moved aside first); False if it was gone, no longer
    ours, or (an interrupted fine-tune) being trained now. Raises ``OSError`` when it
    cannot be moved (a read-only root, another user's folder)."""
    if _read(folder.path) is None:
        return False
    if not folder.interrupted:
        return discard(folder.path)
    lock = folder.path.parent / f".lock-{folder.key}"
    with file_lock(lock, wait_s=0.0) as held:  # a running fine-tune holds it
        return held and folder.path.is_dir() and discard(folder.path)


def sweep_trash(root: Path) -> None:
    """Finish removals that were interrupted: the ``.trash-<id>`` folders in ``root``
    (only a removal ever makes one, so nothing else can be lost)."""
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return
    for entry in entries:
        if _TRASH.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
