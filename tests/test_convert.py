"""Converted-model storage under faults (issue 27): what is deleted, what a dead conversion
leaves, read-only and full disks, a folder copied under another name, processes compiling at
once. The basics (atomic install, manifest checks, two converters) are in test_backends.py."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests._subprocesses import REPO, read_line
from xlmt_sklearn._state import reset_state
from xlmt_sklearn.backends import _convert
from xlmt_sklearn.backends._convert import CONVERTED_ENV, ensure_converted, is_complete

TEXTS = ["hola mundo", "a longer text about the weather today", "ok"]


def _build(payload: bytes):
    def build(folder: Path) -> None:
        (folder / "model.bin").write_bytes(payload)

    return build


def _ours(root: Path, owner: dict | None, age_s: float = 0.0) -> Path:
    """A temporary folder named as this package names them, with ``owner`` in it."""
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    (tmp / "model.bin").write_bytes(b"partial")
    if owner is not None:
        owner = {"host": socket.gethostname(), "started": time.time() - age_s, **owner}
        (tmp / _convert._OWNER).write_text(json.dumps(owner))
    return tmp


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_only_provably_own_folders_are_swept(tmp_path):
    old = time.time() - 3 * 24 * 3600
    users = [tmp_path / ".my-notes", tmp_path / ".venv-old", tmp_path / ".tmp-user-stuff"]
    for folder in users:
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
        os.utime(folder, (old, old))
    unmarked = _ours(tmp_path, None)  # our name, no owner file: not provably ours
    os.utime(unmarked, (old, old))
    dead = _ours(tmp_path, {"pid": _dead_pid()})
    alive = _ours(tmp_path, {"pid": os.getpid()})
    elsewhere_old = _ours(tmp_path, {"pid": 1, "host": "another-host"}, age_s=2 * 24 * 3600)
    elsewhere_new = _ours(tmp_path, {"pid": 1, "host": "another-host"}, age_s=60)
    ensure_converted("a" * 32, {}, _build(b"x" * 10), root=tmp_path)
    assert all((f / "keep.txt").read_text() == "mine" for f in users)
    assert unmarked.exists() and alive.exists() and elsewhere_new.exists()
    assert not dead.exists() and not elsewhere_old.exists()


def test_a_killed_conversion_is_cleaned_up_by_the_next(tmp_path):
    code = (
        "import time\nfrom pathlib import Path\n"
        "from xlmt_sklearn.backends._convert import ensure_converted\n"
        "def build(folder):\n"
        "    (folder / 'model.bin').write_bytes(b'x' * 1000)\n"
        "    print('building', flush=True)\n"
        "    time.sleep(600)\n"
        f"ensure_converted('b' * 32, {{}}, build, root=Path({str(tmp_path)!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert read_line(proc, timeout=120) == b"building\n"
        (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert left.exists()  # SIGKILL leaves it behind...
    ensure_converted("c" * 32, {}, _build(b"y"), root=tmp_path)
    assert not left.exists()  # ...until the next conversion, not a day later
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c" * 32]


def test_a_folder_copied_under_another_key_is_not_used(tmp_path):
    a = ensure_converted("a" * 32, {"model": "A"}, _build(b"model A"), root=tmp_path)
    b = tmp_path / ("b" * 32)
    shutil.copytree(a, b)  # same files, same manifest, another model's name
    assert not is_complete(b)
    again = ensure_converted("b" * 32, {"model": "B"}, _build(b"model B"), root=tmp_path)
    assert again == b and (b / "model.bin").read_bytes() == b"model B" and is_complete(b)


def test_an_unwritable_root_without_the_model_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    match = r"Cannot write a converted model into .*XLMT_SKLEARN_CONVERTED_DIR"
    with pytest.raises(OSError, match=match) as err:
        ensure_converted("d" * 32, {}, _build(b"z"), root=tmp_path / "ro")
    assert err.value.errno == errno.EROFS


def test_a_read_only_root_that_holds_the_model_is_used(tmp_path, monkeypatch):
    final = ensure_converted("e" * 32, {}, _build(b"ready"), root=tmp_path)

    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    reset_state("runtimes")  # a new process: hashes the files again
    assert ensure_converted("e" * 32, {}, _build(b"other"), root=tmp_path) == final


def test_a_full_disk_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    def build(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"half")
        raise RuntimeError("basic_ios::clear: iostream error")  # what ov.save_model says

    monkeypatch.setattr(_convert, "_free_bytes", lambda path: 3 * 2**20)
    match = r"is full \(3 MB free; the converted model needs about 449 MB\)"
    with pytest.raises(OSError, match=match) as err:
        ensure_converted("f" * 32, {}, build, root=tmp_path, need=449 * 2**20)
    assert err.value.errno == errno.ENOSPC and "XLMT_SKLEARN_CONVERTED_DIR" in str(err.value)
    assert "basic_ios" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    # Another failure with space left is not dressed up as a full disk.
    monkeypatch.setattr(_convert, "_free_bytes", lambda path: 50 * 2**30)
    with pytest.raises(RuntimeError, match="basic_ios"):
        ensure_converted("f" * 32, {}, build, root=tmp_path, need=449 * 2**20)


def test_four_processes_compiling_one_model_at_once(tiny_model_dir, tmp_path):
    """Issue 27, item 11: four processes starting together on one converted root (the model
    converted by one of them, compiled by all, in float32 and bf16) all finish with the same
    vectors; with a shared compiled-model cache some died with SIGBUS or a filesystem error."""
    pytest.importorskip("openvino")
    from xlmt_sklearn.backends._openvino import openvino_has_bf16

    dtypes = ["float32", "bfloat16" if openvino_has_bf16() else "float32"] * 2
    start = tmp_path / "go"
    procs = []
    for k, dtype in enumerate(dtypes):
        code = (
            "import time, numpy as np\nfrom pathlib import Path\n"
            f"while not Path({str(start)!r}).exists(): time.sleep(0.01)\n"
            "from xlmt_sklearn import XLMTVectorizer\n"
            f"v = XLMTVectorizer({str(tiny_model_dir)!r}, backend='openvino', dtype={dtype!r}, "
            "device='cpu', progress=False)\n"
            f"np.save({str(tmp_path / f'out{k}.npy')!r}, v.fit_transform({TEXTS!r}))\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), CONVERTED_ENV: str(tmp_path / "root")}
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env,
                                      stderr=subprocess.PIPE))  # fmt: skip
    start.touch()
    errs = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    outs = [np.load(tmp_path / f"out{k}.npy") for k in range(4)]
    for k in (2, 3):
        np.testing.assert_allclose(outs[k], outs[k - 2], atol=1e-5)
    assert all(np.isfinite(o).all() for o in outs)
    assert not list((tmp_path / "root").rglob("*.blob"))


def test_a_first_conversion_is_quiet_about_training(tiny_model_dir, tmp_path):
    """Tracing read transformers' ``loss_function``, which logged "loss_type=None ...
    ForCausalLMLoss" on every first conversion from Python (issue 27)."""
    pytest.importorskip("openvino")
    code = (
        "from xlmt_sklearn import XLMTVectorizer\n"
        f"XLMTVectorizer({str(tiny_model_dir)!r}, backend='openvino', device='cpu', "
        "progress=False).fit_transform(['hola'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), CONVERTED_ENV: str(tmp_path / "root")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "converting" in proc.stderr and "loss_type" not in proc.stderr
