"""Versioned weights: the trainer publishes after each optimizer step, inference pulls.

A version is the number of optimizer steps behind the weights. Publishing copies the
tensors to CPU, so the trainer can keep updating its own copy while readers load this one
(on GPU a WeightSync broadcast replaces the copy; the versioning stays the same).
"""

from __future__ import annotations

import threading
from typing import Mapping

import torch


class WeightStore:
    """The latest published weights and their version; thread-safe, readers never block writers long."""

    def __init__(self, state: Mapping[str, torch.Tensor] | None = None, version: int = 0):
        self._lock = threading.Lock()
        self._state = _cpu_copy(state) if state is not None else None
        self._version = version

    def publish(self, state: Mapping[str, torch.Tensor], version: int) -> None:
        """Stores a CPU copy of `state` as `version` (must not go backwards)."""
        copy = _cpu_copy(state)  # outside the lock: copying is the slow part
        with self._lock:
            if version < self._version:
                raise ValueError(f"publish: version {version} < current {self._version}")
            self._state, self._version = copy, version

    @property
    def version(self) -> int:
        return self._version

    def latest(self) -> tuple[int, Mapping[str, torch.Tensor] | None]:
        """(version, state) of the newest weights; state is shared, treat it as read-only."""
        with self._lock:
            return self._version, self._state


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
