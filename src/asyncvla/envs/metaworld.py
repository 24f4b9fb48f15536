"""`metaworld/<task>`: the 50 MetaWorld v3 tasks (the embedded default simulator).

Observation
- image: the `corner` camera, [S, S, 3] uint8, rotated right side up; the other cameras of
  `env.cameras` in `extra_images`: `wrist` (MetaWorld's `gripperPOV`) and the scene's fixed
  cameras by their MetaWorld names (`CAMERAS`), each rendered upright at the same size.
- proprio: MetaWorld's 39-d state vector as float32 (the multi-task setting: goal visible):
  [0:3] end-effector xyz, [3] gripper opening (0 closed .. 1 open),
  [4:11] object 1 xyz + quaternion, [11:18] object 2 xyz + quaternion (zeros where the task
  has one object), [18:36] the same 18 values one step earlier, [36:39] goal xyz.
  It is the full state the scripted experts act on: `expert_policy(task)(obs.proprio)`.
- instruction: one English sentence per task (`instruction_for`).

Task variation and splits: each reset draws MetaWorld's task vector (object and goal
positions) with MetaWorld's own sampler, from a generator seeded by (seed, split): the same
seed gives the same initial state and goal; train and eval use different seed streams, so
they draw different initial states (the space is continuous: equal only by accident).

Episodes: `step` never terminates (VectorEnv ends episodes on success); MetaWorld itself
truncates at 500 steps. `max_episode_steps` defaults to 200, which the experts reach with
room to spare (measured over seeds 0-3: at most 129 steps), and to MetaWorld's 500 for the six
tasks whose expert took over 150 steps or failed on one of those seeds (`_LONG_TASKS`).

Rendering: our own `mujoco.Renderer` (public API) on the env's model, made current before
each frame, so several envs in one process never draw into each other's GL context.
Never call the gym env's own `render()` here: gymnasium's viewer does not free its MuJoCo
render context on close, and when that is collected later it deletes GL objects of whichever
context is current then (seen: another env's frames turn to garbage).
`fast_render` turns off shadows, reflections and MSAA (measured at 64x64 on a loaded 2-core CPU:
~115 vs ~6-11 steps/s).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import numpy as np

from asyncvla.config import MAIN_CAMERA, ConfigError, RenderedEnvConfig
from asyncvla.envs.base import Obs, StepOut, flip_upright

CAMERA = "corner"
CAMERAS = {"main": CAMERA, "wrist": "gripperPOV", "topview": "topview", "corner2": "corner2", "corner3": "corner3",
           "corner4": "corner4", "behindGripper": "behindGripper"}
"""`env.cameras` name -> MetaWorld camera."""
ROBOT_TYPE = "sawyer"
FPS = 80
"""Control rate: one env step is frame_skip 5 x timestep 2.5 ms = 12.5 ms."""
METAWORLD_MAX_STEPS = 500
"""MetaWorld truncates every episode here (`max_path_length`)."""
DEFAULT_MAX_EPISODE_STEPS = 200
# Expert measured slower than 150 steps or failing on some of seeds 0-3 (see module doc).
_LONG_TASKS = frozenset({"bin-picking-v3", "disassemble-v3", "peg-insert-side-v3", "push-back-v3", "soccer-v3", "stick-pull-v3"})
_SPLIT_STREAM = {"train": 0, "eval": 1}

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the ring and place it onto the peg",
    "basketball-v3": "pick up the ball and drop it into the basket",
    "bin-picking-v3": "pick up the cube and place it into the other bin",
    "box-close-v3": "pick up the lid and close the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "pick the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "turn the faucet handle to close it",
    "faucet-open-v3": "turn the faucet handle to open it",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "insert the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate back into the cabinet from the side",
    "plate-slide-back-v3": "slide the plate back into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "pull the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "reach-v3": "reach the goal",
    "reach-wall-v3": "reach the goal behind the wall",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "grab the stick and pull the box with it",
    "stick-push-v3": "grab the stick and push the box with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "slide the window closed",
    "window-open-v3": "slide the window open",
}
"""Instruction per task; `instruction_for` covers tasks missing here."""


def instruction_for(task: str) -> str:
    """The task's sentence, or one derived from its name ("do the task: button press")."""
    if task in INSTRUCTIONS:
        return INSTRUCTIONS[task]
    name = task.rsplit("-v", 1)[0].replace("-", " ")
    return f"do the task: {name}"


def default_max_episode_steps(task: str) -> int:
    return METAWORLD_MAX_STEPS if task in _LONG_TASKS else DEFAULT_MAX_EPISODE_STEPS


@functools.cache
def _task_sets() -> dict[str, list[str]]:
    from metaworld import env_dict

    return {"MT10": list(env_dict.MT10_V3), "MT50": list(env_dict.MT50_V3)}


