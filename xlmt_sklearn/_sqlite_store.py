"""SQLite storage primitives for the embedding cache.

This module only knows how to store and load arrays; the policy (warnings,
degrading to no cache, memoisation) lives in :mod:`xlmt_sklearn._cache`.

Layout of a cache file::

    blocks(id INTEGER PRIMARY KEY, data BLOB)          -- immutable once written
    block_use(id INTEGER PRIMARY KEY, size INTEGER, live INTEGER, live_bytes INTEGER)
    block_dirs(id INTEGER PRIMARY KEY, dtype TEXT, shape TEXT, items BLOB)  -- immutable
    entries(id INTEGER PRIMARY KEY, key BLOB, block INTEGER, pos INTEGER,
            nbytes INTEGER, dtype TEXT, shape TEXT, meta INTEGER, last_used REAL,
            crc INTEGER)
    info(name TEXT PRIMARY KEY, value TEXT)

The arrays of one write are packed back to back into blocks of up to
:data:`BLOCK_BYTES`; ``entries`` holds a small index row per key saying where
its bytes are. The row id is the key's first 8 bytes (:func:`key_id`): an
integer primary key is much cheaper to look up than a 32-byte BLOB, and the
full key is stored and compared, so a collision is a miss, never a wrong
vector. Reads select the index rows and then slice the blocks through SQLite's
incremental BLOB I/O, which costs less than fetching one multi-kilobyte BLOB
row per key. Blocks are never updated: deleting an entry decrements its
block's ``live`` counters (triggers), a block with no live entry is deleted,
and a block less than half live is compacted (its live arrays moved into a new
block) in the next write transaction. Writes follow the encoding order, so the
vectorizers :meth:`~SQLiteStore.regroup` each chunk of new entries in input
order, the order later lookups come in.

A block whose arrays share one dtype and shape also gets a directory
(``block_dirs``): the row id, position, meta and CRC of every entry written
into it, packed as little-endian int64s (:data:`DIR_ITEM`). Entries only ever
leave a block, so while the block's ``live`` counter equals the number of
items, every item is still exactly where the directory says. A lookup batch
whose keys lie in a few such blocks (input order after a regroup) finds them
by sampling a few row ids, reads the directories and matches all its keys
with numpy, instead of one index row per key through the ``sqlite3`` row API:
see :func:`_read_directed`. Keys not served that way (scattered layouts,
blocks with departed or not recently used entries, anything that fails a
check) take the index-row path.

``info`` holds a magic value and the schema version (so a foreign SQLite file
is recognised as not ours) and two counters, ``total_entries`` and
``total_bytes``, kept exact by triggers so that size checks never scan the
table. Arrays are stored as raw little-endian bytes plus a dtype name and a
shape string; nothing is ever unpickled or evaluated, and every entry is
validated (lengths, then a CRC-32 over its key, header and bytes) before it
is returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import operator
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

try:  # The same CRC-32 as zlib's with SIMD: ~3.5x faster on a 768-d float32 vector.
    from zlib_ng.zlib_ng import crc32 as _crc32

    CRC32_IMPLEMENTATION = "zlib-ng"
except ImportError:  # the optional "fast" extra is not installed
    from zlib import crc32 as _crc32

    CRC32_IMPLEMENTATION = "zlib"

__all__ = [
    "BLOCK_BYTES",
    "CRC32_IMPLEMENTATION",
    "DIR_ITEM",
    "DTYPES",
    "INDEX_COLUMNS",
    "JOURNAL_SIZE_LIMIT",
    "MAGIC",
    "MAX_VARIABLES",
    "MMAP_SIZE",
    "PROBE_STRIDE",
    "READ_BATCH",
    "SCHEMA_VERSION",
    "TOUCH_INTERVAL",
    "CorruptStoreError",
    "IncompatibleStoreError",
    "ReadResult",
    "Row",
    "SQLiteStore",
    "StoreClosedError",
    "acquire",
    "classify_error",
    "close_store",
    "decode_array",
    "encode_array",
    "encode_rows",
    "key_id",
    "move_aside",
]

SCHEMA_VERSION = 5  # 2: per-row CRC-32; 3: the CRC covers the key; 4: blocks; 5: directories
MAGIC = "xlmt_sklearn.embedding_cache"

#: Dtypes a row may have, by the name stored in the ``dtype`` column.
DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}

#: Target size of one block: the arrays of a write are packed into blocks of at most
#: this many bytes (an array larger than this gets a block of its own). Small enough
#: that compaction moves little and a lookup touching one array of a block walks few
#: overflow pages; large enough that a block holds hundreds of pooled vectors.
BLOCK_BYTES = 1 << 20

#: The columns of an index row, in the order reads use them.
INDEX_COLUMNS = "key, block, pos, nbytes, dtype, shape, meta, last_used, crc, id"

#: Keys read and decoded together by :meth:`SQLiteStore.get_many`.
READ_BATCH = 1000

#: One directory item: an entry's row id, position in its block, meta and CRC-32.
DIR_ITEM = np.dtype([("id", "<i8"), ("pos", "<i8"), ("meta", "<i8"), ("crc", "<i8")])

#: A lookup batch samples every this-many-th row id (and the last) to find the blocks
#: it lies in; batches of fewer keys take the index-row path directly.
PROBE_STRIDE = 64

#: Keys per ``IN (...)`` query; well under SQLite's bound-parameter limit (999 on old builds).
MAX_VARIABLES = 500

#: ``last_used`` of a row hit by a read is rewritten only when it is older than this many
#: seconds. Rewriting a row rewrites its page, so touching on every hit would turn warm
#: reads into a stream of writes; minute resolution is plenty for LRU eviction.
TOUCH_INTERVAL = 60.0

#: Bytes of the file SQLite may memory-map for reading.
MMAP_SIZE = 1 << 30

#: Size the write-ahead log is truncated to after a checkpoint.
JOURNAL_SIZE_LIMIT = 64 << 20

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_SHAPE_RE = re.compile(r"(?:0|[1-9][0-9]{0,18})(?:,(?:0|[1-9][0-9]{0,18})){0,31}", re.ASCII)

# Primary SQLite result codes (exceptions carry them as ``sqlite_errorcode`` on 3.11+).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26

# Disk full, quota exceeded, read-only file system (EDQUOT is missing on Windows).
_NOWRITE_ERRNOS = {
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name)
}

_now = time.time  # module-level so tests can substitute a deterministic clock

# Incremental BLOB I/O (Connection.blobopen) arrived in Python 3.11; 3.10 reads whole blocks.
_HAS_BLOBOPEN = hasattr(sqlite3.Connection, "blobopen")


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


class Row(NamedTuple):
    """One encoded entry ready to be written."""

    key: bytes
    dtype: str
    shape: str
    data: bytes
    meta: int


class ReadResult(NamedTuple):
    """What :meth:`SQLiteStore.get_many` found.

    Attributes
    ----------
    values : list of (numpy.ndarray, int) or None
        One item per requested key, in order.
    touch : list of int
        Row ids of hits whose ``last_used`` is older than :data:`TOUCH_INTERVAL`.
    invalid : list of int
        Row ids of entries that failed validation (reported as misses; to be deleted).
    """

    values: list[tuple[np.ndarray, int] | None]
    touch: list[int]
    invalid: list[int]


# --------------------------------------------------------------------------------------
# Array encoding
# --------------------------------------------------------------------------------------


def encode_array(array: np.ndarray) -> tuple[str, str, bytes]:
    """Encode an array as ``(dtype name, shape string, little-endian bytes)``.

    Parameters
    ----------
    array : numpy.ndarray
        A float32 or float16 array of any shape and memory layout (either byte
        order).

    Returns
    -------
    dtype : str
        ``"float32"`` or ``"float16"``.
    shape : str
        Comma-separated dimensions, e.g. ``"384"`` or ``"12,384"`` (``""`` for 0-d).
    data : bytes
        The values in C order, little-endian.

    Raises
    ------
    TypeError
        If ``array`` is not a float32 or float16 array.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(array).__name__}")
    dt = array.dtype
    if dt.kind != "f" or dt.itemsize not in (2, 4):
        raise TypeError(
            f"the embedding cache stores float32 or float16 arrays only, got dtype {dt}; "
            "convert with .astype(np.float32) first"
        )
    little = array.astype(dt.newbyteorder("<"), copy=False)
    name = "float32" if dt.itemsize == 4 else "float16"
    return name, ",".join(map(str, array.shape)), little.tobytes()


