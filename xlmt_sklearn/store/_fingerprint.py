"""Cache-key material: everything that changes a vector, and nothing else.

``fingerprint(identity, **options) -> str``. Batch size, device (beyond the
dtype it implies) and progress are deliberately absent: they do not change a
vector beyond float noise, so changing them must still hit the cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .._version import __version__

__all__ = ["FORMAT_VERSION", "fingerprint"]

#: Bumped whenever a code change alters vectors for the same options.
FORMAT_VERSION = 1


def fingerprint(identity: Any, kind: str, **options: Any) -> str:
    """Hex digest identifying the vectors of ``identity`` under ``options``.

    Parameters
    ----------
    identity : ModelIdentity
        The pinned model. A hub model is named by id and commit; a local folder
        by the hash of its content only (moving the folder keeps its cache).
    kind : str
        What is stored per text ("pooled" or "tokens").
    **options
        Every other vector-changing option (JSON-serialisable).
    """
    payload = {
        "format": FORMAT_VERSION,
        "major": __version__.split(".")[0],
        "kind": kind,
        "model": None if identity.local else identity.name,
        "content": identity.content_hash,
        **options,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
