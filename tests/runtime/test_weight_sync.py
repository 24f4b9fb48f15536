
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from asyncvla.config import AlgoConfig, PolicyConfig
from asyncvla.runtime.placement import LocalHandle, local_get
from asyncvla.runtime.rollout import RolloutWorker
from asyncvla.runtime.learner.trainer import Trainer, state_equal
from asyncvla.runtime.weight_sync import NcclWeightSync, ObjectStoreWeightSync, broadcast_module, free_port, init_group, make_weight_sync

A, P = 2, 4
TINY = PolicyConfig(type="tiny", chunk=1, hidden_dim=32, num_layers=1, image_size=16)


def _perturb(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)


def test_object_store_sync_through_local_handles():
    trainer = Trainer(TINY, AlgoConfig(), A, P, seed=0, trace=False)
    rollout = RolloutWorker(TINY, A, P, seed=1)
    _perturb(trainer.policy)
    trainer.policy.version = 5
    assert not state_equal(trainer.policy.state_dict(), rollout.policy.state_dict())
    v = ObjectStoreWeightSync().sync(LocalHandle(trainer), [LocalHandle(rollout)], 5, local_get)
    assert v == 5 and rollout.version == 5
    assert state_equal(trainer.policy.state_dict(), rollout.policy.state_dict())
    assert [s.kind for s in rollout.drain_spans()] == ["weight_sync"]


def test_make_weight_sync_picks_by_placement():
    assert type(make_weight_sync("object_store", "colocated")).__name__ == "InProcessWeightSync"
    assert isinstance(make_weight_sync("object_store", "disaggregated"), ObjectStoreWeightSync)
    assert isinstance(make_weight_sync("nccl", "disaggregated"), NcclWeightSync)


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


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from asyncvla.runtime.placement import init_ray

    init_ray(None)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_object_store_and_gloo_sync_between_ray_actors(ray_session):
    ray = ray_session
    trainer = ray.remote(Trainer).options(num_cpus=0).remote(TINY, AlgoConfig(), A, P, 0, False)
    rollouts = [ray.remote(RolloutWorker).options(num_cpus=0).remote(TINY, A, P, seed) for seed in (1, 2)]
    assert ObjectStoreWeightSync().sync(trainer, rollouts, 0, ray.get) == 0
    want = ray.get(trainer.get_weights.remote())
    for r in rollouts:
        assert state_equal(want, ray.get(r.__ray_call__.remote(lambda self: self.policy.state_dict())))
    # The NCCL strategy's code path, with gloo standing in for NCCL on a CPU.
    sync = NcclWeightSync(backend="gloo", addr="127.0.0.1")
    sync.setup(trainer, rollouts, ray.get)
    ray.get(trainer.__ray_call__.remote(lambda self: [p.data.add_(1.0) for p in self.policy.parameters()] and None))
    assert sync.sync(trainer, rollouts, 0, ray.get) == 0
    want = ray.get(trainer.get_weights.remote())
    for r in rollouts:
        assert state_equal(want, ray.get(r.__ray_call__.remote(lambda self: self.policy.state_dict())))
