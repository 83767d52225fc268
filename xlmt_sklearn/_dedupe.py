"""Step 3 -- dedupe: unique texts and the inverse index that scatters them back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["scatter", "unique_texts"]


def unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Return the distinct texts (first-seen order) and the inverse index.

    ``[uniq[i] for i in inverse] == list(texts)``.

    Examples
    --------
    >>> uniq, inv = unique_texts(["b", "a", "b"])
    >>> uniq, inv.tolist()
    (['b', 'a'], [0, 1, 0])
    """
    seen: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.intp)
    for i, t in enumerate(texts):
        j = seen.get(t)
        if j is None:
            j = seen[t] = len(seen)
        inverse[i] = j
    return list(seen), inverse


def scatter(vectors: np.ndarray, inverse: np.ndarray, zero_rows: Sequence[int] = ()) -> np.ndarray:
    """Expand per-unique rows back to input order; ``zero_rows`` become zeros."""
    out = vectors[inverse] if len(inverse) else np.zeros((0, vectors.shape[1]), vectors.dtype)
    if len(zero_rows):
        out[np.asarray(zero_rows, dtype=np.intp)] = 0.0
    return out
