"""Step 10, _output.py on its own: where results go, how wide they are, their containers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlmt_sklearn.flow._output import Scatter, TokenFeatures, token_output
from xlmt_sklearn.flow._pooling import pooled_width, token_width


@pytest.mark.parametrize(
    ("n_layers", "how", "pooling", "token", "pooled"),
    [
        (1, "mean", "mean", 8, 8),
        (4, "mean", "mean_max", 8, 16),
        (4, "concat", "mean", 32, 32),
        (4, "concat", "mean_max", 32, 64),
        (1, "concat", "max", 8, 8),  # one layer: nothing to concatenate
    ],
)
def test_widths(n_layers, how, pooling, token, pooled):
    assert token_width(8, n_layers, how) == token
    assert pooled_width(8, n_layers, how, pooling) == pooled


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_scatter_writes_every_row_of_each_distinct_text(labels):
    """Rows with the same label share one distinct text: every row gets its text's
    result, rows left out (missing) stay untouched, whatever the order of the results."""
    distinct = sorted(set(labels))
    inverse = np.array([distinct.index(x) for x in labels])
    rows = np.arange(len(labels)) * 2  # every other row holds a text
    scatter = Scatter(inverse, rows)
    out = np.full((2 * len(labels), 1), -1.0)
    order = list(range(len(distinct)))[::-1]  # results arrive in any order
    scatter.into(out, order, [np.array([float(distinct[u])]) for u in order])
    np.testing.assert_array_equal(out[rows, 0], np.array(labels, dtype=float))
    assert (out[1::2] == -1).all()
    for u in range(len(distinct)):
        assert scatter.rows_of(u).tolist() == [
            int(r) for r, i in zip(rows, inverse, strict=True) if i == u
        ]
    values = [f"text {distinct[u]}" for u in range(len(distinct))]
    gathered = scatter.gather(values, 2 * len(labels), None)
    assert gathered[0::2] == [f"text {x}" for x in labels] and set(gathered[1::2]) == {None}


def _features():
    one = TokenFeatures(np.ones((2, 3), np.float32), ["▁a", "b"], np.array([0, 1]),
                        np.array([1, 2]), np.array([1, 1]))  # fmt: skip
    return [one, TokenFeatures.empty(3)]


def test_token_output_ragged_padded_and_frame():
    feats, index = _features(), pd.Index(["x", "y"], name="id")
    ragged = token_output(feats, index, "ragged", 3)
    assert [m.shape for m in ragged] == [(2, 3), (0, 3)]
    series = token_output(feats, index, "ragged", 3, series=True)
    assert list(series.index) == ["x", "y"]
    padded = token_output(feats, index, "padded", 3)
    assert padded.values.shape == (2, 2, 3) and padded.mask.tolist() == [[1, 1], [0, 0]]
    frame = token_output(feats, index, "frame", 3, words=True)
    assert list(frame.index) == ["x", "x"] and frame.index.name == "id"
    assert frame["token"].tolist() == ["▁a", "b"] and frame["position"].tolist() == [0, 1]
    assert frame["n_subwords"].tolist() == [1, 1]
    assert np.stack(frame["embedding"].to_list()).shape == (2, 3)
