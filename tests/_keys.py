"""The cache keys an estimator uses for texts: what tests of the cache files look up."""

from __future__ import annotations

from xlmt_sklearn.flow._preprocess import prepare


def cache_keys(est, texts) -> list[bytes]:
    """The cache key of each text for the fitted ``est`` (either estimator, plain texts)."""
    inputs, _ = prepare(list(texts), est.preprocess, est.prefix, list(range(len(texts))))
    return est._cache_keys(inputs, est._encoders())
