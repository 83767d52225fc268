"""Helpers shared by the Spark and Dask integrations (:mod:`.spark`, :mod:`.dask`).

Both ship a fitted estimator to worker processes the same way: the driver
(or client) turns it into a small payload, class plus parameters plus the
pinned ``_`` attributes (:func:`fitted_payload`), and each worker rebuilds it
without calling ``fit`` (:func:`rebuild`); the model then comes from the
worker's process-wide registry. Both refuse null rows under
``missing="error"`` with the same message (:func:`check_no_nulls`) and size
torch's thread pool per worker (:func:`set_torch_threads`).

Neither pyspark nor dask is imported here, and torch only inside
:func:`set_torch_threads`, so importing either integration stays cheap.
"""

from __future__ import annotations

import os
from numbers import Integral
from typing import Any

__all__ = [
    "check_no_nulls",
    "check_num_threads",
    "fitted_payload",
    "is_token_vectorizer",
    "missing_rows",
    "null_error",
    "rebuild",
    "set_torch_threads",
]


def fitted_payload(vectorizer: Any) -> tuple[type, dict[str, Any], dict[str, Any]]:
    """What a worker needs to rebuild ``vectorizer``: class, params, fitted state.

    An unfitted estimator is cloned and fitted first (``fit`` reads the
    model's config only). The fitted state is every ``__dict__`` entry whose
    name ends in ``_`` (the pinned model identity, validated layers, width);
    ``progress`` is switched off for the workers.

    Parameters
    ----------
    vectorizer : XLMTVectorizer or XLMTTokenVectorizer
        The estimator, fitted or not; it is never modified.

    Returns
    -------
    cls : type
        The estimator's class.
    params : dict
        ``get_params(deep=False)``, with ``progress=False``.
    state : dict
        The fitted ``_`` attributes.

    Raises
    ------
    TypeError
        When ``vectorizer`` is not a scikit-learn transformer.
    ValueError
        When a parameter of a fitted vectorizer changed after ``fit``.
    """
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not (hasattr(vectorizer, "get_params") and hasattr(vectorizer, "transform")):
        raise TypeError(
            "Expected a scikit-learn transformer such as XLMTVectorizer; got "
            f"{type(vectorizer).__name__}."
        )
    try:
        check_is_fitted(vectorizer)
        fitted = vectorizer
    except NotFittedError:
        fitted = clone(vectorizer).fit()
    if hasattr(fitted, "_check_fitted"):  # parameters changed after fit: say so here, not later
        fitted._check_fitted()
    params = fitted.get_params(deep=False)
    if "progress" in params:
        params["progress"] = False
    # Public fitted attributes, and what workers check parameters against.
    state = {
        k: v
        for k, v in vars(fitted).items()
        if k.endswith("_") and (not k.startswith("_") or k == "_fitted_params_")
    }
    return type(fitted), params, state


def rebuild(cls: type, params: dict[str, Any], state: dict[str, Any]) -> Any:
    """Inverse of :func:`fitted_payload`: a fitted estimator, no ``fit`` call.

    Parameters
    ----------
    cls : type
        The estimator's class.
    params : dict
        Its constructor parameters.
    state : dict
        Its fitted ``_`` attributes.

    Returns
    -------
    estimator
        A new instance with ``state`` set.
    """
    est = cls(**params)
    est.__dict__.update(state)
    return est


def is_token_vectorizer(cls: type) -> bool:
    """True for :class:`XLMTTokenVectorizer` (one vector per token or word) and subclasses.

    Parameters
    ----------
    cls : type
        An estimator class.

    Returns
    -------
    bool
    """
    from ._token_vectorizer import XLMTTokenVectorizer

    return isinstance(cls, type) and issubclass(cls, XLMTTokenVectorizer)


def check_num_threads(num_threads: Any) -> int | None:
    """Validate the ``num_threads`` argument of the integrations.

    Parameters
    ----------
    num_threads : int or None
        Torch threads per worker, or None for the integration's default.

    Returns
    -------
    int or None
        ``num_threads`` as an int, or None.

    Raises
    ------
    ValueError
        For anything but a positive int (a bool is refused) or None.
    """
    if num_threads is None:
        return None
    if not isinstance(num_threads, Integral) or isinstance(num_threads, bool) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None; got {num_threads!r}.")
    return int(num_threads)


def set_torch_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads and return the number set.

    Parameters
    ----------
    num_threads : int or None
        The number of threads; None: ``OMP_NUM_THREADS``, otherwise 1.

    Returns
    -------
    int
        The number of threads torch now uses.
    """
    # torch is a core dependency; it is imported here, on a worker, and never
    # when the integration module is imported.
    import torch

    if num_threads is None:
        try:
            num_threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
        except ValueError:
            num_threads = 1
    n = max(1, int(num_threads))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def missing_rows(values: list[Any]) -> list[int]:
    """Positions of None/NaN/NA in ``values``.

    Parameters
    ----------
    values : list
        The rows of one batch or partition.

    Returns
    -------
    list of int
    """
    from .flow._inputs import is_missing

    return [i for i, v in enumerate(values) if is_missing(v)]


def null_error(
    input_name: str | None, n_null: int, n_rows: int, *, where: str, drop_hint: str
) -> ValueError:
    """The error for null inputs under ``missing="error"`` (Spark and Dask).

    Parameters
    ----------
    input_name : str or None
        The column's name, if known.
    n_null, n_rows : int
        Null rows, and all rows, of the batch or partition.
    where : str
        Which batch or partition, e.g. ``"in partition 3"``.
    drop_hint : str
        How to drop nulls on that framework, e.g. ``"df.na.drop(subset=[...])"``.

    Returns
    -------
    ValueError
        The error to raise.
    """
    col = "The input column" if input_name is None else f"Column {input_name!r}"
    return ValueError(
        f"{col} has null values ({n_null} of {n_rows} rows {where}) and the vectorizer "
        f"has missing='error'. Drop them first ({drop_hint}), or set missing='zeros' "
        "(zero vectors) or missing='empty' (embed them as the empty text)."
    )


def check_no_nulls(
    est: Any, values: list[Any], input_name: str | None, *, where: str, drop_hint: str
) -> None:
    """Raise :func:`null_error` when ``est`` refuses missing values and ``values`` has some.

    Parameters
    ----------
    est : estimator
        The rebuilt estimator; its ``missing`` policy decides.
    values : list
        The rows of one batch or partition.
    input_name : str or None
        The column's name, if known.
    where, drop_hint : str
        As in :func:`null_error`.

    Raises
    ------
    ValueError
        When ``est.missing == "error"`` and a row is None/NaN/NA.
    """
    if getattr(est, "missing", "error") != "error":
        return
    bad = missing_rows(values)
    if bad:
        raise null_error(input_name, len(bad), len(values), where=where, drop_hint=drop_hint)
