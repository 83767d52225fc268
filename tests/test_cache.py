"""Tests of the user-facing embedding cache: API, failure safety and concurrency."""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests import _cache_worker
from tests._raw_cache import insert_raw
from tests._subprocesses import read_line, spawn_cache_worker
from xlmt_sklearn._errors import CacheWarning
from xlmt_sklearn.flow import _tuning as flow_tuning
from xlmt_sklearn.store import _cache
from xlmt_sklearn.store import _sqlite as _sqlite_store
from xlmt_sklearn.store._adapt import as_cache
from xlmt_sklearn.store._cache import CacheStats, EmbeddingCache, NullCache
from xlmt_sklearn.store._keys import make_keys, parse_size


def _vectors(n: int, dim: int = 16, start: int = 0) -> list[np.ndarray]:
    return [np.arange(dim, dtype=np.float32) + i for i in range(start, start + n)]


def _keys(n: int, start: int = 0) -> list[bytes]:
    return make_keys("fp", [f"text {i}" for i in range(start, start + n)])


@pytest.fixture
def cache(tmp_path):
    c = EmbeddingCache(tmp_path / "emb.sqlite")
    yield c
    c.close()


def _assert_all_values_correct(path: Path, dim: int) -> int:
    """Every entry in the file reads back as the value the workers derive from its key."""
    conn = sqlite3.connect(path)
    try:
        keys = [r[0] for r in conn.execute("SELECT key FROM entries")]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    c = EmbeddingCache(path)
    try:
        hits = c.get_many(keys)
        assert all(h is not None for h in hits)
        for key, (array, _meta) in zip(keys, hits, strict=True):
            assert array.tobytes() == _cache_worker.value_for(key, dim).tobytes()
        assert c.stats.entries == len(keys)
        assert c.stats.bytes == len(keys) * dim * 4
    finally:
        c.close()
    return len(keys)


# --------------------------------------------------------------------------------------
# Keys, sizes, paths
# --------------------------------------------------------------------------------------


def test_make_keys_definition():
    texts = ["hello", "", "héllo wörld 🌍", "a\ud800b"]  # lone surrogates are allowed
    keys = make_keys("model@rev", texts)
    expected = [
        hashlib.sha256(b"model@rev\x00" + t.encode("utf-8", "surrogatepass")).digest()
        for t in texts
    ]
    assert keys == expected and all(len(k) == 32 for k in keys)
    assert make_keys("model@rev", ["hello", "hello"])[0] == keys[0]
    assert make_keys("other", ["hello"])[0] != keys[0]
    assert make_keys("fp", []) == []
    assert make_keys("fp", np.array(["x"], dtype=object)) == make_keys("fp", ["x"])


def test_make_keys_large_batch():
    """Not timed: 200k keys are unique and deterministic."""
    texts = [f"tweet {i}" for i in range(200_000)]
    keys = make_keys("fp", texts)
    assert len(set(keys)) == len(texts) and keys[-1] == make_keys("fp", texts[-1:])[0]


def test_make_keys_rejects_bad_input():
    with pytest.raises(TypeError, match="element 1 is NoneType"):
        make_keys("fp", ["a", None])
    with pytest.raises(TypeError, match="element 0 is bytes"):
        make_keys("fp", [b"a"])
    with pytest.raises(TypeError, match="fingerprint must be a str"):
        make_keys(b"fp", ["a"])
    with pytest.raises(ValueError, match="NUL"):
        make_keys("f\x00p", ["a"])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        (1024, 1024),
        (np.int64(7), 7),
        ("1024", 1024),
        ("500MB", 500 * 10**6),
        ("500mb", 500 * 10**6),
        ("2GB", 2 * 10**9),
        ("2 GB", 2 * 10**9),
        ("1.5GiB", int(1.5 * 2**30)),
        ("64KiB", 64 * 1024),
        ("750kB", 750_000),
        ("3TB", 3 * 10**12),
        ("10B", 10),
    ],
)
def test_parse_size(spec, expected):
    assert parse_size(spec) == expected


