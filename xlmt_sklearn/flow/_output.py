"""Step 10 -- output: where each distinct text's result goes, and its container.

:class:`Scatter` maps the distinct texts of a call back to the input rows
they came from (duplicates included, missing rows left out), so that an
estimator writes each result straight into its output as the encode stream
yields it: no second output-sized array. (The output widths are defined in
:mod:`._pooling`, next to the pooling modes they follow from.) Token features per
text are a :class:`TokenFeatures`, assembled into the ragged, padded or
long-frame output by :func:`token_output`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._tokens import pad_ragged

__all__ = ["Scatter", "TokenFeatures", "token_output"]


class Scatter:
    """The input rows of each distinct text.

    Parameters
    ----------
    inverse : ndarray of int
        For each row in ``rows``, the index of its distinct text
        (:func:`~xlmt_sklearn.flow._dedupe.unique_texts`).
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


@dataclass(frozen=True)
class TokenFeatures:
    """The token features of one text (what ``XLMTTokenVectorizer`` outputs per row).

    Attributes
    ----------
    vectors : ndarray of shape (n_units, dim), float32
        One vector per subword or word.
    tokens : list of str
        The subword pieces, or the words.
    begin, end : ndarray of int
        Character span of each unit in the input text (-1 for special tokens).
    n_subwords : ndarray of int or None
        Word granularity: the subwords each word pooled.
    """

    vectors: np.ndarray
    tokens: list[str]
    begin: np.ndarray
    end: np.ndarray
    n_subwords: np.ndarray | None = None

    @classmethod
    def empty(cls, dim: int) -> TokenFeatures:
        """No units (an empty text, a missing row under ``missing="zeros"``)."""
        e = np.zeros(0, dtype=np.int64)
        return cls(np.zeros((0, dim), np.float32), [], e, e, e)


def token_output(
    feats: Sequence[TokenFeatures],
    index: Any,
    output: str,
    dim: int,
    words: bool = False,
    series: bool = False,
) -> Any:
    """Assemble per-row features as ``output``: "ragged", "padded" or "frame".

    ``"ragged"``: an object array of (n_units, dim) matrices; ``"padded"``: a
    :class:`PaddedTokens`; ``"frame"``: a pandas DataFrame with one row per
    unit (``position``, ``token``, ``begin``, ``end``, ``n_subwords`` when
    ``words``, ``embedding``), indexed by ``index`` (or the row number).
    ``series`` makes ragged output a pandas Series indexed by ``index``.
    """
    if output == "ragged":
        out = np.empty(len(feats), dtype=object)
        for i, f in enumerate(feats):
            out[i] = f.vectors
        if series:
            import pandas as pd

            return pd.Series(out, index=index, dtype=object)
        return out
    if output == "padded":
        return pad_ragged([f.vectors for f in feats], dim)
    import pandas as pd

    idx_values = list(index) if index is not None else list(range(len(feats)))
    lengths = [len(f.vectors) for f in feats]
    rep = np.repeat(np.arange(len(feats)), lengths)
    embedding = np.empty(int(sum(lengths)), dtype=object)
    k = 0
    for f in feats:
        for v in f.vectors:
            embedding[k] = v
            k += 1
    frame = pd.DataFrame(
        {
            "position": np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
            if lengths
            else np.zeros(0, np.int64),
            "token": [t for f in feats for t in f.tokens],
            "begin": np.concatenate([f.begin for f in feats]) if feats else [],
            "end": np.concatenate([f.end for f in feats]) if feats else [],
        },
        index=pd.Index([idx_values[r] for r in rep], name=getattr(index, "name", None)),
    )
    if words:
        frame["n_subwords"] = np.concatenate([f.n_subwords for f in feats]) if feats else []
    frame["embedding"] = embedding
    return frame
