"""Int8 dynamic quantization of a model's linear layers (CPU)."""

from __future__ import annotations

import warnings

__all__ = ["INT8_SCHEME", "quantize_int8"]

#: Names what :func:`quantize_int8` does; part of the cache fingerprint, so a
#: change of scheme never serves vectors computed under the previous one.
INT8_SCHEME = "int8:torch.ao-dynamic:per-channel:ffn-down-fp32"


def _int8_layer_names(model) -> set[str]:
    """The ``nn.Linear`` layers to quantize: all but the width-reducing ones."""
    import torch

    return {
        name
        for name, mod in model.named_modules()
        if type(mod) is torch.nn.Linear and mod.out_features >= mod.in_features
    }


def quantize_int8(model):
    """Quantize ``model``'s linear layers to dynamic int8 in place, except width-reducing ones.

    Quantized: every ``nn.Linear`` whose output is at least as wide as its
    input -- in BERT-family encoders the attention query/key/value/output
    projections, the feed-forward up-projection and the pooler, about two
    thirds of the encoder's FLOPs. Weights become int8 once, with one scale
    per output channel; activations are quantized per batch at run time
    (fbgemm kernels on x86 CPUs).

    Kept in float32: linear layers that reduce width, i.e. the feed-forward
    down-projections (3072 -> 768 in XLM-R base). Their inputs are GELU
    outputs with large outlier features, and quantizing them with one scale
    per batch is what costs real pretrained models their accuracy: on 300
    UMSAB tweets, multilingual-e5-small quantized everywhere (torch.ao
    defaults) has cosine 0.958 (min) / 0.978 (mean) to float32; with these
    layers kept it has 0.990 / 0.996 (docs/benchmarks.md, "int8").

    Uses ``torch.ao.quantization.quantize_dynamic``: torch marks it as moving
    to torchao, but torchao's int8 dynamic configuration runs an order of
    magnitude slower on CPUs without ``torch.compile`` (measured in
    docs/benchmarks.md), so the fbgemm path stays until that changes; its
    deprecation notices are silenced here.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = _int8_layer_names(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # In place: a copy would hold two float32 models in memory at once.
        return quantize_dynamic(
            model, {n: per_channel_dynamic_qconfig for n in names}, dtype=torch.qint8,
            inplace=True,
        )  # fmt: skip
