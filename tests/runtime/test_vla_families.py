"""The transformers-based VLA families (`oft`, `flow`) through the one runtime: PPO and GRPO, sync and
async, the threads and Ray backends, checkpoints and resume (emulated env, tiny sizes)."""

from __future__ import annotations

import pytest

from asyncvla.config import AlgoConfig, RunConfig, RuntimeConfig, TrainConfig, env_config, policy_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.metrics.writer import read_metrics
from asyncvla.policies.checkpoint import load_policy
from asyncvla.runtime.checkpoints import load_run_config
from asyncvla.runtime.driver import train

SIZES = dict(chunk=2, hidden_dim=32, num_heads=2, num_kv_heads=1, vision_dim=32, vision_layers=1, num_layers=1,
             patch_size=8, max_text_tokens=8)
EXTRA = {"oft": dict(action_bins=32), "flow": dict(num_steps=3, expert_dim=32, expert_heads=2, expert_layers=1)}


def family_cfg(tmp_path, family: str, algo: str, mode: str, local: bool, updates: int = 2) -> TrainConfig:
    return TrainConfig(
        env=env_config(id="emulated/fast", num_envs=4, image_size=16, emulated=EmulatedConfig(episode_len=12)),
        policy=policy_config(family, **SIZES, **EXTRA[family]),
        algo=AlgoConfig(name=algo, group_size=2, minibatch_size=16, update_epochs=1),
        runtime=RuntimeConfig(mode=mode, rollout_steps=6, pipeline_stages=2, local=local),
        run=RunConfig(out_dir=str(tmp_path / "run"), total_env_steps=None, total_updates=updates, eval_episodes=2,
                      checkpoint_every=1, eval_video=False),
    )


def _trained(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss/policy" in r]


@pytest.mark.parametrize("family", ["oft", "flow"])
def test_ppo_sync_threads_with_checkpoint_and_resume(tmp_path, family):
    summary = train(family_cfg(tmp_path, family, "ppo", "sync", local=True))
    run_dir = tmp_path / "run"
    assert summary["updates"] == 2
    rows = _trained(run_dir)
    assert all("loss/value" in r and r["train/optimizer_steps"] > 0 for r in rows)
    assert load_policy(run_dir / "checkpoints" / "last").cfg.type == family
    cfg = load_run_config(run_dir)
    cfg.run.total_updates = 3
    assert train(cfg)["updates"] == 3
    assert [r["step"] for r in _trained(run_dir)] == [1, 2, 3]


@pytest.mark.parametrize("family", ["oft", "flow"])
def test_grpo_async_threads(tmp_path, family):
    summary = train(family_cfg(tmp_path, family, "grpo", "async", local=True))
    assert summary["updates"] == 2
    assert all("loss/value" not in r for r in _trained(tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["oft", "flow"])
def test_ppo_async_through_ray(tmp_path, family):
    summary = train(family_cfg(tmp_path, family, "ppo", "async", local=False))
    assert summary["updates"] == 2 and summary["env_steps"] > 0


@pytest.mark.slow
def test_oft_trains_on_libero_with_two_cameras(tmp_path):
    """`asyncvla train --policy.type oft --env.id libero/libero_spatial/0 --env.cameras main wrist`, a few updates."""
    from asyncvla.cli import parse
    from asyncvla.envs import libero

    ok, why = libero.BACKEND.available()
    if not ok:
        pytest.skip(f"LIBERO unavailable: {why}")
    cmd = parse(["train", "--preset", "libero-spatial", "--policy.type", "oft", "--env.id", "libero/libero_spatial/0", "--env.cameras", "main", "wrist",
                 "--env.num-envs", "2", "--env.image-size", "32", "--env.max-episode-steps", "12", "--policy.chunk", "2",
                 "--policy.patch-size", "16", "--policy.hidden-dim", "32", "--policy.num-heads", "2", "--policy.num-kv-heads", "1",
                 "--policy.vision-dim", "32", "--policy.vision-layers", "1", "--policy.num-layers", "1",
                 "--runtime.rollout-steps", "3", "--runtime.pipeline-stages", "1", "--algo.minibatch-size", "6",
                 "--run.total-updates", "2", "--run.total-env-steps", "None", "--run.eval-episodes", "1", "--run.no-eval-video",
                 "--run.out-dir", str(tmp_path / "run"), "--runtime.local", "--json"])
    cmd.run()
    run_dir = tmp_path / "run"
    assert [r["step"] for r in _trained(run_dir)] == [1, 2]
    policy = load_policy(run_dir / "checkpoints" / "last")
    assert policy.cfg.type == "oft" and policy.cfg.cameras == ("main", "wrist")
    assert load_run_config(run_dir).env.cameras == ("main", "wrist")
