"""The embedding table's format, shared by Spark and Dask: keys, row checks, layout, commits.

An embedding table is a folder that the engine itself reads and writes (a local
path, HDFS, S3: whatever the engine's file system reaches)::

    <table>/config=<fingerprint>/batch=<UTC time>-<id>/part-*.parquet
                                                      /_XLMT_COMMIT.json

* ``fingerprint`` is the per-text cache's fingerprint of the fitted featurizer
  (:meth:`~xlmt_sklearn._base.ModelFeaturizerMixin._key_fingerprint`: model
  content, every vector-changing option, the encoder's precision), so the
  vectors of different models or options never share a folder.
* A row is ``key`` (hex sha256 of ``fingerprint + "\\0" + text``, the cache's
  :func:`~xlmt_sklearn.store._keys.make_keys` over the raw text, computable in
  the JVM), ``vector`` (float32) and ``check`` (a 64-bit digest of fingerprint,
  key and vector bytes). A row whose check fails (a damaged file, a file copied
  from another configuration's folder) is ignored and its text encoded again.
* Each job appends one new batch folder and never touches another. The batch is
  visible only once its commit marker names its files and their sizes: a killed
  job, a failed or speculative task attempt, or a file torn or replaced later
  is never read. Two jobs appending at once write two batches; a key may then
  be stored twice, with equal vectors, and readers keep one copy.
* :func:`plan_compaction` merges the visible batches into one; the old ones are
  marked as replaced by the new marker and deleted only after ``retain_s``, so
  readers that listed them earlier still find their files.

The file system is reached through :class:`TableFS` (Hadoop's for Spark, fsspec's
for Dask); this module imports neither engine.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .._version import __version__

__all__ = [
    "COMMIT",
    "FORMAT",
    "KEY",
    "TUNING",
    "Lookup",
    "TableFS",
    "TableReport",
    "TableTuning",
    "TableWarning",
    "committed_files",
    "config_dir",
    "new_batch",
    "plan_compaction",
    "row_checks",
    "table_fingerprint",
    "text_keys",
    "verify_arrow",
    "verify_rows",
    "visible_files",
    "write_commit",
]

FORMAT = 1
KEY, VECTOR, CHECK = "key", "vector", "check"
COMMIT = "_XLMT_COMMIT.json"
_BATCH = "batch="
_CONFIG = "config="
_STAMP = "%Y%m%dT%H%M%S"


@dataclass
class TableTuning:
    """The embedding table's tunables, for both engines.

    Attributes
    ----------
    broadcast_bytes : int
        The largest table (bytes of its visible files) whose rows for the input are
        kept from the update's check, collected to the driver (Spark) or client
        (Dask) and joined back to every input row by a lookup that leaves the input
        where it is: no shuffle, nothing checked twice, no sort (docs/spark.md,
        "Embed only what is new"). Larger tables, and Spark before 4.0 (no Arrow
        tables in ``createDataFrame``), join in the cluster and sort by row. 0
        always joins in the cluster.
    """

    broadcast_bytes: int = 256 << 20


#: The embedding table's tunables for this process.
TUNING = TableTuning()
_INDEX_LOCK = threading.Lock()


@dataclass(frozen=True)
class Lookup:
    """The checked vectors of an input's distinct keys, held by the driver or client."""

    keys: list[str]
    matrix: np.ndarray
    #: The keys' positions (a dict), built by the first :meth:`positions` call in a
    #: process and kept with this object there (not pickled).
    _index: list = field(default_factory=list, init=False, repr=False, compare=False)

    def positions(self, keys: Sequence[Any]) -> np.ndarray:
        """Each of ``keys``' row in :attr:`matrix`, -1 where it has none (a None key
        too). The index is built once per process holding this lookup (a Dask worker runs
        many partitions against one scattered copy), not once per call."""
        if not self._index:
            with _INDEX_LOCK:  # the threads of one worker share the copy
                if not self._index:
                    self._index.append({key: i for i, key in enumerate(self.keys)})
        index = self._index[0]
        return np.fromiter((index.get(k, -1) for k in keys), dtype=np.intp, count=len(keys))

    def __getstate__(self) -> dict:
        return {"keys": self.keys, "matrix": self.matrix}

    def __setstate__(self, state: dict) -> None:
        for name, value in {**state, "_index": []}.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_arrow(cls, arrow: Any, dim: int) -> Lookup:
        """From an Arrow table of KEY and VECTOR; one copy of each key (equal by construction)."""
        vectors = arrow.column(VECTOR).combine_chunks()
        matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return cls.from_rows(arrow.column(KEY).to_pylist(), matrix.reshape(len(arrow), dim))

    @classmethod
    def from_rows(cls, keys: Sequence[str], matrix: np.ndarray) -> Lookup:
        """From keys and their vectors' rows; one copy of each key (equal by construction)."""
        unique, first = np.unique(np.asarray(keys, dtype=object), return_index=True)
        return cls(unique.tolist(), np.asarray(matrix, dtype=np.float32)[first])


