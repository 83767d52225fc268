"""OpenVINO int8: speed and closeness to float32 for each activation-quantization group size.

OpenVINO int8 (``_runtime_int8``) stores int8 weights and quantizes the
activations on the fly, one scale per group of ``DYNAMIC_QUANTIZATION_GROUP_SIZE``
values. Smaller groups follow the activations more closely; larger ones do
less work per matmul. This script measures both sides, so the group the
package ships (``_runtime_int8.OPENVINO_DQ_GROUP``) is chosen from numbers:

* the models: multilingual-e5-small (real weights, ``prefix="query: "``) and the
  XLM-R base shape (random weights: speed only, its cosines mean little);
* the same converted int8 model (``backend="openvino", quantize="int8"``),
  compiled once per group size; float32 reference: the converted float32
  model (equal to torch float32 within 1e-5, tests/test_backends.py);
* UMSAB tweets, normalised, deduplicated, padded batches of 32 cut where padding
  is least (the plan the runtimes get), mean pooling; every group timed in the
  same interleaved rounds (medians); cosine per text to float32.

Usage::

    python benchmarks/bench_openvino_int8.py            # writes results/openvino-int8-groups.md
    python benchmarks/bench_openvino_int8.py --smoke    # tiny model, writes nothing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np

GROUPS = (32, 64, 128, 256)


def _converted(model_dir: Path) -> tuple[Path, Path]:
    """The product's converted float32 and int8 OpenVINO folders of ``model_dir``."""
    from xlmt_sklearn._encoders_runtime import runtime_encoder
    from xlmt_sklearn._model import resolve_identity

    identity, _ = resolve_identity(str(model_dir))
    encoder = runtime_encoder("openvino", identity, "float32", False, "int8")
    return encoder.converted((-1,), "float32"), encoder.converted((-1,))


def _batches(model_dir: Path, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions, ids, mask) of each padded batch, as the runtimes get them."""
    from transformers import AutoTokenizer

    from xlmt_sklearn._batching import plan_batches

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = tok(texts, truncation=True, max_length=128)["input_ids"]
    plan = plan_batches([len(r) for r in rows], 32, min_padding=True)
    out = []
    for b in plan.batches:
        width = max(len(rows[i]) for i in b)
        ids = np.full((len(b), width), tok.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(b), width), dtype=np.int64)
        for k, i in enumerate(b):
            ids[k, : len(rows[i])], mask[k, : len(rows[i])] = rows[i], 1
        out.append((b, ids, mask))
    return out


def _embed(compiled, batches, n: int) -> np.ndarray:
    out = None
    for b, ids, mask in batches:
        hs = compiled({"input_ids": ids, "attention_mask": mask})[0][0]
        pooled = (hs * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        out = np.zeros((n, hs.shape[-1]), np.float32) if out is None else out
        out[b] = pooled
    return out


def measure(model_dir: Path, texts: list[str], rounds: int, threads: int) -> dict:
    """Median seconds and cosines to float32 of every group size, one model."""
    import openvino as ov

    from xlmt_sklearn._runtime_int8 import openvino_int8_config

    float_dir, int8_dir = _converted(model_dir)
    batches = _batches(model_dir, texts)
    core = ov.Core()
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32"}  # fmt: skip
    ref = _embed(core.compile_model(str(float_dir / "model.xml"), "CPU", base), batches, len(texts))
    compiled, cos, runs = {}, {}, {}
    for g in GROUPS:
        config = {**base, **openvino_int8_config(), "DYNAMIC_QUANTIZATION_GROUP_SIZE": g}
        compiled[g] = core.compile_model(str(int8_dir / "model.xml"), "CPU", config)
        got = _embed(compiled[g], batches, len(texts))
        cos[g] = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        runs[f"group {g}"] = lambda c=compiled[g]: _embed(c, batches, len(texts))
    times = C.interleave(runs, rounds)
    return {g: {"s": times[f"group {g}"].median, "cos": cos[g]} for g in GROUPS}


def render(results: dict, n: int, rounds: int, command: str, wall: float) -> str:
    from xlmt_sklearn._runtime_int8 import OPENVINO_DQ_GROUP

    rows = []
    for model, per_group in results.items():
        slowest = per_group[GROUPS[0]]["s"]
        for g, r in per_group.items():
            c = r["cos"]
            rows.append([
                model, f"**{g}**" if g == OPENVINO_DQ_GROUP else g, f"{r['s']:.2f}",
                f"{slowest / r['s']:.2f}x", f"{c.min():.5f}", f"{np.percentile(c, 1):.5f}",
                f"{c.mean():.5f}",
            ])  # fmt: skip
    table = C.md_table(
        ["model", "group size", "median s", f"speed vs group {GROUPS[0]}", "cosine min",
         "1st percentile", "mean"], rows)  # fmt: skip
    mach = C.md_table(["", ""], [[k, v] for k, v in C.machine_info().items()])
    return f"""## OpenVINO int8: activation-quantization group size

Generated by `{command}` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} in
{wall / 60:.1f} minutes. {n} UMSAB tweets (normalised, deduplicated), padded batches of at most
32 cut where padding is least, mean pooling, {rounds} interleaved rounds (medians). Cosine per
text to the converted float32 model. The shipped group size is in bold
(`_runtime_int8.OPENVINO_DQ_GROUP`). The XLM-R base shape has random weights: its cosines
say little about quality (e5-small's do; task quality: `int8_quality.py --backend openvino`).

{mach}

{table}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny random model, few texts")
    p.add_argument("--n", type=int, default=None, help="texts (default 1000; smoke 16)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; smoke 1)")
    args = p.parse_args(argv)
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        print("SKIPPED: needs the [openvino] extra (openvino, nncf)")
        return 0
    import torch

    t0 = time.perf_counter()
    n, rounds = args.n or (16 if args.smoke else 1000), args.rounds or (1 if args.smoke else 3)
    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory(prefix="xlmt-ov-int8-")
        __import__("os").environ["XLMT_SKLEARN_CONVERTED_DIR"] = str(Path(tmp.name) / "conv")
        models = {"tiny": C.tiny_model_dir(Path(tmp.name) / "tiny", real_tokenizer=False)}
    else:
        models = {"multilingual-e5-small": C.e5_small_dir(), "XLM-R base shape": C.base_model_dir()}
        models = {k: v for k, v in models.items() if v is not None}
    from xlmt_sklearn._preprocess import normalize_tweet

    tweets, _, _ = C.load_tweets(2 * n, seed=1, with_labels=True)
    texts = list(dict.fromkeys("query: " + normalize_tweet(t) for t in tweets))[:n]
    results = {}
    for name, folder in models.items():
        print(f"{name}: {folder}", flush=True)
        results[name] = measure(folder, texts, rounds, torch.get_num_threads())
        for g, r in results[name].items():
            print(f"  group {g:>4}: {r['s']:.2f} s, cosine min {r['cos'].min():.5f}", flush=True)
    if not args.smoke:
        command = "python benchmarks/bench_openvino_int8.py " + " ".join(sys.argv[1:])
        text = render(results, len(texts), rounds, command.strip(), time.perf_counter() - t0)
        (C.RESULTS / "openvino-int8-groups.md").write_text(text, encoding="utf-8")
        C.assemble_docs()
        print(f"wrote {C.RESULTS / 'openvino-int8-groups.md'} and docs/benchmarks.md")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
