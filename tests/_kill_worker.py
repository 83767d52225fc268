"""Process helpers for the reliability tests (not a test module).

Forked children instead of fresh interpreters: importing torch, transformers
and scikit-learn costs seconds per process on a busy two-core machine, and a
fork starts in milliseconds with the tiny model already in memory. A child
never returns into pytest: it always ends with ``os._exit``. The SQLite store
drops inherited connections in the child (``os.register_at_fork``), so every
child opens the cache file on its own, like a separate process does.

``report(name, **numbers)`` appends one JSON line to
``$XLMT_RELIABILITY_REPORT/reliability.jsonl`` when that variable is set:
docs/reliability.md quotes the counts measured by the test runs this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Child", "fork_call", "report", "run_with_deadline"]

HAS_FORK = hasattr(os, "fork")


def report(name: str, **numbers: Any) -> None:
    """Record measured numbers for docs/reliability.md (no-op unless asked for)."""
    folder = os.environ.get("XLMT_RELIABILITY_REPORT")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / "reliability.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"name": name, **numbers}, default=str) + "\n")


@dataclass
class Child:
    """A forked child that runs one function; its result comes back pickled."""

    pid: int
    fd: int  # read end of the result pipe
    status: int | None = None

    def kill(self) -> None:
        """SIGKILL the child (no-op if it is already gone)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the child to end; False if it is still running after ``timeout``."""
        if self.status is not None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG if deadline is not None else 0)
            if pid:
                self.status = status
                return True
            if time.monotonic() >= deadline:  # type: ignore[operator]
                return False
            time.sleep(0.005)

    @property
    def killed(self) -> bool:
        """Whether the child died of SIGKILL."""
        return (
            self.status is not None
            and os.WIFSIGNALED(self.status)
            and os.WTERMSIG(self.status) == signal.SIGKILL
        )

    def finished(self) -> bool:
        """After the child ended: whether its function had returned (a result was sent)."""
        self.wait()
        self._buffer = getattr(self, "_buffer", b"") + _read_all(self.fd)
        return bool(self._buffer)

    def result(self) -> Any:
        """Wait, then return the function's value or raise its error (as AssertionError)."""
        data = getattr(self, "_buffer", b"") + _read_all(self.fd)
        os.close(self.fd)
        self.wait()
        if not data:
            raise AssertionError(f"child {self.pid} ended without a result (status {self.status})")
        ok, value = pickle.loads(data)
        if not ok:
            raise AssertionError(f"child {self.pid} failed:\n{value}")
        return value

    def close(self) -> None:
        """Kill if still running, reap, and close the pipe."""
        if self.status is None:
            self.kill()
            self.wait()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def fork_call(fn: Callable[..., Any], *args: Any) -> Child:
    """Run ``fn(*args)`` in a forked child; the parent gets a :class:`Child`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller
        code = 0
        try:
            os.close(r)
            try:
                payload = pickle.dumps((True, fn(*args)))
            except BaseException:
                payload = pickle.dumps((False, traceback.format_exc()))
                code = 1
            view = memoryview(payload)
            while view:
                view = view[os.write(w, view) :]
            os.close(w)
        finally:
            os._exit(code)
    os.close(w)
    return Child(pid, r)


def run_with_deadline(fn: Callable[..., Any], seconds: float, *args: Any) -> tuple[str, Any]:
    """``("ok", value)``, ``("error", traceback)`` or ``("timeout", None)`` (child killed).

    A hang or a pathological slowdown can't stall the test run: the work runs
    in a forked child that is SIGKILLed at the deadline.
    """
    child = fork_call(fn, *args)
    try:
        if not child.wait(seconds):
            return "timeout", None
        try:
            return "ok", child.result()
        except AssertionError as exc:
            return "error", str(exc)
    finally:
        child.close()
