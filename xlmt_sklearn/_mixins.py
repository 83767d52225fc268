"""Small bases shared by every estimator of the package: feature names, token-feature input.

Each estimator used to write these itself (four ``get_feature_names_out``, two
sets of token-input tags and one input coercion shared across modules); they
are defined once here, in the style of scikit-learn's
``ClassNamePrefixFeaturesOutMixin``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .flow._tokens import PaddedTokens

__all__ = ["ClassNameFeatureNamesMixin", "TokenInputMixin", "as_ragged", "token_input_width"]


class ClassNameFeatureNamesMixin:
    """``get_feature_names_out`` for outputs whose columns have no names of their own."""

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output feature names: the class name in lower case, then the column number.

        ``xlmtvectorizer0``, ``xlmtvectorizer1``, ... ; for token features, the
        columns of one token vector (``xlmttokenvectorizer0``, ...).

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        ndarray of str objects, of length ``n_features_out_``
        """
        check_is_fitted(self)
        prefix = type(self).__name__.lower()
        n = self.n_features_out_  # type: ignore[attr-defined]
        return np.asarray([f"{prefix}{i}" for i in range(n)], dtype=object)


class TokenInputMixin:
    """Tags of an estimator whose input is token features.

    The input is ragged ``(n_tokens, dim)`` arrays per text, a
    :class:`PaddedTokens` or a 3-D array, never a 2-D feature matrix; the output
    is float32.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def as_ragged(X: Any, owner: str) -> list[np.ndarray]:
    """Token features in any accepted container -> one float32 (n_tokens, dim) array per text.

    ``owner`` names the estimator in error messages.
    """
    if isinstance(X, PaddedTokens):
        return [v[m] for v, m in zip(X.values, X.mask, strict=True)]
    if isinstance(X, np.ndarray) and X.ndim == 3:
        return list(X)
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(
            f"{owner} expects token features (a list/object array of 2-D arrays, a "
            f"PaddedTokens or a 3-D array); got {type(X).__name__}."
        )
    out = []
    for i, m in enumerate(X):
        a = np.asarray(m, dtype=np.float32)
        if a.ndim != 2:
            raise ValueError(
                f"{owner} expects a (n_tokens, dim) array per text; row {i} has shape {a.shape}."
            )
        out.append(a)
    return out


def token_input_width(X: Any, mats: list[np.ndarray], owner: str) -> int:
    """The width of one token vector of ``X`` (``mats`` is ``as_ragged(X, owner)``)."""
    if isinstance(X, (PaddedTokens, np.ndarray)) and getattr(X, "ndim", 3) == 3:
        return int(X.shape[-1])
    if mats:
        return int(mats[0].shape[1])
    raise ValueError(f"{owner}.fit needs at least one text to learn the token width.")
