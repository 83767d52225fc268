"""Step 7b -- encoder backends: token id rows in, float32 arrays out.

An :class:`Encoder` is everything that turns one batch of token id rows into
arrays: the runtime and its weights on one device, in one precision. The
pipeline (:mod:`xlmt_sklearn.flow._pipeline`) sees nothing else, so a new backend
(another runtime, another precision) is one new subclass plus a line in
:func:`make_encoders`. Its data contract:

``encode(rows, options, pool_rows) -> BatchOutput``
    ``rows`` are token id lists (special tokens included), at most
    ``options.batch_size`` of them. The result holds, per row, the chosen
    layers aggregated (:func:`~xlmt_sklearn.flow._pooling.aggregate_layers`) and,
    when ``options.pooling`` is set, pooled and optionally L2-normalised for
    the rows flagged in ``pool_rows`` (whole texts; windows of a long text are
    pooled after merging). Token matrices are returned padded to the longest
    row, for the rows not pooled or when ``options.pooling`` is None.

An encoder is cheap to build: nothing is loaded until the first ``encode``,
so a transform answered entirely from the cache never loads a model. What an
encoder changes in a vector (its dtype, a quantization scheme) is its
:attr:`~Encoder.fingerprint`, part of every cache key.

:class:`TorchEncoder` is the first implementation: a transformers model from
the per-process registry (:mod:`xlmt_sklearn._model`), on the CPU through the
padding-free :class:`~xlmt_sklearn.backends._packed.PackedForward` when the
architecture allows, otherwise (GPUs, other architectures, compiled models,
models with forward hooks) through the model itself on padded batches;
``quantize="int8"`` is a torch.ao dynamically quantized copy of it.
OpenVINO and ONNX Runtime encoders live in :mod:`xlmt_sklearn.backends._runtime`
and reuse :func:`finish_batch`, so pooling is the same code on every backend.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..flow._batching import BATCH_OVERHEAD_TOKENS

__all__ = [
    "BatchOutput", "EncodeOptions", "Encoder", "TorchEncoder", "finish_batch", "pad_rows",
]  # fmt: skip


@dataclass(frozen=True)
class EncodeOptions:
    """How hidden states become results.

    ``pooling=None`` keeps token matrices (special tokens included, windows
    merged) instead of pooling them.
    """

    layers: tuple[int, ...] = (-1,)
    layer_aggregation: str = "mean"
    pooling: str | None = "mean"
    normalize: bool = False
    batch_size: int = 32
    max_tokens: int | str | None = None  # "auto": sized for the card (see token_cap)


@dataclass(frozen=True)
class BatchOutput:
    """What :meth:`Encoder.encode` returns for one batch (float32, on the CPU).

    Attributes
    ----------
    pooled : ndarray of shape (n_rows, dim) or None
        Pooled rows; only the rows flagged in ``pool_rows`` are meaningful.
        None when nothing was pooled.
    tokens : ndarray of shape (n_rows, longest_row, dim) or None
        Token matrices, zero-padded; None when every row was pooled.
    """

    pooled: np.ndarray | None
    tokens: np.ndarray | None


class Encoder(ABC):
    """One backend on one device (see the module docstring for the contract).

    Attributes
    ----------
    name : str
        The backend ("torch").
    device : str
        Where it computes ("cpu", "cuda:0", ...).
    dtype : str
        The compute precision ("float32", "float16", "bfloat16").
    pads_batches : bool
        True when every batch is computed padded to its longest row and its time
        grows with the padded tokens, not with the number of batches (the CPU
        runtimes): the batch plan then cuts where padding is least
        (:func:`~xlmt_sklearn.flow._batching.plan_batches` ``min_padding``).
    cut_tokens : int
        With ``pads_batches``: what one more batch costs, in padded tokens' worth of
        compute (the plan's price of a cut; ``plan_batches``' ``cut_tokens``).
    """

    name: str
    device: str
    dtype: str
    pads_batches: bool = False
    cut_tokens: int = BATCH_OVERHEAD_TOKENS

    @property
    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What this encoder changes in a vector: merged into the cache key."""

    def describe(self) -> str:
        """What computes, for people: ``"openvino (bfloat16)"``, ``"torch (int8)"``,
        ``"torch (float16, cuda:0)"``."""
        how = "int8" if self.fingerprint.get("quantize") else self.dtype
        where = "" if self.device == "cpu" else f", {self.device}"
        return f"{self.name} ({how}{where})"

    def load(self) -> None:
        """Load the weights now, so that a broken model fails before any work is done."""
        return None

    @abstractmethod
    def tokenizer(self) -> Any:
        """The model's tokenizer (loads the tokenizer only)."""

    @abstractmethod
    def special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after every text."""

    @abstractmethod
    def encode(
        self, rows: list[list[int]], options: EncodeOptions, pool_rows: np.ndarray
    ) -> BatchOutput:
        """Encode one batch of token id rows."""

    def token_cap(self, options: EncodeOptions, longest: int) -> int | None:
        """The most tokens one forward pass may hold (None: batches sized by count)."""
        return None if options.max_tokens == "auto" else options.max_tokens  # type: ignore[return-value]

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by :meth:`encode`, means "retry with a smaller batch"."""
        return "out of memory" in str(exc).lower()

    def after_out_of_memory(self) -> None:
        """Release what a failed batch left behind before it is retried in halves."""
        return None


