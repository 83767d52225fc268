"""The embedding table on Dask: the Spark plane's twin (:mod:`._spark`), same format.

:func:`update` computes at once: a global ``drop_duplicates`` of the input's keys
(persisted: the input is read and keyed once), a merge with the table's checked
rows, the encoding of the missing texts partition by partition, one new batch
written with ``to_parquet`` and then committed (no batch at all when nothing is
missing). :func:`join_back` is lazy and keeps the input's order, index and
divisions. For a table of at most ``TUNING.broadcast_bytes``, :func:`embed`
collects the vectors the update checked and wrote to the client, and each input
partition looks its rows up there; a larger table's rows are numbered per
partition, merged with the table, and sorted back into their partitions by number.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._distributed import check_no_nulls, set_torch_threads
from ._format import (
    CHECK,
    KEY,
    TUNING,
    VECTOR,
    Lookup,
    TableFS,
    TableReport,
    TableWarning,
    committed_files,
    config_dir,
    fingerprints,
    join,
    new_batch,
    plan_compaction,
    row_checks,
    table_fingerprint,
    text_keys,
    verify_rows,
    visible_files,
    write_commit,
)

__all__ = ["FsspecFS", "Plan", "compact", "embed", "join_back", "plan", "update"]

logger = logging.getLogger("xlmt_sklearn.table")

_KEY, _TEXT, _ROW, _INDEX = "__xlmt_key", "__xlmt_text", "__xlmt_row", "__xlmt_index"
_SHIFT = 32  # row number = partition << 32 | position: partitions up to 4 billion rows


class FsspecFS(TableFS):
    """:class:`TableFS` on fsspec (local, S3, GCS, HDFS through their fsspec packages)."""

    def __init__(self, url: str):
        from fsspec.core import url_to_fs

        self.fs, self.root = url_to_fs(url)
        self.protocol = url.split("://")[0] + "://" if "://" in url else ""

    def listdir(self, path: str) -> list[tuple[str, bool, int]]:
        path = self.fs._strip_protocol(path)
        if not self.fs.exists(path):
            return []
        return [
            (e["name"].rstrip("/").rsplit("/", 1)[-1], e["type"] == "directory",
             int(e["size"] or 0))
            for e in self.fs.ls(path, detail=True, refresh=True)
        ]  # fmt: skip

    def read_text(self, path: str) -> str:
        with self.fs.open(self.fs._strip_protocol(path), "rb") as f:
            return f.read().decode("utf-8")

    def write_text(self, path: str, text: str) -> None:
        path = self.fs._strip_protocol(path)
        parent, name = path.rsplit("/", 1)
        tmp = f"{parent}/_{name}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(text.encode("utf-8"))
        self.fs.mv(tmp, path)  # a rename where the file system has one

    def delete(self, path: str) -> None:
        path = self.fs._strip_protocol(path)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


@dataclass
class Plan:
    """What one call needs: the keyed input, the estimator and its configuration."""

    fs: FsspecFS
    table: str
    fingerprint: str
    dim: int
    est: Any
    keyed: Any  # a Dask frame: _KEY, _TEXT, with the input's index and divisions
    column: str | None


def plan(series: Any, est: Any, table: Any, column: str | None) -> Plan:
    """Check the arguments and key each row (lazily, on the workers)."""
    import pandas as pd

    if not isinstance(table, str) or not table.strip():
        raise TypeError(f"table must be a folder path or URI (a str); got {table!r}.")
    fp = table_fingerprint(est)
    meta = pd.DataFrame(
        {_KEY: pd.Series([], dtype=object), _TEXT: pd.Series([], dtype=object)},
        index=series._meta.index,
    )
    keyed = series.map_partitions(_key_partition, est, fp, column, meta=meta)
    fs = FsspecFS(table)
    return Plan(fs, table.rstrip("/"), fp, int(est.n_features_out_), est, keyed, column)


def _key_partition(
    part: Any, est: Any, fp: str, column: str | None, partition_info: dict | None = None
) -> Any:
    """One partition's texts (missing policy applied) and keys; None key for a zeros row."""
    import pandas as pd

    values = part.astype(object).tolist()
    where = "in this partition" if partition_info is None else (
        f"in partition {partition_info['number']}")  # fmt: skip
    check_no_nulls(est, values, column, where=where, drop_hint="ddf.dropna(subset=[...])")
    null = pd.isna(part).to_numpy()
    if est.missing == "empty":
        values = ["" if n else v for v, n in zip(values, null, strict=True)]
        null = np.zeros(len(values), dtype=bool)
    texts = [None if n else str(v) for v, n in zip(values, null, strict=True)]
    live = [t for t in texts if t is not None]
    keys = iter(text_keys(fp, live))
    return pd.DataFrame(
        {_KEY: [None if t is None else next(keys) for t in texts], _TEXT: texts},
        index=part.index,
    )