@functools.lru_cache(maxsize=1024)
def _parse_shape(shape: str) -> tuple[tuple[int, ...], int] | None:
    # A strict grammar (no signs, spaces, underscores, exponents): int() alone would
    # accept "+3", " 3" and "3_0", and nothing here may ever be evaluated.
    if shape == "":
        return (), 1
    if _SHAPE_RE.fullmatch(shape) is None:
        return None
    dims = tuple(int(d) for d in shape.split(","))
    size = 1
    for d in dims:
        size *= d
    return dims, size


def _expected_len(dtype: object, shape: object) -> int | None:
    # Byte length a row with this dtype and shape must have; None if either is invalid.
    dt = DTYPES.get(dtype) if type(dtype) is str else None
    parsed = _parse_shape(shape) if type(shape) is str else None
    return None if dt is None or parsed is None else parsed[1] * dt.itemsize


def decode_array(dtype: object, shape: object, data: object) -> np.ndarray | None:
    """Rebuild an array from a stored row, or return ``None`` if the row is invalid.

    Parameters
    ----------
    dtype : object
        Value of the ``dtype`` column; must be a name in :data:`DTYPES`.
    shape : object
        Value of the ``shape`` column; must match ``\\d+(,\\d+)*`` (or be empty).
    data : object
        Value of the ``data`` column; must be ``bytes`` whose length is the product
        of the shape times the item size.

    Returns
    -------
    numpy.ndarray or None
        A fresh, writable array, or ``None`` when any check fails. The bytes are
        never interpreted as anything but numbers.
    """
    size = _expected_len(dtype, shape)
    if size is None or type(data) is not bytes or len(data) != size:
        return None
    dims = _parse_shape(shape)[0]  # type: ignore[arg-type,index]
    return np.frombuffer(bytearray(data), dtype=DTYPES[dtype]).reshape(dims)  # type: ignore[arg-type]


