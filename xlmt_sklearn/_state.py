"""Process state in one place: every registry, memo and pool the package keeps per process.

Estimators hold no heavy object (see :mod:`xlmt_sklearn._model`); what is shared
between calls lives in a few module-level objects, listed here with the one
function that resets them all, :func:`reset_process_state`.

- ``models``: ``_model._REGISTRY``, ``_TOKENIZERS`` and ``_LOADS``: loaded models
  (an LRU of ``XLMT_SKLEARN_MAX_MODELS``), their tokenizers, the load counters.
- ``model_hashes``: ``_model._HASH_MEMO``: content hashes of local model folders.
- ``packed_weights``: ``_packed._PACKED``: fused q/k/v weights per model (weak refs).
- ``runtimes``: ``_encoders_runtime._COMPILED``: compiled OpenVINO / ONNX Runtime
  models; ``_convert._VERIFIED``: converted folders already hashed; the CPU probes
  behind ``backend="auto"`` (``native_bf16``, ``openvino_has_bf16``), asked once.
- ``verdicts``: ``_selfcheck._VERDICTS``: the runtimes' self-check verdicts read or
  made (they are stored on disk too); ``_backends._WARNED``: the fallbacks already
  warned about.
- ``caches``: ``_cache._MEMO``: the ``EmbeddingCache`` of each path; ``_cache._WARNED``:
  the cache warnings given (once per process, file and cause).
- ``connections``: ``_sqlite_store._pool._POOL``: one SQLite connection per path.
- ``environment``: ``_scheduler._glibc``: ``XLMT_SKLEARN_MALLOC_TUNING``, read once.

Connections that must never be closed (``_sqlite_store._files._ABANDONED``:
closing them would delete another file's write-ahead log) are deliberately
not reset. Connections and caches are also renewed after ``fork()`` by the
store itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["STATE", "reset_process_state"]


def _module(name: str):
    # Only modules already imported hold state: resetting never imports torch or SQLite.
    return sys.modules.get(f"xlmt_sklearn.{name}")


def _reset_models() -> None:
    if (mod := _module("_model")) is not None:
        mod.clear_model_registry()
        for key in mod._LOADS:
            mod._LOADS[key] = 0


def _reset_model_hashes() -> None:
    if (mod := _module("_model")) is not None:
        mod._HASH_MEMO.clear()


def _reset_packed_weights() -> None:
    if (mod := _module("_packed")) is not None:
        mod._PACKED.clear()


def _reset_runtimes() -> None:
    if (mod := _module("_encoders_runtime")) is not None:
        mod._COMPILED.clear()
        mod.openvino_has_bf16.cache_clear()
        mod.drop_openvino_compile_cache.cache_clear()
    if (mod := _module("_convert")) is not None:
        mod._VERIFIED.clear()
    if (mod := _module("_backends")) is not None:
        mod.native_bf16.cache_clear()


def _reset_verdicts() -> None:
    if (mod := _module("_selfcheck")) is not None:
        with mod._LOCK:
            mod._VERDICTS.clear()
    if (mod := _module("_backends")) is not None:
        mod._WARNED.clear()


def _reset_caches() -> None:
    if (mod := _module("_cache")) is not None:
        with mod._WARNED_LOCK:
            mod._WARNED.clear()
        with mod._MEMO_LOCK:
            caches = list(mod._MEMO.values())
            mod._MEMO.clear()
        for cache in caches:
            cache.close()


def _reset_connections() -> None:
    if (mod := _module("_sqlite_store._pool")) is not None:
        for store in list(mod._POOL.values()):
            mod.close_store(store.path)


def _reset_environment() -> None:
    if (mod := _module("_scheduler")) is not None:
        mod._glibc.cache_clear()


#: Every piece of process state, by name, with its reset (see the module docstring).
STATE: dict[str, Callable[[], None]] = {
    "models": _reset_models,
    "model_hashes": _reset_model_hashes,
    "packed_weights": _reset_packed_weights,
    "runtimes": _reset_runtimes,
    "verdicts": _reset_verdicts,
    "caches": _reset_caches,
    "connections": _reset_connections,
    "environment": _reset_environment,
}


def reset_process_state(*, models: bool = True) -> None:
    """Forget everything this process keeps between calls, as a new process would start.

    Loaded models and tokenizers, folder hashes, fused weights, compiled runtime
    models, cache objects and their SQLite connections, environment variables
    read once. Nothing on
    disk changes; the next transform loads and opens what it needs again.

    Parameters
    ----------
    models : bool, default=True
        Also drop the loaded and compiled models (the slow part to rebuild).
        ``False`` keeps them, e.g. between tests.

    Examples
    --------
    >>> from xlmt_sklearn import reset_process_state
    >>> reset_process_state()
    """
    for name, reset in STATE.items():
        if models or name not in ("models", "packed_weights", "runtimes"):
            reset()
