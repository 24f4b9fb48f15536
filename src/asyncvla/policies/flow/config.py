"""The `flow` policy's own config fields."""

from __future__ import annotations

import math
from dataclasses import dataclass

from asyncvla.config import _check, register_policy_config
from asyncvla.policies.hf_config import HFVLAConfig


@register_policy_config("flow")
@dataclass
class FlowConfig(HFVLAConfig):
    """π0-style flow matching: a VLM prefix and an action expert integrating a velocity field over `num_steps`."""

    type: str = "flow"
    """Registered policy: flow."""
    num_steps: int = 10
    """Integration steps from noise (t = 1) to the action chunk (t = 0) (π0: 10)."""
    expert_dim: int = 64
    """Width of the action expert."""
    expert_layers: int = 2
    """Action expert layers (self-attention over [state | action tokens], cross-attention to the prefix, MLP)."""
    expert_heads: int = 4
    """Attention heads of the action expert (expert_dim must divide by it)."""
    noise_std: float = 0.1
    """Initial std of the noise each RL denoising step adds (Flow-Noise, πRL), in units of the demo action std;
    one learned log std per step, trained by RL."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(1 <= self.num_steps <= 100, "policy.num_steps", self.num_steps, "must be in [1, 100]")
        _check(self.expert_heads >= 1 and self.expert_dim >= 8 and self.expert_dim % self.expert_heads == 0, "policy.expert_dim",
               self.expert_dim, f"must be >= 8 and divisible by policy.expert_heads={self.expert_heads}")
        _check(self.expert_layers >= 1, "policy.expert_layers", self.expert_layers, "must be >= 1")
        _check(0 < self.noise_std <= 1 and math.isfinite(self.noise_std), "policy.noise_std", self.noise_std, "must be in (0, 1]")
