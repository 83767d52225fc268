"""Spark helpers shared by :mod:`xlmt_sklearn.spark` and the embedding table's Spark plane.

PySpark is imported inside the functions only.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

#: Oldest PySpark with ``pyspark.ml.functions.predict_batch_udf``.
MIN_PYSPARK = (3, 4)

_INSTALL_HINT = "pip install xlmt-sklearn[spark]"


def _valid_utf8(F: Any, input_col: str, policy: str) -> Any:
    """``input_col``, its invalid UTF-8 refused or replaced in the JVM (see ``invalid_utf8``)."""
    col = F.col(input_col)
    if hasattr(F, "is_valid_utf8"):
        valid, repaired = F.is_valid_utf8(col), F.make_valid_utf8(col)
    else:  # Spark < 4.0: the JVM's decoder turns malformed bytes into U+FFFD
        repaired = F.encode(col, "UTF-8").cast("string")
        valid = col.cast("binary") == F.encode(col, "UTF-8")
    if policy == "replace":
        return repaired
    message = F.concat(
        F.lit(f"Column {input_col!r} holds text that is not valid UTF-8 (shown with U+FFFD): "),
        F.substring(repaired, 1, 80),
        F.lit(
            " ... Decode the source with errors='replace' (or read it with its real encoding), "
            "or pass embed_column(..., invalid_utf8='replace')."
        ),
    )
    return F.when(col.isNull() | valid, col).otherwise(F.raise_error(message))


def _require_pyspark() -> tuple[Any, Any]:
    """Import PySpark (>= 3.4) or raise ImportError with the install hint."""
    try:
        import pyspark
        from pyspark.sql import functions as F
    except ImportError as exc:
        raise ImportError(
            f"xlmt_sklearn.spark needs PySpark >= 3.4 and pyarrow: {_INSTALL_HINT}"
        ) from exc
    version = tuple(int(p) for p in pyspark.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_PYSPARK:
        raise ImportError(
            f"xlmt_sklearn.spark needs PySpark >= 3.4 (predict_batch_udf); found "
            f"{pyspark.__version__}. Upgrade: {_INSTALL_HINT}"
        )
    return F, pyspark


def _check_string_column(df: Any, input_col: str) -> None:
    """Refuse a missing or non-string ``input_col`` (analysis only, runs no job)."""
    from pyspark.sql.types import StringType

    try:
        dtype = df.select(input_col).schema.fields[0].dataType
    except Exception as exc:  # AnalysisException and friends
        raise ValueError(
            f"Column {input_col!r} not found; the frame has columns {df.columns}."
        ) from exc
    if not isinstance(dtype, StringType):
        raise TypeError(
            f"embed_column needs a string column; {input_col!r} has type "
            f"{dtype.simpleString()}. Cast it first: df.withColumn({input_col!r}, "
            f"F.col({input_col!r}).cast('string'))."
        )


def _check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    return int(batch_size)


def task_cpus() -> int | None:
    """CPUs Spark allocated to the running task (``spark.task.cpus``), or None."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    ctx = TaskContext.get()
    if ctx is None or not hasattr(ctx, "cpus"):  # outside a task, or PySpark < 3.3
        return None
    try:
        return int(ctx.cpus())
    except Exception:  # pragma: no cover - defensive: an odd resource profile
        return None
