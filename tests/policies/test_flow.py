"""The `flow` VLA (π0-style): the exact logprob of its stochastic denoising chain, the ODE in
deterministic mode, the flow-matching SFT loss, gradients, checkpoints, cameras, LoRA."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from asyncvla.config import ConfigError, policy_config
from asyncvla.policies.base import ObsBatch
from asyncvla.policies.checkpoint import load_policy, save_policy
from asyncvla.policies.flow.model import gaussian_chain_logprob
from asyncvla.policies.registry import make_policy

A, P, K, S, N = 2, 5, 3, 32, 4


def _policy(seed: int = 0, **kw):
    base = dict(chunk=K, image_size=S, hidden_dim=32, num_heads=2, num_kv_heads=1, vision_dim=32, vision_layers=1, num_layers=1,
                patch_size=16, max_text_tokens=12, num_steps=N, expert_dim=32, expert_heads=2, expert_layers=1, noise_std=0.2)
    torch.manual_seed(seed)
    return make_policy(policy_config("flow", **{**base, **kw}), action_dim=A, proprio_dim=P)


def _obs(b: int = 3, seed: int = 0, wrist: bool = False) -> ObsBatch:
    rng = np.random.default_rng(seed)
    img = lambda: rng.integers(0, 256, (b, S, S, 3), dtype=np.uint8)  # noqa: E731
    return ObsBatch(img(), rng.normal(size=(b, P)).astype(np.float32), ["reach the goal"] * b, np.arange(b) + 10 * seed,
                    extra_images={"wrist": img()} if wrist else {})


def test_chain_logprob_equals_a_hand_computed_gaussian_density():
    chain = torch.tensor([[[0.3, -1.0], [0.5, -0.7], [0.1, 0.2]]])  # [B=1, N+1=3, D=2]
    means = torch.tensor([[[0.4, -0.9], [0.0, 0.0]]])  # [1, N=2, D]
    log_std = torch.tensor([math.log(0.5), math.log(2.0)])

    def normal(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)

    expect = sum(normal(v, 0.0, 1.0) for v in (0.3, -1.0))
    expect += normal(0.5, 0.4, 0.5) + normal(-0.7, -0.9, 0.5) + normal(0.1, 0.0, 2.0) + normal(0.2, 0.0, 2.0)
    assert gaussian_chain_logprob(chain, means, log_std).item() == pytest.approx(expect, rel=1e-6)


def test_act_samples_a_chain_that_evaluate_scores_exactly():
    p = _policy()
    obs = _obs(4)
    out = p.act(obs)
    assert out.actions.shape == (4, K, A) and out.aux.shape == (4, N + 1, K, A)
    lp, ent, v = p.evaluate(obs, torch.as_tensor(out.actions), torch.as_tensor(out.aux))
    np.testing.assert_allclose(lp.detach().numpy(), out.logprob, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(v.detach().numpy(), out.value, rtol=1e-5, atol=1e-5)
    # the executed chunk is the chain's last state in action units
    proc = p.processor
    np.testing.assert_allclose(out.actions, (proc.action_mean + proc.action_std * torch.as_tensor(out.aux[:, -1])).numpy(), atol=1e-6)
    # each transition's mean is x_k - v(x_k, t_k) / N: the chain's density at the mean path is higher
    sigma = math.exp(math.log(0.2))
    assert ent[0].item() == pytest.approx(N * K * A * (0.5 * (1 + math.log(2 * math.pi)) + math.log(sigma)), rel=1e-5)
    with pytest.raises(ValueError, match="denoising chain"):
        p.evaluate(obs, torch.as_tensor(out.actions))


def test_deterministic_mode_returns_the_euler_ode_solution():
    p = _policy()
    obs = _obs(2)
    out = p.act(obs, deterministic=True)
    x = torch.as_tensor(out.aux[:, 0])  # x_0: the sampled starting noise
    memory, pad, _ = p.prefix(obs)
    with torch.no_grad():
        for k in range(N):
            t = torch.full((2,), 1.0 - k / N)
            x = x - p.velocity(obs, memory, pad, x, t) / N
    torch.testing.assert_close(torch.as_tensor(out.aux[:, -1]), x)
    sampled = p.act(obs)
    np.testing.assert_array_equal(sampled.aux[:, 0], out.aux[:, 0])  # same key, same starting noise
    assert not np.allclose(sampled.actions, out.actions)  # the RL chain adds noise at every step


def test_a_sample_does_not_depend_on_its_batch_and_seeds_fix_the_policy():
    p = _policy()
    obs = _obs(4)
    np.testing.assert_allclose(p.act(obs).actions[1:2], p.act(obs.slice(1, 2)).actions, atol=1e-6)
    np.testing.assert_array_equal(p.act(obs).actions, _policy().act(obs).actions)
    assert not np.allclose(p.act(obs).actions, _policy(seed=1).act(obs).actions)


def test_gradients_reach_every_trainable_part():
    p = _policy()
    obs = _obs(3)
    out = p.act(obs)
    lp, ent, v = p.evaluate(obs, torch.as_tensor(out.actions), torch.as_tensor(out.aux))
    (lp.sum() + ent.sum() + v.sum() + p.sft_loss(obs, torch.as_tensor(out.actions))).backward()
    missing = [n for n, q in p.named_parameters() if q.requires_grad and (q.grad is None or not q.grad.abs().sum() > 0)]
    assert missing == []


def test_flow_matching_sft_fits_a_chunk():
    p = _policy()
    obs = _obs(4)
    target = torch.as_tensor(np.random.default_rng(0).uniform(-0.8, 0.8, (4, K, A)).astype(np.float32))
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(150):
        loss = p.sft_loss(obs, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    err = np.abs(p.act(obs, deterministic=True).actions - target.numpy()).mean()
    assert err < 0.25, err  # the ODE lands near the demonstrated chunk (random actions have error ~0.5)


def test_checkpoint_round_trip_two_cameras_and_lora(tmp_path):
    p = _policy(cameras=("main", "wrist"), lora_rank=2)
    assert all("lora_" in n for n, q in p.named_parameters() if q.requires_grad and n.startswith("language_model."))
    obs = _obs(2, wrist=True)
    save_policy(p, tmp_path / "ck")
    q = load_policy(tmp_path / "ck")
    np.testing.assert_array_equal(q.act(obs).actions, p.act(obs).actions)
    other = dataclasses.replace(obs, extra_images={"wrist": _obs(2, seed=3).images})
    assert not np.allclose(p.act(obs, deterministic=True).actions, p.act(other, deterministic=True).actions)


def test_bad_fields_are_one_line_config_errors():
    for field, value in (("num_steps", 0), ("noise_std", 0.0), ("expert_dim", 30)):
        with pytest.raises(ConfigError, match=f"policy.{field}") as e:
            policy_config("flow", expert_heads=4, **{field: value})
        assert "\n" not in str(e.value)
