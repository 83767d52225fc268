"""xlmt_sklearn.spark: the featurizer on Spark (local[2]) equals it in-process.

One SparkSession serves the whole test session (starting a JVM costs ~15 s
here). Python workers are reused across tasks and tests, which is exactly
what the "model loaded once per worker" test relies on.

Debugging trap: the workers run ``PYSPARK_PYTHON`` (``python3`` by default,
i.e. *not* the venv) with the JVM's environment; the fixture points both at
this interpreter and this checkout, or the workers fail to import sklearn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from tests._models import tweet_like_texts as make_texts
from xlmt_sklearn import XLMTVectorizer

REPO = Path(__file__).resolve().parents[1]
# PySpark 4.x warns on every pandas UDF under pandas 3; nothing to act on here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)
N_ROWS = 2000
N_PARTITIONS = 8


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return make_texts(N_ROWS)


@pytest.fixture(scope="module")
def text_df(spark, texts):
    """``id, text`` in input order over several partitions (no shuffle)."""
    rows = list(enumerate(texts))
    return spark.sparkContext.parallelize(rows, N_PARTITIONS).toDF("id long, text string")


@pytest.fixture(scope="module")
def expected(tiny_model_dir, texts) -> np.ndarray:
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False).fit()
    return vec.transform(texts)


def _vectorizer(model_dir, **params):
    return clone(XLMTVectorizer(str(model_dir), device="cpu", progress=False, **params))


# ------------------------------------------------------- without pyspark
def test_importing_the_integrations_never_imports_pyspark_or_dask():
    code = (
        "import sys; sys.modules['pyspark'] = None; sys.modules['dask'] = None\n"
        "import xlmt_sklearn.spark, xlmt_sklearn.dask\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_missing_pyspark_gives_install_hint(monkeypatch, tiny_model_dir):
    from xlmt_sklearn.spark import embed_column, embedding_udf

    for name in [m for m in sys.modules if m == "pyspark" or m.startswith("pyspark.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(ImportError, match=r"pip install xlmt-sklearn\[spark\]"):
        embed_column(object(), "text", _vectorizer(tiny_model_dir))
    with pytest.raises(ImportError, match=r"pip install xlmt-sklearn\[spark\]"):
        embedding_udf(_vectorizer(tiny_model_dir))


# ------------------------------------------------------------- Spark runs
@pytest.mark.spark
def test_matches_in_process_in_input_order(text_df, tiny_model_dir, expected):
    from xlmt_sklearn.spark import embed_column

    assert text_df.rdd.getNumPartitions() == N_PARTITIONS
    vec = _vectorizer(tiny_model_dir)  # unfitted: fitted on the driver, on a clone
    out = embed_column(text_df, "text", vec, batch_size=100)
    assert not hasattr(vec, "model_identity_")
    assert out.columns == ["id", "text", "embedding"]
    assert out.schema["embedding"].dataType.simpleString() == "array<float>"
    rows = out.select("id", "embedding").collect()
    assert [r.id for r in rows] == list(range(N_ROWS))
    got = np.asarray([r.embedding for r in rows], dtype=np.float32)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-6


@pytest.mark.spark
def test_as_vector_gives_ml_dense_vectors(text_df, tiny_model_dir, expected):
    from pyspark.ml.linalg import DenseVector, VectorUDT

    from xlmt_sklearn.spark import embed_column

    vec = _vectorizer(tiny_model_dir).fit()
    out = embed_column(text_df.limit(300), "text", vec, output_col="features", as_vector=True)
    assert isinstance(out.schema["features"].dataType, VectorUDT)
    rows = out.select("id", "features").collect()
    assert all(isinstance(r.features, DenseVector) for r in rows)
    ids = [r.id for r in rows]
    got = np.asarray([r.features.toArray() for r in rows])
    assert np.abs(got - expected[ids]).max() < 1e-6


@pytest.mark.spark
def test_model_loads_once_per_python_worker(text_df, tiny_model_dir, expected):
    from xlmt_sklearn.spark import _build_udf

    udf, _ = _build_udf(_vectorizer(tiny_model_dir), batch_size=50, probe=True)
    rows = text_df.withColumn("probe", udf("text")).select("id", "probe.*").collect()
    got = np.asarray([r.embedding for r in rows], dtype=np.float32)
    assert np.abs(got - expected).max() < 1e-6
    # Every batch of every task saw exactly one model load in its process...
    assert {r.model_loads for r in rows} == {1}
    partitions_per_pid = Counter(pid for pid, _ in {(r.pid, r.partition) for r in rows})
    assert sum(partitions_per_pid.values()) == N_PARTITIONS
    # ...and workers were reused: fewer processes than partitions, so at least
    # one process ran several tasks on its single load.
    assert len(partitions_per_pid) < N_PARTITIONS
    assert max(partitions_per_pid.values()) >= 2
    assert os.getpid() not in partitions_per_pid  # the work ran in Python workers
    assert {r.torch_threads for r in rows} == {1}  # spark.task.cpus=1: one thread per task


@pytest.mark.spark
def test_num_threads_overrides_task_cpus(text_df, tiny_model_dir):
    from xlmt_sklearn.spark import _build_udf

    udf, _ = _build_udf(_vectorizer(tiny_model_dir), num_threads=2, probe=True)
    rows = text_df.limit(50).withColumn("probe", udf("text")).select("probe.*").collect()
    assert {r.torch_threads for r in rows} == {2}


@pytest.fixture(scope="module")
def null_df(spark, texts):
    rows = [(i, None if i % 5 == 2 else t) for i, t in enumerate(texts[:400])]
    return spark.sparkContext.parallelize(rows, 4).toDF("id long, text string")


@pytest.mark.spark
def test_nulls_give_zero_vectors_under_missing_zeros(null_df, tiny_model_dir, expected):
    from xlmt_sklearn.spark import embed_column

    vec = _vectorizer(tiny_model_dir, missing="zeros")
    rows = embed_column(null_df, "text", vec).select("id", "text", "embedding").collect()
    assert [r.id for r in rows] == list(range(400))
    got = np.asarray([r.embedding for r in rows], dtype=np.float32)
    is_null = np.array([r.text is None for r in rows])
    assert is_null.sum() == 80
    assert not got[is_null].any()
    assert np.abs(got[~is_null] - expected[:400][~is_null]).max() < 1e-6


@pytest.mark.spark
def test_nulls_fail_clearly_under_missing_error(null_df, tiny_model_dir):
    from pyspark.errors import PythonException

    from xlmt_sklearn.spark import embed_column

    out = embed_column(null_df, "text", _vectorizer(tiny_model_dir))  # missing="error"
    with pytest.raises(PythonException, match=r"Column 'text' has null values .*missing='zeros'"):
        out.collect()


@pytest.mark.spark
def test_non_string_column_and_bad_arguments_fail_on_the_driver(text_df, tiny_model_dir):
    from xlmt_sklearn.spark import embed_column

    vec = _vectorizer(tiny_model_dir)
    with pytest.raises(TypeError, match=r"string column; 'id' has type bigint"):
        embed_column(text_df, "id", vec)
    with pytest.raises(ValueError, match=r"Column 'nope' not found"):
        embed_column(text_df, "nope", vec)
    with pytest.raises(ValueError, match=r"batch_size must be a positive int; got 0"):
        embed_column(text_df, "text", vec, batch_size=0)
    locked = XLMTVectorizer(
        str(tiny_model_dir), preprocess=_LockedPreprocess(), device="cpu", progress=False
    ).fit()
    with pytest.raises(TypeError, match=r"Cannot serialise XLMTVectorizer for the Spark workers"):
        embed_column(text_df, "text", locked)


class _LockedPreprocess:
    """A preprocess callable that cannot travel (it holds a lock)."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, text: str) -> str:
        return text


