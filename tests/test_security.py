"""Security properties, checked at the estimator (and CLI) level.

* A cache file is data, never code: hostile rows and hostile schema objects
  cannot make a transform run anything, and never change its result.
* Cache directories are created 0o700 and cache files 0o600, whatever the umask.
* A symbolic link at the cache file (or its SQLite siblings) is refused, never
  followed: its target is not created, written, renamed or replaced.
* ``trust_remote_code`` is off by default everywhere; a model folder that
  ships Python code (``auto_map``) is loaded without running it, or refused.
* Auth tokens (``HF_TOKEN``) never end up in pickles, fingerprints, logs,
  warnings, messages, cache files or CLI output.
* A model name that looks like a path is a path, exactly as typed: it never
  falls back to a Hugging Face hub id.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import sqlite3
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from tests._keys import cache_keys
from tests._raw_cache import insert_raw
from xlmt_sklearn import (
    CacheWarning,
    ModelLoadError,
    ModelNotFoundError,
    XLMTTokenVectorizer,
    XLMTVectorizer,
)
from xlmt_sklearn.backends import _loading as loading_mod
from xlmt_sklearn.store import _sqlite as _sqlite_store
from xlmt_sklearn.store._cache import DEFAULT_FILENAME, EmbeddingCache
from xlmt_sklearn.store._fingerprint import fingerprint
from xlmt_sklearn.store._keys import make_keys

TEXTS = ["hello world", "hola mundo qué tal", "@someone http://x.co 😀"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fresh(tiny_model_dir):
    return {
        "pooled": XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().transform(TEXTS),
        "tokens": list(
            XLMTTokenVectorizer(str(tiny_model_dir), device="cpu").fit().transform(TEXTS)
        ),
    }


def _est(kind, model_dir, **kw):
    cls = XLMTVectorizer if kind == "pooled" else XLMTTokenVectorizer
    return cls(str(model_dir), device="cpu", progress=False, **kw).fit()


def _same(kind, got, expected):
    if kind == "pooled":
        np.testing.assert_allclose(got, expected, atol=1e-5)
    else:
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


def _keys(est, kind):
    """The cache keys ``est`` (of ``kind``) looks up for TEXTS."""
    return cache_keys(est, TEXTS)


# ------------------------------------------------------------ hostile cache files


class _Exploit:
    """Unpickling (or evaluating the repr of) this creates a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pooled", "tokens"])
def test_hostile_rows_at_the_estimators_keys_run_nothing(tiny_model_dir, tmp_path, fresh, kind):
    """Rows an attacker wrote for exactly the keys a transform looks up."""
    marker = tmp_path / "pwned"
    path = tmp_path / "c.sqlite"
    est = _est(kind, tiny_model_dir, cache=EmbeddingCache(path))
    keys = _keys(est, kind)
    EmbeddingCache(path).get_many(keys[:1])  # create the (valid, empty) cache file
    _sqlite_store.close_store(path.resolve())
    payload = pickle.dumps(_Exploit(str(marker)))
    expr = f"__import__('pickle').loads({payload!r})"
    rows = [
        (keys[0], "object", "32", payload, 0),  # a pickle, labelled as a numpy object array
        (keys[1], "float32", expr, payload, 0),  # code as the shape
        (keys[2], "pickle", "1", payload, 0),
    ]
    conn = sqlite3.connect(path)
    insert_raw(conn, [(*row, None) for row in rows])
    conn.commit()
    (n,) = conn.execute("SELECT count(*) FROM entries WHERE key IN (?, ?, ?)", keys).fetchone()
    conn.close()
    assert n == 3  # the hostile rows sit exactly where the transform looks
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # invalid rows are misses, not incidents
        got = est.transform(TEXTS)
    assert not marker.exists()
    _same(kind, got, fresh[kind])  # recomputed ...
    hits = EmbeddingCache(path).get_many(keys)
    assert all(h is not None for h in hits)  # ... and the hostile rows replaced by good ones
    _same(kind, est.transform(TEXTS), fresh[kind])


def test_hostile_schema_objects_run_nothing(tiny_model_dir, tmp_path, fresh):
    """A trigger that tries to load native code when the estimator writes."""
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).get_many(make_keys("x", ["x"]))
    _sqlite_store.close_store(path.resolve())
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER evil AFTER INSERT ON entries BEGIN "
        "SELECT load_extension('/nonexistent/evil.so'); END"
    )
    conn.commit()
    conn.close()
    est = _est("pooled", tiny_model_dir, cache=EmbeddingCache(path))
    with pytest.warns(CacheWarning, match="load_extension"):
        got = est.transform(TEXTS)
    _same("pooled", got, fresh["pooled"])


