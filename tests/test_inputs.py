"""Step 1: input coercion and the missing/non-string policy (no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xlmt_sklearn.flow._inputs import as_texts, is_missing


@pytest.mark.parametrize(
    "X",
    [
        ["a", "b"],
        ("a", "b"),
        np.array(["a", "b"]),
        np.array(["a", "b"], dtype=object),
        np.array([["a"], ["b"]], dtype=object),
        pd.Series(["a", "b"]),
        pd.Series(["a", "b"], dtype="string"),
        pd.Series(["a", "b"], dtype="category"),
        pd.DataFrame({"text": ["a", "b"]}),
        iter(["a", "b"]),
    ],
)
def test_accepted_containers(X):
    batch = as_texts(X)
    assert batch.texts == ["a", "b"]
    assert all(type(t) is str for t in batch.texts)


def test_keeps_index_and_name():
    batch = as_texts(pd.Series(["a", "b"], index=[5, 9], name="tweet"))
    assert list(batch.index) == [5, 9] and batch.name == "tweet"
    batch = as_texts(pd.DataFrame({"t": ["a"]}, index=["x"]))
    assert list(batch.index) == ["x"] and batch.name == "t"


@pytest.mark.parametrize("X", ["a text", b"bytes"])
def test_bare_string_rejected(X):
    with pytest.raises(ValueError, match="Iterable of texts expected"):
        as_texts(X)


def test_multi_column_frame_rejected():
    with pytest.raises(ValueError, match=r"single text column.*2 columns: \['a', 'b'\]"):
        as_texts(pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_2d_array_rejected():
    with pytest.raises(ValueError, match=r"1-D array of texts .* shape \(2, 2\)"):
        as_texts(np.array([["a", "b"], ["c", "d"]]))


@pytest.mark.parametrize(
    "bad,typ,hint",
    [(3, "int", "str()"), (2.5, "float", "str()"), (b"x", "bytes", "Decode"), (["x"], "list", "")],
)
def test_non_strings_raise_type_error_with_position(bad, typ, hint):
    with pytest.raises(
        TypeError, match=rf"positions 1 \({typ}\)\..*{hint.replace('(', '[(]').replace(')', '[)]')}"
    ):
        as_texts(["ok", bad, "fine"])


def test_missing_error_names_positions():
    with pytest.raises(ValueError, match=r"positions 1, 3\. .*missing='empty'"):
        as_texts(["a", None, "b", float("nan")])


@pytest.mark.parametrize("policy", ["empty", "zeros"])
def test_missing_recorded(policy):
    batch = as_texts(pd.Series(["a", None, pd.NA, np.nan]), missing=policy)
    assert batch.texts == ["a", "", "", ""]
    assert batch.missing_positions == (1, 2, 3)


def test_missing_in_string_dtype():
    s = pd.Series(["a", None], dtype="string")
    assert as_texts(s, missing="zeros").missing_positions == (1,)


def test_is_missing():
    assert all(is_missing(v) for v in [None, float("nan"), np.float32("nan"), pd.NA, pd.NaT])
    assert not any(is_missing(v) for v in ["", "nan", 0, 0.0])


def test_empty_inputs():
    assert as_texts([]).texts == []
    assert as_texts(pd.Series([], dtype=object)).texts == []


def test_dict_rejected():
    with pytest.raises(TypeError, match="got a dict"):
        as_texts({"a": "b"})


def test_non_iterable_rejected():
    with pytest.raises(TypeError, match="Iterable of texts expected, got int"):
        as_texts(5)


def test_polars_frame_and_series_are_one_text_column():
    pl = pytest.importorskip("polars")
    batch = as_texts(pl.DataFrame({"tweet": ["a", None, "b"]}), missing="empty")
    assert batch.texts == ["a", "", "b"] and batch.missing_positions == (1,)
    assert batch.name == "tweet"
    assert as_texts(pl.Series("t", ["x", "y"])).texts == ["x", "y"]
    with pytest.raises(ValueError, match=r"single text column, got a DataFrame with 2 columns"):
        as_texts(pl.DataFrame({"a": ["x"], "b": ["y"]}))
    words = as_texts(pl.Series("w", [["a", "b"], ["c"]]), words=True)
    assert words.words and words.texts == [["a", "b"], ["c"]]


def test_polars_frame_through_the_vectorizer(vectorizer):
    pl = pytest.importorskip("polars")
    texts = ["hello world", "hola"]
    got = vectorizer.fit().transform(pl.DataFrame({"text": texts}))
    np.testing.assert_array_equal(got, vectorizer.transform(texts))
