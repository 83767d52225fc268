"""``backends._encoders``: the Encoder contract, TorchEncoder against ``transformers``
itself, and the numpy finish that runtimes use against the torch one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlmt_sklearn._model import resolve_identity
from xlmt_sklearn.backends._encoders import (
    EncodeOptions,
    TorchEncoder,
    finish_batch,
    finish_stacked,
    pad_rows,
)
from xlmt_sklearn.backends._loading import ModelSpec

TEXTS = ["hello world", "a", "a somewhat longer text, with punctuation!", "ok"]
MODES = ["mean", "cls", "max", "mean_max"]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    identity, folder = resolve_identity(str(tiny_model_dir))
    spec = ModelSpec(name=folder, revision=None, content_hash=identity.content_hash,
                     device="cpu", dtype="float32")  # fmt: skip
    return TorchEncoder(spec)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """Hidden states of every layer, one text at a time, straight from transformers."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModel.from_pretrained(str(tiny_model_dir)).eval()
    out = []
    with torch.inference_mode():
        for t in TEXTS:
            ids = tok(t, return_tensors="pt")
            hs = model(**ids, output_hidden_states=True).hidden_states
            out.append((ids["input_ids"][0].tolist(), [h[0].numpy() for h in hs]))
    return out


def _pool(tokens: np.ndarray, mode: str) -> np.ndarray:
    parts = {"mean": tokens.mean(0), "cls": tokens[0], "max": tokens.max(0)}
    return np.concatenate([parts["mean"], parts["max"]]) if mode == "mean_max" else parts[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers", [(-1,), (-2, -1)])
def test_torch_encoder_pools_like_transformers(encoder, reference, mode, layers):
    rows = [ids for ids, _ in reference]
    opts = EncodeOptions(layers=layers, pooling=mode)
    out = encoder.encode(rows, opts, np.ones(len(rows), dtype=bool))
    for k, (_, hs) in enumerate(reference):
        tokens = np.mean([hs[layer] for layer in layers], axis=0)
        np.testing.assert_allclose(out.pooled[k], _pool(tokens, mode), rtol=0, atol=1e-5)


def test_torch_encoder_token_matrices_like_transformers(encoder, reference):
    rows = [ids for ids, _ in reference]
    out = encoder.encode(rows, EncodeOptions(pooling=None), np.zeros(len(rows), dtype=bool))
    assert out.pooled is None
    for k, (ids, hs) in enumerate(reference):
        np.testing.assert_allclose(out.tokens[k, : len(ids)], hs[-1], rtol=0, atol=1e-5)


def test_the_numpy_finish_equals_the_torch_finish():
    rng = np.random.default_rng(0)
    stacked = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)  # layers, batch, seq, dim
    lengths = [5, 2, 3]
    mask = np.array([[1] * n + [0] * (5 - n) for n in lengths], dtype=np.int64)
    hidden = [torch.from_numpy(h) for h in stacked]
    for mode in MODES:
        for agg in ("mean", "concat"):
            for normalize in (False, True):
                opts = EncodeOptions(layers=(0, 1), layer_aggregation=agg, pooling=mode,
                                     normalize=normalize)  # fmt: skip
                keep = np.ones(3, dtype=bool)
                a = finish_batch(hidden, (0, 1), torch.from_numpy(mask), opts, keep).pooled
                b = finish_stacked(stacked, mask, opts, keep).pooled
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=f"{mode}/{agg}")


def test_pad_rows_pads_with_the_pad_id_and_masks():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=1)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 1, 1]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    assert ids.dtype == mask.dtype == np.int64


def test_describe_fingerprint_and_caps(encoder):
    assert encoder.describe() == "torch (float32)"
    assert encoder.fingerprint == {"dtype": "float32", "quantize": None}
    assert encoder.token_cap(EncodeOptions(max_tokens="auto"), 10) is None  # the CPU: no cap
    assert encoder.token_cap(EncodeOptions(max_tokens=512), 10) == 512
    assert encoder.is_out_of_memory(RuntimeError("CUDA out of memory. Tried ..."))
    assert not encoder.is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_batch_does_not_change_a_row(encoder, reference):
    rows = [ids for ids, _ in reference]
    opts = EncodeOptions()
    together = encoder.encode(rows, opts, np.ones(len(rows), dtype=bool)).pooled
    for k, row in enumerate(rows):
        alone = encoder.encode([row], opts, np.ones(1, dtype=bool)).pooled[0]
        np.testing.assert_allclose(together[k], alone, rtol=0, atol=1e-6)
