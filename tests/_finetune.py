"""What the fine-tune tests share: 48 tweet-like texts with three labels, and a fast
XLMTFineTunedVectorizer on a tiny model (2 epochs, batches of 8, rate 1e-3, CPU)."""

from __future__ import annotations

import numpy as np

from tests._models import tweet_like_texts
from xlmt_sklearn import XLMTFineTunedVectorizer

N = 48


def labelled() -> tuple[list[str], np.ndarray]:
    """``N`` texts and their labels (three classes, equally many)."""
    return tweet_like_texts(N), np.array(["neg", "pos", "neu"] * (N // 3))


def fast_ft(model_dir, root, **params) -> XLMTFineTunedVectorizer:
    base = dict(device="cpu", progress=False, epochs=2, train_batch_size=8, cv=None,
                adapted_dir=str(root), learning_rate=1e-3)  # fmt: skip
    return XLMTFineTunedVectorizer(str(model_dir), **{**base, **params})
