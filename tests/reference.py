"""Reference implementations written directly with transformers + numpy.

They share no code with xlmt_sklearn: one text at a time, no batching, no
sorting, no caching, so any bug in the package's plumbing shows up as a diff.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def load_reference(model_dir):
    """Tokenizer and float32 model loaded directly with transformers (memoised per folder)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    return tok, model


def reference_hidden(model_dir, texts, max_length=128, layers=(-1,)):
    """Per text: list over ``layers`` of (seq, hidden) float32 arrays."""
    import torch

    tok, model = load_reference(str(model_dir))
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
            res = model(**enc, output_hidden_states=True)
            out.append([res.hidden_states[i][0].numpy() for i in layers])
    return out


def reference_pooled(
    model_dir, texts, pooling="mean", layers=(-1,), layer_aggregation="mean",
    normalize=False, max_length=128,
):  # fmt: skip
    rows = []
    for per_layer in reference_hidden(model_dir, texts, max_length, layers):
        if layer_aggregation == "concat":
            h = np.concatenate(per_layer, axis=-1)
        else:
            h = np.mean(np.stack(per_layer), axis=0)
        if pooling == "cls":
            v = h[0]
        elif pooling == "mean":
            v = h.mean(axis=0)
        elif pooling == "max":
            v = h.max(axis=0)
        elif pooling == "mean_max":
            v = np.concatenate([h.mean(axis=0), h.max(axis=0)])
        else:
            raise ValueError(pooling)
        if normalize:
            v = v / np.linalg.norm(v)
        rows.append(v.astype(np.float32))
    return np.stack(rows)
