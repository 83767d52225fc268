"""Table I/O for the command line: read texts from a file, write vectors to one.

Inputs are chosen by extension (:data:`INPUT_FORMATS`: txt, csv, tsv, jsonl,
parquet) and read into a pandas DataFrame by :func:`read_table`. Outputs
(:data:`OUTPUT_FORMATS`: parquet, npy, csv) are written by
:func:`write_output` and :func:`write_tokens` through :func:`atomic_write`,
so ``OUTPUT`` is either untouched or completely written.
:func:`check_output_location` tells, before any work starts, whether
``OUTPUT`` can be written at all.

No command line parsing here, and no model: pandas and pyarrow are imported
inside the functions that need them. User errors (a missing file, an
unreadable format, an unwritable folder) raise :class:`TableIOError` with a
message meant to be printed as is.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "EMBEDDING_COLUMN",
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "WIDE_PREFIX",
    "TableIOError",
    "atomic_write",
    "check_output_location",
    "format_of",
    "need_pyarrow",
    "read_table",
    "remove_stale_temps",
    "token_table",
    "write_output",
    "write_tokens",
]

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

# Every text input is decoded as UTF-8 with an optional byte order mark
# ("utf-8-sig"): Windows tools write one, and it must not end up inside the
# first text (txt) or break the first JSON object (jsonl), #18 item 8.
_ENCODING = "utf-8-sig"


class TableIOError(ValueError):
    """A file that can't be read or written as asked; the message says why."""


# ------------------------------------------------------------------ formats
def format_of(path: Path, table: dict[str, str], what: str) -> str:
    """The format of ``path`` according to its extension.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    table : dict of str to str
        Extension (lower case, with the dot) to format name, e.g.
        :data:`INPUT_FORMATS`.
    what : str
        ``"input"`` or ``"output"``, for the message.

    Returns
    -------
    str
        The format name.

    Raises
    ------
    TableIOError
        When the extension is not in ``table``.
    """
    fmt = table.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(set(table)))
        suffix = path.suffix or "(no extension)"
        raise TableIOError(
            f"unknown {what} format {suffix!r} for {str(path)!r}; use one of: {known}"
        )
    return fmt


def need_pyarrow(purpose: str) -> None:
    """Raise :class:`TableIOError` with the install hint when pyarrow is missing.

    Parameters
    ----------
    purpose : str
        What needs it, e.g. ``"writing parquet"``.
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise TableIOError(
            f"{purpose} needs pyarrow: pip install 'xlmt-sklearn[parquet]'"
        ) from None


# ------------------------------------------------------------------ reading
def read_table(path: Path, fmt: str, text_column: str) -> Any:
    """Read ``path`` into a DataFrame whose ``text_column`` holds the texts.

    Parameters
    ----------
    path : pathlib.Path
        The input file, UTF-8 (a leading byte order mark is dropped).
    fmt : {"csv", "tsv", "jsonl", "parquet", "txt"}
        Its format. ``txt`` is one text per line (``str.splitlines``), in a
        column named ``text_column``; an empty line is the empty text.
    text_column : str
        The column with the texts; in csv/tsv only empty fields of this
        column count as missing (``"NA"`` or ``"null"`` stay texts).

    Returns
    -------
    pandas.DataFrame
        With a default integer index (a stored index becomes a column).

    Raises
    ------
    TableIOError
        When the file can't be read or parsed, or lacks ``text_column``.
    """
    import pandas as pd

    if not path.exists():
        raise TableIOError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise TableIOError(f"input {str(path)!r} is a directory, not a file")
    if fmt == "parquet":
        need_pyarrow("reading parquet")
    try:
        df = _read_frame(path, fmt, text_column)
    except TableIOError:
        raise
    except UnicodeDecodeError as exc:
        raise TableIOError(f"cannot read {str(path)!r}: it is not UTF-8 text ({exc})") from None
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableIOError(f"cannot read {str(path)!r} as {fmt}: {detail}") from None
    _check_column([str(c) for c in df.columns], text_column, path)
    if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
        df = df.reset_index()  # e.g. a pandas index stored in parquet: keep it as a column
    return df


def _read_frame(path: Path, fmt: str, text_column: str) -> Any:
    import pandas as pd

    if fmt == "txt":
        return pd.DataFrame({text_column: path.read_text(encoding=_ENCODING).splitlines()})
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        header = pd.read_csv(path, sep=sep, nrows=0, encoding=_ENCODING)
        _check_column(list(header.columns), text_column, path)
        return pd.read_csv(
            path, sep=sep, encoding=_ENCODING, dtype={text_column: object},
            keep_default_na=False, na_values={text_column: [""]},
        )  # fmt: skip
    if fmt == "jsonl":
        return _read_jsonl(path)
    return pd.read_parquet(path)


def _read_jsonl(path: Path) -> Any:
    """One JSON object per line, parsed with :mod:`json`.

    pandas' reader silently drops lone surrogate escapes such as ``"\\ud800"``; here they
    become U+FFFD, as the vectorizer does with any lone surrogate (so the vector is the same
    and every column stays writable as UTF-8).
    """
    import json

    import pandas as pd

    from ..flow._inputs import replace_surrogates

    records = []
    # Split on "\n" only: U+2028 and friends may appear raw inside JSON strings.
    for number, line in enumerate(path.read_text(encoding=_ENCODING).split("\n"), start=1):
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
        raise TableIOError(
            f"{str(path)!r} has no column {name!r}; available columns: {shown}{more}. "
            "Choose one with --text-column."
        )


# ------------------------------------------------------------ atomic writes
def _temp_name(path: Path) -> Path:
    """``.<name>.<pid>-<8 hex>.tmp`` beside ``path`` (see :func:`remove_stale_temps`)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists here; True whenever that can't be told."""
    if pid == os.getpid() or os.name != "posix":  # on Windows os.kill would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` left behind.

    :func:`atomic_write` deletes its temporary file on any exception, but a
    SIGKILL (or a power cut) leaves it: a hidden ``.<name>.<pid>-<hex>.tmp``
    beside ``path`` (#18 item 8). Only files of exactly that pattern, for
    this ``path``, whose writer process no longer exists, are removed; a
    concurrent writer's file is left alone.

    Parameters
    ----------
    path : pathlib.Path
        The output file whose leftovers to remove.

    Returns
    -------
    list of pathlib.Path
        The files removed.

    Notes
    -----
    The writer's liveness is judged by its process id on this machine, so
    two machines writing the same ``path`` on a shared file system could
    remove each other's files (and then lose that write, never the
    previous output): give each machine its own output.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.([0-9]+)-[0-9a-f]{{8}}\.tmp")
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        stale = path.parent / name
        with contextlib.suppress(OSError):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
                removed.append(stale)
    return removed


