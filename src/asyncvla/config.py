"""The one typed config tree.

Every section is a dataclass with a docstring per field; checks live in `__post_init__`
and raise `ConfigError` with one line naming the field and what is allowed, so a bad value
fails before any worker starts. Presets are YAML files in `configs/` (shipped inside the
package as `asyncvla/presets/`) that override the defaults; the command line overrides the
preset through tyro (`--env.num-envs 8`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dacite
import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A config value is invalid; the message is one line naming the field."""


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


@dataclass
class EmulatedConfig:
    """An emulated simulator: it holds wall time without using CPU, as a GPU renderer would."""

    step_mean_s: float = 0.02
    """Mean wall time of one env step, in seconds."""
    step_tail_prob: float = 0.0
    """Probability that a step falls into the long tail."""
    step_tail_factor: float = 10.0
    """A tail step takes this many times the mean."""
    step_jitter: float = 0.1
    """Relative spread of ordinary steps (uniform in mean*(1±jitter))."""
    reset_s: float = 0.1
    """Wall time of a reset, in seconds."""
    episode_len: int = 100
    """Steps until the episode truncates."""
    success_radius: float = 0.15
    """The task (move the point to the goal) succeeds within this distance."""
    proprio_dim: int = 8
    """Size of the proprio vector."""
    action_dim: int = 4
    """Size of one action."""

    def __post_init__(self) -> None:
        _check(self.step_mean_s >= 0, "env.emulated.step_mean_s", self.step_mean_s, "must be >= 0")
        _check(0 <= self.step_tail_prob <= 1, "env.emulated.step_tail_prob", self.step_tail_prob, "must be in [0, 1]")
        _check(self.step_tail_factor >= 1, "env.emulated.step_tail_factor", self.step_tail_factor, "must be >= 1")
        _check(0 <= self.step_jitter < 1, "env.emulated.step_jitter", self.step_jitter, "must be in [0, 1)")
        _check(self.reset_s >= 0, "env.emulated.reset_s", self.reset_s, "must be >= 0")
        _check(self.episode_len >= 1, "env.emulated.episode_len", self.episode_len, "must be >= 1")
        _check(self.success_radius > 0, "env.emulated.success_radius", self.success_radius, "must be > 0")
        _check(self.action_dim >= 1, "env.emulated.action_dim", self.action_dim, "must be >= 1")
        _check(self.proprio_dim >= 2 * self.action_dim, "env.emulated.proprio_dim", self.proprio_dim, f"must be >= 2 * action_dim = {2 * self.action_dim} (position and goal)")


@dataclass
class WrapperConfig:
    """Wrappers applied to every env, in this order: resize, latency, faults."""

    latency_s: float = 0.0
    """Extra wall time added to every step (models slow physics or a remote renderer)."""
    latency_jitter_s: float = 0.0
    """Uniform extra latency in [0, latency_jitter_s]."""
    fault_prob: float = 0.0
    """Probability per step that the env faults."""
    fault_kind: Literal["crash", "hang"] = "crash"
    """crash: the step raises EnvCrashed; hang: the step blocks for fault_hang_s then raises."""
    fault_hang_s: float = 5.0
    """How long a hang blocks before it surfaces as an EnvHung error."""

    def __post_init__(self) -> None:
        _check(self.latency_s >= 0, "env.wrappers.latency_s", self.latency_s, "must be >= 0")
        _check(self.latency_jitter_s >= 0, "env.wrappers.latency_jitter_s", self.latency_jitter_s, "must be >= 0")
        _check(0 <= self.fault_prob <= 1, "env.wrappers.fault_prob", self.fault_prob, "must be in [0, 1]")
        _check(self.fault_kind in ("crash", "hang"), "env.wrappers.fault_kind", self.fault_kind, "allowed: crash, hang")
        _check(self.fault_hang_s >= 0, "env.wrappers.fault_hang_s", self.fault_hang_s, "must be >= 0")


@dataclass
class EnvConfig:
    """Which simulator and how many copies of it."""

    id: str = "metaworld/reach-v3"
    """Env id `backend/task`, e.g. metaworld/reach-v3, libero/libero_spatial/0, maniskill/PickCube-v1, emulated/balanced."""
    num_envs: int = 4
    """Envs per env worker."""
    image_size: int = 64
    """Camera images are HxWx3 uint8 with H = W = image_size."""
    max_episode_steps: int | None = None
    """Truncate episodes after this many env steps; None takes the backend's default."""
    seed: int = 0
    """Base seed; env i of worker w is seeded from (seed, w, i)."""
    fast_render: bool = True
    """Render without shadows, reflections and MSAA (2-5x faster on a CPU; changes success rates, so it is recorded)."""
    end_on_success: bool = True
    """End an episode (terminated) as soon as the task succeeds."""
    executor: Literal["inline", "thread"] = "inline"
    """inline: `send` steps the envs in the caller's thread; thread: one thread per env, so envs that hold wall time (emulated, remote renderers) overlap."""
    split: Literal["train", "eval"] = "train"
    """Which fixed initial states to draw from where the benchmark has them (LIBERO): train and eval are disjoint."""
    emulated: EmulatedConfig = field(default_factory=EmulatedConfig)
    """Parameters of `emulated/*` envs (the task name picks a preset of them)."""
    wrappers: WrapperConfig = field(default_factory=WrapperConfig)
    """Latency and fault injection."""

    def __post_init__(self) -> None:
        _check("/" in self.id and not self.id.startswith("/"), "env.id", self.id, "expected backend/task, e.g. metaworld/reach-v3")
        _check(self.num_envs >= 1, "env.num_envs", self.num_envs, "must be >= 1")
        _check(8 <= self.image_size <= 1024, "env.image_size", self.image_size, "must be in [8, 1024]")
        _check(self.max_episode_steps is None or self.max_episode_steps >= 1, "env.max_episode_steps", self.max_episode_steps, "must be >= 1 or null")
        _check(self.executor in ("inline", "thread"), "env.executor", self.executor, "allowed: inline, thread")
        _check(self.split in ("train", "eval"), "env.split", self.split, "allowed: train, eval")

    @property
    def backend(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def task(self) -> str:
        return self.id.split("/", 1)[1]


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Builds dataclass `cls` from a plain dict, rejecting unknown keys with the field path."""
    try:
        return dacite.from_dict(cls, data, config=dacite.Config(strict=True, cast=[tuple]))
    except dacite.UnexpectedDataError as e:
        keys = ", ".join(sorted(e.keys))
        allowed = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"{where or cls.__name__}: unknown field(s) {keys}; allowed: {allowed}") from None
    except dacite.WrongTypeError as e:
        raise ConfigError(f"{where + '.' if where else ''}{e.field_path}={e.value!r} is invalid: expected {e.field_type}") from None
    except dacite.DaciteError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(cls: type, name: str) -> Any:
    """Loads preset `name` (a file in configs/, or a path to a YAML file) onto `cls`'s defaults."""
    path = Path(name)
    if not path.suffix:
        path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"preset={name!r} is invalid: allowed: {', '.join(list_presets())} or a path to a .yaml file")
    data = yaml.safe_load(path.read_text()) or {}
    return from_dict(cls, data, where=f"preset {path.name}")


