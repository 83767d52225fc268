"""No non-finite vector leaves an encoder or a cache (#23).

Every encoded batch, on every backend, is checked before anything of it is cached or
returned: a NaN raises :class:`~xlmt_sklearn.NonFiniteOutputError` naming the backend,
precision, model and input positions. A NaN or inf found in a cache is a miss, recomputed
(and purged from an :class:`~xlmt_sklearn.EmbeddingCache`), and is never stored.
"""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest
from sklearn.base import clone

from tests._raw_cache import insert_raw
from xlmt_sklearn import (
    EmbeddingCache,
    NonFiniteOutputError,
    XLMTTokenVectorizer,
    XLMTVectorizer,
)
from xlmt_sklearn.backends import _encoders as enc_mod
from xlmt_sklearn.backends import _onnxruntime as ort_rt
from xlmt_sklearn.backends import _openvino as ov_rt
from xlmt_sklearn.store._sqlite import row_crc

#: Six distinct lengths (so batches of two are fixed by the length sort), one duplicate.
TEXTS = [
    "one",
    "two words here",
    "three words in a longer row of text",
    "four",
    "five five five five five",
    "two words here",
    "a six and the longest text of them all, with many many more words",
]


def _poison_second_batch(monkeypatch, backend: str) -> list[int]:
    """Make the second batch the backend computes come back with a NaN (torch) or an inf
    (runtimes) in its last row; returns the number of rows of each batch computed."""
    sizes: list[int] = []
    if backend == "torch":
        real = enc_mod.TorchEncoder.encode

        def encode(self, rows, options, pool_rows):
            out = real(self, rows, options, pool_rows)
            sizes.append(len(rows))
            if len(sizes) == 2:
                target = out.pooled if out.pooled is not None else out.tokens
                target[-1, ..., 0] = np.nan
            return out

        monkeypatch.setattr(enc_mod.TorchEncoder, "encode", encode)
    else:
        pytest.importorskip(backend)
        cls = ov_rt.OpenVINOEncoder if backend == "openvino" else ort_rt.OnnxRuntimeEncoder
        real_run = cls._run

        def _run(self, runner, ids, mask):
            out = np.array(real_run(self, runner, ids, mask), dtype=np.float32)
            sizes.append(len(ids))
            if len(sizes) == 2:
                out[:, -1, 0, 0] = np.inf
            return out

        monkeypatch.setattr(cls, "_run", _run)
    return sizes


@pytest.mark.parametrize("backend", ["torch", "openvino", "onnxruntime"])
def test_a_nan_in_one_batch_raises_and_caches_nothing_of_it(
    tiny_model_dir, tmp_path, monkeypatch, backend
):
    if backend != "torch":
        pytest.importorskip(backend)
    cache = str(tmp_path / "c.sqlite")
    dtype = "auto" if backend == "torch" else "float32"
    vec = XLMTVectorizer(
        str(tiny_model_dir), backend=backend, dtype=dtype, device="cpu", batch_size=2,
        cache=cache, progress=False,
    ).fit()  # fmt: skip
    keys = vec._cache_keys(TEXTS, vec._encoders())
    sizes = _poison_second_batch(monkeypatch, backend)
    with pytest.raises(NonFiniteOutputError) as err:
        vec.transform(TEXTS)
    exc = err.value
    message = str(exc)
    assert exc.backend == backend and f"backend={backend!r}" in message
    assert exc.model == str(tiny_model_dir) and "float32" in message
    assert "Nothing from that batch was cached" in message
    bad = set(exc.positions)
    assert bad and f"input positions {', '.join(map(str, sorted(bad)))}" in message
    hits = EmbeddingCache(cache).get_many(keys)
    assert not any(hits[p] is not None for p in bad)
    cached = {TEXTS[i] for i, h in enumerate(hits) if h is not None}
    assert len(cached) == sizes[0]  # the first batch only: the stream stopped at the second
    assert all(np.isfinite(h[0]).all() for h in hits if h is not None)
    # The error pickles (Spark and Dask ship it back from workers).
    again = pickle.loads(pickle.dumps(exc))
    assert isinstance(again, NonFiniteOutputError) and again.positions == exc.positions

    monkeypatch.undo()
    fresh = XLMTVectorizer(
        str(tiny_model_dir), backend="torch", device="cpu", batch_size=2, progress=False
    )
    expected = fresh.fit_transform(TEXTS)
    later = clone(vec).set_params(backend="torch", dtype="float32").fit().transform(TEXTS)
    np.testing.assert_array_equal(later, expected)


