"""Before/after check of a refactor: every output the estimators give, saved and compared.

Runs the public API over every pooling mode, layer choice, ``normalize``, window
truncation, prefix template, ``cache_layers`` derivation, the token outputs
(subword, word, pre-split words, special tokens, padded and frame containers, cold
and from a warm cache) and
every installed backend and precision, on a tiny random XLM-R (real tokenizer when
``../shared`` is present) and a fixed set of tweet-like texts with duplicates,
handles, links, an empty text and texts longer than ``max_length``.

Usage::

    python benchmarks/outputs_snapshot.py --save before.npz      # on the old commit
    python benchmarks/outputs_snapshot.py --compare before.npz   # on the new one

``--compare`` fails (exit 1) unless every torch float32 output is bit-identical
to the saved one and every other backend/precision is within today's bars of its
saved output (float32 runtimes: max abs 1e-5; bfloat16: cosine >= 0.999; int8:
cosine >= 0.99), and every token's text and offsets are equal. It writes nothing
under ``benchmarks/results``: it is a check, not a measurement.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLMT_SKLEARN_SELFCHECK", "0")  # the snapshot compares outputs only

import argparse
import hashlib
import importlib.util
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import synthetic_texts, tiny_model_dir

from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer

TEXTS = [
    *synthetic_texts(40, seed=3),
    "@someone look at https://example.com/x?y=1 now!!",
    "",
    "hello world",
    "hello world",
    "  spaced   out  ",
    " ".join(synthetic_texts(12, seed=4)),  # longer than max_length=32: windows / truncation
]
WORDS = [t.split() or ["empty"] for t in TEXTS[:12]]


def _pooled_cases() -> Iterator[tuple[str, dict]]:
    for pooling in ("mean", "cls", "max", "mean_max"):
        for layers, agg in ((-1, "mean"), ([-3, -2, -1], "mean"), ([-3, -1], "concat")):
            for normalize in (False, True):
                name = f"pooled-{pooling}-{layers}-{agg}-{normalize}"
                yield name, dict(pooling=pooling, layers=layers, layer_aggregation=agg,
                                 normalize=normalize)  # fmt: skip
    yield "pooled-window", dict(truncation="window", stride=4)
    yield "pooled-window-max", dict(truncation="window", pooling="max", stride=None)
    yield "pooled-template", dict(prefix="query: {text}", preprocess=None)
    yield "pooled-prefix-cls", dict(prefix="passage: ", pooling="cls")


def _token_cases() -> Iterator[tuple[str, dict]]:
    yield "tokens-subword", dict()
    yield "tokens-subword-special", dict(special_tokens=True)
    yield "tokens-word-first", dict(granularity="word")
    yield "tokens-word-mean-concat", dict(granularity="word", word_vector="mean",
                                          layers=[-2, -1], layer_aggregation="concat")  # fmt: skip
    yield "tokens-window", dict(truncation="window", stride=4)
    yield "tokens-prefix", dict(prefix="query: ", granularity="word")
    yield "tokens-fp16-cache", dict(cache_dtype="float16")


def _backends() -> Iterator[tuple[str, dict, str]]:
    """(label, estimator options, tolerance class) for every installed backend/precision."""
    yield "torch-f32", dict(backend="torch", dtype="float32"), "exact"
    yield "torch-bf16", dict(backend="torch", dtype="bfloat16"), "bf16"
    yield "torch-int8", dict(backend="torch", quantize="int8"), "int8"
    if importlib.util.find_spec("openvino") is not None:
        yield "openvino-f32", dict(backend="openvino", dtype="float32"), "f32"
        yield "openvino-bf16", dict(backend="openvino", dtype="bfloat16"), "bf16"
        yield "openvino-int8", dict(backend="openvino", quantize="int8"), "int8"
    if importlib.util.find_spec("onnxruntime") is not None:
        yield "onnxruntime-f32", dict(backend="onnxruntime", dtype="float32"), "f32"


def _token_arrays(name: str, out: object) -> dict[str, np.ndarray]:
    """Token outputs as arrays: vectors, row lengths and a digest of tokens and offsets."""
    import pandas as pd

    if isinstance(out, pd.DataFrame):
        text = "\x1e".join(map(str, out.drop(columns="embedding").itertuples(index=False)))
        return {
            f"{name}/vectors": np.stack(out["embedding"].to_list()).astype(np.float32),
            f"{name}/meta": np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8),
        }
    if hasattr(out, "vectors"):  # PaddedTokens
        return {f"{name}/vectors": np.asarray(out.vectors), f"{name}/mask": np.asarray(out.mask)}
    mats = list(out)
    return {
        f"{name}/vectors": np.concatenate(mats) if mats else np.empty((0, 0), np.float32),
        f"{name}/lengths": np.asarray([len(m) for m in mats]),
    }


def snapshot(model: Path, cache_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every output, keyed by case; and each key's tolerance class."""
    arrays: dict[str, np.ndarray] = {}
    tolerance: dict[str, str] = {}
    common = dict(max_length=32, progress=False)

    def run(name: str, make: Callable[[], object], tol: str, **kw) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = make().fit(None).transform(kw.pop("X", TEXTS))
        got = _token_arrays(name, out) if kw.pop("tokens", False) else {name: np.asarray(out)}
        arrays.update(got)
        tolerance.update(dict.fromkeys(got, "exact" if name.endswith("/meta") else tol))

    pooled = partial(XLMTVectorizer, str(model), **common)
    token = partial(XLMTTokenVectorizer, str(model), **common)
    for label, backend, tol in _backends():
        full = label == "torch-f32"
        for case, params in _pooled_cases() if full else [("pooled-mean", {})]:
            run(f"{label}/{case}", partial(pooled, **backend, **params), tol)
        for case, params in _token_cases() if full else [("tokens-subword", {})]:
            run(f"{label}/{case}", partial(token, **backend, **params), tol, tokens=True)
    torch = partial(token, backend="torch", dtype="float32")
    run("torch-f32/tokens-presplit", partial(torch, granularity="word"), "exact", tokens=True,
        X=WORDS)  # fmt: skip
    run("torch-f32/tokens-padded", partial(torch, output="padded"), "exact", tokens=True)
    run("torch-f32/tokens-frame", partial(torch, output="frame", granularity="word"), "exact",
        tokens=True)  # fmt: skip
    for i, (pooling, layers, agg) in enumerate(
        [("cls", [-2, -1], "concat"), ("mean", [0, -1], "mean"), ("mean_max", -1, "mean")]
    ):  # cache_layers: the second estimator's rows are derived from the first one's stats
        make = partial(
            pooled, backend="torch", dtype="float32", pooling=pooling, layers=layers,
            layer_aggregation=agg, cache=cache_dir / f"derive-{i}.sqlite", cache_layers="all",
        )  # fmt: skip
        for tag in ("miss", "derived"):
            run(f"torch-f32/cache-layers-{i}-{tag}", make, "exact")
    for case, params, X in [  # token features served from a warm cache: vectors, words, offsets
        ("subword", dict(special_tokens=True), TEXTS), ("word", dict(granularity="word"), TEXTS),
        ("presplit", dict(granularity="word"), WORDS), ("window", dict(truncation="window"), TEXTS),
    ]:  # fmt: skip
        make = partial(torch, output="frame", cache=cache_dir / f"warm-{case}.sqlite", **params)
        for tag in ("cold", "warm"):
            run(f"torch-f32/tokens-{tag}-{case}", make, "exact", tokens=True, X=X)
    return arrays, tolerance


