"""The OpenVINO runtime: the model as OpenVINO IR on its CPU plugin.

A runtime plugin (:mod:`._runtime`), registered by :mod:`xlmt_sklearn.backends`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .._state import owns
from ._runtime import RuntimeEncoder, require_runtime


@functools.cache
def openvino_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AVX-512 BF16 or AMX).

    Asked once per process: every transform resolves ``dtype="auto"`` through it.
    """
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@functools.cache
def drop_openvino_compile_cache(root: str) -> None:
    """Delete ``<root>/openvino-cache``, OpenVINO's compiled-model cache of 0.x (once per
    process and converted root).

    OpenVINO 2026.4.1 names a model's cached blob the same for every
    ``INFERENCE_PRECISION_HINT``, and a bf16 compile that finds the float32 blob
    crashes or returns NaN on AMX CPUs (docs/backends.md, "Known issues"). The
    cache saved 0.1-0.2 s per process at 0.1-1 GB of disk per configuration
    (``benchmarks/bench_selfcheck.py``), so no ``CACHE_DIR`` is set any more, and
    the blobs it left are deleted.
    """
    import shutil
    from pathlib import Path

    shutil.rmtree(Path(root) / "openvino-cache", ignore_errors=True)


class OpenVINOEncoder(RuntimeEncoder):
    """The model as OpenVINO IR on the CPU plugin.

    ``dtype="auto"`` is bfloat16 where the CPU executes it natively (AVX-512
    BF16, AMX: OpenVINO's ``INFERENCE_PRECISION_HINT``), float32 elsewhere;
    ``"float32"`` is exact float32 (no bf16 hint).
    """

    name = "openvino"
    package = "openvino"
    extra = "xlmt-sklearn[openvino]"
    int8_tool = "nncf"  # its weight compression and quantization (in the extra)
    precisions = ("float32", "bfloat16")
    calibrates = True

    @classmethod
    def int8_scheme(cls, calibration: Any = None) -> str:
        from ._int8 import OPENVINO_INT8_SCHEME, openvino_static_scheme

        return OPENVINO_INT8_SCHEME if calibration is None else openvino_static_scheme(calibration)

    @property
    def cut_tokens(self) -> int:  # type: ignore[override]
        """On AMX a bf16 or int8 token costs a quarter of a float32 one, a call as much:
        fewer, larger batches there (docs/backends.md, "Batching"; measured on AMX only)."""
        from .._machine import cpu_class
        from ..flow._batching import BATCH_OVERHEAD_TOKENS, FAST_BATCH_OVERHEAD_TOKENS

        fast = self.dtype == "bfloat16" or self.quantize == "int8"
        return (
            FAST_BATCH_OVERHEAD_TOKENS if fast and cpu_class() == "amx" else BATCH_OVERHEAD_TOKENS
        )

    @classmethod
    def resolve_precision(cls, dtype: str) -> str:
        require_runtime(cls.name)
        if dtype == "auto":
            return "bfloat16" if openvino_has_bf16() else "float32"
        if dtype == "bfloat16" and not openvino_has_bf16():
            raise ValueError(
                "dtype='bfloat16' with backend='openvino' needs a CPU with native bf16 "
                "(AVX-512 BF16 or AMX); this one has none: use dtype='auto' or 'float32'."
            )
        return super().resolve_precision(dtype)

    def _export(self, model: Any, layers: tuple[int, ...], folder: Any) -> None:
        from ._convert import export_openvino

        export_openvino(model, layers, folder)

    def _quantize(self, float_folder: Any, folder: Any) -> None:
        from ._int8 import calibration_samples, compress_openvino, quantize_openvino_static

        if self.calibration is None:
            compress_openvino(float_folder, folder)
            return
        samples = calibration_samples(self.tokenizer(), self.calibration)
        quantize_openvino_static(float_folder, folder, samples)

    def compile_config(self, threads: int) -> dict[str, Any]:
        """The CPU plugin's options for this encoder's precision, int8 scheme and threads."""
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.dtype == "bfloat16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads),
        }
        if self.quantize == "int8" and self.calibration is None:
            from ._int8 import openvino_int8_config

            config.update(openvino_int8_config())
        return config

    def _compile(self, folder: Any, threads: int) -> Any:
        import openvino as ov

        from ._convert import converted_root

        drop_openvino_compile_cache(str(converted_root()))  # no CACHE_DIR: see its docstring
        config = self.compile_config(threads)
        return ov.Core().compile_model(str(folder / "model.xml"), "CPU", config)

    def _run(self, runner: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return runner({"input_ids": ids, "attention_mask": mask})[0]


@owns("runtimes")
def _reset_probes() -> None:
    openvino_has_bf16.cache_clear()
    drop_openvino_compile_cache.cache_clear()