@pytest.mark.parametrize("spec", ["", "MB", "5 XB", "-5MB", "1e3", "0", "0.0001B", "five"])
def test_parse_size_rejects_bad_strings(spec):
    with pytest.raises(ValueError, match="max_size"):
        parse_size(spec)


@pytest.mark.parametrize("spec", [1.5, True, [10]])
def test_parse_size_rejects_bad_types(spec):
    with pytest.raises(TypeError, match="max_size must be"):
        parse_size(spec)


def test_constructor_is_lazy_and_resolves_paths(tmp_path):
    target = tmp_path / "a" / "b" / "emb.sqlite"
    c = EmbeddingCache(target)
    assert c.path == target.resolve() and c.path.is_absolute()
    assert not (tmp_path / "a").exists()  # nothing created or opened yet
    assert EmbeddingCache(str(tmp_path)).path == tmp_path.resolve() / _cache.DEFAULT_FILENAME
    trailing = EmbeddingCache(str(tmp_path / "newdir") + os.sep)
    assert trailing.path == (tmp_path / "newdir" / _cache.DEFAULT_FILENAME).resolve()
    with pytest.raises(TypeError, match=r"str or os\.PathLike"):
        EmbeddingCache(42)
    with pytest.raises(ValueError, match="must be positive"):
        EmbeddingCache(target, max_size=0)
    with pytest.raises(ValueError, match="timeout"):
        EmbeddingCache(target, timeout=-1)


def test_directories_are_private(tmp_path):
    """Created parent directories get mode 0o700 and the database file 0o600."""
    old_umask = os.umask(0o022)
    try:
        c = EmbeddingCache(tmp_path / "new" / "sub" / "emb.sqlite")
        c.put_many(_keys(1), _vectors(1))
    finally:
        os.umask(old_umask)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / "sub").stat().st_mode & 0o777 == 0o700
    assert c.path.stat().st_mode & 0o777 == 0o600
    c.close()


# --------------------------------------------------------------------------------------
# Basic behaviour
# --------------------------------------------------------------------------------------


def test_round_trip(cache, no_warnings):
    keys = _keys(5)
    vectors = [*_vectors(4), np.ones((3, 7), np.float16)]
    assert cache.get_many(keys) == [None] * 5
    cache.put_many(keys[:4], vectors[:4])
    cache.put_many(keys[4:], vectors[4:], metas=[-7])
    got = cache.get_many(keys + _keys(1, start=99))
    assert got[-1] is None
    for (array, _meta), expected in zip(got[:5], vectors, strict=True):
        assert array.dtype == expected.dtype and array.shape == expected.shape
        assert array.flags.writeable
        np.testing.assert_array_equal(array, expected)
    assert [m for _, m in got[:5]] == [0, 0, 0, 0, -7]
    got[0][0][:] = -1  # writing to a result never changes the cache
    np.testing.assert_array_equal(cache.get_many(keys[:1])[0][0], vectors[0])
    assert cache.get_many([]) == []


def test_put_replaces_existing_keys(cache, no_warnings):
    keys = _keys(2)
    cache.put_many(keys, _vectors(2), metas=[1, 2])
    cache.put_many(keys[:1], [np.zeros(3, np.float32)], metas=[9])
    array, meta = cache.get_many(keys[:1])[0]
    assert meta == 9 and array.shape == (3,)
    assert len(cache) == 2


def test_put_rejects_misuse_before_writing(cache):
    with pytest.raises(TypeError, match="float32 or float16"):
        cache.put_many(_keys(2), [np.zeros(3, np.float32), np.zeros(3)])
    with pytest.raises(ValueError, match="2 keys but 1 arrays"):
        cache.put_many(_keys(2), _vectors(1))
    with pytest.raises(TypeError, match="must be bytes"):
        cache.get_many(["not bytes"])
    assert len(cache) == 0


