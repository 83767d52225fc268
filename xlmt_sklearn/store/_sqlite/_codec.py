"""Array <-> bytes, keys -> row ids, and the CRC-32 that guards every entry.

Pure functions, no SQLite: what an entry is made of (:class:`Row`), how an
array is encoded and decoded (raw little-endian bytes plus a dtype name and a
shape string; nothing is ever unpickled or evaluated), the CRC-32 over an
entry's key, header and bytes, and the 32-byte item of a block directory
(:data:`DIR_ITEM`).
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._tuning import TUNING

try:  # The same CRC-32 as zlib's, with SIMD (docs/architecture.md, "Measurements behind constants")
    from zlib_ng.zlib_ng import crc32 as _crc32

    CRC32_IMPLEMENTATION = "zlib-ng"
except ImportError:  # the optional "fast" extra is not installed
    from zlib import crc32 as _crc32

    CRC32_IMPLEMENTATION = "zlib"

__all__ = [
    "CRC32_IMPLEMENTATION",
    "DIR_ITEM",
    "DTYPES",
    "Row",
    "decode_array",
    "encode_array",
    "encode_rows",
    "key_id",
    "row_crc",
]

#: Dtypes a row may have, by the name stored in the ``dtype`` column.
DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}

#: One directory item: an entry's row id, position in its block, meta and CRC-32.
DIR_ITEM = np.dtype([("id", "<i8"), ("pos", "<i8"), ("meta", "<i8"), ("crc", "<i8")])

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_SHAPE_RE = re.compile(r"(?:0|[1-9][0-9]{0,18})(?:,(?:0|[1-9][0-9]{0,18})){0,31}", re.ASCII)


class Row(NamedTuple):
    """One encoded entry ready to be written."""

    key: bytes
    dtype: str
    shape: str
    data: bytes
    meta: int


def encode_array(array: np.ndarray) -> tuple[str, str, bytes]:
    """Encode an array as ``(dtype name, shape string, little-endian bytes)``.

    Parameters
    ----------
    array : numpy.ndarray
        A float32 or float16 array of any shape and memory layout (either byte
        order).

    Returns
    -------
    dtype : str
        ``"float32"`` or ``"float16"``.
    shape : str
        Comma-separated dimensions, e.g. ``"384"`` or ``"12,384"`` (``""`` for 0-d).
    data : bytes
        The values in C order, little-endian.

    Raises
    ------
    TypeError
        If ``array`` is not a float32 or float16 array.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(array).__name__}")
    dt = array.dtype
    if dt.kind != "f" or dt.itemsize not in (2, 4):
        raise TypeError(
            f"the embedding cache stores float32 or float16 arrays only, got dtype {dt}; "
            "convert with .astype(np.float32) first"
        )
    little = array.astype(dt.newbyteorder("<"), copy=False)
    name = "float32" if dt.itemsize == 4 else "float16"
    return name, ",".join(map(str, array.shape)), little.tobytes()


@functools.lru_cache(maxsize=1024)
def _parse_shape(shape: str) -> tuple[tuple[int, ...], int] | None:
    # A strict grammar (no signs, spaces, underscores, exponents): int() alone would
    # accept "+3", " 3" and "3_0", and nothing here may ever be evaluated.
    if shape == "":
        return (), 1
    if _SHAPE_RE.fullmatch(shape) is None:
        return None
    dims = tuple(int(d) for d in shape.split(","))
    size = 1
    for d in dims:
        size *= d
    return dims, size


def _expected_len(dtype: object, shape: object) -> int | None:
    # Byte length a row with this dtype and shape must have; None if either is invalid.
    dt = DTYPES.get(dtype) if type(dtype) is str else None
    parsed = _parse_shape(shape) if type(shape) is str else None
    return None if dt is None or parsed is None else parsed[1] * dt.itemsize


def decode_array(dtype: object, shape: object, data: object) -> np.ndarray | None:
    """Rebuild an array from a stored row, or return ``None`` if the row is invalid.

    Parameters
    ----------
    dtype : object
        Value of the ``dtype`` column; must be a name in :data:`DTYPES`.
    shape : object
        Value of the ``shape`` column; must match ``\\d+(,\\d+)*`` (or be empty).
    data : object
        Value of the ``data`` column; must be ``bytes`` whose length is the product
        of the shape times the item size.

    Returns
    -------
    numpy.ndarray or None
        A fresh, writable array, or ``None`` when any check fails. The bytes are
        never interpreted as anything but numbers.
    """
    size = _expected_len(dtype, shape)
    if size is None or type(data) is not bytes or len(data) != size:
        return None
    dims = _parse_shape(shape)[0]  # type: ignore[arg-type,index]
    return np.frombuffer(bytearray(data), dtype=DTYPES[dtype]).reshape(dims)  # type: ignore[arg-type]


def row_crc(key: bytes, dtype: str, shape: str, meta: int, data: bytes) -> int:
    """CRC-32 of a row: its key, dtype, shape, meta and data.

    SQLite checks its page structure, not the bytes inside a BLOB: a flipped
    bit in a stored vector (or in its key) would otherwise be returned as a
    valid vector, possibly for another text.

    Parameters
    ----------
    key, dtype, shape, meta, data
        The entry's fields, as in :class:`Row`.

    Returns
    -------
    int
        The unsigned CRC-32.
    """
    crc = TUNING.crc32 or _crc32
    return crc(data, crc(key + f"|{dtype}|{shape}|{meta}".encode()))


