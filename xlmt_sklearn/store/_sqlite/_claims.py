"""Claims: which process is encoding a key right now, so that no two encode it at once.

Processes that share a cache (``GridSearchCV(n_jobs=2)``, several notebooks) miss
the same keys at the same time; without coordination each encodes them (issue 27
counted 800 encodes for 600 distinct texts). Before encoding its misses a process
*claims* them in the ``claims`` table, in one write transaction: a key is its own
when no other live process claims it (it then looks the key up once more, in case
it was stored meanwhile). A key claimed by
another process is waited for (:mod:`xlmt_sklearn.flow._pipeline`), and its claim is
taken over when that process is gone: on this host when its pid no longer exists,
from another host (a shared file) after :data:`STALE_S`. Claims are released as
soon as the claimed batch is written or the transform ends, whatever the outcome.

The table is an addition to schema 5 (``CREATE TABLE IF NOT EXISTS``): files
written before it work unchanged, and a reader that lacks it never blocks.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Sequence

from ..._machine import pid_alive
from ._sql import _chunks, _placeholders

__all__ = ["CLAIMS_TABLE", "STALE_S", "claim", "owner", "release"]

CLAIMS_TABLE = (
    "CREATE TABLE IF NOT EXISTS claims(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, "
    "host TEXT NOT NULL, pid INTEGER NOT NULL, since REAL NOT NULL)"
)
#: A claim from another host older than this is taken over (its process cannot be asked).
STALE_S = 3600.0


def owner() -> tuple[str, str, int]:
    """This process as a claimant: ``(owner, host, pid)``."""
    host, pid = socket.gethostname(), os.getpid()
    return f"{host}:{pid}", host, pid


def claim(conn: sqlite3.Connection, ids: Sequence[int], now: float) -> list[bool]:
    """Claim the row ids that no other live process claims (inside a write transaction).

    Returns, per id, whether it is this process's now. Whether it is stored is not
    asked here: the caller looks its claimed keys up again before encoding them, so
    a key stored between its first lookup and the claim is never encoded twice.
    """
    me, host, pid = owner()
    conn.execute(CLAIMS_TABLE)
    held: dict[int, tuple[str, str, int, float]] = {}
    for part in _chunks(list(ids)):
        marks = _placeholders(len(part))
        for row in conn.execute(
            f"SELECT id, owner, host, pid, since FROM claims WHERE id IN ({marks})", part
        ):
            held[row[0]] = row[1:]
    out = []
    for i in ids:
        h = held.get(i)
        out.append(h is None or h[0] == me or (
            not pid_alive(h[2]) if h[1] == host else now - h[3] > STALE_S
        ))  # fmt: skip
    conn.executemany(
        "INSERT OR REPLACE INTO claims(id, owner, host, pid, since) VALUES (?, ?, ?, ?, ?)",
        [(i, me, host, pid, now) for i, ok in zip(ids, out, strict=True) if ok],
    )
    return out


def release(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Drop this process's claims on ``ids`` (inside a write transaction)."""
    me, _, _ = owner()
    conn.execute(CLAIMS_TABLE)
    for part in _chunks(list(ids), 400):
        conn.execute(
            f"DELETE FROM claims WHERE owner = ? AND id IN ({_placeholders(len(part))})",
            [me, *part],
        )
