"""File operations around the database: links refused, private directories, moving aside.

SQLite opens (and creates) the database and its ``-wal``/``-shm``/``-journal``
siblings by name; everything here is about doing that safely: never through a
symbolic link, in directories only the user can read, and without ever
closing a connection whose close would delete another file's WAL
(:func:`_abandon`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sqlite3
import time
from pathlib import Path

__all__ = ["move_aside", "refuse_links"]

_SIBLINGS = ("-wal", "-shm", "-journal")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)  # a link put in the file's place is not the file
    except OSError:
        return None
    return st.st_dev, st.st_ino


def refuse_links(path: Path) -> None:
    """Raise if the database file or one of its SQLite siblings is a symbolic link.

    SQLite opens (and creates) these files by name and follows links, so a link
    planted there would make it write, or :func:`move_aside` rename, whatever the
    link points to. Directories above the file are not checked: they are resolved
    when the path is (see :func:`xlmt_sklearn.store._cache._resolve_path`).

    Parameters
    ----------
    path : pathlib.Path
        The database file.

    Raises
    ------
    OSError
        ``errno.ELOOP``, naming the link, when any of them is a symbolic link
        (dangling or not).
    """
    for name in (str(path), *(f"{path}{s}" for s in _SIBLINGS)):
        if os.path.islink(name):
            raise OSError(
                errno.ELOOP,
                "the cache file is a symbolic link, which xlmt_sklearn never follows "
                "(point the cache at the real file or its directory)",
                name,
            )


def _make_dirs(directory: Path) -> None:
    # os.makedirs(mode=...) applies the mode to the leaf only; every directory we create
    # may end up holding users' texts' embeddings, so each one gets 0o700.
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process created it first
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask


def _create_private(path: Path) -> None:
    # Create the file ourselves so it is private (0o600); SQLite gives the -wal and
    # -shm files the same mode. O_EXCL never creates through a link.
    with contextlib.suppress(FileExistsError):
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600))


def move_aside(path: Path) -> Path | None:
    """Rename a damaged database and its ``-wal``/``-shm`` siblings out of the way.

    Parameters
    ----------
    path : pathlib.Path
        The database file.

    Returns
    -------
    pathlib.Path or None
        The new name, ``<path>.corrupt-<timestamp>``, or ``None`` when ``path`` no
        longer exists.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    for suffix in _SIBLINGS:
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    return target


# Connections that must never be closed: closing the last connection to a WAL database
# checkpoints and deletes "<path>-wal" *by name*, which destroys the WAL of a new file
# now at that path (after a move_aside elsewhere) or of a parent process (after fork).
# They are pinned with an extra reference so that not even interpreter shutdown closes
# them; the OS drops the file descriptors at exit without touching any file.
_ABANDONED: list[sqlite3.Connection] = []


def _abandon(conn: sqlite3.Connection) -> None:
    _ABANDONED.append(conn)
    with contextlib.suppress(Exception):  # not CPython: the list reference has to do
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
