"""The commands of ``xlmt-sklearn``: ``embed``, ``cache info``/``cache clear`` and
``converted info``/``converted prune``.

Each command takes the parsed :class:`argparse.Namespace` of
:func:`xlmt_sklearn.cli.build_parser` and returns an exit status; a user
error raises :class:`CLIError` (or :class:`~xlmt_sklearn.cli._table_io.TableIOError`),
which :func:`xlmt_sklearn.cli.main` prints as one line.

``embed`` runs in this order, so that a mistake costs no model load: the
option combinations, formats and output location (:func:`_check_files`), the
estimator's own parameter constraints (:func:`_make_vectorizer`), the input
table and its texts (:func:`_read_input`); only then the model (torch and
transformers are imported here, in :func:`_encode`), and last the atomic
write of the output.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._table_io import (
    EMBEDDING_COLUMN,
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    WIDE_PREFIX,
    check_output_location,
    format_of,
    need_pyarrow,
    read_table,
    token_table,
    write_output,
    write_tokens,
)

__all__ = [
    "CLIError",
    "cmd_adapted_info",
    "cmd_adapted_prune",
    "cmd_cache_clear",
    "cmd_cache_info",
    "cmd_converted_info",
    "cmd_converted_prune",
    "cmd_embed",
    "say",
]

PROG = "xlmt-sklearn"
#: ``--preprocess`` value that turns preprocessing off (``preprocess=None``).
NO_PREPROCESS = "none"
#: Columns of the ``--tokens`` table besides the kept input columns.
TOKEN_COLUMNS = ("row", "position", "token", "begin", "end", EMBEDDING_COLUMN)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


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
                    say(f"{PROG}: warning: {text}")


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


# --------------------------------------------------------------------------- cache
def _cache_file(path: str) -> Path:
    from ..store._cache import DEFAULT_FILENAME

    p = Path(path).expanduser()
    return p / DEFAULT_FILENAME if p.is_dir() else p


def _open_existing_cache(path: str) -> Any:
    """An :class:`EmbeddingCache` for an existing cache file, or a CLIError.

    A file that is not an xlmt_sklearn cache is refused here (read-only
    check) rather than handed to EmbeddingCache, which would move a foreign
    file aside to start a fresh cache.
    """
    import sqlite3

    from ..store._cache import EmbeddingCache
    from ..store._sqlite import MAGIC

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


def cmd_cache_info(args: argparse.Namespace) -> int:
    stats = _open_existing_cache(args.path).stats
    print(f"path:    {stats.path}")
    print(f"entries: {stats.entries}")
    print(f"bytes:   {stats.bytes} ({_human_bytes(stats.bytes)} of vectors)")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    cache = _open_existing_cache(args.path)
    before = cache.stats.entries
    cache.clear()
    after = cache.stats.entries
    print(f"cleared {before - after} entries from {cache.path}")
    return 0


# ----------------------------------------------------------------------- converted
def _converted_root(args: argparse.Namespace) -> Path:
    from ..backends._convert import converted_root

    return _dir_arg(args) or converted_root()


def _dir_arg(args: argparse.Namespace) -> Path | None:
    """``--dir``: an existing folder, or None (the default folder)."""
    if args.dir is None:
        return None
    root = Path(args.dir).expanduser()
    if not root.is_dir():
        raise CLIError(f"--dir {args.dir!r}: no such folder")
    return root


def _converted_line(f: Any) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(f.last_used))
    layers = ",".join(str(i) for i in f.layers)
    gone = "  (source gone)" if f.orphaned else ""
    weights = f.weights.split(":", 1)[0]  # an int8 scheme's name is long; the key is unique
    return (f"{f.path.name[:8]}  {f.runtime:<11} {weights:<8} {layers:<9} "
            f"{_human_bytes(f.bytes):>9}  {when}  {f.model}{gone}")  # fmt: skip


def cmd_converted_info(args: argparse.Namespace) -> int:
    from ..backends._converted_folders import list_converted

    root = _converted_root(args)
    folders = list_converted(root)
    total = sum(f.bytes for f in folders)
    orphans = [f for f in folders if f.orphaned]
    gone = _human_bytes(sum(f.bytes for f in orphans))
    print(f"folder:  {root}")
    print(f"models:  {len(folders)} ({_human_bytes(total)}), {len(orphans)} with their source "
          f"gone ({gone})")  # fmt: skip
    if folders:
        print(f"{'key':<8}  {'runtime':<11} {'weights':<8} {'layers':<9} {'size':>9}  "
              f"{'last used':<16}  model")  # fmt: skip
        for f in folders:
            print(_converted_line(f))
    return 0


def cmd_converted_prune(args: argparse.Namespace) -> int:
    from ..backends._converted_folders import list_converted, remove_converted, select

    _check_rules(args, "--orphaned (converted from a local folder that is gone)", args.orphaned)
    root = _converted_root(args)
    chosen = select(list_converted(root), args.unused_days, args.orphaned, args.all)
    return _prune(args, root, chosen, _converted_line, remove_converted, "converted models",
                  "each is converted again on its next use")  # fmt: skip


def _check_rules(args: argparse.Namespace, own_rule: str, own_value: bool) -> None:
    """A prune needs at least one rule, and a number of days that is not negative."""
    if args.unused_days is None and not own_value and not args.all:
        raise CLIError(f"say what to remove: --unused-days N (not used for N days), "
                       f"{own_rule} or --all")  # fmt: skip
    if args.unused_days is not None and args.unused_days < 0:
        raise CLIError(f"--unused-days {args.unused_days:g}: give a number of days >= 0")


def _prune(
    args: argparse.Namespace, root: Path, chosen: list[Any], line: Callable[[Any], str],
    remove: Callable[[Any], bool], noun: str, then: str,
) -> int:  # fmt: skip
    """List (``--dry-run``) or delete the chosen folders; exit status 1 when one could not
    be deleted (each gets an error line; the others are still deleted)."""
    if args.dry_run:
        for f in chosen:
            print(line(f))
        size = _human_bytes(sum(f.bytes for f in chosen))
        print(f"would remove {len(chosen)} {noun} ({size}) from {root}")
        return 0
    removed, failed = [], 0
    for f in chosen:
        try:
            if remove(f):
                removed.append(f)
        except OSError as exc:  # a read-only root, another user's folder
            failed += 1
            say(f"{PROG}: error: could not remove {f.path}: {exc.strerror or exc}")
    size = _human_bytes(sum(f.bytes for f in removed))
    print(f"removed {len(removed)} {noun} ({size}) from {root}; {then}")
    return 1 if failed else 0


# ------------------------------------------------------------------------- adapted
def _adapted_root(args: argparse.Namespace) -> Path:
    from ..adapt._folder import adapted_root

    return _dir_arg(args) or adapted_root()


def _adapted_line(f: Any) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(f.last_used))
    about = "-" if f.interrupted else f"{f.base}  {f.n_texts} texts, {f.n_classes} classes"
    return f"{f.key[:8]}  {f.state:<11} {_human_bytes(f.bytes):>9}  {when}  {about}"


def cmd_adapted_info(args: argparse.Namespace) -> int:
    from ..adapt._adapted_folders import list_adapted

    root = _adapted_root(args)
    folders = list_adapted(root)
    ready = [f for f in folders if not f.interrupted]
    stopped = [f for f in folders if f.interrupted and not f.running]
    print(f"folder:      {root}")
    print(f"encoders:    {len(ready)} ({_human_bytes(sum(f.bytes for f in ready))})")
    print(f"interrupted: {len(stopped)} ({_human_bytes(sum(f.bytes for f in stopped))}), "
          f"{len(folders) - len(ready) - len(stopped)} training now")  # fmt: skip
    if folders:
        print(f"{'key':<8}  {'state':<11} {'size':>9}  {'last used':<16}  base model, data")
        for f in folders:
            print(_adapted_line(f))
    return 0


def cmd_adapted_prune(args: argparse.Namespace) -> int:
    from ..adapt._adapted_folders import list_adapted, remove_adapted, select, sweep_trash

    _check_rules(args, "--interrupted (fine-tunes that did not finish)", args.interrupted)
    root = _adapted_root(args)
    chosen = select(list_adapted(root), args.unused_days, args.interrupted, args.all)

    def remove(f: Any) -> bool:
        if remove_adapted(f):
            return True
        if f.interrupted and f.path.is_dir():
            say(f"{PROG}: kept {f.path}: its fine-tune is running")
        return False

    if not args.dry_run:
        sweep_trash(root)
    return _prune(args, root, chosen, _adapted_line, remove, "adapted folders",
                  "a fitted estimator whose encoder was removed must be fitted again")  # fmt: skip


# --------------------------------------------------------------------------- embed
def _check_files(args: argparse.Namespace) -> tuple[Path, str, Path, str]:
    """Formats, option combinations and the output location; reads nothing, loads nothing."""
    in_path, out_path = Path(args.input).expanduser(), Path(args.output).expanduser()
    in_fmt = format_of(in_path, INPUT_FORMATS, "input")
    out_fmt = format_of(out_path, OUTPUT_FORMATS, "output")
    if out_fmt == "npy" and (args.keep_columns or args.tokens):
        flag = "--keep-columns" if args.keep_columns else "--tokens"
        raise CLIError(f"{flag} needs a table output (.parquet or .csv), not .npy")
    if args.wide and out_fmt != "parquet":
        raise CLIError("--wide applies to .parquet output only (.csv is always wide)")
    if args.tokens and (args.pooling != "mean" or args.normalize):
        raise CLIError("--pooling and --normalize apply to pooled vectors, not to --tokens")
    if out_fmt == "parquet":
        need_pyarrow("writing parquet")
    if in_path.resolve() == out_path.resolve():
        raise CLIError("OUTPUT must not be the INPUT file")
    if args.cache_dir is not None:
        cache_dir = Path(args.cache_dir).expanduser()
        if cache_dir.exists() and not cache_dir.is_dir():
            raise CLIError(f"--cache-dir {args.cache_dir!r} exists and is not a directory")
    calibration = args.calibration_file
    if calibration is not None and not Path(calibration).expanduser().is_file():
        raise CLIError(f"--calibration-file {calibration!r} is not a file")
    check_output_location(out_path)  # before the model: #18 item 9
    _check_model_name(args.model)
    return in_path, in_fmt, out_path, out_fmt


def _check_model_name(model: str) -> None:
    """A mistyped model folder is refused before scikit-learn and torch are imported
    (5.3 s before, issue 27); the rest of the model's checks come with fit."""
    from .._errors import ModelNotFoundError
    from .._model import check_model_name

    try:
        check_model_name(model)
    except ModelNotFoundError as exc:
        raise _model_error(exc, model) from None


