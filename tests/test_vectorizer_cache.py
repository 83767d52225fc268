"""The disk cache seen from the estimators: hits, misses, fingerprints, processes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from tests._keys import cache_keys
from tests._models import build_tiny_model
from xlmt_sklearn import (
    CacheWarning,
    EmbeddingCache,
    XLMTTokenVectorizer,
    XLMTVectorizer,
    normalize_tweet,
    reset_process_state,
)
from xlmt_sklearn.backends import _loading as loading_mod
from xlmt_sklearn.flow import _tuning as flow_tuning

REPO = Path(__file__).resolve().parents[1]
TEXTS = [f"tweet {i % 23} about things @user{i % 3} http://x.co/{i}" for i in range(60)]
LABELS = [i % 2 for i in range(60)]


class ForwardCounter:
    """Counts the rows the shared model actually encodes (a forward hook)."""

    def __init__(self, vec):
        loading_mod.clear_model_registry()
        clone(vec).fit().transform(["load the model once"])
        self.rows = 0
        (loaded,) = loading_mod.loaded_models().values()
        loaded.model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, out):
        self.rows += int(kwargs["attention_mask"].shape[0])


def test_grid_search_encodes_each_distinct_text_once(tiny_model_dir, tmp_path):
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(tmp_path / "c.sqlite"))
    counter = ForwardCounter(vec)
    grid = GridSearchCV(
        make_pipeline(vec, LogisticRegression(max_iter=300)),
        {"logisticregression__C": [0.1, 1, 10, 100]},
        cv=5,
    )
    grid.fit(TEXTS, LABELS)
    n_distinct = len({normalize_tweet(t) for t in TEXTS})  # handles/URLs are normalised
    assert n_distinct == 23
    assert counter.rows == n_distinct
    counter.rows = 0
    grid.fit(TEXTS, LABELS)
    assert counter.rows == 0


def test_without_cache_grid_search_reencodes(tiny_model_dir):
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu")
    counter = ForwardCounter(vec)
    GridSearchCV(
        make_pipeline(vec, LogisticRegression(max_iter=300)),
        {"logisticregression__C": [1, 10]},
        cv=3,
    ).fit(TEXTS, LABELS)
    assert counter.rows > 3 * 23


def test_cached_vectors_equal_fresh_ones(tiny_model_dir, tmp_path):
    fresh = XLMTVectorizer(str(tiny_model_dir)).fit().transform(TEXTS)
    vec = XLMTVectorizer(str(tiny_model_dir), cache=str(tmp_path / "c.sqlite")).fit()
    first = vec.transform(TEXTS)
    second = vec.transform(TEXTS[::-1])[::-1]
    assert np.abs(first - fresh).max() < 1e-6
    assert np.abs(second - fresh).max() < 1e-6


def test_all_hits_load_no_model(tiny_model_dir, tmp_path):
    vec = XLMTVectorizer(str(tiny_model_dir), cache=str(tmp_path / "c.sqlite")).fit()
    expected = vec.transform(TEXTS)
    reset_process_state()  # as in a new process
    before = loading_mod.load_count()
    again = pickle.loads(pickle.dumps(vec)).transform(TEXTS)
    assert loading_mod.load_count() == before
    np.testing.assert_array_equal(again, expected)


def _misses(vec, texts, path):
    stats = EmbeddingCache(path).stats
    vec.transform(texts)
    return EmbeddingCache(path).stats.entries - stats.entries


CHANGES = [
    {"pooling": "max"},
    {"layers": -2},
    {"layers": [-1, -2], "layer_aggregation": "concat"},
    {"normalize": True},
    {"max_length": 64},
    {"truncation": "window"},
    {"preprocess": None},
    {"preprocess": str.lower},
    {"prefix": "query: "},
    {"dtype": "bfloat16"},
    {"quantize": "int8"},
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: ",".join(c))
def test_every_fingerprint_part_misses(tiny_model_dir, tmp_path, change):
    path = tmp_path / "c.sqlite"
    base = XLMTVectorizer(str(tiny_model_dir), cache=str(path)).fit()
    base.transform(TEXTS[:10])
    assert _misses(base, TEXTS[:10], path) == 0
    other = clone(base).set_params(**change).fit()
    assert _misses(other, TEXTS[:10], path) == 10


def test_other_weights_miss(tiny_model_dir, tmp_path):
    path = tmp_path / "c.sqlite"
    XLMTVectorizer(str(tiny_model_dir), cache=str(path)).fit().transform(TEXTS[:5])
    other = build_tiny_model(tmp_path / "other", seed=11)
    assert _misses(XLMTVectorizer(str(other), cache=str(path)).fit(), TEXTS[:5], path) == 5


@pytest.mark.parametrize(
    "change", [{"batch_size": 1}, {"device": "cpu"}, {"progress": True}, {"max_tokens": 50}]
)
def test_runtime_options_hit(tiny_model_dir, tmp_path, change):
    path = tmp_path / "c.sqlite"
    base = XLMTVectorizer(str(tiny_model_dir), device="auto", cache=str(path)).fit()
    base.transform(TEXTS[:10])
    assert _misses(clone(base).set_params(**change).fit(), TEXTS[:10], path) == 0


def test_new_process_hits(tiny_model_dir, tmp_path):
    path = tmp_path / "c.sqlite"
    vec = XLMTVectorizer(str(tiny_model_dir), cache=str(path)).fit()
    expected = vec.transform(TEXTS)
    blob = tmp_path / "vec.pkl"
    blob.write_bytes(pickle.dumps(vec))
    np.save(tmp_path / "expected.npy", expected)
    code = textwrap.dedent(
        f"""
        import pickle, numpy as np
        from xlmt_sklearn import _model
        from xlmt_sklearn.backends import _loading
        vec = pickle.loads(open({str(blob)!r}, "rb").read())
        out = vec.transform({TEXTS!r})
        assert _loading.load_count() == {{"model": 0, "tokenizer": 0}}, _loading.load_count()
        assert np.array_equal(out, np.load({str(tmp_path / "expected.npy")!r}))
        print("OK")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert "OK" in res.stdout, res.stderr[-2000:]


