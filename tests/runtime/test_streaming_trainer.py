"""StreamingTrainer: exact update boundaries with carry-over, stale safety net, and (real
tiny policy) the async update at max_staleness=0 equals the sync one on the same batch."""

import numpy as np
import pytest
import torch

from asyncvla.config import AlgoConfig, env_config, policy_config
from asyncvla.envs.base import Obs
from asyncvla.metrics.spans import SpanRecorder
from asyncvla.runtime.data import Segment, Step
from asyncvla.runtime.learner.staleness import Ledger, StalenessController
from asyncvla.runtime.learner.streaming import StreamingTrainer, split_segment
from asyncvla.runtime.inference.weight_store import WeightStore


def _seg(env_id, n, version=0, steps_each=2):
    obs = lambda: Obs(np.zeros((8, 8, 3), np.uint8), np.zeros(4, np.float32), "task")  # noqa: E731
    steps = [Step(obs(), np.zeros((1, 2), np.float32), 0.0, 0.0, version, num_steps=steps_each) for _ in range(n)]
    return Segment(env_id, steps, obs())


class FakeTrainer:
    """Records the size of every update; one version per update."""

    def __init__(self, algo):
        self.algo, self.decoupled, self.sizes = algo, False, []
        self.policy = torch.nn.Linear(1, 1)
        self.policy.version = 0
        self.policy.published_state = self.policy.state_dict
        self.rec = SpanRecorder("trainer", 0)

    @property
    def version(self):
        return self.policy.version

    def prepare(self, rollouts):
        return rollouts[0]

    def update(self, batch, epochs):
        self.sizes.append((batch.num_samples, epochs))
        self.policy.version += 1
        return {}

    def train(self, rollouts, epochs):
        return self.update(self.prepare(rollouts), epochs)


def _streaming(mode="accumulate", global_batch=5, eta=1, algo=None):
    algo = algo or AlgoConfig(minibatch_size=2, update_epochs=3)
    ctrl = StalenessController(eta, global_batch)
    st = StreamingTrainer(FakeTrainer(algo), mode, global_batch, WeightStore(), ctrl, Ledger())
    return st, ctrl


def test_accumulate_steps_exactly_every_global_batch_and_carries_the_rest():
    st, ctrl = _streaming()
    counts = [len(st.add(_seg(i, 3, version=st.version))) for i in range(7)]  # 21 samples, batches of 5
    assert counts == [0, 1, 0, 1, 1, 0, 1]
    assert st.trainer.sizes == [(5, 1)] * 4 and st.buffered_samples == 1
    assert st.store.version == 4 == ctrl.version and ctrl.consumed == 20
    led = st.ledger
    led.produced(42)
    st.drop_buffered("shutdown")
    assert led.trained_samples == 20 and led.dropped_samples["shutdown"] == 1 and led.balance == 0


def test_streaming_steps_on_every_micro_batch_and_epoch_mode_runs_all_epochs():
    st, _ = _streaming("streaming", eta=5)
    st.add(_seg(0, 5))
    assert st.trainer.sizes == [(2, 1), (2, 1)] and st.buffered_samples == 1
    st, _ = _streaming("epoch", global_batch=4, eta=0)
    st.add(_seg(0, 4))
    assert st.trainer.sizes == [(4, 3)] and not st.trainer.decoupled  # the sync loop: plain PPO
    st, _ = _streaming("epoch", global_batch=4, eta=1)
    assert st.trainer.decoupled  # rollouts go on under older weights: decoupled PPO


def test_stale_samples_are_dropped_counted_and_refunded():
    st, ctrl = _streaming(eta=0, global_batch=4)
    assert ctrl.try_admit(100) == 4
    st.add(_seg(0, 4, version=0))  # trained at version 0 -> version 1
    assert ctrl.try_admit(100) == 4
    seg = _seg(1, 3, version=1)
    seg.steps[0].version = 0  # an old decision at the head of a segment
    st.add(seg)
    assert st.ledger.dropped_samples["stale"] == 1 and st.buffered_samples == 2
    assert ctrl.admitted == 8 - 1


