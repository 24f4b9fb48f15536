"""The ray backend: env managers and rollout servers as actors (runtime.local=false)."""

import dataclasses
import functools
import json
import time

import numpy as np
import pytest

from asyncvla.config import WrapperConfig, env_config, policy_config
from asyncvla.policies.base import ObsBatch
from asyncvla.runtime.backends.ray_proxies import add_ledger_increment
from asyncvla.runtime.learner.staleness import Ledger


def test_ledger_increments_add_up_to_the_parts():
    part, total = Ledger(), Ledger()
    seen = part.state_dict()
    part.produced(10)
    part.dropped("env_error", 1, 2)
    add_ledger_increment(total, seen, part.state_dict())
    seen = part.state_dict()
    part.produced(5)
    part.dropped("env_error", 1, 2)
    part.dropped("shutdown", 2, 4)
    add_ledger_increment(total, seen, part.state_dict())
    assert total.produced_env_steps == 15
    assert dict(total.dropped_env_steps) == {"env_error": 4, "shutdown": 4}
    assert dict(total.dropped_samples) == {"env_error": 2, "shutdown": 2}


def test_local_ray_workers_are_not_niced(ray_local):
    # Ray's default niceness (15) lets every nice-0 process of the machine pre-empt the workers
    # that step the envs and run inference; they run at the driver's niceness instead.
    import os

    ray = ray_local
    niceness = ray.get(ray.remote(num_cpus=0)(lambda: os.nice(0)).remote())
    assert niceness == os.nice(0)


@pytest.mark.slow
def test_dynamic_batching_through_a_ray_server(ray_local):
    from asyncvla.policies.registry import build_policy
    from asyncvla.runtime.inference.server import make_ray_rollout_server

    ray = ray_local
    # A library function, not one of this module's: the actor process cannot import test modules.
    policy_fn = functools.partial(build_policy, policy_config(chunk=2, hidden_dim=16, num_layers=1, num_heads=2, image_size=16), 4, 3, 0)
    server = make_ray_rollout_server(num_cpus=0).remote(policy_fn, 4, 0.2, 0, False)

    def obs(n):
        return ObsBatch(np.zeros((n, 16, 16, 3), np.uint8), np.zeros((n, 3), np.float32), ["x"] * n)

    ray.get(server.act.remote(0, obs(1)))  # warm-up; a lone request flushes at max_wait
    base = ray.get(server.stats.remote())
    # Four single requests in flight at once meet in one batch of max_batch=4 (long before max_wait).
    t0 = time.perf_counter()
    outs = ray.get([server.act.remote(c, obs(1)) for c in range(4)])
    assert time.perf_counter() - t0 < 0.2 and all(o.actions.shape == (1, 2, 4) for o in outs)
    s = ray.get(server.stats.remote())
    assert s["infer/batches"] - base["infer/batches"] == 1 and s["infer/samples"] - base["infer/samples"] == 4


@pytest.mark.slow
def test_train_async_on_ray_balances_the_books(tmp_path):
    from asyncvla.runtime.driver import train as train_async
    from test_async_train import async_cfg

    cfg = async_cfg(tmp_path, updates=3)
    cfg.runtime.local = False
    cfg.runtime.env_managers = (3, 1)
    cfg.runtime.env_cpus = 0.5
    cfg.env = dataclasses.replace(cfg.env, wrappers=WrapperConfig(fault_prob=0.05, fault_kind="crash"))
    summary = train_async(cfg)
    assert summary["updates"] == 3 and summary["env_steps_per_s"] > 0
    st = json.loads((tmp_path / "run" / "checkpoints" / "last" / "async_state.json").read_text())
    led = st["ledger"]
    assert led["produced"] == summary["env_steps"] == led["trained_env_steps"] + sum(led["dropped_env_steps"].values())
    assert led["trained_samples"] == 48 and max(int(k) for k in st["staleness"]["lag_hist"]) <= 1
    # The workers' output is in the run directory, one file per role, with each env crash named.
    logs = tmp_path / "run" / "logs"
    assert {"env-manager-0.log", "env-manager-1.log", "rollout-server-0.log", "hub.log"} <= {p.name for p in logs.iterdir()}
    assert not any(":job_id:" in p.read_text() for p in logs.iterdir())  # Ray's attribution markers stay in Ray's files
    crashes = sum(p.read_text().count("its episode is cut there") for p in logs.glob("env-manager-*.log"))
    assert crashes == led["dropped_samples"]["env_error"] > 0


