"""Huge transforms run chunk by chunk: same results, bounded working memory."""

from __future__ import annotations

import numpy as np
import pytest

from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn.flow import _pipeline
from xlmt_sklearn.flow import _tuning as flow_tuning

_DISTINCT = [f"tweet number {i} with words {'x ' * (i % 9)}" for i in range(17)]
TEXTS = [_DISTINCT[i % 17] for i in range(53)]


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 4 distinct texts; records how many texts each forward run gets."""
    monkeypatch.setattr(flow_tuning.TUNING, "stream_chunk", 4)
    sizes: list[int] = []
    real_encode = _pipeline.encode

    def spy(encoders, encoded, options):
        sizes.append(len(encoded.n_windows))
        return real_encode(encoders, encoded, options)

    monkeypatch.setattr(_pipeline, "encode", spy)
    return sizes


def _reference(model_dir, **kw):
    return XLMTVectorizer(str(model_dir), **kw).fit().transform(TEXTS)


@pytest.mark.parametrize(
    "kw",
    [{}, {"pooling": "max", "normalize": True}, {"truncation": "window", "max_length": 8}],
    ids=["mean", "max-l2", "window"],
)
def test_chunked_transform_equals_one_chunk(tiny_model_dir, tiny_chunks, kw):
    want = _reference(tiny_model_dir, **kw)  # also through the spy, but 17 distinct > 4
    tiny_chunks.clear()
    got = XLMTVectorizer(str(tiny_model_dir), **kw).fit().transform(TEXTS)
    assert tiny_chunks and max(tiny_chunks) <= 4 and sum(tiny_chunks) == 17
    np.testing.assert_array_equal(got, want)  # identical: same batches inside each chunk
    # Duplicates get their text's row wherever they are.
    for i in range(len(TEXTS)):
        np.testing.assert_array_equal(got[i], got[i % 17])


def test_chunked_matches_unchunked(tiny_model_dir, monkeypatch):
    want = _reference(tiny_model_dir)
    monkeypatch.setattr(flow_tuning.TUNING, "stream_chunk", 5)
    got = _reference(tiny_model_dir)
    assert np.abs(got - want).max() < 1e-5  # other batch compositions: float noise only


def test_chunks_mix_hits_and_misses(tiny_model_dir, tiny_chunks, tmp_path):
    cache = tmp_path / "c.sqlite"
    vec = XLMTVectorizer(str(tiny_model_dir), cache=cache).fit()
    first = vec.transform(TEXTS[::3])  # some texts cached
    tiny_chunks.clear()
    got = vec.transform(TEXTS)
    assert sum(tiny_chunks) == 17 - len(set(TEXTS[::3]))  # only the misses were encoded
    np.testing.assert_allclose(got[::3], first, atol=1e-6)
    again = vec.transform(TEXTS)
    np.testing.assert_array_equal(again, got)


def test_lookups_in_small_batches_inside_chunks(tiny_model_dir, monkeypatch, tmp_path):
    """Each chunk is looked up lookup_batch keys at a time; hits and misses still line up."""
    monkeypatch.setattr(flow_tuning.TUNING, "stream_chunk", 7)
    monkeypatch.setattr(flow_tuning.TUNING, "lookup_batch", 3)
    from xlmt_sklearn import EmbeddingCache

    calls: list[int] = []
    real = EmbeddingCache.get_many
    monkeypatch.setattr(
        EmbeddingCache, "get_many", lambda self, keys: calls.append(len(keys)) or real(self, keys)
    )
    want = _reference(tiny_model_dir)
    vec = XLMTVectorizer(str(tiny_model_dir), cache=tmp_path / "c.sqlite").fit()
    vec.transform(TEXTS[::4])
    calls.clear()
    got = vec.transform(TEXTS)
    assert max(calls) == 3 and sum(calls) == 17  # 17 distinct texts in chunks of 7 (3+3+1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(vec.transform(TEXTS), got)


def test_truncation_error_refuses_before_encoding_anything(tiny_model_dir, tiny_chunks):
    texts = [f"short {i}" for i in range(12)] + ["long " * 50]
    vec = XLMTVectorizer(str(tiny_model_dir), truncation="error", max_length=16).fit()
    with pytest.raises(ValueError, match=r"position.* 12\)"):
        vec.transform(texts)
    assert tiny_chunks == []


def test_missing_rows_and_pandas_index_survive_chunks(tiny_model_dir, tiny_chunks):
    pd = pytest.importorskip("pandas")
    s = pd.Series([*TEXTS[:10], None, *TEXTS[10:20]], index=range(100, 121))
    vec = XLMTVectorizer(str(tiny_model_dir), missing="zeros").set_output(transform="pandas")
    out = vec.fit().transform(s)
    assert list(out.index) == list(range(100, 121))
    assert not out.iloc[10].any()
    ref = _reference(tiny_model_dir)
    np.testing.assert_allclose(out.iloc[:10].to_numpy(), ref[:10], atol=1e-5)


def test_token_vectorizer_chunks(tiny_model_dir, monkeypatch, tmp_path):
    vec = XLMTTokenVectorizer(str(tiny_model_dir), cache=tmp_path / "t.sqlite",
                              cache_dtype="float16").fit()  # fmt: skip
    want = vec.transform(TEXTS[:20])
    monkeypatch.setattr(flow_tuning.TUNING, "stream_chunk", 3)
    vec.cache = tmp_path / "other.sqlite"
    got = vec.transform(TEXTS[:20])
    assert len(got) == 20
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3)  # float16 storage, other batches
    np.testing.assert_array_equal(vec.transform(TEXTS[:20])[5], got[5])  # hits == misses


def test_progress_log_writes_whole_lines(tiny_model_dir, capsys):
    """``progress="log"`` (the CLI's default off a terminal): lines, not a redrawn bar."""
    from xlmt_sklearn import XLMTVectorizer

    texts = [f"text number {i}" for i in range(40)]
    XLMTVectorizer(str(tiny_model_dir), device="cpu", progress="log").fit_transform(texts)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "xlmt_sklearn torch (float32): 0/40 texts"
    assert lines[-1].startswith("xlmt_sklearn torch (float32): 40/40 texts in ")
    assert not any("\r" in line for line in lines)


def test_progress_lines_report_rate_and_eta():
    import io

    from xlmt_sklearn.flow._progress import ProgressLines

    out = io.StringIO()
    bar = ProgressLines(100, "x", stream=out)
    bar.every_s = 0.0  # this object only: a line at every update
    bar.update(25)
    bar.close()
    first, mid, last = out.getvalue().splitlines()
    assert first == "x: 0/100 texts"
    assert mid.startswith("x: 25/100 texts (25%), ") and "texts/s, ETA" in mid
    assert last.startswith("x: 25/100 texts in ")
