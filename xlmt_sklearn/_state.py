"""Process state in one place: every registry, memo and pool the package keeps per process.

Estimators hold no heavy object (see :mod:`xlmt_sklearn._model`); what is shared
between calls lives in a few module-level objects. Each owner registers its own
reset (:func:`owns`), next to its state; :func:`reset_process_state` runs them all.
The state, by name:

- ``models``: ``backends._loading._REGISTRY``, ``_TOKENIZERS`` and ``_LOADS``: loaded models
  (an LRU of ``XLMT_SKLEARN_MAX_MODELS``), their tokenizers, the load counters.
- ``model_hashes``: ``_digests._MEMO``: digests of local model files (the disk memory stays).
- ``packed_weights``: ``backends._packed._PACKED``: fused q/k/v weights per model (weak refs).
- ``runtimes``: ``backends._runtime._COMPILED``: compiled OpenVINO / ONNX Runtime
  models; ``backends._convert._VERIFIED``: converted folders already hashed; the CPU probes
  behind ``backend="auto"`` (``native_bf16``, ``openvino_has_bf16``), asked once.
- ``verdicts``: ``backends._selfcheck._VERDICTS``: the runtimes' self-check verdicts read or
  made (they are stored on disk too); ``backends._auto._WARNED``: the fallbacks already
  warned about.
- ``caches``: ``store._adapt._MEMO``: the ``EmbeddingCache`` of each path; ``store._cache._WARNED``:
  the cache warnings given (once per process, file and cause).
- ``connections``: ``store._sqlite._pool._POOL``: one SQLite connection per path.
- ``environment``: ``flow._scheduler._glibc``: ``XLMT_SKLEARN_MALLOC_TUNING``, read once.

Connections that must never be closed (``store._sqlite._files._ABANDONED``:
closing them would delete another file's write-ahead log) are deliberately
not reset. Connections and caches are also renewed after ``fork()`` by the
store itself.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["STATE", "owns", "reset_process_state", "reset_state"]

#: Every piece of process state, by name, with the resets its owners registered
#: (:func:`owns`); in this order, so that caches close before their connections.
STATE: dict[str, list[Callable[[], None]]] = {
    name: []
    for name in (
        "models", "model_hashes", "packed_weights", "runtimes", "verdicts", "caches",
        "connections", "environment",
    )
}  # fmt: skip


def owns(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Register the decorated function as its module's reset of the state ``name``.

    A module that keeps process state resets it itself, next to where the state
    lives; only imported modules are registered, so resetting never imports torch
    or SQLite.
    """

    def register(reset: Callable[[], None]) -> Callable[[], None]:
        STATE[name].append(reset)
        return reset

    return register


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
    reset_state(*(n for n in STATE if models or n not in ("models", "packed_weights", "runtimes")))


def reset_state(*names: str) -> None:
    """Reset the named pieces of process state only (``"runtimes"``: what a new process
    has not compiled yet), in :data:`STATE` order; for tests that need one piece of a
    new process's view."""
    unknown = sorted(set(names) - set(STATE))
    if unknown:
        raise ValueError(f"unknown process state {unknown}; the names are {list(STATE)}")
    for name, resets in STATE.items():
        if name in names:
            for reset in resets:
                reset()
