"""RL math as pure functions of tensors: advantage estimators and losses."""

from asyncvla.algos.advantages import (
    compute_gae,
    compute_gae_reference,
    episode_scores,
    grpo_advantages,
    grpo_step_advantages,
    normalize_advantages,
)
from asyncvla.algos.losses import (
    decoupled_ppo_loss,
    entropy_bonus,
    kl_estimate,
    ppo_policy_loss,
    truncated_importance_weight,
    value_loss,
)

__all__ = [
    "compute_gae",
    "compute_gae_reference",
    "decoupled_ppo_loss",
    "entropy_bonus",
    "episode_scores",
    "grpo_advantages",
    "grpo_step_advantages",
    "kl_estimate",
    "normalize_advantages",
    "ppo_policy_loss",
    "truncated_importance_weight",
    "value_loss",
]
