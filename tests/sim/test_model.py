"""The scaling model against closed forms: sync = 1 / sum of stage times, async = the bottleneck."""

from dataclasses import replace

import pytest

from asyncvla.sim.model import SimConfig, StageCosts, simulate

COSTS = StageCosts(env_step_s=0.01, reset_s=0.0, infer_fixed_s=0.02, infer_per_sample_s=0.001,
                   train_per_sample_s=0.002, weight_sync_s=0.1, allreduce_s=0.0)
BASE = SimConfig(num_gpus=2, envs_per_gpu=8, chunk=4, episode_len=10**6, rollout_steps=10, costs=COSTS, seconds=30)


def test_sync_matches_sum_of_stage_times():
    r = simulate(replace(BASE, mode="sync"))
    step_s = BASE.chunk * COSTS.env_step_s + COSTS.infer_s(BASE.envs_per_gpu)
    epoch_s = BASE.rollout_steps * step_s + COSTS.train_per_sample_s * BASE.samples_per_update / BASE.num_gpus + COSTS.weight_sync_s
    expected = BASE.num_envs * BASE.rollout_steps * BASE.chunk / epoch_s
    assert r.env_steps_per_s == pytest.approx(expected, rel=1e-6)


def test_pipeline_stages_overlap_env_and_inference():
    # CPU-like envs (one at a time) and inference that costs about as much as stepping.
    costs = replace(COSTS, env_slots=1, infer_fixed_s=0.0, infer_per_sample_s=0.04)
    one = simulate(replace(BASE, mode="sync", costs=costs, pipeline_stages=1))
    two = simulate(replace(BASE, mode="sync", costs=costs, pipeline_stages=2))
    assert two.env_steps_per_s > 1.2 * one.env_steps_per_s


def test_sync_with_serial_envs_sums_env_times():
    costs = replace(COSTS, env_slots=1)
    r = simulate(replace(BASE, mode="sync", costs=costs))
    step_s = BASE.envs_per_gpu * BASE.chunk * COSTS.env_step_s + COSTS.infer_s(BASE.envs_per_gpu)
    epoch_s = BASE.rollout_steps * step_s + COSTS.train_per_sample_s * BASE.samples_per_update / BASE.num_gpus + COSTS.weight_sync_s
    assert r.env_steps_per_s == pytest.approx(BASE.num_envs * BASE.rollout_steps * BASE.chunk / epoch_s, rel=1e-6)


def test_async_reaches_the_env_bound_when_envs_are_the_bottleneck():
    costs = replace(COSTS, infer_fixed_s=0.0001, infer_per_sample_s=0.0, train_per_sample_s=1e-5, weight_sync_s=0.0)
    r = simulate(replace(BASE, mode="async", costs=costs, max_staleness=4, max_wait_s=0.0))
    bound = BASE.num_envs / costs.env_step_s
    assert 0.9 * bound <= r.env_steps_per_s <= bound


def test_async_beats_sync_and_long_tail_hurts_sync_more():
    tail = replace(COSTS, env_tail_prob=0.02, env_tail_factor=20.0)
    res = {(m, c): simulate(replace(BASE, mode=m, costs=cost)).env_steps_per_s
           for m in ("sync", "async") for c, cost in (("plain", COSTS), ("tail", tail))}
    assert res["async", "plain"] > res["sync", "plain"]
    assert res["sync", "tail"] / res["sync", "plain"] < res["async", "tail"] / res["async", "plain"]


def test_staleness_bound_limits_async_throughput_when_trainer_is_slow():
    slow_train = replace(COSTS, train_per_sample_s=0.02)
    tight = simulate(replace(BASE, mode="async", costs=slow_train, max_staleness=0))
    loose = simulate(replace(BASE, mode="async", costs=slow_train, max_staleness=3))
    assert tight.env_steps_per_s <= loose.env_steps_per_s
    assert tight.updates >= 1


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode='x' is invalid"):
        simulate(replace(BASE, mode="x"))