def _stored(files: list[str], fs: FsspecFS) -> Any:
    import dask.dataframe as dd
    import pandas as pd

    if not files:
        empty = pd.DataFrame({KEY: pd.Series([], dtype=object), VECTOR: pd.Series([], dtype=object),
                              CHECK: pd.Series([], dtype="int64")})  # fmt: skip
        return dd.from_pandas(empty, npartitions=1)
    return dd.read_parquet([fs.protocol + f for f in files], columns=[KEY, VECTOR, CHECK])


def _checked(p: Plan, files: list[str], keys: Any) -> Any:
    """The table's rows for ``keys`` (a frame with KEY), with ``ok`` (their check)."""
    stored = _stored(files, p.fs)
    keys = keys.astype({KEY: stored._meta[KEY].dtype})  # object vs Arrow strings: one dtype
    return _check(p, stored.merge(keys, on=KEY, how="inner"))


def _check(p: Plan, rows: Any) -> Any:
    """``rows`` (KEY, VECTOR, CHECK) as KEY, VECTOR and ``ok`` (their check)."""
    import pandas as pd

    meta = pd.DataFrame({KEY: pd.Series([], dtype=object), VECTOR: pd.Series([], dtype=object),
                         "ok": pd.Series([], dtype=bool)})  # fmt: skip
    return rows.map_partitions(_check_partition, p.fingerprint, p.dim, meta=meta)


def _check_partition(part: Any, fp: str, dim: int | None) -> Any:
    import pandas as pd

    checks = part[CHECK].fillna(0).astype("int64").tolist()
    ok = verify_rows(fp, dim, part[KEY].tolist(), part[VECTOR].tolist(), checks)
    return pd.DataFrame({KEY: part[KEY], VECTOR: part[VECTOR], "ok": ok}, index=part.index)


def update(p: Plan, *, num_threads: int | None = None) -> TableReport:
    """Encode the input's distinct texts that the table lacks and append them as a batch."""
    return _update(p, num_threads, collect=False)[0]


def embed(p: Plan, names: list[str], divisions: Any, num_threads: int | None) -> Any:
    """:func:`update`, then every input row's vector (lazy, in input order and divisions)."""
    _, lookup = _update(p, num_threads, collect=True)
    return join_back(p, names, divisions, lookup)


def _update(p: Plan, num_threads: int | None, collect: bool) -> tuple[TableReport, Lookup | None]:
    """:func:`update`; with ``collect``, also the checked vectors of every distinct key of
    the input when the table is small enough to hold them on the client."""
    import dask

    start = time.perf_counter()
    report = TableReport(p.table, p.fingerprint)
    sizes: dict[str, int] = {}
    files, _ = visible_files(p.fs, p.table, p.fingerprint, report, sizes)
    collect = collect and sum(sizes.values()) <= TUNING.broadcast_bytes
    wanted = p.keyed.dropna(subset=[_KEY]).drop_duplicates(subset=[_KEY]).persist()
    checked = _checked(p, files, wanted[[_KEY]].rename(columns={_KEY: KEY}))
    checked = checked[[KEY, VECTOR, "ok"] if collect else [KEY, "ok"]].persist()
    n_wanted, found, bad = dask.compute(
        wanted.shape[0], checked[checked["ok"]][KEY].nunique(), (~checked["ok"]).sum()
    )
    report.found, report.bad_rows = int(found), int(bad)
    if report.found < int(n_wanted):  # else nothing to encode: no append at all
        good = checked[checked["ok"]][[KEY]].rename(columns={KEY: _KEY})
        good = good.astype({_KEY: wanted._meta[_KEY].dtype})
        marked = wanted.merge(good.drop_duplicates(subset=[_KEY]), on=_KEY, how="left",
                              indicator=True)  # fmt: skip
        missing = marked[marked["_merge"] == "left_only"][[_KEY, _TEXT]]
        report.batch, report.encoded = _append(p, missing, num_threads)
    lookup = None
    if collect and (report.found + report.encoded) * p.dim * 4 <= TUNING.broadcast_bytes:
        lookup = _collect(p, checked[checked["ok"]][[KEY, VECTOR]], report.batch)
    report.seconds = time.perf_counter() - start
    logger.info("%s", report)
    if report.problems:
        warnings.warn(str(report), TableWarning, stacklevel=4)
    return report, lookup


