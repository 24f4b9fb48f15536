"""Pre- and post-processing shared by the built-in VLAs: images, proprio normalisation, action bins.

The normalisation statistics are buffers of the processor, so they travel inside the
checkpoint's state dict (and are also written to config.yaml for people to read). They are
fit from demonstrations by SFT; before that they are the identity. Each family adds how it
reads the instruction (`TinyProcessor`: a frozen sentence embedding; `oft`: tokens).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asyncvla.policies.base import ObsBatch

ACTION_LOW, ACTION_HIGH = -1.0, 1.0
"""Env actions live in [-1, 1]; the discrete head bins exactly this range."""


def bin_centers(num_bins: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[num_bins] centres of equal-width bins over [-1, 1]."""
    width = (ACTION_HIGH - ACTION_LOW) / num_bins
    return ACTION_LOW + width * (torch.arange(num_bins, device=device, dtype=torch.float32) + 0.5)


def actions_to_bins(actions: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Bin index (long, same shape) of each action value; values outside [-1, 1] clip to the end bins."""
    scaled = (actions.clamp(ACTION_LOW, ACTION_HIGH) - ACTION_LOW) / (ACTION_HIGH - ACTION_LOW) * num_bins
    return scaled.floor().long().clamp_(0, num_bins - 1)


def bins_to_actions(bins: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Action value (float32, same shape) at the centre of each bin index."""
    width = (ACTION_HIGH - ACTION_LOW) / num_bins
    return ACTION_LOW + width * (bins.float() + 0.5)


def normalisation_std(x: np.ndarray, std_min: float) -> np.ndarray:
    """[N, D] -> [D] normalisation std per dim: the data std, at least `std_min`; 1 for constant dims.

    Constant dims (zero padding in MetaWorld's obs) get 1 so they stay 0, not inf. The floor
    is for dims that barely move in the demos, which carry simulator jitter, not task
    information: MetaWorld reach's puck height (std 1e-4), puck quaternion (2e-6 .. 3e-4) and
    gripper opening (1e-3, drifting 1.0 -> 0.997 within an episode: a clock). Scaled to unit
    variance they reach |z| = 5-6, more than any task dim. Measured on reach-v3 (40 clean
    demos, default `asyncvla sft`, 30 held-out episodes): success 0.73 / 0.63 / 0.57 for SFT
    seeds 0 / 1 / 2 without a floor, 0.83 / 0.90 / 0.67 with 0.01 (PolicyConfig.proprio_std_min).
    """
    s = x.std(0)
    return np.where(s < 1e-6, 1.0, np.maximum(s, std_min))


class Processor(nn.Module):
    """ObsBatch (numpy) -> model tensors; holds proprio and action statistics as buffers.

    Images come out in [-0.5, 0.5] times `image_scale` (1: the tiny CNN's range; 2: [-1, 1], SigLIP's)."""

    def __init__(self, proprio_dim: int, action_dim: int, image_size: int, proprio_std_min: float = 0.0,
                 image_scale: float = 1.0):
        super().__init__()
        self.image_size = image_size
        self.image_scale = image_scale
        self.proprio_std_min = proprio_std_min
        self.register_buffer("proprio_mean", torch.zeros(proprio_dim))
        self.register_buffer("proprio_std", torch.ones(proprio_dim))
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))

    @torch.no_grad()
    def fit(self, proprio: np.ndarray, actions: np.ndarray) -> None:
        """Sets the statistics from demonstrations: proprio [N, P], actions [N, A].

        Proprio stds are floored at `proprio_std_min` (see `normalisation_std`)."""
        dev = self.proprio_mean.device
        self.proprio_mean.copy_(torch.as_tensor(proprio.mean(0), dtype=torch.float32, device=dev))
        self.proprio_std.copy_(torch.as_tensor(normalisation_std(proprio, self.proprio_std_min), dtype=torch.float32, device=dev))
        self.action_mean.copy_(torch.as_tensor(actions.mean(0), dtype=torch.float32, device=dev))
        self.action_std.copy_(torch.as_tensor(normalisation_std(actions, 0.0), dtype=torch.float32, device=dev))

    def stats(self) -> dict[str, list[float]]:
        """The statistics as plain lists (for config.yaml)."""
        return {k: [round(float(x), 6) for x in v] for k, v in self.state_dict().items()}

    def images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float [B, 3, S, S] in image_scale * [-0.5, 0.5], resized to image_size."""
        x = torch.as_tensor(images, device=self.proprio_mean.device).permute(0, 3, 1, 2).float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        return (x / 255.0 - 0.5) * self.image_scale

    def camera_images(self, obs: ObsBatch, cameras: tuple[str, ...]) -> torch.Tensor:
        """[C*B, 3, S, S] camera-major: the images of each of the C `cameras` (one encoder pass for all)."""
        return self.images(np.concatenate([obs.camera(c) for c in cameras]) if len(cameras) > 1 else obs.camera(cameras[0]))

    def proprio(self, proprio: np.ndarray) -> torch.Tensor:
        """[B, P] normalised with the fitted statistics (clipped: an unseen state must not blow up)."""
        p = torch.as_tensor(proprio, dtype=torch.float32, device=self.proprio_mean.device)
        return ((p - self.proprio_mean) / self.proprio_std).clamp(-10.0, 10.0)
