"""Behaviour cloning (SFT) warm start from scripted-expert demonstrations.

Each demo frame t becomes one sample: its observation and the chunk of the next K actions
of the same episode (padded with the episode's last action). The loss is the policy's own
negative chunk logprob per action token, i.e. cross-entropy on the action bins for `tiny`
and Gaussian NLL for `tiny-gaussian`, so SFT trains exactly the distribution RL samples.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from asyncvla.config import MAIN_CAMERA, ConfigError, PolicyConfig, policy_config
from asyncvla.policies.base import ObsBatch, Policy


@dataclass
class DemoData:
    """Demonstration frames, flattened over episodes (what SFT needs from a dataset)."""

    images: np.ndarray
    """[N, S, S, 3] uint8."""
    proprio: np.ndarray
    """[N, P] float32."""
    actions: np.ndarray
    """[N, A] float32, in [-1, 1]."""
    episode_index: np.ndarray
    """[N] int: frames of one episode are contiguous and in time order."""
    instructions: list[str]
    """[N] instruction of each frame."""
    extra_images: dict[str, np.ndarray] = field(default_factory=dict)
    """The other cameras by name, each [N, S, S, 3] uint8."""

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def cameras(self) -> list[str]:
        return [MAIN_CAMERA, *self.extra_images]


def chunk_targets(actions: np.ndarray, episode_index: np.ndarray, chunk: int) -> np.ndarray:
    """[N, A] actions -> [N, K, A]: row t holds actions t..t+K-1 of t's episode, padded
    with that episode's last action. Frames of an episode must be contiguous, in order."""
    n = len(actions)
    idx = np.arange(n)[:, None] + np.arange(chunk)[None, :]  # [N, K]
    # Last frame of each frame's episode: where the episode index changes next.
    change = np.flatnonzero(np.diff(episode_index)) + 1
    ends = np.append(change, n) - 1  # last frame of each run
    run = np.searchsorted(change, np.arange(n), side="right")  # run number of each frame
    idx = np.minimum(idx, ends[run][:, None])
    return actions[idx]


