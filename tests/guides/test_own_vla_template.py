"""Template of docs/guides/own-vla.md: a new policy family (a linear Gaussian over the chunk, reading
proprio and the mean colour of each camera), registered under its own `policy.type`, then checked
the way every family should be: shapes, act/evaluate agreement, per-row sampling noise, a
checkpoint round trip, behaviour cloning, and two RL updates through the one runtime.

Copy this file for your VLA: the top half is what your package's policy module holds, with the two
decorators of `PLUGIN` on its classes; the package names that module in its pyproject.toml
(`[project.entry-points."asyncvla.policies"]`, `guide-linear = "my_pkg.policy"`). Here the fixture
installs a module that registers this file's classes the same way, for one test.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from asyncvla import config, plugins
from asyncvla.config import (AlgoConfig, ConfigError, PolicyConfig, RunConfig, RuntimeConfig, TrainConfig, env_config,
                             policy_config)
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.policies import registry
from asyncvla.policies.base import ActOut, ObsBatch, Policy
from asyncvla.policies.checkpoint import load_policy, save_policy

NAME = "guide-linear"

# -- the config class (a plugin's module may import torch; built-in config modules stay torch-free) --


@dataclass
class GuideLinearConfig(PolicyConfig):
    """A linear Gaussian policy: the own-vla guide's template."""

    type: str = NAME
    """Registered policy: guide-linear."""
    init_log_std: float = -0.5
    """Log std of every action dimension at initialisation."""

    def __post_init__(self) -> None:
        super().__post_init__()  # PolicyConfig's checks (chunk, temperature, device, cameras)
        if not -5 <= self.init_log_std <= 2:
            raise ConfigError(f"policy.init_log_std={self.init_log_std!r} is invalid: must be in [-5, 2]")


# -- the model ------------------------------------------------------------------------------


class GuideLinearPolicy(Policy):
    """Built as `cls(cfg, action_dim, proprio_dim)` by `make_policy`."""

    def __init__(self, cfg: GuideLinearConfig, action_dim: int, proprio_dim: int):
        super().__init__()
        self.cfg, self.chunk, self.action_dim, self.proprio_dim = cfg, cfg.chunk, action_dim, proprio_dim
        self.temperature = cfg.temperature  # act samples and evaluate scores at it (policy.temperature)
        n_in = proprio_dim + 3 * len(cfg.cameras)  # proprio + the mean RGB of each camera
        self.mean_head = nn.Linear(n_in, cfg.chunk * action_dim)
        self.log_std = nn.Parameter(torch.full((cfg.chunk, action_dim), cfg.init_log_std))
        self.value_head = nn.Linear(n_in, 1)  # parameters named value_* train at algo.value_lr

    def _dist(self, obs: ObsBatch) -> tuple[Normal, torch.Tensor]:
        """(Gaussian over chunks [B, K, A], value [B])."""
        dev = self.log_std.device
        cams = [torch.as_tensor(obs.camera(c), dtype=torch.float32, device=dev).mean((1, 2)) / 255.0
                for c in self.cfg.cameras]  # each [B, 3]
        x = torch.cat([torch.as_tensor(obs.proprio, device=dev), *cams], dim=1)  # [B, n_in]
        mean = self.mean_head(x).view(-1, self.chunk, self.action_dim)  # [B, K, A]
        std = (self.log_std.exp() * self.temperature).expand_as(mean)
        return Normal(mean, std), self.value_head(x).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: ObsBatch, deterministic: bool = False) -> ActOut:
        dist, value = self._dist(obs)
        # Noise from obs.sample_keys: a row's action never depends on its batch or server.
        actions = dist.mean if deterministic else dist.mean + self._noise(obs, dist.mean.shape, "normal") * dist.stddev
        logprob = dist.log_prob(actions).sum((1, 2))  # [B]: the whole chunk
        return ActOut(actions.cpu().numpy(), logprob.cpu().numpy(), value.cpu().numpy(), self.version)

    def evaluate(self, obs: ObsBatch, actions: torch.Tensor, aux: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist, value = self._dist(obs)
        a = self._as_actions(actions)  # [B, K, A] on the policy's device
        return dist.log_prob(a).sum((1, 2)), dist.entropy().sum((1, 2)), value


# -- its tests ------------------------------------------------------------------------------


PLUGIN = f"""
from asyncvla.config import register_policy_config
from asyncvla.policies.registry import register
from {__name__} import NAME, GuideLinearConfig, GuideLinearPolicy

# In your module these are decorators: @register_policy_config(NAME) on the config, @register(NAME) on the model.
register_policy_config(NAME)(GuideLinearConfig)
register(NAME)(GuideLinearPolicy)
"""
"""The module the entry point names: importing it registers both classes."""


@pytest.fixture(autouse=True)
def guide_linear_installed(tmp_path, monkeypatch):
    """Installs `PLUGIN` as policy type guide-linear for one test, as `pip install` of a package with
    the entry point would: the module and a dist-info directory with entry_points.txt on sys.path."""
    (tmp_path / "guide_linear_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "guide_linear_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: guide-linear-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[asyncvla.policies]\n{NAME} = guide_linear_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.refresh()  # forget the entry points found so far
    yield
    plugins.refresh()
    # asyncvla has no unregister: drop what the import registered, so nothing leaks into other tests.
    sys.modules.pop("guide_linear_plugin", None)
    config._POLICY_CONFIGS.pop(NAME, None)
    registry._REGISTRY.pop(NAME, None)


def _obs(b: int = 3, keys=None, cameras=("main",)) -> ObsBatch:
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (b, 16, 16, 3), dtype=np.uint8) for c in cameras}
    return ObsBatch(images=images["main"], proprio=rng.standard_normal((b, 8)).astype(np.float32),
                    instructions=["reach"] * b, sample_keys=None if keys is None else np.asarray(keys, np.int64),
                    extra_images={c: v for c, v in images.items() if c != "main"})


