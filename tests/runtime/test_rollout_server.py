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


def test_an_inference_error_reaches_every_waiting_caller_and_serving_goes_on(fake_policy, obs_of):
    from asyncvla.runtime.inference.batcher import InferenceError

    tr = LocalTransport()
    policy = fake_policy(1.0)
    server = RolloutServer(policy, max_batch=4, max_wait_s=0.05, index=3)

    def boom():
        raise ValueError("invalid logits\nsecond line")

    policy.hook = boom
    stop = threading.Event()
    th = threading.Thread(target=server.serve, args=(tr, tr.clock, stop.is_set), daemon=True)
    th.start()
    futs = [tr.submit(i, obs_of(2, 0), 2) for i in range(2)]  # one batch of two requests
    replies = [f.result(timeout=5) for f in futs]
    assert [r.error for r in replies] == ["rollout server 3: ValueError: invalid logits"] * 2
    with pytest.raises(InferenceError, match="^rollout server 3: ValueError: invalid logits$"):
        replies[0].unwrap()
    policy.hook = None  # the next batch is served normally
    assert tr.submit(0, obs_of(1, 7), 1).result(timeout=5).unwrap().actions[0, 0, 0] == 7.0
    stop.set()
    tr.close()
    th.join(timeout=5)


def test_a_ray_servers_error_reaches_the_manager_as_an_error_reply():
    from concurrent.futures import Future

    from asyncvla.runtime.backends.ray_proxies import RayServerTransport

    class Ref:
        def __init__(self, fut):
            self.fut = fut

        def future(self):
            return self.fut

    class Actor:  # act.remote(...) fails the way a Ray task does: the future holds the exception
        class act:
            @staticmethod
            def remote(client, obs):
                fut = Future()
                fut.set_exception(RuntimeError("ray task failed\nTraceback ...\nInferenceError: rollout server 1: ValueError: nan"))
                return Ref(fut)

    got = []
    RayServerTransport(Actor()).submit(0, None, 1, got.append)
    assert len(got) == 1 and got[0].error == "InferenceError: rollout server 1: ValueError: nan" and got[0].result is None


def test_a_reply_that_never_comes_is_an_error_not_a_stall(monkeypatch, obs_of):
    from asyncvla.runtime.env import manager
    from asyncvla.runtime.inference.batcher import InferenceError

    monkeypatch.setattr(manager, "REPLY_TIMEOUT_S", 0.2)
    client = manager.RolloutClient([LocalTransport()], make_router("round-robin", 1))  # no server serves it
    with pytest.raises(InferenceError, match=r"env manager 3: no inference reply within 0.2 s"):
        client.act(3, obs_of(1, 0))
