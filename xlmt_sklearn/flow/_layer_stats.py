"""Per-layer statistics: one cache entry from which many pooled settings are derived exactly.

``XLMTVectorizer(cache_layers=...)`` stores, for each distinct text, a
``(3, n_layers, hidden)`` float32 array: for every cached layer the mean over
the text's tokens, the max over them, and the first token (special tokens
included, windows merged, exactly the tokens the vectorizer pools). The pooled
vector of any ``layers`` / ``layer_aggregation`` / ``pooling`` / ``normalize``
setting drawing on those layers follows from it, because

* a mean over tokens of a mean over layers is the mean over layers of the
  per-layer means (both are linear), and the first token of a mean over
  layers is the mean of the first tokens;
* concatenating layers commutes with every pooling (mean, max, first token);
* the L2 normalisation is applied to the pooled row last.

The one combination that does not follow is ``pooling="max"`` (or
``"mean_max"``) of a *mean* over several layers: the max of a mean is not the
mean of maxes. :func:`derivable` says so, and the vectorizer then encodes as
without ``cache_layers``. Derived vectors equal a fresh encode up to float32
rounding (the sums run in another order; ~1e-7 relative, tested < 1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._pooling import POOLING_PARTS, l2_normalize_rows

__all__ = ["derivable", "derive", "layer_stats", "stats_shape"]

_MEAN, _MAX, _FIRST = 0, 1, 2


def stats_shape(n_layers: int, hidden: int) -> tuple[int, int, int]:
    """Shape of one text's statistics: (mean, max, first token) x layers x hidden."""
    return (3, n_layers, hidden)


def layer_stats(tokens: np.ndarray, n_layers: int) -> np.ndarray:
    """Statistics of one text from its token matrix with ``n_layers`` layers side by side.

    Parameters
    ----------
    tokens : ndarray of shape (n_tokens, n_layers * hidden)
        The layers concatenated per token, in cache order (as
        ``layer_aggregation="concat"`` gives them).
    n_layers : int

    Returns
    -------
    ndarray of shape (3, n_layers, hidden), float32

    Examples
    --------
    >>> layer_stats(np.array([[1.0, 2.0], [3.0, 0.0]]), 2)[:, :, 0].tolist()
    [[2.0, 1.0], [3.0, 2.0], [1.0, 2.0]]
    """
    per_layer = tokens.reshape(len(tokens), n_layers, -1)
    return np.stack([per_layer.mean(axis=0), per_layer.max(axis=0), per_layer[0]]).astype(
        np.float32, copy=False
    )


def derivable(layers: Sequence[int], layer_aggregation: str, pooling: str) -> bool:
    """Whether a pooled setting follows exactly from per-layer statistics.

    Everything does except a max (``"max"``, ``"mean_max"``) over a mean of
    several layers.
    """
    averaged = len(layers) > 1 and layer_aggregation == "mean"
    return not (averaged and pooling in ("max", "mean_max"))


def derive(
    stats: np.ndarray,
    positions: Sequence[int],
    layer_aggregation: str,
    pooling: str,
    normalize: bool,
) -> np.ndarray:
    """The pooled vector of one text from its statistics.

    Parameters
    ----------
    stats : ndarray of shape (3, n_cached_layers, hidden)
    positions : sequence of int
        Where the requested layers are among the cached ones, in request order.
    layer_aggregation : {"mean", "concat"}
    pooling : {"mean", "cls", "max", "mean_max"}
    normalize : bool

    Returns
    -------
    ndarray of shape (width,), float32
    """
    chosen = stats[:, list(positions)]  # (3, n_requested, hidden)
    if len(positions) == 1 or layer_aggregation == "concat":
        combined = chosen.reshape(3, -1)
    else:
        combined = chosen.mean(axis=1, dtype=np.float32)  # only mean and first token are used
    which = {"mean": _MEAN, "max": _MAX, "first": _FIRST}
    parts = [combined[which[p]] for p in POOLING_PARTS[pooling]]
    row = np.concatenate(parts).astype(np.float32, copy=False)
    return l2_normalize_rows(row[None])[0] if normalize else row
