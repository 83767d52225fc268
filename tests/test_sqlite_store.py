"""Tests of the SQLite storage primitives behind the embedding cache."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests._store_checks import check_blocks as _check_blocks
from tests._store_checks import counts_by_scan as _counts_by_scan
from tests._store_checks import store_keys as _keys
from xlmt_sklearn.store import _sqlite as S


def _ids(keys) -> list[int]:
    return [S.key_id(k) for k in keys]


def _rows(keys, dim=8, dtype=np.float32):
    return S.encode_rows(keys, [np.full(dim, i, dtype) for i in range(len(keys))], range(len(keys)))


@pytest.fixture
def store(tmp_path):
    st = S.acquire(tmp_path / "s.sqlite")
    yield st
    S.close_store(st.path)


@pytest.fixture
def clock(monkeypatch):
    """Replace the store's clock by one that advances 100 s (> the touch interval) per call."""
    ticks = itertools.count(1_000_000, 100)
    monkeypatch.setattr(S.TUNING, "clock", lambda: float(next(ticks)))
    return ticks


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ">f4", ">f2"])
@pytest.mark.parametrize("shape", [(384,), (12, 384), (), (0, 3), (2, 3, 4)])
def test_encode_decode_round_trip(dtype, shape):
    """Any shape, both dtypes and both byte orders survive; bytes on disk are little-endian."""
    a = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    name, shape_str, data = S.encode_array(a)
    assert name == ("float32" if np.dtype(dtype).itemsize == 4 else "float16")
    assert shape_str == ",".join(map(str, shape))
    assert data == a.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    b = S.decode_array(name, shape_str, data)
    assert b.shape == shape and b.dtype == np.dtype(name) and b.flags.writeable
    np.testing.assert_array_equal(a, b)


def test_encode_non_contiguous():
    """Fortran-ordered and strided arrays are stored in C order."""
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))[:, ::2]
    np.testing.assert_array_equal(S.decode_array(*S.encode_array(a)), a)


@pytest.mark.parametrize(
    "bad", [np.zeros(3), np.zeros(3, np.int32), np.zeros(3, object), np.zeros(3, np.complex64)]
)
def test_encode_rejects_other_dtypes(bad):
    with pytest.raises(TypeError, match="float32 or float16"):
        S.encode_array(bad)


def test_encode_rejects_non_arrays():
    with pytest.raises(TypeError, match="expected a numpy array"):
        S.encode_array([1.0, 2.0])


@pytest.mark.parametrize(
    ("dtype", "shape", "data"),
    [
        ("float64", "2", b"\0" * 16),
        ("object", "1", b"\0" * 8),
        ("O", "1", b"\0" * 8),
        ("<f4", "2", b"\0" * 8),
        ("float32 ", "2", b"\0" * 8),
        (None, "2", b"\0" * 8),
        (4, "2", b"\0" * 8),
        ("float32", "3", b"\0" * 8),  # length mismatch
        ("float32", "-2", b"\0" * 8),
        ("float32", "+2", b"\0" * 8),
        ("float32", " 2", b"\0" * 8),
        ("float32", "2_0", b"\0" * 80),
        ("float32", "2.0", b"\0" * 8),
        ("float32", "1e1", b"\0" * 40),
        ("float32", "2,", b"\0" * 8),
        ("float32", "02", b"\0" * 8),
        ("float32", "__import__('os').getcwd()", b"\0" * 8),
        ("float32", 2, b"\0" * 8),
        ("float32", None, b"\0" * 8),
        ("float32", "2", "\0" * 8),  # text instead of a blob
        ("float32", "2", None),
        ("float32", "2", 8),
        ("float32", "99999999999999999999", b"\0" * 8),
        ("float32", ",".join(["1"] * 40), b"\0" * 4),  # more dimensions than allowed
    ],
)
def test_decode_rejects_invalid_rows(dtype, shape, data):
    assert S.decode_array(dtype, shape, data) is None


def test_encode_rows_validates_before_writing():
    keys = _keys(2)
    arrays = [np.zeros(2, np.float32)] * 2
    with pytest.raises(ValueError, match="2 keys but 1 arrays"):
        S.encode_rows(keys, arrays[:1])
    with pytest.raises(ValueError, match="2 keys but 3 metas"):
        S.encode_rows(keys, arrays, [0, 1, 2])
    with pytest.raises(TypeError, match="non-empty bytes"):
        S.encode_rows(["a", "b"], arrays)
    with pytest.raises(TypeError, match="non-empty bytes"):
        S.encode_rows([b"", b"x"], arrays)
    with pytest.raises(TypeError, match="integer"):
        S.encode_rows(keys, arrays, [0.5, 1])
    with pytest.raises(ValueError, match="64-bit"):
        S.encode_rows(keys, arrays, [2**63, 0])
    rows = S.encode_rows(keys, arrays, [np.int64(-(2**63)), 2**63 - 1])
    assert [r.meta for r in rows] == [-(2**63), 2**63 - 1]
    assert [r.meta for r in S.encode_rows(keys, arrays)] == [0, 0]


