"""runtime.num_trainers: N ranks on shards of every minibatch take the update one trainer takes."""

import copy
import dataclasses
import functools

import numpy as np
import pytest
import torch

from asyncvla.config import AlgoConfig
from asyncvla.runtime.inference.broadcast import free_port
from asyncvla.runtime.learner.data_parallel import Collective, ThreadReplica, TrainerReplica, reduce_kind, shard_rows
from asyncvla.runtime.learner.trainer import Trainer
from test_trainer import TINY, A, P, _fixed_rollout


def test_shards_cover_a_minibatch_once_and_weigh_by_size():
    rows = np.arange(7)
    parts = [shard_rows(rows, r, 3) for r in range(3)]
    assert np.concatenate([p for p, _ in parts]).tolist() == rows.tolist()
    assert sum(w for _, w in parts) == pytest.approx(1.0) and [len(p) for p, _ in parts] == [3, 2, 2]
    # Fewer rows than ranks: every rank computes the whole minibatch at weight 1/world.
    assert [(p.tolist(), w) for p, w in (shard_rows(np.arange(1), r, 2) for r in range(2))] == [([0], 0.5)] * 2
    assert [reduce_kind(k) for k in ("ratio_max", "ratio_min", "approx_kl")] == ["max", "min", "mean"]


def _trainer(algo: AlgoConfig) -> Trainer:
    torch.manual_seed(0)  # the same initial weights on every rank (rank 0 also sends its own)
    return Trainer(dataclasses.replace(TINY, rl_spread=True), algo, A, P, seed=0, trace=False)


def _data_parallel(algo: AlgoConfig, world: int) -> Trainer:
    port = free_port()
    lead = _trainer(algo)
    replicas = [ThreadReplica(functools.partial(TrainerReplica, functools.partial(_trainer, algo), "127.0.0.1", port, r,
                                                world, "gloo")) for r in range(1, world)]
    lead.dp = Collective("127.0.0.1", port, 0, world, "gloo")
    lead.attach_replicas(replicas)
    return lead


@pytest.mark.parametrize("algo", [
    AlgoConfig(lr=1e-3, minibatch_size=6, value_clip=None),  # 16 samples: minibatches of 6, 5, 5
    # Retakes and early stop, on reduced numbers. The critic gets its own lr: at the actor's 1e-1, its
    # Adam steps (clipped apart from the actor's since 2026-12-08) magnify float noise to 2e-5.
    AlgoConfig(lr=1e-1, value_lr=1e-3, minibatch_size=4, step_kl=1e-3, target_kl=0.05),
], ids=["ppo", "step_kl"])
def test_two_trainers_take_the_update_of_one_on_the_same_batch(algo):
    one = _trainer(algo)
    two = _data_parallel(algo, 2)
    try:
        batch = one.prepare([_fixed_rollout(one.policy)])
        s2 = two.update(copy.deepcopy(batch), epochs=3)
        s1 = one.update(batch, epochs=3)
        diff = max(float((a - b).detach().abs().max()) for a, b in zip(one.policy.parameters(), two.policy.parameters()))
        assert diff <= 1e-5, diff
        assert one.version == two.version and s1["train/optimizer_steps"] == s2["train/optimizer_steps"]
        for key in ("loss/policy", "loss/approx_kl", "loss/ratio_max", "loss/ratio_min", "loss/grad_norm"):
            assert s2[key] == pytest.approx(s1[key], rel=1e-4, abs=1e-6), key
        assert s2["train/replica_drift"] == 0.0  # every rank applied the same all-reduced gradient
        rows = two.drain_minibatches()
        assert rows and all("_rows" not in r and "_weight" not in r for r in rows)
    finally:
        two.close_replicas()


def test_a_replica_starts_from_rank_zeros_weights_and_optimizer():
    algo = AlgoConfig(lr=1e-3, minibatch_size=8)
    two = _data_parallel(algo, 2)
    try:
        with torch.no_grad():
            next(two.policy.parameters()).add_(1.0)  # rank 0 resumed from other weights
        two.sync_replicas()
        two.update(two.prepare([_fixed_rollout(two.policy)]), epochs=1)
        assert two.replica_drift == 0.0
    finally:
        two.close_replicas()


def _two_trainer_run(tmp_path, **runtime):
    from asyncvla.metrics.writer import read_metrics
    from asyncvla.runtime.driver import train
    from test_async_train import async_cfg

    cfg = async_cfg(tmp_path, updates=4)
    cfg.runtime = dataclasses.replace(cfg.runtime, num_trainers=2, **runtime)
    summary = train(cfg)
    trained = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss/policy" in r]
    assert summary["updates"] == 4 and len(trained) == 4
    assert all(r["train/replica_drift"] == 0.0 for r in trained)  # the replica stayed identical to rank 0
    return summary


def test_an_async_run_with_two_trainers_completes_on_threads(tmp_path):
    _two_trainer_run(tmp_path)


@pytest.mark.slow
def test_an_async_run_with_two_trainers_completes_on_ray(ray_local, tmp_path):
    import ray

    _two_trainer_run(tmp_path, local=False, env_cpus=0.25, rollout_cpus=0.25, trainer_cpus=0.25)
    names = {a["ActorClassName"] for a in ray._private.state.actors().values()}  # GCS: every actor the run started
    assert "TrainerReplica" in names, names
