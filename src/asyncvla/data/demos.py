"""Record scripted-expert demonstrations (`asyncvla demos ENV_ID`) as a LeRobot-v3-style dataset.

The expert comes from the env's backend module (`expert_policy(task) -> state -> action`,
acting on `obs.proprio`); backends without one cannot record demos. Envs run through the same
`VectorEnv` as RL rollouts, so demos see exactly the observations a policy will see.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from asyncvla.config import ConfigError, EnvConfig
from asyncvla.data.lerobot import DatasetWriter, Episode
from asyncvla.envs.base import Obs


DEFAULT_ACTION_NOISE = 0.3
"""DART noise of `asyncvla demos` and of the warm start (see `record_demos`). Measured on
MetaWorld reach-v3, 40 demos, default `asyncvla sft`, 30 held-out episodes: success
0.83 / 0.90 / 0.67 for SFT seeds 0 / 1 / 2 on clean demos, 1.0 / 1.0 / 1.0 with this noise
(and 0.97 / 1.0 for demo seeds 1 / 2). The failures inspected overshot the goal and never
came back: clean demos end at success, so they never show the way back. The expert still
succeeds as often with it on pick-place, door-open, button-press-topdown, peg-insert-side
and push (6 episodes each)."""


def _backend_module(cfg: EnvConfig):
    from asyncvla.envs.registry import validate_env_id

    return sys.modules[type(validate_env_id(cfg)).__module__]


def expert_for(cfg: EnvConfig) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted expert of `cfg.id` (from its backend module's `expert_policy`)."""
    make_expert = getattr(_backend_module(cfg), "expert_policy", None)
    if make_expert is None:
        raise ConfigError(f"env.id={cfg.id!r} is invalid for demos: backend {cfg.backend} has no scripted expert")
    return make_expert(cfg.task)


class _Recording:
    """The frames of one env's current episode."""

    def __init__(self, obs: Obs):
        self.obs = obs
        self.images: list[np.ndarray] = []
        self.extra_images: dict[str, list[np.ndarray]] = {k: [] for k in obs.extra_images}
        self.proprio: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.successes: list[bool] = []

    def add(self, action: np.ndarray, reward: float, success: bool, next_obs: Obs) -> None:
        self.images.append(self.obs.image)
        for k, frames in self.extra_images.items():
            frames.append(self.obs.extra_images[k])
        self.proprio.append(self.obs.proprio)
        self.actions.append(action)
        self.rewards.append(reward)
        self.successes.append(success)
        self.obs = next_obs

    def episode(self, success: bool) -> Episode:
        return Episode(self.images, self.proprio, self.actions, self.rewards, self.successes, self.obs.instruction, success,
                       self.extra_images)


def record_demos(cfg: EnvConfig, episodes: int, out: Path, progress: bool = True,
                 action_noise: float = DEFAULT_ACTION_NOISE, expert_speed: float = 1.0, video: bool = False) -> dict:
    """Runs the expert for `episodes` whole episodes and writes them to `out`.

    Episodes end at success (end_on_success is forced on) or at max_episode_steps; failed
    episodes are kept and marked (`meta/episodes` success=False). Returns {episodes, frames,
    success_rate, successes, out, wall_s}.

    `action_noise` > 0 (DART, Laskey et al. 2017): the env executes the expert's action plus
    Gaussian noise of that std (clipped to [-1, 1]) while the dataset records the expert's
    clean action, so the demos visit the states a cloned policy drifts into (overshooting
    the goal, off the straight path) labelled with the expert's correction.

    `expert_speed` < 1 scales the expert's actions down: slow, teleoperation-like demos (a
    cloned policy then runs out of time on far goals, which RL can fix).
    """
    from asyncvla.envs.registry import make_vector_env

    if episodes < 1:
        raise ConfigError(f"episodes={episodes} is invalid: must be >= 1")
    if not 0 < expert_speed <= 1:
        raise ConfigError(f"expert_speed={expert_speed!r} is invalid: must be in (0, 1]")
    if not action_noise >= 0:
        raise ConfigError(f"action_noise={action_noise!r} is invalid: must be >= 0")
    rng = np.random.default_rng(cfg.seed)
    cfg = dataclasses.replace(cfg, end_on_success=True)
    expert = expert_for(cfg)
    module = _backend_module(cfg)
    writer = DatasetWriter(Path(out), fps=float(getattr(module, "FPS", 10)), robot_type=getattr(module, "ROBOT_TYPE", cfg.backend),
                           video=video)
    t0 = time.perf_counter()
    with make_vector_env(cfg) as vec, _progress(progress, episodes, cfg.id) as advance:
        recs = {r.env_id: _Recording(r.obs) for r in vec.reset()}
        while writer.num_episodes < episodes:
            actions = np.stack([expert(recs[i].obs.proprio) for i in range(vec.num_envs)])  # [n, A]
            if expert_speed != 1.0:  # the experts' gains exceed 1: clip first, then slow every dim but the gripper's
                actions = np.clip(actions, -1.0, 1.0)
                actions[:, :-1] *= expert_speed
            executed = actions if action_noise == 0 else np.clip(actions + action_noise * rng.standard_normal(actions.shape), -1, 1)
            for r, action in zip(vec.step(executed), actions):
                rec = recs[r.env_id]
                rec.add(action, r.reward, r.success, r.final_obs if r.done else r.obs)
                if not r.done:
                    continue
                if r.error is None and writer.num_episodes < episodes:
                    writer.add_episode(rec.episode(r.episode_success))
                    advance(r.episode_success)
                recs[r.env_id] = _Recording(r.obs)
    writer.finish()
    successes = writer.episode_successes
    return {"episodes": len(successes), "frames": writer.num_frames, "success_rate": float(np.mean(successes)),
            "successes": successes, "out": str(out), "wall_s": round(time.perf_counter() - t0, 3)}


class _progress:
    """A rich progress bar over episodes (or nothing), as a context giving `advance(success)`."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label
        self.done = self.ok = 0

    def __enter__(self) -> Callable[[bool], None]:
        if self.enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=False)
            self._bar.start()
            self._task = self._bar.add_task(f"demos {self.label}", total=self.total)
        return self._advance

    def _advance(self, success: bool) -> None:
        self.done += 1
        self.ok += int(success)
        if self.enabled:
            self._bar.update(self._task, advance=1, description=f"demos {self.label} success {self.ok}/{self.done}")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.stop()
