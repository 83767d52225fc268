"""LayerSelector: layer choices cut out of token features that hold several layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from xlmt_sklearn import LayerSelector, TokenPooler, XLMTTokenVectorizer, XLMTVectorizer

TEXTS = ["hello world", "hola mundo qué tal", "@someone http://x.co 😀", ""]
SOURCE = [0, -2, -1]


@pytest.fixture(scope="module")
def tokens(tiny_model_dir):
    """Subword features with special tokens, three layers side by side (3 x 32 wide)."""
    vec = XLMTTokenVectorizer(
        str(tiny_model_dir), device="cpu", layers=SOURCE, layer_aggregation="concat",
        special_tokens=True,
    )  # fmt: skip
    return vec.fit().transform(TEXTS)


@pytest.mark.parametrize(
    ("layers", "aggregation"),
    [(-1, "mean"), (0, "mean"), ([-2, -1], "mean"), ([-2, -1], "concat"), ([0, -1], "concat")],
)
@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "mean_max"])
def test_selecting_layers_then_pooling_equals_the_vectorizer(
    tiny_model_dir, tokens, layers, aggregation, pooling
):
    """The documented pipeline gives XLMTVectorizer's vectors for every layers x pooling."""
    pipe = make_pipeline(
        LayerSelector(layers=layers, layer_aggregation=aggregation, source_layers=SOURCE),
        TokenPooler(pooling=pooling),
    )
    got = pipe.fit_transform(tokens)
    want = XLMTVectorizer(
        str(tiny_model_dir), device="cpu", layers=layers, layer_aggregation=aggregation,
        pooling=pooling,
    ).fit().transform(TEXTS)  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_output_widths_names_and_containers(tokens):
    sel = LayerSelector(layers=[-2, -1], layer_aggregation="concat", source_layers=SOURCE)
    out = sel.fit_transform(tokens)
    assert sel.n_features_in_ == 96 and sel.n_features_out_ == 64 and sel.hidden_size_ == 32
    assert out.dtype == object and all(a.shape[1] == 64 and a.dtype == np.float32 for a in out)
    assert list(sel.get_feature_names_out()[:2]) == ["layerselector0", "layerselector1"]
    series = sel.transform(pd.Series(list(tokens), index=[5, 6, 7, 8]))
    assert isinstance(series, pd.Series) and list(series.index) == [5, 6, 7, 8]
    padded = np.zeros((2, 3, 96), np.float32)
    assert sel.transform(padded)[0].shape == (3, 64)
    assert clone(sel).get_params() == sel.get_params()


def test_token_pipeline_with_layer_choice_keeps_the_index(tiny_model_dir):
    pipe = make_pipeline(
        XLMTTokenVectorizer(str(tiny_model_dir), device="cpu", layers=SOURCE,
                            layer_aggregation="concat", special_tokens=True),
        LayerSelector(layers=-1, source_layers=SOURCE),
        TokenPooler(),
    ).set_output(transform="pandas")  # fmt: skip
    s = pd.Series(TEXTS, index=list("abcd"))
    frame = pipe.fit(s).transform(s)
    assert list(frame.index) == list("abcd") and frame.shape == (4, 32)
    assert list(pipe.get_feature_names_out()[:1]) == ["tokenpooler0"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"layers": -3, "source_layers": SOURCE}, r"asks for layers \[-3\].*source_layers"),
        ({"layers": [], "source_layers": SOURCE}, r"'layers' parameter .* non-empty"),
        ({"layers": -1, "source_layers": [-1, -1, 0]}, r"repeats a layer"),
        ({"layers": -1, "source_layers": [0, -3, -2, -1, 1]}, r"96 wide, which is not 5 layers"),
    ],
)
def test_bad_layer_choices_are_clear_errors(tokens, params, match):
    with pytest.raises(ValueError, match=match):
        LayerSelector(**params).fit(tokens)


def test_width_mismatch_at_transform(tokens):
    sel = LayerSelector(source_layers=SOURCE).fit(tokens)
    with pytest.raises(ValueError, match=r"fitted on 96-wide tokens; row 0 has width 32"):
        sel.transform([np.zeros((2, 32), np.float32)])
