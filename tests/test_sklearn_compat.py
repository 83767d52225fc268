"""scikit-learn citizenship: params, clone, pickle, tags, pipelines, set_output.

``check_estimator`` runs only the clone check on estimators whose tags say
they take no 2-D array (all three of ours: two take texts, ``TokenPooler``
takes token features), so the checks that don't depend on input type are
called directly on all three, and input-specific versions of the others are
written here.
"""

from __future__ import annotations

import inspect
import pickle
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_estimator,
    check_get_feature_names_out_error,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_param_validation,
    check_parameters_default_constructible,
    check_set_params,
)

from xlmt_sklearn import (
    LayerSelector,
    TokenPooler,
    XLMTTokenVectorizer,
    XLMTVectorizer,
    reset_process_state,
)
from xlmt_sklearn.backends import _loading as loading_mod

ESTIMATORS = [XLMTVectorizer, XLMTTokenVectorizer, TokenPooler, LayerSelector]

TEXTS = ["good day", "bad day", "great stuff", "awful stuff", "nice", "terrible"] * 4
LABELS = [1, 0, 1, 0, 1, 0] * 4


@pytest.mark.parametrize(
    "check",
    [
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_get_params_invariance,
        check_set_params,
        check_param_validation,
        check_get_feature_names_out_error,
    ],
)
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_sklearn_generic_checks(check, cls):
    check(cls.__name__, cls())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_check_estimator_passes_with_the_declared_tags(cls):
    results = check_estimator(cls(), on_fail=None)
    assert results and all(r["status"] == "passed" for r in results), results


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_constraints_cover_init_params(cls):
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(cls._parameter_constraints) == params


def test_tags_declare_what_each_estimator_takes_and_returns():
    for cls in (XLMTVectorizer, XLMTTokenVectorizer):
        tags = cls().__sklearn_tags__()
        assert tags.input_tags.string and not tags.input_tags.two_d_array
        assert tags.transformer_tags.preserves_dtype == []  # texts in, float32 out
    tags = TokenPooler().__sklearn_tags__()  # ragged or 3-D token features, never 2-D
    assert not tags.input_tags.two_d_array and tags.input_tags.three_d_array
    assert not tags.input_tags.string and tags.transformer_tags.preserves_dtype == ["float32"]
    assert TokenPooler().fit_transform(np.ones((2, 3, 4), np.float64)).dtype == np.float32


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_docstring_documents_every_param_with_its_default(cls):
    doc = cls.__doc__
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        m = re.search(rf"^    {name} : .*default=(.+)$", doc, re.M)
        assert m, f"{name} is not documented with a default"
        assert m.group(1).strip().replace('"', "'") == repr(p.default), (name, m.group(1))


@pytest.mark.parametrize(
    "param,value,match",
    [
        ("pooling", "avg", "The 'pooling' parameter of XLMTVectorizer must be a str among"),
        ("batch_size", 0, "The 'batch_size' parameter of XLMTVectorizer must be an int"),
        ("truncation", "cut", "The 'truncation' parameter"),
        ("missing", "drop", "The 'missing' parameter"),
        ("dtype", "int4", "The 'dtype' parameter"),
        ("quantize", "int4", "The 'quantize' parameter"),
        ("preprocess", "lower", "The 'preprocess' parameter"),
        ("cache", 3, "The 'cache' parameter"),
    ],
)
def test_param_validation_messages(tiny_model_dir, param, value, match):
    vec = XLMTVectorizer(str(tiny_model_dir), **{param: value})
    with pytest.raises(ValueError, match=match):
        vec.fit()


@pytest.mark.fresh_models
def test_no_model_load_in_init_get_params_clone_or_fitted_check(tiny_model_dir):
    before = loading_mod.load_count()
    vec = XLMTVectorizer(str(tiny_model_dir))
    clone(vec).get_params()
    with pytest.raises(NotFittedError, match="XLMTVectorizer instance is not fitted"):
        vec.transform(["x"])
    vec.fit(["a"])  # reads the config only
    clone(vec)
    assert loading_mod.load_count() == before


