"""RolloutServer: weights change only between batches; replies carry the version; routers."""

import threading

import pytest
import torch

from asyncvla.config import ConfigError
from asyncvla.runtime.inference.batcher import LocalTransport, Request
from asyncvla.runtime.inference.server import GreedyRouter, RolloutServer, make_router
from asyncvla.runtime.inference.weight_store import WeightStore


def test_weights_published_mid_batch_wait_for_the_next_batch(fake_policy, obs_of):
    policy = fake_policy(1.0)
    server = RolloutServer(policy, max_batch=8, max_wait_s=0.0)
    policy.hook = lambda: server.set_weights({"w": torch.tensor(5.0)}, version=1)
    replies = server.run_batch([Request("a", obs_of(4, 1), 4, 0.0)])
    acts = replies[0].result.actions[:, 0, 0]
    assert acts.tolist() == [1.0, 2.0, 3.0, 4.0]  # both halves with the old weights
    assert replies[0].version == 0 and replies[0].result.version == 0
    policy.hook = None
    replies = server.run_batch([Request("a", obs_of(2, 1), 2, 0.0)])
    assert replies[0].result.actions[:, 0, 0].tolist() == [5.0, 10.0]
    assert replies[0].version == 1 == server.version == policy.version


def test_pulls_newer_weights_from_the_store_at_the_boundary_only(fake_policy, obs_of):
    store = WeightStore({"w": torch.tensor(1.0)}, version=0)
    policy = fake_policy(1.0)
    server = RolloutServer(policy, max_batch=8, max_wait_s=0.0, weights=store)
    policy.hook = lambda: store.publish({"w": torch.tensor(3.0)}, version=2)
    r = server.run_batch([Request("a", obs_of(2, 1), 2, 0.0)])[0]
    assert r.version == 0 and r.result.actions[:, 0, 0].tolist() == [1.0, 2.0]
    policy.hook = None
    r = server.run_batch([Request("a", obs_of(2, 1), 2, 0.0)])[0]
    assert r.version == 2 and r.result.actions[:, 0, 0].tolist() == [3.0, 6.0]


def test_older_pending_weights_never_replace_newer_ones(fake_policy, obs_of):
    server = RolloutServer(fake_policy(1.0), max_batch=8, max_wait_s=0.0)
    server.set_weights({"w": torch.tensor(4.0)}, version=4)
    server.set_weights({"w": torch.tensor(3.0)}, version=3)
    assert server.run_batch([Request("a", obs_of(1, 1), 1, 0.0)])[0].version == 4


def test_threaded_serving_answers_concurrent_clients(fake_policy, obs_of):
    tr = LocalTransport()
    server = RolloutServer(fake_policy(1.0), max_batch=6, max_wait_s=0.05)
    stop = threading.Event()
    th = threading.Thread(target=server.serve, args=(tr, tr.clock, stop.is_set), daemon=True)
    th.start()
    futs = [tr.submit(i, obs_of(2, 10 * i), 2) for i in range(3)]
    replies = [f.result(timeout=5) for f in futs]
    stop.set()
    tr.close()
    th.join(timeout=5)
    for i, r in enumerate(replies):
        assert r.client == i and r.result.actions[:, 0, 0].tolist() == [10.0 * i, 10.0 * i + 1]
    assert server.num_samples == 6


def test_routers():
    rr = make_router("round-robin", 3)
    assert [rr.pick(0, 1) for _ in range(4)] == [0, 1, 2, 0]
    fixed = make_router("fixed", 2)
    assert [fixed.pick(c, 1) for c in (0, 1, 2, 3)] == [0, 1, 0, 1]
    g = GreedyRouter(2)
    assert g.pick(0, 5) == 0 and g.pick(1, 2) == 1 and g.pick(2, 1) == 1  # loads 5, 2 -> 1
    g.done(0, 5)
    assert g.pick(3, 1) == 0
    with pytest.raises(ConfigError, match="runtime.router"):
        make_router("random", 2)
