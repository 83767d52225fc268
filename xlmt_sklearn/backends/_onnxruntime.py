"""The ONNX Runtime runtime: the model as ONNX on its CPU execution provider.

A runtime plugin (:mod:`._runtime`), registered by :mod:`xlmt_sklearn.backends`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._runtime import RuntimeEncoder


class OnnxRuntimeEncoder(RuntimeEncoder):
    """The model as ONNX (TorchScript exporter) on ONNX Runtime's CPU provider, float32
    (``quantize="int8"``: int8 weights, dynamically quantized activations)."""

    name = "onnxruntime"
    package = "onnxruntime"
    extra = "xlmt-sklearn[onnxruntime]"
    int8_tool = "onnx"  # its quantizer ships with onnxruntime and needs onnx

    @classmethod
    def int8_scheme(cls, calibration: Any = None) -> str:
        from ._int8 import ONNXRUNTIME_INT8_SCHEME

        return ONNXRUNTIME_INT8_SCHEME

    def _export(self, model: Any, layers: tuple[int, ...], folder: Any) -> None:
        from ._convert import export_onnx

        export_onnx(model, layers, folder)

    def _quantize(self, float_folder: Any, folder: Any) -> None:
        from ._int8 import quantize_onnx

        quantize_onnx(float_folder, folder)

    def _compile(self, folder: Any, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def _run(self, runner: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return runner.run(None, {"input_ids": ids, "attention_mask": mask})[0]