def test_stats_and_clear(cache, no_warnings):
    assert cache.stats == CacheStats(0, 0, 0, 0, str(cache.path))
    assert not cache.path.exists()  # stats does not create the file
    cache.put_many(_keys(3), _vectors(3, dim=10))
    cache.get_many(_keys(5))
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.entries, stats.bytes) == (3, 2, 3, 120)
    assert stats.hit_rate == pytest.approx(0.6)
    assert len(cache) == 3
    cache.clear()
    assert (cache.stats.entries, cache.stats.bytes, len(cache)) == (0, 0, 0)
    assert cache.get_many(_keys(3)) == [None] * 3
    other = EmbeddingCache(cache.path)  # counters belong to the object
    assert (other.stats.hits, other.stats.misses, other.stats.entries) == (0, 0, 0)


def test_lru_eviction(tmp_path, monkeypatch, no_warnings):
    """The cap holds after every write and recently read entries survive."""
    ticks = iter(range(10**6, 10**9, 100))  # a clock that moves 100 s per call
    monkeypatch.setattr(_sqlite_store.TUNING, "clock", lambda: float(next(ticks)))
    dim, cap = 16, 10 * 16 * 4
    c = EmbeddingCache(tmp_path / "lru.sqlite", max_size=cap)
    keys = _keys(20)
    for i in range(10):
        c.put_many(keys[i : i + 1], _vectors(1, dim, start=i))
    assert all(v is not None for v in c.get_many(keys[:3]))  # read 0..2 recently
    c.put_many(keys[10:15], _vectors(5, dim, start=10))
    assert c.stats.bytes <= cap
    survivors = [v is not None for v in c.get_many(keys[:15])]
    assert survivors == [True] * 3 + [False] * 5 + [True] * 7
    c.put_many(keys[15:20], _vectors(5, dim, start=15))
    assert c.stats.bytes <= cap and c.stats.entries == 10
    c.close()


def test_max_size_string(tmp_path, no_warnings):
    c = EmbeddingCache(tmp_path / "s.sqlite", max_size="1KiB")
    c.put_many(_keys(40), _vectors(40, dim=16))  # 2560 bytes into a 1024-byte cache
    assert 0 < c.stats.bytes <= 1024
    c.close()


def test_many_vectors_round_trip(cache, no_warnings):
    """Not timed: a 2,000 x 768 float32 lookup returns exactly what was written."""
    n = 2_000
    data = np.random.default_rng(0).standard_normal((n, 768)).astype(np.float32)
    keys = make_keys("big", [str(i) for i in range(n)])
    cache.put_many(keys, list(data), metas=range(n))
    got = cache.get_many(keys)
    assert np.stack([g[0] for g in got]).tobytes() == data.tobytes()
    assert [g[1] for g in got] == list(range(n))


def test_threads_share_one_cache(cache, no_warnings):
    errors = []

    def work(seed: int) -> None:
        try:
            for j in range(15):
                keys = _keys(20, start=(seed * 7 + j) % 50)
                cache.put_many(keys, [np.full(8, hash(k) % 1000, np.float32) for k in keys])
                for k, hit in zip(keys, cache.get_many(keys), strict=True):
                    assert hit is None or hit[0][0] == hash(k) % 1000
                if j % 5 == 4:
                    cache.close()  # other threads must transparently reopen
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------------------
# Pickling, equality, as_cache, NullCache
# --------------------------------------------------------------------------------------


def test_pickle_copy_repr_eq(cache, no_warnings):
    cache.put_many(_keys(2), _vectors(2))
    cache.get_many(_keys(3))  # opens the connection and sets counters
    for clone in (pickle.loads(pickle.dumps(cache)), copy.deepcopy(cache), copy.copy(cache)):
        assert clone == cache and hash(clone) == hash(cache)
        assert clone.__getstate__() == {"path": str(cache.path), "max_size": None, "timeout": 30.0}
        assert (clone.stats.hits, clone.stats.misses) == (0, 0)
        assert clone.get_many(_keys(1))[0] is not None
    sized = EmbeddingCache(cache.path, max_size="1KiB", timeout=5)
    assert sized == EmbeddingCache(cache.path, max_size=1024)
    assert sized != cache
    assert repr(cache) == f"EmbeddingCache({str(cache.path)!r}, max_size=None)"
    assert repr(sized) == f"EmbeddingCache({str(cache.path)!r}, max_size='1KiB', timeout=5.0)"
    assert pickle.loads(pickle.dumps(sized)).max_size == "1KiB"


