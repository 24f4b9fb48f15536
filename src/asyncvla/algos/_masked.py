"""Masked reductions shared by advantages.py and losses.py.

Every masked reduction goes through `_masked_mean`, which refuses tensors whose shape
differs from the mask's: RLinf multiplied a chunk-level entropy `[N]` by an `[N, 1]`
mask, broadcast to `[N, N]` and silently ignored the mask.
"""

from __future__ import annotations

import torch


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name}{list(s)}" for name, s in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; all must have the same shape (no broadcasting)")


def _valid(mask: torch.Tensor) -> torch.Tensor:
    return mask != 0


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * mask) / max(sum(mask), 1); x and mask must have the same shape.

    Masked entries are selected away (torch.where), not multiplied by 0, so a NaN or
    inf in a padded slot neither leaks into the result nor into the gradient of x.
    """
    _check_same_shape(x=x, mask=mask)
    m = mask.to(x.dtype)
    total = torch.where(_valid(mask), x, torch.zeros_like(x)) * m
    return total.sum() / m.sum().clamp(min=1.0)


def _masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sample (unbiased) variance over valid entries; 0 with fewer than 2 of them."""
    _check_same_shape(x=x, mask=mask)
    m = mask.to(x.dtype)
    count = m.sum()
    centred = torch.where(_valid(mask), x - _masked_mean(x, mask), torch.zeros_like(x))
    return (centred.square() * m).sum() / (count - 1.0).clamp(min=1.0)
