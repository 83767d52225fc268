"""The runtime plugin interface: :class:`RuntimeEncoder`, :func:`register_runtime`, the registry.

The built-in runtimes are one module each, :mod:`._openvino` and
:mod:`._onnxruntime`, registered when :mod:`xlmt_sklearn.backends` is imported.

Same contract as :class:`~xlmt_sklearn.backends._encoders.TorchEncoder` (see
:mod:`xlmt_sklearn.backends._encoders`): token id rows in, float32 arrays out. The
model is converted once per identity and ``layers`` (:mod:`xlmt_sklearn.backends._convert`),
compiled once per process and precision, and run on padded batches; the graph returns the
chosen hidden states, which :func:`~xlmt_sklearn.backends._encoders.finish_stacked`
aggregates and pools on numpy (the twins of the torch backend's code in
:mod:`xlmt_sklearn.flow._pooling`).

Both runtimes use as many threads as torch (``torch.set_num_threads``).

``quantize="int8"`` runs the runtime's own int8 (:mod:`xlmt_sklearn.backends._int8`:
ONNX Runtime dynamic quantization, OpenVINO weight compression; OpenVINO's
static int8 when the estimator has ``calibration_texts``), converted once from
the float32 model and stored beside it.

Which backend a call gets (``backend="auto"``) is decided in
:mod:`xlmt_sklearn.backends._auto`, and a runtime is used only once it passed its
first-use self-check on this machine (:mod:`xlmt_sklearn.backends._selfcheck`).

Runtimes are plugins: a :class:`RuntimeEncoder` subclass declares its name, the
package it needs, its precisions, its int8 tool and scheme, and implements
export, quantize, compile and run; :func:`register_runtime` makes its name a value
of every estimator's ``backend`` (the registry :data:`RUNTIMES`; nothing else
dispatches on a runtime's name).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from .._state import owns
from ._encoders import BatchOutput, EncodeOptions, Encoder, finish_stacked, pad_rows
from ._registry import LRURegistry

__all__ = [
    "RUNTIMES",
    "RuntimeEncoder",
    "backend_names",
    "int8_installed",
    "register_runtime",
    "require_int8",
    "require_runtime",
    "runtime_encoder",
    "runtime_encoder_class",
    "runtime_installed",
]

#: The registered runtimes by name (:func:`register_runtime`), in registration order.
RUNTIMES: dict[str, type[RuntimeEncoder]] = {}
#: ``"auto"``, ``"torch"`` and every registered runtime: the set the estimators'
#: ``backend`` constraint holds (a registration extends it in place).
BACKEND_NAMES: set[str] = {"auto", "torch"}

#: Compiled models and their run locks, built once per key (a first conversion takes
#: minutes: only the threads that want that same model wait for it).
_COMPILED = LRURegistry()


def compiled_count() -> int:
    """How many compiled runtime models this process holds (for tests and logs)."""
    return len(_COMPILED)


def _importable(name: str) -> bool:
    """Whether module ``name`` can be imported (without importing it)."""
    if name in sys.modules:  # imported already, or blocked with sys.modules[name] = None
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def register_runtime(cls: type[RuntimeEncoder]) -> type[RuntimeEncoder]:
    """Make runtime ``cls`` a ``backend`` of the estimators (usable as a class decorator).

    Raises
    ------
    ValueError
        ``cls.name`` is ``"auto"``, ``"torch"`` or another class's name.
    """
    known = RUNTIMES.get(cls.name)
    if cls.name in ("auto", "torch") or (known is not None and known is not cls):
        raise ValueError(f"A backend named {cls.name!r} is registered already.")
    RUNTIMES[cls.name] = cls
    BACKEND_NAMES.add(cls.name)
    return cls


def unregister_runtime(name: str) -> None:
    """Remove runtime ``name`` from the registry (tests; a plugin that unloads)."""
    RUNTIMES.pop(name, None)
    BACKEND_NAMES.discard(name)


def backend_names() -> tuple[str, ...]:
    """``"auto"``, ``"torch"`` and the registered runtimes."""
    return ("auto", "torch", *RUNTIMES)


def runtime_installed(backend: str) -> bool:
    """Whether ``backend``'s runtime can be imported (without importing it)."""
    return backend == "torch" or _importable(runtime_encoder_class(backend).package)


def require_runtime(backend: str) -> None:
    """Raise an ``ImportError`` naming the ``pip install`` when the runtime is missing."""
    if not runtime_installed(backend):
        cls = runtime_encoder_class(backend)
        raise ImportError(
            f"backend={backend!r} needs the {cls.package} package, which is not "
            f'installed: pip install "{cls.extra}" (or backend="torch").'
        )


