"""Step 7 -- the forward pass: padded batches through the model, OOM backoff.

``run(loaded, encoded, options, on_done) -> per-text results``. This is the
only loop that touches the device: it pads each planned batch, runs the model
under ``torch.inference_mode``, aggregates the chosen layers, pools (or keeps
the token matrices) and moves float32 results to the CPU batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._batching import BatchPlan, plan_batches
from ._pooling import aggregate_layers, l2_normalize, pool
from ._tokenize import Encoded

__all__ = ["EncodeOptions", "merge_windows", "run"]


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
    max_tokens: int | None = None


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
    parts = [mats[0][:n_prefix]]
    for j in range(n):
        best, best_score = 0, -1
        for w, (s, e) in enumerate(zip(starts, ends, strict=True)):
            if s <= j < e:
                score = min(j - s, e - 1 - j)
                if score > best_score:
                    best, best_score = w, score
        parts.append(mats[best][n_prefix + j - starts[best]][None])
    parts.append(mats[-1][len(mats[-1]) - n_suffix :])
    return np.concatenate(parts, axis=0)


def run(
    loaded,
    encoded: Encoded,
    options: EncodeOptions,
    on_done: Callable[[list[int], list[np.ndarray]], None] | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Encode every text of ``encoded``; return one float32 array per text.

    Pooled options give (dim,) rows; ``pooling=None`` gives (n_tokens, dim)
    matrices. ``on_done(text_indices, results)`` is called as texts complete
    (once per batch), so a cache can store finished work before a crash or an
    out-of-memory error later in the run.
    """
    n_texts = len(encoded.n_windows)
    results: list[np.ndarray | None] = [None] * n_texts
    if n_texts == 0:
        return []
    plan: BatchPlan = plan_batches(encoded.lengths, options.batch_size, options.max_tokens)
    pad_id = loaded.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    # Windowed texts wait until all their windows are done.
    pending: dict[int, dict[int, np.ndarray]] = {}
    keep_tokens = options.pooling is None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_texts, unit="text", desc="xlmt_sklearn", smoothing=0.1)

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

    def process(rows_idx: np.ndarray) -> None:
        rows = [encoded.rows[r] for r in rows_idx]
        ids, mask = _pad(rows, pad_id)
        with loaded.lock, torch.inference_mode():
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
            results[text] = np.ascontiguousarray(val, dtype=np.float32)
            done_idx.append(text)
            done_val.append(results[text])
        if on_done is not None and done_idx:
            on_done(done_idx, done_val)
        if bar is not None:
            bar.update(len(done_idx))

    def process_with_backoff(rows_idx: np.ndarray) -> None:
        try:
            process(rows_idx)
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc) or len(rows_idx) == 1:
                raise
            # Halve and retry: finished batches are already delivered.
            if loaded.device.startswith("cuda"):
                torch.cuda.empty_cache()
            half = len(rows_idx) // 2
            process_with_backoff(rows_idx[:half])
            process_with_backoff(rows_idx[half:])

    try:
        for batch in plan.batches:
            process_with_backoff(batch)
    finally:
        if bar is not None:
            bar.close()
    return results  # type: ignore[return-value]
