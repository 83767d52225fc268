"""Step 5 -- tokenization: texts in, token ids (and windows) out.

``tokenize(tokenizer, texts, ...) -> Encoded``. Every text is tokenized
exactly once, without special tokens and without truncation, so that the true
length is known (truncation is never silent) and long texts can be cut into
windows. Special tokens are added per row from the tokenizer's own template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._inputs import replace_surrogates

__all__ = ["Encoded", "from_ids", "pack_spans", "tokenize", "unpack_spans", "window_starts"]


@dataclass(frozen=True)
class Encoded:
    """Model-ready rows for a list of texts.

    Attributes
    ----------
    rows : list of list of int
        Token ids with special tokens, one row per (text, window).
    row_text : ndarray of int
        The text each row belongs to.
    row_start : ndarray of int
        Offset of each row's first content token in its text's content tokens.
    n_content : ndarray of int
        Content (non-special) token count of each text, before truncation.
    n_windows : ndarray of int
        Rows per text: 1, or more for texts cut into windows. Under plain
        truncation a long text has one row and ``n_content > capacity``.
    capacity : int
        Content tokens that fit in one row (``max_length`` minus specials).
    offsets : list of ndarray or None
        Per text, the (n_content, 2) character spans of its content tokens.
    word_ids : list of ndarray or None
        Per text, the word index of each content token (pre-split input only).
    ids : list of list of int or None
        Per text, all content token ids (kept when offsets are asked for).
    """

    rows: list[list[int]]
    row_text: np.ndarray
    row_start: np.ndarray
    n_content: np.ndarray
    n_windows: np.ndarray
    capacity: int
    n_prefix: int
    n_suffix: int
    offsets: list[np.ndarray] | None = None
    word_ids: list[np.ndarray] | None = None
    ids: list[list[int]] | None = None

    @property
    def truncated(self) -> np.ndarray:
        """Boolean per text: its content did not fit in one row."""
        return self.n_content > self.capacity

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each row (special tokens included)."""
        return np.fromiter((len(r) for r in self.rows), dtype=np.int64, count=len(self.rows))


def window_starts(n: int, capacity: int, stride: int) -> list[int]:
    """Starts of overlapping windows of ``capacity`` tokens covering ``n`` tokens.

    Consecutive windows share ``stride`` tokens; the last window ends at ``n``.

    Examples
    --------
    >>> window_starts(10, 4, 1)
    [0, 3, 6]
    >>> window_starts(3, 4, 1)
    [0]
    """
    if n <= capacity:
        return [0]
    step = max(1, capacity - stride)
    starts = list(range(0, n - capacity + 1, step))
    if starts[-1] + capacity < n:
        starts.append(n - capacity)
    return starts


def tokenize(
    tokenizer,
    texts: Sequence[str] | Sequence[Sequence[str]],
    *,
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    max_length: int,
    windows: bool = False,
    stride: int = 0,
    offsets: bool = False,
    split_into_words: bool = False,
) -> Encoded:
    """Tokenize ``texts`` once and cut them into model rows.

    Parameters
    ----------
    tokenizer : transformers fast tokenizer
    texts : list of str, or list of list of str when ``split_into_words``
    prefix_ids, suffix_ids : list of int
        Special tokens around one sequence (``<s>``/``</s>`` for XLM-R).
    max_length : int
        Longest row in tokens, special tokens included.
    windows : bool, default=False
        Cut long texts into overlapping windows instead of truncating them.
    stride : int, default=0
        Tokens shared by consecutive windows.
    offsets : bool, default=False
        Also return the character span of every content token.
    split_into_words : bool, default=False
        ``texts`` are lists of words (``is_split_into_words``); word ids are
        returned and offsets are relative to each word.
    """
    _capacity(max_length, len(prefix_ids) + len(suffix_ids), stride)  # refuse before the work
    n_texts = len(texts)
    enc = _run(tokenizer, texts, offsets, split_into_words) if n_texts else None
    ids_all = enc["input_ids"] if n_texts else []
    offs = None
    if offsets:
        offs = (
            [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in enc["offset_mapping"]]
            if n_texts
            else []
        )
    wids = None
    if split_into_words:
        wids = [np.asarray(enc.word_ids(i), dtype=np.int64) for i in range(n_texts)]
    return from_ids(
        ids_all, prefix_ids=prefix_ids, suffix_ids=suffix_ids, max_length=max_length,
        windows=windows, stride=stride, offsets=offs, word_ids=wids,
    )  # fmt: skip


def from_ids(
    ids_all: Sequence[list[int]],
    *,
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    max_length: int,
    windows: bool = False,
    stride: int = 0,
    offsets: list[np.ndarray] | None = None,
    word_ids: list[np.ndarray] | None = None,
) -> Encoded:
    """Model rows from each text's content token ids (what :func:`tokenize` does after the
    tokenizer; also for a tokenization read back from the cache, :func:`unpack_spans`).
    The ids are kept in :attr:`Encoded.ids` when ``offsets`` are given."""
    capacity = _capacity(max_length, len(prefix_ids) + len(suffix_ids), stride)
    ids_all = [list(x) for x in ids_all]
    rows, row_text, row_start, n_windows = _cut(
        ids_all, list(prefix_ids), list(suffix_ids), capacity, stride if windows else None
    )
    return Encoded(
        rows=rows,
        row_text=np.asarray(row_text, dtype=np.int64),
        row_start=np.asarray(row_start, dtype=np.int64),
        n_content=np.fromiter((len(x) for x in ids_all), dtype=np.int64, count=len(ids_all)),
        n_windows=n_windows,
        capacity=capacity,
        n_prefix=len(prefix_ids),
        n_suffix=len(suffix_ids),
        offsets=offsets,
        word_ids=word_ids,
        ids=ids_all if offsets is not None else None,
    )


