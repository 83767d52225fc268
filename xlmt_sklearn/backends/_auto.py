"""Which backend computes a call, and the encoders for it.

``backend="auto"`` (:func:`resolve_backend`) is torch on CUDA/MPS, with
``compile`` and for an explicit ``dtype="float32"``/``"float16"``. On the CPU it
follows :data:`AUTO_RULES`, one :class:`AutoRule` per CPU class
(:func:`~xlmt_sklearn._machine.cpu_class`), decided from the measurements in
docs/backends.md ("The auto rule"):

* ``amx`` (Intel Xeon 4th generation on) and ``avx512_bf16`` (AMD EPYC 4th
  generation on): OpenVINO bf16; torch bf16 where OpenVINO is not installed (or failed
  its self-check); ``quantize="int8"``: OpenVINO static int8 calibrated on the
  tokenizer's vocabulary (the fastest int8 on both; on AMX dynamic int8 is even slower
  than bf16), OpenVINO dynamic int8 for tokenizers without unigram probabilities, torch
  int8 without OpenVINO.
* ``avx512``, ``avx2``, ``other``: torch float32 and torch int8 (OpenVINO float32 and
  ONNX Runtime were barely faster than torch on the XLM-R base shape).

``XLMT_SKLEARN_AUTO_BACKEND`` overrides the CPU's backend and
``XLMT_SKLEARN_CPU_CLASS`` its class. Calibration texts ask for OpenVINO's static
int8, which only OpenVINO has: "auto" is then OpenVINO on any CPU (or a clear
error when it is not installed).

:func:`make_encoders` builds one :class:`~xlmt_sklearn.backends._encoders.Encoder` per
device: :class:`~xlmt_sklearn.backends._encoders.TorchEncoder` or a runtime's
(:mod:`xlmt_sklearn.backends._runtime`). This module sits above both, so neither
imports the other's choice.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .._state import owns
from ._encoders import Encoder, TorchEncoder
from ._openvino import openvino_has_bf16
from ._runtime import (
    backend_names,
    int8_installed,
    require_int8,
    require_runtime,
    runtime_encoder,
    runtime_installed,
)

__all__ = [
    "AUTO_BACKEND_ENV", "AUTO_RULES", "AutoRule", "auto_rule", "make_encoders", "native_bf16",
    "resolve_backend",
]  # fmt: skip

#: Environment variable that overrides what ``backend="auto"`` means on a CPU.
AUTO_BACKEND_ENV = "XLMT_SKLEARN_AUTO_BACKEND"


@dataclass(frozen=True)
class AutoRule:
    """What ``backend="auto"`` computes on one CPU class.

    Attributes
    ----------
    runtime : str or None
        The native runtime of float work where it is installed and runs bf16 natively
        (:func:`native_bf16`), or None for torch.
    torch_dtype : str
        Torch's ``dtype="auto"`` on this class (without the runtime, or after its
        self-check failed).
    int8 : {"torch", "openvino", "openvino-static"}
        ``quantize="int8"``: torch int8, OpenVINO's dynamic int8, or OpenVINO's static
        int8 calibrated on the tokenizer's vocabulary
        (:func:`~xlmt_sklearn.backends._int8.vocabulary_samples`).
    """

    runtime: str | None
    torch_dtype: str
    int8: str


#: The rule per :data:`~._machine.CPU_CLASSES` (measurements: docs/backends.md).
AUTO_RULES: dict[str, AutoRule] = {
    "amx": AutoRule("openvino", "bfloat16", "openvino-static"),
    "avx512_bf16": AutoRule("openvino", "bfloat16", "openvino-static"),
    "avx512": AutoRule(None, "float32", "torch"),
    "avx2": AutoRule(None, "float32", "torch"),
    "other": AutoRule(None, "float32", "torch"),
}


def auto_rule() -> AutoRule:
    """This CPU's :class:`AutoRule` (its class: :func:`~._machine.cpu_class`)."""
    from .._machine import cpu_class

    return AUTO_RULES[cpu_class()]


@functools.cache
def native_bf16() -> bool:
    """Whether OpenVINO is installed and its CPU plugin runs bf16 natively here."""
    return runtime_installed("openvino") and openvino_has_bf16()