def test_as_cache(tmp_path):
    assert isinstance(as_cache(None), NullCache)
    a = as_cache(str(tmp_path / "m.sqlite"))
    assert isinstance(a, EmbeddingCache)
    assert as_cache(tmp_path / "m.sqlite") is a  # memoised per process and path
    assert as_cache(str(tmp_path)) is as_cache(tmp_path / _cache.DEFAULT_FILENAME)
    assert as_cache(a) is a
    null = NullCache()
    assert as_cache(null) is null
    with pytest.raises(TypeError, match="cache must be None, a path"):
        as_cache(42)
    with pytest.raises(TypeError, match="cache must be None, a path"):
        as_cache(True)


def test_null_cache():
    null = NullCache()
    keys = _keys(3)
    null.put_many(keys, _vectors(3))
    assert null.get_many(keys) == [None] * 3
    null.clear()
    null.close()
    assert null.stats == CacheStats(0, 0, 0, 0, None)
    assert len(null) == 0 and repr(null) == "NullCache()"
    assert null == NullCache() and hash(null) == hash(NullCache())
    assert pickle.loads(pickle.dumps(null)) == null


# --------------------------------------------------------------------------------------
# The cache interface: CacheBase, and user objects with get_many/put_many
# --------------------------------------------------------------------------------------


class DictCache:
    """A user's cache: a dict behind get_many/put_many, no base class, no optional methods."""

    def __init__(self):
        self.data: dict[bytes, tuple[np.ndarray, int]] = {}
        self.hits = 0

    def get_many(self, keys):
        found = [self.data.get(k) for k in keys]
        self.hits += sum(v is not None for v in found)
        return [None if v is None else (v[0].copy(), v[1]) for v in found]

    def put_many(self, keys, arrays, metas=None):
        metas = [0] * len(keys) if metas is None else metas
        for key, array, meta in zip(keys, arrays, metas, strict=True):
            self.data[key] = (np.array(array), int(meta))


class RegroupingDictCache(DictCache):
    def __init__(self):
        super().__init__()
        self.regrouped: list[list[bytes]] = []

    def regroup(self, keys):
        self.regrouped.append(list(keys))