def _column_crcs(
    keys: Sequence[bytes], dtype: str, shape: str, metas: Sequence[int], datas: Sequence[bytes]
) -> list[int]:
    """:func:`row_crc` of many rows sharing ``dtype`` and ``shape``, computed in C loops.

    CRC-32 chains (``crc32(b, crc32(a)) == crc32(a + b)``), so each row's value is
    ``crc32(data, crc32(header, crc32(key)))`` with one header per distinct meta.
    """
    headers = {m: f"|{dtype}|{shape}|{m}".encode() for m in set(metas)}
    crc = TUNING.crc32 or _crc32
    if len(headers) == 1:
        head = itertools.repeat(next(iter(headers.values())), len(keys))
    else:
        head = map(headers.__getitem__, metas)
    return list(map(crc, datas, map(crc, head, map(crc, keys))))


def _join(dtype: str, shape: str, datas: Sequence[bytes]) -> np.ndarray:
    # One copy for all rows of a shape (validated by the caller): joining into a
    # bytearray and slicing is ~4x faster than a copy per row, and each row of the
    # result is a writable array over its own memory, shared with no other call.
    dims = _parse_shape(shape)[0]  # type: ignore[index]
    block = bytearray().join(datas)
    return np.frombuffer(block, dtype=DTYPES[dtype]).reshape(len(datas), *dims)


def _finite_rows(arrays: np.ndarray) -> np.ndarray:
    """Per row of a joined ``(n, ...)`` array: whether every value is finite.

    A stored NaN or inf is never a vector this package wrote (but versions before
    issue 23 cached the NaN vectors of a broken runtime), so the readers treat its
    entry like a failed checksum: a miss that is recomputed and purged. For float32
    the test is each row's sum (a NaN or inf anywhere makes it non-finite), by
    ``einsum``, the fastest way measured beside a runtime's threads (docs/architecture.md,
    "Measurements behind constants"). A finite
    row whose sum overflows float32 (values near 1e35) counts as non-finite: a miss,
    never a wrong vector.
    """
    rows = arrays.reshape(len(arrays), -1)
    if rows.dtype == np.float32:
        return np.isfinite(np.einsum("ij->i", rows))
    return np.isfinite(rows).all(axis=1)


def encode_rows(
    keys: Sequence[bytes],
    arrays: Sequence[np.ndarray],
    metas: Sequence[int] | None = None,
) -> list[Row]:
    """Validate and encode a batch before any database work starts.

    Parameters
    ----------
    keys : sequence of bytes
        Entry keys (usually 32-byte digests from :func:`xlmt_sklearn.store._keys.make_keys`).
    arrays : sequence of numpy.ndarray
        One float32 or float16 array per key.
    metas : sequence of int or None, default=None
        One signed 64-bit integer per key, stored alongside the array; ``None``
        stores 0 for every key.

    Returns
    -------
    list of Row

    Raises
    ------
    TypeError
        If a key is not ``bytes``, an array has another dtype, or a meta is not an
        integer.
    ValueError
        If the lengths differ, a key is empty, a meta does not fit in 64 bits, or
        an array holds NaN or inf (never stored: a hit must be a usable vector).
    """
    n = len(keys)
    if len(arrays) != n:
        raise ValueError(f"got {n} keys but {len(arrays)} arrays")
    if metas is None:
        metas = [0] * n
    elif len(metas) != n:
        raise ValueError(f"got {n} keys but {len(metas)} metas")
    rows = []
    for key, array, meta in zip(keys, arrays, metas, strict=True):
        if not isinstance(key, bytes) or not key:
            raise TypeError(f"cache keys must be non-empty bytes, got {type(key).__name__}")
        key = bytes(key)  # plain bytes, also for subclasses such as numpy.bytes_
        meta = operator.index(meta)  # TypeError for floats and other non-integers
        if not _I64_MIN <= meta <= _I64_MAX:
            raise ValueError(f"meta {meta} does not fit in a signed 64-bit integer")
        rows.append(Row(key, *encode_array(array), meta))
        if not np.isfinite(array).all():
            raise ValueError(
                f"the array of entry {len(rows) - 1} holds NaN or inf; the cache stores finite "
                "vectors only (nothing of this batch was written)"
            )
    return rows


def key_id(key: bytes) -> int:
    """The row id of a key: its first 8 bytes as a signed little-endian integer.

    Parameters
    ----------
    key : bytes
        A cache key (usually a 32-byte SHA-256 digest).

    Returns
    -------
    int
    """
    return int.from_bytes(key[:8], "little", signed=True)


def _key_ids(keys: Sequence[bytes]) -> list[int]:
    # The usual case, 32-byte digests, in one numpy pass instead of a call per key.
    if keys and set(map(len, keys)) == {32}:
        return np.frombuffer(b"".join(keys), dtype="<i8")[::4].tolist()
    return [key_id(k) for k in keys]
