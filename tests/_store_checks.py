"""Store checks shared by the SQLite store tests: keys, scans, block bookkeeping."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import numpy as np

from xlmt_sklearn.store import _sqlite as S
from xlmt_sklearn.store._keys import make_keys

__all__ = ["check_blocks", "counts_by_scan", "store_keys"]


def store_keys(n: int, start: int = 0) -> list[bytes]:
    return make_keys("store-test", [f"t{i}" for i in range(start, start + n)])


def counts_by_scan(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        n, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM entries").fetchone()
    conn.close()
    return n, total


def check_blocks(conn: sqlite3.Connection) -> dict[int, tuple[int, int, int]]:
    """Assert the block counters match a scan and no block is orphaned; return them."""
    use = {b: (size, live, lb) for b, size, live, lb in conn.execute("SELECT * FROM block_use")}
    sizes = dict(conn.execute("SELECT id, length(data) FROM blocks"))
    scan = dict.fromkeys(sizes, (0, 0))
    for block, n, total in conn.execute(
        "SELECT block, COUNT(*), SUM(nbytes) FROM entries GROUP BY block"
    ):
        scan[block] = (n, total)
    assert set(use) == set(sizes) == set(scan)
    for b, (size, live, lb) in use.items():
        assert size == sizes[b] and (live, lb) == scan[b] and live > 0
    # Entries lie inside their blocks and do not overlap.
    spans: dict[int, list[tuple[int, int]]] = {}
    for block, pos, n in conn.execute("SELECT block, pos, nbytes FROM entries"):
        spans.setdefault(block, []).append((pos, pos + n))
    for b, ranges in spans.items():
        ranges.sort()
        assert ranges[-1][1] <= sizes[b]
        assert all(a[1] <= c[0] for a, c in itertools.pairwise(ranges))
    _check_directories(conn)
    return use


def _check_directories(conn: sqlite3.Connection) -> None:
    """Assert every directory has its block, and a fully live block's lists its entries."""
    entries: dict[int, set[tuple]] = {}
    for rowid, block, pos, meta, crc in conn.execute(
        "SELECT id, block, pos, meta, crc FROM entries"
    ):
        entries.setdefault(block, set()).add((rowid, pos, meta, crc))
    live = dict(conn.execute("SELECT id, live FROM block_use"))
    for block, items in conn.execute("SELECT id, items FROM block_dirs"):
        assert block in live
        listed = {tuple(map(int, item)) for item in np.frombuffer(items, S.DIR_ITEM).tolist()}
        assert entries[block] <= listed  # entries only ever leave a block
        if live[block] == len(listed):
            assert entries[block] == listed
