"""VectorEnv protocol on the emulated backend: independent stepping, auto-reset, chunks, seeding."""

import time

import numpy as np
import pytest

from asyncvla.config import EnvConfig, env_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.envs import make_vector_env


def _cfg(**kw) -> EnvConfig:
    emu = EmulatedConfig(step_mean_s=0.0, step_jitter=0.0, reset_s=0.0, episode_len=kw.pop("episode_len", 50))
    return env_config(id=kw.pop("id", "emulated/custom"), num_envs=kw.pop("num_envs", 3), image_size=16, emulated=emu, **kw)


def test_reset_returns_first_obs_per_env():
    with make_vector_env(_cfg()) as venv:
        res = venv.reset()
    assert [r.env_id for r in res] == [0, 1, 2]
    assert all(r.is_first for r in res)
    assert res[0].obs.image.shape == (16, 16, 3) and res[0].obs.image.dtype == np.uint8
    assert res[0].obs.proprio.dtype == np.float32


def test_same_seed_same_rollout_and_envs_differ():
    def rollout(seed):
        with make_vector_env(_cfg(seed=seed)) as venv:
            first = venv.reset()
            acts = np.full((3, 2, 4), 0.3, np.float32)
            res = venv.step(acts)
        return [r.obs.proprio for r in first], [r.reward for r in res]

    a, b, c = rollout(0), rollout(0), rollout(1)
    np.testing.assert_array_equal(np.stack(a[0]), np.stack(b[0]))
    assert a[1] == b[1]
    assert not np.array_equal(np.stack(a[0]), np.stack(c[0]))
    assert not np.array_equal(a[0][0], a[0][1]), "envs of one worker must get different initial states"


def test_chunk_executes_every_action():
    with make_vector_env(_cfg(num_envs=1)) as venv:
        p0 = venv.reset()[0].obs.proprio[:4].copy()
        res = venv.step(np.full((1, 3, 4), 1.0, np.float32))[0]
    assert res.num_steps == 3
    np.testing.assert_allclose(res.obs.proprio[:4], np.clip(p0 + 0.3, -1, 1), atol=1e-6)


def test_auto_reset_truncates_inside_chunk_and_keeps_final_obs():
    with make_vector_env(_cfg(num_envs=1, episode_len=5, end_on_success=False)) as venv:
        venv.reset()
        r1 = venv.step(np.zeros((1, 4, 4), np.float32))[0]
        r2 = venv.step(np.zeros((1, 4, 4), np.float32))[0]
    assert (r1.num_steps, r1.done) == (4, False)
    assert (r2.num_steps, r2.truncated, r2.terminated) == (1, True, False)
    assert r2.episode_len == 5 and r2.episode_index == 1
    assert r2.final_obs is not None and not np.array_equal(r2.final_obs.proprio, r2.obs.proprio)
    # The episode clock a time-aware critic reads: 1 at reset, 0 at the limit.
    assert (r1.obs.time_left, r2.final_obs.time_left, r2.obs.time_left) == (pytest.approx(0.2), 0.0, 1.0)


def test_success_terminates_when_end_on_success():
    with make_vector_env(_cfg(num_envs=1)) as venv:
        p = venv.reset()[0].obs.proprio
        direction = np.clip((p[4:8] - p[:4]) * 10, -1, 1)
        for _ in range(40):
            r = venv.step(direction[None, None, :].astype(np.float32))[0]
            if r.done:
                break
            direction = np.clip((r.obs.proprio[4:8] - r.obs.proprio[:4]) * 10, -1, 1)
    assert r.terminated and r.success and r.episode_success


def test_recv_returns_ready_envs_first_without_waiting_for_slow_ones():
    cfg = _cfg(num_envs=2, executor="thread")
    with make_vector_env(cfg) as venv:
        venv.reset()
        venv._slots[1].env.unwrapped.cfg = EmulatedConfig(step_mean_s=0.5, step_jitter=0.0, reset_s=0.0)
        venv.send([0, 1], np.zeros((2, 1, 4), np.float32))
        t0 = time.perf_counter()
        first = venv.recv(min_ready=1)
        waited = time.perf_counter() - t0
        assert [r.env_id for r in first] == [0] and waited < 0.4
        venv.send([0], np.zeros((1, 1, 4), np.float32))  # env 0 keeps stepping while env 1 is busy
        assert venv.recv(min_ready=1)[0].env_id == 0
        assert [r.env_id for r in venv.recv(min_ready=1)] == [1]


