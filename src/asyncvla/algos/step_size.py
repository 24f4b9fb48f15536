"""The policy's learning rate follows the KL that each optimizer step takes (a trust region).

Why: Adam moves every weight by about the learning rate whatever its gradient (its first
step is lr * sign(g) exactly), so the change of the action distribution per step grows with
the number of weights and with how sharp the distribution is. Measured on the tiny VLA: one
Adam step at lr 3e-4 moved a fresh policy's action means by 0.75 of the action range (16.6
nats per 16-token chunk), and at lr 2e-5 moved an SFT policy (per-token std 1.4 bins) by 3.9
nats. PPO's clip cannot stop the first step of an update (every ratio is 1 there). So the
step is measured in the unit PPO cares about, KL per action token, and the learning rate is
scaled to hit a target, as rsl_rl's `adaptive` schedule does with the KL to the rollout policy.
"""

from __future__ import annotations

import math

import torch


def step_kl(logprob_before: torch.Tensor, logprob_after: torch.Tensor, tokens: int) -> float:
    """KL(before || after) of one step per action token: k3 on actions sampled from `before`.

    logprob_* `[N]`: chunk log-probabilities of the same actions before and after the step;
    `tokens`: action tokens per chunk (K * A). k3 = (r - 1) - log r >= 0 with r = p_after / p_before.
    """
    log_r = (logprob_after - logprob_before).double()
    return float((log_r.exp() - 1.0 - log_r).mean()) / tokens


def next_lr(lr: float, kl: float, target: float, lr_max: float, lr_min: float) -> float:
    """The learning rate whose step would take KL `target`, from a step at `lr` that took `kl`.

    For small steps KL grows with the square of the step, so lr * sqrt(target / kl); growth is
    capped at 2x a step (a tiny KL is measured noisily) and the result kept in [lr_min, lr_max].
    """
    if not (target > 0 and 0 < lr_min <= lr_max):
        raise ValueError(f"target={target!r}, lr_min={lr_min!r}, lr_max={lr_max!r} are invalid: need target > 0, 0 < lr_min <= lr_max")
    factor = 2.0 if kl <= target / 4 else math.sqrt(target / kl)
    return min(lr_max, max(lr_min, lr * factor))
