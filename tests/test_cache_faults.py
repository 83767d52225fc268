"""Faults from outside the cache's own transactions (issue 18).

Each test stages what a user or a broken program did to a working cache: Ctrl-C
in the middle of a cached operation, truncating the file while another
process reads it, a row with bytes that are not UTF-8 where text belongs, a
cache directory the process may not write to. Processes that are interrupted
or may crash run in subprocesses (``_cache_worker.py``).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests import _cache_worker
from tests._subprocesses import read_line, spawn_cache_worker
from xlmt_sklearn import EmbeddingCache
from xlmt_sklearn._errors import CacheWarning
from xlmt_sklearn.store import _sqlite as _sqlite_store
from xlmt_sklearn.store._keys import make_keys

# --------------------------------------------------------------------------------------
# Ctrl-C during a cached operation
# --------------------------------------------------------------------------------------


def _interrupt_trials(path: Path, trials: int, seed: int, **popen) -> None:
    dim = 64
    proc = spawn_cache_worker(
        "interrupt", str(path), str(trials), str(dim), str(seed), stdin=subprocess.PIPE, **popen
    )
    try:
        line = read_line(proc, timeout=120)
        assert line == f"interrupted {trials}\n".encode(), proc.stderr.read().decode()
        # The interrupted process is alive and idle: its write lock must be free. A
        # held lock makes this write wait the whole timeout and give up with a
        # CacheWarning (an error here); 2 s is far more than a free lock needs.
        other = EmbeddingCache(path, timeout=2.0)
        keys = _cache_worker.keys_for(range(6000, 6050))
        other.put_many(keys, [_cache_worker.value_for(k, dim) for k in keys])
        assert all(h is not None for h in other.get_many(keys))
        other.close()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # The worker turns every CacheWarning into an error: its cache kept working.
    assert proc.returncode == 0, err.decode()
    assert out == b"done\n"


def test_keyboard_interrupt_releases_the_lock_and_keeps_the_cache(tmp_path, no_warnings):
    """Ctrl-C at random points of writes, regroups and reads rolls back every time."""
    _interrupt_trials(tmp_path / "interrupted.sqlite", trials=8, seed=0)


def test_keyboard_interrupt_when_sigint_is_ignored(tmp_path, no_warnings):
    """Started with SIGINT ignored (a background job, some CI runners), where
    ``interrupt_main`` alone does nothing: the trials still end (issue 27)."""
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    _interrupt_trials(tmp_path / "ignored.sqlite", trials=3, seed=7, preexec_fn=ignore)


@pytest.mark.slow
def test_keyboard_interrupt_many_trials(tmp_path, no_warnings):
    for seed in range(1, 6):
        _interrupt_trials(tmp_path / f"interrupted-{seed}.sqlite", trials=40, seed=seed)


def test_interrupt_inside_a_transaction_rolls_back(tmp_path, no_warnings):
    """The deterministic case: an exception that is not a database error, mid-write."""
    c = EmbeddingCache(tmp_path / "emb.sqlite")
    keys = make_keys("fp", ["a", "b"])
    vecs = [np.ones(4, np.float32), np.zeros(4, np.float32)]
    c.put_many(keys[:1], vecs[:1])
    store = _sqlite_store.acquire(c.path)
    with pytest.raises(KeyboardInterrupt), store._transaction("IMMEDIATE") as conn:
        conn.execute("DELETE FROM entries")
        raise KeyboardInterrupt
    assert not store._conn.in_transaction
    other = sqlite3.connect(c.path, timeout=0.5)  # the write lock is free
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()
    c.put_many(keys[1:], vecs[1:])
    got = c.get_many(keys)
    assert [g[0].tolist() for g in got] == [v.tolist() for v in vecs]
    c.close()


# --------------------------------------------------------------------------------------
# A row whose text is not UTF-8
# --------------------------------------------------------------------------------------


def _bad_text_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (n,) = conn.execute(
            "SELECT count(*) FROM entries WHERE hex(dtype) LIKE 'FF%' OR hex(shape) LIKE 'FF%'"
        ).fetchone()
    finally:
        conn.close()
    return n


@pytest.mark.parametrize("column", ["dtype", "shape"])
def test_row_with_invalid_utf8_is_a_miss_and_purged(tmp_path, tiny_model_dir, column, no_warnings):
    from tests._raw_cache import set_raw_text
    from xlmt_sklearn import XLMTVectorizer

    path = tmp_path / "emb.sqlite"
    texts = ["one text", "another text", "a third", "and a fourth"]
    cache = EmbeddingCache(path)
    est = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=cache, progress=False).fit()
    expected = est.transform(texts)
    conn = sqlite3.connect(path)
    (key,) = conn.execute("SELECT key FROM entries LIMIT 1").fetchone()
    with conn:
        set_raw_text(conn, key, column, b"\xff\xfe not UTF-8")
    conn.close()
    assert _bad_text_rows(path) == 1
    np.testing.assert_array_equal(est.transform(texts), expected)  # one miss, recomputed
    assert _bad_text_rows(path) == 0  # purged (and stored again, intact)
    hits = cache.stats.hits
    np.testing.assert_array_equal(est.transform(texts), expected)
    assert cache.stats.hits == hits + len(texts)  # every text served from the cache again
    cache.close()


def test_directory_with_invalid_utf8_is_skipped(tmp_path, no_warnings):
    """A block directory with undecodable text: its keys are served by their index rows."""
    path = tmp_path / "emb.sqlite"
    c = EmbeddingCache(path)
    keys = make_keys("fp", [f"text {i}" for i in range(300)])
    vecs = [np.full(8, i, np.float32) for i in range(300)]
    c.put_many(keys, vecs)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE block_dirs SET dtype = CAST(? AS TEXT)", (b"\xfffloat32",))
    conn.close()
    for _ in range(2):
        got = c.get_many(keys)
        assert [g[0].tolist() for g in got] == [v.tolist() for v in vecs]
    c.put_many(keys[:10], vecs[:10])  # writes (compaction reads index rows) work too
    c.regroup(keys)
    assert [g[0].tolist() for g in c.get_many(keys)] == [v.tolist() for v in vecs]
    c.close()


# --------------------------------------------------------------------------------------
# A cache the process may read but not write
# --------------------------------------------------------------------------------------


def _use_read_only(path: Path, keys: list[bytes], vecs: list[np.ndarray]) -> dict:
    """Read ``keys`` and write twice; what was served and which CacheWarnings came."""
    c = EmbeddingCache(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = c.get_many(keys)
        more = make_keys("fp", ["new 1", "new 2"])
        c.put_many(more[:1], vecs[:1])
        c.put_many(more[1:], vecs[1:2])
        again = c.get_many(keys)
    c.close()
    right = [g is not None and g[0].tolist() == v.tolist() for g, v in zip(got, vecs, strict=True)]
    return {
        "served": sum(right),
        "served_again": sum(g is not None for g in again),
        "warnings": [str(w.message) for w in caught if issubclass(w.category, CacheWarning)],
    }


def _filled(path: Path, n: int = 100) -> tuple[list[bytes], list[np.ndarray]]:
    keys = make_keys("fp", [f"text {i}" for i in range(n)])
    vecs = [np.full(8, i, np.float32) for i in range(n)]
    c = EmbeddingCache(path)
    c.put_many(keys, vecs)
    c.close()  # the last connection: SQLite checkpoints and deletes -wal and -shm
    return keys, vecs


@pytest.mark.parametrize(
    "message", ["unable to open database file", "attempt to write a readonly database"]
)
def test_read_write_open_fails_reads_are_served(tmp_path, monkeypatch, message):
    """Injected: the read-write open fails as in a read-only directory; reads still work."""
    from xlmt_sklearn.store._sqlite import _store

    path = tmp_path / "emb.sqlite"
    keys, vecs = _filled(path)
    real = _store._connect
    tried = []

    def connect(path, timeout, how):
        tried.append(how)
        if how == "rw":
            raise sqlite3.OperationalError(message)
        return real(path, timeout, how)

    monkeypatch.setattr(_store, "_connect", connect)
    got = _use_read_only(path, keys, vecs)
    assert tried[:2] == ["rw", "ro"]
    assert got["served"] == got["served_again"] == len(keys)
    assert len(got["warnings"]) == 1  # the first write; the second is skipped quietly
    assert "Cannot write" in got["warnings"][0]
    monkeypatch.undo()
    _sqlite_store.close_store(path)
    c = EmbeddingCache(path)
    assert len(c) == len(keys)  # nothing was written, nothing lost
    c.close()


def test_read_only_directory_serves_reads(tmp_path):
    """Real: a valid cache in a directory this process cannot write (as 'nobody' under root)."""
    import json
    import shutil
    import tempfile

    # A folder outside tmp_path, whose parents are private to root.
    folder = Path(tempfile.mkdtemp(prefix="xlmt-ro-", dir="/tmp"))
    try:
        path = folder / "emb.sqlite"
        keys, vecs = _filled(path)
        assert sorted(p.name for p in folder.iterdir()) == ["emb.sqlite"]
        os.chmod(path, 0o644)
        os.chmod(folder, 0o555)
        if os.geteuid() != 0:
            got = _use_read_only(path, keys, vecs)
        else:  # root ignores permissions: drop to 'nobody' in a forked child
            try:
                import pwd

                nobody = pwd.getpwnam("nobody")
            except (ImportError, KeyError):
                pytest.skip("running as root and there is no 'nobody' user to drop to")
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report through the pipe, never return to pytest
                code = 1
                try:
                    os.close(read_end)
                    os.setgid(nobody.pw_gid)
                    os.setuid(nobody.pw_uid)
                    result = _use_read_only(path, keys, vecs)
                    os.write(write_end, json.dumps(result).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as f:
                out = f.read()
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
            got = json.loads(out)
        assert got["served"] == got["served_again"] == len(keys), got
        assert len(got["warnings"]) == 1, got
        assert "Cannot write" in got["warnings"][0], got
        assert sorted(p.name for p in folder.iterdir()) == ["emb.sqlite"]
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


# --------------------------------------------------------------------------------------
# The file truncated while another process reads it
# --------------------------------------------------------------------------------------


def _truncate_while_reading(tmp_path: Path, trials: int) -> None:
    import random

    dim, n = 256, 2000
    rng = random.Random(7)
    for trial in range(trials):
        path = tmp_path / f"truncated-{trial}.sqlite"
        c = EmbeddingCache(path)
        keys = _cache_worker.keys_for(range(n))
        c.put_many(keys, [_cache_worker.value_for(k, dim) for k in keys])
        c.close()  # checkpointed: every page is in the main file
        reader = spawn_cache_worker("survive", str(path), str(n), str(dim), "0.3")
        try:
            assert read_line(reader) == b"ready\n"
            time.sleep(rng.uniform(0.02, 0.15))  # let it read a while first
            size = path.stat().st_size
            # A deep cut first: the pages a read touches next lie past the new end.
            for fraction in (0.05, 0.0):
                try:
                    os.truncate(path, int(size * fraction))
                except FileNotFoundError:
                    break  # the reader found the damage and moved the file aside
            out, err = reader.communicate(timeout=120)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.communicate()
        assert reader.returncode != -signal.SIGBUS, "the reader was killed by SIGBUS"
        assert reader.returncode == 0, err.decode()  # and every hit it got was right
        assert out.startswith(b"done")


def test_truncating_the_file_under_a_reader(tmp_path):
    """No memory map over the file: a truncation mid-read is a miss, not a SIGBUS."""
    _truncate_while_reading(tmp_path, trials=5)


@pytest.mark.slow
def test_truncating_the_file_under_a_reader_many_trials(tmp_path):
    _truncate_while_reading(tmp_path, trials=20)


# --------------------------------------------------------------------------------------
# The cache file deleted or failing under a live process (issue 27)
# --------------------------------------------------------------------------------------


def test_a_file_deleted_mid_write_is_recreated_without_a_warning(tmp_path, monkeypatch):
    import glob
    import os
    import warnings

    from xlmt_sklearn.store._sqlite import SQLiteStore

    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    keys = make_keys("fp", [str(i) for i in range(4)])
    vecs = [np.full(8, i, np.float32) for i in range(4)]
    cache.put_many(keys[:2], vecs[:2])
    real = SQLiteStore.put_many
    calls = []

    def put_many(self, rows, max_size=None):
        calls.append(1)
        if len(calls) == 1:  # another process deletes the file under this write
            for f in glob.glob(str(path) + "*"):
                os.unlink(f)
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, rows, max_size)

    monkeypatch.setattr(SQLiteStore, "put_many", put_many)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        cache.put_many(keys[2:], vecs[2:])
        got = cache.get_many(keys)
    assert len(calls) == 2 and path.exists()
    assert got[:2] == [None, None]  # gone with the deleted file
    assert [g[0].tolist() for g in got[2:]] == [v.tolist() for v in vecs[2:]]  # not disabled


def test_a_failing_cache_warns_once_per_process_and_cause(tmp_path, monkeypatch):
    import pickle

    from xlmt_sklearn.store._sqlite import SQLiteStore

    def fail(self, *args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).put_many(make_keys("fp", ["a"]), [np.ones(4, np.float32)])
    monkeypatch.setattr(SQLiteStore, "get_many", fail)
    first = EmbeddingCache(path)
    with pytest.warns(CacheWarning, match="cannot be used") as record:
        assert first.get_many(make_keys("fp", ["a"])) == [None]
    assert record[0].filename == __file__  # the user's line
    # Each clone in a search (or task in a worker) gets its own object: no repeat.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        for _ in range(5):
            clone = pickle.loads(pickle.dumps(first))
            assert clone.get_many(make_keys("fp", ["a"])) == [None]
