"""The VLA families made from Hugging Face `transformers` parts (`oft`, `flow`): what they share.

- `HFVLAConfig` (in the torch-free `hf_config.py`): what those families' configs share.
- `build_backbone`: the vision tower (SigLIP) and the decoder (Llama), from tiny configs or
  from `pretrained_path/{vision_model,language_model}` (Hugging Face format, local only).
- `ByteTokenizer`: instructions as UTF-8 bytes, for the built-in architecture (no tokenizer
  files to download); a `pretrained_path` with a tokenizer uses that one.
- `prefix_mask`: causal attention over the prompt, bidirectional over the action slots.
- `HFVLA`: the policy base: processor, vision tower + projector, language model, the prompt
  embeddings of an observation, the value head on the prompt, LoRA/dtype/checkpointing, and
  the backbone configs a `pretrained_path` checkpoint keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from asyncvla.config import ConfigError
from asyncvla.policies.base import ObsBatch, Policy
from asyncvla.policies.hf_config import LANGUAGE_DIR, VISION_DIR, HFVLAConfig
from asyncvla.policies.processor import Processor

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""torch dtype of each `policy.dtype` (`hf_config.DTYPE_NAMES`)."""


class ByteTokenizer:
    """UTF-8 bytes as tokens: 0 pad, 1 bos, 2 + byte. `vocab_size` text tokens; the action tokens follow."""

    PAD, BOS = 0, 1
    vocab_size = 258

    def __call__(self, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids [B, length] int64, valid [B, length] bool): bos + bytes, cut or right-padded to `length`."""
        ids = np.full((len(texts), length), self.PAD, np.int64)
        for i, t in enumerate(texts):
            row = [self.BOS, *(2 + b for b in t.encode("utf-8"))][:length]
            ids[i, : len(row)] = row
        return ids, ids != self.PAD


class HFTokenizer:
    """A tokenizer from `pretrained_path/language_model` (AutoTokenizer), with ByteTokenizer's call."""

    def __init__(self, path: Path):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.vocab_size = len(self.tok)

    def __call__(self, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tok(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(bool)


def tokenizer_for(cfg: HFVLAConfig):
    if cfg.pretrained_path is not None and (Path(cfg.pretrained_path) / LANGUAGE_DIR / "tokenizer_config.json").is_file():
        return HFTokenizer(Path(cfg.pretrained_path) / LANGUAGE_DIR)
    return ByteTokenizer()


def build_backbone(cfg: HFVLAConfig, vocab_size: int) -> tuple[nn.Module, nn.Module]:
    """(vision tower, causal LM): from `pretrained_path` (weights loaded bit-exact, local files only), or
    the tiny built-in SigLIP + Llama of cfg's sizes with `vocab_size` tokens (random init, torch's RNG)."""
    from transformers import AutoModel, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load would flood a run's log

    if cfg.pretrained_path is not None:
        root = Path(cfg.pretrained_path)
        vision, lm = (_load(auto, root / sub) for auto, sub in ((AutoModel, VISION_DIR), (AutoModelForCausalLM, LANGUAGE_DIR)))
        if lm.config.vocab_size < vocab_size:
            raise ConfigError(f"policy.pretrained_path={cfg.pretrained_path!r} is invalid: its language model has "
                              f"{lm.config.vocab_size} tokens, the action bins need at least {vocab_size}")
        return vision, lm
    vision = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=cfg.vision_dim, num_hidden_layers=cfg.vision_layers, num_attention_heads=max(1, cfg.vision_dim // 32),
        intermediate_size=2 * cfg.vision_dim, image_size=cfg.image_size, patch_size=cfg.patch_size,
        vision_use_head=False))  # the patch tokens are the features; SigLIP's pooling head would be dead weight
    lm = LlamaForCausalLM(LlamaConfig(
        hidden_size=cfg.hidden_dim, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, intermediate_size=2 * cfg.hidden_dim, vocab_size=vocab_size,
        max_position_embeddings=1024, tie_word_embeddings=False))
    return vision, lm


def _load(auto, path: Path) -> nn.Module:
    """A model from a save_pretrained directory; from its config.json alone (random weights, to be
    overwritten by a checkpoint's state) where the directory holds no weights."""
    from transformers import AutoConfig

    if any(path.glob("*.safetensors")) or any(path.glob("*.bin")):
        return auto.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    return auto.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True), dtype=torch.float32)


