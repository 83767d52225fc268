"""Step 1 -- inputs: coerce whatever the user passes into a list of texts.

``as_texts(X, missing=..., words=...) -> TextBatch``, the one input path of
every estimator. Accepted: list/tuple of str, a 1-D
numpy array, a pandas or polars Series (any index, any dtype holding strings), a
one-column pandas or polars DataFrame or (n, 1) array (what ``ColumnTransformer`` passes for
``["text"]``). A bare ``str`` is rejected because iterating it would embed one
character per row. With ``words=True`` (token features) rows may instead be
lists of words, pre-split as Spark NLP's ``token`` column holds them.

Lone surrogates (code points U+D800-U+DFFF, which a Python ``str`` can hold
but no encoder or tokenizer accepts; they come from ``json.loads`` of a tweet
cut inside an emoji, or from ``surrogateescape`` decoding) are replaced one for
one by U+FFFD REPLACEMENT CHARACTER here, before anything else sees the text:
every later step, the cache key included, works on the replaced text, and the
text keeps its length, so character offsets still index the input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import numpy as np

__all__ = ["TextBatch", "as_texts", "is_missing", "replace_surrogates", "rows_of"]

_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class TextBatch:
    """The texts of one call, in input order.

    Attributes
    ----------
    texts : list of str
        One text per input row; a missing value becomes ``""`` (its row is
        listed in ``missing_positions``).
    missing_positions : tuple of int
        Rows that held None/NaN/pd.NA (only non-empty when ``missing`` allows them).
    index : pandas.Index or None
        The input's index, when it had one (Series/DataFrame).
    name : str or None
        The input's column or Series name, when it had one.
    extra : dict
        ``"surrogates"``: the rows whose lone surrogates were replaced by
        U+FFFD (only present when there were any).
    words : bool
        True when every row is a list of words (pre-split input): ``texts``
        then holds lists of str (``[]`` for a missing row).
    """

    texts: list[Any]
    missing_positions: tuple[int, ...] = ()
    index: Any = None
    name: str | None = None
    extra: dict = field(default_factory=dict)
    words: bool = False

    def __len__(self) -> int:
        return len(self.texts)

    def encoded_rows(self, missing: str) -> np.ndarray:
        """The rows that are encoded: all of them, but missing ones under ``missing="zeros"``
        (they get a zero row, or no tokens)."""
        rows = np.arange(len(self.texts))
        if missing == "empty" or not self.missing_positions:
            return rows
        return np.setdiff1d(rows, self.missing_positions)


def is_missing(value: Any) -> bool:
    """True for None, float NaN (incl. numpy), ``pd.NA`` and ``pd.NaT``."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    # pd.NA / pd.NaT without importing pandas for plain-list callers.
    return type(value).__name__ in ("NAType", "NaTType")


def replace_surrogates(text: str) -> str:
    """Replace every lone surrogate code point of ``text`` by U+FFFD (length kept).

    Examples
    --------
    >>> replace_surrogates("a\\ud83d!") == "a\\ufffd!"
    True
    """
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


def rows_of(X: Any) -> list[Any]:
    """The rows of ``X`` as given, unvalidated (any container :func:`as_texts` accepts):
    for cutting an input into folds that are then validated as inputs of their own."""
    return list(_columns(X)[0])


def _columns(X: Any) -> tuple[list[Any], Any, str | None]:
    """Return (values, index, name) from any accepted container."""
    if isinstance(X, (str, bytes)):
        raise ValueError(
            "Iterable of texts expected, got a single "
            f"{type(X).__name__}. Wrap it in a list: transform([text])."
        )
    mod = type(X).__module__
    if mod.startswith("pandas"):
        import pandas as pd

        if isinstance(X, pd.DataFrame):
            if X.shape[1] != 1:
                raise ValueError(
                    "Expected a single text column, got a DataFrame with "
                    f"{X.shape[1]} columns: {list(X.columns)[:20]}. Select one column "
                    "(df['text']) or use a ColumnTransformer."
                )
            col = X.iloc[:, 0]
            return col.astype(object).tolist(), X.index, str(X.columns[0])
        if isinstance(X, pd.Series):
            name = None if X.name is None else str(X.name)
            return X.astype(object).tolist(), X.index, name
    if mod.startswith("polars") and hasattr(X, "columns") and hasattr(X, "to_series"):
        if len(X.columns) != 1:
            raise ValueError(
                "Expected a single text column, got a DataFrame with "
                f"{len(X.columns)} columns: {list(X.columns)[:20]}. Select one column "
                "(df['text']) or use a ColumnTransformer."
            )
        return X.to_series(0).to_list(), None, str(X.columns[0])
    if mod.startswith("polars") and hasattr(X, "to_list"):  # a polars Series
        return X.to_list(), None, (X.name or None)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            raise ValueError(
                f"Expected a 1-D array of texts (or one column), got an array of shape {X.shape}."
            )
        return X.tolist(), None, None
    if isinstance(X, dict):
        raise TypeError("Iterable of texts expected, got a dict. Pass list(d.values()).")
    if not isinstance(X, Iterable):
        raise TypeError(f"Iterable of texts expected, got {type(X).__name__}.")
    return list(X), None, None