# --------------------------------------------------------------------------------------
# Schema and SQL usage
# --------------------------------------------------------------------------------------


def test_schema_pragmas_and_file_mode(store):
    conn = store._conn
    cols = [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(entries)")]
    assert cols == [
        ("id", "INTEGER"),
        ("key", "BLOB"),
        ("block", "INTEGER"),
        ("pos", "INTEGER"),
        ("nbytes", "INTEGER"),
        ("dtype", "TEXT"),
        ("shape", "TEXT"),
        ("meta", "INTEGER"),
        ("last_used", "REAL"),
        ("crc", "INTEGER"),
    ]
    assert [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(blocks)")] == [
        ("id", "INTEGER"),
        ("data", "BLOB"),
    ]
    assert [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(info)")] == [
        ("name", "TEXT"),
        ("value", "TEXT"),
    ]
    info = dict(conn.execute("SELECT name, value FROM info"))
    assert info["magic"] == S.MAGIC
    assert info["schema_version"] == str(S.SCHEMA_VERSION)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert os.stat(store.path).st_mode & 0o777 == 0o600


def test_reads_are_batched_and_writes_are_one_transaction(store, monkeypatch):
    statements = []
    store._conn.set_trace_callback(statements.append)
    keys = _keys(1200)
    store.put_many(_rows(keys))
    assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    for stride, n_selects in [(S.TUNING.probe_stride, 5), (10**9, 3)]:
        # Directories: per batch of <= 1,000 keys one sampling query and one directory
        # query, then index rows for the 5 unknown keys. Index rows only: 1,205 keys in
        # chunks of <= 500. Never one query per key.
        monkeypatch.setattr(S.TUNING, "probe_stride", stride)
        statements.clear()
        result = store.get_many(keys + _keys(5, start=5000), stale_before=0.0)
        selects = [s for s in statements if s.lstrip().startswith("SELECT")]
        assert len(selects) == n_selects
        assert all(s.count("?") <= S.MAX_VARIABLES for s in selects)
        assert [v[1] for v in result.values[:1200]] == list(range(1200))
        assert result.values[1200:] == [None] * 5


def test_counters_match_table_after_every_kind_of_change(store, clock):
    keys = _keys(50)
    store.put_many(_rows(keys, dim=8))
    store.put_many(_rows(keys[:10], dim=16))  # replacements change nbytes
    store.put_many(_rows(keys[:5] + keys[:5], dim=4))  # duplicates inside one batch
    assert store.counts() == _counts_by_scan(store.path) == (50, 5 * 16 + 5 * 64 + 40 * 32)
    store.touch_and_purge([], _ids(keys[40:]))
    assert store.counts() == _counts_by_scan(store.path)
    store.put_many(_rows(_keys(30, start=100)), max_size=1000)
    assert store.counts() == _counts_by_scan(store.path)
    assert store.counts()[1] <= 1000
    store.clear()
    assert store.counts() == _counts_by_scan(store.path) == (0, 0)


def test_lru_eviction_keeps_recently_read(store, clock):
    keys = _keys(20)
    for k in keys[:10]:  # one at a time: distinct, increasing last_used
        store.put_many(_rows([k]))
    result = store.get_many(keys[:3], stale_before=S.TUNING.clock() - S.TUNING.touch_interval)
    assert sorted(result.touch) == sorted(_ids(keys[:3]))
    store.touch_and_purge(result.touch, [])
    store.put_many(_rows(keys[10:15]), max_size=10 * 32)  # 15 entries of 32 bytes, cap 10
    kept = [v is not None for v in store.get_many(keys, 0.0).values]
    assert kept == [True] * 3 + [False] * 5 + [True] * 7 + [False] * 5
    assert store.counts() == (10, 320)


def test_eviction_uses_the_lru_index(store):
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT id, nbytes FROM entries ORDER BY last_used"
    ).fetchall()
    detail = " ".join(r[-1] for r in plan)
    assert "COVERING INDEX entries_lru" in detail and "TEMP B-TREE" not in detail


def test_recent_hits_are_not_rewritten(store):
    """Reads only refresh last_used once it is a touch interval old (writes are costly)."""
    keys = _keys(4)
    store.put_many(_rows(keys))
    now = S.TUNING.clock()
    assert store.get_many(keys, stale_before=now - S.TUNING.touch_interval).touch == []
    assert len(store.get_many(keys, stale_before=now + 1).touch) == 4


def test_one_bad_row_in_a_uniform_batch(store):
    """An entry with the batch's dtype and shape but the wrong bytes is a miss, the rest hit."""
    keys = _keys(6)
    store.put_many(_rows(keys))
    # Its index row now points 4 bytes into its neighbour: right length, wrong bytes.
    store._conn.execute("UPDATE entries SET pos = pos + 4 WHERE key = ?", (keys[2],))
    result = store.get_many(keys, 0.0)
    assert [v is None for v in result.values] == [False, False, True, False, False, False]
    assert result.invalid == _ids([keys[2]])
    assert [int(v[0][0]) for v in result.values if v is not None] == [0, 1, 3, 4, 5]


