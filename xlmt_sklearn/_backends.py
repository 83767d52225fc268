"""Which backend computes a call, and the encoders for it.

``backend="auto"`` (:func:`resolve_backend`) is torch on CUDA/MPS, with
``compile`` and for an explicit ``dtype="float32"``/``"float16"``. On a CPU that
runs bf16 natively (AVX-512 BF16, AMX) with OpenVINO installed it is OpenVINO:
in bfloat16 (2.2x torch float32 on the XLM-R base shape at cosine >= 0.9999,
docs/backends.md) and, with ``quantize="int8"`` where NNCF is installed too,
OpenVINO's int8 (faster than torch int8 and closer to float32). Elsewhere,
including every AVX2-only CPU, torch. OpenVINO float32 and ONNX Runtime were
barely faster than torch on the XLM-R base shape, so "auto" never picks them.
``XLMT_SKLEARN_AUTO_BACKEND`` overrides the CPU choice. Calibration texts ask
for OpenVINO's static int8, which only OpenVINO has: "auto" is then OpenVINO
on any CPU (or a clear error when it is not installed).

:func:`make_encoders` builds one :class:`~xlmt_sklearn._encoders.Encoder` per
device: :class:`~xlmt_sklearn._encoders.TorchEncoder` or a runtime's
(:mod:`xlmt_sklearn._encoders_runtime`). This module sits above both, so neither
imports the other's choice.
"""

from __future__ import annotations

import functools
from typing import Any

from ._encoders import Encoder, TorchEncoder
from ._encoders_runtime import (
    int8_installed,
    openvino_has_bf16,
    require_int8,
    require_runtime,
    runtime_encoder,
    runtime_installed,
)
from ._options import BACKENDS

__all__ = ["AUTO_BACKEND_ENV", "make_encoders", "native_bf16", "resolve_backend"]

#: Environment variable that overrides what ``backend="auto"`` means on a CPU.
AUTO_BACKEND_ENV = "XLMT_SKLEARN_AUTO_BACKEND"


@functools.cache
def native_bf16() -> bool:
    """Whether OpenVINO is installed and its CPU plugin runs bf16 natively here."""
    return runtime_installed("openvino") and openvino_has_bf16()


def _wants_cpu(device: Any) -> bool:
    """Whether ``device`` (the estimator's parameter) means this process's CPU."""
    if device in (None, "auto"):
        from ._params import resolve_device

        return resolve_device(device) == "cpu"
    return device == "cpu" or (isinstance(device, (list, tuple)) and list(device) == ["cpu"])


def resolve_backend(
    backend: str,
    device: Any,
    *,
    quantize: str | None,
    compile: bool,
    dtype: str = "auto",
    calibrated: bool = False,
) -> str:
    """The concrete backend for an estimator's ``backend``/``device``/``quantize``/``compile``.

    ``"auto"``: see the module docstring (``dtype`` matters: an explicit float32
    keeps torch, whose float32 is the reference). ``calibrated``: the estimator
    has ``calibration_texts`` (static int8, OpenVINO only).

    Returns
    -------
    str
        The backend's name: "torch", "openvino" or "onnxruntime".

    Raises
    ------
    ValueError
        A runtime backend with a non-CPU device or ``compile``, or a ``quantize``
        other than None and ``"int8"``; calibration texts with a backend other
        than OpenVINO.
    ImportError
        The runtime, or its int8 tool, is not installed (the message names the
        ``pip install``).
    """
    if calibrated and backend not in ("auto", "openvino"):  # before any package is required
        chosen = backend
    else:
        chosen = _resolve(backend, device, quantize, compile, dtype, calibrated)
    if calibrated and chosen != "openvino":
        raise ValueError(
            f"calibration_texts calibrates OpenVINO's static int8, but backend={backend!r} "
            f"resolves to {chosen!r} here: use backend='openvino' (or 'auto') on the CPU, or "
            "calibration_texts=None for dynamic int8."
        )
    return chosen


def _resolve(
    backend: str, device: Any, quantize: str | None, compile: bool, dtype: str, calibrated: bool
) -> str:
    """:func:`resolve_backend` before its calibration check."""
    from ._env import env_choice

    if backend == "auto":
        if quantize not in (None, "int8") or compile or not _wants_cpu(device):
            return "torch"
        if quantize == "int8" and calibrated:  # only OpenVINO has it, on any CPU
            return _resolve("openvino", device, quantize, compile, dtype, calibrated)
        forced = env_choice(AUTO_BACKEND_ENV, BACKENDS[1:])
        if forced is not None:
            require_runtime(forced)
            if quantize == "int8" and forced != "torch":
                require_int8(forced)
            return forced
        if quantize == "int8":
            return "openvino" if native_bf16() and int8_installed("openvino") else "torch"
        if dtype in ("auto", "bfloat16") and native_bf16():
            return "openvino"
        return "torch"
    if backend == "torch":
        return backend
    if device not in (None, "auto") and not _wants_cpu(device):
        raise ValueError(f"backend={backend!r} runs on the CPU; got device={device!r}.")
    if compile:
        raise ValueError(
            f"compile=True runs on backend='torch' only; got backend={backend!r}: "
            "set compile=False (the runtime compiles the model itself) or backend='torch'."
        )
    if quantize not in (None, "int8"):
        raise ValueError(
            f"backend={backend!r} takes quantize=None or 'int8'; got quantize={quantize!r}."
        )
    require_runtime(backend)
    if quantize == "int8":
        require_int8(backend)
    return backend


