"""Policy checkpoints: a directory with model.safetensors and a human-readable config.yaml.

config.yaml holds everything needed to rebuild the policy in one call (the resolved
PolicyConfig, action/proprio sizes, version) plus what people want to read next to it
(normalisation statistics, the env id it was trained on, training summary in `extra`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from asyncvla.config import ConfigError, PolicyConfig, from_dict, policy_config_class, to_dict
from asyncvla.policies.base import Policy
from asyncvla.policies.registry import make_policy

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"


def save_policy(policy: Policy, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes `out_dir/model.safetensors` and `out_dir/config.yaml`; returns out_dir.

    `extra` (e.g. {"env_id": ..., "sft": {...}}) is stored at the top level of config.yaml.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; clone to be safe.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in policy.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"version": str(policy.version)})
    policy.save_architecture(out)
    meta: dict[str, Any] = dict(extra or {})
    meta.update(
        policy=to_dict(policy.cfg),
        action_dim=int(policy.action_dim),
        proprio_dim=int(policy.proprio_dim),
        version=int(policy.version),
    )
    processor = getattr(policy, "processor", None)
    if processor is not None and hasattr(processor, "stats"):
        meta["normalization"] = processor.stats()
    (out / CONFIG).write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


def read_checkpoint_config(ckpt_dir: str | Path) -> dict[str, Any]:
    """The parsed config.yaml of a checkpoint; one-line ConfigError when it is not one."""
    path = Path(ckpt_dir) / CONFIG
    if not path.is_file() or not (Path(ckpt_dir) / WEIGHTS).is_file():
        raise ConfigError(f"checkpoint={str(ckpt_dir)!r} is invalid: expected a directory with {CONFIG} and {WEIGHTS}")
    return yaml.safe_load(path.read_text())


# Written by every policy type before each type had its own config class.
_LEGACY_FIELDS = frozenset({"action_bins"})


def _current_fields(policy: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's policy config without the legacy fields its type does not have."""
    names = {f.name for f in dataclasses.fields(policy_config_class(policy.get("type", PolicyConfig.type)))}
    return {k: v for k, v in policy.items() if k in names or k not in _LEGACY_FIELDS}


def load_policy(ckpt_dir: str | Path, device: str | None = None) -> Policy:
    """Rebuilds the saved policy with its weights, statistics and version (on `device` if given)."""
    meta = read_checkpoint_config(ckpt_dir)
    fields = _current_fields(meta["policy"])
    fields = policy_config_class(fields.get("type", PolicyConfig.type)).at_checkpoint(fields, ckpt_dir)
    cfg = from_dict(PolicyConfig, fields, where="checkpoint policy")
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    policy = make_policy(cfg, meta["action_dim"], meta["proprio_dim"])
    state = load_file(str(Path(ckpt_dir) / WEIGHTS), device=str(torch.device(cfg.device)))
    policy.load_state_dict(state)
    policy.version = int(meta.get("version", 0))
    return policy
