"""The config fields the transformers-based VLA families (`oft`, `flow`) share. Torch-free, like every
module in `config._POLICY_CONFIG_MODULES`: parsing a command line must not import torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from asyncvla.config import PolicyConfig, _check

VISION_DIR, LANGUAGE_DIR = "vision_model", "language_model"
"""Subdirectories of `policy.pretrained_path` (each `save_pretrained` output: config.json + weights)."""
DTYPE_NAMES = ("fp32", "bf16")


@dataclass
class HFVLAConfig(PolicyConfig):
    """Fields shared by the transformers-based VLA families."""

    hidden_dim: int = 64
    """Language model width (ignored with pretrained_path: its config decides)."""
    num_layers: int = 2
    """Language model decoder layers."""
    num_heads: int = 4
    """Attention heads of the language model (hidden_dim must divide by it)."""
    num_kv_heads: int = 2
    """Key/value heads of the language model (grouped-query attention; num_heads must divide by it)."""
    vision_dim: int = 64
    """Vision tower (SigLIP) width."""
    vision_layers: int = 2
    """Vision tower layers."""
    patch_size: int = 16
    """Vision tower patch size (image_size must divide by it)."""
    max_text_tokens: int = 48
    """Instruction tokens (padded or cut to this, so a sample's positions never depend on its batch)."""
    pretrained_path: str | None = None
    """Local directory with real weights: `vision_model/` and `language_model/` in Hugging Face format
    (`save_pretrained`); the architecture fields above are then taken from their configs."""
    lora_rank: int = 0
    """> 0: train LoRA adapters of this rank on the language model's attention and MLP projections
    (peft), with the vision tower and the language model frozen; projectors and heads still train."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank)."""
    dtype: Literal["fp32", "bf16"] = "fp32"
    """Weights and activations of the vision tower and language model; heads and logprobs stay fp32."""
    gradient_checkpointing: bool = False
    """Recompute the language model's activations in the backward pass (less memory, ~30% more compute)."""
    proprio_std_min: float = 0.01
    """Floor of the per-dim std that normalises proprio (as the tiny VLA's)."""
    detach_value: bool = True
    """The value head reads the prefix through a stop-gradient (as the tiny VLA's)."""

    @classmethod
    def at_checkpoint(cls, fields: dict[str, Any], ckpt_dir: str | Path) -> dict[str, Any]:
        # A checkpoint of a pretrained_path policy holds the backbone configs itself (save_architecture).
        return fields if fields.get("pretrained_path") is None else {**fields, "pretrained_path": str(ckpt_dir)}

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.hidden_dim >= 8 and self.hidden_dim % self.num_heads == 0, "policy.hidden_dim", self.hidden_dim,
               f"must be >= 8 and divisible by policy.num_heads={self.num_heads}")
        _check(self.num_heads >= 1 and self.num_kv_heads >= 1 and self.num_heads % self.num_kv_heads == 0, "policy.num_kv_heads",
               self.num_kv_heads, f"must be >= 1 and divide policy.num_heads={self.num_heads}")
        _check(self.num_layers >= 1, "policy.num_layers", self.num_layers, "must be >= 1")
        _check(self.vision_layers >= 1, "policy.vision_layers", self.vision_layers, "must be >= 1")
        _check(self.vision_dim >= 8 and self.vision_dim % 2 == 0, "policy.vision_dim", self.vision_dim, "must be even and >= 8")
        _check(self.patch_size >= 2 and self.image_size % self.patch_size == 0, "policy.patch_size", self.patch_size,
               f"must be >= 2 and divide policy.image_size={self.image_size}")
        _check(4 <= self.max_text_tokens <= 512, "policy.max_text_tokens", self.max_text_tokens, "must be in [4, 512]")
        _check(self.lora_rank >= 0, "policy.lora_rank", self.lora_rank, "must be >= 0 (0: train every weight)")
        _check(self.lora_alpha > 0, "policy.lora_alpha", self.lora_alpha, "must be > 0")
        _check(self.dtype in DTYPE_NAMES, "policy.dtype", self.dtype, f"allowed: {', '.join(DTYPE_NAMES)}")
        _check(self.proprio_std_min >= 0, "policy.proprio_std_min", self.proprio_std_min, "must be >= 0")
        if self.pretrained_path is not None:
            for sub in (VISION_DIR, LANGUAGE_DIR):
                _check((Path(self.pretrained_path) / sub / "config.json").is_file(), "policy.pretrained_path",
                       self.pretrained_path, f"needs {sub}/config.json (Hugging Face save_pretrained format)")
