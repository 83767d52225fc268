"""Shared fixtures: tiny random models built offline, never downloaded."""

from __future__ import annotations

import os
import shutil
import sys
import warnings

# Tests must never touch the network: set before transformers/huggingface_hub import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# backend="auto" may pick OpenVINO where it is installed: the suite's exactness tests are
# about torch; tests/test_backends.py covers the runtimes and the "auto" rule explicitly.
os.environ.setdefault("XLMT_SKLEARN_AUTO_BACKEND", "torch")
# The runtimes' first-use self-check costs a child process (~4 s on a tiny model) per
# configuration: tests/test_selfcheck.py turns it on where it is the subject; the other
# runtime tests compare with torch themselves.
os.environ.setdefault("XLMT_SKLEARN_SELFCHECK", "0")

from pathlib import Path

import pytest
from sklearn.base import clone

from tests._eager_runtime import EagerRuntime
from tests._models import (
    SHARED,
    build_tiny_model,
    real_tokenizer_dir,
    umsab_texts,
)
from xlmt_sklearn.backends._runtime import register_runtime

# A runtime defined only in the tests, registered as a plugin: the backend contract tests
# (tests/test_backends.py) run on it too.
register_runtime(EagerRuntime)

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _converted_dir(tmp_path_factory):
    """Models converted for the runtimes go to one folder of this session, never to the
    user's ``~/.cache`` (subprocesses inherit it); each (model, layers, runtime) converts
    once per session."""
    from xlmt_sklearn.backends._convert import CONVERTED_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CONVERTED_ENV, str(tmp_path_factory.mktemp("converted")))
        yield


@pytest.fixture(autouse=True)
def _process_state(request):
    """Every test starts without this process's cache objects, connections and memos
    (``xlmt_sklearn.reset_process_state``); loaded models are kept (reloading them is the slow
    part) unless the test is marked ``fresh_models``."""
    from xlmt_sklearn import reset_process_state

    reset_process_state(models=request.node.get_closest_marker("fresh_models") is not None)
    yield


def pytest_configure(config):
    import torch

    # Two cores, shared: one torch thread keeps timings sane and tests independent.
    torch.set_num_threads(1)


@pytest.fixture
def no_warnings():
    """Fail on any CacheWarning inside the test body."""
    from xlmt_sklearn._errors import CacheWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random XLM-R with a small SentencePiece tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-xlmr"), seed=0)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (another architecture: [CLS]/[SEP], absolute positions)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"), seed=1, kind="bert")


@pytest.fixture
def vectorizer(tiny_model_dir):
    """A fresh XLMTVectorizer on the tiny model, CPU."""
    from xlmt_sklearn import XLMTVectorizer

    return clone(XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False))


@pytest.fixture(scope="session")
def real_tok_dir() -> Path:
    path = real_tokenizer_dir()
    if path is None:
        pytest.skip(f"../shared/models/xlm-roberta-tokenizer not found (looked in {SHARED})")
    return path


@pytest.fixture(scope="session")
def umsab_sample():
    texts = umsab_texts(per_language=6)
    if texts is None:
        pytest.skip(f"../shared/data/umsab not found (looked in {SHARED})")
    return texts


@pytest.fixture(scope="session")
def real_tok_model_dir(real_tok_dir, tmp_path_factory) -> Path:
    """Random tiny weights behind the real 250k-token XLM-R tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("real-tok"), seed=5, tokenizer_dir=real_tok_dir)


@pytest.fixture(scope="session")
def spark():
    """One local[2,2] SparkSession (a failed task retried once) for every Spark test."""
    pytest.importorskip("pyspark", reason="PySpark not installed: pip install xlmt-sklearn[spark]")
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin", "java").exists()):
        pytest.skip("Java not found (install a JRE 17+, e.g. openjdk-17-jre-headless)")
    from pyspark.sql import SparkSession

    # Workers must run this interpreter (the venv), and find this checkout
    # even when the package is not installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    pythonpath = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p)
    session = (
        SparkSession.builder.master("local[2,2]")
        .appName("xlmt_sklearn-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.PYTHONPATH", pythonpath)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