def test_cache_modules_never_deserialize_code():
    """Static guard: the cache code has no unpickling, eval or exec at all."""
    forbidden = re.compile(
        r"\bpickle\.(loads?|Unpickler)\b|\bmarshal\.|\beval\(|\bexec\(|allow_pickle\s*=\s*True"
        r"|\bnp\.load\(|\bnumpy\.load\(|enable_load_extension\(\s*True"
    )
    files = sorted((REPO / "xlmt_sklearn" / "store").rglob("*.py"))
    assert len(files) > 8  # the store package was found
    for path in files:
        assert not forbidden.search(path.read_text(encoding="utf-8")), path.name


# ------------------------------------------------------------------ permissions


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("kind", ["pooled", "tokens"])
def test_cache_directories_0700_and_files_0600_even_with_umask_0(tiny_model_dir, tmp_path, kind):
    old = os.umask(0)
    try:
        path = tmp_path / "a" / "b" / "c.sqlite"
        _est(kind, tiny_model_dir, cache=str(path)).transform(TEXTS)
        created = [tmp_path / "a", tmp_path / "a" / "b"]
        assert [_mode(d) for d in created] == [0o700, 0o700]
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert [_mode(f) for f in files if f.exists()] == [0o600] * sum(f.exists() for f in files)
        assert path.exists()
    finally:
        os.umask(old)
        _sqlite_store.close_store(path.resolve())


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_cli_cache_dir_is_private(tiny_model_dir, tmp_path, capsys):
    from xlmt_sklearn.cli import main

    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    old = os.umask(0o022)
    try:
        code = main(
            ["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "--model",
             str(tiny_model_dir), "--device", "cpu", "--cache-dir", str(tmp_path / "x" / "cache")]
        )  # fmt: skip
    finally:
        os.umask(old)
    assert code == 0, capsys.readouterr().err
    assert _mode(tmp_path / "x" / "cache" / DEFAULT_FILENAME) == 0o600
    assert _mode(tmp_path / "x" / "cache") == 0o700
    assert _mode(tmp_path / "x") == 0o700


# ------------------------------------------------------------- remote code


def test_trust_remote_code_is_off_by_default_everywhere(tiny_model_dir, capsys):
    from xlmt_sklearn.cli import main

    for cls in (XLMTVectorizer, XLMTTokenVectorizer):
        assert cls().trust_remote_code is False
        est = cls(str(tiny_model_dir), device="cpu").fit()
        assert est._encoders()[0].spec.trust_remote_code is False
    assert main(["embed", "--help"]) == 0
    assert "remote" not in capsys.readouterr().out.lower()  # the CLI cannot turn it on
    spark = pytest.importorskip("xlmt_sklearn.spark")
    _, params, _ = spark.fitted_payload(XLMTVectorizer(str(tiny_model_dir)))
    assert params["trust_remote_code"] is False


