"""``_base``: fit-time pinning, the parameters checked after fit, and the fit memo."""

from __future__ import annotations

import copy
import pickle

import pytest
from sklearn.base import clone

from xlmt_sklearn import XLMTTokenVectorizer, XLMTVectorizer


@pytest.fixture
def calibrated(tiny_model_dir):
    pytest.importorskip("openvino", reason="calibration_texts is OpenVINO's static int8")
    texts = [f"text {i} about @someone" for i in range(40)]
    return XLMTVectorizer(
        str(tiny_model_dir), backend="openvino", quantize="int8", calibration_texts=texts,
        progress=False,
    ).fit()  # fmt: skip


def test_calibration_is_built_once_per_fitted_state(calibrated):
    first = calibrated._calibration()
    assert calibrated._calibration() is first
    calibrated.set_params(prefix="query: ")  # needs no refit, changes what the model sees
    changed = calibrated._calibration()
    assert changed is not first and changed.digest != first.digest
    assert all(t.startswith("query: ") for t in changed.texts)
    calibrated.set_params(prefix=None)
    assert calibrated._calibration().digest == first.digest
    calibrated.fit()  # a new fit starts a new memo
    assert calibrated._calibration() is not first


def test_calibration_follows_an_in_place_change_of_the_texts(calibrated):
    first = calibrated._calibration()
    calibrated.calibration_texts[0] = "another text entirely"
    with pytest.raises(ValueError, match=r"calibration_texts.*changed after fit"):
        calibrated.transform(["hello"])
    calibrated.fit()
    assert calibrated._calibration().digest != first.digest


def test_the_memo_is_neither_pickled_nor_shared(calibrated):
    first = calibrated._calibration()
    blob = pickle.dumps(calibrated)
    assert b"_FitMemo" not in blob and b"_fit_memo" not in blob
    restored = pickle.loads(blob)
    assert restored._calibration() is not first
    assert restored._calibration().digest == first.digest
    assert restored._calibration() is restored._calibration()  # a memo again after loading
    assert copy.deepcopy(calibrated)._calibration() is not first
    assert not hasattr(clone(calibrated), "_fit_memo")


@pytest.mark.parametrize("cls", [XLMTVectorizer, XLMTTokenVectorizer])
def test_transform_leaves_the_estimator_dict_unchanged(cls, tiny_model_dir):
    """scikit-learn's rule (check_dict_unchanged), with the memo in use."""
    est = cls(str(tiny_model_dir), backend="torch", progress=False).fit()
    before = dict(vars(est))
    est.transform(["a text", "another"])
    assert vars(est) == before


def test_a_parameter_that_cannot_be_copied_is_compared_by_identity(tiny_model_dir):
    """A preprocess callable holding a lock (it cannot be deep-copied) still works."""
    import threading

    class Locked:
        def __init__(self):
            self.lock = threading.Lock()

        def __call__(self, text):
            with self.lock:
                return text.lower()

    pytest.importorskip("openvino", reason="calibration_texts is OpenVINO's static int8")
    est = XLMTVectorizer(
        str(tiny_model_dir), backend="openvino", quantize="int8", preprocess=Locked(),
        calibration_texts=["Some text", "Another"], progress=False,
    ).fit()  # fmt: skip
    first = est._calibration()
    assert est._calibration() is first
    assert first.texts[0] == "some text"
    est.set_params(preprocess=Locked())
    assert est._calibration() is not first
