"""Embedding tables (xlmt_sklearn.table): the format, the commit protocol, and the Dask plane.

The Spark plane has the same tests under the ``spark`` mark (test_spark_table.py).
Dask runs with the synchronous scheduler here, so these stay fast.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from tests._models import tweet_like_texts
from xlmt_sklearn import XLMTVectorizer
from xlmt_sklearn.store._keys import make_keys
from xlmt_sklearn.table import TableWarning
from xlmt_sklearn.table._format import (
    COMMIT,
    TableReport,
    new_batch,
    plan_compaction,
    row_checks,
    text_keys,
    verify_arrow,
    verify_rows,
    visible_files,
    write_commit,
)

FP = "f" * 64


def _vec(model_dir, **params):
    return clone(XLMTVectorizer(str(model_dir), device="cpu", progress=False, **params))


# ------------------------------------------------------------------ rows
def test_keys_are_the_cache_keys_of_the_raw_text():
    texts = ["hola", "", "emoji 🙂", "hola"]
    assert text_keys(FP, texts) == [k.hex() for k in make_keys(FP, texts)]


def test_a_row_check_catches_a_flipped_bit_another_config_a_short_or_nonfinite_vector():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 8)).astype(np.float32)
    keys = text_keys(FP, ["a", "b", "c"])
    checks = row_checks(FP, keys, vectors)
    assert verify_rows(FP, 8, keys, list(vectors), checks).all()
    flipped = vectors.copy()
    flipped.view(np.uint32)[1, 3] ^= 1  # one bit of one float
    assert verify_rows(FP, 8, keys, list(flipped), checks).tolist() == [True, False, True]
    assert not verify_rows("0" * 64, 8, keys, list(vectors), checks).any()
    assert not verify_rows(FP, 9, keys, list(vectors), checks).any()
    nan = vectors.copy()
    nan[2, 0] = np.nan
    assert verify_rows(FP, 8, keys, list(nan), row_checks(FP, keys, nan)).tolist() == [
        True, True, False,
    ]  # fmt: skip
    assert not verify_rows(FP, 8, [None, keys[1], keys[2]], [None, vectors[1], None], checks)[
        [0, 2]
    ].any()
    odd = [int(checks[0]), float("nan"), "check"]  # a foreign file's checks: rows fail, no raise
    assert verify_rows(FP, 8, keys, list(vectors), odd).tolist() == [True, False, False]
    # the check is defined once: blake2b-64 of fingerprint, key and little-endian floats
    digest = hashlib.blake2b(FP.encode() + keys[0].encode() + vectors[0].astype("<f4").tobytes(),
                             digest_size=8).digest()  # fmt: skip
    assert int(checks[0]) == int.from_bytes(digest, "little", signed=True)


def test_rows_checked_from_arrow_agree_with_the_row_check():
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5, 8)).astype(np.float32)
    keys = text_keys(FP, list("abcde"))
    checks = row_checks(FP, keys, vectors).tolist()
    flipped = vectors.copy()
    flipped.view(np.uint32)[1, 3] ^= 1
    lists = [v.tolist() for v in flipped]
    lists[2][0] = None  # a null float: NaN, the row fails
    lists[3] = None  # a null vector
    checks[4] = None  # a null check (not 0)
    table = pa.table({"key": keys, "vector": pa.array(lists, pa.list_(pa.float32())),
                      "check": pa.array(checks, pa.int64())})  # fmt: skip
    assert verify_arrow(FP, 8, table).tolist() == [True, False, False, False, False]
    whole = pa.table({"key": keys, "vector": pa.array(list(vectors), pa.list_(pa.float32())),
                      "check": pa.array(row_checks(FP, keys, vectors))})  # fmt: skip
    assert verify_arrow(FP, 8, whole).all()
    assert verify_arrow(FP, 8, whole.slice(2, 2)).tolist() == [True, True]  # offsets of a slice
    assert not verify_arrow(FP, 9, whole).any()
    assert len(verify_arrow(FP, 8, whole.slice(0, 0))) == 0


# ---------------------------------------------------------------- layout
@pytest.fixture
def fs():
    from xlmt_sklearn.table._dask import FsspecFS

    return FsspecFS("/")


def _batch(fs, root, fp=FP, commit=True, files=("part.0.parquet",), replaces=()):
    batch = new_batch(root, fp)
    Path(batch).mkdir(parents=True)
    for name in files:
        Path(batch, name).write_bytes(b"x" * 10)
    if commit:
        write_commit(fs, batch, fp, 1, replaces=replaces)
    return batch


def test_only_committed_whole_files_are_visible(fs, tmp_path):
    root = str(tmp_path / "t")
    done = _batch(fs, root)
    _batch(fs, root, commit=False)  # a job in progress, or killed: silent
    torn = _batch(fs, root)
    Path(torn, "part.0.parquet").write_bytes(b"x" * 4)
    other = _batch(fs, root)
    marker = json.loads(Path(other, COMMIT).read_text())
    Path(other, COMMIT).write_text(json.dumps({**marker, "fingerprint": "0" * 64}))
    broken = _batch(fs, root)
    Path(broken, COMMIT).write_text('{"files": ')
    report = TableReport(root, FP)
    files, live = visible_files(fs, root, FP, report)
    assert files == [f"{done}/part.0.parquet"]
    assert len(live) == 2  # done, torn (its file is left out)
    joined = " ".join(report.skipped_files)
    assert "4 bytes, not the 10 committed" in joined
    assert "another configuration" in joined
    assert "unreadable commit marker" in joined
    assert report.problems == 3


def test_compaction_hides_replaced_batches_and_deletes_them_after_retain(fs, tmp_path):
    root = str(tmp_path / "t")
    a, b = _batch(fs, root), _batch(fs, root)
    abandoned = _batch(fs, root, commit=False)
    names = [Path(a).name, Path(b).name]
    merged = _batch(fs, root, replaces=names)
    assert visible_files(fs, root, FP)[0] == [f"{merged}/part.0.parquet"]
    assert plan_compaction(fs, root, FP, retain_s=3600).delete == []
    later = plan_compaction(fs, root, FP, retain_s=3600, now=4e9)
    assert sorted(later.delete) == sorted([*names, Path(abandoned).name])
    assert later.merge == [Path(merged).name]


# ------------------------------------------------------------------ Dask
dd = pytest.importorskip(
    "dask.dataframe", reason="dask not installed: pip install xlmt-sklearn[dask]"
)


@pytest.fixture(autouse=True)
def _sync_scheduler():
    import dask

    with dask.config.set(scheduler="sync"):
        yield


@pytest.fixture(scope="module")
def texts():
    base = tweet_like_texts(240)
    return base + base[::3]  # natural duplicates: 320 rows, 240 distinct


@pytest.fixture(scope="module")
def expected(tiny_model_dir, texts):
    return _vec(tiny_model_dir).fit().transform(texts)


def _frame(texts, npartitions=4, start=7):
    pdf = pd.DataFrame({"text": texts}, index=pd.RangeIndex(start, start + len(texts)))
    return pdf, dd.from_pandas(pdf, npartitions=npartitions)


@pytest.mark.parametrize("join", ["lookup", "cluster"])
def test_dask_embeds_only_what_is_new_in_input_order(
    tiny_model_dir, texts, expected, tmp_path, monkeypatch, join
):
    from xlmt_sklearn.dask import embed_partitions, update_table
    from xlmt_sklearn.table import _dask as tables

    if join == "cluster":  # a table too large for the client: merge in the cluster, sort by row
        monkeypatch.setattr(tables.TUNING, "broadcast_bytes", 0)
    looked_up = []
    monkeypatch.setattr(tables, "_lookup_partition", _spy(tables._lookup_partition, looked_up))
    table = str(tmp_path / "table")
    pdf, ddf = _frame(texts)
    vec = _vec(tiny_model_dir)
    first = update_table(ddf, "text", vec, table)
    assert (first.found, first.encoded, first.problems) == (0, 240, 0)
    out = embed_partitions(ddf, "text", vec, table=table)
    assert out.divisions == ddf.divisions
    got = out.compute()
    assert got.index.equals(pdf.index)
    assert list(got.columns) == [str(c) for c in vec.fit().get_feature_names_out()]
    assert np.abs(got.to_numpy() - expected).max() < 1e-6
    assert bool(looked_up) == (join == "lookup")
    again = update_table(ddf, "text", vec, table)
    assert (again.found, again.encoded, again.batch) == (240, 0, None)  # no append at all
    assert len(list(Path(table).glob("config=*/batch=*"))) == 1
    new = tweet_like_texts(264)[240:]  # 24 new texts beside 240 known
    _, grown = _frame(texts + new, npartitions=3)
    report = update_table(grown, "text", vec, table)
    assert (report.found, report.encoded) == (240, 24)
    arr = embed_partitions(grown, "text", vec, table=table, output="array").compute()
    assert np.abs(arr[-24:] - _vec(tiny_model_dir).fit().transform(new)).max() < 1e-6


def _spy(fn, calls):
    def spied(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return spied


@pytest.mark.parametrize("join", ["lookup", "cluster"])
def test_dask_missing_policies(tiny_model_dir, tmp_path, monkeypatch, join):
    from xlmt_sklearn.dask import embed_partitions
    from xlmt_sklearn.table import _dask as tables

    if join == "cluster":
        monkeypatch.setattr(tables.TUNING, "broadcast_bytes", 0)
    rows = ["a b", None, "c d", None]
    _, ddf = _frame(rows, npartitions=2)
    zeros = embed_partitions(ddf, "text", _vec(tiny_model_dir, missing="zeros"),
                             table=str(tmp_path / "t")).compute().to_numpy()  # fmt: skip
    assert not zeros[[1, 3]].any() and zeros[[0, 2]].any()
    empty = embed_partitions(ddf, "text", _vec(tiny_model_dir, missing="empty"),
                             table=str(tmp_path / "t")).compute().to_numpy()  # fmt: skip
    ref = _vec(tiny_model_dir, missing="empty").fit().transform(["a b", "", "c d", ""])
    assert np.abs(empty - ref).max() < 1e-6
    with pytest.raises(ValueError, match=r"Column 'text' has null values .*missing='zeros'"):
        embed_partitions(ddf, "text", _vec(tiny_model_dir), table=str(tmp_path / "t"))


def _only_batch(table):
    return next(Path(table).glob("config=*/batch=*"))


def test_dask_damaged_rows_and_files_are_reported_and_reencoded(
    tiny_model_dir, texts, expected, tmp_path
):
    import pyarrow.parquet as pq

    from xlmt_sklearn.dask import embed_partitions, update_table

    table = str(tmp_path / "table")
    _, ddf = _frame(texts)
    vec = _vec(tiny_model_dir)
    update_table(ddf, "text", vec, table)
    part = next(_only_batch(table).glob("*.parquet"))
    data = pq.read_table(part).to_pandas()
    data.at[5, "vector"] = data.at[5, "vector"] + np.float32(0.5)  # same size, wrong vector
    pq.write_table(pq.read_table(part).from_pandas(data, schema=pq.read_schema(part)), part)
    size = part.stat().st_size
    marker_path = _only_batch(table) / COMMIT
    marker = json.loads(marker_path.read_text())
    marker["files"][part.name] = size  # the damage kept the committed size
    marker_path.write_text(json.dumps(marker))
    with pytest.warns(TableWarning, match="1 rows that failed their check"):
        report = update_table(ddf, "text", vec, table)
    assert (report.bad_rows, report.encoded, report.found) == (1, 1, 239)
    got = embed_partitions(ddf, "text", vec, table=table).compute().to_numpy()
    assert np.abs(got - expected).max() < 1e-6
    # A torn file: the texts it held are encoded again, the rest is found.
    part.write_bytes(part.read_bytes()[: size // 2])
    with pytest.warns(TableWarning, match="bytes, not"):
        report = update_table(ddf, "text", vec, table)
    assert len(report.skipped_files) == 1
    assert 0 < report.encoded <= len(data) and report.found + report.encoded == 240
    got = embed_partitions(ddf, "text", vec, table=table).compute().to_numpy()
    assert np.abs(got - expected).max() < 1e-6


def test_dask_uncommitted_batch_is_invisible_and_the_rerun_completes(
    tiny_model_dir, texts, expected, tmp_path
):
    from xlmt_sklearn.dask import embed_partitions, update_table

    table = str(tmp_path / "table")
    _, ddf = _frame(texts)
    vec = _vec(tiny_model_dir)
    update_table(ddf, "text", vec, table)
    (_only_batch(table) / COMMIT).unlink()  # as if the job died before its commit
    report = update_table(ddf, "text", vec, table)
    assert (report.found, report.encoded, report.problems) == (0, 240, 0)
    got = embed_partitions(ddf, "text", vec, table=table).compute().to_numpy()
    assert np.abs(got - expected).max() < 1e-6


def test_dask_concurrent_appends_and_compaction(tiny_model_dir, texts, expected, tmp_path):
    from xlmt_sklearn.dask import compact_table, embed_partitions, update_table

    table = str(tmp_path / "table")
    _, ddf = _frame(texts)
    vec = _vec(tiny_model_dir).fit()
    # Two jobs appending at once, as two processes: two threads of one Python 3.11 process
    # can deadlock in dask's graph building (functools.cached_property's lock is shared by
    # every instance), and a thread left holding it hangs every later test.
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    cmd = [sys.executable, "-c", _APPEND, str(tmp_path / "texts.json"), str(tiny_model_dir), table]
    jobs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    reports = []
    for job in jobs:
        try:
            out, err = job.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for j in jobs:
                j.kill()
            pytest.fail("a concurrent update_table did not finish in 180 s")
        assert job.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["encoded"] for r in reports) >= 240  # both may have encoded: duplicates are fine
    got = embed_partitions(ddf, "text", vec, table=table).compute().to_numpy()
    assert np.abs(got - expected).max() < 1e-6
    _, pre_compaction = visible_files(_fs(), table, reports[0]["fingerprint"])
    summary = compact_table(table)
    (stats,) = summary.values()
    assert stats["rows"] == 240 and stats["merged_batches"] == len(pre_compaction)
    # Readers that listed the old batches still find them until retain_s has passed.
    old = [p for p in Path(table).glob("config=*/batch=*") if p.name in pre_compaction]
    assert all(p.exists() for p in old)
    assert update_table(ddf, "text", vec, table).found == 240
    compact_table(table, retain_s=0)
    assert not any(p.exists() for p in old)
    got = embed_partitions(ddf, "text", vec, table=table).compute().to_numpy()
    assert np.abs(got - expected).max() < 1e-6


_APPEND = """
import json, sys
import dask.dataframe as dd, pandas as pd
from xlmt_sklearn import XLMTVectorizer
from xlmt_sklearn.dask import update_table
texts = json.load(open(sys.argv[1], encoding="utf-8"))
pdf = pd.DataFrame({"text": texts}, index=pd.RangeIndex(7, 7 + len(texts)))
vec = XLMTVectorizer(sys.argv[2], device="cpu", progress=False).fit()
r = update_table(dd.from_pandas(pdf, npartitions=4), "text", vec, sys.argv[3])
print(json.dumps({"encoded": r.encoded, "fingerprint": r.fingerprint}))
"""


def _fs():
    from xlmt_sklearn.table._dask import FsspecFS

    return FsspecFS("/")


def test_table_argument_errors(tiny_model_dir, tmp_path):
    from xlmt_sklearn import XLMTTokenVectorizer
    from xlmt_sklearn.dask import compact_table, update_table

    _, ddf = _frame(["a", "b"], npartitions=1)
    with pytest.raises(TypeError, match="table must be a folder path"):
        update_table(ddf, "text", _vec(tiny_model_dir), 3)
    with pytest.raises(TypeError, match="XLMTTokenVectorizer"):
        update_table(ddf, "text", XLMTTokenVectorizer(str(tiny_model_dir)), str(tmp_path))
    with pytest.raises(ValueError, match="retain_s"):
        compact_table(str(tmp_path), retain_s=-1)


def test_dask_lookup_refuses_a_key_it_lacks():
    from xlmt_sklearn.table._dask import _KEY, _lookup_partition
    from xlmt_sklearn.table._format import Lookup

    lookup = Lookup.from_rows(["b", "a", "b"], np.array([[2.0], [1.0], [2.0]], np.float32))
    assert lookup.keys == ["a", "b"]  # one copy of each key
    part = pd.DataFrame({_KEY: ["b", None, "a"]}, index=[5, 6, 7])
    got = _lookup_partition(part, lookup, ["f0"], "t")
    assert got.index.tolist() == [5, 6, 7] and got["f0"].tolist() == [2.0, 0.0, 1.0]
    with pytest.raises(RuntimeError, match="embedding table t: a key without its collected"):
        _lookup_partition(pd.DataFrame({_KEY: ["c"]}), lookup, ["f0"], "t")


def test_lookup_builds_its_key_index_once_and_pickles_without_it():
    import pickle

    from xlmt_sklearn.table._format import Lookup

    lookup = Lookup.from_rows(["b", "a"], np.array([[2.0], [1.0]], np.float32))
    assert lookup._index == []
    assert lookup.positions(pd.Series(["b", "x", None, "a"])).tolist() == [1, -1, -1, 0]
    index = lookup._index[0]
    assert lookup.positions(["a"]).tolist() == [0]  # every partition after the first
    assert len(lookup._index) == 1 and lookup._index[0] is index  # built once
    copy = pickle.loads(pickle.dumps(lookup))
    assert copy._index == [] and copy.keys == ["a", "b"]
    assert np.array_equal(copy.matrix, lookup.matrix)
    assert copy.positions(["b"]).tolist() == [1]


def test_dask_lookup_is_scattered_once_under_a_distributed_client(
    tiny_model_dir, texts, expected, tmp_path
):
    distributed = pytest.importorskip("distributed")
    from xlmt_sklearn.dask import embed_partitions
    from xlmt_sklearn.table._dask import _shared

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:  # fmt: skip
        assert not client.who_has()
        _shared(np.zeros(3))
        assert len(client.who_has()) == 1  # on the workers, not in the graph
        _, ddf = _frame(texts)
        got = embed_partitions(ddf, "text", _vec(tiny_model_dir), table=str(tmp_path / "t"))
        assert np.abs(got.compute().to_numpy() - expected).max() < 1e-6
