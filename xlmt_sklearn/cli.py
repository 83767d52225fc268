"""Command line interface: ``xlmt-sklearn embed`` and ``xlmt-sklearn cache``.

Examples
--------
Embed one text per line into Parquet, resumably (the cache keeps every
finished batch, so an interrupted run restarts where it stopped)::

    xlmt-sklearn embed tweets.txt -o tweets.parquet --cache-dir .xlmt-cache

Embed a CSV column with a local model, keeping the other columns::

    xlmt-sklearn embed data.csv -o out.parquet --text-column body \\
        --model models/e5-small --prefix "query: " --keep-columns

Inspect or empty a cache::

    xlmt-sklearn cache info .xlmt-cache
    xlmt-sklearn cache clear .xlmt-cache

Every user error (bad option, unreadable file, missing column, a model that
can't be found) prints one ``xlmt-sklearn: error: ...`` line and exits with
status 2; an interrupted run exits with 130 and leaves no partial output.
torch, transformers and pyarrow are imported only when a command needs them, so
``--help`` never loads them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["CLIError", "main"]

PROG = "xlmt-sklearn"
DEFAULT_MODEL = "cardiffnlp/twitter-xlm-roberta-base"  # same as _vectorizer.DEFAULT_MODEL
INPUT_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".csv": "csv"}
EMBEDDING_COLUMN = "embedding"
WIDE_PREFIX = "emb_"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so ``main`` returns a code."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise CLIError(message)


# --------------------------------------------------------------------------- parsing
def _layers(value: str) -> list[int]:
    try:
        layers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as -1 or -4,-3,-2,-1; got {value!r}"
        ) from None
    if not layers:
        raise argparse.ArgumentTypeError("expected at least one layer index")
    return layers


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _tokens_cap(value: str) -> int | str | None:
    named = {"auto": "auto", "none": None}
    return named[value.lower()] if value.lower() in named else _positive_int(value)


def _non_negative_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``xlmt-sklearn`` (exposed for documentation and tests).

    Returns
    -------
    argparse.ArgumentParser
    """
    from ._version import __version__

    parser = _Parser(
        prog=PROG,
        description="Transformer text embeddings (XLM-T by default) from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    embed = sub.add_parser(
        "embed",
        help="embed the texts of a file and write the vectors to a file",
        description=(
            "Embed every text of INPUT (csv, tsv, jsonl, parquet, or txt with one text per "
            "line) and write one vector per row to OUTPUT (.parquet, .npy or .csv, chosen by "
            "extension), in input order. With --cache-dir the run is resumable: finished "
            "batches are cached, so rerunning an interrupted command encodes only the rest. "
            "OUTPUT is written atomically (never half-written)."
        ),
    )
    embed.add_argument("input", metavar="INPUT", help="input file (.csv .tsv .jsonl .parquet .txt)")
    embed.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT",
        help="output file: .parquet (list column 'embedding', or --wide), .npy or .csv",
    )  # fmt: skip
    embed.add_argument(
        "--text-column", default="text", metavar="NAME",
        help="column holding the texts (csv/tsv/jsonl/parquet; default: %(default)s)",
    )  # fmt: skip
    embed.add_argument(
        "--keep-columns", action="store_true",
        help="copy the input columns into the output before the embedding (parquet, csv)",
    )  # fmt: skip
    embed.add_argument(
        "--wide",
        action="store_true",
        help=f"parquet: one float column per dimension ({WIDE_PREFIX}0, {WIDE_PREFIX}1, ...) "
        f"instead of one list column '{EMBEDDING_COLUMN}' (csv output is always wide)",
    )
    tok = embed.add_argument_group("token-level output")
    tok.add_argument(
        "--tokens",
        action="store_true",
        help="one row per subword or word (a long table: row, position, token, begin, end, "
        "embedding; parquet or csv) instead of one vector per text",
    )
    tok.add_argument(
        "--granularity", default="subword", choices=["subword", "word"],
        help="--tokens: one vector per model subword or per input word (default: %(default)s)",
    )  # fmt: skip
    tok.add_argument(
        "--word-vector", default="first", choices=["first", "mean"],
        help="--tokens --granularity word: first subword's vector (Spark NLP) or their mean",
    )  # fmt: skip
    model = embed.add_argument_group("model")
    model.add_argument(
        "--model", default=DEFAULT_MODEL,
        help="hub id or local folder (save_pretrained output; default: %(default)s)",
    )  # fmt: skip
    model.add_argument("--revision", default=None, help="hub branch, tag or commit")
    model.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    model.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
        help="compute dtype (default: auto = float32 on CPU, bf16/fp16 on GPU)",
    )  # fmt: skip
    model.add_argument(
        "--quantize", default=None, choices=["int8"],
        help="dynamic int8 quantization of the linear layers (CPU only)",
    )  # fmt: skip
    model.add_argument(
        "--batch-size", type=_positive_int, default=32, metavar="N",
        help="texts per forward pass (default: %(default)s)",
    )  # fmt: skip
    model.add_argument(
        "--max-tokens", type=_tokens_cap, default="auto", metavar="N|auto|none",
        help="most padded tokens per forward pass: a number, 'none', or 'auto' "
        "(sized for the GPU's free memory; no cap on a CPU) (default: %(default)s)",
    )  # fmt: skip

    vec = embed.add_argument_group("vectors")
    vec.add_argument(
        "--pooling", default="mean", choices=["mean", "cls", "max", "mean_max"],
        help="how token vectors become one vector per text (default: %(default)s)",
    )  # fmt: skip
    vec.add_argument(
        "--layers", type=_layers, default=[-1], metavar="L[,L...]",
        help="hidden-state layers, comma-separated (0 = embeddings, -1 = last; default: -1)",
    )  # fmt: skip
    vec.add_argument(
        "--layer-aggregation", default="mean", choices=["mean", "concat"],
        help="how several --layers are combined (default: %(default)s)",
    )  # fmt: skip
    vec.add_argument("--normalize", action="store_true", help="L2-normalise every vector")
    vec.add_argument(
        "--max-length", type=_positive_int, default=128, metavar="N",
        help="longest input in tokens, special tokens included (default: %(default)s)",
    )  # fmt: skip
    vec.add_argument(
        "--truncation", default="warn", choices=["warn", "error", "window"],
        help="longer texts: truncate with a warning, fail, or encode in overlapping windows",
    )  # fmt: skip
    vec.add_argument(
        "--stride", type=_non_negative_int, default=None, metavar="N",
        help="tokens shared by consecutive windows (--truncation window; default max-length/4)",
    )  # fmt: skip
    vec.add_argument(
        "--prefix", default=None,
        help='text put before every input, e.g. "query: " for E5 models ("{text}" = template)',
    )  # fmt: skip
    vec.add_argument(
        "--preprocess", default="xlmt", choices=["xlmt", "none"],
        help="xlmt: @handles -> @user, links -> http (XLM-T's rule; default); none: as is",
    )  # fmt: skip
    vec.add_argument(
        "--missing", default="error", choices=["error", "empty", "zeros"],
        help="empty/missing texts: fail (default), embed as the empty text, or zero rows",
    )  # fmt: skip

    run = embed.add_argument_group("run")
    run.add_argument(
        "--cache-dir", default=None, metavar="DIR",
        help="disk cache directory (created if needed): makes the run resumable and reruns "
        "instant",
    )  # fmt: skip
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar with rate and ETA on stderr (default: when stderr is a terminal)",
    )  # fmt: skip
    embed.set_defaults(func=_cmd_embed)

    cache = sub.add_parser("cache", help="inspect or clear an embedding cache")
    csub = cache.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    info = csub.add_parser("info", help="print the entries, size and path of a cache")
    info.add_argument("path", metavar="PATH", help="cache file, or the directory holding it")
    info.set_defaults(func=_cmd_cache_info)
    clear = csub.add_parser("clear", help="delete every entry of a cache")
    clear.add_argument("path", metavar="PATH", help="cache file, or the directory holding it")
    clear.set_defaults(func=_cmd_cache_clear)
    return parser