@dataclass
class PolicyConfig:
    """Which VLA and its shape. `type` picks a class from the policy registry."""

    type: str = "tiny"
    """Registered policy: tiny (discrete action tokens) or tiny-gaussian (continuous head)."""
    chunk: int = 4
    """Actions per decision (K): the env executes the whole chunk."""
    action_bins: int = 256
    """Bins per action dimension for discretized heads (OpenVLA style)."""
    hidden_dim: int = 128
    """Width of the transformer trunk."""
    num_layers: int = 2
    """Transformer trunk layers."""
    num_heads: int = 4
    image_size: int = 64
    """Images are resized to this before the encoder (matches env.image_size by default)."""
    temperature: float = 1.0
    """Sampling temperature of rollouts (1.0 = the policy's own distribution)."""
    device: str = "cpu"
    """cpu or cuda[:n]; the same code runs on both."""
    init: str | None = None
    """Checkpoint directory to start from (e.g. an SFT checkpoint)."""

    def __post_init__(self) -> None:
        _check(self.chunk >= 1, "policy.chunk", self.chunk, "must be >= 1")
        _check(2 <= self.action_bins <= 4096, "policy.action_bins", self.action_bins, "must be in [2, 4096]")
        _check(self.hidden_dim >= 8 and self.hidden_dim % self.num_heads == 0, "policy.hidden_dim", self.hidden_dim, f"must be >= 8 and divisible by policy.num_heads={self.num_heads}")
        _check(self.num_layers >= 1, "policy.num_layers", self.num_layers, "must be >= 1")
        _check(self.temperature > 0, "policy.temperature", self.temperature, "must be > 0")
        _check(self.device == "cpu" or self.device.startswith("cuda"), "policy.device", self.device, "allowed: cpu, cuda, cuda:N")


@dataclass
class AlgoConfig:
    """The RL algorithm and its hyper-parameters (defaults follow RL-VLA³ / RLinf)."""

    name: Literal["ppo", "grpo"] = "ppo"
    """ppo: GAE with a value head; grpo: group-relative advantages, no critic."""
    gamma: float = 0.99
    lam: float = 0.95
    clip_eps: float = 0.2
    """PPO ratio clip."""
    dual_clip: float | None = 3.0
    """Dual-clip constant c (> 1) bounding the loss of negative advantages; null disables it."""
    value_clip: float | None = 0.2
    """Clip of the value change; null disables it."""
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    kl_coef: float = 0.0
    """Weight of a KL penalty to the initial policy (k3 estimator); 0 disables it."""
    is_cap: float = 2.0
    """Truncation of the importance weight pi_prox / pi_behav in decoupled PPO."""
    group_size: int = 8
    """GRPO: rollouts per initial state."""
    normalize_advantages: bool = True
    lr: float = 3e-4
    value_lr: float | None = None
    """Learning rate of the value head; null uses lr."""
    max_grad_norm: float = 1.0
    update_epochs: int = 2
    """Passes over each rollout batch (sync mode)."""
    minibatch_size: int = 64
    """Samples (decisions) per optimizer step."""

    def __post_init__(self) -> None:
        _check(self.name in ("ppo", "grpo"), "algo.name", self.name, "allowed: ppo, grpo")
        _check(0 < self.gamma <= 1, "algo.gamma", self.gamma, "must be in (0, 1]")
        _check(0 <= self.lam <= 1, "algo.lam", self.lam, "must be in [0, 1]")
        _check(self.clip_eps > 0, "algo.clip_eps", self.clip_eps, "must be > 0")
        _check(self.dual_clip is None or self.dual_clip > 1, "algo.dual_clip", self.dual_clip, "must be > 1 or null")
        _check(self.value_clip is None or self.value_clip > 0, "algo.value_clip", self.value_clip, "must be > 0 or null")
        _check(self.is_cap >= 1, "algo.is_cap", self.is_cap, "must be >= 1")
        _check(self.group_size >= 2, "algo.group_size", self.group_size, "must be >= 2")
        _check(self.lr > 0, "algo.lr", self.lr, "must be > 0")
        _check(self.update_epochs >= 1, "algo.update_epochs", self.update_epochs, "must be >= 1")
        _check(self.minibatch_size >= 1, "algo.minibatch_size", self.minibatch_size, "must be >= 1")
