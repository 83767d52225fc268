"""Running Python in a fresh interpreter from a test: the package on its path.

``run_python`` for a short ``-c`` program (import costs, isolation from this
process's modules, a process that kills itself); ``spawn_cache_worker`` for a
long-lived ``_cache_worker.py`` process that a test reads, interrupts or kills.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def spawn_cache_worker(*args: str, stdin: int | None = None) -> subprocess.Popen:
    """Start ``_cache_worker.py`` with ``args``; stdout and stderr are pipes."""
    return subprocess.Popen(
        [sys.executable, CACHE_WORKER, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
