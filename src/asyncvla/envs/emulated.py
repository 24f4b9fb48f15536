"""`emulated/*`: a point-reaching task whose steps hold wall time without using CPU.

It stands in for a GPU-rendered simulator in scheduling and scaling benchmarks: a step
sleeps for a latency drawn from a configurable distribution (mean, jitter, long tail),
while the task itself is real enough to learn (move a point to a goal; both are in the
proprio vector and drawn into the image).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from asyncvla.config import EnvConfig, _check
from asyncvla.envs.base import Obs, StepOut

@dataclass
class EmulatedConfig:
    """An emulated simulator: it holds wall time without using CPU, as a GPU renderer would."""

    step_mean_s: float = 0.02
    """Mean wall time of one env step, in seconds."""
    step_tail_prob: float = 0.0
    """Probability that a step falls into the long tail."""
    step_tail_factor: float = 10.0
    """A tail step takes this many times the mean."""
    step_jitter: float = 0.1
    """Relative spread of ordinary steps (uniform in mean*(1±jitter))."""
    reset_s: float = 0.1
    """Wall time of a reset, in seconds."""
    episode_len: int = 100
    """Steps until the episode truncates."""
    success_radius: float = 0.15
    """The task (move the point to the goal) succeeds within this distance."""
    proprio_dim: int = 8
    """Size of the proprio vector."""
    action_dim: int = 4
    """Size of one action."""

    def __post_init__(self) -> None:
        _check(self.step_mean_s >= 0, "env.emulated.step_mean_s", self.step_mean_s, "must be >= 0")
        _check(0 <= self.step_tail_prob <= 1, "env.emulated.step_tail_prob", self.step_tail_prob, "must be in [0, 1]")
        _check(self.step_tail_factor >= 1, "env.emulated.step_tail_factor", self.step_tail_factor, "must be >= 1")
        _check(0 <= self.step_jitter < 1, "env.emulated.step_jitter", self.step_jitter, "must be in [0, 1)")
        _check(self.reset_s >= 0, "env.emulated.reset_s", self.reset_s, "must be >= 0")
        _check(self.episode_len >= 1, "env.emulated.episode_len", self.episode_len, "must be >= 1")
        _check(self.success_radius > 0, "env.emulated.success_radius", self.success_radius, "must be > 0")
        _check(self.action_dim >= 1, "env.emulated.action_dim", self.action_dim, "must be >= 1")
        _check(self.proprio_dim >= 2 * self.action_dim, "env.emulated.proprio_dim", self.proprio_dim, f"must be >= 2 * action_dim = {2 * self.action_dim} (position and goal)")


@dataclass
class EmulatedEnvConfig(EnvConfig):
    """`emulated/*` envs: the task name picks a latency profile, `emulated` holds the rest."""

    emulated: EmulatedConfig = field(default_factory=EmulatedConfig)
    """Parameters of the emulated env (a profile's fields override these)."""


# Named step-latency profiles; `emulated/custom` takes env.emulated as given.
PROFILES: dict[str, dict] = {
    "custom": {},
    "balanced": dict(step_mean_s=0.02, step_tail_prob=0.0, reset_s=0.05),
    "long-tail": dict(step_mean_s=0.02, step_tail_prob=0.05, step_tail_factor=10.0, reset_s=0.05),
    "fast": dict(step_mean_s=0.0, step_jitter=0.0, reset_s=0.0),
}


class EmulatedEnv:
    def __init__(self, cfg: EmulatedConfig, image_size: int, index: int):
        self.cfg = cfg
        self.image_size = image_size
        self.action_dim = cfg.action_dim
        self.proprio_dim = cfg.proprio_dim
        self.max_episode_steps = cfg.episode_len
        self.instruction = "move the point to the goal"
        # Latency draws use their own stream so timing never changes the task's randomness.
        self._lat_rng = np.random.default_rng([index, 17])
        self._pos = np.zeros(cfg.action_dim, np.float32)
        self._goal = np.zeros(cfg.action_dim, np.float32)

    def _hold(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def _step_latency(self) -> float:
        c = self.cfg
        if c.step_tail_prob > 0 and self._lat_rng.random() < c.step_tail_prob:
            return c.step_mean_s * c.step_tail_factor
        return c.step_mean_s * (1 + c.step_jitter * (2 * self._lat_rng.random() - 1))

    def _obs(self) -> Obs:
        n = self.image_size
        img = np.zeros((n, n, 3), np.uint8)
        for pt, ch in ((self._pos, 0), (self._goal, 1)):
            r, c = (np.clip((pt[:2] if len(pt) > 1 else np.r_[pt, 0]) * 0.5 + 0.5, 0, 1) * (n - 1)).astype(int)
            img[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2, ch] = 255
        proprio = np.zeros(self.proprio_dim, np.float32)
        proprio[: self.action_dim] = self._pos
        proprio[self.action_dim : 2 * self.action_dim] = self._goal
        return Obs(image=img, proprio=proprio, instruction=self.instruction)

    def reset(self, seed: int) -> Obs:
        self._hold(self.cfg.reset_s)
        rng = np.random.default_rng(seed)
        self._pos = rng.uniform(-0.5, 0.5, self.action_dim).astype(np.float32)
        self._goal = rng.uniform(-0.5, 0.5, self.action_dim).astype(np.float32)
        return self._obs()

    def step(self, action: np.ndarray) -> StepOut:
        self._hold(self._step_latency())
        before = float(np.linalg.norm(self._pos - self._goal))
        self._pos = np.clip(self._pos + 0.1 * np.clip(action, -1, 1), -1, 1).astype(np.float32)
        dist = float(np.linalg.norm(self._pos - self._goal))
        success = dist < self.cfg.success_radius
        return StepOut(self._obs(), reward=(before - dist) * 10 + float(success), terminated=False, truncated=False, success=success)

    def close(self) -> None:
        pass


class EmulatedBackend:
    name = "emulated"
    config = EmulatedEnvConfig
    description = "point reaching whose steps hold configurable wall time without CPU (benchmarks)"
    cameras = ("main",)

    def available(self) -> tuple[bool, str]:
        return True, ""

    def tasks(self) -> list[str]:
        return list(PROFILES)

    def make(self, task: str, cfg: EmulatedEnvConfig, index: int) -> EmulatedEnv:
        ecfg = dataclasses.replace(cfg.emulated, **PROFILES[task])
        return EmulatedEnv(ecfg, cfg.image_size, index)


BACKEND = EmulatedBackend()