def check_output_location(path: Path) -> None:
    """Check, before any work, that ``path`` can be written.

    The nearest existing folder on the way to ``path`` must be a folder in
    which a file can be created (a probe file is created and deleted at
    once; missing folders below it are created only when the output is
    written), and ``path`` must not be a folder. Stale temporary files of
    earlier killed runs are removed (:func:`remove_stale_temps`).

    Parameters
    ----------
    path : pathlib.Path
        The output file.

    Raises
    ------
    TableIOError
        When ``path`` can't be written, with the reason.
    """
    if path.is_dir():
        raise TableIOError(f"cannot write {str(path)!r}: it is a directory")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise TableIOError(f"cannot write {str(path)!r}: {str(folder)!r} is not a directory")
    probe = folder / _temp_name(path).name
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TableIOError(
            f"cannot write {str(path)!r}: no file can be created in {str(folder)!r} ({reason})"
        ) from None
    if folder == path.parent:
        remove_stale_temps(path)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path``; on success move it onto ``path``.

    The temporary file lives in the same directory (so ``os.replace`` is an
    atomic rename), is flushed and fsynced before the rename, and is deleted
    if anything fails: ``path`` is either untouched or completely written.
    Missing folders are created first, and files that killed earlier writers
    left behind are removed (:func:`remove_stale_temps`).

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
    remove_stale_temps(path)
    tmp = _temp_name(path)
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


# ------------------------------------------------------------------ writing
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
    kept : pandas.DataFrame or None, default=None
        Input columns to write first (parquet and csv only).
    wide : bool, default=False
        Parquet: one column per dimension instead of a fixed-size list column
        (csv is always wide).
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

    Raises
    ------
    TableIOError
        When a kept input column has the name of a token column.
    """
    import pandas as pd

    table = frame.rename_axis("row").reset_index()
    if not keep_columns:
        return table
    clash = sorted(set(map(str, df.columns)) & set(map(str, table.columns)))
    if clash:
        raise TableIOError(
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
    wide : bool, default=False
        Parquet: one column per dimension instead of a fixed-size list column
        (csv output is always wide).
    """
    import numpy as np

    vectors = table[EMBEDDING_COLUMN].to_list()
    mat = np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
    write_output(path, fmt, mat, kept=table.drop(columns=[EMBEDDING_COLUMN]), wide=wide)
