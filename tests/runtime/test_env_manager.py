"""EnvManager helpers: how ready envs are cut into inference requests."""

from asyncvla.runtime.env.manager import split_request


def test_ready_envs_are_cut_into_requests_of_at_most_the_server_batch():
    assert split_request([3, 1, 4, 0, 2], 2) == [[3, 1], [4, 0], [2]]  # order kept, nothing lost
    assert split_request([5, 6], 1) == [[5], [6]]  # no dynamic batching: each env alone
    assert split_request([0, 1, 2], None) == [[0, 1, 2]]  # no cap: one request
    assert split_request([0, 1], 8) == [[0, 1]]
    assert split_request([], 2) == []


class _AdmitAll:
    def try_admit(self, want: int) -> int:
        return want


class _ImmediateClient:
    """Answers every request at once (inside submit) and logs it; stops the manager after `limit` requests."""

    def __init__(self, events: list, limit: int, chunk: int, action_dim: int):
        self.events, self.limit, self.chunk, self.action_dim = events, limit, chunk, action_dim
        self.manager = None

    def submit(self, client, obs, on_reply):
        import numpy as np

        from asyncvla.policies.base import ActOut
        from asyncvla.runtime.inference.batcher import Reply

        n = len(obs)
        self.events.append(("request", n))
        if sum(e[0] == "request" for e in self.events) >= self.limit:
            self.manager.stop()
        out = ActOut(np.zeros((n, self.chunk, self.action_dim), np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32), 0)
        on_reply(Reply(-1, client, out, 0))


def test_inline_envs_send_their_request_before_the_next_env_steps():
    # Inline executor: each `send` runs a whole chunk. With two replies pending, env 0's next
    # request must leave before env 1's chunk runs (its inference then overlaps that chunk).
    from asyncvla.config import env_config
    from asyncvla.runtime.env.manager import EnvManager
    from asyncvla.runtime.env.worker import EnvWorker
    from asyncvla.runtime.queues import TrajectoryQueue
    from asyncvla.runtime.learner.staleness import Ledger

    cfg = env_config(id="emulated/balanced", num_envs=2, image_size=8, executor="inline", seed=0)
    worker = EnvWorker(cfg, 0, trace=False)
    events: list = []
    client = _ImmediateClient(events, limit=6, chunk=2, action_dim=worker.vec.action_dim)
    manager = EnvManager(0, worker, client, _AdmitAll(), TrajectoryQueue(64), Ledger(), segment_len=100, async_env=True,
                         max_request=1)
    client.manager = manager
    real_send = worker.send
    worker.send = lambda ids, act: (events.append(("chunk", list(ids))), real_send(ids, act))[1]
    manager.run()
    worker.close()
    assert manager.error is None
    chunks = [i for i, e in enumerate(events) if e[0] == "chunk"]
    assert len(chunks) >= 3
    # Between two chunks there is always the request of the env whose chunk just ran.
    for a, b in zip(chunks, chunks[1:]):
        assert ("request", 1) in events[a + 1:b], events


class _Admission:
    """Grants from a list, one entry per call; records the calls and refunds."""

    def __init__(self, grants: list[int]):
        self.grants, self.calls, self.refunded = list(grants), [], 0

    def try_admit(self, want: int) -> int:
        self.calls.append(want)
        return min(want, self.grants.pop(0))

    def refund(self, n: int) -> None:
        self.refunded += n


def _manager(admission, groups=None):
    from asyncvla.config import env_config
    from asyncvla.runtime.env.manager import EnvManager
    from asyncvla.runtime.env.worker import EnvWorker
    from asyncvla.runtime.learner.staleness import Ledger
    from asyncvla.runtime.queues import TrajectoryQueue

    worker = EnvWorker(env_config(id="emulated/fast", num_envs=3, image_size=8, seed=0), 0, trace=False)
    return EnvManager(0, worker, None, admission, TrajectoryQueue(8), Ledger(), segment_len=4, async_env=False), worker


def test_envs_are_admitted_in_one_call_shared_out_in_order():
    """One admission for all envs that need one: two calls could straddle a trainer's advance and
    split a lockstep stage's request (measured on Ray: batches of 2, 2, ..., 1, 1)."""
    manager, worker = _manager(_Admission([10]))
    try:
        manager.remaining[2] = 3  # mid-segment: needs no admission
        assert manager._admit([0, 1, 2]) == ([0, 1, 2], [])
        assert manager.controller.calls == [8] and manager.remaining == [4, 4, 3]
        manager.remaining[:] = [0, 0, 0]
        manager.controller.grants = [6]
        assert manager._admit([0, 1, 2]) == ([0, 1], [2])  # PPO: the last granted env's segment is cut short
        assert manager.remaining == [4, 2, 0] and manager.controller.refunded == 0
    finally:
        worker.close()
