"""``XLMTTokenVectorizer``: one vector per subword or per word (Spark NLP style)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._base import ModelFeaturizerMixin, input_positions
from ._dedupe import unique_texts
from ._inputs import as_texts, is_missing
from ._params import MODEL_PARAMETER_CONSTRAINTS, StrOptions, _fit_context
from ._preprocess import preprocess_with_offsets, resolve_preprocess
from ._tokens import assign_words, pad_ragged, word_spans, word_vectors
from ._vectorizer import DEFAULT_MODEL

__all__ = ["XLMTTokenVectorizer"]

_SPLIT_MARK = "\x00words\x00"  # cache-key prefix of pre-split inputs ("\x1f" joins words)


@dataclass(frozen=True)
class _Doc:
    """One distinct input, ready for the model, with the maps back to the input."""

    key: str  # cache key text (model input)
    model_input: Any  # str, or list of words for pre-split input
    reference: str  # the text offsets refer to
    start_map: list[int] | None  # model-text char -> reference char (raw input)
    end_map: list[int] | None
    spans: list[tuple[int, int]]  # words of `reference`
    word_changed: list[bool] | None  # pre-split: was the word rewritten by preprocess


class XLMTTokenVectorizer(ModelFeaturizerMixin):
    """Embed texts token by token: one vector per subword or per word.

    The token-level twin of :class:`XLMTVectorizer`, after Spark NLP's
    ``XlmRoBertaEmbeddings``: every input word (or subword) gets the model's
    hidden vector, with its text and character offsets. Token matrices are
    cached per text (special tokens included), so switching granularity,
    word vectors or output format never re-runs the model, and a
    :class:`TokenPooler` after it can grid-search the pooling for free.

    Parameters
    ----------
    model : str or os.PathLike, default="cardiffnlp/twitter-xlm-roberta-base"
        A Hugging Face hub id or a local folder, as in :class:`XLMTVectorizer`.
    revision : str or None, default=None
        Hub branch, tag or commit; ``fit`` pins the resolved commit hash.
    granularity : {"subword", "word"}, default="subword"
        One vector per model token, or one per word of the input.
    word_vector : {"first", "mean"}, default="first"
        For words: the vector of the word's first subword (Spark NLP's
        behaviour) or the mean of its subwords.
    word_splitter : callable or None, default=None
        ``str -> list of str`` giving the words of a raw text (substrings, in
        order); None splits on whitespace. Pre-split input needs none.
    special_tokens : bool, default=False
        Keep ``<s>``/``</s>`` (and any ``prefix`` tokens) in subword output.
    output : {"ragged", "padded", "frame"}, default="ragged"
        ``"ragged"``: an object array of ``(n_tokens_i, dim)`` float32 arrays;
        ``"padded"``: a :class:`PaddedTokens` (3-D ``values`` + boolean
        ``mask``); ``"frame"``: a long pandas DataFrame, one row per token,
        indexed like the input, with ``position``, ``token``, ``begin``,
        ``end`` (character offsets into the input, end exclusive) and
        ``embedding`` columns (plus ``n_subwords`` for words).
    layers : int or sequence of int, default=-1
        Which ``hidden_states`` to use (0 = embeddings, -1 = last layer).
    layer_aggregation : {"mean", "concat"}, default="mean"
        How several ``layers`` are combined per token.
    preprocess : "xlmt", callable or None, default="xlmt"
        Text normalisation before tokenization (see :func:`normalize_tweet`).
        With ``"xlmt"`` or None, offsets point into the original input (a
        rewritten ``@handle`` maps to the whole handle); with a callable they
        point into the preprocessed text.
    prefix : str or None, default=None
        Text put before every input (e.g. ``"query: "``); its tokens are
        dropped from the output unless ``special_tokens=True``.
    max_length : int, default=128
        Longest model input in tokens, special tokens included.
    truncation : {"warn", "error", "window"}, default="warn"
        Longer texts are truncated with one :class:`TruncationWarning`
        (tokens past the limit get no vector; words past it get a zero vector
        and ``n_subwords=0``), refused, or encoded in overlapping windows and
        merged (each token's vector comes from the window where it is most
        central).
    stride : int or None, default=None
        Tokens shared by consecutive windows; None means ``max_length // 4``.
    missing : {"error", "empty", "zeros"}, default="error"
        None/NaN inputs raise, are encoded as the empty text, or give zero
        tokens (an empty ``(0, dim)`` matrix).
    batch_size : int, default=32
        Most texts per forward pass.
    max_tokens : int, "auto" or None, default="auto"
        Most padded tokens per forward pass. ``"auto"``: no cap on the CPU; on a
        CUDA card, a budget sized from its free memory and the model's shape.
        None: no cap.
    device : str or list of str, default="auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``; or a list of devices of one kind, e.g. ``["cuda:0", "cuda:1"]``:
        each runs a replica of the model and takes the next batch when free.
    dtype : {"auto", "float32", "float16", "bfloat16"}, default="auto"
        Compute dtype (float32 on CPU under ``"auto"``); output is float32.
    quantize : {"int8"} or None, default=None
        Dynamic int8 quantization of the linear layers (CPU only).
    compile : bool, default=False
        ``torch.compile`` the model.
    cache : str, os.PathLike, EmbeddingCache or None, default=None
        Per-text disk cache of token matrices.
    cache_dtype : {"float32", "float16"}, default="float32"
        Precision of cached matrices. ``"float16"`` halves the disk; every
        value is then rounded to float16 (relative error <= 2**-11, about
        4.9e-4, for values above 6.1e-5 in magnitude; absolute error <= 6e-8
        below), and results are rounded the same way on a miss, so hits equal
        misses.
    progress : bool or "auto", default="auto"
        tqdm progress bar for long runs.
    trust_remote_code : bool, default=False
        Allow model code from the hub repository to run.

    Attributes
    ----------
    model_identity_ : ModelIdentity
        The pinned model.
    layers_ : tuple of int
        The validated ``layers``.
    n_features_out_ : int
        Width of one token vector.

    See Also
    --------
    TokenPooler : Pool token features into one row per text.
    XLMTVectorizer : Pooled vectors directly.

    Examples
    --------
    >>> vec = XLMTTokenVectorizer(granularity="word", output="frame")  # doctest: +SKIP
    >>> vec.fit_transform(["Hello @maria 😀"])  # doctest: +SKIP
    """

    _parameter_constraints: dict = {
        **MODEL_PARAMETER_CONSTRAINTS,
        "granularity": [StrOptions({"subword", "word"})],
        "word_vector": [StrOptions({"first", "mean"})],
        "word_splitter": [callable, None],
        "special_tokens": ["boolean"],
        "output": [StrOptions({"ragged", "padded", "frame"})],
        "cache_dtype": [StrOptions({"float32", "float16"})],
    }

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        granularity: str = "subword",
        word_vector: str = "first",
        word_splitter: Any = None,
        special_tokens: bool = False,
        output: str = "ragged",
        layers: int | list[int] = -1,
        layer_aggregation: str = "mean",
        preprocess: Any = "xlmt",
        prefix: str | None = None,
        max_length: int = 128,
        truncation: str = "warn",
        stride: int | None = None,
        missing: str = "error",
        batch_size: int = 32,
        max_tokens: int | str | None = "auto",
        device: str | list[str] = "auto",
        dtype: str = "auto",
        quantize: str | None = None,
        compile: bool = False,
        cache: Any = None,
        cache_dtype: str = "float32",
        progress: bool | str = "auto",
        trust_remote_code: bool = False,
    ):
        self.model = model
        self.revision = revision
        self.granularity = granularity
        self.word_vector = word_vector
        self.word_splitter = word_splitter
        self.special_tokens = special_tokens
        self.output = output
        self.layers = layers
        self.layer_aggregation = layer_aggregation
        self.preprocess = preprocess
        self.prefix = prefix
        self.max_length = max_length
        self.truncation = truncation
        self.stride = stride
        self.missing = missing
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.compile = compile
        self.cache = cache
        self.cache_dtype = cache_dtype
        self.progress = progress
        self.trust_remote_code = trust_remote_code

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any = None, y: Any = None) -> XLMTTokenVectorizer:
        """Validate the parameters and pin the model; encodes nothing.

        Parameters
        ----------
        X : iterable of str or of lists of str, optional
            Ignored (checked for type when given).
        y : None
            Ignored.

        Returns
        -------
        self : XLMTTokenVectorizer
        """
        if X is not None:
            self._rows(X)
        self._warn_unused()
        self._pin_model()
        ident = self.model_identity_
        concat = self.layer_aggregation == "concat" and len(self.layers_) > 1
        self.n_features_out_ = ident.hidden_size * (len(self.layers_) if concat else 1)
        return self

    def transform(self, X: Any):
        """Token vectors for every text of ``X``.

        Parameters
        ----------
        X : iterable of str, or iterable of lists of str (pre-split words)
            A list, array, Series or one-column DataFrame of texts, or of word
            lists (like Spark NLP's ``token`` column).

        Returns
        -------
        ndarray of objects, PaddedTokens or pandas.DataFrame
            Per ``output``.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        values, index, missing_rows, presplit = self._rows(X)  # 1: inputs
        rows = np.setdiff1d(np.arange(len(values)), missing_rows)
        if self.missing == "empty":
            rows = np.arange(len(values))
        docs_all = [self._doc(values[i], presplit) for i in rows]  # 2: preprocess
        uniq_keys, inverse = unique_texts([d.key for d in docs_all])  # 3: dedupe
        first = {k: j for j, k in reversed(list(enumerate(inverse)))}
        docs = [docs_all[first[u]] for u in range(len(uniq_keys))]
        enc = self._tokenize(docs, presplit)
        mats, _ = self._encode_unique(  # 4-9: cache, forward (token matrices)
            uniq_keys,
            kind="tokens",
            options=self._vector_options(),
            encode_options=self._encode_options(),
            positions=input_positions(inverse, rows),
            n_total=len(values),
            expected_shape=lambda i, a: a.shape == (self._n_rows(enc, i), self.n_features_out_),
            encoded=enc,
            store_dtype=self.cache_dtype,
        )
        per_doc = [self._features(enc, i, docs[i], mats[i], presplit) for i in range(len(docs))]
        empty = self._features_empty()
        feats = [empty] * len(values)  # 10: scatter
        for j, r in enumerate(rows):
            feats[r] = per_doc[inverse[j]]
        return self._to_output(feats, index)

    # ---------------------------------------------------------------- private
    def _warn_unused(self) -> None:
        if self.granularity == "subword" and (
            self.word_vector != "first" or self.word_splitter is not None
        ):
            warnings.warn(
                "word_vector and word_splitter only apply with granularity='word'; ignored.",
                UserWarning,
                stacklevel=3,
            )
        if self.granularity == "word" and self.special_tokens:
            warnings.warn(
                "special_tokens=True only applies with granularity='subword'; ignored.",
                UserWarning,
                stacklevel=3,
            )

    def _rows(self, X: Any) -> tuple[list[Any], Any, np.ndarray, bool]:
        """Inputs: texts, or lists of words (detected from the first non-missing row)."""
        seq = X
        index = getattr(X, "index", None) if type(X).__module__.startswith("pandas") else None
        if type(X).__module__.startswith("pandas") and hasattr(X, "columns"):
            if X.shape[1] != 1:
                return self._text_rows(X)
            seq = X.iloc[:, 0]
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
            return self._text_rows(X)
        if isinstance(seq, np.ndarray) and seq.ndim != 1:
            return self._text_rows(X)  # (n, 1) is a text column, as for XLMTVectorizer
        values = list(seq.tolist() if hasattr(seq, "tolist") else seq)
        probe = next((v for v in values if not is_missing(v)), None)
        if not isinstance(probe, (list, tuple, np.ndarray)):
            return self._text_rows(X)
        missing_rows = []
        for i, v in enumerate(values):
            if is_missing(v):
                missing_rows.append(i)
                continue
            if not isinstance(v, (list, tuple, np.ndarray)):
                raise TypeError(
                    f"Mixed input: row 0 is a list of words but row {i} is a "
                    f"{type(v).__name__}. Pass all texts or all word lists."
                )
            for w in v:
                if not isinstance(w, str):
                    raise TypeError(
                        f"Pre-split input must hold lists of str; row {i} holds a "
                        f"{type(w).__name__}."
                    )
        gone = set(missing_rows)
        if gone and self.missing == "error":
            as_texts([None if i in gone else "" for i in range(len(values))])  # raises
        values = [[] if i in gone else list(map(str, v)) for i, v in enumerate(values)]
        return values, index, np.asarray(missing_rows, dtype=np.int64), True

    def _text_rows(self, X: Any) -> tuple[list[Any], Any, np.ndarray, bool]:
        batch = as_texts(X, missing=self.missing)
        missing = np.asarray(batch.missing_positions, dtype=np.int64)
        return batch.texts, batch.index, missing, False

    def _doc(self, value: Any, presplit: bool) -> _Doc:
        prefix = self.prefix or ""
        if presplit:
            fn = resolve_preprocess(self.preprocess)
            words = [fn(w) for w in value]
            reference = " ".join(value)
            spans, pos = [], 0
            for w in value:
                spans.append((pos, pos + len(w)))
                pos += len(w) + 1
            model_words = ([prefix.strip()] if prefix.strip() else []) + words
            key = _SPLIT_MARK + "\x1f".join(model_words)
            changed = [a != b for a, b in zip(words, value, strict=True)]
            return _Doc(key, model_words, reference, None, None, spans, changed)
        text, smap, emap = preprocess_with_offsets(self.preprocess, value)
        reference = value if (self.preprocess in ("xlmt", None)) else text
        if prefix and "{text}" in prefix:
            raise ValueError("XLMTTokenVectorizer needs a plain prefix, not a '{text}' template.")
        spans = word_spans(reference, self.word_splitter)
        return _Doc(prefix + text, prefix + text, reference, smap, emap, spans, None)

    def _tokenize(self, docs: list[_Doc], presplit: bool):
        from ._model import _special_tokens as specials
        from ._model import get_tokenizer
        from ._tokenize import tokenize

        specs, _ = self._runtime()
        tok = get_tokenizer(specs[0])
        pre, suf = specials(tok)
        return tokenize(
            tok, [d.model_input for d in docs], prefix_ids=pre, suffix_ids=suf,
            max_length=int(self.max_length), windows=self.truncation == "window",
            stride=self._stride(), offsets=True, split_into_words=presplit,
        )  # fmt: skip

    @staticmethod
    def _n_rows(enc, i: int) -> int:
        kept = enc.n_content[i] if enc.n_windows[i] > 1 else min(enc.n_content[i], enc.capacity)
        return int(enc.n_prefix + kept + enc.n_suffix)

    def _encode_options(self):
        from ._forward import EncodeOptions

        return EncodeOptions(
            layers=self.layers_, layer_aggregation=self.layer_aggregation, pooling=None,
            batch_size=int(self.batch_size), max_tokens=self.max_tokens,
        )  # fmt: skip

    def _features_empty(self) -> dict[str, Any]:
        d = self.n_features_out_
        e = np.zeros(0, dtype=np.int64)
        return {"vectors": np.zeros((0, d), np.float32), "tokens": [], "begin": e, "end": e, "n": e}

    def _features(self, enc, i: int, doc: _Doc, mat: np.ndarray, presplit: bool) -> dict:
        """Cut one text's token matrix into the requested units, with offsets."""
        from ._model import get_tokenizer

        n_pre, n_suf = enc.n_prefix, enc.n_suffix
        content = mat[n_pre : len(mat) - n_suf]
        kept = len(content)
        ids = enc.ids[i][:kept]
        offs = enc.offsets[i][:kept]
        if presplit:
            wid = enc.word_ids[i][:kept].copy()
            n_prefix_words = len(doc.model_input) - len(doc.spans)
            is_prefix = wid < n_prefix_words
            wid -= n_prefix_words
            begin = np.empty(kept, np.int64)
            end = np.empty(kept, np.int64)
            for k in range(kept):
                w = wid[k]
                if w < 0:
                    begin[k] = end[k] = -1
                elif doc.word_changed[w]:
                    begin[k], end[k] = doc.spans[w]
                else:
                    begin[k] = doc.spans[w][0] + offs[k][0]
                    end[k] = doc.spans[w][0] + offs[k][1]
        else:
            lp = len(self.prefix or "")
            is_prefix = offs[:, 0] < lp if lp else np.zeros(kept, bool)
            local = np.clip(offs - lp, 0, None)
            begin = np.asarray([doc.start_map[b] for b in local[:, 0]], np.int64)
            end = np.asarray([doc.end_map[e] for e in local[:, 1]], np.int64)
            begin[is_prefix] = end[is_prefix] = -1
            wid = assign_words(np.stack([begin, end], axis=1), doc.spans)
            wid[is_prefix] = -1
        if self.granularity == "word":
            vecs, counts = word_vectors(content, wid, len(doc.spans), self.word_vector)
            words = [doc.reference[b:e] for b, e in doc.spans]
            b = np.asarray([s for s, _ in doc.spans], np.int64).reshape(-1)
            e = np.asarray([t for _, t in doc.spans], np.int64).reshape(-1)
            return {"vectors": vecs, "tokens": words, "begin": b, "end": e, "n": counts}
        specs, _ = self._runtime()
        tok = get_tokenizer(specs[0])
        pieces = tok.convert_ids_to_tokens(list(ids))
        if self.special_tokens:
            head = tok.convert_ids_to_tokens(self._special_ids(enc, i, front=True))
            tail = tok.convert_ids_to_tokens(self._special_ids(enc, i, front=False))
            tokens = head + pieces + tail
            minus = np.full(n_pre, -1, np.int64)
            begin = np.concatenate([minus, begin, np.full(n_suf, -1, np.int64)])
            end = np.concatenate([minus, end, np.full(n_suf, -1, np.int64)])
            return {"vectors": mat, "tokens": tokens, "begin": begin, "end": end, "n": None}
        keep = ~is_prefix
        return {
            "vectors": content[keep],
            "tokens": [p for p, k in zip(pieces, keep, strict=True) if k],
            "begin": begin[keep],
            "end": end[keep],
            "n": None,
        }

    @staticmethod
    def _special_ids(enc, i: int, front: bool) -> list[int]:
        row = enc.rows[int(np.flatnonzero(enc.row_text == i)[0 if front else -1])]
        return row[: enc.n_prefix] if front else row[len(row) - enc.n_suffix :]

    def _to_output(self, feats: list[dict], index: Any):
        if self.output == "ragged":
            out = np.empty(len(feats), dtype=object)
            for i, f in enumerate(feats):
                out[i] = f["vectors"]
            return out
        if self.output == "padded":
            return pad_ragged([f["vectors"] for f in feats], self.n_features_out_)
        import pandas as pd

        idx_values = list(index) if index is not None else list(range(len(feats)))
        lengths = [len(f["vectors"]) for f in feats]
        rep = np.repeat(np.arange(len(feats)), lengths)
        embedding = np.empty(int(sum(lengths)), dtype=object)
        k = 0
        for f in feats:
            for v in f["vectors"]:
                embedding[k] = v
                k += 1
        frame = pd.DataFrame(
            {
                "position": np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
                if lengths
                else np.zeros(0, np.int64),
                "token": [t for f in feats for t in f["tokens"]],
                "begin": np.concatenate([f["begin"] for f in feats]) if feats else [],
                "end": np.concatenate([f["end"] for f in feats]) if feats else [],
            },
            index=pd.Index([idx_values[r] for r in rep], name=getattr(index, "name", None)),
        )
        if self.granularity == "word":
            frame["n_subwords"] = np.concatenate([f["n"] for f in feats]) if feats else []
        frame["embedding"] = embedding
        return frame