class TableWarning(UserWarning):
    """An embedding table held rows or files that could not be used (they were re-encoded)."""


@dataclass
class TableReport:
    """What one update of an embedding table did.

    Attributes
    ----------
    table : str
        The table's root folder.
    fingerprint : str
        The featurizer's configuration (its folder is ``config=<fingerprint>``).
    found : int
        Distinct input texts whose vectors the table already held (checked).
    encoded : int
        Distinct texts encoded by this job and appended.
    bad_rows : int
        Stored rows of the input's texts that failed their check (ignored and
        re-encoded).
    skipped_files : list of str
        Files left out, each with the reason (torn, missing, unreadable marker).
    batch : str or None
        The batch folder this job appended, or None when nothing was new.
    seconds : float
        Wall time of the update.
    """

    table: str
    fingerprint: str
    found: int = 0
    encoded: int = 0
    bad_rows: int = 0
    skipped_files: list[str] = field(default_factory=list)
    batch: str | None = None
    seconds: float = 0.0

    @property
    def problems(self) -> int:
        """Bad rows plus skipped files: nonzero means the table was damaged."""
        return self.bad_rows + len(self.skipped_files)

    def __str__(self) -> str:
        line = (
            f"embedding table {self.table}: {self.found} texts found, {self.encoded} encoded "
            f"in {self.seconds:.1f} s"
        )
        if self.problems:
            line += (
                f"; ignored and re-encoded: {self.bad_rows} rows that failed their check, "
                f"{len(self.skipped_files)} files ({'; '.join(self.skipped_files[:3])}). "
                "compact_table drops them from the table"
            )
        return line


# ------------------------------------------------------------------- rows
def text_keys(fingerprint: str, texts: Sequence[str]) -> list[str]:
    """Hex keys of ``texts``: the cache's ``sha256(fingerprint + "\\0" + text)``.

    Spark computes the same with ``sha2(concat(fingerprint, "\\0", text), 256)``.
    """
    from ..store._keys import make_keys

    return [k.hex() for k in make_keys(fingerprint, texts)]


def row_checks(fingerprint: str, keys: Sequence[str], vectors: Any) -> np.ndarray:
    """The ``check`` of each row: a signed 64-bit blake2b of fingerprint, key and vector."""
    prefix = fingerprint.encode()
    return np.fromiter(
        (
            _check(prefix, k, np.ascontiguousarray(v, dtype="<f4"))
            for k, v in zip(keys, vectors, strict=True)
        ),
        dtype=np.int64,
        count=len(keys),
    )


