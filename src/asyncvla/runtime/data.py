"""What travels between workers: per-env segments and time-major rollout batches.

An env worker appends one `Step` per decision to each env's buffer and cuts the buffer
into a `Segment` (consecutive decisions of one env). The trainer learns from a `Rollout`:
B segments stacked time-major to `[T, B]` (padded with mask=False where lengths differ,
which the async runtime needs and sync never produces). Everything is numpy so it moves
through Ray's shared-memory object store without copies of torch storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from asyncvla.envs.base import Obs
from asyncvla.policies.base import ObsBatch


@dataclass
class Step:
    """One decision of one env: the observation acted on, what the policy did, what followed."""

    obs: Obs
    action: np.ndarray
    """[K, A] the executed chunk."""
    logprob: float
    """Behaviour logprob of the chunk."""
    value: float
    """Value estimate of `obs` by the acting policy."""
    version: int
    """Policy version that produced the action."""
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    valid: bool = True
    """False when the env failed inside this decision (the cut episode is not trained on)."""
    final_obs: Obs | None = None
    """Last observation of the episode when it was truncated here (bootstrap)."""
    num_steps: int = 0
    """Simulator steps executed by the chunk."""
    aux: np.ndarray | None = None
    """`ActOut.aux` of this sample (None for most policies)."""


@dataclass
class Segment:
    """Consecutive decisions of one env, plus the observation that follows the last one."""

    env_id: int
    """Global env id: worker_index * num_envs + local index."""
    steps: list[Step]
    next_obs: Obs
    """Observation after the last step (already the reset observation if the episode ended)."""
    group: tuple | None = None
    """GRPO in the async runtime: id of the group of episodes this one is scored with."""

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def env_steps(self) -> int:
        """Simulator steps behind these decisions."""
        return sum(st.num_steps for st in self.steps)


@dataclass
class Rollout:
    """B segments stacked time-major. Index (t, b) of the flat `obs` is t * B + b."""

    obs: ObsBatch
    """[T*B] observations acted on."""
    actions: np.ndarray
    """[T, B, K, A] float32."""
    logprob: np.ndarray
    """[T, B] float32 behaviour logprob."""
    value: np.ndarray
    """[T, B] float32 value at acting time."""
    version: np.ndarray
    """[T, B] int64 policy version of each sample."""
    reward: np.ndarray
    """[T, B] float32."""
    terminated: np.ndarray
    """[T, B] bool."""
    truncated: np.ndarray
    """[T, B] bool."""
    mask: np.ndarray
    """[T, B] bool: real, trainable samples."""
    final_obs: ObsBatch | None
    """[N] final observations of the episodes truncated at `final_index`."""
    final_index: np.ndarray
    """[N, 2] int (t, b) of each truncated step with a final observation."""
    next_obs: ObsBatch
    """[B] observation after each env's last step (bootstrap of the cut)."""
    env_ids: np.ndarray
    """[B] global env ids."""
    lengths: np.ndarray
    """[B] int: decisions of each column's segment (rows past it are padding)."""
    env_steps: int = 0
    """Simulator steps behind these samples."""
    aux: np.ndarray | None = None
    """[T, B, ...] float32 `ActOut.aux` of each sample (zeros in padding), or None."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.reward.shape  # (T, B)

    @property
    def num_samples(self) -> int:
        return int(self.mask.sum())


def stack_segments(segments: Sequence[Segment]) -> Rollout:
    """Stacks segments to `[T, B]` with T = the longest; shorter ones are padded with mask=False.

    Padding repeats the segment's last observation so every flat obs index is a real image.
    """
    if not segments:
        raise ValueError("stack_segments: no segments")
    T, B = max(len(s) for s in segments), len(segments)
    if T == 0:
        raise ValueError("stack_segments: all segments are empty")
    first = next(s.steps[0] for s in segments if s.steps)
    K, A = first.action.shape
    actions = np.zeros((T, B, K, A), np.float32)
    logprob, value, reward = (np.zeros((T, B), np.float32) for _ in range(3))
    version = np.zeros((T, B), np.int64)
    aux = None if first.aux is None else np.zeros((T, B, *first.aux.shape), np.float32)
    terminated, truncated, mask = (np.zeros((T, B), bool) for _ in range(3))
    obs_grid: list[list[Obs]] = [[None] * B for _ in range(T)]  # type: ignore[list-item]
    finals: list[Obs] = []
    final_index: list[tuple[int, int]] = []
    for b, seg in enumerate(segments):
        for t in range(T):
            if t < len(seg.steps):
                st = seg.steps[t]
                obs_grid[t][b] = st.obs
                actions[t, b] = st.action
                if aux is not None:
                    aux[t, b] = st.aux
                logprob[t, b], value[t, b], version[t, b], reward[t, b] = st.logprob, st.value, st.version, st.reward
                terminated[t, b], truncated[t, b], mask[t, b] = st.terminated, st.truncated, st.valid
                if st.final_obs is not None and st.truncated and not st.terminated:
                    finals.append(st.final_obs)
                    final_index.append((t, b))
            else:
                obs_grid[t][b] = seg.steps[-1].obs if seg.steps else seg.next_obs
    return Rollout(
        obs=ObsBatch.stack([o for row in obs_grid for o in row]),
        actions=actions, logprob=logprob, value=value, version=version, reward=reward,
        terminated=terminated, truncated=truncated, mask=mask,
        final_obs=ObsBatch.stack(finals) if finals else None,
        final_index=np.asarray(final_index, np.int64).reshape(-1, 2),
        next_obs=ObsBatch.stack([s.next_obs for s in segments]),
        env_ids=np.asarray([s.env_id for s in segments], np.int64),
        lengths=np.asarray([max(len(s), 1) for s in segments], np.int64),
        env_steps=sum(s.env_steps for s in segments),
        aux=aux,
    )
