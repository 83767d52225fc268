"""Step 7a, _scheduler.py on its own: where batches compute, and what a failure does.

Fake devices (no model): ``compute(batch, device)`` returns the batch's rows. Every
wait has a deadline (the threaded paths join their producers; a hang fails the test by
the suite's timeout rather than blocking forever).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xlmt_sklearn.flow._scheduler import computed


class FakeDevice:
    """A device named ``name``; batches longer than ``fits`` run "out of memory"."""

    def __init__(self, name: str = "cpu", fits: int = 1 << 30, fail_on: int | None = None):
        self.device, self.fits, self.fail_on = name, fits, fail_on
        self.seen: list[list[int]] = []
        self.recovered = 0

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc)

    def after_out_of_memory(self) -> None:
        self.recovered += 1


def compute(batch: np.ndarray, device: FakeDevice) -> list[int]:
    rows = batch.tolist()
    if device.fail_on is not None and device.fail_on in rows:
        raise ValueError(f"{device.device} failed on row {device.fail_on}")
    if len(rows) > device.fits:
        raise RuntimeError("CUDA out of memory (fake)")
    device.seen.append(rows)
    return rows


BATCHES = [np.arange(k * 4, k * 4 + 4) for k in range(6)]


def test_one_device_computes_inline_in_order():
    device = FakeDevice()
    assert list(computed([device], BATCHES, compute)) == [b.tolist() for b in BATCHES]
    assert device.seen == [b.tolist() for b in BATCHES]


def test_out_of_memory_halves_only_the_batch_that_failed():
    device = FakeDevice(fits=2)
    got = list(computed([device], BATCHES[:2], compute))
    assert got == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert device.recovered == 2


def test_a_single_row_that_does_not_fit_raises():
    with pytest.raises(RuntimeError, match="out of memory"):
        list(computed([FakeDevice(fits=0)], BATCHES[:1], compute))


def test_two_devices_compute_every_batch_once():
    devices = [FakeDevice("cuda:0"), FakeDevice("cuda:1")]
    got = list(computed(devices, BATCHES, compute))
    assert sorted(r for rows in got for r in rows) == list(range(24))
    done = sorted(r for rows in devices[0].seen + devices[1].seen for r in rows)
    assert done == list(range(24))  # each row once, over both devices


def test_a_failing_device_delivers_what_was_computed_then_raises():
    devices = [FakeDevice("cuda:0", fail_on=9), FakeDevice("cuda:1", fail_on=9)]
    delivered: list[int] = []
    with pytest.raises(ValueError, match="failed on row 9"):
        for rows in computed(devices, BATCHES, compute):
            delivered += rows
    assert not set(range(8, 12)) & set(delivered)  # the failed batch is never delivered
    assert len(delivered) % 4 == 0  # whole batches only
    assert threading.active_count() < 10  # the producers were joined


def test_a_caller_that_stops_stops_the_producers():
    devices = [FakeDevice("cuda:0"), FakeDevice("cuda:1")]
    stream = computed(devices, BATCHES * 20, compute)
    next(stream)
    stream.close()  # the caller leaves (an error of its own, a break)
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith("xlmt_sklearn-device-")]
    assert len(devices[0].seen) + len(devices[1].seen) < 120