# --------------------------------------------------------------------------- helpers
def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _format_of(path: Path, table: dict[str, str], what: str) -> str:
    fmt = table.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(set(table)))
        suffix = path.suffix or "(no extension)"
        raise CLIError(f"unknown {what} format {suffix!r} for {str(path)!r}; use one of: {known}")
    return fmt


def _need_pyarrow(purpose: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CLIError(f"{purpose} needs pyarrow: pip install 'xlmt-sklearn[parquet]'") from None


def read_table(path: Path, fmt: str, text_column: str) -> Any:
    """Read ``path`` into a DataFrame whose ``text_column`` holds the texts.

    Parameters
    ----------
    path : pathlib.Path
        The input file.
    fmt : {"csv", "tsv", "jsonl", "parquet", "txt"}
        Its format. ``txt`` is one text per line (``str.splitlines``), in a
        column named ``text_column``.
    text_column : str
        The column with the texts; in csv/tsv only empty fields of this
        column count as missing (``"NA"`` or ``"null"`` stay texts).

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    CLIError
        When the file can't be read or parsed, or lacks ``text_column``.
    """
    import pandas as pd

    if not path.exists():
        raise CLIError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise CLIError(f"input {str(path)!r} is a directory, not a file")
    if fmt == "parquet":
        _need_pyarrow("reading parquet")
    try:
        if fmt == "txt":
            df = pd.DataFrame({text_column: path.read_text(encoding="utf-8").splitlines()})
        elif fmt in ("csv", "tsv"):
            sep = "," if fmt == "csv" else "\t"
            header = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8")
            _check_column(list(header.columns), text_column, path)
            df = pd.read_csv(
                path, sep=sep, encoding="utf-8", dtype={text_column: object},
                keep_default_na=False, na_values={text_column: [""]},
            )  # fmt: skip
        elif fmt == "jsonl":
            df = _read_jsonl(path)
        else:
            df = pd.read_parquet(path)
    except CLIError:
        raise
    except UnicodeDecodeError as exc:
        raise CLIError(f"cannot read {str(path)!r}: it is not UTF-8 text ({exc})") from None
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"cannot read {str(path)!r} as {fmt}: {detail}") from None
    _check_column([str(c) for c in df.columns], text_column, path)
    if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
        df = df.reset_index()  # e.g. a pandas index stored in parquet: keep it as a column
    return df


