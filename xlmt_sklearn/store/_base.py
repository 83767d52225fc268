"""The cache interface (step 4/9): what the vectorizers need from a cache.

:class:`CacheBase` follows joblib's ``StoreBackendBase``: two primitives that
every cache implements (``get_many``, ``put_many``) and optional methods with
defaults (``regroup``, ``clear``, ``close``, ``stats``). Its implementations:
:class:`~xlmt_sklearn.store._cache.EmbeddingCache` (SQLite), :class:`NullCache` (the
null object for ``cache=None``) and :class:`_DuckCache`, through which
:func:`~xlmt_sklearn.store._adapt.as_cache` lets any object with ``get_many`` and
``put_many`` methods act as a cache. Callers only ever see a :class:`CacheBase`,
so none of them probes an object for methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CacheBase", "CacheStats", "NullCache"]


@dataclass(frozen=True)
class CacheStats:
    """Counters of a cache.

    Attributes
    ----------
    hits : int
        Keys found by this object's ``get_many`` calls in this process.
    misses : int
        Keys not found (including all keys looked up while the cache was
        unusable) by this object in this process.
    entries : int
        Entries in the database (all processes).
    bytes : int
        Summed array bytes of those entries (what ``max_size`` limits).
    path : str or None
        The database file, or ``None`` for :class:`NullCache`.
    """

    hits: int
    misses: int
    entries: int
    bytes: int
    path: str | None

    @property
    def hit_rate(self) -> float:
        """Fraction of lookups that were hits (0.0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class CacheBase(ABC):
    """What the vectorizers need from a cache: the interface every cache implements.

    A subclass implements the two primitives, :meth:`get_many` and
    :meth:`put_many`; the other methods have defaults. Keys are 32-byte digests
    from :func:`~xlmt_sklearn.store._keys.make_keys` (a key covers the model and
    every option that changes a vector), values are float32 or float16 arrays,
    and each value carries an integer ``meta`` that must come back with it (the
    vectorizers store whether the text was longer than ``max_length`` there).

    An object that is not a subclass but has ``get_many`` and ``put_many``
    methods with these signatures is accepted too:
    :func:`~xlmt_sklearn.store._adapt.as_cache` wraps it, and any of :meth:`regroup`,
    :meth:`clear`, :meth:`close` or :attr:`stats` it lacks takes the default
    below.

    Notes
    -----
    A cache may lose entries at any time (a miss is always safe: the vector is
    computed again), but a hit must return exactly the array and meta stored for
    that key. ``get_many`` is called with up to 1,000 keys at a time and
    ``put_many`` once per encoded batch, possibly from several threads.
    """

    #: True when :meth:`get_many` never returns an array holding NaN or inf (it checks
    #: its hits itself); otherwise the vectorizers check every hit and treat a non-finite
    #: one as a miss.
    returns_finite_only: bool = False
    #: True when :meth:`claim` coordinates processes (the vectorizers then look their
    #: claimed keys up once more before encoding them); False: it claims everything.
    coordinates: bool = False

    # -- Public interface: primitives --------------------------------------------------

    @abstractmethod
    def get_many(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, int] | None]:
        """Look up many keys at once.

        Parameters
        ----------
        keys : sequence of bytes
            Keys from :func:`~xlmt_sklearn.store._keys.make_keys`.

        Returns
        -------
        list of (numpy.ndarray, int) or None
            One item per key, in order: ``(array, meta)`` on a hit, ``None`` on a
            miss.
        """

    @abstractmethod
    def put_many(
        self,
        keys: Sequence[bytes],
        arrays: Sequence[np.ndarray],
        metas: Sequence[int] | None = None,
    ) -> None:
        """Store many entries (replacing existing keys).

        Parameters
        ----------
        keys : sequence of bytes
            Keys from :func:`~xlmt_sklearn.store._keys.make_keys`.
        arrays : sequence of numpy.ndarray
            One float32 or float16 array per key.
        metas : sequence of int or None, default=None
            One integer per key, returned with the array by :meth:`get_many`;
            ``None`` means 0 for every key.
        """

    # -- Public interface: optional, with defaults -------------------------------------

    def claim(self, keys: Sequence[bytes]) -> list[bool]:
        """Claim missing ``keys`` for this process to encode; per key, whether it may.

        Processes sharing a cache call it before encoding their misses, so that no
        two encode a key at once (a key it may not encode is being encoded by
        another live process: the vectorizers wait for it, with a deadline). The
        default claims every key (no coordination; see :attr:`coordinates`).
        """
        return [True] * len(keys)

    def release(self, keys: Sequence[bytes]) -> None:  # noqa: B027 (a no-op by design)
        """Drop this process's claims on ``keys`` (after writing them, or on failure)."""

    def recheck(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, int] | None]:
        """Look up keys this object missed once already (after claiming them, in case
        another process stored them meanwhile); the default is :meth:`get_many`. A cache
        that counts misses should not count these again."""
        return self.get_many(keys)

    def regroup(self, keys: Sequence[bytes]) -> None:  # noqa: B027 (a no-op by design)
        """Hint that ``keys`` will be looked up together, in this order.

        The vectorizers call it after writing a chunk of new texts. A layout
        hint that must not change any value; the default does nothing.

        Parameters
        ----------
        keys : sequence of bytes
            Keys, in the order of later lookups.
        """

    def clear(self) -> None:
        """Delete every entry.

        Raises
        ------
        NotImplementedError
            By default: a cache that cannot be cleared says so rather than keep
            entries it was asked to delete.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support clear()")

    def close(self) -> None:  # noqa: B027 (a no-op by design)
        """Release what the cache holds open (files, connections); the default does nothing.

        The cache must stay usable: the next call reopens what it needs.
        """

    @property
    def stats(self) -> CacheStats:
        """:class:`CacheStats` of the cache; by default all zero with ``path=None``."""
        return CacheStats(hits=0, misses=0, entries=0, bytes=0, path=None)


class NullCache(CacheBase):
    """A cache that stores nothing: the null object used for ``cache=None``.

    Same API as :class:`~xlmt_sklearn.store._cache.EmbeddingCache`; ``get_many``
    always misses, writes are dropped and every counter stays zero.
    """

    returns_finite_only = True  # it returns nothing

    path = None
    max_size = None

    def get_many(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, int] | None]:
        """Return ``None`` for every key.

        Parameters
        ----------
        keys : sequence of bytes
            Keys to look up.

        Returns
        -------
        list of None
        """
        return [None] * len(keys)

    def put_many(
        self,
        keys: Sequence[bytes],
        arrays: Sequence[np.ndarray],
        metas: Sequence[int] | None = None,
    ) -> None:
        """Drop the entries.

        Parameters
        ----------
        keys : sequence of bytes
            Ignored.
        arrays : sequence of numpy.ndarray
            Ignored.
        metas : sequence of int or None, default=None
            Ignored.
        """

    def clear(self) -> None:
        """Do nothing: there is nothing to delete."""

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "NullCache()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NullCache)

    def __hash__(self) -> int:
        return hash(NullCache)


class _DuckCache(CacheBase):
    """A user object with ``get_many`` and ``put_many`` seen through :class:`CacheBase`.

    The primitives are forwarded; each optional method is the object's own when
    it has one, else :class:`CacheBase`'s default. This is the one place where a
    cache object is probed for methods.
    """

    def __init__(self, cache: Any):
        self.cache = cache
        self.coordinates = bool(getattr(cache, "coordinates", hasattr(cache, "claim")))

    def get_many(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, int] | None]:
        values = list(self.cache.get_many(keys))
        if len(values) != len(keys):
            raise ValueError(
                f"{type(self.cache).__name__}.get_many returned {len(values)} values for "
                f"{len(keys)} keys; it must return one (array, meta) or None per key"
            )
        return values

    def put_many(
        self,
        keys: Sequence[bytes],
        arrays: Sequence[np.ndarray],
        metas: Sequence[int] | None = None,
    ) -> None:
        self.cache.put_many(keys, arrays, metas)

    def regroup(self, keys: Sequence[bytes]) -> None:
        if hasattr(self.cache, "regroup"):
            self.cache.regroup(keys)

    def recheck(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, int] | None]:
        if hasattr(self.cache, "recheck"):
            return list(self.cache.recheck(keys))
        return self.get_many(keys)

    def claim(self, keys: Sequence[bytes]) -> list[bool]:
        if hasattr(self.cache, "claim"):
            return list(self.cache.claim(keys))
        return super().claim(keys)

    def release(self, keys: Sequence[bytes]) -> None:
        if hasattr(self.cache, "release"):
            self.cache.release(keys)

    def clear(self) -> None:
        if not hasattr(self.cache, "clear"):
            raise NotImplementedError(f"{type(self.cache).__name__} does not support clear()")
        self.cache.clear()

    def close(self) -> None:
        if hasattr(self.cache, "close"):
            self.cache.close()

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats if hasattr(self.cache, "stats") else super().stats

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cache!r})"