def test_mixed_shapes_and_dtypes_in_one_lookup(store):
    keys = _keys(4)
    arrays = [
        np.ones(3, np.float32),
        np.ones((2, 5), np.float16),
        np.zeros(3, np.float32),
        np.full((1, 5), 2, np.float16),
    ]
    store.put_many(S.encode_rows(keys, arrays, [1, 2, 3, 4]))
    got = store.get_many(keys[::-1], 0.0).values
    for (array, meta), expected, m in zip(got, arrays[::-1], [4, 3, 2, 1], strict=True):
        assert array.dtype == expected.dtype and meta == m
        np.testing.assert_array_equal(array, expected)


def test_duplicate_keys_get_independent_arrays(store):
    keys = _keys(2)
    store.put_many(_rows(keys))
    values = store.get_many([keys[0], keys[1], keys[0]], 0.0).values
    values[0][0][:] = 42
    assert values[2][0][0] == 0 and values[1][0][0] == 1


# --------------------------------------------------------------------------------------
# Errors, files and the pool
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (sqlite3.DatabaseError("file is not a database"), "corrupt"),
        (sqlite3.DatabaseError("database disk image is malformed"), "corrupt"),
        (sqlite3.OperationalError("database or disk is full"), "nowrite"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "nowrite"),
        (OSError(28, "No space left on device"), "nowrite"),
        (sqlite3.OperationalError("database is locked"), "busy"),
        (sqlite3.OperationalError("unable to open database file"), "fatal"),
        (sqlite3.OperationalError("disk I/O error"), "fatal"),
        (PermissionError(13, "Permission denied"), "fatal"),
        (IsADirectoryError(21, "Is a directory"), "fatal"),
        (S.IncompatibleStoreError("newer"), "fatal"),
        (RuntimeError("anything else"), "fatal"),
    ],
)
def test_classify_error(exc, kind):
    assert S.classify_error(exc) == kind


def test_move_aside_takes_siblings(tmp_path):
    p = tmp_path / "x.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{p}{suffix}").write_bytes(b"junk" + suffix.encode())
    first = S.move_aside(p)
    p.write_bytes(b"again")
    second = S.move_aside(p)  # same second: must not overwrite the first
    assert first != second and first.name.startswith("x.sqlite.corrupt-")
    assert Path(f"{first}-wal").read_bytes() == b"junk-wal"
    assert Path(f"{first}-shm").read_bytes() == b"junk-shm"
    assert second.read_bytes() == b"again"
    assert not p.exists() and S.move_aside(p) is None


def test_pool_is_keyed_by_path_and_pid(tmp_path, monkeypatch):
    a = S.acquire(tmp_path / "a.sqlite")
    assert S.acquire(tmp_path / "a.sqlite") is a
    assert S.acquire(tmp_path / "b.sqlite") is not a
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as seen by a forked child
    child = S.acquire(tmp_path / "a.sqlite")
    assert child is not a and child.pid == real_pid + 1
    S.close_store(tmp_path / "a.sqlite")
    monkeypatch.undo()
    assert S.acquire(tmp_path / "a.sqlite") is a
    for name in ("a.sqlite", "b.sqlite"):
        S.close_store(tmp_path / name)
    assert a.closed
    with pytest.raises(S.StoreClosedError, match=r"a\.sqlite"):
        a.counts()


def test_replaced_file_gets_a_new_connection(tmp_path):
    """If the file is deleted or replaced under an open store, acquire() reopens it."""
    p = tmp_path / "a.sqlite"
    old = S.acquire(p)
    old.put_many(_rows(_keys(3)))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{p}{suffix}").unlink(missing_ok=True)
    new = S.acquire(p)
    assert new is not old and old.closed and old._conn in S._ABANDONED
    assert new.counts() == (0, 0)
    new.put_many(_rows(_keys(2)))
    assert new.counts() == (2, 64)
    S.close_store(p)


def _child_uses_cache(path: str, parent_store_id: int, queue) -> None:
    store = S.acquire(Path(path))
    keys = _keys(10, start=100)
    store.put_many(_rows(keys))
    ok = [v is not None for v in store.get_many(_keys(20, start=90), 0.0).values]
    queue.put((id(store) != parent_store_id and store.pid == os.getpid(), ok))


@pytest.mark.skipif(sys.platform != "linux", reason="fork() start method")
def test_forked_child_opens_its_own_connection(tmp_path):
    p = tmp_path / "f.sqlite"
    parent = S.acquire(p)
    parent.put_many(_rows(_keys(10, start=90)))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_uses_cache, args=(str(p), id(parent), queue))
    proc.start()
    own_connection, ok = queue.get(timeout=60)
    proc.join(60)
    assert proc.exitcode == 0 and own_connection and all(ok)
    # the parent's connection is unharmed and sees the child's writes
    assert S.acquire(p) is parent
    assert all(v is not None for v in parent.get_many(_keys(20, start=90), 0.0).values)
    assert parent._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    S.close_store(p)


