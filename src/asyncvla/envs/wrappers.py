"""Env wrappers: image resize, success-only reward, latency injection, fault injection (crash or hang)."""

from __future__ import annotations

import threading
import time

import numpy as np
from PIL import Image

from asyncvla.config import WrapperConfig
from asyncvla.envs.base import Env, EnvCrashed, EnvHung, Obs, StepOut


class _Wrapper:
    def __init__(self, env: Env):
        self.env = env

    def __getattr__(self, name):  # instruction, action_dim, ... come from the wrapped env
        return getattr(self.env, name)

    @property
    def unwrapped(self) -> Env:
        """The backend's own env under every wrapper (to set an attribute on it, not on a wrapper)."""
        return getattr(self.env, "unwrapped", self.env)

    def reset(self, seed: int) -> Obs:
        return self.env.reset(seed)

    def step(self, action: np.ndarray) -> StepOut:
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


class ResizeImage(_Wrapper):
    """Resizes every camera image to size x size (for backends that render at a fixed size)."""

    def __init__(self, env: Env, size: int):
        super().__init__(env)
        self.size = size

    def _fix(self, obs: Obs) -> Obs:
        obs.image = resize_image(obs.image, self.size)
        obs.extra_images = {k: resize_image(v, self.size) for k, v in obs.extra_images.items()}
        return obs

    def reset(self, seed: int) -> Obs:
        return self._fix(self.env.reset(seed))

    def step(self, action: np.ndarray) -> StepOut:
        out = self.env.step(action)
        out.obs = self._fix(out.obs)
        return out


class Latency(_Wrapper):
    """Adds latency_s + U(0, jitter_s) of wall time (no CPU) to every step."""

    def __init__(self, env: Env, latency_s: float, jitter_s: float, seed: int):
        super().__init__(env)
        self.latency_s, self.jitter_s = latency_s, jitter_s
        self.rng = np.random.default_rng(seed)

    def step(self, action: np.ndarray) -> StepOut:
        time.sleep(self.latency_s + self.jitter_s * self.rng.random())
        return self.env.step(action)


class SuccessReward(_Wrapper):
    """Replaces the reward with 1.0 on steps where the task succeeds, else 0.0; the env's own
    reward stays in `info["env_reward"]`."""

    def step(self, action: np.ndarray) -> StepOut:
        out = self.env.step(action)
        out.info = {**out.info, "env_reward": out.reward}
        out.reward = 1.0 if out.success else 0.0
        return out


class Faults(_Wrapper):
    """With probability p per step the env faults as `kind` (crash: raises; hang: blocks, then
    raises), and with probability hang_prob it hangs."""

    def __init__(self, env: Env, prob: float, kind: str, hang_s: float, seed: int, index: int, hang_prob: float = 0.0):
        super().__init__(env)
        self.prob, self.kind, self.hang_s, self.index, self.hang_prob = prob, kind, hang_s, index, hang_prob
        self.rng = np.random.default_rng(seed)
        self._closed = threading.Event()

    def step(self, action: np.ndarray) -> StepOut:
        u = self.rng.random()
        if u < self.prob + self.hang_prob:
            if self.kind == "hang" or u >= self.prob:
                # Ends early only when the env is closed (the watchdog closes an env it replaced),
                # so a soak with unending hangs does not pile up sleeping threads and envs.
                self._closed.wait(self.hang_s)
                raise EnvHung(self.index, f"injected hang ({self.hang_s:.1f} s)")
            raise EnvCrashed(self.index, "injected crash")
        return self.env.step(action)

    def close(self) -> None:
        self._closed.set()
        super().close()


def wrap(env: Env, cfg: WrapperConfig, seed: int, index: int, image_size: int | None = None) -> Env:
    if image_size is not None:
        env = ResizeImage(env, image_size)
    if cfg.reward == "success":
        env = SuccessReward(env)
    if cfg.latency_s > 0 or cfg.latency_jitter_s > 0:
        env = Latency(env, cfg.latency_s, cfg.latency_jitter_s, seed)
    if cfg.fault_prob > 0 or cfg.hang_prob > 0:
        env = Faults(env, cfg.fault_prob, cfg.fault_kind, cfg.fault_hang_s, seed + 1, index, cfg.hang_prob)
    return env
