"""The converted models on disk: what each folder holds, its size and last use, and pruning.

Every conversion stays in the converted root (:func:`~._convert.converted_root`) until
someone deletes it: one folder per model identity, runtime, ``layers`` and stored
precision, about the size of the model's float32 weights. A fine-tune makes a new model
(``XLMTFineTunedVectorizer``: one per fold of a grid search), so conversions of adapted
folders pile up, and outlive the adapted folders they came from. This module lists them
(``xlmt-sklearn converted info``) and removes the ones a rule selects (``xlmt-sklearn
converted prune``): unused for some days, converted from a local folder that is gone
(*orphaned*), or all.

Only folders this package provably made are listed or removed: a 32-hex-digit name whose
``manifest.json`` names that key (the same test :func:`~._convert.is_complete` makes
before using a folder). A folder is moved aside (``.trash-<id>``, with an owner file, so
that an interrupted removal is finished by the next conversion) and then deleted, so a
process never sees half of one. A process using a pruned folder keeps its compiled
model; the next one converts the model again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._kept_folders import pick, scan
from ._convert import converted_root, discard, mark_used, read_manifest

#: mark_used lives in _convert (the conversions call it) and is re-exported here.
__all__ = ["ConvertedFolder", "list_converted", "mark_used", "remove_converted", "select"]

_KEY = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ConvertedFolder:
    """One converted model on disk (from its manifest and its files)."""

    path: Path
    model: str  #: the hub id, or the local folder it was converted from
    runtime: str
    weights: str  #: "float32" or an int8 scheme
    layers: tuple[int, ...]
    bytes: int
    last_used: float  #: seconds since the epoch: the folder's mtime (see :func:`mark_used`)
    source: Path | None  #: the local folder converted (None: a hub model, or not known)

    @property
    def orphaned(self) -> bool:
        """Converted from a local folder that no longer exists (a deleted fine-tune)."""
        return self.source is not None and not self.source.exists()


def _source(model: dict) -> Path | None:
    if model.get("revision") is not None or not model.get("content"):
        return None  # a hub model: nothing on this disk to lose
    path = model.get("source") or model.get("model")
    return Path(path) if path and os.path.isabs(path) else None  # relative: to what cwd?


def _read(folder: Path) -> ConvertedFolder | None:
    """The folder's description, or None when it is not provably one of ours."""
    if not _KEY.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
        return None
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    try:
        model = manifest.get("model") or {}
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        return ConvertedFolder(
            path=folder, model=str(model.get("model", "?")),
            runtime=str(model.get("runtime", "?")), weights=str(model.get("weights", "?")),
            layers=tuple(int(x) for x in model.get("layers") or ()), bytes=size,
            last_used=folder.stat().st_mtime, source=_source(model),
        )  # fmt: skip
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def list_converted(root: Path | None = None) -> list[ConvertedFolder]:
    """The converted models in ``root`` (default: the converted root), least recently
    used first; anything else in the folder is left out."""
    return scan(converted_root() if root is None else Path(root), _read)


def select(
    folders: Iterable[ConvertedFolder],
    unused_days: float | None = None,
    orphaned: bool = False,
    everything: bool = False,
    now: float | None = None,
) -> list[ConvertedFolder]:
    """The folders any of the rules picks: unused for more than ``unused_days``, converted
    from a local folder that is gone (``orphaned``), or all (``everything``)."""
    rule = (lambda f: f.orphaned) if orphaned else None
    return pick(folders, unused_days, rule, everything, now)


def remove_converted(folder: ConvertedFolder) -> bool:
    """Delete one converted folder (moved aside first); False if it was already gone."""
    if folder.path.is_symlink() or read_manifest(folder.path) is None:
        return False  # gone, or no longer ours, since it was listed
    return discard(folder.path)
