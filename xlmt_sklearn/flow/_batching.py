"""Step 6 -- batching: plan batches from token lengths and undo the order.

``plan_batches(lengths, batch_size, max_tokens) -> BatchPlan``. Texts are
sorted by token count (longest first, so a GPU out-of-memory shows up on the
first batch, not the last) and cut into batches of at most ``batch_size`` texts
and at most ``max_tokens`` padded tokens. Sorting makes neighbours similar in
length, so padding -- pure wasted compute -- stays small.

``min_padding=True`` places the cuts where they waste the fewest padded tokens
instead of every ``batch_size`` texts (:func:`_min_padding_cuts`): for encoders
that compute every batch padded and whose time grows with padded tokens, not
with the number of batches (the CPU runtimes: docs/backends.md, "Batching").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BATCH_OVERHEAD_TOKENS", "FAST_BATCH_OVERHEAD_TOKENS", "MAX_AUTO_TOKENS", "BatchPlan",
    "plan_batches", "token_budget",
]  # fmt: skip

#: Cap of the automatic (``max_tokens="auto"``) budget. A batch this large already keeps
#: a data-centre GPU busy; larger ones only delay the first cache write and the first
#: out-of-memory signal.
MAX_AUTO_TOKENS = 1 << 18

#: What one more batch costs a padded CPU runtime, in tokens' worth of compute: the
#: ``min_padding`` plan's price of a cut (measured for OpenVINO float32: docs/architecture.md,
#: "Measurements behind constants").
BATCH_OVERHEAD_TOKENS = 16
#: The same price where a token is cheap: OpenVINO bf16 and int8 on AMX CPUs
#: (``benchmarks/bench_amx.py``; docs/backends.md, "Batching").
FAST_BATCH_OVERHEAD_TOKENS = 72


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
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int | None = None,
    min_padding: bool = False,
    cut_tokens: int = BATCH_OVERHEAD_TOKENS,
    sort: bool = True,
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
    min_padding : bool, default=False
        Cut where the fewest padded tokens are wasted (each batch still within
        ``batch_size`` and ``max_tokens``), not every ``batch_size`` texts.
    cut_tokens : int, default=BATCH_OVERHEAD_TOKENS
        With ``min_padding``: what one more batch costs, in padded tokens.
    sort : bool, default=True
        False cuts in input order (the baseline the length sort is measured
        against; ``FlowTuning.sort_batches``).

    Examples
    --------
    >>> plan = plan_batches([3, 10, 4, 9], batch_size=2)
    >>> [b.tolist() for b in plan.batches]
    [[1, 3], [2, 0]]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(len(lengths))
    if min_padding and sort:
        cuts = _min_padding_cuts(lengths[order], batch_size, max_tokens, cut_tokens)
        return BatchPlan([order[a:b] for a, b in itertools.pairwise(cuts)], lengths)
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


def _min_padding_cuts(
    desc: np.ndarray, batch_size: int, max_tokens: int | None, cut_tokens: int
) -> list[int]:
    """Batch boundaries over lengths sorted descending that minimise the padded tokens.

    Dynamic programming over prefixes: ``cost[j]`` is the least padded tokens
    (plus ``cut_tokens`` per batch) for the first ``j`` texts; a
    batch ``[i, j)`` pads to ``desc[i]``. O(n * batch_size).

    Examples
    --------
    >>> _min_padding_cuts(np.array([40, 39, 38, 10, 9, 8]), 4, None, 16)
    [0, 3, 6]
    """
    n = len(desc)
    cost = np.full(n + 1, np.inf)
    cost[0] = 0.0
    back = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        starts = np.arange(max(0, j - batch_size), j)
        padded = (j - starts) * desc[starts]
        if max_tokens is not None:  # a single text over the cap still gets its own batch
            padded = np.where((padded <= max_tokens) | (starts == j - 1), padded, np.inf)
        total = cost[starts] + padded + cut_tokens
        k = int(np.argmin(total))
        cost[j], back[j] = total[k], starts[k]
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(back[cuts[-1]]))
    return cuts[::-1]


def token_budget(
    free_bytes: int,
    itemsize: int,
    hidden_size: int,
    intermediate_size: int,
    num_heads: int,
    n_states: int,
    longest: int,
    fraction: float = 0.5,
) -> int:
    """Padded tokens per batch whose activations fit in part of a card's free memory.

    An estimate of what one forward pass of an encoder keeps alive per token:
    the hidden states returned (``n_states`` of width ``hidden_size``), one
    layer's working set (query/key/value, context, attention output and
    residual: about 7 x ``hidden_size``; the feed-forward's
    ``intermediate_size``) and one row of attention scores per head
    (``num_heads * longest``, the eager-attention worst case). Out-of-memory
    errors that slip through are still handled by halving the batch.

    Parameters
    ----------
    free_bytes : int
        Free device memory (``torch.cuda.mem_get_info``).
    itemsize : int
        Bytes per value of the compute dtype (2 for float16/bfloat16).
    hidden_size, intermediate_size, num_heads : int
        From the model's config.
    n_states : int
        Hidden states kept per token (1 for the last layer only; all layers
        plus the embeddings when ``layers`` asks for more).
    longest : int
        Longest input in tokens.
    fraction : float, default=0.5
        Share of ``free_bytes`` the activations may use (the rest absorbs the
        allocator's fragmentation and other users of the card).

    Returns
    -------
    int
        At least ``longest`` (one text always fits) and at most
        :data:`MAX_AUTO_TOKENS`.

    Examples
    --------
    >>> token_budget(8 << 30, 2, 768, 3072, 12, 1, 128)  # XLM-R base, fp16, 8 GiB free
    199728
    """
    per_token = itemsize * ((n_states + 7) * hidden_size + intermediate_size + num_heads * longest)
    fits = int(fraction * free_bytes) // max(per_token, 1)
    return max(int(longest), min(MAX_AUTO_TOKENS, fits))
