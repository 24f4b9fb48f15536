"""Advantage estimators against slow reference loops and hand-computed values (float64)."""

import math
import statistics

import pytest
import torch

from asyncvla.algos import (
    compute_gae,
    compute_gae_reference,
    episode_scores,
    grpo_advantages,
    grpo_step_advantages,
    normalize_advantages,
)

F64 = torch.float64


def _random_batch(seed: int, num_steps: int = 17, num_envs: int = 6, masked: bool = True):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(num_steps, num_envs, generator=g, dtype=F64)
    values = torch.randn(num_steps, num_envs, generator=g, dtype=F64)
    next_values = torch.randn(num_steps, num_envs, generator=g, dtype=F64)
    terminated = torch.rand(num_steps, num_envs, generator=g) < 0.15
    truncated = torch.rand(num_steps, num_envs, generator=g) < 0.15
    mask = torch.rand(num_steps, num_envs, generator=g) > 0.2 if masked else None
    return rewards, values, next_values, terminated, truncated, mask


def _gae_by_definition(rewards, values, next_values, terminated, truncated, gamma, lam, mask):
    """A_t = sum_k (gamma lam)^k delta_{t+k} over the rest of t's segment (independent form)."""
    num_steps, num_envs = rewards.shape
    out = torch.zeros_like(rewards)
    for b in range(num_envs):
        for t in range(num_steps):
            if not mask[t, b]:
                continue
            total, k = 0.0, t
            while k < num_steps and mask[k, b]:
                boot = 0.0 if terminated[k, b] else float(next_values[k, b])
                delta = float(rewards[k, b]) + gamma * boot - float(values[k, b])
                total += (gamma * lam) ** (k - t) * delta
                if terminated[k, b] or truncated[k, b]:
                    break
                k += 1
            out[t, b] = total
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("masked", [True, False])
def test_gae_matches_reference_loop_and_definition(seed, masked):
    rewards, values, next_values, term, trunc, mask = _random_batch(seed, masked=masked)
    gamma, lam = 0.9 + 0.02 * seed, 0.5 + 0.1 * seed
    adv, ret = compute_gae(rewards, values, next_values, term, trunc, gamma, lam, mask)
    ref_adv, ref_ret = compute_gae_reference(rewards, values, next_values, term, trunc, gamma, lam, mask)
    torch.testing.assert_close(adv, ref_adv, atol=1e-9, rtol=0)
    torch.testing.assert_close(ret, ref_ret, atol=1e-9, rtol=0)
    full_mask = torch.ones_like(term) if mask is None else mask
    by_def = _gae_by_definition(rewards, values, next_values, term, trunc, gamma, lam, full_mask)
    torch.testing.assert_close(adv, by_def, atol=1e-9, rtol=0)
    torch.testing.assert_close(ret, adv + values, atol=0, rtol=0)


def test_gae_float_flags_equal_bool_flags():
    rewards, values, next_values, term, trunc, mask = _random_batch(7)
    a_bool, _ = compute_gae(rewards, values, next_values, term, trunc, 0.99, 0.95, mask)
    a_float, _ = compute_gae(rewards, values, next_values, term.double(), trunc.double(), 0.99, 0.95, mask.double())
    assert torch.equal(a_bool, a_float)


def test_gae_gamma_lam_one_gives_returns_to_go_plus_bootstrap():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 3, generator=g, dtype=F64)
    values = torch.randn(6, 3, generator=g, dtype=F64)
    bootstrap = torch.randn(3, generator=g, dtype=F64)
    next_values = torch.cat([values[1:], bootstrap[None]])  # V(s_{t+1})
    no_done = torch.zeros(6, 3, dtype=torch.bool)
    _, returns = compute_gae(rewards, values, next_values, no_done, no_done, 1.0, 1.0)
    to_go = rewards.flip(0).cumsum(0).flip(0) + bootstrap  # telescoping: values cancel
    torch.testing.assert_close(returns, to_go, atol=1e-12, rtol=0)


def _column(*xs):
    return torch.tensor(xs, dtype=F64)[:, None]  # [T, 1]


def test_gae_done_at_t0_hand_values():
    rewards, values = _column(1.0, 2.0, 3.0), _column(0.5, 0.5, 0.5)
    next_values = _column(math.nan, 0.5, 0.7)  # ignored at the terminated step, even NaN
    term = _column(1, 0, 0).bool()
    trunc = torch.zeros_like(term)
    adv, ret = compute_gae(rewards, values, next_values, term, trunc, 0.9, 0.8)
    d1, d2 = 2 + 0.9 * 0.5 - 0.5, 3 + 0.9 * 0.7 - 0.5
    torch.testing.assert_close(adv, _column(1 - 0.5, d1 + 0.72 * d2, d2), atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, adv + values)


