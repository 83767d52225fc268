"""Writes: pack arrays into blocks, evict, regroup, compact, purge, clear.

Every function here runs inside a write transaction (``BEGIN IMMEDIATE``) that
the caller (:class:`~._store.SQLiteStore`) opens and commits. Blocks are never
updated: the arrays of one write are packed back to back into new blocks of up
to :attr:`~._tuning.Tuning.block_bytes`, each with a directory when its arrays share a dtype and
shape; deleting an entry decrements its block's ``live`` counters (triggers,
see :mod:`._schema`), a block with no live entry is deleted, and a block less
than half live is compacted (its live arrays moved into a new block) in the
next write transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np

from ._codec import DIR_ITEM, Row, _expected_len, _key_ids, key_id, row_crc
from ._read import _read_slices
from ._sql import MAX_VARIABLES, _chunks, _index_rows, _placeholders
from ._tuning import TUNING

__all__ = ["Block", "clear", "pack", "put_packed", "regroup", "touch_and_purge"]

#: Target size of one block: the arrays of a write are packed into blocks of at most
#: this many bytes (an array larger than this gets a block of its own). Small enough
#: that compaction moves little and a lookup touching one array of a block walks few
#: overflow pages; large enough that a block holds hundreds of pooled vectors.

#: A block to write: its bytes and the ``(row, position)`` of each entry packed into it.
Block = tuple[bytes, list[tuple[Row, int]]]


def pack(rows: Sequence[Row]) -> tuple[list[int], list[Block]]:
    """Prepare a write outside the transaction: the row ids it replaces and its blocks.

    Parameters
    ----------
    rows : sequence of Row
        Encoded entries. Within the batch the last write of a key wins; so does the
        last of two keys that share a row id (a collision of 8-byte prefixes: the
        other becomes a miss).

    Returns
    -------
    ids : list of int
        The distinct row ids written.
    blocks : list of Block
        ``(block bytes, [(row, position in block), ...])`` per new block.
    """
    latest = {key_id(r.key): r for r in rows}
    return list(latest), _pack_blocks(list(latest.values()))


def put_packed(
    conn: sqlite3.Connection,
    ids: Sequence[int],
    blocks: Sequence[Block],
    max_size: int | None,
    now: float,
) -> None:
    """Write what :func:`pack` prepared, evict down to ``max_size``, compact.

    Parameters
    ----------
    conn : sqlite3.Connection
        A connection inside a write transaction.
    ids, blocks
        From :func:`pack`.
    max_size : int or None
        Cap on the summed ``nbytes`` of all entries (``None``: no cap); least
        recently used entries are deleted until under it.
    now : float
        The ``last_used`` timestamp of the new entries.
    """
    # Replace = delete + insert: the delete trigger keeps the counters exact on
    # every SQLite version (REPLACE skips delete triggers, UPSERT needs 3.24+).
    _delete_entries(conn, ids)
    for data, members in blocks:
        _insert_block(conn, data, members, now)
    if max_size is not None:
        _evict(conn, max_size)
    _compact(conn)


def touch_and_purge(
    conn: sqlite3.Connection, touch: Sequence[int], invalid: Sequence[int], now: float
) -> None:
    """Set ``last_used = now`` on the ``touch`` row ids and delete the ``invalid`` ones.

    Parameters
    ----------
    conn : sqlite3.Connection
        A connection inside a write transaction.
    touch, invalid : sequence of int
        Row ids.
    now : float
        The new ``last_used``.
    """
    for chunk in _chunks(touch):
        conn.execute(
            f"UPDATE entries SET last_used = ? WHERE id IN ({_placeholders(len(chunk))})",
            (now, *chunk),
        )
    _delete_entries(conn, invalid)


def regroup(conn: sqlite3.Connection, order: list[bytes]) -> None:
    """Rewrite the entries of the distinct keys ``order`` into new blocks, in that order.

    Nothing happens when they already lie in as few blocks as their size needs;
    missing keys are skipped.

    Parameters
    ----------
    conn : sqlite3.Connection
        A connection inside a write transaction.
    order : list of bytes
        Distinct keys, in the order their arrays should be laid out.
    """
    found = {row[0]: row for row in _index_rows(conn, "id", _key_ids(order))}
    rows = [found[k] for k in order if k in found]
    blocks = {row[1] for row in rows}
    needed = -(-sum(r[3] for r in rows if type(r[3]) is int) // TUNING.block_bytes)
    if len(blocks) > max(needed, 1):
        _move_entries(conn, rows)


def clear(conn: sqlite3.Connection) -> None:
    """Delete every block, directory and entry (the triggers zero the counters).

    Parameters
    ----------
    conn : sqlite3.Connection
        A connection inside a write transaction.
    """
    conn.execute("DELETE FROM blocks")
    conn.execute("DELETE FROM block_use")
    conn.execute("DELETE FROM block_dirs")
    conn.execute("DELETE FROM entries")


def _delete_entries(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    for chunk in _chunks(ids):
        conn.execute(f"DELETE FROM entries WHERE id IN ({_placeholders(len(chunk))})", chunk)


def _pack_blocks(rows: Sequence[Row]) -> list[Block]:
    """Group rows, in order, into blocks of about :attr:`~._tuning.Tuning.block_bytes`.

    Returns ``(block bytes, [(row, position in block), ...])`` per block.
    """
    blocks = []
    members: list[tuple[Row, int]] = []
    parts: list[bytes] = []
    size = 0
    for row in rows:
        n = len(row.data)
        if members and size + n > TUNING.block_bytes:
            blocks.append((b"".join(parts), members))
            members, parts, size = [], [], 0
        members.append((row, size))
        parts.append(row.data)
        size += n
    if members:
        blocks.append((b"".join(parts), members))
    return blocks


def _new_block(
    conn: sqlite3.Connection, data: bytes, members: Sequence[tuple[Row, int]], crcs: Sequence[int]
) -> int:
    """Insert a block, its (empty) live counters and its directory; return its id.

    ``members`` are the ``(row, position)`` pairs packed into ``data`` and ``crcs``
    their :func:`~._codec.row_crc` values; the caller then points their index rows
    here. A block mixing dtypes or shapes gets no directory (its entries are read
    through their index rows).
    """
    block = conn.execute("INSERT INTO blocks(data) VALUES (?)", (data,)).lastrowid
    conn.execute(
        "INSERT INTO block_use(id, size, live, live_bytes) VALUES (?, ?, 0, 0)",
        (block, len(data)),
    )
    specs = {(r.dtype, r.shape) for r, _ in members}
    if len(specs) == 1:
        ((dtype, shape),) = specs
        pairs = zip(members, crcs, strict=True)
        items = np.array([(key_id(r.key), p, r.meta, c) for (r, p), c in pairs], dtype=DIR_ITEM)
        conn.execute(
            "INSERT INTO block_dirs(id, dtype, shape, items) VALUES (?, ?, ?, ?)",
            (block, dtype, shape, items.tobytes()),
        )
    return block


def _insert_block(
    conn: sqlite3.Connection, data: bytes, members: list[tuple[Row, int]], now: float
) -> None:
    crcs = [row_crc(r.key, r.dtype, r.shape, r.meta, r.data) for r, _ in members]
    block = _new_block(conn, data, members, crcs)
    conn.executemany(
        "INSERT INTO entries"
        "(id, key, block, pos, nbytes, dtype, shape, meta, last_used, crc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (key_id(r.key), r.key, block, pos, len(r.data), r.dtype, r.shape, r.meta, now, crc)
            for (r, pos), crc in zip(members, crcs, strict=True)
        ],
    )


def _evict(conn: sqlite3.Connection, max_size: int) -> None:
    (total,) = conn.execute(
        "SELECT CAST(value AS INTEGER) FROM info WHERE name = 'total_bytes'"
    ).fetchone()
    excess = total - max_size
    if excess <= 0:
        return
    victims, freed = [], 0
    cursor = conn.execute("SELECT id, nbytes FROM entries ORDER BY last_used")
    try:
        while freed < excess:
            batch = cursor.fetchmany(MAX_VARIABLES)
            if not batch:
                break
            for rowid, nbytes in batch:
                victims.append(rowid)
                freed += nbytes
                if freed >= excess:
                    break
    finally:
        cursor.close()
    _delete_entries(conn, victims)


def _move_entries(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    # Copy the arrays of these index rows, in this order, into new blocks and point
    # the rows there; the move trigger deletes each block left empty. Entries whose
    # bytes cannot be read back intact are deleted instead (they would be misses).
    datas = _read_slices(conn, rows)
    keep, bad = [], []
    for row, data in zip(rows, datas, strict=True):
        key, _, _, nbytes, dtype, shape, meta, _, crc, _ = row
        ok = (
            type(data) is bytes
            and len(data) == nbytes == _expected_len(dtype, shape)
            and crc == row_crc(key, dtype, shape, meta, data)
        )
        (keep if ok else bad).append((row, data))
    _delete_entries(conn, [row[9] for row, _ in bad])
    staged = [Row(row[0], row[4], row[5], data, row[6]) for row, data in keep]
    ids = {row[0]: row[9] for row, _ in keep}
    crcs = {row[0]: row[8] for row, _ in keep}
    for data, members in _pack_blocks(staged):
        block = _new_block(conn, data, members, [crcs[r.key] for r, _ in members])
        conn.executemany(
            "UPDATE entries SET block = ?, pos = ? WHERE id = ?",
            [(block, pos, ids[r.key]) for r, pos in members],
        )


def _compact(conn: sqlite3.Connection) -> None:
    # Move the live entries of blocks that are less than half live into new blocks.
    sparse = [b for (b,) in conn.execute("SELECT id FROM block_use WHERE live_bytes * 2 < size")]
    if not sparse:
        return
    _move_entries(conn, _index_rows(conn, "block", sparse, " ORDER BY block, pos"))
    # A counter row that says "empty" but was never collected (only possible in a
    # file edited by hand) must not be reported as sparse forever.
    for block in sparse:
        for table in ("blocks", "block_use", "block_dirs"):
            conn.execute(
                f"DELETE FROM {table} WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM entries WHERE block = ?)",
                (block, block),
            )
