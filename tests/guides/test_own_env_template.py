"""Template of docs/guides/own-env.md: a toy backend (a point reaching a goal on a plane, pure numpy)
and the checks every new backend should pass through asyncvla's own protocol (VectorEnv send/recv).

Copy this file for your simulator: the top half is what a backend module holds, the bottom half its tests.
Your package names that module in its pyproject.toml (`[project.entry-points."asyncvla.envs"]`,
`point2d = "my_pkg.point2d"`); here the fixture installs this file the same way, for one test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from asyncvla import plugins
from asyncvla.config import ConfigError, EnvConfig, WrapperConfig, env_config
from asyncvla.envs import make_vector_env, registry
from asyncvla.envs.base import Obs, StepOut

# -- the backend module ----------------------------------------------------------------------

TASKS = {"reach": 0.5, "reach-far": 0.9}
"""Task name (the part after `point2d/`) -> how far from the origin goals are drawn."""
CAMERAS = ("main", "wrist")
"""What `env.cameras` may name: `main` (the whole plane) and `wrist` (a close-up around the point)."""


@dataclass
class Point2DEnvConfig(EnvConfig):
    """`point2d/*` envs: EnvConfig's fields plus this backend's own (`--env.step-size 0.05`)."""

    step_size: float = 0.1
    """How far one action of norm 1 moves the point."""
    success_radius: float = 0.1
    """The task succeeds within this distance of the goal."""

    def __post_init__(self) -> None:
        super().__post_init__()  # EnvConfig's checks, including env.cameras against Backend.cameras
        if not 0 < self.step_size <= 1:
            raise ConfigError(f"env.step_size={self.step_size!r} is invalid: must be in (0, 1]")
        if not self.success_radius > 0:
            raise ConfigError(f"env.success_radius={self.success_radius!r} is invalid: must be > 0")


class Point2DEnv:
    """One env: implements `asyncvla.envs.base.Env` (reset, step, close and four attributes)."""

    def __init__(self, task: str, cfg: Point2DEnvConfig):
        self.instruction = "move the red dot onto the green dot"
        self.action_dim = 2
        self.proprio_dim = 4  # point xy, goal xy
        self.max_episode_steps = 50  # used when env.max_episode_steps is null
        self.cfg, self.goal_scale = cfg, TASKS[task]
        self.pos = np.zeros(2, np.float32)
        self.goal = np.zeros(2, np.float32)

    def _draw(self, centre: np.ndarray, zoom: float) -> np.ndarray:
        n = self.cfg.image_size  # render at env.image_size (make_env resizes any other size to it)
        img = np.zeros((n, n, 3), np.uint8)
        for point, channel in ((self.pos, 0), (self.goal, 1)):
            rc = np.round(((point - centre) * zoom * 0.5 + 0.5) * (n - 1)).astype(int)
            if (0 <= rc).all() and (rc < n).all():
                img[max(rc[0] - 1, 0): rc[0] + 2, max(rc[1] - 1, 0): rc[1] + 2, channel] = 255
        return img

    def _obs(self) -> Obs:
        extra = {"wrist": self._draw(self.pos, zoom=4.0)} if "wrist" in self.cfg.cameras else {}
        return Obs(image=self._draw(np.zeros(2), zoom=1.0), proprio=np.concatenate([self.pos, self.goal]),
                   instruction=self.instruction, extra_images=extra)

    def reset(self, seed: int) -> Obs:
        # Same (seed, split) -> same initial state; train and eval draw from disjoint streams.
        rng = np.random.default_rng([seed, 0 if self.cfg.split == "train" else 1])
        self.pos = rng.uniform(-0.2, 0.2, 2).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        self.goal = (self.goal_scale * np.array([np.cos(angle), np.sin(angle)])).astype(np.float32)
        return self._obs()

    def step(self, action: np.ndarray) -> StepOut:
        before = float(np.linalg.norm(self.pos - self.goal))
        self.pos = np.clip(self.pos + self.cfg.step_size * np.clip(action, -1, 1), -1, 1).astype(np.float32)
        dist = float(np.linalg.norm(self.pos - self.goal))
        success = dist < self.cfg.success_radius
        # Never truncates itself: VectorEnv counts steps against max_episode_steps.
        return StepOut(self._obs(), reward=before - dist, terminated=False, truncated=False, success=success)

    def close(self) -> None:
        pass


class Point2DBackend:
    """Implements `asyncvla.envs.registry.Backend`."""

    name = "point2d"
    description = "a point reaching a goal on a plane (the own-env guide's template)"
    config = Point2DEnvConfig
    cameras = CAMERAS

    def available(self) -> tuple[bool, str]:
        return True, ""  # a real simulator: try its import here and return (False, why) on failure

    def tasks(self) -> list[str]:
        return list(TASKS)

    def make(self, task: str, cfg: Point2DEnvConfig, index: int) -> Point2DEnv:
        return Point2DEnv(task, cfg)


BACKEND = Point2DBackend()
"""What asyncvla reads: the `asyncvla.envs` entry point `point2d` names this module."""


def expert_policy(task: str):
    """Optional: a scripted expert (proprio -> action) makes `asyncvla demos` and warm starts work."""
    return lambda proprio: np.clip((proprio[2:4] - proprio[0:2]) * 10, -1, 1).astype(np.float32)


# -- its tests ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def point2d_installed(tmp_path, monkeypatch):
    """Installs this module as backend `point2d` for one test, as `pip install` of a package with the
    entry point would: a dist-info directory with entry_points.txt on sys.path. Gone afterwards."""
    dist = tmp_path / "point2d_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: point2d-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[asyncvla.envs]\npoint2d = {__name__}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.refresh()  # forget the entry points found so far
    yield
    plugins.refresh()  # then monkeypatch takes tmp_path off sys.path


def _cfg(**fields) -> Point2DEnvConfig:
    return env_config(**{"id": "point2d/reach", "num_envs": 3, "image_size": 16, **fields})


def test_first_observations_arrive_through_recv():
    with make_vector_env(_cfg()) as venv:
        venv.reset_all()
        first = venv.recv_all(3)
        sizes = (venv.action_dim, venv.proprio_dim)
    assert [r.env_id for r in first] == [0, 1, 2] and all(r.is_first for r in first)
    obs = first[0].obs
    assert sizes == (2, 4)  # what the policy is built for: they must match what the env returns
    assert obs.image.shape == (16, 16, 3) and obs.image.dtype == np.uint8
    assert obs.proprio.shape == (sizes[1],) and obs.proprio.dtype == np.float32
    assert not np.array_equal(first[0].obs.proprio, first[1].obs.proprio), "envs of a worker must differ"


def test_expert_succeeds_and_the_episode_auto_resets():
    cfg = _cfg(num_envs=1, max_episode_steps=40)
    expert = expert_policy("reach")
    with make_vector_env(cfg) as venv:
        (r,) = venv.reset()
        for _ in range(40):
            (r,) = venv.step(np.stack([expert(r.obs.proprio)])[:, None])
            if r.done:
                break
    assert r.terminated and r.episode_success and 0 < r.episode_len < 40  # end_on_success ends it
    assert r.final_obs is not None and r.episode_index == 1
    assert not np.array_equal(r.obs.proprio, r.final_obs.proprio)  # `obs` is the next episode's first


def test_config_is_the_backends_own_and_checks_its_fields():
    assert type(_cfg()) is Point2DEnvConfig
    with pytest.raises(ConfigError, match="env.step_size"):
        _cfg(step_size=0.0)
    with pytest.raises(ConfigError, match="unknown point2d task"):  # checked before any env is built
        registry.validate_env_id(_cfg(id="point2d/no-such-task"))
    with pytest.raises(ConfigError, match="env.cameras"):
        _cfg(cameras=("main", "topview"))


def test_send_recv_runs_each_env_on_its_own_and_executes_whole_chunks():
    with make_vector_env(_cfg(num_envs=2)) as venv:
        start = {r.env_id: r.obs.proprio[:2].copy() for r in venv.reset()}
        venv.send([1], np.full((1, 3, 2), 0.5, np.float32))  # one chunk of K=3 actions, on env 1 only
        (res,) = venv.recv(min_ready=1)
    assert res.env_id == 1 and res.num_steps == 3
    np.testing.assert_allclose(res.obs.proprio[:2], start[1] + 3 * 0.1 * 0.5, atol=1e-6)


def test_timeout_truncates_inside_a_chunk():
    with make_vector_env(_cfg(num_envs=1, max_episode_steps=5)) as venv:
        venv.reset()
        r1 = venv.step(np.zeros((1, 4, 2), np.float32))[0]
        r2 = venv.step(np.zeros((1, 4, 2), np.float32))[0]
    assert (r1.num_steps, r1.done) == (4, False)
    assert (r2.num_steps, r2.truncated, r2.terminated, r2.episode_len) == (1, True, False, 5)


def test_same_seed_same_episodes_and_splits_differ():
    def first_states(**fields):
        with make_vector_env(_cfg(**fields)) as venv:
            return np.stack([r.obs.proprio for r in venv.reset()])

    np.testing.assert_array_equal(first_states(seed=3), first_states(seed=3))
    assert not np.array_equal(first_states(seed=3), first_states(seed=4))
    assert not np.array_equal(first_states(split="train"), first_states(split="eval"))


def test_extra_cameras_come_in_extra_images():
    with make_vector_env(_cfg(num_envs=1, cameras=("main", "wrist"))) as venv:
        (r,) = venv.reset()
    assert set(r.obs.extra_images) == {"wrist"} and r.obs.extra_images["wrist"].shape == (16, 16, 3)


def test_a_crashing_env_is_rebuilt_and_its_episode_cut():
    cfg = _cfg(num_envs=1, wrappers=WrapperConfig(fault_prob=1.0))  # every step raises EnvCrashed
    with make_vector_env(cfg) as venv:
        venv.reset()
        (r,) = venv.step(np.zeros((1, 2, 2), np.float32))
    assert r.error is not None and "injected crash" in r.error and r.truncated
    assert r.obs.proprio.shape == (4,)  # the rebuilt env's first observation


def test_cli_lists_and_benchmarks_it(capsys):
    from asyncvla.cli import main

    assert main(["envs", "--json"]) == 0
    listed = {b["backend"]: b for b in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
    assert listed["point2d"] == {"backend": "point2d", "available": True, "reason": "", "tasks": ["reach", "reach-far"]}
    assert main(["env-bench", "point2d/reach", "--num-envs", "2", "--steps", "60", "--image-size", "16", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert bench["env_id"] == "point2d/reach" and bench["steps_per_s"] > 0


def test_guide_quotes_the_template_verbatim():
    """docs/guides/own-env.md quotes this file; its quoted blocks must still be in it, character for character."""
    guide = (Path(__file__).parents[2] / "docs" / "guides" / "own-env.md").read_text()
    quoted = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if b.startswith(("TASKS = ", "@pytest.fixture"))]
    assert len(quoted) == 2 and all(b in Path(__file__).read_text() for b in quoted)
