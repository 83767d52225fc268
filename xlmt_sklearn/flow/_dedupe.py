"""Step 3 -- dedupe: unique texts and the inverse index (scattered back by :mod:`._output`).

Both estimators dedupe twice: the input values first (:func:`distinct_inputs`:
each distinct input is preprocessed once), then the model inputs those give
(:func:`unique_texts`: two inputs that preprocess alike, ``"@ana hi"`` and
``"@bob hi"``, are encoded once), keeping per distinct input what differs
(token features' words and offsets).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["distinct_inputs", "unique_texts"]


def unique_texts(texts: Sequence[Hashable]) -> tuple[list, np.ndarray]:
    """Return the distinct texts (first-seen order) and the inverse index.

    ``[uniq[i] for i in inverse] == list(texts)``.

    Examples
    --------
    >>> uniq, inv = unique_texts(["b", "a", "b"])
    >>> uniq, inv.tolist()
    (['b', 'a'], [0, 1, 0])
    """
    seen: dict[Hashable, int] = {}
    inverse = np.empty(len(texts), dtype=np.intp)
    for i, t in enumerate(texts):
        j = seen.get(t)
        if j is None:
            j = seen[t] = len(seen)
        inverse[i] = j
    return list(seen), inverse


def distinct_inputs(
    values: Sequence[Hashable], rows: np.ndarray
) -> tuple[list, np.ndarray, np.ndarray]:
    """The distinct ``values`` (first-seen order), the inverse index and the first input
    row of each (``values[j]`` is the value of input row ``rows[j]``).

    Examples
    --------
    >>> uniq, inv, first = distinct_inputs(["b", "a", "b"], np.array([0, 2, 5]))
    >>> uniq, inv.tolist(), first.tolist()
    (['b', 'a'], [0, 1, 0], [0, 2])
    """
    uniq, inverse = unique_texts(values)
    first = np.asarray(rows, dtype=np.intp)[np.unique(inverse, return_index=True)[1]]
    return uniq, inverse, first