def _calibration_texts(path: str | None) -> list[str] | None:
    """The non-empty lines of ``--calibration-file`` (UTF-8), or None."""
    if path is None:
        return None
    text = Path(path).expanduser().read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _make_vectorizer(args: argparse.Namespace, cache: Any, progress: bool | str) -> Any:
    from .._options import estimator_params

    kind = "tokens" if args.tokens else "pooled"
    params = estimator_params(args, kind)  # the declared options' flags
    params.update(
        preprocess=None if args.preprocess == NO_PREPROCESS else args.preprocess,
        calibration_texts=_calibration_texts(args.calibration_file), cache=cache,
        progress=progress,
    )  # fmt: skip
    if args.tokens:
        from .._token_vectorizer import XLMTTokenVectorizer

        vectorizer: Any = XLMTTokenVectorizer(output="frame", **params)
    else:
        from .._vectorizer import XLMTVectorizer

        vectorizer = XLMTVectorizer(**params)
    try:  # the estimator's own parameter constraints, checked without the model
        vectorizer._validate_params()
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    return vectorizer


def _read_input(args: argparse.Namespace, in_path: Path, in_fmt: str, out_fmt: str) -> Any:
    """The input table, with its column names and texts checked against the options."""
    df = read_table(in_path, in_fmt, args.text_column)
    columns = [str(c) for c in df.columns]
    if args.keep_columns and args.tokens:
        ours = set(TOKEN_COLUMNS) | ({"n_subwords"} if args.granularity == "word" else set())
        clash = sorted(set(columns) & ours)
        if clash:
            raise CLIError(
                f"--keep-columns: the input already has column(s) {clash} that the token "
                "table uses; rename them first"
            )
    elif args.keep_columns:
        ours = re.compile(
            rf"{WIDE_PREFIX}[0-9]+" if out_fmt == "csv" or args.wide else EMBEDDING_COLUMN
        )
        clash = sorted(c for c in columns if ours.fullmatch(c))
        if clash:
            raise CLIError(
                f"--keep-columns: the input already has column(s) {clash[:5]} that the output "
                "uses for the embedding; rename them first"
            )
    from ..flow._inputs import as_texts

    try:  # cheap check of missing/non-string values before any model is loaded
        as_texts(df[args.text_column], missing=args.missing)
    except (TypeError, ValueError) as exc:
        hint = " (CLI: --missing empty or --missing zeros)" if "missing=" in str(exc) else ""
        raise CLIError(f"column {args.text_column!r} of {str(in_path)!r}: {exc}{hint}") from None
    return df


