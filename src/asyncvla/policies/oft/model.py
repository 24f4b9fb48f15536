"""`oft`: an OpenVLA-OFT-style VLA built from `transformers` parts.

sequence = [vision patches per camera (SigLIP -> MLP projector) | proprio (MLP) | instruction tokens
            | K*A action slots]
through a Llama decoder with the prompt causal and the action slots bidirectional
(`hf.prefix_mask`): the whole chunk is decoded in one forward pass (OFT's parallel decoding).
Each slot's hidden state is scored against the LM head's rows of the last `action_bins` tokens
of the vocabulary (OpenVLA's action tokens), so the chunk logprob is the sum of K*A token logprobs
(RLinf's OpenVLA-OFT RL recipe). Slots are learned embeddings: zero "empty" embeddings with a
bidirectional mask give every slot the same hidden state (queries of zero attend uniformly).
The value head reads the mean of the prompt's hidden states.

With `policy.pretrained_path` the SigLIP and Llama (or any AutoModel vision tower and causal LM)
come from a local directory; `lora_rank` trains LoRA adapters instead of the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asyncvla.policies.base import ObsBatch
from asyncvla.policies.hf import HFVLA, mlp, prefix_mask
from asyncvla.policies.oft.config import OftConfig
from asyncvla.policies.processor import bin_centers
from asyncvla.policies.registry import register
from asyncvla.policies.tokens import TokenActions, ordinal_logits


@register("oft")
class OftVLA(TokenActions, HFVLA):
    def __init__(self, cfg: OftConfig, action_dim: int, proprio_dim: int):
        super().__init__(cfg, action_dim, proprio_dim, action_tokens=cfg.action_bins)
        h = self.hidden_dim
        self.num_bins = cfg.action_bins
        self.freeze_spread = False
        self.proprio_proj = mlp(proprio_dim, h)
        self.action_slots = nn.Parameter(0.02 * torch.randn(cfg.chunk * action_dim, h))
        self.action_head = nn.Linear(h, 2 + cfg.action_bins) if cfg.ordinal else None
        self.register_buffer("centers", bin_centers(cfg.action_bins), persistent=False)

    def prepare_rl(self, cfg: OftConfig) -> None:
        self.freeze_spread = cfg.ordinal  # as the tiny VLA: RL moves the means of an ordinal head

    def logits(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, K, A, N] at temperature 1, value [B])."""
        prefix, valid = self.prompt(obs, self.proprio_proj)
        b, n, q = prefix.shape[0], prefix.shape[1], self.action_slots.shape[0]
        out = self.decode(torch.cat([prefix, self.action_slots.expand(b, -1, -1)], dim=1), prefix_mask(valid, q))
        slots = out[:, n:]  # [B, Q, H]
        if self.action_head is not None:
            logits = ordinal_logits(self.action_head(slots), self.centers, self.freeze_spread)
        else:  # the LM head's rows of the action tokens (the last N of the vocabulary)
            logits = F.linear(slots, self.language_model.get_output_embeddings().weight[-self.num_bins:].float())
        return logits.view(b, self.chunk, self.action_dim, self.num_bins), self.value(out[:, :n], valid)
