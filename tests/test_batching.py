"""Step 3 and 6: dedupe and batch planning (no model)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from xlmt_sklearn.flow._batching import (
    BATCH_OVERHEAD_TOKENS,
    FAST_BATCH_OVERHEAD_TOKENS,
    plan_batches,
)
from xlmt_sklearn.flow._dedupe import unique_texts
from xlmt_sklearn.flow._output import Scatter


@given(
    st.lists(st.integers(1, 200), max_size=300),
    st.integers(1, 40),
    st.one_of(st.none(), st.integers(1, 2000)),
    st.booleans(),
)
def test_plan_covers_every_position_once(lengths, batch_size, max_tokens, min_padding):
    plan = plan_batches(lengths, batch_size, max_tokens, min_padding=min_padding)
    seen = np.concatenate(plan.batches) if plan.batches else np.array([], dtype=int)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in plan.batches:
        assert 1 <= len(b) <= batch_size
        longest = max(lengths[i] for i in b)
        if max_tokens is not None and len(b) > 1:
            assert len(b) * longest <= max_tokens
        assert lengths[b[0]] == longest  # the first member sets the padded width


def test_sorting_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    sorted_plan = plan_batches(lengths, 32)
    assert sorted_plan.padding_fraction < 0.05
    assert sorted_plan.real_tokens == lengths.sum()


def test_empty_plan():
    for min_padding in (False, True):
        plan = plan_batches([], 8, min_padding=min_padding)
        assert plan.batches == [] and plan.padding_fraction == 0.0


def _brute_force_cost(desc, batch_size, max_tokens, cut_tokens=BATCH_OVERHEAD_TOKENS):
    """Least padded tokens + overhead over every way to cut ``desc`` (exponential)."""
    import functools

    @functools.cache
    def best(i):
        if i == len(desc):
            return 0
        options = []
        for j in range(i + 1, min(len(desc), i + batch_size) + 1):
            padded = (j - i) * desc[i]
            if max_tokens is None or padded <= max_tokens or j == i + 1:
                options.append(padded + cut_tokens + best(j))
        return min(options)

    return best(0)


@given(
    st.lists(st.integers(1, 130), min_size=1, max_size=14),
    st.integers(1, 6),
    st.one_of(st.none(), st.integers(1, 400)),
    st.sampled_from([BATCH_OVERHEAD_TOKENS, FAST_BATCH_OVERHEAD_TOKENS, 0, 500]),
)
def test_min_padding_plan_is_optimal(lengths, batch_size, max_tokens, cut_tokens):
    plan = plan_batches(lengths, batch_size, max_tokens, min_padding=True, cut_tokens=cut_tokens)
    got = plan.padded_tokens + cut_tokens * len(plan.batches)
    desc = tuple(sorted(lengths, reverse=True))
    assert got == _brute_force_cost(desc, batch_size, max_tokens, cut_tokens)


def test_a_dearer_cut_gives_fewer_batches():
    """OpenVINO bf16/int8 price a cut at 72 tokens (a token is cheap there): fewer batches,
    a little more padding, every batch still within batch_size."""
    lengths = np.random.default_rng(0).integers(5, 61, size=320)
    cheap = plan_batches(lengths, 32, min_padding=True)
    dear = plan_batches(lengths, 32, min_padding=True, cut_tokens=FAST_BATCH_OVERHEAD_TOKENS)
    assert len(dear.batches) < len(cheap.batches)
    assert cheap.padding_fraction <= dear.padding_fraction < 0.1
    assert max(map(len, dear.batches)) <= 32


def test_min_padding_plan_wastes_less_on_a_small_spread_sample():
    """80 texts of 5..60 tokens: cutting every 32 texts pads heavily; the plan does not."""
    lengths = np.random.default_rng(0).integers(5, 61, size=80)
    fixed, least = plan_batches(lengths, 32), plan_batches(lengths, 32, min_padding=True)
    assert fixed.padding_fraction > 0.2
    assert least.padding_fraction < 0.1
    assert least.batches[0][0] == fixed.batches[0][0]  # still longest first


@given(st.lists(st.sampled_from(["a", "b", "c", "", "é", "😀"]), max_size=50))
def test_unique_and_scatter_round_trip(texts):
    uniq, inverse = unique_texts(texts)
    assert len(set(uniq)) == len(uniq)
    assert [uniq[i] for i in inverse] == texts
    vecs = np.arange(len(uniq) * 2, dtype=np.float32).reshape(-1, 2)
    out = np.zeros((len(texts), 2), np.float32)
    Scatter(inverse, np.arange(len(texts))).into(out, range(len(uniq)), list(vecs))
    np.testing.assert_array_equal(out, vecs[inverse] if texts else out)


def test_scatter_leaves_rows_without_a_text_alone():
    """Missing rows (``missing="zeros"``) are not in ``rows``: they stay zero."""
    scatter = Scatter(np.array([0, 0]), np.array([0, 2]))
    out = np.zeros((3, 3), np.float32)
    scatter.into(out, [0], [np.ones(3, np.float32)])
    assert out.sum(axis=1).tolist() == [3, 0, 3]
    assert scatter.positions(np.array([0])).tolist() == [0, 2]
    assert scatter.gather(["a"], 3, "-") == ["a", "-", "a"]
