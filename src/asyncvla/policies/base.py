"""The policy interface every VLA implements (see docs/architecture.md).

`act` is the no-grad rollout call; `evaluate` is the training call. LeRobot-compatible
names (`select_action`, `predict_action_chunk`, `reset`) sit on top so real VLAs plug in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from asyncvla.config import MAIN_CAMERA, PolicyConfig
from asyncvla.envs.base import Obs


@dataclass
class ObsBatch:
    """A batch of observations as numpy (what travels through Ray's object store)."""

    images: np.ndarray
    """[B, H, W, 3] uint8: the main camera (`Obs.image`)."""
    proprio: np.ndarray
    """[B, P] float32."""
    instructions: list[str]
    sample_keys: np.ndarray | None = None
    """[B] int64 or None: a seed per row for `act`'s sampling noise (set by the env side from
    (env seed, global env id, decision index)), so an action never depends on which batch,
    thread or server served it; None samples from the global torch RNG."""
    time_left: np.ndarray | None = None
    """[B] float32 `Obs.time_left` of each row, or None where no episode clock exists (datasets)."""
    extra_images: dict[str, np.ndarray] = field(default_factory=dict)
    """The other cameras by name (`Obs.extra_images`), each [B, H, W, 3] uint8."""

    @staticmethod
    def stack(obs: Sequence[Obs], sample_keys: Sequence[int] | None = None) -> "ObsBatch":
        names = obs[0].extra_images.keys() if obs else ()
        return ObsBatch(
            images=np.stack([o.image for o in obs]),
            proprio=np.stack([o.proprio for o in obs]).astype(np.float32),
            instructions=[o.instruction for o in obs],
            sample_keys=None if sample_keys is None else np.asarray(sample_keys, np.int64),
            time_left=np.asarray([o.time_left for o in obs], np.float32),
            extra_images={k: np.stack([o.extra_images[k] for o in obs]) for k in names},
        )

    @staticmethod
    def concat(batches: Sequence["ObsBatch"]) -> "ObsBatch":
        keyed = all(b.sample_keys is not None for b in batches)
        return ObsBatch(
            images=np.concatenate([b.images for b in batches]),
            proprio=np.concatenate([b.proprio for b in batches]),
            instructions=[s for b in batches for s in b.instructions],
            sample_keys=np.concatenate([b.sample_keys for b in batches]) if keyed else None,
            time_left=np.concatenate([b.time_left for b in batches]) if all(b.time_left is not None for b in batches) else None,
            extra_images={k: np.concatenate([b.extra_images[k] for b in batches]) for k in batches[0].extra_images},
        )

    def camera(self, name: str) -> np.ndarray:
        """[B, H, W, 3] images of camera `name`: `main` is the main camera, any other an extra one."""
        if name == MAIN_CAMERA:
            return self.images
        if name not in self.extra_images:
            have = ", ".join([MAIN_CAMERA, *self.extra_images])
            raise KeyError(f"camera {name!r} is not in the observation (cameras: {have}); set env.cameras to render it")
        return self.extra_images[name]

    def __len__(self) -> int:
        return len(self.instructions)

    def slice(self, start: int, stop: int) -> "ObsBatch":
        return self._rows(slice(start, stop), self.instructions[start:stop])

    def index(self, idx: np.ndarray) -> "ObsBatch":
        return self._rows(idx, [self.instructions[i] for i in idx])

    def _rows(self, rows, instructions: list[str]) -> "ObsBatch":
        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return ObsBatch(self.images[rows], self.proprio[rows], instructions, take(self.sample_keys), take(self.time_left),
                        {k: v[rows] for k, v in self.extra_images.items()})


def sample_key(seed: int, env_id: int, decision: int) -> int:
    """The sampling seed of decision `decision` of global env `env_id` (a pure function of the three)."""
    return int(np.random.SeedSequence([seed, env_id, decision]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def row_noise(keys: np.ndarray | None, shape: tuple[int, ...], kind: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Noise of `shape` = [B, ...] (`kind`: uniform or normal), row b from its own generator seeded
    with keys[b]; from the global torch RNG when keys is None (e.g. evaluation)."""
    draw = torch.rand if kind == "uniform" else torch.randn
    if keys is None:
        return draw(shape, device=device)
    rows = [draw(shape[1:], generator=torch.Generator().manual_seed(int(k))) for k in keys]
    return torch.stack(rows).to(device)


@dataclass
class ActOut:
    """What `act` returns for a batch of B observations."""

    actions: np.ndarray
    """[B, K, A] float32: K actions per decision (the chunk the env executes)."""
    logprob: np.ndarray
    """[B] float32: log-probability of the whole chunk under the acting policy."""
    value: np.ndarray
    """[B] float32: value estimate of the observation (0 where the policy has no critic)."""
    version: int
    """Policy version (optimizer steps) that produced these actions."""
    aux: np.ndarray | None = None
    """[B, ...] float32 or None: what `evaluate` needs besides the actions to score a sample (a flow
    policy's denoising chain); it travels with the sample to the trainer."""

    def rows(self, start: int, stop: int) -> "ActOut":
        """Rows start..stop (the replies of one client of a batch)."""
        aux = None if self.aux is None else self.aux[start:stop]
        return ActOut(self.actions[start:stop], self.logprob[start:stop], self.value[start:stop], self.version, aux)


class Policy(nn.Module):
    """Base class: vision + language + proprio -> action chunks, chunk logprob, value."""

    cfg: "PolicyConfig"
    """The resolved config the policy was built from (saved in checkpoints)."""
    chunk: int
    action_dim: int
    proprio_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.version = 0
        self._queue: deque[np.ndarray] = deque()

    # -- the RL interface -----------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: ObsBatch, deterministic: bool = False) -> ActOut:
        raise NotImplementedError

    def evaluate(self, obs: ObsBatch, actions: torch.Tensor, aux: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logprob [B], entropy [B], value [B]) of actions [B, K, A] (with `act`'s aux rows), with grad."""
        raise NotImplementedError

    def sft_loss(self, obs: ObsBatch, targets: torch.Tensor) -> torch.Tensor:
        """Behaviour-cloning loss of target chunks [B, K, A] (scalar): the mean negative logprob per action
        token, so SFT fits exactly the distribution RL samples. Policies without a tractable
        logprob of an action alone (flow) override it."""
        logprob, _, _ = self.evaluate(obs, targets)
        return -logprob.mean() / (targets.shape[1] * targets.shape[2])

    def prepare_rl(self, cfg: "PolicyConfig") -> None:
        """Called once on every RL copy of the policy (trainer, rollout servers, evaluation) with the
        run's policy config (of this policy's type), which may differ from the checkpoint's in
        settings that only RL reads (e.g. tiny's rl_spread and value_time). Deterministic: the
        copies must stay identical."""

    def save_architecture(self, out: Path) -> None:
        """Writes what rebuilding this policy needs beyond its config and weights into checkpoint dir `out`."""

    def published_state(self) -> dict[str, torch.Tensor]:
        """What a weight publish sends: the parameters that train. Frozen ones (a backbone under LoRA) never
        change, and every copy of the policy was built with them."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def load_published(self, state: dict[str, torch.Tensor]) -> None:
        """Loads a `published_state` of a copy of this policy."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        if unexpected or trainable & set(missing):
            raise ValueError(f"published weights do not fit this policy: unexpected {unexpected[:3]}, "
                             f"missing {sorted(trainable & set(missing))[:3]}")

    def _as_actions(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Actions as float32 [B, K, A] on the policy's device."""
        return torch.as_tensor(actions, dtype=torch.float32, device=next(self.parameters()).device).reshape(
            -1, self.chunk, self.action_dim)

    def _noise(self, obs: ObsBatch, shape: torch.Size, kind: str) -> torch.Tensor:
        """Sampling noise of `shape` ([B, ...]) for `act`: per row from obs.sample_keys when set."""
        return row_noise(obs.sample_keys, tuple(shape), kind, next(self.parameters()).device)

    # -- LeRobot-compatible names ---------------------------------------------------------
    def predict_action_chunk(self, obs: ObsBatch) -> np.ndarray:
        """[B, K, A] deterministic chunk."""
        return self.act(obs, deterministic=True).actions

    def select_action(self, obs: ObsBatch) -> np.ndarray:
        """[B, A]: pops one action of a queued chunk, predicting a new chunk when empty."""
        if not self._queue:
            chunk = self.predict_action_chunk(obs)  # [B, K, A]
            self._queue.extend(chunk.transpose(1, 0, 2))
        return self._queue.popleft()

    def reset(self) -> None:
        self._queue.clear()
