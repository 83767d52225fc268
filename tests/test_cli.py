"""The ``xlmt-sklearn`` command line, mostly in-process through ``main(argv)``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests._subprocesses import REPO, run_python
from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn.cli import build_parser, main
from xlmt_sklearn.store._cache import DEFAULT_FILENAME, EmbeddingCache

TEXTS = [
    "hello world this is a tweet about the weather",
    "hola mundo qué tal estás hoy @maria http://t.co/x",
    'she said "hi", then left',
    "مرحبا بالعالم كيف حالك",
    "नमस्ते दुनिया आप कैसे हैं",
    "guten Tag liebe Welt, wie geht's? 😀",
    "hello world this is a tweet about the weather",  # duplicate
    "ciao mondo, tutto bene? 🙂🙂",
    "olá mundo!!! ... ??? 12345",
    "NA",  # a text, not a missing value
    "bonjour le monde #hashtag",
    "@user http ok",
]
N_DISTINCT = len(set(TEXTS))


@pytest.fixture(scope="module")
def reference(tiny_model_dir) -> np.ndarray:
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False)
    return vec.fit_transform(TEXTS)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"id": np.arange(100, 100 + len(TEXTS)), "text": TEXTS, "label": [0, 1, 2] * 4}
    )


def embed(model: Path, *args: str) -> int:
    """``xlmt-sklearn embed`` on ``model``, CPU, no bar; later ``args`` override these."""
    return main(["embed", "--model", str(model), "--device", "cpu", "--no-progress", *args])


def write_input(df: pd.DataFrame, path: Path) -> Path:
    kind = path.suffix
    if kind == ".csv":
        df.to_csv(path, index=False)
    elif kind == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif kind == ".jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif kind == ".parquet":
        df.to_parquet(path, index=False)
    elif kind == ".txt":
        path.write_text("\n".join(df["text"]), encoding="utf-8")
    return path


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet", ".txt"])
def test_each_input_format(ext, tmp_path, frame, tiny_model_dir, reference, capsys):
    src = write_input(frame, tmp_path / f"in{ext}")
    out = tmp_path / "out.npy"
    assert embed(tiny_model_dir, str(src), "-o", str(out), "--batch-size", "3") == 0
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == reference.shape
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert f"wrote {out}" in (err := capsys.readouterr().err)
    assert "with torch (float32)" in err  # which backend ran (issue 27)


def test_txt_uses_splitlines_and_other_text_column(tmp_path, tiny_model_dir, reference):
    src = tmp_path / "in.txt"
    src.write_text("\r\n".join(TEXTS[:3]), encoding="utf-8")  # no trailing newline, CRLF
    out = tmp_path / "out.npy"
    assert embed(tiny_model_dir, str(src), "-o", str(out)) == 0
    np.testing.assert_allclose(np.load(out), reference[:3], atol=1e-5)

    csv = tmp_path / "body.csv"
    pd.DataFrame({"body": TEXTS[:3]}).to_csv(csv, index=False)
    assert embed(tiny_model_dir, str(csv), "-o", str(out), "--text-column", "body") == 0
    np.testing.assert_allclose(np.load(out), reference[:3], atol=1e-5)


# ----------------------------------------------------------------------------- outputs
def test_parquet_output_is_a_fixed_size_list(tmp_path, frame, tiny_model_dir, reference):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = write_input(frame, tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    assert embed(tiny_model_dir, str(src), "-o", str(out)) == 0
    table = pq.read_table(out)
    assert table.column_names == ["embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), reference.shape[1])
    got = np.stack(table.column("embedding").to_pylist())
    np.testing.assert_allclose(got, reference, atol=1e-5)


def test_parquet_wide_and_keep_columns(tmp_path, frame, tiny_model_dir, reference):
    src = write_input(frame, tmp_path / "in.jsonl")
    out = tmp_path / "out.parquet"
    assert embed(tiny_model_dir, str(src), "-o", str(out), "--wide", "--keep-columns") == 0
    got = pd.read_parquet(out)
    dim = reference.shape[1]
    assert list(got.columns) == ["id", "text", "label"] + [f"emb_{i}" for i in range(dim)]
    pd.testing.assert_frame_equal(got[["id", "text", "label"]], frame, check_dtype=False)
    assert (got[[f"emb_{i}" for i in range(dim)]].dtypes == np.float32).all()
    np.testing.assert_allclose(got.iloc[:, 3:].to_numpy(), reference, atol=1e-5)


def test_csv_output_keeps_columns_and_round_trips(tmp_path, frame, tiny_model_dir, reference):
    src = write_input(frame, tmp_path / "in.parquet")
    out = tmp_path / "sub" / "out.csv"  # missing folders are created
    assert embed(tiny_model_dir, str(src), "-o", str(out), "--keep-columns") == 0
    got = pd.read_csv(out, keep_default_na=False)
    assert list(got.columns[:3]) == ["id", "text", "label"]
    assert got["text"].tolist() == TEXTS and got["id"].tolist() == frame["id"].tolist()
    np.testing.assert_allclose(got.iloc[:, 3:].to_numpy(), reference, atol=1e-5)


def test_options_reach_the_vectorizer(tmp_path, frame, tiny_model_dir):
    src = write_input(frame, tmp_path / "in.csv")
    out = tmp_path / "out.npy"
    args = ["--pooling", "mean_max", "--layers", "1,2", "--layer-aggregation", "concat"]
    args += ["--normalize", "--prefix", "query: ", "--preprocess", "none", "--max-length", "64"]
    assert embed(tiny_model_dir, str(src), "-o", str(out), *args) == 0
    vec = XLMTVectorizer(
        str(tiny_model_dir), pooling="mean_max", layers=[1, 2], layer_aggregation="concat",
        normalize=True, prefix="query: ", preprocess=None, max_length=64, device="cpu",
    )  # fmt: skip
    np.testing.assert_allclose(np.load(out), vec.fit_transform(TEXTS), atol=1e-5)


def test_tokens_long_table(tmp_path, frame, tiny_model_dir):
    src = write_input(frame, tmp_path / "in.csv")
    out = tmp_path / "tok.parquet"
    args = ["--tokens", "--granularity", "word", "--word-vector", "mean", "--keep-columns"]
    assert embed(tiny_model_dir, str(src), "-o", str(out), *args) == 0
    got = pd.read_parquet(out)
    expected = XLMTTokenVectorizer(
        str(tiny_model_dir), granularity="word", word_vector="mean", output="frame",
        device="cpu",
    ).fit_transform(frame["text"])  # fmt: skip
    assert len(got) == len(expected)
    assert got["row"].tolist() == expected.index.tolist()
    assert got["token"].tolist() == expected["token"].tolist()
    assert got["id"].tolist() == frame["id"].iloc[got["row"]].tolist()  # kept, per token
    np.testing.assert_allclose(
        np.stack(got["embedding"]), np.stack(expected["embedding"]), atol=1e-5
    )


def test_warnings_and_progress_go_to_stderr(tmp_path, frame, tiny_model_dir, capsys):
    src = write_input(frame, tmp_path / "in.txt")
    out = tmp_path / "out.npy"
    assert embed(tiny_model_dir, str(src), "-o", str(out), "--max-length", "8") == 0
    err = capsys.readouterr().err
    assert "warning: TruncationWarning" in err and "100%" not in err  # not a TTY: no bar
    base = ["embed", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main([*base, "--progress", "--batch-size", "4"]) == 0
    err = capsys.readouterr().err
    assert "100%" in err and re.search(r"text/s|s/text", err)  # rate (and elapsed/ETA)


# ----------------------------------------------------------------------------- cache
def test_resume_after_interruption_encodes_only_the_rest(
    tmp_path, frame, tiny_model_dir, reference, monkeypatch, capsys
):
    src = write_input(frame, tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    cache_dir = tmp_path / "cache"
    real_put = EmbeddingCache.put_many
    stored: list[int] = []

    def interrupted_after_two_batches(self, keys, arrays, metas=None):
        real_put(self, keys, arrays, metas)
        stored.append(len(keys))
        if len(stored) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(EmbeddingCache, "put_many", interrupted_after_two_batches)
    args = [str(src), "-o", str(out), "--batch-size", "3", "--cache-dir", str(cache_dir)]
    assert embed(tiny_model_dir, *args) == 130
    err = error_of(capsys)
    assert "interrupted" in err and "run the same command again" in err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["cache", "in.csv"]
    done = sum(stored)
    assert done == 6 and EmbeddingCache(cache_dir / DEFAULT_FILENAME).stats.entries == done

    encoded: list[int] = []

    def counting(self, keys, arrays, metas=None):
        encoded.append(len(keys))
        real_put(self, keys, arrays, metas)

    monkeypatch.setattr(EmbeddingCache, "put_many", counting)
    assert embed(tiny_model_dir, *args) == 0
    assert sum(encoded) == N_DISTINCT - done  # only the rest
    assert f"{done} distinct texts from the cache, {N_DISTINCT - done} encoded" in (
        capsys.readouterr().err
    )
    got = np.stack(pd.read_parquet(out)["embedding"])
    np.testing.assert_allclose(got, reference, atol=1e-5)

    encoded.clear()  # a third run is all hits
    assert embed(tiny_model_dir, *args) == 0
    assert encoded == []


def test_cache_info_and_clear(tmp_path, frame, tiny_model_dir, capsys):
    src = write_input(frame, tmp_path / "in.txt")
    cache_dir = tmp_path / "c" / "nested"
    args = [str(src), "-o", str(tmp_path / "o.npy"), "--cache-dir", str(cache_dir)]
    assert embed(tiny_model_dir, *args) == 0
    capsys.readouterr()
    file = cache_dir / DEFAULT_FILENAME
    for target in (cache_dir, file):
        assert main(["cache", "info", str(target)]) == 0
        out = capsys.readouterr().out
        assert f"entries: {N_DISTINCT}" in out and str(file) in out
        assert re.search(r"bytes: +\d+ \(", out)
    assert main(["cache", "clear", str(cache_dir)]) == 0
    assert f"cleared {N_DISTINCT} entries" in capsys.readouterr().out
    assert main(["cache", "info", str(file)]) == 0
    assert "entries: 0" in capsys.readouterr().out


def test_cache_commands_refuse_what_is_not_a_cache(tmp_path, capsys):
    assert main(["cache", "info", str(tmp_path / "nothing")]) == 2
    assert "no xlmt_sklearn cache" in error_of(capsys)
    assert main(["cache", "info", str(tmp_path)]) == 2  # a folder without a cache file
    assert DEFAULT_FILENAME in error_of(capsys)
    other = tmp_path / "notes.sqlite"
    other.write_bytes(b"precious data, not a cache")
    assert main(["cache", "clear", str(other)]) == 2
    assert "not an xlmt_sklearn cache" in error_of(capsys)
    assert other.read_bytes() == b"precious data, not a cache"  # left alone, not moved aside
    assert sorted(os.listdir(tmp_path)) == ["notes.sqlite"]


# ----------------------------------------------------------------------------- atomic
@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_no_partial_output(
    failure, existing, tmp_path, frame, tiny_model_dir, monkeypatch, capsys
):
    import pyarrow.parquet as pq

    src = write_input(frame, tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    if existing:
        out.write_bytes(b"previous result")

    def half_written(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise failure

    monkeypatch.setattr(pq, "write_table", half_written)
    rc = embed(tiny_model_dir, str(src), "-o", str(out))
    err = error_of(capsys)
    if isinstance(failure, OSError):
        assert rc == 2 and "cannot write" in err and "No space left" in err
    else:
        assert rc == 130 and "interrupted" in err
    assert sorted(os.listdir(tmp_path)) == (["in.csv", "out.parquet"] if existing else ["in.csv"])
    if existing:
        assert out.read_bytes() == b"previous result"


# ----------------------------------------------------------------------------- errors
def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    (tmp_path / "cols.csv").write_text("id,body\n1,hello\n2,world\n", encoding="utf-8")
    (tmp_path / "holes.csv").write_text("id,text\n1,hello\n2,\n3,NA\n", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("hello\nworld", encoding="utf-8")
    (tmp_path / "long.txt").write_text("word " * 200, encoding="utf-8")
    (tmp_path / "embedding.csv").write_text("text,embedding\nhi,1\n", encoding="utf-8")
    (tmp_path / "folder.csv").mkdir()
    return {p.name: p for p in tmp_path.iterdir()}


ERRORS = [
    # (arguments after INPUT, input file, expected message fragments)
    (["-o", "out.xyz"], "ok.txt", ["unknown output format '.xyz'", ".parquet"]),
    (["-o", "out.npy"], "in.docx", ["unknown input format '.docx'", ".jsonl"]),
    (["-o", "out.npy"], "missing.csv", ["does not exist"]),
    (["-o", "out.npy"], "folder.csv", ["is a directory"]),
    (["-o", "out.npy"], "cols.csv", ["no column 'text'", "available columns: 'id', 'body'"]),
    (["-o", "out.npy", "--text-column", "txt"], "cols.csv", ["available columns"]),
    (["-o", "out.npy"], "latin1.txt", ["not UTF-8"]),
    (["-o", "out.npy"], "broken.jsonl", ["cannot read", "as jsonl"]),
    (["-o", "out.npy"], "broken.parquet", ["cannot read", "as parquet"]),
    (["-o", "out.npy"], "holes.csv", ["Missing values", "at positions 1. ", "--missing empty"]),
    (["-o", "out.npy", "--keep-columns"], "ok.txt", ["--keep-columns needs a table output"]),
    (["-o", "out.npy", "--tokens"], "ok.txt", ["--tokens needs a table output"]),
    (["-o", "out.csv", "--wide"], "ok.txt", ["--wide applies to .parquet"]),
    (["-o", "o.parquet", "--tokens", "--pooling", "cls"], "ok.txt", ["not to --tokens"]),
    (["-o", "o.parquet", "--keep-columns"], "embedding.csv", ["already has column(s)"]),
    (["-o", "cols.csv"], "cols.csv", ["must not be the INPUT"]),
    (["-o", "out.npy", "--layers", "1,x"], "ok.txt", ["--layers", "comma-separated"]),
    (["-o", "out.npy", "--layers", "9"], "ok.txt", ["'layers'", "valid: -3..2"]),
    (["-o", "out.npy", "--batch-size", "0"], "ok.txt", ["--batch-size", "positive integer"]),
    (["-o", "out.npy", "--pooling", "sum"], "ok.txt", ["invalid choice: 'sum'"]),
    (["-o", "out.npy", "--max-length", "4096"], "ok.txt", ["accepts at most 512 tokens"]),
    (["-o", "out.npy", "--truncation", "error"], "long.txt", ["truncation='error'"]),
    (["-o", "out.npy", "--device", "cuda:7"], "ok.txt", ["device="]),
    (["--output"], "ok.txt", ["expected one argument"]),
    (["-o", "out.npy", "--cache-dir", "cols.csv"], "ok.txt", ["is not a directory"]),
]


@pytest.mark.parametrize(("args", "name", "fragments"), ERRORS, ids=lambda v: str(v)[:40])
def test_user_errors_exit_2_with_a_clear_message(
    args, name, fragments, tmp_path, tiny_model_dir, monkeypatch, capsys
):
    if "cuda" in " ".join(args):
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert embed(tiny_model_dir, name, *args) == 2
    err = error_of(capsys)
    assert err.count("xlmt-sklearn: error:") == 1
    for fragment in fragments:
        assert fragment in err
    assert not any(p.name.startswith(("out.", ".out")) for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        ("./no-such-folder", ["does not exist", "hint: --model must be a folder"]),
        ("no-such-org/no-such-model", ["Cannot find model", "--model path/to/folder"]),
    ],
)
def test_model_that_cannot_be_loaded(model, fragments, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("hello", encoding="utf-8")
    argv = ["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "--model", model]
    assert main(argv) == 2  # HF_HUB_OFFLINE=1 (conftest): the hub is never contacted
    err = error_of(capsys)
    for fragment in fragments:
        assert fragment in err
    assert "local_files_only" not in err  # huggingface_hub's advice about an unset argument
    assert "XLMTVectorizer(" not in err  # the Python API's advice, in Python syntax
    assert not (tmp_path / "o.npy").exists()


def test_broken_model_folder(tmp_path, tiny_model_dir, capsys):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    for tok_file in broken.glob("tokenizer*"):
        tok_file.unlink()
    (tmp_path / "in.txt").write_text("hello", encoding="utf-8")
    assert embed(broken, str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy")) == 2
    err = error_of(capsys)
    assert "tokenizer" in err and "hint:" in err


def test_usage_errors(capsys):
    assert main([]) == 2
    assert "required: COMMAND" in error_of(capsys)
    assert main(["cache"]) == 2
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in error_of(capsys)
    assert main(["--version"]) == 0
    assert re.match(r"xlmt-sklearn \d", capsys.readouterr().out)


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("AUTO", "auto"), ("none", None), ("512", 512)]
)
def test_max_tokens_option(value, expected, tiny_model_dir, tmp_path, monkeypatch):
    """--max-tokens takes a number, 'auto' (the default) or 'none', and reaches the vectorizer."""
    seen = []
    real = XLMTVectorizer.transform
    monkeypatch.setattr(
        XLMTVectorizer, "transform", lambda self, X: seen.append(self.max_tokens) or real(self, X)
    )
    (tmp_path / "in.txt").write_text("hello\nworld\n", encoding="utf-8")
    out = str(tmp_path / "o.npy")
    assert embed(tiny_model_dir, str(tmp_path / "in.txt"), "-o", out, "--max-tokens", value) == 0
    assert seen == [expected]


def test_max_tokens_option_rejects_other_values(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("hello", encoding="utf-8")
    out = str(tmp_path / "o.npy")
    for bad in ("0", "big", "-3"):
        assert embed(tiny_model_dir, str(tmp_path / "in.txt"), "-o", out, "--max-tokens", bad) == 2
        assert "positive integer" in error_of(capsys)


def test_python_dash_m_help_is_cheap():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xlmt_sklearn", "embed", "--help"],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage: xlmt-sklearn embed" in res.stdout and "--cache-dir" in res.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines()}
    assert not {"torch", "transformers"} & imported  # the model stack loads lazily


# ----------------------------------------------------------------------------- options
def _embed_actions() -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices["embed"]._actions}


def _str_options(constraints: list) -> set[str]:
    from xlmt_sklearn._params import StrOptions

    return set().union(*(c.options for c in constraints if isinstance(c, StrOptions)))


@pytest.mark.parametrize(
    ("dest", "constant", "estimator"),
    [
        ("pooling", "POOLING_MODES", XLMTVectorizer),
        ("layer_aggregation", "LAYER_AGGREGATIONS", XLMTVectorizer),
        ("truncation", "TRUNCATION_MODES", XLMTVectorizer),
        ("missing", "MISSING_POLICIES", XLMTVectorizer),
        ("dtype", "DTYPES", XLMTVectorizer),
        ("backend", "BACKENDS", XLMTVectorizer),
        ("backend", "BACKENDS", XLMTTokenVectorizer),
        ("quantize", "QUANTIZE_MODES", XLMTVectorizer),
        ("granularity", "GRANULARITIES", XLMTTokenVectorizer),
        ("word_vector", "WORD_VECTORS", XLMTTokenVectorizer),
    ],
)
def test_option_choices_are_the_package_constants(dest, constant, estimator):
    """Choices come from _params (the very tuple), which equals the estimator's constraint."""
    from xlmt_sklearn import _params
    from xlmt_sklearn.backends._runtime import RUNTIMES

    choices = _embed_actions()[dest].choices
    assert choices is getattr(_params, constant)
    # backend: the estimators also take the registered plugins (tests/_eager_runtime.py)
    extra = set(RUNTIMES) if dest == "backend" else set()
    assert set(choices) | extra == _str_options(estimator._parameter_constraints[dest])