def test_split_segment_bootstraps_the_head_from_the_tail():
    seg = _seg(0, 4)
    head, tail = split_segment(seg, 3)
    assert len(head) == 3 and len(tail) == 1 and head.next_obs is seg.steps[3].obs and tail.next_obs is seg.next_obs
    with pytest.raises(ValueError):
        split_segment(seg, 4)


def test_rejects_unknown_mode():
    from asyncvla.config import ConfigError

    with pytest.raises(ConfigError, match="trainer_mode"):
        _streaming("sometimes")


def _play(worker, actor, decisions: int, group: int = 0):
    """Every env of `worker` plays `decisions` lockstep decisions; returns their segments (GRPO: tagged)."""
    for r in worker.vec.reset():
        worker.record(r)
    ids = list(range(worker.vec.num_envs))
    for _ in range(decisions):
        worker.send(ids, actor.act(worker.batch(ids)))
        results = []
        while len(results) < len(ids):
            results += worker.vec.recv(min_ready=len(ids) - len(results))
        for r in results:
            worker.record(r)
    segments = worker.pop_segments()
    for s in segments:
        s.group = (0, s.env_id // group, 0) if group else None
    return segments


@pytest.mark.parametrize("algo_name", ["ppo", "grpo"])
def test_async_update_at_zero_staleness_equals_sync(algo_name):
    """Same rollout, same initial weights: the sync plan's learner (epoch mode, plain PPO loss against
    the behaviour logprob) vs the async one (segments streamed out of order, decoupled loss with the
    proximal logprob recomputed; PPO accumulating, GRPO in whole groups) at max_staleness=0.

    Segments are not split here: a split bootstraps at the cut (a shorter GAE horizon), which
    is a valid but different estimate; the plan sizes the batch as a multiple of the segment
    length so full segments never need splitting."""
    from asyncvla.policies.registry import build_policy
    from asyncvla.runtime.env.worker import EnvWorker
    from asyncvla.runtime.learner.trainer import Trainer

    grpo = algo_name == "grpo"
    env_cfg = env_config(id="emulated/fast", num_envs=4, image_size=16, seed=3, end_on_success=False,
                        max_episode_steps=12 if grpo else None)
    pol_cfg = policy_config(chunk=2, hidden_dim=16, num_layers=1, num_heads=2, image_size=16)
    T = 6
    n = env_cfg.num_envs * T
    algo = AlgoConfig(name=algo_name, group_size=2, update_epochs=1, minibatch_size=n, dual_clip=None)
    worker = EnvWorker(env_cfg, trace=False)
    spec = worker.spec()
    actor = build_policy(pol_cfg, spec["action_dim"], spec["proprio_dim"], seed=0)
    segments = _play(worker, actor, T, group=2 if grpo else 0)
    worker.close()

    def learner(mode: str, decoupled: bool):
        trainer = Trainer(pol_cfg, algo, spec["action_dim"], spec["proprio_dim"], seed=0, trace=False)
        st = StreamingTrainer(trainer, mode, n, WeightStore(), StalenessController(0, n), envs_per_worker=4,
                              group_size=2 if grpo else 0)
        trainer.decoupled = decoupled
        return st

    sync, stream = learner("epoch", False), learner("epoch" if grpo else "accumulate", True)
    (sync_stats,) = [x for seg in segments for x in sync.add(seg)]
    stats = [x for seg in segments[::-1] for x in stream.add(seg)]
    assert len(stats) == 1 and stats[0]["lag/batch_max"] == 0
    for key in ("loss/total", "loss/policy") + (() if grpo else ("loss/value",)):
        assert stats[0][key] == pytest.approx(sync_stats[key], abs=1e-5), key
    assert stats[0]["loss/is_weight_mean"] == pytest.approx(1.0, abs=1e-5)
    for (k, a), b in zip(sync.trainer.policy.state_dict().items(), stream.trainer.policy.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k
    assert stream.store.version == stream.trainer.version == 1
