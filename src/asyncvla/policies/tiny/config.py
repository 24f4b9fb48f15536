"""The tiny VLA's own config fields (`policy.type` tiny or tiny-gaussian)."""

from __future__ import annotations

from dataclasses import dataclass

from asyncvla.config import PolicyConfig, _check, register_policy_config


@dataclass
class TinyTrunkConfig(PolicyConfig):
    """The tiny VLA's transformer trunk, shared by both of its action heads."""

    hidden_dim: int = 128
    """Width of the transformer trunk."""
    num_layers: int = 2
    """Transformer trunk layers."""
    num_heads: int = 4
    """Attention heads per trunk layer (hidden_dim must divide by it)."""
    proprio_std_min: float = 0.01
    """Floor of the per-dim std that normalises proprio (in proprio units, fit on the demos):
    dims that barely move in the demos carry simulator jitter, which unit-variance scaling
    would blow up into the policy's largest inputs. 0 scales every non-constant dim to unit std."""
    rl_spread: bool = False
    """Let RL train the spread of the action distribution (tiny: each token's std and residual logits;
    tiny-gaussian: log std). Off, RL moves the action means only and exploration stays at the SFT
    level: with a few hundred episodes the spread grew faster than the means improved (measured)."""
    detach_value: bool = True
    """The value head reads the trunk through a stop-gradient: critic learning (large, noisy
    gradients while the value head is new) cannot move the policy outside PPO's clip."""
    value_time: bool = False
    """The value head also reads the fraction of the episode's time limit left (`Obs.time_left`)
    and is 0 at the limit: V(s, tau) = tau * f(s, tau). Under a time limit the return still to
    come depends on the time left, which a time-blind critic cannot see, and bootstrapping a
    time-out from it inflates every value (docs/learning.md). RL-only: set on a run from an SFT
    checkpoint without it, the time input starts at zero weight."""
    value_state: bool = False
    """The value head also reads the normalised proprio directly (MetaWorld: arm, object and goal
    positions), through its own input layer trained by the value loss only, instead of only the
    SFT trunk's pooled features. RL-only, added at zero weight like value_time."""

    RL_ONLY = ("rl_spread", "value_time", "value_state")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.num_heads >= 1, "policy.num_heads", self.num_heads, "must be >= 1")
        _check(self.hidden_dim >= 8 and self.hidden_dim % self.num_heads == 0, "policy.hidden_dim", self.hidden_dim,
               f"must be >= 8 and divisible by policy.num_heads={self.num_heads}")
        _check(self.num_layers >= 1, "policy.num_layers", self.num_layers, "must be >= 1")
        _check(self.proprio_std_min >= 0, "policy.proprio_std_min", self.proprio_std_min, "must be >= 0")


@register_policy_config("tiny")
@dataclass
class TinyConfig(TinyTrunkConfig):
    """The tiny VLA with discrete action tokens (OpenVLA style)."""

    action_bins: int = 256
    """Bins per action dimension."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(2 <= self.action_bins <= 4096, "policy.action_bins", self.action_bins, "must be in [2, 4096]")


@register_policy_config("tiny-gaussian")
@dataclass
class TinyGaussianConfig(TinyTrunkConfig):
    """The tiny VLA with a continuous Gaussian action head."""

    type: str = "tiny-gaussian"
    """Registered policy: tiny-gaussian."""
