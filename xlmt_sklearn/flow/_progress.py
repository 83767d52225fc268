"""Progress of an encode: a tqdm bar, or a line every ~10 s (``progress="log"``)."""

from __future__ import annotations

import sys
import time

_PROGRESS_MIN_TEXTS = 256


def _in_notebook() -> bool:
    ipy = sys.modules.get("IPython")
    shell = getattr(ipy, "get_ipython", lambda: None)() if ipy else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def resolve_progress(progress: bool | str, n_texts: int) -> bool:
    """``"auto"``: a bar for long runs in a terminal or a notebook only."""
    if progress != "auto":
        return bool(progress)
    if n_texts < _PROGRESS_MIN_TEXTS:
        return False
    return _in_notebook() or bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(progress: bool | str, n: int, n_to_encode: int, what: str = ""):
    desc = f"xlmt_sklearn {what}".strip()
    if progress == "log":
        return ProgressLines(n, desc)
    if not resolve_progress(progress, n_to_encode):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n, unit="text", desc=desc, smoothing=0.1)


class ProgressLines:
    """``progress="log"``: whole lines on stderr, for logs and batch jobs (no terminal).

    One line when the work starts, then at most one every :attr:`every_s` seconds
    (done/total, rate, ETA), and one at the end. Same ``update``/``close`` as a tqdm bar.
    """

    every_s = 10.0

    def __init__(self, total: int, desc: str, stream=None):
        self.total, self.desc, self.done = int(total), desc, 0
        self.stream = sys.stderr if stream is None else stream
        self.start = self.last = time.perf_counter()
        self._say(f"{self.done}/{self.total} texts")

    def _say(self, what: str) -> None:
        self.stream.write(f"{self.desc}: {what}\n")
        self.stream.flush()

    def update(self, n: int) -> None:
        self.done += int(n)
        now = time.perf_counter()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            pct = 100 * self.done / max(self.total, 1)
            self._say(
                f"{self.done}/{self.total} texts ({pct:.0f}%), {rate:.1f} texts/s, ETA {eta:.0f} s"
            )

    def close(self) -> None:
        took = time.perf_counter() - self.start
        self._say(f"{self.done}/{self.total} texts in {took:.1f} s")