def test_foreign_database_is_moved_aside_unmodified(tmp_path):
    p = tmp_path / "foreign.sqlite"
    with sqlite3.connect(p) as conn:
        conn.execute("CREATE TABLE users(name TEXT)")
        conn.execute("INSERT INTO users VALUES ('alice')")
    conn.close()
    with pytest.raises(S.CorruptStoreError, match="not an xlmt_sklearn cache") as info:
        S.acquire(p)
    moved = info.value.moved_to
    with sqlite3.connect(moved) as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # never switched
    conn.close()
    assert S.acquire(p).counts() == (0, 0)  # fresh cache in its place
    S.close_store(p)


def test_a_flipped_bit_in_a_stored_vector_is_a_miss_and_is_purged(tmp_path):
    """SQLite checks pages, not BLOB bytes: the per-row CRC catches bit rot."""
    path = tmp_path / "s.sqlite"
    store = S.SQLiteStore(path, timeout=5)
    vec = np.arange(8, dtype=np.float32)
    store.put_many(S.encode_rows([b"k" * 32, b"j" * 32], [vec, vec + 1], [0, 1]))
    store.close()
    conn = sqlite3.connect(path)
    block, pos = conn.execute(
        "SELECT block, pos FROM entries WHERE key = ?", (b"k" * 32,)
    ).fetchone()
    data = bytearray(conn.execute("SELECT data FROM blocks WHERE id = ?", (block,)).fetchone()[0])
    data[pos + 5] ^= 0x40
    conn.execute("UPDATE blocks SET data = ? WHERE id = ?", (bytes(data), block))
    conn.commit()
    conn.close()
    store = S.SQLiteStore(path, timeout=5)
    res = store.get_many([b"k" * 32, b"j" * 32], stale_before=0.0)
    assert res.values[0] is None
    np.testing.assert_array_equal(res.values[1][0], vec + 1)
    assert res.invalid == _ids([b"k" * 32])
    store.close()


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------


def test_a_write_packs_arrays_into_blocks(store, monkeypatch):
    monkeypatch.setattr(S.TUNING, "block_bytes", 10 * 32)
    keys = _keys(25)
    store.put_many(_rows(keys))  # 25 arrays of 32 bytes -> blocks of 10, 10, 5
    use = _check_blocks(store._conn)
    assert sorted(v[1] for v in use.values()) == [5, 10, 10]
    assert [int(v[0][0]) for v in store.get_many(keys[::-1], 0.0).values] == list(range(25))[::-1]


def test_an_array_larger_than_a_block_gets_its_own(store, monkeypatch):
    monkeypatch.setattr(S.TUNING, "block_bytes", 64)
    keys = _keys(3)
    arrays = [np.full(4, 1, np.float32), np.full(100, 2, np.float32), np.full(4, 3, np.float32)]
    store.put_many(S.encode_rows(keys, arrays))
    assert sorted(v[0] for v in _check_blocks(store._conn).values()) == [16, 16, 400]
    for (got, _), want in zip(store.get_many(keys, 0.0).values, arrays, strict=True):
        np.testing.assert_array_equal(got, want)


def test_replacements_and_deletions_compact_blocks(store, monkeypatch, clock):
    """Blocks less than half live are rewritten; the file never keeps dead blocks."""
    monkeypatch.setattr(S.TUNING, "block_bytes", 10 * 32)
    keys = _keys(40)
    store.put_many(_rows(keys))
    store.put_many(_rows(keys[:6]))  # first block 4/10 live -> compacted
    use = _check_blocks(store._conn)
    assert all(lb * 2 >= size for size, _, lb in use.values())
    store.touch_and_purge([], _ids(keys[10:20]))  # second block emptied -> deleted by the trigger
    use = _check_blocks(store._conn)
    assert sum(v[1] for v in use.values()) == 30
    store.put_many(_rows(_keys(30, start=100)), max_size=35 * 32)  # eviction, then compaction
    use = _check_blocks(store._conn)
    assert all(lb * 2 >= size for size, _, lb in use.values())
    assert store.counts() == _counts_by_scan(store.path) == (35, 35 * 32)
    # Whatever survived is exactly what was last written under its key.
    # (_rows gives the i-th key of a call the value i: keys[:6] were rewritten as 0..5.)
    for i, value in enumerate(store.get_many(keys, 0.0).values):
        if value is not None:
            np.testing.assert_array_equal(value[0], np.full(8, i, np.float32))
    store.clear()
    assert _check_blocks(store._conn) == {}
    assert store._conn.execute("SELECT COUNT(*) FROM blocks").fetchone() == (0,)


