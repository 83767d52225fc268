"""Exception and warning classes.

Every domain error subclasses a builtin (so ``except ValueError`` keeps working)
and every message says what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CacheWarning",
    "ModelLoadError",
    "ModelNotFoundError",
    "TruncationWarning",
]


class ModelLoadError(OSError):
    """A model or tokenizer exists but cannot be used (corrupt, wrong kind, no fast tokenizer)."""


class ModelNotFoundError(ModelLoadError):
    """A model could not be found locally or on the Hugging Face hub.

    The message names the model and revision and explains how to pass a local
    folder for offline use.
    """


class CacheWarning(UserWarning):
    """The embedding cache could not be used; vectors were computed without it.

    A cache problem never fails a transform and never changes a result: the
    affected texts are simply encoded again.
    """


class TruncationWarning(UserWarning):
    """Some texts were longer than ``max_length`` tokens and were truncated.

    Raised once per ``transform`` call (never per text).

    Attributes
    ----------
    count : int
        Number of input rows (duplicates included) that were truncated.
    positions : list of int
        Their 0-based positions in the input, in increasing order.
    max_length : int
        The token limit that was applied.
    """

    def __init__(self, positions: Sequence[int], max_length: int, n_total: int):
        self.positions = [int(p) for p in positions]
        self.count = len(self.positions)
        self.max_length = int(max_length)
        shown = ", ".join(map(str, self.positions[:10]))
        more = "" if self.count <= 10 else f", ... ({self.count - 10} more)"
        super().__init__(
            f"{self.count} of {n_total} texts are longer than max_length={max_length} tokens "
            f"and were truncated (positions: {shown}{more}). Raise max_length, use "
            "truncation='window' to encode long texts in overlapping windows, or "
            "truncation='error' to refuse them."
        )

    def __reduce__(self):
        return (_rebuild_truncation_warning, (self.positions, self.max_length, self.args[0]))


def _rebuild_truncation_warning(positions, max_length, message):
    w = TruncationWarning.__new__(TruncationWarning)
    w.positions, w.count, w.max_length = list(positions), len(positions), max_length
    w.args = (message,)
    return w
