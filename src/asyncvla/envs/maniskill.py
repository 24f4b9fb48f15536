"""`maniskill/<EnvId>`: ManiSkill3 tabletop tasks on CPU physics (`sim_backend="physx_cpu"`).

What an env gives the policy:
- image: the task's first sensor camera (`base_camera`), [S, S, 3] uint8, already upright;
  tasks whose robot carries a wrist camera (`panda_wristcam`) add `extra_images["wrist"]` when
  `env.cameras` asks for it.
- proprio: float32 = the robot's joint positions then joint velocities (Panda: 9 + 9 = 18;
  PushT's panda_stick: 7 + 7).
- action: `pd_ee_delta_pose` control, [7] = delta end-effector position (3) and rotation
  (3, axis-angle) + gripper, in [-1, 1]. ManiSkill's gripper is -1 closed, +1 open (the
  opposite of LIBERO); PushT's stick has no gripper ([6]).
- reward: ManiSkill's `normalized_dense` reward (in [0, 1]); `success` from `info["success"]`.
- episodes: ManiSkill's registered max_episode_steps (PickCube 50); `reset(seed)` passes the
  seed to ManiSkill, which makes the initial state reproducible.

SAPIEN needs a Vulkan device even for state observations. `available()` tries to create one
in a subprocess (a missing or too old driver can abort the process rather than raise) and
keeps the answer on disk per machine set-up; the task list is read from ManiSkill's source
without importing it. `env.fast_render=True` keeps ManiSkill's own
fast defaults (the "minimal" sensor shader, no shadows); False renders with the "default"
shader and shadows on.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from asyncvla.config import ConfigError, RenderedEnvConfig
from asyncvla.envs.base import Obs, StepOut

SIM_BACKEND = "physx_cpu"
CONTROL_MODE = "pd_ee_delta_pose"
REWARD_MODE = "normalized_dense"
PROBE_TIMEOUT_S = 120.0
NO_VULKAN_HINT = "no Vulkan driver: run scripts/install_vulkan.sh (Mesa >= 25 from bookworm-backports)"

# Instructions of the tasks we list; others fall back to words from the env id.
INSTRUCTIONS: dict[str, str] = {
    "PickCube-v1": "pick up the red cube and move it to the green goal",
    "PushCube-v1": "push the blue cube to the target",
    "PullCube-v1": "pull the blue cube back to the target",
    "StackCube-v1": "stack the red cube on top of the green cube",
    "StackPyramid-v1": "stack the three cubes into a pyramid",
    "PokeCube-v1": "use the peg to push the red cube to the goal",
    "PullCubeTool-v1": "use the L-shaped tool to pull the blue cube closer",
    "PlaceSphere-v1": "place the blue sphere into the bin",
    "RollBall-v1": "push the ball so it rolls into the goal region",
    "LiftPegUpright-v1": "lift the peg and stand it upright",
    "PegInsertionSide-v1": "insert the peg into the hole in the box",
    "PlugCharger-v1": "plug the charger into the receptacle",
    "PushT-v1": "push the T-shaped block onto the target",
}
# Registered tabletop tasks without asset downloads that still do not fit a single arm
# under pd_ee_delta_pose control.
UNSUPPORTED: dict[str, str] = {
    "PickCubeSO100-v1": "SO100 arm has no pd_ee_delta_pose controller",
    "PickCubeWidowXAI-v1": "WidowX AI robot assets are downloaded on first use",
    "TwoRobotPickCube-v1": "two robots",
    "TwoRobotStackCube-v1": "two robots",
}


def instruction_for(env_id: str) -> str:
    """The task's sentence, or words from the id: 'OpenCabinetDrawer-v1' -> 'open cabinet drawer'."""
    if env_id in INSTRUCTIONS:
        return INSTRUCTIONS[env_id]
    stem = re.sub(r"-v\d+$", "", env_id)
    return " ".join(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", stem)) or env_id


def _register_env_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "register_env":
            yield node


@functools.cache
def registered_tasks() -> dict[str, int]:
    """ManiSkill's offline tabletop tasks and their max_episode_steps, read from the `@register_env`
    decorators in its source: importing `mani_skill.envs` takes about 5 s (torch, SAPIEN, every
    task module) and `asyncvla envs` must not pay that to list tasks. A test checks that this
    equals the registry ManiSkill builds on import."""
    spec = importlib.util.find_spec("mani_skill")  # finds the package without running it
    if spec is None or spec.origin is None:
        return {}
    out: dict[str, int] = {}
    for path in sorted((Path(spec.origin).parent / "envs" / "tasks" / "tabletop").rglob("*.py")):
        for call in _register_env_calls(ast.parse(path.read_text(), str(path))):
            kw = {k.arg: k.value for k in call.keywords}
            assets = kw.get("asset_download_ids")
            if not call.args or not isinstance(call.args[0], ast.Constant) or (assets is not None and not (
                    isinstance(assets, (ast.List, ast.Tuple)) and not assets.elts)):
                continue
            steps = kw.get("max_episode_steps")
            out[call.args[0].value] = steps.value if isinstance(steps, ast.Constant) else 100
    return {k: v for k, v in sorted(out.items()) if k not in UNSUPPORTED}


# SAPIEN needs a Vulkan device even for state observations; a missing or too old driver can abort
# the process rather than raise, so it is tried in a fresh interpreter.
_PROBE = """
import json
out = {"ok": False, "reason": "", "sapien": False}
try:
    import sapien
    out["sapien"] = True
    sapien.render.RenderSystem()
    out["ok"] = True
except Exception as e:
    out["reason"] = f"{type(e).__name__}: {e}"
print(json.dumps(out), flush=True)
"""


def probe(env: dict[str, str] | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """Creates a Vulkan device in a fresh interpreter (about 0.5 s): {"ok": bool, "reason": str}.

    `env` overrides environment variables (tests point VK_ICD_FILENAMES nowhere to see the
    no-driver path).
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"{NO_VULKAN_HINT} (creating a Vulkan device hung for {timeout_s:.0f} s)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else {"ok": False, "reason": "", "sapien": True}
    if not out["ok"]:
        err = out["reason"] or (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        hint = NO_VULKAN_HINT if out["sapien"] else "mani-skill is not importable: pip install mani-skill"
        out["reason"] = f"{hint} ({' '.join(err.split())[:200]})"
    return {"ok": out["ok"], "reason": out["reason"]}


ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "~/.local/share/vulkan/icd.d")
"""Where Vulkan drivers register (scripts/install_vulkan.sh's Mesa lands in the first)."""


def probe_key() -> str:
    """What the probe's answer depends on: interpreter, mani-skill version, Vulkan driver files and the
    variables that pick them. Installing a driver or another mani-skill changes it."""
    try:
        version = importlib.metadata.version("mani-skill")
    except importlib.metadata.PackageNotFoundError:
        version = None
    icds = [f"{p}:{p.stat().st_mtime_ns}" for d in ICD_DIRS for p in sorted(Path(d).expanduser().glob("*.json"))]
    env = [os.environ.get(k) for k in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES", "VK_ADD_DRIVER_FILES")]
    return hashlib.sha256(json.dumps([sys.executable, version, env, icds]).encode()).hexdigest()[:16]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "asyncvla"


@functools.cache
def _probe_cached() -> dict:
    """The probe (a fresh interpreter and a Vulkan device) once per machine set-up: its
    answer is kept on disk under `probe_key()`, so `asyncvla envs` and config checks stay fast."""
    path = _cache_dir() / f"maniskill-probe-{probe_key()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    out = probe()
    if out["ok"] or NO_VULKAN_HINT + " (" in out["reason"]:  # not a timeout or a broken install, which may pass next time
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(out))
            tmp.replace(path)
        except OSError:
            pass
    return out


def _np(x) -> np.ndarray:
    # ManiSkill returns torch tensors with a leading env dimension of 1.
    return x[0].cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)[0]


class ManiSkillEnv:
    """One ManiSkill3 env (num_envs=1, CPU physics) with an rgb sensor camera."""

    def __init__(self, env_id: str, cfg: RenderedEnvConfig, max_episode_steps: int):
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the env ids)

        self.env_id = env_id
        self.instruction = instruction_for(env_id)
        self.max_episode_steps = max_episode_steps
        self.fast_render = cfg.fast_render
        shader = "minimal" if cfg.fast_render else "default"
        self.raw = gym.make(
            env_id,
            obs_mode="rgb",
            sim_backend=SIM_BACKEND,
            num_envs=1,
            control_mode=CONTROL_MODE,
            reward_mode=REWARD_MODE,
            sensor_configs=dict(width=cfg.image_size, height=cfg.image_size, shader_pack=shader),
            enable_shadow=not cfg.fast_render,
            render_mode=None,
        )
        self.action_dim = int(self.raw.action_space.shape[-1])
        agent = self.raw.unwrapped.agent
        self.proprio_dim = 2 * int(agent.robot.get_qpos().shape[-1])
        self._camera: str | None = None
        self._wrist = "wrist" in cfg.cameras

    def _obs(self, raw_obs: dict) -> Obs:
        cams = raw_obs["sensor_data"]
        if self._camera is None:  # the first sensor is the task's main view
            self._camera = next(iter(cams))
            if self._wrist and ("hand_camera" not in cams or self._camera == "hand_camera"):
                raise ConfigError(f"env.cameras=wrist is invalid for maniskill/{self.env_id}: its robot has no wrist camera "
                                  f"besides the main view (sensors: {', '.join(cams)})")
        extra = {"wrist": _np(cams["hand_camera"]["rgb"])} if self._wrist else {}
        proprio = np.concatenate([_np(raw_obs["agent"]["qpos"]), _np(raw_obs["agent"]["qvel"])]).astype(np.float32)
        return Obs(image=_np(cams[self._camera]["rgb"]), proprio=proprio, instruction=self.instruction, extra_images=extra)

    def reset(self, seed: int) -> Obs:
        raw_obs, _ = self.raw.reset(seed=int(seed))
        return self._obs(raw_obs)

    def step(self, action: np.ndarray) -> StepOut:
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        raw_obs, reward, terminated, _truncated, info = self.raw.step(a)
        # ManiSkill's own time limit is ignored: VectorEnv counts steps against max_episode_steps.
        success = bool(_np(info["success"])) if "success" in info else False
        return StepOut(self._obs(raw_obs), float(_np(reward)), terminated=bool(_np(terminated)), truncated=False, success=success)

    def raw_step(self, action: np.ndarray):
        """Steps the ManiSkill env with the same render settings and none of our processing."""
        return self.raw.step(action)

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.close()


class ManiSkillBackend:
    """Backend `maniskill`: tasks are registered ManiSkill3 tabletop env ids."""

    name = "maniskill"
    config = RenderedEnvConfig
    description = "ManiSkill3 tabletop tasks (SAPIEN, physx_cpu, rgb sensor camera; needs Vulkan)"
    cameras = ("main", "wrist")

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("mani_skill") is None:
            return False, "mani-skill is not installed: pip install mani-skill"
        p = _probe_cached()
        return p["ok"], p["reason"]

    def tasks(self) -> list[str]:
        return list(registered_tasks())

    def make(self, task: str, cfg: RenderedEnvConfig, index: int) -> ManiSkillEnv:
        return ManiSkillEnv(task, cfg, registered_tasks().get(task, 100))


BACKEND = ManiSkillBackend()