def _collect(p: Plan, found: Any, batch: str | None) -> Lookup:
    """``found`` (rows checked already) and the new batch's rows (checked now), on the
    client as one matrix."""
    import dask.dataframe as dd

    rows = found
    if batch is not None:
        fresh = _check(p, _stored(committed_files(p.fs, batch), p.fs))
        rows = dd.concat([rows, fresh[fresh["ok"]][[KEY, VECTOR]]])
    frame = rows.compute()
    matrix = np.zeros((len(frame), p.dim), dtype=np.float32)
    for i, v in enumerate(frame[VECTOR]):
        matrix[i] = v
    return Lookup.from_rows(frame[KEY].tolist(), matrix)


def _append(p: Plan, missing: Any, num_threads: int | None) -> tuple[str | None, int]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = pd.DataFrame({KEY: pd.Series([], dtype=object), VECTOR: pd.Series([], dtype=object),
                         CHECK: pd.Series([], dtype="int64")})  # fmt: skip
    rows = missing.map_partitions(_encode_partition, p.est, p.fingerprint, num_threads, meta=meta)
    batch = new_batch(p.table, p.fingerprint)
    schema = pa.schema([(KEY, pa.string()), (VECTOR, pa.list_(pa.float32())), (CHECK, pa.int64())])
    rows.to_parquet(p.fs.protocol + batch, write_index=False, schema=schema,
                    write_metadata_file=False)  # fmt: skip
    n = 0
    for name, is_dir, _ in p.fs.listdir(batch):
        if not is_dir and name.endswith(".parquet"):
            with p.fs.fs.open(p.fs.fs._strip_protocol(join(batch, name)), "rb") as f:
                n += pq.ParquetFile(f).metadata.num_rows
    if n == 0:
        p.fs.delete(batch)
        return None, 0
    write_commit(p.fs, batch, p.fingerprint, n)
    return batch, n


def _encode_partition(part: Any, est: Any, fp: str, num_threads: int | None) -> Any:
    """Encode one partition of missing texts (runs on a worker)."""
    import pandas as pd

    if num_threads is not None:
        set_torch_threads(num_threads)
    keys, texts = part[_KEY].tolist(), part[_TEXT].tolist()
    if not texts:
        vectors = np.zeros((0, 0), dtype=np.float32)
    else:
        vectors = np.asarray(est.transform(texts), dtype=np.float32)
    return pd.DataFrame({KEY: keys, VECTOR: list(vectors), CHECK: row_checks(fp, keys, vectors)})


def join_back(p: Plan, names: list[str], divisions: Any, lookup: Lookup | None = None) -> Any:
    """Every input row's vector from the table (lazy), in the input's order and divisions.

    With ``lookup`` (a small table's vectors on the client), each input partition looks
    its rows up there: no shuffle and no sort; otherwise a merge in the cluster and a
    sort by row number.
    """
    import pandas as pd

    if lookup is not None:
        return _join_lookup(p, names, lookup)
    files, _ = visible_files(p.fs, p.table, p.fingerprint)
    n = p.keyed.npartitions
    rowmeta = pd.DataFrame({_KEY: pd.Series([], dtype=object), _TEXT: pd.Series([], dtype=object),
                            _ROW: pd.Series([], dtype="int64"),
                            _INDEX: pd.Series([], dtype=p.keyed._meta.index.dtype)})  # fmt: skip
    rows = p.keyed.map_partitions(_number_rows, meta=rowmeta)
    keys = rows[[_KEY]].dropna().drop_duplicates(subset=[_KEY]).rename(columns={_KEY: KEY})
    checked = _checked(p, files, keys)
    good = checked[checked["ok"]][[KEY, VECTOR]].drop_duplicates(subset=[KEY])
    good = good.rename(columns={KEY: _KEY}).astype({_KEY: rows._meta[_KEY].dtype})
    merged = rows.merge(good, on=_KEY, how="left")
    bounds = [i << _SHIFT for i in range(n)] + [((n - 1) << _SHIFT) + (1 << _SHIFT) - 1]
    ordered = merged.set_index(_ROW, divisions=bounds)
    index = p.keyed._meta.index
    meta = pd.DataFrame(np.zeros((0, len(names)), dtype=np.float32), columns=names, index=index)
    flat = meta.reset_index(drop=True).assign(**{_INDEX: pd.Series([], dtype=index.dtype)})
    done = ordered.map_partitions(_finish, names, p.dim, p.table, meta=flat, clear_divisions=True)
    if divisions is None or any(d is None for d in divisions):
        done = done.map_partitions(_restore_index, index.name, meta=meta, clear_divisions=True)
        return done
    # Partition i holds exactly input partition i's rows, in order: the input's divisions hold.
    done = done.set_index(_INDEX, sorted=True, divisions=list(divisions))
    return done.map_partitions(_restore_index, index.name, meta=meta)