def __getattr__(name: str) -> list[str]:
    # MT10 / MT50 come from metaworld itself, imported lazily so that listing backends
    # (and importing this module) works without metaworld installed.
    if name in ("MT10", "MT50"):
        return list(_task_sets()[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def expert_policy(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """MetaWorld's scripted expert for `task`: state [39] (e.g. `obs.proprio`) -> action [4] float32."""
    from metaworld.policies import ENV_POLICY_MAP

    # The experts' gains exceed 1 by design; the env clips actions, so the warning is noise.
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
    if task not in ENV_POLICY_MAP:
        raise ConfigError(f"task={task!r} is invalid: no MetaWorld expert; allowed: {', '.join(sorted(ENV_POLICY_MAP))}")
    policy = ENV_POLICY_MAP[task]()

    def act(state: np.ndarray) -> np.ndarray:
        return np.asarray(policy.get_action(np.asarray(state, dtype=np.float64)), dtype=np.float32)

    return act


def reset_rng(seed: int, split: str) -> np.random.Generator:
    """The generator a reset draws its task vector from: a function of (seed, split) only."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _SPLIT_STREAM[split]])))


class MetaWorldEnv:
    """One MetaWorld task behind the `Env` protocol (see the module docstring)."""

    action_dim = 4
    proprio_dim = 39

    def __init__(self, task: str, cfg: RenderedEnvConfig):
        import gymnasium as gym
        import metaworld  # noqa: F401  (registers the Meta-World/* ids)
        import mujoco

        self.task = task
        self.split = cfg.split
        self.instruction = instruction_for(task)
        self.max_episode_steps = cfg.max_episode_steps or default_max_episode_steps(task)
        BACKEND.check(cfg)
        size = cfg.image_size
        # gym.make builds MetaWorld's MT1 wrapper stack (and sizes the offscreen buffer);
        # we step the unwrapped env: the wrappers cost time and re-sample tasks on reset.
        self._gym = gym.make("Meta-World/MT1", env_name=task, render_mode="rgb_array", width=size, height=size,
                            camera_name=CAMERA, disable_env_checker=True)
        self._raw = self._gym.unwrapped
        # One MT1 task sets the multi-task options (goal visible in the state); resets then
        # draw fresh task vectors from our seeded generator instead of this frozen one.
        self._raw.set_task(self._gym.get_wrapper_attr("tasks")[0])
        model = self._raw.model
        if cfg.fast_render:
            model.vis.quality.offsamples = 0  # no MSAA: must be set before the GL context exists
        self._renderer = mujoco.Renderer(model, size, size)
        if cfg.fast_render:
            # Scene flags persist across update_scene calls, so setting them once suffices.
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._cameras = {name: _fixed_camera(model, CAMERAS[name]) for name in (MAIN_CAMERA, *cfg.cameras)}
        self._camera = self._cameras[MAIN_CAMERA]
        self._release_after_render = cfg.executor == "thread"
        if self._release_after_render:
            _release_gl_context()  # the Renderer made its context current in this (the creating) thread

    def render(self, camera: str = MAIN_CAMERA) -> np.ndarray:
        """Camera `camera` now (default the corner camera), [S, S, 3] uint8, right side up."""
        self._renderer.update_scene(self._raw.data, camera=self._cameras[camera])
        frame = self._renderer.render()
        if self._release_after_render:
            _release_gl_context()
        return flip_upright(frame)

    def _obs(self, state: np.ndarray) -> Obs:
        extra = {name: self.render(name) for name in self._cameras if name != MAIN_CAMERA}
        return Obs(image=self.render(), proprio=state.astype(np.float32), instruction=self.instruction, extra_images=extra)

    def reset(self, seed: int) -> Obs:
        raw = self._raw
        raw._freeze_rand_vec = False  # sample a new task vector ...
        raw.seeded_rand_vec = True  # ... from raw.np_random, which we seed
        raw.np_random = reset_rng(seed, self.split)
        state, _ = raw.reset()
        return self._obs(state)

    @property
    def task_vector(self) -> np.ndarray:
        """The task vector (object and goal positions) of the current episode."""
        return np.array(self._raw._last_rand_vec)

    def step(self, action: np.ndarray) -> StepOut:
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        state, reward, _, truncated, info = self._raw.step(action)
        success = float(info.get("success", 0.0)) > 0
        return StepOut(self._obs(state), float(reward), terminated=False, truncated=bool(truncated), success=success, info=info)

    def raw_step(self, action: np.ndarray):
        """MetaWorld's step plus one frame rendered with the same settings, none of our processing
        (no clipping, flipping, float32 proprio): the baseline `env-bench` compares against."""
        out = self._raw.step(action)
        self._renderer.update_scene(self._raw.data, camera=self._camera)
        self._renderer.render()
        if self._release_after_render:
            _release_gl_context()
        if out[3]:  # MetaWorld refuses to step past its 500-step truncation
            self._raw.reset()
        return out

    def close(self) -> None:
        self._renderer.close()
        self._gym.close()


def _fixed_camera(model, name: str):
    import mujoco

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
    cam.fixedcamid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    return cam


def _release_gl_context() -> None:
    """Detaches the current EGL context from this thread, so another thread can render with it.

    Needed only with executor="thread", where an env's next chunk may run on another thread;
    an EGL context can be current in one thread at a time.
    """
    import os

    if os.environ.get("MUJOCO_GL") != "egl":
        return
    from mujoco import egl
    from OpenGL import EGL

    EGL.eglMakeCurrent(egl.EGL_DISPLAY, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)


class MetaWorldBackend:
    name = "metaworld"
    config = RenderedEnvConfig
    description = "MetaWorld v3 (MuJoCo): 50 Sawyer tasks with scripted experts; embedded default"
    cameras = tuple(CAMERAS)

    def available(self) -> tuple[bool, str]:
        try:
            import metaworld  # noqa: F401
        except Exception as e:  # any import failure means unusable; say why in one line
            return False, f"import metaworld failed: {type(e).__name__}: {e}"
        return True, ""

    def tasks(self) -> list[str]:
        return list(_task_sets()["MT50"])

    def make(self, task: str, cfg: RenderedEnvConfig, index: int) -> MetaWorldEnv:
        return MetaWorldEnv(task, cfg)

    def check(self, cfg: RenderedEnvConfig) -> None:
        if cfg.max_episode_steps is not None and cfg.max_episode_steps > METAWORLD_MAX_STEPS:
            raise ConfigError(f"env.max_episode_steps={cfg.max_episode_steps} is invalid: MetaWorld truncates at {METAWORLD_MAX_STEPS}")


BACKEND = MetaWorldBackend()

