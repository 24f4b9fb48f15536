"""The one typed config tree.

Every section is a dataclass with a docstring per field; checks live in `__post_init__`
and raise `ConfigError` with one line naming the field and what is allowed, so a bad value
fails before any worker starts. Presets are YAML files in `configs/` (shipped inside the
package as `asyncvla/presets/`) that override the defaults; the command line overrides the
preset through tyro (`--env.num-envs 8`).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import dacite
import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(Exception):
    """A config value is invalid; the message is one line naming the field. Not a ValueError: tyro would
    catch that while parsing and print a multi-line box instead of `asyncvla: error: <the line>`."""


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


@dataclass
class WrapperConfig:
    """Wrappers applied to every env, in this order: resize, reward, latency, faults."""

    latency_s: float = 0.0
    """Extra wall time added to every step (models slow physics or a remote renderer)."""
    latency_jitter_s: float = 0.0
    """Uniform extra latency in [0, latency_jitter_s]."""
    fault_prob: float = 0.0
    """Probability per step that the env faults."""
    fault_kind: Literal["crash", "hang"] = "crash"
    """crash: the step raises EnvCrashed; hang: the step blocks for fault_hang_s then raises."""
    fault_hang_s: float = 5.0
    """How long a hang blocks before it surfaces as an EnvHung error (an hour: a hang that does not
    end by itself; only the watchdog, env.step_timeout_s, gets the env back)."""
    hang_prob: float = 0.0
    """Probability per step of a hang of fault_hang_s, on top of fault_prob's faults (crashes and
    hangs in one run)."""
    reward: Literal["env", "success"] = "env"
    """env: the simulator's own reward; success: 1.0 on a step where the task succeeds, else 0
    (sparse, as RL for VLAs usually trains; a dense shaped reward that pays for hovering near
    the goal makes a success that ends the episode (`end_on_success`) cost future reward)."""

    def __post_init__(self) -> None:
        _check(self.latency_s >= 0, "env.wrappers.latency_s", self.latency_s, "must be >= 0")
        _check(self.latency_jitter_s >= 0, "env.wrappers.latency_jitter_s", self.latency_jitter_s, "must be >= 0")
        _check(0 <= self.fault_prob <= 1, "env.wrappers.fault_prob", self.fault_prob, "must be in [0, 1]")
        _check(0 <= self.hang_prob <= 1 - self.fault_prob, "env.wrappers.hang_prob", self.hang_prob,
               "must be in [0, 1 - env.wrappers.fault_prob]")
        _check(self.fault_kind in ("crash", "hang"), "env.wrappers.fault_kind", self.fault_kind, "allowed: crash, hang")
        _check(0 <= self.fault_hang_s < math.inf, "env.wrappers.fault_hang_s", self.fault_hang_s, "must be >= 0 and finite")
        _check(self.reward in ("env", "success"), "env.wrappers.reward", self.reward, "allowed: env, success")


MAIN_CAMERA = "main"
"""The name of every backend's main camera (`Obs.image`) in `env.cameras` and `policy.cameras`."""


def _check_cameras(where: str, cameras: tuple[str, ...], allowed: tuple[str, ...] | None = None) -> None:
    _check(len(cameras) >= 1 and len(set(cameras)) == len(cameras) and all(isinstance(c, str) and c for c in cameras),
           where, list(cameras), "must name one or more distinct cameras")
    if allowed is not None:
        bad = [c for c in cameras if c not in allowed]
        _check(not bad, where, list(cameras), f"{', '.join(bad)} not rendered by this backend; allowed: {', '.join(allowed)}")


