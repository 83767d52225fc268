"""Step 7 -- the forward pass: batches through the model, OOM backoff.

``run(loaded, encoded, options, on_done) -> per-text results``. This is the
only loop that touches the device: it runs each planned batch through the
model under ``torch.inference_mode``, aggregates the chosen layers, pools (or
keeps the token matrices) and moves float32 results to the CPU batch by batch.

On the CPU, BERT-family encoders (BERT, RoBERTa, XLM-R, CamemBERT as shipped
with transformers) take a *packed* path (:class:`_PackedEncoder`): the tokens
of a batch are concatenated without padding, every linear layer runs once on
all real tokens (query/key/value fused into one matmul), and only attention
sees a padded layout. The same modules and weights compute the same
numbers as ``model(input_ids, attention_mask)`` (float noise, < 1e-5), with no
FLOPs spent on padding and far fewer framework calls; docs/benchmarks.md has
the measurements. Everything else (GPUs, other architectures, compiled models,
models with user forward hooks) runs the model itself on padded batches.
"""

from __future__ import annotations

import functools
import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._batching import BatchPlan, plan_batches, token_budget
from ._pooling import aggregate_layers, l2_normalize, pool
from ._tokenize import Encoded

__all__ = [
    "DELIVERY_DEPTH",
    "OVERLAP_DELIVERY",
    "EncodeOptions",
    "merge_windows",
    "release_free_memory",
    "resolve_max_tokens",
    "run",
]


@dataclass(frozen=True)
class EncodeOptions:
    """How to turn hidden states into results.

    ``pooling=None`` keeps token matrices (special tokens included, windows
    merged) instead of pooling them.
    """

    layers: tuple[int, ...] = (-1,)
    layer_aggregation: str = "mean"
    pooling: str | None = "mean"
    normalize: bool = False
    batch_size: int = 32
    max_tokens: int | str | None = None  # "auto": sized for the card (see resolve_max_tokens)


@functools.lru_cache(maxsize=1)
def _glibc():
    if sys.platform != "linux" or os.environ.get("XLMT_SKLEARN_MALLOC_TUNING", "1") == "0":
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only; musl has none)
        return libc
    except (OSError, AttributeError):
        return None


#: Batches between two :func:`release_free_memory` calls inside :func:`run`.
_TRIM_EVERY = 8


