"""Third-party envs and policies through entry points: a package installed beside asyncvla (here a
dist-info directory on sys.path, as pip leaves one) is found without editing asyncvla."""

import textwrap

import numpy as np
import pytest

from asyncvla import plugins
from asyncvla.config import ConfigError, env_config, policy_config


ENV_MODULE = '''
import numpy as np
from asyncvla.config import EnvConfig
from asyncvla.envs.base import Obs, StepOut


class LineEnv:
    """A point on a line that moves by the action; success at x >= 1. Renders 12x12 whatever
    env.image_size says (asyncvla resizes)."""

    action_dim, proprio_dim, max_episode_steps, instruction = 1, 1, 10, "move right"

    def __init__(self, cfg):
        self.size, self.x = 12, 0.0

    def _obs(self):
        return Obs(np.zeros((self.size, self.size, 3), np.uint8), np.array([self.x], np.float32), self.instruction)

    def reset(self, seed=None):
        self.x = 0.0
        return self._obs()

    def step(self, action):
        self.x += float(np.clip(action[0], -1, 1)) * 0.25
        return StepOut(self._obs(), reward=self.x, terminated=False, truncated=False, success=self.x >= 1.0)

    def close(self):
        pass


class _Backend:
    name, description, config, cameras = "line", "a point on a line (plugin test)", EnvConfig, ("main",)

    def available(self):
        return True, ""

    def tasks(self):
        return ["right"]

    def make(self, task, cfg, index):
        return LineEnv(cfg)


BACKEND = _Backend()
'''

POLICY_MODULE = '''
from dataclasses import dataclass

from asyncvla.config import register_policy_config
from asyncvla.policies.tiny.config import TinyConfig
from asyncvla.policies.registry import register
from asyncvla.policies.tiny.model import TinyVLA


@register_policy_config("plugin-tiny")
@dataclass
class PluginTinyConfig(TinyConfig):
    type: str = "plugin-tiny"


@register("plugin-tiny")
class PluginTiny(TinyVLA):
    pass
'''


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A package `lineplug` with one env and one policy entry point, as pip would install it."""
    (tmp_path / "lineplug").mkdir()
    (tmp_path / "lineplug" / "__init__.py").write_text("")
    (tmp_path / "lineplug" / "env.py").write_text(ENV_MODULE)
    (tmp_path / "lineplug" / "policy.py").write_text(POLICY_MODULE)
    dist = tmp_path / "lineplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lineplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [asyncvla.envs]
        line = lineplug.env

        [asyncvla.policies]
        plugin-tiny = lineplug.policy
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.refresh()
    yield tmp_path
    plugins.refresh()


def test_an_installed_env_backend_is_listed_validated_and_stepped(installed):
    from asyncvla.envs import make_vector_env
    from asyncvla.envs.registry import backend_names, describe_backends, validate_env_id

    assert "line" in backend_names() and any(i.backend == "line" and i.tasks == ["right"] for i in describe_backends())
    cfg = env_config(id="line/right", num_envs=2, image_size=8)
    validate_env_id(cfg)
    with make_vector_env(cfg) as venv:
        assert venv.reset()[0].obs.image.shape == (8, 8, 3)  # resized to env.image_size
        results = venv.step(np.ones((2, 4, 1), np.float32))
    assert all(r.success and r.terminated for r in results)


def test_an_installed_policy_family_parses_and_builds(installed):
    from asyncvla.policies.registry import make_policy, policy_types

    cfg = policy_config("plugin-tiny", chunk=2, hidden_dim=16, num_layers=1, num_heads=2, image_size=8)
    assert type(cfg).__name__ == "PluginTinyConfig" and "plugin-tiny" in policy_types()
    assert type(make_policy(cfg, 1, 1)).__name__ == "PluginTiny"


def test_without_the_package_the_names_are_unknown(tmp_path):
    plugins.refresh()
    with pytest.raises(ConfigError, match="backend 'line' is invalid"):
        from asyncvla.envs.registry import get_backend

        get_backend("line")


def test_a_plugin_may_not_take_a_built_in_name(installed):
    (installed / "lineplug-0.1.dist-info" / "entry_points.txt").write_text("[asyncvla.envs]\nmetaworld = lineplug.env\n")
    plugins.refresh()
    from asyncvla.envs.registry import backend_names

    with pytest.raises(ConfigError, match="env plugin 'metaworld' is invalid"):
        backend_names()


def test_the_cli_finds_an_installed_plugin(installed):
    """As a user runs it: a fresh `asyncvla` process with the package on its path."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    run = lambda *a: subprocess.run([sys.executable, "-m", "asyncvla.cli", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=120, env=env)
    r = run("envs", "line", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [{"backend": "line", "available": True, "reason": "", "tasks": ["right"]}]
    r = run("env-bench", "line/right", "--num-envs", "1", "--steps", "8", "--image-size", "8", "--json")
    assert r.returncode == 0, r.stderr
    r = run("train", "--policy.type", "plugin-tiny", "--help", "policy")
    assert r.returncode == 0 and "plugin-tiny" in r.stdout, r.stdout + r.stderr