@pytest.mark.parametrize("kind", ["pooled", "tokens"])
@pytest.mark.parametrize("user_cache", [DictCache, RegroupingDictCache])
def test_a_user_object_with_get_many_and_put_many_is_a_cache(
    tiny_model_dir, monkeypatch, kind, user_cache
):
    """#15: the cache parameter accepted such an object at fit and refused it at transform."""
    from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer

    monkeypatch.setattr(
        flow_tuning.TUNING, "regroup_below_texts_per_s", float("inf")
    )  # always regroup
    est = XLMTVectorizer if kind == "pooled" else XLMTTokenVectorizer
    texts = ["a user cache", "works end to end", "a user cache", "with hits the second time"]
    fresh = est(str(tiny_model_dir), device="cpu").fit().transform(texts)
    store = user_cache()
    vec = est(str(tiny_model_dir), device="cpu", cache=store).fit(texts)
    first = vec.transform(texts)
    # the distinct texts, written through; token features also keep each tokenization
    per_text = 1 if kind == "pooled" else 2
    assert len(store.data) == 3 * per_text and store.hits == 0
    second = vec.transform(texts)
    assert store.hits == 3 * per_text
    if user_cache is RegroupingDictCache:
        (regrouped,) = store.regrouped  # the vectors, in input order
        assert len(regrouped) == 3 and set(regrouped) <= set(store.data)
    for got in (first, second):
        assert len(got) == len(fresh)
        for a, b in zip(got, fresh, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_as_cache_accepts_cache_objects_and_wraps_duck_typed_ones(tmp_path):
    class Mine(_cache.CacheBase):
        def get_many(self, keys):
            return [None] * len(keys)

        def put_many(self, keys, arrays, metas=None):
            pass

    mine = Mine()
    assert as_cache(mine) is mine  # a subclass is used as it is
    assert mine.regroup(_keys(2)) is None and mine.close() is None
    assert mine.stats == CacheStats(0, 0, 0, 0, None)
    with pytest.raises(NotImplementedError, match="Mine does not support clear"):
        mine.clear()
    for cache in (EmbeddingCache(tmp_path / "e.sqlite"), NullCache()):
        assert isinstance(cache, _cache.CacheBase) and as_cache(cache) is cache

    duck = DictCache()
    wrapped = as_cache(duck)
    assert isinstance(wrapped, _cache.CacheBase) and wrapped is not duck
    assert repr(wrapped) == f"_DuckCache({duck!r})"
    wrapped.put_many(_keys(2), _vectors(2), [5, 6])
    hits = wrapped.get_many(_keys(3))
    assert [h is None for h in hits] == [False, False, True] and hits[1][1] == 6
    wrapped.regroup(_keys(2))  # the defaults stand in for what the object lacks
    wrapped.close()
    assert wrapped.stats == CacheStats(0, 0, 0, 0, None)
    with pytest.raises(NotImplementedError, match="DictCache does not support clear"):
        wrapped.clear()

    regrouping = RegroupingDictCache()
    as_cache(regrouping).regroup(_keys(2))  # ... and the object's own methods are used
    assert regrouping.regrouped == [_keys(2)]


def test_as_cache_refuses_what_is_not_a_cache():
    class Short(DictCache):
        def get_many(self, keys):
            return []

    with pytest.raises(ValueError, match=r"Short\.get_many returned 0 values for 2 keys"):
        as_cache(Short()).get_many(_keys(2))
    with pytest.raises(TypeError, match="not the class DictCache"):
        as_cache(DictCache)
    with pytest.raises(TypeError, match="or an object with get_many and put_many"):
        as_cache(object())


# --------------------------------------------------------------------------------------
# Damaged, foreign and hostile files
# --------------------------------------------------------------------------------------


def _fresh_cache_works(c: EmbeddingCache) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        before = c.stats.entries
        c.put_many(_keys(2, start=500), _vectors(2))
        assert [v is not None for v in c.get_many(_keys(2, start=500))] == [True, True]
        assert c.stats.entries == before + 2


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a database" * 500, id="garbage"),
        pytest.param(os.urandom(100), id="short"),
        pytest.param(b"SQLite format 3\x00" + b"\xff" * 5000, id="bad-header"),
    ],
)
def test_garbage_file_is_moved_aside(tmp_path, content):
    path = tmp_path / "emb.sqlite"
    path.write_bytes(content)
    c = EmbeddingCache(path)
    with pytest.warns(
        CacheWarning, match="was corrupt or not an xlmt_sklearn cache.*moved it"
    ) as rec:
        assert c.get_many(_keys(3)) == [None] * 3
    assert rec[0].filename == __file__  # attributed to the caller, not to the cache internals
    (moved,) = tmp_path.glob("emb.sqlite.corrupt-*")
    assert moved.read_bytes() == content
    _fresh_cache_works(c)
    c.close()


