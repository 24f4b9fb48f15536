"""RL algorithms as registered objects: `algo.name` picks one, as `policy.type` picks a policy.

An algorithm owns what differs between PPO and GRPO: how a rollout becomes advantages,
returns and a trainable mask, whether advantages are normalised over the batch, whether
the critic is trained, and whether rollouts come in groups from shared initial states
(GRPO). The trainer and the runtime ask the algorithm; nothing outside algos/ tests
`algo.name`. A new algorithm is a subclass with `@register("name")`.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from asyncvla.algos.advantages import compute_gae, episode_scores, grpo_advantages, grpo_step_advantages
from asyncvla.config import AlgoConfig, ConfigError

A = TypeVar("A", bound=type)
_REGISTRY: dict[str, type["Algorithm"]] = {}


def register(name: str) -> Callable[[A], A]:
    def deco(cls: A) -> A:
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


def make_algorithm(cfg: AlgoConfig) -> "Algorithm":
    if cfg.name not in _REGISTRY:
        raise ConfigError(f"algo.name={cfg.name!r} is invalid: allowed: {', '.join(algorithm_names())}")
    return _REGISTRY[cfg.name](cfg)


class Algorithm:
    """Advantages, normalisation, critic use and grouping of one RL algorithm."""

    name = ""
    uses_critic = False
    """Train the value head (value loss) and bootstrap from it."""

    def __init__(self, cfg: AlgoConfig):
        self.cfg = cfg

    @property
    def group_size(self) -> int:
        """Rollouts per shared initial state, scored together; 0: independent rollouts."""
        return 0

    @property
    def normalize(self) -> bool:
        """Normalise advantages over the whole training batch."""
        return self.cfg.normalize_advantages

    def advantages(self, r, next_values: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(advantages [T, B], returns [T, B], mask [T, B]) of rollout `r` before normalisation;
        next_values() gives V(s_{t+1}) [T, B] (computed only if the algorithm asks)."""
        raise NotImplementedError


@register("ppo")
class PPO(Algorithm):
    """PPO with GAE over a value head (the RL-VLA³ / RLinf default)."""

    uses_critic = True

    def advantages(self, r, next_values):
        c, t = self.cfg, torch.as_tensor
        adv, ret = compute_gae(t(r.reward) * c.reward_scale, t(r.value), next_values(), t(r.terminated), t(r.truncated),
                               c.gamma, c.lam, t(r.mask))
        return adv, ret, t(r.mask)


@register("grpo")
class GRPO(Algorithm):
    """Group-relative advantages, no critic: `group_size` episodes from one initial state each."""

    @property
    def group_size(self) -> int:
        return self.cfg.group_size

    @property
    def normalize(self) -> bool:
        # Episode credit is already normalised within each group; reward-to-go credit is not.
        return self.cfg.normalize_advantages and self.cfg.grpo_credit == "reward_to_go"

    def advantages(self, r, next_values):
        c, t = self.cfg, torch.as_tensor
        mask = t(r.mask)
        # Score = reward sum up to the first done; decisions after it belong to another episode.
        done = t(r.terminated | r.truncated)
        after = (done.long().cumsum(0) - done.long()) > 0  # [T, B]
        if c.grpo_credit == "reward_to_go":
            adv = grpo_step_advantages(t(r.reward) * c.reward_scale, done, mask, c.group_size)
            return adv, adv.clone(), mask & ~after
        adv_b = grpo_advantages(episode_scores(t(r.reward), done, mask), c.group_size)  # [B]
        mask = mask & ~after
        adv = torch.where(mask, adv_b[None, :].expand_as(mask), torch.zeros(()))
        return adv, adv.clone(), mask