def _folder_with_code(tiny_model_dir: Path, dst: Path, marker: Path, **config) -> Path:
    shutil.copytree(tiny_model_dir, dst)
    (dst / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import XLMRobertaConfig as EvilConfig\n"
        "from transformers import XLMRobertaModel as EvilModel\n"
        "from transformers import XLMRobertaTokenizerFast as EvilTokenizer\n"
    )
    cfg = json.loads((dst / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    cfg.update(config)
    (dst / "config.json").write_text(json.dumps(cfg))
    tcfg = json.loads((dst / "tokenizer_config.json").read_text())
    tcfg["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    (dst / "tokenizer_config.json").write_text(json.dumps(tcfg))
    return dst


@pytest.mark.parametrize("kind", ["pooled", "tokens"])
def test_model_code_in_the_folder_never_runs(tiny_model_dir, tmp_path, fresh, kind):
    marker = tmp_path / "ran"
    folder = _folder_with_code(tiny_model_dir, tmp_path / "m", marker)
    got = _est(kind, folder).transform(TEXTS)  # a known architecture: the built-in class
    assert not marker.exists()
    _same(kind, got, fresh[kind])


def test_unknown_architecture_with_code_is_refused_not_run(tiny_model_dir, tmp_path):
    marker = tmp_path / "ran"
    folder = _folder_with_code(tiny_model_dir, tmp_path / "m", marker, model_type="evil-net")
    est = XLMTVectorizer(str(folder), device="cpu").fit()
    with pytest.raises(ModelLoadError, match=r"(?s)Cannot load model .*custom code"):
        est.transform(TEXTS)
    assert not marker.exists()


# ------------------------------------------------------------------- auth tokens

SENTINEL = "hf_SeNtInEl0123456789abcdefXYZ"


def test_auth_token_never_stored_logged_or_cached(tiny_model_dir, tmp_path, monkeypatch, caplog,
                                                  capfd):  # fmt: skip
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SENTINEL)
    caplog.set_level(logging.DEBUG)  # every logger, every level
    loading_mod.clear_model_registry()  # load (and log) again with the token set
    seen: list[str | bytes] = []
    cache = tmp_path / "cache"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cls in (XLMTVectorizer, XLMTTokenVectorizer):
            est = cls(str(tiny_model_dir), device="cpu", cache=str(cache / cls.__name__)).fit()
            est.transform(TEXTS)
            est.transform(TEXTS)  # hits
            seen += [pickle.dumps(est), pickle.dumps(clone(est)), repr(est),
                     repr(est.get_params()), repr(vars(est))]  # fmt: skip
            seen.append(repr(est.model_identity_))
            seen.append(fingerprint(est.model_identity_, "pooled", **est._vector_options()))
        with pytest.raises(ModelNotFoundError, match="nowhere") as missing:
            XLMTVectorizer(str(tmp_path / "nowhere")).fit()
        seen.append(str(missing.value))
    from xlmt_sklearn.cli import main

    (tmp_path / "in.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    assert main(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.parquet"),
                 "--model", str(tiny_model_dir), "--device", "cpu", "--keep-columns",
                 "--cache-dir", str(cache / "cli")]) == 0  # fmt: skip
    assert main(["cache", "info", str(cache / "cli")]) == 0
    _sqlite_store.close_store((cache / "cli" / DEFAULT_FILENAME).resolve())
    out, err = capfd.readouterr()
    seen += [out, err, caplog.text, *(str(w.message) for w in caught)]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".sqlite") for p in files)
    seen += [p.read_bytes() for p in files]
    token = SENTINEL.encode()
    for item in seen:
        data = item if isinstance(item, bytes) else item.encode("utf-8", "surrogatepass")
        assert token not in data and token[3:20] not in data


# --------------------------------------------------------- path-like model names


@pytest.fixture
def no_hub(monkeypatch):
    """Fail loudly if anything asks the Hugging Face hub for a model."""
    calls: list[tuple] = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"hub asked for {args!r}")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    return calls


@pytest.mark.parametrize(
    "name",
    ["../cardiffnlp/twitter-xlm-roberta-base", "./cardiffnlp/twitter-xlm-roberta-base",
     "/cardiffnlp/twitter-xlm-roberta-base", "~/cardiffnlp/twitter-xlm-roberta-base",
     "..", "."],
)  # fmt: skip
def test_missing_path_like_names_never_become_hub_ids(tmp_path, monkeypatch, no_hub, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for cls in (XLMTVectorizer, XLMTTokenVectorizer):
        with pytest.raises(ModelNotFoundError, match=re.escape(repr(name))):
            cls(name).fit()
    assert no_hub == []


def test_path_like_names_resolve_exactly_as_typed(tiny_model_dir, tmp_path, monkeypatch, no_hub):
    models, work = tmp_path / "models", tmp_path / "work"
    shutil.copytree(tiny_model_dir, models / "m")
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(models))
    reference = XLMTVectorizer(str(models / "m"), device="cpu").fit()
    for name in ["../models/m", "../models/m/", str(models / "m"), "~/m", Path("../models/m")]:
        est = XLMTVectorizer(name, device="cpu").fit()
        ident = est.model_identity_
        assert ident.local and ident.name == os.fspath(name)  # kept as typed
        assert ident.content_hash == reference.model_identity_.content_hash
        np.testing.assert_allclose(est.transform(TEXTS), reference.transform(TEXTS), atol=1e-6)
    assert no_hub == []
    # A relative name stays relative: from another working directory it is another folder.
    est = XLMTVectorizer("../models/m", device="cpu").fit()
    monkeypatch.chdir(models / "m")
    with pytest.raises(ModelNotFoundError, match=r"'\.\./models/m' does not exist"):
        clone(est).fit()


