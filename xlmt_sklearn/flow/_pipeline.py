"""Steps 4-9 -- the one-way encode stream: cache lookup, encode misses, write through.

``stream(request) -> iterator of (unique_indices, arrays)``. The estimators
hand it a frozen :class:`Request` (distinct model inputs, their cache keys,
the encoders, the options) and write what it yields into their output, on
their own thread. Read top to bottom, per chunk of ``TUNING.stream_chunk``
distinct texts:

1. look the chunk up in the cache, ``TUNING.lookup_batch`` keys at a time, and
   yield the hits; with a cache shared by processes, claim the misses a group at a
   time (:func:`claim_size`) and wait for those another process encodes;
2. tokenize the misses (unless the request brings their tokenization);
3. :func:`encode` them: plan length-sorted batches, compute them on the
   encoders (:func:`~xlmt_sklearn.flow._scheduler.computed`), merge the windows of
   long texts, pool what still needs pooling;
4. write each finished batch to the cache, then yield it;
5. lay the chunk's new entries out in input order when that is cheap.

Every yielded array is float32 and already rounded to the cache's storage
precision, so a value served from the cache later equals the one returned
now. Every array is finite: a batch with a NaN or inf raises
:class:`~xlmt_sklearn.NonFiniteOutputError` before anything of it is cached or
yielded, and a non-finite cache hit is a miss. Nothing here calls back into
the estimators.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import NonFiniteOutputError, TruncationWarning, user_stacklevel
from ..backends._encoders import EncodeOptions, Encoder
from ..store._base import CacheBase
from ._pooling import pool_merged
from ._progress import progress_bar
from ._tokenize import Encoded
from ._tuning import TUNING

__all__ = ["Request", "claim_size", "encode", "stream"]

logger = logging.getLogger("xlmt_sklearn")

Results = tuple[np.ndarray, list[np.ndarray]]


@dataclass(frozen=True)
class Request:
    """One cache-or-encode job over distinct model inputs.

    Attributes
    ----------
    keys : list of bytes
        Cache key of each distinct input.
    texts : list of str
        The distinct model inputs (tokenized on a miss); unused when
        ``encoded`` is given.
    encoded : Encoded or None
        The tokenization of all inputs when the caller needed it anyway
        (token features); otherwise only the misses are tokenized, and an
        all-hit call loads neither tokenizer nor model.
    encoders : list of Encoder
        One per device (see :mod:`xlmt_sklearn.backends._encoders`).
    cache : CacheBase
        From :func:`~xlmt_sklearn.store._adapt.as_cache`: an ``EmbeddingCache``, a
        ``NullCache`` or a user object behind the :class:`CacheBase` interface.
    options : EncodeOptions
        Layers, pooling, batch sizes.
    expected_shapes : sequence of tuple of int
        The shape of each distinct input's value; a cached value of another
        shape is a miss.
    max_length, stride : int
        Tokenization limits (``stride`` for windows).
    truncation : {"warn", "error", "window"}
        What a text longer than ``max_length`` gets.
    positions : callable (unique indices) -> input rows
        For messages: where the distinct texts were in the input.
    n_total : int
        Rows in the input (for messages).
    store_dtype : {"float32", "float16"}
        Precision of cached values; every result is rounded to it.
    progress : bool, "auto" or "log"
        A progress bar (``"auto"``: long runs in a terminal or notebook;
        ``"log"``: :class:`~._progress.ProgressLines`).
    label : str
        The estimator's name, for log records.
    finish : callable (array) -> array, optional
        Turns each encoded array into what is stored and yielded (e.g. token
        matrices into per-layer statistics, :mod:`xlmt_sklearn.flow._layer_stats`);
        a cache hit is already in that form.
    """

    keys: Sequence[bytes]
    texts: Sequence[str]
    encoded: Encoded | None
    encoders: Sequence[Encoder]
    cache: CacheBase
    options: EncodeOptions
    expected_shapes: Sequence[tuple[int, ...]]
    max_length: int
    stride: int
    truncation: str
    positions: Callable[[np.ndarray], np.ndarray]
    n_total: int
    store_dtype: str = "float32"
    progress: bool | str = False
    label: str = "xlmt_sklearn"
    finish: Callable[[np.ndarray], np.ndarray] | None = None


def stream(req: Request) -> Iterator[Results]:
    """Yield ``(unique_indices, arrays)`` for every distinct input of ``req``.

    Hits come first within each chunk, then finished batches in completion
    order; every index is yielded exactly once. ``truncation="error"`` takes
    one chunk, so that it refuses before encoding anything; ``"warn"`` warns
    once at the end (:class:`~xlmt_sklearn.TruncationWarning`).
    """
    n = len(req.keys)
    long_ = np.zeros(n, dtype=bool)
    if req.encoded is not None:
        long_ = np.asarray(req.encoded.truncated, dtype=bool).copy()
    step = max(n, 1) if req.truncation == "error" else TUNING.stream_chunk
    counts = [0, 0, 0]  # texts encoded, of them windowed, their windows
    bar = None
    try:
        for a in range(0, n, step):
            idx = np.arange(a, min(a + step, n))
            hits: list[int] = []
            for got, arrays in _hits(req, idx, long_):  # 1
                hits += got.tolist()
                yield got, arrays
            miss = np.setdiff1d(idx, hits, assume_unique=True)
            _refuse_long(req, long_)
            if a == 0:
                bar = progress_bar(req.progress, n, n - len(hits), req.encoders[0].describe())
            if bar is not None:
                bar.update(len(hits))
            if not len(miss):
                continue
            for encoder in req.encoders:  # a broken model fails before any work
                encoder.load()
            started, before = time.perf_counter(), counts[0]
            yield from _claimed(req, miss, long_, bar, counts)  # 2-4
            encoded = counts[0] - before
            rate = encoded / max(time.perf_counter() - started, 1e-9)
            if encoded and rate < TUNING.regroup_below_texts_per_s:  # 5, in input order
                req.cache.regroup([req.keys[i] for i in miss])
            if n > step:  # a huge call: return the chunk's free heap
                from ._scheduler import release_free_memory

                release_free_memory()
    finally:
        if bar is not None:
            bar.close()
    _report(req, long_, *counts)


def _claimed(
    req: Request, miss: np.ndarray, long_: np.ndarray, bar, counts: list[int]
) -> Iterator[Results]:
    """Encode the misses this process claims; wait for those another process encodes.

    With a cache that coordinates processes (:attr:`CacheBase.coordinates`), misses are
    claimed :func:`claim_size` at a time, shortest texts first, so that processes
    missing the same texts (a search's workers) encode different groups side by side;
    a claim that finds keys another process holds turns to the other end of the
    length order (the longest texts), so that two processes work from opposite ends
    instead of splitting each group into fragments.
    A key another live process has claimed is looked up until it appears, and taken
    over when that process is gone or after ``TUNING.claim_wait_s`` seconds; claimed keys
    are looked up once more (stored meanwhile?) and released whatever happens.
    """
    if not req.cache.coordinates:
        yield from _encode_misses(req, miss, long_, bar, counts)
        return
    pending = miss[np.argsort([len(req.texts[i]) for i in miss], kind="stable")]
    size = claim_size(len(pending))
    waiting = np.zeros(0, dtype=np.int64)
    deadline, delay, shortest = time.monotonic() + TUNING.claim_wait_s, 0.02, True
    while len(pending) or len(waiting):
        if len(pending) and shortest:
            group, pending = pending[:size], pending[size:]
        elif len(pending):
            group, pending = pending[-size:], pending[:-size]
        else:  # only other processes' keys are left: take what they stored
            found: list[int] = []
            for got, arrays in _hits(req, waiting, long_, again=True):
                found += got.tolist()
                yield got, arrays
            if bar is not None:
                bar.update(len(found))
            group = np.setdiff1d(waiting, found, assume_unique=True)
            waiting = np.zeros(0, dtype=np.int64)
            if not len(group):
                break
            if not found:
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        late = time.monotonic() > deadline
        keys = [req.keys[i] for i in group]
        mine = np.ones(len(group), dtype=bool) if late else np.asarray(req.cache.claim(keys))
        own = group[mine]
        waiting = np.concatenate([waiting, group[~mine]])
        if not mine.all():  # another process works at this end
            shortest = not shortest
        try:
            found = []
            for got, arrays in _hits(req, own, long_, again=True):  # stored meanwhile?
                found += got.tolist()
                yield got, arrays
            if bar is not None:
                bar.update(len(found))
            left = np.setdiff1d(own, found, assume_unique=True)
            if len(left):
                yield from _encode_misses(req, left, long_, bar, counts)
        finally:
            if len(own):
                req.cache.release([req.keys[i] for i in own])


def claim_size(n_misses: int) -> int:
    """Misses claimed at a time: about ``n_misses / TUNING.claim_split``, at least 32 (or
    ``TUNING.claim_group`` when smaller) and at most ``TUNING.claim_group``."""
    most = TUNING.claim_group
    return max(min(32, most), min(most, -(-n_misses // TUNING.claim_split)))


def _encode_misses(
    req: Request, miss: np.ndarray, long_: np.ndarray, bar, counts: list[int]
) -> Iterator[Results]:
    """Steps 2-4 for the distinct inputs ``miss``: tokenize, encode, write."""
    enc = _tokenize_misses(req, miss)  # 2
    long_[miss] = enc.truncated
    _refuse_long(req, long_)
    try:
        for local, arrays in encode(req.encoders, enc, req.options):  # 3
            if req.finish is not None:
                arrays = [req.finish(a) for a in arrays]
            done = miss[local]
            _write(req, done, arrays, enc.truncated[local])  # 4
            yield done, arrays
            if bar is not None:
                bar.update(len(done))
    except NonFiniteOutputError as exc:  # name the input rows, not the chunk's
        rows = req.positions(miss[np.asarray(exc.positions, dtype=np.int64)])
        raise NonFiniteOutputError(
            exc.backend, exc.dtype, exc.quantize, exc.model, rows, req.n_total
        ) from None
    counts[0] += len(miss)
    if req.truncation == "window":
        counts[1] += int(enc.truncated.sum())
        counts[2] += int(enc.n_windows[enc.truncated].sum())


def encode(
    encoders: Sequence[Encoder], enc: Encoded, options: EncodeOptions
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Encode every text of ``enc``; yield ``(text_indices, arrays)`` per finished batch.

    Pooled options give (dim,) float32 rows; ``pooling=None`` gives
    (n_tokens, dim) matrices, special tokens included. A text cut into windows
    is yielded once all its windows are done, merged
    (:func:`~xlmt_sklearn.flow._tokens.merge_windows`) and then pooled.
    """
    from ._batching import plan_batches
    from ._scheduler import computed

    if len(enc.n_windows) == 0:
        return
    longest = int(np.max(enc.lengths))
    caps = [c for c in (e.token_cap(options, longest) for e in encoders) if c is not None]
    plan = plan_batches(
        enc.lengths, options.batch_size, min(caps) if caps else None,
        min_padding=all(e.pads_batches for e in encoders),
        cut_tokens=max(e.cut_tokens for e in encoders), sort=TUNING.sort_batches,
    )  # fmt: skip

    def compute(rows_idx: np.ndarray, encoder: Encoder):
        rows = [enc.rows[r] for r in rows_idx]
        single = enc.n_windows[enc.row_text[rows_idx]] == 1
        return rows_idx, rows, single, encoder.encode(rows, options, single)

    pending: dict[int, dict[int, np.ndarray]] = {}  # windows waiting for their siblings
    for rows_idx, rows, single, out in computed(encoders, plan.batches, compute):
        texts, arrays, broken = [], [], []
        for k, r in enumerate(rows_idx):
            text = int(enc.row_text[r])
            if single[k] and out.pooled is not None and options.pooling is not None:
                value = out.pooled[k]
            elif single[k]:
                value = out.tokens[k, : len(rows[k])]
            else:
                window = out.tokens[k, : len(rows[k])]
                if not np.isfinite(window).all():
                    broken.append(text)
                    continue
                value = _merge_when_complete(enc, pending, text, int(r), window)
                if value is None:
                    continue
                value = pool_merged(value, options.pooling, options.normalize)
            if not np.isfinite(value).all():
                broken.append(text)
                continue
            texts.append(text)
            arrays.append(np.ascontiguousarray(value, dtype=np.float32))
        if broken:  # before anything of this batch is yielded, so never cached
            raise _non_finite(encoders[0], sorted(set(broken)))
        if texts:
            yield np.asarray(texts, dtype=np.int64), arrays


def _non_finite(encoder: Encoder, texts: list[int]) -> NonFiniteOutputError:
    """The error for ``texts`` (indices into the encoded texts) that ``encoder`` broke."""
    spec = getattr(encoder, "spec", None)
    return NonFiniteOutputError(
        encoder.name, encoder.dtype, encoder.fingerprint.get("quantize"),
        str(getattr(spec, "name", "?")), texts,
    )  # fmt: skip


# ----------------------------------------------------------------------------- steps


def _hits(
    req: Request, idx: np.ndarray, long_: np.ndarray, again: bool = False
) -> Iterator[Results]:
    """Cache hits among the distinct inputs ``idx``, one lookup call of ``TUNING.lookup_batch``
    keys at a time (a hit of another shape, or holding NaN or inf, is a miss); records
    whether each hit's text was truncated. ``again``: keys missed once already
    (:meth:`CacheBase.recheck`)."""
    check = not req.cache.returns_finite_only
    lookup = req.cache.recheck if again else req.cache.get_many
    for b in range(0, len(idx), TUNING.lookup_batch):
        part = idx[b : b + TUNING.lookup_batch]
        got, arrays, metas = [], [], []
        values = lookup([req.keys[i] for i in part])
        for i, hit in zip(part.tolist(), values, strict=True):
            if (
                hit is not None
                and hit[0].shape == req.expected_shapes[i]
                and not (check and not np.isfinite(hit[0]).all())
            ):
                got.append(i)
                arrays.append(np.asarray(hit[0], dtype=np.float32))
                metas.append(bool(hit[1]))
        if got:
            found = np.asarray(got, dtype=np.int64)
            if req.encoded is None:
                long_[found] = metas
            yield found, arrays


def _tokenize_misses(req: Request, miss: np.ndarray) -> Encoded:
    from ._tokenize import subset, tokenize

    if req.encoded is not None:
        return subset(req.encoded, miss)
    prefix, suffix = req.encoders[0].special_tokens()
    return tokenize(
        req.encoders[0].tokenizer(), [req.texts[i] for i in miss],
        prefix_ids=prefix, suffix_ids=suffix, max_length=req.max_length,
        windows=req.truncation == "window", stride=req.stride,
    )  # fmt: skip


def _write(req: Request, done: np.ndarray, arrays: list[np.ndarray], long_: np.ndarray) -> None:
    """Round to the storage precision (in place: a later hit returns exactly this), store."""
    if req.store_dtype != "float32":
        for v in arrays:
            v[...] = v.astype(req.store_dtype)
    req.cache.put_many(
        [req.keys[i] for i in done],
        [v.astype(req.store_dtype, copy=False) for v in arrays],
        [int(x) for x in long_],
    )


def _merge_when_complete(
    enc: Encoded, pending: dict[int, dict[int, np.ndarray]], text: int, row: int, mat: np.ndarray
) -> np.ndarray | None:
    from ._tokens import merge_windows

    got = pending.setdefault(text, {})
    got[row] = mat.copy()
    if len(got) < enc.n_windows[text]:
        return None
    order = sorted(got)
    del pending[text]
    return merge_windows(
        [got[o] for o in order], [int(enc.row_start[o]) for o in order], enc.n_prefix, enc.n_suffix
    )


def _refuse_long(req: Request, long_: np.ndarray) -> None:
    if req.truncation != "error" or not long_.any():
        return
    rows = req.positions(np.flatnonzero(long_))
    shown = ", ".join(map(str, rows[:10].tolist()))
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    raise ValueError(
        f"{len(rows)} texts are longer than max_length={req.max_length} tokens "
        f"(positions {shown}{more}) and truncation='error'. Raise max_length, or use "
        "truncation='warn' (truncate) or 'window' (encode overlapping windows)."
    )


def _report(req: Request, long_: np.ndarray, n_miss: int, n_windowed: int, n_windows: int) -> None:
    if n_windowed:
        logger.info(
            "truncation='window': %d of %d texts exceeded max_length=%d and were "
            "encoded in %d overlapping windows",
            n_windowed, n_miss, req.max_length, n_windows,
        )  # fmt: skip
    logger.debug(
        "%s: %d distinct texts, %d from the cache, %d encoded",
        req.label, len(req.keys), len(req.keys) - n_miss, n_miss,
    )  # fmt: skip
    if req.truncation == "warn" and long_.any():
        warnings.warn(
            TruncationWarning(req.positions(np.flatnonzero(long_)), req.max_length, req.n_total),
            stacklevel=user_stacklevel(),
        )


# ----------------------------------------------------------------------------- progress