@pytest.mark.parametrize("kind", ["terminated", "truncated"])
def test_gae_truncation_bootstraps_termination_does_not(kind):
    rewards, values = _column(1.0, 1.0, 1.0), _column(0.0, 0.2, 0.0)
    next_values = _column(0.2, 10.0, 0.4)  # 10 = V(final obs of the episode ending at t=1)
    flags = {"terminated": torch.zeros(3, 1, dtype=torch.bool), "truncated": torch.zeros(3, 1, dtype=torch.bool)}
    flags[kind][1] = True
    gamma, lam = 0.5, 1.0
    adv, _ = compute_gae(rewards, values, next_values, flags["terminated"], flags["truncated"], gamma, lam)
    d1 = 1.0 + (gamma * 10.0 if kind == "truncated" else 0.0) - 0.2
    d0 = 1.0 + gamma * 0.2 - 0.0
    d2 = 1.0 + gamma * 0.4
    torch.testing.assert_close(adv, _column(d0 + gamma * lam * d1, d1, d2), atol=1e-12, rtol=0)


def test_gae_episode_boundary_inside_batch_does_not_leak():
    rewards, values = _column(1.0, 2.0, 3.0, 4.0), _column(0.1, 0.2, 0.3, 0.4)
    next_values = _column(0.2, 0.0, 0.4, 0.5)
    term = _column(0, 1, 0, 0).bool()
    trunc = torch.zeros_like(term)
    adv, _ = compute_gae(rewards, values, next_values, term, trunc, 0.9, 0.9)
    d1 = 2.0 - 0.2
    torch.testing.assert_close(adv[:2], _column(1 + 0.9 * 0.2 - 0.1 + 0.81 * d1, d1), atol=1e-12, rtol=0)
    later = rewards.clone()
    later[2:] += 100.0  # the next episode's rewards must not reach the first episode
    adv2, _ = compute_gae(later, values, next_values, term, trunc, 0.9, 0.9)
    assert torch.equal(adv2[:2], adv[:2])
    assert not torch.equal(adv2[2:], adv[2:])


def test_gae_mask_zeroes_and_cuts_even_with_garbage():
    rewards, values = _column(1.0, 1.0, math.nan), _column(0.0, 0.5, math.inf)
    next_values = _column(0.5, 2.0, math.nan)
    no_done = torch.zeros(3, 1, dtype=torch.bool)
    mask = _column(1, 1, 0).bool()
    adv, ret = compute_gae(rewards, values, next_values, no_done, no_done, 0.9, 0.5, mask)
    d1 = 1 + 0.9 * 2.0 - 0.5  # the step before the gap bootstraps from its own next value
    assert adv[2, 0] == 0.0
    torch.testing.assert_close(adv[:2], _column(1 + 0.45 + 0.45 * d1, d1), atol=1e-12, rtol=0)
    assert torch.isfinite(ret[:2]).all()


def test_gae_all_masked_gives_zeros():
    rewards, values, next_values, term, trunc, _ = _random_batch(3)
    mask = torch.zeros_like(term)
    adv, _ = compute_gae(rewards, values, next_values, term, trunc, 0.99, 0.95, mask)
    assert torch.equal(adv, torch.zeros_like(adv))


def test_gae_shape_mismatch_raises():
    rewards, values, next_values, term, trunc, mask = _random_batch(0)
    with pytest.raises(ValueError, match="next_values"):
        compute_gae(rewards, values, next_values[:, :1], term, trunc, 0.99, 0.95, mask)
    with pytest.raises(ValueError, match="mask"):
        compute_gae(rewards, values, next_values, term, trunc, 0.99, 0.95, mask[:-1])


def test_gae_does_not_track_gradients():
    rewards, values, next_values, term, trunc, mask = _random_batch(1)
    values.requires_grad_(True)
    adv, ret = compute_gae(rewards, values, next_values, term, trunc, 0.99, 0.95, mask)
    assert not adv.requires_grad and not ret.requires_grad


def test_episode_scores_hand_and_reference():
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]], dtype=F64)
    dones = torch.tensor([[0, 0], [1, 0], [1, 0]]).bool()
    assert episode_scores(rewards, dones).tolist() == [3.0, 3.0]
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]]).bool()
    assert episode_scores(rewards, dones, mask).tolist() == [3.0, 2.0]
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(9, 5, generator=g, dtype=F64)
    dones, mask = torch.rand(9, 5, generator=g) < 0.2, torch.rand(9, 5, generator=g) < 0.8
    expected = []
    for b in range(5):
        total = 0.0
        for t in range(9):
            if mask[t, b]:
                total += float(rewards[t, b])
                if dones[t, b]:
                    break
        expected.append(total)
    torch.testing.assert_close(episode_scores(rewards, dones, mask), torch.tensor(expected, dtype=F64))


def test_grpo_matches_reference_and_groups_are_independent():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4 * 8, generator=g, dtype=F64)
    adv = grpo_advantages(scores, group_size=8)
    expected = []
    for k in range(4):
        group = scores[8 * k: 8 * (k + 1)].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)
        expected += [(s - mean) / (std + 1e-6) for s in group]
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=F64), atol=1e-9, rtol=0)
    other = scores.clone()
    other[8:] += 5.0
    assert torch.equal(grpo_advantages(other, 8)[:8], adv[:8])


