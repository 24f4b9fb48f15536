"""ManiSkill3 backend against the real simulator; skips with available()'s reason without Vulkan."""

import numpy as np
import pytest

from asyncvla.config import ConfigError, env_config
from asyncvla.envs import maniskill
from asyncvla.envs.registry import make_vector_env, validate_env_id

OK, WHY = maniskill.BACKEND.available()


def test_instruction_falls_back_to_words_of_the_id():
    assert maniskill.instruction_for("PickCube-v1") == maniskill.INSTRUCTIONS["PickCube-v1"]
    assert maniskill.instruction_for("OpenCabinetDrawer-v1") == "open cabinet drawer"


def test_bad_task_is_one_line_config_error():
    # Without Vulkan the backend itself is refused, which is also a one-line ConfigError.
    with pytest.raises(ConfigError) as e:
        validate_env_id(env_config(id="maniskill/Nope-v1"))
    assert "\n" not in str(e.value) and "maniskill/Nope-v1" in str(e.value)


def test_probe_without_a_vulkan_driver_says_how_to_fix_it():
    out = maniskill.probe(env={"VK_ICD_FILENAMES": "/nonexistent/icd.json", "VK_DRIVER_FILES": "/nonexistent/icd.json"})
    assert out["ok"] is False
    assert out["reason"].startswith(maniskill.NO_VULKAN_HINT) and "\n" not in out["reason"]


needs_vulkan = pytest.mark.skipif(not OK, reason=f"ManiSkill unavailable: {WHY}")


def test_tasks_read_from_the_source_are_the_registry():
    """The task list is parsed from ManiSkill's @register_env decorators (no 5 s import): it must
    be what ManiSkill's own registry holds, max_episode_steps included."""
    pytest.importorskip("mani_skill")
    import mani_skill.envs  # noqa: F401
    from mani_skill.utils.registration import REGISTERED_ENVS

    registry = {k: s.max_episode_steps for k, s in REGISTERED_ENVS.items()
                if s.cls.__module__.startswith("mani_skill.envs.tasks.tabletop") and not s.asset_download_ids
                and k not in maniskill.UNSUPPORTED}
    assert maniskill.registered_tasks() == registry
    assert {"PickCube-v1", "PushCube-v1", "StackCube-v1"} <= set(maniskill.BACKEND.tasks())
    assert registry["PickCube-v1"] == 50


@pytest.fixture(scope="module")
def env():
    if not OK:
        pytest.skip(f"ManiSkill unavailable: {WHY}")
    cfg = env_config(id="maniskill/PickCube-v1", image_size=64)
    e = maniskill.BACKEND.make(cfg.task, cfg, 0)
    yield e
    e.close()


def test_obs_shapes_and_instruction(env):
    obs = env.reset(0)
    assert obs.image.shape == (64, 64, 3) and obs.image.dtype == np.uint8 and obs.image.std() > 5
    assert obs.proprio.shape == (18,) == (env.proprio_dim,) and obs.proprio.dtype == np.float32
    assert obs.instruction == "pick up the red cube and move it to the green goal"
    assert env.action_dim == 7 and env.max_episode_steps == 50


def test_reset_is_reproducible_from_seed(env):
    a, b, c = env.reset(5), env.reset(6), env.reset(5)
    np.testing.assert_array_equal(a.image, c.image)
    np.testing.assert_array_equal(a.proprio, c.proprio)
    assert not np.array_equal(a.image, b.image)


def test_step_and_raw_step(env):
    env.reset(0)
    out = env.step(np.zeros(7, np.float32))
    assert out.obs.image.shape == (64, 64, 3) and 0.0 <= out.reward <= 1.0 and not out.success
    raw = env.raw_step(np.zeros(7, np.float32))
    assert len(raw) == 5


@needs_vulkan
def test_vector_env_steps_chunks():
    cfg = env_config(id="maniskill/PushCube-v1", num_envs=1, image_size=32)
    with make_vector_env(cfg) as venv:
        assert venv.reset()[0].obs.image.shape == (32, 32, 3)
        res = venv.step(np.zeros((1, 3, 7), np.float32))[0]
        assert res.num_steps == 3 and res.obs.image.shape == (32, 32, 3)


def test_the_probe_runs_once_per_machine_setup(tmp_path, monkeypatch):
    """The Vulkan probe (a fresh interpreter) is kept on disk, keyed by what its answer depends on."""
    calls = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(maniskill, "probe", lambda: calls.append(1) or {"ok": True, "reason": "fresh"})
    try:
        for _ in range(2):
            maniskill._probe_cached.cache_clear()  # a new process
            assert maniskill._probe_cached() == {"ok": True, "reason": "fresh"}
        assert len(calls) == 1 and len(list((tmp_path / "asyncvla").glob("maniskill-probe-*.json"))) == 1
        monkeypatch.setenv("VK_ICD_FILENAMES", "/another/driver.json")  # another driver: probe again
        maniskill._probe_cached.cache_clear()
        maniskill._probe_cached()
        assert len(calls) == 2
    finally:
        maniskill._probe_cached.cache_clear()
