"""The encode flow's tunables, in one object read at call time.

Tests and benchmarks change a tunable on :data:`TUNING` (``monkeypatch.setattr(
TUNING, "stream_chunk", 4)``); the flow reads it there on every call, as the
cache's store reads its own (:data:`xlmt_sklearn.store._sqlite.TUNING`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TUNING", "FlowTuning"]


@dataclass
class FlowTuning:
    """The encode flow's tunables (measurements: docs/architecture.md, "Measurements
    behind constants").

    Attributes
    ----------
    stream_chunk : int
        Distinct texts looked up, tokenized and encoded per step of a transform:
        bounds the memory a huge call needs beyond its output (cache answers, token
        ids, pending rows).
    lookup_batch : int
        Keys per cache lookup call: hits are yielded as each call returns, so at
        most this many cached arrays are alive at once; measured faster per key
        than one lookup of a whole chunk (the arrays stay in the CPU's caches).
    regroup_below_texts_per_s : float
        A chunk of new texts is regrouped in input order (``regroup``) only when it
        was encoded slower than this. Regrouping puts a lookup batch's keys into a
        few blocks, which block directories serve without an index row per key
        (~2x faster input-order lookups, docs/benchmarks.md "Cache"), but makes
        writes ~45% slower: under 1% of a CPU transform's time, but on a GPU the
        cache's write rate is already the bottleneck.
    claim_wait_s : float
        The longest a transform waits for keys another live process claimed (then
        it encodes them itself: a stalled owner costs time, never a missing or
        wrong vector).
    claim_group : int
        The most misses claimed at a time: small enough that two processes missing the
        same texts encode different groups side by side, large enough that a long
        stream pays few claim rounds (the groups are cut from the misses sorted by
        length, so a group's batches pad as little as the whole stream's).
    claim_split : int
        Fewer misses than ``claim_split * claim_group`` are claimed in about
        ``claim_split`` groups (at least 32 texts each): a search's workers that miss
        the same few hundred texts then share them instead of one process claiming
        them all in its first group (docs/reliability.md, "Several processes on one
        cache").
    overlap_delivery : {"cuda", "always", "never"}
        Where finished batches are delivered from: ``"cuda"`` (computation on
        producer threads when any device is a CUDA card, which leaves the CPU idle
        while it computes; a CPU computation already keeps every core busy),
        ``"always"`` or ``"never"``.
    sort_batches : bool
        Cut batches from the texts sorted by length (True), or in input order: the
        baseline ``benchmarks/bench_tuning.py`` measures the sort against.
    """

    stream_chunk: int = 8192
    lookup_batch: int = 1000
    regroup_below_texts_per_s: float = 1000.0
    claim_wait_s: float = 600.0
    claim_group: int = 256
    claim_split: int = 8
    overlap_delivery: str = "cuda"
    sort_batches: bool = True


#: The flow's tunables for this process.
TUNING = FlowTuning()
