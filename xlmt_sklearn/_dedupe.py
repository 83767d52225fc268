"""Step 3 -- dedupe: unique texts and the inverse index (scattered back by :mod:`._output`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["unique_texts"]


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
