"""Helper for the concurrent-conversion test (not a test module).

:func:`convert` runs in a child process: it converts the same key as its
sibling, waiting at a barrier inside ``build`` so that both are building at
the same time, and reports the folder it ended with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Content of the fake converted model: the same in every process, so any copy is good.
PAYLOAD = b"weights" * 1000


def convert(root: str, barrier: Any, results: Any) -> None:
    from xlmt_sklearn.backends._convert import ensure_converted

    def build(folder: Path) -> None:
        (folder / "model.bin").write_bytes(PAYLOAD)
        barrier.wait(timeout=60)  # both processes hold a finished temporary copy now
        (folder / "writer.txt").write_text(str(os.getpid()))

    final = ensure_converted("k" * 32, {"runtime": "test"}, build, root=Path(root))
    results.put(str(final))
