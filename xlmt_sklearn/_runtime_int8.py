"""``quantize="int8"`` on the CPU runtimes: ONNX Runtime and OpenVINO.

Both start from the runtime's float32 converted model (:mod:`xlmt_sklearn._convert`)
and write an int8 copy of it once, into its own converted-model folder (same
atomic rename and manifest checks), keyed by the scheme string below: a change
of scheme is a new folder and a new cache key, never a reuse.

ONNX Runtime (:data:`ONNXRUNTIME_INT8_SCHEME`)
    ``onnxruntime.quantization.quantize_dynamic``: weights int8 (``QInt8``), one
    scale per output channel; activations quantized per batch at run time
    (``DynamicQuantizeLinear`` + ``MatMulInteger``). The embedding tables
    (``Gather``) are stored int8 too. As for torch int8
    (:mod:`xlmt_sklearn._quantize`), the width-reducing matmuls (the feed-forward
    down-projections, whose GELU inputs carry outlier features) stay float32:
    on multilingual-e5-small's real weights, quantizing them as well drops the
    cosine to float32 from 0.998 (min, 300 UMSAB tweets) to 0.987
    (docs/backends.md, "Int8 on the runtimes").

OpenVINO (:data:`OPENVINO_INT8_SCHEME`)
    NNCF's ``compress_weights`` (int8, asymmetric, one scale and zero point per
    output channel, every matmul and embedding): int8 weights, activations in the
    compute precision, which the CPU plugin quantizes on the fly per group of
    :data:`OPENVINO_DQ_GROUP` values (``DYNAMIC_QUANTIZATION_GROUP_SIZE``, set
    explicitly so that a change of the plugin's default cannot change vectors;
    128 was 1.3x faster than 32 at a cosine minimum of 0.9994 instead of 0.9998,
    ``benchmarks/bench_openvino_int8.py``). Activations never see one scale for a
    whole tensor, so the down-projections need no exception.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "INT8_TOOLS",
    "ONNXRUNTIME_INT8_SCHEME",
    "OPENVINO_DQ_GROUP",
    "OPENVINO_INT8_SCHEME",
    "compress_openvino",
    "int8_scheme",
    "quantize_onnx",
    "width_reducing_matmuls",
]

#: What ONNX Runtime int8 does; part of the cache fingerprint and the converted folder's key.
ONNXRUNTIME_INT8_SCHEME = "int8:onnxruntime-dynamic:qint8-per-channel:gather-int8:ffn-down-fp32"
#: Group size of OpenVINO's run-time activation quantization for int8 weights.
OPENVINO_DQ_GROUP = 128
#: What OpenVINO int8 does; part of the cache fingerprint and the converted folder's key.
OPENVINO_INT8_SCHEME = (
    f"int8:nncf-compress-weights:int8-asym-per-channel:dynamic-quantization-{OPENVINO_DQ_GROUP}"
)


def int8_scheme(backend: str) -> str:
    """The int8 scheme string of runtime ``backend`` ("openvino" or "onnxruntime")."""
    return OPENVINO_INT8_SCHEME if backend == "openvino" else ONNXRUNTIME_INT8_SCHEME


#: The package each runtime's int8 needs besides the runtime: OpenVINO's weight
#: compression is NNCF's (in the ``[openvino]`` extra); ONNX Runtime's quantizer
#: ships with ``onnxruntime`` and needs ``onnx``.
INT8_TOOLS = {"openvino": "nncf", "onnxruntime": "onnx"}


# ------------------------------------------------------------------ ONNX Runtime
def width_reducing_matmuls(graph: Any) -> list[str]:
    """Names of the ``MatMul`` nodes of an ONNX ``graph`` whose constant weight narrows the width.

    A weight initializer of shape ``(in, out)`` with ``out < in``: torch's
    ``nn.Linear`` with fewer outputs than inputs, exported (the rule of
    :func:`xlmt_sklearn._quantize._int8_layer_names`).
    """
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    names = []
    for node in graph.node:
        shape = shapes.get(node.input[1]) if node.op_type == "MatMul" else None
        if shape is not None and len(shape) == 2 and shape[1] < shape[0]:
            names.append(node.name)
    return names


def quantize_onnx(float_folder: Path, folder: Path) -> None:
    """Write ``folder/model.onnx``: the float32 ``float_folder/model.onnx`` with int8 weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    model = onnx.load(str(float_folder / "model.onnx"))
    # ORT's quantization pre-processing (symbolic shape inference) fails on these
    # graphs ("Incomplete symbolic shape inference"); quantize_dynamic runs onnx's
    # shape inference itself. The tag only stops its advice to pre-process, which it
    # sends through logging.warning (configuring the root logger of the user's program).
    add_pre_process_metadata(model)
    quantize_dynamic(
        model, str(folder / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        nodes_to_exclude=width_reducing_matmuls(model.graph),
        extra_options={"MatMulConstBOnly": True},
    )  # fmt: skip


# ---------------------------------------------------------------------- OpenVINO
def compress_openvino(float_folder: Path, folder: Path) -> None:
    """Write ``folder/model.xml``/``.bin``: the float32 IR of ``float_folder`` with int8 weights."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(float_folder / "model.xml"))
    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.ERROR)  # its statistics table goes to stdout
    try:
        # Its progress bar (rich) goes to stdout too: stderr, beside our own messages,
        # keeps stdout for the program's output (the command line writes vectors there).
        with contextlib.redirect_stdout(sys.stderr):
            model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    finally:
        nncf.set_log_level(level)
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)


def openvino_int8_config() -> dict[str, Any]:
    """Compile options of an int8 OpenVINO model (see the module docstring)."""
    return {"DYNAMIC_QUANTIZATION_GROUP_SIZE": OPENVINO_DQ_GROUP}