def vision_tokens(vision: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """[B, n, Dv] patch features of a vision tower (SigLIP, ViT, ... : its last hidden state)."""
    return vision(pixel_values=pixels).last_hidden_state


def apply_lora(lm: nn.Module, cfg: HFVLAConfig) -> nn.Module:
    """The LM with LoRA adapters on its attention and MLP projections and every base weight frozen (peft)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ConfigError(f"policy.lora_rank={cfg.lora_rank} is invalid here: peft is not installed ({e}); pip install peft") from None
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # peft's init of lora_A draws from torch's RNG: seeded by the caller like every other weight.
    return get_peft_model(lm, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets, lora_dropout=0.0))


def prefix_mask(valid: torch.Tensor, num_actions: int, causal: bool = True) -> torch.Tensor:
    """[B, 1, L, L] bool attention mask (True: attend) of a sequence [prefix (L - num_actions) | action slots].

    valid [B, L - num_actions]: the prefix's real tokens (False: padding). The prefix is causal
    (a decoder's prompt) or, `causal=False`, bidirectional (π0's prefix); every action slot sees
    the whole valid prefix and every other slot (OpenVLA-OFT's parallel decoding: one forward
    pass for the whole chunk)."""
    b, n = valid.shape
    length = n + num_actions
    full = torch.ones(length, length, dtype=torch.bool, device=valid.device)
    mask = (torch.tril(full) if causal else full).repeat(b, 1, 1)
    mask[:, n:, n:] = True
    keys = torch.cat([valid, torch.ones(b, num_actions, dtype=torch.bool, device=valid.device)], dim=1)
    mask &= keys[:, None, :]
    mask[:, torch.arange(length), torch.arange(length)] = True  # a padding query sees itself: no empty row (NaN)
    return mask[:, None]


def mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.GELU(), nn.Linear(n_out, n_out))


class HFVLA(Policy):
    """Base of the transformers-based families: builds the shared parts, embeds an observation's prompt."""

    def __init__(self, cfg: HFVLAConfig, action_dim: int, proprio_dim: int, action_tokens: int = 0):
        super().__init__()
        self.cfg = cfg
        self.chunk, self.action_dim, self.proprio_dim = cfg.chunk, action_dim, proprio_dim
        self.temperature = cfg.temperature
        self.tokenizer = tokenizer_for(cfg)
        self.vision, self.language_model = build_backbone(cfg, self.tokenizer.vocab_size + action_tokens)
        h, dv = self.language_model.config.hidden_size, self.vision.config.hidden_size
        image_size = int(getattr(self.vision.config, "image_size", cfg.image_size))
        self.processor = Processor(proprio_dim, action_dim, image_size, cfg.proprio_std_min, image_scale=2.0)  # SigLIP: [-1, 1]
        self.projector = mlp(dv, h)
        self.value_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        self.vision.to(DTYPES[cfg.dtype])
        self.language_model.to(DTYPES[cfg.dtype])
        if cfg.lora_rank > 0:
            self.vision.requires_grad_(False)
            self.language_model = apply_lora(self.language_model, cfg)
        if cfg.gradient_checkpointing:
            self.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    @property
    def hidden_dim(self) -> int:
        return self.language_model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.value_head[0].weight.device

    def prompt(self, obs: ObsBatch, proprio: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, n, H] fp32, valid [B, n] bool) of [vision patches per camera | proprio token (when
        `proprio` projects it) | instruction tokens]."""
        b = len(obs)
        pixels = self.processor.camera_images(obs, self.cfg.cameras).to(self.language_model.dtype)
        patches = vision_tokens(self.vision, pixels)  # [C*B, p, Dv]
        parts = [torch.cat(self.projector(patches.float()).split(b), dim=1)]  # [B, C*p, H]
        if proprio is not None:
            parts.append(proprio(self.processor.proprio(obs.proprio))[:, None])  # [B, 1, H]
        ids, valid = self.tokenizer(obs.instructions, self.cfg.max_text_tokens)
        parts.append(self.language_model.get_input_embeddings()(torch.as_tensor(ids, device=self.device)).float())  # [B, T, H]
        fixed = sum(x.shape[1] for x in parts[:-1])
        ones = torch.ones(b, fixed, dtype=torch.bool, device=self.device)
        return torch.cat(parts, dim=1), torch.cat([ones, torch.as_tensor(valid, device=self.device)], dim=1)

    def decode(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, L, H] fp32 of the language model's decoder over embeddings seq [B, L, H]."""
        return self.language_model.get_decoder()(inputs_embeds=seq.to(self.language_model.dtype), attention_mask=mask
                                                 ).last_hidden_state.float()

    def value(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """V [B] from the mean of the prompt's hidden states [B, n, H] over its valid tokens."""
        pooled = (hidden * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
        return self.value_head(pooled.detach() if self.cfg.detach_value else pooled).squeeze(-1)

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
