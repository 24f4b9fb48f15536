"""Wrappers: resize, latency injection and fault injection (crash, hang) with env rebuild."""

import time
from collections import Counter

import numpy as np
import pytest

from asyncvla.config import WrapperConfig, env_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.envs import EnvCrashed, EnvHung, make_env, make_vector_env
from asyncvla.envs.emulated import EmulatedEnv
from asyncvla.envs.wrappers import ResizeImage

FAST = EmulatedConfig(step_mean_s=0.0, step_jitter=0.0, reset_s=0.0)


def test_resize_wrapper_changes_every_image():
    env = ResizeImage(EmulatedEnv(FAST, image_size=32, index=0), 20)
    obs = env.reset(seed=1)
    assert obs.image.shape == (20, 20, 3) and obs.image.dtype == np.uint8
    assert env.step(np.zeros(4, np.float32)).obs.image.shape == (20, 20, 3)
    assert env.action_dim == 4  # attributes pass through


def test_latency_wrapper_adds_wall_time():
    cfg = env_config(id="emulated/custom", emulated=FAST, image_size=16, wrappers=WrapperConfig(latency_s=0.03))
    env = make_env(cfg)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(5):
        env.step(np.zeros(4, np.float32))
    assert time.perf_counter() - t0 >= 0.15


def test_crash_injection_raises_and_vector_env_rebuilds():
    cfg = env_config(id="emulated/custom", emulated=FAST, image_size=16, num_envs=2,
                    wrappers=WrapperConfig(fault_prob=0.2, fault_kind="crash"))
    env = make_env(cfg)
    env.reset(seed=0)
    raised = 0
    for _ in range(50):
        try:
            env.step(np.zeros(4, np.float32))
        except EnvCrashed:
            raised += 1
    assert 0 < raised < 50
    with make_vector_env(cfg) as venv:
        venv.reset()
        errors = []
        for _ in range(30):
            errors += [r for r in venv.step(np.zeros((2, 1, 4), np.float32)) if r.error]
    assert errors and all(r.truncated and "injected crash" in r.error for r in errors)
    assert all(r.final_obs is None for r in errors), "a cut episode must not offer a bootstrap obs"


def test_hang_injection_surfaces_as_error_after_hang_time():
    cfg = env_config(id="emulated/custom", emulated=FAST, image_size=16, num_envs=1,
                    wrappers=WrapperConfig(fault_prob=1.0, fault_kind="hang", fault_hang_s=0.1))
    with make_vector_env(cfg) as venv:
        venv.reset()
        t0 = time.perf_counter()
        r = venv.step(np.zeros((1, 1, 4), np.float32))[0]
    assert time.perf_counter() - t0 >= 0.1
    assert r.error and "hang" in r.error


def test_crashes_and_hangs_in_one_run_at_their_own_rates():
    cfg = env_config(id="emulated/custom", emulated=FAST, image_size=16,
                     wrappers=WrapperConfig(fault_prob=0.3, fault_kind="crash", hang_prob=0.2, fault_hang_s=0.0))
    env = make_env(cfg)
    env.reset(seed=0)
    kinds = Counter()
    for _ in range(400):
        try:
            env.step(np.zeros(4, np.float32))
            kinds["ok"] += 1
        except (EnvCrashed, EnvHung) as e:
            kinds[type(e).__name__] += 1
    assert 0.22 < kinds["EnvCrashed"] / 400 < 0.38 and 0.13 < kinds["EnvHung"] / 400 < 0.27, kinds


def test_success_reward_pays_one_exactly_on_success_steps():
    base = env_config(id="emulated/custom", emulated=EmulatedConfig(step_mean_s=0.0, step_jitter=0.0, reset_s=0.0,
                                                                   success_radius=0.6), image_size=16)
    plain, sparse = make_env(base), make_env(env_config(**{**base.__dict__, "wrappers": WrapperConfig(reward="success")}))
    plain.reset(seed=3), sparse.reset(seed=3)
    rng = np.random.default_rng(0)
    successes = 0
    for _ in range(40):
        a = rng.uniform(-1, 1, 4).astype(np.float32)
        p, s = plain.step(a), sparse.step(a)
        assert s.reward == (1.0 if s.success else 0.0)
        assert s.success == p.success and s.info["env_reward"] == p.reward
        successes += s.success
    assert 0 < successes < 40  # the check above saw both cases


