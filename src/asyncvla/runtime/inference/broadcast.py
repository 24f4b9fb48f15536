"""Weight broadcast over torch.distributed: the trainer (rank 0) to rollout servers (ranks 1..n).

NCCL on CUDA devices; gloo runs the same code on CPU (tests). `backends.ray.NcclWeightStore`
drives it: the driver joins as rank 0, every server actor as rank i + 1.
"""

from __future__ import annotations

import socket

import torch
from torch import nn


def init_group(addr: str, port: int, rank: int, world_size: int, backend: str = "nccl") -> None:
    """Joins the weight-broadcast process group (one per process; idempotent if already joined)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size)


def broadcast_module(module: nn.Module, version: int, src: int = 0) -> int:
    """Broadcasts what `module` publishes (a Policy: its trainable parameters, `published_state`; any
    other module: its state dict) and the version from rank `src`.

    On the source rank it sends; on the others it overwrites the module in place. Tensors
    travel on the module's device (CUDA for NCCL), in registration order, which is the same
    on every rank because the modules share one architecture. Returns the version.
    """
    import torch.distributed as dist

    state = module.published_state() if hasattr(module, "published_state") else module.state_dict()
    device = next(iter(state.values())).device if state else torch.device("cpu")
    ver = torch.tensor([version], dtype=torch.int64, device=device)
    dist.broadcast(ver, src=src)
    with torch.no_grad():
        for tensor in state.values():
            # These tensors share storage with the parameters, so receiving in place updates the module.
            buf = tensor if tensor.is_contiguous() else tensor.contiguous()
            dist.broadcast(buf, src=src)
            if buf is not tensor:
                tensor.copy_(buf)
    return int(ver.item())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