def _read_jsonl(path: Path) -> Any:
    """One JSON object per line, parsed with :mod:`json`.

    pandas' reader silently drops lone surrogate escapes such as ``"\\ud800"``; here they
    become U+FFFD, as the vectorizer does with any lone surrogate (so the vector is the same
    and every column stays writable as UTF-8).
    """
    import json

    import pandas as pd

    from ._inputs import replace_surrogates

    records = []
    # Split on "\n" only: U+2028 and friends may appear raw inside JSON strings.
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        if not isinstance(record, dict):
            raise ValueError(f"line {number} is a JSON {type(record).__name__}, not an object")
        records.append(
            {k: replace_surrogates(v) if isinstance(v, str) else v for k, v in record.items()}
        )
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def _check_column(columns: list[str], name: str, path: Path) -> None:
    if name not in columns:
        shown = ", ".join(repr(c) for c in columns[:30]) or "(none)"
        more = f" and {len(columns) - 30} more" if len(columns) > 30 else ""
        raise CLIError(
            f"{str(path)!r} has no column {name!r}; available columns: {shown}{more}. "
            "Choose one with --text-column."
        )


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path``; on success move it onto ``path``.

    The temporary file lives in the same directory (so ``os.replace`` is an
    atomic rename), is flushed and fsynced before the rename, and is deleted
    if anything fails: ``path`` is either untouched or completely written.

    Parameters
    ----------
    path : pathlib.Path
        The final file.

    Yields
    ------
    file object
        A binary file open for writing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_output(
    path: Path, fmt: str, embeddings: Any, kept: Any = None, wide: bool = False
) -> None:
    """Write ``embeddings`` (and the ``kept`` input columns) atomically to ``path``.

    Parameters
    ----------
    path : pathlib.Path
        The output file.
    fmt : {"parquet", "npy", "csv"}
        Output format.
    embeddings : ndarray of shape (n_texts, dim)
        One float32 row per input row.
    kept : pandas.DataFrame or None
        Input columns to write first (parquet and csv only).
    wide : bool
        Parquet: one column per dimension instead of a fixed-size list column.
    """
    import numpy as np

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if fmt == "npy":
        with atomic_write(path) as f:
            np.save(f, embeddings)
        return
    dim = embeddings.shape[1]
    wide_names = [f"{WIDE_PREFIX}{i}" for i in range(dim)]
    if fmt == "csv":
        import pandas as pd

        parts = [] if kept is None else [kept.reset_index(drop=True)]
        parts.append(pd.DataFrame(embeddings, columns=wide_names))
        with atomic_write(path) as f:
            pd.concat(parts, axis=1).to_csv(f, index=False, encoding="utf-8")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: list[str] = []
    arrays: list[Any] = []
    if kept is not None:
        kept_table = pa.Table.from_pandas(kept.reset_index(drop=True), preserve_index=False)
        names, arrays = list(kept_table.column_names), list(kept_table.columns)
    if wide:
        names += wide_names
        arrays += [pa.array(embeddings[:, i]) for i in range(dim)]
    else:
        names.append(EMBEDDING_COLUMN)
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), dim))
    table = pa.Table.from_arrays(arrays, names=names)
    with atomic_write(path) as f:
        pq.write_table(table, f)


