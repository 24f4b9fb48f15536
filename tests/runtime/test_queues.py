"""TrajectoryQueue: bounded, FIFO, backpressure blocks producers, close wakes everyone."""

import threading

import pytest

from asyncvla.runtime.data import Segment
from asyncvla.runtime.queues import QueueClosed, TrajectoryQueue


def seg(env_id, n=2):
    return Segment(env_id, [None] * n, None)


def test_fifo_and_sample_count():
    q = TrajectoryQueue(3)
    q.put(seg(0, 2))
    q.put(seg(1, 3))
    assert len(q) == 2 and q.num_samples == 5
    assert q.get().env_id == 0 and q.num_samples == 3


def test_full_queue_blocks_the_producer_instead_of_growing():
    q = TrajectoryQueue(2)
    q.put(seg(0))
    q.put(seg(1))
    assert q.put(seg(2), timeout_s=0.01) is False and len(q) == 2
    th = threading.Thread(target=q.put, args=(seg(3),))
    th.start()
    th.join(timeout=0.05)
    assert th.is_alive()  # blocked: backpressure
    assert q.get().env_id == 0
    th.join(timeout=5)
    assert not th.is_alive() and [q.get().env_id for _ in range(2)] == [1, 3]
    assert q.max_depth == 2 and q.put_wait_s > 0


def test_close_wakes_consumers_and_rejects_producers():
    q = TrajectoryQueue(1)
    got = []
    th = threading.Thread(target=lambda: got.append(q.get()))
    th.start()
    q.close()
    th.join(timeout=5)
    assert got == [None]
    with pytest.raises(QueueClosed):
        q.put(seg(0))


def test_drain_returns_everything():
    q = TrajectoryQueue(4)
    for i in range(3):
        q.put(seg(i))
    assert [s.env_id for s in q.drain()] == [0, 1, 2] and q.num_samples == 0
