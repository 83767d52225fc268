"""Step 2: tweet normalisation (no model)."""

from __future__ import annotations

import pytest

from xlmt_sklearn import normalize_tweet
from xlmt_sklearn._preprocess import preprocess_identity_key, resolve_preprocess


@pytest.mark.parametrize(
    "text,expected",
    [
        ("@maria hi", "@user hi"),
        ("hi @ there", "hi @ there"),  # a lone "@" stays
        ("@a", "@user"),
        ("mail me@x.com", "mail me@x.com"),  # only tokens *starting* with @
        ("see https://t.co/x now", "see http now"),
        ("see http://t.co/x", "see http"),
        ("HTTP://X.COM stays", "HTTP://X.COM stays"),  # case-sensitive
        ("httpfoo", "http"),
        ("@User123 @user", "@user @user"),
        ("a  \n b\tc", "a b c"),  # whitespace runs collapse
        ("", ""),
        ("   ", ""),
        ("😀 @x 😀", "😀 @user 😀"),
    ],
)
def test_normalize_tweet(text, expected):
    assert normalize_tweet(text) == expected


def test_resolve():
    assert resolve_preprocess("xlmt") is normalize_tweet
    assert resolve_preprocess(None)("@x") == "@x"
    assert resolve_preprocess(str.lower)("A") == "a"
    with pytest.raises(ValueError, match="Unknown preprocess='nope'"):
        resolve_preprocess("nope")


def test_identity_key_tracks_function_source():
    def f(t):
        return t.lower()

    def g(t):
        return t.upper()

    assert preprocess_identity_key("xlmt") == "builtin:xlmt"
    assert preprocess_identity_key(f) != preprocess_identity_key(g)
    assert preprocess_identity_key(f) == preprocess_identity_key(f)
