"""One process-local connection to one cache file: :class:`SQLiteStore`.

Ties the other modules together: opening (:mod:`._files`, :mod:`._schema`), one
transaction per operation, reads through the fast reads
(:data:`DEFAULT_FAST_READS`) then the index rows (:mod:`._directory`,
:mod:`._read`), writes (:mod:`._write`), and turning corruption into a moved-aside
file and a :class:`~._failures.CorruptStoreError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from . import _write
from ._codec import Row, _key_ids
from ._directory import read_directed
from ._failures import CorruptStoreError, StoreClosedError, _is_corruption, classify_error
from ._files import _abandon, _create_private, _identity, _make_dirs, move_aside, refuse_links
from ._read import read_index_rows
from ._schema import _ensure_schema, _retry_busy
from ._sql import _chunks
from ._tuning import TUNING

__all__ = [
    "MMAP_SIZE",
    "OPEN_MODES",
    "READ_BATCH",
    "ReadResult",
    "SQLiteStore",
]

#: Keys read and decoded together by :meth:`SQLiteStore.get_many`.
READ_BATCH = 1000


#: Bytes of the file SQLite may memory-map for reading: none. A mapped file that
#: another process truncates (``cp`` over it, ``: > file``) kills the reading process
#: with SIGBUS at its next touch of a page past the new end, and no check before a
#: read can close that window. Reading through read() calls instead costs warm lookups
#: about 1.2x in input order and 3x in random order (docs/reliability.md, "Truncation
#: under a reader"): a slower lookup is a price, a dead notebook kernel is not.
MMAP_SIZE = 0


_T = TypeVar("_T")


def _lenient_text(raw: bytes) -> str:
    # A TEXT value that is not UTF-8 becomes a string no check accepts (a lone
    # surrogate per bad byte), so its row is invalid: a miss, then purged.
    return raw.decode("utf-8", "surrogateescape")


def _undecodable(exc: BaseException) -> bool:
    # What the sqlite3 module raises when a TEXT value is not valid UTF-8.
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
        "Could not decode to UTF-8"
    )


#: A fast read path: ``(conn, ids, key_of, stale_before) -> (found, served ids)``.
FastRead = Callable[
    [sqlite3.Connection, list[int], dict[int, bytes], float],
    tuple[dict[bytes, tuple[np.ndarray, int]], set[int]],
]

#: Read strategies tried, in order, before the index rows answer the ids they left
#: (unless :attr:`~._tuning.Tuning.fast_reads` names others). Each only serves keys,
#: never decides a miss, so removing one changes speed only.
DEFAULT_FAST_READS: tuple[FastRead, ...] = (read_directed,)


#: How a file is opened, in order: read-write; read-only (``?mode=ro``) when the
#: read-write open fails because the file or its directory cannot be written (SQLite
#: must create the ``-wal`` and ``-shm`` files next to a WAL database, so a
#: read-only directory refuses even reads); ``?immutable=1`` when that fails too
#: because those files do not exist and cannot be created: SQLite then reads the
#: main file as it is, without locks or the WAL (a writer with more rights may
#: change it meanwhile: whatever fails validation is a miss, a malformed page is
#: treated as corruption). Writes on a read-only store fail with SQLITE_READONLY,
#: which :class:`~xlmt_sklearn.store._cache.EmbeddingCache` reports once and then skips.
OPEN_MODES = ("rw", "ro", "immutable")

_SQLITE_CANTOPEN = 14


def _connect(path: Path, timeout: float, how: str) -> sqlite3.Connection:
    # One connection, opened as ``how`` (one of OPEN_MODES) says.
    if how == "rw":
        target, uri = str(path), False
    else:
        query = "mode=ro" if how == "ro" else "mode=ro&immutable=1"
        target, uri = f"file:{urllib.parse.quote(str(path))}?{query}", True
    return sqlite3.connect(
        target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=uri
    )


def _read_only_failure(exc: sqlite3.OperationalError, path: Path) -> bool:
    # Whether opening ``path`` failed because something could not be written or
    # created (worth a read-only attempt), rather than because it is unreadable.
    code = getattr(exc, "sqlite_errorcode", None)
    cantopen = (code is not None and code & 0xFF == _SQLITE_CANTOPEN) or (
        "unable to open database file" in str(exc)
    )
    if not (cantopen or classify_error(exc) == "nowrite"):
        return False
    try:
        return os.stat(path).st_size > 0  # an empty file has nothing to read
    except OSError:
        return False


class ReadResult(NamedTuple):
    """What :meth:`SQLiteStore.get_many` found.

    Attributes
    ----------
    values : list of (numpy.ndarray, int) or None
        One item per requested key, in order.
    touch : list of int
        Row ids of hits whose ``last_used`` is older than :attr:`~._tuning.Tuning.touch_interval`.
    invalid : list of int
        Row ids of entries that failed validation (reported as misses; to be deleted).
    """

    values: list[tuple[np.ndarray, int] | None]
    touch: list[int]
    invalid: list[int]


class SQLiteStore:
    """One process-local connection to one cache file.

    Obtain instances through :func:`~._pool.acquire` (which pools them per path
    and process) rather than directly. Every method is thread-safe; operations
    on one store are serialised by :attr:`lock`. Database errors propagate
    unchanged except corruption, which moves the file aside (see
    :func:`~._files.move_aside`) and raises :class:`~._failures.CorruptStoreError`.

    Parameters
    ----------
    path : pathlib.Path
        Absolute path of the database file; missing parent directories are created
        with mode 0o700 and a new file with mode 0o600.
    timeout : float
        Seconds to wait for another process's lock before failing with
        ``sqlite3.OperationalError("database is locked")``.

    Attributes
    ----------
    readonly : bool
        Whether the file could only be opened for reading (a read-only file or
        directory, see :data:`OPEN_MODES`); writes then fail with SQLITE_READONLY.

    Raises
    ------
    CorruptStoreError
        If the file exists but is not a readable xlmt_sklearn cache (it has been
        moved aside).
    IncompatibleStoreError
        If the file was written by a newer schema version.
    OSError, sqlite3.Error
        If the file cannot be created or opened.
    """

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.closed = False
        refuse_links(path)
        if path.is_dir():
            raise IsADirectoryError(
                errno.EISDIR, "a directory exists where the cache database should be", str(path)
            )
        _make_dirs(path.parent)
        _create_private(path)
        self.identity = _identity(path)
        #: True when the file could only be opened for reading (see :data:`OPEN_MODES`).
        self.readonly = False
        for how in OPEN_MODES:
            try:
                self._conn = self._open(how)
            except sqlite3.OperationalError as exc:
                if how == OPEN_MODES[-1] or not _read_only_failure(exc, path):
                    raise
                continue
            self.readonly = how != "rw"
            return

    def _open(self, how: str) -> sqlite3.Connection:
        """Open :attr:`path` as ``how`` says (see :data:`OPEN_MODES`) and check its schema."""
        path, timeout = self.path, self.timeout
        conn = _connect(path, timeout, how)
        try:
            # A link swapped in between the checks and the open: SQLite followed it.
            # Leave that connection open (see _abandon): closing it could checkpoint
            # into, or delete the WAL of, whatever the link points to.
            refuse_links(path)
            if _identity(path) != self.identity:
                # Replaced in between (by a link and back, or by another process moving
                # a damaged file aside): the caller opens it again.
                raise StoreClosedError(f"{path} was replaced while being opened")
        except (OSError, StoreClosedError):
            _abandon(conn)
            raise
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
            _retry_busy(lambda: _ensure_schema(conn, writable=how == "rw"), timeout)
        except BaseException as exc:
            if _is_corruption(exc):
                raise self._quarantine(conn, exc) from exc
            conn.close()
            raise
        return conn

    # -- Private interface: housekeeping -----------------------------------------------

    def is_current(self) -> bool:
        """Whether the file at :attr:`path` is still the one this store has open."""
        return self.identity is not None and _identity(self.path) == self.identity

    def _quarantine(self, conn: sqlite3.Connection, exc: BaseException) -> CorruptStoreError:
        # Closed from now on: the pool replaces a closed store at the next acquire.
        self.closed = True
        if self.is_current():
            with contextlib.suppress(sqlite3.Error):
                conn.close()  # before the rename, so its WAL cleanup hits its own files
            moved = move_aside(self.path)
        else:
            _abandon(conn)  # someone else already replaced the file; see _abandon
            moved = None
        return CorruptStoreError(self.path, moved, exc)

    def _begin(self, mode: str = "") -> sqlite3.Connection:
        if self.closed:
            raise StoreClosedError(str(self.path))
        conn = self._conn
        if conn.in_transaction:
            # Left open by an interrupt that struck between BEGIN and the handler in
            # _transaction (or inside it): end it rather than fail on "BEGIN".
            conn.execute("ROLLBACK")
        conn.execute(f"BEGIN {mode}")
        return conn

    def _fail(self, exc: BaseException) -> BaseException:
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        if _is_corruption(exc):
            return self._quarantine(self._conn, exc)
        return exc

    @contextlib.contextmanager
    def _transaction(self, mode: str = "") -> Iterator[sqlite3.Connection]:
        # One transaction under the lock: committed when the body returns, rolled back
        # (and a corrupt file quarantined) when it raises a database error. Anything
        # else (KeyboardInterrupt from Ctrl-C or a notebook's "interrupt kernel",
        # SystemExit, MemoryError, a bug) also rolls back before it propagates: an open
        # write transaction would keep the file's write lock for the life of the
        # process, stalling every other process's writes.
        with self.lock:
            try:
                conn = self._begin(mode)
                yield conn
                conn.execute("COMMIT")
            except (sqlite3.Error, StoreClosedError) as exc:
                raise self._fail(exc) from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if not self.closed and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def _run(self, mode: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` in one :meth:`_transaction`; once more if some text was not UTF-8.

        The ``sqlite3`` module refuses to return a TEXT value that is not valid
        UTF-8 (a row written by a broken or hostile writer), which would make every
        read of that row fail, and the cache with it. Decoding every value
        leniently costs about 1 us more per index row (3.3 -> 4.5 us per row of a
        1,000-row SELECT of the index columns), so only the retry does it: the row
        then fails validation like any damaged row (a miss, deleted afterwards).
        """
        try:
            with self._transaction(mode) as conn:
                return body(conn)
        except sqlite3.OperationalError as exc:
            if not _undecodable(exc):
                raise
        with self.lock:
            self._conn.text_factory = _lenient_text
            try:
                with self._transaction(mode) as conn:
                    return body(conn)
            finally:
                self._conn.text_factory = str

    def close(self) -> None:
        """Close the connection; later calls raise :class:`~._failures.StoreClosedError`."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self._conn.close()

    # -- Public interface: operations --------------------------------------------------

    def get_many(self, keys: Sequence[bytes], stale_before: float) -> ReadResult:
        """Look up keys (the fast reads, then index rows) in one read transaction.

        Parameters
        ----------
        keys : sequence of bytes
            Keys to look up; duplicates allowed (each gets its own array).
        stale_before : float
            Hits whose ``last_used`` is below this timestamp are listed in
            ``ReadResult.touch``.

        Returns
        -------
        ReadResult
        """
        unique = list(dict.fromkeys(keys))
        ids = _key_ids(unique)
        key_of = dict(zip(ids, unique, strict=True))
        wanted = set(unique)
        found: dict[bytes, tuple[np.ndarray, int]] = {}
        touch: list[int] = []
        invalid: list[int] = []

        def body(conn: sqlite3.Connection) -> None:
            # A slice of keys at a time, so that its rows, bytes and array stay in the
            # CPU's caches (docs/architecture.md, "Measurements behind constants").
            found.clear()
            touch.clear()
            invalid.clear()
            for part in _chunks(ids, READ_BATCH):
                fast_reads = TUNING.fast_reads
                for fast in DEFAULT_FAST_READS if fast_reads is None else fast_reads:
                    got, served = fast(conn, part, key_of, stale_before)
                    found.update(got)
                    if served:
                        part = [i for i in part if i not in served]
                if not part:
                    continue
                got, stale, bad = read_index_rows(conn, part, stale_before)
                found.update(got)
                # A row holding another key under a requested row id (a collision) is a
                # miss for that request: only hits are touched.
                if stale:
                    hit_ids = set(_key_ids([k for k in got if k in wanted]))
                    touch.extend(i for i in stale if i in hit_ids)
                invalid.extend(bad)

        self._run("", body)
        values = list(map(found.get, keys))
        if len(unique) != len(keys):  # a repeated key must not share memory
            seen: set[bytes] = set()
            for i, key in enumerate(keys):
                hit = values[i]
                if hit is not None:
                    if key in seen:
                        values[i] = (hit[0].copy(), hit[1])
                    seen.add(key)
        return ReadResult(values, touch, invalid)

    def claim(self, keys: Sequence[bytes]) -> list[bool]:
        """Claim ``keys`` for this process to encode (:mod:`._claims`); per key, whether
        it is this process's (False: another live process's)."""
        from . import _claims

        ids = _key_ids(list(keys))
        with self._transaction("IMMEDIATE") as conn:
            return _claims.claim(conn, ids, TUNING.clock())

    def release(self, keys: Sequence[bytes]) -> None:
        """Drop this process's claims on ``keys``."""
        from . import _claims

        with self._transaction("IMMEDIATE") as conn:
            _claims.release(conn, _key_ids(list(keys)))

    def touch_and_purge(self, touch: Sequence[int], invalid: Sequence[int]) -> None:
        """Mark hits as used now and delete rows that failed validation, in one transaction.

        Parameters
        ----------
        touch : sequence of int
            Row ids (from :class:`ReadResult`) whose ``last_used`` becomes now.
        invalid : sequence of int
            Row ids to delete.
        """
        if not touch and not invalid:
            return
        now = TUNING.clock()
        with self._transaction("IMMEDIATE") as conn:
            _write.touch_and_purge(conn, touch, invalid, now)

    def put_many(self, rows: Sequence[Row], max_size: int | None = None) -> None:
        """Insert or replace rows in one transaction, then evict down to ``max_size``.

        The arrays are packed into new blocks (see :func:`~._write.pack`); blocks
        left less than half live by the replacements or the eviction are compacted
        in the same transaction.

        Parameters
        ----------
        rows : sequence of Row
            Encoded entries (see :func:`~._codec.encode_rows`).
        max_size : int or None, default=None
            Cap on the summed ``nbytes`` of all entries; when exceeded, least
            recently used entries are deleted in the same transaction. ``None``
            means no cap.
        """
        if not rows:
            return
        now = TUNING.clock()
        ids, blocks = _write.pack(rows)
        self._run("IMMEDIATE", lambda conn: _write.put_packed(conn, ids, blocks, max_size, now))

    def regroup(self, keys: Sequence[bytes]) -> None:
        """Rewrite the entries of ``keys`` into new blocks, in the order given.

        Writes follow the encoding order (one block per batch, texts sorted by
        length), while lookups follow the input order; after a transform has
        written a chunk of misses it regroups them in input order, so that later
        lookups of those texts read a few blocks front to back instead of a
        slice of every batch's block. Nothing happens when the entries already
        lie in as few blocks as their size needs. Missing keys are skipped.

        Parameters
        ----------
        keys : sequence of bytes
            Keys in the order their arrays should be laid out.
        """
        order = list(dict.fromkeys(keys))
        if len(order) < 2:
            return
        self._run("IMMEDIATE", lambda conn: _write.regroup(conn, order))

    def clear(self) -> None:
        """Delete every entry in one transaction (other processes see all or nothing)."""
        with self._transaction("IMMEDIATE") as conn:
            _write.clear(conn)

    def counts(self) -> tuple[int, int]:
        """Return ``(number of entries, summed nbytes)`` from the trigger-kept counters."""
        with self.lock:
            try:
                if self.closed:
                    raise StoreClosedError(str(self.path))
                got = dict(
                    self._conn.execute(
                        "SELECT name, CAST(value AS INTEGER) FROM info "
                        "WHERE name IN ('total_entries', 'total_bytes')"
                    )
                )
            except (sqlite3.Error, StoreClosedError) as exc:
                raise self._fail(exc) from exc
        return int(got.get("total_entries", 0)), int(got.get("total_bytes", 0))
