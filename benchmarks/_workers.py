"""Benchmark contenders in processes of their own, timed from the benchmark's process.

Why: CPU runtimes loaded side by side in one process slow each other down. Measured
on the XLM-R base shape, 80 tweets, 2 threads: ONNX Runtime float32 ran 8-10
texts/s with torch, OpenVINO and ONNX Runtime int8 models loaded in the same
process, 21-24 texts/s alone or beside one other contender. A user runs one
backend per process, so :class:`Remote` gives each runtime contender its own
(``spawn``) process: it loads and warms the contender there, then runs it on
request while the parent times the call. An idle worker waits on its pipe and
uses no CPU, so interleaved rounds still compare contenders under the same load.

With ``python=``, the worker is that interpreter running this file (another
virtual environment: sentence-transformers' runtime backends, ``_st_runtimes``).

Also :class:`RssSampler`, the peak-RSS probe both sides use.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _common as C

__all__ = ["Remote", "RssSampler"]


class RssSampler:
    """Peak RSS above the starting RSS while a block runs (polled every 5 ms)."""

    def __init__(self) -> None:
        self.base = C.current_rss_mb()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, C.current_rss_mb())

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, C.current_rss_mb())

    @property
    def grew(self) -> float:
        return self.peak - self.base


class Remote:
    """One contender built by ``module.function(*args)`` in a child process.

    ``function`` returns an object with ``run()`` (the timed work, returning an
    array), ``last`` (the warm-up's result), ``load_mb``, ``padding`` and ``note``;
    those attributes are copied here once it is ready.
    """

    def __init__(
        self, name: str, module: str, function: str, *args: Any, threads: int = 0,
        python: str | None = None,
    ):  # fmt: skip
        self.name = name
        if python is None:  # this interpreter and environment
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(
                target=_serve, args=(child, module, function, args, threads), daemon=True
            )
            self._proc.start()
            child.close()
        else:  # another environment's interpreter: this file is its program
            mine, theirs = socket.socketpair()
            self._proc = subprocess.Popen(
                [python, __file__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                cwd=Path(__file__).parent,
            )  # fmt: skip
            theirs.close()
            self._conn = Connection(mine.detach())
            self._conn.send((module, function, args, threads))
        info = self._receive()
        self.last, self.load_mb = info["last"], info["load_mb"]
        self.padding, self.note = info["padding"], info["note"]

    def run(self) -> tuple[Any, float]:
        """Run the contender once there: (its result, peak RSS growth in MiB)."""
        self._conn.send("run")
        out = self._receive()
        return out["result"], out["grew"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        if isinstance(self._proc, subprocess.Popen):
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            return
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()

    def _receive(self) -> dict:
        try:
            msg = self._conn.recv()
        except EOFError:
            code = getattr(self._proc, "exitcode", None) or self._proc.poll()
            raise RuntimeError(f"{self.name}: its process died (exit code {code})") from None
        if "error" in msg:
            raise RuntimeError(f"{self.name} failed in its process:\n{msg['error']}")
        return msg


def _serve(conn: Any, module: str, function: str, args: tuple, threads: int) -> None:
    """The child's loop: build, report, then run on every "run" until "stop"."""
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        contender = getattr(importlib.import_module(module), function)(*args)
        conn.send({
            "last": contender.last, "load_mb": contender.load_mb,
            "padding": contender.padding, "note": contender.note,
        })  # fmt: skip
        while conn.recv() == "run":
            with RssSampler() as rss:
                result = contender.run()
            conn.send({"result": result, "grew": rss.grew})
    except BaseException:  # reported to the parent, which raises it
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


if __name__ == "__main__":  # the worker of Remote(python=...): argv[1] is its socket
    _conn = Connection(int(sys.argv[1]))
    _module, _function, _args, _threads = _conn.recv()
    _serve(_conn, _module, _function, _args, _threads)
