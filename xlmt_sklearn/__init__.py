"""xlmt_sklearn: transformer text features (XLM-T by default) for scikit-learn.

Importing the package is cheap: torch and transformers load on first use.
"""

from ._cache import CacheBase, CacheStats, EmbeddingCache, NullCache
from ._errors import CacheWarning, ModelLoadError, ModelNotFoundError, TruncationWarning
from ._preprocess import normalize_tweet
from ._token_pooler import TokenPooler
from ._token_vectorizer import XLMTTokenVectorizer
from ._tokens import PaddedTokens
from ._vectorizer import XLMTVectorizer
from ._version import __version__

__all__ = [
    "CacheBase",
    "CacheStats",
    "CacheWarning",
    "EmbeddingCache",
    "ModelLoadError",
    "ModelNotFoundError",
    "NullCache",
    "PaddedTokens",
    "TokenPooler",
    "TruncationWarning",
    "XLMTTokenVectorizer",
    "XLMTVectorizer",
    "__version__",
    "normalize_tweet",
]
