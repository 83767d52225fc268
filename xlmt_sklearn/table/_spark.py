"""The embedding table on Spark: a global distinct, an anti-join, encode what is new, append.

:func:`update` runs the jobs (eagerly): the input's distinct keys are semi-joined
with the table's visible rows, which are checked row by row; the keys without a
good row are encoded with ``predict_batch_udf`` over the cluster and written as
one new batch (Spark's output committer, then the table's commit marker).
:func:`join_back` is lazy: every input row gets its vector from the table, in
input order. :func:`compact` merges batches. The format is :mod:`._format`.
"""

from __future__ import annotations

import logging
import pickle
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._distributed import (
    check_num_threads,
    fitted_payload,
    is_token_vectorizer,
    rebuild,
    set_torch_threads,
)
from .._spark_common import (
    _check_batch_size,
    _check_string_column,
    _require_pyspark,
    _valid_utf8,
    task_cpus,
)
from ._format import (
    CHECK,
    KEY,
    TUNING,
    VECTOR,
    Lookup,
    TableFS,
    TableReport,
    TableTuning,
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
    verify_arrow,
    verify_rows,
    visible_files,
    write_commit,
)

__all__ = [
    "TUNING",
    "HadoopFS",
    "Lookup",
    "Plan",
    "TableTuning",
    "compact",
    "embed",
    "join_back",
    "plan",
    "update",
]

logger = logging.getLogger("xlmt_sklearn.table")

_KEY, _TEXT, _ROW, _VEC, _OK = "__xlmt_key", "__xlmt_text", "__xlmt_row", "__xlmt_vec", "__xlmt_ok"
_SCHEMA = f"{KEY} string, {VECTOR} array<float>, {CHECK} bigint"


