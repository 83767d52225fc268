"""``flow._layer_stats``: per-layer statistics give every derivable pooled setting exactly.

The reference pools the token matrix directly (numpy, written here), for every
layer choice, aggregation, pooling and normalisation that :func:`derivable` accepts.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from xlmt_sklearn.flow._layer_stats import derivable, derive, layer_stats, stats_shape

N_LAYERS, HIDDEN = 3, 5
MODES = ["mean", "cls", "max", "mean_max"]


def reference(tokens: np.ndarray, positions, aggregation: str, pooling: str, normalize: bool):
    per_layer = tokens.reshape(len(tokens), N_LAYERS, HIDDEN)[:, list(positions)]
    agg = per_layer.reshape(len(tokens), -1) if aggregation == "concat" else per_layer.mean(1)
    parts = {"mean": agg.mean(0), "cls": agg[0], "max": agg.max(0)}
    row = np.concatenate([parts["mean"], parts["max"]]) if pooling == "mean_max" else parts[pooling]
    return row / max(np.linalg.norm(row), 1e-12) if normalize else row


SETTINGS = [
    (positions, agg, pooling, normalize)
    for positions in [(2,), (0, 2), (2, 0, 1)]
    for agg, pooling, normalize in itertools.product(("mean", "concat"), MODES, (False, True))
]


@pytest.mark.parametrize("positions,agg,pooling,normalize", SETTINGS)
def test_derived_equals_pooling_the_tokens(positions, agg, pooling, normalize):
    tokens = np.random.default_rng(7).standard_normal((6, N_LAYERS * HIDDEN)).astype(np.float32)
    stats = layer_stats(tokens, N_LAYERS)
    assert stats.shape == stats_shape(N_LAYERS, HIDDEN) and stats.dtype == np.float32
    if not derivable(positions, agg, pooling):
        assert agg == "mean" and len(positions) > 1 and pooling in ("max", "mean_max")
        return
    got = derive(stats, positions, agg, pooling, normalize)
    want = reference(tokens, positions, agg, pooling, normalize)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_max_of_a_layer_mean_is_refused_and_really_differs():
    tokens = np.random.default_rng(1).standard_normal((6, N_LAYERS * HIDDEN)).astype(np.float32)
    assert not derivable((0, 1), "mean", "max")
    assert derivable((1,), "mean", "max") and derivable((0, 1), "concat", "max")
    per_layer = tokens.reshape(6, N_LAYERS, HIDDEN)
    max_of_mean = per_layer[:, :2].mean(1).max(0)
    mean_of_max = per_layer[:, :2].max(0).mean(0)
    assert not np.allclose(max_of_mean, mean_of_max)  # why it is refused


def test_one_token_text():
    tokens = np.arange(N_LAYERS * HIDDEN, dtype=np.float32)[None]
    stats = layer_stats(tokens, N_LAYERS)
    np.testing.assert_array_equal(stats[0], stats[1])
    np.testing.assert_array_equal(stats[0], stats[2])
