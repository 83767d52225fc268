"""xlmt_sklearn.dask: the featurizer on Dask equals it in-process.

The fast tests use Dask's synchronous scheduler (same process, no cluster).
The ``slow`` test starts a 2-process ``LocalCluster`` (~30 s here: each
worker imports torch and loads the model) and checks that each worker loads
the model once, whatever the number of partitions it runs.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from tests._models import tweet_like_texts as make_texts
from xlmt_sklearn import XLMTVectorizer

dask = pytest.importorskip("dask", reason="Dask not installed: pip install xlmt-sklearn[dask]")
dd = pytest.importorskip("dask.dataframe", reason="pip install xlmt-sklearn[dask]")


def _vectorizer(model_dir, **params):
    return clone(XLMTVectorizer(str(model_dir), device="cpu", progress=False, **params))


@pytest.fixture(scope="module")
def small_frame() -> pd.DataFrame:
    """200 rows, every fifth text missing, on a non-default index."""
    texts = [None if i % 5 == 2 else t for i, t in enumerate(make_texts(200))]
    return pd.DataFrame({"id": range(200), "text": texts}, index=pd.RangeIndex(200) * 3 + 7)


@pytest.fixture(scope="module")
def small_expected(tiny_model_dir, small_frame) -> np.ndarray:
    vec = _vectorizer(tiny_model_dir, missing="zeros").fit()
    return vec.transform(small_frame["text"])


def test_missing_dask_gives_install_hint(monkeypatch, tiny_model_dir):
    from xlmt_sklearn.dask import embed_partitions

    for name in [m for m in sys.modules if m == "dask" or m.startswith("dask.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r"pip install xlmt-sklearn\[dask\]"):
        embed_partitions(object(), "text", _vectorizer(tiny_model_dir))


def test_frame_output_matches_in_process(tiny_model_dir, small_frame, small_expected):
    from xlmt_sklearn.dask import embed_partitions

    ddf = dd.from_pandas(small_frame, npartitions=4)
    vec = _vectorizer(tiny_model_dir, missing="zeros")  # unfitted: fitted on a clone
    emb = embed_partitions(ddf, "text", vec)
    assert not hasattr(vec, "model_identity_")
    assert emb.npartitions == 4
    assert list(emb.columns) == [f"xlmtvectorizer{i}" for i in range(32)]
    assert emb.divisions == ddf.divisions
    got = emb.compute(scheduler="sync")
    pd.testing.assert_index_equal(got.index, small_frame.index)
    assert (got.dtypes == np.float32).all()
    assert np.abs(got.to_numpy() - small_expected).max() < 1e-6
    missing = small_frame["text"].isna().to_numpy()
    assert missing.sum() == 40
    assert not got.to_numpy()[missing].any()  # missing="zeros": zero rows


def test_series_input_and_array_output(tiny_model_dir, small_frame, small_expected):
    from xlmt_sklearn.dask import embed_partitions

    series = dd.from_pandas(small_frame["text"], npartitions=3)
    vec = _vectorizer(tiny_model_dir, missing="zeros").fit()
    arr = embed_partitions(series, None, vec, output="array", num_threads=1)
    assert arr.dtype == np.float32
    assert arr.shape[1] == 32
    got = arr.compute(scheduler="sync")
    assert np.abs(got - small_expected).max() < 1e-6


def test_missing_error_names_column_and_partition(tiny_model_dir, small_frame):
    from xlmt_sklearn.dask import embed_partitions

    ddf = dd.from_pandas(small_frame, npartitions=2)
    emb = embed_partitions(ddf, "text", _vectorizer(tiny_model_dir))  # missing="error"
    with pytest.raises(ValueError, match=r"Column 'text' has null values .* in partition [01]\)"):
        emb.compute(scheduler="sync")
    # missing="empty": the missing rows are embedded as the empty text.
    empty = _vectorizer(tiny_model_dir, missing="empty")
    got = embed_partitions(ddf, "text", empty).compute(scheduler="sync").to_numpy()
    blank = empty.fit().transform([""])[0]
    assert np.abs(got[small_frame["text"].isna().to_numpy()] - blank).max() < 1e-6


def test_bad_arguments(tiny_model_dir, small_frame):
    from xlmt_sklearn.dask import embed_partitions

    vec = _vectorizer(tiny_model_dir)
    ddf = dd.from_pandas(small_frame, npartitions=2)
    with pytest.raises(TypeError, match=r"expects a Dask DataFrame or Series; got pandas"):
        embed_partitions(small_frame, "text", vec)
    with pytest.raises(TypeError, match=r"name its text column"):
        embed_partitions(ddf, None, vec)
    with pytest.raises(TypeError, match=r"data is a Dask Series; pass column=None"):
        embed_partitions(ddf["text"], "text", vec)
    with pytest.raises(ValueError, match=r"Column 'nope' not found"):
        embed_partitions(ddf, "nope", vec)
    with pytest.raises(ValueError, match=r"output must be one of"):
        embed_partitions(ddf, "text", vec, output="list")
    with pytest.raises(ValueError, match=r"num_threads must be a positive int"):
        embed_partitions(ddf, "text", vec, num_threads=0)
    from xlmt_sklearn import XLMTTokenVectorizer

    tok = XLMTTokenVectorizer(str(tiny_model_dir), device="cpu")
    with pytest.raises(TypeError, match=r"XLMTTokenVectorizer gives one per token"):
        embed_partitions(ddf, "text", tok)


@pytest.mark.slow
def test_local_cluster_two_processes(tiny_model_dir):
    distributed = pytest.importorskip("distributed", reason="pip install xlmt-sklearn[dask]")
    from xlmt_sklearn.backends._loading import load_count
    from xlmt_sklearn.dask import embed_partitions

    texts = make_texts(2000)
    frame = pd.DataFrame({"text": texts})
    expected = _vectorizer(tiny_model_dir).fit().transform(texts)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            host="127.0.0.1", silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        ddf = dd.from_pandas(frame, npartitions=8)
        got = embed_partitions(ddf, "text", _vectorizer(tiny_model_dir)).compute()
        loads = client.run(load_count)
    pd.testing.assert_index_equal(got.index, frame.index)
    assert np.abs(got.to_numpy() - expected).max() < 1e-6
    # 8 partitions on 2 worker processes: at most one load per process.
    per_worker = [c["model"] for c in loads.values()]
    assert len(per_worker) == 2
    assert max(per_worker) == 1
