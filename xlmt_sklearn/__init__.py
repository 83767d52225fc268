"""xlmt_sklearn: transformer text features (XLM-T by default) for scikit-learn.

Importing the package is cheap: torch and transformers load on first use.
"""

from ._errors import CacheWarning, ModelLoadError, ModelNotFoundError, TruncationWarning
from ._preprocess import normalize_tweet
from ._vectorizer import XLMTVectorizer
from ._version import __version__

__all__ = [
    "CacheWarning",
    "ModelLoadError",
    "ModelNotFoundError",
    "TruncationWarning",
    "XLMTVectorizer",
    "__version__",
    "normalize_tweet",
]
