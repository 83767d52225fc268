"""``flow._tokenize``: texts in, model rows (and windows, offsets, word ids) out.

Checked against the tokenizer itself (``transformers``' own call with special
tokens), on the tiny model's SentencePiece tokenizer.
"""

from __future__ import annotations

import numpy as np
import pytest

from xlmt_sklearn.flow._tokenize import subset, tokenize, window_starts

TEXTS = ["hello world", "", "a much longer sentence with many words in it, and more", "ok 🙂"]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _specials(tok):
    """The ids the tokenizer's own template puts around a text."""
    content = tok("word", add_special_tokens=False)["input_ids"]
    ids = tok("word")["input_ids"]
    k = next(i for i in range(len(ids)) if ids[i : i + len(content)] == content)
    return ids[:k], ids[k + len(content) :]


def _call(tok, texts, **kw):
    prefix, suffix = _specials(tok)
    return tokenize(tok, texts, prefix_ids=prefix, suffix_ids=suffix, **kw)


def test_rows_equal_the_tokenizer_with_special_tokens(tok):
    enc = _call(tok, TEXTS, max_length=512)
    assert [list(r) for r in enc.rows] == [tok(t)["input_ids"] for t in TEXTS]
    assert enc.row_text.tolist() == [0, 1, 2, 3] and enc.n_windows.tolist() == [1, 1, 1, 1]
    assert not enc.truncated.any()
    np.testing.assert_array_equal(enc.lengths, [len(r) for r in enc.rows])


def test_truncation_keeps_the_true_length_and_flags_the_text(tok):
    enc = _call(tok, TEXTS, max_length=8)
    full = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    assert enc.n_content.tolist() == full
    assert enc.capacity == 8 - enc.n_prefix - enc.n_suffix
    assert enc.truncated.tolist() == [n > enc.capacity for n in full]
    assert max(enc.lengths) <= 8
    assert enc.rows[2] == tok(TEXTS[2], truncation=True, max_length=8)["input_ids"]


def test_windows_cover_every_content_token_with_the_stride_overlap(tok):
    enc = _call(tok, TEXTS, max_length=8, windows=True, stride=2)
    content = tok(TEXTS[2], add_special_tokens=False)["input_ids"]
    rows = np.flatnonzero(enc.row_text == 2)
    assert len(rows) == enc.n_windows[2] > 1
    starts = enc.row_start[rows].tolist()
    assert starts == window_starts(len(content), enc.capacity, 2)
    for r, s in zip(rows, starts, strict=True):
        body = enc.rows[r][enc.n_prefix : len(enc.rows[r]) - enc.n_suffix]
        assert body == content[s : s + enc.capacity]
    assert starts[-1] + enc.capacity >= len(content)


def test_offsets_point_at_each_token_in_the_text(tok):
    enc = _call(tok, TEXTS, max_length=512, offsets=True)
    for text, offs, ids in zip(TEXTS, enc.offsets, enc.ids, strict=True):
        assert offs.shape == (len(ids), 2)
        assert (offs[:, 0] <= offs[:, 1]).all() and (offs[:, 1] <= len(text)).all()
    assert enc.ids[0] == tok(TEXTS[0], add_special_tokens=False)["input_ids"]


def test_pre_split_words_give_word_ids(tok):
    words = [["hello", "world"], ["one"]]
    enc = _call(tok, words, max_length=64, split_into_words=True)
    assert sorted(set(enc.word_ids[0].tolist())) == [0, 1]
    assert set(enc.word_ids[1].tolist()) == {0}


def test_subset_renumbers_and_keeps_windows_together(tok):
    enc = _call(tok, TEXTS, max_length=8, windows=True, stride=2)
    part = subset(enc, [2, 0])
    assert part.n_content.tolist() == [enc.n_content[2], enc.n_content[0]]
    assert part.row_text.tolist() == sorted(part.row_text.tolist())
    assert [r for r, t in zip(part.rows, part.row_text, strict=True) if t == 0] == [
        enc.rows[r] for r in np.flatnonzero(enc.row_text == 2)
    ]


def test_empty_input_and_impossible_limits(tok):
    enc = _call(tok, [], max_length=8)
    assert enc.rows == [] and len(enc.n_content) == 0
    with pytest.raises(ValueError, match="max_length=2 leaves no room"):
        _call(tok, TEXTS, max_length=2)
    with pytest.raises(ValueError, match="stride=6 must be smaller"):
        _call(tok, TEXTS, max_length=8, windows=True, stride=6)


def test_lone_surrogates_are_replaced_not_fatal(tok):
    enc = _call(tok, ["bad \ud800 text"], max_length=64)
    assert enc.n_content[0] > 0
