"""Folders the package keeps until someone deletes them: listing and selection (foundation).

Converted models (``backends/_converted_folders.py``) and adapted encoders
(``adapt/_adapted_folders.py``) each describe their own folders; both are listed least
recently used first and selected for deletion by the same rules: unused for more than
some days, one rule of their own (a converted model's source gone, an interrupted
fine-tune), or all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

__all__ = ["DAY", "pick", "scan"]

DAY = 86400.0


class _Kept(Protocol):
    @property
    def last_used(self) -> float: ...


K = TypeVar("K", bound=_Kept)


def scan(root: Path, read: Callable[[Path], K | None]) -> list[K]:
    """What ``read`` says of each entry of ``root`` (None: not ours, left out), least
    recently used first; a missing root holds nothing."""
    try:
        entries = list(Path(root).iterdir())
    except FileNotFoundError:
        return []
    found = (read(p) for p in entries)
    return sorted((f for f in found if f is not None), key=lambda f: f.last_used)


def pick(
    folders: Iterable[K],
    unused_days: float | None,
    own_rule: Callable[[K], bool] | None,
    everything: bool,
    now: float | None,
) -> list[K]:
    """The folders any rule picks: all (``everything``), the kind's ``own_rule``, or unused
    for more than ``unused_days``."""
    now = time.time() if now is None else now
    return [f for f in folders
            if everything or (own_rule is not None and own_rule(f))
            or (unused_days is not None and now - f.last_used > unused_days * DAY)]  # fmt: skip
