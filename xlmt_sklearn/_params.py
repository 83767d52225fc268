"""Shared parameter constraints and device/dtype resolution.

This is the only module that imports scikit-learn's private validation helpers
(``sklearn.utils._param_validation`` and ``sklearn.base._fit_context``), so a
change in them touches one file; the supported scikit-learn range is pinned in
``pyproject.toml``.
"""

from __future__ import annotations

import os
from numbers import Integral

from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
)

__all__ = [
    "BACKENDS",
    "DTYPES",
    "GRANULARITIES",
    "LAYER_AGGREGATIONS",
    "MISSING_POLICIES",
    "MODEL_PARAMETER_CONSTRAINTS",
    "POOLING_MODES",
    "PREPROCESSORS",
    "QUANTIZE_MODES",
    "TRUNCATION_MODES",
    "WORD_VECTORS",
    "HasMethods",
    "Interval",
    "StrOptions",
    "_fit_context",
    "resolve_device",
    "resolve_devices",
    "resolve_dtype",
]

from ._options import (
    BACKENDS,
    DTYPES,
    GRANULARITIES,
    LAYER_AGGREGATIONS,
    MISSING_POLICIES,
    POOLING_MODES,
    PREPROCESSORS,
    QUANTIZE_MODES,
    TRUNCATION_MODES,
    WORD_VECTORS,
)

#: Constraints shared by every estimator that runs the model.
MODEL_PARAMETER_CONSTRAINTS: dict = {
    "model": [str, os.PathLike],
    "revision": [str, None],
    "layers": [Integral, "array-like"],
    "layer_aggregation": [StrOptions(set(LAYER_AGGREGATIONS))],
    "preprocess": [StrOptions(set(PREPROCESSORS)), callable, None],
    "prefix": [str, None],
    "max_length": [Interval(Integral, 3, None, closed="left")],
    "truncation": [StrOptions(set(TRUNCATION_MODES))],
    "stride": [Interval(Integral, 0, None, closed="left"), None],
    "missing": [StrOptions(set(MISSING_POLICIES))],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "max_tokens": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
    "device": [str, list, tuple, None],
    "dtype": [StrOptions(set(DTYPES))],
    "quantize": [StrOptions(set(QUANTIZE_MODES)), None],
    "calibration_texts": ["array-like", StrOptions({"vocabulary"}), None],
    "compile": ["boolean"],
    "cache": [str, os.PathLike, HasMethods(["get_many", "put_many"]), None],
    "progress": [StrOptions({"auto", "log"}), "boolean"],
    "trust_remote_code": ["boolean"],
}


def resolve_device(device: str | None) -> str:
    """Turn ``"auto"``/``None`` into a concrete torch device string.

    ``"auto"`` picks CUDA, then Apple MPS, then the CPU. Any other value is
    returned as given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) after a
    check that the device exists, so a typo fails before a model is loaded.
    """
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
