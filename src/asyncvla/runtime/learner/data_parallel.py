"""Data-parallel training (`runtime.num_trainers` N): N replicas of the trainer run every update on
the same batch, each on its share of every minibatch, with gradients all-reduced.

Rank 0 is the driver's `Trainer`: it computes the advantages, hands the prepared batch to the
other ranks, publishes weights and saves checkpoints. Ranks 1..N-1 are `TrainerReplica`s (a
thread of the driver with the threads backend, a Ray actor each with the Ray backend). Every
rank holds the whole model and its own optimizer; they stay identical because each optimizer
step applies the same all-reduced gradient and every decision of the update (KL early stop,
a non-finite step skipped, `algo.step_kl`'s learning rate and retakes) is taken on reduced
numbers. A minibatch's loss is a mean over its samples, so rank r's loss on its shard,
weighted by its share of the minibatch, sums over the ranks to the whole minibatch's loss:
the all-reduced gradient is the one a single trainer would take (to float rounding).

The ranks form their own process group (a TCPStore with a gloo or NCCL group, not the default
group, which the NCCL weight broadcast to rollout servers uses).
"""

from __future__ import annotations

import datetime
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from asyncvla.algos.objective import Batch
    from asyncvla.runtime.learner.trainer import Trainer

GROUP_TIMEOUT_S = 600.0
"""A collective that waits longer (a rank died mid-update) fails instead of hanging the run."""