def compare(before: dict[str, np.ndarray], after: dict[str, np.ndarray], tol: dict[str, str]):
    """The keys that differ beyond their bar, with the measured difference."""
    bad = []
    for key in sorted(set(before) | set(after)):
        if key not in before or key not in after:
            bad.append(f"{key}: only {'before' if key in before else 'after'}")
            continue
        a, b = before[key], after[key]
        if a.shape != b.shape:
            bad.append(f"{key}: shape {a.shape} -> {b.shape}")
            continue
        kind = tol.get(key, "exact")
        if kind == "exact":
            if not np.array_equal(a, b):
                bad.append(f"{key}: not bit-identical (max abs {np.abs(a - b).max():.3g})")
        elif kind == "f32":
            diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
            if diff > 1e-5:
                bad.append(f"{key}: max abs {diff:.3g} > 1e-5")
        else:
            x, y = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1)
            num = (x * y).sum(1)
            den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
            cos = np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)
            bar = 0.999 if kind == "bf16" else 0.99
            if cos.size and cos.min() < bar:
                bad.append(f"{key}: cosine min {cos.min():.5f} < {bar}")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="write the snapshot to this .npz")
    group.add_argument("--compare", type=Path, help="compare with a snapshot saved before")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("XLMT_SKLEARN_CONVERTED_DIR", str(Path(tmp) / "converted"))
        model = tiny_model_dir(Path(tmp) / "model")
        arrays, tol = snapshot(model, Path(tmp))
    for key, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            print(f"{key}: non-finite output", file=sys.stderr)
            return 1
    if args.save:
        np.savez(args.save, **arrays, __tolerance__=np.array(sorted(tol.items())))
        print(f"saved {len(arrays)} outputs to {args.save}")
        return 0
    with np.load(args.compare) as saved:
        before = {k: saved[k] for k in saved.files if k != "__tolerance__"}
        tol = {**dict(map(tuple, saved["__tolerance__"])), **tol}
    bad = compare(before, arrays, tol)
    for line in bad:
        print(line, file=sys.stderr)
    exact = sum(v == "exact" for v in tol.values())
    print(f"{len(arrays)} outputs compared ({exact} bit-exact): "
          f"{'all equal within their bars' if not bad else f'{len(bad)} differ'}")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