def test_compaction_keeps_last_used_and_values(store, monkeypatch, clock):
    monkeypatch.setattr(S.TUNING, "block_bytes", 4 * 32)
    keys = _keys(4)
    store.put_many(_rows(keys))
    before = dict(store._conn.execute("SELECT key, last_used FROM entries"))
    store.touch_and_purge([], _ids(keys[:3]))  # 1 of 4 live: compacted on the next write
    store.put_many(_rows(_keys(1, start=50)))
    assert store._conn.execute(
        "SELECT last_used FROM entries WHERE key = ?", (keys[3],)
    ).fetchone() == (before[keys[3]],)
    assert int(store.get_many([keys[3]], 0.0).values[0][0][0]) == 3
    _check_blocks(store._conn)


def test_compaction_drops_entries_that_fail_their_check(store, monkeypatch):
    monkeypatch.setattr(S.TUNING, "block_bytes", 5 * 32)
    keys = _keys(5)
    store.put_many(_rows(keys))
    store._conn.execute("UPDATE entries SET crc = crc + 1 WHERE key = ?", (keys[4],))
    store.touch_and_purge([], _ids(keys[:3]))
    store.put_many(_rows(_keys(1, start=50)))  # compacts: keys[3] moves, keys[4] is dropped
    assert [v is None for v in store.get_many(keys, 0.0).values] == [True] * 3 + [False, True]
    assert store.counts() == _counts_by_scan(store.path) == (2, 64)
    _check_blocks(store._conn)


def test_an_entry_whose_block_is_missing_is_a_miss(store):
    keys = _keys(3)
    store.put_many(_rows(keys[:2]))
    store.put_many(_rows(keys[2:]))
    (block,) = store._conn.execute("SELECT block FROM entries WHERE key = ?", (keys[2],)).fetchone()
    store._conn.execute("DELETE FROM blocks WHERE id = ?", (block,))
    result = store.get_many(keys, 0.0)
    assert [v is None for v in result.values] == [False, False, True]
    assert result.invalid == _ids([keys[2]])


@pytest.mark.parametrize(
    "change", ["pos = -1", "pos = 1 << 40", "nbytes = nbytes + 4", "block = 'x'"]
)
def test_an_index_row_pointing_outside_its_block_is_a_miss(store, change):
    keys = _keys(3)
    store.put_many(_rows(keys))
    store._conn.execute("DROP TRIGGER entries_move")  # hand edits, not compaction
    store._conn.execute(f"UPDATE entries SET {change} WHERE key = ?", (keys[1],))
    result = store.get_many(keys, 0.0)
    assert [v is None for v in result.values] == [False, True, False]
    assert result.invalid == _ids([keys[1]])


@pytest.mark.parametrize("stride", [2, 10**9], ids=["directories", "index rows"])
def test_reads_without_incremental_blob_io(store, monkeypatch, stride):
    """Python 3.10 has no Connection.blobopen: whole blocks are read instead, same result."""
    monkeypatch.setattr(S.TUNING, "probe_stride", stride)
    keys = _keys(30)
    arrays = [np.full((i % 3 + 1, 4), i, np.float32) for i in range(30)]
    store.put_many(S.encode_rows(keys, arrays, range(30)))
    fast = store.get_many(keys[::-1], 0.0)
    monkeypatch.setattr(S.TUNING, "blob_open", False)
    slow = store.get_many(keys[::-1], 0.0)
    for (a, m), (b, n) in zip(fast.values, slow.values, strict=True):
        assert m == n and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_column_crcs_equal_row_crc():
    """The vectorised CRC of a uniform batch equals the per-row one the writer uses."""
    keys = _keys(5)
    datas = [bytes([i]) * 12 for i in range(5)]
    for metas in ([0] * 5, [0, 1, -1, 2**62, 0]):
        assert S._column_crcs(keys, "float32", "3", metas, datas) == [
            S.row_crc(k, "float32", "3", m, d) for k, m, d in zip(keys, metas, datas, strict=True)
        ]


