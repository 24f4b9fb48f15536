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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from asyncvla.policies.base import ObsBatch, Policy
from asyncvla.policies.hf import DTYPES, LANGUAGE_DIR, VISION_DIR, apply_lora, build_backbone, prefix_mask, tokenizer_for, vision_tokens
from asyncvla.policies.oft.config import OftConfig
from asyncvla.policies.processor import Processor, bin_centers
from asyncvla.policies.registry import register
from asyncvla.policies.tokens import TokenActions, ordinal_logits


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.GELU(), nn.Linear(n_out, n_out))


@register("oft")
class OftVLA(TokenActions, Policy):
    def __init__(self, cfg: OftConfig, action_dim: int, proprio_dim: int):
        super().__init__()
        self.cfg = cfg
        self.chunk, self.action_dim, self.proprio_dim = cfg.chunk, action_dim, proprio_dim
        self.temperature = cfg.temperature
        self.num_bins = cfg.action_bins
        self.freeze_spread = False
        self.tokenizer = tokenizer_for(cfg)
        self.vision, self.language_model = build_backbone(cfg, self.tokenizer.vocab_size + cfg.action_bins)
        h, dv = self.language_model.config.hidden_size, self.vision.config.hidden_size
        image_size = int(getattr(self.vision.config, "image_size", cfg.image_size))
        self.processor = Processor(proprio_dim, action_dim, image_size, cfg.proprio_std_min, image_scale=2.0)  # SigLIP: [-1, 1]
        self.projector = _mlp(dv, h)
        self.proprio_proj = _mlp(proprio_dim, h)
        self.action_slots = nn.Parameter(0.02 * torch.randn(cfg.chunk * action_dim, h))
        self.value_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        self.action_head = nn.Linear(h, 2 + cfg.action_bins) if cfg.ordinal else None
        self.register_buffer("centers", bin_centers(cfg.action_bins), persistent=False)
        dtype = DTYPES[cfg.dtype]
        self.vision.to(dtype)
        self.language_model.to(dtype)
        if cfg.lora_rank > 0:
            self.vision.requires_grad_(False)
            self.language_model = apply_lora(self.language_model, cfg)
        if cfg.gradient_checkpointing:
            self.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    @property
    def device(self) -> torch.device:
        return self.action_slots.device

    def prepare_rl(self, cfg: OftConfig) -> None:
        self.freeze_spread = cfg.ordinal  # as the tiny VLA: RL moves the means of an ordinal head

    # -- the forward pass -----------------------------------------------------------------
    def _prefix(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt embeddings [B, n, H] fp32, valid [B, n] bool)."""
        b, dtype = len(obs), self.language_model.dtype
        patches = vision_tokens(self.vision, self.processor.camera_images(obs, self.cfg.cameras).to(dtype))  # [C*B, p, Dv]
        images = torch.cat(self.projector(patches.float()).split(b), dim=1)  # [B, C*p, H]
        proprio = self.proprio_proj(self.processor.proprio(obs.proprio))[:, None]  # [B, 1, H]
        ids, valid = self.tokenizer(obs.instructions, self.cfg.max_text_tokens)
        text = self.language_model.get_input_embeddings()(torch.as_tensor(ids, device=self.device)).float()  # [B, T, H]
        ones = torch.ones(b, images.shape[1] + 1, dtype=torch.bool, device=self.device)
        return torch.cat([images, proprio, text], dim=1), torch.cat([ones, torch.as_tensor(valid, device=self.device)], dim=1)

    def logits(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, K, A, N] at temperature 1, value [B])."""
        prefix, valid = self._prefix(obs)
        b, n, q = prefix.shape[0], prefix.shape[1], self.action_slots.shape[0]
        seq = torch.cat([prefix, self.action_slots.expand(b, -1, -1)], dim=1).to(self.language_model.dtype)
        out = self.language_model.get_decoder()(inputs_embeds=seq, attention_mask=prefix_mask(valid, q)).last_hidden_state.float()
        slots = out[:, n:]  # [B, Q, H]
        if self.action_head is not None:
            logits = ordinal_logits(self.action_head(slots), self.centers, self.freeze_spread)
        else:  # the LM head's rows of the action tokens (the last N of the vocabulary)
            logits = F.linear(slots, self.language_model.get_output_embeddings().weight[-self.num_bins:].float())
        pooled = (out[:, :n] * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)  # [B, H]
        if self.cfg.detach_value:
            pooled = pooled.detach()
        return logits.view(b, self.chunk, self.action_dim, self.num_bins), self.value_head(pooled).squeeze(-1)

    # -- checkpoints ----------------------------------------------------------------------
    def save_architecture(self, out: Path) -> None:
        """With pretrained_path: the backbone configs (and tokenizer) beside the checkpoint's weights, so
        the checkpoint rebuilds without the original directory (`HFVLAConfig.at_checkpoint`)."""
        if self.cfg.pretrained_path is None:
            return
        lm = self.language_model.get_base_model() if self.cfg.lora_rank > 0 else self.language_model
        self.vision.config.save_pretrained(str(out / VISION_DIR))
        lm.config.save_pretrained(str(out / LANGUAGE_DIR))
        tok = getattr(self.tokenizer, "tok", None)
        if tok is not None:
            tok.save_pretrained(str(out / LANGUAGE_DIR))