def _check(prefix: bytes, key: str, vector: np.ndarray) -> int:
    digest = hashlib.blake2b(prefix + key.encode() + vector.tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def verify_rows(
    fingerprint: str, dim: int | None, keys: Sequence[Any], vectors: Sequence[Any], checks: Any
) -> np.ndarray:
    """True where a stored row is whole: ``dim`` finite floats (any length for None)
    matching its check. ``checks`` should be integers (a null check arrives as 0); one
    that is not (NaN, text) fails its row."""
    prefix = fingerprint.encode()
    ok = np.zeros(len(keys), dtype=bool)
    for i, (k, v, c) in enumerate(zip(keys, vectors, checks, strict=True)):
        if not isinstance(k, str) or v is None:
            continue
        arr = np.ascontiguousarray(v, dtype="<f4")
        if arr.ndim != 1 or (dim is not None and len(arr) != dim) or not np.isfinite(arr).all():
            continue
        try:
            ok[i] = _check(prefix, k, arr) == int(c)
        except (TypeError, ValueError, OverflowError):
            continue
    return ok


def verify_arrow(fingerprint: str, dim: int | None, rows: Any) -> np.ndarray:
    """:func:`verify_rows` on an Arrow table of stored rows (KEY, VECTOR, CHECK), as the
    driver or client receives them: each vector is a view into the column's floats (a
    null float is NaN, so its row fails), without a Python list per row."""
    vectors = rows.column(VECTOR).combine_chunks()
    values = vectors.values.to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    offsets = vectors.offsets.to_numpy()
    whole = vectors.is_valid().to_numpy(zero_copy_only=False)
    views = [values[offsets[i] : offsets[i + 1]] if whole[i] else None for i in range(len(vectors))]
    checks = rows.column(CHECK)
    present = ~checks.is_null().to_numpy(zero_copy_only=False)  # a null check fails its row
    checks = checks.fill_null(0).to_numpy(zero_copy_only=False)  # int64, not float64 via NaN
    return present & verify_rows(fingerprint, dim, rows.column(KEY).to_pylist(), views, checks)


def table_fingerprint(est: Any) -> str:
    """The configuration a fitted pooled featurizer's rows are stored under: its cache
    fingerprint (model content, vector-changing options, the encoder's precision)."""
    return est._key_fingerprint(est._encoders())


# ----------------------------------------------------------------- layout
class TableFS(ABC):
    """The few file operations a table needs, on the engine's own file system."""

    @abstractmethod
    def listdir(self, path: str) -> list[tuple[str, bool, int]]:
        """``(name, is_dir, size)`` of each entry of ``path``; empty when it is missing."""

    @abstractmethod
    def read_text(self, path: str) -> str:
        """A small file's text."""

    @abstractmethod
    def write_text(self, path: str, text: str) -> None:
        """Create a small file (its readers only trust it once it is whole: JSON)."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove a folder and everything in it (no error when it is gone)."""


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def config_dir(table: str, fingerprint: str) -> str:
    return join(table, _CONFIG + fingerprint)


def new_batch(table: str, fingerprint: str) -> str:
    """A fresh batch folder for one job's appends (named by UTC time and a random id)."""
    stamp = datetime.now(timezone.utc).strftime(_STAMP)
    return join(config_dir(table, fingerprint), f"{_BATCH}{stamp}-{uuid.uuid4().hex[:12]}")


def write_commit(
    fs: TableFS, batch: str, fingerprint: str, rows: int, replaces: Sequence[str] = ()
) -> dict[str, int]:
    """Make ``batch`` visible: its marker names every data file and its size."""
    files = {
        name: size
        for name, is_dir, size in fs.listdir(batch)
        if not is_dir and not name.startswith(("_", "."))
    }
    marker = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "rows": int(rows),
        "files": files,
        "replaces": list(replaces),
        "created": time.time(),
        "writer": f"xlmt_sklearn {__version__}",
    }
    fs.write_text(join(batch, COMMIT), json.dumps(marker, sort_keys=True))
    return files


def committed_files(fs: TableFS, batch: str) -> list[str]:
    """The data files that ``batch``'s marker names (a batch this process just committed)."""
    marker = json.loads(fs.read_text(join(batch, COMMIT)))
    return [join(batch, name) for name in sorted(marker["files"])]


