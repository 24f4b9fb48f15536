"""SFT warm start made by the run itself: record expert demos, behaviour-clone, start RL from it.

Both steps are cached under `warm_start.cache_dir`, keyed by a hash of everything that
shapes them (env, policy architecture, demo count, SFT hyper-parameters, seed, and the source
of the model, SFT, recording and env code), so the
second run of a preset starts RL at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from filelock import FileLock

from asyncvla.config import TrainConfig, to_dict


def _seeds(cfg: TrainConfig) -> tuple[int, int]:
    """(demo env seed, SFT seed): warm_start.demo_seed and warm_start.seed, defaulting to env.seed and run.seed."""
    ws = cfg.warm_start
    return (cfg.env.seed if ws.demo_seed is None else ws.demo_seed, cfg.run.seed if ws.seed is None else ws.seed)


def _demo_env(cfg: TrainConfig):
    # The backend's own time limit: a slow expert (demo_expert_speed < 1) must finish its demos
    # even when RL episodes are cut shorter.
    return dataclasses.replace(cfg.env, num_envs=1, split="train", seed=_seeds(cfg)[0], max_episode_steps=None)


CODE = ("policies", "algos/sft.py", "data/demos.py", "envs")
"""Package paths whose source shapes the demos and the SFT checkpoint (part of the cache key)."""


def code_digest() -> str:
    """Hash of the source in CODE: a change to the model, SFT or recording code rebuilds the cache."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in CODE:
        for f in sorted((root / rel).rglob("*.py")) if (root / rel).is_dir() else [root / rel]:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _key(cfg: TrainConfig) -> str:
    env = _demo_env(cfg)
    policy = dataclasses.replace(cfg.policy.without_rl_settings(), init=None, device="cpu", temperature=1.0)
    blob = json.dumps({"env": to_dict(env), "policy": to_dict(policy), "warm": to_dict(cfg.warm_start),
                       "seed": _seeds(cfg)[1], "code": code_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_warm_start(cfg: TrainConfig, progress: bool = True) -> str | None:
    """Makes (or finds) the SFT checkpoint of `cfg.warm_start` and returns its directory.

    None when the warm start is off or the policy already starts from `policy.init`.
    """
    ws = cfg.warm_start
    if ws.demo_episodes == 0 or cfg.policy.init:
        return None
    from asyncvla.algos.sft import train_sft
    from asyncvla.data.demos import record_demos

    root = Path(ws.cache_dir).expanduser() / f"{cfg.env.task}-{_key(cfg)}"
    demos, ckpt = root / "demos", root / "sft"
    root.parent.mkdir(parents=True, exist_ok=True)
    # Seeds of one preset are often started side by side: the first run builds the cache, the
    # others wait for it instead of writing the same demos and checkpoint at once.
    with FileLock(str(root) + ".lock"):
        if not (root / "demos.done").exists():
            record_demos(_demo_env(cfg), episodes=ws.demo_episodes, out=demos, progress=progress,
                         action_noise=ws.demo_action_noise, expert_speed=ws.demo_expert_speed)
            (root / "demos.done").write_text("ok")
        if not (root / "sft.done").exists():
            policy_cfg = dataclasses.replace(cfg.policy.without_rl_settings(), init=None, device=cfg.run.device)
            train_sft(cfg.env.id, demos, ckpt, steps=ws.sft_steps, batch_size=ws.sft_batch_size, lr=ws.sft_lr,
                      policy_cfg=policy_cfg, seed=_seeds(cfg)[1], progress=progress)
            (root / "sft.done").write_text("ok")
    return str(ckpt)
