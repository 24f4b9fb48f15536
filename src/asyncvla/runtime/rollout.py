"""RolloutWorker: a policy copy that answers one inference call per (env worker, stage) batch.

The synchronous baseline's inference role (RLinf's rollout worker): a fixed batch per
lockstep step, weights replaced only between rollout epochs. The async runtime's
`RolloutServer` adds dynamic batching on top of the same policy interface.
"""

from __future__ import annotations

from typing import Mapping

import torch

from asyncvla.config import PolicyConfig
from asyncvla.metrics.spans import Span, SpanRecorder
from asyncvla.policies.base import ActOut, ObsBatch, Policy
from asyncvla.policies.registry import make_policy
from asyncvla.runtime import weight_sync


def build_policy(cfg: PolicyConfig, action_dim: int, proprio_dim: int, seed: int) -> Policy:
    """The policy of `cfg`, from `cfg.init` (e.g. an SFT checkpoint) when set, else freshly seeded."""
    torch.manual_seed(seed)
    if cfg.init:
        from asyncvla.policies.checkpoint import load_policy

        policy = load_policy(cfg.init, device=cfg.device)
        # The checkpoint fixes the architecture; the run's sampling temperature still applies.
        policy.temperature = cfg.temperature
        return policy
    return make_policy(cfg, action_dim, proprio_dim)


class RolloutWorker:
    """Holds a policy copy; `act` samples action chunks, `set_weights` installs a trainer version."""

    def __init__(self, policy_cfg: PolicyConfig, action_dim: int, proprio_dim: int, seed: int = 0,
                 worker_index: int = 0, trace: bool = True, policy: Policy | None = None):
        self.policy = policy if policy is not None else build_policy(policy_cfg, action_dim, proprio_dim, seed)
        self.policy.eval()
        self.rec = SpanRecorder("rollout", worker_index, enabled=trace)

    @property
    def version(self) -> int:
        return self.policy.version

    def act(self, obs: ObsBatch, deterministic: bool = False) -> ActOut:
        """Action chunks, behaviour logprob, value and version for a batch of observations."""
        with self.rec.span("infer"):
            return self.policy.act(obs, deterministic=deterministic)

    def set_weights(self, state: Mapping[str, torch.Tensor], version: int) -> int:
        """Installs trainer weights `version` (copied onto this policy's device); returns the version."""
        with self.rec.span("weight_sync"):
            self.policy.load_state_dict(state)
            self.policy.version = int(version)
        return self.policy.version

    # -- NCCL / gloo weight broadcast (see weight_sync.NcclWeightSync) ---------------------
    def init_weight_group(self, addr: str, port: int, rank: int, world_size: int, backend: str = "nccl") -> None:
        weight_sync.init_group(addr, port, rank, world_size, backend)

    def receive_weights(self) -> int:
        """Receives a broadcast from the trainer (rank 0) into this policy; returns the version."""
        with self.rec.span("weight_sync"):
            self.policy.version = weight_sync.broadcast_module(self.policy, self.policy.version, src=0)
        return self.policy.version

    def drain_spans(self) -> list[Span]:
        return self.rec.drain()