@pytest.mark.parametrize("version", [3, 4])
def test_an_older_schema_is_moved_aside_not_read(tmp_path, version):
    """Schema 3 kept the arrays in the index rows, 4 had no directories: set aside, not deleted."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE info(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE entries(key BLOB PRIMARY KEY, data BLOB);"
        f"INSERT INTO info VALUES ('magic', '{S.MAGIC}'), ('schema_version', '{version}');"
    )
    conn.close()
    with pytest.raises(S.CorruptStoreError, match=f"unknown schema version {version}") as info:
        S.SQLiteStore(path, timeout=5)
    assert info.value.moved_to is not None and info.value.moved_to.exists()
    store = S.SQLiteStore(path, timeout=5)
    assert store.counts() == (0, 0)
    store.close()


def test_regroup_lays_entries_out_in_the_given_order(store, monkeypatch, clock):
    monkeypatch.setattr(S.TUNING, "block_bytes", 10 * 32)
    keys = _keys(30)
    for i in range(0, 30, 3):  # ten writes of three entries: ten blocks
        store.put_many(_rows(keys[i : i + 3]))
    before = dict(store._conn.execute("SELECT key, last_used FROM entries"))
    order = keys[::-1] + _keys(2, start=99)  # unknown keys are skipped
    store.regroup(order)
    layout = list(store._conn.execute("SELECT key, block, pos FROM entries"))
    assert len({b for _, b, _ in layout}) == 3  # 30 x 32 bytes in blocks of 320
    position = {k: (b, p) for k, b, p in layout}
    assert sorted(keys, key=position.__getitem__) == keys[::-1]
    assert dict(store._conn.execute("SELECT key, last_used FROM entries")) == before
    assert [int(v[0][0]) for v in store.get_many(keys, 0.0).values] == [i % 3 for i in range(30)]
    _check_blocks(store._conn)
    statements = []
    store._conn.set_trace_callback(statements.append)
    store.regroup(keys[::-1])  # already as compact as it gets: nothing is rewritten
    assert not [s for s in statements if s.startswith(("INSERT", "UPDATE"))]


def test_keys_sharing_a_row_id_never_return_each_others_vectors(store):
    """Row ids are 8-byte key prefixes; the stored full key decides what is a hit."""
    a, b = b"\x01" * 8 + b"a" * 24, b"\x01" * 8 + b"b" * 24
    assert S.key_id(a) == S.key_id(b)
    store.put_many(S.encode_rows([a], [np.full(4, 1, np.float32)]))
    got = store.get_many([a, b], 0.0)
    assert got.values[1] is None and got.values[0][0][0] == 1 and got.invalid == []
    store.put_many(S.encode_rows([b], [np.full(4, 2, np.float32)]))  # takes the row over
    got = store.get_many([a, b], 0.0)
    assert got.values[0] is None and got.values[1][0][0] == 2
    assert store.counts() == _counts_by_scan(store.path) == (1, 16)


def test_key_ids_of_digests_and_other_keys():
    keys = [*_keys(5), b"short", b"\xff" * 40]
    assert S._key_ids(keys[:5]) == [S.key_id(k) for k in keys[:5]]
    assert S._key_ids(keys) == [S.key_id(k) for k in keys]
    assert S.key_id(b"\xff" * 8) == -1 and S.key_id(b"\x01") == 1


# --------------------------------------------------------------------------------------
# Block directories
# --------------------------------------------------------------------------------------


@pytest.fixture
def directories(monkeypatch):
    """Let lookups of a handful of keys use block directories (sample every 2nd row id)."""
    monkeypatch.setattr(S.TUNING, "probe_stride", 2)


def _traced(store) -> list[str]:
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    return statements


def _index_row_lookups(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith(f"SELECT {S.INDEX_COLUMNS} FROM entries")]


def _assert_values(values, expected: list[int | None]) -> None:
    # _rows gives the i-th key of a write the value i and the meta i.
    assert [None if v is None else (int(v[0][0]), v[1]) for v in values] == [
        None if e is None else (e, e) for e in expected
    ]


def test_directories_serve_a_batch_without_index_rows(store, directories):
    keys = _keys(40)
    store.put_many(_rows(keys))
    _check_blocks(store._conn)
    statements = _traced(store)
    result = store.get_many(keys[::-1] + _keys(3, start=500), 0.0)
    _assert_values(result.values, list(range(40))[::-1] + [None] * 3)
    assert result.touch == result.invalid == []
    assert all(v[0].flags.writeable for v in result.values[:40])
    (lookup,) = _index_row_lookups(statements)  # for the three unknown keys only
    assert lookup.count(",") == 2 + S.INDEX_COLUMNS.count(",")


def test_directory_reads_use_the_block_index(store):
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT min(last_used) FROM entries WHERE block = 1"
    ).fetchall()
    assert "COVERING INDEX entries_block" in " ".join(r[-1] for r in plan)


def test_a_block_with_mixed_shapes_has_no_directory(store, directories):
    keys = _keys(4)
    arrays = [np.ones(3, np.float32), np.ones(4, np.float32)] * 2
    store.put_many(S.encode_rows(keys, arrays))
    assert store._conn.execute("SELECT COUNT(*) FROM block_dirs").fetchone() == (0,)
    got = store.get_many(keys, 0.0).values
    assert [v[0].shape for v in got] == [(3,), (4,), (3,), (4,)]


def test_a_block_whose_entries_left_is_read_through_index_rows(store, directories):
    """Once the live counter and the directory disagree, only index rows are trusted."""
    keys = _keys(10)
    store.put_many(_rows(keys))
    store.touch_and_purge([], _ids(keys[:2]))
    statements = _traced(store)
    _assert_values(store.get_many(keys, 0.0).values, [None, None, *range(2, 10)])
    assert len(_index_row_lookups(statements)) == 1


def test_entries_due_a_touch_are_read_through_index_rows(store, directories, clock):
    """A block is served by its directory only when none of its entries needs a touch."""
    keys = _keys(10)
    store.put_many(_rows(keys))
    (written,) = store._conn.execute("SELECT max(last_used) FROM entries").fetchone()
    store.touch_and_purge(_ids(keys[:4]), [])  # later than `written`
    result = store.get_many(keys, stale_before=written + 1)
    assert sorted(result.touch) == sorted(_ids(keys[4:]))  # exactly the stale ones
    _assert_values(result.values, list(range(10)))
    store.touch_and_purge(result.touch, [])
    statements = _traced(store)
    result = store.get_many(keys, stale_before=written + 1)
    assert result.touch == [] and not _index_row_lookups(statements)
    _assert_values(result.values, list(range(10)))


def _edit_directory(conn: sqlite3.Connection, edit) -> None:
    ((block, items),) = conn.execute("SELECT id, items FROM block_dirs").fetchall()
    table = np.frombuffer(items, S.DIR_ITEM).copy()
    conn.execute("UPDATE block_dirs SET items = ? WHERE id = ?", (edit(table), block))


def _shifted(table):  # item 3 points at item 4's bytes
    table["pos"][3] = table["pos"][4]
    return table.tobytes()


def _crc(table):
    table["crc"][3] += 1
    return table.tobytes()


def _meta(table):
    table["meta"][3] = 99
    return table.tobytes()


def _id(table):  # two items claim key 4; key 3 is listed nowhere
    table["id"][3] = table["id"][4]
    return table.tobytes()


def _outside(table):
    table["pos"][5] = 1 << 40
    return table.tobytes()


def _negative(table):
    table["pos"][5] = -32
    return table.tobytes()


def _truncated(table):
    return table.tobytes()[:-1]


def _text(table):
    return "not a directory"


@pytest.mark.parametrize(
    "edit", [_shifted, _crc, _meta, _id, _outside, _negative, _truncated, _text]
)
def test_a_damaged_directory_never_serves_a_wrong_vector(store, directories, edit):
    """Whatever a directory says, what it serves matches its CRC-32 with the requested key;
    the rest is read through the (intact) index rows: every value is right, none is lost."""
    keys = _keys(8)
    store.put_many(_rows(keys))
    _edit_directory(store._conn, edit)
    result = store.get_many(keys, 0.0)
    _assert_values(result.values, list(range(8)))
    assert result.invalid == []


@pytest.mark.parametrize(
    ("column", "value"), [("dtype", "'float16'"), ("dtype", "'int64'"), ("shape", "'4'")]
)
def test_a_directory_with_a_wrong_header_never_serves_a_wrong_vector(
    store, directories, column, value
):
    keys = _keys(8)
    store.put_many(_rows(keys))
    store._conn.execute(f"UPDATE block_dirs SET {column} = {value}")
    result = store.get_many(keys, 0.0)
    _assert_values(result.values, list(range(8)))
    assert result.invalid == []


def test_an_intact_directory_serves_entries_whose_index_rows_were_edited(store, directories):
    """The directory's copy of a location, checked by the CRC, still gives the right vector."""
    keys = _keys(6)
    store.put_many(_rows(keys))
    store._conn.execute("UPDATE entries SET pos = pos + 4 WHERE key = ?", (keys[2],))
    _assert_values(store.get_many(keys, 0.0).values, list(range(6)))