def test_cache_param_survives_clone_and_pickle(tiny_model_dir, tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    vec = XLMTVectorizer(str(tiny_model_dir), cache=cache)
    assert clone(vec).cache is not None
    assert pickle.loads(pickle.dumps(vec)).cache.path == cache.path
    vec2 = XLMTVectorizer(str(tiny_model_dir), cache=str(tmp_path / "x.sqlite"))
    assert clone(vec2).get_params()["cache"] == str(tmp_path / "x.sqlite")


def test_garbage_cache_file_warns_and_stays_correct(tiny_model_dir, tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(os.urandom(4096))
    fresh = XLMTVectorizer(str(tiny_model_dir)).fit().transform(TEXTS[:8])
    vec = XLMTVectorizer(str(tiny_model_dir), cache=EmbeddingCache(path)).fit()
    with pytest.warns(CacheWarning, match="moved aside|corrupt|not a database"):
        out = vec.transform(TEXTS[:8])
    np.testing.assert_allclose(out, fresh, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        np.testing.assert_allclose(vec.transform(TEXTS[:8]), fresh, atol=1e-6)


def test_wrong_shape_in_cache_is_a_miss(tiny_model_dir, tmp_path):
    """A cached value of the wrong width (impossible by key, but defended) is recomputed."""
    path = tmp_path / "c.sqlite"
    vec = XLMTVectorizer(str(tiny_model_dir), cache=str(path), preprocess=None).fit()
    keys = vec._cache_keys(["hello"], vec._encoders())
    EmbeddingCache(path).put_many(keys, [np.ones(5, np.float32)], [0])
    fresh = XLMTVectorizer(str(tiny_model_dir), preprocess=None).fit().transform(["hello"])
    np.testing.assert_allclose(vec.transform(["hello"]), fresh, atol=1e-6)


@pytest.mark.parametrize("slow", [True, False], ids=["slow-encoder", "fast-encoder"])
def test_new_entries_are_laid_out_in_input_order(tiny_model_dir, tmp_path, monkeypatch, slow):
    """Batches are written in length order; a slow encoder's are regrouped in input order."""
    import sqlite3

    monkeypatch.setattr(
        flow_tuning.TUNING, "regroup_below_texts_per_s", float("inf") if slow else 0.0
    )
    texts = [("word " * (1 + (i * 7) % 13)) + str(i) for i in range(40)]  # mixed lengths
    path = tmp_path / "c.sqlite"
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(path), batch_size=4).fit()
    cold = vec.transform(texts)
    keys = cache_keys(vec, texts)
    EmbeddingCache(path).close()
    with sqlite3.connect(path) as conn:
        where = {k: (b, p) for k, b, p in conn.execute("SELECT key, block, pos FROM entries")}
        (n_blocks,) = conn.execute("SELECT COUNT(*) FROM blocks").fetchone()
    conn.close()
    if slow:
        assert n_blocks == 1 and sorted(keys, key=where.__getitem__) == keys  # 40 x 128 bytes
    else:
        assert n_blocks == 10  # one block per batch of 4, as written
    np.testing.assert_array_equal(vec.transform(texts), cold)
    np.testing.assert_allclose(
        cold, XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().transform(texts), atol=1e-6
    )


@pytest.mark.parametrize("quantize", [None, "int8"])
@pytest.mark.parametrize("cls", [XLMTVectorizer, XLMTTokenVectorizer])
def test_cache_keys_keep_their_format(tiny_model_dir, cls, quantize):
    """Keys are computed as before the encoder interface (caches written then still hit):
    the encoder's dtype and quantization scheme, the storage dtype and the options."""
    from xlmt_sklearn.backends._quantize import INT8_SCHEME
    from xlmt_sklearn.store._fingerprint import fingerprint
    from xlmt_sklearn.store._keys import make_keys

    est = cls(str(tiny_model_dir), device="cpu", quantize=quantize).fit()
    fp = fingerprint(
        est.model_identity_, "pooled" if cls is XLMTVectorizer else "tokens", dtype="float32",
        store_dtype="float32", quantize=INT8_SCHEME if quantize else None,
        **est._fingerprint_options(),
    )  # fmt: skip
    assert est._cache_keys(["a", "b"], est._encoders()) == make_keys(fp, ["a", "b"])


# ------------------------------------------- cache_layers: one encode for a whole search (#17)

LAYER_GRID = [
    {"xlmtvectorizer__pooling": ["mean", "cls", "max"], "xlmtvectorizer__layers": [-1],
     "xlmtvectorizer__normalize": [False, True], "logisticregression__C": [0.1, 10.0]},
    {"xlmtvectorizer__pooling": ["mean", "cls"], "xlmtvectorizer__layers": [[-3, -2, -1]],
     "xlmtvectorizer__layer_aggregation": ["mean", "concat"],
     "xlmtvectorizer__normalize": [False, True], "logisticregression__C": [0.1, 10.0]},
    {"xlmtvectorizer__pooling": ["max", "mean_max"], "xlmtvectorizer__layers": [[-3, -2, -1]],
     "xlmtvectorizer__layer_aggregation": ["concat"], "logisticregression__C": [0.1, 10.0]},
]  # fmt: skip


def _vectorizer_params(params):
    return {k.split("__", 1)[1]: v for k, v in params.items() if k.startswith("xlmtvectorizer__")}


def test_grid_over_pooling_and_layers_encodes_each_text_once(tiny_model_dir, tmp_path):
    """cache_layers="all": pooling x layers x aggregation x normalize x C, cv=3, from one
    encode per distinct text (the tiny model has 3 hidden states: -3..-1), and every
    candidate's features equal a fresh uncached run of that candidate."""
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(tmp_path / "c.sqlite"),
                         cache_layers="all")  # fmt: skip
    counter = ForwardCounter(vec)
    search = GridSearchCV(make_pipeline(vec, LogisticRegression(max_iter=300)), LAYER_GRID, cv=3)
    search.fit(TEXTS, LABELS)
    n_distinct = len({normalize_tweet(t) for t in TEXTS})
    candidates = [_vectorizer_params(p) for p in search.cv_results_["params"]]
    assert len(candidates) == 12 + 16 + 4 and counter.rows == n_distinct
    cached = [clone(vec).set_params(**c).fit().transform(TEXTS) for c in candidates]
    assert counter.rows == n_distinct  # every candidate again: still from the cache
    assert EmbeddingCache(tmp_path / "c.sqlite").stats.entries == n_distinct + 1  # + the warm-up
    for c, got in zip(candidates, cached, strict=True):
        fresh = XLMTVectorizer(str(tiny_model_dir), device="cpu", **c).fit().transform(TEXTS)
        np.testing.assert_allclose(got, fresh, atol=1e-5, err_msg=str(c))


@pytest.mark.parametrize("pooling", ["max", "mean_max"])
def test_max_of_a_mean_over_layers_is_encoded_as_without_cache_layers(
    tiny_model_dir, tmp_path, pooling
):
    """Not derivable from per-layer statistics: encoded and cached as a pooled vector."""
    params = dict(layers=[-2, -1], layer_aggregation="mean", pooling=pooling)
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(tmp_path / "c.sqlite"),
                         cache_layers="all", **params).fit()  # fmt: skip
    got = vec.transform(TEXTS)
    fresh = XLMTVectorizer(str(tiny_model_dir), device="cpu", **params).fit().transform(TEXTS)
    np.testing.assert_array_equal(got, fresh)
    np.testing.assert_array_equal(vec.transform(TEXTS), got)  # now a hit


