"""Int8 dynamic quantization of a model's ``nn.Linear`` layers (CPU)."""

from __future__ import annotations

import warnings

__all__ = ["quantize_int8"]


def quantize_int8(model):
    """Return ``model`` with every ``nn.Linear`` replaced by a dynamic int8 one.

    Weights are quantized per tensor once; activations are quantized per batch
    at run time. Uses ``torch.ao.quantization.quantize_dynamic``, the dynamic
    quantization entry point that ships with torch (its fbgemm kernels are
    the fast int8 path on x86 CPUs); torch marks it as moving to torchao, so
    its deprecation notices are silenced here and the choice is revisited in
    docs/benchmarks.md.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