def test_grpo_hand_values_and_equal_scores_exactly_zero():
    adv = grpo_advantages(torch.tensor([0.0, 1.0], dtype=F64), group_size=2)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0], dtype=F64) * 0.5 / (math.sqrt(0.5) + 1e-6))
    # A naive (s - mean) / (std + eps) gives 7e-3, not 0, for eight float32 0.1s.
    for dtype in (torch.float32, F64):
        for group_size in (3, 7, 8):
            for value in (0.0, 1.0, 0.1, 1 / 3, 1e8 + 0.1):
                same = torch.full((2 * group_size,), value, dtype=dtype)
                assert torch.equal(grpo_advantages(same, group_size), torch.zeros_like(same))


def test_grpo_bad_sizes_raise():
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.zeros(10), group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.zeros(10), group_size=1)


def test_normalize_advantages_uses_valid_entries_and_zeroes_masked():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(40, generator=g, dtype=F64) * 3 + 1
    mask = torch.rand(40, generator=g) < 0.6
    adv[~mask] = math.nan  # garbage in padded slots must not leak
    out = normalize_advantages(adv, mask)
    valid = adv[mask].tolist()
    mean, std = statistics.mean(valid), statistics.stdev(valid)
    torch.testing.assert_close(out[mask], (adv[mask] - mean) / (std + 1e-8), atol=1e-9, rtol=0)
    assert torch.equal(out[~mask], torch.zeros(int((~mask).sum()), dtype=F64))


def test_normalize_advantages_degenerate_masks():
    adv = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    assert torch.equal(normalize_advantages(adv, torch.zeros(3, dtype=torch.bool)), torch.zeros(3, dtype=F64))
    one = normalize_advantages(adv, torch.tensor([False, True, False]))
    assert torch.equal(one, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="shape mismatch"):
        normalize_advantages(adv, torch.ones(3, 1, dtype=torch.bool))


def _step_reference(rewards, dones, mask, group_size):
    """Reward-to-go per decision minus the mean of the group members still running, by loops."""
    T, B = rewards.shape
    running = [[False] * B for _ in range(T)]
    to_go = [[0.0] * B for _ in range(T)]
    for b in range(B):
        ended = False
        for t in range(T):
            running[t][b] = bool(mask[t, b]) and not ended
            ended = ended or (bool(mask[t, b]) and bool(dones[t, b]))
        acc = 0.0
        for t in reversed(range(T)):
            acc += float(rewards[t, b]) if running[t][b] else 0.0
            to_go[t][b] = acc
    out = torch.zeros(T, B, dtype=F64)
    for t in range(T):
        for g in range(B // group_size):
            members = [b for b in range(g * group_size, (g + 1) * group_size) if running[t][b]]
            if len(members) < 2:
                continue
            mean = statistics.mean(to_go[t][b] for b in members)
            for b in members:
                out[t, b] = to_go[t][b] - mean
    return out


@pytest.mark.parametrize("seed", range(4))
def test_grpo_step_matches_reference(seed):
    rewards, _, _, terminated, truncated, mask = _random_batch(seed, num_steps=9, num_envs=8)
    adv = grpo_step_advantages(rewards, terminated | truncated, mask, group_size=4)
    torch.testing.assert_close(adv, _step_reference(rewards, terminated | truncated, mask, 4), atol=1e-9, rtol=0)


def test_grpo_step_hand_values():
    # One group of 2, three decisions, no dones: member 0 earns early, member 1 late.
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=F64)
    none = torch.zeros_like(rewards, dtype=torch.bool)
    adv = grpo_step_advantages(rewards, none, ~none, group_size=2)
    # reward-to-go: member 0 = 1, 0, 0; member 1 = 2, 2, 2; means 1.5, 1, 1
    torch.testing.assert_close(adv, torch.tensor([[-0.5, 0.5], [-1.0, 1.0], [-1.0, 1.0]], dtype=F64))
    # At t = 0, without ends, it is the episode score minus the group mean.
    scores = episode_scores(rewards, none, ~none)
    torch.testing.assert_close(adv[0], scores - scores.mean())


def test_grpo_step_tied_scores_keep_their_timing_and_ended_members_leave_the_baseline():
    # Equal episode scores (episode credit would give 0): the later earner is still credited at t = 1.
    rewards = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, 5.0]], dtype=F64)
    dones = torch.tensor([[False, False, True], [False, False, False]])
    adv = grpo_step_advantages(rewards[:, :2], dones[:, :2], torch.ones(2, 2, dtype=torch.bool), 2)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0], [-0.5, 0.5]], dtype=F64))
    # Group of 3 where member 2 ends at t = 0: at t = 1 only members 0 and 1 form the baseline.
    pad = torch.zeros(2, 3, dtype=F64)
    adv3 = grpo_step_advantages(torch.cat([rewards, pad], 1)[:, :3], dones, torch.ones(2, 3, dtype=torch.bool), 3)
    assert adv3[1, 2] == 0
    torch.testing.assert_close(adv3[1, :2], torch.tensor([-0.5, 0.5], dtype=F64))


def test_grpo_step_bad_sizes_raise():
    with pytest.raises(ValueError, match="group_size"):
        grpo_step_advantages(torch.zeros(3, 10), torch.zeros(3, 10), torch.ones(3, 10), group_size=4)
