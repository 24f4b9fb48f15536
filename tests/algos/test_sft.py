"""Behaviour cloning: chunk targets against a reference loop; BC on emulated demos learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asyncvla.algos.sft import DemoData, chunk_targets, drop_images, fit_bc, perturb_proprio, shift_augment
from asyncvla.config import env_config, policy_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.envs.registry import make_env
from asyncvla.policies.base import ObsBatch
from asyncvla.policies.registry import make_policy

A = 2


def _reference_chunks(actions, episode_index, k):
    out = np.zeros((len(actions), k, actions.shape[1]), actions.dtype)
    for t in range(len(actions)):
        for j in range(k):
            u = t + j
            # stay inside t's episode: stop at its last frame
            while u >= len(actions) or episode_index[u] != episode_index[t]:
                u -= 1
            out[t, j] = actions[u]
    return out


def test_chunk_targets_match_reference_loop():
    rng = np.random.default_rng(0)
    episode_index = np.repeat([0, 1, 2, 5], [3, 1, 6, 2])  # includes a 1-frame episode
    actions = rng.normal(size=(len(episode_index), 3)).astype(np.float32)
    for k in (1, 2, 4, 8):
        np.testing.assert_array_equal(chunk_targets(actions, episode_index, k), _reference_chunks(actions, episode_index, k))


def test_shift_augment_keeps_shape_and_zero_pad_is_identity():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert shift_augment(imgs, 2, rng).shape == imgs.shape
    np.testing.assert_array_equal(shift_augment(imgs, 0, rng), imgs)


def test_drop_images_blacks_out_whole_images_with_probability_p():
    rng = np.random.default_rng(0)
    imgs = rng.integers(1, 256, (2000, 4, 4, 3), dtype=np.uint8)  # no black pixel to begin with
    np.testing.assert_array_equal(drop_images(imgs, 0.0, rng), imgs)
    out = drop_images(imgs, 0.3, rng)
    dropped = (out == 0).all((1, 2, 3))
    assert abs(dropped.mean() - 0.3) < 0.04
    np.testing.assert_array_equal(out[~dropped], imgs[~dropped])
    assert not (out[~dropped] == 0).any()


def test_perturb_proprio_adds_noise_in_units_of_the_demo_std():
    rng = np.random.default_rng(0)
    proprio = np.ones((20000, 3), np.float32)
    scale = np.array([2.0, 0.01, 0.0], np.float32)  # the last dim is constant in the demos: left alone
    np.testing.assert_array_equal(perturb_proprio(proprio, scale, 0.0, rng), proprio)
    out = perturb_proprio(proprio, scale, 0.5, rng)
    assert out.dtype == np.float32
    np.testing.assert_allclose((out - proprio).std(0), 0.5 * scale, rtol=0.03)
    np.testing.assert_allclose((out - proprio).mean(0), 0, atol=0.03)


def emulated_demos(episodes: int, episode_len: int = 15, image_size: int = 16) -> DemoData:
    """Scripted-expert demos of emulated/fast (step straight at the goal)."""
    cfg = env_config(id="emulated/fast", num_envs=1, image_size=image_size,
                    emulated=EmulatedConfig(episode_len=episode_len, proprio_dim=2 * A, action_dim=A))
    env = make_env(cfg)
    cols: dict[str, list] = {k: [] for k in ("images", "proprio", "actions", "episode_index", "instructions")}
    for ep in range(episodes):
        obs = env.reset(seed=ep)
        for _ in range(episode_len):
            action = np.clip((obs.proprio[A:] - obs.proprio[:A]) / 0.1, -1, 1).astype(np.float32)
            for k, v in zip(cols, (obs.image, obs.proprio, action, ep, obs.instruction)):
                cols[k].append(v)
            out = env.step(action)
            obs = out.obs
            if out.success:
                break
    return DemoData(np.stack(cols["images"]), np.stack(cols["proprio"]), np.stack(cols["actions"]),
                    np.array(cols["episode_index"]), cols["instructions"])


@pytest.mark.parametrize("type_", ["tiny", "tiny-gaussian"])
def test_bc_on_emulated_demos_reduces_the_loss(type_):
    data = emulated_demos(episodes=12)
    torch.manual_seed(0)
    policy = make_policy(policy_config(type=type_, chunk=2, hidden_dim=32, num_layers=1, num_heads=2, image_size=16), A, 2 * A)
    policy.processor.fit(data.proprio, data.actions)
    losses = fit_bc(policy, data, steps=60, batch_size=32, lr=3e-3, seed=0)
    assert len(losses) == 60 and np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    # and the policy moves toward the goal: deterministic actions agree in sign with the expert's
    obs = ObsBatch(data.images[:64], data.proprio[:64], data.instructions[:64])
    pred = policy.act(obs, deterministic=True).actions[:, 0]
    moving = np.abs(data.actions[:64]) > 0.5
    assert (np.sign(pred) == np.sign(data.actions[:64]))[moving].mean() > 0.8


def _write_dataset(root, data: DemoData, failed_episode: int | None = None) -> None:
    from asyncvla.data.lerobot import DatasetWriter, Episode

    writer = DatasetWriter(root, fps=10)
    for ep in np.unique(data.episode_index):
        m = data.episode_index == ep
        n = int(m.sum())
        ok = ep != failed_episode
        writer.add_episode(Episode(list(data.images[m]), list(data.proprio[m]), list(data.actions[m]), [0.0] * n,
                                   [False] * (n - 1) + [ok], data.instructions[0], ok))
    writer.finish()


def test_train_sft_writes_checkpoint_and_loss_curve(tmp_path):
    import json

    from asyncvla.algos.sft import load_demos, train_sft
    from asyncvla.policies.checkpoint import load_policy

    data = emulated_demos(episodes=8)
    _write_dataset(tmp_path / "demos", data, failed_episode=3)
    loaded = load_demos(tmp_path / "demos")
    assert len(loaded) == len(data) - int((data.episode_index == 3).sum())  # the failed episode is dropped
    cfg = policy_config(chunk=2, hidden_dim=32, num_layers=1, num_heads=2, image_size=16)
    summary = train_sft("emulated/fast", tmp_path / "demos", tmp_path / "ckpt", steps=40, batch_size=16, lr=3e-3,
                        policy_cfg=cfg, seed=0, progress=False)
    assert summary["final_loss"] < summary["first_loss"] and summary["episodes"] == 7
    lines = [json.loads(s) for s in (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 41)) and all("loss/bc" in r for r in lines)
    policy = load_policy(tmp_path / "ckpt")
    np.testing.assert_allclose(policy.processor.proprio_mean.numpy(), loaded.proprio.mean(0), rtol=1e-5, atol=1e-6)


def test_train_sft_rejects_a_missing_demo_dir(tmp_path):
    from asyncvla.algos.sft import train_sft
    from asyncvla.config import ConfigError

    with pytest.raises(ConfigError, match="demos"):
        train_sft("emulated/fast", tmp_path / "nope", tmp_path / "out", steps=1)


@pytest.mark.parametrize("field, value", [("image_dropout", 1.0), ("image_dropout", -0.1), ("proprio_noise", -1.0)])
def test_train_sft_rejects_bad_augmentation(tmp_path, field, value):
    from asyncvla.algos.sft import train_sft
    from asyncvla.config import ConfigError

    with pytest.raises(ConfigError, match=f"sft.{field}"):
        train_sft("emulated/fast", tmp_path / "nope", tmp_path / "out", steps=1, **{field: value})