@dataclass
class EnvConfig:
    """Which simulator and how many copies of it. Each backend owns a subclass with its own
    fields (`Backend.config`); the backend of `id` picks it, as `policy.type` picks the policy's."""

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
    end_on_success: bool = True
    """End an episode (terminated) as soon as the task succeeds."""
    executor: Literal["inline", "thread"] = "inline"
    """inline: `send` steps the envs in the caller's thread; thread: one thread per env, so envs that hold wall time (emulated, remote renderers) overlap."""
    step_timeout_s: float | Literal["auto"] | None = None
    """Deadline of one action chunk (needs executor thread): an env that has not returned by then is
    taken as hung, replaced by a new one and its episode cut (counted as an env error). auto: from
    the measured chunk times, 5x the slowest of the last 512 (env.reset_timeout_s until 32 chunks
    are measured). null: no deadline (and none on resets)."""
    reset_timeout_s: float = 60.0
    """With step_timeout_s set: the deadline of a reset, and of a replacement's build and first reset
    (a simulator can take seconds to load; a deadline of one chunk would replace it again and again)."""
    cameras: tuple[str, ...] = (MAIN_CAMERA,)
    """Cameras the env renders and the policy sees, in order: `main` (the backend's main camera) and
    the backend's other cameras by name (LIBERO and ManiSkill `wrist`; MetaWorld `wrist` and its
    scene cameras). The main camera is always rendered (videos show it)."""
    split: Literal["train", "eval"] = "train"
    """Which initial states resets draw: train and eval are disjoint (LIBERO: fixed init states; other backends: separate seed streams)."""
    wrappers: WrapperConfig = field(default_factory=WrapperConfig)
    """Latency and fault injection."""

    def __post_init__(self) -> None:
        from asyncvla.envs.registry import get_backend

        cls = env_config_class(self.id)
        _check(type(self) is cls, "env.id", self.id, f"its backend's config is {cls.__name__}, not {type(self).__name__} (build it with env_config)")
        self.cameras = tuple(self.cameras)
        _check_cameras("env.cameras", self.cameras, get_backend(self.backend).cameras)
        _check(self.num_envs >= 1, "env.num_envs", self.num_envs, "must be >= 1")
        _check(8 <= self.image_size <= 1024, "env.image_size", self.image_size, "must be in [8, 1024]")
        _check(self.max_episode_steps is None or self.max_episode_steps >= 1, "env.max_episode_steps", self.max_episode_steps, "must be >= 1 or null")
        _check(self.executor in ("inline", "thread"), "env.executor", self.executor, "allowed: inline, thread")
        _check(self.step_timeout_s in (None, "auto") or (not isinstance(self.step_timeout_s, str) and 0 < self.step_timeout_s < math.inf),
               "env.step_timeout_s", self.step_timeout_s, "must be > 0 and finite, auto, or null")
        _check(0 < self.reset_timeout_s < math.inf, "env.reset_timeout_s", self.reset_timeout_s, "must be > 0 and finite")
        _check(self.step_timeout_s is None or self.executor == "thread", "env.step_timeout_s", self.step_timeout_s,
               "needs env.executor=thread (an inline chunk cannot be abandoned)")
        _check(self.split in ("train", "eval"), "env.split", self.split, "allowed: train, eval")

    @property
    def backend(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def task(self) -> str:
        return self.id.split("/", 1)[1]


@dataclass
class RenderedEnvConfig(EnvConfig):
    """A simulator that renders its cameras (MetaWorld, LIBERO, ManiSkill)."""

    fast_render: bool = True
    """Render without shadows, reflections and MSAA (2-5x faster on a CPU; changes success rates, so it is recorded)."""


def env_config_class(env_id: str) -> type[EnvConfig]:
    """The config class of `env_id`'s backend; one-line ConfigError for an unknown backend."""
    from asyncvla.envs.registry import get_backend

    _check("/" in env_id and not env_id.startswith("/"), "env.id", env_id, "expected backend/task, e.g. metaworld/reach-v3")
    return get_backend(env_id.split("/", 1)[0]).config


def env_config(id: str = EnvConfig.id, **fields: Any) -> EnvConfig:
    """The config of env `id`, of its backend's class (`env_config("emulated/fast", num_envs=2)`)."""
    return _build(env_config_class(id), "env", id=id, **fields)


def _build(cls: type, where: str, **fields: Any) -> Any:
    """`cls(**fields)`, with a one-line ConfigError naming a field `cls` does not have."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ConfigError(f"{where} ({cls.__name__}): unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return cls(**fields)


def _subclass_for(cls: type, data: dict) -> type:
    """The registered subclass a dict of base class `cls` names (env: by `id`, policy: by `type`)."""
    if cls is EnvConfig:
        return env_config_class(data.get("id", EnvConfig.id))
    if cls is PolicyConfig:
        return policy_config_class(data.get("type", PolicyConfig.type))
    return cls


def _resolve_choices(cls: type, data: dict, where: str) -> dict:
    """Builds every env / policy section of `data` as the subclass it names, so dacite sees instances."""
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        value, hint = out.get(f.name), hints[f.name]
        if isinstance(value, dict) and hint in (EnvConfig, PolicyConfig):
            out[f.name] = from_dict(hint, value, where=f"{where + '.' if where else ''}{f.name}")
    return out


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Builds dataclass `cls` from a plain dict, rejecting unknown keys with the field path.

    An `EnvConfig` or `PolicyConfig` is built as the subclass its `id` / `type` picks, so a
    field of another backend or policy is an unknown field."""
    cls = _subclass_for(cls, data)
    data = _resolve_choices(cls, data, where)
    try:
        return dacite.from_dict(cls, data, config=dacite.Config(strict=True, cast=[tuple]))
    except dacite.UnexpectedDataError as e:
        keys = ", ".join(sorted(e.keys))
        allowed = ", ".join(f.name for f in dataclasses.fields(cls))
        of = f" ({cls.__name__})" if issubclass(cls, (EnvConfig, PolicyConfig)) else ""
        raise ConfigError(f"{where or cls.__name__}{of}: unknown field(s) {keys}; allowed: {allowed}") from None
    except dacite.WrongTypeError as e:
        raise ConfigError(f"{where + '.' if where else ''}{e.field_path}={e.value!r} is invalid: expected {e.field_type}") from None
    except dacite.DaciteError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(cls: type, name: str, choices: dict[str, dict[str, str]] | None = None) -> Any:
    """Loads preset `name` (a file in configs/, or a path to a YAML file) onto `cls`'s defaults.

    `choices` ({"policy": {"type": "tiny-gaussian"}}) override the preset's fields that pick a
    config class, before the class is picked."""
    path = Path(name)
    if not path.suffix:
        path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"preset={name!r} is invalid: allowed: {', '.join(list_presets())} or a path to a .yaml file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"preset={name!r} is invalid: not valid YAML{where} ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset={name!r} is invalid: expected a mapping of sections (env, policy, ...), got {type(data).__name__}")
    for section, values in (choices or {}).items():
        data[section] = {**data.get(section, {}), **values}
    return from_dict(cls, data, where=f"preset {path.name}")


@dataclass
class PolicyConfig:
    """What every policy has. `type` picks the policy, and with it the config subclass that holds
    its own fields (`--policy.type tiny-gaussian`; LeRobot's PreTrainedConfig registry)."""

    type: str = "tiny"
    """Registered policy (`asyncvla.policies.registry`): tiny (discrete action tokens) or tiny-gaussian (continuous head)."""
    chunk: int = 4
    """Actions per decision (K): the env executes the whole chunk."""
    image_size: int = 64
    """Images are resized to this before the encoder (in training runs: env.image_size)."""
    temperature: float = 1.0
    """Sampling temperature of rollouts (1.0 = the policy's own distribution)."""
    device: str = "cpu"
    """cpu or cuda[:n]; the same code runs on both (in training runs: run.device)."""
    init: str | None = None
    """Checkpoint directory to start from (e.g. an SFT checkpoint); it fixes the architecture."""
    cameras: tuple[str, ...] = (MAIN_CAMERA,)
    """Cameras the policy reads, in order (in training runs: env.cameras; in SFT: the dataset's)."""

    RL_ONLY: ClassVar[tuple[str, ...]] = ()
    """Fields only RL reads (`Policy.prepare_rl` applies them): they do not shape an SFT start."""

    @classmethod
    def at_checkpoint(cls, fields: dict[str, Any], ckpt_dir: str | Path) -> dict[str, Any]:
        """The saved config fields of checkpoint `ckpt_dir` as they rebuild from it (e.g. paths the checkpoint replaces)."""
        return fields

    def without_rl_settings(self) -> "PolicyConfig":
        """This config with its RL-only fields at their defaults (what an SFT start is built and cached by)."""
        return dataclasses.replace(self, **{f.name: f.default for f in dataclasses.fields(self) if f.name in self.RL_ONLY})

    def __post_init__(self) -> None:
        cls = policy_config_class(self.type)
        _check(type(self) is cls, "policy.type", self.type, f"its config is {cls.__name__}, not {type(self).__name__} (build it with policy_config)")
        _check(self.chunk >= 1, "policy.chunk", self.chunk, "must be >= 1")
        _check(self.temperature > 0, "policy.temperature", self.temperature, "must be > 0")
        _check(self.device == "cpu" or self.device.startswith("cuda"), "policy.device", self.device, "allowed: cpu, cuda, cuda:N")
        self.cameras = tuple(self.cameras)
        _check_cameras("policy.cameras", self.cameras)


_POLICY_CONFIGS: dict[str, type[PolicyConfig]] = {}
# Modules whose import registers the built-in policies' configs (torch-free, so parsing stays fast).
_POLICY_CONFIG_MODULES = ("asyncvla.policies.tiny.config", "asyncvla.policies.oft.config", "asyncvla.policies.flow.config")


def register_policy_config(name: str):
    """Class decorator: `@register_policy_config("tiny")` makes `policy.type=tiny` parse into that class."""

    def deco(cls: type[PolicyConfig]) -> type[PolicyConfig]:
        if name in _POLICY_CONFIGS and _POLICY_CONFIGS[name] is not cls:
            raise ValueError(f"policy config {name!r} is already registered by {_POLICY_CONFIGS[name].__qualname__}")
        _POLICY_CONFIGS[name] = cls
        return cls

    return deco


def policy_config_class(name: str) -> type[PolicyConfig]:
    """The config class of `policy.type=name`; one-line ConfigError when none is registered."""
    for mod in _POLICY_CONFIG_MODULES:
        importlib.import_module(mod)
    if name not in _POLICY_CONFIGS:  # an installed package's family (imported only when asked for)
        from asyncvla import plugins

        plugins.load_policies()
    if name not in _POLICY_CONFIGS:
        raise ConfigError(f"policy.type={name!r} is invalid: allowed: {', '.join(sorted(_POLICY_CONFIGS))}")
    return _POLICY_CONFIGS[name]


def policy_config(type: str = PolicyConfig.type, **fields: Any) -> PolicyConfig:
    """The config of policy `type`, of its registered class (`policy_config("tiny", chunk=2)`)."""
    return _build(policy_config_class(type), "policy", type=type, **fields)


@dataclass
class AlgoConfig:
    """The RL algorithm and its hyper-parameters (defaults follow RL-VLA³ / RLinf)."""

    name: Literal["ppo", "grpo"] = "ppo"
    """ppo: GAE with a value head; grpo: group-relative advantages, no critic."""
    gamma: float = 0.99
    """Discount per decision (action chunk)."""
    lam: float = 0.95
    """GAE lambda (PPO)."""
    clip_eps: float = 0.2
    """PPO ratio clip: the ratio is kept in [1 - clip_eps, 1 + clip_high]."""
    clip_high: float | None = None
    """Upper ratio clip (DAPO's clip-higher, RLinf's clip_ratio_high); null: clip_eps."""
    target_kl: float | None = None
    """KL early stop: end an update's epochs at the first minibatch whose approx KL to the batch's
    policy exceeds this (in the ratio's units: per chunk, or per token with ratio=token_mean); null: off."""
    dual_clip: float | None = 3.0
    """Dual-clip constant c (> 1) bounding the loss of negative advantages; null disables it."""
    value_clip: float | None = 0.2
    """Clip of the value change; null disables it."""
    value_coef: float = 0.5
    """Weight of the value loss (PPO)."""
    value_huber_delta: float | None = None
    """Huber value loss with this delta (RLinf uses 10); null: squared error."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus; 0 disables it."""
    kl_coef: float = 0.0
    """Weight of a KL penalty to the initial policy (k3 estimator); 0 disables it."""
    is_cap: float = 2.0
    """Truncation of the importance weight pi_prox / pi_behav in decoupled PPO."""
    group_size: int = 8
    """GRPO: rollouts per initial state."""
    grpo_credit: Literal["episode", "reward_to_go"] = "episode"
    """GRPO: episode = every decision of an episode gets its group-normalised score; reward_to_go =
    each decision gets the rewards that followed it, against the group's mean from the same
    decision on (a per-step baseline for dense rewards and time-aligned groups)."""
    ratio: Literal["chunk", "token_mean"] = "chunk"
    """Importance ratio of a decision: chunk = pi/pi_old of the whole action chunk (product over its K*A
    tokens); token_mean = its geometric mean per token (GSPO-style length normalisation), so the clip
    range bounds the change per action token instead of per chunk of 16+ tokens."""
    normalize_advantages: bool = True
    """Scale the advantages of each update batch to zero mean and unit std."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before GAE (keeps value targets O(1), e.g. 0.01 for MetaWorld's 0-10 per step)."""
    lr: float = 3e-4
    """Adam learning rate of the policy (and of the value head unless value_lr is set); with
    step_kl set, the largest one the controller may use."""
    step_kl: float | None = None
    """Trust region per optimizer step: after each step the policy's learning rate is rescaled so
    that the next step moves the action distribution by about this KL per action token
    (`algos/step_size.py`); until a step has calibrated it, a step that overshoots 4x is undone
    and retaken smaller. null: a constant lr."""
    value_lr: float | None = None
    """Learning rate of the value head; null uses lr."""
    max_grad_norm: float = 1.0
    """Clip of the global gradient norm per optimizer step."""
    max_skipped_updates: int = 3
    """An optimizer step whose loss or gradient is not finite is skipped (counted in
    train/skipped_steps); this many updates in a row with every step skipped stop the run,
    keeping the last good checkpoint."""
    critic_warmup: int = 0
    """First updates that train only the value head (policy loss off): the advantages of a
    fresh critic after SFT are noise, and PPO would follow them. Algorithms without a critic
    (GRPO) ignore it."""
    update_epochs: int = 2
    """Passes over each rollout batch (sync mode)."""
    minibatch_size: int = 64
    """Samples (decisions) per optimizer step."""

    def __post_init__(self) -> None:
        _check(self.name in ("ppo", "grpo"), "algo.name", self.name, "allowed: ppo, grpo")
        _check(0 < self.gamma <= 1, "algo.gamma", self.gamma, "must be in (0, 1]")
        _check(0 <= self.lam <= 1, "algo.lam", self.lam, "must be in [0, 1]")
        _check(self.clip_eps > 0, "algo.clip_eps", self.clip_eps, "must be > 0")
        _check(self.clip_high is None or self.clip_high > 0, "algo.clip_high", self.clip_high, "must be > 0 or null")
        _check(self.target_kl is None or self.target_kl > 0, "algo.target_kl", self.target_kl, "must be > 0 or null")
        _check(self.value_huber_delta is None or self.value_huber_delta > 0, "algo.value_huber_delta", self.value_huber_delta,
               "must be > 0 or null")
        _check(self.dual_clip is None or self.dual_clip > 1, "algo.dual_clip", self.dual_clip, "must be > 1 or null")
        _check(self.value_clip is None or self.value_clip > 0, "algo.value_clip", self.value_clip, "must be > 0 or null")
        _check(self.is_cap >= 1, "algo.is_cap", self.is_cap, "must be >= 1")
        _check(self.group_size >= 2, "algo.group_size", self.group_size, "must be >= 2")
        _check(self.grpo_credit in ("episode", "reward_to_go"), "algo.grpo_credit", self.grpo_credit,
               "allowed: episode, reward_to_go")
        _check(self.ratio in ("chunk", "token_mean"), "algo.ratio", self.ratio, "allowed: chunk, token_mean")
        _check(0 < self.reward_scale < math.inf, "algo.reward_scale", self.reward_scale, "must be > 0 and finite")
        for name in ("value_coef", "entropy_coef", "kl_coef"):  # weights of loss terms: a negative one flips its sign
            _check(0 <= getattr(self, name) < math.inf, f"algo.{name}", getattr(self, name), "must be >= 0 and finite")
        _check(0 < self.lr < math.inf, "algo.lr", self.lr, "must be > 0 and finite")
        _check(self.value_lr is None or 0 < self.value_lr < math.inf, "algo.value_lr", self.value_lr, "must be > 0 and finite, or null")
        _check(0 < self.max_grad_norm < math.inf, "algo.max_grad_norm", self.max_grad_norm, "must be > 0 and finite")
        _check(self.step_kl is None or self.step_kl > 0, "algo.step_kl", self.step_kl, "must be > 0 or null")
        _check(self.max_skipped_updates >= 1, "algo.max_skipped_updates", self.max_skipped_updates, "must be >= 1")
        _check(self.critic_warmup >= 0, "algo.critic_warmup", self.critic_warmup, "must be >= 0")
        _check(self.update_epochs >= 1, "algo.update_epochs", self.update_epochs, "must be >= 1")
        _check(self.minibatch_size >= 1, "algo.minibatch_size", self.minibatch_size, "must be >= 1")


@dataclass
class EmulatedAcceleratorConfig:
    """An emulated accelerator (benchmarks): after the real call, inference and training hold the
    device for calibrated wall time without CPU, as a GPU would. All zero: off."""

    infer_fixed_s: float = 0.0
    """Seconds per inference batch (kernel launches, host-device copies)."""
    infer_per_sample_s: float = 0.0
    """Seconds per sample of an inference batch."""
    train_per_sample_s: float = 0.0
    """Seconds per sample and epoch of an update."""

    def __post_init__(self) -> None:
        for name in ("infer_fixed_s", "infer_per_sample_s", "train_per_sample_s"):
            _check(getattr(self, name) >= 0, f"runtime.emulated_accelerator.{name}", getattr(self, name), "must be >= 0")

    @property
    def enabled(self) -> bool:
        return self.infer_fixed_s > 0 or self.infer_per_sample_s > 0 or self.train_per_sample_s > 0

    def infer_s(self, batch: int) -> float:
        return self.infer_fixed_s + self.infer_per_sample_s * batch


@dataclass
class RuntimeConfig:
    """How the workers are laid out and scheduled (sync = the RLinf-style baseline)."""

    mode: Literal["sync", "async"] = "sync"
    """sync: lockstep rollout epoch, then train, then weight sync (RLinf); async: the RL-VLA³ pipeline."""
    num_env_workers: int = 1
    """Env worker shards, each holding env.num_envs envs."""
    pipeline_stages: int = 1
    """Env batches per env worker (1, 2 or 4): one stage steps its envs while another's inference runs (RLinf pipelining)."""
    rollout_steps: int = 32
    """Decisions (action chunks) per env per rollout epoch."""
    placement: Literal["colocated", "disaggregated"] = "colocated"
    """colocated: inference and training share one device, so their calls never overlap (with the threads
    backend on CUDA or an emulated accelerator; a CPU has nothing to share); disaggregated: each role has its own."""
    env_cpus: float = 1.0
    """CPUs reserved per env worker actor."""
    env_gpus: float = 0.0
    """GPUs reserved per env worker actor (GPU renderers)."""
    rollout_cpus: float = 1.0
    """CPUs reserved per inference (rollout) actor; with colocated placement, for the shared actor."""
    rollout_gpus: float = 0.0
    """GPUs reserved per inference actor; with colocated placement, for the shared actor."""
    env_resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each env-manager actor requests (e.g. {node_a: 0.01}): places the envs on the
    nodes that advertise them (`ray start --resources '{"node_a": 8}'`). Node IP labels work too
    (`node:10.0.0.2`)."""
    rollout_resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each rollout-server actor requests (e.g. {node_b: 0.01}); the trainer runs
    in the driver, on the node where `asyncvla train` starts."""
    num_trainers: int = 1
    """Data-parallel trainers: N ranks each take a share of every minibatch, gradients all-reduced (gloo on
    CPU, NCCL on CUDA); rank 0 runs in the driver and publishes weights, ranks 1..N-1 run as threads
    (local backend) or Ray actors (runtime.trainer_cpus/gpus/resources each)."""
    trainer_cpus: float = 1.0
    """CPUs reserved per extra trainer actor (num_trainers > 1, Ray backend)."""
    trainer_gpus: float = 0.0
    """GPUs reserved per extra trainer actor (num_trainers > 1, Ray backend)."""
    trainer_resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each extra trainer actor requests (num_trainers > 1), as env_resources."""
    ray_address: str | None = None
    """Join this Ray cluster (e.g. 10.0.0.1:6379 or auto); null starts a local Ray sized to the machine."""
    local: bool = False
    """Backend: true runs every role as threads of this one process (debugging, fastest tests, emulated
    workloads); false runs env managers and rollout servers as Ray actors, the trainer in the driver."""
    weight_sync: Literal["object_store", "nccl"] = "object_store"
    """How new weights reach Ray rollout servers: object_store (CPU state_dict via Ray) or nccl (torch.distributed broadcast on CUDA)."""
    max_restarts: int = 3
    """Ray backend: times a rollout server whose process dies is restarted (Ray actor restart) with the
    latest weights, its pending requests retried, before the run stops on it; 0: the first death stops
    the run. weight_sync nccl cannot re-form its process group, so there every death stops the run."""
    trace: bool = True
    """Record spans of every worker into trace.json (Chrome trace; opens in Perfetto)."""
    async_env: bool = False
    """Async level 1: every env steps on its own clock (mode=async only)."""
    streaming_rollout: bool = False
    """Async level 2: inference forms batches dynamically from streamed requests (mode=async only)."""
    decoupled_actor: bool = False
    """Async level 3: the trainer consumes trajectories as they arrive and publishes weights while rollouts continue (mode=async only)."""
    max_staleness: int | None = None
    """Async with decoupled_actor: largest policy-version lag of a trained sample; older samples are dropped
    and counted (0 = on-policy); null: 1. Without decoupled_actor the lag is 0 by construction (set only null or 0)."""
    max_batch: int | None = None
    """Dynamic batching (streaming_rollout): flush an inference batch at this many samples; null: 32.
    Without streaming_rollout every request is its own batch (set only null)."""
    max_wait_ms: float | None = None
    """Dynamic batching (streaming_rollout): flush when the oldest request has waited this long; null: 5."""
    queue_size: int = 8
    """Trajectory queue capacity in segments; a full queue blocks producers (backpressure)."""
    num_rollout_servers: int = 1
    """Inference actors; env worker w is served by server w % num_rollout_servers (both modes)."""
    router: Literal["fixed", "round-robin", "greedy"] = "fixed"
    """Async: which rollout server serves a request: fixed (env manager m -> server m % n), round-robin, greedy (least outstanding samples)."""
    env_managers: tuple[int, ...] = ()
    """Async: sizes of the env managers of each env worker (sum = env.num_envs), each with its own loop; () = one manager."""
    segment_len: int | None = None
    """Decisions per trajectory segment sent to the trainer (PPO); null = rollout_steps. GRPO sends whole episodes (set only null)."""
    emulated_accelerator: EmulatedAcceleratorConfig = field(default_factory=EmulatedAcceleratorConfig)
    """Benchmarks: hold calibrated device time in inference and training (threads backend)."""
    trainer_mode: Literal["epoch", "accumulate", "streaming"] | None = None
    """Async with decoupled_actor: epoch (every samples_per_update samples, sync's update_epochs x minibatches of decoupled PPO, one publish; rollouts go on meanwhile),
    accumulate (one optimizer step every samples_per_update samples, remainder carried over) or streaming (a step per minibatch_size samples as they arrive);
    null: accumulate. Without decoupled_actor it is epoch (set only null or epoch)."""

    def __post_init__(self) -> None:
        _check(self.mode in ("sync", "async"), "runtime.mode", self.mode, "allowed: sync, async")
        _check(self.num_env_workers >= 1, "runtime.num_env_workers", self.num_env_workers, "must be >= 1")
        _check(self.pipeline_stages in (1, 2, 4), "runtime.pipeline_stages", self.pipeline_stages, "allowed: 1, 2, 4")
        _check(self.rollout_steps >= 1, "runtime.rollout_steps", self.rollout_steps, "must be >= 1")
        _check(self.placement in ("colocated", "disaggregated"), "runtime.placement", self.placement, "allowed: colocated, disaggregated")
        _check(self.num_trainers >= 1, "runtime.num_trainers", self.num_trainers, "must be >= 1")
        for name in ("env_cpus", "env_gpus", "rollout_cpus", "rollout_gpus", "trainer_cpus", "trainer_gpus"):
            _check(getattr(self, name) >= 0, f"runtime.{name}", getattr(self, name), "must be >= 0")
        for name in ("env_resources", "rollout_resources", "trainer_resources"):
            res = getattr(self, name) or {}
            setattr(self, name, dict(res))
            for key, n in res.items():
                _check(key not in ("CPU", "GPU", "memory") and 0 <= n < math.inf, f"runtime.{name}", dict(res),
                       "every amount must be >= 0 and finite, and CPU/GPU set through runtime.env_cpus/gpus, rollout_cpus/gpus "
                       "and trainer_cpus/gpus")
        _check(self.weight_sync in ("object_store", "nccl"), "runtime.weight_sync", self.weight_sync, "allowed: object_store, nccl")
        _check(self.max_staleness is None or self.max_staleness >= 0, "runtime.max_staleness", self.max_staleness, "must be >= 0 or null")
        _check(self.max_batch is None or self.max_batch >= 1, "runtime.max_batch", self.max_batch, "must be >= 1 or null")
        _check(self.max_wait_ms is None or self.max_wait_ms >= 0, "runtime.max_wait_ms", self.max_wait_ms, "must be >= 0 or null")
        _check(self.queue_size >= 1, "runtime.queue_size", self.queue_size, "must be >= 1")
        _check(self.max_restarts >= 0, "runtime.max_restarts", self.max_restarts, "must be >= 0")
        _check(self.num_rollout_servers >= 1, "runtime.num_rollout_servers", self.num_rollout_servers, "must be >= 1")
        _check(self.router in ("fixed", "round-robin", "greedy"), "runtime.router", self.router, "allowed: fixed, round-robin, greedy")
        _check(all(n >= 1 for n in self.env_managers), "runtime.env_managers", self.env_managers, "every size must be >= 1")
        _check(self.segment_len is None or self.segment_len >= 1, "runtime.segment_len", self.segment_len, "must be >= 1 or null")
        _check(self.trainer_mode in (None, "epoch", "accumulate", "streaming"), "runtime.trainer_mode", self.trainer_mode, "allowed: epoch, accumulate, streaming, null")


@dataclass
class RunConfig:
    """One training run: budget, evaluation, checkpoints, where it writes."""

    out_dir: str | None = None
    """Run directory; null makes runs/<env task>-<time>."""
    total_env_steps: int | None = 20_000
    """Stop after this many simulator steps (each action of a chunk counts once); null: use total_updates."""
    total_updates: int | None = None
    """Stop after this many rollout-epoch updates (checked together with total_env_steps; first reached wins)."""
    eval_every: int = 0
    """Evaluate every N updates (0: only before training and at the end)."""
    eval_episodes: int = 8
    """Episodes per evaluation, on the eval split."""
    eval_deterministic: bool = True
    """Evaluate the argmax/mean action; false samples at policy.temperature (the policy RL optimises)."""
    eval_video: bool = True
    """Save an mp4 of the first evaluation episode of each evaluation under videos/ (what the policy saw, one frame per decision)."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every N updates (plus the last and the best by eval success); 0: only last and best."""
    seed: int = 0
    """Seeds torch, numpy and the policy; envs are seeded from env.seed."""
    device: str = "cpu"
    """cpu or cuda[:n] for policy inference and training; the policy follows it."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint (appends to its logs)."""
    stall_timeout_s: float | None = 900.0
    """Stop the run (crash checkpoint, one line) when no trajectory reaches the trainer and no env
    step is produced for this long: e.g. an env that hangs under env.executor=inline, which has no
    per-env watchdog. null: wait forever."""

    def __post_init__(self) -> None:
        _check(self.stall_timeout_s is None or 0 < self.stall_timeout_s < math.inf, "run.stall_timeout_s",
               self.stall_timeout_s, "must be > 0 and finite, or null")
        _check(self.total_env_steps is not None or self.total_updates is not None, "run.total_env_steps", self.total_env_steps, "set it or run.total_updates")
        _check(self.total_env_steps is None or self.total_env_steps >= 1, "run.total_env_steps", self.total_env_steps, "must be >= 1 or null")
        _check(self.total_updates is None or self.total_updates >= 1, "run.total_updates", self.total_updates, "must be >= 1 or null")
        _check(self.eval_every >= 0, "run.eval_every", self.eval_every, "must be >= 0")
        _check(self.eval_episodes >= 0, "run.eval_episodes", self.eval_episodes, "must be >= 0")
        _check(self.checkpoint_every >= 0, "run.checkpoint_every", self.checkpoint_every, "must be >= 0")
        _check(self.device == "cpu" or self.device.startswith("cuda"), "run.device", self.device, "allowed: cpu, cuda, cuda:N")


@dataclass
class WarmStartConfig:
    """SFT warm start that the run makes itself: expert demos -> behaviour cloning -> policy.init (cached)."""

    demo_episodes: int = 0
    """Scripted-expert episodes to record; 0 disables the warm start."""
    sft_steps: int = 300
    """Behaviour-cloning optimizer steps."""
    sft_batch_size: int = 64
    """Demo frames per behaviour-cloning step."""
    sft_lr: float = 1e-3
    """Peak behaviour-cloning learning rate (linear warm-up, cosine decay)."""
    seed: int | None = None
    """Seed of the SFT; None: run.seed. Fix it (and demo_seed) to start every RL seed from one SFT checkpoint."""
    demo_seed: int | None = None
    """Env seed the demos are recorded with; None: env.seed."""
    demo_expert_speed: float = 1.0
    """Scale of the expert's arm actions while recording (< 1: slow, teleoperation-like demos)."""
    demo_action_noise: float = 0.3
    """DART: std of noise on the actions the env executes while recording (labels stay the expert's); 0: clean demos."""
    cache_dir: str = "~/.cache/asyncvla/warm_start"
    """Demos and SFT checkpoints are cached here, keyed by everything that shapes them."""

    def __post_init__(self) -> None:
        _check(self.demo_episodes >= 0, "warm_start.demo_episodes", self.demo_episodes, "must be >= 0")
        _check(self.sft_steps >= 1, "warm_start.sft_steps", self.sft_steps, "must be >= 1")
        _check(self.sft_batch_size >= 1, "warm_start.sft_batch_size", self.sft_batch_size, "must be >= 1")
        _check(self.sft_lr > 0, "warm_start.sft_lr", self.sft_lr, "must be > 0")
        _check(0 < self.demo_expert_speed <= 1, "warm_start.demo_expert_speed", self.demo_expert_speed, "must be in (0, 1]")
        _check(self.demo_action_noise >= 0, "warm_start.demo_action_noise", self.demo_action_noise, "must be >= 0")


@dataclass
class TrainConfig:
    """Everything `asyncvla train` needs. Derived: policy.image_size, policy.cameras and policy.device follow env and run."""

    env: EnvConfig = field(default_factory=env_config)
    """The simulator; its fields depend on the backend of env.id."""
    policy: PolicyConfig = field(default_factory=policy_config)
    """The policy; its fields depend on policy.type."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """The RL algorithm (`algo.name`) and its hyper-parameters."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Mode, switches of asynchrony, layout and backend (read once, by runtime/plan.py)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Budget, evaluation, checkpoints, run directory, seed and device."""
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    """The SFT start the run makes itself (off by default)."""

    def __post_init__(self) -> None:
        # One source of truth: the policy sees what the env renders, on the run's device.
        self.policy.image_size = self.env.image_size
        self.policy.cameras = self.env.cameras
        self.policy.device = self.run.device
        rt, env = self.runtime, self.env
        _check(not rt.env_managers or sum(rt.env_managers) == env.num_envs, "runtime.env_managers", rt.env_managers,
               f"sizes must add up to env.num_envs={env.num_envs}")
        _check(rt.weight_sync != "nccl" or self.run.device.startswith("cuda"), "runtime.weight_sync", rt.weight_sync, "nccl needs run.device=cuda; use object_store on CPU")
        _check(self.algo.minibatch_size <= self.samples_per_update, "algo.minibatch_size", self.algo.minibatch_size,
               f"must be <= samples per update = num_env_workers*num_envs*rollout_steps = {self.samples_per_update}")

    @property
    def samples_per_update(self) -> int:
        """Decisions collected per rollout epoch across all env workers."""
        return self.runtime.num_env_workers * self.env.num_envs * self.runtime.rollout_steps