def _model_error(exc: BaseException, model: str) -> CLIError:
    from .._model import _offline_hint, looks_like_path

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
    # The Python API's advice (XLMTVectorizer(model=...)) gives way to the CLI's own.
    message = str(exc).replace(_offline_hint(model), "").strip()
    return CLIError(f"{message}\n{PROG}: hint: {hint}")


def _encode(vectorizer: Any, texts: Any, model: str, cache: Any) -> Any | None:
    """``vectorizer.fit().transform(texts)``; None when interrupted (after saying so)."""
    from .._errors import ModelLoadError, NonFiniteOutputError, RuntimeCheckError

    try:
        with _quiet_transformers():
            try:
                vectorizer.fit()
            except (TypeError, ValueError) as exc:  # parameter validation against the model
                raise CLIError(str(exc)) from None
            except ImportError as exc:  # --backend without its runtime: the message names the pip
                raise CLIError(str(exc)) from None
            with _reported_warnings():
                return vectorizer.transform(texts)
    except ModelLoadError as exc:
        raise _model_error(exc, model) from None
    except (ValueError, RuntimeCheckError, NonFiniteOutputError) as exc:
        # e.g. --truncation error with a long text; a runtime that failed its self-check or
        # returned NaN: the message says what happened and what to do, no traceback
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        if cache is None:
            say(f"{PROG}: interrupted; nothing was written (use --cache-dir to resume)")
        else:
            say(
                f"{PROG}: interrupted; nothing was written, {cache.stats.entries} vectors are "
                "in the cache: run the same command again to encode only the rest"
            )
        return None


