"""Shared machinery of the estimators that run a model.

The estimator classes stay short: they validate, then read as a table of
contents of the flow (inputs -> preprocess -> dedupe -> :func:`stream
<xlmt_sklearn.flow._pipeline.stream>` -> scatter -> output). This module holds what
both vectorizers share: pinning the model in ``fit``, their encoders, their
cache keys and the :class:`~xlmt_sklearn.flow._pipeline.Request` they stream.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._mixins import ClassNameFeatureNamesMixin
from ._options import key_options, refit_names
from ._params import constraints
from .backends._encoders import EncodeOptions, Encoder
from .flow._pipeline import Request
from .flow._preprocess import check_prefix

__all__ = ["ModelFeaturizerMixin", "validate_layers"]


def validate_layers(
    layers: Any, num_hidden_layers: int, cls_name: str, param: str = "layers"
) -> tuple[int, ...]:
    """Normalise ``layers`` (parameter ``param``) to a tuple; check it against the depth."""
    seq = (layers,) if isinstance(layers, Integral) else tuple(layers)
    if not seq:
        raise ValueError(f"The {param!r} parameter of {cls_name} must not be empty.")
    n = num_hidden_layers + 1  # hidden_states = embeddings + one per layer
    for v in seq:
        if not isinstance(v, Integral) or isinstance(v, bool):
            raise ValueError(
                f"The {param!r} parameter of {cls_name} must be an int or a sequence of ints; "
                f"got {layers!r}."
            )
        if not -n <= v < n:
            raise ValueError(
                f"The {param!r} parameter of {cls_name} indexes hidden_states, which has {n} "
                f"entries for this model (valid: {-n}..{n - 1}); got {v}."
            )
    return tuple(int(v) for v in seq)


#: The parameters a calibration is built from.
_CALIBRATION_PARAMS = ("calibration_texts", "quantize", "preprocess", "prefix", "max_length")


def _snapshot(value: Any) -> Any:
    """A copy to compare later (an object that cannot be copied, e.g. a callable holding
    a lock, is compared by identity)."""
    try:
        return copy.deepcopy(value)
    except Exception:  # any object a user passes
        return value


def _changed(before: Any, now: Any) -> bool:
    """Whether a parameter differs from its value at fit (arrays compare by value)."""
    before, now = (v.tolist() if isinstance(v, np.ndarray) else v for v in (before, now))
    try:
        return bool(before != now)
    except (TypeError, ValueError):  # no truth value for != (an array-like of another kind)
        return before is not now


class _FitMemo:
    """What a fitted estimator derives from its parameters and keeps between calls.

    One entry per name, rebuilt when a parameter it was built from changed since
    (``set_params`` of a parameter that needs no new ``fit``); a new ``fit`` starts a
    new memo. Never pickled or copied (the estimator's ``__getstate__`` drops it): a
    pickle carries parameters only, and the machine it lands on builds again. It
    holds the int8 calibration (preprocessing up to 300 texts: 0.34 ms of a 1.6 ms
    one-text transform, docs/architecture.md);
    the encoders are built per call on purpose (0.01-0.03 ms; they pin the loaded
    model for one call only, and a runtime's self-check verdict is read each time).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[dict[str, Any], Any]] = {}

    def get(self, name: str, params: dict[str, Any], build: Callable[[], Any]) -> Any:
        """``build()``'s value, built again only when one of ``params`` changed."""
        entry = self._entries.get(name)
        if entry is not None and not any(_changed(entry[0][k], v) for k, v in params.items()):
            return entry[1]
        value = build()
        self._entries[name] = ({k: _snapshot(v) for k, v in params.items()}, value)
        return value


class ModelFeaturizerMixin(ClassNameFeatureNamesMixin, TransformerMixin, BaseEstimator):
    """Fit/transform plumbing shared by the model-running estimators.

    Subclasses define ``__init__``, ``fit``, ``transform``, :attr:`_kind` (what a
    cache entry holds, and which of the declared options
    (:data:`xlmt_sklearn._options.OPTIONS`) they take) and :attr:`_prefix_template`
    (whether a ``{text}`` prefix template is allowed). Their parameter constraints,
    the parameters that need a new ``fit`` and the option part of the cache key
    come from the declared options.
    """

    _kind = "pooled"
    _prefix_template = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = getattr(cls, "_option_kind", None) or cls._kind  # which declared options
        cls._parameter_constraints = constraints(kind)
        #: Parameters whose fitted state (model identity, layers, widths) ``transform``
        #: relies on: changing one after ``fit`` (``set_params``) requires fitting again.
        cls._fit_params = refit_names(kind)

    # ----------------------------------------------------------------- public
    def __sklearn_is_fitted__(self) -> bool:
        # Plain attribute only: checking fittedness must never load a model.
        return hasattr(self, "model_identity_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = []  # text in, float32 out
        return tags

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_fit_memo", None)  # a pickle carries parameters, not what they built
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "model_identity_" in state:
            self._fit_memo = _FitMemo()

    # ---------------------------------------------------------------- private
    def _check_fit_input(self, X: Any) -> None:
        """``fit(X)`` checks X's type and missing values, but never consumes an iterator
        (``fit_transform(generator)`` must still transform every text)."""
        from .flow._inputs import as_texts

        if X is not None and not isinstance(X, Iterator):
            as_texts(X, missing=self.missing, words=self._kind == "tokens")

    def _pin_model(self, model: Any = None) -> None:
        """Resolve and record the exact model (config only, no weights); ``model``: a
        local folder to pin instead of the ``model`` parameter (an adapted encoder)."""
        from ._model import resolve_identity

        name = type(self).__name__
        self._fit_memo = _FitMemo()
        check_prefix(self.prefix, name, template=self._prefix_template)
        if model is None:
            ident, _ = resolve_identity(self.model, self.revision)
        else:
            ident, _ = resolve_identity(model, None)
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
        self._calibration()  # checked before anything is converted
        self._check_backend()
        self.model_identity_ = ident
        self._fitted_params_ = {k: copy.deepcopy(getattr(self, k)) for k in self._fit_params}
        # What "auto" resolves to on this machine, from the config and a stored self-check
        # verdict only (fit converts nothing: a Spark driver, a laptop that ships the
        # estimator); a transform decides again, checking a runtime's first use.
        encoders = self._encoders(selfcheck=False)
        self.backend_ = ", ".join(dict.fromkeys(e.describe() for e in encoders))

    def _distinct(self, batch: Any, rows: np.ndarray) -> tuple[list[str], Any]:
        """Steps 2-3 for text input: each distinct input preprocessed and prefixed once
        (:func:`~xlmt_sklearn.flow._preprocess.prepare`), then the distinct model inputs and
        the :class:`~xlmt_sklearn.flow._output.Scatter` from them back to the input rows."""
        from .flow._dedupe import distinct_inputs, unique_texts
        from .flow._output import Scatter
        from .flow._preprocess import prepare

        raw, raw_inverse, first = distinct_inputs([batch.texts[r] for r in rows], rows)
        inputs, _ = prepare(raw, self.preprocess, self.prefix, first.tolist())
        uniq, key_of = unique_texts(inputs)
        return uniq, Scatter(key_of[raw_inverse], rows)

    def _check_backend(self) -> None:
        """A runtime backend: installed, on the CPU, in a precision it computes (at fit)."""
        from .backends._auto import resolve_backend
        from .backends._runtime import runtime_encoder_class

        backend = getattr(self, "backend", "auto")
        calibrated = getattr(self, "calibration_texts", None) is not None
        if backend in ("auto", "torch") and not calibrated:
            return
        chosen = resolve_backend(
            backend, self.device, quantize=self.quantize, compile=self.compile,
            calibrated=calibrated,
        )  # fmt: skip
        runtime_encoder_class(chosen).resolve_precision(self.dtype)

    def _calibration(self) -> Any:
        """``calibration_texts`` as the model sees them (preprocessed, prefixed), or None;
        built once per fitted state (:class:`_FitMemo`).

        Returns
        -------
        Calibration or None
        """
        memo = getattr(self, "_fit_memo", None)  # absent in pickles of older versions
        if memo is None:
            return self._build_calibration()
        params = {k: getattr(self, k, None) for k in _CALIBRATION_PARAMS}
        return memo.get("calibration", params, self._build_calibration)

    def _build_calibration(self) -> Any:
        from .backends._int8 import VOCABULARY, Calibration
        from .flow._preprocess import apply_prefix, apply_preprocess, resolve_preprocess

        given = getattr(self, "calibration_texts", None)  # absent in pickles of older versions
        if given is None:
            return None
        name = type(self).__name__
        if self.quantize != "int8":
            raise ValueError(
                f"The 'calibration_texts' parameter of {name} calibrates quantize='int8'; got "
                f"quantize={self.quantize!r}: set quantize='int8', or calibration_texts=None."
            )
        if isinstance(given, str) and given == VOCABULARY:
            return Calibration.from_vocabulary(self.max_length)
        texts = [given] if isinstance(given, str) else list(given)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if isinstance(given, str) or bad or not texts:
            what = (
                "got one string" if isinstance(given, str)
                else f"positions {bad[:10]} are not strings (e.g. {texts[bad[0]]!r})" if bad
                else "got none"
            )  # fmt: skip
            raise ValueError(
                f"The 'calibration_texts' parameter of {name} must be a non-empty list of "
                f"texts like the ones you will encode, or {VOCABULARY!r}; {what}."
            )
        fn = resolve_preprocess(self.preprocess)

        def seen() -> Iterator[str]:  # lazily: only as many as give the distinct ones used
            for start in range(0, len(texts), 64):
                chunk = apply_preprocess(fn, texts[start : start + 64], range(start, start + 64))
                yield from apply_prefix(self.prefix, chunk)

        return Calibration.of(seen(), self.max_length)

    def _check_fitted(self) -> None:
        """Fitted, and with the parameters it was fitted with (see :attr:`_fit_params`)."""
        check_is_fitted(self)
        fitted = getattr(self, "_fitted_params_", None)  # absent in pickles of older versions
        changed = [k for k in fitted or () if _changed(fitted[k], getattr(self, k))]
        if changed:
            what = ", ".join(f"{k}={fitted[k]!r} -> {getattr(self, k)!r}" for k in changed)
            raise ValueError(
                f"The {', '.join(repr(k) for k in changed)} parameter(s) of "
                f"{type(self).__name__} changed after fit ({what}); call fit again."
            )

    def _encoders(self, selfcheck: bool = True) -> list[Encoder]:
        """One encoder per device for this call (devices resolved now; nothing loaded; a
        native runtime's first use on this machine runs its self-check, unless
        ``selfcheck=False``: then only a stored verdict counts)."""
        from .backends._auto import make_encoders

        return make_encoders(
            self.model_identity_, device=self.device, dtype=self.dtype, quantize=self.quantize,
            compile=self.compile, trust_remote_code=self.trust_remote_code,
            backend=getattr(self, "backend", "auto"),  # absent in pickles of older versions
            calibration=self._calibration(), layers=tuple(self.layers_), selfcheck=selfcheck,
            max_length=int(self.max_length),
        )  # fmt: skip

    def _vector_options(self) -> dict[str, Any]:
        """Vector-changing options shared by both vectorizers (part of the cache key)."""
        return key_options(self, None)

    def _fingerprint_options(self) -> dict[str, Any]:
        """This estimator's vector-changing options (the option part of its cache key)."""
        return key_options(self, self._kind)

    def _store_dtype(self) -> str:
        return "float32"

    def _stride(self) -> int:
        return self.max_length // 4 if self.stride is None else int(self.stride)

    def _cache_keys(
        self,
        inputs: Sequence[str],
        encoders: Sequence[Encoder],
        kind: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> list[bytes]:
        """The cache key of each model input: the model, every vector-changing option,
        what the encoder changes (dtype, quantization) and the storage precision.
        ``kind``/``options`` replace the estimator's own (another kind of entry)."""
        from .store._keys import make_keys

        return make_keys(self._key_fingerprint(encoders, kind, options), inputs)

    def _key_fingerprint(
        self,
        encoders: Sequence[Encoder],
        kind: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> str:
        """The fingerprint behind :meth:`_cache_keys` (model, options, encoder, storage)."""
        from .store._fingerprint import fingerprint

        return fingerprint(
            self.model_identity_, kind or self._kind, store_dtype=self._store_dtype(),
            **encoders[0].fingerprint,
            **(self._fingerprint_options() if options is None else options),
        )  # fmt: skip

    def _request(
        self,
        inputs: Sequence[str],
        options: EncodeOptions,
        *,
        positions: Callable[[np.ndarray], np.ndarray],
        n_total: int,
        expected_shapes: Sequence[tuple[int, ...]],
        encoded: Any = None,
        kind: str | None = None,
        fingerprint_options: dict[str, Any] | None = None,
        finish: Callable[[np.ndarray], np.ndarray] | None = None,
        encoders: list[Encoder] | None = None,
    ) -> Request:
        """The :class:`~xlmt_sklearn.flow._pipeline.Request` for distinct ``inputs`` (``kind``,
        ``fingerprint_options`` and ``finish``: another kind of cache entry; ``encoders``:
        the ones this call already made)."""
        from .store._adapt import as_cache

        encoders = self._encoders() if encoders is None else encoders
        return Request(
            keys=self._cache_keys(inputs, encoders, kind, fingerprint_options), texts=inputs,
            encoded=encoded, finish=finish,
            encoders=encoders, cache=as_cache(self.cache), options=options,
            expected_shapes=expected_shapes, max_length=int(self.max_length),
            stride=self._stride(), truncation=self.truncation, positions=positions,
            n_total=n_total, store_dtype=self._store_dtype(), progress=self.progress,
            label=type(self).__name__,
        )  # fmt: skip
