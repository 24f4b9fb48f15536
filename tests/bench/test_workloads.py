"""bench workloads: every named workload builds a valid config; emulated stage costs put the bottleneck where named."""

import pytest

from asyncvla.bench.ablation import LADDER, bound_terms, compare_rungs, ladder_violations, rung_config
from asyncvla.bench.placement import PLACEMENTS, placed_costs, placement_terms
from asyncvla.bench.throughput import AcceleratorCosts, emulated_balanced, operating_point
from asyncvla.bench.workloads import SPECS, build_workload, emulated_costs, get_spec, train_config, workload_names
from asyncvla.config import ConfigError, TrainConfig


@pytest.mark.parametrize("name", list(SPECS))
def test_every_workload_builds_a_valid_train_config_and_documents_itself(name):
    spec = get_spec(name)
    assert spec.kind in ("real", "emulated") and spec.description
    cfg = train_config(spec)
    assert isinstance(cfg, TrainConfig) and cfg.env.id == spec.env_id
    for rung in LADDER:  # every rung of the ladder is a valid config too
        TrainConfig(**{f: getattr(rung_config(cfg, rung), f) for f in ("env", "policy", "algo", "runtime", "run")})
    w = build_workload(name)
    assert w.label.startswith(f"{name} ({spec.kind})")


def test_names_kinds_and_unknown_name():
    assert set(workload_names("emulated")) == {f"emulated-{k}" for k in ("balanced", "env-bound", "infer-bound", "train-bound", "long-tail")}
    assert set(workload_names("real")) == {"real-metaworld", "real-libero", "real-maniskill"}
    with pytest.raises(ConfigError, match="workload='nope' is invalid"):
        get_spec("nope")


def test_balanced_matches_the_throughput_bench_definition():
    mine, ref = build_workload("emulated-balanced"), emulated_balanced()
    assert mine.costs.infer_s(8) == pytest.approx(ref.costs.infer_s(8))
    assert mine.costs.train_per_sample_s == pytest.approx(ref.costs.train_per_sample_s)
    assert mine.env_decision_s == pytest.approx(ref.env_decision_s)


@pytest.mark.parametrize("name,stage", [("emulated-env-bound", "env"), ("emulated-infer-bound", "rollout"),
                                        ("emulated-train-bound", "trainer")])
def test_bound_workloads_put_the_bottleneck_where_named(name, stage):
    w = build_workload(name)
    terms = bound_terms(w)
    assert min(terms.values()) == operating_point(w).bound
    assert operating_point(w).stage == stage


def test_emulated_stage_shares_of_a_sync_iteration():
    spec = get_spec("emulated-infer-bound")
    costs, decision_s = emulated_costs(spec)
    env_iter = spec.rollout_steps * spec.chunk * spec.step_mean_s * 1.05  # shares are set on the nominal step
    assert decision_s > spec.chunk * spec.step_mean_s  # the bound's decision time includes resets
    assert spec.rollout_steps * costs.infer_s(spec.num_envs) == pytest.approx(2.0 * env_iter)
    assert costs.train_per_sample_s * spec.num_envs * spec.rollout_steps == pytest.approx(0.5 * env_iter)


def test_rung_config_makes_stages_equal_lockstep_managers():
    cfg = train_config(get_spec("emulated-balanced"))
    from asyncvla.runtime.plan import make_plan

    staged = rung_config(cfg, LADDER[2])
    assert staged.runtime.pipeline_stages == 4 and staged.runtime.mode == "sync" and not staged.runtime.async_env
    assert [m.num_envs for m in make_plan(staged).managers] == [2, 2, 2, 2]
    full = rung_config(cfg, LADDER[-1])
    assert full.runtime.async_env and full.runtime.streaming_rollout and full.runtime.decoupled_actor
    assert full.runtime.pipeline_stages == 1 and len(make_plan(full).managers) == 1


