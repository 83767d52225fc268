"""OpenVINO int8: speed and closeness to float32, dynamic group sizes and static variants.

OpenVINO int8 (``backends._int8``) stores int8 weights and quantizes the
activations on the fly, one scale per group of ``DYNAMIC_QUANTIZATION_GROUP_SIZE``
values. Smaller groups follow the activations more closely; larger ones do
less work per matmul. Static int8 (``calibration_texts``) fixes one scale per
activation tensor from calibration texts, after SmoothQuant moves part of the
activations' range into the weights (alpha). This script measures both sides, so
the group and the alpha the package ships (``backends._int8.OPENVINO_DQ_GROUP``,
``OPENVINO_SMOOTH_QUANT_ALPHA``) are chosen from numbers:

* the models: multilingual-e5-small (real weights, ``prefix="query: "``) and the
  XLM-R base shape (random weights: speed only, its cosines mean little);
* the same converted int8 model (``backend="openvino", quantize="int8"``),
  compiled once per group size; static int8 quantized from the converted float32
  model with SmoothQuant alphas :data:`ALPHAS` (the shipped one is the product's
  converted model), and once with the feed-forward down-projections left in
  float; calibration: 300 other tweets; float32 reference: the converted float32
  model (equal to torch float32 within 1e-5, tests/test_backends.py);
* UMSAB tweets, normalised, deduplicated, padded batches of 32 cut where padding
  is least (the plan the runtimes get), mean pooling; every group timed in the
  same interleaved rounds (medians); cosine per text to float32.

Every variant's vectors (the first run and every timed round) and the float32
reference must be finite, else the run stops with ``_common.BenchmarkFailure``
(exit status 1) and writes nothing. The cosines are reported, not held to a bar
here (the variants are candidates; the shipped int8's bar is checked by
``bench_throughput.py`` and ``int8_quality.py``).

Usage::

    python benchmarks/bench_openvino_int8.py            # writes results/openvino-int8-groups.md
    python benchmarks/bench_openvino_int8.py --smoke    # tiny model, writes nothing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np

GROUPS = (32, 64, 128, 256)
ALPHAS = (0.5, 0.75, 0.95)  # 0.95: NNCF's default for transformers


def _converted(model_dir: Path) -> tuple[Path, Path]:
    """The product's converted float32 and int8 OpenVINO folders of ``model_dir``."""
    from xlmt_sklearn.internals import resolve_identity, runtime_encoder

    identity, _ = resolve_identity(str(model_dir))
    encoder = runtime_encoder("openvino", identity, "float32", False, "int8")
    return encoder.converted((-1,), "float32"), encoder.converted((-1,))


def _batches(model_dir: Path, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions, ids, mask) of each padded batch, as the runtimes get them."""
    from transformers import AutoTokenizer

    from xlmt_sklearn.internals import pad_rows, plan_batches

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = tok(texts, truncation=True, max_length=128)["input_ids"]
    plan = plan_batches([len(r) for r in rows], 32, min_padding=True)
    return [(b, *pad_rows([rows[i] for i in b], tok.pad_token_id)) for b in plan.batches]


def _embed(compiled, batches, n: int) -> np.ndarray:
    out = None
    for b, ids, mask in batches:
        hs = compiled({"input_ids": ids, "attention_mask": mask})[0][0]
        pooled = (hs * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        out = np.zeros((n, hs.shape[-1]), np.float32) if out is None else out
        out[b] = pooled
    return out


def _static_variants(model_dir: Path, calibration: list[str], work: Path) -> dict[str, Path]:
    """Static int8 IRs by name: each alpha; the shipped one with down-projections in float."""
    import openvino as ov

    from xlmt_sklearn import XLMTVectorizer, internals
    from xlmt_sklearn.internals import OPENVINO_SMOOTH_QUANT_ALPHA as ALPHA
    from xlmt_sklearn.internals import calibration_samples, quantize_openvino_static

    vec = XLMTVectorizer(str(model_dir), backend="openvino", quantize="int8",
                         calibration_texts=calibration).fit()  # fmt: skip
    (encoder,) = internals.encoders(vec)
    float_dir = encoder.converted((-1,), "float32")
    samples = calibration_samples(encoder.tokenizer(), internals.calibration(vec))
    out = {}
    for a in ALPHAS:
        if a == ALPHA:  # what the package converts
            out[f"static, alpha {a}"] = encoder.converted((-1,)) / "model.xml"
            continue
        (work / f"alpha-{a}").mkdir(parents=True)
        quantize_openvino_static(float_dir, work / f"alpha-{a}", samples, alpha=a)
        out[f"static, alpha {a}"] = work / f"alpha-{a}" / "model.xml"
    model = ov.Core().read_model(str(float_dir / "model.xml"))
    down = [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "MatMul" and ".output.dense/" in op.get_friendly_name()
            and ".attention." not in op.get_friendly_name()]  # fmt: skip
    if not down:
        raise RuntimeError(f"no feed-forward down-projection found by name in {float_dir}")
    (work / "down-float").mkdir()
    quantize_openvino_static(float_dir, work / "down-float", samples, ignored=down)
    out[f"static, alpha {ALPHA}, down-projections float"] = work / "down-float" / "model.xml"
    return out


def measure(
    model_dir: Path, texts: list[str], calibration: list[str], rounds: int, threads: int,
    label: str = "",
) -> dict:  # fmt: skip
    """Median seconds and cosines to float32 of every variant, one model (``label``).

    Raises ``_common.BenchmarkFailure`` when the reference or a variant returns NaN/inf.
    """
    import openvino as ov

    from xlmt_sklearn.internals import openvino_int8_config

    float_dir, int8_dir = _converted(model_dir)
    batches = _batches(model_dir, texts)
    core = ov.Core()
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32"}  # fmt: skip
    ref = _embed(core.compile_model(str(float_dir / "model.xml"), "CPU", base), batches, len(texts))
    ref_name = f"{label} float32 (converted)".strip()
    C.check_vectors(ref_name, ref)
    compiled = {
        f"group {g}": core.compile_model(
            str(int8_dir / "model.xml"), "CPU",
            {**base, **openvino_int8_config(), "DYNAMIC_QUANTIZATION_GROUP_SIZE": g},
        )
        for g in GROUPS
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="xlmt-ov-static-") as work:
        for name, xml in _static_variants(model_dir, calibration, Path(work)).items():
            compiled[name] = core.compile_model(str(xml), "CPU", base)
    cos = {}
    for name, c in compiled.items():
        got = _embed(c, batches, len(texts))
        cos[name] = C.check_vectors(f"{label} {name}".strip(), got, ref, reference_name=ref_name)

    def run(name: str, c: object) -> None:  # every timed round's vectors must be finite too
        C.check_vectors(f"{label} {name}".strip(), _embed(c, batches, len(texts)))

    runs = {name: (lambda name=name, c=c: run(name, c)) for name, c in compiled.items()}
    times = C.interleave(runs, rounds)
    return {name: {"s": times[name].median, "cos": cos[name]} for name in compiled}


def render(results: dict, n: int, rounds: int, command: str, wall: float) -> str:
    from xlmt_sklearn.internals import OPENVINO_DQ_GROUP, OPENVINO_SMOOTH_QUANT_ALPHA

    shipped = {f"group {OPENVINO_DQ_GROUP}", f"static, alpha {OPENVINO_SMOOTH_QUANT_ALPHA}"}
    rows = []
    for model, variants in results.items():
        first = variants[f"group {GROUPS[0]}"]["s"]
        dynamic = variants[f"group {OPENVINO_DQ_GROUP}"]["s"]
        for name, r in variants.items():
            c = r["cos"]
            rows.append([
                model, f"**{name}**" if name in shipped else name, f"{r['s']:.2f}",
                f"{first / r['s']:.2f}x", f"{dynamic / r['s']:.2f}x", f"{c.min():.5f}",
                f"{np.percentile(c, 1):.5f}", f"{c.mean():.5f}",
            ])  # fmt: skip
    table = C.md_table(
        ["model", "int8 variant", "median s", f"speed vs group {GROUPS[0]}",
         f"vs group {OPENVINO_DQ_GROUP}", "cosine min", "1st percentile", "mean"],
        rows)  # fmt: skip
    mach = C.md_table(["", ""], [[k, v] for k, v in C.machine_info().items()])
    return f"""## OpenVINO int8: group size of the dynamic scheme, and static int8

