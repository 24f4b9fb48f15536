import numpy as np
import pytest

from asyncvla.config import AlgoConfig, ConfigError, RuntimeConfig, TrainConfig, env_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.policies.base import ActOut
from asyncvla.runtime.env.worker import EnvWorker
from asyncvla.runtime.plan import make_plan

CFG = env_config(id="emulated/fast", num_envs=4, image_size=16, emulated=EmulatedConfig(episode_len=3))


def act(n, version=0, value=0.5):
    return ActOut(np.full((n, 2, 4), 0.1, np.float32), np.full(n, -1.0, np.float32), np.full(n, value, np.float32), version)


def _step(w, ids, version=0):
    w.send(ids, act(len(ids), version))
    results = []
    while len(results) < len(ids):
        results += w.vec.recv(min_ready=len(ids) - len(results))
    for r in sorted(results, key=lambda r: r.env_id):
        w.record(r)


def test_steps_are_assembled_per_env_into_segments_with_global_ids():
    w = EnvWorker(CFG, worker_index=1)
    for r in w.vec.reset():
        w.record(r)
    for t in range(3):
        _step(w, [0, 1, 2, 3], version=t)
    segs = w.pop_segments()
    assert [s.env_id for s in segs] == [4, 5, 6, 7]  # global ids of worker 1
    seg = segs[0]
    assert [st.version for st in seg.steps] == [0, 1, 2] and all(st.valid for st in seg.steps)
    # chunks of 2 in episodes of 3 steps: the 2nd decision truncates after 1 step, with its final obs
    assert [st.truncated for st in seg.steps] == [False, True, False] and seg.steps[1].final_obs is not None
    assert sum(s.env_steps for s in segs) == 4 * (2 + 1 + 2) and len(w.pop_episodes()) == 4
    assert w.pop_segments()[0].steps == []  # buffers emptied
    w.close()


def test_an_env_plays_the_same_episodes_and_samples_however_the_envs_are_split():
    whole = EnvWorker(CFG)
    half = EnvWorker(env_config(**{**vars(CFG), "num_envs": 2}), first_env=2)  # envs 2, 3 of the same run
    for w in (whole, half):
        for r in w.vec.reset():
            w.record(r)
    a, b = whole.batch([2, 3]), half.batch([0, 1])
    assert np.array_equal(a.proprio, b.proprio) and np.array_equal(a.sample_keys, b.sample_keys)
    _step(whole, [2, 3])
    _step(half, [0, 1])
    assert not np.array_equal(whole.batch([2]).sample_keys, a.sample_keys[:1])  # a new key per decision
    assert np.array_equal(whole.batch([2, 3]).sample_keys, half.batch([0, 1]).sample_keys)
    whole.close()
    half.close()


def test_runtime_config_validation():
    with pytest.raises(ConfigError, match="runtime.pipeline_stages"):
        RuntimeConfig(pipeline_stages=3)
    with pytest.raises(ConfigError, match="runtime.async_env.*mode=async"):
        make_plan(TrainConfig(runtime=RuntimeConfig(async_env=True)))
    with pytest.raises(ConfigError, match="runtime.pipeline_stages=2 is invalid with runtime.async_env"):
        make_plan(TrainConfig(runtime=RuntimeConfig(mode="async", async_env=True, pipeline_stages=2)))
    with pytest.raises(ConfigError, match="runtime.max_staleness=2 is invalid without runtime.decoupled_actor"):
        make_plan(TrainConfig(runtime=RuntimeConfig(mode="sync", max_staleness=2)))
    with pytest.raises(ConfigError, match="runtime.trainer_mode='streaming' is invalid without"):
        make_plan(TrainConfig(runtime=RuntimeConfig(mode="async", async_env=True, trainer_mode="streaming")))
    with pytest.raises(ConfigError, match="runtime.segment_len=4 is invalid with algo.name='grpo'"):
        make_plan(TrainConfig(algo=AlgoConfig(name="grpo", group_size=2), runtime=RuntimeConfig(segment_len=4)))
    with pytest.raises(ConfigError, match="runtime.max_batch=4 is invalid without runtime.streaming_rollout"):
        make_plan(TrainConfig(runtime=RuntimeConfig(mode="async", async_env=True, max_batch=4)))
    plan = make_plan(TrainConfig(runtime=RuntimeConfig(mode="async", async_env=True, streaming_rollout=True,
                                                       decoupled_actor=True)))
    assert plan.max_staleness == 1 and plan.trainer_mode == "accumulate"  # the async defaults
    assert plan.max_batch == 32 and plan.max_wait_s == 0.005
    plan = make_plan(TrainConfig(runtime=RuntimeConfig(mode="sync", trainer_mode="epoch", max_staleness=0)))
    assert plan.max_staleness == 0 and plan.trainer_mode == "epoch"
