"""Token level: word alignment, special-token dropping, output containers.

Pure numpy functions (no model). :func:`merge_windows` joins the token
matrices of a long text's overlapping windows. Input per text: the full token
matrix the model produced (special tokens included, windows merged) and the content
tokens' character offsets; output: subword or word vectors, and the long
"one row per token" table (Spark NLP / nlu style).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PaddedTokens",
    "assign_words",
    "merge_windows",
    "pad_ragged",
    "word_spans",
    "word_vectors",
]


@dataclass(frozen=True)
class PaddedTokens:
    """Token vectors padded to a common length.

    Attributes
    ----------
    values : ndarray of shape (n_texts, max_tokens, dim), float32
        Zero where ``mask`` is False.
    mask : ndarray of shape (n_texts, max_tokens), bool
        True for real tokens.
    """

    values: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, idx):
        # Row selection keeps the container (sklearn's CV splits index X).
        return PaddedTokens(self.values[idx], self.mask[idx])

    @property
    def shape(self) -> tuple[int, ...]:
        """``(n_texts, max_tokens, dim)``, the shape of ``values``."""
        return self.values.shape


def pad_ragged(mats: Sequence[np.ndarray], dim: int) -> PaddedTokens:
    """Stack (n_i, dim) arrays into a :class:`PaddedTokens`."""
    width = max((len(m) for m in mats), default=0)
    values = np.zeros((len(mats), width, dim), dtype=np.float32)
    mask = np.zeros((len(mats), width), dtype=bool)
    for i, m in enumerate(mats):
        values[i, : len(m)] = m
        mask[i, : len(m)] = True
    return PaddedTokens(values, mask)


def word_spans(
    text: str, splitter: Callable[[str], Sequence[str]] | None = None
) -> list[tuple[int, int]]:
    """Character spans of the words of ``text``.

    ``splitter=None`` splits on whitespace. A callable returns the words,
    which must appear in ``text`` in order (each is located after the
    previous one), like Spark NLP's tokenizer output.

    Examples
    --------
    >>> word_spans("hi  there")
    [(0, 2), (4, 9)]
    """
    if splitter is None:
        spans, pos, n = [], 0, len(text)
        while pos < n:
            while pos < n and text[pos].isspace():
                pos += 1
            start = pos
            while pos < n and not text[pos].isspace():
                pos += 1
            if pos > start:
                spans.append((start, pos))
        return spans
    spans, pos = [], 0
    for w in splitter(text):
        if not isinstance(w, str):
            raise TypeError(f"word_splitter must return str words; got {type(w).__name__}.")
        at = text.find(w, pos)
        if at < 0:
            raise ValueError(
                f"word_splitter returned {w!r}, which is not in the text after position {pos}: "
                "words must be substrings of the text, in order."
            )
        spans.append((at, at + len(w)))
        pos = at + len(w)
    return spans


def assign_words(offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Word index of every token from character offsets (-1: no word).

    A token belongs to the first word that ends after the token starts: the
    word it starts in, or -- for a SentencePiece ``"▁"`` piece that covers
    the preceding space -- the following word, as in transformers'
    ``word_ids()``. Tokens after the last word get -1.
    """
    ends = [e for _, e in spans]
    out = np.full(len(offsets), -1, dtype=np.int64)
    for k, (b, _) in enumerate(offsets):
        w = bisect.bisect_right(ends, b)
        if w < len(spans):
            out[k] = w
    return out


def word_vectors(
    content: np.ndarray, word_ids: np.ndarray, n_words: int, how: str
) -> tuple[np.ndarray, np.ndarray]:
    """One vector per word from its subword vectors.

    Parameters
    ----------
    content : (n_tokens, dim) array
        Content-token vectors (no special tokens).
    word_ids : (n_tokens,) int array
        Word of each token, -1 for none.
    n_words : int
        Number of words; words without any token (cut by truncation, or
        empty) get a zero vector.
    how : {"first", "mean"}
        The word's first subword (Spark NLP) or the mean of its subwords.

    Returns
    -------
    vectors : (n_words, dim) float32 array
    n_subwords : (n_words,) int array
    """
    dim = content.shape[1]
    out = np.zeros((n_words, dim), dtype=np.float32)
    valid = (word_ids >= 0) & (word_ids < n_words)
    ids = word_ids[valid]
    rows = content[: len(word_ids)][valid]
    counts = np.bincount(ids, minlength=n_words)[:n_words]
    if how == "first":
        # The first occurrence of each word id, in token order.
        uniq, first = np.unique(ids, return_index=True)
        out[uniq] = rows[first]
    elif how == "mean":
        np.add.at(out, ids, rows)
        nz = counts > 0
        out[nz] /= counts[nz, None]
    else:
        raise ValueError(f"Unknown word_vector {how!r}; expected 'first' or 'mean'.")
    return out, counts.astype(np.int64)


def merge_windows(
    mats: list[np.ndarray], starts: list[int], n_prefix: int, n_suffix: int
) -> np.ndarray:
    """Merge per-window token matrices of one text into one sequence.

    Each window matrix is ``prefix + content + suffix`` rows. Every content
    token is taken from the window where it is most central (farthest from
    that window's edges; ties go to the earlier window); the prefix comes from
    the first window and the suffix from the last.
    """
    if len(mats) == 1:
        return mats[0]
    ends = [s + len(m) - n_prefix - n_suffix for s, m in zip(starts, mats, strict=True)]
    n = max(ends)
    # One pass per window over its own tokens: linear in the windows' total size.
    best = np.zeros(n, dtype=np.int64)
    best_score = np.full(n, -1, dtype=np.int64)
    for w, (s, e) in enumerate(zip(starts, ends, strict=True)):
        j = np.arange(s, e)
        score = np.minimum(j - s, e - 1 - j)
        better = score > best_score[s:e]  # strict: ties stay with the earlier window
        best[s:e][better] = w
        best_score[s:e][better] = score[better]
    # Gather every token's row from the stacked windows in one indexing step.
    first_row = np.cumsum([0] + [len(m) for m in mats[:-1]])
    j = np.arange(n)
    rows = first_row[best] + n_prefix + j - np.asarray(starts)[best]
    stacked = np.concatenate(mats, axis=0)
    return np.concatenate(
        [mats[0][:n_prefix], stacked[rows], mats[-1][len(mats[-1]) - n_suffix :]], axis=0
    )
