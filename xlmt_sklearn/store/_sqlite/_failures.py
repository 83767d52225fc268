"""What can go wrong in a store operation, and what the caller should do about it.

The store's own exceptions, and :func:`classify_error`, which sorts any
exception into ``"corrupt"``, ``"busy"``, ``"nowrite"`` or ``"fatal"``: the
policy built on that (warnings, degrading to no cache) lives in
:mod:`xlmt_sklearn.store._cache`.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

__all__ = [
    "CorruptStoreError",
    "IncompatibleStoreError",
    "StoreClosedError",
    "classify_error",
]

# Primary SQLite result codes (exceptions carry them as ``sqlite_errorcode`` on 3.11+).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26

# Disk full, quota exceeded, read-only file system (EDQUOT is missing on Windows).
_NOWRITE_ERRNOS = {
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name)
}


class CorruptStoreError(Exception):
    """The cache file was corrupt or not an xlmt_sklearn cache and has been moved aside.

    Parameters
    ----------
    path : pathlib.Path
        The database path.
    moved_to : pathlib.Path or None
        Where the damaged file now is; ``None`` when another process had already
        replaced it.
    cause : BaseException
        The error that revealed the damage.
    """

    def __init__(self, path: Path, moved_to: Path | None, cause: BaseException):
        self.path, self.moved_to, self.cause = path, moved_to, cause
        super().__init__(f"{path}: {type(cause).__name__}: {cause}")


class IncompatibleStoreError(Exception):
    """The file is a cache written by a newer schema version; it is left untouched."""


class StoreClosedError(RuntimeError):
    """The store was closed (by another thread) between being acquired and used."""


def classify_error(exc: BaseException) -> str:
    """Sort an exception raised by a store operation into what the caller should do.

    Parameters
    ----------
    exc : BaseException
        The exception.

    Returns
    -------
    str
        ``"corrupt"`` (file damaged or not ours), ``"busy"`` (lock timeout; try
        later), ``"nowrite"`` (disk full or read-only: reads may still work) or
        ``"fatal"`` (anything else: the file cannot be used).
    """
    if isinstance(exc, CorruptStoreError):
        return "corrupt"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        code = None if code is None else code & 0xFF  # extended -> primary code
        msg = str(exc).lower()
        if (
            code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
            or "malformed" in msg
            or "not a database" in msg
        ):
            return "corrupt"
        if code == _SQLITE_FULL or "disk is full" in msg:
            return "nowrite"
        if code == _SQLITE_READONLY or "readonly" in msg or "read-only" in msg:
            return "nowrite"
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "is locked" in msg or "busy" in msg:
            return "busy"
        return "fatal"
    if isinstance(exc, OSError) and exc.errno in _NOWRITE_ERRNOS:
        return "nowrite"
    return "fatal"


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and classify_error(exc) == "corrupt"
