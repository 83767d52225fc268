"""Device/dtype/progress resolution and import hygiene (no model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xlmt_sklearn.backends._devices import resolve_device, resolve_dtype
from xlmt_sklearn.flow._progress import resolve_progress

REPO = Path(__file__).resolve().parents[1]


def test_auto_device_is_cpu_without_accelerators():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_bad_devices():
    with pytest.raises(ValueError, match="is not a torch device"):
        resolve_device("gpu0")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "mps") == "float16"
    assert resolve_dtype("float16", "cpu") == "float16"


def test_progress_auto_is_off_for_small_or_non_tty():
    assert resolve_progress(True, 1) is True
    assert resolve_progress(False, 10**6) is False
    assert resolve_progress("auto", 10) is False


def test_import_is_light():
    code = (
        "import sys, xlmt_sklearn; "
        "heavy = [m for m in ('torch', 'transformers', 'pyspark', 'dask', 'sklearn') "
        "if m in sys.modules]; "
        "assert not heavy, heavy; print(xlmt_sklearn.__version__)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert res.returncode == 0, res.stderr
    from xlmt_sklearn import __version__

    assert res.stdout.strip() == __version__


def test_public_api():
    import xlmt_sklearn

    for name in xlmt_sklearn.__all__:
        assert hasattr(xlmt_sklearn, name), name


def test_public_names_load_on_first_use():
    import xlmt_sklearn

    assert set(xlmt_sklearn.__all__) <= set(dir(xlmt_sklearn))
    for name in xlmt_sklearn.__all__:
        assert getattr(xlmt_sklearn, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        xlmt_sklearn.Nope  # noqa: B018
