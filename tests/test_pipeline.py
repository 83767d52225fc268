"""``flow._pipeline.stream``, on its own: cache lookup, encode the misses, write through.

A fake encoder whose token vectors depend on the token id only (no context), a
character tokenizer and a dict cache, so that every expected value is written by
hand below and each behaviour of the stream is seen without a model.
"""

from __future__ import annotations

import numpy as np
import pytest

from xlmt_sklearn import NonFiniteOutputError
from xlmt_sklearn.backends._encoders import BatchOutput, EncodeOptions, Encoder
from xlmt_sklearn.flow._pipeline import Request, stream
from xlmt_sklearn.store._base import CacheBase

DIM, PREFIX, SUFFIX, POISON = 4, [1], [2], 99


class CharTokenizer:
    """One token per character: id = code point % 90 + 5 (``~`` gives the poison id)."""

    def __call__(self, texts, **_):
        return {"input_ids": [[ord(c) % 90 + 5 if c != "~" else POISON for c in t] for t in texts]}


def token_vector(token_id: int) -> np.ndarray:
    return np.array([token_id, token_id % 7, 1.0, -token_id / 10], dtype=np.float32)


class FakeEncoder(Encoder):
    name, device, dtype = "fake", "cpu", "float32"

    def __init__(self):
        self.rows_encoded, self.loads = 0, 0

    @property
    def fingerprint(self):
        return {}

    def load(self):
        self.loads += 1

    def tokenizer(self):
        return CharTokenizer()

    def special_tokens(self):
        return PREFIX, SUFFIX

    def encode(self, rows, options, pool_rows):
        self.rows_encoded += len(rows)
        longest = max(map(len, rows))
        tokens = np.zeros((len(rows), longest, DIM), dtype=np.float32)
        for k, row in enumerate(rows):
            tokens[k, : len(row)] = [token_vector(t) for t in row]
            if POISON in row:
                tokens[k, 0, 0] = np.nan
        pooled = np.stack([tokens[k, : len(r)].mean(0) for k, r in enumerate(rows)])
        return BatchOutput(pooled if options.pooling else None, tokens)


class DictCache(CacheBase):
    def __init__(self):
        self.data, self.puts = {}, []

    def get_many(self, keys):
        return [self.data.get(k) for k in keys]

    def put_many(self, keys, arrays, metas=None):
        metas = metas or [0] * len(keys)
        self.puts.extend(keys)
        self.data.update({k: (np.array(a), m) for k, a, m in zip(keys, arrays, metas, strict=True)})


def expected(text: str) -> np.ndarray:
    ids = PREFIX + [ord(c) % 90 + 5 for c in text] + SUFFIX
    return np.mean([token_vector(t) for t in ids], axis=0)


def request(texts, cache, encoder, **kw) -> Request:
    options = kw.pop("options", EncodeOptions(batch_size=kw.pop("batch_size", 3)))
    defaults = dict(
        keys=[t.encode() for t in texts], texts=list(texts), encoded=None, encoders=[encoder],
        cache=cache, options=options, expected_shapes=[(DIM,)] * len(texts), max_length=64,
        stride=0, truncation="warn", positions=lambda idx: np.asarray(idx) + 100,
        n_total=len(texts) + 100,
    )  # fmt: skip
    return Request(**{**defaults, **kw})


def run(req: Request) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for idx, arrays in stream(req):
        for i, a in zip(idx.tolist(), arrays, strict=True):
            assert i not in out, f"index {i} yielded twice"
            out[i] = a
    return out


TEXTS = ["a", "hello", "bb", "a longer text here", "x", "yz", "tweet"]


def test_every_input_is_yielded_once_with_its_vector():
    out = run(request(TEXTS, DictCache(), FakeEncoder()))
    assert sorted(out) == list(range(len(TEXTS)))
    for i, t in enumerate(TEXTS):
        np.testing.assert_allclose(out[i], expected(t), rtol=0, atol=1e-6)
        assert out[i].dtype == np.float32


def test_results_do_not_depend_on_batch_size():
    one = run(request(TEXTS, DictCache(), FakeEncoder(), batch_size=1))
    many = run(request(TEXTS, DictCache(), FakeEncoder(), batch_size=64))
    for i in one:
        np.testing.assert_array_equal(one[i], many[i])


def test_hits_are_served_without_loading_or_encoding():
    cache = DictCache()
    first = run(request(TEXTS, cache, FakeEncoder()))
    again = FakeEncoder()
    second = run(request(TEXTS, cache, again))
    assert again.loads == 0 and again.rows_encoded == 0
    for i in first:
        np.testing.assert_array_equal(first[i], second[i])


def test_a_hit_of_another_shape_or_non_finite_is_a_miss():
    cache, enc = DictCache(), FakeEncoder()
    cache.put_many([b"hello", b"bb"], [np.zeros(DIM + 1, np.float32), np.full(DIM, np.nan)])
    cache.puts.clear()
    out = run(request(TEXTS[:3], cache, enc))
    assert enc.rows_encoded == 3 and sorted(cache.puts) == [b"a", b"bb", b"hello"]
    np.testing.assert_allclose(out[1], expected("hello"), atol=1e-6)


def test_a_non_finite_batch_raises_naming_input_rows_and_caches_nothing_of_it():
    cache = DictCache()
    texts = ["fine", "bad ~ text", "also fine"]
    with pytest.raises(NonFiniteOutputError) as info:
        run(request(texts, cache, FakeEncoder(), batch_size=8))
    assert info.value.positions == [101]  # the input row, through ``positions``
    assert cache.puts == []


