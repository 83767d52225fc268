"""``XLMTVectorizer``: one pooled transformer vector per text."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from ._base import ModelFeaturizerMixin, validate_layers
from ._options import DEFAULT_MODEL
from ._params import _fit_context
from .backends._encoders import EncodeOptions
from .flow._inputs import as_texts
from .flow._layer_stats import derivable, derive, layer_stats, stats_shape
from .flow._pipeline import stream
from .flow._pooling import pooled_width

__all__ = ["DEFAULT_MODEL", "XLMTVectorizer"]


class XLMTVectorizer(ModelFeaturizerMixin):
    """Embed texts with a transformer encoder: one pooled vector per text.

    Texts are normalised like tweets (XLM-T's rule), deduplicated, looked up
    in an optional disk cache, tokenized once with the model's fast tokenizer,
    encoded in batches sorted by token length (little padding) and pooled.
    The model loads lazily on the first transform that needs it and is shared
    by every clone in the process; the estimator itself never holds weights.

    Parameters
    ----------
    model : str or os.PathLike, default="cardiffnlp/twitter-xlm-roberta-base"
        A Hugging Face hub id or a local folder (``save_pretrained`` output).
        Names starting with ``/``, ``.`` or ``~`` are always local paths.
        Default: XLM-T, XLM-RoBERTa base further trained on multilingual tweets.
    revision : str or None, default=None
        Hub branch, tag or commit. ``fit`` pins the resolved commit hash so a
        pickled estimator keeps using exactly the same weights.
    pooling : {"mean", "cls", "max", "mean_max"}, default="mean"
        ``"mean"``: average of all non-padding token vectors (special tokens
        included, as sentence-transformers does); ``"cls"``: the first token;
        ``"max"``: per-dimension maximum; ``"mean_max"``: both, concatenated.
    layers : int or sequence of int, default=-1
        Which ``hidden_states`` to use (0 = embeddings, -1 = last layer).
    layer_aggregation : {"mean", "concat"}, default="mean"
        How several ``layers`` are combined per token before pooling: their
        average, or their concatenation (width multiplied by ``len(layers)``).
    normalize : bool, default=False
        L2-normalise each output row.
    preprocess : "xlmt", callable or None, default="xlmt"
        Text normalisation before tokenization. ``"xlmt"`` is
        :func:`normalize_tweet` (``@handle`` -> ``@user``, ``http...`` ->
        ``http``), the rule XLM-T was trained with; a callable ``str -> str``;
        None keeps texts as they are.
    prefix : str or None, default=None
        Text put before every input after preprocessing (e.g. ``"query: "``
        for E5 models). A string containing ``"{text}"`` is a template.
    max_length : int, default=128
        Longest input in tokens, special tokens included (tweets rarely need
        more than 128; the model's limit, 512 for XLM-R, is checked in fit).
    truncation : {"warn", "error", "window"}, default="warn"
        Longer texts are truncated with one :class:`TruncationWarning` per call
        naming their positions (``"warn"``), refused with a ``ValueError``
        (``"error"``), or encoded in overlapping windows whose token vectors
        are merged before pooling (``"window"``).
    stride : int or None, default=None
        Tokens shared by consecutive windows (``truncation="window"``);
        None means ``max_length // 4``.
    missing : {"error", "empty", "zeros"}, default="error"
        None/NaN/pd.NA inputs raise a ``ValueError`` naming their positions,
        are embedded as the empty text, or get an all-zero row.
    batch_size : int, default=32
        Most texts per forward pass.
    max_tokens : int, "auto" or None, default="auto"
        Most padded tokens per forward pass (``batch_size`` x the longest text
        of the batch). ``"auto"``: no cap on the CPU; on a CUDA card, a budget
        sized from its free memory and the model's shape (so a large
        ``batch_size`` cannot run out of memory). None: no cap.
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
        Compute dtype. ``"auto"``: bfloat16/float16 on a GPU; on a CPU, float32
        with torch and ONNX Runtime, and bfloat16 with OpenVINO on CPUs that run
        it natively (AVX-512 BF16, AMX), which is what ``backend="auto"`` picks
        there; ``backend="auto"`` on such a CPU without OpenVINO is torch in
        bfloat16 (docs/backends.md, "The auto rule"). Output is always float32.
    quantize : {"int8"} or None, default=None
        ``"int8"``: int8 weights, float32 activations (CPU only; faster).
        Torch: dynamic int8 quantization of the linear layers (cosine >= 0.98
        to float32); OpenVINO and ONNX Runtime: their own int8, closer to
        float32 (docs/backends.md, "Int8 on the runtimes").
    calibration_texts : list of str or None, default=None
        With ``quantize="int8"``: texts like the ones you will encode (the first
        300 distinct ones are used), from which OpenVINO's static int8 fixes its
        activation scales once, at conversion: faster than the dynamic int8
        (1.1-1.2x) and a little further from float32 (docs/backends.md, "Static
        int8"). OpenVINO only; ``backend="auto"`` then means OpenVINO on any
        CPU. Another set of texts is another converted model and cache key.
        ``"vocabulary"``: pseudo-texts drawn from a SentencePiece unigram
        tokenizer's own piece probabilities (XLM-R, XLM-T, multilingual-e5), no
        texts needed; what ``backend="auto"`` uses for ``quantize="int8"`` on AMX
        CPUs (docs/backends.md, "Int8 on AMX").
    compile : bool, default=False
        ``torch.compile`` the model. On CPUs this is slower than the default
        packed forward and costs about a minute of compilation (measured in
        docs/benchmarks.md); it is meant for GPUs.
    cache : str, os.PathLike, EmbeddingCache, CacheBase or None, default=None
        Per-text disk cache: a path (SQLite file), an :class:`EmbeddingCache`, or
        any :class:`CacheBase` (or object with ``get_many``/``put_many``).
        Keys cover the model's exact identity and every option that changes a
        vector; batch size, device and progress do not, so they still hit.
    cache_layers : "all", list of int or None, default=None
        What a cache miss stores. ``None``: the requested vector only. ``"all"``
        or a list of ``hidden_states`` indices: per-layer statistics of those
        layers (mean, max and first token over the text's tokens), from which
        every ``pooling`` / ``layers`` / ``layer_aggregation`` / ``normalize``
        drawing on them is derived exactly (to float32 rounding), so a grid
        search over them encodes each distinct text once. Not derivable:
        ``pooling="max"`` or ``"mean_max"`` of a mean over several layers,
        which is encoded as without this option. It never changes what a
        call returns. Storage per text: ``3 * n_layers * hidden`` float32
        (XLM-R base, all 13: 120 kB; see "Tuning the featurizer" in the docs).
    progress : bool, "auto" or "log", default="auto"
        tqdm progress bar; ``"auto"`` shows it for long runs in a terminal or
        notebook; ``"log"`` writes a line to stderr every ~10 s instead (done,
        rate, ETA), for logs and batch jobs.
    trust_remote_code : bool, default=False
        Allow model code from the hub repository to run (off: only architectures
        that ship with transformers load).

    Attributes
    ----------
    model_identity_ : ModelIdentity
        The pinned model: hub id and commit hash, or local folder and content
        hash; width and depth from its config.
    backend_ : str
        What computes the vectors on the machine that ran ``fit``: backend and
        precision, e.g. ``"openvino (bfloat16)"`` or ``"torch (float32)"``
        (``backend="auto"`` resolved there). ``fit`` converts and checks
        nothing: a runtime whose first-use self-check fails at ``transform``
        is replaced by torch with a warning (a later ``fit`` says so).
    layers_ : tuple of int
        The validated ``layers``.
    cache_layers_ : tuple of int or None
        The hidden-state indices (non-negative) whose statistics a miss stores;
        None without ``cache_layers``.
    n_features_out_ : int
        Width of an output row.

    See Also
    --------
    XLMTTokenVectorizer : One vector per token or word instead of per text.
    EmbeddingCache : The disk cache.

    Notes
    -----
    ``fit`` reads the model's ``config.json`` only; weights load on the first
    ``transform`` that misses the cache. Pickles carry parameters, never
    weights. Authentication for private hub models comes from ``HF_TOKEN`` in
    the environment and is never stored on the estimator.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = make_pipeline(XLMTVectorizer(), LogisticRegression())
    >>> clf.fit(["I love it", "I hate it"], [1, 0])  # doctest: +SKIP
    """

    _kind = "pooled"

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        pooling: str = "mean",
        layers: int | list[int] = -1,
        layer_aggregation: str = "mean",
        normalize: bool = False,
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
        cache_layers: str | list[int] | None = None,
        progress: bool | str = "auto",
        trust_remote_code: bool = False,
    ):
        self.model = model
        self.revision = revision
        self.pooling = pooling
        self.layers = layers
        self.layer_aggregation = layer_aggregation
        self.normalize = normalize
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
        self.cache_layers = cache_layers
        self.progress = progress
        self.trust_remote_code = trust_remote_code

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any = None, y: Any = None) -> XLMTVectorizer:
        """Validate the parameters and pin the model; encodes nothing.

        Parameters
        ----------
        X : iterable of str, optional
            Ignored (checked for type when given; an iterator is left unread):
            the featurizer is pretrained.
        y : None
            Ignored.

        Returns
        -------
        self : XLMTVectorizer
        """
        self._check_fit_input(X)
        self._pin_model()
        self._fit_widths()
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embed ``X``: one float32 row per text, in input order.

        Parameters
        ----------
        X : list, tuple, ndarray, pandas Series or one-column DataFrame of str
            The texts. Missing values follow ``missing``.

        Returns
        -------
        ndarray of shape (n_texts, n_features_out_), float32
        """
        self._check_fitted()
        batch = as_texts(X, missing=self.missing)  # 1: inputs
        rows = batch.encoded_rows(self.missing)
        uniq, scatter = self._distinct(batch, rows)  # 2-3: preprocess, prefix, dedupe
        request, derive = self._pooled_request(uniq, scatter.positions, len(batch))
        out = np.zeros((len(batch), self.n_features_out_), dtype=np.float32)
        for idx, arrays in stream(request):  # 4-9: cache, tokenize, encode, pool, store
            scatter.into(out, idx, arrays if derive is None else list(map(derive, arrays)))
        return out

    # ---------------------------------------------------------------- private
    def _fit_widths(self) -> None:
        """The output width and the cached layers, from the pinned model (end of ``fit``)."""
        ident = self.model_identity_
        self.n_features_out_ = pooled_width(
            ident.hidden_size, len(self.layers_), self.layer_aggregation, self.pooling
        )
        self.cache_layers_ = self._resolve_cache_layers()

    def _resolve_cache_layers(self) -> tuple[int, ...] | None:
        """``cache_layers`` as ``hidden_states`` indices >= 0 (validated against the model)."""
        if self.cache_layers is None:
            return None
        n = self.model_identity_.num_hidden_layers + 1
        if isinstance(self.cache_layers, str):  # "all" (the constraint allows no other str)
            return tuple(range(n))
        layers = validate_layers(self.cache_layers, n - 1, type(self).__name__, "cache_layers")
        return tuple(sorted({v % n for v in layers}))

    def _pooled_request(self, uniq: list[str], positions: Any, n_total: int) -> tuple[Any, Any]:
        """The stream request, and how to turn what it yields into output rows (None: as is).

        With ``cache_layers`` covering the requested layers in a derivable setting,
        the request asks for per-layer statistics (:mod:`._layer_stats`) and each
        row is derived from them; otherwise it asks for the pooled vectors.
        """
        source = getattr(self, "cache_layers_", None)
        n = self.model_identity_.num_hidden_layers + 1
        wanted = [v % n for v in self.layers_]
        if (
            source is None
            or not set(wanted) <= set(source)
            or not derivable(wanted, self.layer_aggregation, self.pooling)
        ):
            return self._request(
                uniq, self._encode_options(), positions=positions, n_total=n_total,
                expected_shapes=[(self.n_features_out_,)] * len(uniq),
            ), None  # fmt: skip
        shape = stats_shape(len(source), self.model_identity_.hidden_size)
        options = EncodeOptions(
            layers=source, layer_aggregation="concat", pooling=None,
            batch_size=int(self.batch_size), max_tokens=self.max_tokens,
        )  # fmt: skip
        fingerprint = {**self._vector_options(), "layers": list(source), "layer_aggregation": None}
        request = self._request(
            uniq, options, positions=positions, n_total=n_total,
            expected_shapes=[shape] * len(uniq), kind="layer_stats",
            fingerprint_options=fingerprint, finish=partial(layer_stats, n_layers=len(source)),
        )  # fmt: skip
        return request, partial(
            derive, positions=[source.index(v) for v in wanted],
            layer_aggregation=self.layer_aggregation, pooling=self.pooling,
            normalize=bool(self.normalize),
        )  # fmt: skip

    def _encode_options(self) -> EncodeOptions:
        return EncodeOptions(
            layers=self.layers_,
            layer_aggregation=self.layer_aggregation,
            pooling=self.pooling,
            normalize=bool(self.normalize),
            batch_size=int(self.batch_size),
            max_tokens=self.max_tokens,
        )
