"""bench throughput: the bound arithmetic, the emulated accelerator, argument checks, one short run."""

import time

import numpy as np
import pytest

from asyncvla.bench.throughput import (AcceleratorCosts, best_batch, bound_env_steps_per_s, emulated_balanced, operating_point,
                                       stage_capacities, throughput_bench)
from asyncvla.config import ConfigError, env_config, policy_config
from asyncvla.runtime.device import DeviceGate


def test_balanced_workload_splits_a_sync_iteration_in_thirds():
    w = emulated_balanced()
    cfg, c = w.cfg, w.costs
    steps, envs = cfg.runtime.rollout_steps, cfg.env.num_envs
    env_s = steps * cfg.policy.chunk * 0.02 * 1.05  # nominal step time, lockstep factor
    assert steps * c.infer_s(envs) == pytest.approx(env_s)
    assert c.train_per_sample_s * envs * steps == pytest.approx(env_s)
    # The bound's decision time adds the 50 ms reset once per 100-step episode: 4 x 20 ms + 4/100 x 50 ms.
    assert w.env_decision_s == pytest.approx(0.082)


def test_bound_is_the_best_batch_min_of_stage_capacities_against_a_brute_force_grid():
    w = emulated_balanced()
    op = operating_point(w)
    n, k, d, c = w.cfg.env.num_envs, w.cfg.policy.chunk, w.env_decision_s, w.costs
    grid = np.linspace(1, w.cfg.runtime.max_batch, 20001)
    brute = [min(stage_capacities(n, k, d, c, b).values()) for b in grid]
    assert op.bound >= max(brute) and op.bound == pytest.approx(max(brute), rel=1e-5)  # the grid only approaches it
    assert op.batch == pytest.approx(grid[int(np.argmax(brute))], abs=1e-3)
    assert op.bound == min(op.terms.values()) and bound_env_steps_per_s(w) == (op.bound, op.terms)
    # emulated-balanced by hand: 32/(0.082 + 0.004 + 0.01 B) = 4B/(0.004 + 0.01 B) at B* = 1.514 -> 316.4.
    assert op.batch == pytest.approx(1.514, abs=1e-3) and op.bound == pytest.approx(316.4, abs=0.1)
    assert op.stage == "env"  # the env cycle is 82 ms of stepping + 19 ms of inference


def test_stage_capacities_trade_env_latency_for_inference_capacity():
    c = AcceleratorCosts(0.004, 0.01, 0.0105)
    small, big = stage_capacities(8, 4, 0.08, c, 1), stage_capacities(8, 4, 0.08, c, 8)
    assert small["env"] == pytest.approx(32 / 0.094) and small["rollout"] == pytest.approx(4 / 0.014)
    assert big["rollout"] > small["rollout"] and big["env"] < small["env"]
    assert small["trainer"] == big["trainer"] == pytest.approx(4 / 0.0105)
    assert stage_capacities(8, 4, 0.08, c, 2, num_servers=2)["rollout"] == pytest.approx(2 * 8 / 0.024)


@pytest.mark.parametrize("costs,max_batch,expect", [
    (AcceleratorCosts(0.004, 0.01, 0.0), 8, 1.514),   # interior crossing
    (AcceleratorCosts(0.004, 0.01, 0.0), 1, 1.0),     # clamped to max_batch
    (AcceleratorCosts(0.1, 0.0001, 0.0), 4, 4.0),     # large fixed cost: inference is short even at max_batch
    (AcceleratorCosts(0.0, 0.01, 0.0), 8, 1.0),       # no fixed cost: batching gains nothing, B = 1
    (AcceleratorCosts(0.004, 0.0, 0.0), 4, 4.0),      # no per-sample cost: B does not slow the envs
])
def test_best_batch_edge_cases(costs, max_batch, expect):
    assert best_batch(8, 0.082, costs, max_batch) == pytest.approx(expect, abs=1e-3)


def test_tied_bottleneck_is_named_after_the_longer_part_of_the_env_cycle():
    from asyncvla.bench.workloads import build_workload

    assert operating_point(build_workload("emulated-infer-bound")).stage == "rollout"
    assert operating_point(build_workload("emulated-train-bound")).stage == "trainer"


