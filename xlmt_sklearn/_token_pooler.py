"""``TokenPooler``: token features (ragged or padded) -> one row per text."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._mixins import ClassNameFeatureNamesMixin, TokenInputMixin, as_ragged, token_input_width
from ._params import StrOptions, _fit_context
from .flow._pooling import POOLING_PARTS, l2_normalize_rows, pool_matrix

__all__ = ["TokenPooler"]


class TokenPooler(TokenInputMixin, ClassNameFeatureNamesMixin, TransformerMixin, BaseEstimator):
    """Pool per-token vectors into one vector per text.

    Put it after :class:`XLMTTokenVectorizer` to grid-search the pooling
    without running the model again (the token matrices come from the
    cache). With ``special_tokens=True`` subword features, ``pooling="mean"``
    equals :class:`XLMTVectorizer` ``(pooling="mean")``.

    Parameters
    ----------
    pooling : {"mean", "max", "cls", "mean_max", "first_last"}, default="mean"
        ``"mean"``/``"max"`` over the tokens; ``"cls"``: the first token;
        ``"mean_max"``: both concatenated; ``"first_last"``: the first and
        last token concatenated. A text with no tokens gives a zero row.
    normalize : bool, default=False
        L2-normalise each output row.

    Attributes
    ----------
    n_features_in_ : int
        Width of one token vector, seen in ``fit``.
    n_features_out_ : int
        Width of an output row.

    Examples
    --------
    >>> import numpy as np
    >>> tokens = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((0, 2))]
    >>> TokenPooler().fit_transform(tokens)
    array([[2., 3.],
           [0., 0.]], dtype=float32)
    """

    _parameter_constraints: dict = {
        "pooling": [StrOptions(set(POOLING_PARTS))],
        "normalize": ["boolean"],
    }

    def __init__(self, pooling: str = "mean", normalize: bool = False):
        self.pooling = pooling
        self.normalize = normalize

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> TokenPooler:
        """Record the token width.

        Parameters
        ----------
        X : list or object array of (n_tokens, dim) arrays, PaddedTokens or 3-D array
        y : None
            Ignored.

        Returns
        -------
        self : TokenPooler
        """
        self.n_features_in_ = token_input_width(X, as_ragged(X, "TokenPooler"), "TokenPooler")
        self.n_features_out_ = self.n_features_in_ * len(POOLING_PARTS[self.pooling])
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Pool each text's tokens.

        Parameters
        ----------
        X : list or object array of (n_tokens, dim) arrays, PaddedTokens or 3-D array

        Returns
        -------
        ndarray of shape (n_texts, n_features_out_), float32
        """
        check_is_fitted(self)
        mats = as_ragged(X, "TokenPooler")
        out = np.zeros((len(mats), self.n_features_out_), dtype=np.float32)
        d = self.n_features_in_
        for i, m in enumerate(mats):
            if m.shape[1] != d:
                raise ValueError(
                    f"TokenPooler was fitted on {d}-wide tokens; row {i} has width {m.shape[1]}."
                )
            if len(m):
                out[i] = pool_matrix(m, self.pooling)
        return l2_normalize_rows(out) if self.normalize else out
