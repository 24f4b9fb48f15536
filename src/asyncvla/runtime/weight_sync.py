"""WeightSync: how a trainer version reaches the inference workers.

Driver-side strategies, all with `setup(trainer, rollouts)` and `sync(trainer, rollouts,
version) -> version`, working on worker handles (Ray actors or `placement.LocalHandle`s):

- `InProcessWeightSync`: colocated placement; trainer and inference share one process, the
  copy is a `load_state_dict` there (no serialisation).
- `ObjectStoreWeightSync`: the trainer returns a CPU state_dict, stored once in Ray's
  object store and fetched by every inference worker (zero-copy reads on one node).
- `NcclWeightSync`: a torch.distributed group of trainer (rank 0) + inference workers;
  every tensor is broadcast from rank 0 (NCCL on CUDA; gloo works on CPU for tests).

Worker-side helpers (`init_group`, `broadcast_module`) are plain functions the worker
classes call from their `init_weight_group` / `broadcast_weights` / `receive_weights`.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Sequence

import torch
from torch import nn

Get = Callable[[Any], Any]


# -- worker side ---------------------------------------------------------------------------

def init_group(addr: str, port: int, rank: int, world_size: int, backend: str = "nccl") -> None:
    """Joins the weight-broadcast process group (one per process; idempotent if already joined)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size)


def broadcast_module(module: nn.Module, version: int, src: int = 0) -> int:
    """Broadcasts `module`'s state (parameters and buffers) and version from rank `src`.

    On the source rank it sends; on the others it overwrites the module in place. Tensors
    travel on the module's device (CUDA for NCCL), in `state_dict` order, which is the same
    on every rank because the modules share one architecture. Returns the version.
    """
    import torch.distributed as dist

    state = module.state_dict()
    device = next(iter(state.values())).device if state else torch.device("cpu")
    ver = torch.tensor([version], dtype=torch.int64, device=device)
    dist.broadcast(ver, src=src)
    with torch.no_grad():
        for tensor in state.values():
            # state_dict tensors share storage with the parameters, so receiving in place updates the module.
            buf = tensor if tensor.is_contiguous() else tensor.contiguous()
            dist.broadcast(buf, src=src)
            if buf is not tensor:
                tensor.copy_(buf)
    return int(ver.item())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# -- driver side ---------------------------------------------------------------------------

class WeightSync:
    """Moves the trainer's current weights to every inference worker."""

    def setup(self, trainer: Any, rollouts: Sequence[Any], get: Get) -> None:
        """One-time wiring (process groups); default: nothing."""

    def sync(self, trainer: Any, rollouts: Sequence[Any], version: int, get: Get) -> int:
        """Blocks until every inference worker holds trainer version `version`; returns it."""
        raise NotImplementedError


class InProcessWeightSync(WeightSync):
    """Colocated placement: the shared worker copies trainer weights into its inference policy."""

    def sync(self, trainer, rollouts, version, get):
        get([r.sync_local.remote() for r in rollouts])
        return version


class ObjectStoreWeightSync(WeightSync):
    """The trainer's CPU state_dict goes into the object store once; each worker fetches it."""

    def sync(self, trainer, rollouts, version, get):
        state_ref = trainer.get_weights.remote()  # stays in the object store: no round trip via the driver
        versions = get([r.set_weights.remote(state_ref, version) for r in rollouts])
        assert all(v == version for v in versions), f"weight sync: workers report {versions}, expected {version}"
        return version


class NcclWeightSync(WeightSync):
    """torch.distributed broadcast from the trainer (rank 0) to inference workers (ranks 1..n).

    backend="nccl" on CUDA devices; "gloo" runs the same code on CPU (tests).
    """

    def __init__(self, backend: str = "nccl", addr: str | None = None):
        self.backend = backend
        self.addr = addr

    def setup(self, trainer, rollouts, get):
        addr = self.addr or get(trainer.node_ip.remote())
        port = get(trainer.free_port.remote())
        world = 1 + len(rollouts)
        # Every rank must enter init together; the calls run concurrently on the actors.
        get([trainer.init_weight_group.remote(addr, port, 0, world, self.backend)]
            + [r.init_weight_group.remote(addr, port, i + 1, world, self.backend) for i, r in enumerate(rollouts)])

    def sync(self, trainer, rollouts, version, get):
        refs = [trainer.broadcast_weights.remote()] + [r.receive_weights.remote() for r in rollouts]
        versions = get(refs)
        assert all(v == version for v in versions), f"weight sync: ranks report {versions}, expected {version}"
        return version


def make_weight_sync(kind: str, placement: str) -> WeightSync:
    """The strategy for `runtime.weight_sync` and `runtime.placement`."""
    if placement == "colocated":
        return InProcessWeightSync()
    return {"object_store": ObjectStoreWeightSync, "nccl": NcclWeightSync}[kind]()
