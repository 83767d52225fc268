"""Devices and the compute dtype: ``device`` and ``dtype="auto"`` resolved on this machine."""

from __future__ import annotations

import functools
import sys
from importlib import metadata

__all__ = ["installed_version", "resolve_device", "resolve_devices", "resolve_dtype"]


def resolve_device(device: str | None) -> str:
    """Turn ``"auto"``/``None`` into a concrete torch device string.

    ``"auto"`` picks CUDA, then Apple MPS, then the CPU. Any other value is
    returned as given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) after a
    check that the device exists, so a typo fails before a model is loaded.

    With a CPU-only torch build not yet imported, ``"auto"`` and ``"cpu"`` are the CPU
    without importing torch (1.3 s): a ``fit`` whose transforms all hit the cache (a
    search's refit, a rerun) never needs it.
    """
    if device in (None, "auto", "cpu") and _cpu_only_torch():
        return "cpu"
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; "
            "use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here.")
    return str(dev)


def _cpu_only_torch() -> bool:
    """True when the installed torch, not imported yet, is a CPU-only build (``+cpu``)."""
    if "torch" in sys.modules:
        return False  # torch itself is here to ask
    version = installed_version("torch")
    return "+" in version and version.split("+", 1)[1].startswith("cpu")


@functools.cache
def installed_version(dist: str) -> str:
    """The installed version of ``dist``, read once per process (every fit and transform
    asks): its distribution's metadata, else a source build's module ``__version__``
    (when already imported), else ``"unknown"``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return str(getattr(sys.modules.get(dist), "__version__", "unknown"))


def resolve_devices(device: str | list | tuple | None) -> list[str]:
    """Resolve the ``device`` parameter to one or more concrete device strings.

    A list or tuple (e.g. ``["cuda:0", "cuda:1"]``) names devices that each
    run a replica of the model; they must be distinct and of one kind (the
    compute dtype is chosen once for all of them), and ``"auto"`` must stand
    alone. Anything else is one device, see :func:`resolve_device`.
    """
    if not isinstance(device, (list, tuple)):
        return [resolve_device(device)]
    if not device:
        raise ValueError("device=[] names no device; give at least one, e.g. ['cuda:0'].")
    for d in device:
        if not isinstance(d, str) or d == "auto":
            raise ValueError(
                f"device={list(device)!r}: a list of devices holds device names such as "
                "'cuda:0' and 'cuda:1' ('auto' must stand alone)."
            )
    devices = [resolve_device(d) for d in device]
    if len(set(devices)) != len(devices):
        raise ValueError(f"device={list(device)!r} names a device twice.")
    if len({d.split(":")[0] for d in devices}) > 1:
        raise ValueError(
            f"device={list(device)!r} mixes kinds of device; all must be CUDA cards (or all "
            "CPU...): the compute dtype, and so the vectors, must not depend on the device."
        )
    return devices


def resolve_dtype(dtype: str, device: str) -> str:
    """Resolve ``"auto"`` to the compute dtype for ``device``.

    float32 on the CPU (bf16 autocast is several times slower on CPUs without
    AVX512-bf16, see docs/benchmarks.md), bfloat16 on CUDA cards that support it
    and float16 on the others and on MPS.
    """
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.startswith("mps"):
        return "float16"
    return "float32"
