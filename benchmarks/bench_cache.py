"""What the per-text disk cache buys (issue #3).

Three measurements, written to ``benchmarks/results/cache.md``:

1. raw store speed: warm ``EmbeddingCache.get_many`` lookups and ``put_many``
   writes of 768-d float32 vectors (goal: >= 100k vectors/s for lookups);
2. ``XLMTVectorizer(cache=...)`` on the XLM-R-base-shaped model with the real
   tokenizer: cold (empty cache) vs warm (all hits) vs no cache, same texts;
3. ``GridSearchCV(Pipeline(XLMTVectorizer, LogisticRegression))`` over a small
   grid of ``C``, ``cv=3``: end-to-end time with vs without the cache.

The vectors of every cold and warm transform in (2) must be finite, else the run
stops with ``_common.BenchmarkFailure`` (exit status 1) before anything is reported
or written; whether warm equals cold is reported.

Usage::

    python benchmarks/bench_cache.py           # full run (about 5-10 minutes on 2 cores)
    python benchmarks/bench_cache.py --smoke   # tiny model, < 60 s, writes nothing
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np


def bench_store(tmp: Path, n: int, dim: int, rounds: int, chunk: int, batch: int = 32) -> dict:
    """Write ``n`` vectors as a transform does, then time warm ``get_many`` lookups.

    A cold transform writes each batch as it is encoded (batches of ``batch``
    texts, sorted by length, so a batch mixes texts from all over the input) and
    regroups each chunk of new texts in input order. The lookups then come in
    input order (a refit, a transform of the same data), as a cross-validation
    fold (80% of the texts, in input order) and in random order. Returns
    vectors/s (medians over ``rounds`` files), plus the raw SQLite floor.
    """
    import sqlite3
    import zlib

    from xlmt_sklearn.internals import FLOW_TUNING as FLOW

    LOOKUP_BATCH, STREAM_CHUNK = FLOW.lookup_batch, FLOW.stream_chunk
    from xlmt_sklearn import EmbeddingCache
    from xlmt_sklearn import internals as S
    from xlmt_sklearn.internals import INDEX_COLUMNS, MMAP_SIZE, key_id, make_keys

    assert chunk == LOOKUP_BATCH, "time the calls a transform makes"

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    keys = make_keys("bench-fingerprint", [f"text {i}" for i in range(n)])
    patterns = {  # name -> (keys in lookup order, keys per call)
        "get": (keys, chunk), "get_big": (keys, STREAM_CHUNK),
        "get_fold": ([keys[i] for i in np.sort(rng.permutation(n)[: n * 4 // 5])], chunk),
        "get_random": ([keys[i] for i in rng.permutation(n)], chunk),
    }  # fmt: skip
    times: dict[str, list[float]] = {
        "put": [], "keys": [], "raw": [], "no_regroup": [], "get_rows": [], "get_zlib": [],
    }  # fmt: skip
    for name in patterns:
        times[name], times[name + "_first"] = [], []

    def timed(what: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        times[what].append(time.perf_counter() - t0)

    def get_all(cache, size: int, order: list[bytes] = keys) -> int:
        # Like a transform, keep no call's arrays beyond the call: holding them all
        # would time the allocation of fresh memory (page faults) more than the lookups.
        hits = 0
        for s in range(0, len(order), size):
            hits += sum(v is not None for v in cache.get_many(order[s : s + size]))
        return hits

    ids = [key_id(k) for k in keys]

    def raw(conn, cols: str) -> None:
        # The same index rows through the sqlite3 module alone: no blocks, no checks.
        for s in range(0, n, chunk):
            part = ids[s : s + chunk]
            for j in range(0, len(part), 500):
                sub = part[j : j + 500]
                conn.execute(
                    f"SELECT {cols} FROM entries WHERE id IN ({','.join('?' * len(sub))})", sub
                ).fetchall()

    for r in range(rounds):
        cache = EmbeddingCache(tmp / f"store-{r}.sqlite")

        def put(cache=cache, regroup: bool = True) -> None:
            for a in range(0, n, STREAM_CHUNK):
                idx = np.arange(a, min(a + STREAM_CHUNK, n))
                written = rng.permutation(idx)  # encoding order: by length, not input order
                for s in range(0, len(written), batch):
                    part = written[s : s + batch]
                    cache.put_many([keys[i] for i in part], list(vecs[part]), [0] * len(part))
                if regroup:
                    cache.regroup([keys[i] for i in idx])

        if r == 0:  # the same writes without regroup: what input-order lookups would cost
            plain = EmbeddingCache(tmp / "store-plain.sqlite")
            put(plain, regroup=False)
            for _ in range(5):
                timed("no_regroup", lambda plain=plain: get_all(plain, chunk))
            plain.close()
        timed("put", put)
        assert get_all(cache, chunk) == n
        assert np.array_equal(cache.get_many([keys[n // 2]])[0][0], vecs[n // 2])
        for name, (order, size) in patterns.items():
            # First pass on a new connection: SQLite maps the file's pages into this
            # process on first touch (minor page faults); then repeated passes.
            cache.close()
            timed(name + "_first", lambda cache=cache, o=order, k=size: get_all(cache, k, o))
            for _ in range(5):
                timed(name, lambda cache=cache, o=order, k=size: get_all(cache, k, o))
                if name == "get":  # interleaved A/B: no directories; the standard zlib CRC
                    with _patched(S.STORE_TUNING, probe_stride=10**12):
                        timed("get_rows", lambda cache=cache: get_all(cache, chunk))
                    if S.CRC32_IMPLEMENTATION != "zlib":
                        with _patched(S.STORE_TUNING, crc32=zlib.crc32):
                            timed("get_zlib", lambda cache=cache: get_all(cache, chunk))
        conn = sqlite3.connect(cache.path)
        conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
        timed("raw", lambda conn=conn: raw(conn, INDEX_COLUMNS))
        conn.close()
        timed("keys", lambda: make_keys("bench-fingerprint", [f"text {i}" for i in range(n)]))
        cache.close()
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    out = {
        "n": n, "dim": dim, "chunk": chunk, "big_chunk": STREAM_CHUNK, "rounds": rounds,
        "batch": batch, "put_vps": n / med["put"], "keys_ps": n / med["keys"],
        "raw_vps": n / med["raw"], "put_times": times["put"],
        "no_regroup_vps": n / med["no_regroup"], "get_rows_vps": n / med["get_rows"],
        "get_zlib_vps": n / med["get_zlib"] if "get_zlib" in med else None,
        "crc32": S.CRC32_IMPLEMENTATION,
    }  # fmt: skip
    for name, (order, _) in patterns.items():
        out[name + "_vps"] = len(order) / med[name]
        out[name + "_first_vps"] = len(order) / med[name + "_first"]
    return out


@contextlib.contextmanager
def _patched(module, **values):
    # Temporarily set attributes (an A/B switch inside one run).
    saved = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(module, k, v)


def bench_vectorizer(model_dir: Path, texts: list[str], tmp: Path, rounds: int, log) -> dict:
    """Cold vs warm vs no-cache transform times (medians over interleaved rounds)."""
    from xlmt_sklearn import XLMTVectorizer
    from xlmt_sklearn.internals import load_count

    base = XLMTVectorizer(str(model_dir), device="cpu", backend="torch", progress=False).fit()
    base.transform(texts[:8])  # load the model once (shared registry), outside the timings
    counter = {"r": 0}
    state: dict[str, object] = {}

    def no_cache() -> None:
        base.transform(texts)

    def cold() -> None:
        counter["r"] += 1
        vec = XLMTVectorizer(
            str(model_dir), device="cpu", backend="torch", progress=False,
            cache=tmp / f"vec-{counter['r']}.sqlite",
        ).fit()  # fmt: skip
        state["out"] = vec.transform(texts)
        state["vec"] = vec

    def warm() -> None:
        vec = state["vec"]
        loads = load_count()["model"]
        state["warm_out"] = vec.transform(texts)  # type: ignore[attr-defined]
        state["warm_loaded"] = load_count()["model"] - loads

    cold()  # state for the first warm run
    times = {"no cache": [], "cold cache (all misses)": [], "warm cache (all hits)": []}
    for r in range(rounds):
        order = [("no cache", no_cache), ("cold cache (all misses)", cold),
                 ("warm cache (all hits)", warm)]  # fmt: skip
        order = order[r % 3 :] + order[: r % 3]
        for name, fn in order:
            if name == "warm cache (all hits)" and "vec" not in state:
                cold()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            key = {"cold cache (all misses)": "out", "warm cache (all hits)": "warm_out"}.get(name)
            if key is not None:  # outside the timing: NaN/inf vectors end the run
                C.check_vectors(f"{name}, round {r + 1}", state[key])
            log(f"  round {r + 1} {name:<26} {times[name][-1]:7.3f} s")
    C.check_vectors("warm cache (all hits)", state["warm_out"], state["out"],
                    reference_name="cold cache (all misses)")  # fmt: skip
    same = np.array_equal(state["out"], state["warm_out"])  # type: ignore[arg-type]
    return {
        "times": times,
        "median": {k: float(np.median(v)) for k, v in times.items()},
        "warm_equal": bool(same),
        "warm_loaded_model": int(state.get("warm_loaded", 0)),  # type: ignore[arg-type]
    }


def bench_gridsearch(model_dir: Path, texts: list[str], labels: list[int], tmp: Path, log) -> dict:
    """GridSearchCV end to end, without then with a cache (one run each)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from xlmt_sklearn import XLMTVectorizer
    from xlmt_sklearn.internals import get_model  # noqa: F401  (registry warm-up below)

    grid = {"clf__C": [0.1, 1.0, 10.0]}
    out = {}
    warm_up = XLMTVectorizer(str(model_dir), device="cpu", backend="torch", progress=False)
    warm_up.fit().transform(texts[:4])
    for name, cache in (("without cache", None), ("with cache", tmp / "grid.sqlite")):
        pipe = Pipeline([
            ("emb", XLMTVectorizer(str(model_dir), device="cpu", backend="torch",
                                   progress=False, cache=cache)),
            ("clf", LogisticRegression(max_iter=2000)),
        ])  # fmt: skip
        gs = GridSearchCV(pipe, grid, cv=3, n_jobs=1)
        t0 = time.perf_counter()
        gs.fit(texts, labels)
        dt = time.perf_counter() - t0
        out[name] = {"seconds": dt, "best": gs.best_params_, "score": float(gs.best_score_)}
        log(f"  GridSearchCV {name:<14} {dt:7.1f} s  best {gs.best_params_} "
            f"score {gs.best_score_:.3f}")  # fmt: skip
    return out


