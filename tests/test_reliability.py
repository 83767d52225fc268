"""Crashes, cache faults, contention and determinism, seen from the estimators.

The store-level faults are in test_cache.py / test_sqlite_store.py; here the
same faults hit a running ``XLMTVectorizer``/``XLMTTokenVectorizer``, and the
claim checked every time is the one users rely on: a transform never fails
because of the cache and never returns a wrong vector (every row equals a
fresh, cache-less encode to 1e-5).

Processes are forked (see tests/_kill_worker.py): a fresh interpreter costs
seconds of imports, a fork milliseconds.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from tests._keys import cache_keys
from tests._kill_worker import HAS_FORK, fork_call, report
from tests._models import CORPUS
from xlmt_sklearn import (
    CacheWarning,
    ModelLoadError,
    ModelNotFoundError,
    TruncationWarning,
    XLMTTokenVectorizer,
    XLMTVectorizer,
)
from xlmt_sklearn.backends import _loading as loading_mod
from xlmt_sklearn.store import _sqlite as _sqlite_store
from xlmt_sklearn.store._cache import DEFAULT_FILENAME, EmbeddingCache

TOL = 1e-5
needs_fork = pytest.mark.skipif(not HAS_FORK, reason="needs os.fork (POSIX)")

_WORDS = " ".join(CORPUS).split()


def make_texts(n: int, seed: int) -> list[str]:
    """Distinct tweet-like texts of 1-24 words (short: no truncation at 128 tokens)."""
    rng = random.Random(seed)
    return [
        f"{seed}-{i} " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 24)))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def fresh(tiny_model_dir):
    """A cache-less vectorizer: the reference every cached vector must equal."""
    return XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False).fit()


def assert_close(got, expected) -> float:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and np.isfinite(got).all()
    diff = float(np.abs(got - expected).max(initial=0.0))
    assert diff <= TOL, diff
    return diff


def verify_file(path: Path, keys, reference) -> tuple[int, float]:
    """Reopen the file from scratch; every entry it returns equals ``reference``."""
    _sqlite_store.close_store(path.resolve())
    cache = EmbeddingCache(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        hits = cache.get_many(keys)
    cache.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    found, worst = 0, 0.0
    for hit, ref in zip(hits, reference, strict=True):
        if hit is not None:
            found += 1
            worst = max(worst, assert_close(hit[0], ref))
    return found, worst


@pytest.fixture
def no_cache_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        yield


# ------------------------------------------------------------- SIGKILL mid-transform

N_KILLS = 20


@needs_fork
def test_sigkill_mid_transform_never_leaves_a_wrong_vector(tiny_model_dir, fresh, tmp_path):
    """20 processes SIGKILLed in the middle of a cached transform, one after another.

    Each trial encodes 30 new texts plus 10 from earlier trials, in batches of
    2 (a cache write per batch), and is killed after a random delay; a trial
    whose child finished before the kill does not count and is repeated. After
    every kill the file is reopened from scratch: it passes SQLite's integrity
    check, every entry it returns equals a fresh encode, and a resumed
    transform (what rerunning the job does) is right and raises no warning.
    The counts go to ``kill_trials.json`` in the test's tmp dir (and the
    reliability report, when asked for).
    """
    path = tmp_path / "killed.sqlite"
    rng = random.Random(8)
    per_trial, max_attempts = 30, 2 * N_KILLS
    pool = make_texts(max_attempts * per_trial, seed=8)
    reference = fresh.transform(pool)
    est = XLMTVectorizer(
        str(tiny_model_dir), device="cpu", cache=str(path), batch_size=2, progress=False
    ).fit()
    keys = cache_keys(est, pool)
    # Calibrate the kill delays on a throw-away file, in a forked child like the trials:
    # forking a big test process and the child's first steps take time of their own.
    calibration = clone(est).set_params(cache=str(tmp_path / "cal.sqlite")).fit()
    start = time.perf_counter()
    child = fork_call(calibration.transform, make_texts(40, 9))
    assert child.wait(120) and child.finished()
    full_run = time.perf_counter() - start
    child.close()
    resume = clone(est).set_params(batch_size=32).fit()  # batch size: not in the cache key
    stats = {"attempts": 0, "killed_mid_transform": 0, "finished_before_kill": 0,
             "kills_after_some_batches_were_stored": 0, "entries_checked": 0,
             "wrong_vectors": 0, "integrity_ok": 0}  # fmt: skip
    used, delay_scale = 0, 1.0
    while stats["killed_mid_transform"] < N_KILLS:
        assert stats["attempts"] < max_attempts, stats
        stats["attempts"] += 1
        rows = list(range(used, used + per_trial)) + rng.sample(range(used), min(10, used))
        used += per_trial
        rng.shuffle(rows)
        texts = [pool[i] for i in rows]
        before = len(EmbeddingCache(path)) if path.exists() else 0
        _sqlite_store.close_store(path.resolve())  # the child holds the only connection
        child = fork_call(est.transform, texts)
        time.sleep(rng.uniform(0.02, 0.6) * full_run * delay_scale)
        child.kill()
        child.wait()
        if child.finished():
            stats["finished_before_kill"] += 1
            # The calibration ran slower than the trials do (a machine busy then, idle now):
            # aim the next kills earlier, or the attempts run out on a loaded CI box.
            delay_scale *= 0.7
        else:
            assert child.killed
            stats["killed_mid_transform"] += 1
        child.close()
        found, _ = verify_file(path, keys[:used], reference[:used])  # raises if wrong
        stats["integrity_ok"] += 1
        stats["entries_checked"] += found
        if before < found < before + per_trial:
            stats["kills_after_some_batches_were_stored"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheWarning)
            assert_close(resume.transform(texts), reference[rows])  # rerun: hits + the rest
    stats["entries_in_file"] = len(EmbeddingCache(path))
    (tmp_path / "kill_trials.json").write_text(json.dumps(stats))
    report("reliability.sigkill", **stats, calibration_s=round(full_run, 3),
           delay_scale=round(delay_scale, 3))  # fmt: skip
    assert stats["killed_mid_transform"] == N_KILLS
    assert stats["kills_after_some_batches_were_stored"] >= 3, stats  # not only at the start
    assert stats["entries_in_file"] == used


# ------------------------------------------------------------------ damaged files

ESTIMATORS = ["pooled", "tokens"]


def make_est(kind: str, model_dir, cache):
    if kind == "pooled":
        return XLMTVectorizer(str(model_dir), device="cpu", cache=cache, progress=False).fit()
    return XLMTTokenVectorizer(str(model_dir), device="cpu", cache=cache, progress=False).fit()


def assert_same_output(kind: str, got, expected) -> None:
    if kind == "pooled":
        assert_close(got, expected)
        return
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert_close(a, b)


TEXTS = make_texts(40, seed=1)


@pytest.fixture(scope="module")
def expected(tiny_model_dir):
    return {k: make_est(k, tiny_model_dir, None).transform(TEXTS) for k in ESTIMATORS}


def _filled_file(kind, tiny_model_dir, path: Path) -> None:
    make_est(kind, tiny_model_dir, str(path)).transform(TEXTS)
    _sqlite_store.close_store(path.resolve())  # checkpoint: everything is in the main file
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def _damage_truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _damage_garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _damage_zero_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096 : 4096 * 3] = bytes(8192)  # wipe two pages after the header page
    path.write_bytes(bytes(data))


def _damage_empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = {
    "truncated": (_damage_truncate, "corrupt|malformed"),
    "garbage-bytes": (_damage_garbage, "corrupt or not an xlmt_sklearn cache"),
    "zeroed-pages": (_damage_zero_pages, "corrupt|malformed"),
    "emptied": (_damage_empty, None),  # an empty file is a valid new database: no warning
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("kind", ESTIMATORS)
def test_damaged_file_warns_and_results_stay_right(
    tiny_model_dir, tmp_path, expected, kind, damage
):
    path = tmp_path / "c.sqlite"
    _filled_file(kind, tiny_model_dir, path)
    fn, message = DAMAGE[damage]
    fn(path)
    est = make_est(kind, tiny_model_dir, str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = est.transform(TEXTS)
    assert_same_output(kind, got, expected[kind])
    cache_warnings = [w for w in caught if issubclass(w.category, CacheWarning)]
    if message is not None:
        assert cache_warnings, "a damaged cache must be reported"
        assert any(re.search(message, str(w.message)) for w in cache_warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # rebuilt: the next call is quiet
        assert_same_output(kind, est.transform(TEXTS), expected[kind])
    per_text = 1 if kind == "pooled" else 2  # token features: + the tokenization
    assert len(EmbeddingCache(path)) == per_text * len(TEXTS)


def test_bit_rot_inside_a_stored_vector_is_not_returned(tiny_model_dir, tmp_path, expected):
    path = tmp_path / "c.sqlite"
    _filled_file("pooled", tiny_model_dir, path)
    data = path.read_bytes()
    needle = expected["pooled"][0].astype("<f4").tobytes()
    at = data.find(needle)
    assert at > 0
    rotten = bytearray(data)
    rotten[at + 5] ^= 0x40  # one bit of one float
    path.write_bytes(bytes(rotten))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # SQLite can't tell
    conn.close()
    got = make_est("pooled", tiny_model_dir, str(path)).transform(TEXTS)
    assert_close(got, expected["pooled"])


@pytest.mark.parametrize("kind", ESTIMATORS)
def test_directory_where_the_cache_file_should_be(tiny_model_dir, tmp_path, expected, kind):
    """The file is replaced by a directory between two transforms of one estimator."""
    path = tmp_path / "c.sqlite"
    est = make_est(kind, tiny_model_dir, EmbeddingCache(path))
    est.transform(TEXTS[:5])
    _sqlite_store.close_store(path.resolve())
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.mkdir()
    with pytest.warns(CacheWarning, match="cannot be used.*directory exists"):
        got = est.transform(TEXTS)
    assert_same_output(kind, got, expected[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # warned once per process
        assert_same_output(kind, est.transform(TEXTS), expected[kind])
        # Given as a string, a path that is now a directory is a cache *directory*:
        # the file goes inside it (documented), and results stay right.
        by_name = make_est(kind, tiny_model_dir, str(path))
        assert_same_output(kind, by_name.transform(TEXTS), expected[kind])
    assert (path / DEFAULT_FILENAME).is_file()


def _readonly_connect(*args, **kwargs):
    raise sqlite3.OperationalError("attempt to write a readonly database")


def _readonly_put(self, *args, **kwargs):
    raise sqlite3.OperationalError("attempt to write a readonly database")


def _full_put(self, *args, **kwargs):
    raise sqlite3.OperationalError("database or disk is full")


_REAL_OS_OPEN = os.open


def _enospc_open(path, *args, **kwargs):
    if str(path).endswith(".sqlite"):  # only the cache file: the rest of the process is fine
        raise OSError(errno.ENOSPC, "No space left on device")
    return _REAL_OS_OPEN(path, *args, **kwargs)


@pytest.mark.parametrize(
    "fault,message,reads_survive",
    [
        ("readonly-open", r"cannot be used .*readonly database", False),
        ("readonly-write", r"Cannot write .*readonly database", True),
        ("disk-full-write", r"Cannot write .*database or disk is full", True),
        ("disk-full-create", r"cannot be used .*No space left on device", False),
    ],
)
@pytest.mark.parametrize("kind", ESTIMATORS)
def test_unwritable_cache_warns_once_and_results_stay_right(
    tiny_model_dir, tmp_path, expected, monkeypatch, kind, fault, message, reads_survive
):
    """As root, chmod cannot make a directory read-only: the failures are injected."""
    path = tmp_path / "c.sqlite"
    half = len(TEXTS) // 2
    make_est(kind, tiny_model_dir, str(path)).transform(TEXTS[:half])
    _sqlite_store.close_store(path.resolve())
    if fault == "readonly-open":
        monkeypatch.setattr(_sqlite_store.sqlite3, "connect", _readonly_connect)
    elif fault == "readonly-write":
        monkeypatch.setattr(_sqlite_store.SQLiteStore, "put_many", _readonly_put)
    elif fault == "disk-full-write":
        monkeypatch.setattr(_sqlite_store.SQLiteStore, "put_many", _full_put)
    else:
        path.unlink()
        monkeypatch.setattr(_sqlite_store.os, "open", _enospc_open)
    est = make_est(kind, tiny_model_dir, EmbeddingCache(path))
    counter = ForwardRows()
    with pytest.warns(CacheWarning, match=message) as caught:
        got = est.transform(TEXTS)
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    assert_same_output(kind, got, expected[kind])
    encoded = counter.rows
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # one warning per process, not per call
        assert_same_output(kind, est.transform(TEXTS), expected[kind])
    if reads_survive:  # the first half still came from the file
        assert encoded == len(TEXTS) - half
    counter.remove()


def test_real_sqlite_full_error_mid_batch(tiny_model_dir, tmp_path, fresh, monkeypatch):
    """A genuine SQLITE_FULL (page cap) in the middle of write transactions."""
    real_connect = _sqlite_store.sqlite3.connect

    def capped(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        # ~80 kB: the claims of the 400 texts fit, their entries fill it up part-way
        conn.execute("PRAGMA max_page_count = 20")
        return conn

    monkeypatch.setattr(_sqlite_store.sqlite3, "connect", capped)
    texts = make_texts(400, seed=3)
    est = XLMTVectorizer(
        str(tiny_model_dir), device="cpu", cache=EmbeddingCache(tmp_path / "c.sqlite"),
        batch_size=16, progress=False,
    ).fit()  # fmt: skip
    with pytest.warns(CacheWarning, match="Cannot write .*full"):
        got = est.transform(texts)
    reference = fresh.transform(texts)
    assert_close(got, reference)
    stored = len(EmbeddingCache(tmp_path / "c.sqlite"))
    assert 0 < stored < len(texts)  # some batches fitted, then the cap was hit
    monkeypatch.undo()
    found, _ = verify_file(tmp_path / "c.sqlite", cache_keys(est, texts), reference)
    assert found == stored


class ForwardRows:
    """Counts rows the shared tiny model encodes (forward hook on every loaded model)."""

    def __init__(self):
        self.rows = 0
        self.handles = [
            loaded.model.register_forward_hook(self._hook, with_kwargs=True)
            for loaded in loading_mod.loaded_models().values()
        ]

    def _hook(self, module, args, kwargs, out):
        self.rows += int(kwargs["attention_mask"].shape[0])

    def remove(self):
        for h in self.handles:
            h.remove()


# ----------------------------------------------------------------- several processes


def _wait_for(flag: Path) -> None:
    while not flag.exists():
        time.sleep(0.001)


def _worker(model_dir: str, path: str, texts: list[str], go: str) -> np.ndarray:
    warnings.simplefilter("error", CacheWarning)
    loading_mod.clear_model_registry()  # load the weights again, as a new process does
    est = XLMTVectorizer(model_dir, device="cpu", cache=path, batch_size=8, progress=False)
    est.fit()
    _wait_for(Path(go))
    return est.transform(texts)


@needs_fork
def test_four_processes_with_overlapping_texts(tiny_model_dir, fresh, tmp_path):
    """4 processes start together on one cache with 75%-overlapping texts."""
    pool = make_texts(250, seed=4)
    reference = fresh.transform(pool)
    path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    shares = [list(range(50 * k, 50 * k + 100)) for k in range(4)]
    children = [
        fork_call(_worker, str(tiny_model_dir), str(path), [pool[i] for i in rows], str(go))
        for rows in shares
    ]
    time.sleep(0.2)
    go.touch()
    worst = 0.0
    for rows, child in zip(shares, children, strict=True):
        worst = max(worst, assert_close(child.result(), reference[rows]))
    found, worst_file = verify_file(path, cache_keys(fresh, pool), reference)
    assert found == 250
    report("reliability.four_processes", processes=4, texts=250, rows=400,
           max_abs_diff=max(worst, worst_file), wrong_vectors=0)  # fmt: skip


def _clear_loop(path: str, seconds: float) -> int:
    warnings.simplefilter("error", CacheWarning)
    cache = EmbeddingCache(path)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        cache.clear()
        n += 1
        time.sleep(0.002)
    return n


@needs_fork
def test_clear_from_another_process_during_transforms(tiny_model_dir, fresh, tmp_path):
    texts = make_texts(120, seed=5)
    reference = fresh.transform(texts)
    path = tmp_path / "c.sqlite"
    est = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=str(path), progress=False)
    est.fit().transform(texts[:60])
    rng = random.Random(5)
    _sqlite_store.close_store(path.resolve())
    child = fork_call(_clear_loop, str(path), 1.5)
    rounds = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        end = time.monotonic() + 1.5
        while time.monotonic() < end or rounds < 3:
            rows = rng.sample(range(len(texts)), 40)
            assert_close(est.transform([texts[i] for i in rows]), reference[rows])
            rounds += 1
    clears = child.result()
    assert clears > 10 and rounds >= 3
    report("reliability.clear_during_reads", clears=clears, transforms=rounds, wrong_vectors=0)


def test_clear_from_another_thread_during_transforms(tiny_model_dir, fresh, tmp_path):
    texts = make_texts(80, seed=6)
    reference = fresh.transform(texts)
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    est = XLMTVectorizer(str(tiny_model_dir), device="cpu", cache=cache, progress=False).fit()
    stop = threading.Event()
    errors: list[BaseException] = []

    def clear_loop():
        try:
            while not stop.is_set():
                EmbeddingCache(tmp_path / "c.sqlite").clear()
                time.sleep(0.001)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=clear_loop)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        thread.start()
        try:
            for k in range(8):
                rows = np.roll(np.arange(len(texts)), k * 7)[:50]
                assert_close(est.transform([texts[i] for i in rows]), reference[rows])
        finally:
            stop.set()
            thread.join()
    assert not errors


# -------------------------------------------------------------------- determinism

POOL = [*make_texts(12, seed=7), "", "😀" * 3, "@user http"]


@pytest.fixture(scope="module")
def pool_refs(tiny_model_dir):
    pooled = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit()
    tokens = XLMTTokenVectorizer(str(tiny_model_dir), device="cpu").fit()
    return {
        "pooled": np.stack([pooled.transform([t])[0] for t in POOL]),
        "tokens": [tokens.transform([t])[0] for t in POOL],
    }


DETERMINISM = {"examples": 0, "rows": 0, "max_abs_diff": 0.0}


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    rows=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=20),
    batch_size=st.integers(1, 9),
    max_tokens=st.one_of(st.none(), st.integers(8, 200)),
)
def test_same_vectors_whatever_batch_order_and_duplicates(
    tiny_model_dir, pool_refs, rows, batch_size, max_tokens
):
    DETERMINISM["examples"] += 1
    DETERMINISM["rows"] += len(rows)
    texts = [POOL[i] for i in rows]
    options = dict(device="cpu", batch_size=batch_size, max_tokens=max_tokens)
    out = XLMTVectorizer(str(tiny_model_dir), **options).fit().transform(texts)
    diff = assert_close(out, pool_refs["pooled"][rows])
    toks = XLMTTokenVectorizer(str(tiny_model_dir), **options).fit().transform(texts)
    for i, m in zip(rows, toks, strict=True):
        diff = max(diff, assert_close(m, pool_refs["tokens"][i]))
    DETERMINISM["max_abs_diff"] = max(DETERMINISM["max_abs_diff"], diff)


@pytest.fixture(scope="module", autouse=True)
def _report_determinism():
    """After this module: the determinism trials' counts (see benchmarks/reliability_report.py)."""
    yield
    report("reliability.determinism", **DETERMINISM)


