"""Step 8: pooling on hand-made tensors (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlmt_sklearn.flow._pooling import aggregate_layers, l2_normalize, pool

TOK = torch.tensor(
    [
        [[1.0, -1.0], [3.0, 5.0], [100.0, 100.0]],  # last token is padding
        [[2.0, 0.0], [4.0, -2.0], [0.0, 6.0]],
    ]
)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_mean_ignores_padding():
    out = pool(TOK, MASK, "mean")
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0], [2.0, 4.0 / 3.0]]))


def test_max_ignores_padding():
    out = pool(TOK, MASK, "max")
    torch.testing.assert_close(out, torch.tensor([[3.0, 5.0], [4.0, 6.0]]))


def test_max_with_all_negative_values():
    tok = -torch.ones(1, 3, 2) * 5
    tok[0, 2] = 0.0  # padding would win an unmasked max
    torch.testing.assert_close(pool(tok, torch.tensor([[1, 1, 0]]), "max"), -5 * torch.ones(1, 2))


def test_cls_and_mean_max():
    torch.testing.assert_close(pool(TOK, MASK, "cls"), TOK[:, 0])
    mm = pool(TOK, MASK, "mean_max")
    assert mm.shape == (2, 4)
    torch.testing.assert_close(mm[:, :2], pool(TOK, MASK, "mean"))
    torch.testing.assert_close(mm[:, 2:], pool(TOK, MASK, "max"))


def test_inputs_not_mutated():
    tok, mask = TOK.clone(), MASK.clone()
    for mode in ["mean", "max", "cls", "mean_max"]:
        pool(tok, mask, mode)
    assert torch.equal(tok, TOK) and torch.equal(mask, MASK)


def test_unknown_mode():
    with pytest.raises(ValueError, match="Unknown pooling 'avg'"):
        pool(TOK, MASK, "avg")


def test_aggregate_layers():
    hs = [torch.full((1, 2, 3), float(i)) for i in range(4)]
    torch.testing.assert_close(aggregate_layers(hs, [-1], "mean"), hs[3])
    torch.testing.assert_close(aggregate_layers(hs, [1, 3], "mean"), torch.full((1, 2, 3), 2.0))
    cat = aggregate_layers(hs, [0, -1], "concat")
    assert cat.shape == (1, 2, 6) and cat[0, 0, 0] == 0 and cat[0, 0, 5] == 3
    with pytest.raises(ValueError, match="Unknown layer aggregation"):
        aggregate_layers(hs, [0, 1], "sum")


def test_l2_normalize():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(l2_normalize(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "mean_max"])
@pytest.mark.parametrize("how", ["mean", "concat"])
def test_numpy_twins_of_the_batch_pooling_equal_torch(mode, how):
    """The runtimes pool on numpy (``pool_padded``, ``aggregate_stacked``): the same
    numbers as the torch encoder's ``pool``/``aggregate_layers`` (float32 < 1e-6)."""
    from xlmt_sklearn.flow._pooling import aggregate_stacked, pool_padded

    rng = np.random.default_rng(0)
    stacked = rng.standard_normal((3, 4, 7, 5)).astype(np.float32)
    mask = (np.arange(7)[None, :] < np.array([[7], [3], [1], [5]])).astype(np.int64)
    want_tokens = aggregate_layers(list(torch.from_numpy(stacked)), (0, 1, 2), how)
    tokens = aggregate_stacked(stacked, how)
    np.testing.assert_allclose(tokens, want_tokens.numpy(), atol=1e-6)
    want = pool(want_tokens, torch.from_numpy(mask), mode).numpy()
    got = pool_padded(tokens, mask, mode)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_every_mode_and_width_comes_from_one_table():
    """POOLING_PARTS defines the modes: the estimators' modes, TokenPooler's, the widths."""
    from xlmt_sklearn import TokenPooler
    from xlmt_sklearn._options import POOLING_MODES
    from xlmt_sklearn.flow._pooling import POOLING_PARTS, pool_matrix, pooled_width

    assert set(POOLING_MODES) < set(POOLING_PARTS)
    assert TokenPooler._parameter_constraints["pooling"][0].options == set(POOLING_PARTS)
    mat = np.arange(12, dtype=np.float32).reshape(3, 4)
    for mode, parts in POOLING_PARTS.items():
        assert pool_matrix(mat, mode).shape == (4 * len(parts),)
        pooler = TokenPooler(pooling=mode).fit([mat])
        assert pooler.n_features_out_ == 4 * len(parts) == pooled_width(4, 1, "mean", mode)
    assert pooled_width(4, 3, "concat", "mean_max") == 24
    assert pooled_width(4, 3, "mean", "mean_max") == 8
