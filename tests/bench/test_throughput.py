"""bench throughput: the bound arithmetic, the emulated accelerator, argument checks, one short run."""

import time

import numpy as np
import pytest

from asyncvla.bench.throughput import (AcceleratorCosts, bound_env_steps_per_s, emulate_inference, emulated_balanced,
                                       throughput_bench)
from asyncvla.config import ConfigError
from asyncvla.policies.base import ActOut, ObsBatch, Policy


def test_balanced_workload_splits_a_sync_iteration_in_thirds_and_bounds_by_the_bottleneck():
    w = emulated_balanced()
    cfg, c = w.cfg, w.costs
    steps, envs = cfg.runtime.rollout_steps, cfg.env.num_envs
    env_s = steps * w.env_decision_s * 1.05
    assert steps * c.infer_s(envs) == pytest.approx(env_s)
    assert c.train_per_sample_s * envs * steps == pytest.approx(env_s)
    bound, terms = bound_env_steps_per_s(w)
    assert bound == min(terms.values())
    assert terms["env"] == pytest.approx(envs * cfg.policy.chunk / (w.env_decision_s + c.infer_s(1)))
    # Bigger batches: more inference capacity, but each env waits longer for its batch.
    small, big = bound_env_steps_per_s(w, batch=1)[1], bound_env_steps_per_s(w, batch=envs)[1]
    assert small["env"] == pytest.approx(terms["env"])
    assert big["rollout"] > small["rollout"] and big["env"] < small["env"]


def test_emulated_inference_holds_wall_time():
    class P(Policy):
        def act(self, obs, deterministic=False):
            n = len(obs)
            return ActOut(np.zeros((n, 1, 1), np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32), 0)

    p = emulate_inference(P(), AcceleratorCosts(0.01, 0.01, 0.0))
    obs = ObsBatch(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 2), np.float32), ["x"] * 3)
    t0 = time.perf_counter()
    p.act(obs)
    assert time.perf_counter() - t0 >= 0.04


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