class HadoopFS(TableFS):
    """:class:`TableFS` on the session's Hadoop file system (local, HDFS, S3A, ...)."""

    def __init__(self, spark: Any):
        self._jvm = spark._jvm
        self._conf = spark._jsc.hadoopConfiguration()

    def _fs(self, path: str) -> tuple[Any, Any]:
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(self._conf), p

    def listdir(self, path: str) -> list[tuple[str, bool, int]]:
        fs, p = self._fs(path)
        if not fs.exists(p):
            return []
        return [(s.getPath().getName(), s.isDirectory(), int(s.getLen())) for s in fs.listStatus(p)]

    def read_text(self, path: str) -> str:
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:
            out = self._jvm.java.io.ByteArrayOutputStream()
            self._jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, out, 65536, False)
            return bytes(out.toByteArray()).decode("utf-8")
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        fs, p = self._fs(path)
        tmp = self._jvm.org.apache.hadoop.fs.Path(p.getParent(), "_" + p.getName() + ".tmp")
        out = fs.create(tmp, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        if not fs.rename(tmp, p):  # atomic on HDFS and local; readers never see a torn marker
            raise OSError(f"could not commit {path} (rename from {tmp.toString()} failed)")

    def delete(self, path: str) -> None:
        fs, p = self._fs(path)
        fs.delete(p, True)


@dataclass
class Plan:
    """What one call needs: the checked inputs, the estimator's payload and configuration."""

    spark: Any
    fs: HadoopFS
    table: str
    fingerprint: str
    dim: int
    missing: str
    payload: bytes
    keyed: Any  # the input with _KEY and _TEXT


def plan(df: Any, input_col: str, vectorizer: Any, table: Any, invalid_utf8: str) -> Plan:
    """Check the arguments (before any job runs) and key the input rows in the JVM."""
    F, _ = _require_pyspark()
    from pyspark import cloudpickle

    _check_string_column(df, input_col)
    if not isinstance(table, str) or not table.strip():
        raise TypeError(f"table must be a folder path or URI (a str); got {table!r}.")
    if invalid_utf8 not in ("error", "replace"):
        raise ValueError(f"invalid_utf8 must be 'error' or 'replace'; got {invalid_utf8!r}.")
    cls, params, state = fitted_payload(vectorizer)
    if is_token_vectorizer(cls):
        raise TypeError(
            "table= stores one vector per text; XLMTTokenVectorizer gives one per token. "
            "Use XLMTVectorizer, or embed_column(...) without table= for token features."
        )
    est = rebuild(cls, params, state)
    fp = table_fingerprint(est)
    text = _valid_utf8(F, input_col, invalid_utf8)
    if est.missing == "empty":
        text = F.coalesce(text, F.lit(""))
    elif est.missing == "error":
        text = F.when(F.col(input_col).isNotNull(), text).otherwise(
            F.raise_error(
                F.lit(
                    f"Column {input_col!r} has null values and the vectorizer has missing="
                    "'error'. Drop them first (df.na.drop(subset=[...])), or set missing="
                    "'zeros' (zero vectors) or missing='empty' (embed them as the empty text)."
                )
            )
        )
    keyed = df.withColumn(_TEXT, text).withColumn(
        _KEY, F.sha2(F.concat(F.lit(fp + "\x00"), F.col(_TEXT)), 256)
    )
    return Plan(
        df.sparkSession, HadoopFS(df.sparkSession), table.rstrip("/"), fp,
        int(est.n_features_out_), est.missing, cloudpickle.dumps((cls, params, state)), keyed,
    )  # fmt: skip


def update(
    p: Plan,
    *,
    batch_size: int = 256,
    num_threads: int | None = None,
    fail_attempts: int = 0,
) -> TableReport:
    """Encode the input's distinct texts that the table lacks and append them as a batch."""
    return _update(p, batch_size, num_threads, fail_attempts, collect=False)[0]


def embed(p: Plan, output_col: str, as_vector: bool, batch_size: int, num_threads: int | None):
    """:func:`update`, then the input with each row's vector (lazy, in input order)."""
    _, lookup = _update(p, batch_size, num_threads, 0, collect=True)
    return join_back(p, output_col, as_vector, lookup)


def _update(
    p: Plan, batch_size: int, num_threads: int | None, fail_attempts: int, collect: bool
) -> tuple[TableReport, Lookup | None]:
    """:func:`update`; with ``collect``, also the checked vectors of every distinct key of
    the input when the table is small enough to hold them on the driver."""
    F, _ = _require_pyspark()
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark import StorageLevel

    batch_size = _check_batch_size(batch_size)
    num_threads = check_num_threads(num_threads)
    start = time.perf_counter()
    report = TableReport(p.table, p.fingerprint)
    sizes: dict[str, int] = {}
    files, _ = visible_files(p.fs, p.table, p.fingerprint, report, sizes)
    collect = collect and sum(sizes.values()) <= TUNING.broadcast_bytes and _spark_4(p.spark)
    wanted = p.keyed.where(F.col(_KEY).isNotNull()).select(_KEY, _TEXT).dropDuplicates([_KEY])
    wanted = wanted.persist(StorageLevel.MEMORY_AND_DISK)  # the input is read once
    stored = _stored_for(p, files, wanted.select(F.col(_KEY).alias(KEY)))
    lookup = found = checked = None
    try:
        n_wanted = wanted.count()
        if collect:  # one job: the stored rows to the driver, checked and counted there
            found = _tally_on_driver(p, stored, report)
        else:
            checked = _tally_in_cluster(p, stored, report)
        if report.found < n_wanted:  # nothing to encode: no append job at all
            good = (
                p.spark.createDataFrame(pa.table({_KEY: pc.unique(found.column(KEY))}))
                if found is not None
                else checked.where(F.col(_OK)).select(F.col(KEY).alias(_KEY))
            )
            missing = wanted.join(good, _KEY, "left_anti")
            report.batch = _append(p, missing, batch_size, num_threads, fail_attempts, report)
        if (
            found is not None
            and (report.found + report.encoded) * p.dim * 4 <= TUNING.broadcast_bytes
        ):
            lookup = _collect(p, found, report.batch)
    finally:
        if checked is not None:
            checked.unpersist()
        wanted.unpersist()
    report.seconds = time.perf_counter() - start
    logger.info("%s", report)
    if report.problems:
        warnings.warn(str(report), TableWarning, stacklevel=4)
    return report, lookup


def _tally_on_driver(p: Plan, stored: Any, report: TableReport) -> Any:
    """The stored rows to the driver (Arrow), checked and counted there; the good ones
    (KEY, VECTOR). No Python worker on the executors: the rows cross once."""
    import pyarrow.compute as pc

    rows = stored.select(KEY, VECTOR, CHECK).toArrow()
    ok = verify_arrow(p.fingerprint, p.dim, rows)
    report.bad_rows = int((~ok).sum())
    rows = rows.filter(ok).select([KEY, VECTOR])
    report.found = len(pc.unique(rows.column(KEY)))
    return rows


def _tally_in_cluster(p: Plan, stored: Any, report: TableReport) -> Any:
    """The stored rows' verdicts (KEY, _OK) persisted; good keys and bad rows counted by a job."""
    F, _ = _require_pyspark()
    from pyspark import StorageLevel

    checked = _with_verdict(p, stored).select(KEY, _OK).persist(StorageLevel.MEMORY_AND_DISK)
    for row in checked.groupBy(_OK).agg(
        F.count("*").alias("rows"), F.countDistinct(KEY).alias("keys")
    ).collect():  # fmt: skip
        if row[_OK]:
            report.found = int(row["keys"])
        else:
            report.bad_rows = int(row["rows"])
    return checked


def _spark_4(spark: Any) -> bool:
    return int(spark.version.split(".")[0]) >= 4


def _collect(p: Plan, found: Any, batch: str | None) -> Lookup:
    """``found`` (an Arrow table of the rows checked already) and the new batch's rows
    (checked now), on the driver as one matrix."""
    import pyarrow as pa

    parts = [found]
    if batch is not None:
        fresh = _stored(p.spark, committed_files(p.fs, batch)).select(KEY, VECTOR, CHECK)
        fresh = fresh.toArrow()
        parts.append(fresh.filter(verify_arrow(p.fingerprint, p.dim, fresh)).select([KEY, VECTOR]))
    return Lookup.from_arrow(pa.concat_tables([t.cast(parts[0].schema) for t in parts]), p.dim)


def _stored_for(p: Plan, files: list[str], keys: Any) -> Any:
    """The table's rows for ``keys`` (one column, KEY), not checked yet."""
    return _stored(p.spark, files).join(keys, KEY, "left_semi")


def _with_verdict(p: Plan, stored: Any) -> Any:
    """``stored`` with _OK, each row's check verified on the executors (a pandas UDF)."""
    return stored.withColumn(_OK, _verify_udf(p.fingerprint, p.dim)(KEY, VECTOR, CHECK))


def _append(
    p: Plan, missing: Any, batch_size: int, num_threads: int | None, fail: int, report: TableReport
) -> str | None:
    """Encode ``missing`` (_KEY, _TEXT) into a new batch; commit it. None when empty."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType

    udf = predict_batch_udf(
        _EncodeFactory(p.payload, p.fingerprint, num_threads, fail),
        return_type=StructType(
            [
                StructField(VECTOR, ArrayType(FloatType(), containsNull=False)),
                StructField(CHECK, LongType()),
            ]
        ),
        batch_size=batch_size,
    ).asNondeterministic()  # evaluated once per row (see spark._build_udf)
    batch = new_batch(p.table, p.fingerprint)
    rows = missing.select(_KEY, udf(_KEY, _TEXT).alias("r")).select(
        missing[_KEY].alias(KEY), f"r.{VECTOR}", f"r.{CHECK}"
    )
    rows.write.mode("errorifexists").parquet(batch)
    n = p.spark.read.schema(_SCHEMA).parquet(batch).count()
    report.encoded = n
    if n == 0:
        p.fs.delete(batch)
        return None
    write_commit(p.fs, batch, p.fingerprint, n)
    return batch


def join_back(p: Plan, output_col: str, as_vector: bool, lookup: Lookup | None = None) -> Any:
    """The input with ``output_col``: each row's vector from the table, in input order (lazy).

    With ``lookup`` (a small table's vectors on the driver), a broadcast hash join that
    keeps the input's order; otherwise a join in the cluster and a sort by row.
    """
    F, _ = _require_pyspark()
    if lookup is not None:
        return _join_lookup(p, output_col, as_vector, lookup)
    files, _ = visible_files(p.fs, p.table, p.fingerprint)
    rows = p.keyed.withColumn(_ROW, F.monotonically_increasing_id())
    good = (
        _with_verdict(p, _stored_for(p, files, rows.select(F.col(_KEY).alias(KEY))))
        .where(F.col(_OK))
        .dropDuplicates([KEY])
        .select(F.col(KEY).alias(_KEY), F.col(VECTOR).alias(_VEC))
    )
    zeros = F.array_repeat(F.lit(0.0).cast("float"), p.dim)
    lost = F.raise_error(
        F.concat(
            F.lit(f"embedding table {p.table}: no valid row for the text "),
            F.substring(F.col(_TEXT), 1, 80),
            F.lit(
                " (the table changed while this job ran: a compaction with a short "
                "retain_s, or a deleted file). Run the job again."
            ),
        )
    )
    vector = (
        F.when(F.col(_KEY).isNull(), zeros).when(F.col(_VEC).isNull(), lost).otherwise(F.col(_VEC))
    )
    if as_vector:
        from pyspark.ml.functions import array_to_vector

        vector = array_to_vector(vector)
    out = rows.join(good, _KEY, "left").withColumn(output_col, vector).orderBy(_ROW)
    return out.drop(_KEY, _TEXT, _ROW, _VEC)


def _join_lookup(p: Plan, output_col: str, as_vector: bool, lookup: Lookup) -> Any:
    """A broadcast hash join with the driver's checked vectors: the input is not shuffled,
    so its rows keep their order without a sort, as in ``embed_column`` without a table."""
    F, _ = _require_pyspark()
    import pyarrow as pa

    offsets = np.arange(len(lookup.keys) + 1, dtype=np.int32) * p.dim
    values = pa.array(np.ascontiguousarray(lookup.matrix, dtype=np.float32).ravel())
    arrow = pa.table({_KEY: pa.array(lookup.keys, pa.string()),
                      _VEC: pa.ListArray.from_arrays(pa.array(offsets), values)})  # fmt: skip
    good = p.spark.createDataFrame(arrow, f"{_KEY} string, {_VEC} array<float>")
    zeros = F.array_repeat(F.lit(0.0).cast("float"), p.dim)
    lost = F.raise_error(F.lit(f"embedding table {p.table}: a key without its collected "
                               "vector (a defect); run the job again."))  # fmt: skip
    vector = F.when(F.col(_KEY).isNull(), zeros).when(F.col(_VEC).isNull(), lost)
    vector = vector.otherwise(F.col(_VEC))
    if as_vector:
        from pyspark.ml.functions import array_to_vector

        vector = array_to_vector(vector)
    out = p.keyed.join(F.broadcast(good), _KEY, "left").withColumn(output_col, vector)
    return out.drop(_KEY, _TEXT, _VEC)


def compact(spark: Any, table: str, *, retain_s: float = 3600.0) -> dict[str, dict[str, int]]:
    """Merge each configuration's batches into one; delete what is old enough to go."""
    F, _ = _require_pyspark()
    fs, out = HadoopFS(spark), {}
    table = table.rstrip("/")
    for fp in fingerprints(fs, table):
        todo = plan_compaction(fs, table, fp, retain_s)
        for name in todo.delete:
            fs.delete(join(config_dir(table, fp), name))
        merged = 0
        if len(todo.merge) > 1:
            files, live = visible_files(fs, table, fp)
            folder = config_dir(table, fp)
            sizes = sum(s for b in live for _, d, s in fs.listdir(join(folder, b)) if not d)
            rows = (
                _stored(spark, files)
                .withColumn(_OK, _verify_udf(fp, None)(KEY, VECTOR, CHECK))
                .where(F.col(_OK))
                .dropDuplicates([KEY])
                .select(KEY, VECTOR, CHECK)
                .repartition(max(1, sizes // (128 << 20)))
            )
            batch = new_batch(table, fp)
            rows.write.mode("errorifexists").parquet(batch)
            merged = spark.read.schema(_SCHEMA).parquet(batch).count()
            write_commit(fs, batch, fp, merged, replaces=live)
        out[fp] = {"merged_batches": len(todo.merge) if merged else 0, "rows": merged,
                   "deleted_batches": len(todo.delete)}  # fmt: skip
    return out


def _stored(spark: Any, files: list[str]) -> Any:
    """The rows of ``files`` (an empty frame when there are none)."""
    if not files:
        return spark.createDataFrame([], _SCHEMA)
    # A file that cannot be decoded although its size matches its marker: skipped, and
    # its texts encoded again (the rows that do decode are checked one by one).
    return spark.read.schema(_SCHEMA).option("ignoreCorruptFiles", "true").parquet(*files)


def _verify_udf(fingerprint: str, dim: int | None) -> Any:
    """A pandas UDF (key, vector, check) -> whether the stored row is whole."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    def check_rows(key, vector, check):
        return pd.Series(verify_rows(fingerprint, dim, key.tolist(), vector.tolist(), check))

    # Real classes, not the strings that ``from __future__ import annotations`` makes.
    check_rows.__annotations__ = {"key": pd.Series, "vector": pd.Series, "check": pd.Series,
                                  "return": pd.Series}  # fmt: skip
    ok = pandas_udf(check_rows, "boolean")

    def call(key: str, vector: str, check: str) -> Any:
        # No nulls into the UDF: a null in a bigint column would reach pandas as float64.
        return ok(F.coalesce(F.col(key), F.lit(None).cast("string")), F.col(vector),
                  F.coalesce(F.col(check), F.lit(0).cast("bigint")))  # fmt: skip

    return call


@dataclass
class _EncodeFactory:
    """``make_predict_fn`` for the append: (key, text) -> (vector, check) on a worker.

    Refuses to write rows when the worker's featurizer resolves to another
    configuration than the driver's (``backend="auto"`` on another CPU class) or
    when a key computed in the JVM differs from the cache's. ``fail_attempts``
    (tests) fails a task attempt below that number on its second batch, after
    it wrote part of its output.
    """

    payload: bytes
    fingerprint: str
    num_threads: int | None
    fail_attempts: int = 0

    def __call__(self) -> Any:
        from pyspark import TaskContext

        threads = self.num_threads if self.num_threads is not None else task_cpus()
        set_torch_threads(threads)
        est = rebuild(*pickle.loads(self.payload))
        fp, fail, calls = self.fingerprint, self.fail_attempts, {}
        mine = table_fingerprint(est)
        if mine != fp:
            raise RuntimeError(
                "This worker's featurizer resolves to another configuration than the "
                f"driver's ({est.backend_ if hasattr(est, 'backend_') else est.backend!r} "
                "here): pin backend= and dtype= so that every node computes the same "
                "vectors for the embedding table."
            )

        def predict(keys: np.ndarray, texts: np.ndarray) -> dict[str, np.ndarray]:
            ctx = TaskContext.get()
            if fail and ctx is not None and ctx.attemptNumber() < fail:
                calls[ctx.taskAttemptId()] = calls.get(ctx.taskAttemptId(), 0) + 1
                if calls[ctx.taskAttemptId()] == 2:
                    raise RuntimeError("injected task failure (fail_attempts)")
            values, ks = texts.tolist(), keys.tolist()
            if text_keys(fp, values) != ks:
                raise RuntimeError("embedding table: a key computed in the JVM differs from "
                                   "the cache's; refusing to store these rows")  # fmt: skip
            vectors = np.asarray(est.transform(values), dtype=np.float32)
            return {VECTOR: vectors, CHECK: row_checks(fp, ks, vectors)}

        return predict
