"""GPU correctness and throughput check for xlmt_sklearn (one CUDA device, < 5 min).

Run through ``benchmarks/gpu_check.sh``. Without a CUDA device it prints why
and exits 0. With one it:

1. builds (or reuses) the XLM-R-base-shaped random model with the real XLM-R
   tokenizer (synthetic tokenizer and texts when ``../shared`` is absent);
2. checks correctness: CUDA float32 vs CPU float32 (max abs diff), float16 and
   bfloat16 vs CUDA float32 (cosine), and independence of batch composition on
   the GPU (shuffled order and other batch sizes give the same rows);
3. measures texts/s for float32 / float16 / bfloat16 with the default batches
   and with token-budget batches, plus a same-dtype matmul yardstick;
4. writes ``benchmarks/results/gpu.md`` (and ``$OUT/gpu.md`` when ``$OUT`` is set).

The correctness checks go through ``_common.check_vectors``: NaN/inf in any output
(the timed transforms' too) or a missed bound raises ``_common.BenchmarkFailure``
(exit status 1) after all correctness checks ran and their table was printed, before
any throughput is measured or any file written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _common as C
import numpy as np

# Correctness bounds. CUDA fp32 runs without TF32 (torch's default for matmul), so
# it must match the CPU closely; half precisions are judged by cosine.
FP32_ATOL = 1e-4
HALF_COS_MIN = 0.99
BATCH_ATOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 6e-2}  # rounding noise of each dtype


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _model_dir(tmp: Path) -> tuple[Path, str]:
    if C.real_tokenizer_dir() is not None:
        return C.base_model_dir(), "XLM-R base shape, random weights, real XLM-R tokenizer"
    d = C.build_model(tmp / "base-synthetic-tok", tokenizer_dir=None)
    return d, "XLM-R base shape (vocabulary of a small synthetic tokenizer), random weights"


def _gpu_matmul_tflops(m: int, k: int, n: int, dtype: str) -> float:
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(m, k, device="cuda", dtype=dt)
    b = torch.randn(k, n, device="cuda", dtype=dt)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e12


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="tweets for throughput (default 4000)")
    p.add_argument("--n-check", type=int, default=256, help="tweets for correctness checks")
    p.add_argument("--budget-s", type=float, default=240.0, help="stop timing after this")
    p.add_argument(
        "--simulate-on-cpu", action="store_true",
        help="exercise this script's logic on the CPU with a tiny model (no CUDA needed)",
    )  # fmt: skip
    args = p.parse_args(argv)

    import torch

    sim = args.simulate_on_cpu
    dev = "cpu" if sim else "cuda"

    def sync() -> None:
        if not sim:
            torch.cuda.synchronize()

    if not sim and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}); nothing to check. Run it on a machine with an NVIDIA GPU."
        )
        return 0

    import tempfile

    from xlmt_sklearn import EmbeddingCache, XLMTVectorizer, internals, normalize_tweet
    from xlmt_sklearn.internals import FLOW_TUNING, clear_model_registry

    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="xlmt-gpu-")
    if sim:
        model_dir = C.tiny_model_dir(Path(tmp.name) / "tiny", real_tokenizer=False)
        model_desc = "tiny random XLM-R (simulation on the CPU)"
    else:
        model_dir, model_desc = _model_dir(Path(tmp.name))
    texts, _, source = C.load_tweets(args.n + args.n_check, seed=7, with_labels=True)
    texts = list(dict.fromkeys(normalize_tweet(t) for t in texts))
    check, bench = texts[: args.n_check], texts[args.n_check :][: args.n]
    dev_name = "CPU (simulation)" if sim else torch.cuda.get_device_name(0)
    print(f"device {dev_name}; model {model_dir}; {len(check)} check / {len(bench)} bench texts")

    def vec(**kw: object) -> XLMTVectorizer:
        # The torch path is what this checks (a CPU simulation would otherwise pick OpenVINO).
        return XLMTVectorizer(
            str(model_dir), progress=False, preprocess=None, backend="torch", **kw
        ).fit()

    failures: list[str] = []
    lines: list[list[str]] = []

    def verdict(row: list[str], *checks: tuple[tuple, dict]) -> None:
        """One table row; each ``(args, kwargs)`` of ``check_vectors`` must pass."""
        for args_, kw in checks:
            try:
                C.check_vectors(*args_, **kw)
            except C.BenchmarkFailure as exc:
                failures.append(str(exc))
                lines.append([*row, "FAIL"])
                return
        lines.append([*row, "ok"])

    # 1. correctness -------------------------------------------------------------
    cpu = vec(device="cpu").transform(check)
    C.check_vectors("CPU float32 (the reference)", cpu)
    clear_model_registry()
    gpu32 = vec(device=dev, dtype="float32").transform(check)
    d32 = float(np.abs(gpu32 - cpu).max())
    verdict(["CUDA float32 vs CPU float32, max abs diff", f"<= {FP32_ATOL:g}", f"{d32:.2e}"],
            (("CUDA float32", gpu32, cpu),
             {"max_abs_diff": FP32_ATOL, "reference_name": "CPU float32"}))  # fmt: skip
    for dtype in ("float16", "bfloat16"):
        half = vec(device=dev, dtype=dtype).transform(check)
        c = _cos(half, gpu32)
        verdict([f"CUDA {dtype} vs CUDA float32, cosine min (mean)", f">= {HALF_COS_MIN}",
                 f"{c.min():.5f} ({c.mean():.5f})"],
                ((f"CUDA {dtype}", half, gpu32),
                 {"min_cosine": HALF_COS_MIN, "reference_name": "CUDA float32"}))  # fmt: skip
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float16", "bfloat16"):
        base = vec(device=dev, dtype=dtype).transform(check)
        perm = rng.permutation(len(check))
        other = vec(device=dev, dtype=dtype, batch_size=7).transform([check[i] for i in perm])
        budget = vec(device=dev, dtype=dtype, batch_size=512, max_tokens=2048).transform(check)
        diff = max(float(np.abs(other - base[perm]).max()), float(np.abs(budget - base).max()))
        name = f"{dtype}: shuffled / other batch plans vs default, max abs diff"
        bound = {"max_abs_diff": BATCH_ATOL[dtype], "reference_name": f"{dtype}, default batches"}
        verdict([name, f"<= {BATCH_ATOL[dtype]:g}", f"{diff:.2e}"],
                ((f"{dtype}, default batches", base), {}),
                ((f"{dtype}, shuffled, batch_size=7", other, base[perm]), bound),
                ((f"{dtype}, batch_size=512, max_tokens=2048", budget, base), bound))  # fmt: skip
    clear_model_registry()
    if failures:  # no speed of wrong vectors, no results file
        print(C.md_table(["correctness check", "bound", "measured", "verdict"], lines))
        raise C.BenchmarkFailure(
            f"gpu_check: {len(failures)} correctness check(s) failed on {dev_name}: "
            + "; ".join(failures)
        )

    # 2. throughput ---------------------------------------------------------------
    sh = C.model_shape(model_dir)
    tok = vec(device="cpu")  # tokenizer only, for token counts
    tokenizer = internals.encoders(tok)[0].tokenizer()
    lengths = np.array([len(x) + 2 for x in tokenizer(bench, add_special_tokens=False)
                        ["input_ids"]])  # fmt: skip
    flops = C.encoder_flops(np.minimum(lengths, 128), sh["hidden"], sh["layers"], sh["ff"])
    rows: list[list[str]] = []
    plans = [("default (batch_size=32, max_tokens='auto')", {}),
             ("card-sized budget (batch_size=1024, max_tokens='auto')", {"batch_size": 1024}),
             ("fixed budget (batch_size=1024, max_tokens=16384)",
              {"batch_size": 1024, "max_tokens": 16384})]  # fmt: skip
    if not sim and torch.cuda.device_count() > 1:
        every = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        plans.append((f"all {len(every)} cards, card-sized budget (batch_size=1024)",
                      {"batch_size": 1024, "device": every}))  # fmt: skip
    # A cold cache (float16 only): every batch is written as it finishes. By default the
    # write of one batch overlaps the computation of the next (flow TUNING.overlap_delivery).
    overlapped = "always" if sim else "cuda"
    plans += [("batch_size=1024 + cold cache, writes overlapped (default)",
               {"batch_size": 1024, "_cache": overlapped}),
              ("batch_size=1024 + cold cache, writes between batches",
               {"batch_size": 1024, "_cache": "never"})]  # fmt: skip
    for dtype in ("float32", "float16", "bfloat16"):
        yard = (C.matmul_gflops(512, sh["hidden"], sh["ff"], 0.2, dtype) / 1e3 if sim
                else _gpu_matmul_tflops(8192, sh["hidden"], sh["ff"], dtype))  # fmt: skip
        for plan_name, kw in plans:
            if time.perf_counter() - t_start > args.budget_s:
                rows.append([dtype, plan_name, "skipped (time budget)", "-", "-", f"{yard:.0f}"])
                continue
            opts = {k: x for k, x in kw.items() if not k.startswith("_")}
            if "_cache" in kw:
                if dtype != "float16":
                    continue
                FLOW_TUNING.overlap_delivery = kw["_cache"]
                opts["cache"] = EmbeddingCache(Path(tmp.name) / f"cache-{len(rows)}.sqlite")
            try:
                v = vec(**{"device": dev, "dtype": dtype, **opts})
                v.transform(check)  # load + warm up kernels (texts not timed below)
                sync()
                t0 = time.perf_counter()
                got = v.transform(bench)
                sync()
                dt = time.perf_counter() - t0
            finally:
                FLOW_TUNING.overlap_delivery = "cuda"
            C.check_vectors(f"{dtype}, {plan_name}", got)  # before its speed is reported
            tf = flops / dt / 1e12
            rows.append([dtype, plan_name, f"{len(bench) / dt:,.0f}", f"{tf:.2f}",
                         f"{100 * tf / yard:.0f}%", f"{yard:.1f}"])  # fmt: skip
            print(f"  {dtype:<9} {plan_name:<48} {len(bench) / dt:9,.0f} texts/s")
            clear_model_registry()
            if not sim:
                torch.cuda.empty_cache()
    tmp.cleanup()

    mem = 0.0 if sim else torch.cuda.max_memory_allocated() / 2**30
    doc = f"""## GPU check

Generated by `bash benchmarks/gpu_check.sh` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
in {(time.perf_counter() - t_start) / 60:.1f} minutes. Device: **{dev_name}**, torch
{torch.__version__}, CUDA {torch.version.cuda}. Model: {model_desc}. Texts: {source}
({len(check)} for checks, {len(bench)} for throughput; median {np.median(lengths):.0f} tokens).
Peak CUDA memory allocated: {mem:.1f} GiB.

{C.md_table(["correctness check", "bound", "measured", "verdict"], lines)}

{C.md_table(["dtype", "batches", "texts/s", "effective TFLOP/s", "% of matmul",
             "matmul TFLOP/s (8192 x h @ h x ff)"], rows)}
"""  # fmt: skip
    print(doc)
    if not sim:
        C.RESULTS.mkdir(parents=True, exist_ok=True)
        (C.RESULTS / "gpu.md").write_text(doc, encoding="utf-8")
    out = os.environ.get("OUT")
    if out and not sim:
        Path(out, "gpu.md").write_text(doc, encoding="utf-8")
    print("gpu_check: all correctness checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
