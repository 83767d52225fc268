"""Running Python in a fresh interpreter from a test: the package on its path.

``run_python`` for a short ``-c`` program (import costs, isolation from this
process's modules, a process that kills itself); ``spawn_cache_worker`` for a
long-lived ``_cache_worker.py`` process that a test reads, interrupts or kills.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE_WORKER = str(Path(__file__).with_name("_cache_worker.py"))


def run_python(
    code: str, *, cwd: Path | str = REPO, timeout: float = 120, text: bool = True, **env: str
) -> subprocess.CompletedProcess:
    """Run ``python -c code`` with the checkout on ``PYTHONPATH`` (plus ``env``); capture output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=text, timeout=timeout,
        env=full_env, cwd=cwd,
    )  # fmt: skip


def spawn_cache_worker(*args: str, stdin: int | None = None, **popen: Any) -> subprocess.Popen:
    """Start ``_cache_worker.py`` with ``args``; stdout and stderr are pipes (``popen``: more
    keyword arguments of :class:`subprocess.Popen`)."""
    return subprocess.Popen(
        [sys.executable, CACHE_WORKER, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def read_line(proc: subprocess.Popen, timeout: float = 120) -> bytes:
    """The next line of ``proc``'s stdout, or ``AssertionError`` after ``timeout`` seconds.

    Every wait in the tests has a deadline: a child that never writes (it hung, or an
    interrupt never reached it) fails the test instead of blocking the suite. On
    timeout the child is killed and its stderr is in the message.
    """
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"no line from the child in {timeout} s; stderr: {err[-2000:]!r}")
        chunk = os.read(fd, 1)
        if not chunk:  # the child closed its stdout (exited)
            break
        buf += chunk
    return buf
