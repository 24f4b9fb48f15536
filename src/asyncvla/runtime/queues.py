"""The bounded queue of trajectory segments between env workers and the trainer.

A `Segment` (runtime/data.py) is consecutive decisions of one env with behaviour logprob,
value and policy version per decision. `TrajectoryQueue` is bounded: a full queue blocks
producers (backpressure), so a fast rollout side waits for the trainer instead of growing
memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from asyncvla.runtime.data import Segment


class QueueClosed(RuntimeError):
    pass


class TrajectoryQueue:
    """Bounded FIFO of segments; `put` blocks while full, `get` while empty; `close` wakes both."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity={capacity} is invalid: must be >= 1")
        self.capacity = capacity
        self._items: deque[Segment] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.num_samples = 0
        """Samples (decisions) currently queued."""
        self.max_depth = 0
        self.put_wait_s = 0.0
        """Total time producers spent blocked on a full queue (backpressure)."""

    def put(self, seg: Segment, timeout_s: float | None = None) -> bool:
        """Appends `seg`, waiting while the queue is full; False on timeout, QueueClosed if closed."""
        t0 = time.perf_counter()
        with self._cond:
            ok = self._cond.wait_for(lambda: self._closed or len(self._items) < self.capacity, timeout_s)
            self.put_wait_s += time.perf_counter() - t0
            if self._closed:
                raise QueueClosed("put on a closed TrajectoryQueue")
            if not ok:
                return False
            self._items.append(seg)
            self.num_samples += len(seg)
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()
            return True

    def get(self, timeout_s: float | None = None) -> Segment | None:
        """The oldest segment, waiting while empty; None on timeout or when closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._items, timeout_s)
            if not self._items:
                return None
            seg = self._items.popleft()
            self.num_samples -= len(seg)
            self._cond.notify_all()
            return seg

    def drain(self) -> list[Segment]:
        """Removes and returns everything queued (shutdown accounting)."""
        with self._cond:
            out = list(self._items)
            self._items.clear()
            self.num_samples = 0
            self._cond.notify_all()
            return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)