def test_a_key_sharing_a_row_id_is_a_miss_through_directories_too(store, directories):
    a, b = b"\x01" * 8 + b"a" * 24, b"\x01" * 8 + b"b" * 24
    others = _keys(6)
    store.put_many(S.encode_rows([a, *others], [np.full(4, i, np.float32) for i in range(7)]))
    for request in ([b, *others], [a, b, *others], [b, a, *others]):
        got = dict(zip(request, store.get_many(request, 0.0).values, strict=True))
        assert got[b] is None
        if a in request:
            assert got[a][0][0] == 0
        assert [got[k][0][0] for k in others] == list(range(1, 7))


def test_directories_follow_regroup_compaction_eviction_and_clear(
    store, directories, clock, monkeypatch
):
    monkeypatch.setattr(S.TUNING, "block_bytes", 10 * 32)
    keys = _keys(40)
    for i in range(0, 40, 4):
        store.put_many(_rows(keys[i : i + 4]))
    _check_blocks(store._conn)
    store.regroup(keys[::-1])
    _check_blocks(store._conn)
    assert store._conn.execute("SELECT COUNT(*) FROM block_dirs").fetchone() == (4,)
    expect = [i % 4 for i in range(40)]
    assert [int(v[0][0]) for v in store.get_many(keys, 0.0).values] == expect
    store.touch_and_purge([], _ids(keys[5:15]))
    store.put_many(_rows(_keys(20, start=100)), max_size=35 * 32)  # eviction, compaction
    _check_blocks(store._conn)
    for i, v in enumerate(store.get_many(keys, 0.0).values):
        assert v is None or int(v[0][0]) == expect[i]
    store.clear()
    assert store._conn.execute("SELECT COUNT(*) FROM block_dirs").fetchone() == (0,)