def _write_result(
    args: argparse.Namespace, result: Any, df: Any, out_path: Path, out_fmt: str, dim: int
) -> str:
    """Write the output file; returns its shape, in words."""
    try:
        if args.tokens:
            table = token_table(result, df, args.keep_columns)
            write_tokens(out_path, out_fmt, table, dim, wide=args.wide)
            return f"{len(table)} token rows x {dim}"
        kept = df if args.keep_columns else None
        write_output(out_path, out_fmt, result, kept=kept, wide=args.wide)
        return f"{result.shape[0]} x {result.shape[1]}"
    except OSError as exc:
        raise CLIError(f"cannot write {str(out_path)!r}: {exc}") from None


def cmd_embed(args: argparse.Namespace) -> int:
    in_path, in_fmt, out_path, out_fmt = _check_files(args)
    cache = None
    if args.cache_dir is not None:
        from ..store._cache import DEFAULT_FILENAME, EmbeddingCache

        # EmbeddingCache creates missing folders itself, private (0o700), on first use.
        cache = EmbeddingCache(Path(args.cache_dir).expanduser() / DEFAULT_FILENAME)
    # Off a terminal (a log, a batch job) a line every ~10 s instead of a bar (issue 27).
    progress = args.progress if args.progress is not None else (
        True if sys.stderr.isatty() else "log"
    )  # fmt: skip
    df = _read_input(args, in_path, in_fmt, out_fmt)  # a wrong column fails before sklearn loads
    vectorizer = _make_vectorizer(args, cache, progress)

    start = time.perf_counter()
    result = _encode(vectorizer, df[args.text_column], args.model, cache)
    if result is None:
        return 130
    elapsed = time.perf_counter() - start
    shape = _write_result(args, result, df, out_path, out_fmt, vectorizer.n_features_out_)
    cached = ""
    if cache is not None:
        st = cache.stats
        cached = f", {st.hits} distinct texts from the cache, {st.misses} encoded"
    ran = ", ".join(dict.fromkeys(e.describe() for e in vectorizer._encoders()))  # after checks
    say(f"{PROG}: wrote {out_path} ({shape}) in {elapsed:.1f} s with {ran}{cached}")
    return 0