def row_crc(key: bytes, dtype: str, shape: str, meta: int, data: bytes) -> int:
    """CRC-32 of a row: its key, dtype, shape, meta and data.

    SQLite checks its page structure, not the bytes inside a BLOB: a flipped
    bit in a stored vector (or in its key) would otherwise be returned as a
    valid vector, possibly for another text.
    """
    return _crc32(data, _crc32(key + f"|{dtype}|{shape}|{meta}".encode()))


def _column_crcs(
    keys: Sequence[bytes], dtype: str, shape: str, metas: Sequence[int], datas: Sequence[bytes]
) -> list[int]:
    """:func:`row_crc` of many rows sharing ``dtype`` and ``shape``, computed in C loops.

    CRC-32 chains (``crc32(b, crc32(a)) == crc32(a + b)``), so each row's value is
    ``crc32(data, crc32(header, crc32(key)))`` with one header per distinct meta.
    """
    headers = {m: f"|{dtype}|{shape}|{m}".encode() for m in set(metas)}
    crc = _crc32
    if len(headers) == 1:
        head = itertools.repeat(next(iter(headers.values())), len(keys))
    else:
        head = map(headers.__getitem__, metas)
    return list(map(crc, datas, map(crc, head, map(crc, keys))))


def _decode_rows(
    rows: list[tuple], datas: list[object], stale_before: float
) -> tuple[dict[bytes, tuple[np.ndarray, int]], list[int], list[int]]:
    """Validate and decode entries read by :meth:`SQLiteStore.get_many`.

    ``rows`` are index rows (:data:`INDEX_COLUMNS`) and ``datas[i]`` the bytes
    read for ``rows[i]`` (``None`` when its block could not be read). Returns
    ``(found, touch, invalid)``: stored key -> (array, meta) for valid entries,
    row ids of those whose ``last_used`` is below ``stale_before``, and row ids
    of invalid entries.
    """
    if not rows:
        return {}, [], []
    keys, _, _, _, dtypes, shapes, metas, last_used, crcs, ids = zip(*rows, strict=True)
    specs = set(zip(dtypes, shapes, strict=True))
    if len(specs) == 1:
        # The usual batch: one dtype and shape. Check whole columns at C speed:
        # every row's CRC is computed by map() calls, with no Python bytecode per row.
        ((dtype, shape),) = specs
        size = _expected_len(dtype, shape)
        if (
            size is not None
            and set(map(type, datas)) == {bytes}
            and set(map(len, datas)) == {size}
            and set(map(type, metas)) == {int}
            and set(map(type, keys)) == {bytes}
            and list(crcs) == _column_crcs(keys, dtype, shape, metas, datas)  # type: ignore[arg-type]
        ):
            arrays = _join(dtype, shape, datas)  # type: ignore[arg-type]
            touch = [
                i
                for i, t in zip(ids, last_used, strict=True)
                if type(t) is not float or t < stale_before
            ]
            return dict(zip(keys, zip(arrays, metas, strict=True), strict=True)), touch, []
    touch, invalid = [], []
    groups: dict[tuple[str, str], list[tuple[bytes, bytes, int]]] = {}
    sizes = {spec: _expected_len(*spec) for spec in specs}
    for (key, _, _, _, dtype, shape, meta, used, crc, rowid), data in zip(rows, datas, strict=True):
        spec = (dtype, shape)
        if (
            type(data) is not bytes
            or len(data) != sizes[spec]
            or type(meta) is not int
            or type(key) is not bytes
            or crc != row_crc(key, dtype, shape, meta, data)
        ):
            invalid.append(rowid)
            continue
        groups.setdefault(spec, []).append((key, data, meta))
        if type(used) is not float or used < stale_before:
            touch.append(rowid)
    found = {}
    for (dtype, shape), members in groups.items():
        arrays = _join(dtype, shape, [m[1] for m in members])
        for (key, _, meta), array in zip(members, arrays, strict=True):
            found[key] = (array, meta)
    return found, touch, invalid


