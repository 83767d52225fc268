"""The packed (padding-free) CPU forward path and int8 quantization, unit by unit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel

from xlmt_sklearn.backends._packed import PackedForward, fuse_int8_qkv
from xlmt_sklearn.backends._quantize import quantize_int8


def _model(folder):
    return AutoModel.from_pretrained(str(folder)).eval()


def _rows(vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # Lengths 3..17, ids above the special tokens (0-3), in no particular order.
    return [[0, *rng.integers(4, vocab, n).tolist(), 2] for n in (15, 1, 7, 3, 12)]


def _padded_forward(model, rows, pad_id):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r)
        mask[k, : len(r)] = 1
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states, mask


@pytest.mark.parametrize("kind", ["xlmr", "bert"])
def test_packed_equals_model_forward(kind, tiny_model_dir, tiny_bert_dir):
    model = _model(tiny_model_dir if kind == "xlmr" else tiny_bert_dir)
    packed = PackedForward.of(model)
    assert packed is not None
    rows = _rows(model.config.vocab_size)
    n = model.config.num_hidden_layers
    with torch.inference_mode():
        hs, mask = packed(rows, tuple(range(n + 1)))
    ref, ref_mask = _padded_forward(model, rows, packed.pad_id)
    assert torch.equal(mask, ref_mask)
    m = mask.bool()
    for i in range(n + 1):
        # Every hidden state on real tokens; padding positions hold zeros.
        assert (hs[i][m] - ref[i][m]).abs().max() < 1e-5, i
        assert not hs[i][~m].any()


def test_packed_only_computes_requested_layers(tiny_model_dir):
    model = _model(tiny_model_dir)
    packed = PackedForward.of(model)
    with torch.inference_mode():
        hs, _ = packed(_rows(model.config.vocab_size), (-1,))
    assert [h is not None for h in hs] == [False, False, True]


def test_hooks_training_and_compiled_models_take_the_model_forward(tiny_model_dir):
    model = _model(tiny_model_dir)
    handle = model.register_forward_hook(lambda *a: None)
    assert PackedForward.of(model) is None  # the user's hook must keep firing
    handle.remove()
    assert PackedForward.of(model) is not None
    model.train()
    assert PackedForward.of(model) is None
    model.eval()
    model._orig_mod = model  # what torch.compile's wrapper looks like
    assert PackedForward.of(model) is None


def test_packed_copy_follows_weight_changes(tiny_model_dir):
    model = _model(tiny_model_dir)
    rows = _rows(model.config.vocab_size)
    first = PackedForward.of(model)
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight.mul_(2.0)  # in place
    again = PackedForward.of(model)
    assert again is not first  # the fused q/k/v copy was rebuilt
    with torch.inference_mode():
        hs, mask = again(rows, (-1,))
    ref, _ = _padded_forward(model, rows, again.pad_id)
    m = mask.bool()
    assert (hs[-1][m] - ref[-1][m]).abs().max() < 1e-5


def test_quantize_int8_keeps_width_reducing_linears_in_float32(tiny_model_dir):
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    model = quantize_int8(_model(tiny_model_dir))
    for layer in model.encoder.layer:
        sa = layer.attention.self
        for m in (sa.query, sa.key, sa.value, layer.attention.output.dense,
                  layer.intermediate.dense):  # fmt: skip
            assert type(m) is DynLinear
        assert type(layer.output.dense) is torch.nn.Linear  # FFN down-projection


def test_fused_int8_qkv_equals_three_modules(tiny_model_dir):
    model = quantize_int8(_model(tiny_model_dir))
    sa = model.encoder.layer[0].attention.self
    mods = (sa.query, sa.key, sa.value)
    fused = fuse_int8_qkv(mods)
    assert fused is not None
    x = torch.randn(9, model.config.hidden_size)
    with torch.inference_mode():
        got = fused(x)
        want = torch.cat([m(x) for m in mods], dim=1)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-5
    assert fuse_int8_qkv((sa.query, sa.key, torch.nn.Linear(4, 4))) is None


def test_packed_int8_close_to_padded_int8(tiny_model_dir):
    """Same quantized modules; activation scales differ (padding rows), so only close."""
    model = quantize_int8(_model(tiny_model_dir))
    packed = PackedForward.of(model)
    assert packed is not None and all(f is not None for f in packed.fused)
    rows = _rows(model.config.vocab_size)
    with torch.inference_mode():
        hs, mask = packed(rows, (-1,))
    ref, _ = _padded_forward(model, rows, packed.pad_id)
    m = mask.bool()
    a, b = hs[-1][m], ref[-1][m]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cos.min() > 0.99
