"""xlmt_sklearn: transformer text features (XLM-T by default) for scikit-learn.

Importing the package is cheap: the public names load on first use (PEP 562),
so ``import xlmt_sklearn`` (and the command line's argument checks) import
neither scikit-learn nor torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and documentation tools
    from ._errors import (
        CacheWarning,
        ModelLoadError,
        ModelNotFoundError,
        NonFiniteOutputError,
        RuntimeCheckError,
        RuntimeFallbackWarning,
        TruncationWarning,
    )
    from ._finetuned_vectorizer import XLMTFineTunedVectorizer
    from ._layer_selector import LayerSelector
    from ._state import reset_process_state
    from ._token_pooler import TokenPooler
    from ._token_vectorizer import XLMTTokenVectorizer
    from ._vectorizer import XLMTVectorizer
    from .flow._preprocess import normalize_tweet
    from .flow._tokens import PaddedTokens
    from .store._cache import CacheBase, CacheStats, EmbeddingCache, NullCache

_WHERE = {
    "CacheBase": ".store._cache",
    "CacheStats": ".store._cache",
    "EmbeddingCache": ".store._cache",
    "NullCache": ".store._cache",
    "CacheWarning": "._errors",
    "ModelLoadError": "._errors",
    "ModelNotFoundError": "._errors",
    "NonFiniteOutputError": "._errors",
    "RuntimeCheckError": "._errors",
    "RuntimeFallbackWarning": "._errors",
    "TruncationWarning": "._errors",
    "LayerSelector": "._layer_selector",
    "normalize_tweet": ".flow._preprocess",
    "reset_process_state": "._state",
    "TokenPooler": "._token_pooler",
    "XLMTTokenVectorizer": "._token_vectorizer",
    "PaddedTokens": ".flow._tokens",
    "XLMTVectorizer": "._vectorizer",
    "XLMTFineTunedVectorizer": "._finetuned_vectorizer",
}

__all__ = [
    "CacheBase",
    "CacheStats",
    "CacheWarning",
    "EmbeddingCache",
    "LayerSelector",
    "ModelLoadError",
    "ModelNotFoundError",
    "NonFiniteOutputError",
    "NullCache",
    "PaddedTokens",
    "RuntimeCheckError",
    "RuntimeFallbackWarning",
    "TokenPooler",
    "TruncationWarning",
    "XLMTFineTunedVectorizer",
    "XLMTTokenVectorizer",
    "XLMTVectorizer",
    "__version__",
    "normalize_tweet",
    "reset_process_state",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