def test_cache_layers_subset_and_validation(tiny_model_dir, tmp_path):
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(tmp_path / "c.sqlite"),
                         cache_layers=[-1, 0], pooling="cls").fit()  # fmt: skip
    assert vec.cache_layers_ == (0, 2)
    fresh = XLMTVectorizer(str(tiny_model_dir), device="cpu", pooling="cls").fit()
    np.testing.assert_allclose(vec.transform(TEXTS), fresh.transform(TEXTS), atol=1e-5)
    outside = clone(vec).set_params(layers=-2).fit()  # layer 1 is not cached: encoded as usual
    want = clone(fresh).set_params(layers=-2).fit().transform(TEXTS)
    np.testing.assert_array_equal(outside.transform(TEXTS), want)
    with pytest.raises(ValueError, match=r"'cache_layers' parameter of XLMTVectorizer indexes"):
        clone(vec).set_params(cache_layers=[5]).fit()
    with pytest.raises(ValueError, match=r"'cache_layers' parameter of XLMTVectorizer"):
        clone(vec).set_params(cache_layers="some").fit()


def test_windows_and_normalize_are_derived_from_merged_tokens(tiny_model_dir, tmp_path):
    params = dict(truncation="window", max_length=8, stride=2, normalize=True, pooling="mean_max")
    texts = ["a much longer text than eight tokens goes here " * 3, "short", *TEXTS[:5]]
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(tmp_path / "c.sqlite"),
                         cache_layers="all", **params).fit()  # fmt: skip
    fresh = XLMTVectorizer(str(tiny_model_dir), device="cpu", **params).fit().transform(texts)
    np.testing.assert_allclose(vec.transform(texts), fresh, atol=1e-5)
    np.testing.assert_allclose(vec.transform(texts), fresh, atol=1e-5)  # from the cache


