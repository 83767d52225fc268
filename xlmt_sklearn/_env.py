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
``XLMT_SKLEARN_CONVERTED_DIR``          see right   Folder of models converted for OpenVINO
                                                    and ONNX Runtime (absolute path); default
                                                    ``~/.cache/xlmt_sklearn/converted``.
``XLMT_SKLEARN_AUTO_BACKEND``           unset       What ``backend="auto"`` means on a CPU:
                                                    ``torch``, ``openvino`` or
                                                    ``onnxruntime`` (unset: the measured rule
                                                    of docs/backends.md).
``XLMT_SKLEARN_SELFCHECK``              ``1``       ``0`` turns off the first-use self-check
                                                    of native runtimes (docs/reliability.md).
``XLMT_SKLEARN_SELFCHECK_TIMEOUT``      ``300``     Seconds a self-check may take before it
                                                    counts as hung (>= 1).
``XLMT_SKLEARN_DIGESTS``                see right   File remembering weight files' digests
                                                    (``_digests``); default
                                                    ``~/.cache/xlmt_sklearn/digests.json``;
                                                    ``0``: none.
======================================  ==========  ==========================================
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["env_choice", "env_dir", "env_flag", "env_int"]


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


def env_dir(name: str) -> Path | None:
    """The folder named by environment variable ``name`` (None when unset or empty).

    Raises
    ------
    ValueError
        When the value (after ``~`` expansion) is not an absolute path, or names
        something that exists and is not a folder.

    Examples
    --------
    >>> env_dir("XLMT_SKLEARN_NOT_SET") is None
    True
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute() or (path.exists() and not path.is_dir()):
        raise ValueError(
            f"Environment variable {name} must be an absolute path to a folder (created if "
            f"missing); got {raw!r}. Unset it for the default."
        )
    return path


def env_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """The value of environment variable ``name`` if it is one of ``choices`` (None: unset).

    Raises
    ------
    ValueError
        For any other value.

    Examples
    --------
    >>> env_choice("XLMT_SKLEARN_NOT_SET", ("a", "b")) is None
    True
    """
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw not in choices:
        raise ValueError(
            f"Environment variable {name} must be one of {', '.join(choices)}; got "
            f"{os.environ[name]!r}. Unset it for the default."
        )
    return raw