def _read_slices(conn: sqlite3.Connection, rows: list[tuple]) -> list[object]:
    """Read each index row's bytes from its block (``None`` where that is impossible).

    Must run inside the read transaction that selected ``rows``, so that blocks
    and index rows come from one snapshot.
    """
    datas: list[object] = [None] * len(rows)
    by_block: dict[object, list[int]] = {}
    for i, row in enumerate(rows):
        by_block.setdefault(row[1], []).append(i)
    if not _HAS_BLOBOPEN:  # Python 3.10: fetch whole blocks
        return _read_whole_blocks(conn, rows, by_block, datas)
    # Positions and lengths are SQLite integers unless the file was tampered with; check
    # that once per call so that the common loop below only compares numbers.
    typed = {type(r[2]) for r in rows} | {type(r[3]) for r in rows} == {int}
    for block, members in by_block.items():
        blob = _open_block(conn, block) if type(block) is int else None
        if blob is None:
            continue  # no such block: its entries are invalid
        with blob:
            size = len(blob)
            if typed:
                for i in members:
                    row = rows[i]
                    pos = row[2]
                    end = pos + row[3]
                    if 0 <= pos <= end <= size:
                        datas[i] = blob[pos:end]
            else:
                for i in members:
                    span = _span(rows[i], size)
                    if span is not None:
                        datas[i] = blob[span[0] : span[1]]
    return datas


def _read_directed(
    conn: sqlite3.Connection, ids: list[int], key_of: dict[int, bytes], stale_before: float
) -> tuple[dict[bytes, tuple[np.ndarray, int]], set[int]]:
    """Serve lookups from block directories (see the module docstring).

    Must run inside a read transaction. ``ids`` are the row ids of the requested
    keys and ``key_of`` maps each to its key. Returns ``(found, served)``: key ->
    (array, meta), and the row ids served. Every served entry passed its CRC-32,
    computed with the *requested* key, so an item naming another key (a
    collision of row ids) or damaged bytes is never served; the caller looks up
    the ids not served through their index rows, which sorts out misses,
    collisions and damage. Only blocks whose every entry is live and was used
    since ``stale_before`` are read here, so no hit needs its ``last_used``
    refreshed.
    """
    found: dict[bytes, tuple[np.ndarray, int]] = {}
    served: set[int] = set()
    if len(ids) < PROBE_STRIDE:
        return found, served
    probe = list(dict.fromkeys([*ids[::PROBE_STRIDE], ids[-1]]))
    blocks = [
        b
        for (b,) in conn.execute(
            f"SELECT DISTINCT block FROM entries WHERE id IN ({_placeholders(len(probe))})",
            probe,
        )
    ]
    # Keys laid out in input order share a few blocks; when the samples lie in about
    # as many blocks as there are samples, directories would serve few keys.
    if not blocks or 2 * len(blocks) > len(probe) + 1:
        return found, served
    dirs = []
    for block, dtype, shape, items, live, oldest in conn.execute(
        "SELECT d.id, d.dtype, d.shape, d.items, u.live, "
        "(SELECT min(last_used) FROM entries WHERE block = d.id) "
        "FROM block_dirs d JOIN block_use u ON u.id = d.id "
        f"WHERE d.id IN ({_placeholders(len(blocks))})",
        blocks,
    ):
        size = _expected_len(dtype, shape)
        if (
            size is None
            or type(items) is not bytes
            or len(items) % DIR_ITEM.itemsize
            or live != len(items) // DIR_ITEM.itemsize
            or type(oldest) is not float
            or oldest < stale_before
        ):
            continue  # entries left, or one is due a touch: index rows decide
        dirs.append((block, dtype, shape, size, np.frombuffer(items, DIR_ITEM)))
    if not dirs:
        return found, served
    table = np.concatenate([d[4] for d in dirs])
    owner = np.repeat(np.arange(len(dirs)), [len(d[4]) for d in dirs])
    order = np.argsort(table["id"], kind="stable")
    sorted_ids = table["id"][order]
    want = np.asarray(ids, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, want), len(sorted_ids) - 1)
    hits = np.sort(order[at[sorted_ids[at] == want]])  # by block, then position
    for j, (block, dtype, shape, size, _) in enumerate(dirs):
        mine = table[hits[owner[hits] == j]]
        if not len(mine):
            continue
        starts = mine["pos"].tolist()
        datas = _block_slices(conn, block, starts, size)
        if datas is None:
            continue
        got_ids, metas = mine["id"].tolist(), mine["meta"].tolist()
        keys = list(map(key_of.__getitem__, got_ids))
        crcs = _column_crcs(keys, dtype, shape, metas, datas)
        good = list(map(operator.eq, mine["crc"].tolist(), crcs))
        if not all(good):
            keys, metas, got_ids, datas = (
                list(itertools.compress(col, good)) for col in (keys, metas, got_ids, datas)
            )
            if not keys:
                continue
        arrays = _join(dtype, shape, datas)
        found.update(zip(keys, zip(arrays, metas, strict=True), strict=True))
        served.update(got_ids)
    return found, served