def test_grid_search_with_two_workers_encodes_each_text_once(tiny_model_dir, tmp_path):
    """Issue 27: GridSearchCV(n_jobs=2) encoded 800 texts for 600 distinct ones; the two
    worker processes now claim keys before encoding them and wait for each other's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from tests._counting_cache import CountingCache, stored_keys

    rng = np.random.default_rng(0)
    words = ["good", "bad", "ok", "great", "awful", "fine", "sad", "happy", "meh", "wow"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) + f" #{i}"
             for i in range(240)]  # fmt: skip
    labels = [i % 2 for i in range(len(texts))]
    log = tmp_path / "stored.log"
    cache = CountingCache(tmp_path / "c.sqlite", log)
    pipe = make_pipeline(
        XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=cache, progress=False),
        LogisticRegression(max_iter=200),
    )
    grid = {"logisticregression__C": [0.1, 1.0, 10.0]}  # the featurizer's keys are shared
    GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(texts, labels)
    keys = stored_keys(str(log))
    assert len(set(keys)) == len(set(texts))
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} texts encoded twice"


def test_claims_of_a_dead_process_are_taken_over(tiny_model_dir, tmp_path):
    """A process killed while it held claims (here: exits without releasing them) does not
    make others wait: on this host its pid is gone, so its claims are taken over."""
    import time

    from tests._subprocesses import run_python

    path = tmp_path / "c.sqlite"
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(path), progress=False).fit()
    texts = ["one", "two words", "three words here"]
    keys = vec._cache_keys(texts, vec._encoders())
    code = (
        "import os\nfrom xlmt_sklearn import EmbeddingCache\n"
        f"c = EmbeddingCache({str(path)!r})\n"
        f"print(c.claim([bytes.fromhex(k) for k in {[k.hex() for k in keys]!r}]))\n"
        "os._exit(0)  # dies holding its claims\n"
    )
    proc = run_python(code, timeout=120)
    assert proc.stdout.strip() == "[True, True, True]", proc.stderr
    start = time.monotonic()
    got = vec.transform(texts)
    assert time.monotonic() - start < 60  # taken over at once, not after claim_wait_s
    expected = clone(vec).set_params(cache=None).fit().transform(texts)
    np.testing.assert_array_equal(got, expected)


def test_claims_of_a_live_process_are_respected(tmp_path):
    import sqlite3

    from xlmt_sklearn import EmbeddingCache
    from xlmt_sklearn.store._sqlite import key_id

    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    keys = [bytes([i]) * 32 for i in range(1, 4)]
    assert cache.claim(keys) == [True] * 3
    # Another live process on this host (pid 1 exists wherever this runs) holds key 2.
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE claims SET owner = 'elsewhere:1', pid = 1 WHERE id = ?", (key_id(keys[1]),)
    )
    conn.commit()
    conn.close()
    cache.release(keys)  # releases this process's claims only
    assert cache.claim(keys) == [True, False, True]
