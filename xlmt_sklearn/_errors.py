"""Exception and warning classes.

Every domain error subclasses a builtin (so ``except ValueError`` keeps working)
and every message says what to do about it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = [
    "CacheWarning",
    "ModelLoadError",
    "ModelNotFoundError",
    "NonFiniteOutputError",
    "RuntimeCheckError",
    "RuntimeFallbackWarning",
    "TruncationWarning",
    "user_stacklevel",
]

#: Frames of these packages are not the user's line (a warning points past them).
_NOT_USER = ("xlmt_sklearn", "sklearn", "joblib", "concurrent.futures", "threading")


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


class NonFiniteOutputError(RuntimeError):
    """An encoder returned NaN or infinite values; nothing from that batch was cached.

    Every batch of every backend is checked before it is written to the cache
    or returned. The usual cause is a native runtime (OpenVINO, ONNX Runtime)
    misbehaving on this CPU; torch float32 is the reference.

    Attributes
    ----------
    backend, dtype, model : str
        What computed the batch.
    quantize : str or None
        The int8 scheme, if any.
    positions : list of int
        The input rows whose values were not finite (0-based, increasing).
    """

    def __init__(
        self, backend: str, dtype: str, quantize: str | None, model: str,
        positions: Sequence[int], n_total: int | None = None,
    ):  # fmt: skip
        self.backend, self.dtype, self.quantize, self.model = backend, dtype, quantize, model
        self.positions = sorted(int(p) for p in positions)
        shown = ", ".join(map(str, self.positions[:10]))
        more = "" if len(self.positions) <= 10 else f", ... ({len(self.positions) - 10} more)"
        of = f" of {n_total}" if n_total is not None else ""
        how = dtype if quantize is None else f"{dtype}, {quantize}"
        super().__init__(
            f"backend={backend!r} ({how}) returned non-finite values (NaN or inf) for model "
            f"{model!r} at input positions {shown}{more} ({len(self.positions)}{of} texts). "
            "Nothing from that batch was cached. backend='torch' with dtype='float32' is "
            "the reference: use it, and see docs/reliability.md ('Native runtimes')."
        )

    def __reduce__(self):
        return (_rebuild_exception, (type(self), self.args, self.__dict__))


class RuntimeCheckError(RuntimeError):
    """An explicitly chosen native runtime failed its first-use self-check on this machine.

    The message says what failed (crash, hang, NaN, disagreement with torch
    float32), the check's last lines of output and how to check again
    (:mod:`xlmt_sklearn.backends._selfcheck`). With ``backend="auto"`` the same failure
    falls back to torch with a :class:`RuntimeFallbackWarning` instead.

    Attributes
    ----------
    verdict : Verdict
        The stored verdict (``reason``, ``path``, ``tail``, ``measures``).
    """

    def __init__(self, verdict):
        self.verdict = verdict
        super().__init__(
            verdict.explain() + " Or use backend='auto' (it falls back to torch) or "
            "backend='torch'."
        )

    def __reduce__(self):
        return (type(self), (self.verdict,))


class RuntimeFallbackWarning(UserWarning):
    """``backend="auto"`` chose a native runtime that failed its self-check: torch runs instead.

    Given once per process and configuration; the vectors are torch's (the
    same as ``backend="torch"``).
    """


def _rebuild_exception(cls, args, state):
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


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


def user_stacklevel() -> int:
    """Stack level of the first caller outside xlmt_sklearn, scikit-learn and joblib.

    Warnings then point at the user's line, whether transform was called
    directly, through set_output's wrapper or inside a Pipeline or a search;
    generated code (``<dynamic-code>``, ``<string>`` wrappers of decorators)
    is skipped too. Without such a frame (a joblib worker), level 1.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        mod = frame.f_globals.get("__name__", "") or ""
        generated = frame.f_code.co_filename.startswith("<dynamic")
        if not (mod.startswith(_NOT_USER) or generated):
            return level
        frame = frame.f_back
        level += 1
    return 1