#: Integers a float32 holds exactly: a stored tokenization only holds values below this.
_EXACT = 2**24


def pack_spans(
    ids: Sequence[int], offsets: np.ndarray, word_ids: np.ndarray | None = None
) -> np.ndarray | None:
    """One text's tokenization as a float32 cache value: a row per content token with its
    id, character start and end (and word index for pre-split words); None when a value
    does not fit exactly (a text over 16M characters), so it is not stored."""
    cols = [np.asarray(ids, dtype=np.int64), *np.asarray(offsets, dtype=np.int64).reshape(-1, 2).T]
    if word_ids is not None:
        cols.append(np.asarray(word_ids, dtype=np.int64))
    table = np.stack(cols, axis=1) if len(cols[0]) else np.zeros((0, len(cols)), np.int64)
    if table.size and (table.min() < 0 or table.max() >= _EXACT):
        return None
    return table.astype(np.float32)


def unpack_spans(
    value: np.ndarray, presplit: bool
) -> tuple[list[int], np.ndarray, np.ndarray | None] | None:
    """``(ids, offsets, word_ids)`` from :func:`pack_spans`' value, or None when the value
    is not one (another width, not whole numbers, spans that run backwards): a miss."""
    value = np.asarray(value)
    if value.ndim != 2 or value.shape[1] != (4 if presplit else 3) or value.dtype != np.float32:
        return None
    table = value.astype(np.int64)
    if (table != value).any() or (table < 0).any() or (table[:, 1] > table[:, 2]).any():
        return None
    return table[:, 0].tolist(), table[:, 1:3].copy(), table[:, 3].copy() if presplit else None


def _capacity(max_length: int, n_special: int, stride: int) -> int:
    """Content tokens per row; refuses a ``max_length`` or ``stride`` that leaves none."""
    capacity = max_length - n_special
    if capacity < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text between special tokens.")
    if stride >= capacity:
        raise ValueError(
            f"stride={stride} must be smaller than max_length minus special tokens ({capacity})."
        )
    return capacity


def _run(tokenizer: Any, texts: Sequence[Any], offsets: bool, split_into_words: bool) -> Any:
    """One call of the fast tokenizer over every text, without special tokens.

    The Rust tokenizer refuses lone surrogates with an opaque TypeError. Inputs had
    them replaced already (``as_texts``); this covers pre-split words and what a user
    ``preprocess`` callable returns. Lengths (offsets) are kept.
    """
    if split_into_words:
        batch = [[replace_surrogates(w) for w in t] for t in texts]
    else:
        batch = [replace_surrogates(t) for t in texts]
    return tokenizer(
        batch,
        add_special_tokens=False,
        truncation=False,
        return_attention_mask=False,
        return_offsets_mapping=offsets,
        is_split_into_words=split_into_words,
        verbose=False,
    )


def _cut(
    ids_all: Sequence[list[int]],
    prefix: list[int],
    suffix: list[int],
    capacity: int,
    stride: int | None,
) -> tuple[list[list[int]], list[int], list[int], np.ndarray]:
    """Model rows of every text: truncated (``stride`` None) or in overlapping windows;
    with the text and the start token of each row, and the windows per text."""
    rows: list[list[int]] = []
    row_text: list[int] = []
    row_start: list[int] = []
    n_windows = np.ones(len(ids_all), dtype=np.int64)
    for i, ids in enumerate(ids_all):
        starts = [0] if stride is None else window_starts(len(ids), capacity, stride)
        n_windows[i] = len(starts)
        for s in starts:
            rows.append(prefix + ids[s : s + capacity] + suffix)
            row_text.append(i)
            row_start.append(s)
    return rows, row_text, row_start, n_windows


def subset(enc: Encoded, texts: Sequence[int]) -> Encoded:
    """The rows of ``texts`` only, renumbered ``0..len(texts)-1`` (for cache misses)."""
    texts = np.asarray(texts, dtype=np.int64)
    new_id = np.full(len(enc.n_windows), -1, dtype=np.int64)
    new_id[texts] = np.arange(len(texts))
    keep = np.flatnonzero(new_id[enc.row_text] >= 0)
    # Rows must stay grouped by text in the new numbering for window merging.
    keep = keep[np.argsort(new_id[enc.row_text[keep]], kind="stable")]
    return Encoded(
        rows=[enc.rows[r] for r in keep],
        row_text=new_id[enc.row_text[keep]],
        row_start=enc.row_start[keep],
        n_content=enc.n_content[texts],
        n_windows=enc.n_windows[texts],
        capacity=enc.capacity,
        n_prefix=enc.n_prefix,
        n_suffix=enc.n_suffix,
        offsets=None if enc.offsets is None else [enc.offsets[i] for i in texts],
        word_ids=None if enc.word_ids is None else [enc.word_ids[i] for i in texts],
        ids=None if enc.ids is None else [enc.ids[i] for i in texts],
    )