def _wants_cpu(device: Any) -> bool:
    """Whether ``device`` (the estimator's parameter) means this process's CPU."""
    if device in (None, "auto"):
        from ._devices import resolve_device

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
    from .._env import env_choice

    if backend == "auto":
        if quantize not in (None, "int8") or compile or not _wants_cpu(device):
            return "torch"
        if quantize == "int8" and calibrated:  # only OpenVINO has it, on any CPU
            return _resolve("openvino", device, quantize, compile, dtype, calibrated)
        forced = env_choice(AUTO_BACKEND_ENV, backend_names()[1:])
        if forced is not None:
            require_runtime(forced)
            if quantize == "int8" and forced != "torch":
                require_int8(forced)
            return forced
        rule = auto_rule()
        if quantize == "int8":
            runtime = rule.int8.partition("-")[0]
            wanted = runtime != "torch" and native_bf16() and int8_installed(runtime)
            return runtime if wanted else "torch"
        wanted = rule.runtime is not None and dtype in ("auto", "bfloat16") and native_bf16()
        return rule.runtime if wanted else "torch"
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
    max_length: int = 512,
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
        (:class:`~xlmt_sklearn.backends._int8.Calibration`).
    layers : tuple of int, default=(-1,)
        The hidden states the call uses. A native runtime is used only once it
        passed its self-check with them on this machine
        (:func:`~xlmt_sklearn.backends._selfcheck.check_runtime`: stored, so a check runs
        once per machine and configuration; the first one converts the model).
    selfcheck : bool, default=True
        False: only a verdict already stored counts (``fit`` describing
        ``backend_``: nothing is converted or run, nothing is warned).
    max_length : int, default=512
        As the estimators' (the longest pseudo-text of a vocabulary calibration).

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
    from ._devices import resolve_devices, resolve_dtype
    from ._loading import ModelSpec

    chosen = resolve_backend(
        backend, device, quantize=quantize, compile=compile, dtype=dtype,
        calibrated=calibration is not None,
    )  # fmt: skip
    auto = backend == "auto" and not _forced()
    if chosen != "torch":
        encoder = runtime_encoder(chosen, identity, dtype, trust_remote_code, quantize, calibration)
        if auto and quantize == "int8" and calibration is None:
            calibration = _auto_calibration(encoder, max_length)
            if calibration is not None:
                encoder = runtime_encoder(chosen, identity, dtype, trust_remote_code, quantize,
                                          calibration)  # fmt: skip
        if calibration is not None and calibration.vocabulary:
            from ._int8 import require_unigram

            require_unigram(encoder.tokenizer(), repr(encoder.spec.name))
        if _passes_selfcheck(encoder, tuple(layers), auto, run=selfcheck):
            return [encoder]
    devices = ["cpu"] if quantize == "int8" else resolve_devices(device)
    if auto and dtype == "auto" and quantize is None and not compile and devices == ["cpu"]:
        dtype = auto_rule().torch_dtype
    dtype = "float32" if quantize == "int8" else resolve_dtype(dtype, devices[0])
    common = dict(
        name=identity.name, revision=identity.revision, content_hash=identity.content_hash,
        dtype=dtype, quantize=quantize, compile=bool(compile),
        trust_remote_code=bool(trust_remote_code),
    )  # fmt: skip
    return [TorchEncoder(ModelSpec(device=d, **common)) for d in devices]


def _auto_calibration(encoder: Encoder, max_length: int) -> Any:
    """The calibration of ``"auto"``'s int8 here: the vocabulary's where the rule says
    static int8 and the tokenizer has unigram probabilities, else None (dynamic int8)."""
    from ._int8 import Calibration, has_unigram

    if auto_rule().int8 != f"{encoder.name}-static" or not has_unigram(encoder.tokenizer()):
        return None
    return Calibration.from_vocabulary(max_length)


def _torch_how(encoder: Encoder) -> str:
    """What torch computes instead of ``encoder`` under ``"auto"`` here, for the warning."""
    if encoder.quantize == "int8":
        return " with quantize='int8'"
    dtype = auto_rule().torch_dtype
    return f" in {dtype} (this CPU's rule)" if dtype != "float32" else ""


def _forced() -> bool:
    """Whether ``XLMT_SKLEARN_AUTO_BACKEND`` names the backend (then it is the user's choice)."""
    from .._env import env_choice

    return env_choice(AUTO_BACKEND_ENV, backend_names()[1:]) is not None


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

    from .._errors import RuntimeCheckError, RuntimeFallbackWarning, user_stacklevel
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
                f"are those of backend='torch'{_torch_how(encoder)}. {verdict.explain()}"
            ),
            stacklevel=user_stacklevel(),
        )
    return False


@owns("runtimes")
def _reset_probes() -> None:
    native_bf16.cache_clear()


@owns("verdicts")
def _reset_warned() -> None:
    _WARNED.clear()
