"""Any ``cache=`` value as one :class:`~._base.CacheBase`: one object per path and process."""

from __future__ import annotations

import os
import threading

from .._state import owns
from ._base import CacheBase, NullCache, _DuckCache
from ._cache import _WARNED, _WARNED_LOCK, EmbeddingCache, _resolve_path

#: The EmbeddingCache of each (path, process).
_MEMO: dict[tuple[str, int], EmbeddingCache] = {}
_MEMO_LOCK = threading.Lock()


def as_cache(cache: object) -> CacheBase:
    """Turn a ``cache=`` argument into a :class:`CacheBase`.

    Parameters
    ----------
    cache : None, str, os.PathLike, CacheBase or object with get_many/put_many
        ``None`` gives a :class:`NullCache`; a path gives an unlimited
        :class:`EmbeddingCache`, the same object for the same resolved path
        within a process (so repeated transforms share its connection and
        counters); a :class:`CacheBase` (an :class:`EmbeddingCache`, a
        :class:`NullCache` or a user subclass) is returned unchanged; any other
        object with ``get_many`` and ``put_many`` methods is wrapped so that the
        methods of :class:`CacheBase` it lacks take their defaults.

    Returns
    -------
    CacheBase

    Raises
    ------
    TypeError
        For any other value, and for a class where an instance is expected.
    """
    if cache is None:
        return NullCache()
    if isinstance(cache, CacheBase):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        path = _resolve_path(cache)
        key = (str(path), os.getpid())
        with _MEMO_LOCK:
            found = _MEMO.get(key)
            if found is None:
                found = _MEMO[key] = EmbeddingCache(path)
        return found
    if isinstance(cache, type):
        raise TypeError(f"cache must be a cache object, not the class {cache.__name__}; call it")
    if callable(getattr(cache, "get_many", None)) and callable(getattr(cache, "put_many", None)):
        return _DuckCache(cache)
    raise TypeError(
        "cache must be None, a path (str or os.PathLike) to a cache file or directory, "
        "an EmbeddingCache, a NullCache, or an object with get_many and put_many methods "
        f"(see CacheBase); got {type(cache).__name__}"
    )


@owns("caches")
def _reset_caches() -> None:
    with _WARNED_LOCK:
        _WARNED.clear()
    with _MEMO_LOCK:
        caches = list(_MEMO.values())
        _MEMO.clear()
    for cache in caches:
        cache.close()