def test_truncation_error_refuses_before_encoding_anything():
    enc = FakeEncoder()
    texts = ["short", "x" * 40, "tiny", "y" * 50]
    with pytest.raises(ValueError, match=r"2 texts .* max_length=16 .*positions 101, 103"):
        run(request(texts, DictCache(), enc, max_length=16, truncation="error"))
    assert enc.rows_encoded == 0


def test_truncation_warn_warns_once_with_the_positions():
    from xlmt_sklearn import TruncationWarning

    with pytest.warns(TruncationWarning) as caught:
        out = run(request(["short", "x" * 40], DictCache(), FakeEncoder(), max_length=16))
    assert len(caught) == 1 and "101" in str(caught[0].message)
    np.testing.assert_allclose(out[1], expected("x" * 14), atol=1e-6)  # 16 - 2 specials


def test_windows_merge_to_the_whole_text_before_pooling():
    # Context-free token vectors: merged windows equal the untruncated sequence.
    long_text = "the quick brown fox jumps over the lazy dog, twice over"
    enc = FakeEncoder()
    out = run(request([long_text], DictCache(), enc, max_length=12, stride=3, truncation="window"))
    assert enc.rows_encoded > 1
    np.testing.assert_allclose(out[0], expected(long_text), atol=1e-5)


def test_float16_storage_yields_exactly_what_a_later_hit_returns():
    cache = DictCache()
    first = run(request(TEXTS, cache, FakeEncoder(), store_dtype="float16"))
    second = run(request(TEXTS, cache, FakeEncoder(), store_dtype="float16"))
    for i in first:
        assert first[i].dtype == np.float32 and cache.data[TEXTS[i].encode()][0].dtype == np.float16
        np.testing.assert_array_equal(first[i], second[i])


def test_token_matrices_keep_special_tokens():
    opts = EncodeOptions(pooling=None, batch_size=4)
    out = run(request(["ab"], DictCache(), FakeEncoder(), options=opts, expected_shapes=[(4, DIM)]))
    ids = [*PREFIX, ord("a") % 90 + 5, ord("b") % 90 + 5, *SUFFIX]
    np.testing.assert_array_equal(out[0], np.stack([token_vector(t) for t in ids]))


def test_finish_transforms_what_is_stored_and_yielded():
    cache = DictCache()
    out = run(request(["ab"], cache, FakeEncoder(), finish=lambda a: a * 2))
    np.testing.assert_allclose(out[0], 2 * expected("ab"), atol=1e-6)
    np.testing.assert_array_equal(cache.data[b"ab"][0], out[0])


def test_claim_size_splits_small_miss_sets_and_caps_large_ones(monkeypatch):
    from xlmt_sklearn.flow import _tuning
    from xlmt_sklearn.flow._pipeline import claim_size

    assert [claim_size(n) for n in (1, 240, 300, 600, 2048, 8192)] == [32, 32, 38, 75, 256, 256]
    monkeypatch.setattr(_tuning.TUNING, "claim_group", 4)
    assert [claim_size(n) for n in (1, 100)] == [4, 4]


class ClaimingCache(DictCache):
    """A cache shared with another (simulated) process that claimed ``theirs`` and stores
    them after being looked up twice."""

    coordinates = True

    def __init__(self, theirs):
        super().__init__()
        self.theirs, self.groups, self.released, self.looks = set(theirs), [], [], {}
        self.claimed: list[list[bytes]] = []

    def claim(self, keys):
        self.groups.append(len(keys))
        self.claimed.append(list(keys))
        return [k not in self.theirs for k in keys]

    def release(self, keys):
        self.released.extend(keys)

    def get_many(self, keys):
        for k in keys:
            if k in self.theirs and k not in self.data:
                self.looks[k] = self.looks.get(k, 0) + 1
                if self.looks[k] > 2:  # the other process stored it meanwhile
                    self.data[k] = (expected(k.decode()), 0)
        return super().get_many(keys)


def test_claimed_misses_are_encoded_in_groups_and_others_claims_are_waited_for(monkeypatch):
    from xlmt_sklearn.flow import _tuning

    monkeypatch.setattr(_tuning.TUNING, "claim_group", 2)  # groups of 2 out of 7 misses
    texts = TEXTS
    theirs = {t.encode() for t in texts[::3]}
    cache, enc = ClaimingCache(theirs), FakeEncoder()
    out = run(request(texts, cache, enc))
    assert sorted(out) == list(range(len(texts)))
    for i, t in enumerate(texts):
        np.testing.assert_allclose(out[i], expected(t), rtol=1e-6)
    assert cache.groups[:4] == [2, 2, 2, 1]  # then the waited-for keys, claimed again
    assert all(g <= len(theirs) for g in cache.groups[4:])
    assert enc.rows_encoded == len(texts) - len(theirs)  # the other process's keys: waited for
    assert sorted(cache.puts) == sorted(t.encode() for t in texts if t.encode() not in theirs)
    assert sorted(cache.released) == sorted(cache.puts)


def test_a_claim_that_meets_another_process_turns_to_the_longest_texts(monkeypatch):
    # Two workers missing the same texts: the second one's first claim finds the
    # shortest texts taken, so it works from the long end instead of fragmenting groups.
    from xlmt_sklearn.flow import _tuning

    monkeypatch.setattr(_tuning.TUNING, "claim_group", 2)
    texts = [("x" * n) for n in range(1, 9)]  # lengths 1..8, in order
    cache = ClaimingCache({texts[0].encode()})  # the other process holds the shortest
    out = run(request(texts, cache, FakeEncoder()))
    assert sorted(out) == list(range(len(texts)))
    lengths = [[len(k) for k in group] for group in cache.claimed]
    assert lengths[:3] == [[1, 2], [7, 8], [5, 6]]  # met the other process: the other end
