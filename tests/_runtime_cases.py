"""Texts and tolerances shared by the runtime tests (test_backends, test_static_int8).

Tolerances (measured on the tiny fixtures): int8 on either runtime has cosine >= 0.9998
per row (pooled vectors and tokens) to torch float32, asserted at :data:`INT8_COSINE`.
"""

from __future__ import annotations

import numpy as np

TEXTS = [
    "hello world this is a tweet about the weather",
    "hola",
    "@user bonjour le monde 😀 #hashtag!!! ciao mondo, tutto bene? 🙂🙂",
    "hello world this is a tweet about the weather",
]
LONG = " ".join(["guten Tag liebe Welt, wie geht's?"] * 12)
#: Cosine per row of runtime int8 to torch float32 (tiny models; real weights: docs/backends.md).
INT8_COSINE = 0.999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` to the same row of ``b``."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
