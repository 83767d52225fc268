"""Disk cache for embeddings: the user-facing API.

An :class:`EmbeddingCache` maps a 32-byte key (see :func:`~._keys.make_keys`) to one
float32 or float16 array plus an integer ``meta``. It is backed by one SQLite
file that any number of threads and processes may share (see
:mod:`xlmt_sklearn.store._sqlite`).

A cache can only ever make things faster: every I/O or database problem is
reported as a :class:`~xlmt_sklearn._errors.CacheWarning` and turned into
misses or dropped writes, never into an exception or a wrong vector.

The interface the vectorizers call, :class:`CacheBase`, and the do-nothing
:class:`NullCache` used for ``cache=None`` live in :mod:`._base` and are
re-exported here; :func:`~._adapt.as_cache` turns every accepted ``cache=`` value
(None, a path, a cache object, any object with ``get_many`` and ``put_many``)
into a :class:`CacheBase`; keys are made in :mod:`._keys`.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .._errors import CacheWarning, user_stacklevel
from . import _sqlite as store_mod
from ._base import CacheBase, CacheStats, NullCache
from ._keys import _check_keys, parse_size

__all__ = [
    "DEFAULT_FILENAME",
    "CacheBase",
    "CacheStats",
    "EmbeddingCache",
    "NullCache",
]

#: File name used when the cache path is a directory.
DEFAULT_FILENAME = "xlmt_sklearn_cache.sqlite"

_T = TypeVar("_T")
_FAILED: Any = object()  # sentinel: the operation failed and was already reported


def _resolve_path(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cache path must be a str or os.PathLike, got {type(path).__name__}")
    raw = os.path.expanduser(os.fspath(path))
    if not isinstance(raw, str):
        raise TypeError("cache path must be text, not bytes")
    if raw == "":
        raise ValueError("cache path must not be empty")
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if raw.endswith(seps) or os.path.isdir(raw):
        raw = os.path.join(raw, DEFAULT_FILENAME)
    # The directories are resolved (a ~/.cache linked to another disk is common); the
    # file name is kept as given, never followed: the store refuses a symbolic link
    # there instead of creating, opening or moving aside whatever it points to.
    p = Path(raw)
    return p.parent.resolve() / p.name


#: (path, pid, cause) of the CacheWarnings given (see EmbeddingCache._warn).
_WARNED: set[tuple[str, int, str]] = set()
_WARNED_LOCK = threading.Lock()


#: Operations that write: a file that refuses writes makes them no-ops (reads go on).
_WRITES = ("write", "touch", "regroup", "clear", "claim", "release")


class EmbeddingCache(CacheBase):
    """A persistent, process-safe cache of embedding arrays in one SQLite file.

    Parameters
    ----------
    path : str or os.PathLike
        The database file (e.g. ``"emb.sqlite"``; ``~`` is expanded). If it is an
        existing directory or ends with a path separator, the database is
        ``<path>/xlmt_sklearn_cache.sqlite``. Missing parent directories are
        created with mode 0o700 on first use, the file with mode 0o600.
    max_size : int, str or None, default=None
        Cap on the summed array bytes, as an int or a string like ``"500MB"``,
        ``"2GB"`` or ``"1.5GiB"`` (see :func:`parse_size`). After a write that
        exceeds it, least recently used entries are deleted until under the cap.
        ``None`` means unlimited. Recency has a resolution of about a minute
        (reads refresh an entry's timestamp at most that often).
    timeout : float, default=30.0
        Seconds to wait for another process's write lock before the operation
        is given up (with a :class:`~xlmt_sklearn._errors.CacheWarning`).

    Attributes
    ----------
    path : pathlib.Path
        The absolute database file path: its directories resolved, the file name
        as given (never followed, see Notes).
    max_size : int, str or None
        As given.
    timeout : float
        As given, in seconds.

    Notes
    -----
    Constructing is cheap and opens nothing; the file is opened on first use,
    once per process (connections are pooled per path and process id, so
    pickled copies sent to forked, loky or Spark workers open their own).
    Pickles and copies keep only ``path``, ``max_size`` and ``timeout``.

    Failures never raise: a corrupt or foreign file is moved aside to
    ``<path>.corrupt-<timestamp>`` and replaced by a fresh cache; a file that
    cannot be used at all (permissions, a directory in the way, ...) disables
    this object for the rest of the process after one warning; a full disk, a
    read-only file or a read-only directory (the file is then opened read-only)
    disables writes only. SQLite needs working file locks, so do
    not put the cache on a network file system, and never copy another file over
    a cache that is in use (delete it, or call :meth:`clear`, instead).

    A symbolic link is never followed for the database file or its ``-wal``,
    ``-shm`` and ``-journal`` siblings (directories on the way are): such a
    cache is refused with one :class:`~xlmt_sklearn._errors.CacheWarning` and
    results are computed without it. Nothing the link points to is created,
    opened, renamed or replaced, so a link planted in a shared folder cannot
    make a process overwrite another file. Point ``path`` at the real file or
    at its directory instead.

    Examples
    --------
    >>> cache = EmbeddingCache("/tmp/emb.sqlite", max_size="1GB")  # doctest: +SKIP
    >>> keys = make_keys("model@rev/mean", ["hello", "world"])  # doctest: +SKIP
    >>> cache.get_many(keys)  # doctest: +SKIP
    [None, None]
    """

    returns_finite_only = True  # its readers drop non-finite entries (see store._sqlite)
    coordinates = True  # claim() keeps processes from encoding one key at once

    def __init__(
        self,
        path: str | os.PathLike,
        max_size: int | str | None = None,
        *,
        timeout: float = 30.0,
    ):
        self._setup(_resolve_path(path), max_size, timeout)

    def _setup(self, path: Path, max_size: int | str | None, timeout: float) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
        if not (timeout >= 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout}")
        self.path = path
        self.max_size = max_size
        self.timeout = float(timeout)
        self._max_bytes = parse_size(max_size)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._disabled = False  # unusable: behave as a NullCache from now on
        self._readonly = False  # writes failed for good (disk full, read-only): reads only

    # -- pickling, equality, repr ------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "max_size": self.max_size, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(Path(state["path"]), state["max_size"], state["timeout"])

    def __repr__(self) -> str:
        extra = "" if self.timeout == 30.0 else f", timeout={self.timeout!r}"
        return f"EmbeddingCache({str(self.path)!r}, max_size={self.max_size!r}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmbeddingCache):
            return NotImplemented
        return (self.path, self._max_bytes) == (other.path, other._max_bytes)

    def __hash__(self) -> int:
        return hash((EmbeddingCache, self.path, self._max_bytes))

    # -- failure handling --------------------------------------------------------------

    def _warn(self, message: str, cause: str) -> None:
        """Warn once per process, file and ``cause`` (a kind of failure), at the user's line.

        Every estimator a search clones, and every task of a worker, gets its own cache
        object: the warning must not repeat per object (issue 27 counted 28 repeats).
        """
        key = (str(self.path), os.getpid(), cause)
        with _WARNED_LOCK:
            if key in _WARNED:
                return
            _WARNED.add(key)
        warnings.warn(message, CacheWarning, stacklevel=user_stacklevel())

    def _report(self, exc: BaseException, what: str) -> None:
        cause = f"{type(exc).__name__}: {exc}"
        kind = store_mod.classify_error(exc)
        if kind == "busy":
            if what not in ("touch", "regroup", "claim", "release"):  # costless to skip: quiet
                self._warn(
                    f"The embedding cache at '{self.path}' is busy ({cause}); this {what} was "
                    "skipped and results are computed without the cache (said once per "
                    "process). Raise the cache's timeout if this repeats.",
                    "busy",
                )
        elif kind == "nowrite" and what in _WRITES:
            if not self._readonly:
                self._readonly = True
                self._warn(
                    f"Cannot write to the embedding cache at '{self.path}' ({cause}); new "
                    "results are computed without the cache and not stored (writes are "
                    "disabled for this process, cached entries are still read).",
                    "nowrite",
                )
        elif not self._disabled:
            # fatal, corrupt again right after a fresh start, or unreadable: stop using it
            self._disabled = True
            self._warn(
                f"The embedding cache at '{self.path}' cannot be used ({cause}); results "
                "are computed without the cache (it is disabled for this process).",
                "disabled",
            )

    def _call(self, op: Callable[[store_mod.SQLiteStore], _T], what: str) -> _T:
        """Run ``op`` on this process's store; on failure warn and return ``_FAILED``.

        ``what`` ("lookup", "touch", "write", "regroup", "clear" or "count") names the
        operation in messages and decides how a failure degrades the cache.
        """
        corrupt_seen = reopened = False
        for _attempt in range(3):
            store = None
            try:
                store = store_mod.acquire(self.path, self.timeout)
                return op(store)
            except store_mod.StoreClosedError:
                continue  # closed by another thread between acquire and use: reopen
            except store_mod.CorruptStoreError as exc:
                if corrupt_seen:
                    self._report(exc.cause, what)
                    return _FAILED
                corrupt_seen = True
                where = (
                    f"moved it aside to '{exc.moved_to}'"
                    if exc.moved_to
                    else "another process already moved it aside"
                )
                cause = f"{type(exc.cause).__name__}: {exc.cause}"
                # stacklevel 3: _call <- public method <- caller
                warnings.warn(
                    f"The embedding cache at '{self.path}' was corrupt or not an "
                    f"xlmt_sklearn cache ({cause}); {where} and started a fresh cache. "
                    "Results are unaffected: anything not cached is computed without the "
                    "cache.",
                    CacheWarning,
                    stacklevel=user_stacklevel(),
                )
                continue  # retry once on the fresh file
            except Exception as exc:  # the cache must never break a transform
                if store is not None and not reopened and not store.is_current():
                    # The file was deleted or replaced under this operation ("disk I/O
                    # error"): the next acquire opens (or creates) the file now at the path.
                    reopened = True
                    continue
                self._report(exc, what)
                return _FAILED
        warnings.warn(
            f"The embedding cache at '{self.path}' kept being closed by other threads; "
            f"this {what} was skipped and results are computed without the cache.",
            CacheWarning,
            stacklevel=user_stacklevel(),
        )
        return _FAILED

    def _count(self, hits: int, misses: int) -> None:
        with self._lock:
            self._hits += hits
            self._misses += misses

    # -- API ---------------------------------------------------------------------------

    def recheck(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, int] | None]:
        """:meth:`get_many` for keys already counted as misses: a hit counts as a hit, a
        miss is not counted twice (:attr:`stats` stays one miss per key looked up)."""
        return self._get(keys, count_misses=False)

    def get_many(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, int] | None]:
        """Look up many keys at once.

        Parameters
        ----------
        keys : sequence of bytes
            Keys from :func:`make_keys`.

        Returns
        -------
        list of (numpy.ndarray, int) or None
            One item per key, in order: ``(array, meta)`` on a hit, where
            ``array`` is a new writable array of the stored dtype and shape, or
            ``None`` on a miss (also for every key when the cache is unusable).

        Raises
        ------
        TypeError
            If a key is not ``bytes`` (a programming error, not a cache problem).
        """
        return self._get(keys)

    def _get(
        self, keys: Sequence[bytes], count_misses: bool = True
    ) -> list[tuple[np.ndarray, int] | None]:
        keys = _check_keys(keys)
        if not keys:
            return []
        values: list[tuple[np.ndarray, int] | None] = [None] * len(keys)
        if not self._disabled:
            stale_before = store_mod.TUNING.clock() - store_mod.TUNING.touch_interval
            result = self._call(lambda s: s.get_many(keys, stale_before), "lookup")
            if result is not _FAILED:
                values = result.values
                if (result.touch or result.invalid) and not self._readonly:
                    # Failing to refresh timestamps does not make the hits wrong.
                    self._call(lambda s: s.touch_and_purge(result.touch, result.invalid), "touch")
        misses = values.count(None)
        self._count(len(values) - misses, misses if count_misses else 0)
        return values

    def put_many(
        self,
        keys: Sequence[bytes],
        arrays: Sequence[np.ndarray],
        metas: Sequence[int] | None = None,
    ) -> None:
        """Store many entries in one transaction (replacing existing keys).

        Parameters
        ----------
        keys : sequence of bytes
            Keys from :func:`make_keys`.
        arrays : sequence of numpy.ndarray
            One float32 or float16 array per key, any shape.
        metas : sequence of int or None, default=None
            One signed 64-bit integer per key returned with the array by
            ``get_many``; ``None`` stores 0.

        Raises
        ------
        TypeError, ValueError
            If the arguments are malformed (wrong dtype, non-bytes keys, length
            mismatch): programming errors, raised before anything is written.
            Storage problems never raise; they warn and drop the write.
        """
        rows = store_mod.encode_rows(keys, arrays, metas)
        if not rows or self._disabled or self._readonly:
            return
        self._call(lambda s: s.put_many(rows, self._max_bytes), "write")

    def regroup(self, keys: Sequence[bytes]) -> None:
        """Lay out the stored arrays of ``keys`` together, in this order.

        A layout hint that changes no value: the vectorizers call it after
        writing a chunk of new texts (written batch by batch in length order) so
        that looking those texts up again in input order, as a refit or a
        cross-validation fold does, finds each batch of keys in a few blocks,
        whose directories then serve it without reading an index row per key
        (about twice as fast). Keys that are not stored are ignored; storage
        problems never raise.

        Parameters
        ----------
        keys : sequence of bytes
            Keys from :func:`make_keys`, in the order of later lookups.
        """
        keys = _check_keys(keys)
        if len(keys) < 2 or self._disabled or self._readonly:
            return
        self._call(lambda s: s.regroup(keys), "regroup")

    def claim(self, keys: Sequence[bytes]) -> list[bool]:
        """Claim missing ``keys`` for this process (see :meth:`CacheBase.claim`): a key
        is this process's unless another live process claims it, on this host (checked
        by pid) or another (for an hour). A storage problem claims them all: a cache
        never blocks a transform."""
        keys = _check_keys(keys)
        if not keys or self._disabled or self._readonly:
            return [True] * len(keys)
        got = self._call(lambda s: s.claim(keys), "claim")
        return [True] * len(keys) if got is _FAILED else got

    def release(self, keys: Sequence[bytes]) -> None:
        """Drop this process's claims on ``keys``."""
        keys = _check_keys(keys)
        if keys and not self._disabled and not self._readonly:
            self._call(lambda s: s.release(keys), "release")

    def clear(self) -> None:
        """Delete every entry (atomically; safe while other processes use the file)."""
        if not self._disabled and not self._readonly:
            self._call(lambda s: s.clear(), "clear")

    @property
    def stats(self) -> CacheStats:
        """:class:`CacheStats`: this object's hit/miss counters and the database's size."""
        entries = nbytes = 0
        if not self._disabled and self.path.exists():  # don't create a file just to count
            counts = self._call(lambda s: s.counts(), "count")
            if counts is not _FAILED:
                entries, nbytes = counts
        with self._lock:
            hits, misses = self._hits, self._misses
        return CacheStats(hits, misses, entries, nbytes, str(self.path))

    def __len__(self) -> int:
        return self.stats.entries

    def close(self) -> None:
        """Close this process's connection to the file.

        Other :class:`EmbeddingCache` objects for the same path share that
        connection and transparently reopen it on their next call; so does this
        one.
        """
        store_mod.close_store(self.path)
