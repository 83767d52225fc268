"""``LayerSelector``: choose layers after the model ran, from token features that hold several.

``XLMTTokenVectorizer(layers=[-4, -3, -2, -1], layer_aggregation="concat")``
gives per-token vectors with four layers side by side. A ``LayerSelector`` cuts
any choice of those layers out of them and aggregates it as the vectorizers
would, so ``XLMTTokenVectorizer -> LayerSelector -> TokenPooler`` tries every
layers x pooling combination of a grid search from one encode (the token
matrices come from the cache).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._mixins import ClassNameFeatureNamesMixin, TokenInputMixin, as_ragged, token_input_width
from ._options import LAYER_AGGREGATIONS
from ._params import StrOptions, _fit_context

__all__ = ["LayerSelector"]


def _as_tuple(layers: Any, name: str) -> tuple[int, ...]:
    seq = (layers,) if isinstance(layers, Integral) else tuple(layers)
    if not seq or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in seq):
        raise ValueError(
            f"The {name!r} parameter of LayerSelector must be an int or a non-empty sequence "
            f"of ints; got {layers!r}."
        )
    return tuple(int(v) for v in seq)


class LayerSelector(
    TokenInputMixin, ClassNameFeatureNamesMixin, TransformerMixin, BaseEstimator,
    auto_wrap_output_keys=None,
):  # fmt: skip
    """Select and aggregate layers from token features that hold several layers.

    Parameters
    ----------
    layers : int or sequence of int, default=-1
        The model layers to keep, named as in the vectorizers' ``layers``
        (``hidden_states`` indices: 0 = embeddings, -1 = last layer). Each must
        be one of ``source_layers``.
    layer_aggregation : {"mean", "concat"}, default="mean"
        How several ``layers`` are combined per token, as in the vectorizers.
    source_layers : int or sequence of int, default=(-4, -3, -2, -1)
        The ``layers`` the token vectorizer concatenated, in its order (it
        must use ``layer_aggregation="concat"``).

    Attributes
    ----------
    n_features_in_ : int
        Width of one input token vector (all source layers).
    hidden_size_ : int
        Width of one layer: ``n_features_in_ / len(source_layers)``.
    columns_ : tuple of int
        Positions in ``source_layers`` of the selected layers.
    n_features_out_ : int
        Width of one output token vector.

    See Also
    --------
    XLMTTokenVectorizer : Token features, several layers concatenated.
    TokenPooler : Pool the selected token features into one row per text.

    Notes
    -----
    The mean of several layers is taken in float32 with numpy; it equals the
    vectorizers' (torch) mean up to float rounding (~1e-7).

    Examples
    --------
    >>> import numpy as np
    >>> tokens = [np.array([[1.0, 2.0, 3.0, 4.0]])]  # one token, two 2-wide layers
    >>> LayerSelector(layers=-1, source_layers=[-2, -1]).fit_transform(tokens)[0]
    array([[3., 4.]], dtype=float32)
    >>> LayerSelector(layers=[-2, -1], source_layers=[-2, -1]).fit_transform(tokens)[0]
    array([[2., 3.]], dtype=float32)
    """

    _parameter_constraints: dict = {
        "layers": [Integral, "array-like"],
        "layer_aggregation": [StrOptions(set(LAYER_AGGREGATIONS))],
        "source_layers": [Integral, "array-like"],
    }

    def __init__(
        self,
        layers: int | list[int] = -1,
        layer_aggregation: str = "mean",
        source_layers: int | tuple[int, ...] = (-4, -3, -2, -1),
    ):
        self.layers = layers
        self.layer_aggregation = layer_aggregation
        self.source_layers = source_layers

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> LayerSelector:
        """Check the layers and learn the width of one layer from ``X``.

        Parameters
        ----------
        X : list or object array of (n_tokens, dim) arrays, PaddedTokens or 3-D array
            Token features whose ``dim`` is ``len(source_layers)`` layers wide.
        y : None
            Ignored.

        Returns
        -------
        self : LayerSelector
        """
        source = _as_tuple(self.source_layers, "source_layers")
        layers = _as_tuple(self.layers, "layers")
        if len(set(source)) != len(source):
            raise ValueError(f"source_layers of LayerSelector repeats a layer: {source}.")
        missing = [v for v in layers if v not in source]
        if missing:
            raise ValueError(
                f"The 'layers' parameter of LayerSelector asks for layers {missing} that the "
                f"token features do not hold (source_layers={list(source)}). Encode them with "
                "XLMTTokenVectorizer(layers=..., layer_aggregation='concat')."
            )
        width = token_input_width(X, as_ragged(X, "LayerSelector"), "LayerSelector")
        if width % len(source):
            raise ValueError(
                f"Token vectors are {width} wide, which is not {len(source)} layers "
                f"(source_layers={list(source)}) of equal width."
            )
        self.n_features_in_ = int(width)
        self.hidden_size_ = width // len(source)
        self.columns_ = tuple(source.index(v) for v in layers)
        concat = self.layer_aggregation == "concat" and len(layers) > 1
        self.n_features_out_ = self.hidden_size_ * (len(layers) if concat else 1)
        return self

    def transform(self, X: Any) -> Any:
        """Cut the chosen layers out of every text's token matrix.

        Parameters
        ----------
        X : list or object array of (n_tokens, dim) arrays, PaddedTokens or 3-D array

        Returns
        -------
        ndarray of objects
            One float32 ``(n_tokens, n_features_out_)`` array per text (a pandas
            Series with the input's index when ``X`` is one).
        """
        check_is_fitted(self)
        mats = as_ragged(X, "LayerSelector")
        h, n = self.hidden_size_, self.n_features_in_ // self.hidden_size_
        out = np.empty(len(mats), dtype=object)
        for i, m in enumerate(mats):
            if m.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"LayerSelector was fitted on {self.n_features_in_}-wide tokens; row {i} has "
                    f"width {m.shape[1]}."
                )
            chosen = m.reshape(len(m), n, h)[:, list(self.columns_)]
            if len(self.columns_) == 1:
                out[i] = np.ascontiguousarray(chosen[:, 0])
            elif self.layer_aggregation == "mean":
                out[i] = chosen.mean(axis=1, dtype=np.float32)
            else:
                out[i] = chosen.reshape(len(m), -1)
        if type(X).__module__.startswith("pandas"):
            import pandas as pd

            return pd.Series(out, index=X.index, dtype=object)
        return out

    def set_output(self, *, transform: str | None = None) -> LayerSelector:
        """Accepted for Pipelines; token features keep their container (a pandas input
        gives a pandas Series, indexed like it).

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None
            Ignored.

        Returns
        -------
        self : LayerSelector
        """
        return self