def render(res: dict) -> str:
    """The cache results page (``benchmarks/results/cache.md``)."""
    s, v, g = res["store"], res["vectorizer"], res["grid"]
    mach = C.md_table(["", ""], [[k, x] for k, x in res["machine"].items()])

    def verdict(vps: float) -> str:
        return "met" if vps >= 1e5 else "**missed**"

    store = C.md_table(
        ["warm `get_many` lookups / operation", "vectors/s (median of repeats)",
         "first pass, new connection", "goal", "verdict"],
        [
            *[
                [label, f"{s[name + '_vps']:,.0f}",
                 f"{s[name + '_first_vps']:,.0f}" if name + "_first_vps" in s else "",
                 goal, verdict(s[name + "_vps"]) if goal != "-" else "-"]
                for name, label, goal in [
                    ("get", f"calls of {s['chunk']:,} keys in input order (what a transform "
                     "does)", ">= 100,000"),
                    ("get_big", f"calls of {s['big_chunk']:,} keys in input order", "-"),
                    ("get_fold", f"a CV fold: 80% of the keys in input order, calls of "
                     f"{s['chunk']:,}", ">= 100,000"),
                    ("get_random", f"calls of {s['chunk']:,} keys in random order", "-"),
                    ("no_regroup", f"calls of {s['chunk']:,} keys in input order, file written "
                     "without `regroup` (one file, 5 passes)", "-"),
                    ("get_rows", f"A/B: calls of {s['chunk']:,} keys in input order, block "
                     "directories off (index rows only, the schema-4 read path)", "-"),
                    *([("get_zlib", f"A/B: calls of {s['chunk']:,} keys in input order, CRC-32 by "
                        "the standard `zlib` (without the `fast` extra)", ">= 100,000")]
                      if s["get_zlib_vps"] else []),
                ]
            ],
            ["floor of the index-row path: its SELECT through `sqlite3` alone (no blocks, "
             "no checks)", f"{s['raw_vps']:,.0f}", "", "-", "-"],
            [f"writes as a transform does (`put_many` per {s['batch']} texts, `regroup` per chunk)",
             f"{s['put_vps']:,.0f}", "", "-", "-"],
            ["`make_keys` (SHA-256 of fingerprint + text)", f"{s['keys_ps']:,.0f}", "", "-", "-"],
        ],
    )  # fmt: skip
    med = v["median"]
    vec = C.md_table(
        ["transform of the same texts", "seconds (median)", "texts/s", "vs cold"],
        [[k, f"{t:.3f}", f"{res['n_vec'] / t:,.1f}", f"{med['cold cache (all misses)'] / t:.1f}x"]
         for k, t in med.items()],
    )  # fmt: skip
    from xlmt_sklearn.internals import STORE_TUNING as TUNING

    zlib_line = (
        f"With the standard `zlib` CRC-32 instead of zlib-ng (A/B in the same passes): "
        f"{1e6 / s['get_zlib_vps']:.1f} µs per vector ({s['get_vps'] / s['get_zlib_vps']:.2f}x "
        "slower).\n"
        if s["get_zlib_vps"]
        else ""
    )
    gw, gc = g["without cache"]["seconds"], g["with cache"]["seconds"]
    grid = C.md_table(
        ["GridSearchCV", "seconds", "best params", "best CV score"],
        [[k, f"{x['seconds']:.1f}", str(x["best"]), f"{x['score']:.3f}"] for k, x in g.items()],
    )
    return f"""## Cache

Generated by `{res["command"]}` on {res["date"]} in {res["wall_s"] / 60:.1f} minutes.
Load average {res["load_before"]} before, {res["load_after"]} after (a shared
virtual machine: neighbours' load does not show there); store timings are medians over
{s["rounds"]} files x 5 passes (first passes: over the {s["rounds"]} files), transform timings
medians of {res["rounds"]} interleaved rounds. Repeated runs of this script on this machine have
differed by up to ±20% in the lookup rows.

{mach}

### Store: raw lookups and writes

{s["n"]:,} random {s["dim"]}-d float32 vectors written the way a cold transform writes them
(one `put_many` per batch of {s["batch"]} texts in encoding order, which is by length and so
scattered over the input, then `regroup` of each chunk of {s["big_chunk"]:,} in input order);
SQLite file on local disk, warm (page cache hot, connection open).

{store}

CRC-32 by: {s["crc32"]} (the first rows; `zlib-ng` comes with the `fast` extra).
A lookup batch first samples every {TUNING.probe_stride}th key's index row to find the blocks it
lies in; when they are few (input order after `regroup`, a CV fold) it reads those blocks'
directories and matches every key with numpy, so no index row is read per key: the
directory path costs {1e6 / s["get_vps"]:.1f} µs per vector, where the index SELECT alone
(the floor of the index-row path) costs {1e6 / s["raw_vps"]:.1f} µs and the whole index-row
path {1e6 / s["get_rows_vps"]:.1f} µs (A/B in the same passes:
{s["get_vps"] / s["get_rows_vps"]:.2f}x). What remains per vector is copying it out of its
block, its CRC-32 (key, header, data), and building one array per call.
{zlib_line}Random order scatters a batch over every block, so it takes the index-row path,
and a block opened for one or two vectors ({1e6 / s["get_random_vps"]:.1f} µs per vector).
One call of {s["big_chunk"]:,} keys costs more per key than {s["chunk"]:,}-key calls: its
{s["big_chunk"]:,} arrays no longer fit in the CPU's caches, which is why a transform looks
its chunks up {s["chunk"]:,} keys at a time. The file written without `regroup` (index-row
path: its blocks hold encoding batches) is timed before the others, on one file.
Schema 3 kept every vector in a 3 KB BLOB row of its own (63k-73k vectors/s in all, any
order), schema 4 read index rows only (68k-112k across six runs); see
`docs/architecture.md`.

### XLMTVectorizer: cold vs warm cache

Model: {res["model"]}. {res["n_vec"]} distinct tweets from {res["source"]}.
Warm output identical to cold: {v["warm_equal"]}; model loads during the warm
transform: {v["warm_loaded_model"]}.

{vec}

### GridSearchCV end to end

`Pipeline([XLMTVectorizer(cache=...), LogisticRegression(max_iter=2000)])`,
`GridSearchCV(param_grid={{"clf__C": [0.1, 1, 10]}}, cv=3, n_jobs=1)` on {res["n_grid"]}
tweets with their UMSAB sentiment labels (3 classes); 3 x 3 fits + 1 refit, each of
which embeds its training fold and scores its test fold. Without a cache every
fit re-embeds; with it each distinct text is embedded once. One run each (the
model is already loaded for both).

{grid}

With the cache GridSearchCV took **{gw / gc:.1f}x** less time ({gw:.0f} s -> {gc:.0f} s).
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, < 60 s, writes nothing")
    p.add_argument("--docs", action="store_true", help="write results even in smoke mode")
    p.add_argument("--no-docs", action="store_true", help="write nothing")
    p.add_argument("--n-store", type=int, default=None, help="vectors for the store test")
    p.add_argument("--n-vec", type=int, default=None, help="texts for cold/warm (default 300)")
    p.add_argument("--n-grid", type=int, default=None, help="texts for GridSearchCV (150)")
    p.add_argument("--rounds", type=int, default=None)
    args = p.parse_args(argv)
    smoke = args.smoke
    n_store = args.n_store or (5_000 if smoke else 50_000)
    n_vec = args.n_vec or (32 if smoke else 300)
    n_grid = args.n_grid or (48 if smoke else 150)
    rounds = args.rounds or (2 if smoke else 3)
    write = (args.docs or not smoke) and not args.no_docs
    t_start = time.perf_counter()
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    def log(s: str) -> None:
        print(s, flush=True)

    from xlmt_sklearn import normalize_tweet

    with tempfile.TemporaryDirectory(prefix="xlmt-bench-cache-") as tmpd:
        tmp = Path(tmpd)
        if smoke:
            import torch

            torch.set_num_threads(1)  # plumbing check, not speed: quick on a loaded box
            model_dir = C.tiny_model_dir(tmp / "tiny", real_tokenizer=False)
            model_desc = "tiny random XLM-R (2 layers, hidden 64)"
        else:
            model_dir = C.base_model_dir()
            model_desc = "XLM-R base shape, random weights, real XLM-R tokenizer"
        dim = 768
        log(f"store: {n_store} x {dim} float32")
        store = bench_store(tmp, n_store, dim, rounds=2 if smoke else 5, chunk=1000)
        log(f"  get_many {store['get_vps']:,.0f} vectors/s, put_many {store['put_vps']:,.0f}")
        texts, labels, source = C.load_tweets(4 * max(n_vec, n_grid), seed=1, with_labels=True)
        first: dict[str, int] = {}
        for t, y in zip(texts, labels, strict=True):
            first.setdefault(normalize_tweet(t), y)  # distinct texts, first label kept
        uniq = list(first.items())
        vtexts = [t for t, _ in uniq[:n_vec]]
        log(f"vectorizer cold/warm: {len(vtexts)} texts, {model_desc}")
        vec = bench_vectorizer(model_dir, vtexts, tmp, rounds, log)
        gt = uniq[:n_grid]
        log(f"GridSearchCV: {len(gt)} texts")
        grid = bench_gridsearch(model_dir, [t for t, _ in gt], [y for _, y in gt], tmp, log)
    cmd = "python benchmarks/bench_cache.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    machine = C.machine_info()
    try:
        from importlib.metadata import version

        machine["zlib-ng (CRC-32)"] = version("zlib-ng")
    except Exception:  # the `fast` extra is not installed
        machine["zlib-ng (CRC-32)"] = "not installed (standard zlib)"
    res = {
        "machine": machine, "store": store, "vectorizer": vec, "grid": grid,
        "n_vec": len(vtexts), "n_grid": len(gt), "rounds": rounds, "source": source,
        "model": model_desc, "command": cmd.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.perf_counter() - t_start, "load_before": load_before,
        "load_after": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }  # fmt: skip
    med = vec["median"]
    log(
        f"warm/cold speedup {med['cold cache (all misses)'] / med['warm cache (all hits)']:.1f}x; "
        f"grid {grid['without cache']['seconds']:.1f} s -> {grid['with cache']['seconds']:.1f} s"
    )
    if write:
        C.RESULTS.mkdir(parents=True, exist_ok=True)
        (C.RESULTS / "cache.md").write_text(render(res), encoding="utf-8")
        C.assemble_docs()
        log(f"wrote {C.RESULTS / 'cache.md'} and docs/benchmarks.md")
    log(f"done in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