def int8_installed(backend: str) -> bool:
    """Whether ``backend``'s int8 tool (:attr:`RuntimeEncoder.int8_tool`) can be imported
    (without importing it); False for a runtime without int8."""
    tool = runtime_encoder_class(backend).int8_tool
    return tool is not None and _importable(tool)


def require_int8(backend: str) -> None:
    """Raise an ``ImportError`` naming the ``pip install`` when ``backend``'s int8 tool is
    missing (a ``ValueError`` for a runtime without int8)."""
    cls = runtime_encoder_class(backend)
    needs = cls.int8_tool
    if needs is None:
        raise ValueError(f"backend={backend!r} has no int8: use quantize=None, or another backend.")
    if not int8_installed(backend):
        raise ImportError(
            f"quantize='int8' with backend={backend!r} needs the {needs} package, which is "
            f'not installed: pip install "{cls.extra}" (or pip install {needs}; or '
            f'backend="torch").'
        )


def runtime_encoder(
    backend: str,
    identity: Any,
    dtype: str,
    trust_remote_code: bool,
    quantize: str | None = None,
    calibration: Any = None,
) -> Encoder:
    """The :class:`RuntimeEncoder` of ``backend`` for a pinned model (loads nothing).

    With ``quantize="int8"`` the compute precision is float32 whatever ``dtype``;
    ``calibration`` (a :class:`~xlmt_sklearn.backends._int8.Calibration`, OpenVINO
    only) makes it static int8.
    """
    from ._loading import ModelSpec

    spec = ModelSpec(
        name=identity.name, revision=identity.revision, content_hash=identity.content_hash,
        device="cpu", dtype="float32", trust_remote_code=bool(trust_remote_code),
    )  # fmt: skip
    cls = runtime_encoder_class(backend)
    # Int8 computes its activations in float32, as on torch (the estimators refuse any
    # other explicit dtype with it): no bf16 rounding on top of the int8 error.
    precision = cls.resolve_precision("float32" if quantize == "int8" else dtype)
    return cls(spec, precision, quantize=quantize, calibration=calibration)


def runtime_encoder_class(backend: str) -> type[RuntimeEncoder]:
    """The encoder class of registered runtime ``backend`` (:data:`RUNTIMES`).

    Raises
    ------
    ValueError
        No runtime of that name is registered.
    """
    try:
        return RUNTIMES[backend]
    except KeyError:
        raise ValueError(
            f"backend={backend!r} is not a registered runtime; the backends are "
            f"{', '.join(map(repr, backend_names()))}."
        ) from None