def _batches(
    fs: TableFS, table: str, fingerprint: str, report: TableReport | None = None
) -> dict[str, dict | None]:
    """Batch folder name -> its marker (None: not committed yet, or not usable).

    No marker is a job in progress or a killed one: nothing to report. A torn
    marker, or one written for another configuration (a batch copied into the
    wrong folder), is reported.
    """
    out: dict[str, dict | None] = {}
    folder = config_dir(table, fingerprint)
    names = {n for n, d, _ in fs.listdir(folder) if d and n.startswith(_BATCH)}
    for name in sorted(names):
        out[name] = None
        entries = {n for n, d, _ in fs.listdir(join(folder, name)) if not d}
        if COMMIT not in entries:
            continue
        try:
            marker = json.loads(fs.read_text(join(folder, name, COMMIT)))
            files = marker["files"]
            assert isinstance(files, dict)
        except Exception as exc:
            why = f"unreadable commit marker: {type(exc).__name__}"
        else:
            if marker.get("format") == FORMAT and marker.get("fingerprint") == fingerprint:
                out[name] = marker
                continue
            why = "committed for another configuration or format"
        if report is not None:
            report.skipped_files.append(f"{join(folder, name)} ({why})")
    return out


def visible_files(
    fs: TableFS,
    table: str,
    fingerprint: str,
    report: TableReport | None = None,
    sizes: dict[str, int] | None = None,
) -> tuple[list[str], list[str]]:
    """The data files readers use, and the committed batches they come from.

    A batch counts once its marker is whole and no later compaction replaced
    it; a file counts when it still has the size its marker recorded (a torn
    or replaced file is skipped and named in ``report``). ``sizes`` (optional)
    receives each visible file's size in bytes.
    """
    batches = _batches(fs, table, fingerprint, report)
    replaced = {r for m in batches.values() if m for r in m.get("replaces", ())}
    folder = config_dir(table, fingerprint)
    files, live = [], []
    for name in sorted(batches):
        marker = batches[name]
        if marker is None or name in replaced:
            continue
        live.append(name)
        actual = {n: s for n, d, s in fs.listdir(join(folder, name)) if not d}
        for fname, size in sorted(marker["files"].items()):
            path = join(folder, name, fname)
            if actual.get(fname) == size:
                files.append(path)
                if sizes is not None:
                    sizes[path] = size
            elif report is not None:
                why = (
                    "missing"
                    if fname not in actual
                    else f"{actual[fname]} bytes, not the {size} committed"
                )
                report.skipped_files.append(f"{path} ({why})")
    return files, live


@dataclass
class Compaction:
    """What :func:`plan_compaction` found: batches to merge, and leftovers to delete."""

    merge: list[str]
    delete: list[str]


def plan_compaction(
    fs: TableFS, table: str, fingerprint: str, retain_s: float, now: float | None = None
) -> Compaction:
    """Batches to merge (the visible ones), and folders old enough to delete.

    Deleted: batches that a compaction replaced at least ``retain_s`` ago, and
    uncommitted batches (killed jobs) created at least ``retain_s`` ago.
    """
    now = time.time() if now is None else now
    batches = _batches(fs, table, fingerprint)
    replaced_at: dict[str, float] = {}
    for marker in batches.values():
        for r in (marker or {}).get("replaces", ()):
            replaced_at[r] = max(replaced_at.get(r, 0.0), float(marker["created"]))
    merge, delete = [], []
    for name, marker in sorted(batches.items()):
        if name in replaced_at:
            if now - replaced_at[name] >= retain_s:
                delete.append(name)
        elif marker is None:
            if now - _created(name) >= retain_s:
                delete.append(name)
        else:
            merge.append(name)
    return Compaction(merge, delete)


def _created(batch_name: str) -> float:
    """A batch's creation time from its name (never from the file system's clock)."""
    try:
        stamp = batch_name[len(_BATCH) :].split("-")[0]
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return 0.0  # not ours to date: old enough


def fingerprints(fs: TableFS, table: str) -> list[str]:
    """The configurations a table holds."""
    return sorted(
        name[len(_CONFIG) :]
        for name, is_dir, _ in fs.listdir(table)
        if is_dir and name.startswith(_CONFIG)
    )
