"""The block-directory read path: an optional fast path in front of the index rows.

A block whose arrays share one dtype and shape has a directory (``block_dirs``):
the row id, position, meta and CRC-32 of every entry written into it, packed as
little-endian int64s (:data:`~._codec.DIR_ITEM`). Entries only ever leave a
block, so while the block's ``live`` counter equals the number of items, every
item is still exactly where the directory says. A lookup batch whose keys lie
in a few such blocks (input order after a regroup) finds them by sampling a
few row ids, reads the directories and matches all its keys with numpy,
instead of one index row per key through the ``sqlite3`` row API.

This path only ever *serves* keys; it never decides that a key is missing,
stale or damaged. Whatever it does not serve (scattered layouts, blocks with
departed or not recently used entries, anything that fails a check) goes to
:func:`~._read.read_index_rows`, which answers every lookup on its own. So this
module can be dropped from :data:`~._store.DEFAULT_FAST_READS` (or deleted) without
changing a result, only the speed: ``docs/benchmarks.md`` measures input-order
lookups about 2x faster with it ("block directories off" A/B). The writer
keeps writing directories either way: they are part of the file format.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3

import numpy as np

from ._codec import DIR_ITEM, _column_crcs, _expected_len, _finite_rows, _join
from ._sql import _open_block, _placeholders
from ._tuning import TUNING

__all__ = ["read_directed"]

#: A lookup batch samples every this-many-th row id (and the last) to find the blocks
#: it lies in; batches of fewer keys take the index-row path directly.

# A usable directory: block id, dtype, shape, bytes per entry, items.
_Directory = tuple[int, str, str, int, np.ndarray]


def read_directed(
    conn: sqlite3.Connection, ids: list[int], key_of: dict[int, bytes], stale_before: float
) -> tuple[dict[bytes, tuple[np.ndarray, int]], set[int]]:
    """Serve lookups from block directories (see the module docstring).

    Must run inside a read transaction. Every served entry passed its CRC-32,
    computed with the *requested* key, and holds finite values only, so an item
    naming another key (a collision of row ids) or damaged bytes is never
    served; the caller looks up the ids not served through their index rows,
    which sorts out misses, collisions and damage. Only blocks whose every
    entry is live and was used since ``stale_before`` are read here, so no hit
    needs its ``last_used`` refreshed.

    Parameters
    ----------
    conn : sqlite3.Connection
        A connection inside a read transaction.
    ids : list of int
        Row ids of the requested keys.
    key_of : dict of int to bytes
        The requested key of each row id.
    stale_before : float
        Blocks holding an entry last used before this timestamp are not read here.

    Returns
    -------
    found : dict
        Key -> ``(array, meta)`` of every entry served.
    served : set of int
        The row ids served.
    """
    found: dict[bytes, tuple[np.ndarray, int]] = {}
    served: set[int] = set()
    dirs = _usable_directories(conn, ids, stale_before)
    if not dirs:
        return found, served
    table = np.concatenate([d[4] for d in dirs])
    owner = np.repeat(np.arange(len(dirs)), [len(d[4]) for d in dirs])
    order = np.argsort(table["id"], kind="stable")
    sorted_ids = table["id"][order]
    want = np.asarray(ids, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, want), len(sorted_ids) - 1)
    hits = np.sort(order[at[sorted_ids[at] == want]])  # by block, then position
    for j, (block, dtype, shape, size, _) in enumerate(dirs):
        mine = table[hits[owner[hits] == j]]
        if not len(mine):
            continue
        starts = mine["pos"].tolist()
        datas = _block_slices(conn, block, starts, size)
        if datas is None:
            continue
        got_ids, metas = mine["id"].tolist(), mine["meta"].tolist()
        keys = list(map(key_of.__getitem__, got_ids))
        crcs = _column_crcs(keys, dtype, shape, metas, datas)
        good = list(map(operator.eq, mine["crc"].tolist(), crcs))
        if not all(good):
            keys, metas, got_ids, datas = (
                list(itertools.compress(col, good)) for col in (keys, metas, got_ids, datas)
            )
            if not keys:
                continue
        arrays = _join(dtype, shape, datas)
        finite = _finite_rows(arrays)
        if not finite.all():  # not served: the index-row path finds them invalid and purges
            keep = finite.tolist()
            keys, metas, got_ids = (
                list(itertools.compress(col, keep)) for col in (keys, metas, got_ids)
            )
            arrays = arrays[finite]
        found.update(zip(keys, zip(arrays, metas, strict=True), strict=True))
        served.update(got_ids)
    return found, served


def _usable_directories(
    conn: sqlite3.Connection, ids: list[int], stale_before: float
) -> list[_Directory]:
    """The directories worth reading for ``ids``: none unless they lie in a few blocks."""
    stride = TUNING.probe_stride
    if len(ids) < stride:
        return []
    probe = list(dict.fromkeys([*ids[::stride], ids[-1]]))
    blocks = [
        b
        for (b,) in conn.execute(
            f"SELECT DISTINCT block FROM entries WHERE id IN ({_placeholders(len(probe))})",
            probe,
        )
    ]
    # Keys laid out in input order share a few blocks; when the samples lie in about
    # as many blocks as there are samples, directories would serve few keys.
    if not blocks or 2 * len(blocks) > len(probe) + 1:
        return []
    dirs = []
    for block, dtype, shape, items, live, oldest in conn.execute(
        "SELECT d.id, d.dtype, d.shape, d.items, u.live, "
        "(SELECT min(last_used) FROM entries WHERE block = d.id) "
        "FROM block_dirs d JOIN block_use u ON u.id = d.id "
        f"WHERE d.id IN ({_placeholders(len(blocks))})",
        blocks,
    ):
        size = _expected_len(dtype, shape)
        if (
            size is None
            or type(items) is not bytes
            or len(items) % DIR_ITEM.itemsize
            or live != len(items) // DIR_ITEM.itemsize
            or type(oldest) is not float
            or oldest < stale_before
        ):
            continue  # entries left, or one is due a touch: index rows decide
        dirs.append((block, dtype, shape, size, np.frombuffer(items, DIR_ITEM)))
    return dirs


def _block_slices(
    conn: sqlite3.Connection, block: int, starts: list[int], size: int
) -> list[bytes] | None:
    # ``size`` bytes at each start of a block; None if the block is missing or a span
    # falls outside it (a damaged directory: index rows decide).
    if not TUNING.blob_open:
        row = conn.execute("SELECT data FROM blocks WHERE id = ?", (block,)).fetchone()
        if row is None or type(row[0]) is not bytes:
            return None
        view = memoryview(row[0])
        if min(starts) < 0 or max(starts) + size > len(view):
            return None
        return [bytes(view[s : s + size]) for s in starts]
    blob = _open_block(conn, block)
    if blob is None:
        return None
    with blob:
        if min(starts) < 0 or max(starts) + size > len(blob):
            return None
        return list(map(blob.__getitem__, map(slice, starts, map(size.__add__, starts))))
