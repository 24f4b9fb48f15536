"""The plan: everything the runtime derives from the config, computed once, in the open.

`make_plan` is the only reader of `runtime.mode`, the three async switches and
`runtime.pipeline_stages`. It fixes the env managers (who steps which envs on which loop),
the inference request and batch limits, the trainer mode, the staleness bound, the segment
length, the GRPO group size and the samples per update. The runtime, both backends, the
driver and the benches read the plan and never re-derive any of it.

Sync (the RLinf baseline) is the same runtime with the switches off: lockstep managers, one
per pipeline stage; every request its own inference batch; the trainer in epoch mode at
staleness 0 (collect an update, run its epochs, publish, then rollouts go on). The table of
what each switch changes is in docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncvla.algos.registry import make_algorithm
from asyncvla.config import ConfigError, TrainConfig


@dataclass(frozen=True)
class ManagerSpec:
    """One env manager: a group of envs with its own loop."""

    index: int
    """Manager index over the whole run."""
    worker: int
    """Env worker (shard) it belongs to."""
    first_env: int
    """Global id of its first env; it holds first_env .. first_env + num_envs - 1."""
    num_envs: int


@dataclass(frozen=True)
class Plan:
    """The derived layout and schedule of one run (see the module docstring)."""

    mode: str
    async_env: bool
    streaming_rollout: bool
    decoupled_actor: bool
    backend: str
    """threads (every role in this process) or ray (env managers and rollout servers as actors)."""
    managers: tuple[ManagerSpec, ...]
    envs_per_worker: int
    num_servers: int
    max_request: int
    """Most envs in one inference request of an async_env manager (lockstep managers send all their ready envs)."""
    max_batch: int
    """Samples at which the server flushes a batch (1: every request alone)."""
    max_wait_s: float
    trainer_mode: str
    """epoch (all epochs per update, one publish), accumulate or streaming."""
    max_staleness: int
    samples_per_update: int
    """Decisions per update: trained together in epoch and accumulate mode."""
    samples_per_version: int
    """Decisions the trainer consumes per published version (admission is counted in these)."""
    segment_len: int
    """Decisions per trajectory segment of an env (GRPO: whole episodes instead)."""
    group_size: int
    """GRPO group size; 0: no groups."""
    shared_device: bool
    """Colocated on an accelerator (CUDA or emulated): inference and training calls never overlap
    (threads backend). A CPU has nothing to share: its roles contend for cores instead."""

    @property
    def num_envs(self) -> int:
        return sum(m.num_envs for m in self.managers)


def manager_sizes(cfg: TrainConfig, lockstep: bool) -> tuple[int, ...]:
    rt, n = cfg.runtime, cfg.env.num_envs
    if n % rt.pipeline_stages:
        raise ConfigError(f"env.num_envs={n} is invalid: must be divisible by runtime.pipeline_stages={rt.pipeline_stages}")
    if lockstep and rt.pipeline_stages > 1:
        if rt.env_managers:
            raise ConfigError(f"runtime.env_managers={rt.env_managers!r} is invalid with runtime.pipeline_stages="
                              f"{rt.pipeline_stages}: the stages are the lockstep managers; set one of them")
        return (n // rt.pipeline_stages,) * rt.pipeline_stages
    if not lockstep and rt.pipeline_stages > 1:
        raise ConfigError(f"runtime.pipeline_stages={rt.pipeline_stages} is invalid with runtime.async_env=true: every env "
                          "already steps on its own; allowed: 1 (or turn async_env off)")
    return tuple(rt.env_managers) or (n,)


def _ignored(bad: bool, name: str, value, allowed: str, switch: str = "decoupled_actor") -> None:
    if bad:
        raise ConfigError(f"runtime.{name}={value!r} is invalid without runtime.{switch} (mode sync, or the switch "
                          f"off), which ignores it; allowed: {allowed}")


def make_plan(cfg: TrainConfig) -> Plan:
    """The plan of `cfg` (raises ConfigError on a combination the runtime cannot run)."""
    rt = cfg.runtime
    on = rt.mode == "async"
    for name in ("async_env", "streaming_rollout", "decoupled_actor"):
        if getattr(rt, name) and not on:
            raise ConfigError(f"runtime.{name}=True is invalid with runtime.mode='sync': the switches of asynchrony "
                              "need runtime.mode=async")
    async_env, streaming, decoupled = on and rt.async_env, on and rt.streaming_rollout, on and rt.decoupled_actor
    sizes = manager_sizes(cfg, lockstep=not async_env)
    managers, index = [], 0
    for w in range(rt.num_env_workers):
        first = w * cfg.env.num_envs
        for size in sizes:
            managers.append(ManagerSpec(index, w, first, size))
            index, first = index + 1, first + size
    group_size = make_algorithm(cfg.algo).group_size
    if group_size and rt.segment_len is not None:
        raise ConfigError(f"runtime.segment_len={rt.segment_len} is invalid with algo.name={cfg.algo.name!r}: a GRPO "
                          "segment is a whole episode; allowed: null")
    for m in managers:
        if group_size and m.num_envs % group_size:
            raise ConfigError(f"algo.group_size={group_size} is invalid: must divide the envs of every env manager "
                              f"(sizes {list(sizes)}); a group plays from one initial state on one loop")
    if not streaming:  # each request is its own batch, whatever was asked
        _ignored(rt.max_batch is not None, "max_batch", rt.max_batch, "null", "streaming_rollout")
        _ignored(rt.max_wait_ms is not None, "max_wait_ms", rt.max_wait_ms, "null", "streaming_rollout")
    max_batch, max_wait_s = (rt.max_batch or 32, (5.0 if rt.max_wait_ms is None else rt.max_wait_ms) / 1000) \
        if streaming else (1, 0.0)
    if not decoupled:  # the trainer publishes before rollouts go on: epoch mode, lag 0, whatever was asked
        _ignored(rt.max_staleness not in (None, 0), "max_staleness", rt.max_staleness, "null or 0")
        _ignored(rt.trainer_mode not in (None, "epoch"), "trainer_mode", rt.trainer_mode, "null or 'epoch'")
    trainer_mode = (rt.trainer_mode or "accumulate") if decoupled else "epoch"
    if group_size and trainer_mode != "epoch":
        raise ConfigError(f"runtime.trainer_mode={trainer_mode!r} is invalid with algo.name={cfg.algo.name!r}: allowed: "
                          "epoch (a GRPO group is scored as a whole, never split into micro-batches)")
    if rt.local and rt.weight_sync != "object_store":
        raise ConfigError(f"runtime.weight_sync={rt.weight_sync!r} is invalid with runtime.local=true: the threads "
                          "backend shares weights in memory; allowed: object_store (or runtime.local=false)")
    per_update = cfg.samples_per_update
    return Plan(
        mode=rt.mode, async_env=async_env, streaming_rollout=streaming, decoupled_actor=decoupled,
        backend="threads" if rt.local else "ray", managers=tuple(managers), envs_per_worker=cfg.env.num_envs,
        num_servers=rt.num_rollout_servers, max_request=max_batch if streaming else 1,
        max_batch=max_batch, max_wait_s=max_wait_s, trainer_mode=trainer_mode,
        max_staleness=(1 if rt.max_staleness is None else rt.max_staleness) if decoupled else 0, samples_per_update=per_update,
        samples_per_version=cfg.algo.minibatch_size if trainer_mode == "streaming" else per_update,
        segment_len=rt.segment_len or rt.rollout_steps, group_size=group_size,
        shared_device=rt.placement == "colocated" and (cfg.run.device.startswith("cuda") or rt.emulated_accelerator.enabled),
    )


def check_episodes(plan: Plan, cfg: TrainConfig, max_episode_steps: int) -> None:
    """GRPO admits whole episodes: the staleness budget must hold one episode of every env at once,
    or groups that cannot all be admitted would wait for each other forever."""
    if not plan.group_size:
        return
    decisions = -(-max_episode_steps // cfg.policy.chunk)
    if plan.num_envs * decisions > (plan.max_staleness + 1) * plan.samples_per_version:
        raise ConfigError(f"runtime.rollout_steps={cfg.runtime.rollout_steps} is invalid with algo.name="
                          f"{cfg.algo.name!r}: an update admits a whole episode of every env ({decisions} decisions = "
                          f"max_episode_steps {max_episode_steps} / policy.chunk {cfg.policy.chunk}); allowed: >= {decisions}")
