"""_registry.LRURegistry on its own: what a process keeps loaded (models, compiled runtimes)."""

from __future__ import annotations

import threading
import time

import pytest

from xlmt_sklearn.backends._registry import LRURegistry


def test_built_once_per_key_and_least_recently_used_dropped():
    reg, builds = LRURegistry(), []

    def build(key):
        return lambda: builds.append(key) or key.upper()

    assert reg.get_or_build("a", build("a"), limit=2) == "A"
    assert reg.get_or_build("b", build("b"), limit=2) == "B"
    assert reg.get_or_build("a", build("a"), limit=2) == "A"  # cached; "a" is now newest
    reg.get_or_build("c", build("c"), limit=2)  # drops "b", the least recently used
    assert builds == ["a", "b", "c"] and list(reg) == ["a", "c"]
    reg.clear()
    assert not reg


def test_threads_wait_for_the_same_key_and_not_for_another():
    """Eight threads want key "slow": one build. A thread that wants "fast" meanwhile is
    served while "slow" is still building (a first conversion takes minutes)."""
    reg, builds, started = LRURegistry(), [], threading.Event()
    release = threading.Event()

    def slow():
        builds.append("slow")
        started.set()
        assert release.wait(10), "the test's deadline"
        return "S"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(reg.get_or_build("slow", slow, 4)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    assert started.wait(10)
    t0 = time.monotonic()
    assert reg.get_or_build("fast", lambda: "F", 4) == "F"
    assert time.monotonic() - t0 < 5  # not behind the slow build
    release.set()
    for t in threads:
        t.join(10)
    assert results == ["S"] * 8 and builds == ["slow"]


def test_a_failed_build_is_tried_again():
    reg, calls = LRURegistry(), []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("first try fails")
        return "ok"

    with pytest.raises(OSError, match="first try fails"):
        reg.get_or_build("k", flaky, 2)
    assert "k" not in reg and not reg._building
    assert reg.get_or_build("k", flaky, 2) == "ok" and len(calls) == 2