def _policy(**fields) -> Policy:
    torch.manual_seed(0)
    return registry.make_policy(policy_config(NAME, chunk=2, **fields), action_dim=4, proprio_dim=8)


def test_type_parses_into_its_own_config_and_checks_it():
    assert type(policy_config(NAME)) is GuideLinearConfig
    assert NAME in registry.policy_types()
    with pytest.raises(ConfigError, match="policy.init_log_std"):
        policy_config(NAME, init_log_std=9.0)


def test_act_shapes_and_evaluate_agrees_with_act():
    policy = _policy()
    out = policy.act(_obs(keys=[1, 2, 3]))
    assert out.actions.shape == (3, 2, 4) and out.logprob.shape == (3,) and out.value.shape == (3,)
    assert out.actions.dtype == np.float32 and out.version == 0
    logprob, entropy, value = policy.evaluate(_obs(), torch.as_tensor(out.actions))
    np.testing.assert_allclose(logprob.detach().numpy(), out.logprob, atol=1e-5)
    np.testing.assert_allclose(value.detach().numpy(), out.value, atol=1e-6)
    assert logprob.requires_grad and entropy.shape == (3,)


def test_sampling_noise_follows_the_rows_keys():
    policy = _policy()
    whole = policy.act(_obs(keys=[7, 8, 9])).actions
    again = policy.act(_obs(keys=[7, 8, 9])).actions
    np.testing.assert_array_equal(whole, again)
    alone = policy.act(_obs(keys=[7, 8, 9]).slice(1, 2)).actions  # row 1 served in a batch of its own
    np.testing.assert_allclose(alone[0], whole[1], atol=1e-6)
    assert not np.allclose(whole[0], whole[1])
    np.testing.assert_array_equal(policy.act(_obs(), deterministic=True).actions, policy.predict_action_chunk(_obs()))


def test_two_cameras_are_read():
    policy = _policy(cameras=("main", "wrist"))
    obs = _obs(cameras=("main", "wrist"))
    before = policy.act(obs, deterministic=True).actions
    obs.extra_images["wrist"] = np.zeros_like(obs.extra_images["wrist"])
    assert not np.allclose(before, policy.act(obs, deterministic=True).actions)


def test_checkpoint_round_trip(tmp_path):
    policy = _policy(init_log_std=-1.0)
    policy.version = 5
    loaded = load_policy(save_policy(policy, tmp_path / "ckpt"))
    assert type(loaded) is GuideLinearPolicy and loaded.cfg == policy.cfg and loaded.version == 5
    np.testing.assert_array_equal(loaded.act(_obs(), deterministic=True).actions,
                                  policy.act(_obs(), deterministic=True).actions)


def test_default_sft_loss_fits_target_chunks():
    policy = _policy()
    obs, targets = _obs(), torch.full((3, 2, 4), 0.5)
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    first = policy.sft_loss(obs, targets).item()
    for _ in range(60):
        opt.zero_grad()
        policy.sft_loss(obs, targets).backward()
        opt.step()
    assert policy.sft_loss(obs, targets).item() < first - 0.5


def test_two_rl_updates_through_the_runtime(tmp_path):
    from asyncvla.metrics.writer import read_metrics
    from asyncvla.runtime.driver import train

    cfg = TrainConfig(
        env=env_config(id="emulated/fast", num_envs=4, image_size=16, emulated=EmulatedConfig(episode_len=12)),
        policy=policy_config(NAME, chunk=2),
        algo=AlgoConfig(name="ppo", minibatch_size=16, update_epochs=1),
        runtime=RuntimeConfig(mode="sync", rollout_steps=6, local=True),  # threads backend: one process
        run=RunConfig(out_dir=str(tmp_path / "run"), total_env_steps=None, total_updates=2, eval_episodes=2,
                      checkpoint_every=1, eval_video=False),
    )
    summary = train(cfg)
    assert summary["updates"] == 2
    trained = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss/policy" in r]
    assert [r["step"] for r in trained] == [1, 2] and all(r["train/optimizer_steps"] > 0 for r in trained)
    last = load_policy(tmp_path / "run" / "checkpoints" / "last")
    assert type(last) is GuideLinearPolicy and last.version == trained[-1]["train/version"] > 0


def test_guide_quotes_the_template_verbatim():
    """docs/guides/own-vla.md quotes this file; its quoted blocks must still be in it, character for character."""
    guide = (Path(__file__).parents[2] / "docs" / "guides" / "own-vla.md").read_text()
    quoted = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if b.startswith(("@dataclass", "class GuideLinearPolicy"))]
    assert len(quoted) == 2 and all(b in Path(__file__).read_text() for b in quoted)