#: Called with the seconds of each torch forward pass (packed or padded), for the
#: benchmarks' profile (``xlmt_sklearn.internals.forward_seconds``); empty otherwise.
FORWARD_OBSERVERS: list[Callable[[float], None]] = []


class TorchEncoder(Encoder):
    """A transformers model run by torch (packed on the CPU where possible).

    Parameters
    ----------
    spec : ModelSpec
        Registry key of the model: identity, device, dtype, quantization.
    loaded : LoadedModel, optional
        A model loaded elsewhere (benchmarks comparing variants of one model);
        by default the registry's, loaded on first use.
    """

    name = "torch"

    def __init__(self, spec: Any, loaded: Any = None):
        self.spec = spec
        self.device = spec.device
        self.dtype = spec.dtype
        self._loaded = loaded

    @property
    def fingerprint(self) -> dict[str, Any]:
        from ._quantize import INT8_SCHEME

        quantize = INT8_SCHEME if self.spec.quantize == "int8" else self.spec.quantize
        return {"dtype": self.dtype, "quantize": quantize}

    def loaded(self) -> Any:
        """The registry's :class:`~._loading.LoadedModel`, kept for this encoder's life.

        Encoders live for one call; holding the model here means that more devices
        than ``XLMT_SKLEARN_MAX_MODELS`` cannot evict each other batch after batch.
        """
        if self._loaded is None:
            from ._loading import get_model

            self._loaded = get_model(self.spec)
        return self._loaded

    def load(self) -> None:
        self.loaded()

    def tokenizer(self) -> Any:
        from ._loading import get_tokenizer

        return get_tokenizer(self.spec)

    def special_tokens(self) -> tuple[list[int], list[int]]:
        from ._loading import _special_tokens

        return _special_tokens(self.tokenizer())

    def token_cap(self, options: EncodeOptions, longest: int) -> int | None:
        """``"auto"``: no cap on the CPU and MPS; on a CUDA card, the budget of its free memory."""
        if options.max_tokens != "auto":
            return options.max_tokens  # type: ignore[return-value]
        if not self.device.startswith("cuda"):
            return None
        return cuda_token_budget(self.loaded(), options.layers, longest)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        import torch

        oom = getattr(torch.cuda, "OutOfMemoryError", ())
        return isinstance(exc, oom) or super().is_out_of_memory(exc)

    def after_out_of_memory(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def encode(
        self, rows: list[list[int]], options: EncodeOptions, pool_rows: np.ndarray
    ) -> BatchOutput:
        import torch

        from ._packed import PackedForward

        loaded = self.loaded()
        packed = PackedForward.of(loaded.model) if self.device == "cpu" else None
        with loaded.lock, torch.inference_mode():
            started = time.perf_counter()
            if packed is not None:
                hs, t_mask = packed(rows, options.layers)
            else:
                hs, t_mask = _padded_hidden(loaded, rows, options.layers)
            for observe in FORWARD_OBSERVERS:
                observe(time.perf_counter() - started)
            return finish_batch(hs, options.layers, t_mask, options, pool_rows)


def finish_batch(
    hidden_states: Any, layers: tuple[int, ...], mask: Any, options: EncodeOptions,
    pool_rows: np.ndarray,
) -> BatchOutput:  # fmt: skip
    """Aggregate ``hidden_states[layers]``, then pool and normalise what needs it.

    Shared by every backend, so that pooling is the same code whatever computed
    the hidden states (torch tensors; ``mask`` is the (batch, seq) 0/1 mask).
    """
    from ..flow._pooling import aggregate_layers, l2_normalize, pool

    keep_tokens = options.pooling is None
    tokens = aggregate_layers(hidden_states, layers, options.layer_aggregation)
    pooled = None
    if not keep_tokens and pool_rows.any():
        pooled_t = pool(tokens, mask, options.pooling)
        if options.normalize:
            pooled_t = l2_normalize(pooled_t)
        pooled = pooled_t.float().cpu().numpy()
    tokens_np = tokens.cpu().numpy() if keep_tokens or not pool_rows.all() else None
    return BatchOutput(pooled, tokens_np)


def finish_stacked(
    stacked: np.ndarray, mask: np.ndarray, options: EncodeOptions, pool_rows: np.ndarray
) -> BatchOutput:
    """:func:`finish_batch` on numpy, for a runtime's (n_layers, batch, seq, hidden) output
    (the chosen layers in order): no torch at inference."""
    from ..flow._pooling import aggregate_stacked, l2_normalize_rows, pool_padded

    keep_tokens = options.pooling is None
    tokens = aggregate_stacked(np.asarray(stacked, dtype=np.float32), options.layer_aggregation)
    pooled = None
    if not keep_tokens and pool_rows.any():
        pooled = pool_padded(tokens, mask, options.pooling)
        if options.normalize:
            pooled = l2_normalize_rows(pooled)
        pooled = np.ascontiguousarray(pooled, dtype=np.float32)
    keep = keep_tokens or not pool_rows.all()
    return BatchOutput(pooled, np.ascontiguousarray(tokens) if keep else None)


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64) of token-id rows padded to the longest."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = r
        mask[k, : len(r)] = 1
    return ids, mask


