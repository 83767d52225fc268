"""Write hand-made rows straight into a cache file, bypassing every check of the store."""

from __future__ import annotations

import sqlite3

from xlmt_sklearn.store._sqlite import key_id


def insert_raw(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert ``(key, dtype, shape, data, meta, crc)`` rows, each in a block of its own.

    ``data`` is stored as given (it may be text, or bytes of the wrong length), and
    the index row claims it all (4 bytes when it is not bytes).
    """
    for key, dtype, shape, data, meta, crc in rows:
        block = conn.execute("INSERT INTO blocks(data) VALUES (?)", (data,)).lastrowid
        n = len(data) if isinstance(data, bytes) else 4
        conn.execute("INSERT INTO block_use VALUES (?, ?, 0, 0)", (block, n))
        conn.execute(
            "INSERT INTO entries(id, key, block, pos, nbytes, dtype, shape, meta, last_used, crc) "
            "VALUES (?, ?, ?, 0, ?, ?, ?, ?, 0, ?)",
            (key_id(key), key, block, n, dtype, shape, meta, crc),
        )


def set_raw_text(conn: sqlite3.Connection, key: bytes, column: str, raw: bytes) -> None:
    """Store ``raw`` as the TEXT value of ``column`` in ``key``'s index row, unchecked.

    ``raw`` need not be UTF-8: SQLite keeps the bytes, and the ``sqlite3`` module
    refuses to decode them when the row is read.
    """
    conn.execute(f"UPDATE entries SET {column} = CAST(? AS TEXT) WHERE id = ?", (raw, key_id(key)))
