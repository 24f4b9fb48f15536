"""Weight broadcast over torch.distributed (gloo stands in for NCCL on a CPU) and the ray backend's weight stores."""

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from asyncvla.config import AlgoConfig, policy_config
from asyncvla.policies.base import ObsBatch
from asyncvla.runtime.inference.broadcast import broadcast_module, free_port, init_group
from asyncvla.runtime.learner.trainer import Trainer

A, P = 2, 4
TINY = policy_config(type="tiny", chunk=1, hidden_dim=32, num_layers=1, image_size=16)


def state_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _broadcast_rank(rank: int, port: int, out_dir: str) -> None:
    init_group("127.0.0.1", port, rank, 2, backend="gloo")
    torch.manual_seed(rank)  # different weights per rank before the broadcast
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    version = broadcast_module(m, version=7 if rank == 0 else -1, src=0)
    torch.save((version, m.state_dict()), f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_gloo_broadcast_between_two_processes(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_broadcast_rank, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    (v0, s0), (v1, s1) = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert v0 == v1 == 7
    assert state_equal(s0, s1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["object_store", "gloo"])
def test_published_weights_reach_every_server_actor(kind):
    """PushingWeightStore (object store) and NcclWeightStore (its code path, with gloo on a CPU)."""
    import functools

    ray = pytest.importorskip("ray")
    from asyncvla.policies.registry import build_policy
    from asyncvla.runtime.backends.ray import NcclWeightStore, PushingWeightStore, init_ray
    from asyncvla.runtime.inference.server import make_ray_rollout_server

    init_ray(None)
    try:
        trainer = Trainer(TINY, AlgoConfig(), A, P, seed=0, trace=False)
        policy_fn = functools.partial(build_policy, TINY, A, P, 1)  # other initial weights than the trainer's
        servers = [make_ray_rollout_server(num_cpus=0).remote(policy_fn, 1, 0.0, i, False) for i in range(2)]
        if kind == "gloo":
            store = NcclWeightStore(servers, trainer.policy, 0, backend="gloo")
        else:
            store = PushingWeightStore(servers, trainer.policy.state_dict(), 0)
        with torch.no_grad():
            for p in trainer.policy.parameters():
                p.add_(1.0)
        store.publish(trainer.policy.state_dict(), 3)
        obs = ObsBatch(np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, P), np.float32), ["x"], np.array([5]))
        want = trainer.policy.eval().act(obs)
        for s in servers:  # the next batch after the publish acts with version 3's weights
            out = ray.get(s.act.remote(0, obs))
            assert out.version == 3 and np.allclose(out.logprob, want.logprob) and np.allclose(out.actions, want.actions)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        ray.shutdown()
