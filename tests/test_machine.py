"""``_machine.pid_alive``: the liveness check behind claims and leftover folders."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xlmt_sklearn import _machine


def test_this_process_is_alive_and_a_finished_child_is_not():
    assert _machine.pid_alive(_machine.os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    assert not _machine.pid_alive(child.pid)


class FakeKernel32:
    """OpenProcess / GetLastError / GetExitCodeProcess / CloseHandle of a made-up host."""

    def __init__(self, processes: dict[int, int | None], denied=()):
        self.processes, self.denied, self.error, self.closed = processes, set(denied), 0, []

    def open(self, pid):
        if pid in self.denied:
            self.error = 5  # ERROR_ACCESS_DENIED: it exists, not ours
            return 0
        if pid not in self.processes:
            self.error = 87  # ERROR_INVALID_PARAMETER: no such process
            return 0
        return 1000 + pid

    def last_error(self):
        return self.error

    def exit_code(self, handle):
        return self.processes[handle - 1000]

    def close(self, handle):
        self.closed.append(handle)


@pytest.mark.parametrize(
    "pid, alive",
    [(11, True), (12, False), (13, True), (14, False), (15, True)],
    ids=["running", "exited", "cannot-tell", "no-such-pid", "access-denied"],
)
def test_windows_asks_kernel32_never_os_kill(monkeypatch, pid, alive):
    kernel = FakeKernel32({11: 259, 12: 0, 13: None}, denied={15})
    monkeypatch.setattr(_machine.sys, "platform", "win32")
    monkeypatch.setattr(_machine, "_kernel32", lambda: kernel)
    monkeypatch.setattr(_machine.os, "kill", lambda *a: pytest.fail("os.kill on Windows"))
    assert _machine.pid_alive(pid) is alive
    assert kernel.closed == ([1000 + pid] if pid in kernel.processes else [])
