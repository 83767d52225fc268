"""Step 6 -- batching: plan batches from token lengths and undo the order.

``plan_batches(lengths, batch_size, max_tokens) -> BatchPlan``. Texts are
sorted by token count (longest first, so a GPU out-of-memory shows up on the
first batch, not the last) and cut into batches of at most ``batch_size`` texts
and at most ``max_tokens`` padded tokens. Sorting makes neighbours similar in
length, so padding -- pure wasted compute -- stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BatchPlan", "plan_batches"]


@dataclass(frozen=True)
class BatchPlan:
    """Batches over positions of the original sequence.

    Attributes
    ----------
    batches : list of ndarray of int
        Original positions in each batch; batch ``k`` pads to the length of its
        first (longest) member.
    lengths : ndarray of int
        Token count of every original position.
    """

    batches: list[np.ndarray]
    lengths: np.ndarray

    @property
    def padded_tokens(self) -> int:
        """Tokens the model computes, padding included."""
        return int(sum(len(b) * int(self.lengths[b].max()) for b in self.batches if len(b)))

    @property
    def real_tokens(self) -> int:
        """Tokens that carry text."""
        return int(self.lengths.sum())

    @property
    def padding_fraction(self) -> float:
        """Share of computed tokens that are padding (0 = none)."""
        padded = self.padded_tokens
        return 0.0 if padded == 0 else 1.0 - self.real_tokens / padded


def plan_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> BatchPlan:
    """Sort by length (descending, stable) and cut batches.

    Parameters
    ----------
    lengths : sequence of int
        Token count per text.
    batch_size : int
        Most texts per batch.
    max_tokens : int or None, default=None
        Most padded tokens (``n_texts * longest``) per batch; a single text
        longer than this still gets a batch of its own. None = no token cap.

    Examples
    --------
    >>> plan = plan_batches([3, 10, 4, 9], batch_size=2)
    >>> [b.tolist() for b in plan.batches]
    [[1, 3], [2, 0]]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = batch_size
        if max_tokens is not None:
            size = max(1, min(size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return BatchPlan(batches=batches, lengths=lengths)
