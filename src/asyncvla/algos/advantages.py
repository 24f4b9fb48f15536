"""Advantage estimators: GAE (PPO) and group-relative scores (GRPO), as pure functions.

Conventions (they differ from RLinf's on purpose):
- Time-major `[T, B]`; index t is a policy *decision* (one action chunk), so `gamma`
  discounts per decision and `rewards[t]` is the chunk's reward.
- `terminated[t]` / `truncated[t]` mean "the episode ended after decision t" (RLinf
  encodes this as `dones[t + 1]`). Truncation is bootstrapped here, in the advantage
  function, with `next_values[t]` = V(final observation), whatever the env's reset mode;
  termination uses 0. Both cut the recursion, so nothing leaks across episodes.
"""

from __future__ import annotations

import torch

from asyncvla.algos._masked import _check_same_shape, _masked_mean, _masked_var, _valid


def _gae_inputs(rewards, values, next_values, terminated, truncated, mask):
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    _check_same_shape(
        rewards=rewards, values=values, next_values=next_values,
        terminated=terminated, truncated=truncated, mask=mask,
    )
    if rewards.ndim < 1 or rewards.shape[0] == 0:
        raise ValueError(f"rewards{list(rewards.shape)}: need a time dimension of length >= 1")
    return _valid(terminated), _valid(truncated), _valid(mask)


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation, backward scan over T, vectorized over B.

    Args (all `[T, B]`, same shape; bool or 0/1 float for the flags):
        rewards: reward received after decision t.
        values: V(s_t).
        next_values: V(s_{t+1}), the observation after decision t. At a truncated step it
            must be V(final observation of the episode) (bootstrap); at a terminated step
            it is ignored (NaN allowed). Terminated wins if both flags are set.
        terminated, truncated: the episode ended after decision t.
        gamma, lam: discount per decision and GAE lambda.
        mask: valid entries (optional). Invalid entries get advantage 0, their inputs are
            never read, and the recursion restarts before them: the step before a gap
            bootstraps from its own next_values (a lambda=0 cut there).
    Returns:
        advantages `[T, B]` and returns `[T, B]` = advantages + values.
    """
    term, trunc, valid = _gae_inputs(rewards, values, next_values, terminated, truncated, mask)
    zero = torch.zeros_like(rewards)
    boot = torch.where(term, zero, next_values)  # [T, B]; 0 after termination
    delta = torch.where(valid, rewards + gamma * boot - values, zero)  # [T, B]
    carry_on = (~(term | trunc)).to(rewards.dtype) * (gamma * lam)  # [T, B]
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])  # [B]; A_{t+1}, 0 past the end of the buffer
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = torch.where(valid[t], delta[t] + carry_on[t] * running, zero[t])
        advantages[t] = running
    return advantages, advantages + values


@torch.no_grad()
def compute_gae_reference(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow scalar loop with the same contract as `compute_gae`; for tests only."""
    term, trunc, valid = _gae_inputs(rewards, values, next_values, terminated, truncated, mask)
    num_steps, num_envs = rewards.shape
    advantages = torch.zeros_like(rewards)
    for b in range(num_envs):
        next_adv = 0.0
        for t in reversed(range(num_steps)):
            if not valid[t, b]:
                next_adv = 0.0
                continue
            v_next = 0.0 if term[t, b] else float(next_values[t, b])
            delta = float(rewards[t, b]) + gamma * v_next - float(values[t, b])
            if term[t, b] or trunc[t, b]:
                next_adv = 0.0
            next_adv = delta + gamma * lam * next_adv
            advantages[t, b] = next_adv
    return advantages, advantages + values


def episode_scores(
    rewards: torch.Tensor, dones: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """GRPO score per env: undiscounted reward sum up to and including the first done.

    rewards, dones, mask: `[T, B]`; an env with no done sums all its valid rewards.
    Returns `[B]`.
    """
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    _check_same_shape(rewards=rewards, dones=dones, mask=mask)
    done = _valid(dones) & _valid(mask)
    after_first_done = (done.cumsum(dim=0) - done.long()) > 0  # [T, B]
    keep = _valid(mask) & ~after_first_done
    return torch.where(keep, rewards, torch.zeros_like(rewards)).sum(dim=0)


def grpo_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages: (s - mean_g) / (std_g + eps), sample std per group.

    scores: `[N]`, N = num_groups * group_size, each group contiguous (rollouts from the
    same initial state). Returns `[N]`; a group of equal scores gives exactly 0.
    Broadcast over the episode's decisions yourself (`adv[None, :] * mask`).
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size} is invalid: must be >= 2 (sample std)")
    if scores.ndim != 1 or scores.numel() % group_size != 0:
        raise ValueError(
            f"scores{list(scores.shape)}: must be 1-D with a length divisible by group_size={group_size}"
        )
    groups = scores.reshape(-1, group_size)  # [G, group_size]
    # Centre on the first member before averaging: equal scores then give exact zeros
    # (a plain mean of 8 x 0.1 is not exactly 0.1 in floating point).
    shifted = groups - groups[:, :1]
    centred = shifted - shifted.mean(dim=1, keepdim=True)
    std = centred.std(dim=1, unbiased=True, keepdim=True)
    return (centred / (std + eps)).reshape(-1)


def grpo_step_advantages(
    rewards: torch.Tensor, dones: torch.Tensor, mask: torch.Tensor, group_size: int
) -> torch.Tensor:
    """GRPO with a baseline per decision: the reward-to-go of decision t minus the mean
    reward-to-go at t of the group members still in their episode.

    A decision is credited only with the rewards that came after it, against what the
    same group collected from the same point in time, so under a dense reward the early
    decisions that set up an episode and the late ones stop sharing one score. There is no
    division by the group's std (as in Dr. GRPO): members that tie on the episode score can
    still differ per step, and a std of ~0 would blow those differences up. Whiten the batch
    afterwards (`normalize_advantages`). Compare time-aligned groups (same initial state,
    episodes that do not end early); a decision with no other group member still running
    gets 0.

    rewards, dones, mask: `[T, B]`, B = num_groups * group_size, groups contiguous.
    Returns `[T, B]`, 0 after each env's first done and where mask is off.
    """
    _check_same_shape(rewards=rewards, dones=dones, mask=mask)
    T, B = rewards.shape
    if group_size < 2 or B % group_size:
        raise ValueError(f"rewards{list(rewards.shape)}: B must be divisible by group_size={group_size} (>= 2)")
    done = _valid(dones) & _valid(mask)
    keep = _valid(mask) & ~((done.cumsum(dim=0) - done.long()) > 0)  # [T, B]
    r = torch.where(keep, rewards, torch.zeros_like(rewards))
    to_go = r.flip(0).cumsum(0).flip(0).reshape(T, -1, group_size)  # [T, G, group_size]
    g_keep = keep.reshape(T, -1, group_size)
    count = g_keep.sum(-1, keepdim=True)
    baseline = torch.where(g_keep, to_go, torch.zeros_like(to_go)).sum(-1, keepdim=True) / count.clamp(min=1)
    adv = torch.where(g_keep & (count > 1), to_go - baseline, torch.zeros_like(to_go))
    return adv.reshape(T, B)


def normalize_advantages(adv: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Whiten advantages with the mean and sample std of the valid entries only.

    adv, mask: same shape (any). Masked entries are set to 0 (RLinf rescaled them too).
    No valid entries gives all zeros, never NaN.
    """
    mean = _masked_mean(adv, mask)
    std = _masked_var(adv, mask).sqrt()
    out = (adv - mean) / (std + eps)
    return torch.where(_valid(mask), out, torch.zeros_like(out))
