"""Several cameras: env config, rendering, ObsBatch, datasets, SFT and the tiny VLA."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from asyncvla.config import ConfigError, TrainConfig, env_config, policy_config
from asyncvla.data.lerobot import DatasetWriter, Episode, load_dataset
from asyncvla.envs.base import Obs
from asyncvla.policies.base import ObsBatch
from asyncvla.policies.checkpoint import load_policy, save_policy
from asyncvla.policies.registry import build_policy, make_policy

TWO = ("main", "wrist")


def _obs(b: int, seed: int = 0, cams: tuple[str, ...] = ("wrist",)) -> ObsBatch:
    rng = np.random.default_rng(seed)
    img = lambda: rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    return ObsBatch(img(), rng.normal(size=(b, 5)).astype(np.float32), ["reach"] * b, extra_images={c: img() for c in cams})


@pytest.mark.parametrize("cams, msg", [(("main", "nope"), "nope not rendered by this backend; allowed: main, wrist"),
                                       (("main", "main"), "distinct"), ((), "one or more")])
def test_bad_env_cameras_are_one_line_config_errors(cams, msg):
    with pytest.raises(ConfigError, match="env.cameras") as e:
        env_config(id="metaworld/reach-v3", cameras=cams)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_emulated_has_only_the_main_camera():
    with pytest.raises(ConfigError, match="allowed: main$"):
        env_config(id="emulated/fast", cameras=TWO)


def test_train_config_gives_the_policy_the_env_cameras():
    cfg = TrainConfig(env=env_config(id="metaworld/reach-v3", cameras=TWO))
    assert cfg.policy.cameras == TWO


def test_metaworld_renders_the_asked_cameras_only():
    from asyncvla.envs.metaworld import MetaWorldEnv

    one = MetaWorldEnv("reach-v3", env_config(id="metaworld/reach-v3", image_size=32))
    two = MetaWorldEnv("reach-v3", env_config(id="metaworld/reach-v3", image_size=32, cameras=("wrist", "main", "topview")))
    try:
        a, b = one.reset(3), two.reset(3)
        assert a.extra_images == {} and list(b.extra_images) == ["wrist", "topview"]
        np.testing.assert_array_equal(a.image, b.image)  # the main camera is the same picture
        for img in b.extra_images.values():
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8
            assert np.abs(img.astype(int) - b.image).mean() > 5  # another view
        assert np.abs(b.extra_images["wrist"].astype(int) - b.extra_images["topview"]).mean() > 5
    finally:
        one.close()
        two.close()


def test_obsbatch_carries_extra_cameras_through_stack_index_and_concat():
    rng = np.random.default_rng(0)
    obs = [Obs(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.zeros(2, np.float32), "x",
               {"wrist": np.full((8, 8, 3), i, np.uint8)}) for i in range(4)]
    b = ObsBatch.stack(obs)
    assert b.camera("wrist").shape == (4, 8, 8, 3) and b.camera("main") is b.images
    assert b.index(np.array([3, 1])).camera("wrist")[:, 0, 0, 0].tolist() == [3, 1]
    assert b.slice(1, 3).camera("wrist")[:, 0, 0, 0].tolist() == [1, 2]
    assert ObsBatch.concat([b, b.slice(0, 1)]).camera("wrist")[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 0]
    with pytest.raises(KeyError, match="camera 'agentview' is not in the observation \\(cameras: main, wrist\\)"):
        b.camera("agentview")


def test_tiny_vla_reads_every_camera_of_its_config():
    torch.manual_seed(0)
    cfg = policy_config("tiny", chunk=2, hidden_dim=32, num_layers=1, num_heads=2, image_size=32, cameras=TWO)
    policy = make_policy(cfg, action_dim=3, proprio_dim=5)
    obs = _obs(4)
    out = policy.act(obs, deterministic=True)
    assert out.actions.shape == (4, 2, 3)
    moved = dataclasses.replace(obs, extra_images={"wrist": _obs(4, seed=1).images})
    acts = torch.as_tensor(out.actions)
    lp, lp_moved = policy.evaluate(obs, acts)[0], policy.evaluate(moved, acts)[0]
    assert not torch.allclose(lp, lp_moved)  # the wrist camera changes the action distribution
    with pytest.raises(KeyError, match="wrist"):
        policy.act(dataclasses.replace(obs, extra_images={}))
    # A one-camera policy ignores extra cameras entirely.
    torch.manual_seed(0)
    single = make_policy(dataclasses.replace(cfg, cameras=("main",)), action_dim=3, proprio_dim=5)
    torch.testing.assert_close(single.evaluate(obs, acts)[0], single.evaluate(moved, acts)[0])


def test_camera_checkpoint_round_trip_and_mismatch_is_refused(tmp_path):
    torch.manual_seed(0)
    cfg = policy_config("tiny", chunk=2, hidden_dim=32, num_layers=1, num_heads=2, image_size=32, cameras=("wrist", "main"))
    policy = make_policy(cfg, action_dim=3, proprio_dim=5)
    save_policy(policy, tmp_path / "ck")
    back = load_policy(tmp_path / "ck")
    assert back.cfg.cameras == ("wrist", "main")
    obs = _obs(3)
    np.testing.assert_array_equal(back.act(obs, deterministic=True).actions, policy.act(obs, deterministic=True).actions)
    run_cfg = dataclasses.replace(cfg, init=str(tmp_path / "ck"), cameras=("main",))
    with pytest.raises(ConfigError, match=r"env.cameras=\['main'\] is invalid: .* reads cameras \['wrist', 'main'\]"):
        build_policy(run_cfg, 3, 5, seed=0)


def _episode(n: int, cams: tuple[str, ...], value: int) -> Episode:
    img = lambda v: [np.full((8, 8, 3), v + t, np.uint8) for t in range(n)]  # noqa: E731
    return Episode(img(value), [np.zeros(2, np.float32)] * n, [np.zeros(3, np.float32)] * n, [0.0] * n, [False] * n,
                   "reach", False, {c: img(100 + value) for c in cams})


def test_dataset_round_trip_with_two_cameras(tmp_path):
    w = DatasetWriter(tmp_path, fps=10)
    w.add_episode(_episode(3, ("wrist",), 0))
    w.add_episode(_episode(2, ("wrist",), 50))
    info = w.finish()
    assert info["features"]["observation.images.wrist"]["dtype"] == "image"
    ds = load_dataset(tmp_path)
    assert ds.images[:, 0, 0, 0].tolist() == [0, 1, 2, 50, 51]
    assert list(ds.extra_images) == ["wrist"] and ds.extra_images["wrist"][:, 0, 0, 0].tolist() == [100, 101, 102, 150, 151]
    with pytest.raises(ValueError, match="cameras"):
        w.add_episode(_episode(2, (), 0))


def test_sft_refuses_a_camera_the_demos_lack(tmp_path):
    from asyncvla.algos.sft import train_sft

    w = DatasetWriter(tmp_path / "demos", fps=10)
    w.add_episode(_episode(3, (), 0))
    w.finish()
    cfg = policy_config("tiny", chunk=2, hidden_dim=32, num_layers=1, num_heads=2, image_size=8, cameras=TWO)
    with pytest.raises(ConfigError, match=r"policy.cameras=\['main', 'wrist'\] is invalid: the demos in .* have cameras main \("):
        train_sft("metaworld/reach-v3", tmp_path / "demos", tmp_path / "out", steps=1, policy_cfg=cfg, progress=False)
