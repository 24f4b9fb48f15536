"""`emulated/*`: a point-reaching task whose steps hold wall time without using CPU.

It stands in for a GPU-rendered simulator in scheduling and scaling benchmarks: a step
sleeps for a latency drawn from a configurable distribution (mean, jitter, long tail),
while the task itself is real enough to learn (move a point to a goal; both are in the
proprio vector and drawn into the image).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from asyncvla.config import EmulatedConfig, EnvConfig
from asyncvla.envs.base import Obs, StepOut

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
    description = "point reaching whose steps hold configurable wall time without CPU (benchmarks)"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def tasks(self) -> list[str]:
        return list(PROFILES)

    def make(self, task: str, cfg: EnvConfig, index: int) -> EmulatedEnv:
        ecfg = dataclasses.replace(cfg.emulated, **PROFILES[task])
        return EmulatedEnv(ecfg, cfg.image_size, index)


BACKEND = EmulatedBackend()
