"""The tiny VLA's processor: the shared one (`policies/processor.py`) plus a frozen sentence
embedding of the instruction."""

from __future__ import annotations

import torch

from asyncvla.policies import text
from asyncvla.policies.base import ObsBatch
from asyncvla.policies.processor import Processor


class TinyProcessor(Processor):
    def instructions(self, instructions: list[str]) -> torch.Tensor:
        """[B, text.DIM] frozen sentence embeddings."""
        return torch.as_tensor(text.embed(instructions), device=self.proprio_mean.device)

    def forward(self, obs: ObsBatch, cameras: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images [C*B, 3, S, S] camera-major, proprio [B, P], text [B, D]) for the C `cameras`."""
        return self.camera_images(obs, cameras), self.proprio(obs.proprio), self.instructions(obs.instructions)