def test_transform_leaves_dict_unchanged_and_fit_idempotent(vectorizer):
    vec = vectorizer.fit(TEXTS)
    state = pickle.dumps(vec.__dict__)
    out = vec.transform(TEXTS)
    assert pickle.dumps(vec.__dict__) == state
    vec.fit(TEXTS)
    np.testing.assert_array_equal(vec.transform(TEXTS), out)


def test_pickle_round_trip_without_weights(vectorizer):
    vec = vectorizer.fit()
    out = vec.transform(TEXTS[:4])
    blob = pickle.dumps(vec)
    assert len(blob) < 5_000, len(blob)  # parameters only: the tiny model alone is ~100 kB
    reset_process_state()  # as in a new process
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.transform(TEXTS[:4]), out)


def test_pickled_estimator_refuses_changed_local_model(tmp_path):
    from tests._models import build_tiny_model
    from xlmt_sklearn import ModelLoadError

    folder = build_tiny_model(tmp_path / "m", seed=3)
    vec = XLMTVectorizer(str(folder), device="cpu").fit()
    blob = pickle.dumps(vec)
    build_tiny_model(folder, seed=4)  # same path, other weights
    reset_process_state()
    with pytest.raises(ModelLoadError, match="changed since the estimator was fitted"):
        pickle.loads(blob).transform(["x"])


def test_feature_names(vectorizer):
    names = vectorizer.set_params(pooling="mean_max").fit().get_feature_names_out()
    assert names.dtype == object and len(names) == 64
    assert names[0] == "xlmtvectorizer0" and names[-1] == "xlmtvectorizer63"


def test_set_output_pandas_keeps_index(vectorizer):
    s = pd.Series(TEXTS[:5], index=[10, 3, 7, 99, 5], name="text")
    out = vectorizer.set_output(transform="pandas").fit().transform(s)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == [10, 3, 7, 99, 5]
    assert list(out.columns[:2]) == ["xlmtvectorizer0", "xlmtvectorizer1"]
    df = pd.DataFrame({"text": TEXTS[:3]}, index=["a", "b", "c"])
    assert list(vectorizer.transform(df).index) == ["a", "b", "c"]


def test_pipeline_with_classifier(vectorizer):
    pipe = make_pipeline(vectorizer, StandardScaler(), LogisticRegression(max_iter=500))
    pipe.fit(TEXTS, LABELS)
    assert pipe.predict(TEXTS).shape == (len(TEXTS),)


@pytest.mark.parametrize("columns", ["text", ["text"]])
def test_column_transformer(vectorizer, columns):
    df = pd.DataFrame({"text": TEXTS, "n": np.arange(len(TEXTS)), "other": ["x"] * len(TEXTS)})
    ct = ColumnTransformer([("emb", vectorizer, columns), ("num", "passthrough", ["n"])])
    out = ct.fit_transform(df)
    assert out.shape == (len(TEXTS), 33)
    np.testing.assert_allclose(out[:, :32], vectorizer.fit().transform(TEXTS), atol=1e-6)
    ct.set_output(transform="pandas")
    frame = ct.fit_transform(df.set_index(pd.Index(range(100, 100 + len(TEXTS)))))
    assert frame.index[0] == 100 and "emb__xlmtvectorizer0" in frame.columns


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search(vectorizer, n_jobs):
    pipe = make_pipeline(vectorizer, LogisticRegression(max_iter=200))
    grid = GridSearchCV(
        pipe, {"xlmtvectorizer__pooling": ["mean", "cls"], "logisticregression__C": [0.1, 1.0]},
        cv=2, n_jobs=n_jobs,
    )  # fmt: skip
    grid.fit(TEXTS, LABELS)
    assert set(grid.best_params_) == {"xlmtvectorizer__pooling", "logisticregression__C"}
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