def test_ladder_violations():
    rows = lambda *v: [{"mode": r.name, "env_steps_per_s": x} for r, x in zip(LADDER, v)]  # noqa: E731
    assert ladder_violations(rows(100, 120, 125, 130, 131, 250)) == []
    assert ladder_violations(rows(100, 120, 125, 130, 131, 129)) == []  # within 5% noise
    assert ladder_violations(rows(100, 120, 125, 130, 200, 180)) == ["+decoupled_actor is not the fastest row",
                                                                      "+decoupled_actor lowers throughput: 180.0 < +streaming_rollout 200.0"]
    bad = ladder_violations(rows(100, 120, 125, 90, 131, 250))
    assert bad == ["+async_env lowers throughput: 90.0 < sync-4stage 125.0"]
    # Every rung is held to the fastest rung before it, pipelined sync rows included.
    assert ladder_violations(rows(100, 120, 160, 121, 131, 250)) == [
        "+async_env lowers throughput: 121.0 < sync-4stage 160.0", "+streaming_rollout lowers throughput: 131.0 < sync-4stage 160.0"]
    assert ladder_violations(rows(100, 120, 160, 153, 158, 250)) == []  # within 5% of 160


def test_compare_rungs_names_the_fastest_previous_rung():
    runs = [{"mode": r.name, "env_steps_per_s": x} for r, x in zip(LADDER, (100, 150, 140, 145, 160, 300))]
    compare_rungs(runs)
    assert [r["compared_with"] for r in runs] == [None, "sync", "sync-2stage", "sync-2stage", "sync-2stage", "+streaming_rollout"]
    assert runs[3]["vs_best_previous"] == pytest.approx(145 / 150, abs=1e-3)
    assert runs[5]["vs_best_previous"] == pytest.approx(300 / 160, abs=1e-3)


def test_emulated_decision_time_counts_tail_steps_and_resets():
    import dataclasses

    from asyncvla.bench.workloads import emulated_decision_s

    env = train_config(get_spec("emulated-long-tail")).env
    # 5% of steps take 10x: mean step 0.02 x (0.95 + 0.5) = 0.029 s; one 50 ms reset per 100 steps.
    assert emulated_decision_s(env, 4) == pytest.approx(4 * 0.029 + 0.05 * 4 / 100)
    assert emulated_decision_s(dataclasses.replace(env, max_episode_steps=20), 4) == pytest.approx(4 * 0.029 + 0.05 * 4 / 20)
    with pytest.raises(ConfigError, match="env.id"):
        emulated_decision_s(dataclasses.replace(env, id="emulated/nope"), 4)


def test_placement_costs_and_shared_device_term():
    c = AcceleratorCosts(0.004, 0.01, 0.02)
    colo = placed_costs(c, PLACEMENTS["colocated"], 2)
    assert colo.infer_fixed_s == 0.004 and colo.infer_per_sample_s == 0.005 and colo.train_per_sample_s == 0.01
    dis = placed_costs(c, PLACEMENTS["disaggregated"], 2)
    assert dis.infer_per_sample_s == 0.01 and dis.train_per_sample_s == 0.02
    w = build_workload("emulated-balanced")
    shared = placement_terms(w, shared=True)
    b, k = w.cfg.runtime.max_batch, w.cfg.policy.chunk
    assert shared["shared_device"] == pytest.approx(k / (w.costs.infer_s(b) / b + w.costs.train_per_sample_s))
    assert "shared_device" not in placement_terms(w, shared=False)


def test_real_workloads_run_one_env_manager_process_per_core():
    from asyncvla.bench.workloads import get_spec, train_config, workload_names

    for name in workload_names("real"):
        rt = train_config(get_spec(name)).runtime
        assert rt.env_managers == (2, 2) and sum(rt.env_managers) == get_spec(name).num_envs
        assert rt.env_cpus * len(rt.env_managers) + rt.rollout_cpus <= 2  # fits the 2-core machine's Ray
