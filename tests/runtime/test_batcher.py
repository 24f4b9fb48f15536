"""Dynamic batching rules, driven by a fake clock and an in-process scripted transport."""

import pytest

from asyncvla.runtime.inference.batcher import DynamicBatcher, LocalTransport, Reply, Request
from fake_transport import FakeClock, ScriptedTransport
from asyncvla.runtime.inference.server import RolloutServer


def req(n, t, client=0):
    return Request(client, None, n, t)


def sizes(batch):
    return [r.n for r in batch]


def test_flushes_when_max_batch_samples_reached():
    b = DynamicBatcher(max_batch=4, max_wait_s=1.0)
    b.add(req(2, 0.0))
    assert b.pop_ready(0.0) is None
    b.add(req(2, 0.0))
    assert sizes(b.pop_ready(0.0)) == [2, 2]
    assert b.pop_ready(10.0) is None


def test_flushes_max_wait_after_the_batch_opened_not_after_the_last_request():
    b = DynamicBatcher(max_batch=100, max_wait_s=0.005)
    b.add(req(1, 0.0))
    b.add(req(1, 0.004))  # a later request does not extend the deadline
    assert b.deadline() == pytest.approx(0.005)
    assert b.pop_ready(0.0049) is None
    assert sizes(b.pop_ready(0.005)) == [1, 1]
    b.add(req(3, 1.0))  # the next batch opens at its first request
    assert b.pop_ready(1.004) is None
    assert sizes(b.pop_ready(1.005)) == [3]


def test_request_that_would_overflow_goes_to_the_next_batch_unsplit():
    b = DynamicBatcher(max_batch=4, max_wait_s=1.0)
    b.add(req(3, 0.0))
    b.add(req(2, 0.1))
    assert sizes(b.pop_ready(0.1)) == [3]  # closed by the overflow, due at once
    assert b.pop_ready(0.5) is None  # [2] opened at 0.1, due at 1.1
    assert sizes(b.pop_ready(1.1)) == [2]


def test_oversize_request_goes_alone():
    b = DynamicBatcher(max_batch=4, max_wait_s=1.0)
    b.add(req(1, 0.0))
    b.add(req(10, 0.0))
    b.add(req(1, 0.0))
    assert sizes(b.pop_ready(0.0)) == [1]
    assert sizes(b.pop_ready(0.0)) == [10]
    assert b.pop_ready(0.0) is None
    assert b.pending_samples == 1


def test_zero_wait_flushes_every_request_on_its_own_when_polled():
    b = DynamicBatcher(max_batch=64, max_wait_s=0.0)
    b.add(req(5, 0.0))
    assert sizes(b.pop_ready(0.0)) == [5]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(0, 0.1)
    with pytest.raises(ValueError, match="n=0"):
        DynamicBatcher(2, 0.1).add(req(0, 0.0))


def test_server_loop_over_scripted_transport(fake_policy, obs_of):
    """End to end on a fake clock: batch composition, flush times, per-request replies."""
    clock = FakeClock()
    arrivals = [(0.000, "a", obs_of(2, 0), 2), (0.001, "b", obs_of(1, 10), 1), (0.002, "c", obs_of(1, 20), 1),
                (0.010, "d", obs_of(3, 30), 3), (0.011, "e", obs_of(2, 40), 2)]
    tr = ScriptedTransport(clock, arrivals)
    server = RolloutServer(fake_policy(2.0), max_batch=4, max_wait_s=0.005)
    server.serve(tr, clock, should_stop=lambda: tr.exhausted and server.batcher.pending_samples == 0)
    got = {r.client: (t, r) for t, r in tr.sent}
    assert server.batch_sizes == {4: 1, 3: 1, 2: 1}
    assert got["a"][0] == pytest.approx(0.002) and got["c"][0] == pytest.approx(0.002)  # full at 4
    assert got["d"][0] == pytest.approx(0.011)  # d (3) + e (2) overflows: d flushes when e arrives
    assert got["e"][0] == pytest.approx(0.016)  # e's batch times out 5 ms after it opened
    # each reply holds exactly its own request's samples, in order
    assert got["b"][1].result.actions[:, 0, 0].tolist() == [20.0]
    assert got["e"][1].result.actions[:, 0, 0].tolist() == [80.0, 82.0]


def test_local_transport_routes_replies_to_futures_and_callbacks():
    tr = LocalTransport(clock=lambda: 1.0)
    fut = tr.submit("x", "payload", 3)
    seen = []
    tr.submit("y", "p2", 1, on_reply=seen.append)
    reqs = tr.recv(0)
    assert [r.n for r in reqs] == [3, 1] and all(r.t == 1.0 for r in reqs)
    for r in reqs:
        tr.send(Reply(r.id, r.client, r.payload, version=7))
    assert fut.result(timeout=1).result == "payload" and seen[0].client == "y"
    assert tr.outstanding == 0
    tr.close()
    assert tr.recv(None) == []
