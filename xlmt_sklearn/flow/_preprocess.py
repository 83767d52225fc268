"""Step 2 -- preprocessing: tweet normalisation and the preprocess registry.

``resolve_preprocess(spec) -> callable(str) -> str``. The XLM-T rule is the
one its authors used for pre-training and fine-tuning: user handles become
``@user`` and links become ``http``. :func:`prepare` is the one path both
estimators take from a distinct input text to the model's input: preprocess,
then the prefix (or ``{text}`` template), and on request the character maps
back to the input (token features); :func:`check_prefix` refuses, at ``fit``, a
prefix an estimator cannot apply.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "apply_prefix",
    "apply_preprocess",
    "check_prefix",
    "normalize_tweet",
    "prepare",
    "preprocess_identity",
    "preprocess_with_offsets",
    "resolve_preprocess",
]

_WORD_RE = re.compile(r"\S+")


def normalize_tweet(text: str) -> str:
    """Normalise a tweet the way XLM-T was trained.

    Applied per whitespace-separated token: a token that starts with ``"@"``
    and is longer than one character becomes ``"@user"``; a token that starts
    with ``"http"`` becomes ``"http"``. The match is case-sensitive (``HTTP://``
    is kept). Tokens are re-joined with single spaces, so runs of whitespace
    and newlines collapse.

    One difference from the XLM-T reference code, on purpose: the reference
    splits on ``" "`` only, this function on any whitespace (``str.split()``:
    also tabs, newlines, no-break and other Unicode spaces). A handle or link
    right after such a character is therefore normalised too
    (``"hi\xa0@maria"`` gives ``"hi @user"``, the reference keeps it), as
    the anonymisation intends. On the 6,960 UMSAB test tweets the two give
    different strings for 1,962 tweets (mostly collapsed runs of spaces,
    which XLM-R's tokenizer ignores) and different token sequences for 5;
    on text separated by single plain spaces they are identical
    (``tests/test_preprocess.py`` checks both).

    Parameters
    ----------
    text : str
        One tweet.

    Returns
    -------
    str
        The normalised tweet.

    Examples
    --------
    >>> normalize_tweet("@maria look https://t.co/x @ home")
    '@user look http @ home'
    """
    out = []
    for tok in text.split():
        if tok.startswith("@") and len(tok) > 1:
            tok = "@user"
        elif tok.startswith("http"):
            tok = "http"
        out.append(tok)
    return " ".join(out)


def preprocess_identity(text: str) -> str:
    """Return ``text`` unchanged (``preprocess=None``)."""
    return text


_REGISTRY: dict[str | None, Callable[[str], str]] = {
    "xlmt": normalize_tweet,
    None: preprocess_identity,
}


def resolve_preprocess(spec: str | Callable[[str], str] | None) -> Callable[[str], str]:
    """Return the per-text function for ``preprocess=spec``."""
    if callable(spec):
        return spec
    try:
        return _REGISTRY[spec]
    except KeyError:
        raise ValueError(
            f"Unknown preprocess={spec!r}; expected 'xlmt', None or a callable."
        ) from None


def _checked(result: Any, position: int) -> str:
    if not isinstance(result, str):
        raise TypeError(
            f"preprocess must return str; it returned {type(result).__name__} "
            f"for position {position}."
        )
    return result


def apply_preprocess(
    fn: Callable[[str], str], texts: list[str], positions: Sequence[int] | None = None
) -> list[str]:
    """Apply ``fn`` to every text, checking that it returns str.

    ``positions`` are the input rows of ``texts`` for the error message
    (default: their indices).
    """
    out = [fn(t) for t in texts]
    for i, t in enumerate(out):
        _checked(t, i if positions is None else positions[i])
    return out


def check_prefix(prefix: str | None, owner: str, *, template: bool = True) -> None:
    """Refuse a prefix the estimator ``owner`` cannot apply (called by ``fit``).

    A ``{text}`` template is accepted only where ``template`` is True (pooled
    vectors); token features need a plain prefix, whose tokens they drop.
    """
    if prefix and "{text}" in prefix and not template:
        raise ValueError(
            f"The 'prefix' parameter of {owner} must be a plain prefix such as 'query: ', "
            f"not a '{{text}}' template; got {prefix!r}. Token offsets need the text to "
            "start right after the prefix."
        )


def apply_prefix(prefix: str | None, texts: list[str]) -> list[str]:
    """Prepend ``prefix`` to every text, or fill a ``"... {text} ..."`` template."""
    if not prefix:
        return texts
    if "{text}" in prefix:
        return [prefix.replace("{text}", t) for t in texts]
    return [prefix + t for t in texts]


def preprocess_identity_key(spec: str | Callable[[str], str] | None) -> str:
    """A stable description of ``spec`` for the cache fingerprint.

    A callable is identified by its qualified name and a hash of its source
    (or bytecode when the source is unavailable), so editing the function
    invalidates its cached vectors.
    """
    if not callable(spec):
        return f"builtin:{spec}"
    fn = spec
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    if fn in _REGISTRY.values():
        return f"builtin:{name}"
    try:
        src = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        src = (
            code.co_code + repr(code.co_consts).encode() if code is not None else repr(fn).encode()
        )
    return f"callable:{name}:{hashlib.sha256(src).hexdigest()[:16]}"


def preprocess_with_offsets(
    spec: str | Callable[[str], str] | None, text: str, position: int = 0
) -> tuple[str, list[int], list[int]]:
    """Preprocess ``text`` and map character positions back to it.

    Returns ``(new_text, start_map, end_map)`` with ``len(new_text) + 1``
    entries each: a span ``[b, e)`` of ``new_text`` comes from
    ``text[start_map[b]:end_map[e]]``. A token that the XLM-T rule replaced
    (``@maria`` -> ``@user``) maps, as a whole or in part, to the whole
    original token. For a user callable no alignment is known: positions
    refer to the preprocessed text (identity maps).
    """
    if spec == "xlmt":
        out: list[str] = []
        start_map: list[int] = []
        end_map: list[int] = []
        for m in _WORD_RE.finditer(text):
            tok, b, e = m.group(), m.start(), m.end()
            new = normalize_tweet(tok)
            if out:  # the single joining space
                out.append(" ")
                start_map.append(b)
                end_map.append(b)
            out.append(new)
            if new == tok:
                start_map.extend(range(b, e))
                end_map.extend(range(b + 1, e + 1))
            else:
                start_map.extend([b] * len(new))
                end_map.extend([e] * len(new))
        new_text = "".join(out)
        start_map.append(len(text))
        # Index k of end_map answers "a span that ends at k": k=0 has no char before it.
        end_map.insert(0, start_map[0] if new_text else 0)
        return new_text, start_map, end_map
    new_text = _checked(resolve_preprocess(spec)(text), position)
    ident = list(range(len(new_text) + 1))
    return new_text, ident, ident


def prepare(
    texts: Sequence[str],
    preprocess: str | Callable[[str], str] | None,
    prefix: str | None,
    positions: Sequence[int],
    *,
    offsets: bool = False,
) -> tuple[list[str], list[tuple[list[int], list[int]]] | None]:
    """The model inputs of distinct input ``texts``: preprocessed, then prefixed.

    Parameters
    ----------
    texts : sequence of str
        Distinct input texts (each is prepared once, whatever its duplicates).
    preprocess, prefix
        As the estimators' parameters. With ``offsets`` the prefix must be plain
        (:func:`check_prefix`): offsets need the text right after it.
    positions : sequence of int
        The input row of each text, for error messages.
    offsets : bool, default=False
        Also return, per text, the ``(start_map, end_map)`` of
        :func:`preprocess_with_offsets` (relative to the text after the prefix).

    Returns
    -------
    inputs : list of str
    maps : list of (list of int, list of int), or None without ``offsets``

    Examples
    --------
    >>> prepare(["@ana hi"], "xlmt", "query: ", [0])
    (['query: @user hi'], None)
    """
    if not offsets:
        done = apply_preprocess(resolve_preprocess(preprocess), list(texts), positions)
        return apply_prefix(prefix, done), None
    head = prefix or ""
    inputs, maps = [], []
    for text, position in zip(texts, positions, strict=True):
        new, start_map, end_map = preprocess_with_offsets(preprocess, text, position)
        inputs.append(head + new)
        maps.append((start_map, end_map))
    return inputs, maps
