"""The per-process pool of open stores, and what a forked child does with its parent's.

Stores are keyed by (absolute path, pid) so that a forked, loky or Spark worker
never touches a connection its parent opened (SQLite forbids carrying
connections across ``fork()``): after a fork the child abandons every inherited
connection (see :func:`~._files._abandon`) and starts with an empty pool.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..._state import owns
from ._files import _abandon
from ._store import SQLiteStore

__all__ = ["acquire", "close_store"]

_POOL: dict[tuple[str, int], SQLiteStore] = {}
_POOL_LOCK = threading.RLock()


def acquire(path: Path, timeout: float = 30.0) -> SQLiteStore:
    """Return this process's open store for ``path``, opening it if needed.

    A pooled store that was closed (e.g. after it found the file corrupt) or whose
    file was deleted or replaced (e.g. moved aside by another process) is dropped
    and a new one opened.

    Parameters
    ----------
    path : pathlib.Path
        Absolute database path.
    timeout : float, default=30.0
        Lock timeout in seconds used when a new connection is opened.

    Returns
    -------
    SQLiteStore
    """
    key = (str(path), os.getpid())
    with _POOL_LOCK:
        store = _POOL.get(key)
        if store is not None:
            if not store.closed and store.is_current():
                return store
            del _POOL[key]
            if not store.closed:
                store.closed = True
                _abandon(store._conn)
        store = SQLiteStore(path, timeout)
        _POOL[key] = store
        return store


def close_store(path: Path) -> None:
    """Close and forget this process's pooled store for ``path``, if any.

    Parameters
    ----------
    path : pathlib.Path
        Absolute database path.
    """
    with _POOL_LOCK:
        store = _POOL.pop((str(path), os.getpid()), None)
    if store is not None:
        if store.is_current():
            store.close()
        else:
            with store.lock:
                if not store.closed:
                    store.closed = True
                    _abandon(store._conn)


def _after_fork_in_child() -> None:
    global _POOL_LOCK
    _POOL_LOCK = threading.RLock()  # the parent's may have been held by another thread
    for store in _POOL.values():
        _abandon(store._conn)
    _POOL.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@owns("connections")
def _reset_connections() -> None:
    for store in list(_POOL.values()):
        close_store(store.path)
