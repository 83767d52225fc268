"""``_filelock.file_lock``: one holder across processes, a deadline, and what follows it."""

from __future__ import annotations

import subprocess
import sys
import time
import types

import pytest

from xlmt_sklearn._filelock import file_lock

HOLDER = """
import sys, time
from pathlib import Path
from xlmt_sklearn._filelock import file_lock
with file_lock(Path(sys.argv[1]), wait_s=5) as held:
    Path(sys.argv[2]).write_text(str(held))
    time.sleep(60)
"""


@pytest.fixture
def held_elsewhere(tmp_path):
    """The lock file, held by a child process until the test ends (then killed)."""
    lock, flag = tmp_path / "x.lock", tmp_path / "held"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(flag)])
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.05)
    assert flag.read_text() == "True"
    yield lock, child
    child.kill()
    child.wait(timeout=30)


def test_waits_then_goes_on_unlocked_or_raises(held_elsewhere):
    lock, _ = held_elsewhere
    start = time.monotonic()
    with file_lock(lock, wait_s=0.3, poll_s=0.05) as held:
        assert held is False
    assert time.monotonic() - start >= 0.3
    strict = file_lock(lock, wait_s=0.1, poll_s=0.05, timeout_error=lambda: TimeoutError("busy"))
    with pytest.raises(TimeoutError, match="busy"), strict:
        pytest.fail("entered a lock another process holds")


def test_a_killed_holder_lets_the_next_one_in(held_elsewhere):
    lock, child = held_elsewhere
    child.kill()
    child.wait(timeout=30)
    with file_lock(lock, wait_s=30, poll_s=0.05) as held:
        assert held is True


def test_a_file_that_cannot_be_opened(tmp_path):
    missing = tmp_path / "no-such-folder" / "x.lock"
    with file_lock(missing, wait_s=1) as held:
        assert held is False  # work whose repetition costs time only: go on
    with pytest.raises(OSError), file_lock(missing, wait_s=1, timeout_error=TimeoutError):
        pass


def test_windows_locks_the_first_byte_with_msvcrt(tmp_path, monkeypatch):
    calls, held = [], set()

    def locking(fd, mode, nbytes):
        calls.append((mode, nbytes))
        if mode == fake.LK_NBLCK:
            if "x" in held:
                raise OSError("locked")
            held.add("x")
        else:
            held.discard("x")

    fake = types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl -> ImportError
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    with file_lock(tmp_path / "x.lock", wait_s=1) as first:
        assert first is True
        with file_lock(tmp_path / "x.lock", wait_s=0.1, poll_s=0.05) as second:
            assert second is False
    assert calls[0] == (2, 1) and calls[-1] == (0, 1) and not held
