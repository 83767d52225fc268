"""What a process keeps loaded: one least-recently-used map per kind of thing.

:class:`LRURegistry` serves the loaded torch models (:mod:`xlmt_sklearn._model`) and
the compiled runtime models (:mod:`xlmt_sklearn.backends._runtime`) alike: a value is
built once per key (threads that want the same key wait for its build; other keys and
cached values are served meanwhile), and the least recently used values beyond a limit
are dropped. No third-party import.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["LRURegistry"]


class LRURegistry(OrderedDict):
    """An ordered map (least recently used first) with :meth:`get_or_build`.

    ``lock`` guards the map and is held for dictionary work only, never during a build.

    Examples
    --------
    >>> r = LRURegistry()
    >>> r.get_or_build("a", lambda: 1, limit=1), r.get_or_build("b", lambda: 2, limit=1)
    (1, 2)
    >>> list(r)
    ['b']
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()
        self._building: dict[Hashable, threading.Lock] = {}

    def get_or_build(self, key: Hashable, build: Callable[[], Any], limit: int) -> Any:
        """The value of ``key``, built by ``build()`` on first use; at most ``limit`` kept."""
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per key; other keys go on meanwhile
            with self.lock:
                if key in self:  # built while this thread waited
                    self.move_to_end(key)
                    return self[key]
            try:
                value = build()
            except BaseException:  # the next call builds again, with a fresh lock
                with self.lock:
                    self._building.pop(key, None)
                raise
            with self.lock:
                self[key] = value
                self._building.pop(key, None)
                while len(self) > max(1, int(limit)):
                    self.popitem(last=False)
            return value

    def clear(self) -> None:
        """Drop every value (builds under way finish; their holders keep what they built)."""
        with self.lock:
            super().clear()
            self._building.clear()