@pytest.mark.spark
@pytest.mark.parametrize("granularity", ["word", "subword"])
def test_token_vectorizer_gives_one_struct_per_token(spark, texts, tiny_model_dir, granularity):
    from xlmt_sklearn import XLMTTokenVectorizer
    from xlmt_sklearn.spark import embed_column

    rows = [(i, None if i % 9 == 4 else t) for i, t in enumerate(texts[:150])]
    df = spark.sparkContext.parallelize(rows, 3).toDF("id long, text string")
    vec = XLMTTokenVectorizer(
        str(tiny_model_dir), granularity=granularity, missing="zeros", device="cpu",
        progress=False,
    )  # fmt: skip
    out = embed_column(df, "text", vec, output_col="tokens")
    fields = ["token", "begin", "end", *(["n_subwords"] if granularity == "word" else [])]
    assert out.schema["tokens"].dataType.simpleString() == (
        "array<struct<" + ",".join(f"{f}:{'string' if f == 'token' else 'int'}" for f in fields)
        + ",embedding:array<float>>>"
    )  # fmt: skip
    got = out.select("id", "tokens").collect()
    assert [r.id for r in got] == list(range(150))
    ref = clone(vec).set_params(output="frame").fit().transform([t for _, t in rows])
    for r in got:
        want = ref.loc[[r.id]] if r.id in ref.index else ref.iloc[:0]
        assert [t.token for t in r.tokens] == list(want["token"])
        assert [t.begin for t in r.tokens] == list(want["begin"])
        assert [t.end for t in r.tokens] == list(want["end"])
        if granularity == "word":
            assert [t.n_subwords for t in r.tokens] == list(want["n_subwords"])
        if len(want):
            diff = np.abs(np.asarray([t.embedding for t in r.tokens]) - np.stack(want["embedding"]))
            assert diff.max() < 1e-6
    assert [len(r.tokens) for r in got if r.id % 9 == 4] == [0] * 17  # nulls: no tokens


