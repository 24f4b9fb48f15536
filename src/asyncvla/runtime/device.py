"""The device inference and training compute on: shared or not, real or emulated.

`DeviceGate` is what a rollout server holds around `policy.act` and the trainer around an
update. When the two roles share one device (colocated placement on an accelerator) the
gate is one lock, so their calls never overlap, as on a GPU that holds one model's work at a
time. With an emulated accelerator (benchmarks) the gate also holds the device for the
calibrated time after the real call, without using CPU.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from asyncvla.config import EmulatedAcceleratorConfig


class DeviceGate:
    """Serialises the roles on a shared device and holds emulated device time."""

    def __init__(self, accel: EmulatedAcceleratorConfig | None = None, shared: bool = False):
        self.accel = accel or EmulatedAcceleratorConfig()
        self._lock = threading.Lock() if shared else None

    @contextmanager
    def _hold(self, seconds: float) -> Iterator[None]:
        if self._lock is not None:
            self._lock.acquire()
        t0 = time.perf_counter()
        try:
            yield
            left = seconds - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)
        finally:
            if self._lock is not None:
                self._lock.release()

    def infer(self, batch: int):
        """Around one inference batch of `batch` samples."""
        return self._hold(self.accel.infer_s(batch))

    def train(self, samples: int):
        """Around one update over `samples` samples (times epochs)."""
        return self._hold(self.accel.train_per_sample_s * samples)
