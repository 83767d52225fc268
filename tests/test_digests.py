"""Model file digests remembered by stamp, per process and on disk (_digests)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest

from tests._models import build_tiny_model
from xlmt_sklearn import _digests
from xlmt_sklearn._model import resolve_identity


@pytest.fixture
def memo(tmp_path, monkeypatch):
    """A disk memory in tmp_path, used for every file, every file counted as settled."""
    path = tmp_path / "memo" / "digests.json"
    monkeypatch.setenv(_digests.DIGESTS_ENV, str(path))
    monkeypatch.setattr(_digests.TUNING, "disk_min_bytes", 0)
    monkeypatch.setattr(_digests.TUNING, "racy_s", -60.0)
    _digests.reset_digests()
    yield path
    _digests.reset_digests()


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def _spy_hashing(monkeypatch) -> list[str]:
    opened: list[str] = []
    real = hashlib.file_digest

    def counting(f, name):
        opened.append(f.name)
        return real(f, name)

    monkeypatch.setattr(_digests.hashlib, "file_digest", counting)
    return opened


def test_digest_is_the_sha256_and_is_remembered_on_disk(tmp_path, memo, monkeypatch):
    f = _write(tmp_path / "w.bin", b"weights" * 1000)
    assert _digests.file_digest(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    stored = json.loads(memo.read_text())["digests"]
    assert list(stored.values()) == [hashlib.sha256(f.read_bytes()).hexdigest()]
    _digests.reset_digests()  # a new process: the disk memory answers, nothing is read
    opened = _spy_hashing(monkeypatch)
    assert _digests.file_digest(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert opened == []


def test_a_file_written_in_place_is_hashed_again(tmp_path, memo, monkeypatch):
    f = _write(tmp_path / "w.bin", b"a" * 4096)
    before = _digests.file_digest(f)
    st = f.stat()
    time.sleep(0.01)
    f.write_bytes(b"b" * 4096)  # same size; mtime set back: only the ctime tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    opened = _spy_hashing(monkeypatch)
    after = _digests.file_digest(f)
    assert after == hashlib.sha256(b"b" * 4096).hexdigest() != before
    assert opened == [str(f)]


def test_a_replaced_file_is_hashed_again(tmp_path, memo):
    f = _write(tmp_path / "w.bin", b"a" * 4096)
    _digests.file_digest(f)
    (tmp_path / "new.bin").write_bytes(b"c" * 4096)
    os.replace(tmp_path / "new.bin", f)
    assert _digests.file_digest(f) == hashlib.sha256(b"c" * 4096).hexdigest()


def test_a_freshly_changed_file_is_not_written_to_disk(tmp_path, memo, monkeypatch):
    monkeypatch.setattr(_digests.TUNING, "racy_s", 60.0)
    f = _write(tmp_path / "w.bin", b"fresh")
    assert _digests.file_digest(f) == hashlib.sha256(b"fresh").hexdigest()
    assert not memo.exists()


def test_small_files_stay_off_the_disk_memory(tmp_path, memo, monkeypatch):
    monkeypatch.setattr(_digests.TUNING, "disk_min_bytes", 10_000)
    _digests.file_digest(_write(tmp_path / "config.json", b"{}"))
    assert not memo.exists()


@pytest.mark.parametrize("damage", [b"{not json", b'{"format": 99, "digests": {}}', b"[]"])
def test_a_damaged_disk_memory_is_ignored_and_rewritten(tmp_path, memo, damage):
    memo.parent.mkdir()
    memo.write_bytes(damage)
    f = _write(tmp_path / "w.bin", b"x" * 100)
    assert _digests.file_digest(f) == hashlib.sha256(b"x" * 100).hexdigest()
    assert json.loads(memo.read_text())["format"] == 1


@pytest.mark.parametrize("entry", ["not a digest", "z" * 64, "A" * 64, 12, None])
def test_a_wrong_entry_of_another_shape_is_not_trusted(tmp_path, memo, entry):
    f = _write(tmp_path / "w.bin", b"y" * 100)
    _digests.file_digest(f)
    data = json.loads(memo.read_text())
    (stamp,) = data["digests"]
    data["digests"][stamp] = entry
    memo.write_text(json.dumps(data))
    _digests.reset_digests()
    assert _digests.file_digest(f) == hashlib.sha256(b"y" * 100).hexdigest()


def test_the_disk_memory_keeps_the_most_recent_entries(tmp_path, memo, monkeypatch):
    monkeypatch.setattr(_digests.TUNING, "disk_entries", 3)
    for i in range(5):
        _digests.file_digest(_write(tmp_path / f"{i}.bin", bytes([i]) * 10))
    kept = json.loads(memo.read_text())["digests"]
    assert [k.split("|")[0] for k in kept] == [str(tmp_path / f"{i}.bin") for i in (2, 3, 4)]


def test_an_unwritable_disk_memory_only_costs_the_hashing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    monkeypatch.setenv(_digests.DIGESTS_ENV, str(blocker / "digests.json"))
    monkeypatch.setattr(_digests.TUNING, "disk_min_bytes", 0)
    monkeypatch.setattr(_digests.TUNING, "racy_s", -60.0)
    _digests.reset_digests()
    f = _write(tmp_path / "w.bin", b"z" * 10)
    assert _digests.file_digest(f) == hashlib.sha256(b"z" * 10).hexdigest()


def test_zero_turns_the_disk_memory_off(tmp_path, monkeypatch):
    monkeypatch.setenv(_digests.DIGESTS_ENV, "0")
    monkeypatch.setattr(_digests.TUNING, "disk_min_bytes", 0)
    assert _digests._disk_path() is None
    f = _write(tmp_path / "w.bin", b"q")
    assert _digests.file_digest(f) == hashlib.sha256(b"q").hexdigest()


def test_default_location_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv(_digests.DIGESTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _digests._disk_path() == tmp_path / "xlmt_sklearn" / "digests.json"


def test_folder_identity_is_unchanged_by_the_memory_and_by_adapted_json(tmp_path, memo):
    folder = build_tiny_model(tmp_path / "m", seed=3)
    first = resolve_identity(str(folder))[0].content_hash
    _digests.reset_digests()
    assert resolve_identity(str(folder))[0].content_hash == first  # from the disk memory
    h = hashlib.sha256()  # the definition: name and digest of each content file, sorted
    for p in sorted(p for p in folder.iterdir() if p.is_file()):
        if p.name.endswith((".safetensors", ".bin", ".json", ".model", ".txt", ".pt")):
            h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    assert first == h.hexdigest()
    copy = shutil.copytree(folder, tmp_path / "adapted")
    (copy / "adapted.json").write_text('{"trained_at": "now"}')
    assert resolve_identity(str(copy))[0].content_hash == first
    (copy / "adapted.json").write_text('{"trained_at": "later"}')
    assert resolve_identity(str(copy))[0].content_hash == first
