"""The env protocol every backend implements.

A backend provides single envs (`Env`): reset to a seeded initial state, step one action,
render an observation. Everything else (many envs per worker, independent stepping,
auto-reset, action-chunk execution, lockstep `step`) lives once in `envs/vector.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class Obs:
    """One env's observation: camera image(s), proprio and the instruction text."""

    image: np.ndarray
    """[H, W, 3] uint8, right side up (the main camera)."""
    proprio: np.ndarray
    """[P] float32."""
    instruction: str
    extra_images: dict[str, np.ndarray] = field(default_factory=dict)
    """The other cameras of `env.cameras` by name, each [H, W, 3] uint8 (the main camera is `image`)."""
    time_left: float = 1.0
    """Fraction of the episode's time limit still ahead (1 at reset, 0 at the limit); set by
    VectorEnv. A critic that sees it can tell an early state from a late one (policy.value_time)."""


@dataclass
class StepOut:
    """What one env step (or one executed action chunk) returns."""

    obs: Obs
    reward: float
    terminated: bool
    truncated: bool
    success: bool
    info: dict[str, Any] = field(default_factory=dict)


class Env(Protocol):
    """A single simulator instance. Backends implement this; `VectorEnv` does the rest."""

    instruction: str
    action_dim: int
    proprio_dim: int
    max_episode_steps: int

    def reset(self, seed: int) -> Obs:
        """Resets to the initial state drawn from `seed` (reproducible)."""
        ...

    def step(self, action: np.ndarray) -> StepOut:
        """Applies one action [A]; `truncated` is left to the caller (VectorEnv counts steps)."""
        ...

    def close(self) -> None: ...


class EnvError(RuntimeError):
    """An env failed; `env_id` says which, so the worker can restart just that env."""

    def __init__(self, env_id: int, message: str):
        super().__init__(f"env {env_id}: {message}")
        self.env_id = env_id


class EnvCrashed(EnvError):
    pass


class EnvHung(EnvError):
    pass


def flip_upright(img: np.ndarray) -> np.ndarray:
    """MuJoCo's offscreen cameras (MetaWorld corner, LIBERO agentview) render upside down."""
    return np.ascontiguousarray(img[::-1, ::-1])
