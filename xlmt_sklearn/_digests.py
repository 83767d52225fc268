"""SHA-256 digests of model files, remembered by file identity (foundation).

A local model's identity is a hash over its files (:func:`xlmt_sklearn._model.resolve_identity`):
1.3 s for multilingual-e5-small's 470 MB, about 3 s for XLM-R base, paid by every
new process (each ``n_jobs`` worker, a search's refit, every CLI run) before its first
cache lookup. :func:`file_digest` remembers each digest under the file's *stamp*: its
absolute path, inode, size, mtime and ctime. A file replaced (new inode) or written
in place (new ctime, which no user call can set back) has a new stamp and is hashed
again.

Two memories:

* per process, for every file;
* on disk, for files of at least ``TUNING.disk_min_bytes`` (weights, not configs), in
  ``digests.json`` under ``$XDG_CACHE_HOME/xlmt_sklearn`` (default ``~/.cache``), or
  ``XLMT_SKLEARN_DIGESTS`` (a file path; ``0`` turns the disk memory off). Written by
  an atomic replace, at most ``TUNING.disk_entries`` stamps, the oldest written
  dropped first. A file changed within ``TUNING.racy_s`` seconds of its hashing is
  not written there (a coarse clock could give the next change the same stamp, as
  git's "racily clean" entries). A disk memory that cannot be read or written is
  ignored: the digest is computed, never guessed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DIGESTS_ENV", "TUNING", "DigestTuning", "file_digest", "reset_digests"]

logger = logging.getLogger("xlmt_sklearn")

#: Environment variable: the disk memory's file, or ``0`` for none.
DIGESTS_ENV = "XLMT_SKLEARN_DIGESTS"
_FORMAT = 1


@dataclass
class DigestTuning:
    """Knobs of the disk memory (tests lower ``disk_min_bytes``)."""

    disk_min_bytes: int = 32 * 2**20
    disk_entries: int = 256
    racy_s: float = 2.0


TUNING = DigestTuning()
_MEMO: dict[str, str] = {}


def file_digest(path: Path) -> str:
    """The SHA-256 hex digest of the file at ``path``, remembered by its stamp."""
    path = Path(os.path.abspath(path))
    st = path.stat()
    stamp = f"{path}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    if stamp in _MEMO:
        return _MEMO[stamp]
    on_disk = st.st_size >= TUNING.disk_min_bytes and _disk_path() is not None
    digest = _read_disk().get(stamp) if on_disk else None
    if not _is_digest(digest):
        started = time.time()
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        settled = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 < started - TUNING.racy_s
        if on_disk and settled:
            _write_disk(stamp, digest)
    _MEMO[stamp] = digest
    return digest


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")


def reset_digests() -> None:
    """Forget the per-process memory (tests; the disk memory stays)."""
    _MEMO.clear()


def _disk_path() -> Path | None:
    raw = os.environ.get(DIGESTS_ENV, "").strip()
    if raw == "0":
        return None
    if raw:
        return Path(os.path.expanduser(raw))
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join("~", ".cache")
    return Path(os.path.expanduser(base)) / "xlmt_sklearn" / "digests.json"


def _read_disk() -> dict[str, str]:
    """The disk memory's stamps, the most recently written last (empty when unreadable)."""
    path = _disk_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return {}
    entries = data.get("digests")
    return entries if isinstance(entries, dict) else {}


def _write_disk(stamp: str, digest: str) -> None:
    """Add one stamp by an atomic replace; a failure only loses the memory."""
    path = _disk_path()
    if path is None:
        return
    entries = {k: v for k, v in _read_disk().items() if k != stamp}
    entries[stamp] = digest
    kept = dict(list(entries.items())[-TUNING.disk_entries :])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".digests-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": _FORMAT, "digests": kept}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        logger.debug("digest memory %s not written: %s", path, exc)
