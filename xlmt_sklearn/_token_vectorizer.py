"""``XLMTTokenVectorizer``: one vector per subword or per word (Spark NLP style)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._base import ModelFeaturizerMixin
from ._options import DEFAULT_MODEL
from ._params import _fit_context
from .backends._encoders import EncodeOptions
from .flow._dedupe import distinct_inputs
from .flow._inputs import as_texts
from .flow._output import Scatter, TokenFeatures, token_output
from .flow._pipeline import stream
from .flow._pooling import token_width
from .flow._preprocess import apply_preprocess, check_prefix, prepare, resolve_preprocess
from .flow._tokens import (
    assign_words,
    word_spans,
    word_vectors,
)

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


class XLMTTokenVectorizer(ModelFeaturizerMixin, auto_wrap_output_keys=None):
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
        ``embedding`` columns (plus ``n_subwords`` for words). After
        ``set_output(transform="pandas")`` (e.g. by a Pipeline's), ragged
        output is a pandas Series of those arrays, indexed like the input.
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
    backend : {"auto", "torch", "openvino", "onnxruntime"}, default="auto"
        What computes the model. ``"openvino"`` and ``"onnxruntime"`` run a
        copy converted once and kept on disk (docs/backends.md) on the CPU;
        they need the ``[openvino]``/``[onnxruntime]`` extra. ``"auto"``: torch
        on a GPU, with ``compile`` and with ``dtype="float32"``; on a CPU that
        runs bf16 natively (AVX-512 BF16, AMX) with OpenVINO installed,
        OpenVINO (bfloat16; with ``quantize="int8"``, its int8: both measured
        faster), else torch. Vectors of each backend and precision are cached
        apart.
    dtype : {"auto", "float32", "float16", "bfloat16"}, default="auto"
        Compute dtype, as in :class:`XLMTVectorizer` (``"auto"`` on a CPU: float32,
        or bfloat16 with OpenVINO on CPUs that run it natively, and with torch under
        ``backend="auto"`` on AMX and AVX-512 BF16 CPUs); output is float32.
    quantize : {"int8"} or None, default=None
        ``"int8"``: int8 weights, float32 activations (CPU only; torch or the
        runtime's own int8, docs/backends.md).
    calibration_texts : list of str or None, default=None
        With ``quantize="int8"``: OpenVINO's static int8, calibrated on these
        texts (or ``"vocabulary"``), as in :class:`XLMTVectorizer`.
    compile : bool, default=False
        ``torch.compile`` the model.
    cache : str, os.PathLike, EmbeddingCache, CacheBase or None, default=None
        Per-text disk cache of token matrices: a path, an
        :class:`EmbeddingCache`, or any :class:`CacheBase` (or object with
        ``get_many``/``put_many``).
    cache_dtype : {"float32", "float16"}, default="float32"
        Precision of cached matrices. ``"float16"`` halves the disk; every
        value is then rounded to float16 (relative error <= 2**-11, about
        4.9e-4, for values above 6.1e-5 in magnitude; absolute error <= 6e-8
        below), and results are rounded the same way on a miss, so hits equal
        misses.
    progress : bool, "auto" or "log", default="auto"
        tqdm progress bar for long runs; ``"log"``: a line on stderr every ~10 s.
    trust_remote_code : bool, default=False
        Allow model code from the hub repository to run.

    Attributes
    ----------
    model_identity_ : ModelIdentity
        The pinned model.
    backend_ : str
        What computes the vectors on the machine that ran ``fit``: backend and
        precision, e.g. ``"openvino (bfloat16)"`` or ``"torch (float32)"``
        (``backend="auto"`` resolved there). ``fit`` converts and checks
        nothing: a runtime whose first-use self-check fails at ``transform``
        is replaced by torch with a warning (a later ``fit`` says so).
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

    _kind = "tokens"

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
        backend: str = "auto",
        dtype: str = "auto",
        quantize: str | None = None,
        calibration_texts: Any = None,
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
        self.backend = backend
        self.dtype = dtype
        self.quantize = quantize
        self.calibration_texts = calibration_texts
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
        self._check_fit_input(X)
        self._warn_unused()
        self._pin_model()
        ident = self.model_identity_
        self.n_features_out_ = token_width(
            ident.hidden_size, len(self.layers_), self.layer_aggregation
        )
        return self

    def transform(self, X: Any) -> Any:
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
        self._check_fitted()
        batch = as_texts(X, missing=self.missing, words=True)  # 1: inputs
        rows = batch.encoded_rows(self.missing)
        values = [tuple(v) if batch.words else v for v in (batch.texts[r] for r in rows)]
        _, raw_inverse, first = distinct_inputs(values, rows)  # 2: each input once
        docs = self._docs([batch.texts[r] for r in first], batch.words, first.tolist())
        keys, key_of, firsts = distinct_inputs([d.key for d in docs], np.arange(len(docs)))  # 3
        encoders = self._encoders()
        tokenizer = encoders[0].tokenizer()
        enc = self._tokenized(tokenizer, encoders, [docs[j] for j in firsts], batch.words)
        request = self._request(
            keys, self._encode_options(), positions=Scatter(key_of[raw_inverse], rows).positions,
            n_total=len(batch), expected_shapes=[
                (self._n_rows(enc, i), self.n_features_out_) for i in range(len(keys))
            ], encoded=enc, encoders=encoders,
        )  # fmt: skip
        mats: list[np.ndarray] = [np.empty(0)] * len(keys)
        for idx, arrays in stream(request):  # 4-9: cache, encode (token matrices), store
            Scatter.assign(mats, idx, arrays)
        feats = [  # per distinct input: its own words and offsets, its model input's vectors
            self._features(tokenizer, enc, k, d, mats[k], batch.words)
            for d, k in zip(docs, key_of.tolist(), strict=True)
        ]
        return token_output(  # 10: scatter, output
            Scatter(raw_inverse, rows).gather(
                feats, len(batch), TokenFeatures.empty(self.n_features_out_)
            ), batch.index, self.output, self.n_features_out_,
            words=self.granularity == "word", series=self._pandas_output(),
        )  # fmt: skip

    def set_output(self, *, transform: str | None = None) -> XLMTTokenVectorizer:
        """Set the output container, as a Pipeline's ``set_output`` does for every step.

        Token features are not a 2-D table, so ``output`` keeps deciding their
        container; ``transform="pandas"`` turns ``output="ragged"`` into a
        pandas Series of the per-text arrays indexed like the input (so a
        following :class:`TokenPooler` keeps the index too). Other values
        leave the output as it is.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None
            ``None`` leaves the configuration unchanged.

        Returns
        -------
        self : XLMTTokenVectorizer
        """
        if transform is not None:
            self._sklearn_output_config = {"transform": transform}
        return self

    # ---------------------------------------------------------------- private
    _prefix_template = False

    def _pandas_output(self) -> bool:
        from sklearn import get_config

        config = getattr(self, "_sklearn_output_config", {}).get("transform", "default")
        if config == "default":
            config = get_config().get("transform_output", "default")
        return config == "pandas" and self.output == "ragged"

    def _store_dtype(self) -> str:
        return self.cache_dtype

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

    def _docs(self, values: list[Any], presplit: bool, positions: list[int]) -> list[_Doc]:
        """Distinct inputs made ready for the model (:func:`~xlmt_sklearn.flow._preprocess.
        prepare`), with their maps back to the input; ``positions`` name their rows."""
        if presplit:
            return [self._split_doc(v, p) for v, p in zip(values, positions, strict=True)]
        check_prefix(self.prefix, type(self).__name__, template=False)  # set after fit?
        texts, maps = prepare(values, self.preprocess, self.prefix, positions, offsets=True)
        xlmt_or_none = self.preprocess in ("xlmt", None)
        docs = []
        for value, text, (smap, emap) in zip(values, texts, maps, strict=True):
            reference = value if xlmt_or_none else text[len(self.prefix or "") :]
            spans = word_spans(reference, self.word_splitter)
            docs.append(_Doc(text, text, reference, smap, emap, spans, None))
        return docs

    def _split_doc(self, value: list[str], position: int) -> _Doc:
        """A pre-split input: its words preprocessed one by one, the prefix a word."""
        prefix = (self.prefix or "").strip()
        words = apply_preprocess(resolve_preprocess(self.preprocess), list(value),
                                 [position] * len(value))  # fmt: skip
        spans, pos = [], 0
        for w in value:
            spans.append((pos, pos + len(w)))
            pos += len(w) + 1
        model_words = ([prefix] if prefix else []) + words
        key = _SPLIT_MARK + "\x1f".join(model_words)
        changed = [a != b for a, b in zip(words, value, strict=True)]
        return _Doc(key, model_words, " ".join(value), None, None, spans, changed)

    def _tokenized(self, tokenizer: Any, encoders: list, docs: list[_Doc], presplit: bool):
        """The tokenization of each distinct model input (ids, offsets, word ids): read from
        the cache where an earlier call stored it, by the tokenizer otherwise (then stored),
        so that a warm cache skips the tokenizer (docs/architecture.md)."""
        from .backends._loading import _special_tokens
        from .flow._tokenize import from_ids, pack_spans, tokenize, unpack_spans
        from .flow._tuning import TUNING
        from .store._adapt import as_cache

        cache, step = as_cache(self.cache), TUNING.lookup_batch
        keys = self._cache_keys([d.key for d in docs], encoders, "tokenization", {})
        found = [
            None if hit is None else unpack_spans(hit[0], presplit)
            for b in range(0, len(keys), step) for hit in cache.get_many(keys[b : b + step])
        ]  # fmt: skip
        pre, suf = _special_tokens(tokenizer)
        limits = dict(prefix_ids=pre, suffix_ids=suf, max_length=int(self.max_length),
                      windows=self.truncation == "window", stride=self._stride())  # fmt: skip
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            fresh = tokenize(tokenizer, [docs[i].model_input for i in todo], **limits,
                             offsets=True, split_into_words=presplit)  # fmt: skip
            wids = fresh.word_ids or [None] * len(todo)
            packed = []
            for k, i in enumerate(todo):
                found[i] = (fresh.ids[k], fresh.offsets[k], wids[k])
                packed.append((keys[i], pack_spans(*found[i])))
            packed = [(key, v) for key, v in packed if v is not None]
            if packed:
                cache.put_many([k for k, _ in packed], [v for _, v in packed])
        ids, offsets, word_ids = zip(*found, strict=True) if found else ((), (), ())
        return from_ids(ids, **limits, offsets=list(offsets),
                        word_ids=list(word_ids) if presplit else None)  # fmt: skip

    @staticmethod
    def _n_rows(enc, i: int) -> int:
        kept = enc.n_content[i] if enc.n_windows[i] > 1 else min(enc.n_content[i], enc.capacity)
        return int(enc.n_prefix + kept + enc.n_suffix)

    def _encode_options(self) -> EncodeOptions:
        return EncodeOptions(
            layers=self.layers_, layer_aggregation=self.layer_aggregation, pooling=None,
            batch_size=int(self.batch_size), max_tokens=self.max_tokens,
        )  # fmt: skip

    def _features(
        self, tok: Any, enc: Any, i: int, doc: _Doc, mat: np.ndarray, presplit: bool
    ) -> TokenFeatures:
        """Cut one text's token matrix into the requested units, with offsets."""
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
            return TokenFeatures(vecs, words, b, e, counts)
        pieces = tok.convert_ids_to_tokens(list(ids))
        if self.special_tokens:
            head = tok.convert_ids_to_tokens(self._special_ids(enc, i, front=True))
            tail = tok.convert_ids_to_tokens(self._special_ids(enc, i, front=False))
            tokens = head + pieces + tail
            minus = np.full(n_pre, -1, np.int64)
            begin = np.concatenate([minus, begin, np.full(n_suf, -1, np.int64)])
            end = np.concatenate([minus, end, np.full(n_suf, -1, np.int64)])
            return TokenFeatures(mat, tokens, begin, end)
        keep = ~is_prefix
        return TokenFeatures(
            content[keep], [p for p, k in zip(pieces, keep, strict=True) if k], begin[keep],
            end[keep],
        )  # fmt: skip

    @staticmethod
    def _special_ids(enc, i: int, front: bool) -> list[int]:
        row = enc.rows[int(np.flatnonzero(enc.row_text == i)[0 if front else -1])]
        return row[: enc.n_prefix] if front else row[len(row) - enc.n_suffix :]
