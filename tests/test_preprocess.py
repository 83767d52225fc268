"""Step 2: tweet normalisation (no model)."""

from __future__ import annotations

import pytest

from xlmt_sklearn import normalize_tweet
from xlmt_sklearn.flow._preprocess import preprocess_identity_key, resolve_preprocess


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


def _xlmt_reference(text):
    """The XLM-T authors' preprocess, verbatim in behaviour (splits on " " only)."""
    new_text = []
    for t in text.split(" "):
        t = "@user" if t.startswith("@") and len(t) > 1 else t
        t = "http" if t.startswith("http") else t
        new_text.append(t)
    return " ".join(new_text)


@pytest.mark.parametrize(
    "text", ["@maria look https://t.co/x @ home", "a @b httpx HTTP://y", "plain", "@ @@ @x"]
)
def test_normalize_tweet_equals_the_reference_on_space_separated_text(text):
    assert normalize_tweet(text) == _xlmt_reference(text)


@pytest.mark.parametrize("sep", ["\xa0", "\t", "\n", "\u2003"])
def test_normalize_tweet_splits_on_any_whitespace_as_documented(sep):
    text = f"hi{sep}@maria{sep}https://x.co"
    assert normalize_tweet(text) == "hi @user http"
    assert _xlmt_reference(text) == text  # the reference leaves them: the documented difference
    assert 'splits on ``" "`` only' in normalize_tweet.__doc__
