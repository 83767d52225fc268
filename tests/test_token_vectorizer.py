"""XLMTTokenVectorizer and TokenPooler against direct transformers references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from xlmt_sklearn import (
    PaddedTokens,
    TokenPooler,
    TruncationWarning,
    XLMTTokenVectorizer,
    XLMTVectorizer,
)

TEXTS = [
    "hello world this is a tweet",
    "hola mundo, qué tal?!! 😀😀",
    "bonjour  le   monde #hashtag",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "",
    "a",
]


def direct(model_dir, texts, max_length=128, **tok_kw):
    """(hidden rows incl. specials, BatchEncoding) per text, one text at a time."""
    import torch

    from tests.reference import load_reference

    tok, model = load_reference(str(model_dir))
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt", **tok_kw)
            h = model(**enc).last_hidden_state[0].numpy()
            out.append((h, enc))
    return out


def word_reference(model_dir, texts, how, **tok_kw):
    refs = []
    for h, enc in direct(model_dir, texts, **tok_kw):
        wids = enc.word_ids(0)
        words: dict[int, list[np.ndarray]] = {}
        for k, w in enumerate(wids):
            if w is not None:
                words.setdefault(w, []).append(h[k])
        n = max(words) + 1 if words else 0
        rows = [
            (words[w][0] if how == "first" else np.mean(words[w], axis=0))
            if w in words
            else np.zeros(h.shape[1])
            for w in range(n)
        ]
        refs.append(np.asarray(rows, dtype=np.float32).reshape(n, h.shape[1]))
    return refs


@pytest.mark.parametrize("special", [False, True])
def test_subwords_equal_last_hidden_state(tiny_model_dir, special):
    vec = XLMTTokenVectorizer(
        str(tiny_model_dir), preprocess=None, special_tokens=special, batch_size=3
    ).fit()
    got = vec.transform(TEXTS)
    for g, (h, _) in zip(got, direct(tiny_model_dir, TEXTS), strict=True):
        ref = h if special else h[1:-1]
        assert g.shape == ref.shape
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("how", ["first", "mean"])
def test_words_equal_word_ids_reference(tiny_model_dir, how):
    vec = XLMTTokenVectorizer(
        str(tiny_model_dir), granularity="word", word_vector=how, preprocess=None
    ).fit()
    got = vec.transform(TEXTS)
    for text, g, ref in zip(TEXTS, got, word_reference(tiny_model_dir, TEXTS, how), strict=True):
        assert g.shape == (len(text.split()), 32)
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("how", ["first", "mean"])
def test_real_tokenizer_words_on_umsab(real_tok_model_dir, umsab_sample, how):
    texts = [*umsab_sample, "emoji 😀😀🎉 run!!!??? #Hashtag @someone", "ⓗⓔⓛⓛⓞ"]
    vec = XLMTTokenVectorizer(
        str(real_tok_model_dir), granularity="word", word_vector=how, preprocess=None
    ).fit()
    got = vec.transform(texts)
    refs = word_reference(real_tok_model_dir, texts, how)
    for text, g, ref in zip(texts, got, refs, strict=True):
        assert len(g) == len(text.split()) == len(ref), text
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=0)


def test_presplit_words_equal_is_split_into_words(tiny_model_dir):
    words = [["hello", "world", "!"], ["hola", "mundo"], ["😀"]]
    vec = XLMTTokenVectorizer(str(tiny_model_dir), granularity="word", preprocess=None).fit()
    got = vec.transform(words)
    refs = []
    for h, enc in direct(tiny_model_dir, words, is_split_into_words=True):
        first: dict[int, np.ndarray] = {}
        for k, w in enumerate(enc.word_ids(0)):
            if w is not None and w not in first:
                first[w] = h[k]
        refs.append(np.stack([first[w] for w in sorted(first)]))
    for g, ref in zip(got, refs, strict=True):
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=0)
    frame = vec.set_params(output="frame").transform(pd.Series(words, index=[7, 8, 9]))
    assert frame.loc[7, "token"].tolist() == ["hello", "world", "!"]
    joined = " ".join(words[0])
    assert [
        joined[b:e] for b, e in zip(frame.loc[7, "begin"], frame.loc[7, "end"], strict=True)
    ] == words[0]


def test_offsets_map_back_to_input(tiny_model_dir):
    texts = ["@maria says  hello https://t.co/x ok", "  hola mundo  ", "😀 x"]
    words = XLMTTokenVectorizer(str(tiny_model_dir), granularity="word", output="frame").fit()
    frame = words.transform(pd.Series(texts, index=["a", "b", "c"]))
    for key, text in zip("abc", texts, strict=True):
        rows = frame.loc[[key]]
        assert [text[b:e] for b, e in zip(rows.begin, rows.end, strict=True)] == text.split()
        assert rows.token.tolist() == text.split()
    subs = XLMTTokenVectorizer(str(tiny_model_dir), preprocess=None, output="frame").fit()
    frame = subs.transform(texts)
    for i, text in enumerate(texts):
        rows = frame.loc[[i]]
        for tok, b, e in zip(rows.token, rows.begin, rows.end, strict=True):
            if tok != "<unk>" and tok.strip("▁"):
                assert text[b:e] == tok.replace("▁", ""), (tok, text[b:e])
        assert (np.diff(rows.begin.to_numpy()) >= 0).all()


@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "mean_max"])
def test_token_pooler_equals_vectorizer(tiny_model_dir, pooling):
    tokens = XLMTTokenVectorizer(str(tiny_model_dir), special_tokens=True).fit().transform(TEXTS)
    pooled = XLMTVectorizer(str(tiny_model_dir), pooling=pooling).fit().transform(TEXTS)
    np.testing.assert_allclose(
        TokenPooler(pooling=pooling).fit_transform(tokens), pooled, atol=1e-5, rtol=0
    )


def test_token_pooler_first_last_and_containers():
    mats = [np.arange(6, dtype=np.float32).reshape(3, 2), np.zeros((0, 2), np.float32)]
    pooler = TokenPooler(pooling="first_last").fit(mats)
    np.testing.assert_array_equal(pooler.transform(mats), [[0, 1, 4, 5], [0, 0, 0, 0]])
    padded = PaddedTokens(np.array([[[1.0, 1.0], [3.0, 3.0]]]), np.array([[True, False]]))
    np.testing.assert_array_equal(TokenPooler().fit_transform(padded), [[1.0, 1.0]])
    with pytest.raises(ValueError, match="fitted on 2-wide tokens"):
        pooler.transform([np.zeros((1, 3))])
    with pytest.raises(TypeError, match="TokenPooler expects token features"):
        pooler.transform("text")
    assert TokenPooler(normalize=True).fit_transform(mats)[0] @ TokenPooler(
        normalize=True
    ).fit_transform(mats)[0] == pytest.approx(1.0)


def test_outputs_padded_and_frame(tiny_model_dir):
    vec = XLMTTokenVectorizer(str(tiny_model_dir)).fit()
    ragged = vec.transform(TEXTS)
    padded = vec.set_params(output="padded").transform(TEXTS)
    assert isinstance(padded, PaddedTokens)
    assert padded.values.shape == (len(TEXTS), max(len(r) for r in ragged), 32)
    for r, v, m in zip(ragged, padded.values, padded.mask, strict=True):
        np.testing.assert_array_equal(v[m], r)
        assert (v[~m] == 0).all()
    frame = vec.set_params(output="frame").transform(pd.Series(TEXTS, name="t"))
    assert list(frame.columns) == ["position", "token", "begin", "end", "embedding"]
    assert len(frame) == sum(len(r) for r in ragged)
    np.testing.assert_array_equal(np.stack(frame.embedding), np.concatenate(list(ragged)))


def test_missing_policies(tiny_model_dir):
    vec = XLMTTokenVectorizer(str(tiny_model_dir), missing="zeros").fit()
    out = vec.transform(["hello", None])
    assert out[1].shape == (0, 32) and len(out[0]) > 0
    with pytest.raises(ValueError, match="Missing values"):
        vec.set_params(missing="error").transform(["hello", None])


def test_bad_inputs(tiny_model_dir):
    vec = XLMTTokenVectorizer(str(tiny_model_dir)).fit()
    with pytest.raises(TypeError, match="Mixed input"):
        vec.transform([["a"], "b"])
    with pytest.raises(TypeError, match="lists of str"):
        vec.transform([["a", 3]])
    with pytest.raises(ValueError, match="Iterable of texts expected"):
        vec.transform("just a string")


def test_ignored_params_warn(tiny_model_dir):
    with pytest.warns(UserWarning, match="only apply with granularity='word'"):
        XLMTTokenVectorizer(str(tiny_model_dir), word_vector="mean").fit()


LONG = "hello world this is a tweet about the weather " * 6


def test_window_short_text_unchanged(tiny_model_dir):
    plain = XLMTTokenVectorizer(str(tiny_model_dir), max_length=64).fit().transform(TEXTS)
    win = (
        XLMTTokenVectorizer(str(tiny_model_dir), max_length=64, truncation="window", stride=8)
        .fit()
        .transform(TEXTS)
    )
    for a, b in zip(plain, win, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_window_covers_every_token_once(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    n_tokens = len(tok(LONG, add_special_tokens=False)["input_ids"])
    vec = XLMTTokenVectorizer(
        str(tiny_model_dir), max_length=24, truncation="window", stride=6,
        preprocess=None, output="frame",
    ).fit()  # fmt: skip
    frame = vec.transform([LONG])
    assert len(frame) == n_tokens > 24
    assert frame.position.tolist() == list(range(n_tokens))
    assert (np.diff(frame.begin.to_numpy()) >= 0).all()
    # Tokens near a window's middle equal a direct encoding of that window.
    with pytest.warns(TruncationWarning, match="truncated"):
        trunc = XLMTTokenVectorizer(str(tiny_model_dir), max_length=24, preprocess=None)
        first = trunc.fit().transform([LONG])[0]
    np.testing.assert_allclose(np.stack(frame.embedding[:5]), first[:5], atol=1e-5)


def test_window_pooled_is_mean_of_merged_tokens(tiny_model_dir):
    kw = dict(max_length=24, truncation="window", stride=6, preprocess=None)
    tokens = XLMTTokenVectorizer(str(tiny_model_dir), special_tokens=True, **kw).fit()
    pooled = XLMTVectorizer(str(tiny_model_dir), **kw).fit().transform([LONG, "hi"])
    np.testing.assert_allclose(
        TokenPooler().fit_transform(tokens.transform([LONG, "hi"])), pooled, atol=1e-5
    )


def test_grid_search_over_pooling_encodes_each_text_once(tiny_model_dir, tmp_path):
    from xlmt_sklearn.backends import _loading

    texts = [f"tweet number {i % 15} hello" for i in range(40)]
    labels = [i % 2 for i in range(40)]
    _loading.clear_model_registry()
    seen: list[int] = []
    cache = tmp_path / "tok.sqlite"
    vec = XLMTTokenVectorizer(
        str(tiny_model_dir), special_tokens=True, cache=str(cache), device="cpu"
    )
    # Load once, then hook the shared model so every forward pass is counted.
    vec.fit().transform(["warm up"])
    loaded = next(iter(_loading.loaded_models().values()))
    loaded.model.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(int(kwargs["attention_mask"].shape[0])),
        with_kwargs=True,
    )
    pipe = make_pipeline(vec, TokenPooler(), LogisticRegression(max_iter=200))
    grid = GridSearchCV(
        pipe, {"tokenpooler__pooling": ["mean", "max", "cls", "first_last"]}, cv=3, n_jobs=1
    )
    grid.fit(texts, labels)
    assert sum(seen) == len(set(texts))
    seen.clear()
    grid.fit(texts, labels)
    assert sum(seen) == 0


def test_float16_cache_halves_disk_within_bound(tiny_model_dir, tmp_path):
    base = XLMTTokenVectorizer(str(tiny_model_dir)).fit().transform(TEXTS)
    v16 = XLMTTokenVectorizer(
        str(tiny_model_dir), cache=str(tmp_path / "c16"), cache_dtype="float16"
    ).fit()
    v32 = XLMTTokenVectorizer(str(tiny_model_dir), cache=str(tmp_path / "c32")).fit()
    miss16, hit16 = v16.transform(TEXTS), v16.transform(TEXTS)
    v32.transform(TEXTS)
    for a, b, c in zip(base, miss16, hit16, strict=True):
        np.testing.assert_array_equal(b, c)  # hits equal misses
        np.testing.assert_allclose(b, a, rtol=2**-11, atol=6e-8)
    from xlmt_sklearn import EmbeddingCache

    s16 = EmbeddingCache(tmp_path / "c16").stats.bytes
    s32 = EmbeddingCache(tmp_path / "c32").stats.bytes
    # Each distinct text also keeps its tokenization (id, start, end per content token,
    # float32 in both caches), so that a warm call skips the tokenizer.
    spans = 12 * sum(len(a) for a in dict(zip(TEXTS, base, strict=True)).values())
    assert (s16 - spans) * 2 == pytest.approx(s32 - spans, rel=0.01)


# ------------------------------------------------- one input path with XLMTVectorizer (#15)


def test_a_prefix_template_is_refused_at_fit(tiny_model_dir):
    vec = XLMTTokenVectorizer(str(tiny_model_dir), prefix="query: {text}")
    with pytest.raises(ValueError, match=r"'prefix' parameter of XLMTTokenVectorizer.*template"):
        vec.fit()


@pytest.mark.parametrize("presplit", [False, True], ids=["texts", "words"])
def test_a_preprocess_returning_no_str_names_the_position(tiny_model_dir, presplit):
    X = [["ok", "fine"], ["a", "b"]] if presplit else ["ok fine", "a b"]
    vec = XLMTTokenVectorizer(str(tiny_model_dir), preprocess=lambda s: None).fit()
    with pytest.raises(
        TypeError, match="preprocess must return str; it returned NoneType for position 0"
    ):
        vec.transform(X)


class _SpyCache:
    """A user cache that records which entries were read and lets a test damage them."""

    def __init__(self):
        self.data: dict[bytes, tuple[np.ndarray, int]] = {}

    def get_many(self, keys):
        return [None if k not in self.data else (self.data[k][0].copy(), self.data[k][1])
                for k in keys]  # fmt: skip

    def put_many(self, keys, arrays, metas=None):
        for k, a, m in zip(keys, arrays, metas or [0] * len(keys), strict=True):
            self.data[k] = (np.array(a), int(m))

    def spans(self, width: int):
        return [k for k, (a, _) in self.data.items() if a.ndim == 2 and a.shape[1] == width]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("words", [False, True], ids=["texts", "pre-split"])
def test_a_warm_cache_skips_the_tokenizer(tiny_model_dir, monkeypatch, words):
    from xlmt_sklearn.flow import _tokenize

    calls = []
    real = _tokenize._run
    monkeypatch.setattr(_tokenize, "_run", lambda tok, texts, *a: calls.append(len(texts)) or
                        real(tok, texts, *a))  # fmt: skip
    X = [t.split() for t in TEXTS] if words else TEXTS
    cache = _SpyCache()
    vec = XLMTTokenVectorizer(str(tiny_model_dir), cache=cache, output="ragged").fit()
    first = vec.transform(X)
    assert calls == [len(set(map(str, X)))]
    calls.clear()
    again = XLMTTokenVectorizer(str(tiny_model_dir), cache=cache, output="ragged").fit()
    _same(first, again.transform(X))
    assert calls == []  # every model input's ids and offsets came from the cache
    other_layers = XLMTTokenVectorizer(str(tiny_model_dir), cache=cache, layers=[-2]).fit()
    other_layers.transform(X)
    assert calls == []  # the tokenization is shared by every layer choice


def test_a_damaged_tokenization_entry_is_a_miss(tiny_model_dir):
    cache = _SpyCache()
    vec = XLMTTokenVectorizer(str(tiny_model_dir), cache=cache, granularity="word").fit()
    first = vec.transform(TEXTS)
    damaged = cache.spans(3)
    assert len(damaged) == len(set(TEXTS))
    bad = [
        np.full((2, 3), 0.5, np.float32),
        np.zeros((4, 5), np.float32),
        np.array([[7, 5, 2]], np.float32),
    ]  # not whole / another width / backwards span
    for i, k in enumerate(damaged):
        cache.data[k] = (bad[i % 3], 0)
    _same(first, XLMTTokenVectorizer(str(tiny_model_dir), cache=cache,
                                     granularity="word").fit().transform(TEXTS))  # fmt: skip
    from xlmt_sklearn.flow._tokenize import unpack_spans

    assert all(unpack_spans(cache.data[k][0], presplit=False) for k in damaged)  # rewritten