def test_emulated_accelerator_holds_wall_time_and_a_shared_device_serialises_the_roles():
    import threading

    gate = DeviceGate(AcceleratorCosts(0.01, 0.01, 0.0))
    t0 = time.perf_counter()
    with gate.infer(3):
        pass
    assert time.perf_counter() - t0 >= 0.04
    shared, inside, overlap = DeviceGate(AcceleratorCosts(0.0, 0.0, 0.02), shared=True), [], []

    def train():
        with shared.train(1):
            inside.append(1)
            overlap.append(len(inside) > 1)
            time.sleep(0.01)
            inside.pop()

    threads = [threading.Thread(target=train) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert overlap == [False, False, False]


def test_train_sync_and_the_benches_sync_rows_run_the_same_code_path(tmp_path, monkeypatch):
    """`train --mode sync`, `bench throughput`'s sync row and `bench ablation`'s sync rows all run
    `runtime.loop.run` on a plan with every switch off: there is no second loop."""
    from asyncvla.bench import ablation, throughput
    from asyncvla.runtime import loop
    from asyncvla.config import RunConfig, RuntimeConfig, TrainConfig
    from asyncvla.runtime.driver import train

    plans, real_run = [], loop.run

    def spy(rt, *args, **kwargs):
        plans.append(rt.plan)
        return real_run(rt, *args, **kwargs)

    monkeypatch.setattr(loop, "run", spy)
    train(TrainConfig(env=env_config(id="emulated/fast", num_envs=4, image_size=16),
                      policy=policy_config(chunk=2, hidden_dim=16, num_layers=1, num_heads=2),
                      runtime=RuntimeConfig(mode="sync", num_env_workers=2, pipeline_stages=2, rollout_steps=8, local=True),
                      run=RunConfig(out_dir=str(tmp_path / "train"), total_env_steps=None, total_updates=1, eval_episodes=0)))
    w = emulated_balanced()
    throughput.run_mode(w, "sync", seconds=0.5)
    for rung in ("sync", "sync-2stage"):
        ablation.run_row(ablation.rung_config(w.config(), ablation.RUNGS[rung]), 0.5, rung)
    assert len(plans) == 4
    for plan in plans:
        assert plan.mode == "sync" and not (plan.async_env or plan.streaming_rollout or plan.decoupled_actor)
        assert plan.trainer_mode == "epoch" and plan.max_staleness == 0 and plan.max_batch == 1
    assert [len(p.managers) for p in plans] == [4, 1, 1, 2]  # 2 workers x 2 stages; 1; 1; 2 stages


def test_rejects_unknown_workload_and_mode():
    with pytest.raises(ConfigError, match="workload"):
        throughput_bench("nope", ["sync"], 1)
    with pytest.raises(ConfigError, match="modes"):
        throughput_bench("emulated-balanced", ["warp"], 1)


@pytest.mark.slow
def test_short_run_reports_every_field_and_balances_the_books():
    out = throughput_bench("emulated-balanced", ["async"], seconds=6)
    r = out["runs"][0]
    assert {"mode", "env_steps_per_s", "trained_samples_per_s", "bound_env_steps_per_s", "utilization"} <= set(r)
    acc = r["accounting"]
    assert acc["produced"] == acc["trained"] + sum(acc["dropped"].values())
    assert 0 < r["env_steps_per_s"] <= r["bound_env_steps_per_s"] * 1.05


def _bound(w) -> dict:
    from asyncvla.bench.ablation import bound_terms, with_bound

    return with_bound({}, bound_terms(w))


def test_cli_writes_results_report_and_plots_to_out(tmp_path, monkeypatch, capsys):
    import json

    import asyncvla.bench.throughput as tp
    from asyncvla.cli import BenchThroughput

    w = emulated_balanced()
    rows = [dict(_bound(w), mode=m, mean_batch=b, env_steps_per_s=v, trained_samples_per_s=v / 4,
                 utilization={"env": 0.5, "rollout": 0.5, "trainer": 0.5}) for m, b, v in (("sync", 8.0, 120.0), ("async", 1.4, 290.0))]
    canned = {"bench": "throughput", "workload": "emulated-balanced", "bound": tp.BOUND_FORMULA, "runs": rows,
              "async_over_sync": 290.0 / 120.0}
    seen = {}

    def fake(workload, modes, seconds):
        seen.update(workload=workload, modes=modes, seconds=seconds)
        return canned

    monkeypatch.setattr(tp, "throughput_bench", fake)
    BenchThroughput(modes=("sync,async",), seconds=3.0, json=True, out=tmp_path).run()
    assert seen == {"workload": "emulated-balanced", "modes": ["sync", "async"], "seconds": 3.0}
    for name in ("results.json", "report.md", "throughput.png", "utilization.png"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"][1]["fraction_of_bound"] == pytest.approx(290.0 / operating_point(w).bound, abs=1e-3)
    assert "load_avg" in saved["machine"]
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # --json: the whole result last
    assert last["async_over_sync"] == pytest.approx(290.0 / 120.0)
    assert "async reaches" in (tmp_path / "report.md").read_text()