def test_truncated_file_is_moved_aside(tmp_path):
    path = tmp_path / "emb.sqlite"
    c = EmbeddingCache(path)
    keys = _keys(300)
    vectors = _vectors(300, dim=256)
    c.put_many(keys, vectors)
    c.close()  # checkpoints the WAL into the file
    os.truncate(path, path.stat().st_size // 2)
    with pytest.warns(CacheWarning, match="corrupt.*malformed"):
        got = c.get_many(keys)
    for hit, expected in zip(got, vectors, strict=True):  # never a wrong vector
        assert hit is None or np.array_equal(hit[0], expected)
    assert len(list(tmp_path.glob("emb.sqlite.corrupt-*"))) == 1
    _fresh_cache_works(c)
    c.close()


@pytest.mark.parametrize(
    "setup",
    [
        "CREATE TABLE users(name TEXT)",
        "CREATE TABLE entries(key BLOB PRIMARY KEY, data BLOB)",
        "CREATE TABLE info(name TEXT PRIMARY KEY, value TEXT); "
        "CREATE TABLE entries(key BLOB); INSERT INTO info VALUES ('magic', 'someone-else')",
        "CREATE TABLE info(name TEXT PRIMARY KEY, value TEXT); CREATE TABLE entries(key BLOB); "
        f"INSERT INTO info VALUES ('magic', '{_sqlite_store.MAGIC}'), ('schema_version', '0')",
    ],
    ids=["foreign", "no-info", "wrong-magic", "old-version"],
)
def test_foreign_sqlite_file_is_moved_aside(tmp_path, setup):
    path = tmp_path / "emb.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(setup)
    conn.close()
    c = EmbeddingCache(path)
    with pytest.warns(CacheWarning, match="not an xlmt_sklearn cache"):
        c.put_many(_keys(1), _vectors(1))  # retried on the fresh file
    assert len(list(tmp_path.glob("emb.sqlite.corrupt-*"))) == 1
    assert c.get_many(_keys(1))[0] is not None
    _fresh_cache_works(c)
    c.close()


def test_newer_schema_is_left_alone(tmp_path):
    path = tmp_path / "emb.sqlite"
    c = EmbeddingCache(path)
    c.put_many(_keys(1), _vectors(1))
    c.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE info SET value = '999' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.warns(CacheWarning, match="cannot be used.*version 999 is newer"):
        assert c.get_many(_keys(1)) == [None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # warned once; now a null cache
        c.put_many(_keys(1), _vectors(1))
        assert c.get_many(_keys(1)) == [None]
    assert not list(tmp_path.glob("*.corrupt-*"))  # a newer version's data is not destroyed
    assert c.stats.misses == 2


class _Exploit:
    """Unpickling this creates a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_rows_are_never_unpickled(tmp_path):
    path = tmp_path / "emb.sqlite"
    marker = tmp_path / "pwned"
    c = EmbeddingCache(path)
    c.put_many(_keys(1, start=1000), _vectors(1))
    payload = pickle.dumps(_Exploit(str(marker)))
    aligned = payload + b"\x00" * (-len(payload) % 4)
    keys = _keys(7)
    from xlmt_sklearn.store._sqlite import row_crc

    shape0 = str(len(aligned) // 4)
    rows = [
        # valid numbers with a valid checksum: returned as plain floats, never unpickled
        (keys[0], "float32", shape0, aligned, 0, row_crc(keys[0], "float32", shape0, 0, aligned)),
        (keys[1], "object", "1", payload, 0, None),
        (keys[2], "float32", f"__import__('pickle').loads({payload!r})", payload, 0, None),
        (keys[3], "float32", "1", payload, 0, None),  # length mismatch
        (keys[4], "float32", "1", "text, not a blob", 0, None),
        (keys[5], "float32", "1", b"\x00" * 4, "evil", None),  # meta is not an integer
        (keys[6], "pickle", "1", payload, 0, None),
    ]
    conn = sqlite3.connect(path)
    insert_raw(conn, rows)
    conn.commit()
    conn.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        got = c.get_many(keys)
    assert not marker.exists()
    assert got[0][0].dtype == np.float32 and got[0][0].tobytes() == aligned
    assert got[1:] == [None] * 6
    assert c.stats.entries == 2  # invalid rows were deleted
    assert not marker.exists()
    c.close()


# --------------------------------------------------------------------------------------
# Unusable locations and failing storage
# --------------------------------------------------------------------------------------


def _assert_disabled_quietly(c: EmbeddingCache) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        c.put_many(_keys(2), _vectors(2))
        assert c.get_many(_keys(2)) == [None, None]
        c.clear()
        assert c.stats.entries == 0 and len(c) == 0


def test_directory_where_the_file_should_be(tmp_path):
    path = tmp_path / "emb.sqlite"
    c = EmbeddingCache(path)
    path.mkdir()
    with pytest.warns(CacheWarning, match="cannot be used.*directory exists") as rec:
        c.put_many(_keys(2), _vectors(2))
    assert rec[0].filename == __file__
    _assert_disabled_quietly(c)
    nested = tmp_path / "d"
    (nested / _cache.DEFAULT_FILENAME).mkdir(parents=True)
    c2 = EmbeddingCache(str(nested) + os.sep)
    with pytest.warns(CacheWarning, match="without the cache"):
        assert c2.get_many(_keys(1)) == [None]


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    c = EmbeddingCache(tmp_path / "file" / "emb.sqlite")
    with pytest.warns(CacheWarning, match="cannot be used.*results are computed without"):
        assert c.get_many(_keys(2)) == [None, None]
    _assert_disabled_quietly(c)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions"
)
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        c = EmbeddingCache(ro / "emb.sqlite")
        with pytest.warns(CacheWarning, match="cannot be used.*Permission"):
            c.put_many(_keys(2), _vectors(2))
        _assert_disabled_quietly(c)
    finally:
        ro.chmod(0o700)


def test_open_permission_error_simulated(tmp_path, monkeypatch):
    """As root (CI containers) permissions cannot be revoked; simulate SQLite refusing."""

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(_sqlite_store.sqlite3, "connect", refuse)
    c = EmbeddingCache(tmp_path / "emb.sqlite")
    with pytest.warns(CacheWarning, match=r"emb\.sqlite.*unable to open database file"):
        assert c.get_many(_keys(1)) == [None]
    _assert_disabled_quietly(c)


def test_read_only_file_simulated(cache, monkeypatch):
    cache.put_many(_keys(2), _vectors(2))

    def readonly(self, *args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(_sqlite_store.SQLiteStore, "put_many", readonly)
    with pytest.warns(CacheWarning, match="Cannot write.*readonly database"):
        cache.put_many(_keys(1, start=10), _vectors(1))
    assert [v is not None for v in cache.get_many(_keys(2))] == [True, True]


def test_disk_full(cache, monkeypatch):
    keys = _keys(4)
    cache.put_many(keys[:2], _vectors(2))

    def full(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(_sqlite_store.SQLiteStore, "put_many", full)
    with pytest.warns(CacheWarning, match=r"Cannot write to the embedding cache at '.*emb\.sqlite"):
        cache.put_many(keys[2:], _vectors(2, start=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # warned once, not on every batch
        cache.put_many(keys[2:], _vectors(2, start=2))
        got = cache.get_many(keys)  # reads keep working and stay right
    assert got[2:] == [None, None]
    for (array, _), expected in zip(got[:2], _vectors(2), strict=True):
        np.testing.assert_array_equal(array, expected)
    monkeypatch.undo()
    assert cache.stats.entries == 2


def test_transient_lock_timeout_warns_and_recovers(cache, monkeypatch):
    keys = _keys(2)
    cache.put_many(keys, _vectors(2))
    real_get = _sqlite_store.SQLiteStore.get_many

    def locked(self, *args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(_sqlite_store.SQLiteStore, "get_many", locked)
    with pytest.warns(CacheWarning, match="busy.*database is locked.*computed without the cache"):
        assert cache.get_many(keys) == [None, None]
    monkeypatch.setattr(_sqlite_store.SQLiteStore, "get_many", real_get)
    assert all(v is not None for v in cache.get_many(keys))  # not disabled


def test_busy_timestamp_refresh_is_quiet(cache, monkeypatch, no_warnings):
    """Hits stay hits when refreshing their LRU timestamps times out."""
    keys = _keys(2)
    cache.put_many(keys, _vectors(2))

    def locked(self, *args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(_sqlite_store.TUNING, "touch_interval", -10.0)  # every hit needs a refresh
    monkeypatch.setattr(_sqlite_store.SQLiteStore, "touch_and_purge", locked)
    assert all(v is not None for v in cache.get_many(keys))
    assert all(v is not None for v in cache.get_many(keys))


def test_unexpected_error_never_escapes(cache, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("something unforeseen")

    for name in ("get_many", "put_many", "clear", "counts"):
        monkeypatch.setattr(_sqlite_store.SQLiteStore, name, broken)
    with pytest.warns(CacheWarning, match="cannot be used.*something unforeseen"):
        assert cache.get_many(_keys(1)) == [None]
    _assert_disabled_quietly(cache)


def test_file_deleted_while_in_use(cache, no_warnings):
    cache.put_many(_keys(2), _vectors(2))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache.path}{suffix}").unlink(missing_ok=True)
    assert cache.get_many(_keys(2)) == [None, None]  # a new, empty file
    cache.put_many(_keys(2), _vectors(2))
    assert cache.path.exists() and len(cache) == 2


# --------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_procs", [2, 4])
def test_concurrent_writers(tmp_path, n_procs):
    """Writers with overlapping key ranges run at once; every value reads back right."""
    path = tmp_path / "shared.sqlite"
    dim = 64
    procs = [
        spawn_cache_worker(
            "write", str(path), str(100 * j), str(100 * j + 300), "25", str(dim), stdin=-1
        )
        for j in range(n_procs)
    ]
    for p in procs:  # all started and imported: release them together
        assert read_line(p) == b"ready\n"
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    n = 100 * (n_procs - 1) + 300
    assert _assert_all_values_correct(path, dim) == n
    c = EmbeddingCache(path)
    hits = c.get_many(_cache_worker.keys_for(range(n)))
    assert [h[1] for h in hits] == list(range(n))
    c.close()


def test_writer_killed_mid_batch(tmp_path, no_warnings):
    """SIGKILL at random points of large write transactions never damages the file."""
    path = tmp_path / "killed.sqlite"
    dim = 768
    rng = random.Random(1234)
    for round_ in range(5):
        proc = spawn_cache_worker("hammer", str(path), str(dim), "250", str(round_))
        assert read_line(proc) == b"ready\n"
        try:
            proc.wait(timeout=rng.uniform(0.01, 0.3))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, "the writer stopped by itself"
        assert _assert_all_values_correct(path, dim) > 0


def test_clear_while_another_process_reads(tmp_path, no_warnings):
    path = tmp_path / "shared.sqlite"
    dim, n = 32, 300
    c = EmbeddingCache(path)
    keys = _cache_worker.keys_for(range(n))
    values = [_cache_worker.value_for(k, dim) for k in keys]
    c.put_many(keys, values)
    reader = spawn_cache_worker("read", str(path), str(n), str(dim), "1.0")
    assert read_line(reader) == b"ready\n"
    for i in range(20):
        c.clear()
        for j in range(0, n, 50):  # six writes: six blocks
            c.put_many(keys[j : j + 50 : 2], values[j : j + 50 : 2])
        c.regroup(keys[:: (-1 if i % 2 else 1)])  # into one block while the reader reads
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err.decode()
    assert out.startswith(b"done")
    c.close()


def test_schema_setup_retries_an_immediate_busy():
    """SQLite can refuse the switch to WAL at once (no busy handler): retried, not given up."""
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    _sqlite_store._retry_busy(flaky, timeout=5.0)
    assert len(calls) == 3

    def corrupt():
        calls.append(1)
        raise sqlite3.OperationalError("unable to open database file")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        _sqlite_store._retry_busy(corrupt, timeout=5.0)
    assert len(calls) == 1  # only lock errors are retried

    def always_busy():
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _sqlite_store._retry_busy(always_busy, timeout=0.05)
