"""The `oft` policy's own config fields."""

from __future__ import annotations

from dataclasses import dataclass

from asyncvla.config import _check, register_policy_config
from asyncvla.policies.hf_config import HFVLAConfig


@register_policy_config("oft")
@dataclass
class OftConfig(HFVLAConfig):
    """OpenVLA-OFT-style token VLA: `action_bins` action tokens per action dimension, the chunk decoded in one pass."""

    type: str = "oft"
    """Registered policy: oft."""
    action_bins: int = 256
    """Bins per action dimension over [-1, 1]: the last `action_bins` tokens of the vocabulary (OpenVLA's convention)."""
    ordinal: bool = False
    """Parametrise each token's logits as a discretised Gaussian plus residuals (the tiny VLA's head), read
    from the LM's action-token rows; off: the LM head's plain logits over the action tokens (OpenVLA)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(2 <= self.action_bins <= 4096, "policy.action_bins", self.action_bins, "must be in [2, 4096]")
