"""The PPO-family objective of one minibatch, as the trainer steps it.

Policy loss (clipped PPO, or decoupled PPO against a proximal policy), entropy bonus, the
value loss when the algorithm trains a critic, and the KL penalty to a reference policy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from asyncvla.algos.losses import decoupled_ppo_loss, entropy_bonus, kl_estimate, ppo_policy_loss, value_loss
from asyncvla.config import AlgoConfig
from asyncvla.policies.base import ObsBatch, Policy


@dataclass
class Batch:
    """Flat training samples (N = valid samples of all rollouts), on the trainer's device."""

    obs: ObsBatch
    actions: torch.Tensor  # [N, K, A]
    behav_logprob: torch.Tensor  # [N]
    old_values: torch.Tensor  # [N]
    advantages: torch.Tensor  # [N]
    returns: torch.Tensor  # [N]
    version: torch.Tensor  # [N] int64
    prox_logprob: torch.Tensor | None = None  # [N], decoupled PPO only
    aux: torch.Tensor | None = None  # [N, ...] `ActOut.aux` of each sample, or None

    def __len__(self) -> int:
        return self.actions.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        """The batch with its tensors on `device` (a data-parallel replica's)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)

    def evaluate(self, policy: Policy, rows: np.ndarray | slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`policy.evaluate` of samples `rows` (indices or a slice)."""
        obs = self.obs.slice(rows.start, rows.stop) if isinstance(rows, slice) else self.obs.index(rows)
        at = rows if isinstance(rows, slice) else torch.as_tensor(rows, device=self.actions.device)
        return policy.evaluate(obs, self.actions[at], None if self.aux is None else self.aux[at])


def chunk_tokens(actions: torch.Tensor) -> int:
    """Action tokens per chunk (K*A) of actions [N, K, A]."""
    return int(actions.shape[1] * actions.shape[2])


def ratio_tokens(cfg: AlgoConfig, actions: torch.Tensor) -> float:
    """Tokens a chunk's ratio is normalised over: 1 (ratio=chunk) or K*A (token_mean: geometric mean per token)."""
    return float(chunk_tokens(actions)) if cfg.ratio == "token_mean" else 1.0


def minibatch_loss(policy: Policy, cfg: AlgoConfig, uses_critic: bool, b: Batch, chunk: np.ndarray, idx: torch.Tensor,
                   ref_logprob: torch.Tensor | None, actor_on: bool) -> tuple[torch.Tensor, dict]:
    """(loss with grad, stats) of samples `chunk` of `b` (idx: the same indices on the device).

    actor_on False (critic warm-up) keeps only the value loss. stats["_logprob"] holds the
    minibatch's chunk logprobs [M] at the current weights (detached), for step diagnostics.
    """
    logprob, entropy, values = b.evaluate(policy, chunk)  # [M] each
    mask = torch.ones_like(logprob, dtype=torch.bool)
    adv = b.advantages[idx]
    per = ratio_tokens(cfg, b.actions)
    behav = b.behav_logprob[idx] / per
    if b.prox_logprob is not None:
        pg, stats = decoupled_ppo_loss(logprob / per, b.prox_logprob[idx] / per, behav, adv, mask,
                                       cfg.clip_eps, cfg.dual_clip, cfg.is_cap, cfg.clip_high)
    else:
        pg, stats = ppo_policy_loss(logprob / per, behav, adv, mask, cfg.clip_eps, cfg.dual_clip, cfg.clip_high)
    ent_loss, ent_stats = entropy_bonus(entropy, mask)
    # Critic warm-up leaves the actor's terms out of the graph (not multiplied by 0): actor parameters
    # then get no gradient, so Adam keeps no state for them and its bias correction starts with the
    # actor's first real step instead of inflating it (up to ~2x after 80 zero-gradient steps).
    loss = pg + cfg.entropy_coef * ent_loss if actor_on else logprob.new_zeros(())
    stats = {**stats, **ent_stats, "policy": float(pg.detach())}
    if uses_critic:
        vl, v_stats = value_loss(values, b.old_values[idx], b.returns[idx], mask, cfg.value_clip, cfg.value_huber_delta)
        loss = loss + cfg.value_coef * vl
        stats.update(v_stats, value=float(vl.detach()))
    if ref_logprob is not None:
        kl = kl_estimate(logprob, ref_logprob[idx], mask)
        loss = loss + cfg.kl_coef * kl
        stats["kl_ref"] = float(kl.detach())
    stats["_logprob"] = logprob.detach()
    return loss, stats
