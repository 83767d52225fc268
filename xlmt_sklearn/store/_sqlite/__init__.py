"""SQLite storage primitives for the embedding cache.

This package only knows how to store and load arrays; the policy (warnings,
degrading to no cache, memoisation) lives in :mod:`xlmt_sklearn.store._cache`.

Layout of a cache file (schema 5, :mod:`._schema`)::

    blocks(id INTEGER PRIMARY KEY, data BLOB)          -- immutable once written
    block_use(id INTEGER PRIMARY KEY, size INTEGER, live INTEGER, live_bytes INTEGER)
    block_dirs(id INTEGER PRIMARY KEY, dtype TEXT, shape TEXT, items BLOB)  -- immutable
    entries(id INTEGER PRIMARY KEY, key BLOB, block INTEGER, pos INTEGER,
            nbytes INTEGER, dtype TEXT, shape TEXT, meta INTEGER, last_used REAL,
            crc INTEGER)
    info(name TEXT PRIMARY KEY, value TEXT)

The arrays of one write are packed back to back into blocks of up to
``TUNING.block_bytes``; ``entries`` holds a small index row per key saying where
its bytes are. The row id is the key's first 8 bytes (:func:`key_id`): an
integer primary key is much cheaper to look up than a 32-byte BLOB, and the
full key is stored and compared, so a collision is a miss, never a wrong
vector. Reads select the index rows and then slice the blocks through SQLite's
incremental BLOB I/O, which costs less than fetching one multi-kilobyte BLOB
row per key; a block whose arrays share a dtype and shape also has a
directory, which lets a lookup batch lying in a few blocks skip the index
rows. Arrays are stored as raw little-endian bytes plus a dtype name and a
shape string; nothing is ever unpickled or evaluated, and every entry is
validated (lengths, then a CRC-32 over its key, header and bytes) before it
is returned.

Modules, each importing only those above it:

========================  ==============================================================
``_codec``                array <-> bytes, :class:`Row`, key -> row id, CRC-32, directory items
``_failures``             the store's exceptions and :func:`classify_error`
``_sql``                  batched ``IN (...)`` queries, index rows, block handles
``_files``                symbolic links refused, private directories, :func:`move_aside`
``_schema``               tables, triggers, magic value and version, journal pragmas
``_read``                 the index-row read path (answers every lookup on its own)
``_directory``            the block-directory read path (optional, only ever faster)
``_write``                put, evict, regroup, compaction, purge, clear
``_store``                :class:`SQLiteStore`: one connection, one transaction per operation
``_pool``                 :func:`acquire` / :func:`close_store`: per-process pool, fork handling
``_tuning``               :data:`TUNING`: the tunables, one object read at call time
========================  ==============================================================

The tunables (block size, probe stride, touch interval, BLOB reads, the fast read
paths, the clock, the CRC function) are one object, :data:`TUNING`
(:mod:`._tuning`), read at call time: tests and benchmarks change them there.
"""

from __future__ import annotations

# ``os`` and ``sqlite3`` stay reachable as attributes: tests replace their functions
# (``store._sqlite.sqlite3.connect``, ``store._sqlite.os.open``) through this package.
import os  # noqa: F401
import sqlite3  # noqa: F401

# Private names imported ``as`` themselves (``_crc32 as _crc32``) are re-exported on purpose:
# tests and benchmarks use them. (The submodules are attributes of this package too.)
from ._codec import (
    CRC32_IMPLEMENTATION,
    DIR_ITEM,
    DTYPES,
    Row,
    decode_array,
    encode_array,
    encode_rows,
    key_id,
    row_crc,
)
from ._codec import _column_crcs as _column_crcs
from ._codec import _crc32 as _crc32
from ._codec import _key_ids as _key_ids
from ._failures import CorruptStoreError, IncompatibleStoreError, StoreClosedError, classify_error
from ._files import _ABANDONED as _ABANDONED
from ._files import move_aside, refuse_links
from ._pool import acquire, close_store
from ._schema import JOURNAL_SIZE_LIMIT, MAGIC, SCHEMA_VERSION
from ._schema import _retry_busy as _retry_busy
from ._sql import INDEX_COLUMNS, MAX_VARIABLES
from ._store import MMAP_SIZE, READ_BATCH, ReadResult, SQLiteStore
from ._tuning import TUNING, Tuning

__all__ = [
    "CRC32_IMPLEMENTATION",
    "DIR_ITEM",
    "DTYPES",
    "INDEX_COLUMNS",
    "JOURNAL_SIZE_LIMIT",
    "MAGIC",
    "MAX_VARIABLES",
    "MMAP_SIZE",
    "READ_BATCH",
    "SCHEMA_VERSION",
    "TUNING",
    "CorruptStoreError",
    "IncompatibleStoreError",
    "ReadResult",
    "Row",
    "SQLiteStore",
    "StoreClosedError",
    "Tuning",
    "acquire",
    "classify_error",
    "close_store",
    "decode_array",
    "encode_array",
    "encode_rows",
    "key_id",
    "move_aside",
    "refuse_links",
    "row_crc",
]