def test_send_to_busy_env_is_an_error():
    with make_vector_env(_cfg(num_envs=1, executor="thread")) as venv:
        venv.reset()
        venv._slots[0].env.unwrapped.cfg = EmulatedConfig(step_mean_s=0.2, step_jitter=0.0, reset_s=0.0)
        venv.send([0], np.zeros((1, 1, 4), np.float32))
        with pytest.raises(RuntimeError, match="still stepping"):
            venv.send([0], np.zeros((1, 1, 4), np.float32))
        venv.recv(min_ready=1)


def test_thread_executor_overlaps_wall_time():
    emu = EmulatedConfig(step_mean_s=0.05, step_jitter=0.0, reset_s=0.0)
    cfg = env_config(id="emulated/custom", num_envs=4, image_size=16, emulated=emu, executor="thread")
    with make_vector_env(cfg) as venv:
        venv.reset()
        t0 = time.perf_counter()
        venv.step(np.zeros((4, 2, 4), np.float32))
        dt = time.perf_counter() - t0
    assert dt < 0.3, f"4 envs x 2 steps x 50 ms should overlap to ~0.1 s, took {dt:.2f} s"


def test_wake_returns_a_blocked_recv_early_without_results():
    import threading
    import time as _time

    from asyncvla.config import env_config
    from asyncvla.envs.registry import make_vector_env

    vec = make_vector_env(env_config(id="emulated/fast", num_envs=1, image_size=16))
    vec.reset_all()
    assert len(vec.recv(min_ready=1)) == 1
    threading.Timer(0.05, vec.wake).start()
    t0 = _time.monotonic()
    assert vec.recv(min_ready=1) == []  # nothing is stepping: only the wake ends the wait
    assert _time.monotonic() - t0 < 5
    vec.close()


def test_env_that_fails_its_first_reset_is_rebuilt_and_reported_as_first():
    from asyncvla.envs.emulated import EmulatedEnv
    from asyncvla.envs.vector import VectorEnv

    made = []

    def make():
        env = EmulatedEnv(EmulatedConfig(step_mean_s=0.0, reset_s=0.0), 16, 0)
        if not made:  # the first instance crashes on reset, as an env whose renderer fails would
            env.reset = lambda seed: (_ for _ in ()).throw(RuntimeError("renderer died"))
        made.append(env)
        return env

    for executor in ("inline", "thread"):
        made.clear()
        with VectorEnv([make], executor=executor) as venv:
            (r,) = venv.reset()
        assert r.is_first and "renderer died" in r.error and not r.truncated and r.episode_index == 0


def test_env_that_cannot_be_rebuilt_fails_recv_instead_of_hanging():
    from asyncvla.envs.emulated import EmulatedEnv
    from asyncvla.envs.vector import VectorEnv

    calls = []

    def make():
        calls.append(1)
        if len(calls) > 1:
            raise OSError("no display")
        env = EmulatedEnv(EmulatedConfig(step_mean_s=0.0, reset_s=0.0), 16, 0)
        env.step = lambda a: (_ for _ in ()).throw(RuntimeError("crash"))
        return env

    with VectorEnv([make], executor="thread") as venv:
        venv.reset()
        venv.send([0], np.zeros((1, 1, 4), np.float32))
        with pytest.raises(OSError, match="no display"):
            venv.recv(min_ready=1, timeout_s=5)


