import numpy as np
import pytest

from asyncvla.config import ConfigError, EmulatedConfig, EnvConfig, RuntimeConfig
from asyncvla.policies.base import ActOut
from asyncvla.runtime.env.worker import EnvWorker

CFG = EnvConfig(id="emulated/fast", num_envs=4, image_size=16, emulated=EmulatedConfig(episode_len=3))


def act(n, version=0, value=0.5):
    return ActOut(np.full((n, 2, 4), 0.1, np.float32), np.full(n, -1.0, np.float32), np.full(n, value, np.float32), version)


def test_stages_step_in_lockstep_and_collect_time_major():
    w = EnvWorker(CFG, worker_index=1, num_stages=2)
    obs = w.start_epoch()
    assert [len(o) for o in obs] == [2, 2] and w.stage_ids(1) == [2, 3]
    for t in range(3):
        for s in range(2):
            w.step(s, act(2, version=t))
    r = w.collect()
    assert r.shape == (3, 4) and r.actions.shape == (3, 4, 2, 4)
    assert r.env_ids.tolist() == [4, 5, 6, 7]  # global ids of worker 1
    assert r.version[:, 0].tolist() == [0, 1, 2] and r.mask.all()
    # chunks of 2 in episodes of 3 steps: the 2nd decision truncates after 1 step
    assert r.truncated[1].all() and not r.truncated[0].any()
    assert r.env_steps == 4 * (2 + 1 + 2) and len(r.episodes) == 4
    assert r.final_index.shape == (4, 2) and len(r.final_obs) == 4
    assert len(r.obs) == 12 and len(r.next_obs) == 4
    # The next epoch continues the running episodes and starts empty buffers.
    w.start_epoch()
    w.step(0, act(2))
    assert w.pop_segments([0])[0].steps[0].obs is not None
    assert [s.kind for s in w.drain_spans()].count("env_step") == 7


def test_reset_each_epoch_gives_groups_equal_initial_states():
    w = EnvWorker(CFG, num_stages=1, reset_each_epoch=True, group_size=2)
    for _ in range(2):
        p = w.start_epoch()[0].proprio
        assert np.array_equal(p[0], p[1]) and np.array_equal(p[2], p[3]) and not np.array_equal(p[0], p[2])
    w.close()


def test_runtime_config_validation():
    with pytest.raises(ConfigError, match="runtime.pipeline_stages"):
        RuntimeConfig(pipeline_stages=3)
    with pytest.raises(ConfigError, match="runtime.async_env.*mode=async"):
        RuntimeConfig(async_env=True)
    RuntimeConfig(mode="async", async_env=True)
