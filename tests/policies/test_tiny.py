"""The tiny VLAs: shapes, logprob consistency, determinism, temperature, bins, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asyncvla.config import ConfigError, PolicyConfig, policy_config
from asyncvla.policies.base import ObsBatch
from asyncvla.policies.checkpoint import load_policy, save_policy
from asyncvla.policies.registry import make_policy, policy_types
from asyncvla.policies.tiny.model import gaussian_logprob_entropy
from asyncvla.policies.tokens import discrete_logprob_entropy
from asyncvla.policies.processor import actions_to_bins, bin_centers, bins_to_actions, normalisation_std

A, P, K = 3, 7, 2
TYPES = ["tiny", "tiny-gaussian"]


def _cfg(type_: str, **kw) -> PolicyConfig:
    return policy_config(type=type_, chunk=K, hidden_dim=32, num_layers=1, num_heads=2, image_size=32, **kw)


def _obs(b: int = 5, size: int = 32, seed: int = 0) -> ObsBatch:
    rng = np.random.default_rng(seed)
    return ObsBatch(
        images=rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
        proprio=rng.normal(size=(b, P)).astype(np.float32),
        instructions=["reach the goal", "push the puck"] * (b // 2) + ["reach the goal"] * (b % 2),
    )


@pytest.fixture(params=TYPES)
def policy(request):
    torch.manual_seed(0)
    return make_policy(_cfg(request.param), action_dim=A, proprio_dim=P)


def test_registry_lists_both_types():
    assert {"tiny", "tiny-gaussian"} <= set(policy_types())


def test_unknown_type_is_one_line_config_error():
    with pytest.raises(ConfigError, match=r"policy.type='nope' is invalid: allowed: .*tiny") as e:
        make_policy(policy_config(type="nope"), 4, 4)
    assert "\n" not in str(e.value)


def test_act_shapes_and_dtypes(policy):
    out = policy.act(_obs(b=5))
    assert out.actions.shape == (5, K, A) and out.actions.dtype == np.float32
    assert out.logprob.shape == (5,) and out.logprob.dtype == np.float32
    assert out.value.shape == (5,) and out.version == 0
    # a different image size is resized to policy.image_size
    assert policy.act(_obs(b=2, size=48)).actions.shape == (2, K, A)


def test_evaluate_logprob_matches_act(policy):
    obs = _obs(b=6)
    torch.manual_seed(1)
    out = policy.act(obs)
    logprob, entropy, value = policy.evaluate(obs, torch.as_tensor(out.actions))
    assert logprob.requires_grad and logprob.shape == entropy.shape == value.shape == (6,)
    np.testing.assert_allclose(logprob.detach().numpy(), out.logprob, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(value.detach().numpy(), out.value, rtol=1e-5, atol=1e-5)


def test_deterministic_act_is_repeatable_and_sampling_is_not(policy):
    obs = _obs(b=4)
    a, b = policy.act(obs, deterministic=True), policy.act(obs, deterministic=True)
    np.testing.assert_array_equal(a.actions, b.actions)
    s1, s2 = policy.act(obs), policy.act(obs)
    assert not np.array_equal(s1.actions, s2.actions)


def test_higher_temperature_raises_entropy(policy):
    obs, actions = _obs(b=4), torch.zeros(4, K, A)
    _, ent1, _ = policy.evaluate(obs, actions)
    policy.temperature = 3.0
    _, ent3, _ = policy.evaluate(obs, actions)
    assert (ent3 > ent1 + 1e-3).all()


def test_gradients_reach_every_trained_part(policy):
    obs = _obs(b=4)
    logprob, entropy, value = policy.evaluate(obs, torch.as_tensor(policy.act(obs).actions))
    (logprob.mean() + value.mean()).backward()
    assert policy.image_encoder.net[0].weight.grad.abs().sum() > 0
    assert policy.text_proj.weight.grad.abs().sum() > 0
    assert policy.proprio_proj[0].weight.grad.abs().sum() > 0


def test_bins_round_trip_exactly_at_centres():
    for n in (2, 7, 256):
        centres = bin_centers(n)
        idx = actions_to_bins(centres, n)
        assert torch.equal(idx, torch.arange(n))
        assert torch.equal(bins_to_actions(idx, n), centres)
    # range ends and out-of-range values land in the end bins
    assert actions_to_bins(torch.tensor([-5.0, -1.0, 1.0, 5.0]), 256).tolist() == [0, 0, 255, 255]


def test_discrete_logprob_matches_categorical():
    torch.manual_seed(0)
    logits, bins = torch.randn(3, 2, 4, 9), torch.randint(0, 9, (3, 2, 4))
    lp, ent = discrete_logprob_entropy(logits, bins, temperature=0.7)
    dist = torch.distributions.Categorical(logits=logits / 0.7)
    torch.testing.assert_close(lp, dist.log_prob(bins).sum((1, 2)))
    torch.testing.assert_close(ent, dist.entropy().sum((1, 2)))


def test_gaussian_logprob_matches_torch_distributions():
    torch.manual_seed(0)
    mean, log_std, actions = torch.randn(3, 2, 4), torch.randn(2, 4) * 0.5, torch.randn(3, 2, 4)
    lp, ent = gaussian_logprob_entropy(mean, log_std, actions)
    dist = torch.distributions.Normal(mean, log_std.exp().expand_as(mean))
    torch.testing.assert_close(lp, dist.log_prob(actions).sum((1, 2)))
    torch.testing.assert_close(ent, dist.entropy().sum((1, 2)))


def test_processor_fit_normalises_proprio_and_keeps_constant_dims_finite(policy):
    rng = np.random.default_rng(0)
    proprio = rng.normal(3.0, 2.0, size=(500, P)).astype(np.float32)
    proprio[:, 0] = 1.5  # constant dim
    policy.processor.fit(proprio, rng.uniform(-1, 1, (500, A)).astype(np.float32))
    z = policy.processor.proprio(proprio).numpy()
    assert np.isfinite(z).all() and np.allclose(z[:, 0], 0)
    np.testing.assert_allclose(z[:, 1:].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z[:, 1:].std(0), 1, atol=1e-3)


def test_normalisation_std_floors_jitter_dims_and_keeps_constant_dims_at_one():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(0, 2.0, 1000), 0.7 + rng.normal(0, 1e-4, 1000), np.full(1000, 3.0)], 1)
    np.testing.assert_allclose(normalisation_std(x, 0.01), [x[:, 0].std(), 0.01, 1.0], rtol=1e-6)
    np.testing.assert_allclose(normalisation_std(x, 0.0)[:2], x[:, :2].std(0), rtol=1e-6)  # no floor: unit variance


@pytest.mark.parametrize("std_min", [0.0, 0.01])
def test_processor_does_not_blow_up_simulator_jitter(std_min):
    # MetaWorld reach: the puck's height jitters by ~1e-4 in the demos (see normalisation_std)
    policy = make_policy(_cfg("tiny", proprio_std_min=std_min), A, P)
    rng = np.random.default_rng(0)
    proprio = rng.normal(size=(500, P)).astype(np.float32)
    proprio[:, 0] = 0.02 + rng.normal(0, 1e-4, 500)
    policy.processor.fit(proprio, rng.uniform(-1, 1, (500, A)).astype(np.float32))
    z = policy.processor.proprio(proprio).numpy()
    assert (np.abs(z[:, 0]).max() < 0.1) == (std_min > 0)


def test_policy_config_rejects_a_negative_proprio_std_min():
    with pytest.raises(ConfigError, match="proprio_std_min"):
        policy_config(proprio_std_min=-1.0)


@pytest.mark.parametrize("type_", TYPES)
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, type_):
    torch.manual_seed(0)
    policy = make_policy(_cfg(type_, temperature=0.5), A, P)
    rng = np.random.default_rng(0)
    policy.processor.fit(rng.normal(size=(50, P)).astype(np.float32), rng.uniform(-1, 1, (50, A)).astype(np.float32))
    policy.version = 7
    save_policy(policy, tmp_path / "ckpt", extra={"env_id": "emulated/fast"})
    loaded = load_policy(tmp_path / "ckpt")
    assert type(loaded) is type(policy) and loaded.version == 7 and loaded.cfg == policy.cfg
    obs = _obs(b=4)
    a, b = policy.act(obs, deterministic=True), loaded.act(obs, deterministic=True)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.logprob, b.logprob)
    np.testing.assert_array_equal(a.value, b.value)
    import yaml

    meta = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())
    assert meta["env_id"] == "emulated/fast" and meta["action_dim"] == A and meta["proprio_dim"] == P
    assert len(meta["normalization"]["proprio_mean"]) == P


def test_load_policy_rejects_a_non_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint"):
        load_policy(tmp_path)


def test_lerobot_select_action_pops_the_chunk(policy):
    obs = _obs(b=2)
    chunk = policy.predict_action_chunk(obs)
    first, second = policy.select_action(obs), policy.select_action(obs)
    np.testing.assert_array_equal(first, chunk[:, 0])
    np.testing.assert_array_equal(second, chunk[:, 1])
    policy.reset()
    np.testing.assert_array_equal(policy.select_action(obs), chunk[:, 0])


def test_ordinal_logits_peak_at_the_mean_bin_without_residual():
    from asyncvla.policies.tokens import ordinal_logits

    centres = bin_centers(256)
    target = torch.tensor([-0.9, -0.2, 0.01, 0.55])  # not on a bin edge
    out = torch.zeros(4, 258)
    out[:, 0] = torch.atanh(target)
    out[:, 1] = -3.0
    assert torch.equal(ordinal_logits(out, centres).argmax(-1), actions_to_bins(target, 256))
    out[1, 2 + 10] = 1e3  # the residual can move mass anywhere (RL is not boxed in)
    assert ordinal_logits(out, centres).argmax(-1)[1] == 10


def _timed(b: int, time_left) -> ObsBatch:
    obs = _obs(b=b)
    obs.time_left = np.asarray(time_left, np.float32)
    return obs


@pytest.mark.parametrize("type_", TYPES)
def test_value_time_is_zero_at_the_limit_and_reads_the_time_left(type_, tmp_path):
    torch.manual_seed(0)
    blind = make_policy(_cfg(type_), action_dim=A, proprio_dim=P)
    save_policy(blind, tmp_path / "sft")
    from asyncvla.policies.registry import build_policy

    # An SFT checkpoint without the time input: the RL run's value_time adds it at zero weight.
    timed = build_policy(_cfg(type_, value_time=True, init=str(tmp_path / "sft")), A, P, seed=0)
    assert timed.cfg.value_time and [n for n, _ in timed.named_parameters() if n.startswith("value_time")]
    obs = _timed(4, [1.0, 1.0, 0.5, 0.0])
    with torch.no_grad():
        v_blind, v_timed = blind.evaluate(obs, torch.zeros(4, K, A))[2], timed.evaluate(obs, torch.zeros(4, K, A))[2]
    assert torch.allclose(v_timed[:2], v_blind[:2])  # tau = 1 and a zero-weight time input: unchanged
    assert torch.allclose(v_timed[2], 0.5 * v_blind[2]) and v_timed[3] == 0.0
    # Without an episode clock (datasets) the critic reads tau = 1.
    with torch.no_grad():
        assert torch.allclose(timed.evaluate(_obs(b=4), torch.zeros(4, K, A))[2], blind.evaluate(_obs(b=4), torch.zeros(4, K, A))[2])
    # The value loss trains the time input; the checkpoint rebuilds it.
    _, _, value = timed.evaluate(obs, torch.zeros(4, K, A))
    value.sum().backward()
    assert timed.value_time.weight.grad.abs().sum() > 0
    save_policy(timed, tmp_path / "rl")
    loaded = load_policy(tmp_path / "rl")
    assert loaded.cfg.value_time
    with torch.no_grad():
        assert torch.equal(loaded.evaluate(obs, torch.zeros(4, K, A))[2], timed.evaluate(obs, torch.zeros(4, K, A))[2])


def test_obs_batch_carries_time_left_through_stack_concat_slice_index():
    from asyncvla.envs.base import Obs

    obs = [Obs(np.zeros((4, 4, 3), np.uint8), np.zeros(2, np.float32), "x", time_left=t) for t in (1.0, 0.5, 0.25)]
    b = ObsBatch.stack(obs)
    assert b.time_left.tolist() == [1.0, 0.5, 0.25]
    both = ObsBatch.concat([b, b.slice(1, 3)])
    assert both.time_left.tolist() == [1.0, 0.5, 0.25, 0.5, 0.25]
    assert both.index(np.array([4, 0])).time_left.tolist() == [0.25, 1.0]
    clockless = ObsBatch(b.images[:1], b.proprio[:1], ["x"])  # e.g. from a dataset
    assert ObsBatch.concat([b, clockless]).time_left is None


def test_value_state_reads_the_proprio_through_its_own_zero_started_layer(tmp_path):
    from asyncvla.policies.registry import build_policy

    torch.manual_seed(0)
    blind = make_policy(_cfg("tiny"), action_dim=A, proprio_dim=P)
    save_policy(blind, tmp_path / "sft")
    critic = build_policy(_cfg("tiny", value_state=True, init=str(tmp_path / "sft")), A, P, seed=0)
    obs, acts = _obs(b=4), torch.zeros(4, K, A)
    with torch.no_grad():
        assert torch.equal(critic.evaluate(obs, acts)[2], blind.evaluate(obs, acts)[2])  # zero weight: unchanged
    critic.evaluate(obs, acts)[2].sum().backward()
    assert critic.value_state.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in critic.named_parameters() if n.startswith("proprio_proj"))
    save_policy(critic, tmp_path / "rl")
    assert load_policy(tmp_path / "rl").cfg.value_state
