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
