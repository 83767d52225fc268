"""Rows/s of the featurizer on Spark ``local[N]`` versus in-process.

Usage::

    python benchmarks/bench_spark.py           # full: tiny + XLM-R-base-shaped model
    python benchmarks/bench_spark.py --smoke   # CI: tiny model, ~200 rows, < 60 s

Both sides use the same cores: in-process runs one transform with torch
using 1 and ``N`` threads; Spark runs ``N`` concurrent tasks, one thread each
(one per ``spark.task.cpus``). Spark is timed twice:

* **cold** -- the first job: Python workers start, import torch and load
  the model (what a one-off job pays once per executor process);
* **warm** -- the jobs right after it (median of the rounds): workers are
  reused and the model comes from the per-process registry. They run back to
  back because Spark stops a Python worker after a minute idle.

Every Spark job is forced with the ``noop`` sink (all rows computed, nothing
collected), and one extra run checks that Spark's vectors are finite and equal
the in-process ones within 1e-5 (else ``_common.BenchmarkFailure``, exit status 1,
before the table is printed or written). Texts are real UMSAB tweets
(``../shared``; synthetic tweets without it). The full run writes ``benchmarks/results/spark.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# _common sets HF_HUB_OFFLINE before transformers is imported.
import _common
from _common import (
    ASSETS,
    RESULTS,
    base_model_dir,
    interleave,
    load_tweets,
    machine_info,
    md_table,
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_spark(cores: int):
    """A local[cores] session configured like the tests (quiet, loopback, small JVM)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    pythonpath = os.pathsep.join(p for p in (str(_common.REPO), os.environ.get("PYTHONPATH")) if p)
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("xlmt_sklearn-bench")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(cores))
        .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.PYTHONPATH", pythonpath)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def bench_model(
    spark, label: str, model_dir: Path, texts: list[str], *, cores: int, partitions: int,
    rounds: int, batch_size: int, check_rows: int,
) -> tuple[list[list[object]], float]:  # fmt: skip
    """Time in-process vs Spark on one model; return table rows and max |diff|."""
    import numpy as np
    import torch

    from xlmt_sklearn import XLMTVectorizer
    from xlmt_sklearn.spark import embed_column

    # torch float32 on both sides: what the table says (auto may pick OpenVINO bf16,
    # whose vectors depend on batch composition within its tolerance).
    vec = XLMTVectorizer(
        str(model_dir), device="cpu", backend="torch", progress=False, batch_size=32
    ).fit()
    df = spark.sparkContext.parallelize(list(enumerate(texts)), partitions).toDF(
        "id long, text string"
    )
    df.cache().count()  # materialise the input once: time the embedding only

    def spark_job() -> None:
        out = embed_column(df, "text", vec, batch_size=batch_size)
        out.write.format("noop").mode("overwrite").save()

    def in_process(threads: int):
        def run() -> None:
            torch.set_num_threads(threads)
            vec.transform(texts)

        return run

    log(f"[{label}] in-process warm-up (model load)")
    vec.transform(texts[:8])
    contenders = {f"in-process, torch {t} thread{'s' if t > 1 else ''}": in_process(t)
                  for t in sorted({1, cores})}  # fmt: skip
    # In-process contenders interleave (a shared machine's load hits them
    # alike). Spark's warm jobs follow its cold job at once: Spark stops a
    # Python worker after a minute idle, and the model with it, so a long
    # pause between jobs (an in-process round) would make every job cold.
    times = {k: r.times for k, r in interleave(contenders, rounds, log=log).items()}
    log(f"[{label}] Spark cold job (worker start, imports, model load)")
    t0 = time.perf_counter()
    spark_job()
    cold = time.perf_counter() - t0
    warm_name = f"Spark local[{cores}], warm"
    times[warm_name] = interleave({warm_name: spark_job}, rounds, log=log)[warm_name].times
    times[f"Spark local[{cores}], cold (first job)"] = [cold]
    torch.set_num_threads(cores)

    check = texts[:check_rows]
    got = embed_column(df.limit(len(check)), "text", vec).orderBy("id").collect()
    spark_rows, ref = np.asarray([r.embedding for r in got]), vec.transform(check)
    _common.check_vectors(f"{label}: Spark embed_column", spark_rows, ref, max_abs_diff=1e-5,
                          reference_name="the in-process transform")  # fmt: skip
    diff = float(np.abs(spark_rows - ref).max())
    df.unpersist()

    n = len(texts)
    best_in = min(statistics.median(v) for k, v in times.items() if k.startswith("in-process"))
    rows = []
    for name, ts in times.items():
        t = statistics.median(ts)
        rows.append([label, n, name, f"{t:.2f}", f"{n / t:.1f}", f"{best_in / t:.2f}"])
    return rows, diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, ~200 rows, < 60 s")
    ap.add_argument("--rows", type=int, default=None, help="tweets for the tiny model")
    ap.add_argument("--base-rows", type=int, default=200, help="tweets for the base model")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (tiny model)")
    ap.add_argument("--cores", type=int, default=2, help="local[N] and in-process threads")
    ap.add_argument("--out", type=Path, default=None, help="default: results/spark.md (full)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    tiny_rows = args.rows or (200 if args.smoke else 2000)
    tiny_rounds = args.rounds or (1 if args.smoke else 2)
    # (label, folder, rows, rounds, rows checked against in-process): the
    # base-shaped model is ~100x the work per text, so it gets fewer texts and
    # one round to stay within minutes on two shared cores.
    tiny = _common.tiny_model_dir(ASSETS / "xlmr-tiny-64")
    plan = [("tiny (2 layers, 64 wide)", tiny, tiny_rows, tiny_rounds, 200)]
    if not args.smoke:
        plan.append(("XLM-R base shape (random)", base_model_dir(), args.base_rows, 1, 40))
    texts = load_tweets(max(p[2] for p in plan), seed=0)
    source = "UMSAB test tweets" if _common.umsab_path() else "synthetic tweets"
    partitions = 2 * args.cores

    spark = start_spark(args.cores)
    import pyspark

    table: list[list[object]] = []
    checks: list[str] = []
    try:
        for label, folder, n, rounds, n_check in plan:
            rows, diff = bench_model(
                spark, label, folder, texts[:n], cores=args.cores, partitions=partitions,
                rounds=rounds, batch_size=256, check_rows=min(n, n_check),
            )  # fmt: skip
            table += rows
            checks.append(f"{label}: max |Spark - in-process| = {diff:.1e}")  # <= 1e-5: checked
    finally:
        spark.stop()
    load_after = os.getloadavg()

    header = ["model", "rows", "run", "wall s (median)", "rows/s", "speed vs best in-process"]
    info = machine_info()
    info.pop("torch threads", None)
    info["pyspark"] = pyspark.__version__
    info["java"] = _java_version()
    rounds_txt = ", ".join(f"{p[0].split(' (')[0]}: {p[3]}" for p in plan)
    lines = [
        "# Spark vs in-process throughput",
        "",
        f"Generated by `python benchmarks/bench_spark.py{' --smoke' if args.smoke else ''}` "
        f"on {date.today().isoformat()}: {source}, {partitions} Spark partitions, Arrow "
        "slices of 256 rows, featurizer batch_size=32, float32 on CPU, no cache. Rounds: "
        f"{rounds_txt} (in-process contenders interleaved); cold = the first Spark job on "
        "that model, warm = the jobs right after it (median).",
        "",
        md_table(header, table),
        "",
        "Correctness: " + "; ".join(checks) + ".",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ". "
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after: "
        "the cores were shared with other jobs, so absolute numbers are pessimistic.",
        "",
        "How to read it: both sides use the same cores. In-process runs one transform with "
        f"torch using 1 or {args.cores} threads; Spark runs {args.cores} concurrent tasks "
        "with one torch thread each (spark.task.cpus = 1) and holds one "
        "model copy per Python worker. On a busy machine, multi-threaded torch can be much "
        "slower than one thread (OpenMP threads wait on each other), which single-threaded "
        "Spark tasks avoid. Spark pays JVM <-> Python Arrow transfers and, once per executor "
        "process, the cold row's fixed cost (worker start, torch import, model load); it "
        "exists to spread the work over many machines, not to beat one process on one.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out if args.out is not None else (None if args.smoke else RESULTS / "spark.md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        log(f"wrote {out}")
    log(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


def _java_version() -> str:
    import subprocess

    try:
        res = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return res.stderr.splitlines()[0].replace('"', "") if res.stderr else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
