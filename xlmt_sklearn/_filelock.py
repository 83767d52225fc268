"""An exclusive lock between processes on one file, with a deadline (foundation).

Used where two processes would otherwise do one expensive thing twice: a runtime's
first-use self-check (:mod:`.backends._selfcheck`) and a fine-tune
(:mod:`.adapt._folder`). POSIX: ``fcntl.flock``; Windows: ``msvcrt.locking`` on the
file's first byte. The lock goes with the process: a killed holder never blocks
the next one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["file_lock"]


def _platform() -> tuple[Callable[[IO[bytes]], None], Callable[[IO[bytes]], None]]:
    """Try-lock and unlock for an open file; the try raises ``OSError`` when it is held."""
    try:
        import fcntl
    except ImportError:
        import msvcrt  # Windows

        def lock(f: IO[bytes]) -> None:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]

        def unlock(f: IO[bytes]) -> None:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]

        return lock, unlock

    def flock(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def unflock(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    return flock, unflock


@contextlib.contextmanager
def file_lock(
    path: Path,
    *,
    wait_s: float,
    poll_s: float = 0.2,
    timeout_error: Callable[[], Exception] | None = None,
) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if needed); yields whether it is held.

    Waits at most ``wait_s`` for another process to let go. Then, with
    ``timeout_error``, raises what it returns; without, goes on unlocked (yields
    False), as it does when the file cannot be opened (a read-only folder): for work
    whose repetition costs time, never correctness.
    """
    lock, unlock = _platform()
    try:
        f = open(path, "a+b")  # noqa: SIM115 - closed below
    except OSError:
        if timeout_error is not None:
            raise
        yield False
        return
    with f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                lock(f)
                break
            except OSError:
                if time.monotonic() > deadline:
                    if timeout_error is not None:
                        raise timeout_error() from None
                    yield False
                    return
                time.sleep(poll_s)
        try:
            yield True
        finally:
            unlock(f)