def test_success_reward_rejects_unknown_kinds():
    import pytest

    from asyncvla.config import ConfigError

    with pytest.raises(ConfigError, match="env.wrappers.reward"):
        WrapperConfig(reward="dense")


def test_a_rebuilt_env_draws_new_faults_not_its_predecessors():
    """Each rebuild is a new incarnation with its own fault stream: with one stream per env id, env 0
    crashed at exactly the same step after every rebuild (every 10 steps, 20 times in a row)."""
    cfg = env_config(id="emulated/custom", emulated=FAST, image_size=16, num_envs=1,
                    wrappers=WrapperConfig(fault_prob=0.1, fault_kind="crash"))
    with make_vector_env(cfg) as venv:
        venv.reset()
        gaps, since = [], 0
        for _ in range(400):
            since += 1
            if venv.step(np.zeros((1, 1, 4), np.float32))[0].error:
                gaps.append(since)
                since = 0
    assert len(gaps) >= 10 and len(set(gaps)) > 3, gaps  # geometric gaps, not one repeated gap


def test_an_env_that_never_returns_is_replaced_after_step_timeout_s():
    """A hang that does not time itself out (fault_hang_s an hour): the watchdog cuts the episode,
    replaces the env, and the other env steps on; the late result of the abandoned thread is dropped."""
    hang = WrapperConfig(fault_prob=0.02, fault_kind="hang", fault_hang_s=3600.0)
    cfg = env_config(id="emulated/custom", emulated=FAST, image_size=16, num_envs=2, executor="thread",
                    step_timeout_s=0.5, wrappers=hang)
    with make_vector_env(cfg) as venv:
        venv.reset()
        t0 = time.perf_counter()
        hung, steps = [], 0
        while not hung and time.perf_counter() - t0 < 30:
            for r in venv.step(np.zeros((2, 1, 4), np.float32)):
                steps += 1
                if r.error:
                    hung.append(r)
        assert hung and "hung (no result within env.step_timeout_s=0.5 s); replaced" in hung[0].error
        assert hung[0].truncated and hung[0].final_obs is None
        for _ in range(5):  # the replacement steps normally
            assert len(venv.step(np.zeros((2, 1, 4), np.float32))) == 2


def test_replaced_hung_envs_are_closed_so_their_threads_end():
    """Unending hangs, many of them: each replaced env is closed (a fault wrapper's hang then ends),
    so threads do not pile up, and the late failure of a replaced env never rebuilds its successor."""
    import threading

    hang = WrapperConfig(hang_prob=0.3, fault_hang_s=3600.0)
    cfg = env_config(id="emulated/custom", emulated=FAST, image_size=16, num_envs=2, executor="thread",
                    step_timeout_s=0.1, wrappers=hang)
    before = threading.active_count()
    with make_vector_env(cfg) as venv:
        venv.reset()
        errors = 0
        for _ in range(30):
            results = venv.step(np.zeros((2, 1, 4), np.float32))
            assert len(results) == 2 and all(r.obs is not None for r in results)
            errors += sum(bool(r.error) for r in results)
        time.sleep(0.3)  # the close threads and the released hung jobs finish
        assert errors >= 5 and threading.active_count() <= before + 2 + 2, (errors, threading.active_count(), before)


def test_step_timeout_needs_the_thread_executor():
    from asyncvla.config import ConfigError

    with pytest.raises(ConfigError, match="env.step_timeout_s=1.0 is invalid: needs env.executor=thread"):
        env_config(id="emulated/custom", emulated=FAST, step_timeout_s=1.0)