def test_token_features_are_checked_too(tiny_model_dir, monkeypatch):
    vec = XLMTTokenVectorizer(str(tiny_model_dir), device="cpu", batch_size=2, progress=False)
    vec.fit()
    _poison_second_batch(monkeypatch, "torch")
    with pytest.raises(NonFiniteOutputError, match=r"backend='torch' \(float32\)"):
        vec.transform(TEXTS)


def test_duplicates_of_a_broken_text_are_all_named(tiny_model_dir, monkeypatch):
    texts = ["aa", "bb bb bb", "aa", "cc cc cc cc cc", "aa"]
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", batch_size=1, progress=False).fit()
    aa = vec._encoders()[0].tokenizer()("aa")["input_ids"]
    real = enc_mod.TorchEncoder.encode

    def encode(self, rows, options, pool_rows):
        out = real(self, rows, options, pool_rows)
        if list(rows[0]) == list(aa):
            out.pooled[:] = np.nan
        return out

    monkeypatch.setattr(enc_mod.TorchEncoder, "encode", encode)
    with pytest.raises(NonFiniteOutputError, match=r"input positions 0, 2, 4 \(3 of 5 texts\)"):
        vec.transform(texts)


# ------------------------------------------------------------------------------- caches
def _raw_nan_rows(keys, n_values=32, bad=(0,)):
    rows = []
    for i, key in enumerate(keys):
        values = np.arange(n_values, dtype=np.float32) + i
        if i in bad:
            values[3] = np.nan if i % 2 == 0 else np.inf
        data = values.astype("<f4").tobytes()
        shape = str(n_values)
        rows.append((key, "float32", shape, data, 0, row_crc(key, "float32", shape, 0, data)))
    return rows


def test_a_stored_nan_is_a_miss_and_is_purged(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many([b"k" * 32], [np.ones(32, np.float32)])  # creates the file
    keys = [bytes([i]) * 32 for i in range(1, 5)]
    conn = sqlite3.connect(path)
    insert_raw(conn, _raw_nan_rows(keys, bad=(0, 3)))  # one NaN, one inf; valid checksums
    conn.commit()
    conn.close()
    got = cache.get_many(keys)
    assert got[0] is None and got[3] is None
    assert got[1] is not None and got[2] is not None
    assert np.array_equal(got[1][0], np.arange(32, dtype=np.float32) + 1)
    assert cache.stats.entries == 3  # purged, like a failed checksum
    assert cache.stats.misses == 2


def test_put_many_refuses_non_finite_arrays(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    good, bad = np.ones(8, np.float32), np.full(8, np.nan, np.float32)
    with pytest.raises(ValueError, match="entry 1 holds NaN or inf"):
        cache.put_many([b"a" * 32, b"b" * 32], [good, bad])
    assert cache.get_many([b"a" * 32]) == [None]  # nothing of the batch was written


def test_a_nan_in_the_cache_is_recomputed_end_to_end(tiny_model_dir, tmp_path):
    path = tmp_path / "c.sqlite"
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(path), progress=False)
    expected = clone(vec).set_params(cache=None).fit_transform(TEXTS)
    vec.fit().transform(TEXTS[:1])  # creates the file
    keys = vec._cache_keys(TEXTS, vec._encoders())
    poisoned = np.full(expected.shape[1], np.nan, dtype="<f4").tobytes()
    shape = str(expected.shape[1])
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM entries")
    insert_raw(conn, [(keys[2], "float32", shape, poisoned, 0,
                       row_crc(keys[2], "float32", shape, 0, poisoned))])  # fmt: skip
    conn.commit()
    conn.close()
    np.testing.assert_array_equal(vec.transform(TEXTS), expected)
    hit = EmbeddingCache(path).get_many([keys[2]])[0]
    assert hit is not None and np.array_equal(hit[0], expected[2])


class _UserCache:
    """A user's cache (not a CacheBase) that returns NaN for every key it holds."""

    def __init__(self):
        self.data = {}

    def get_many(self, keys):
        return [(np.full_like(self.data[k][0], np.nan), 0) if k in self.data else None
                for k in keys]  # fmt: skip

    def put_many(self, keys, arrays, metas=None):
        for k, a in zip(keys, arrays, strict=True):
            self.data[k] = (a, 0)


def test_a_user_cache_returning_nan_is_a_miss(tiny_model_dir):
    user = _UserCache()
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=user, progress=False).fit()
    first = vec.transform(TEXTS)
    assert len(user.data) == len(set(TEXTS))
    np.testing.assert_array_equal(vec.transform(TEXTS), first)