def test_hub_like_name_that_is_a_local_folder_is_the_folder(tiny_model_dir, tmp_path,
                                                            monkeypatch, no_hub):  # fmt: skip
    """Like transformers: an existing folder wins over a hub id of the same spelling."""
    shutil.copytree(tiny_model_dir, tmp_path / "cardiffnlp" / "twitter-xlm-roberta-base")
    monkeypatch.chdir(tmp_path)
    est = XLMTVectorizer("cardiffnlp/twitter-xlm-roberta-base", device="cpu").fit()
    assert est.model_identity_.local and no_hub == []


# ------------------------------------------------------------- symbolic links
# Only inside tmp_path: the "victim" is a file of ours standing in for one the user can write.

VICTIM = b"root:x:0:0:root:/root:/bin/bash\n" * 40


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "victim.conf"
    victim.parent.mkdir()
    victim.write_bytes(VICTIM)
    return victim


def _nothing_moved_aside(tmp_path: Path) -> bool:
    return not [p for p in tmp_path.rglob("*") if ".corrupt-" in p.name]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
@pytest.mark.parametrize("kind", ["pooled", "tokens"])
@pytest.mark.parametrize("dangling", [False, True])
def test_symlinked_cache_file_is_refused_and_its_target_untouched(
    tiny_model_dir, tmp_path, fresh, kind, dangling
):
    victim = _victim(tmp_path)
    target = tmp_path / "elsewhere" / "not-yet.conf" if dangling else victim
    link = tmp_path / "shared" / "cache.sqlite"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.warns(CacheWarning, match="symbolic link"):
        got = _est(kind, tiny_model_dir, cache=str(link)).transform(TEXTS)
    _same(kind, got, fresh[kind])
    assert victim.read_bytes() == VICTIM
    assert not (tmp_path / "elsewhere" / "not-yet.conf").exists()
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(p.name for p in link.parent.iterdir()) == ["cache.sqlite"]
    assert _nothing_moved_aside(tmp_path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_symlinked_sqlite_sibling_is_refused_and_its_target_untouched(
    tiny_model_dir, tmp_path, fresh, suffix
):
    victim = _victim(tmp_path)
    path = tmp_path / "c.sqlite"
    Path(f"{path}{suffix}").symlink_to(victim)
    with pytest.warns(CacheWarning, match="symbolic link"):
        got = _est("pooled", tiny_model_dir, cache=str(path)).transform(TEXTS)
    _same("pooled", got, fresh["pooled"])
    assert victim.read_bytes() == VICTIM
    assert _nothing_moved_aside(tmp_path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_link_swapped_in_while_opening_is_refused(tmp_path, monkeypatch):
    """A link planted between the file's creation and SQLite's open is caught after it."""
    victim = _victim(tmp_path)
    path = tmp_path / "c.sqlite"
    real_connect = sqlite3.connect

    def swap_then_connect(name, *args, **kwargs):
        os.remove(name)
        os.symlink(victim, name)
        return real_connect(name, *args, **kwargs)

    monkeypatch.setattr(_sqlite_store.sqlite3, "connect", swap_then_connect)
    cache = EmbeddingCache(path)
    with pytest.warns(CacheWarning, match="symbolic link"):
        assert cache.get_many(make_keys("fp", ["a"])) == [None]
    monkeypatch.undo()
    assert victim.read_bytes() == VICTIM
    assert _nothing_moved_aside(tmp_path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlinked_directory_above_the_cache_is_followed(tiny_model_dir, tmp_path, fresh):
    real = tmp_path / "disk2" / "cache"
    real.mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "cache").symlink_to(real, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        got = _est("pooled", tiny_model_dir, cache=str(tmp_path / "home" / "cache")).transform(
            TEXTS
        )
    _same("pooled", got, fresh["pooled"])
    assert (real / DEFAULT_FILENAME).is_file() and not (real / DEFAULT_FILENAME).is_symlink()
    assert len(EmbeddingCache(tmp_path / "home" / "cache")) == len(TEXTS)
    _sqlite_store.close_store(real / DEFAULT_FILENAME)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
@pytest.mark.parametrize("command", ["info", "clear"])
def test_cli_cache_commands_refuse_a_symlinked_file(tmp_path, capsys, command):
    from xlmt_sklearn.cli import main

    victim = _victim(tmp_path)
    link = tmp_path / "c.sqlite"
    link.symlink_to(victim)
    assert main(["cache", command, str(link)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_bytes() == VICTIM
