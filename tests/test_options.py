"""The declared options (``xlmt_sklearn._options.OPTIONS``) against what is derived from them.

The table is the one place an option is declared: these tests hold each
estimator's signature and docstring to it, and pin the cache-key part it
derives to the formula the keys had before the table existed (a change would
turn every user's cache cold).
"""

from __future__ import annotations

import inspect
import re

import pytest

from xlmt_sklearn import XLMTFineTunedVectorizer, XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn._options import (
    OPTIONS,
    Choice,
    estimator_params,
    key_options,
    options_of,
    refit_names,
)
from xlmt_sklearn.flow._preprocess import preprocess_identity_key

ESTIMATORS = [
    (XLMTVectorizer, "pooled"),
    (XLMTTokenVectorizer, "tokens"),
    (XLMTFineTunedVectorizer, "adapted"),
]


def _doc_entries(cls) -> dict[str, str]:
    """numpydoc ``Parameters`` entries: name -> type line and description."""
    text = inspect.getdoc(cls)
    params = text.split("Parameters\n----------\n", 1)[1].split("\n\nAttributes", 1)[0]
    entries: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", params):
        name = block.split(" : ", 1)[0].strip()
        entries[name] = block
    return entries


@pytest.mark.parametrize(("cls", "kind"), ESTIMATORS)
def test_signature_is_the_declared_options(cls, kind):
    signature = inspect.signature(cls).parameters
    declared = {o.name: o.default for o in options_of(kind)}
    assert set(signature) == set(declared)
    for name, parameter in signature.items():
        assert parameter.default == declared[name], name


@pytest.mark.parametrize(("cls", "kind"), ESTIMATORS)
def test_docstring_documents_every_option_with_its_default(cls, kind):
    entries = _doc_entries(cls)
    for option in options_of(kind):
        assert option.name in entries, f"{cls.__name__} does not document {option.name!r}"
        entry = entries[option.name]
        default = re.search(r"default=(.+)$", entry.splitlines()[0]).group(1)
        assert default.replace('"', "'") == repr(option.default), option.name
        for accepted in option.accepts:
            if isinstance(accepted, Choice):
                for value in accepted.values:
                    assert f'"{value}"' in entry, (option.name, value)


@pytest.mark.parametrize(("cls", "kind"), ESTIMATORS)
def test_constraints_and_refit_names_come_from_the_table(cls, kind):
    assert set(cls._parameter_constraints) == {o.name for o in options_of(kind)}
    assert cls._fit_params == refit_names(kind)
    cls()._validate_params()  # every default meets its own constraint


def test_every_option_states_how_it_enters_the_key():
    for option in OPTIONS:
        assert option.key in (None, "identity", "encoder", "store", "option"), option.name
        assert (option.key == "option") == (option.key_value is not None), option.name
        assert option.doc and "\n" not in option.doc, option.name


def _old_key(est, pooled: bool) -> dict:
    """The option part of the cache key as ``_base._vector_options`` wrote it by hand."""
    out = {
        "max_length": int(est.max_length),
        "truncation": "window" if est.truncation == "window" else "truncate",
        "stride": est._stride() if est.truncation == "window" else None,
        "preprocess": preprocess_identity_key(est.preprocess),
        "prefix": est.prefix,
        "layers": list(est.layers_),
        "layer_aggregation": est.layer_aggregation if len(est.layers_) > 1 else None,
    }
    if pooled:
        out.update(pooling=est.pooling, normalize=bool(est.normalize))
    return out


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"pooling": "mean_max", "layers": [-2, -1], "layer_aggregation": "concat"},
        {"truncation": "window", "stride": 3, "prefix": "query: ", "normalize": True},
        {"truncation": "window", "preprocess": None, "layers": [0], "max_length": 64},
    ],
)
def test_key_options_equal_the_keys_before_the_table(params, tiny_model_dir):
    est = XLMTVectorizer(str(tiny_model_dir), **params).fit()
    assert key_options(est, "pooled") == _old_key(est, pooled=True)
    tokens = {k: v for k, v in params.items() if k not in ("pooling", "normalize")}
    tok = XLMTTokenVectorizer(str(tiny_model_dir), **tokens).fit()
    assert key_options(tok, "tokens") == _old_key(tok, pooled=False)


def test_cli_flags_give_the_estimator_defaults():
    """Parsed without options, the declared flags give each estimator its own defaults."""
    from xlmt_sklearn.cli import build_parser

    args = build_parser().parse_args(["embed", "in.txt", "-o", "out.npy"])
    for cls, kind in ESTIMATORS:
        params = estimator_params(args, kind)
        assert params, kind
        defaults = cls().get_params()
        assert {k: defaults[k] for k in params} == params
        flags = {o.name for o in options_of(kind) if o.cli is not None}
        assert set(params) == flags
