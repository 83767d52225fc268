"""The cache store against a model: random sequences of writes, deletions, regroups,
clears and lookups (through block directories and through index rows) must always
return exactly what a plain dictionary says, and keep the file's bookkeeping exact."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests._store_checks import check_blocks as _check_blocks
from tests._store_checks import counts_by_scan as _counts_by_scan
from tests._store_checks import store_keys as _keys
from xlmt_sklearn.store import _sqlite as S

# Twelve ordinary keys and two that share a row id (a collision of 8-byte prefixes).
POOL = [*_keys(12), b"\x07" * 8 + b"a" * 24, b"\x07" * 8 + b"b" * 24]
DIM = 4  # 16-byte vectors: a block of 80 bytes holds five


def _value(version: int) -> np.ndarray:
    return np.full(DIM, version, np.float32)


keys_st = st.lists(st.sampled_from(POOL), min_size=1, max_size=10)


class StoreModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="xlmt-store-model-"))
        self.store = S.SQLiteStore(self.dir / "s.sqlite", timeout=5)
        self.model: dict[bytes, int] = {}  # key -> version (the stored value and meta)
        self.version = 0

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(keys=keys_st)
    def put(self, keys):
        versions = []
        for key in keys:
            self.version += 1
            versions.append(self.version)
            # The last write of a row id wins, also over another key with that id.
            for other in [k for k in self.model if S.key_id(k) == S.key_id(key)]:
                del self.model[other]
            self.model[key] = self.version
        self.store.put_many(S.encode_rows(keys, [_value(v) for v in versions], versions))

    @rule(keys=keys_st)
    def purge(self, keys):
        self.store.touch_and_purge([], sorted({S.key_id(k) for k in keys}))
        for key in keys:
            for other in [k for k in self.model if S.key_id(k) == S.key_id(key)]:
                del self.model[other]

    @rule(keys=keys_st)
    def regroup(self, keys):
        self.store.regroup(keys)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self):
        self.store.clear()
        self.model.clear()

    @rule(
        keys=st.lists(st.sampled_from(POOL), min_size=1, max_size=30),
        stale=st.booleans(),
        refresh=st.booleans(),
    )
    def get(self, keys, stale, refresh):
        stale_before = S.TUNING.clock() + 1 if stale else 0.0
        result = self.store.get_many(keys, stale_before)
        got = [None if v is None else (float(v[0][0]), v[1]) for v in result.values]
        want = [None if k not in self.model else (float(self.model[k]),) * 2 for k in keys]
        assert got == want
        assert result.invalid == []
        hits = {S.key_id(k) for k in keys if k in self.model}
        assert set(result.touch) == (hits if stale else set())
        if refresh:
            self.store.touch_and_purge(result.touch, [])

    @invariant()
    def bookkeeping(self):
        _check_blocks(self.store._conn)
        assert self.store.counts() == _counts_by_scan(self.store.path)
        assert self.store.counts()[0] == len(self.model)


@pytest.mark.parametrize("stride", [2, 10**9], ids=["directories", "index rows"])
def test_the_store_behaves_like_a_dictionary(monkeypatch, stride):
    monkeypatch.setattr(S.TUNING, "block_bytes", 5 * DIM * 4)
    monkeypatch.setattr(S.TUNING, "probe_stride", stride)
    run_state_machine_as_test(
        StoreModel,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