def _padded_hidden(loaded: Any, rows: list[list[int]], layers: tuple[int, ...]):
    """Hidden states of ``layers`` from the model itself, on a padded batch."""
    import torch

    pad_id = loaded.tokenizer.pad_token_id
    ids, mask = pad_rows(rows, 0 if pad_id is None else int(pad_id))
    device = loaded.device
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
    if device.startswith("cuda"):
        t_ids = t_ids.pin_memory().to(device, non_blocking=True)
        t_mask = t_mask.pin_memory().to(device, non_blocking=True)
    elif device != "cpu":
        t_ids, t_mask = t_ids.to(device), t_mask.to(device)
    need_all = tuple(layers) != (-1,)
    out = loaded.model(input_ids=t_ids, attention_mask=t_mask, output_hidden_states=need_all)
    hs = out.hidden_states if need_all else (out.last_hidden_state,)
    return hs, t_mask


def cuda_token_budget(loaded: Any, layers: tuple[int, ...], longest: int) -> int:
    """The :func:`~xlmt_sklearn.flow._batching.token_budget` of a CUDA card's free memory now."""
    import torch

    from ..flow._batching import token_budget

    free, _ = torch.cuda.mem_get_info(torch.device(loaded.device))
    config = loaded.model.config
    hidden = int(config.hidden_size)
    return token_budget(
        free_bytes=int(free),
        itemsize=torch.empty((), dtype=getattr(torch, loaded.dtype)).element_size(),
        hidden_size=hidden,
        intermediate_size=int(getattr(config, "intermediate_size", 4 * hidden)),
        num_heads=int(config.num_attention_heads),
        n_states=1 if tuple(layers) == (-1,) else int(config.num_hidden_layers) + 1,
        longest=longest,
    )
