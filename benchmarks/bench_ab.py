"""A/B of two commits on the same workloads, interleaved in one run: a refactor keeps speed.

Each (checkout, workload, round) runs in a fresh interpreter with ``PYTHONPATH``
pointing at that checkout, in the order A B / B A alternating, so load from
other processes hits both alike; medians per checkout and their ratio are
reported. Workloads:

* ``encode``: ``XLMTVectorizer(device="cpu").transform`` of UMSAB tweets on
  real multilingual-e5-small weights (12 layers, hidden 384), cold (no cache).
* ``warm``: the same estimator with a warm ``EmbeddingCache`` on a tiny model:
  every vector from the cache (the lookup and scatter path of ``transform``).
* ``tokens``: ``XLMTTokenVectorizer`` subword features, cold, e5-small.

Usage::

    python benchmarks/bench_ab.py --base d10126e          # base vs HEAD
    python benchmarks/bench_ab.py --base d10126e --head 0fea525 --smoke

Writes ``benchmarks/results/ab.md`` (unless ``--smoke``); the machine table
names the ISA flags. The vectors of every timed transform (either checkout) must
be finite, else the run stops with ``_common.BenchmarkFailure`` (exit status 1)
before anything is reported or written.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(int(os.environ["AB_THREADS"]))
from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
spec = json.loads(sys.argv[1])
texts = json.load(open(spec["texts"]))
cls = XLMTTokenVectorizer if spec["workload"] == "tokens" else XLMTVectorizer
kw = dict(device="cpu", progress=False)
if "backend" in cls().get_params():  # the torch path on both sides (auto may pick a runtime)
    kw["backend"] = "torch"
if spec["workload"] == "warm":
    kw["cache"] = spec["cache"]
est = cls(spec["model"], **kw).fit()
est.transform(texts[:8] if spec["workload"] != "warm" else texts)  # load (and fill the cache)
t0 = time.perf_counter()
out = est.transform(texts)
seconds = time.perf_counter() - t0
import numpy as np  # the vectors, for the parent's check (token features: their rows)
if isinstance(out, (list, tuple)) or getattr(out, "dtype", None) == object:
    out = np.concatenate([np.asarray(x, dtype=np.float32).reshape(-1, np.shape(x)[-1])
                          for x in out])
np.save(spec["out"], np.asarray(out))
print(json.dumps({"seconds": seconds, "n": len(texts)}))
"""


def _run(checkout: Path, spec: dict, threads: int, name: str = "") -> float:
    """Texts/s of one run of ``spec`` on ``checkout``; its vectors are checked finite first."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "AB_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)], env=env, check=True,
        capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    import numpy as np

    C.check_vectors(name or f"{spec['workload']} on {checkout}", np.load(spec["out"]))
    Path(spec["out"]).unlink()
    return result["n"] / result["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="commit A")
    parser.add_argument("--head", default="HEAD", help="commit B (default HEAD)")
    parser.add_argument("--n", type=int, default=320, help="tweets per encode workload")
    parser.add_argument("--n-warm", type=int, default=20000, help="texts of the warm workload")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.n_warm, args.rounds, args.threads = 16, 200, 1, 1
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="xlmt-ab-") as tmp:
        tmp_path = Path(tmp)
        trees = {"A (base)": tmp_path / "a", "B (head)": tmp_path / "b"}
        for tree, commit in zip(trees.values(), (args.base, args.head), strict=True):
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), commit],
                           cwd=REPO, check=True)  # fmt: skip
        try:
            rows = _measure(args, tmp_path, trees)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO,
                               check=False)  # fmt: skip
    md = _markdown(args, rows, time.time() - started)
    print(md)
    if not args.smoke:
        (REPO / "benchmarks" / "results" / "ab.md").write_text(md, encoding="utf-8")
    return 0


def _measure(args: argparse.Namespace, tmp: Path, checkouts: dict[str, Path]) -> list[list[str]]:
    e5 = C.e5_small_dir() if not args.smoke else None
    tiny = C.tiny_model_dir(tmp / "tiny", real_tokenizer=not args.smoke)
    encoder_model = str(e5 or tiny)
    tweets = C.load_tweets(args.n, seed=3)
    warm_texts = [f"{t} {i}" for i, t in enumerate(C.load_tweets(args.n_warm, seed=4))]
    files = {}
    for name, texts in (("tweets", tweets), ("warm", warm_texts)):
        files[name] = tmp / f"{name}.json"
        files[name].write_text(json.dumps(texts), encoding="utf-8")
    workloads = {
        "encode": {"model": encoder_model, "texts": str(files["tweets"])},
        "tokens": {"model": encoder_model, "texts": str(files["tweets"])},
        "warm": {"model": str(tiny), "texts": str(files["warm"])},
    }
    rates: dict[tuple[str, str], list[float]] = {}
    names = list(checkouts)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for workload, spec in workloads.items():
            for name in order:
                spec_r = {**spec, "workload": workload, "out": str(tmp / "out.npy"),
                          "cache": str(tmp / f"cache-{name[0]}-{r}.sqlite")}  # fmt: skip
                rate = _run(checkouts[name], spec_r, args.threads, f"{workload}, {name}, "
                            f"round {r + 1}")  # fmt: skip
                rates.setdefault((workload, name), []).append(rate)
                print(f"round {r + 1} {workload:<7} {name:<14} {rate:10,.1f} texts/s", flush=True)
    rows = []
    for workload, spec in workloads.items():
        a, b = (statistics.median(rates[(workload, n)]) for n in names)
        model = "e5-small (real)" if spec["model"] == str(e5) else "tiny random"
        n = args.n if workload != "warm" else args.n_warm
        rows.append([workload, model, f"{n:,}", f"{a:,.1f}", f"{b:,.1f}", f"{b / a:.2f}x",
                     " / ".join(f"{x:,.0f}" for x in rates[(workload, names[1])])])  # fmt: skip
    return rows


def _commit(ref: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def _markdown(args: argparse.Namespace, rows: list, seconds: float) -> str:
    info = C.machine_info()
    load = os.getloadavg()
    header = ["workload", "model", "texts", "A texts/s", "B texts/s", "B / A", "B per round"]
    return (
        "## A/B: the encode core before and after a refactor\n\n"
        f"Generated by `python benchmarks/bench_ab.py --base {args.base} --n {args.n} "
        f"--head {args.head} --n-warm {args.n_warm} --rounds {args.rounds}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds / 60:.1f} minutes: "
        f"A is {_commit(args.base)}, B is {_commit(args.head)}. Each cell: median texts/s "
        f"over {args.rounds} rounds, every run a fresh process ({args.threads} torch "
        f"threads), A and B interleaved. Load average after: "
        f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}.\n\n"
        + C.md_table(["machine", ""], [[k, v] for k, v in info.items()])
        + "\n\n"
        + C.md_table(header, rows)
        + "\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
