"""Model identity, loading errors, and the default hub name through a fake offline cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._models import build_tiny_model
from xlmt_sklearn import ModelLoadError, ModelNotFoundError, XLMTVectorizer
from xlmt_sklearn._model import looks_like_path, resolve_identity

REPO = Path(__file__).resolve().parents[1]
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_fake_hub_cache(root: Path, model_dir: Path, repo_id: str) -> Path:
    """Lay out ``model_dir`` as the Hugging Face cache would after a download."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / FAKE_COMMIT
    shutil.copytree(model_dir, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    return root


def test_default_model_loads_offline_from_fake_hub_cache(tiny_model_dir, tmp_path):
    cache = make_fake_hub_cache(
        tmp_path / "hub", tiny_model_dir, "cardiffnlp/twitter-xlm-roberta-base"
    )
    code = textwrap.dedent(
        """
        import pickle, numpy as np
        from xlmt_sklearn import XLMTVectorizer
        v = XLMTVectorizer().fit()
        ident = v.model_identity_
        assert ident.name == "cardiffnlp/twitter-xlm-roberta-base", ident
        assert ident.revision == "FAKE_COMMIT" and not ident.local, ident
        out = v.transform(["@someone hello https://t.co/x", "hola"])
        assert out.shape == (2, 32) and np.isfinite(out).all()
        again = pickle.loads(pickle.dumps(v)).transform(["@someone hello https://t.co/x", "hola"])
        assert np.array_equal(out, again)
        print("OK")
        """
    ).replace("FAKE_COMMIT", FAKE_COMMIT)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_unknown_hub_model_offline_error_is_clear(tmp_path):
    code = textwrap.dedent(
        """
        from xlmt_sklearn import XLMTVectorizer, ModelNotFoundError
        try:
            XLMTVectorizer("someone/no-such-model", revision="v1").fit()
        except ModelNotFoundError as e:
            print("MSG:", e)
        """
    )
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    msg = res.stdout
    assert "MSG: Cannot find model 'someone/no-such-model' at revision 'v1'" in msg, res.stderr[
        -2000:
    ]
    assert "pass the local folder" in msg and "HF_HUB_OFFLINE" in msg


@pytest.mark.parametrize("name", ["./no/such/dir", "../nothere", "/abs/missing", "~/missing-model"])
def test_path_like_names_never_fall_back_to_hub(name):
    assert looks_like_path(name)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_identity(name)


def test_hub_ids_are_not_paths():
    assert not looks_like_path("cardiffnlp/twitter-xlm-roberta-base")
    assert looks_like_path(Path("relative-dir"))


def test_missing_weights(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelNotFoundError, match="has no weights"):
        XLMTVectorizer(str(d)).fit()


def test_missing_config(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        XLMTVectorizer(str(tmp_path / "m")).fit()


def test_corrupt_config(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="Cannot read the config"):
        XLMTVectorizer(str(d)).fit()


def test_decoder_only_model_rejected(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "gpt"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(d)
    with pytest.raises(ModelLoadError, match="decoder-only language model"):
        XLMTVectorizer(str(d)).fit()


def test_tokenizer_without_fast_version(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "tokenizer.json").unlink()
    vec = XLMTVectorizer(str(d), device="cpu").fit()
    with pytest.raises(ModelLoadError, match=r"tokenizer files .* are missing"):
        vec.transform(["x"])


def test_identity_from_config_only(tiny_model_dir):
    ident, folder = resolve_identity(str(tiny_model_dir))
    assert ident.local and ident.revision is None and len(ident.content_hash) == 64
    assert (ident.hidden_size, ident.num_hidden_layers, ident.max_positions) == (32, 2, 512)
    assert folder == str(tiny_model_dir)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == ident.model_type


def test_content_hash_changes_with_weights(tmp_path):
    a = resolve_identity(str(build_tiny_model(tmp_path / "a", seed=1)))[0].content_hash
    b = resolve_identity(str(build_tiny_model(tmp_path / "b", seed=2)))[0].content_hash
    assert a != b


def test_trust_remote_code_off_by_default():
    assert XLMTVectorizer().trust_remote_code is False


# ---------------------------------------------------------------- hardening (#18)


@pytest.mark.parametrize("value", ["-1", "0", "abc", "1.5"])
def test_max_models_variable_is_validated_before_any_load(tiny_model_dir, monkeypatch, value):
    from xlmt_sklearn.backends import _loading

    _loading.clear_model_registry()
    monkeypatch.setenv("XLMT_SKLEARN_MAX_MODELS", value)
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit()
    with pytest.raises(ValueError, match=r"XLMT_SKLEARN_MAX_MODELS must be an integer >= 1"):
        vec.transform(["hello"])
    assert _loading.load_count()["model"] == 0 or not _loading.loaded_models()
    monkeypatch.setenv("XLMT_SKLEARN_MAX_MODELS", "1")
    assert vec.transform(["hello"]).shape == (1, 32)


def test_malloc_tuning_variable_is_validated_before_any_batch(tiny_model_dir, monkeypatch):
    from xlmt_sklearn.flow import _scheduler

    _scheduler._glibc.cache_clear()
    monkeypatch.setenv("XLMT_SKLEARN_MALLOC_TUNING", "maybe")
    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit()
    try:
        with pytest.raises(ValueError, match=r"XLMT_SKLEARN_MALLOC_TUNING must be 1 or 0"):
            vec.transform(["hello"])
    finally:
        monkeypatch.delenv("XLMT_SKLEARN_MALLOC_TUNING")
        _scheduler._glibc.cache_clear()


def test_a_mistyped_local_folder_is_not_sent_to_the_hub(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    (tmp_path / "models").mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "e5-small")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _never_called)
    with pytest.raises(ModelNotFoundError, match=r"'models/e5-smal' does not exist.*'models' is a "
                       r"local folder.*Close matches in 'models': e5-small"):  # fmt: skip
        XLMTVectorizer("models/e5-smal").fit()
    assert XLMTVectorizer("models/e5-small").fit().model_identity_.local


def _never_called(*args, **kwargs):
    raise AssertionError("the hub was asked")


def test_an_unreachable_hub_reads_the_local_cache_only(tmp_path, monkeypatch):
    """No route to the hub: one look in the local cache, no ~25 s of retries."""
    import huggingface_hub

    from xlmt_sklearn import _model

    calls = []

    def download(*args, **kwargs):
        calls.append(kwargs)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(_model, "_hub_reachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ModelNotFoundError, match="the hub cannot be reached and it is not in") as e:
        XLMTVectorizer("someorg/somemodel").fit()
    assert [c["local_files_only"] for c in calls] == [True]
    assert "not in the cache" not in str(e.value)  # the hub's own text, offline


def test_hub_probe_opens_no_connection_when_offline(monkeypatch):
    import socket

    from huggingface_hub import constants

    from xlmt_sklearn._model import _hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", _never_called)
    assert _hub_reachable() is False


def test_hub_probe_defers_to_a_proxy(monkeypatch):
    """Behind HTTPS_PROXY a direct TCP probe fails although the hub client would get through."""
    import socket

    from huggingface_hub import constants

    from xlmt_sklearn._model import _hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setattr(socket, "create_connection", _never_called)
    assert _hub_reachable() is True


def _save_without(tiny_model_dir, dst, drop):
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_model_dir, dst)
    weights = load_file(dst / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if not k.startswith(drop)}, dst / "model.safetensors"
    )
    return dst


def test_a_missing_pooler_loads_quietly(tiny_model_dir, tmp_path, capfd, caplog):
    import warnings

    folder = _save_without(tiny_model_dir, tmp_path / "nopool", "pooler.")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        XLMTVectorizer(str(folder), device="cpu").fit().transform(["hello"])
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err + caplog.text


def test_missing_encoder_weights_are_a_warning(tiny_model_dir, tmp_path):
    folder = _save_without(tiny_model_dir, tmp_path / "broken", "encoder.layer.1.output")
    with pytest.warns(UserWarning, match=r"missing 4 weights.*encoder\.layer\.1\.output"):
        XLMTVectorizer(str(folder), device="cpu").fit().transform(["hello"])


def test_weights_swapped_in_place_with_the_same_size_and_mtime_are_noticed(tmp_path):
    """ctime and inode are part of the folder-hash memo: size+mtime alone can be faked."""
    from xlmt_sklearn.backends import _loading

    folder = build_tiny_model(tmp_path / "m", seed=3)
    other = build_tiny_model(tmp_path / "o", seed=4)
    vec = XLMTVectorizer(str(folder), device="cpu").fit()
    vec.transform(["hello"])
    weights = folder / "model.safetensors"
    st = weights.stat()
    assert (other / "model.safetensors").stat().st_size == st.st_size
    for mode in ("in place", "renamed over"):
        if mode == "in place":
            weights.write_bytes((other / "model.safetensors").read_bytes())
        else:
            shutil.copy(other / "model.safetensors", tmp_path / "x")
            os.replace(tmp_path / "x", weights)
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
        _loading.clear_model_registry()
        with pytest.raises(ModelLoadError, match="changed since the estimator was fitted"):
            vec.transform(["hello"])
        assert XLMTVectorizer(str(folder)).fit().model_identity_ != vec.model_identity_
