"""What computes the model: the Encoder interface, torch, the runtime plugins, the "auto" rule.

Importing this package registers the built-in runtimes, one module each
(:mod:`._openvino`, :mod:`._onnxruntime`); a runtime of your own is one module
with a :class:`~._runtime.RuntimeEncoder` subclass and ``register_runtime(cls)``
(docs/architecture.md, "Where a new backend plugs in").
"""

from ._onnxruntime import OnnxRuntimeEncoder
from ._openvino import OpenVINOEncoder
from ._runtime import register_runtime

for _builtin in (OpenVINOEncoder, OnnxRuntimeEncoder):  # the built-in runtimes, in this order
    register_runtime(_builtin)
