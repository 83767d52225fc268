"""Embedding tables on Spark (local[2,2]: a failed task is retried once).

The join, the append, a retried task, concurrent appends, a corrupt file,
compaction, and a table written by Dask read by Spark.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from tests._models import tweet_like_texts
from xlmt_sklearn import XLMTVectorizer
from xlmt_sklearn.table import TableWarning

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


def _vec(model_dir, **params):
    return clone(XLMTVectorizer(str(model_dir), device="cpu", progress=False, **params))


@pytest.fixture(scope="module")
def texts():
    base = tweet_like_texts(300)
    return base + base[::3]  # 400 rows, 300 distinct


@pytest.fixture(scope="module")
def expected(tiny_model_dir, texts):
    return _vec(tiny_model_dir).fit().transform(texts)


@pytest.fixture(scope="module")
def df(spark, texts):
    return spark.sparkContext.parallelize(list(enumerate(texts)), 6).toDF("id long, text string")


def _collect(out):
    rows = out.select("id", "embedding").collect()
    return [r.id for r in rows], np.asarray([r.embedding for r in rows], dtype=np.float32)


def _rows_stored(spark, table):
    files = [str(p) for p in Path(table).glob("config=*/batch=*/*.parquet")]
    return spark.read.parquet(*files).count() if files else 0


@pytest.mark.parametrize("join", ["broadcast", "cluster"])
def test_join_append_and_only_new_texts(
    spark, df, texts, expected, tiny_model_dir, tmp_path, monkeypatch, join
):
    from xlmt_sklearn.spark import embed_column, update_table
    from xlmt_sklearn.table import _spark as tables

    if join == "cluster":  # a table too large for the driver: join in the cluster, sort by row
        monkeypatch.setattr(tables.TUNING, "broadcast_bytes", 0)
    table = str(tmp_path / "table")
    vec = _vec(tiny_model_dir)
    ids, got = _collect(embed_column(df, "text", vec, table=table))
    assert ids == list(range(len(texts)))
    assert np.abs(got - expected).max() < 1e-6
    again = update_table(df, "text", vec, table)
    assert (again.found, again.encoded, again.problems) == (300, 0, 0)
    new = tweet_like_texts(330)[300:]
    grown = spark.createDataFrame(list(enumerate(texts + new)), "id long, text string")
    report = update_table(grown, "text", vec, table)
    assert (report.found, report.encoded) == (300, 30)
    ids, got = _collect(embed_column(grown, "text", vec, table=table, as_vector=True))
    assert ids == list(range(len(texts) + 30))
    assert np.abs(got[-30:] - _vec(tiny_model_dir).fit().transform(new)).max() < 1e-6
    assert _rows_stored(spark, table) == 330


def test_a_retried_task_leaves_no_partial_rows(spark, df, expected, tiny_model_dir, tmp_path):
    from xlmt_sklearn.spark import embed_column
    from xlmt_sklearn.table import _spark as tables

    table = str(tmp_path / "table")
    vec = _vec(tiny_model_dir)
    plan = tables.plan(df, "text", vec, table, "error")
    # Every task's first attempt fails on its second batch of 16, after writing part of it.
    report = tables.update(plan, batch_size=16, fail_attempts=1)
    assert report.encoded == 300
    assert _rows_stored(spark, table) == 300  # no duplicate from a failed attempt
    _, got = _collect(embed_column(df, "text", vec, table=table))
    assert np.abs(got - expected).max() < 1e-6


def test_concurrent_appends(spark, df, expected, tiny_model_dir, tmp_path):
    from xlmt_sklearn.spark import embed_column, update_table

    table = str(tmp_path / "table")
    vec = _vec(tiny_model_dir).fit()
    reports, errors = [], []

    def job():
        try:
            reports.append(update_table(df, "text", vec, table))
        except Exception as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(reports) == 2
    assert len(list(Path(table).glob("config=*/batch=*"))) == sum(
        r.batch is not None for r in reports
    )
    ids, got = _collect(embed_column(df, "text", vec, table=table))
    assert ids == sorted(ids) and len(ids) == 400
    assert np.abs(got - expected).max() < 1e-6


def test_corrupt_file_is_reported_reencoded_and_compacted_away(
    spark, df, expected, tiny_model_dir, tmp_path
):
    from xlmt_sklearn.spark import compact_table, embed_column, update_table

    table = str(tmp_path / "table")
    vec = _vec(tiny_model_dir)
    update_table(df, "text", vec, table)
    part = next(Path(table).glob("config=*/batch=*/*.parquet"))
    part.write_bytes(part.read_bytes()[:100])  # torn
    crc = part.with_name(f".{part.name}.crc")
    crc.unlink(missing_ok=True)  # Hadoop's local checksum would refuse the file outright
    with pytest.warns(TableWarning, match="bytes, not the"):
        report = update_table(df, "text", vec, table)
    assert report.encoded > 0 and report.found + report.encoded == 300
    _, got = _collect(embed_column(df, "text", vec, table=table))
    assert np.abs(got - expected).max() < 1e-6
    (stats,) = compact_table(spark, table).values()
    assert stats["rows"] == 300 and stats["merged_batches"] == 2
    compact_table(spark, table, retain_s=0)
    assert len(list(Path(table).glob("config=*/batch=*"))) == 1
    clean = update_table(df, "text", vec, table)
    assert (clean.found, clean.encoded, clean.problems) == (300, 0, 0)


@pytest.mark.parametrize("join", ["broadcast", "cluster"])
def test_a_row_failing_its_check_is_counted_and_reencoded(
    spark, df, expected, tiny_model_dir, tmp_path, monkeypatch, join
):
    import json

    import pyarrow.parquet as pq

    from xlmt_sklearn.spark import embed_column, update_table
    from xlmt_sklearn.table import _spark as tables
    from xlmt_sklearn.table._format import COMMIT

    if join == "cluster":  # counted by a Spark job instead of on the driver
        monkeypatch.setattr(tables.TUNING, "broadcast_bytes", 0)
    table = str(tmp_path / "table")
    vec = _vec(tiny_model_dir)
    update_table(df, "text", vec, table)
    (batch,) = Path(table).glob("config=*/batch=*")
    part = next(p for p in sorted(batch.glob("*.parquet")) if pq.read_metadata(p).num_rows)
    data = pq.read_table(part)
    frame = data.to_pandas()
    frame.at[0, "vector"] = frame.at[0, "vector"] + np.float32(0.5)  # same size, wrong vector
    pq.write_table(data.from_pandas(frame, schema=data.schema), part)
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)
    marker = json.loads((batch / COMMIT).read_text())
    marker["files"][part.name] = part.stat().st_size  # the damage kept the committed size
    (batch / COMMIT).write_text(json.dumps(marker))
    (batch / f".{COMMIT}.crc").unlink(missing_ok=True)  # Hadoop's checksums of both files
    with pytest.warns(TableWarning, match="1 rows that failed their check"):
        _, got = _collect(embed_column(df, "text", vec, table=table))
    assert np.abs(got - expected).max() < 1e-6
    with pytest.warns(TableWarning, match="1 rows that failed their check"):
        report = update_table(df, "text", vec, table)
    assert (report.bad_rows, report.found, report.encoded) == (1, 300, 0)


def test_nulls_and_refusals(spark, tiny_model_dir, tmp_path):
    from xlmt_sklearn import XLMTTokenVectorizer
    from xlmt_sklearn.spark import embed_column

    rows = [(0, "a b"), (1, None), (2, "c d")]
    nulls = spark.createDataFrame(rows, "id long, text string")
    out = embed_column(nulls, "text", _vec(tiny_model_dir, missing="zeros"),
                       table=str(tmp_path / "t"))  # fmt: skip
    ids, got = _collect(out)
    assert ids == [0, 1, 2] and not got[1].any() and got[[0, 2]].any()
    with pytest.raises(TypeError, match="XLMTTokenVectorizer"):
        embed_column(nulls, "text", XLMTTokenVectorizer(str(tiny_model_dir)), table=str(tmp_path))
    with pytest.raises(Exception, match="missing='error'"):
        embed_column(nulls, "text", _vec(tiny_model_dir), table=str(tmp_path / "e")).collect()


def test_spark_reads_a_table_dask_wrote(spark, df, texts, expected, tiny_model_dir, tmp_path):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    import dask

    from xlmt_sklearn.dask import update_table as dask_update
    from xlmt_sklearn.spark import update_table

    table = str(tmp_path / "table")
    vec = _vec(tiny_model_dir)
    with dask.config.set(scheduler="sync"):
        dask_update(
            dd.from_pandas(pd.DataFrame({"text": texts}), npartitions=2), "text", vec, table
        )
    report = update_table(df, "text", vec, table)
    assert (report.found, report.encoded, report.problems) == (300, 0, 0)