def _block_slices(
    conn: sqlite3.Connection, block: int, starts: list[int], size: int
) -> list[bytes] | None:
    # ``size`` bytes at each start of a block; None if the block is missing or a span
    # falls outside it (a damaged directory: index rows decide).
    if not _HAS_BLOBOPEN:
        row = conn.execute("SELECT data FROM blocks WHERE id = ?", (block,)).fetchone()
        if row is None or type(row[0]) is not bytes:
            return None
        view = memoryview(row[0])
        if min(starts) < 0 or max(starts) + size > len(view):
            return None
        return [bytes(view[s : s + size]) for s in starts]
    blob = _open_block(conn, block)
    if blob is None:
        return None
    with blob:
        if min(starts) < 0 or max(starts) + size > len(blob):
            return None
        return list(map(blob.__getitem__, map(slice, starts, map(size.__add__, starts))))


def _open_block(conn: sqlite3.Connection, block: int) -> sqlite3.Blob | None:
    # A read-only handle on a block's bytes, or None if there is no such block.
    try:
        return conn.blobopen("blocks", "data", block, readonly=True)
    except sqlite3.OperationalError as exc:
        if classify_error(exc) != "fatal":
            raise
        return None


def _span(row: tuple, size: int) -> tuple[int, int] | None:
    # Where an index row's bytes lie in a block of ``size`` bytes; None if not inside it.
    pos, n = row[2], row[3]
    if type(pos) is int and type(n) is int and pos >= 0 and n >= 0 and pos + n <= size:
        return pos, pos + n
    return None


def _read_whole_blocks(
    conn: sqlite3.Connection,
    rows: list[tuple],
    by_block: dict[object, list[int]],
    datas: list[object],
) -> list[object]:
    ids = [b for b in by_block if type(b) is int]
    for chunk in _chunks(ids):
        for block, data in conn.execute(
            f"SELECT id, data FROM blocks WHERE id IN ({_placeholders(len(chunk))})", chunk
        ):
            if type(data) is not bytes:
                continue
            view = memoryview(data)
            for i in by_block[block]:
                span = _span(rows[i], len(data))
                if span is not None:
                    datas[i] = bytes(view[span[0] : span[1]])
    return datas


def _pack_blocks(rows: Sequence[Row]) -> list[tuple[bytes, list[tuple[Row, int]]]]:
    """Group rows, in order, into blocks of about :data:`BLOCK_BYTES`.

    Returns ``(block bytes, [(row, position in block), ...])`` per block.
    """
    blocks = []
    members: list[tuple[Row, int]] = []
    parts: list[bytes] = []
    size = 0
    for row in rows:
        n = len(row.data)
        if members and size + n > BLOCK_BYTES:
            blocks.append((b"".join(parts), members))
            members, parts, size = [], [], 0
        members.append((row, size))
        parts.append(row.data)
        size += n
    if members:
        blocks.append((b"".join(parts), members))
    return blocks


def _join(dtype: str, shape: str, datas: Sequence[bytes]) -> np.ndarray:
    # One copy for all rows of a shape (validated by the caller): joining into a
    # bytearray and slicing is ~4x faster than a copy per row, and each row of the
    # result is a writable array over its own memory, shared with no other call.
    dims = _parse_shape(shape)[0]  # type: ignore[index]
    block = bytearray().join(datas)
    return np.frombuffer(block, dtype=DTYPES[dtype]).reshape(len(datas), *dims)


def encode_rows(
    keys: Sequence[bytes],
    arrays: Sequence[np.ndarray],
    metas: Sequence[int] | None = None,
) -> list[Row]:
    """Validate and encode a batch before any database work starts.

    Parameters
    ----------
    keys : sequence of bytes
        Entry keys (usually 32-byte digests from :func:`xlmt_sklearn._cache.make_keys`).
    arrays : sequence of numpy.ndarray
        One float32 or float16 array per key.
    metas : sequence of int or None, default=None
        One signed 64-bit integer per key, stored alongside the array; ``None``
        stores 0 for every key.

    Returns
    -------
    list of Row

    Raises
    ------
    TypeError
        If a key is not ``bytes``, an array has another dtype, or a meta is not an
        integer.
    ValueError
        If the lengths differ, a key is empty, or a meta does not fit in 64 bits.
    """
    n = len(keys)
    if len(arrays) != n:
        raise ValueError(f"got {n} keys but {len(arrays)} arrays")
    if metas is None:
        metas = [0] * n
    elif len(metas) != n:
        raise ValueError(f"got {n} keys but {len(metas)} metas")
    rows = []
    for key, array, meta in zip(keys, arrays, metas, strict=True):
        if not isinstance(key, bytes) or not key:
            raise TypeError(f"cache keys must be non-empty bytes, got {type(key).__name__}")
        key = bytes(key)  # plain bytes, also for subclasses such as numpy.bytes_
        meta = operator.index(meta)  # TypeError for floats and other non-integers
        if not _I64_MIN <= meta <= _I64_MAX:
            raise ValueError(f"meta {meta} does not fit in a signed 64-bit integer")
        rows.append(Row(key, *encode_array(array), meta))
    return rows


# --------------------------------------------------------------------------------------
# Error classification
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)  # a link put in the file's place is not the file
    except OSError:
        return None
    return st.st_dev, st.st_ino


_SIBLINGS = ("-wal", "-shm", "-journal")


