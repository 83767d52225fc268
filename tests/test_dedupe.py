"""Dedupe twice: each distinct input preprocessed once, each distinct model input encoded once."""

from __future__ import annotations

import numpy as np
import pytest

from tests._counting_cache import CountingCache
from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn.flow._dedupe import distinct_inputs, unique_texts


def test_unique_texts_first_seen_order_and_inverse():
    uniq, inverse = unique_texts(["b", "a", "b", ("w", "x"), ("w", "x")])
    assert uniq == ["b", "a", ("w", "x")]
    assert inverse.tolist() == [0, 1, 0, 2, 2]


def test_distinct_inputs_give_the_first_row_of_each():
    uniq, inverse, first = distinct_inputs(["x", "y", "x", "z"], np.array([3, 4, 6, 9]))
    assert uniq == ["x", "y", "z"]
    assert inverse.tolist() == [0, 1, 0, 2]
    assert first.tolist() == [3, 4, 9]
    empty = distinct_inputs([], np.array([], dtype=np.intp))
    assert empty[0] == [] and len(empty[1]) == 0 and len(empty[2]) == 0


class CountingPreprocess:
    """A preprocess callable that records what it was asked."""

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, text: str) -> str:
        self.seen.append(text)
        return text.lower()


@pytest.mark.parametrize("cls", [XLMTVectorizer, XLMTTokenVectorizer])
def test_each_distinct_input_is_preprocessed_once(cls, tiny_model_dir):
    pre = CountingPreprocess()
    est = cls(str(tiny_model_dir), preprocess=pre, backend="torch", progress=False).fit()
    est.transform(["Hello", "hello", "Hello", "world", "Hello"])
    assert sorted(pre.seen) == ["Hello", "hello", "world"]


@pytest.mark.parametrize("cls", [XLMTVectorizer, XLMTTokenVectorizer])
def test_inputs_that_preprocess_alike_are_encoded_once(cls, tiny_model_dir, tmp_path):
    log = tmp_path / "stored.log"
    cache = CountingCache(str(tmp_path / "c.sqlite"), str(log))
    est = cls(str(tiny_model_dir), cache=cache, backend="torch", progress=False).fit()
    est.transform(["@ana hi there", "@bob hi there", "@ana hi there", "other text"])
    per_text = 1 if cls is XLMTVectorizer else 2  # token features: + the tokenization
    # "@user hi there" and "other text"
    assert len(log.read_text().splitlines()) == 2 * per_text


def test_token_features_keep_each_inputs_own_words_and_offsets(tiny_model_dir):
    """Two inputs with one model input: the vectors are shared, the words and offsets are
    each input's own (they were the first input's before: "@bob" came back as "@ana")."""
    est = XLMTTokenVectorizer(
        str(tiny_model_dir), granularity="word", output="frame", backend="torch", progress=False
    ).fit()
    frame = est.transform(["@ana hi there", "@bobby hi there"])
    first, second = frame.loc[0], frame.loc[1]
    assert first["token"].tolist() == ["@ana", "hi", "there"]
    assert second["token"].tolist() == ["@bobby", "hi", "there"]
    assert first["end"].tolist() == [4, 7, 13]
    assert second["end"].tolist() == [6, 9, 15]
    np.testing.assert_array_equal(
        np.stack(first["embedding"].to_list()), np.stack(second["embedding"].to_list())
    )
    subwords = XLMTTokenVectorizer(
        str(tiny_model_dir), output="frame", backend="torch", progress=False
    ).fit()
    frame = subwords.transform(["@ana hi", "@bobby hi"])
    assert frame.loc[0, "end"].max() == len("@ana hi")  # offsets into each input's own text
    assert frame.loc[1, "end"].max() == len("@bobby hi")