def shift_augment(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Random shifts of up to `pad` pixels (DrQ): pad by edge replication, crop back. [B, S, S, 3]."""
    if pad <= 0:
        return images
    b, s = images.shape[0], images.shape[1]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dx, dy = rng.integers(0, 2 * pad + 1, (2, b))
    return np.stack([padded[i, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(b)])


def drop_images(images: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Modality dropout: each image of [B, S, S, 3] becomes all black with probability `p`.

    The policy must then act from language and proprio alone on those samples, so it cannot
    lean on image features that only identify the few demo episodes (measured on MetaWorld
    reach, where the proprio holds the goal: see the `sft` command's `image_dropout`).
    """
    if p <= 0:
        return images
    drop = rng.random(len(images)) < p  # [B]
    return np.where(drop[:, None, None, None], np.uint8(0), images)


def perturb_proprio(proprio: np.ndarray, scale: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """proprio [B, P] + Gaussian noise of std `noise * scale` per dim (scale [P]: the demos' std), float32.

    The targets stay the expert's actions at the clean state, so the policy learns to act
    the same in a neighbourhood of each demo state (robustness to the drift of closed loop).
    """
    if noise <= 0:
        return proprio
    return (proprio + noise * scale * rng.standard_normal(proprio.shape)).astype(np.float32)


@contextlib.contextmanager
def _temperature_one(policy: Policy) -> Iterator[None]:
    # BC fits the policy's own distribution, not the sharpened/flattened sampling one.
    saved = getattr(policy, "temperature", None)
    if saved is not None:
        policy.temperature = 1.0
    try:
        yield
    finally:
        if saved is not None:
            policy.temperature = saved


def fit_bc(
    policy: Policy,
    data: DemoData,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    augment_pad: int = 4,
    on_step: Callable[[int, float, float], None] | None = None,
    image_dropout: float = 0.0,
    proprio_noise: float = 0.0,
) -> list[float]:
    """Trains `policy` by behaviour cloning on `data`; returns the loss of every step.

    AdamW with a linear warm-up then cosine decay; `on_step(step, loss, lr)` after each step.
    Augmentation per sample: image shifts of up to `augment_pad` px, black image with
    probability `image_dropout` (`drop_images`), proprio noise of `proprio_noise` demo stds
    (`perturb_proprio`).
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    targets = chunk_targets(data.actions, data.episode_index, policy.chunk).astype(np.float32)  # [N, K, A]
    proprio_scale = data.proprio.std(0)  # [P]
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    device = next(policy.parameters()).device
    losses: list[float] = []
    policy.train()
    with _temperature_one(policy):
        for step in range(steps):
            idx = rng.integers(0, len(data), batch_size)
            images = drop_images(shift_augment(data.images[idx], augment_pad, rng), image_dropout, rng)
            extra = {k: drop_images(shift_augment(v[idx], augment_pad, rng), image_dropout, rng)
                     for k, v in data.extra_images.items() if k in policy.cfg.cameras}
            proprio = perturb_proprio(data.proprio[idx], proprio_scale, proprio_noise, rng)
            obs = ObsBatch(images, proprio, [data.instructions[i] for i in idx], extra_images=extra)
            loss = policy.sft_loss(obs, torch.as_tensor(targets[idx], device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))  # syncs with the device once per step; fine at this size
            if on_step is not None:
                on_step(step, losses[-1], sched.get_last_lr()[0])
    policy.eval()
    return losses


def load_demos(demos_dir: str | Path, image_keys: dict[str, str] | None = None) -> DemoData:
    """Reads a LeRobot v3 demo dataset, from `asyncvla demos` or LeRobot (successful episodes only, when any
    succeeded); image_keys maps camera names to image features (`load_dataset`)."""
    from asyncvla.data.lerobot import load_dataset

    if not Path(demos_dir).exists():
        raise ConfigError(f"demos={str(demos_dir)!r} is invalid: no such directory (record one with `asyncvla demos ENV_ID --out DIR`)")
    ds = load_dataset(demos_dir, image_keys=image_keys)
    episode_index = np.asarray(ds.episode_index)
    keep = np.ones(len(episode_index), bool)
    success = np.asarray(getattr(ds, "episode_success", []), bool)
    if success.any():  # cloning an expert's failures only teaches failing
        keep = success[episode_index]
    return DemoData(
        images=np.asarray(ds.images, dtype=np.uint8)[keep],
        proprio=np.asarray(ds.proprio, dtype=np.float32)[keep],
        actions=np.asarray(ds.actions, dtype=np.float32)[keep],
        episode_index=episode_index[keep],
        instructions=[s for s, k in zip(ds.instructions, keep) if k],
        extra_images={k: np.asarray(v, dtype=np.uint8)[keep] for k, v in ds.extra_images.items()},
    )


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    # stderr: the last stdout line of `--json` commands stays the JSON result.
    return Progress(TextColumn("[bold]sft"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False)


def train_sft(
    env_id: str,
    demos_dir: str | Path,
    out_dir: str | Path,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    policy_cfg: PolicyConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    image_dropout: float = 0.0,
    proprio_noise: float = 0.0,
    image_keys: dict[str, str] | None = None,
) -> dict:
    """Behaviour-clones `policy_cfg` on the demos in `demos_dir`; writes a checkpoint and
    `metrics.jsonl` (one line per step: step, loss/bc, lr, time_s) to `out_dir`.

    Returns a summary: out_dir, env_id, steps, frames, episodes, first/final loss, wall_s, samples_per_s.
    """
    from asyncvla.policies.checkpoint import save_policy
    from asyncvla.policies.registry import make_policy

    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if v < 1:
            raise ConfigError(f"sft.{name}={v!r} is invalid: must be >= 1")
    if not lr > 0:
        raise ConfigError(f"sft.lr={lr!r} is invalid: must be > 0")
    if not 0 <= image_dropout < 1:
        raise ConfigError(f"sft.image_dropout={image_dropout!r} is invalid: must be in [0, 1)")
    if not proprio_noise >= 0:
        raise ConfigError(f"sft.proprio_noise={proprio_noise!r} is invalid: must be >= 0")
    policy_cfg = policy_cfg or policy_config()
    data = load_demos(demos_dir, image_keys)
    missing = [c for c in policy_cfg.cameras if c not in data.cameras]
    if missing:
        raise ConfigError(f"policy.cameras={list(policy_cfg.cameras)} is invalid: the demos in {demos_dir} have cameras "
                          f"{', '.join(data.cameras)} (record others with `asyncvla demos --cameras ...`)")
    torch.manual_seed(seed)
    policy = make_policy(policy_cfg, action_dim=data.actions.shape[1], proprio_dim=data.proprio.shape[1])
    processor = getattr(policy, "processor", None)
    if processor is not None:
        processor.fit(data.proprio, data.actions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out / "metrics.jsonl", "w") as log, (_progress() if progress else contextlib.nullcontext()) as bar:
        task = bar.add_task("sft", total=steps, loss=float("nan")) if bar is not None else None

        def on_step(step: int, loss: float, lr_now: float) -> None:
            log.write(json.dumps({"step": step + 1, "loss/bc": loss, "lr": lr_now, "time_s": time.perf_counter() - t0}) + "\n")
            if bar is not None:
                bar.update(task, advance=1, loss=loss)

        losses = fit_bc(policy, data, steps, batch_size, lr, seed=seed, on_step=on_step,
                        image_dropout=image_dropout, proprio_noise=proprio_noise)
    wall_s = time.perf_counter() - t0
    tail = max(1, min(50, steps // 10))
    summary = {
        "out_dir": str(out), "env_id": env_id, "policy_type": policy_cfg.type, "steps": steps, "batch_size": batch_size, "lr": lr,
        "image_dropout": image_dropout, "proprio_noise": proprio_noise,
        "frames": len(data), "episodes": int(len(np.unique(data.episode_index))),
        "first_loss": losses[0], "final_loss": float(np.mean(losses[-tail:])),
        "wall_s": round(wall_s, 2), "samples_per_s": round(steps * batch_size / wall_s, 1),
    }
    save_policy(policy, out, extra={"env_id": env_id, "env_image_size": int(data.images.shape[1]), "sft": summary})
    return summary
