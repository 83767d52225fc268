"""``_state``: every piece of process state is reset by name, by its owner's reset."""

from __future__ import annotations

import pytest

from xlmt_sklearn import XLMTVectorizer
from xlmt_sklearn._state import STATE, reset_state
from xlmt_sklearn.backends._loading import loaded_models


def test_reset_state_resets_only_the_named_pieces(tiny_model_dir):
    XLMTVectorizer(str(tiny_model_dir), backend="torch", device="cpu").fit().transform(["hi"])
    assert len(loaded_models()) >= 1
    reset_state("runtimes", "verdicts")
    assert len(loaded_models()) >= 1  # models are another piece
    reset_state("models")
    assert loaded_models() == {}


def test_every_piece_has_an_owner_once_the_package_ran(tiny_model_dir):
    XLMTVectorizer(str(tiny_model_dir), backend="torch", device="cpu").fit().transform(["hi"])
    assert all(STATE[name] for name in ("models", "model_hashes", "caches", "connections"))


def test_an_unknown_name_is_refused_with_the_names():
    with pytest.raises(ValueError, match=r"unknown process state \['runtime'\]; the names are"):
        reset_state("runtime")
