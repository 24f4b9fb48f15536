"""The MetaWorld backend on the real simulator (small images, short episodes)."""

import numpy as np
import pytest

from asyncvla.config import ConfigError, EnvConfig, env_config
from asyncvla.envs import metaworld as mw
from asyncvla.envs.base import flip_upright
from asyncvla.envs.registry import make_vector_env, validate_env_id

ok, why = mw.BACKEND.available()
pytestmark = pytest.mark.skipif(not ok, reason=f"metaworld unavailable: {why}")

SIZE = 32


def _cfg(**kw) -> EnvConfig:
    return env_config(**{"id": "metaworld/reach-v3", "num_envs": 1, "image_size": SIZE, **kw})


@pytest.fixture(scope="module")
def env():
    e = mw.BACKEND.make("reach-v3", _cfg(), 0)
    yield e
    e.close()


def test_reset_is_reproducible_and_seeds_differ(env):
    a, b, c = env.reset(3), env.reset(3), env.reset(4)
    np.testing.assert_array_equal(a.proprio, b.proprio)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.allclose(a.proprio[36:39], c.proprio[36:39])  # another goal
    assert a.proprio.dtype == np.float32 and a.proprio.shape == (39,)
    assert a.instruction == "reach the goal"


def test_image_is_upright_rotation_of_the_raw_render(env):
    import mujoco

    obs = env.reset(0)
    assert obs.image.shape == (SIZE, SIZE, 3) and obs.image.dtype == np.uint8
    with mujoco.Renderer(env._raw.model, SIZE, SIZE) as r:
        r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        r.update_scene(env._raw.data, camera=mw.CAMERA)
        raw = r.render()
    np.testing.assert_array_equal(obs.image, flip_upright(raw))
    # Upright: the red Sawyer arm stands in the upper right (it is lower left when upside down).
    img = obs.image.astype(int)
    ys, xs = np.nonzero((img[..., 0] > 100) & (img[..., 1] < 60) & (img[..., 2] < 60))
    assert len(ys) > 20 and ys.mean() < SIZE / 2 and xs.mean() > SIZE / 2


def test_fast_render_changes_the_image():
    slow = mw.BACKEND.make("reach-v3", _cfg(fast_render=False), 0)
    try:
        img = slow.reset(0).image
    finally:
        slow.close()
    fast = mw.BACKEND.make("reach-v3", _cfg(fast_render=True), 0)
    try:
        img_fast = fast.reset(0).image
    finally:
        fast.close()
    assert np.abs(img.astype(int) - img_fast).mean() > 0.5  # shadows and MSAA are gone


def _task_vectors(e, seeds) -> set[tuple]:
    out = set()
    for s in seeds:
        e.reset(s)
        out.add(tuple(np.round(e.task_vector, 6)))
    return out


def test_train_and_eval_splits_draw_different_states(env):
    ev = mw.BACKEND.make("reach-v3", _cfg(split="eval"), 0)
    try:
        train, evals = _task_vectors(env, range(20)), _task_vectors(ev, range(20))
        np.testing.assert_array_equal(ev.reset(5).proprio, ev.reset(5).proprio)
    finally:
        ev.close()
    assert len(train) == 20 and len(evals) == 20
    assert not train & evals


def test_vector_env_auto_resets_and_counts_chunk_steps():
    with make_vector_env(_cfg(max_episode_steps=5)) as vec:
        first = vec.reset()[0]
        r = vec.step(np.zeros((1, 3, 4), np.float32))[0]  # a chunk of 3 actions
        assert r.num_steps == 3 and not r.done
        r = vec.step(np.zeros((1, 3, 4), np.float32))[0]  # ends inside the chunk
        assert r.num_steps == 2 and r.truncated and r.episode_len == 5 and r.episode_index == 1
        assert r.final_obs is not None and not np.array_equal(r.obs.proprio, r.final_obs.proprio)
        assert not np.array_equal(r.obs.proprio[36:], first.obs.proprio[36:])  # a new goal after auto-reset


def test_thread_executor_renders_from_any_thread():
    # An EGL context is current in one thread at a time; envs hop between pool threads.
    # Without releasing it after each frame this fails with EGL_BAD_ACCESS within ~30 steps.
    errors = []
    with make_vector_env(_cfg(num_envs=3, executor="thread")) as vec:
        vec.reset()
        for _ in range(30):
            results = vec.step(np.zeros((3, 1, 4), np.float32))
            errors += [r.error for r in results if r.error]
    assert not errors, errors[0]
    assert all(r.obs.image.std() > 10 for r in results)


def test_expert_succeeds_on_reach_within_the_step_limit():
    expert = mw.expert_policy("reach-v3")
    with make_vector_env(_cfg()) as vec:
        obs = vec.reset()[0].obs
        for _ in range(vec.max_episode_steps):
            r = vec.step(expert(obs.proprio)[None])[0]
            obs = r.obs
            if r.done:
                break
        assert r.terminated and r.episode_success and r.episode_len < vec.max_episode_steps


def test_task_sets_instructions_and_experts_cover_mt50():
    assert len(mw.MT50) == 50 and len(mw.MT10) == 10 and set(mw.MT10) <= set(mw.MT50)
    assert mw.BACKEND.tasks() == mw.MT50
    assert set(mw.INSTRUCTIONS) == set(mw.MT50)
    for task in mw.MT50:
        assert callable(mw.expert_policy(task))
        assert mw.default_max_episode_steps(task) <= mw.METAWORLD_MAX_STEPS
    assert mw.instruction_for("button-press-v9") == "do the task: button press"


def test_fps_matches_the_simulator(env):
    assert mw.FPS == pytest.approx(1.0 / env._raw.dt)


def test_bad_task_and_too_long_episodes_are_one_line_config_errors():
    with pytest.raises(ConfigError) as e:
        validate_env_id(env_config(id="metaworld/reach-v9"))
    assert "\n" not in str(e.value) and "reach-v9" in str(e.value) and "allowed" in str(e.value)
    with pytest.raises(ConfigError, match="max_episode_steps"):
        mw.BACKEND.make("reach-v3", _cfg(max_episode_steps=501), 0)
    with pytest.raises(ConfigError, match="no MetaWorld expert"):
        mw.expert_policy("reach-v9")


def test_reset_some_restarts_a_group_from_one_shared_initial_state():
    from asyncvla.envs import make_vector_env

    with make_vector_env(env_config(id="metaworld/reach-v3", num_envs=3, image_size=16, seed=0)) as vec:
        first = {r.env_id: r.obs.proprio for r in vec.reset()}
        assert not np.allclose(first[0][36:39], first[1][36:39])  # different goals by default
        vec.reset_some([0, 1], [123, 123])
        again = {r.env_id: r for r in vec.recv(min_ready=2)}
        assert set(again) == {0, 1} and all(r.is_first for r in again.values())
        np.testing.assert_allclose(again[0].obs.proprio, again[1].obs.proprio)