def refuse_links(path: Path) -> None:
    """Raise if the database file or one of its SQLite siblings is a symbolic link.

    SQLite opens (and creates) these files by name and follows links, so a link
    planted there would make it write, or :func:`move_aside` rename, whatever the
    link points to. Directories above the file are not checked: they are resolved
    when the path is (see :func:`xlmt_sklearn._cache._resolve_path`).

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


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------

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
    # The row id is key_id(key): an integer b-tree lookup, ~1.5x faster than a BLOB key.
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


def _retry_busy(op, timeout: float) -> None:
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


def _ensure_schema(conn: sqlite3.Connection) -> None:
    # Inspect before changing anything, so a foreign database is never switched to WAL.
    if not _table_names(conn):
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
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: durable against process crashes
    # After a huge batch, shrink the WAL back instead of keeping its peak size on disk.
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")


# --------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _chunks(seq: Sequence, size: int = MAX_VARIABLES) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _index_rows(
    conn: sqlite3.Connection, column: str, values: Sequence[object], order: str = ""
) -> list[tuple]:
    """Index rows (:data:`INDEX_COLUMNS`) whose ``column`` is in ``values``, in batched queries."""
    rows: list[tuple] = []
    for chunk in _chunks(values):
        rows += conn.execute(
            f"SELECT {INDEX_COLUMNS} FROM entries "
            f"WHERE {column} IN ({_placeholders(len(chunk))}){order}",
            chunk,
        )
    return rows


def _new_block(
    conn: sqlite3.Connection, data: bytes, members: Sequence[tuple[Row, int]], crcs: Sequence[int]
) -> int:
    """Insert a block, its (empty) live counters and its directory; return its id.

    ``members`` are the ``(row, position)`` pairs packed into ``data`` and ``crcs``
    their :func:`row_crc` values; the caller then points their index rows here.
    A block mixing dtypes or shapes gets no directory (its entries are read
    through their index rows).
    """
    block = conn.execute("INSERT INTO blocks(data) VALUES (?)", (data,)).lastrowid
    conn.execute(
        "INSERT INTO block_use(id, size, live, live_bytes) VALUES (?, ?, 0, 0)",
        (block, len(data)),
    )
    specs = {(r.dtype, r.shape) for r, _ in members}
    if len(specs) == 1:
        ((dtype, shape),) = specs
        pairs = zip(members, crcs, strict=True)
        items = np.array([(key_id(r.key), p, r.meta, c) for (r, p), c in pairs], dtype=DIR_ITEM)
        conn.execute(
            "INSERT INTO block_dirs(id, dtype, shape, items) VALUES (?, ?, ?, ?)",
            (block, dtype, shape, items.tobytes()),
        )
    return block


def key_id(key: bytes) -> int:
    """The row id of a key: its first 8 bytes as a signed little-endian integer.

    Parameters
    ----------
    key : bytes
        A cache key (usually a 32-byte SHA-256 digest).

    Returns
    -------
    int
    """
    return int.from_bytes(key[:8], "little", signed=True)


def _key_ids(keys: Sequence[bytes]) -> list[int]:
    # The usual case, 32-byte digests, in one numpy pass instead of a call per key.
    if keys and set(map(len, keys)) == {32}:
        return np.frombuffer(b"".join(keys), dtype="<i8")[::4].tolist()
    return [key_id(k) for k in keys]


class SQLiteStore:
    """One process-local connection to one cache file.

    Obtain instances through :func:`acquire` (which pools them per path and
    process) rather than directly. Every method is thread-safe; operations on
    one store are serialised by :attr:`lock`. Database errors propagate
    unchanged except corruption, which moves the file aside (see
    :func:`move_aside`) and raises :class:`CorruptStoreError`.

    Parameters
    ----------
    path : pathlib.Path
        Absolute path of the database file; missing parent directories are created
        with mode 0o700 and a new file with mode 0o600.
    timeout : float
        Seconds to wait for another process's lock before failing with
        ``sqlite3.OperationalError("database is locked")``.

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
        with contextlib.suppress(FileExistsError):
            # Create it ourselves so it is private (0o600); SQLite gives the -wal and
            # -shm files the same mode. O_EXCL never creates through a link.
            nofollow = getattr(os, "O_NOFOLLOW", 0)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600))
        self.identity = _identity(path)
        conn = sqlite3.connect(
            str(path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
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
            # Reading pages through a memory map instead of read() calls more than doubles
            # warm lookup speed; SQLite only maps, never writes, through it.
            conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
            _retry_busy(lambda: _ensure_schema(conn), timeout)
        except BaseException as exc:
            if _is_corruption(exc):
                raise self._quarantine(conn, exc) from exc
            conn.close()
            raise
        self._conn = conn

    # -- housekeeping ------------------------------------------------------------------

    def is_current(self) -> bool:
        """Whether the file at :attr:`path` is still the one this store has open."""
        return self.identity is not None and _identity(self.path) == self.identity

    def _quarantine(self, conn: sqlite3.Connection, exc: BaseException) -> CorruptStoreError:
        self.closed = True
        _forget(self)
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
        conn.execute(f"BEGIN {mode}")
        return conn

    def _fail(self, exc: BaseException) -> BaseException:
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        if _is_corruption(exc):
            return self._quarantine(self._conn, exc)
        return exc

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreClosedError`."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self._conn.close()

    # -- operations --------------------------------------------------------------------

    def get_many(self, keys: Sequence[bytes], stale_before: float) -> ReadResult:
        """Look up keys (through block directories, else index rows) in one read transaction.

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
        found: dict[bytes, tuple[np.ndarray, int]] = {}
        touch: list[int] = []
        invalid: list[int] = []
        with self.lock:
            try:
                conn = self._begin()
                # A slice of keys at a time, so that its rows, bytes and array stay in the
                # CPU's caches: 8,192 keys at once measured ~20% slower per key than 1,000.
                for part in _chunks(ids, READ_BATCH):
                    got, served = _read_directed(conn, part, key_of, stale_before)
                    found.update(got)
                    if served:
                        part = [i for i in part if i not in served]
                        if not part:
                            continue
                    rows = _index_rows(conn, "id", part)
                    datas = _read_slices(conn, rows)
                    # By stored key: a row whose id matches but whose key is another's (a
                    # collision of 8-byte prefixes) is simply never asked for: a miss.
                    got, stale, bad = _decode_rows(rows, datas, stale_before)
                    found.update(got)
                    touch += stale
                    invalid += bad
                conn.execute("COMMIT")
            except (sqlite3.Error, StoreClosedError) as exc:
                raise self._fail(exc) from exc
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
        now = _now()
        with self.lock:
            try:
                conn = self._begin("IMMEDIATE")
                for chunk in _chunks(touch):
                    conn.execute(
                        "UPDATE entries SET last_used = ? "
                        f"WHERE id IN ({_placeholders(len(chunk))})",
                        (now, *chunk),
                    )
                for chunk in _chunks(invalid):
                    conn.execute(
                        f"DELETE FROM entries WHERE id IN ({_placeholders(len(chunk))})", chunk
                    )
                conn.execute("COMMIT")
            except (sqlite3.Error, StoreClosedError) as exc:
                raise self._fail(exc) from exc

    def put_many(self, rows: Sequence[Row], max_size: int | None = None) -> None:
        """Insert or replace rows in one transaction, then evict down to ``max_size``.

        The arrays are packed into new blocks (see :func:`_pack_blocks`); blocks left
        less than half live by the replacements or the eviction are compacted in the
        same transaction.

        Parameters
        ----------
        rows : sequence of Row
            Encoded entries (see :func:`encode_rows`).
        max_size : int or None, default=None
            Cap on the summed ``nbytes`` of all entries; when exceeded, least
            recently used entries are deleted in the same transaction. ``None``
            means no cap.
        """
        if not rows:
            return
        now = _now()
        # Within a batch the last write of a key wins; so does the last of two keys that
        # share a row id (a collision of 8-byte prefixes: the other becomes a miss).
        latest = {key_id(r.key): r for r in rows}
        blocks = _pack_blocks(list(latest.values()))
        ids = list(latest)
        with self.lock:
            try:
                conn = self._begin("IMMEDIATE")
                # Replace = delete + insert: the delete trigger keeps the counters exact on
                # every SQLite version (REPLACE skips delete triggers, UPSERT needs 3.24+).
                for chunk in _chunks(ids):
                    conn.execute(
                        f"DELETE FROM entries WHERE id IN ({_placeholders(len(chunk))})", chunk
                    )
                for data, members in blocks:
                    self._insert_block(conn, data, members, now)
                if max_size is not None:
                    self._evict(conn, max_size)
                self._compact(conn)
                conn.execute("COMMIT")
            except (sqlite3.Error, StoreClosedError) as exc:
                raise self._fail(exc) from exc

    @staticmethod
    def _insert_block(
        conn: sqlite3.Connection, data: bytes, members: list[tuple[Row, int]], now: float
    ) -> None:
        crcs = [row_crc(r.key, r.dtype, r.shape, r.meta, r.data) for r, _ in members]
        block = _new_block(conn, data, members, crcs)
        conn.executemany(
            "INSERT INTO entries"
            "(id, key, block, pos, nbytes, dtype, shape, meta, last_used, crc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (key_id(r.key), r.key, block, pos, len(r.data), r.dtype, r.shape, r.meta, now, crc)
                for (r, pos), crc in zip(members, crcs, strict=True)
            ],
        )

    @staticmethod
    def _evict(conn: sqlite3.Connection, max_size: int) -> None:
        (total,) = conn.execute(
            "SELECT CAST(value AS INTEGER) FROM info WHERE name = 'total_bytes'"
        ).fetchone()
        excess = total - max_size
        if excess <= 0:
            return
        victims, freed = [], 0
        cursor = conn.execute("SELECT id, nbytes FROM entries ORDER BY last_used")
        try:
            while freed < excess:
                batch = cursor.fetchmany(MAX_VARIABLES)
                if not batch:
                    break
                for rowid, nbytes in batch:
                    victims.append(rowid)
                    freed += nbytes
                    if freed >= excess:
                        break
        finally:
            cursor.close()
        for chunk in _chunks(victims):
            conn.execute(f"DELETE FROM entries WHERE id IN ({_placeholders(len(chunk))})", chunk)

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
        with self.lock:
            try:
                conn = self._begin("IMMEDIATE")
                found = {row[0]: row for row in _index_rows(conn, "id", _key_ids(order))}
                rows = [found[k] for k in order if k in found]
                blocks = {row[1] for row in rows}
                needed = -(-sum(r[3] for r in rows if type(r[3]) is int) // BLOCK_BYTES)
                if len(blocks) > max(needed, 1):
                    self._move_entries(conn, rows)
                conn.execute("COMMIT")
            except (sqlite3.Error, StoreClosedError) as exc:
                raise self._fail(exc) from exc

    @staticmethod
    def _move_entries(conn: sqlite3.Connection, rows: list[tuple]) -> None:
        # Copy the arrays of these index rows, in this order, into new blocks and point
        # the rows there; the move trigger deletes each block left empty. Entries whose
        # bytes cannot be read back intact are deleted instead (they would be misses).
        datas = _read_slices(conn, rows)
        keep, bad = [], []
        for row, data in zip(rows, datas, strict=True):
            key, _, _, nbytes, dtype, shape, meta, _, crc, _ = row
            ok = (
                type(data) is bytes
                and len(data) == nbytes == _expected_len(dtype, shape)
                and crc == row_crc(key, dtype, shape, meta, data)
            )
            (keep if ok else bad).append((row, data))
        for chunk in _chunks([row[9] for row, _ in bad]):
            conn.execute(f"DELETE FROM entries WHERE id IN ({_placeholders(len(chunk))})", chunk)
        staged = [Row(row[0], row[4], row[5], data, row[6]) for row, data in keep]
        ids = {row[0]: row[9] for row, _ in keep}
        crcs = {row[0]: row[8] for row, _ in keep}
        for data, members in _pack_blocks(staged):
            block = _new_block(conn, data, members, [crcs[r.key] for r, _ in members])
            conn.executemany(
                "UPDATE entries SET block = ?, pos = ? WHERE id = ?",
                [(block, pos, ids[r.key]) for r, pos in members],
            )

    @classmethod
    def _compact(cls, conn: sqlite3.Connection) -> None:
        # Move the live entries of blocks that are less than half live into new blocks.
        sparse = [
            b for (b,) in conn.execute("SELECT id FROM block_use WHERE live_bytes * 2 < size")
        ]
        if not sparse:
            return
        cls._move_entries(conn, _index_rows(conn, "block", sparse, " ORDER BY block, pos"))
        # A counter row that says "empty" but was never collected (only possible in a
        # file edited by hand) must not be reported as sparse forever.
        for block in sparse:
            conn.execute(
                "DELETE FROM blocks WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM entries WHERE block = ?)",
                (block, block),
            )
            conn.execute(
                "DELETE FROM block_use WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM entries WHERE block = ?)",
                (block, block),
            )
            conn.execute(
                "DELETE FROM block_dirs WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM entries WHERE block = ?)",
                (block, block),
            )

    def clear(self) -> None:
        """Delete every entry in one transaction (other processes see all or nothing)."""
        with self.lock:
            try:
                conn = self._begin("IMMEDIATE")
                conn.execute("DELETE FROM blocks")
                conn.execute("DELETE FROM block_use")
                conn.execute("DELETE FROM block_dirs")
                conn.execute("DELETE FROM entries")  # the triggers zero the counters
                conn.execute("COMMIT")
            except (sqlite3.Error, StoreClosedError) as exc:
                raise self._fail(exc) from exc

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


# --------------------------------------------------------------------------------------
# Per-process pool
# --------------------------------------------------------------------------------------

# Keyed by (absolute path, pid) so that a forked, loky or Spark worker never touches a
# connection its parent opened (SQLite forbids carrying connections across fork()).
_POOL: dict[tuple[str, int], SQLiteStore] = {}
_POOL_LOCK = threading.RLock()


def acquire(path: Path, timeout: float = 30.0) -> SQLiteStore:
    """Return this process's open store for ``path``, opening it if needed.

    A pooled store whose file was deleted or replaced (e.g. moved aside by
    another process) is abandoned and a new one opened.

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


def _forget(store: SQLiteStore) -> None:
    with _POOL_LOCK:
        key = (str(store.path), store.pid)
        if _POOL.get(key) is store:
            del _POOL[key]


def _after_fork_in_child() -> None:
    global _POOL_LOCK
    _POOL_LOCK = threading.RLock()  # the parent's may have been held by another thread
    for store in _POOL.values():
        _abandon(store._conn)
    _POOL.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
