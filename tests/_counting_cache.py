"""A cache that counts what it is asked to store, across processes (not a test module).

:class:`CountingCache` wraps an :class:`~xlmt_sklearn.EmbeddingCache` and appends one
line per stored key to a log file, so that a test can count encodes made in joblib
workers (``GridSearchCV(n_jobs=2)``): every encoded text is stored exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from xlmt_sklearn import CacheBase, EmbeddingCache


class CountingCache(CacheBase):
    returns_finite_only = True
    coordinates = True

    def __init__(self, path: str, log: str):
        self.path, self.log = str(path), str(log)

    @property
    def inner(self) -> EmbeddingCache:
        return EmbeddingCache(self.path)

    def get_many(self, keys: Sequence[bytes]):
        return self.inner.get_many(keys)

    def put_many(self, keys, arrays, metas=None) -> None:
        with open(self.log, "a", encoding="utf-8") as f:
            f.write("".join(f"{os.getpid()} {k.hex()}\n" for k in keys))
        self.inner.put_many(keys, [np.asarray(a) for a in arrays], metas)

    def claim(self, keys: Sequence[bytes]) -> list[bool]:
        return self.inner.claim(keys)

    def release(self, keys: Sequence[bytes]) -> None:
        self.inner.release(keys)


def stored_keys(log: str) -> list[str]:
    """Every key stored, once per store (repeats mean a text was encoded twice)."""
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as f:
        return [line.split()[1] for line in f if line.strip()]
