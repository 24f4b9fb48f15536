"""Demo recording with the real MetaWorld expert, and the dataset writer/reader round trip."""

import json

import numpy as np
import pytest

from asyncvla.config import ConfigError, env_config
from asyncvla.data import load_dataset
from asyncvla.data.demos import record_demos
from asyncvla.data.lerobot import DatasetWriter, Episode
from asyncvla.envs import metaworld as mw

needs_metaworld = pytest.mark.skipif(not mw.BACKEND.available()[0], reason=f"metaworld unavailable: {mw.BACKEND.available()[1]}")


def _episode(n: int, rng: np.random.Generator, instruction: str, success: bool) -> Episode:
    return Episode(
        images=[rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)],
        proprio=[rng.standard_normal(5).astype(np.float32) for _ in range(n)],
        actions=[rng.standard_normal(2).astype(np.float32) for _ in range(n)],
        rewards=[float(i) for i in range(n)],
        successes=[success and i == n - 1 for i in range(n)],
        instruction=instruction,
        success=success,
    )


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    eps = [_episode(3, rng, "a", True), _episode(4, rng, "b", False), _episode(2, rng, "a", True)]
    w = DatasetWriter(tmp_path, fps=10)
    for e in eps:
        w.add_episode(e)
    w.finish()
    ds = load_dataset(tmp_path)
    assert len(ds) == 9 and ds.num_episodes == 3
    np.testing.assert_array_equal(ds.images, np.stack([i for e in eps for i in e.images]))  # PNG is lossless
    np.testing.assert_array_equal(ds.proprio, np.stack([p for e in eps for p in e.proprio]))
    np.testing.assert_array_equal(ds.actions, np.stack([a for e in eps for a in e.actions]))
    np.testing.assert_array_equal(ds.episode_index, [0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.frame_index, [0, 1, 2, 0, 1, 2, 3, 0, 1])
    assert ds.tasks == ["a", "b"] and ds.instructions[3] == "b" and ds.instructions[8] == "a"
    np.testing.assert_array_equal(ds.episode_success, [True, False, True])
    np.testing.assert_array_equal(ds.episode_length, [3, 4, 2])
    assert ds.successes.sum() == 2 and ds.fps == 10


def test_writer_rejects_empty_datasets(tmp_path):
    with pytest.raises(ValueError, match="no episodes"):
        DatasetWriter(tmp_path, fps=10).finish()


def test_demos_need_a_backend_with_an_expert(tmp_path):
    with pytest.raises(ConfigError, match="no scripted expert"):
        record_demos(env_config(id="emulated/fast", num_envs=1), episodes=1, out=tmp_path, progress=False)


@needs_metaworld
def test_record_metaworld_demos(tmp_path):
    cfg = env_config(id="metaworld/reach-v3", num_envs=1, image_size=24, max_episode_steps=120, seed=1)
    summary = record_demos(cfg, episodes=2, out=tmp_path, progress=False)
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0
    ds = load_dataset(tmp_path)
    assert len(ds) == summary["frames"] and ds.images.shape == (len(ds), 24, 24, 3) and ds.images.dtype == np.uint8
    assert ds.proprio.shape == (len(ds), 39) and ds.actions.shape == (len(ds), 4)
    np.testing.assert_array_equal(ds.episode_success, summary["successes"])
    assert ds.episode_length.sum() == len(ds) and ds.tasks == ["reach the goal"]
    # each action is the expert's answer to the observation stored in the same row
    expert = mw.expert_policy("reach-v3")
    for i in (0, len(ds) // 2, len(ds) - 1):
        np.testing.assert_allclose(ds.actions[i], expert(ds.proprio[i]), atol=1e-6)
    # the episode ends on the step that succeeded
    last = np.cumsum(ds.episode_length) - 1
    assert ds.successes[last].all() and ds.successes.sum() == 2
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == mw.FPS
    assert info["total_episodes"] == 2 and info["total_frames"] == len(ds)
    assert info["features"]["observation.image"]["shape"] == [24, 24, 3]
    assert info["features"]["observation.state"]["shape"] == [39] and info["features"]["action"]["shape"] == [4]


@needs_metaworld
def test_failed_episodes_are_recorded_as_failures(tmp_path):
    cfg = env_config(id="metaworld/reach-v3", num_envs=1, image_size=16, max_episode_steps=4)
    summary = record_demos(cfg, episodes=2, out=tmp_path, progress=False)
    ds = load_dataset(tmp_path)
    assert summary["success_rate"] == 0.0 and not ds.episode_success.any()
    np.testing.assert_array_equal(ds.episode_length, [4, 4])


@needs_metaworld
def test_dart_demos_execute_noisy_actions_but_record_the_experts(tmp_path):
    cfg = env_config(id="metaworld/reach-v3", num_envs=1, image_size=16, max_episode_steps=200, seed=1)
    record_demos(cfg, episodes=1, out=tmp_path / "clean", progress=False, action_noise=0.0)
    summary = record_demos(cfg, episodes=1, out=tmp_path / "dart", progress=False, action_noise=0.3)
    clean, dart = load_dataset(tmp_path / "clean"), load_dataset(tmp_path / "dart")
    assert summary["success_rate"] == 1.0
    np.testing.assert_array_equal(clean.proprio[0], dart.proprio[0])  # same initial state and goal ...
    assert not np.allclose(clean.proprio[1:5], dart.proprio[1:5], atol=1e-4)  # ... then a different (noisy) path
    expert = mw.expert_policy("reach-v3")
    np.testing.assert_allclose(dart.actions, np.stack([expert(p) for p in dart.proprio]), atol=1e-6)  # clean labels


def test_demos_reject_negative_action_noise(tmp_path):
    with pytest.raises(ConfigError, match="action_noise"):
        record_demos(env_config(id="metaworld/reach-v3", num_envs=1), episodes=1, out=tmp_path, progress=False, action_noise=-0.1)


@needs_metaworld
def test_slow_expert_demos_scale_the_arm_actions_and_take_longer(tmp_path):
    cfg = env_config(id="metaworld/reach-v3", num_envs=1, image_size=16, seed=0)
    fast = record_demos(cfg, episodes=1, out=tmp_path / "fast", progress=False, action_noise=0.0)
    slow = record_demos(cfg, episodes=1, out=tmp_path / "slow", progress=False, action_noise=0.0, expert_speed=0.5)
    actions = np.asarray(load_dataset(tmp_path / "slow").actions)
    assert np.abs(actions[:, :-1]).max() <= 0.5 + 1e-6
    assert slow["successes"] == [True] and slow["frames"] > fast["frames"]
    with pytest.raises(ConfigError, match="expert_speed"):
        record_demos(cfg, episodes=1, out=tmp_path / "bad", progress=False, expert_speed=0.0)
