"""Scale-out on Dask: embed a text column partition by partition.

Glue only, the Dask twin of :mod:`xlmt_sklearn.spark`: the fitted estimator
(parameters and pinned ``_`` attributes, never weights) travels inside the
task graph, and each worker process loads the model once through the
package's process-wide registry (:mod:`xlmt_sklearn._model`), whatever the
number of partitions it runs.

``dask`` is imported inside the functions only: ``import xlmt_sklearn.dask``
works without it and says how to install it on first use. The helpers it
shares with Spark live in :mod:`xlmt_sklearn._distributed`.
"""

from __future__ import annotations

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

__all__ = ["compact_table", "embed_partitions", "update_table"]

_INSTALL_HINT = "pip install xlmt-sklearn[dask]"
_OUTPUTS = ("frame", "array")


def embed_partitions(
    data: Any,
    column: str | None,
    vectorizer: Any,
    *,
    output: str = "frame",
    num_threads: int | None = None,
    table: str | None = None,
) -> Any:
    """Embed a text column of a Dask DataFrame (or a Dask Series), lazily.

    One task per partition (``map_partitions``); rows keep their order,
    index and divisions, and each row gets exactly the vector that
    ``vectorizer.transform`` gives in-process for the same text.

    Parameters
    ----------
    data : dask.dataframe.DataFrame or dask.dataframe.Series
        The texts.
    column : str or None
        The text column of a DataFrame; None for a Series.
    vectorizer : XLMTVectorizer
        The pooled featurizer (token vectorizers are refused), fitted or not:
        an unfitted one is cloned and fitted on the client, which reads the
        model's config only. Its ``model`` must be reachable from every
        worker (hub id in each node's cache, or a folder on shared storage at
        the same path). Its ``missing`` policy decides what missing values
        give: ``"error"`` fails the computation naming the column and
        partition, ``"empty"`` embeds the empty text, ``"zeros"`` gives
        all-zero rows.
    output : {"frame", "array"}, default="frame"
        ``"frame"``: a Dask DataFrame of float32 columns named by
        ``get_feature_names_out()`` with the input's index and divisions, so
        ``data.join(result)`` lines up. ``"array"``: a float32 Dask Array of
        shape ``(n_rows, n_features_out_)``; its row chunk sizes are unknown
        until computed (``.compute_chunk_sizes()``), as for any array made
        from a DataFrame.
    num_threads : int or None, default=None
        Torch threads in the worker while it embeds. None leaves torch's
        setting alone (``dask.distributed`` starts workers with
        ``OMP_NUM_THREADS=1``, so a worker with ``threads_per_worker=t``
        runs ``t`` single-threaded tasks).
    table : str or None, default=None
        An embedding table (a folder or fsspec URI; docs/spark.md, "Embed only
        what is new"). The distinct texts the table lacks are encoded and
        appended first (:func:`update_table`, computed at once); the result
        then takes every row's vector from the table, lazily, with the
        input's order, index and divisions.

    Returns
    -------
    dask.dataframe.DataFrame or dask.array.Array
        Lazy; nothing runs until ``.compute()`` / ``.persist()``.

    Raises
    ------
    ImportError
        Dask (with ``dataframe``) is missing.
    TypeError
        ``data`` is not a Dask DataFrame/Series, or ``column`` does not fit it.

    See Also
    --------
    xlmt_sklearn.spark.embed_column : The same on Spark.

    Notes
    -----
    Plan one model per worker *process* (about 1.1 GB for XLM-T in float32);
    threads of one process share it. The estimator is rebuilt on the
    workers with ``progress=False``. A ``cache`` path on the vectorizer is
    opened by every worker: a local path per node is safe with many
    processes.

    Examples
    --------
    >>> import dask.dataframe as dd  # doctest: +SKIP
    >>> from xlmt_sklearn import XLMTVectorizer
    >>> from xlmt_sklearn.dask import embed_partitions
    >>> ddf = dd.read_parquet("tweets/")  # doctest: +SKIP
    >>> emb = embed_partitions(ddf, "text", XLMTVectorizer(device="cpu"))  # doctest: +SKIP
    >>> ddf.join(emb).to_parquet("tweets-embedded/")  # doctest: +SKIP
    """
    dd = _require_dask()
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}; got {output!r}.")
    num_threads = check_num_threads(num_threads)
    series = _text_series(dd, data, column)
    est = _pooled_estimator(vectorizer)
    names = [str(n) for n in est.get_feature_names_out()]
    name = column if column is not None else series.name
    if table is not None:
        from .table import _dask as tables

        plan = tables.plan(series, est, table, None if name is None else str(name))
        frame = tables.embed(plan, names, series.divisions, num_threads)
        return frame.to_dask_array() if output == "array" else frame
    frame = series.map_partitions(
        _embed_partition, est, names, None if name is None else str(name), num_threads,
        meta=_empty_frame(names, series._meta.index), align_dataframes=False,
    )  # fmt: skip
    if output == "array":
        return frame.to_dask_array()
    return frame


