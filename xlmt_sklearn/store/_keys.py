"""Cache keys and sizes: one key per text from a fingerprint, and ``max_size`` parsed."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

import numpy as np

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_size(size: int | str | None) -> int | None:
    """Convert a cache size limit to bytes.

    Parameters
    ----------
    size : int, str or None
        A positive number of bytes, or a string such as ``"500MB"``, ``"2GB"``,
        ``"1.5GiB"`` or ``"750kb"`` (case-insensitive; KB/MB/GB/TB are powers of
        1000, KiB/MiB/GiB/TiB powers of 1024). ``None`` means unlimited.

    Returns
    -------
    int or None
        The limit in bytes, or ``None``.

    Raises
    ------
    TypeError
        If ``size`` is not an int, str or None.
    ValueError
        If the string cannot be parsed or the size is not positive.
    """
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer, str)):
        raise TypeError(
            f"max_size must be a number of bytes, a string like '500MB', or None; "
            f"got {type(size).__name__}"
        )
    if isinstance(size, str):
        m = _SIZE_RE.fullmatch(size)
        unit = _UNITS.get(m.group(2).lower()) if m else None
        if m is None or unit is None:
            raise ValueError(
                f"cannot parse max_size={size!r}; use bytes or a string like '500MB', "
                "'2GB' or '1.5GiB'"
            )
        value = float(m.group(1)) * unit
        if not math.isfinite(value):
            raise ValueError(f"max_size={size!r} is too large")
        nbytes = int(value)
    else:
        nbytes = int(size)
    if nbytes <= 0:
        raise ValueError(f"max_size must be positive, got {size!r}")
    return nbytes


def make_keys(fingerprint: str, texts: Sequence[str]) -> list[bytes]:
    """Compute the cache key of each text.

    ``key = sha256(fingerprint + "\\0" + text)`` over UTF-8 (lone surrogates
    allowed), so a key depends on the text and on everything the fingerprint
    encodes (model, revision, pooling, ...) and on nothing else.

    Parameters
    ----------
    fingerprint : str
        Identifies how the vectors were computed; must not contain ``"\\0"``
        (the separator), which keeps ``(fingerprint, text)`` pairs unambiguous.
    texts : sequence of str
        The texts, in order. Duplicates get identical keys.

    Returns
    -------
    list of bytes
        One 32-byte digest per text.

    Raises
    ------
    TypeError
        If ``fingerprint`` or an element of ``texts`` is not a str.
    ValueError
        If ``fingerprint`` contains ``"\\0"``.
    """
    if not isinstance(fingerprint, str):
        raise TypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
    if "\x00" in fingerprint:
        raise ValueError("fingerprint must not contain NUL characters")
    prefix = fingerprint.encode("utf-8", "surrogatepass") + b"\x00"
    sha256 = hashlib.sha256
    try:
        return [sha256(prefix + t.encode("utf-8", "surrogatepass")).digest() for t in texts]
    except (AttributeError, TypeError):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(
                    f"texts must be strings; element {i} is {type(t).__name__}: {t!r:.50}"
                ) from None
        raise


def _check_keys(keys: Sequence[bytes]) -> list[bytes]:
    keys = list(keys)
    if set(map(type, keys)) <= {bytes}:  # the usual case, checked in C
        return keys
    for i, k in enumerate(keys):
        if type(k) is not bytes:
            if not isinstance(k, bytes):
                raise TypeError(f"cache keys must be bytes (see make_keys), got {type(k).__name__}")
            keys[i] = bytes(k)  # e.g. numpy.bytes_: plain bytes for SQLite and dict lookups
    return keys
