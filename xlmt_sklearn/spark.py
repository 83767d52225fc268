"""Scale-out on Apache Spark: embed a text column with ``predict_batch_udf``.

Glue only. The fitted estimator is shipped to the Python workers once per UDF
(a few kilobytes: parameters and pinned ``_`` attributes, never weights) and
rebuilt there; each worker then loads the model through the package's
process-wide registry (:mod:`xlmt_sklearn._model`), so every task and every
Arrow batch that a Python worker runs shares one loaded model.

``pyspark`` is imported inside the functions only: ``import xlmt_sklearn.spark``
works without it and says how to install it on first use.

Public functions: :func:`embed_column` (DataFrame in, DataFrame out) and
:func:`embedding_udf` (a column function for ``select``/``withColumn``).
Shipping and rebuilding the estimator, the null-row check and the torch
thread setting are shared with :mod:`xlmt_sklearn.dask` through
:mod:`xlmt_sklearn._distributed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._distributed import (
    check_no_nulls,
    check_num_threads,
    fitted_payload,
    is_token_vectorizer,
    rebuild,
    set_torch_threads,
)
from ._spark_common import (
    _check_batch_size,
    _check_string_column,
    _require_pyspark,
    _valid_utf8,
    task_cpus,
)

__all__ = ["compact_table", "embed_column", "embedding_udf", "update_table"]


# ----------------------------------------------------------------- public
def embed_column(
    df: Any,
    input_col: str,
    vectorizer: Any,
    output_col: str = "embedding",
    *,
    as_vector: bool = False,
    batch_size: int = 256,
    num_threads: int | None = None,
    invalid_utf8: str = "error",
    table: str | None = None,
) -> Any:
    """Add a column of embeddings of ``input_col`` to a Spark DataFrame.

    The rows keep their order and partitioning (a narrow ``withColumn``; no
    shuffle). Each row gets exactly the vector that
    ``vectorizer.transform`` gives in-process for the same text.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        The input frame.
    input_col : str
        A string column (nested fields as ``"a.b"``).
    vectorizer : XLMTVectorizer or XLMTTokenVectorizer
        The featurizer; fitted or not (an unfitted one is cloned and fitted on
        the driver, which reads the model's config only). Its ``model`` must
        be reachable from every executor: a hub id (with the model in each
        node's Hugging Face cache, or network access) or a folder on shared
        storage at the same path. Its ``missing`` policy decides what null
        rows give: ``"error"`` fails the job with a message naming the
        column, ``"empty"`` embeds them as the empty text, ``"zeros"`` gives
        all-zero vectors (no tokens for a token vectorizer).
    output_col : str, default="embedding"
        Name of the new column (replaced if it exists).
    as_vector : bool, default=False
        False: ``array<float>`` (float32, compact). True: a Spark ML
        ``DenseVector`` (``pyspark.ml.linalg.VectorUDT``, float64), ready for
        ``pyspark.ml`` estimators. A token vectorizer's column is always
        ``array<struct<token:string, begin:int, end:int, [n_subwords:int,]
        embedding:array<float>>>``: one struct per subword or word (Spark
        NLP's annotation shape; ``end`` is exclusive, ``n_subwords`` only for
        words), whatever its ``output`` parameter.
    batch_size : int, default=256
        Rows handed to the featurizer per call inside a task (the Arrow batch
        is cut into slices of this size, so memory per call stays bounded).
        Duplicates are encoded once and texts are sorted by length *within*
        a slice; the featurizer's own ``batch_size`` still sets the rows per
        forward pass.
    num_threads : int or None, default=None
        Torch threads per Python worker. None: the task's CPUs
        (``spark.task.cpus``, default 1), so that the tasks running at once
        on an executor share its cores without oversubscribing them (Spark's
        own ``OMP_NUM_THREADS`` is the executor's core count, too many when
        several tasks run at once); ``OMP_NUM_THREADS`` only outside a task.
    invalid_utf8 : {"error", "replace"}, default="error"
        What a row whose bytes are not valid UTF-8 gets (a file read with the
        wrong encoding, a ``binary`` column cast to ``string``). Such a row
        cannot cross into Python at all (Arrow refuses it, and the job failed
        after four attempts with pyarrow's ``Wrapping ... failed``), so it is
        checked in the JVM first: ``"error"`` fails the first task that meets
        one, naming the column, the text (invalid bytes shown as U+FFFD) and
        the fixes; ``"replace"`` embeds the text with each invalid sequence
        replaced by U+FFFD, as Python's ``errors="replace"`` decodes it. Needs
        Spark 4.0 (``is_valid_utf8``); older Spark passes the column as is.
    table : str or None, default=None
        An embedding table (a folder or URI the cluster can write: local,
        HDFS, S3...; docs/spark.md, "Embed only what is new"). The input's
        distinct texts that the table lacks are encoded and appended first
        (:func:`update_table`, which runs at once); the returned frame then
        joins every row to its vector from the table, lazily, in input order
        (a join and a sort instead of a narrow ``withColumn``). Pooled
        vectorizers only.

    Returns
    -------
    pyspark.sql.DataFrame
        ``df`` with ``output_col`` added.

    Raises
    ------
    ImportError
        PySpark (>= 3.4) is missing.
    TypeError
        ``input_col`` is not a string column.

    See Also
    --------
    embedding_udf : The column function behind this, for ``select``.
    xlmt_sklearn.dask.embed_partitions : The same on Dask.

    Notes
    -----
    The UDF is marked nondeterministic (its results are not): Catalyst would
    otherwise copy it into pushed-down or inferred filters (a filter on
    ``output_col``, ``explode``) and run the model twice per row.
    The estimator is rebuilt on the workers with ``progress=False``. The model
    loads once per Python worker (Spark reuses workers across tasks by
    default, ``spark.python.worker.reuse=true``); plan executor memory for
    one model per concurrently running Python worker (about 1.1 GB for
    XLM-T in float32). A ``cache`` path on the vectorizer is opened on each
    worker: a per-node local path is safe with many processes.

    Examples
    --------
    >>> from xlmt_sklearn import XLMTVectorizer
    >>> from xlmt_sklearn.spark import embed_column
    >>> out = embed_column(df, "text", XLMTVectorizer(device="cpu"))  # doctest: +SKIP
    >>> out.select("text", "embedding").show(3)  # doctest: +SKIP
    """
    if table is not None:
        from .table import _spark as tables

        plan = tables.plan(df, input_col, vectorizer, table, invalid_utf8)
        return tables.embed(plan, output_col, as_vector, batch_size, num_threads)
    F, _ = _require_pyspark()
    _check_string_column(df, input_col)
    if invalid_utf8 not in ("error", "replace"):
        raise ValueError(f"invalid_utf8 must be 'error' or 'replace'; got {invalid_utf8!r}.")
    udf = embedding_udf(
        vectorizer, as_vector=as_vector, batch_size=batch_size, num_threads=num_threads,
        input_name=input_col,
    )  # fmt: skip
    return df.withColumn(output_col, udf(_valid_utf8(F, input_col, invalid_utf8)))


def update_table(
    df: Any,
    input_col: str,
    vectorizer: Any,
    table: str,
    *,
    batch_size: int = 256,
    num_threads: int | None = None,
    invalid_utf8: str = "error",
) -> Any:
    """Embed the distinct texts of ``input_col`` that ``table`` lacks, and append them.

    The step behind ``embed_column(..., table=...)``, for jobs that only keep
    the table current (a daily job over new tweets). It runs at once: a
    global distinct of the input's keys, a semi-join with the table whose rows
    are checked one by one, the encoding of what is missing over the cluster,
    and one new committed batch. A row that fails its check, a torn file or a
    batch committed for another configuration is ignored, its text encoded
    again, and the returned report (and a :class:`~xlmt_sklearn.table.TableWarning`)
    says so.

    Parameters
    ----------
    df, input_col, vectorizer, batch_size, num_threads, invalid_utf8
        As in :func:`embed_column` (pooled vectorizers only).
    table : str
        The embedding table's folder or URI.

    Returns
    -------
    xlmt_sklearn.table.TableReport
        Texts found and encoded, what was ignored, the new batch.
    """
    from .table import _spark as tables

    plan = tables.plan(df, input_col, vectorizer, table, invalid_utf8)
    return tables.update(plan, batch_size=batch_size, num_threads=num_threads)


def compact_table(spark: Any, table: str, *, retain_s: float = 3600.0) -> dict[str, Any]:
    """Merge an embedding table's batches and drop duplicate keys, without blocking readers.

    Each configuration's visible batches are read, checked, deduplicated and
    written as one new batch whose commit marker replaces them; readers
    switch to it at their next listing. Replaced batches, and batches of
    killed jobs that never committed, are deleted once older than
    ``retain_s``, so a job that listed them earlier still finds its files.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session whose file system holds the table.
    table : str
        The table's folder or URI.
    retain_s : float, default=3600.0
        How long replaced or abandoned batches are kept: longer than your
        longest job.

    Returns
    -------
    dict
        Per configuration: ``merged_batches``, ``rows`` (after dedupe),
        ``deleted_batches``.
    """
    from .table import _spark as tables

    if not isinstance(retain_s, (int, float)) or isinstance(retain_s, bool) or retain_s < 0:
        raise ValueError(f"retain_s must be a number of seconds >= 0; got {retain_s!r}.")
    return tables.compact(spark, table, retain_s=float(retain_s))


def embedding_udf(
    vectorizer: Any,
    *,
    as_vector: bool = False,
    batch_size: int = 256,
    num_threads: int | None = None,
    input_name: str | None = None,
) -> Any:
    """A Spark column function that embeds a string column.

    Parameters
    ----------
    vectorizer : XLMTVectorizer or XLMTTokenVectorizer
        As in :func:`embed_column`.
    as_vector : bool, default=False
        Return Spark ML vectors instead of ``array<float>`` (pooled vectors
        only).
    batch_size : int, default=256
        Rows per featurizer call inside a task.
    num_threads : int or None, default=None
        Torch threads per Python worker (None: ``spark.task.cpus``).
    input_name : str or None, default=None
        Column name used in error messages.

    Returns
    -------
    callable
        ``udf(column) -> Column``, e.g. ``df.select(udf("text"))``.

    Examples
    --------
    >>> embed = embedding_udf(XLMTVectorizer(device="cpu"))  # doctest: +SKIP
    >>> df.select("id", embed("text").alias("emb"))  # doctest: +SKIP
    """
    udf, tokens = _build_udf(
        vectorizer, batch_size=batch_size, num_threads=num_threads, input_name=input_name
    )
    if tokens:
        if as_vector:
            raise ValueError(
                "as_vector=True needs one vector per row; a token vectorizer gives one per "
                "token. Pool them first (TokenPooler), or use XLMTVectorizer."
            )
        from pyspark.sql import functions as F

        final = _token_types(vectorizer.get_params()["granularity"] == "word")[1]

        def to_tokens(col: Any) -> Any:
            raw = udf(col)
            names = [f.name for f in final.elementType.fields]
            return F.arrays_zip(*[raw.getField(k) for k in names]).cast(final)

        return to_tokens
    if not as_vector:
        return udf
    from pyspark.ml.functions import array_to_vector

    def to_vector(col: Any) -> Any:
        return array_to_vector(udf(col))

    return to_vector


# ---------------------------------------------------------------- private
def token_records(frame: Any, n_rows: int) -> list[dict[str, Any]]:
    """Cut a token vectorizer's long frame into one record of arrays per row.

    ``frame`` is ``XLMTTokenVectorizer(output="frame").transform(list)``: one
    row per token, in input order, indexed by input row. Each record holds
    the row's ``token``/``begin``/``end`` (and ``n_subwords``) arrays and an
    object array of float32 token vectors (the shape Arrow turns into
    ``array<array<float>>``).
    """
    rows = np.asarray(frame.index, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
    cols = {
        "token": frame["token"].to_numpy(dtype=object),
        "begin": frame["begin"].to_numpy(dtype=np.int32),
        "end": frame["end"].to_numpy(dtype=np.int32),
    }
    if "n_subwords" in frame.columns:
        cols["n_subwords"] = frame["n_subwords"].to_numpy(dtype=np.int32)
    vectors = frame["embedding"].to_numpy(dtype=object)
    out = []
    for i in range(n_rows):
        a, b = int(bounds[i]), int(bounds[i + 1])
        rec = {k: v[a:b] for k, v in cols.items()}
        emb = np.empty(b - a, dtype=object)
        for j in range(b - a):
            emb[j] = np.asarray(vectors[a + j], dtype=np.float32)
        rec["embedding"] = emb
        out.append(rec)
    return out


def _token_types(word: bool) -> tuple[Any, Any]:
    """(UDF return struct of parallel arrays, final array-of-structs type)."""
    from pyspark.sql.types import (
        ArrayType,
        FloatType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    fields = [("token", StringType()), ("begin", IntegerType()), ("end", IntegerType())]
    if word:
        fields.append(("n_subwords", IntegerType()))
    fields.append(("embedding", ArrayType(FloatType(), containsNull=False)))
    raw = StructType([StructField(k, ArrayType(t)) for k, t in fields])
    final = ArrayType(StructType([StructField(k, t) for k, t in fields]), containsNull=False)
    return raw, final


@dataclass
class _PredictFactory:
    """``make_predict_fn`` for ``predict_batch_udf`` (picklable by reference).

    Runs once per Python worker and UDF (Spark caches the returned function
    in ``pyspark.ml.model_cache.ModelCache``): sets the torch threads and
    rebuilds the estimator. The model itself comes from the process-wide
    registry on the first batch, so it is shared by every UDF in the worker.
    ``probe=True`` (tests) returns a struct with the worker's pid, partition
    id, model load count and torch threads next to each vector.
    """

    payload: bytes
    num_threads: int | None = None
    input_name: str | None = None
    probe: bool = False
    tokens: bool = False

    def __call__(self):
        import pickle

        # Not OMP_NUM_THREADS first: Spark sets it to the *executor's* cores for
        # every Python worker (SPARK-28843), which oversubscribes an executor that
        # runs several tasks at once.
        threads = self.num_threads if self.num_threads is not None else task_cpus()
        set_torch_threads(threads)
        est = rebuild(*pickle.loads(self.payload))
        input_name, probe, tokens = self.input_name, self.probe, self.tokens

        def predict(texts: np.ndarray) -> Any:
            values = texts.tolist()
            check_no_nulls(
                est, values, input_name, where="in this batch",
                drop_hint="df.na.drop(subset=[...])",
            )  # fmt: skip
            if tokens:
                return token_records(est.transform(values), len(values))
            out = np.asarray(est.transform(values), dtype=np.float32)
            if not probe:
                return out
            import torch
            from pyspark import TaskContext

            from .backends._loading import load_count

            n = len(values)
            ctx = TaskContext.get()
            part = -1 if ctx is None else ctx.partitionId()
            return {
                "embedding": out,
                "pid": np.full(n, os.getpid(), dtype=np.int64),
                "partition": np.full(n, part, dtype=np.int64),
                "model_loads": np.full(n, load_count()["model"], dtype=np.int64),
                "torch_threads": np.full(n, torch.get_num_threads(), dtype=np.int64),
            }

        return predict


def _build_udf(
    vectorizer: Any,
    *,
    batch_size: int = 256,
    num_threads: int | None = None,
    input_name: str | None = None,
    probe: bool = False,
) -> Any:
    """The ``predict_batch_udf`` behind :func:`embedding_udf`, and whether it is token-level.

    ``probe=True`` (tests only) returns a struct with worker details next to
    each vector. A token vectorizer's UDF returns a struct of parallel arrays
    (see :func:`_token_types`) that :func:`embedding_udf` zips into one
    struct per token.
    """
    _require_pyspark()
    from pyspark import cloudpickle
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType

    batch_size = _check_batch_size(batch_size)
    num_threads = check_num_threads(num_threads)
    cls, params, state = fitted_payload(vectorizer)
    tokens = is_token_vectorizer(cls)
    if tokens:
        if probe:
            raise ValueError("probe=True supports pooled vectorizers only.")
        params["output"] = "frame"  # tokens, offsets and vectors, cut per row on the worker
    # Serialised on the driver so that an unpicklable parameter fails here,
    # with its own message, not later inside a Spark task. cloudpickle (not
    # pickle) so that a lambda passed as ``preprocess`` travels too.
    try:
        payload = cloudpickle.dumps((cls, params, state))
    except Exception as exc:
        raise TypeError(
            f"Cannot serialise {type(vectorizer).__name__} for the Spark workers: {exc}"
        ) from exc
    vector = ArrayType(FloatType(), containsNull=False)
    if tokens:
        return_type: Any = _token_types(params.get("granularity") == "word")[0]
    elif probe:
        return_type = StructType(
            [
                StructField("embedding", vector),
                StructField("pid", LongType()),
                StructField("partition", LongType()),
                StructField("model_loads", LongType()),
                StructField("torch_threads", LongType()),
            ]
        )
    else:
        return_type = vector
    factory = _PredictFactory(payload, num_threads, input_name, probe, tokens)
    udf = predict_batch_udf(factory, return_type=return_type, batch_size=batch_size)
    # The vectors *are* deterministic, but Catalyst may copy a deterministic
    # UDF into a filter it pushes down or infers (a filter on the output
    # column, or explode's non-empty-array filter) and then run the model
    # twice per row. A nondeterministic UDF is evaluated exactly once.
    return udf.asNondeterministic(), tokens