def as_texts(X: Any, *, missing: str = "error", words: bool = False) -> TextBatch:
    """Validate and coerce ``X`` into a :class:`TextBatch`.

    Parameters
    ----------
    X : list, tuple, ndarray, Series or one-column DataFrame of str
        The texts. A generator or iterator is consumed once.
    missing : {"error", "empty", "zeros"}, default="error"
        What to do with None/NaN/pd.NA: raise a ``ValueError`` naming their
        positions, or record them in ``missing_positions`` (their text is
        ``""``; the estimator embeds it or writes a zero row).
    words : bool, default=False
        Also accept rows that are lists of words (decided by the first
        non-missing row; all rows must then be lists of str).

    Raises
    ------
    ValueError
        For a bare string, a multi-column input, or missing values under
        ``missing="error"``.
    TypeError
        For values that are neither str nor missing (numbers, bytes, lists...),
        naming the first positions and their types.

    Notes
    -----
    Lone surrogates are replaced by U+FFFD (see the module docstring); the
    rows concerned are listed in ``extra["surrogates"]``. Nothing else about a
    text is changed: empty, whitespace-only, control, zero-width, RTL and
    combining characters are passed on as they are.
    """
    values, index, name = _columns(X)
    if words and isinstance(
        next((v for v in values if not is_missing(v)), None), (list, tuple, np.ndarray)
    ):
        return _word_rows(values, index, name, missing)
    texts: list[str] = []
    missing_pos: list[int] = []
    bad: list[tuple[int, str]] = []
    fixed: list[int] = []
    search = _SURROGATES.search
    for i, v in enumerate(values):
        if isinstance(v, str):
            t = str(v)  # np.str_ -> str
            if search(t):
                t = _SURROGATES.sub("\ufffd", t)
                fixed.append(i)
            texts.append(t)
        elif is_missing(v):
            missing_pos.append(i)
            texts.append("")
        else:
            bad.append((i, type(v).__name__))
            texts.append("")
    if bad:
        shown = ", ".join(f"{i} ({t})" for i, t in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        hint = ""
        if any(t in ("bytes", "bytearray") for _, t in bad):
            hint = " Decode bytes first, e.g. b.decode('utf-8')."
        elif any(isinstance(values[i], Number) for i, _ in bad):
            hint = " Convert numbers explicitly with str() if they are meant as text."
        raise TypeError(
            f"Texts must be str; got non-string values at positions {shown}{more}.{hint}"
        )
    if missing_pos and missing == "error":
        _refuse_missing(missing_pos)
    extra = {"surrogates": tuple(fixed)} if fixed else {}
    return TextBatch(
        texts=texts, missing_positions=tuple(missing_pos), index=index, name=name, extra=extra
    )


def _refuse_missing(positions: list[int]) -> None:
    shown = ", ".join(map(str, positions[:10]))
    more = f" and {len(positions) - 10} more" if len(positions) > 10 else ""
    raise ValueError(
        f"Missing values (None/NaN/NA) at positions {shown}{more}. Drop them, or set "
        "missing='empty' to embed them as an empty text or missing='zeros' for zero rows."
    )


def _word_rows(values: list[Any], index: Any, name: str | None, missing: str) -> TextBatch:
    """Pre-split rows: every non-missing row a list of str."""
    missing_pos = []
    first = None  # the first non-missing row: a list of words, which made this word input
    for i, v in enumerate(values):
        if is_missing(v):
            missing_pos.append(i)
            continue
        first = i if first is None else first
        if not isinstance(v, (list, tuple, np.ndarray)):
            raise TypeError(
                f"Mixed input: row {first} is a list of words but row {i} is a "
                f"{type(v).__name__}. Pass all texts or all word lists."
            )
        for w in v:
            if not isinstance(w, str):
                raise TypeError(
                    f"Pre-split input must hold lists of str; row {i} holds a {type(w).__name__}."
                )
    if missing_pos and missing == "error":
        _refuse_missing(missing_pos)
    gone = set(missing_pos)
    rows = [[] if i in gone else list(map(str, v)) for i, v in enumerate(values)]
    return TextBatch(rows, tuple(missing_pos), index, name, words=True)