def test_preprocess_choices_and_defaults_follow_the_estimator():
    import inspect

    actions = _embed_actions()
    xlmt = _str_options(XLMTVectorizer._parameter_constraints["preprocess"])
    assert set(actions["preprocess"].choices) == xlmt | {"none"}
    signature = inspect.signature(XLMTVectorizer).parameters
    for dest, action in actions.items():
        if dest in signature and dest not in ("preprocess", "progress"):
            assert action.default == signature[dest].default, dest


# ----------------------------------------------------------------------------- fail fast
def test_bad_arguments_exit_2_before_torch_is_imported(tmp_path, tiny_model_dir):
    """#18 item 14: every check that needs no model runs before torch/transformers load."""
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    (tmp_path / "holes.csv").write_text("id,text\n1,hello\n2,\n", encoding="utf-8")
    ok = str(tmp_path / "in.txt")
    cases = [
        [ok, "-o", "out.xyz"],  # unknown output format
        [ok, "-o", str(tmp_path / "in.txt" / "x.npy")],  # unwritable output
        [ok, "-o", "o.npy", "--max-length", "2"],  # the estimator's own constraint
        [ok, "-o", "o.npy", "--pooling", "sum"],  # argparse
        [str(tmp_path / "missing.txt"), "-o", "o.npy"],  # no input file
        [str(tmp_path / "holes.csv"), "-o", "o.npy"],  # missing values
    ]
    code = (
        "import json, sys\n"
        "from xlmt_sklearn.cli import main\n"
        f"model = {str(tiny_model_dir)!r}\n"
        f"codes = [main(['embed', *a, '--model', model]) for a in {cases!r}]\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "print(json.dumps([codes, heavy]))\n"
    )
    res = run_python(code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    codes, heavy = __import__("json").loads(res.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(cases), res.stderr
    assert heavy == []
    assert res.stderr.count("xlmt-sklearn: error:") == len(cases)
    assert "'max_length' parameter" in res.stderr


@pytest.fixture
def no_model(monkeypatch):
    """Make any model load (fit) fail the test: the checks must come before it."""

    def fit(self, X=None, y=None):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(XLMTVectorizer, "fit", fit)
    monkeypatch.setattr(XLMTTokenVectorizer, "fit", fit)


def test_unwritable_output_is_refused_before_the_model(tmp_path, tiny_model_dir, capsys, no_model):
    """#18 item 9: -o in a folder that can't be written fails at once, not after encoding."""
    src = tmp_path / "in.txt"
    src.write_text("hello\nworld\n", encoding="utf-8")
    (tmp_path / "a-dir.npy").mkdir()
    bad = [str(src / "x.npy"), str(src / "sub" / "x.parquet"), str(tmp_path / "a-dir.npy")]
    if Path("/proc/self").is_dir():  # Linux: nothing can be created in /proc, not even by root
        bad.append("/proc/nope/x.parquet")
    for out in bad:
        assert embed(tiny_model_dir, str(src), "-o", out) == 2
        err = error_of(capsys)
        assert f"cannot write {out!r}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir.npy", "in.txt"]


def test_invalid_parameter_is_refused_before_the_model(tmp_path, tiny_model_dir, capsys, no_model):
    """The estimators' own constraints (max_length >= 3) are checked before the model loads."""
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    for out, extra in [("o.npy", []), ("o.parquet", ["--tokens"])]:
        rc = embed(tiny_model_dir, str(src), "-o", str(tmp_path / out), "--max-length", "2", *extra)
        err = error_of(capsys)
        assert rc == 2 and "'max_length' parameter" in err and "Got 2" in err


def test_output_in_a_new_folder_is_created_only_when_written(tmp_path, tiny_model_dir, capsys):
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    out = tmp_path / "new" / "deeper" / "o.npy"
    assert embed(tiny_model_dir, str(src), "-o", str(out), "--max-length", "2") == 2
    assert not (tmp_path / "new").exists()  # a failed run leaves no empty folders
    capsys.readouterr()
    assert embed(tiny_model_dir, str(src), "-o", str(out)) == 0
    assert np.load(out).shape[0] == 1


# ----------------------------------------------------------------------------- leftovers
def test_a_killed_write_leaves_a_temp_file_that_the_next_run_removes(tmp_path, tiny_model_dir):
    """#18 item 8: SIGKILL while writing OUTPUT; the next run for OUTPUT cleans up."""
    if not hasattr(os, "kill") or os.name != "posix":
        pytest.skip("POSIX signals")
    src = tmp_path / "in.txt"
    src.write_text("hello\nworld\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    code = (
        "import os, signal, sys\n"
        "import numpy as np\n"
        "from xlmt_sklearn.cli import main\n"
        "np.save = lambda f, a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"main(['embed', {str(src)!r}, '-o', {str(out)!r}, '--model', {str(tiny_model_dir)!r},"
        " '--device', 'cpu', '--no-progress'])\n"
    )
    res = run_python(code, timeout=300, text=False)
    assert res.returncode == -9, res.stderr[-2000:]
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith(".out.npy.") and not out.exists()
    # Not ours to remove: a live writer's file (this process), another output's file.
    live = tmp_path / f".out.npy.{os.getpid()}-0123abcd.tmp"
    other = tmp_path / left[0].name.replace(".out.npy.", ".other.npy.")
    for keep in (live, other):
        keep.write_bytes(b"")

    assert embed(tiny_model_dir, str(src), "-o", str(out)) == 0
    assert np.load(out).shape[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == sorted(
        [live.name, other.name]
    )


# ----------------------------------------------------------------------------- text edge cases
@pytest.mark.parametrize("ext", [".txt", ".csv", ".jsonl"])
def test_a_utf8_byte_order_mark_is_accepted_and_dropped(ext, tmp_path, frame, tiny_model_dir,
                                                         reference):  # fmt: skip
    """#18 item 8: a BOM (Windows tools write one) never reaches the first text."""
    plain = write_input(frame[["text"]], tmp_path / f"plain{ext}")
    bom = tmp_path / f"bom{ext}"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    out = tmp_path / "out.parquet"
    assert embed(tiny_model_dir, str(bom), "-o", str(out), "--keep-columns") == 0
    got = pd.read_parquet(out)
    assert list(got.columns) == ["text", "embedding"]
    assert got["text"].tolist() == TEXTS
    np.testing.assert_allclose(np.stack(got["embedding"]), reference, atol=1e-5)


def test_empty_texts_are_embedded_missing_values_follow_missing(tmp_path, tiny_model_dir, capsys):
    """#18 item 12: "" is a text (as in the estimators); only missing values need --missing."""
    texts = ["hello", "", "world", ""]
    expected = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit_transform(texts)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(f'{{"text": "{t}"}}\n' for t in texts), encoding="utf-8")
    for inp in (src, jsonl):
        out = tmp_path / f"{inp.suffix[1:]}.npy"
        assert embed(tiny_model_dir, str(inp), "-o", str(out)) == 0  # default --missing error
        np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    holes = tmp_path / "holes.jsonl"
    holes.write_text('{"text": "hello"}\n{"text": null}\n', encoding="utf-8")
    assert embed(tiny_model_dir, str(holes), "-o", str(tmp_path / "h.npy")) == 2
    assert "--missing empty" in error_of(capsys)

    assert main(["embed", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "empty/missing texts: fail" not in help_text
    assert "An empty text" in help_text and "is a text and is always embedded" in help_text


# ----------------------------------------------------------------------------- docs
def test_docs_option_table_states_the_real_defaults():
    """docs/cli.md's option table agrees with the parser (#18 item 12: --max-tokens)."""
    rows = {}
    for line in (REPO / "docs" / "cli.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`-"):
            for name, default in zip(
                re.findall(r"(--[a-z-]+)", cells[0]), cells[1].split(", "), strict=False
            ):
                rows[name] = default
    checked = 0
    for action in _embed_actions().values():
        long = next((s for s in action.option_strings if s.startswith("--")), None)
        if long not in rows:
            continue
        documented, default = rows[long], action.default
        if isinstance(default, list):
            default = ",".join(map(str, default))
        if default is False or default is None:
            assert "`" not in documented or long == "--stride", (long, documented)
        else:
            assert documented in (f"`{default}`", str(default)), (long, documented, default)
        checked += 1
    assert checked >= 20 and rows["--max-tokens"] == "`auto`"


def test_argument_errors_import_no_estimator_stack(tmp_path):
    """A mistyped option or an unknown output format is reported before scikit-learn loads."""
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    code = (
        "import json, sys\n"
        "from xlmt_sklearn.cli import main\n"
        "codes = [main(['embed', 'in.txt', '-o', 'o.npy', '--pooling', 'sum']),\n"
        "         main(['embed', 'in.txt', '-o', 'out.xyz'])]\n"
        "heavy = [m for m in ('sklearn', 'torch', 'transformers') if m in sys.modules]\n"
        "print(json.dumps([codes, heavy]))\n"
    )
    res = run_python(code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    codes, heavy = __import__("json").loads(res.stdout.strip().splitlines()[-1])
    assert codes == [2, 2] and heavy == [], res.stderr


def test_missing_backend_runtime_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """--backend openvino without openvino: the pip command, exit 2, no traceback."""
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    code = embed(tiny_model_dir, str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"),
                 "--backend", "openvino")  # fmt: skip
    assert code == 2
    assert 'pip install "xlmt-sklearn[openvino]"' in error_of(capsys)


# ------------------------------------------------------------------ documented forms
def test_layers_as_the_docs_write_them(tmp_path, frame, tiny_model_dir, capsys):
    """``--layers -4,-3`` (a value starting with "-") works like ``--layers=-4,-3`` (#27)."""
    src = write_input(frame, tmp_path / "in.txt")
    spaced, joined = tmp_path / "spaced.npy", tmp_path / "joined.npy"
    assert embed(tiny_model_dir, str(src), "-o", str(spaced), "--layers", "-2,-1") == 0
    assert embed(tiny_model_dir, str(src), "-o", str(joined), "--layers=-2,-1") == 0
    np.testing.assert_array_equal(np.load(spaced), np.load(joined))
    assert embed(tiny_model_dir, str(src), "-o", str(spaced), "--layers", "-1") == 0
    error_of(capsys)


def _documented_commands() -> list[tuple[str, str]]:
    """Every ``xlmt-sklearn`` command line in README.md and docs/*.md, with its file."""
    import shlex

    from tests._subprocesses import REPO

    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):  # code blocks
            for line in block.splitlines():
                for part in re.split(r"&&|;", line.strip().removeprefix("$ ")):
                    part = part.strip()
                    words = shlex.split(part) if part.startswith("xlmt-sklearn ") else []
                    if words and "[" not in part:  # not a synopsis ("[options]")
                        found.append((path.name, part))
    return found


@pytest.mark.parametrize(("where", "command"), _documented_commands())
def test_every_documented_command_parses(where, command):
    """The docs' examples are accepted by the parser as written (nothing runs)."""
    import shlex

    from xlmt_sklearn.cli import build_parser, join_negative_values

    words = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(join_negative_values(words))
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` is refused by the parser (exit {exc.code})")
    assert callable(args.func)


def test_documented_commands_are_found():
    commands = [c for _, c in _documented_commands()]
    assert len(commands) >= 8 and any("--layers" in c for c in commands)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing.txt", "-o", "{tmp}/o.npy"], "missing.txt"),
        (["{tmp}/in.csv", "-o", "{tmp}/o.npy", "--text-column", "body"], "body"),
        (["{tmp}/in.csv", "-o", "{tmp}/o.npy", "--model", "./no-such-model"], "does not exist"),
    ],
)
def test_input_and_model_errors_come_before_the_heavy_imports(tmp_path, args, message):
    """Reported at once (issue 27: 3-5 s, scikit-learn alone took 2.1 s to import): the
    process that refuses never imports scikit-learn, torch or transformers."""
    from tests._subprocesses import run_python

    (tmp_path / "in.csv").write_text("text\nhola\n", encoding="utf-8")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = (
        "import sys\nfrom xlmt_sklearn.cli import main\n"
        f"rc = main(['embed', *{argv!r}])\n"
        "heavy = sorted(m for m in ('sklearn', 'torch', 'transformers') if m in sys.modules)\n"
        "print(rc, heavy)\n"
    )
    proc = run_python(code, timeout=120)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
