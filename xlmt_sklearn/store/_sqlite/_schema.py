"""The file format: tables, triggers, the magic value and the schema version.

:func:`_ensure_schema` creates the tables in a new file, or checks that an
existing one is an xlmt_sklearn cache of this :data:`SCHEMA_VERSION` (a
foreign or older file is reported as corrupt, i.e. moved aside and never
deleted; a newer one is left untouched), then sets the connection's journal
pragmas. ``info`` holds the magic value, the schema version and two counters,
``total_entries`` and ``total_bytes``, kept exact by the triggers so that size
checks never scan a table; the triggers also keep each block's live counters
and delete a block, with its directory, once no entry is left in it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable

from ._failures import IncompatibleStoreError, classify_error

__all__ = ["JOURNAL_SIZE_LIMIT", "MAGIC", "SCHEMA_VERSION"]

SCHEMA_VERSION = 5  # 2: per-row CRC-32; 3: the CRC covers the key; 4: blocks; 5: directories
MAGIC = "xlmt_sklearn.embedding_cache"

#: Size the write-ahead log is truncated to after a checkpoint.
JOURNAL_SIZE_LIMIT = 64 << 20

_GC_BLOCK = (
    "DELETE FROM blocks WHERE id = OLD.block AND NOT EXISTS "
    "(SELECT 1 FROM block_use WHERE id = OLD.block AND live > 0); "
    "DELETE FROM block_dirs WHERE id = OLD.block AND NOT EXISTS "
    "(SELECT 1 FROM block_use WHERE id = OLD.block AND live > 0); "
    "DELETE FROM block_use WHERE id = OLD.block AND live <= 0; "
)

_SCHEMA = (
    "CREATE TABLE info(name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE blocks(id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    # Counters live apart from the blocks: updating a row rewrites all of it, BLOB included.
    "CREATE TABLE block_use(id INTEGER PRIMARY KEY, size INTEGER NOT NULL, "
    "live INTEGER NOT NULL, live_bytes INTEGER NOT NULL)",
    "CREATE TABLE block_dirs(id INTEGER PRIMARY KEY, dtype TEXT NOT NULL, "
    "shape TEXT NOT NULL, items BLOB NOT NULL)",
    # The row id is key_id(key): an integer b-tree lookup, faster than a BLOB key
    # (docs/architecture.md, "Measurements behind constants").
    "CREATE TABLE entries(id INTEGER PRIMARY KEY, key BLOB NOT NULL, block INTEGER NOT NULL, "
    "pos INTEGER NOT NULL, nbytes INTEGER NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, "
    "meta INTEGER NOT NULL, last_used REAL NOT NULL, crc INTEGER)",
    # Covering index: eviction walks it in LRU order and reads nbytes (and the row id,
    # which every index carries) without touching the table.
    "CREATE INDEX entries_lru ON entries(last_used, nbytes)",
    # Compaction finds a block's entries; directory reads ask for min(last_used) per block.
    "CREATE INDEX entries_block ON entries(block, last_used)",
    "CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN "
    "UPDATE info SET value = CAST(value AS INTEGER) + 1 WHERE name = 'total_entries'; "
    "UPDATE info SET value = CAST(value AS INTEGER) + NEW.nbytes WHERE name = 'total_bytes'; "
    "UPDATE block_use SET live = live + 1, live_bytes = live_bytes + NEW.nbytes "
    "WHERE id = NEW.block; "
    "END",
    "CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN "
    "UPDATE info SET value = CAST(value AS INTEGER) - 1 WHERE name = 'total_entries'; "
    "UPDATE info SET value = CAST(value AS INTEGER) - OLD.nbytes WHERE name = 'total_bytes'; "
    "UPDATE block_use SET live = live - 1, live_bytes = live_bytes - OLD.nbytes "
    "WHERE id = OLD.block; " + _GC_BLOCK + "END",
    # Compaction moves an entry to another block; its size never changes.
    "CREATE TRIGGER entries_move AFTER UPDATE OF block ON entries BEGIN "
    "UPDATE block_use SET live = live + 1, live_bytes = live_bytes + NEW.nbytes "
    "WHERE id = NEW.block; "
    "UPDATE block_use SET live = live - 1, live_bytes = live_bytes - OLD.nbytes "
    "WHERE id = OLD.block; " + _GC_BLOCK + "END",
)


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _retry_busy(op: Callable[[], object], timeout: float) -> None:
    """Run ``op``, retrying for up to ``timeout`` seconds while SQLite reports a lock.

    Switching a file to WAL (and the first read of a WAL file another process is
    setting up) can fail with SQLITE_BUSY at once, without consulting the busy
    handler: two processes opening a new cache together would otherwise make one
    of them give up the cache.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            op()
            return
        except sqlite3.OperationalError as exc:
            if classify_error(exc) != "busy" or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")  # must run outside a transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _table_names(conn):  # re-check: another process may have won the race
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO info(name, value) VALUES (?, ?)",
                [
                    ("magic", MAGIC),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("total_entries", "0"),
                    ("total_bytes", "0"),
                ],
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _ensure_schema(conn: sqlite3.Connection, writable: bool = True) -> None:
    # Inspect before changing anything, so a foreign database is never switched to WAL.
    # A connection opened read-only (``writable=False``) only checks.
    if writable and not _table_names(conn):
        _create_tables(conn)
    names = _table_names(conn)
    if not {"info", "entries"} <= names:
        raise sqlite3.DatabaseError("file is not a database: not an xlmt_sklearn cache")
    info = dict(conn.execute("SELECT name, value FROM info"))
    if info.get("magic") != MAGIC:
        raise sqlite3.DatabaseError("file is not a database: not an xlmt_sklearn cache")
    version = str(info.get("schema_version"))
    if version != str(SCHEMA_VERSION):
        if version.isdigit() and int(version) > SCHEMA_VERSION:
            # Written by a newer xlmt_sklearn: leave it alone rather than destroy its data.
            raise IncompatibleStoreError(
                f"cache schema version {version} is newer than this xlmt_sklearn "
                f"supports ({SCHEMA_VERSION}); upgrade xlmt_sklearn or use another path"
            )
        # Not readable by this version (schema 3 and older kept each array in its index
        # row; 4 has neither the directories nor triggers that delete them): treated
        # like a damaged file, i.e. moved aside, never deleted.
        raise sqlite3.DatabaseError(
            f"file is not a database: unknown schema version {version} "
            f"(this xlmt_sklearn reads version {SCHEMA_VERSION})"
        )
    if not {"blocks", "block_use", "block_dirs"} <= names:
        raise sqlite3.DatabaseError("file is not a database: cache tables missing")
    if not writable:
        return
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: durable against process crashes
    # After a huge batch, shrink the WAL back instead of keeping its peak size on disk.
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
