"""The SQLite store's tunables, in one object read at call time.

Tests and benchmarks change a tunable on :data:`TUNING` (``monkeypatch.setattr(
TUNING, "block_bytes", 4096)``); every module of the store reads it there when it
needs it, so a change is never silently ignored by a module holding a copy.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TUNING", "Tuning"]


@dataclass
class Tuning:
    """The store's tunables (docs/architecture.md, "Measurements behind constants").

    Attributes
    ----------
    block_bytes : int
        Bytes of arrays a block holds at most (a write packs rows into such blocks).
    probe_stride : int
        A lookup batch samples every ``probe_stride``-th key's index row to find the
        blocks it touches, then reads their directories.
    touch_interval : float
        Seconds after which a hit rewrites its row's ``last_used`` (rewriting on every
        hit would turn warm reads into writes; minutes are plenty for LRU eviction).
    blob_open : bool
        Read slices of a block through incremental BLOB I/O (Python >= 3.11), else
        whole blocks.
    fast_reads : tuple of callables or None
        Read strategies tried before the index rows; None: the block directories.
    clock : callable
        Seconds since the epoch (``last_used``, claims).
    crc32 : callable or None
        The CRC-32 of entries; None: zlib-ng's where installed, else zlib's.
    """

    block_bytes: int = 1 << 20
    probe_stride: int = 64
    touch_interval: float = 60.0
    blob_open: bool = hasattr(sqlite3.Connection, "blobopen")
    fast_reads: tuple[Any, ...] | None = None
    clock: Callable[[], float] = time.time
    crc32: Callable[..., int] | None = None


#: The store's tunables for this process.
TUNING = Tuning()
