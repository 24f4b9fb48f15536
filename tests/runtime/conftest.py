"""Fakes for the runtime's pure-logic tests (a policy whose outputs reveal its weights), and a local Ray."""

import numpy as np
import pytest
import torch

from asyncvla.policies.base import ActOut, ObsBatch, Policy


class FakePolicy(Policy):
    """act: action = w * proprio[:, :A] (so a test sees which weights acted); `hook` runs mid-batch."""

    chunk, action_dim = 1, 2

    def __init__(self, w: float = 1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(float(w)))
        self.hook = None
        self.calls: list[int] = []

    @torch.no_grad()
    def act(self, obs: ObsBatch, deterministic: bool = False) -> ActOut:
        n = len(obs)
        self.calls.append(n)
        first = float(self.w) * obs.proprio[: n // 2, :2]
        if self.hook is not None:
            self.hook()  # e.g. a weight publish arriving while the batch runs
        second = float(self.w) * obs.proprio[n // 2 :, :2]
        actions = np.concatenate([first, second])[:, None, :].astype(np.float32)  # [n, 1, 2]
        return ActOut(actions, np.full(n, float(self.w), np.float32), np.zeros(n, np.float32), self.version)


def make_obs(n: int, start: float = 0.0) -> ObsBatch:
    proprio = (start + np.arange(n, dtype=np.float32))[:, None].repeat(4, axis=1)  # [n, 4]
    return ObsBatch(np.zeros((n, 8, 8, 3), np.uint8), proprio, ["task"] * n)


@pytest.fixture
def fake_policy():
    return FakePolicy


@pytest.fixture
def obs_of():
    return make_obs


@pytest.fixture
def ray_local():
    ray = pytest.importorskip("ray")
    from asyncvla.runtime.backends.ray import init_ray

    init_ray(None, min_cpus=2)
    yield ray
    ray.shutdown()