@pytest.mark.slow
def test_sync_grpo_on_ray_matches_the_threads_backend(tmp_path):
    """The same plan on both backends: lockstep GRPO trains on the same batches (sampling keys, env seeds)."""
    from asyncvla.runtime.driver import train
    from asyncvla.metrics.writer import read_metrics
    from test_sync_characterization import characterization_cfg

    losses = {}
    for local in (True, False):
        cfg = characterization_cfg(tmp_path / str(local), "grpo")
        cfg.runtime.local, cfg.runtime.env_cpus, cfg.run.total_updates = local, 0.25, 2
        train(cfg)
        losses[local] = [r["loss/policy"] for r in read_metrics(tmp_path / str(local) / "metrics.jsonl") if "loss/policy" in r]
    assert losses[True] == pytest.approx(losses[False], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_the_same_plan_gives_the_same_request_sizes_on_both_backends():
    """Lockstep sync: every request is one stage's envs, on both backends. Async: requests never
    exceed the server's batch cap on Ray either (its env managers get the plan's max_request)."""
    from collections import Counter

    import ray

    from asyncvla.config import AlgoConfig, RunConfig, RuntimeConfig, TrainConfig
    from asyncvla.runtime import loop
    from asyncvla.runtime.backends.ray import init_ray

    full = dict(async_env=True, streaming_rollout=True, decoupled_actor=True)
    hist = {}
    for local in (True, False):
        for mode in ("sync", "async"):
            batching = dict(full, max_batch=2, max_wait_ms=5.0) if mode == "async" else {}
            rt = RuntimeConfig(mode=mode, local=local, rollout_steps=4, env_cpus=0.25, trace=False,
                               pipeline_stages=2 if mode == "sync" else 1, **batching)
            cfg = TrainConfig(env=env_config(id="emulated/fast", num_envs=4, image_size=16, seed=1),
                              policy=policy_config(chunk=2, hidden_dim=16, num_layers=1, num_heads=2),
                              algo=AlgoConfig(update_epochs=1, minibatch_size=8), runtime=rt,
                              run=RunConfig(total_env_steps=None, total_updates=2))
            if not local:
                init_ray(None, min_cpus=2)
            try:
                run = loop.build_runtime(cfg)
                loop.run(run, total_updates=2)
                hist[local, mode] = sum((s.batch_sizes for s in run.servers), Counter())
            finally:
                if not local:
                    ray.shutdown()
    # 2 updates x 4 decisions x 2 stages, each request one batch of the stage's 2 envs
    assert hist[True, "sync"] == hist[False, "sync"] == Counter({2: 16})
    for local in (True, False):
        assert max(hist[local, "async"]) <= 2 and sum(hist[local, "async"].values()) > 0, hist


def test_a_control_call_that_gets_no_answer_stops_with_a_line_naming_it(ray_local):
    from asyncvla.runtime.backends.ray_proxies import ActorTimeout, ray_get

    ray = ray_local
    stuck = ray.remote(num_cpus=0)(lambda: time.sleep(30)).remote()
    t0 = time.time()
    with pytest.raises(ActorTimeout, match=r"^env managers: start: no answer within 0.5 s \(the actor hangs or died\)$"):
        ray_get(stuck, "env managers: start", timeout_s=0.5)
    assert time.time() - t0 < 5
    assert ray_get(ray.remote(num_cpus=0)(lambda: 7).remote(), "a quick call") == 7


@pytest.mark.slow
def test_a_killed_rollout_server_comes_back_with_the_latest_weights(ray_local, tmp_path, capfd):
    """SIGKILL the server's process after the first update: Ray restarts it, its pending requests
    run again, it serves the trainer's latest weights (no sample beyond max_staleness), and every
    env step is still trained or dropped with a reason. Ray's warning about a restartable actor
    whose constructor takes a ref or handle does not print: the server finds the Hub by name."""
    import os
    import signal

    from asyncvla.runtime import loop
    from test_async_train import async_cfg

    ray = ray_local
    cfg = async_cfg(tmp_path, updates=6)
    cfg.runtime.local, cfg.runtime.env_cpus, cfg.runtime.rollout_cpus = False, 0.25, 0.25
    rt = loop.build_runtime(cfg)
    killed = []

    def kill_once(update, metrics):
        if update == 1 and not killed:
            pid = ray.get(rt.servers[0].actor.stats.remote())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = loop.run(rt, total_updates=6, on_update=kill_once)
    assert killed and summary["train/updates"] == 6
    assert rt.servers[0].restarts == 1 and rt.servers[0].pid != killed[0]  # as of the last poll (the run killed its actors)
    led = rt.ledger
    assert led.balance == 0 and "stale" not in led.dropped_env_steps, dict(led.dropped_env_steps)
    assert max(rt.controller.metrics().get("lag/max", 0), 0) <= 1
    assert "constructor arguments in the object store" not in capfd.readouterr().err