def _join_lookup(p: Plan, names: list[str], lookup: Lookup) -> Any:
    import pandas as pd

    meta = pd.DataFrame(np.zeros((0, len(names)), dtype=np.float32), columns=names,
                        index=p.keyed._meta.index)  # fmt: skip
    return p.keyed.map_partitions(_lookup_partition, _shared(lookup), names, p.table, meta=meta)


def _shared(obj: Any) -> Any:
    """``obj`` as one argument of many tasks: scattered to every worker once when a
    distributed client runs (not in the graph, which would be sent whole), else one
    graph key."""
    import dask

    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):  # no distributed, or no client: a local scheduler
        return dask.delayed(obj, traverse=False)
    return dask.delayed(client.scatter(obj, broadcast=True, hash=False))


def _lookup_partition(part: Any, lookup: Lookup, names: list[str], table: str) -> Any:
    """One input partition's vectors from the client's lookup; zeros for a None key."""
    import pandas as pd

    keys = part[_KEY]
    null = keys.isna().to_numpy()
    at = lookup.positions(keys.astype(object))
    if ((at < 0) & ~null).any():
        raise RuntimeError(f"embedding table {table}: a key without its collected vector "
                           "(a defect); run the job again.")  # fmt: skip
    out = np.zeros((len(part), lookup.matrix.shape[1]), dtype=np.float32)
    out[~null] = lookup.matrix[at[~null]]
    return pd.DataFrame(out, columns=names, index=part.index)


def _restore_index(part: Any, name: Any) -> Any:
    if _INDEX in part.columns:
        part = part.set_index(_INDEX)
    return part.rename_axis(name)


def _number_rows(part: Any, partition_info: dict | None = None) -> Any:
    number = 0 if partition_info is None else int(partition_info["number"])
    out = part.reset_index(drop=True)
    out[_ROW] = (number << _SHIFT) + np.arange(len(part), dtype=np.int64)
    out[_INDEX] = part.index.to_numpy()
    return out


def _finish(part: Any, names: list[str], dim: int, table: str) -> Any:
    """One input partition's vectors, in order, with its index values as a column."""
    import pandas as pd

    part = part.sort_index()
    out = np.zeros((len(part), dim), dtype=np.float32)
    for i, (key, vector, text) in enumerate(
        zip(part[_KEY], part[VECTOR], part[_TEXT], strict=True)
    ):
        if key is None or (isinstance(key, float) and key != key):
            continue  # missing="zeros"
        if vector is None or (isinstance(vector, float) and vector != vector):
            raise RuntimeError(
                f"embedding table {table}: no valid row for the text {str(text)[:80]!r} (the "
                "table changed while this job ran: a compaction with a short retain_s, or a "
                "deleted file). Run the job again."
            )
        out[i] = vector
    frame = pd.DataFrame(out, columns=names)
    frame[_INDEX] = part[_INDEX].to_numpy()
    return frame


def compact(table: str, *, retain_s: float = 3600.0) -> dict[str, dict[str, int]]:
    """Merge each configuration's batches into one; delete what is old enough to go."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    # TODO(#26): the merge runs on the client, in memory: fine up to a few million rows
    # per configuration; a larger table wants the Spark compaction or a partitioned one.
    fs, out = FsspecFS(table), {}
    table = table.rstrip("/")
    for fp in fingerprints(fs, table):
        todo = plan_compaction(fs, table, fp, retain_s)
        for name in todo.delete:
            fs.delete(join(config_dir(table, fp), name))
        rows = 0
        if len(todo.merge) > 1:
            files, live = visible_files(fs, table, fp)
            frames = []
            for f in files:
                try:
                    with fs.fs.open(fs.fs._strip_protocol(f), "rb") as fh:
                        frames.append(pq.read_table(fh, columns=[KEY, VECTOR, CHECK]).to_pandas())
                except Exception:  # undecodable although its size matches: left out
                    continue
            data = pd.concat(frames, ignore_index=True)
            ok = verify_rows(fp, None, data[KEY].tolist(), data[VECTOR].tolist(), data[CHECK])
            data = data[ok].drop_duplicates(subset=[KEY])
            batch = new_batch(table, fp)
            schema = pa.schema([(KEY, pa.string()), (VECTOR, pa.list_(pa.float32())),
                                (CHECK, pa.int64())])  # fmt: skip
            fs.fs.makedirs(fs.fs._strip_protocol(batch), exist_ok=True)
            with fs.fs.open(fs.fs._strip_protocol(join(batch, "part.0.parquet")), "wb") as fh:
                pq.write_table(pa.Table.from_pandas(data, schema=schema, preserve_index=False), fh)
            rows = len(data)
            write_commit(fs, batch, fp, rows, replaces=live)
        out[fp] = {"merged_batches": len(todo.merge) if rows else 0, "rows": rows,
                   "deleted_batches": len(todo.delete)}  # fmt: skip
    return out
