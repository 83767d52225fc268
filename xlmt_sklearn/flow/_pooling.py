"""Step 8 -- pooling: layer selection/aggregation and masked pooling.

Pure functions on tensors (no model, no I/O), written to match
sentence-transformers' ``models/Pooling.py`` semantics:

* ``mean``: sum of the token vectors under the attention mask divided by the
  number of real tokens (clamped at 1e-9), special tokens included;
* ``cls``: the first token's vector;
* ``max``: per-dimension maximum over the real tokens (padding never wins);
* ``mean_max``: ``[mean, max]`` concatenated.

Layers are aggregated *per token* first (mean or concatenation of the chosen
``hidden_states``), then pooled, and the L2 normalisation, when asked, is
applied last to the whole output row.

Twins, side by side: :func:`aggregate_layers`, :func:`pool` and :func:`l2_normalize`
work on padded torch batches inside the torch encoder; :func:`aggregate_stacked` and
:func:`pool_padded` on the padded numpy batches of the CPU runtimes, so that a
runtime needs no torch at inference; :func:`pool_matrix` and :func:`l2_normalize_rows`
on one text's numpy token matrix (no padding) for :class:`TokenPooler`, which also
offers ``first_last``. torch is imported by the torch twins only, so the numpy
ones cost no torch import.

Every mode is defined once, in :data:`POOLING_PARTS`, as the per-token statistics it
concatenates; the output widths (:func:`token_width`, :func:`pooled_width`) follow
from it, and so do :func:`pool_matrix`, the layer statistics' derivation
(:func:`xlmt_sklearn.flow._layer_stats.derive`) and :class:`TokenPooler`'s width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "POOLING_PARTS", "aggregate_layers", "aggregate_stacked", "l2_normalize",
    "l2_normalize_rows", "pool", "pool_matrix", "pool_merged", "pool_padded", "pooled_width",
    "token_width",
]  # fmt: skip

#: Each pooling mode as the statistics over a text's tokens it concatenates, in order.
#: The estimators take the first four; :class:`TokenPooler` also ``first_last``.
POOLING_PARTS: dict[str, tuple[str, ...]] = {
    "mean": ("mean",),
    "cls": ("first",),
    "max": ("max",),
    "mean_max": ("mean", "max"),
    "first_last": ("first", "last"),
}


def token_width(hidden: int, n_layers: int, layer_aggregation: str) -> int:
    """Width of one token vector: ``hidden``, times the layers when they are concatenated."""
    return hidden * (n_layers if layer_aggregation == "concat" and n_layers > 1 else 1)


def pooled_width(hidden: int, n_layers: int, layer_aggregation: str, pooling: str) -> int:
    """Width of one pooled row: the token width times the statistics the mode concatenates.

    Examples
    --------
    >>> pooled_width(768, 4, "concat", "mean_max")
    6144
    """
    return token_width(hidden, n_layers, layer_aggregation) * len(POOLING_PARTS[pooling])


def aggregate_layers(
    hidden_states: Sequence[torch.Tensor], layers: Sequence[int], how: str
) -> torch.Tensor:
    """Pick ``hidden_states[i]`` for each ``i`` in ``layers`` and combine them.

    Parameters
    ----------
    hidden_states : sequence of (batch, seq, hidden) tensors
        As returned by a transformers model with ``output_hidden_states=True``
        (index 0 = embeddings, -1 = last layer).
    layers : sequence of int
        Indices into ``hidden_states``.
    how : {"mean", "concat"}
        Average the layers (width ``hidden``) or concatenate them along the
        feature axis (width ``hidden * len(layers)``).
    """
    import torch

    chosen = [hidden_states[i].float() for i in layers]
    if len(chosen) == 1:
        return chosen[0]
    if how == "mean":
        return torch.stack(chosen, dim=0).mean(dim=0)
    if how == "concat":
        return torch.cat(chosen, dim=-1)
    raise ValueError(f"Unknown layer aggregation {how!r}; expected 'mean' or 'concat'.")


def pool(tokens: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool (batch, seq, dim) token vectors into (batch, dim') rows.

    Parameters
    ----------
    tokens : (batch, seq, dim) float tensor
    mask : (batch, seq) tensor of 0/1
        1 for real tokens (special tokens included), 0 for padding.
    mode : {"mean", "cls", "max", "mean_max"}
    """
    import torch

    if mode == "cls":
        return tokens[:, 0]
    m = mask.unsqueeze(-1).to(tokens.dtype)
    if mode in ("mean", "mean_max"):
        mean = (tokens * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        if mode == "mean":
            return mean
    if mode in ("max", "mean_max"):
        # Padding is pushed to -inf-like values so it never wins the max; an
        # all-padding row (impossible here: every text has special tokens)
        # would give -1e9 as sentence-transformers does.
        mx = tokens.masked_fill(m == 0, -1e9).amax(dim=1)
        return mx if mode == "max" else torch.cat([mean, mx], dim=-1)
    raise ValueError(f"Unknown pooling {mode!r}; expected one of mean, cls, max, mean_max.")


def aggregate_stacked(stacked: np.ndarray, how: str) -> np.ndarray:
    """The numpy twin of :func:`aggregate_layers` for a runtime's output: ``stacked``
    is (n_layers, batch, seq, hidden), the chosen layers in order.

    Examples
    --------
    >>> aggregate_stacked(np.ones((2, 1, 3, 4), np.float32), "concat").shape
    (1, 3, 8)
    """
    if len(stacked) == 1:
        return stacked[0]
    if how == "mean":
        return stacked.mean(axis=0, dtype=np.float32)
    if how == "concat":
        return np.concatenate(list(stacked), axis=-1)
    raise ValueError(f"Unknown layer aggregation {how!r}; expected 'mean' or 'concat'.")


def pool_padded(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """The numpy twin of :func:`pool`: (batch, seq, dim) float32 and a (batch, seq) 0/1
    mask to (batch, dim') rows.

    Examples
    --------
    >>> t = np.array([[[1.0, 2.0], [3.0, 0.0], [9.0, 9.0]]], np.float32)
    >>> pool_padded(t, np.array([[1, 1, 0]]), "mean_max").tolist()
    [[2.0, 1.0, 3.0, 2.0]]
    """
    if mode == "cls":
        return tokens[:, 0]
    m = mask[..., None].astype(tokens.dtype)
    if mode in ("mean", "mean_max"):
        mean = (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        if mode == "mean":
            return mean
    if mode in ("max", "mean_max"):
        mx = np.where(m == 0, np.float32(-1e9), tokens).max(axis=1)
        return mx if mode == "max" else np.concatenate([mean, mx], axis=-1)
    raise ValueError(f"Unknown pooling {mode!r}; expected one of mean, cls, max, mean_max.")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Divide each row by its L2 norm (a zero row stays zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


_STATISTICS = {
    "mean": lambda m: m.mean(axis=0),
    "max": lambda m: m.max(axis=0),
    "first": lambda m: m[0],
    "last": lambda m: m[-1],
}


def pool_matrix(mat: np.ndarray, mode: str) -> np.ndarray:
    """Pool one text's (n_tokens, dim) token matrix (no padding): the numpy twin of :func:`pool`.

    ``mode`` is one of :data:`POOLING_PARTS` (``first_last``: the first and the last
    token concatenated). The caller handles a matrix without tokens.

    Examples
    --------
    >>> pool_matrix(np.array([[1.0, 2.0], [3.0, 0.0]]), "mean_max").tolist()
    [2.0, 1.0, 3.0, 2.0]
    """
    parts = POOLING_PARTS.get(mode)
    if parts is None:
        raise ValueError(f"Unknown pooling {mode!r}; expected one of {', '.join(POOLING_PARTS)}.")
    if len(parts) == 1:
        return _STATISTICS[parts[0]](mat)
    return np.concatenate([_STATISTICS[p](mat) for p in parts])


def pool_merged(tokens: np.ndarray, mode: str | None, normalize: bool) -> np.ndarray:
    """Pool one text whose windows were merged, as the torch encoder pools a whole text
    (its own operations, so that a windowed text's vector is the same on every backend)."""
    if mode is None:
        return tokens
    import torch

    t = torch.from_numpy(tokens)[None]
    pooled = pool(t, torch.ones(t.shape[:2]), mode)
    if normalize:
        pooled = l2_normalize(pooled)
    return pooled[0].numpy()


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """Divide each row by its L2 norm (a zero row stays zero): the numpy twin of
    :func:`l2_normalize`."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
