"""Helper process for the multi-process cache tests (not a test module).

Usage::

    python _cache_worker.py write  PATH FIRST STOP BATCH DIM   # waits for "go" on stdin
    python _cache_worker.py hammer PATH DIM BATCH SEED          # writes until killed
    python _cache_worker.py read   PATH N DIM SECONDS           # reads and verifies
    python _cache_worker.py interrupt PATH TRIALS DIM SEED      # Ctrl-C mid-operation
    python _cache_worker.py survive PATH N DIM SECONDS         # reads; warnings allowed

Values are a deterministic function of the key (:func:`value_for`), so writers
with overlapping keys write identical values and any reader can check any hit.
Every CacheWarning is turned into an error: the worker exits non-zero on any
cache problem or wrong value.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import numpy as np


def _skip_package_init() -> None:
    # The package __init__ imports scikit-learn and the vectorizer (seconds on a busy
    # machine, per worker); the cache modules need only numpy, so register a bare
    # package pointing at this checkout and import just those.
    package = types.ModuleType("xlmt_sklearn")
    package.__path__ = [str(Path(__file__).resolve().parents[1] / "xlmt_sklearn")]
    sys.modules["xlmt_sklearn"] = package


if __name__ == "__main__":
    _skip_package_init()

from xlmt_sklearn._errors import CacheWarning  # noqa: E402
from xlmt_sklearn.store._cache import EmbeddingCache  # noqa: E402
from xlmt_sklearn.store._keys import make_keys  # noqa: E402

FINGERPRINT = "worker-test"


def keys_for(indices) -> list[bytes]:
    """Keys of the texts ``"text <i>"``."""
    return make_keys(FINGERPRINT, [f"text {i}" for i in indices])


def value_for(key: bytes, dim: int) -> np.ndarray:
    """The float32 vector that belongs to ``key`` (its bytes repeated, as numbers 0-255: finite,
    as the cache requires); compare with tobytes()."""
    raw = (key * (dim // len(key) + 1))[:dim]
    return np.frombuffer(raw, dtype=np.uint8).astype(np.float32)


def _write(path: str, first: int, stop: int, batch: int, dim: int) -> None:
    cache = EmbeddingCache(path)
    print("ready", flush=True)
    sys.stdin.readline()  # start barrier, so all writers really run at once
    for n, start in enumerate(range(first, stop, batch)):
        idx = range(start, min(start + batch, stop))
        keys = keys_for(idx)
        cache.put_many(keys, [value_for(k, dim) for k in keys], list(idx))
        if n % 2:  # rewrite the layout (as transforms do) while the others write
            cache.regroup(keys_for(range(stop - 1, first - 1, -1)))
    print("done", flush=True)


def _hammer(path: str, dim: int, batch: int, seed: int) -> None:
    cache = EmbeddingCache(path, max_size=8 * batch * dim * 4)
    rng = np.random.default_rng(seed)
    announced = False
    while True:
        idx = rng.choice(5 * batch, size=batch, replace=False)
        keys = keys_for(idx)
        cache.put_many(keys, [value_for(k, dim) for k in keys], idx.tolist())
        cache.regroup(keys_for(rng.permutation(5 * batch)))  # kills also land mid-regroup
        cache.get_many(keys[: batch // 2])
        if not announced:
            print("ready", flush=True)
            announced = True


def _survive(path: str, n: int, dim: int, seconds: float) -> None:
    # Like _read, while the file is damaged under it: CacheWarnings are expected, but a
    # hit must still be right, and the process must not die.
    warnings.simplefilter("ignore", CacheWarning)
    _read(path, n, dim, seconds)


def _read(path: str, n: int, dim: int, seconds: float) -> None:
    cache = EmbeddingCache(path)
    keys = keys_for(range(n))
    expected = [value_for(k, dim).tobytes() for k in keys]  # so that it mostly reads
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline or rounds < 3:
        for want, hit in zip(expected, cache.get_many(keys), strict=True):
            if hit is not None and hit[0].tobytes() != want:
                raise AssertionError("wrong vector returned")
        rounds += 1
    print("done", rounds, flush=True)


def _interrupt(path: str, trials: int, dim: int, seed: int) -> None:
    # KeyboardInterrupt (what Ctrl-C or a notebook's "interrupt kernel" raises) at a
    # random moment of writes, regroups and reads, ``trials`` times; then, once the
    # parent has checked that the write lock is free, the same cache must still work.
    # interrupt_main() raises KeyboardInterrupt through SIGINT's handler: a background
    # job or a CI runner may have started this process with SIGINT ignored, where it
    # would do nothing and the loop below would never end.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cache = EmbeddingCache(path)
    rng = np.random.default_rng(seed)
    cache.get_many(keys_for(range(1)))  # open the store before the first interrupt
    landed = 0
    for _ in range(trials):
        timer = threading.Timer(float(rng.uniform(0.001, 0.03)), _thread.interrupt_main)
        try:
            timer.start()  # may itself be interrupted on a busy machine
            while True:
                idx = rng.choice(4000, size=1000, replace=False)
                keys = keys_for(idx)
                cache.put_many(keys, [value_for(k, dim) for k in keys], idx.tolist())
                cache.regroup(keys_for(rng.permutation(4000)))
                cache.get_many(keys)
        except KeyboardInterrupt:
            landed += 1
        timer.join()
    print("interrupted", landed, flush=True)
    sys.stdin.readline()  # the parent writes to the file in between
    keys = keys_for(range(5000, 5100))
    cache.put_many(keys, [value_for(k, dim) for k in keys], list(range(5000, 5100)))
    for key, hit in zip(keys, cache.get_many(keys), strict=True):
        if hit is None or hit[0].tobytes() != value_for(key, dim).tobytes():
            raise AssertionError("the cache stopped working after the interrupts")
    print("done", flush=True)


def main(argv: list[str]) -> None:
    warnings.simplefilter("error", CacheWarning)
    mode, path, *args = argv
    if mode == "write":
        _write(path, *map(int, args))
    elif mode == "hammer":
        _hammer(path, *map(int, args))
    elif mode == "read":
        _read(path, int(args[0]), int(args[1]), float(args[2]))
    elif mode == "survive":
        _survive(path, int(args[0]), int(args[1]), float(args[2]))
    elif mode == "interrupt":
        _interrupt(path, *map(int, args))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
