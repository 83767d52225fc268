"""Token-level pure functions: offsets through preprocessing, words, word vectors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlmt_sklearn.flow._preprocess import normalize_tweet, preprocess_with_offsets
from xlmt_sklearn.flow._tokenize import window_starts
from xlmt_sklearn.flow._tokens import assign_words, pad_ragged, word_spans, word_vectors

WORDS = st.sampled_from(
    ["@maria", "@", "http://t.co/x", "https", "hi", "😀", "مرحبا", "a.b", "HTTP"]
)
SEPS = st.sampled_from([" ", "  ", "\n", "\t "])


@given(st.lists(st.tuples(WORDS, SEPS), max_size=8), SEPS)
def test_xlmt_offsets_map_each_word_back(parts, lead):
    text = lead + "".join(w + s for w, s in parts)
    new, smap, emap = preprocess_with_offsets("xlmt", text)
    assert new == normalize_tweet(text)
    assert len(smap) == len(emap) == len(new) + 1
    orig_words = text.split()
    for k, m in enumerate(re.finditer(r"\S+", new)):
        assert text[smap[m.start()] : emap[m.end()]] == orig_words[k]


def test_identity_offsets_for_none_and_callables():
    new, smap, emap = preprocess_with_offsets(None, "ab c")
    assert new == "ab c" and smap == emap == [0, 1, 2, 3, 4]
    new, smap, _ = preprocess_with_offsets(str.upper, "ab")
    assert new == "AB" and smap == [0, 1, 2]


def test_word_spans():
    assert word_spans("  hi  there\n") == [(2, 4), (6, 11)]
    assert word_spans("") == []
    assert word_spans("hi, you", lambda t: ["hi", ",", "you"]) == [(0, 2), (2, 3), (4, 7)]
    with pytest.raises(ValueError, match="not in the text"):
        word_spans("hi", lambda t: ["bye"])
    with pytest.raises(TypeError, match="must return str words"):
        word_spans("hi", lambda t: [1])


def test_assign_words_gives_space_pieces_to_next_word():
    spans = [(0, 5), (6, 11)]
    offsets = np.array([[0, 2], [2, 5], [5, 6], [6, 11], [12, 12]])
    assert assign_words(offsets, spans).tolist() == [0, 0, 1, 1, -1]


def test_word_vectors_first_mean_and_empty_words():
    content = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]], dtype=np.float32)
    wid = np.array([0, 0, 2])
    first, n = word_vectors(content, wid, 4, "first")
    np.testing.assert_array_equal(first, [[1, 0], [0, 0], [5, 5], [0, 0]])
    assert n.tolist() == [2, 0, 1, 0]
    mean, _ = word_vectors(content, wid, 4, "mean")
    np.testing.assert_array_equal(mean[0], [2, 1])
    with pytest.raises(ValueError, match="Unknown word_vector"):
        word_vectors(content, wid, 4, "last")


def test_pad_ragged():
    p = pad_ragged([np.ones((2, 3)), np.zeros((0, 3))], 3)
    assert p.values.shape == (2, 2, 3) and p.mask.tolist() == [[True, True], [False, False]]
    assert p[[1]].values.shape == (1, 2, 3)


@given(st.integers(0, 300), st.integers(2, 64), st.integers(0, 63))
def test_windows_cover_everything(n, capacity, stride):
    stride = min(stride, capacity - 1)
    starts = window_starts(n, capacity, stride)
    covered = set()
    for s in starts:
        covered.update(range(s, min(s + capacity, n)))
    assert covered == set(range(n))
    assert starts == sorted(starts) and starts[0] == 0
    if n > capacity:
        assert starts[-1] + capacity == n
