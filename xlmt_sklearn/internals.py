"""The one door to the package's internals, for benchmarks and tools.

The public API is the estimators, the caches and :mod:`xlmt_sklearn.spark` /
:mod:`xlmt_sklearn.dask`. A benchmark that measures a part *underneath* them (the
batch plan, one runtime, the SQLite store) imports it from here, never from a
private module, so that the internals can move without touching the benchmarks,
and so that what the benchmarks rely on is listed in one place.

Nothing here is a stable API: names follow the internals and may change in any
release. Users should not need this module; if they do, that is a missing public
feature (please file it).

Groups:

* **machine**: :data:`CPU_CLASSES`, :data:`ISA_FLAGS`, :func:`cpu_class`;
* **models**: :func:`resolve_identity`, :class:`ModelSpec`, :class:`LoadedModel`,
  :func:`get_model`, :func:`get_tokenizer`, :func:`special_tokens`,
  :func:`load_count`, :func:`clear_model_registry`;
* **backends**: :func:`auto_rule`, :func:`resolve_backend`, :func:`runtime_installed`,
  :func:`int8_installed`, :func:`runtime_encoder`, :func:`runtime_encoder_class`,
  :func:`openvino_has_bf16`, :func:`check_runtime`, :class:`EncodeOptions`,
  :class:`TorchEncoder`, :class:`PackedForward`, :func:`pad_rows`, :func:`quantize_int8`,
  :func:`forward_seconds` (time torch's forward passes; ``XLMT_SKLEARN_PACKED=0`` turns the
  packed CPU path off, ``FLOW_TUNING.sort_batches=False`` cuts batches in input order),
  the OpenVINO int8 helpers, :func:`encoders` / :func:`calibration` of a fitted
  estimator, and :func:`list_converted` / :func:`remove_converted` (the converted models on
  disk);
* **flow**: :func:`tokenize`, :func:`plan_batches`, :class:`BatchPlan`, :func:`encode`,
  :data:`FLOW_TUNING`;
* **store**: :func:`make_keys`, :func:`key_id`, :data:`INDEX_COLUMNS`,
  :data:`MMAP_SIZE`, :data:`STORE_TUNING`, :data:`CRC32_IMPLEMENTATION`,
  :func:`finite_rows`;
* **embedding table**: :data:`TABLE_TUNING` (``broadcast_bytes``, both engines);
* **fine-tune**: :class:`TrainSpec`, :class:`Trainer` (one step as ``loss``, ``backward``
  and ``update``), :func:`train_batch` (token ids and mask of a batch's rows),
  :func:`list_adapted` / :func:`remove_adapted` (the adapted encoders on disk).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._machine import CPU_CLASSES, ISA_FLAGS, cpu_class
from ._model import resolve_identity
from .adapt._adapted_folders import list_adapted, remove_adapted
from .adapt._train import TrainSpec
from .adapt._train import _batch as train_batch
from .adapt._train import _Trainer as Trainer
from .backends._auto import auto_rule, resolve_backend
from .backends._converted_folders import list_converted, remove_converted
from .backends._encoders import FORWARD_OBSERVERS, EncodeOptions, Encoder, TorchEncoder, pad_rows
from .backends._int8 import (
    OPENVINO_DQ_GROUP,
    OPENVINO_SMOOTH_QUANT_ALPHA,
    calibration_samples,
    openvino_int8_config,
    quantize_openvino_static,
)
from .backends._loading import (
    LoadedModel,
    ModelSpec,
    clear_model_registry,
    get_model,
    get_tokenizer,
    load_count,
)
from .backends._loading import _special_tokens as special_tokens
from .backends._openvino import openvino_has_bf16
from .backends._packed import PackedForward
from .backends._quantize import quantize_int8
from .backends._runtime import (
    int8_installed,
    runtime_encoder,
    runtime_encoder_class,
    runtime_installed,
)
from .backends._selfcheck import check_runtime
from .flow._batching import BatchPlan, plan_batches
from .flow._pipeline import encode
from .flow._tokenize import tokenize
from .flow._tuning import TUNING as FLOW_TUNING
from .store._keys import make_keys
from .store._sqlite import CRC32_IMPLEMENTATION, INDEX_COLUMNS, MMAP_SIZE, key_id
from .store._sqlite import TUNING as STORE_TUNING
from .store._sqlite._codec import _finite_rows as finite_rows
from .table._format import TUNING as TABLE_TUNING

__all__ = [
    "CPU_CLASSES",
    "CRC32_IMPLEMENTATION",
    "FLOW_TUNING",
    "INDEX_COLUMNS",
    "ISA_FLAGS",
    "MMAP_SIZE",
    "OPENVINO_DQ_GROUP",
    "OPENVINO_SMOOTH_QUANT_ALPHA",
    "STORE_TUNING",
    "TABLE_TUNING",
    "BatchPlan",
    "EncodeOptions",
    "LoadedModel",
    "ModelSpec",
    "PackedForward",
    "TorchEncoder",
    "TrainSpec",
    "Trainer",
    "auto_rule",
    "calibration",
    "calibration_samples",
    "check_runtime",
    "clear_model_registry",
    "cpu_class",
    "encode",
    "encoders",
    "finite_rows",
    "forward_seconds",
    "get_model",
    "get_tokenizer",
    "int8_installed",
    "key_id",
    "list_adapted",
    "list_converted",
    "load_count",
    "make_keys",
    "openvino_has_bf16",
    "openvino_int8_config",
    "pad_rows",
    "plan_batches",
    "quantize_int8",
    "quantize_openvino_static",
    "remove_adapted",
    "remove_converted",
    "resolve_backend",
    "resolve_identity",
    "runtime_encoder",
    "runtime_encoder_class",
    "runtime_installed",
    "special_tokens",
    "tokenize",
    "train_batch",
]


def encoders(estimator: Any, selfcheck: bool = True) -> list[Encoder]:
    """The encoders a fitted estimator's next ``transform`` uses, one per device.

    Nothing is loaded yet; a native runtime's first use on this machine runs its
    self-check unless ``selfcheck=False``.
    """
    return estimator._encoders(selfcheck=selfcheck)


def calibration(estimator: Any) -> Any:
    """A fitted estimator's ``calibration_texts`` as the model sees them, or None."""
    return estimator._calibration()


@contextmanager
def forward_seconds() -> Iterator[list[float]]:
    """Collect the seconds of every torch forward pass (packed or padded) run inside
    the block, in the order they finish."""
    spent: list[float] = []
    observe = spent.append
    FORWARD_OBSERVERS.append(observe)
    try:
        yield spent
    finally:
        FORWARD_OBSERVERS.remove(observe)
