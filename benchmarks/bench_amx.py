"""Where the time of the bf16 and int8 paths goes on a CPU with AMX (issue #25).

On the XLM-R base shape (random weights, real tokenizer), 2 threads, UMSAB tweets, one
process, each measurement the best of ``--rounds`` passes:

1. **Yardsticks.** ``(M x 768) @ (768 x 3072)`` in float32, bf16 and int8 (``torch.mm``,
   ``torch._int_mm``), and OpenVINO's own bf16 matmul of that shape; then every linear
   shape of the model in bf16 (Q/K/V fused 768 -> 2304, output 768 -> 768, up 768 -> 3072,
   down 3072 -> 768) and their FLOP-weighted mix: the most the linear layers can run at.
2. **OpenVINO bf16 per call.** Uniform batches (B x L) fitted to ``a + b * tokens``: the
   cost of one more call in tokens' worth of compute.
3. **OpenVINO bf16 on the tweets**, the converted model compiled directly: batch plans
   (the min-padding plan with 16 and 72 tokens per cut, larger batches, a token cap),
   sequence lengths rounded up to multiples of 8 and 16 (fewer distinct shapes, more
   padding), and the throughput hint with two streams of one thread against one stream of
   two.
4. **Int8 variants**: int8 weights with float32 activations quantized at run time (the
   dynamic scheme), int8 weights with bf16 activations, static int8 calibrated on tweets and
   on the tokenizer's vocabulary, each with the float32 and the bf16 hint.

Every output is checked finite, and its cosine to OpenVINO float32 on the same batches is
reported (bf16: >= 0.999 for every text; int8: >= 0.99 for 99%, else
``_common.BenchmarkFailure``). Effective GFLOP/s count real tokens only (``encoder_flops``),
as in ``bench_throughput.py``.

Usage::

    python benchmarks/bench_amx.py            # full: 320 tweets, ~10 min, writes
                                              # results/amx-<CPU class>.md
    python benchmarks/bench_amx.py --smoke    # tiny model, < 60 s, writes nothing

On a CPU without AMX it runs all the same (bf16 emulated where the CPU lacks it) and names
the CPU class in the results.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import _common as C
import numpy as np

#: The linear layers of one BERT/XLM-R layer: (name, in, out) as multiples of hidden/ff.
LINEARS = (("qkv", "h", "3h"), ("output", "h", "h"), ("up", "h", "ff"), ("down", "ff", "h"))


def best(fn: Callable[[], object], rounds: int) -> float:
    """The fastest of ``rounds`` timed calls of ``fn`` (after one untimed call)."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ------------------------------------------------------------------ yardsticks
def yardsticks(m: int, hidden: int, ff: int, rounds: int) -> list[list[str]]:
    """Rows of section 1: GFLOP/s of each matmul, and the model's bf16 linear mix."""
    import torch

    rows, dims = [], {"h": hidden, "3h": 3 * hidden, "ff": ff}

    def rate(k: int, n: int, dtype: torch.dtype) -> float:
        if dtype == torch.int8:
            a = torch.randint(-127, 127, (m, k), dtype=dtype)
            b = torch.randint(-127, 127, (k, n), dtype=dtype)
            return 2.0 * m * k * n / best(lambda: torch._int_mm(a, b), rounds * 5) / 1e9
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype).t()
        return 2.0 * m * k * n / best(lambda: torch.mm(a, b), rounds * 5) / 1e9

    shape = f"({m} x {hidden}) @ ({hidden} x {ff})"
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        rows.append([f"torch {name} matmul", shape, f"{rate(hidden, ff, dtype):,.0f}"])
    try:
        rows.append(
            ["torch int8 matmul (`_int_mm`)", shape, f"{rate(hidden, ff, torch.int8):,.0f}"]
        )
    except RuntimeError as exc:  # not on every CPU build
        rows.append(["torch int8 matmul (`_int_mm`)", shape, f"unavailable: {exc}"[:80]])
    rows.append(["OpenVINO bf16 matmul (f32 in and out)", shape,
                 f"{openvino_matmul(m, hidden, ff, rounds):,.0f}"])  # fmt: skip
    flops, seconds = 0.0, 0.0
    for name, k, n in LINEARS:
        g = rate(dims[k], dims[n], torch.bfloat16)
        f = 2.0 * m * dims[k] * dims[n]
        flops, seconds = flops + f, seconds + f / (g * 1e9)
        rows.append([f"torch bf16, {name} projection", f"({m} x {dims[k]}) @ ({dims[k]} x "
                     f"{dims[n]})", f"{g:,.0f}"])  # fmt: skip
    rows.append(["torch bf16, the four in the model's proportions", "one layer's linears",
                 f"{flops / seconds / 1e9:,.0f}"])  # fmt: skip
    return rows