@pytest.mark.fresh_models
def test_clones_share_one_loaded_model(vectorizer):
    a = clone(vectorizer).fit()
    b = clone(vectorizer).set_params(pooling="max").fit()
    a.transform(["x"])
    b.transform(["y"])
    assert loading_mod.load_count()["model"] - 0 >= 1
    assert len(loading_mod.loaded_models()) == 1


# ---------------------------------------------------------- set_params after fit (#18)


@pytest.mark.parametrize(
    ("cls", "param", "value"),
    [
        (XLMTVectorizer, "pooling", "mean_max"),
        (XLMTVectorizer, "layers", [0, -1]),
        (XLMTVectorizer, "model", "./elsewhere"),
        (XLMTTokenVectorizer, "layer_aggregation", "concat"),
        (XLMTTokenVectorizer, "model", "./elsewhere"),
    ],
)
def test_changing_a_fitted_parameter_asks_for_fit_again(tiny_model_dir, cls, param, value):
    est = cls(str(tiny_model_dir), device="cpu", layers=[-2, -1]).fit()
    est.set_params(**{param: value})
    with pytest.raises(ValueError, match=rf"'{param}' parameter\(s\) of {cls.__name__} "
                       r"changed after fit .*call fit again"):  # fmt: skip
        est.transform(TEXTS[:2])
    if param != "model":
        assert len(est.fit().transform(TEXTS[:2])) == 2  # refitted: fine


@pytest.mark.parametrize("param", ["layers", "cache_layers"])
def test_array_parameters_compare_by_value_after_fit(tiny_model_dir, param):
    """Array-like layers/cache_layers: transform works; a changed array asks for fit again."""
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", **{param: np.array([1, 2])}).fit()
    assert vec.transform(TEXTS[:2]).shape[0] == 2
    vec.set_params(**{param: np.array([1, 2])})  # equal values: still fitted
    assert vec.transform(TEXTS[:2]).shape[0] == 2
    vec.set_params(**{param: np.array([0, 2])})
    with pytest.raises(ValueError, match=rf"'{param}' parameter\(s\) .* changed after fit"):
        vec.transform(TEXTS[:2])


def test_parameters_fit_does_not_use_change_freely(tiny_model_dir, tmp_path):
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit()
    want = vec.transform(TEXTS[:3])
    vec.set_params(batch_size=1, cache=str(tmp_path / "c.sqlite"), progress=False)
    np.testing.assert_allclose(vec.transform(TEXTS[:3]), want, atol=1e-6)


# ------------------------------------------- token features -> TokenPooler in a Pipeline (#18)


def test_token_pipeline_has_feature_names_and_pandas_output(tiny_model_dir):
    pipe = make_pipeline(
        XLMTTokenVectorizer(str(tiny_model_dir), device="cpu", special_tokens=True), TokenPooler()
    )
    s = pd.Series(TEXTS[:4], index=[7, 3, 9, 1], name="text")
    plain = pipe.fit(s).transform(s)
    assert list(pipe.get_feature_names_out()[:2]) == ["tokenpooler0", "tokenpooler1"]
    names = pipe[0].get_feature_names_out()
    assert len(names) == 32 and names[0] == "xlmttokenvectorizer0"
    pipe.set_output(transform="pandas")
    frame = pipe.transform(s)
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == [7, 3, 9, 1]
    assert list(frame.columns[:2]) == ["tokenpooler0", "tokenpooler1"]
    np.testing.assert_array_equal(frame.to_numpy(), plain)
    tokens = pipe[0].transform(s)  # a Series of (n_tokens, dim) arrays, indexed like s
    assert isinstance(tokens, pd.Series) and list(tokens.index) == [7, 3, 9, 1]
    # Mean over all tokens (special tokens included) is XLMTVectorizer's mean pooling.
    pooled = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().transform(s)
    np.testing.assert_allclose(frame.to_numpy(), pooled, atol=1e-5)