def test_a_hung_envs_replacement_builds_in_its_own_thread_while_the_others_step():
    """The watchdog hands a hung env's build and reset to its successor's thread: a slow rebuild
    (a simulator takes seconds to load) holds up only that env, not the loop that steps the rest."""
    import threading

    from asyncvla.envs.emulated import EmulatedEnv
    from asyncvla.envs.vector import VectorEnv

    made = {0: 0, 1: 0}
    release = threading.Event()

    def maker(i):
        def make():
            made[i] += 1
            env = EmulatedEnv(EmulatedConfig(step_mean_s=0.0, step_jitter=0.0, reset_s=0.0), 16, i)
            if i == 0 and made[0] == 1:  # the first env 0 hangs in its first step, for good
                env.step = lambda a: release.wait(60) and None
            if i == 0 and made[0] == 2:  # its replacement takes a while to build
                time.sleep(0.5)
            return env
        return make

    with VectorEnv([maker(0), maker(1)], executor="thread", step_timeout_s=0.2) as venv:
        venv.reset()
        venv.send([0, 1], np.zeros((2, 1, 4), np.float32))
        t0 = time.perf_counter()
        ones = 0
        cut = None
        while cut is None and time.perf_counter() - t0 < 10:
            for r in venv.recv(min_ready=1, timeout_s=1.0):
                if r.env_id == 1:
                    ones += 1
                    if 0.25 < time.perf_counter() - t0 < 0.6:  # while env 0's replacement builds
                        ones += 1000
                    venv.send([1], np.zeros((1, 1, 4), np.float32))
                else:
                    cut = (r, time.perf_counter() - t0)
        release.set()
    r, at = cut
    assert "hung" in r.error and r.truncated and r.obs is not None and made[0] == 2
    assert at >= 0.65, at  # 0.2 s deadline + the 0.5 s build, in the successor's thread
    assert ones >= 1000, "env 1 got no result while env 0's replacement was building"


@pytest.mark.parametrize("reset_timeout_s, replaced", [(2.0, False), (0.2, True)])
def test_resets_have_their_own_deadline(reset_timeout_s, replaced):
    """A reset slower than a chunk's deadline is not a hang; one past env.reset_timeout_s is."""
    from asyncvla.envs.emulated import EmulatedEnv
    from asyncvla.envs.vector import VectorEnv

    made = []

    def make():  # the first incarnation resets in 0.4 s, its replacement at once
        made.append(1)
        return EmulatedEnv(EmulatedConfig(step_mean_s=0.0, step_jitter=0.0, reset_s=0.4 if len(made) == 1 else 0.0), 16, 0)

    with VectorEnv([make], executor="thread", step_timeout_s=0.1, reset_timeout_s=reset_timeout_s) as venv:
        (r,) = venv.reset()
    assert r.is_first and r.obs is not None
    assert bool(r.error) == replaced
    if replaced:
        assert "env.reset_timeout_s=0.2 s" in r.error


def test_step_timeout_auto_follows_the_measured_chunk_times():
    """step_timeout_s auto: the generous reset deadline until 32 chunks are measured, then 5x the
    slowest recent chunk, so an unending hang is cut in a fraction of a second, not a minute."""
    import threading

    from asyncvla.envs.emulated import EmulatedEnv
    from asyncvla.envs.vector import AUTO_FACTOR, AUTO_MIN_CHUNKS, VectorEnv

    release = threading.Event()
    steps = []

    def make():
        env = EmulatedEnv(EmulatedConfig(step_mean_s=0.01, step_jitter=0.0, reset_s=0.0), 16, 0)
        step = env.step

        def maybe_hang(a):
            steps.append(1)
            if len(steps) == AUTO_MIN_CHUNKS + 5:
                release.wait(60)
            return step(a)
        env.step = maybe_hang
        return env

    with VectorEnv([make], executor="thread", step_timeout_s="auto", reset_timeout_s=30.0) as venv:
        venv.reset()
        assert venv.chunk_deadline_s() == 30.0
        for _ in range(AUTO_MIN_CHUNKS + 4):
            (r,) = venv.step(np.zeros((1, 1, 4), np.float32))
            assert not r.error
        deadline = venv.chunk_deadline_s()
        assert AUTO_FACTOR * 0.01 <= deadline < 1.0, deadline
        t0 = time.perf_counter()
        (r,) = venv.step(np.zeros((1, 1, 4), np.float32))
        waited = time.perf_counter() - t0
        release.set()
    assert "hung (no result within env.step_timeout_s=auto: " in r.error and r.truncated
    assert deadline <= waited < deadline + 1.0, (waited, deadline)