def openvino_matmul(m: int, hidden: int, ff: int, rounds: int) -> float:
    """GFLOP/s of OpenVINO's bf16 matmul of one shape (inputs and outputs float32)."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([m, hidden], ov.Type.f32)
    w = ops.constant(np.random.default_rng(0).standard_normal((hidden, ff), dtype=np.float32))
    compiled = ov.Core().compile_model(ov.Model([ops.matmul(x, w, False, False)], [x]), "CPU",
                                       config("bf16"))  # fmt: skip
    request = compiled.create_infer_request()
    a = np.random.default_rng(1).standard_normal((m, hidden), dtype=np.float32)
    return 2.0 * m * hidden * ff / best(lambda: request.infer({0: a}), rounds * 5) / 1e9


def config(precision: str, streams: int = 1, **extra: object) -> dict:
    """OpenVINO CPU options: ``precision`` hint, latency (one stream) or throughput."""
    import torch

    hint = "LATENCY" if streams == 1 else "THROUGHPUT"
    out = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint,
           "INFERENCE_NUM_THREADS": torch.get_num_threads(), **extra}  # fmt: skip
    if streams > 1:
        out["NUM_STREAMS"] = streams
    return out


# -------------------------------------------------------------- the tweets
class Tweets:
    """Token rows of the sample, padded batches of a plan, and a way to run them."""

    def __init__(self, model_dir: Path, texts: list[str], hidden: int, layers: int, ff: int):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.ids = tok(texts, truncation=True, max_length=128)["input_ids"]
        self.pad = int(tok.pad_token_id)
        self.lengths = np.array([len(r) for r in self.ids])
        self.flops = C.encoder_flops(self.lengths, hidden, layers, ff)

    def batches(self, plan: object, multiple: int = 1) -> list[tuple[np.ndarray, dict]]:
        out = []
        for members in plan.batches:
            rows = [self.ids[i] for i in members]
            width = -(-max(map(len, rows)) // multiple) * multiple
            ids = np.full((len(rows), width), self.pad, np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for k, r in enumerate(rows):
                ids[k, : len(r)], mask[k, : len(r)] = r, 1
            out.append((members, {"input_ids": ids, "attention_mask": mask}))
        return out

    def run(self, compiled: object, batches: list, streams: int = 1) -> np.ndarray:
        """Mean-pooled last hidden state of every text (one request, or an async queue)."""
        import openvino as ov

        out = np.zeros((len(self.ids), compiled.outputs[0].partial_shape[-1].get_length()),
                       np.float32)  # fmt: skip

        def pool(members: np.ndarray, inputs: dict, hs: np.ndarray) -> None:
            hs = hs[-1] if hs.ndim == 4 else hs
            mask = inputs["attention_mask"][..., None]
            out[members] = (hs * mask).sum(1) / mask.sum(1)

        if streams == 1:
            request = compiled.create_infer_request()
            for members, inputs in batches:
                pool(members, inputs, request.infer(inputs)[0])
            return out
        queue = ov.AsyncInferQueue(compiled, streams)
        queue.set_callback(lambda req, job: pool(*job, req.get_output_tensor(0).data.copy()))
        for members, inputs in batches:
            queue.start_async(inputs, (members, inputs))
        queue.wait_all()
        return out


def per_call_cost(compiled: object, rounds: int) -> tuple[float, float]:
    """(ms per call, ms per token) of uniform batches, least squares."""
    request, rng, x, y = compiled.create_infer_request(), np.random.default_rng(0), [], []
    for b in (1, 4, 16, 32, 64):
        for length in (16, 32, 48):
            inputs = {"input_ids": rng.integers(5, 1000, (b, length)).astype(np.int64),
                      "attention_mask": np.ones((b, length), np.int64)}  # fmt: skip
            x.append((1.0, b * length))
            y.append(best(lambda i=inputs: request.infer(i), rounds))
    (a, per_token), *_ = np.linalg.lstsq(np.array(x), np.array(y), rcond=None)
    return 1e3 * a, 1e3 * per_token


# -------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, 32 tweets, writes nothing")
    p.add_argument("--n", type=int, default=320, help="tweets (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    import openvino as ov
    import torch

    from xlmt_sklearn import XLMTVectorizer, internals, normalize_tweet
    from xlmt_sklearn.internals import plan_batches

    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    if args.smoke:
        model_dir, n, rounds = C.tiny_model_dir(Path(tmp.name) / "tiny"), 32, 1
    else:
        model_dir, n, rounds = C.base_model_dir(), args.n, args.rounds
    sh = C.model_shape(model_dir)
    pool = list(dict.fromkeys(normalize_tweet(t) for t in C.load_tweets(3 * n + 400)))
    texts, calibration = pool[:n], pool[n : n + 300]
    tweets = Tweets(model_dir, texts, sh["hidden"], sh["layers"], sh["ff"])

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    m = 928 if not args.smoke else 64
    log("section 1: yardsticks")
    yard = yardsticks(m, sh["hidden"], sh["ff"], rounds)
    bf16_yard = float(yard[1][2].replace(",", ""))
    # Converted models, through the estimators (each converts once and passes its self-check).
    folders = {}
    variants = {"f32": dict(dtype="float32"), "w8": dict(quantize="int8"),
                "s8 tweets": dict(quantize="int8", calibration_texts=calibration),
                "s8 vocabulary": dict(quantize="int8", calibration_texts="vocabulary")}  # fmt: skip
    for key, kw in variants.items():
        vec = XLMTVectorizer(str(model_dir), backend="openvino", device="cpu", progress=False,
                             preprocess=None, **kw).fit()  # fmt: skip
        vec.transform(texts[:2])
        folders[key] = internals.encoders(vec)[0].converted((-1,))
    torch_f32 = XLMTVectorizer(str(model_dir), backend="torch", dtype="float32", device="cpu",
                               progress=False, preprocess=None).fit()  # fmt: skip
    t_torch = best(lambda: torch_f32.transform(texts), rounds)
    core = ov.Core()

    def compiled(key: str, precision: str, streams: int = 1, **extra: object) -> object:
        return core.compile_model(str(folders[key] / "model.xml"), "CPU",
                                  config(precision, streams, **extra))  # fmt: skip

    plan16 = plan_batches(tweets.lengths, 32, None, min_padding=True)
    reference = tweets.run(compiled("f32", "f32"), tweets.batches(plan16))
    C.check_vectors("OpenVINO float32", reference)
    compiled_f32, batches16 = compiled("f32", "f32"), tweets.batches(plan16)
    t_f32 = best(lambda: tweets.run(compiled_f32, batches16), rounds)
    batches72 = tweets.batches(plan_batches(tweets.lengths, 32, None, min_padding=True,
                                            cut_tokens=72))  # fmt: skip

    def measure(name: str, model: object, batches: list, bar: dict, streams: int = 1) -> list:
        got = tweets.run(model, batches, streams)
        cos = C.check_vectors(name, got, reference, reference_name="OpenVINO float32", **bar)
        t = best(lambda: tweets.run(model, batches, streams), rounds)
        gf = tweets.flops / t / 1e9
        padded = sum(b[1]["input_ids"].size for b in batches)
        return [name, f"{len(batches)}", f"{100 * (1 - tweets.lengths.sum() / padded):.1f}%",
                f"{t:.3f}", f"{t_torch / t:.2f}x", f"{gf:,.0f}", f"{100 * gf / bf16_yard:.0f}%",
                f"{np.min(cos):.5f}"]  # fmt: skip

    bf16_bar, int8_bar = dict(min_cosine=0.999), dict(min_cosine=0.99, share=0.99)
    log("section 2: OpenVINO bf16 per call")
    bf16 = compiled("f32", "bf16")
    per_call, per_token = per_call_cost(bf16, rounds)
    log("section 3: OpenVINO bf16 on the tweets")
    rows3 = [measure("OpenVINO float32, min-padding plan (16 tokens per cut)", compiled_f32,
                     batches16, dict(max_abs_diff=1e-5))]  # fmt: skip
    plans: list[tuple[str, int, int | None, int, bool]] = [
        ("fixed cuts every 32 texts", 32, None, 16, False),
        ("min-padding plan, 16 tokens per cut (the plan before #25)", 32, None, 16, True),
        ("min-padding plan, 72 tokens per cut (shipped for bf16 and int8)", 32, None, 72, True),
        ("min-padding plan, 72 per cut, batches of up to 64", 64, None, 72, True),
        ("min-padding plan, 72 per cut, up to 256 texts, 2,048 tokens", 256, 2048, 72, True),
    ]
    for name, size, cap, cut, min_padding in plans:
        plan = plan_batches(tweets.lengths, size, cap, min_padding=min_padding, cut_tokens=cut)
        rows3.append(measure(f"bf16, {name}", bf16, tweets.batches(plan), bf16_bar))
    for multiple in (8, 16):
        rows3.append(measure(f"bf16, 16-per-cut plan, lengths rounded up to x{multiple}", bf16,
                             tweets.batches(plan16, multiple), bf16_bar))  # fmt: skip
    two = compiled("f32", "bf16", streams=2)
    rows3.append(measure("bf16, 16-per-cut plan, throughput hint: 2 streams of 1 thread", two,
                         batches16, bf16_bar, streams=2))  # fmt: skip
    rows3.append(measure("bf16, 72-per-cut plan, throughput hint: 2 streams of 1 thread", two,
                         batches72, bf16_bar, streams=2))  # fmt: skip
    log("section 4: int8 variants")
    dq = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 128}
    rows4 = [
        measure("bf16 (no int8: the float choice)", bf16, batches72, bf16_bar),
        measure("int8 weights, f32 activations quantized per 128 (`quantize='int8'` elsewhere)",
                compiled("w8", "f32", **dq), batches72, int8_bar),
        measure("int8 weights, bf16 activations", compiled("w8", "bf16"), batches72, int8_bar),
        measure("static int8, 300 tweets, f32 hint (`calibration_texts`)",
                compiled("s8 tweets", "f32"), batches72, int8_bar),
        measure("static int8, 300 tweets, bf16 hint", compiled("s8 tweets", "bf16"), batches72,
                int8_bar),
        measure("static int8, vocabulary, f32 hint (`\"auto\"` on AMX)",
                compiled("s8 vocabulary", "f32"), batches72, int8_bar),
    ]  # fmt: skip
    wall = time.perf_counter() - t_start
    what = ("Tiny random model (plumbing check)." if args.smoke
            else "XLM-R base shape (random weights, real tokenizer).")  # fmt: skip
    head = ["variant", "batches", "padding", "s", "vs torch fp32", "GFLOP/s",
            "% of bf16 matmul", "min cosine vs OV fp32"]  # fmt: skip
    md = (
        f"## Where the time goes: bf16 and int8 (CPU class {C.cpu_class()})\n\n"
        f"Generated by `python benchmarks/bench_amx.py{' --smoke' if args.smoke else ''}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {wall / 60:.1f} minutes. "
        f"{what} "
        f"{n} UMSAB tweets ({int(tweets.lengths.sum())} tokens, {tweets.flops / 1e9:.0f} GFLOP); "
        f"{torch.get_num_threads()} threads; best of {rounds} passes each; torch float32 "
        f"(`backend='torch'`) took {t_torch:.3f} s, OpenVINO float32 {t_f32:.3f} s.\n\n"
        "### 1. Yardsticks (GFLOP/s; int8: GOP/s)\n\n"
        + C.md_table(["matmul", "shape", "GFLOP/s"], yard)
        + f"\n\n### 2. OpenVINO bf16 per call\n\nUniform batches fitted to `a + b * tokens`: "
        f"{per_call:.2f} ms per call and {per_token:.4f} ms per token, so one more call costs "
        f"{per_call / per_token:.0f} tokens' worth of compute.\n\n"
        "### 3. OpenVINO bf16 on the tweets: batch plans, shapes, streams\n\n"
        + C.md_table(head, rows3)
        + "\n\n### 4. Int8 variants (same batches: the 72-per-cut plan shipped for them)\n\n"
        + C.md_table(head, rows4)
        + "\n\n" + C.md_table(["machine", ""], list(C.machine_info().items())) + "\n"
    )  # fmt: skip
    print(md)
    if not args.smoke:
        (C.RESULTS / f"amx-{C.cpu_class()}.md").write_text(md, encoding="utf-8")
        C.assemble_docs()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