def release_free_memory() -> None:
    """Give memory that the C allocator holds but no longer uses back to the OS.

    glibc raises its mmap threshold each time a large block is freed, so
    after the first batches tensor buffers come from the heap, and batches of
    varying token counts fragment it, and without this a 200k-text transform
    held ~740 MB of free heap at its peak. Called every few batches,
    ``malloc_trim`` returns the free pages (docs/benchmarks.md, "Memory").
    ``XLMT_SKLEARN_MALLOC_TUNING=0`` turns it off; no-op off glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


def _pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = r
        mask[k, : len(r)] = 1
    return ids, mask


# ------------------------------------------------------------------ packed path
_PACKED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})
_ROBERTA_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert"})
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _has_hooks(model: torch.nn.Module) -> bool:
    """Whether anyone observes ``model.forward`` (its hooks must keep firing)."""
    from torch.nn.modules import module as nn_module

    return bool(
        model._forward_hooks
        or model._forward_pre_hooks
        or nn_module._global_forward_hooks
        or nn_module._global_forward_pre_hooks
    )


def _packable(model) -> bool:
    """True for the stock transformers BERT-family encoders in eval mode."""
    cfg = getattr(model, "config", None)
    if cfg is None or not isinstance(model, torch.nn.Module) or model.training:
        return False
    if hasattr(model, "_orig_mod"):  # torch.compile wrapper: keep the compiled graph
        return False
    if getattr(cfg, "model_type", None) not in _PACKED_MODEL_TYPES:
        return False
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return False
    emb, enc = getattr(model, "embeddings", None), getattr(model, "encoder", None)
    if emb is None or enc is None or not hasattr(enc, "layer"):
        return False
    # Only transformers' own classes: remote code may reuse names with other maths.
    mods = [emb, *enc.layer]
    if not all(type(m).__module__.startswith("transformers.models.") for m in mods):
        return False
    need_emb = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
    if not all(hasattr(emb, a) for a in need_emb):
        return False
    for layer in enc.layer:
        try:
            sa, ao = layer.attention.self, layer.attention.output
            parts = (sa.query, sa.key, sa.value, ao.dense, ao.LayerNorm,
                     layer.intermediate.dense, layer.intermediate.intermediate_act_fn,
                     layer.output.dense, layer.output.LayerNorm)  # fmt: skip
        except AttributeError:
            return False
        if any(p is None for p in parts) or not hasattr(sa, "attention_head_size"):
            return False
    return True


def _fuse_int8_qkv(mods) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """One int8 matmul for three dynamically quantized linears (torch.ao), or None.

    The int8 weights and their scales are concatenated unchanged (a per-tensor
    scale becomes the same scale on every row of a per-channel weight), and
    the activation is quantized once per call, as each module would do: the
    result equals the three separate calls up to float rounding, and the input
    is quantized once instead of three times.
    """
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynLinear
    except ImportError:  # pragma: no cover - torch without torch.ao
        return None
    if not all(type(m) is DynLinear and m._packed_params.dtype == torch.qint8 for m in mods):
        return None
    versions = {m.version for m in mods}
    if len(versions) != 1:
        return None
    version = versions.pop()
    reduce_range = not (version is None or version < 4)  # as DynLinear.forward
    ints, scales, zeros, biases = [], [], [], []
    for m in mods:
        w, b = m._packed_params._weight_bias()
        if b is None:
            return None
        if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            n = w.shape[0]
            scales.append(torch.full((n,), w.q_scale(), dtype=torch.float64))
            zeros.append(torch.full((n,), w.q_zero_point(), dtype=torch.int64))
        elif w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) and (
            w.q_per_channel_axis() == 0
        ):
            scales.append(w.q_per_channel_scales().to(torch.float64))
            zeros.append(w.q_per_channel_zero_points().to(torch.int64))
        else:
            return None
        ints.append(w.int_repr())
        biases.append(b)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks quantized tensors as deprecated
        qw = torch._make_per_channel_quantized_tensor(
            torch.cat(ints), torch.cat(scales), torch.cat(zeros), 0
        )
        packed = torch.ops.quantized.linear_prepack(qw, torch.cat(biases))

    def qkv(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=reduce_range).to(x.dtype)

    return qkv


def _plain_linear(m) -> bool:
    return (
        type(m) is torch.nn.Linear
        and type(m.weight.data) is torch.Tensor
        and m.bias is not None
        and type(m.bias.data) is torch.Tensor
    )


class _PackedEncoder:
    """Padding-free forward of a BERT-family encoder (see the module docstring).

    Built once per model (memoized on the model object). Holds a fused
    query/key/value projection per layer: one weight for plain ``nn.Linear``
    (an extra copy of those weights, ~7% of XLM-R base), one int8 weight for
    torch.ao dynamically quantized ones; other layers call the three modules.
    """

    def __init__(self, model):
        cfg = model.config
        self.model = model
        self.pad_id = int(cfg.pad_token_id) if cfg.pad_token_id is not None else 0
        self.roberta_positions = cfg.model_type in _ROBERTA_POSITIONS
        self.heads = int(cfg.num_attention_heads)
        self.fused: list[Callable[[torch.Tensor], torch.Tensor] | None] = []
        self.stamp = self._stamp()
        with torch.no_grad():
            for layer in model.encoder.layer:
                sa = layer.attention.self
                mods = (sa.query, sa.key, sa.value)
                if all(_plain_linear(m) for m in mods):
                    w = torch.cat([m.weight for m in mods], 0)
                    b = torch.cat([m.bias for m in mods], 0)
                    self.fused.append(lambda x, w=w, b=b: F.linear(x, w, b))
                else:
                    self.fused.append(_fuse_int8_qkv(mods))

    def _stamp(self) -> tuple:
        """Identity of the q/k/v weights: rebuild the fused copy if they change.

        Storage address, shape, dtype and version counter of each plain weight
        (replaced tensors and in-place updates both show); quantized modules and
        tensor subclasses by object identity.
        """
        out: list[object] = []
        for layer in self.model.encoder.layer:
            sa = layer.attention.self
            for m in (sa.query, sa.key, sa.value):
                w = getattr(m, "weight", None)
                if not isinstance(w, torch.Tensor) or type(w.data) is not torch.Tensor:
                    # Quantized (packed params) or subclass weights: the objects.
                    wid = id(w) if isinstance(w, torch.Tensor) else None  # not a bound method
                    out.append((id(m), id(getattr(m, "_packed_params", None)), wid))
                    continue
                try:
                    version = w._version
                except RuntimeError:  # inference tensors have no version counter
                    version = None
                out.append((w.data_ptr(), tuple(w.shape), w.dtype, str(w.device), version))
        return tuple(out)

    @classmethod
    def of(cls, model) -> _PackedEncoder | None:
        """The packed runner of ``model``, or None when it must run as is."""
        if not _packable(model) or _has_hooks(model):
            return None
        runner = _PACKED.get(model)
        if runner is None or runner.stamp != runner._stamp():
            runner = cls(model)
            _PACKED[model] = runner
        return runner

    def __call__(
        self, rows: list[list[int]], layers: tuple[int, ...]
    ) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        """Hidden states of ``layers`` as padded (batch, seq, hidden) tensors + mask.

        Padding positions hold zeros (the model's own output there is noise
        that every consumer masks out). Indices are those of transformers'
        ``hidden_states`` (0 = embeddings); unrequested entries are None.
        """
        model = self.model
        emb = model.embeddings
        dev = emb.word_embeddings.weight.device
        n_layers = len(model.encoder.layer)
        wanted = {i % (n_layers + 1) for i in layers}
        lens_np = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        n_tok = int(lens_np.sum())
        ids = torch.from_numpy(
            np.fromiter((t for r in rows for t in r), dtype=np.int64, count=n_tok)
        ).to(dev)
        lens = torch.from_numpy(lens_np).to(dev)
        b, s = len(rows), int(lens_np.max())
        seg = torch.repeat_interleave(torch.arange(b, device=dev), lens)
        starts = torch.cumsum(lens, 0) - lens
        local = torch.arange(n_tok, device=dev) - starts[seg]
        if self.roberta_positions:
            # transformers' create_position_ids_from_input_ids, row by row:
            # non-pad tokens count up from pad_id + 1; pad tokens get pad_id.
            real = (ids != self.pad_id).long()
            csum = torch.cumsum(real, 0)
            before = (csum[starts] - real[starts])[seg]
            pos = (csum - before) * real + self.pad_id
        else:
            pos = local
        x = emb.word_embeddings(ids) + emb.token_type_embeddings.weight[0]
        x = emb.LayerNorm(x + emb.position_embeddings(pos))
        flat = seg * s + local  # row of each real token in the padded (b * s) layout
        key_mask = (torch.arange(s, device=dev)[None, :] < lens[:, None])[:, None, None, :]
        states: dict[int, torch.Tensor] = {0: x} if 0 in wanted else {}
        hidden = x.shape[1]
        for i, layer in enumerate(model.encoder.layer):
            x = self._layer(layer, self.fused[i], x, flat, key_mask, b, s, hidden)
            if i + 1 in wanted:
                states[i + 1] = x
        out: list[torch.Tensor | None] = [None] * (n_layers + 1)
        for i, st in states.items():
            pad = st.new_zeros(b * s, hidden)
            pad[flat] = st
            out[i] = pad.view(b, s, hidden)
        mask = key_mask.view(b, s).to(torch.int64)
        return out, mask

    def _layer(self, layer, fused, x, flat, key_mask, b: int, s: int, hidden: int):
        sa = layer.attention.self
        heads, d = self.heads, int(sa.attention_head_size)
        qkv = x.new_zeros(b * s, 3, heads * d)
        if fused is not None:
            qkv[flat] = fused(x).view(-1, 3, heads * d)
        else:
            for j, proj in enumerate((sa.query, sa.key, sa.value)):
                qkv[flat, j] = proj(x)
        q, k, v = qkv.view(b, s, 3, heads, d).permute(2, 0, 3, 1, 4)
        scale = getattr(sa, "scaling", None)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale)
        att = att.transpose(1, 2).reshape(b * s, heads * d)[flat]
        ao = layer.attention.output
        x = ao.LayerNorm(ao.dense(att) + x)
        inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
        out = layer.output
        return out.LayerNorm(out.dense(inter) + x)


# ------------------------------------------------------------------ padded path
def resolve_max_tokens(
    max_tokens: int | str | None, loaded, layers: tuple[int, ...], longest: int
) -> int | None:
    """The token cap of one forward pass on ``loaded``'s device.

    ``"auto"`` is no cap on the CPU and MPS (batches are sized by count; the
    CPU's best is measured in docs/benchmarks.md) and, on a CUDA card, the
    :func:`~xlmt_sklearn._batching.token_budget` of its free memory now.
    """
    if max_tokens != "auto":
        return max_tokens  # type: ignore[return-value]
    if not loaded.device.startswith("cuda"):
        return None
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


def _hidden(loaded, ids: np.ndarray, mask: np.ndarray, layers: tuple[int, ...]):
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


def merge_windows(
    mats: list[np.ndarray], starts: list[int], n_prefix: int, n_suffix: int
) -> np.ndarray:
    """Merge per-window token matrices of one text into one sequence.

    Each window matrix is ``prefix + content + suffix`` rows. Every content
    token is taken from the window where it is most central (farthest from
    that window's edges; ties go to the earlier window); the prefix comes from
    the first window and the suffix from the last.
    """
    if len(mats) == 1:
        return mats[0]
    ends = [s + len(m) - n_prefix - n_suffix for s, m in zip(starts, mats, strict=True)]
    n = max(ends)
    # One pass per window over its own tokens: linear in the windows' total size.
    best = np.zeros(n, dtype=np.int64)
    best_score = np.full(n, -1, dtype=np.int64)
    for w, (s, e) in enumerate(zip(starts, ends, strict=True)):
        j = np.arange(s, e)
        score = np.minimum(j - s, e - 1 - j)
        better = score > best_score[s:e]  # strict: ties stay with the earlier window
        best[s:e][better] = w
        best_score[s:e][better] = score[better]
    # Gather every token's row from the stacked windows in one indexing step.
    first_row = np.cumsum([0] + [len(m) for m in mats[:-1]])
    j = np.arange(n)
    rows = first_row[best] + n_prefix + j - np.asarray(starts)[best]
    stacked = np.concatenate(mats, axis=0)
    return np.concatenate(
        [mats[0][:n_prefix], stacked[rows], mats[-1][len(mats[-1]) - n_suffix :]], axis=0
    )


def _on_devices(
    batches: list[np.ndarray], n_devices: int, work: Callable[[np.ndarray, int], None]
) -> None:
    """Run ``work(batch, device_index)`` for every batch, one thread per device.

    Each thread takes the next batch when it is free. The first error stops the
    other threads after their current batch and is raised here.
    """
    todo = iter(batches)
    take = threading.Lock()
    errors: list[BaseException] = []

    def worker(m: int) -> None:
        while not errors:
            with take:
                batch = next(todo, None)
            if batch is None:
                return
            try:
                work(batch, m)
            except BaseException as exc:  # re-raised by the caller's thread
                errors.append(exc)
                return

    threads = [
        threading.Thread(target=worker, args=(m,), name=f"xlmt_sklearn-device-{m}", daemon=True)
        for m in range(n_devices)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


#: Where finished batches are delivered (pooling leftovers, the cache write, the output,
#: the progress bar) from a thread of their own, so that the device computes the next
#: batch meanwhile: ``"cuda"`` (when any device is a CUDA card, which leaves the CPU idle
#: while it computes; a CPU computation already keeps every core busy), ``"always"`` or
#: ``"never"``.
OVERLAP_DELIVERY = "cuda"

#: Finished batches that may wait for delivery: bounds the memory overlap adds.
DELIVERY_DEPTH = 2


class _Courier:
    """Delivers queued batches on one thread, in the order they were queued.

    ``send`` blocks while :data:`DELIVERY_DEPTH` batches wait, and raises the
    first delivery error (the computation then stops). ``close`` delivers
    everything already queued before returning, so finished work is never
    dropped, not even when the computation failed.
    """

    def __init__(self, deliver: Callable[..., None]):
        self._deliver = deliver
        self._queue: queue.Queue = queue.Queue(maxsize=DELIVERY_DEPTH)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="xlmt_sklearn-deliver", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._deliver(*item)
                except BaseException as exc:  # re-raised in the computing thread
                    self.error = exc

    def send(self, *item: Any) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def close(self, raise_error: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if raise_error and self.error is not None:
            raise self.error


def run(
    loaded,
    encoded: Encoded,
    options: EncodeOptions,
    on_done: Callable[[list[int], list[np.ndarray]], None] | None = None,
    progress: Any = False,
    keep: bool = True,
) -> list[np.ndarray]:
    """Encode every text of ``encoded``; return one float32 array per text.

    ``loaded`` is one loaded model or a list of replicas of it, one per device:
    with several, each device's thread takes the next batch as soon as it is
    free (the GIL is released while a GPU computes), so faster cards take more.
    Pooled options give (dim,) rows; ``pooling=None`` gives (n_tokens, dim)
    matrices. ``on_done(text_indices, results)`` is called as texts complete
    (once per batch, never concurrently; on a CUDA device from a thread of its
    own while the next batch computes, see :data:`OVERLAP_DELIVERY`), so a
    cache can store finished work before a crash or an out-of-memory error
    later in the run; everything computed is delivered before ``run`` returns
    or raises. ``keep=False`` returns an empty list and holds no finished
    result (``on_done`` is then the only consumer). ``progress`` is a bool (a
    bar of its own) or a tqdm-like bar to advance.
    """
    models = list(loaded) if isinstance(loaded, (list, tuple)) else [loaded]
    n_texts = len(encoded.n_windows)
    results: list[np.ndarray | None] = [None] * n_texts
    if n_texts == 0:
        return []
    longest = int(np.max(encoded.lengths))
    caps = [resolve_max_tokens(options.max_tokens, m, options.layers, longest) for m in models]
    known = [c for c in caps if c is not None]
    plan: BatchPlan = plan_batches(
        encoded.lengths, options.batch_size, min(known) if known else None
    )
    pad_id = models[0].tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    # Windowed texts wait until all their windows are done.
    pending: dict[int, dict[int, np.ndarray]] = {}
    keep_tokens = options.pooling is None
    deliver_lock = threading.Lock()

    bar, own_bar = None, False
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_texts, unit="text", desc="xlmt_sklearn", smoothing=0.1)
        own_bar = True
    elif progress is not False and progress is not None:
        bar = progress

    def finish(text: int, tokens: np.ndarray | None, pooled: np.ndarray | None) -> np.ndarray:
        if keep_tokens:
            return tokens
        if pooled is None:
            t = torch.from_numpy(tokens)[None]
            pooled_t = pool(t, torch.ones(t.shape[:2]), options.pooling)
            if options.normalize:
                pooled_t = l2_normalize(pooled_t)
            pooled = pooled_t[0].numpy()
        return pooled

    packers = [_PackedEncoder.of(m.model) if m.device == "cpu" else None for m in models]

    def compute(rows_idx: np.ndarray, m: int) -> tuple:
        rows = [encoded.rows[r] for r in rows_idx]
        loaded, packed = models[m], packers[m]
        with loaded.lock, torch.inference_mode():
            if packed is not None:
                hs, t_mask = packed(rows, options.layers)
            else:
                ids, mask = _pad(rows, pad_id)
                hs, t_mask = _hidden(loaded, ids, mask, options.layers)
            tokens = aggregate_layers(hs, options.layers, options.layer_aggregation)
            single = encoded.n_windows[encoded.row_text[rows_idx]] == 1
            pooled_np = None
            if not keep_tokens and single.any():
                pooled_t = pool(tokens, t_mask, options.pooling)
                if options.normalize:
                    pooled_t = l2_normalize(pooled_t)
                pooled_np = pooled_t.float().cpu().numpy()
            tokens_np = tokens.cpu().numpy() if keep_tokens or not single.all() else None
        return rows_idx, rows, single, pooled_np, tokens_np

    def deliver(rows_idx, rows, single, pooled_np, tokens_np) -> None:
        done_idx, done_val = [], []
        for k, r in enumerate(rows_idx):
            text = int(encoded.row_text[r])
            if single[k]:
                mat = tokens_np[k, : len(rows[k])] if tokens_np is not None else None
                val = finish(text, mat, None if pooled_np is None else pooled_np[k])
            else:
                got = pending.setdefault(text, {})
                got[int(r)] = tokens_np[k, : len(rows[k])].copy()
                if len(got) < encoded.n_windows[text]:
                    continue
                order = sorted(got)
                merged = merge_windows(
                    [got[o] for o in order],
                    [int(encoded.row_start[o]) for o in order],
                    encoded.n_prefix,
                    encoded.n_suffix,
                )
                del pending[text]
                val = finish(text, merged, None)
            val = np.ascontiguousarray(val, dtype=np.float32)
            if keep:
                results[text] = val
            done_idx.append(text)
            done_val.append(val)
        if on_done is not None and done_idx:
            on_done(done_idx, done_val)
        if bar is not None:
            bar.update(len(done_idx))

    def process_with_backoff(rows_idx: np.ndarray, m: int = 0) -> None:
        try:
            done = compute(rows_idx, m)
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc) or len(rows_idx) == 1:
                raise
            # Halve and retry: finished batches are already delivered.
            if models[m].device.startswith("cuda"):
                torch.cuda.empty_cache()
            half = len(rows_idx) // 2
            process_with_backoff(rows_idx[:half], m)
            process_with_backoff(rows_idx[half:], m)
            return
        # Outside the try: a delivery error (the cache, the output) is never taken for an
        # out-of-memory error of the device, whose batch would be halved and recomputed.
        if courier is not None:
            courier.send(*done)
        else:
            with deliver_lock:  # windows of one text may finish on different devices
                deliver(*done)

    overlap = OVERLAP_DELIVERY == "always" or (
        OVERLAP_DELIVERY == "cuda" and any(m.device.startswith("cuda") for m in models)
    )
    courier = _Courier(deliver) if overlap else None
    try:
        if len(models) > 1:
            _on_devices(plan.batches, len(models), process_with_backoff)
        else:
            for k, batch in enumerate(plan.batches, 1):
                process_with_backoff(batch)
                if k % _TRIM_EVERY == 0:
                    release_free_memory()
    except BaseException:
        if courier is not None:
            courier.close(raise_error=False)  # what was computed is still delivered
        raise
    else:
        if courier is not None:
            courier.close()
    finally:
        if own_bar:
            bar.close()
    return results if keep else []  # type: ignore[return-value]
