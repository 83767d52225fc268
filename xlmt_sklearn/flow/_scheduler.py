"""Step 7a -- where batches compute: devices, overlap, out-of-memory backoff.

``computed(devices, batches, compute) -> iterator of compute(batch, device)``.
The caller consumes the results on its own thread, in the order they finish;
nothing here calls back up the stack.

* One device, no overlap (the CPU default): each batch is computed when the
  caller asks for the next result, inline.
* Overlap (a CUDA card, or ``TUNING.overlap_delivery`` ``"always"``) or several
  devices: one producer thread per device takes the next batch as soon as it
  is free (the GIL is released while a GPU computes, so faster cards take
  more) and puts finished results on a bounded queue (:data:`DELIVERY_DEPTH`);
  the caller delivers one result (cache write, output) while the devices
  compute the next ones.

Either way a batch whose computation runs out of memory is halved and retried,
and only the computation: an error raised while the caller handles a result
is the caller's and is never retried. A failing computation stops the others
after their current batch; everything already computed still reaches the
caller before the error is raised (the first one; another device's error
is added to its notes). A caller that stops iterating (an error of
its own, ``KeyboardInterrupt``) stops the producers after their current batch.
"""

from __future__ import annotations

import functools
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from .._env import env_flag
from .._state import owns
from ._tuning import TUNING

__all__ = [
    "DELIVERY_DEPTH",
    "computed",
    "release_free_memory",
    "wants_overlap",
]

T = TypeVar("T")

#: Finished batches that may wait for delivery: bounds the memory overlap adds.
DELIVERY_DEPTH = 2

#: Batches between two :func:`release_free_memory` calls.
_TRIM_EVERY = 8


@functools.lru_cache(maxsize=1)
def _glibc():
    if sys.platform != "linux" or not env_flag("XLMT_SKLEARN_MALLOC_TUNING", True):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only; musl has none)
        return libc
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give memory that the C allocator holds but no longer uses back to the OS.

    glibc raises its mmap threshold each time a large block is freed, so
    after the first batches tensor buffers come from the heap, and batches of
    varying token counts fragment it, and without this a 200k-text transform
    held ~740 MB of free heap at its peak. Called every few batches,
    ``malloc_trim`` returns the free pages (docs/benchmarks.md, "Memory").
    ``XLMT_SKLEARN_MALLOC_TUNING=0`` turns it off; no-op off glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def wants_overlap(device_names: Sequence[str]) -> bool:
    """Whether results are computed on producer threads (see ``TUNING.overlap_delivery``)."""
    return TUNING.overlap_delivery == "always" or (
        TUNING.overlap_delivery == "cuda" and any(d.startswith("cuda") for d in device_names)
    )


_OUT_OF_MEMORY: Any = object()  # marks a batch that ran out of memory


def _with_backoff(
    compute: Callable[[np.ndarray, Any], T], batch: np.ndarray, device: Any
) -> Iterator[T]:
    """``compute(batch, device)``, halving the batch on the device's out-of-memory errors."""
    try:
        result = compute(batch, device)
    except (RuntimeError, MemoryError) as exc:
        if not device.is_out_of_memory(exc) or len(batch) == 1:
            raise
        result = _OUT_OF_MEMORY
    if result is not _OUT_OF_MEMORY:
        yield result  # outside the try: the caller's errors are never retried
        return
    # Retried outside the except block: the error's traceback (and the failed forward's
    # tensors it keeps alive) is gone before the halves run and memory is released.
    device.after_out_of_memory()
    half = len(batch) // 2
    yield from _with_backoff(compute, batch[:half], device)
    yield from _with_backoff(compute, batch[half:], device)


def computed(
    devices: Sequence[Any],
    batches: Sequence[np.ndarray],
    compute: Callable[[np.ndarray, Any], T],
) -> Iterator[T]:
    """Yield ``compute(batch, device)`` for every batch, as they finish.

    Parameters
    ----------
    devices : sequence of Encoder
        One per device; each has ``device`` (a name), ``is_out_of_memory(exc)``
        and ``after_out_of_memory()``.
    batches : sequence of ndarray
        Row indices of each batch.
    compute : callable (batch, device) -> result

    Yields
    ------
    result
        One per batch (more when a batch was halved), in completion order.
    """
    _glibc()  # validates XLMT_SKLEARN_MALLOC_TUNING before any work
    if len(devices) == 1 and not wants_overlap([d.device for d in devices]):
        for k, batch in enumerate(batches, 1):
            yield from _with_backoff(compute, batch, devices[0])
            if k % _TRIM_EVERY == 0:
                release_free_memory()
        return
    yield from _threaded(devices, batches, compute)


def _add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` (Python >= 3.11; on 3.10 the note is kept in ``__notes__``)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def _threaded(
    devices: Sequence[Any], batches: Sequence[np.ndarray], compute: Callable[[np.ndarray, Any], T]
) -> Iterator[T]:
    """One producer thread per device, a bounded queue, results on the caller's thread."""
    todo = iter(batches)
    take = threading.Lock()
    results: queue.Queue = queue.Queue(maxsize=DELIVERY_DEPTH)
    stop, abandoned = threading.Event(), threading.Event()

    def put(item: tuple[str, Any]) -> None:
        while not abandoned.is_set():  # the caller left: nobody will take it
            try:
                results.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def produce(device: Any) -> None:
        try:
            k = 0
            while not stop.is_set():
                with take:
                    batch = next(todo, None)
                if batch is None:
                    break
                for result in _with_backoff(compute, batch, device):
                    put(("result", result))
                k += 1
                if k % _TRIM_EVERY == 0:
                    release_free_memory()
        except BaseException as exc:  # raised on the caller's thread
            stop.set()
            put(("error", exc))
        finally:
            put(("done", None))

    threads = [
        threading.Thread(target=produce, args=(d,), name=f"xlmt_sklearn-device-{m}", daemon=True)
        for m, d in enumerate(devices)
    ]
    for t in threads:
        t.start()
    live, error = len(threads), None
    try:
        while live:
            kind, value = results.get()
            if kind == "done":
                live -= 1
            elif kind == "error" and error is None:
                error = value
            elif kind == "error":  # another device failed too: said on the error raised
                _add_note(error, f"Another device also failed: {type(value).__name__}: {value}")
            else:
                yield value
    finally:
        stop.set()
        abandoned.set()
        for t in threads:
            t.join()
    if error is not None:
        raise error


@owns("environment")
def _reset_environment() -> None:
    _glibc.cache_clear()
