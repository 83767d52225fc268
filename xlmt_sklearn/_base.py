"""Shared machinery of the estimators that run a model.

The estimator classes stay short: they validate, then call the steps of the
flow (inputs -> preprocess -> dedupe -> cache -> tokenize -> forward ->
pool -> scatter). This module holds the parts both vectorizers share: pinning
the model in ``fit``, the registry spec, and the cache-or-encode loop.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._errors import TruncationWarning
from ._inputs import TextBatch, as_texts
from ._preprocess import apply_preprocess, preprocess_identity_key, resolve_preprocess
from ._quantize import INT8_SCHEME

__all__ = ["ModelFeaturizerMixin"]

logger = logging.getLogger("xlmt_sklearn")

_PROGRESS_MIN_TEXTS = 256

#: Distinct texts looked up, tokenized and encoded per step of a transform: bounds the
#: memory a huge call needs beyond its output (cache answers, token ids, pending rows).
STREAM_CHUNK = 8192

#: Keys per cache lookup call: hits are scattered into the output as each call returns,
#: so at most this many cached arrays are alive at once; measured faster per key than
#: one lookup of a whole chunk (the arrays stay in the CPU's caches; docs/benchmarks.md).
LOOKUP_BATCH = 1000

#: A chunk of new texts is regrouped in input order (``EmbeddingCache.regroup``) only
#: when it was encoded slower than this. Regrouping puts a lookup batch's keys into a few
#: blocks, which block directories serve without an index row per key (~2x faster input-
#: order lookups, docs/benchmarks.md "Cache"), but makes writes ~45% slower: under 1% of a
#: CPU transform's time, but on a GPU the cache's write rate is already the bottleneck.
REGROUP_BELOW_TEXTS_PER_S = 1000.0


def _in_notebook() -> bool:
    ipy = sys.modules.get("IPython")
    shell = getattr(ipy, "get_ipython", lambda: None)() if ipy else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _user_stacklevel() -> int:
    """Stack level of the first caller outside xlmt_sklearn and scikit-learn.

    Warnings then point at the user's line, whether transform was called
    directly, through set_output's wrapper or inside a Pipeline.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        mod = frame.f_globals.get("__name__", "")
        if not (mod.startswith(("xlmt_sklearn", "sklearn"))):
            return level
        frame = frame.f_back
        level += 1
    return 1


def resolve_progress(progress: bool | str, n_texts: int) -> bool:
    """``"auto"``: a bar for long runs in a terminal or a notebook only."""
    if progress != "auto":
        return bool(progress)
    if n_texts < _PROGRESS_MIN_TEXTS:
        return False
    return _in_notebook() or bool(getattr(sys.stderr, "isatty", lambda: False)())


def validate_layers(layers: Any, num_hidden_layers: int, cls_name: str) -> tuple[int, ...]:
    """Normalise ``layers`` to a tuple and check it against the model depth."""
    seq = (layers,) if isinstance(layers, Integral) else tuple(layers)
    if not seq:
        raise ValueError(f"The 'layers' parameter of {cls_name} must not be empty.")
    n = num_hidden_layers + 1  # hidden_states = embeddings + one per layer
    for v in seq:
        if not isinstance(v, Integral) or isinstance(v, bool):
            raise ValueError(
                f"The 'layers' parameter of {cls_name} must be an int or a sequence of ints; "
                f"got {layers!r}."
            )
        if not -n <= v < n:
            raise ValueError(
                f"The 'layers' parameter of {cls_name} indexes hidden_states, which has {n} "
                f"entries for this model (valid: {-n}..{n - 1}); got {v}."
            )
    return tuple(int(v) for v in seq)