@pytest.mark.spark
def test_filters_and_explode_never_run_the_model_twice(text_df, tiny_model_dir):
    """Catalyst may copy a deterministic UDF into pushed-down or inferred filters."""
    from xlmt_sklearn import XLMTTokenVectorizer
    from xlmt_sklearn.spark import embed_column

    def python_evals(df) -> int:
        return df._jdf.queryExecution().executedPlan().toString().count("ArrowEvalPython")

    pooled = embed_column(text_df, "text", _vectorizer(tiny_model_dir))
    assert python_evals(pooled.filter("embedding[0] > 0")) == 1
    tok = XLMTTokenVectorizer(str(tiny_model_dir), device="cpu", progress=False)
    tokens = embed_column(text_df, "text", tok, output_col="tokens")
    assert python_evals(tokens.selectExpr("id", "explode(tokens) AS t")) == 1


@pytest.mark.spark
def test_invalid_utf8_fails_clearly_or_is_replaced(spark, tiny_model_dir):
    """Issue 27: bytes that are not UTF-8 in a string column failed the job inside Arrow
    (``Wrapping caf\\ufffd cr\\ufffdme ... failed``) after four attempts."""
    from pyspark.sql import functions as F

    from xlmt_sklearn.spark import embed_column

    raw = [(0, bytearray(b"caf\xe9 cr\xe8me")), (1, bytearray(b"plain text"))]
    df = spark.createDataFrame(raw, "id long, b binary").select(
        "id", F.col("b").cast("string").alias("text")
    )
    vec = _vectorizer(tiny_model_dir)
    with pytest.raises(Exception, match=r"Column 'text' holds text that is not valid UTF-8") as e:
        embed_column(df, "text", vec).collect()
    assert "invalid_utf8='replace'" in str(e.value)
    rows = embed_column(df, "text", vec, invalid_utf8="replace").orderBy("id").collect()
    got = np.asarray([r.embedding for r in rows], dtype=np.float32)
    expected = clone(vec).fit_transform(["caf\ufffd cr\ufffdme", "plain text"])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="invalid_utf8 must be 'error' or 'replace'"):
        embed_column(df, "text", vec, invalid_utf8="ignore")


@pytest.mark.spark
def test_the_utf8_check_without_spark_4_functions(spark):
    """Spark < 4.0 has no ``is_valid_utf8``: the check compares the column's bytes with
    what the JVM's decoder makes of them (run here with those functions hidden)."""
    import types

    from pyspark.sql import functions as F

    from xlmt_sklearn._spark_common import _valid_utf8

    old = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F)
                                   if k not in ("is_valid_utf8", "make_valid_utf8")})  # fmt: skip
    raw = [(0, bytearray(b"caf\xe9")), (1, bytearray(b"ok \xef\xbf\xbd")), (2, None)]
    df = spark.createDataFrame(raw, "id long, b binary").select(
        "id", F.col("b").cast("string").alias("text")
    )
    fixed = df.select(_valid_utf8(old, "text", "replace").alias("t")).orderBy("id").collect()
    assert [r.t for r in fixed] == ["caf\ufffd", "ok \ufffd", None]
    kept = df.where("id > 0").select(_valid_utf8(old, "text", "error").alias("t")).orderBy("id")
    assert [r.t for r in kept.collect()] == ["ok \ufffd", None]  # a valid U+FFFD is kept
    with pytest.raises(Exception, match="not valid UTF-8"):
        df.select(_valid_utf8(old, "text", "error")).collect()
