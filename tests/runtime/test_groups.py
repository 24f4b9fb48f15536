"""GRPO groups in the async runtime: pure book-keeping, then end to end on the emulated env."""

import numpy as np
import pytest

from asyncvla.config import AlgoConfig, ConfigError, RunConfig, RuntimeConfig, TrainConfig, env_config, policy_config
from asyncvla.envs.base import Obs
from asyncvla.runtime import loop
from asyncvla.runtime.data import Segment, Step
from asyncvla.runtime.env.groups import EnvGroups, GroupBuffer


def _seg(env_id: int, n: int = 3) -> Segment:
    o = Obs(np.zeros((4, 4, 3), np.uint8), np.zeros(2, np.float32), "x")
    return Segment(env_id, [Step(o, np.zeros((1, 2), np.float32), 0.0, 0.0, 0) for _ in range(n)], o)


def test_a_group_completes_when_every_member_finished_and_opens_a_new_round():
    g = EnvGroups(num_envs=4, group_size=2, manager_index=1, seed=7)
    seed0 = g.round_seed(1)
    assert g.finish(3, _seg(3)) is None
    group, segs, spoiled = g.finish(2, _seg(2))
    assert group == 1 and not spoiled and [s.env_id for s in segs] == [2, 3]
    assert all(s.group == (1, 1, 0) for s in segs)
    assert g.round[1] == 1 and g.round_seed(1) != seed0 and g.round[0] == 0
    with pytest.raises(RuntimeError):
        g.finish(0, _seg(0)) or g.finish(0, _seg(0))


def test_a_member_cut_by_an_error_spoils_its_round():
    g = EnvGroups(num_envs=2, group_size=2, manager_index=0, seed=0)
    g.finish(0, None)
    _, segs, spoiled = g.finish(1, _seg(1))
    assert spoiled and [s.env_id for s in segs] == [1]


def test_groups_must_divide_the_manager():
    with pytest.raises(ConfigError, match="algo.group_size"):
        EnvGroups(num_envs=3, group_size=2, manager_index=0, seed=0)


def test_group_buffer_hands_out_whole_groups_only():
    buf = GroupBuffer(group_size=2)
    a, b, c = _seg(0), _seg(4), _seg(1)
    for s, tag in ((a, (0, 0, 0)), (b, (1, 0, 0)), (c, (0, 0, 0))):
        s.group = tag
    assert not buf.add(a) and not buf.add(b) and buf.add(c)
    assert buf.samples == 6
    assert [s.env_id for s in buf.take(1)] == [0, 1]  # never split, member order
    assert [s.env_id for s in buf.drain()] == [4]
    with pytest.raises(ValueError):
        buf.add(_seg(0))  # untagged


def _cfg(**rt):
    rt = {"mode": "async", "rollout_steps": 5, "async_env": True, "streaming_rollout": True, "decoupled_actor": True,
          "trainer_mode": "epoch", "max_staleness": 1, "env_managers": (4, 2), "max_batch": 4, "max_wait_ms": 2.0,
          "queue_size": 4, "trace": False, "local": True, **rt}
    return TrainConfig(
        env=env_config(id="emulated/fast", num_envs=6, image_size=16, seed=1, max_episode_steps=10, end_on_success=False),
        policy=policy_config(chunk=2, hidden_dim=16, num_layers=1, num_heads=2),
        algo=AlgoConfig(name="grpo", group_size=2, update_epochs=1, minibatch_size=10),
        runtime=RuntimeConfig(**rt),
        run=RunConfig(total_env_steps=None, total_updates=3),
    )


def test_async_grpo_trains_whole_groups_and_accounts_for_every_env_step():
    run = loop.build_runtime(_cfg())
    trained = []
    orig = run.learner._update
    run.learner._update = lambda segs: (trained.append([(s.group, len(s)) for s in segs]), orig(segs))[1]
    summary = loop.run(run, total_updates=3)
    led = run.ledger
    assert summary["train/updates"] == 3 and len(trained) == 3
    for batch in trained:
        tags = [t for t, _ in batch]
        assert all(n == 5 for _, n in batch)  # whole 10-step episodes of 2-step chunks
        assert len(tags) % 2 == 0 and all(tags[k] == tags[k + 1] for k in range(0, len(tags), 2))
    assert led.produced_env_steps == led.trained_env_steps + sum(led.dropped_env_steps.values())


def test_async_grpo_rejects_micro_batch_trainer_modes():
    with pytest.raises(ConfigError, match="trainer_mode"):
        loop.build_runtime(_cfg(trainer_mode="streaming"))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_round_of_a_group_starts_its_members_from_one_state(mode):
    rt = {"mode": "sync", "async_env": False, "streaming_rollout": False, "decoupled_actor": False, "trainer_mode": None,
          "max_staleness": None, "max_batch": None, "max_wait_ms": None} if mode == "sync" else {}
    run = loop.build_runtime(_cfg(**rt))
    firsts: dict[tuple, list] = {}
    orig = run.learner._update

    def record(segs):
        for s in segs:
            firsts.setdefault(s.group, []).append(s.steps[0].obs.proprio)
        return orig(segs)

    run.learner._update = record
    loop.run(run, total_updates=2)
    assert len(firsts) >= 6  # 3 groups of 2 per round, 2 rounds
    for members in firsts.values():
        assert len(members) == 2 and np.array_equal(members[0], members[1])
    starts = {tuple(m[0].round(5)) for m in firsts.values()}
    assert len(starts) == len(firsts)  # every group and round from a state of its own