def test_the_index_row_path_answers_alone(store, directories, clock, monkeypatch):
    """The directory path is only a faster route: without it every answer is the same."""
    monkeypatch.setattr(S.TUNING, "block_bytes", 10 * 32)
    keys = _keys(40)
    for i in range(0, 40, 4):
        store.put_many(_rows(keys[i : i + 4]))
    store.regroup(keys)
    store.touch_and_purge([], _ids(keys[30:32]))  # two blocks some entries left
    request = keys + keys[:3] + _keys(3, start=500)
    answers, by_index_rows = [], []
    for fast_reads in (S._store.DEFAULT_FAST_READS, ()):
        monkeypatch.setattr(S.TUNING, "fast_reads", fast_reads)
        statements = _traced(store)
        result = store.get_many(request, 0.0)
        answers.append([None if v is None else (v[0].tobytes(), v[1]) for v in result.values])
        assert result.invalid == []
        assert any("block_dirs" in s for s in statements) == bool(fast_reads)
        (lookup,) = _index_row_lookups(statements)
        by_index_rows.append(lookup[lookup.index(" IN (") :].count(",") + 1)
    assert answers[0] == answers[1]
    assert sum(a is not None for a in answers[0]) == 38 + 3
    assert by_index_rows[1] == 43 > by_index_rows[0]  # all distinct keys / what was left


def test_only_the_store_imports_the_directory_path():
    """Deleting _directory.py means editing _store.DEFAULT_FAST_READS (and the re-exports)."""
    import ast

    for path in Path(S.__file__).parent.glob("_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if path.stem not in ("_store", "__init__"):
            assert "_directory" not in imported, path.name


def test_tunables_are_one_object_read_at_call_time(store, monkeypatch):
    """A tunable changed on S.TUNING takes effect at once: no module keeps a copy."""
    copies = {"BLOCK_BYTES", "PROBE_STRIDE", "TOUCH_INTERVAL", "_HAS_BLOBOPEN", "FAST_READS"}
    for module in (S._write, S._directory, S._read, S._store, S._sql, S._codec, S):
        assert not copies & set(vars(module)), module.__name__
    monkeypatch.setattr(S.TUNING, "block_bytes", 64)  # 32-byte arrays: two per block
    store.put_many(_rows(_keys(8)))
    assert store._conn.execute("SELECT COUNT(*) FROM blocks").fetchone() == (4,)
    monkeypatch.undo()
    store.put_many(_rows(_keys(8, start=100)))
    assert store._conn.execute("SELECT COUNT(*) FROM blocks").fetchone() == (5,)


# --------------------------------------------------------------------------------------
# CRC-32 implementations
# --------------------------------------------------------------------------------------


def test_files_are_interchangeable_between_crc32_implementations(store, monkeypatch):
    """zlib-ng (the "fast" extra) computes zlib's CRC-32: either reads what the other wrote."""
    ng = pytest.importorskip(
        "zlib_ng.zlib_ng", reason="the 'fast' extra (zlib-ng) is not installed"
    )
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 64, 3072, 5000):
        data = rng.bytes(n)
        assert ng.crc32(data) == zlib.crc32(data)
        assert ng.crc32(data, 123456789) == zlib.crc32(data, 123456789)
    monkeypatch.setattr(S.TUNING, "probe_stride", 2)
    for writer, reader in [(zlib.crc32, ng.crc32), (ng.crc32, zlib.crc32)]:
        keys = _keys(12, start=100 if writer is ng.crc32 else 0)
        monkeypatch.setattr(S.TUNING, "crc32", writer)
        store.put_many(_rows(keys))
        monkeypatch.setattr(S.TUNING, "crc32", reader)
        result = store.get_many(keys, 0.0)
        assert [int(v[0][0]) for v in result.values] == list(range(12))
        assert result.invalid == []


def test_the_store_works_without_zlib_ng(tmp_path):
    """Without the "fast" extra the standard library's zlib checks the entries."""
    code = (
        "import sys; sys.modules['zlib_ng'] = None\n"
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from xlmt_sklearn.store import _sqlite as S\n"
        "assert S.CRC32_IMPLEMENTATION == 'zlib', S.CRC32_IMPLEMENTATION\n"
        "S.TUNING.probe_stride = 2\n"
        f"store = S.SQLiteStore(Path({str(tmp_path / 'c.sqlite')!r}), timeout=5)\n"
        "keys = [bytes([i]) * 32 for i in range(10)]\n"
        "store.put_many(S.encode_rows(keys, [np.full(4, i, np.float32) for i in range(10)]))\n"
        "values = store.get_many(keys, 0.0).values\n"
        "assert [int(v[0][0]) for v in values] == list(range(10))\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