class ModelFeaturizerMixin(TransformerMixin, BaseEstimator):
    """Fit/transform plumbing shared by the model-running estimators.

    Subclasses define ``__init__``, ``_parameter_constraints``,
    ``_check_params`` (extra checks against the pinned model) and
    ``transform``.
    """

    # ----------------------------------------------------------------- public
    def __sklearn_is_fitted__(self) -> bool:
        # Plain attribute only: checking fittedness must never load a model.
        return hasattr(self, "model_identity_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        return tags

    # ---------------------------------------------------------------- private
    def _pin_model(self) -> None:
        """Resolve and record the exact model (config only, no weights)."""
        from ._model import resolve_identity

        ident, _ = resolve_identity(self.model, self.revision)
        name = type(self).__name__
        self.layers_ = validate_layers(self.layers, ident.num_hidden_layers, name)
        if self.max_length > ident.max_positions:
            raise ValueError(
                f"The 'max_length' parameter of {name} is {self.max_length}, but model "
                f"{ident.name!r} accepts at most {ident.max_positions} tokens."
            )
        if self.quantize == "int8" and self.dtype not in ("auto", "float32"):
            raise ValueError(
                f"quantize='int8' of {name} computes in float32 on the CPU; "
                f"got dtype={self.dtype!r}."
            )
        self.model_identity_ = ident

    def _runtime(self) -> tuple[list[Any], str]:
        """The registry specs for this call, one per device (resolved now), and the dtype."""
        from ._model import ModelSpec
        from ._params import resolve_devices, resolve_dtype

        devices = ["cpu"] if self.quantize == "int8" else resolve_devices(self.device)
        dtype = "float32" if self.quantize == "int8" else resolve_dtype(self.dtype, devices[0])
        ident = self.model_identity_
        common = dict(
            name=ident.name, revision=ident.revision, content_hash=ident.content_hash,
            dtype=dtype, quantize=self.quantize, compile=bool(self.compile),
            trust_remote_code=bool(self.trust_remote_code),
        )  # fmt: skip
        return [ModelSpec(device=device, **common) for device in devices], dtype

    def _texts(self, X: Any) -> tuple[TextBatch, list[str]]:
        """Steps 1-2: coerce, then preprocess and apply the prefix/template."""
        check_is_fitted(self)
        batch = as_texts(X, missing=self.missing)
        texts = apply_preprocess(resolve_preprocess(self.preprocess), batch.texts)
        if self.prefix:
            if "{text}" in self.prefix:
                texts = [self.prefix.replace("{text}", t) for t in texts]
            else:
                texts = [self.prefix + t for t in texts]
        return batch, texts

    def _vector_options(self) -> dict[str, Any]:
        """Vector-changing options shared by both vectorizers (fingerprint)."""
        return {
            "max_length": int(self.max_length),
            "truncation": "window" if self.truncation == "window" else "truncate",
            "stride": self._stride() if self.truncation == "window" else None,
            "preprocess": preprocess_identity_key(self.preprocess),
            "prefix": self.prefix,
            "layers": list(self.layers_),
            "layer_aggregation": self.layer_aggregation if len(self.layers_) > 1 else None,
            "quantize": INT8_SCHEME if self.quantize == "int8" else self.quantize,
        }

    def _stride(self) -> int:
        return self.max_length // 4 if self.stride is None else int(self.stride)

    def _encode_unique(
        self,
        texts: Sequence[str],
        *,
        kind: str,
        options: dict[str, Any],
        encode_options: Any,
        positions: Callable[[np.ndarray], np.ndarray],
        n_total: int,
        expected_shape: Callable[[int, np.ndarray], bool],
        encoded: Any = None,
        store_dtype: str = "float32",
        sink: Callable[[np.ndarray, list[np.ndarray]], None] | None = None,
    ) -> tuple[list[np.ndarray] | None, np.ndarray]:
        """Cache lookup, then encode the misses (steps 4-9), chunk by chunk.

        Parameters
        ----------
        texts : list of str
            Distinct model inputs (their cache keys).
        expected_shape : callable (index, array) -> bool
            Validates a cached value; a value of the wrong shape is a miss.
        encoded : Encoded or None
            The tokenization of all ``texts`` when the caller needed it anyway
            (token features); otherwise only the misses are tokenized, and an
            all-hit call loads neither tokenizer nor model.
        store_dtype : {"float32", "float16"}
            Precision of cached values; results are rounded to it whether
            they come from the cache or the model, so hits equal misses.
        sink : callable (indices, arrays) -> None, optional
            Receives results as they are ready (cache hits, then finished
            batches) instead of this method keeping them: with it, working
            memory stays bounded whatever the number of texts.

        Texts are processed in chunks of :data:`STREAM_CHUNK` (lookup, tokenize
        the misses, encode them), so neither the cache's answers nor the
        token ids of a huge call are held at once. ``truncation="error"``
        takes one chunk: it must refuse before encoding anything.

        Returns one float32 array per text (``None`` with a ``sink``) and a
        boolean "longer than max_length" flag per text. ``positions`` maps
        unique-text indices to input rows (for messages).
        """
        from ._cache import as_cache, make_keys
        from ._fingerprint import fingerprint

        specs, dtype = self._runtime()
        fp = fingerprint(
            self.model_identity_, kind, dtype=dtype, store_dtype=store_dtype, **options
        )
        cache = as_cache(self.cache)
        keys = make_keys(fp, texts)
        n = len(texts)
        values: list[np.ndarray | None] | None = None
        if sink is None:
            values = [None] * n

            def sink(idx: np.ndarray, arrays: list[np.ndarray]) -> None:
                for i, a in zip(idx.tolist(), arrays, strict=True):
                    values[i] = a

        long_ = np.zeros(n, dtype=bool)
        if encoded is not None:
            long_ = np.asarray(encoded.truncated, dtype=bool).copy()
        step = max(n, 1) if self.truncation == "error" else STREAM_CHUNK
        n_miss, n_windowed, n_windows, loaded, bar = 0, 0, 0, None, None
        try:
            for a in range(0, n, step):
                idx = np.arange(a, min(a + step, n))
                hit_idx: list[int] = []
                for b in range(a, a + len(idx), LOOKUP_BATCH):
                    got, vals = [], []
                    part = range(b, min(b + LOOKUP_BATCH, a + len(idx)))
                    answers = cache.get_many(keys[part.start : part.stop])
                    for i, hit in zip(part, answers, strict=True):
                        if hit is not None and expected_shape(i, hit[0]):
                            got.append(i)
                            vals.append(np.asarray(hit[0], dtype=np.float32))
                            if encoded is None:
                                long_[i] = bool(hit[1])
                    if got:
                        sink(np.asarray(got), vals)
                    hit_idx += got
                    del vals, answers
                miss = np.setdiff1d(idx, hit_idx, assume_unique=True)
                if self.truncation == "error" and long_.any():
                    self._raise_truncation(positions(np.flatnonzero(long_)))
                if a == 0 and resolve_progress(self.progress, n - len(hit_idx)):
                    from tqdm.auto import tqdm

                    bar = tqdm(total=n, unit="text", desc="xlmt_sklearn", smoothing=0.1)
                if bar is not None:
                    bar.update(len(hit_idx))
                if not len(miss):
                    continue
                from ._forward import release_free_memory, run
                from ._model import get_model
                from ._tokenize import subset, tokenize

                loaded = loaded or [get_model(spec) for spec in specs]
                if encoded is not None:
                    enc = subset(encoded, miss)
                else:
                    enc = tokenize(
                        loaded[0].tokenizer, [texts[i] for i in miss],
                        prefix_ids=loaded[0].special_prefix, suffix_ids=loaded[0].special_suffix,
                        max_length=int(self.max_length), windows=self.truncation == "window",
                        stride=self._stride(),
                    )  # fmt: skip
                    long_[miss] = enc.truncated
                if self.truncation == "error" and long_.any():
                    self._raise_truncation(positions(np.flatnonzero(long_)))

                def on_done(local: list[int], vals: list[np.ndarray], enc=enc, miss=miss) -> None:
                    if store_dtype != "float32":
                        for v in vals:  # round in place: a later hit returns exactly this
                            v[...] = v.astype(store_dtype)
                    cache.put_many(
                        [keys[miss[j]] for j in local],
                        [v.astype(store_dtype, copy=False) for v in vals],
                        [int(enc.truncated[j]) for j in local],
                    )
                    sink(miss[local], vals)

                started = time.perf_counter()
                run(loaded, enc, encode_options, on_done=on_done, progress=bar, keep=False)
                # Batches were written in length order; lay them out in input order when
                # that is cheap next to the encoding (a cache object of the user's own
                # may not know this optional hint).
                regroup = getattr(cache, "regroup", None)
                rate = len(miss) / max(time.perf_counter() - started, 1e-9)
                if regroup is not None and rate < REGROUP_BELOW_TEXTS_PER_S:
                    regroup([keys[i] for i in miss])
                if n > step:  # a huge call: return the chunk's free heap (see run())
                    release_free_memory()
                n_miss += len(miss)
                if self.truncation == "window":
                    n_windowed += int(enc.truncated.sum())
                    n_windows += int(enc.n_windows[enc.truncated].sum())
                del enc
        finally:
            if bar is not None:
                bar.close()
        if self.truncation == "window" and n_windowed:
            logger.info(
                "truncation='window': %d of %d texts exceeded max_length=%d and were "
                "encoded in %d overlapping windows",
                n_windowed, n_miss, self.max_length, n_windows,
            )  # fmt: skip
        logger.debug(
            "%s: %d distinct texts, %d from the cache, %d encoded",
            type(self).__name__, n, n - n_miss, n_miss,
        )  # fmt: skip
        if self.truncation == "warn" and long_.any():
            warnings.warn(
                TruncationWarning(positions(np.flatnonzero(long_)), self.max_length, n_total),
                stacklevel=_user_stacklevel(),
            )
        return values, long_  # type: ignore[return-value]

    def _raise_truncation(self, rows: np.ndarray) -> None:
        shown = ", ".join(map(str, rows[:10].tolist()))
        more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
        raise ValueError(
            f"{len(rows)} texts are longer than max_length={self.max_length} tokens "
            f"(positions {shown}{more}) and truncation='error'. Raise max_length, or use "
            "truncation='warn' (truncate) or 'window' (encode overlapping windows)."
        )


def input_positions(inverse: np.ndarray, todo: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Map unique-text indices back to sorted input rows (duplicates included)."""

    def positions(uniq_idx: np.ndarray) -> np.ndarray:
        hit = np.isin(inverse, uniq_idx)
        return np.sort(todo[hit])

    return positions