def shard_rows(rows: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """(rank's rows of a minibatch, its weight in the minibatch's mean loss).

    Contiguous shares of near-equal size. A minibatch with fewer rows than ranks is computed
    whole by every rank, each weighted 1/world, so no rank has an empty shard.
    """
    if len(rows) < world:
        return rows, 1.0 / world
    mine = np.array_split(rows, world)[rank]
    return mine, len(mine) / len(rows)


def reduce_kind(key: str) -> str:
    """How a minibatch stat combines over shards: extremes by max/min, every other as a weighted mean."""
    return "max" if key.endswith("_max") else "min" if key.endswith("_min") else "mean"


class Collective:
    """One rank's side of the trainers' process group."""

    def __init__(self, addr: str, port: int, rank: int, world: int, backend: str = "gloo"):
        import torch.distributed as dist

        self.rank, self.world, self.backend = rank, world, backend
        timeout = datetime.timedelta(seconds=GROUP_TIMEOUT_S)
        self._store = dist.TCPStore(addr, port, world, rank == 0, timeout=timeout)
        group_cls = dist.ProcessGroupNCCL if backend == "nccl" else dist.ProcessGroupGloo
        self.group = group_cls(self._store, rank, world, timeout) if backend != "nccl" else group_cls(self._store, rank, world)
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def _all_reduce(self, t: torch.Tensor, op: Any = None) -> torch.Tensor:
        import torch.distributed as dist

        buf = t.to(self.device)
        opts = dist.AllreduceOptions()
        opts.reduceOp = op if op is not None else dist.ReduceOp.SUM
        self.group.allreduce([buf], opts).wait()
        return buf.to(t.device)

    def shard(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        return shard_rows(rows, self.rank, self.world)

    def reduce_stats(self, stats: dict, weight: float) -> dict:
        """The minibatch's stats from every shard's (keys starting with '_' stay this rank's)."""
        import torch.distributed as dist

        keys = sorted(k for k, v in stats.items() if not k.startswith("_") and isinstance(v, (int, float)))
        kinds = [reduce_kind(k) for k in keys]
        vals = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
        # One sum for the weighted means, one max for the extremes (a min is the max of the negation).
        summed = self._all_reduce(torch.where(torch.tensor([k == "mean" for k in kinds]), vals * weight,
                                              torch.zeros_like(vals)))
        signs = torch.tensor([1.0 if k == "max" else -1.0 for k in kinds], dtype=torch.float64)
        ext = self._all_reduce(torch.where(torch.tensor([k != "mean" for k in kinds]), vals * signs,
                                           torch.full_like(vals, -torch.inf)), dist.ReduceOp.MAX) * signs
        out = dict(stats)
        out.update({k: float(summed[i] if kinds[i] == "mean" else ext[i]) for i, k in enumerate(keys)})
        return out

    def mean(self, value: float, weight: float) -> float:
        """The weighted sum over ranks of a per-shard mean (the whole minibatch's mean)."""
        return float(self._all_reduce(torch.tensor([value * weight], dtype=torch.float64))[0])

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sums the (weighted) gradients of every rank into each rank's, in one flat all-reduce."""
        # How many ranks reached each parameter travels with the gradients: one no rank reached
        # (the actor in a critic warm-up) keeps no gradient, as on a single rank, so the optimizer
        # keeps no state for it, while a reached one whose gradient is exactly 0 still steps.
        reached = torch.tensor([float(p.grad is not None) for p in params])
        for p in params:
            if p.grad is None:  # a parameter this shard's loss did not reach: it contributes 0
                p.grad = torch.zeros_like(p)
        flat = self._all_reduce(torch.cat([p.grad.reshape(-1) for p in params] + [reached.to(params[0].grad)]))
        offset = 0
        for p, ranks in zip(params, flat[-len(params):].tolist()):
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n
            if ranks == 0:
                p.grad = None


def replica_state(trainer: Trainer) -> dict:
    """What a replica adopts before each update so it takes the same decisions as rank 0."""
    return {"rng": trainer.rng.bit_generator.state, "num_updates": trainer.num_updates, "version": trainer.version,
            "lr": trainer.policy_lr, "lr_calibrated": trainer.lr_calibrated, "algo": trainer.algo,
            "skipped_in_a_row": trainer.skipped_in_a_row}


def weights_checksum(trainer: Trainer) -> float:
    """Sum of every trainable parameter (float64): equal on every rank while the replicas agree."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in trainer.policy.parameters() if p.requires_grad))


class TrainerReplica:
    """Rank r >= 1: a `Trainer` that runs each update on its shards. Plain class; the backends
    run it on a thread or wrap it in a Ray actor."""

    def __init__(self, make_trainer: Callable[[], Trainer], addr: str, port: int, rank: int, world: int, backend: str):
        self.trainer = make_trainer()
        self.trainer.dp = Collective(addr, port, rank, world, backend)

    def load_state(self, policy_state: dict, optimizer_state: dict) -> None:
        """Rank 0's weights and optimizer state (at the start and after a resume)."""
        self.trainer.policy.load_state_dict(policy_state)
        self.trainer.optimizer.load_state_dict(optimizer_state)

    def update(self, batch: Batch, epochs: int, state: dict) -> float:
        t = self.trainer
        t.rng.bit_generator.state = state["rng"]
        t.num_updates, t.policy.version = state["num_updates"], state["version"]
        t.policy_lr, t.lr_calibrated = state["lr"], state["lr_calibrated"]
        t.algo, t.skipped_in_a_row = state["algo"], state["skipped_in_a_row"]
        t.update(batch.to(t.device), epochs)
        t.minibatch_log.clear()  # rank 0 logs the (reduced) steps
        t.rec.drain()
        return weights_checksum(t)


class ThreadReplica:
    """A replica on a thread of this process (threads backend; the tests). Its calls run in order."""

    def __init__(self, replica_fn: Callable[[], TrainerReplica]):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="trainer-replica")
        # Built on its thread: the group forms only once every rank has joined.
        self._replica = self._pool.submit(replica_fn)

    def _call(self, name: str, *args) -> Future:
        return self._pool.submit(lambda: getattr(self._replica.result(), name)(*args))

    def load_state(self, policy_state: dict, optimizer_state: dict) -> Future:
        return self._call("load_state", policy_state, optimizer_state)

    def update(self, batch: Batch, epochs: int, state: dict) -> Future:
        return self._call("update", batch, epochs, state)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RayReplica:
    """A replica in its own Ray actor (Ray backend): `runtime.trainer_cpus`/`trainer_gpus`/`trainer_resources`."""

    def __init__(self, actor: Any):
        self.actor = actor

    def load_state(self, policy_state: dict, optimizer_state: dict) -> Future:
        return self.actor.load_state.remote(policy_state, optimizer_state).future()

    def update(self, batch: Batch, epochs: int, state: dict) -> Future:
        return self.actor.update.remote(batch, epochs, state).future()

    def close(self) -> None:
        import ray

        ray.kill(self.actor)


def start_group(trainer: Trainer, world: int, addr: str, spawn: Callable[[int, int, str], Any]) -> None:
    """Makes `trainer` rank 0 of `world` trainers; spawn(rank, port, backend) starts each other rank's
    replica (which joins the group at addr:port). Nothing happens when world is 1."""
    if world <= 1:
        return
    from asyncvla.runtime.inference.broadcast import free_port

    backend = "nccl" if trainer.device.type == "cuda" else "gloo"
    port = free_port()
    replicas = [spawn(rank, port, backend) for rank in range(1, world)]
    trainer.dp = Collective(addr, port, 0, world, backend)
    trainer.attach_replicas(replicas)