class RuntimeEncoder(Encoder):
    """A converted model run by a CPU runtime (see the module docstring).

    Parameters
    ----------
    spec : ModelSpec
        The torch model it is converted from (CPU, float32).
    precision : {"float32", "bfloat16"}
        The compute precision (already resolved).
    quantize : {None, "int8"}, default=None
        ``"int8"``: the runtime's int8 copy of the converted model
        (:mod:`xlmt_sklearn.backends._int8`).
    calibration : Calibration or None, default=None
        With ``quantize="int8"``, the texts of static int8 (runtimes that have
        it: :attr:`calibrates`).
    """

    name = "runtime"
    #: Import name of the package the runtime needs.
    package = ""
    #: What to ``pip install`` for it (named by the ``ImportError`` when it is missing).
    extra = ""
    #: Import name of its int8 tool, or None: the runtime has no ``quantize="int8"``.
    int8_tool: str | None = None
    precisions: tuple[str, ...] = ("float32",)
    pads_batches = True
    #: Whether this runtime has static int8 (``calibration``).
    calibrates = False

    @classmethod
    def int8_scheme(cls, calibration: Any = None) -> str:
        """The scheme string of this runtime's int8 (part of the converted folder's key and
        the cache fingerprint): :mod:`xlmt_sklearn.backends._int8`."""
        raise NotImplementedError(f"backend={cls.name!r} has no int8.")

    def __init__(
        self, spec: Any, precision: str, quantize: str | None = None, calibration: Any = None
    ):
        if calibration is not None and not (self.calibrates and quantize == "int8"):
            raise ValueError(f"backend={self.name!r} has no static int8 (calibration texts).")
        self.spec = spec
        self.device = "cpu"
        self.dtype = precision
        self.quantize = quantize
        self.calibration = calibration

    @classmethod
    def resolve_precision(cls, dtype: str) -> str:
        """``"auto"`` -> float32; anything not in :attr:`precisions` is refused."""
        if dtype == "auto":
            return "float32"
        if dtype not in cls.precisions:
            raise ValueError(
                f"backend={cls.name!r} computes in {' or '.join(cls.precisions)} on this CPU; "
                f"got dtype={dtype!r}."
            )
        return dtype

    @property
    def scheme(self) -> str | None:
        """The int8 scheme string (:meth:`int8_scheme`), or None for float."""
        return self.int8_scheme(self.calibration) if self.quantize == "int8" else None

    @property
    def fingerprint(self) -> dict[str, Any]:
        # A runtime's vector is close to torch's but not bit-equal: its own key. Int8 names
        # its scheme, which differs from torch int8's (and between the runtimes).
        return {"dtype": self.dtype, "quantize": self.scheme, "backend": self.name}

    def tokenizer(self) -> Any:
        from ._loading import get_tokenizer

        return get_tokenizer(self.spec)

    def special_tokens(self) -> tuple[list[int], list[int]]:
        from ._loading import _special_tokens

        return _special_tokens(self.tokenizer())

    def load(self) -> None:
        require_runtime(self.name)
        self.tokenizer()

    def converted(self, layers: tuple[int, ...], weights: str | None = None) -> Any:
        """The converted model's folder for ``layers`` (converts it on first use).

        ``weights``: "float32", or an int8 scheme (built from the float32 folder);
        default: this encoder's (:attr:`scheme`, else float32).
        """
        from ._convert import ensure_converted

        weights = weights or self.scheme or "float32"
        key, fields = self.conversion(layers, weights)
        src = Path(self.spec.name).expanduser() if self.spec.revision is None else None
        if src is not None:  # for `xlmt-sklearn converted`: is the source gone?
            fields["source"] = str(src.resolve())
        need = None
        if weights != "float32":  # int8 weights: about a quarter of the float32 files
            float_folder = self.converted(layers, "float32")
            need = sum(p.stat().st_size for p in float_folder.iterdir() if p.is_file()) // 4
        elif src is not None:  # a local folder: its weights, as float32
            weights_files = [*src.glob("*.safetensors"), *src.glob("*.bin")]
            need = sum(p.stat().st_size for p in weights_files if p.is_file()) or None

        def build(folder: Any) -> None:
            if weights != "float32":
                self._quantize(self.converted(layers, "float32"), folder)
                return
            from ._loading import _load_model

            self._export(_load_model(self.spec), layers, folder)

        return ensure_converted(key, fields, build, need=need)

    def conversion(
        self, layers: tuple[int, ...], weights: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The converted folder's key and its manifest's description (converts nothing).

        ``weights``: as :meth:`converted`.
        """
        from ._convert import conversion_key

        spec = self.spec
        fields = dict(
            runtime=self.name, model=spec.name, revision=spec.revision,
            content=spec.content_hash, layers=list(layers),
            weights=weights or self.scheme or "float32",
        )  # fmt: skip
        # A local folder is its content: the same files by another path (relative, a copy)
        # reuse one conversion. Its path stays in the manifest, for people.
        local = spec.revision is None and bool(spec.content_hash)
        keyed = {k: v for k, v in fields.items() if not (k == "model" and local)}
        return conversion_key(**keyed), fields

    def session(self, layers: tuple[int, ...]) -> Any:
        """The compiled model for ``layers`` (once per process, precision and threads)."""
        import torch

        from ._loading import max_models

        threads = torch.get_num_threads()
        key = (self.name, self.spec, tuple(layers), self.dtype, self.scheme, threads)
        return _COMPILED.get_or_build(
            key, lambda: (self._compile(self.converted(layers), threads), threading.Lock()),
            max_models(),
        )  # fmt: skip

    def encode(
        self, rows: list[list[int]], options: EncodeOptions, pool_rows: np.ndarray
    ) -> BatchOutput:
        runner, lock = self.session(tuple(options.layers))
        pad_id = self.tokenizer().pad_token_id
        ids, mask = pad_rows(rows, 0 if pad_id is None else int(pad_id))
        with lock:
            stacked = self._run(runner, ids, mask)
        return finish_stacked(stacked, mask, options, pool_rows)  # numpy: no torch here

    # ----------------------------------------------------- runtime-specific
    @abstractmethod
    def _export(self, model: Any, layers: tuple[int, ...], folder: Any) -> None:
        """Write the converted files of ``model`` (float32 torch) into ``folder``."""

    @abstractmethod
    def _quantize(self, float_folder: Any, folder: Any) -> None:
        """Write the int8 copy of the float32 converted model ``float_folder`` into ``folder``."""

    @abstractmethod
    def _compile(self, folder: Any, threads: int) -> Any:
        """The runtime's ready-to-run model from a converted ``folder``."""

    @abstractmethod
    def _run(self, runner: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The stacked hidden states, (n_layers, batch, seq, hidden) float32."""


@owns("runtimes")
def _reset_runtimes() -> None:
    _COMPILED.clear()
