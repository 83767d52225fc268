"""The index-row read path: the one that answers every lookup on its own.

Select the index rows of the requested row ids, slice each entry's bytes out
of its block (incremental BLOB I/O; whole blocks on Python 3.10), then
validate and decode: lengths, types, then a CRC-32 over key, header and
bytes, then finite values. Whatever fails a check is reported as invalid (a
miss, to be deleted), never returned. :mod:`._directory` is an optional faster path in
front of this one; this module does not depend on it.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from ._codec import _column_crcs, _expected_len, _finite_rows, _join, row_crc
from ._sql import _chunks, _index_rows, _open_block, _placeholders
from ._tuning import TUNING

__all__ = ["read_index_rows"]


def read_index_rows(
    conn: sqlite3.Connection, ids: list[int], stale_before: float
) -> tuple[dict[bytes, tuple[np.ndarray, int]], list[int], list[int]]:
    """Look up row ids through their index rows; must run inside a read transaction.

    Parameters
    ----------
    conn : sqlite3.Connection
        A connection inside a read transaction.
    ids : list of int
        Row ids of the requested keys (see :func:`~._codec.key_id`).
    stale_before : float
        Hits whose ``last_used`` is below this timestamp are listed in ``touch``.

    Returns
    -------
    found : dict
        Stored key -> ``(array, meta)`` of every valid entry found. A row whose id
        matches but whose key is another's (a collision of 8-byte prefixes) is
        simply never asked for by that key: a miss.
    touch : list of int
        Row ids of hits whose ``last_used`` is below ``stale_before``.
    invalid : list of int
        Row ids of entries that failed validation.
    """
    rows = _index_rows(conn, "id", ids)
    return _decode_rows(rows, _read_slices(conn, rows), stale_before)


def _decode_rows(
    rows: list[tuple], datas: list[object], stale_before: float
) -> tuple[dict[bytes, tuple[np.ndarray, int]], list[int], list[int]]:
    """Validate and decode entries read by :func:`read_index_rows`.

    ``rows`` are index rows (:data:`~._sql.INDEX_COLUMNS`) and ``datas[i]`` the
    bytes read for ``rows[i]`` (``None`` when its block could not be read).
    Returns ``(found, touch, invalid)``: stored key -> (array, meta) for valid
    entries, row ids of those whose ``last_used`` is below ``stale_before``, and
    row ids of invalid entries.
    """
    if not rows:
        return {}, [], []
    keys, _, _, _, dtypes, shapes, metas, last_used, crcs, ids = zip(*rows, strict=True)
    specs = set(zip(dtypes, shapes, strict=True))
    if len(specs) == 1:
        # The usual batch: one dtype and shape. Check whole columns at C speed:
        # every row's CRC is computed by map() calls, with no Python bytecode per row.
        ((dtype, shape),) = specs
        size = _expected_len(dtype, shape)
        if (
            size is not None
            and set(map(type, datas)) == {bytes}
            and set(map(len, datas)) == {size}
            and set(map(type, metas)) == {int}
            and set(map(type, keys)) == {bytes}
            and list(crcs) == _column_crcs(keys, dtype, shape, metas, datas)  # type: ignore[arg-type]
        ):
            arrays = _join(dtype, shape, datas)  # type: ignore[arg-type]
            if _finite_rows(arrays).all():  # else: the row-by-row path below sorts them out
                touch = [
                    i
                    for i, t in zip(ids, last_used, strict=True)
                    if type(t) is not float or t < stale_before
                ]
                return dict(zip(keys, zip(arrays, metas, strict=True), strict=True)), touch, []
    touch, invalid = [], []
    groups: dict[tuple[str, str], list[tuple[bytes, bytes, int, int]]] = {}
    sizes = {spec: _expected_len(*spec) for spec in specs}
    for (key, _, _, _, dtype, shape, meta, used, crc, rowid), data in zip(rows, datas, strict=True):
        spec = (dtype, shape)
        if (
            type(data) is not bytes
            or len(data) != sizes[spec]
            or type(meta) is not int
            or type(key) is not bytes
            or crc != row_crc(key, dtype, shape, meta, data)
        ):
            invalid.append(rowid)
            continue
        groups.setdefault(spec, []).append((key, data, meta, rowid))
        if type(used) is not float or used < stale_before:
            touch.append(rowid)
    found = {}
    for (dtype, shape), members in groups.items():
        arrays = _join(dtype, shape, [m[1] for m in members])
        finite = _finite_rows(arrays).tolist()
        for (key, _, meta, rowid), array, ok in zip(members, arrays, finite, strict=True):
            if ok:
                found[key] = (array, meta)
            else:
                invalid.append(rowid)
    if invalid:
        dropped = set(invalid)
        touch = [i for i in touch if i not in dropped]
    return found, touch, invalid


def _read_slices(conn: sqlite3.Connection, rows: list[tuple]) -> list[object]:
    """Read each index row's bytes from its block (``None`` where that is impossible).

    Must run inside the transaction that selected ``rows``, so that blocks and
    index rows come from one snapshot.
    """
    datas: list[object] = [None] * len(rows)
    by_block: dict[object, list[int]] = {}
    for i, row in enumerate(rows):
        by_block.setdefault(row[1], []).append(i)
    if not TUNING.blob_open:  # Python 3.10: fetch whole blocks
        return _read_whole_blocks(conn, rows, by_block, datas)
    # Positions and lengths are SQLite integers unless the file was tampered with; check
    # that once per call so that the common loop below only compares numbers.
    typed = {type(r[2]) for r in rows} | {type(r[3]) for r in rows} == {int}
    for block, members in by_block.items():
        blob = _open_block(conn, block) if type(block) is int else None
        if blob is None:
            continue  # no such block: its entries are invalid
        with blob:
            size = len(blob)
            if typed:
                for i in members:
                    row = rows[i]
                    pos = row[2]
                    end = pos + row[3]
                    if 0 <= pos <= end <= size:
                        datas[i] = blob[pos:end]
            else:
                for i in members:
                    span = _span(rows[i], size)
                    if span is not None:
                        datas[i] = blob[span[0] : span[1]]
    return datas


def _span(row: tuple, size: int) -> tuple[int, int] | None:
    # Where an index row's bytes lie in a block of ``size`` bytes; None if not inside it.
    pos, n = row[2], row[3]
    if type(pos) is int and type(n) is int and pos >= 0 and n >= 0 and pos + n <= size:
        return pos, pos + n
    return None


def _read_whole_blocks(
    conn: sqlite3.Connection,
    rows: list[tuple],
    by_block: dict[object, list[int]],
    datas: list[object],
) -> list[object]:
    ids = [b for b in by_block if type(b) is int]
    for chunk in _chunks(ids):
        for block, data in conn.execute(
            f"SELECT id, data FROM blocks WHERE id IN ({_placeholders(len(chunk))})", chunk
        ):
            if type(data) is not bytes:
                continue
            view = memoryview(data)
            for i in by_block[block]:
                span = _span(rows[i], len(data))
                if span is not None:
                    datas[i] = bytes(view[span[0] : span[1]])
    return datas
