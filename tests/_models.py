"""Builders for tiny offline test models and access to ../shared assets."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("XLMT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))

CORPUS = [
    "hello world this is a tweet about the weather",
    "hola mundo qué tal estás hoy",
    "@user http bonjour le monde 😀 #hashtag!!!",
    "مرحبا بالعالم كيف حالك",
    "नमस्ते दुनिया आप कैसे हैं",
    "guten Tag liebe Welt, wie geht's?",
    "ciao mondo, tutto bene? 🙂🙂",
    "olá mundo!!! ... ??? 12345",
]


def build_tokenizer(folder: Path, vocab_size: int = 400):
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizerFast

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(
        CORPUS * 20,
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok = XLMRobertaTokenizerFast(
        tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
    )  # fmt: skip
    tok.save_pretrained(folder)
    return tok


def build_tiny_model(folder: Path, seed: int = 0, kind: str = "xlmr", tokenizer_dir=None) -> Path:
    """Save a random tiny encoder + tokenizer in ``folder`` and return it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        tok.save_pretrained(folder)
    else:
        tok = build_tokenizer(folder)
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    if kind == "xlmr":
        cfg = XLMRobertaConfig(
            **common, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2
        )
        model = XLMRobertaModel(cfg)
    elif kind == "bert":
        cfg = BertConfig(**common, max_position_embeddings=512, pad_token_id=1)
        model = BertModel(cfg)
    else:
        raise ValueError(kind)
    model.eval()
    model.save_pretrained(folder)
    return folder


def real_tokenizer_dir() -> Path | None:
    p = SHARED / "models" / "xlm-roberta-tokenizer"
    return p if (p / "tokenizer.json").is_file() else None


LANGS = ["arabic", "english", "french", "german", "hindi", "italian", "portuguese", "spanish"]


def umsab_texts(per_language: int = 6, split: str = "test") -> list[str] | None:
    root = SHARED / "data" / "umsab"
    if not root.is_dir():
        return None
    out: list[str] = []
    for lang in LANGS:
        lines = (root / lang / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
        out.extend(lines[:per_language])
    return out


def tweet_like_texts(n: int) -> list[str]:
    """Tweet-like texts of varied lengths, with duplicates, handles and links."""
    out = []
    for i in range(n):
        base = CORPUS[i % len(CORPUS)]
        extra = " ".join(CORPUS[(i * 7 + k) % len(CORPUS)] for k in range(i % 4))
        out.append(f"@someone{i % 13} {base} {i % 37} http://t.co/{i % 5} {extra}".strip())
    return out
