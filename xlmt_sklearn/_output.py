"""Step 10 -- output: where each distinct text's result goes, and how wide it is.

:class:`Scatter` maps the distinct texts of a call back to the input rows
they came from (duplicates included, missing rows left out), so that an
estimator writes each result straight into its output as the encode stream
yields it: no second output-sized array. The output widths are defined here
once: :func:`token_width` for a token vector, :func:`pooled_width` for a
pooled one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Scatter", "pooled_width", "token_width"]


def token_width(hidden: int, n_layers: int, layer_aggregation: str) -> int:
    """Width of one token vector: ``hidden``, times the layers when they are concatenated."""
    return hidden * (n_layers if layer_aggregation == "concat" and n_layers > 1 else 1)


def pooled_width(hidden: int, n_layers: int, layer_aggregation: str, pooling: str) -> int:
    """Width of one pooled row: the token width, doubled by ``mean_max``.

    Examples
    --------
    >>> pooled_width(768, 4, "concat", "mean_max")
    6144
    """
    return token_width(hidden, n_layers, layer_aggregation) * (2 if pooling == "mean_max" else 1)


class Scatter:
    """The input rows of each distinct text.

    Parameters
    ----------
    inverse : ndarray of int
        For each row in ``rows``, the index of its distinct text
        (:func:`~xlmt_sklearn._dedupe.unique_texts`).
    rows : ndarray of int
        The input rows that hold a text (missing rows under
        ``missing="zeros"`` are left out), in input order.

    Examples
    --------
    >>> s = Scatter(np.array([0, 1, 0]), np.array([0, 2, 3]))
    >>> s.rows_of(0).tolist(), s.positions(np.array([1])).tolist()
    ([0, 3], [2])
    """

    def __init__(self, inverse: np.ndarray, rows: np.ndarray):
        self.inverse = np.asarray(inverse, dtype=np.intp)
        self.rows = np.asarray(rows, dtype=np.intp)
        self._order = np.argsort(self.inverse, kind="stable")
        n_unique = int(self.inverse.max()) + 1 if len(self.inverse) else 0
        self._counts = np.bincount(self.inverse, minlength=n_unique)
        self._starts = np.cumsum(self._counts) - self._counts

    def rows_of(self, unique: int) -> np.ndarray:
        """The input rows holding distinct text ``unique``, ascending."""
        start = self._starts[unique]
        return self.rows[self._order[start : start + self._counts[unique]]]

    def positions(self, unique: np.ndarray) -> np.ndarray:
        """The input rows holding any of the distinct texts ``unique`` (for messages)."""
        return np.sort(self.rows[np.isin(self.inverse, unique)])

    def into(self, out: np.ndarray, unique: Sequence[int], arrays: Sequence[np.ndarray]) -> None:
        """Write each array into the rows of its distinct text (row by row: no temporaries)."""
        for u, a in zip(unique, arrays, strict=True):
            out[self.rows_of(int(u))] = a

    @staticmethod
    def assign(values: list, unique: np.ndarray, arrays: Sequence[object]) -> None:
        """``values[u] = array`` for each distinct text (results kept per distinct text)."""
        for u, a in zip(unique.tolist(), arrays, strict=True):
            values[u] = a

    def gather(self, values: Sequence[object], n_rows: int, fill: object) -> list[object]:
        """A list of ``n_rows`` items: each row's distinct value, ``fill`` elsewhere."""
        out = [fill] * n_rows
        for j, r in enumerate(self.rows.tolist()):
            out[r] = values[self.inverse[j]]
        return out
