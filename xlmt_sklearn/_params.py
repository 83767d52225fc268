"""The estimators' parameter constraints, built from the declared options (:mod:`._options`).

This is the only module that imports scikit-learn's private validation helpers
(``sklearn.utils._param_validation`` and ``sklearn.base._fit_context``), so a
change in them touches one file; the supported scikit-learn range is pinned in
``pyproject.toml``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
)

__all__ = [
    "BACKENDS",
    "DTYPES",
    "GRANULARITIES",
    "LAYER_AGGREGATIONS",
    "MISSING_POLICIES",
    "POOLING_MODES",
    "PREPROCESSORS",
    "QUANTIZE_MODES",
    "TRUNCATION_MODES",
    "WORD_VECTORS",
    "HasMethods",
    "Interval",
    "StrOptions",
    "_fit_context",
    "constraints",
]

from ._options import (
    BACKENDS,
    DTYPES,
    GRANULARITIES,
    LAYER_AGGREGATIONS,
    MISSING_POLICIES,
    POOLING_MODES,
    PREPROCESSORS,
    QUANTIZE_MODES,
    RUNTIME,
    TRUNCATION_MODES,
    WORD_VECTORS,
    Above,
    AtLeast,
    Choice,
    Fraction,
    Methods,
    options_of,
)


def _constraint(accepted: Any) -> Any:
    """One of an :class:`~xlmt_sklearn._options.Option`'s ``accepts`` as sklearn states it."""
    if isinstance(accepted, Choice):
        return StrOptions(set(accepted.values))
    if isinstance(accepted, AtLeast):
        return Interval(Integral, accepted.low, None, closed="left")
    if isinstance(accepted, Above):
        return Interval(Real, accepted.low, None, closed="neither")
    if isinstance(accepted, Fraction):
        return Interval(Real, 0.0, 1.0, closed=accepted.closed)
    if isinstance(accepted, Methods):
        return HasMethods(list(accepted.names))
    if isinstance(accepted, str) and accepted == RUNTIME:
        from .backends._runtime import BACKEND_NAMES

        # The registry's own set: a runtime registered later is a valid ``backend`` at once.
        return StrOptions(BACKEND_NAMES)
    return accepted


def constraints(kind: str) -> dict[str, list]:
    """``_parameter_constraints`` of the estimator of ``kind``, from the declared options."""
    return {o.name: [_constraint(a) for a in o.accepts] for o in options_of(kind)}