def token_table(frame: Any, df: Any, keep_columns: bool) -> Any:
    """Flatten ``XLMTTokenVectorizer(output="frame")`` output into a plain long table.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per token, indexed by input row, with an ``embedding`` column.
    df : pandas.DataFrame
        The input table (default integer index).
    keep_columns : bool
        Repeat the input columns on every token row of their text.

    Returns
    -------
    pandas.DataFrame
        ``row`` (0-based input row), the kept columns, then the token columns.
    """
    import pandas as pd

    table = frame.rename_axis("row").reset_index()
    if not keep_columns:
        return table
    clash = sorted(set(map(str, df.columns)) & set(map(str, table.columns)))
    if clash:
        raise CLIError(
            f"--keep-columns: the input already has column(s) {clash} that the token table "
            "uses; rename them first"
        )
    extra = df.iloc[table["row"].to_numpy()].reset_index(drop=True)
    return pd.concat([table[["row"]], extra, table.drop(columns="row")], axis=1)


def write_tokens(path: Path, fmt: str, table: Any, dim: int, wide: bool = False) -> None:
    """Write a token-level long table atomically (parquet or csv).

    Parameters
    ----------
    path : pathlib.Path
        The output file.
    fmt : {"parquet", "csv"}
        Output format.
    table : pandas.DataFrame
        One row per token; its ``embedding`` column holds one vector per row.
    dim : int
        Width of a vector (needed when there are no tokens at all).
    wide : bool
        Parquet: one column per dimension instead of a fixed-size list column
        (csv output is always wide).
    """
    import numpy as np

    vectors = table[EMBEDDING_COLUMN].to_list()
    mat = np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
    write_output(path, fmt, mat, kept=table.drop(columns=[EMBEDDING_COLUMN]), wide=wide)


def _cache_file(path: str) -> Path:
    from ._cache import DEFAULT_FILENAME

    p = Path(path).expanduser()
    return p / DEFAULT_FILENAME if p.is_dir() else p