def update_table(
    data: Any,
    column: str | None,
    vectorizer: Any,
    table: str,
    *,
    num_threads: int | None = None,
) -> Any:
    """Embed the distinct texts that ``table`` lacks, and append them (computes at once).

    The Dask twin of :func:`xlmt_sklearn.spark.update_table`, same table
    format: a global ``drop_duplicates`` of the keys, a merge with the
    table's checked rows, the missing texts encoded partition by partition
    and written as one new committed batch.

    Parameters
    ----------
    data, column, vectorizer, num_threads
        As in :func:`embed_partitions`.
    table : str
        The embedding table's folder or fsspec URI.

    Returns
    -------
    xlmt_sklearn.table.TableReport
    """
    from .table import _dask as tables

    _require_dask()
    num_threads = check_num_threads(num_threads)
    series = _text_series(_require_dask(), data, column)
    name = column if column is not None else series.name
    plan = tables.plan(series, _pooled_estimator(vectorizer), table,
                       None if name is None else str(name))  # fmt: skip
    return tables.update(plan, num_threads=num_threads)


def compact_table(table: str, *, retain_s: float = 3600.0) -> dict[str, Any]:
    """Merge an embedding table's batches and drop duplicates, without blocking readers.

    As :func:`xlmt_sklearn.spark.compact_table`, on the client through fsspec.

    Parameters
    ----------
    table : str
        The table's folder or fsspec URI.
    retain_s : float, default=3600.0
        How long replaced or abandoned batches are kept.

    Returns
    -------
    dict
        Per configuration: ``merged_batches``, ``rows``, ``deleted_batches``.
    """
    from .table import _dask as tables

    if not isinstance(retain_s, (int, float)) or isinstance(retain_s, bool) or retain_s < 0:
        raise ValueError(f"retain_s must be a number of seconds >= 0; got {retain_s!r}.")
    return tables.compact(table, retain_s=float(retain_s))


# ---------------------------------------------------------------- private
def _require_dask() -> Any:
    """Import ``dask.dataframe`` or raise ImportError with the install hint."""
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise ImportError(
            f"xlmt_sklearn.dask needs dask with its dataframe extra: {_INSTALL_HINT}"
        ) from exc
    return dd


def _pooled_estimator(vectorizer: Any) -> Any:
    """The fitted estimator rebuilt as the workers will (token vectorizers refused)."""
    est = rebuild(*fitted_payload(vectorizer))
    if is_token_vectorizer(type(est)):
        raise TypeError(
            "embed_partitions gives one row of features per text; XLMTTokenVectorizer gives "
            "one per token. Use XLMTVectorizer, or xlmt_sklearn.spark.embed_column for "
            "token features at scale."
        )
    return est


def _empty_frame(names: list[str], index: Any) -> Any:
    """A 0-row float32 frame with the output columns (the ``meta`` of the result)."""
    import pandas as pd

    return pd.DataFrame(np.zeros((0, len(names)), dtype=np.float32), columns=names, index=index)


def _text_series(dd: Any, data: Any, column: str | None) -> Any:
    if isinstance(data, dd.Series):
        if column is not None:
            raise TypeError(
                f"column={column!r} was given but data is a Dask Series; pass column=None."
            )
        return data
    if isinstance(data, dd.DataFrame):
        if column is None:
            raise TypeError(
                "data is a Dask DataFrame: name its text column, e.g. "
                "embed_partitions(ddf, 'text', vectorizer)."
            )
        if column not in data.columns:
            raise ValueError(f"Column {column!r} not found; the frame has {list(data.columns)}.")
        return data[column]
    raise TypeError(
        "embed_partitions expects a Dask DataFrame or Series; got "
        f"{type(data).__module__}.{type(data).__name__}. For pandas or lists, call "
        "vectorizer.transform directly; wrap pandas with dask.dataframe.from_pandas."
    )


def _embed_partition(
    part: Any,
    est: Any,
    names: list[str],
    column: str | None,
    num_threads: int | None,
    partition_info: dict | None = None,
) -> Any:
    """Embed one pandas partition (runs on a worker)."""
    import pandas as pd

    if num_threads is not None:
        set_torch_threads(num_threads)
    if len(part) == 0:
        return _empty_frame(names, part.index)
    values = part.astype(object).tolist()
    where = "in this partition"
    if partition_info is not None:
        where = f"in partition {partition_info['number']}"
    check_no_nulls(est, values, column, where=where, drop_hint="ddf.dropna(subset=[...])")
    out = np.asarray(est.transform(values), dtype=np.float32)
    return pd.DataFrame(out, columns=names, index=part.index)
