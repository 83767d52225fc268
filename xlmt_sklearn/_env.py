"""Environment variables the package reads, each validated where it is read.

Every variable is read when it is first needed (not at import), and a bad
value is a ``ValueError`` naming the variable, the accepted values and what
was found, so that ``import xlmt_sklearn`` never fails because of one.

======================================  ==========  ==========================================
Variable                                Default     Meaning
======================================  ==========  ==========================================
``XLMT_SKLEARN_MAX_MODELS``             ``2``       Models kept loaded per process (>= 1).
``XLMT_SKLEARN_MALLOC_TUNING``          ``1``       ``0`` turns off returning free heap to
                                                    the OS between batches (glibc only).
======================================  ==========  ==========================================
"""

from __future__ import annotations

import os

__all__ = ["env_flag", "env_int"]


def env_int(name: str, default: int, minimum: int) -> int:
    """The integer value of environment variable ``name`` (``default`` when unset or empty).

    Raises
    ------
    ValueError
        When the value is not an integer ``>= minimum``.

    Examples
    --------
    >>> env_int("XLMT_SKLEARN_NOT_SET", 2, minimum=1)
    2
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(
            f"Environment variable {name} must be an integer >= {minimum}; got {raw!r}. "
            f"Unset it for the default ({default})."
        )
    return value


def env_flag(name: str, default: bool) -> bool:
    """The on/off value of environment variable ``name``: ``1``/``0`` (also true/false, on/off).

    Raises
    ------
    ValueError
        For any other value.
    """
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(
        f"Environment variable {name} must be 1 or 0 (true/false, on/off); got "
        f"{os.environ[name]!r}. Unset it for the default ({int(default)})."
    )