def make_encoders(
    identity: Any,
    *,
    device: Any,
    dtype: str,
    quantize: str | None,
    compile: bool,
    trust_remote_code: bool,
    backend: str = "auto",
    calibration: Any = None,
    layers: tuple[int, ...] = (-1,),
    selfcheck: bool = True,
) -> list[Encoder]:
    """One encoder per device for a pinned model; loads nothing (but see ``layers``).

    Parameters
    ----------
    identity : ModelIdentity
        The pinned model.
    device : str or list of str
        As the estimators' ``device`` (resolved now: ``"auto"`` is the best
        device present).
    dtype : str
        As the estimators' ``dtype`` (``"auto"`` resolved for the first device
        and the backend).
    quantize : {None, "int8"}
        ``"int8"`` runs on one CPU in float32.
    compile, trust_remote_code : bool
        As the estimators' parameters.
    backend : {"auto", "torch", "openvino", "onnxruntime"}, default="auto"
        Resolved by :func:`resolve_backend`; OpenVINO and ONNX Runtime run on
        one CPU.
    calibration : Calibration or None, default=None
        The texts of OpenVINO's static int8
        (:class:`~xlmt_sklearn._runtime_int8.Calibration`).
    layers : tuple of int, default=(-1,)
        The hidden states the call uses. A native runtime is used only once it
        passed its self-check with them on this machine
        (:func:`~xlmt_sklearn._selfcheck.check_runtime`: stored, so a check runs
        once per machine and configuration; the first one converts the model).
    selfcheck : bool, default=True
        False: only a verdict already stored counts (``fit`` describing
        ``backend_``: nothing is converted or run, nothing is warned).

    Returns
    -------
    list of Encoder

    Raises
    ------
    RuntimeCheckError
        An explicitly chosen runtime (``backend=`` or ``XLMT_SKLEARN_AUTO_BACKEND``)
        failed its self-check. ``"auto"`` warns
        (:class:`~xlmt_sklearn.RuntimeFallbackWarning`) and returns torch encoders.
    """
    from ._model import ModelSpec
    from ._params import resolve_devices, resolve_dtype

    chosen = resolve_backend(
        backend, device, quantize=quantize, compile=compile, dtype=dtype,
        calibrated=calibration is not None,
    )  # fmt: skip
    if chosen != "torch":
        encoder = runtime_encoder(chosen, identity, dtype, trust_remote_code, quantize, calibration)
        auto = backend == "auto" and not _forced()
        if _passes_selfcheck(encoder, tuple(layers), auto, run=selfcheck):
            return [encoder]
    devices = ["cpu"] if quantize == "int8" else resolve_devices(device)
    dtype = "float32" if quantize == "int8" else resolve_dtype(dtype, devices[0])
    common = dict(
        name=identity.name, revision=identity.revision, content_hash=identity.content_hash,
        dtype=dtype, quantize=quantize, compile=bool(compile),
        trust_remote_code=bool(trust_remote_code),
    )  # fmt: skip
    return [TorchEncoder(ModelSpec(device=d, **common)) for d in devices]


def _forced() -> bool:
    """Whether ``XLMT_SKLEARN_AUTO_BACKEND`` names the backend (then it is the user's choice)."""
    from ._env import env_choice

    return env_choice(AUTO_BACKEND_ENV, BACKENDS[1:]) is not None


_WARNED: set[str] = set()


def _passes_selfcheck(
    encoder: Encoder, layers: tuple[int, ...], auto: bool, run: bool = True
) -> bool:
    """Whether ``encoder``'s runtime passed its self-check here (or checks are off).

    A failure raises :class:`~xlmt_sklearn.RuntimeCheckError` for an explicit
    choice; under ``auto`` it warns once per process and verdict and returns False
    (the caller builds torch encoders).
    """
    import warnings

    from ._errors import RuntimeCheckError, RuntimeFallbackWarning, user_stacklevel
    from ._selfcheck import check_runtime

    verdict = check_runtime(encoder, layers, run=run)
    if verdict is None or verdict.ok:
        return True
    if not auto:
        raise RuntimeCheckError(verdict)
    if run and verdict.path not in _WARNED:
        _WARNED.add(verdict.path)
        extra = " (calibration_texts are not used: torch has no static int8)" if getattr(
            encoder, "calibration", None) is not None else ""  # fmt: skip
        warnings.warn(
            RuntimeFallbackWarning(
                f"backend='auto' uses torch instead of {encoder.name}{extra}: the vectors "
                f"are those of backend='torch'. {verdict.explain()}"
            ),
            stacklevel=user_stacklevel(),
        )
    return False