Generated by `{command}` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} in
{wall / 60:.1f} minutes. {n} UMSAB tweets (normalised, deduplicated), padded batches of at most
32 cut where padding is least, mean pooling, {rounds} interleaved rounds (medians). Cosine per
text to the converted float32 model. "group N": the dynamic scheme (`quantize="int8"`)
with activations quantized per group of N values; "static": `calibration_texts` (300 other
tweets), SmoothQuant alpha as named. The shipped variants are in bold
(`backends._int8.OPENVINO_DQ_GROUP`, `OPENVINO_SMOOTH_QUANT_ALPHA`). The XLM-R base shape
has random weights: its cosines say little about quality (e5-small's do; task quality:
`int8_quality.py --backend openvino [--calibrate 300]`).

{mach}

{table}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny random model, few texts")
    p.add_argument("--n", type=int, default=None, help="texts (default 1000; smoke 16)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; smoke 1)")
    args = p.parse_args(argv)
    from xlmt_sklearn import internals as rt

    if not (rt.runtime_installed("openvino") and rt.int8_installed("openvino")):
        print("SKIPPED: needs the [openvino] extra (openvino, nncf)")
        return 0
    import torch

    t0 = time.perf_counter()
    n, rounds = args.n or (16 if args.smoke else 1000), args.rounds or (1 if args.smoke else 3)
    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory(prefix="xlmt-ov-int8-")
        __import__("os").environ["XLMT_SKLEARN_CONVERTED_DIR"] = str(Path(tmp.name) / "conv")
        models = {"tiny": C.tiny_model_dir(Path(tmp.name) / "tiny", real_tokenizer=False)}
    else:
        models = {"multilingual-e5-small": C.e5_small_dir(), "XLM-R base shape": C.base_model_dir()}
        models = {k: v for k, v in models.items() if v is not None}
    from xlmt_sklearn import normalize_tweet

    tweets, _, _ = C.load_tweets(2 * n + 600, seed=1, with_labels=True)
    distinct = list(dict.fromkeys("query: " + normalize_tweet(t) for t in tweets))
    texts, calibration = distinct[:n], distinct[n : n + (30 if args.smoke else 300)]
    results = {}
    for name, folder in models.items():
        print(f"{name}: {folder}", flush=True)
        results[name] = measure(folder, texts, calibration, rounds, torch.get_num_threads(), name)
        for v, r in results[name].items():
            print(f"  {v:<45} {r['s']:.2f} s, cosine min {r['cos'].min():.5f}", flush=True)
    if not args.smoke:
        command = "python benchmarks/bench_openvino_int8.py " + " ".join(sys.argv[1:])
        text = render(results, len(texts), rounds, command.strip(), time.perf_counter() - t0)
        (C.RESULTS / "openvino-int8-groups.md").write_text(text, encoding="utf-8")
        C.assemble_docs()
        print(f"wrote {C.RESULTS / 'openvino-int8-groups.md'} and docs/benchmarks.md")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
