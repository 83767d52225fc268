"""XLMTVectorizer against direct transformers references, and its invariances."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.reference import reference_pooled
from xlmt_sklearn import TruncationWarning, XLMTVectorizer, normalize_tweet

TEXTS = [
    "hello world",
    "@maria hola mundo http://t.co/abc 😀",
    "",
    "   ",
    "bonjour le monde #hashtag!!!",
    "مرحبا بالعالم",
    "नमस्ते दुनिया आप कैसे हैं",
    "guten Tag liebe Welt, wie geht's? " * 3,
    "a",
]

POOLINGS = ["mean", "cls", "max", "mean_max"]
LAYERS = [(-1, "mean"), ([-1, -2], "mean"), ([-1, -2], "concat"), (0, "mean"), ([1], "concat")]


@pytest.mark.parametrize(
    "pooling,layers_agg,normalize",
    list(itertools.product(POOLINGS, LAYERS, [False, True])),
)
def test_matches_transformers_reference(tiny_model_dir, pooling, layers_agg, normalize):
    layers, agg = layers_agg
    vec = XLMTVectorizer(
        str(tiny_model_dir), pooling=pooling, layers=layers, layer_aggregation=agg,
        normalize=normalize, device="cpu", batch_size=3, progress=False,
    ).fit()  # fmt: skip
    got = vec.transform(TEXTS)
    layer_tuple = (layers,) if isinstance(layers, int) else tuple(layers)
    ref = reference_pooled(
        tiny_model_dir, [normalize_tweet(t) for t in TEXTS], pooling=pooling,
        layers=layer_tuple, layer_aggregation=agg, normalize=normalize,
    )  # fmt: skip
    assert got.dtype == np.float32
    assert got.shape == ref.shape == (len(TEXTS), vec.n_features_out_)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_bert_architecture_matches_reference(tiny_bert_dir):
    vec = XLMTVectorizer(str(tiny_bert_dir), device="cpu", preprocess=None).fit()
    got = vec.transform(TEXTS)
    np.testing.assert_allclose(got, reference_pooled(tiny_bert_dir, TEXTS), atol=1e-5, rtol=0)


def test_mean_matches_sentence_transformers(tiny_model_dir):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    word = Transformer(str(tiny_model_dir), max_seq_length=128)
    pooler = Pooling(word.get_embedding_dimension(), "mean")
    model = st.SentenceTransformer(modules=[word, pooler], device="cpu")
    ref = model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    got = XLMTVectorizer(str(tiny_model_dir), device="cpu", preprocess=None).fit().transform(TEXTS)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_size,max_tokens", [(1, None), (2, None), (64, None), (8, 40)])
def test_independent_of_batching(tiny_model_dir, batch_size, max_tokens):
    base = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().transform(TEXTS)
    got = (
        XLMTVectorizer(
            str(tiny_model_dir), device="cpu", batch_size=batch_size, max_tokens=max_tokens
        )
        .fit()
        .transform(TEXTS)
    )
    np.testing.assert_allclose(got, base, atol=1e-5, rtol=0)


def test_independent_of_order_and_duplicates(vectorizer):
    vec = vectorizer.fit()
    base = vec.transform(TEXTS)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(TEXTS))
    np.testing.assert_allclose(vec.transform([TEXTS[i] for i in perm]), base[perm], atol=1e-5)
    dup_idx = [0, 1, 0, 0, 4, 1, 8, 8]
    got = vec.transform([TEXTS[i] for i in dup_idx])
    np.testing.assert_allclose(got, base[dup_idx], atol=1e-5)
    # Subsets give the same rows as the whole.
    np.testing.assert_allclose(vec.transform(TEXTS[2:5]), base[2:5], atol=1e-5)


def test_empty_input_returns_zero_rows(vectorizer):
    vec = vectorizer.fit()
    out = vec.transform([])
    assert out.shape == (0, 32) and out.dtype == np.float32


def test_output_dims(tiny_model_dir):
    def dim(**kw):
        return XLMTVectorizer(str(tiny_model_dir), **kw).fit().n_features_out_

    assert dim() == 32
    assert dim(pooling="mean_max") == 64
    assert dim(layers=[-1, -2, -3], layer_aggregation="concat") == 96
    assert dim(layers=[-1, -2], layer_aggregation="concat", pooling="mean_max") == 128
    assert dim(layers=[-1, -2], layer_aggregation="mean") == 32


def test_missing_policies(vectorizer):
    X = ["hello", None, np.nan, pd.NA, "world"]
    with pytest.raises(ValueError, match=r"Missing values .* positions 1, 2, 3"):
        vectorizer.fit().transform(X)
    zeros = vectorizer.set_params(missing="zeros").fit().transform(X)
    assert np.all(zeros[1:4] == 0) and np.all(np.abs(zeros[[0, 4]]).sum(axis=1) > 0)
    empty = vectorizer.set_params(missing="empty").fit().transform(X)
    ref = vectorizer.transform(["", "hello"])
    np.testing.assert_allclose(empty[1:4], np.repeat(ref[:1], 3, axis=0), atol=1e-6)
    np.testing.assert_allclose(empty[0], ref[1], atol=1e-6)


def test_prefix_and_template(tiny_model_dir):
    plain = XLMTVectorizer(str(tiny_model_dir), preprocess=None).fit()
    pre = XLMTVectorizer(str(tiny_model_dir), preprocess=None, prefix="query: ").fit()
    tpl = XLMTVectorizer(str(tiny_model_dir), preprocess=None, prefix="query: {text} !").fit()
    np.testing.assert_allclose(pre.transform(["hi"]), plain.transform(["query: hi"]), atol=1e-6)
    np.testing.assert_allclose(tpl.transform(["hi"]), plain.transform(["query: hi !"]), atol=1e-6)


def test_callable_and_no_preprocess(tiny_model_dir):
    upper = XLMTVectorizer(str(tiny_model_dir), preprocess=str.upper).fit()
    none = XLMTVectorizer(str(tiny_model_dir), preprocess=None).fit()
    np.testing.assert_allclose(upper.transform(["hello"]), none.transform(["HELLO"]), atol=1e-6)
    xlmt = XLMTVectorizer(str(tiny_model_dir)).fit()
    np.testing.assert_allclose(
        xlmt.transform(["@bob see https://x.y"]), none.transform(["@user see http"]), atol=1e-6
    )


def test_preprocess_must_return_str(tiny_model_dir):
    vec = XLMTVectorizer(str(tiny_model_dir), preprocess=len).fit()
    with pytest.raises(TypeError, match="preprocess must return str"):
        vec.transform(["hello"])


LONG = "hello world this is a tweet about the weather " * 8


def test_truncation_warns_once_with_positions(tiny_model_dir):
    vec = XLMTVectorizer(str(tiny_model_dir), max_length=16).fit()
    with pytest.warns(TruncationWarning, match=r"3 of 5 texts .*positions: 0, 2, 4\)") as rec:
        out = vec.transform([LONG, "hi", LONG, "yo", LONG + "x"])
    assert len([w for w in rec if issubclass(w.category, TruncationWarning)]) == 1
    w = next(w.message for w in rec if issubclass(w.category, TruncationWarning))
    assert w.count == 3 and w.positions == [0, 2, 4] and w.max_length == 16
    # The warning points at the caller's line, not at library internals.
    tw = next(w for w in rec if issubclass(w.category, TruncationWarning))
    assert tw.filename == __file__
    ref = reference_pooled(tiny_model_dir, [normalize_tweet(LONG)], max_length=16)
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5)


def test_truncation_error(tiny_model_dir):
    vec = XLMTVectorizer(str(tiny_model_dir), max_length=16, truncation="error").fit()
    with pytest.raises(ValueError, match=r"longer than max_length=16 .*positions 1\)"):
        vec.transform(["hi", LONG])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vec.transform(["hi", "short"])


def test_window_equals_plain_for_short_texts(tiny_model_dir):
    short = ["hello world", "hola mundo", ""]
    for pooling in POOLINGS:
        plain = XLMTVectorizer(str(tiny_model_dir), pooling=pooling, max_length=32).fit()
        win = XLMTVectorizer(
            str(tiny_model_dir), pooling=pooling, max_length=32, truncation="window", stride=4
        ).fit()
        np.testing.assert_allclose(win.transform(short), plain.transform(short), atol=1e-6)


def test_window_counts_are_logged(tiny_model_dir, caplog):
    win = XLMTVectorizer(str(tiny_model_dir), max_length=16, truncation="window", stride=4).fit()
    with caplog.at_level("INFO", logger="xlmt_sklearn"):
        win.transform([LONG, "hi"])
    assert "1 of 2 texts exceeded max_length=16" in caplog.text


def test_window_long_text_differs_from_truncation_and_is_deterministic(tiny_model_dir):
    win = XLMTVectorizer(str(tiny_model_dir), max_length=16, truncation="window", stride=4).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # windowing is not truncation: no warning
        a = win.transform([LONG, "hi"])
    b = win.set_params(batch_size=1).transform(["hi", LONG])
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)
    with pytest.warns(TruncationWarning, match="truncated"):
        trunc = XLMTVectorizer(str(tiny_model_dir), max_length=16).fit().transform([LONG])
    assert np.abs(a[0] - trunc[0]).max() > 1e-4


def test_max_length_checked_against_model(tiny_model_dir):
    with pytest.raises(ValueError, match="accepts at most 512 tokens"):
        XLMTVectorizer(str(tiny_model_dir), max_length=600).fit()


@pytest.mark.parametrize("layers", [5, -4, [0, 3], []])
def test_bad_layers(tiny_model_dir, layers):
    with pytest.raises(ValueError, match="layers"):
        XLMTVectorizer(str(tiny_model_dir), layers=layers).fit()


@pytest.mark.slow
def test_compile_matches_eager(tiny_model_dir):
    eager = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().transform(TEXTS)
    compiled = XLMTVectorizer(str(tiny_model_dir), device="cpu", compile=True).fit()
    np.testing.assert_allclose(compiled.transform(TEXTS), eager, atol=1e-5, rtol=0)


def test_int8_close_to_float32(tiny_model_dir):
    fp32 = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().transform(TEXTS)
    int8 = XLMTVectorizer(str(tiny_model_dir), quantize="int8").fit().transform(TEXTS)
    cos = (fp32 * int8).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cos.min() > 0.95, cos
    with pytest.raises(ValueError, match=r"quantize='int8' .* float32"):
        XLMTVectorizer(str(tiny_model_dir), quantize="int8", dtype="float16").fit()
