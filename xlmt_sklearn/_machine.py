"""What this machine's CPU is: the part of a native runtime's configuration we do not choose.

Native runtimes (OpenVINO, ONNX Runtime) pick their kernels from the CPU's
instruction sets, so anything they store or we conclude about them (a compiled
model blob, a self-check verdict, :mod:`xlmt_sklearn.backends._selfcheck`) is only valid
on a CPU of the same model with the same flags. :func:`cpu_identity` is that
CPU, read once per process; no third-party import. :func:`cpu_class` sorts it
into the classes of ``backend="auto"``'s rule (:mod:`xlmt_sklearn.backends._auto`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_CLASSES", "CPU_CLASS_ENV", "ISA_FLAGS", "cpu_class", "cpu_identity", "cpu_summary",
    "pid_alive",
]  # fmt: skip

#: The instruction-set flags that decide which kernels the runtimes run (for people:
#: messages and tables name these; keys use every flag).
ISA_FLAGS = (
    "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
    "amx_int8", "amx_fp16",
)  # fmt: skip


@functools.cache
def cpu_identity() -> dict[str, str]:
    """The CPU's model name, architecture and a digest of all its feature flags.

    Read from ``/proc/cpuinfo`` on Linux (first processor); elsewhere from
    :mod:`platform` (the flags are then unknown and the digest covers the model
    name only).

    Returns
    -------
    dict
        ``model``, ``machine`` (e.g. ``x86_64``), ``isa`` (the :data:`ISA_FLAGS`
        present, space-separated) and ``flags`` (a SHA-256 prefix of the sorted
        flag set).

    Examples
    --------
    >>> sorted(cpu_identity())
    ['flags', 'isa', 'machine', 'model']
    """
    model, flags = "", []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name == "model name" and not model:
                model = value.strip()
            elif name in ("flags", "Features") and not flags:
                flags = sorted(set(value.split()))
            if model and flags:
                break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown"
    digest = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16]
    isa = " ".join(f for f in ISA_FLAGS if f in flags)
    return {"model": model, "machine": platform.machine(), "isa": isa, "flags": digest}


#: The CPU classes of ``backend="auto"``'s rule, by the matrix units they have:
#: AMX tiles (bf16 and int8), AVX-512 with BF16 instructions, AVX-512 (with or without
#: VNNI), AVX2 only, and anything else (no AVX2, an ARM CPU, flags unknown).
CPU_CLASSES = ("amx", "avx512_bf16", "avx512", "avx2", "other")
#: Environment variable that names the CPU class instead of the flags (tests; a CPU whose
#: flags a virtual machine hides).
CPU_CLASS_ENV = "XLMT_SKLEARN_CPU_CLASS"


def cpu_class() -> str:
    """This CPU's class in :data:`CPU_CLASSES`, from its flags or ``XLMT_SKLEARN_CPU_CLASS``.

    Examples
    --------
    >>> cpu_class() in CPU_CLASSES
    True
    """
    from ._env import env_choice

    return env_choice(CPU_CLASS_ENV, CPU_CLASSES) or class_of(cpu_identity()["isa"].split())


def class_of(isa: list[str] | tuple[str, ...] | set[str]) -> str:
    """The class of a CPU with instruction-set flags ``isa`` (``/proc/cpuinfo`` names).

    Examples
    --------
    >>> class_of(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    'avx512_bf16'
    >>> class_of(["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"])
    'amx'
    """
    flags = set(isa)
    if {"amx_tile", "amx_bf16"} <= flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def cpu_summary() -> str:
    """One line for messages: model name and the :data:`ISA_FLAGS` present."""
    cpu = cpu_identity()
    return f"{cpu['model']} ({cpu['isa'] or 'no AVX2/AVX-512/AMX flags'})"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (when it cannot tell: True).

    For leftovers of dead processes (claims, temporary folders): only a process
    known to be gone lets another take over.
    """
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        return _windows_pid_alive(pid, _kernel32())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or cannot tell
    return True


_STILL_ACTIVE = 259  # GetExitCodeProcess's code for a running process
_ERROR_INVALID_PARAMETER = 87  # OpenProcess's error for a pid that names no process


class _Kernel32:
    """The three kernel32 calls :func:`pid_alive` needs on Windows (ctypes)."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._dll = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]

    def open(self, pid: int) -> Any:
        """A handle for querying ``pid`` (PROCESS_QUERY_LIMITED_INFORMATION), or 0."""
        return self._dll.OpenProcess(0x1000, False, int(pid))

    def last_error(self) -> int:
        return int(self._ctypes.get_last_error())  # type: ignore[attr-defined]

    def exit_code(self, handle: Any) -> int | None:
        code = self._ctypes.c_ulong()
        if not self._dll.GetExitCodeProcess(handle, self._ctypes.byref(code)):
            return None
        return int(code.value)

    def close(self, handle: Any) -> None:
        self._dll.CloseHandle(handle)


def _kernel32() -> _Kernel32:
    return _Kernel32()


def _windows_pid_alive(pid: int, kernel32: Any) -> bool:
    """Windows: gone when the pid names no process or the process has exited."""
    handle = kernel32.open(pid)
    if not handle:  # no such process, or not ours to open (access denied: it exists)
        return kernel32.last_error() != _ERROR_INVALID_PARAMETER
    try:
        code = kernel32.exit_code(handle)
        return code is None or code == _STILL_ACTIVE  # None: cannot tell
    finally:
        kernel32.close(handle)