@needs_fork
def test_same_vectors_in_another_process_after_reloading(tiny_model_dir, fresh):
    texts = make_texts(30, seed=10)

    def encode_after_reload():
        loading_mod.clear_model_registry()
        return XLMTVectorizer(str(tiny_model_dir), device="cpu").fit().transform(texts)

    here = fresh.transform(texts)
    there = fork_call(encode_after_reload).result()
    np.testing.assert_array_equal(there, here)  # same weights, threads and batches: bitwise


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(
    "option,min_cosine,max_abs",
    [
        ({"quantize": "int8"}, 0.99, 0.05),
        ({"dtype": "float16"}, 0.999, 0.01),
        ({"dtype": "bfloat16"}, 0.99, 0.05),
    ],
    ids=["int8", "float16-cpu", "bfloat16-cpu"],
)
def test_reduced_precision_tolerances(tiny_model_dir, fresh, option, min_cosine, max_abs):
    """Measured against float32 on the tiny model (docs/reliability.md quotes the numbers).

    These bounds are the documented contract; the tiny random model sits far
    inside them. GPU float16/bfloat16 is checked by benchmarks/gpu_check.sh.
    """
    texts = make_texts(60, seed=11)
    ref = fresh.transform(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        got = XLMTVectorizer(str(tiny_model_dir), device="cpu", **option).fit().transform(texts)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    cos = _cosines(got, ref)
    diff = float(np.abs(got - ref).max())
    report("reliability.precision", option=option, min_cosine=float(cos.min()),
           mean_cosine=float(cos.mean()), max_abs_diff=diff)  # fmt: skip
    assert cos.min() >= min_cosine and diff <= max_abs


# --------------------------------------------------------------- model load faults


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def _fault_missing_folder(d: Path) -> None:
    shutil.rmtree(d)


def _fault_folder_is_a_file(d: Path) -> None:
    shutil.rmtree(d)
    d.write_text("not a folder")


def _fault_garbage_weights(d: Path) -> None:
    (d / "model.safetensors").write_bytes(os.urandom(4096))


def _fault_truncated_weights(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _fault_weights_missing(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _fault_config_list(d: Path) -> None:
    (d / "config.json").write_text("[1, 2, 3]")


def _fault_config_not_utf8(d: Path) -> None:
    (d / "config.json").write_bytes(b"\xff\xfe{}")


def _fault_no_hidden_size(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    del cfg["hidden_size"]
    (d / "config.json").write_text(json.dumps(cfg))


def _fault_unknown_type(d: Path) -> None:
    _edit_config(d, model_type="no-such-architecture")


def _fault_is_decoder(d: Path) -> None:
    _edit_config(d, is_decoder=True)


def _fault_causal_lm(d: Path) -> None:
    _edit_config(d, architectures=["LlamaForCausalLM"], model_type="llama")


def _fault_no_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()


def _fault_garbage_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").write_text("{not json")


# name -> (fault, error class, message, raised by fit (True) or by the first transform)
LOAD_FAULTS = {
    "missing-folder": (_fault_missing_folder, ModelNotFoundError, "does not exist", True),
    "folder-is-a-file": (_fault_folder_is_a_file, ModelNotFoundError, "does not exist", True),
    "weights-missing": (_fault_weights_missing, ModelNotFoundError, "has no weights", True),
    "garbage-weights": (_fault_garbage_weights, ModelLoadError, "Cannot load model", False),
    "truncated-weights": (_fault_truncated_weights, ModelLoadError, "Cannot load model", False),
    "config-not-an-object": (_fault_config_list, ModelLoadError, "not a JSON object", True),
    "config-not-utf8": (_fault_config_not_utf8, ModelLoadError, "Cannot read the config", True),
    "config-without-hidden-size": (_fault_no_hidden_size, ModelLoadError, "no hidden_size", True),
    "unknown-architecture": (_fault_unknown_type, ModelLoadError, "Cannot load model", False),
    "configured-as-decoder": (_fault_is_decoder, ModelLoadError, "configured as a decoder", False),
    "decoder-only-lm": (_fault_causal_lm, ModelLoadError, "decoder-only language model", True),
    "tokenizer-missing": (_fault_no_tokenizer, ModelLoadError, "has 5 tokens but the model", False),
    "tokenizer-corrupt": (_fault_garbage_tokenizer, ModelLoadError, "Cannot load the tokenizer",
                          False),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(LOAD_FAULTS))
@pytest.mark.parametrize("cls", [XLMTVectorizer, XLMTTokenVectorizer], ids=["pooled", "tokens"])
def test_model_load_faults_give_one_clear_error(tiny_model_dir, tmp_path, cls, fault):
    folder = _copy_model(tiny_model_dir, tmp_path / "model")
    damage, error, message, at_fit = LOAD_FAULTS[fault]
    damage(folder)
    est = cls(str(folder), device="cpu", progress=False)
    pattern = f"{re.escape(repr(str(folder)))}.*{message}|{message}.*{re.escape(str(folder))}"
    if at_fit:
        with pytest.raises(error, match=pattern) as info:
            est.fit()
    else:
        est.fit()  # reads config.json only
        with pytest.raises(error, match=pattern) as info:
            est.transform(["hello world"])
        held = loading_mod.loaded_models()
        assert not any(spec.content_hash == est.model_identity_.content_hash for spec in held)
        # nothing half-loaded stays registered
    assert type(info.value) is error
    assert len(str(info.value).splitlines()[0]) < 1000


def test_folder_edited_after_fit_cannot_poison_later_transforms(tiny_model_dir, tmp_path, fresh):
    from tests._models import build_tokenizer

    folder = _copy_model(tiny_model_dir, tmp_path / "model")
    other = tmp_path / "other-tokenizer"
    build_tokenizer(other, vocab_size=80)  # a valid tokenizer of another model
    est = XLMTVectorizer(str(folder), device="cpu").fit()
    original = (folder / "tokenizer.json").read_bytes()
    shutil.copy(other / "tokenizer.json", folder / "tokenizer.json")
    with pytest.raises(ModelLoadError, match="changed since the estimator was fitted"):
        est.transform(TEXTS[:3])
    (folder / "tokenizer.json").write_bytes(original)  # put back: the pinned content again
    assert_close(est.transform(TEXTS[:3]), fresh.transform(TEXTS[:3]))


def test_model_load_fault_then_fixed_folder_loads(tiny_model_dir, tmp_path, fresh):
    """A failed load leaves nothing behind: restoring the folder makes the next fit work."""
    folder = _copy_model(tiny_model_dir, tmp_path / "model")
    _fault_garbage_tokenizer(folder)
    est = XLMTVectorizer(str(folder), device="cpu").fit()
    with pytest.raises(ModelLoadError, match="Cannot load the tokenizer"):
        est.transform(["x"])
    shutil.copy(tiny_model_dir / "tokenizer.json", folder / "tokenizer.json")
    got = XLMTVectorizer(str(folder), device="cpu").fit().transform(["x"])
    assert_close(got, fresh.transform(["x"]))
