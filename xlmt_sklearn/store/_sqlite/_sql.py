"""SQL helpers every path shares: batched ``IN (...)`` queries, index rows, block handles.

An *index row* is the small ``entries`` row of one key (:data:`INDEX_COLUMNS`);
a *block* is the immutable BLOB that holds the bytes of many entries.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Sequence

from ._failures import classify_error

__all__ = ["INDEX_COLUMNS", "MAX_VARIABLES"]

#: The columns of an index row, in the order reads use them.
INDEX_COLUMNS = "key, block, pos, nbytes, dtype, shape, meta, last_used, crc, id"

#: Keys per ``IN (...)`` query; well under SQLite's bound-parameter limit (999 on old builds).
MAX_VARIABLES = 500


@functools.lru_cache(maxsize=8)
def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _chunks(seq: Sequence, size: int = MAX_VARIABLES) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _index_rows(
    conn: sqlite3.Connection, column: str, values: Sequence[object], order: str = ""
) -> list[tuple]:
    """Index rows (:data:`INDEX_COLUMNS`) whose ``column`` is in ``values``, in batched queries."""
    rows: list[tuple] = []
    for chunk in _chunks(values):
        rows += conn.execute(
            f"SELECT {INDEX_COLUMNS} FROM entries "
            f"WHERE {column} IN ({_placeholders(len(chunk))}){order}",
            chunk,
        )
    return rows


def _open_block(conn: sqlite3.Connection, block: int) -> sqlite3.Blob | None:
    # A read-only handle on a block's bytes, or None if there is no such block.
    try:
        return conn.blobopen("blocks", "data", block, readonly=True)
    except sqlite3.OperationalError as exc:
        if classify_error(exc) != "fatal":
            raise
        return None