def _open_existing_cache(path: str):
    """An :class:`EmbeddingCache` for an existing cache file, or a CLIError.

    A file that is not an xlmt_sklearn cache is refused here (read-only
    check) rather than handed to EmbeddingCache, which would move a foreign
    file aside to start a fresh cache.
    """
    import sqlite3

    from ._cache import EmbeddingCache
    from ._sqlite_store import MAGIC

    file = _cache_file(path)
    if file.is_symlink():
        raise CLIError(
            f"{str(file)!r} is a symbolic link; xlmt_sklearn never follows one for its cache "
            "file: pass the real file or its directory"
        )
    if not file.is_file():
        where = f"in directory {path!r}" if Path(path).expanduser().is_dir() else f"at {path!r}"
        raise CLIError(f"no xlmt_sklearn cache {where} (looked for {str(file)!r})")
    try:
        conn = sqlite3.connect(f"{file.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute("SELECT value FROM info WHERE name = 'magic'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        row = None
    if row is None or row[0] != MAGIC:
        raise CLIError(f"{str(file)!r} is not an xlmt_sklearn cache file")
    return EmbeddingCache(file)


# --------------------------------------------------------------------------- commands
def _cmd_cache_info(args: argparse.Namespace) -> int:
    stats = _open_existing_cache(args.path).stats
    print(f"path:    {stats.path}")
    print(f"entries: {stats.entries}")
    print(f"bytes:   {stats.bytes} ({_human_bytes(stats.bytes)} of vectors)")
    return 0


def _cmd_cache_clear(args: argparse.Namespace) -> int:
    cache = _open_existing_cache(args.path)
    before = cache.stats.entries
    cache.clear()
    after = cache.stats.entries
    print(f"cleared {before - after} entries from {cache.path}")
    return 0


def _make_vectorizer(args: argparse.Namespace, cache: Any, progress: bool) -> Any:
    options = dict(
        revision=args.revision, layers=args.layers, layer_aggregation=args.layer_aggregation,
        preprocess=None if args.preprocess == "none" else "xlmt", prefix=args.prefix,
        max_length=args.max_length, truncation=args.truncation, stride=args.stride,
        missing=args.missing, batch_size=args.batch_size, max_tokens=args.max_tokens,
        device=args.device, dtype=args.dtype, quantize=args.quantize, cache=cache,
        progress=progress,
    )  # fmt: skip
    if args.tokens:
        from ._token_vectorizer import XLMTTokenVectorizer

        return XLMTTokenVectorizer(
            args.model, output="frame", granularity=args.granularity,
            word_vector=args.word_vector, **options,
        )  # fmt: skip
    from ._vectorizer import XLMTVectorizer

    return XLMTVectorizer(args.model, pooling=args.pooling, normalize=args.normalize, **options)


def _model_error(exc: BaseException, model: str) -> CLIError:
    from ._model import looks_like_path

    if looks_like_path(model):
        hint = (
            "--model must be a folder written by save_pretrained (config.json, weights and "
            "the tokenizer files)."
        )
    else:
        hint = (
            "offline, pass a local folder: --model path/to/folder (any folder written by "
            "save_pretrained: model and tokenizer), or set HF_HUB_OFFLINE=1 with "
            f"{model!r} already in the Hugging Face cache (HF_HUB_CACHE)."
        )
    return CLIError(f"{exc}\n{PROG}: hint: {hint}")


def _cmd_embed(args: argparse.Namespace) -> int:
    in_path, out_path = Path(args.input).expanduser(), Path(args.output).expanduser()
    in_fmt = _format_of(in_path, INPUT_FORMATS, "input")
    out_fmt = _format_of(out_path, OUTPUT_FORMATS, "output")
    if out_fmt == "npy" and (args.keep_columns or args.tokens):
        flag = "--keep-columns" if args.keep_columns else "--tokens"
        raise CLIError(f"{flag} needs a table output (.parquet or .csv), not .npy")
    if args.wide and out_fmt != "parquet":
        raise CLIError("--wide applies to .parquet output only (.csv is always wide)")
    if args.tokens and (args.pooling != "mean" or args.normalize):
        raise CLIError("--pooling and --normalize apply to pooled vectors, not to --tokens")
    if out_fmt == "parquet":
        _need_pyarrow("writing parquet")
    if in_path.resolve() == out_path.resolve():
        raise CLIError("OUTPUT must not be the INPUT file")

    df = read_table(in_path, in_fmt, args.text_column)
    if args.keep_columns and not args.tokens:
        ours = re.compile(
            rf"{WIDE_PREFIX}[0-9]+" if out_fmt == "csv" or args.wide else EMBEDDING_COLUMN
        )
        clash = sorted(c for c in map(str, df.columns) if ours.fullmatch(c))
        if clash:
            raise CLIError(
                f"--keep-columns: the input already has column(s) {clash[:5]} that the output "
                "uses for the embedding; rename them first"
            )
    texts = df[args.text_column]

    from ._inputs import as_texts

    try:  # cheap check of missing/non-string values before any model is loaded
        as_texts(texts, missing=args.missing)
    except (TypeError, ValueError) as exc:
        hint = " (CLI: --missing empty or --missing zeros)" if "missing=" in str(exc) else ""
        raise CLIError(f"column {args.text_column!r} of {str(in_path)!r}: {exc}{hint}") from None

    cache = None
    if args.cache_dir is not None:
        from ._cache import DEFAULT_FILENAME, EmbeddingCache

        cache_dir = Path(args.cache_dir).expanduser()
        if cache_dir.exists() and not cache_dir.is_dir():
            raise CLIError(f"--cache-dir {args.cache_dir!r} exists and is not a directory")
        # EmbeddingCache creates missing folders itself, private (0o700), on first use.
        cache = EmbeddingCache(cache_dir / DEFAULT_FILENAME)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    vectorizer = _make_vectorizer(args, cache, progress)

    from ._errors import ModelLoadError

    start = time.perf_counter()
    try:
        vectorizer.fit()
    except ModelLoadError as exc:
        raise _model_error(exc, args.model) from None
    except (TypeError, ValueError) as exc:  # parameter validation against the model
        raise CLIError(str(exc)) from None
    try:
        with _reported_warnings():
            result = vectorizer.transform(texts)
    except ModelLoadError as exc:
        raise _model_error(exc, args.model) from None
    except ValueError as exc:  # e.g. --truncation error with a long text
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        if cache is None:
            _say(f"{PROG}: interrupted; nothing was written (use --cache-dir to resume)")
        else:
            _say(
                f"{PROG}: interrupted; nothing was written, {cache.stats.entries} vectors are "
                "in the cache: run the same command again to encode only the rest"
            )
        return 130
    elapsed = time.perf_counter() - start

    try:
        if args.tokens:
            table = token_table(result, df, args.keep_columns)
            write_tokens(out_path, out_fmt, table, vectorizer.n_features_out_, wide=args.wide)
            shape = f"{len(table)} token rows x {vectorizer.n_features_out_}"
        else:
            kept = df if args.keep_columns else None
            write_output(out_path, out_fmt, result, kept=kept, wide=args.wide)
            shape = f"{result.shape[0]} x {result.shape[1]}"
    except OSError as exc:
        raise CLIError(f"cannot write {str(out_path)!r}: {exc}") from None
    cached = ""
    if cache is not None:
        st = cache.stats
        cached = f", {st.hits} distinct texts from the cache, {st.misses} encoded"
    _say(f"{PROG}: wrote {out_path} ({shape}) in {elapsed:.1f} s{cached}")
    return 0


@contextlib.contextmanager
def _reported_warnings() -> Iterator[None]:
    """Print warnings as one ``xlmt-sklearn: warning: ...`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:  # also when the run fails or is interrupted
            seen: set[str] = set()
            for w in caught:
                text = f"{w.category.__name__}: {w.message}"
                if text not in seen:
                    seen.add(text)
                    _say(f"{PROG}: warning: {text}")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warning logs (e.g. unused pooler weights) for one command."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# --------------------------------------------------------------------------- entry
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xlmt-sklearn`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a user error (printed as one
        ``xlmt-sklearn: error: ...`` message, no traceback), 130 when
        interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CLIError as exc:
        _say(f"{PROG}: error: {exc}")
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    func: Callable[[argparse.Namespace], int] = args.func
    quiet = _quiet_transformers() if args.command == "embed" else contextlib.nullcontext()
    try:
        with quiet:
            return func(args)
    except CLIError as exc:
        _say(f"{PROG}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `xlmt-sklearn cache info x | head -1`
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
