"""Embedding tables: a Parquet dataset of vectors that Spark and Dask jobs share.

A job embeds only the distinct texts the table lacks, appends them as a new
committed batch, and joins every input row to its vector. The format and the
commit protocol are in :mod:`._format`; the engines' data planes in
:mod:`._spark` and :mod:`._dask`. Users reach them through
:func:`xlmt_sklearn.spark.embed_column` / :func:`xlmt_sklearn.dask.embed_partitions`
(``table=``) and their ``update_table``/``compact_table``.
"""

from ._format import TableReport, TableWarning

__all__ = ["TableReport", "TableWarning"]
