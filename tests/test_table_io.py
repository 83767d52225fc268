"""xlmt_sklearn.cli._table_io: reading inputs and writing outputs for the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlmt_sklearn.cli._table_io import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    TableIOError,
    atomic_write,
    check_output_location,
    format_of,
    read_table,
    remove_stale_temps,
    write_output,
)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def test_format_of():
    assert format_of(Path("a.JSONL"), INPUT_FORMATS, "input") == "jsonl"
    assert format_of(Path("a.pq"), OUTPUT_FORMATS, "output") == "parquet"
    with pytest.raises(TableIOError, match=r"unknown output format '\(no extension\)'"):
        format_of(Path("a"), OUTPUT_FORMATS, "output")


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl"])
def test_read_table_drops_a_byte_order_mark(fmt, tmp_path):
    body = {
        "txt": "héllo\n\nwörld\n",
        "csv": 'text,id\nhéllo,1\n"",2\nwörld,3\n',
        "tsv": 'text\tid\nhéllo\t1\n""\t2\nwörld\t3\n',
        "jsonl": '{"text": "héllo", "id": 1}\n{"text": "", "id": 2}\n{"text": "wörld", "id": 3}\n',
    }[fmt]
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    df = read_table(path, fmt, "text")
    assert df.columns[0] == "text"
    texts = df["text"].tolist()
    assert texts[0] == "héllo" and texts[-1] == "wörld"
    if fmt in ("csv", "tsv"):
        assert pd.isna(texts[1])  # an empty field is a missing value
    else:
        assert texts[1] == ""  # an empty line / "" is a text


def test_stale_temps_of_dead_writers_only(tmp_path):
    out = tmp_path / "out.npy"
    dead = _dead_pid()
    names = {
        f".out.npy.{dead}-0123abcd.tmp": False,  # stale: removed
        f".out.npy.{os.getpid()}-0123abcd.tmp": True,  # a live writer (us)
        f".other.npy.{dead}-0123abcd.tmp": True,  # another output
        f".out.npy.{dead}-xyz.tmp": True,  # not our pattern
        f"out.npy.{dead}-0123abcd.tmp": True,  # not hidden: not ours
    }
    for name in names:
        (tmp_path / name).write_bytes(b"")
    removed = remove_stale_temps(out)
    assert [p.name for p in removed] == [n for n, kept in names.items() if not kept]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, k in names.items() if k)


def test_atomic_write_cleans_up_and_replaces(tmp_path):
    out = tmp_path / "sub" / "out.bin"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(out) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert list((tmp_path / "sub").iterdir()) == []
    (tmp_path / "sub" / f".out.bin.{_dead_pid()}-0123abcd.tmp").write_bytes(b"")
    with atomic_write(out) as f:
        f.write(b"whole")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.bin"]
    assert out.read_bytes() == b"whole"


def test_check_output_location(tmp_path):
    check_output_location(tmp_path / "a" / "b" / "out.npy")  # missing folders are fine...
    assert list(tmp_path.iterdir()) == []  # ...and are not created by the check
    (tmp_path / "file").write_text("x")
    with pytest.raises(TableIOError, match="is not a directory"):
        check_output_location(tmp_path / "file" / "out.npy")
    with pytest.raises(TableIOError, match="it is a directory"):
        check_output_location(tmp_path)
    if Path("/proc/self").is_dir():
        with pytest.raises(TableIOError, match=r"no file can be created in '/proc'"):
            check_output_location(Path("/proc/nope/x.parquet"))


def test_write_output_npy_and_csv(tmp_path):
    emb = np.arange(6, dtype=np.float64).reshape(3, 2)
    write_output(tmp_path / "o.npy", "npy", emb)
    got = np.load(tmp_path / "o.npy")
    assert got.dtype == np.float32 and np.array_equal(got, emb)
    kept = pd.DataFrame({"id": [1, 2, 3]})
    write_output(tmp_path / "o.csv", "csv", emb, kept=kept)
    assert list(pd.read_csv(tmp_path / "o.csv").columns) == ["id", "emb_0", "emb_1"]
