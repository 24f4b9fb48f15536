"""Named benchmark workloads: a TrainConfig plus stage costs, each labelled real or emulated.

- **emulated** workloads run emulated envs (steps hold wall time without CPU, executor
  `thread`) and an *emulated accelerator* (`bench/throughput.py`: the tiny policy's real
  act/update run, then hold the device for a calibrated time). Stage times are fractions of
  one synchronous iteration's env time, so each workload puts the bottleneck somewhere
  known (`infer_share` / `train_share` = inference / training time per sync iteration over
  env time per sync iteration; 1 and 1 = balanced thirds).
- **real** workloads run a real simulator with the tiny VLA, inference and training on this
  machine's CPU, no holds; their stage costs (for the bound) are measured by `calibrate`.

`build_workload(name)` returns a `bench.throughput.Workload` that the throughput, ablation
and placement benches all run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from asyncvla.bench.throughput import AcceleratorCosts, Workload
from asyncvla.config import AlgoConfig, ConfigError, EnvConfig, RunConfig, RuntimeConfig, TrainConfig, env_config, policy_config

# Lockstep: the slowest of 8 envs (±10% jitter) sets each step, about 1.05 x the mean.
LOCKSTEP_FACTOR = 1.05
INFER_FIXED_S = 0.004
"""Emulated per-batch inference overhead (kernel launches, host-device copies)."""


@dataclass(frozen=True)
class WorkloadSpec:
    """The parameters of one named workload (documented in docs/benchmarks.md)."""

    name: str
    kind: Literal["real", "emulated"]
    description: str
    env_id: str
    num_envs: int = 8
    """Envs (one env worker)."""
    chunk: int = 4
    """Actions per decision."""
    rollout_steps: int = 8
    """Decisions per env per sync rollout epoch (samples per update = num_envs * rollout_steps)."""
    image_size: int = 16
    step_mean_s: float = 0.02
    """Emulated: mean wall time of one env step (the env profile's value)."""
    infer_share: float = 1.0
    """Emulated: inference time per sync iteration / env time per sync iteration."""
    train_share: float = 1.0
    """Emulated: training time per sync iteration / env time per sync iteration."""
    hidden_dim: int = 16
    num_layers: int = 1
    max_batch: int | None = None
    """Dynamic batching cap; None = num_envs (every env can meet in one batch)."""
    max_wait_ms: float = 2.0
    extra: dict = field(default_factory=dict)
    """Env config overrides (e.g. max_episode_steps)."""
    runtime: dict = field(default_factory=dict)
    """Runtime config overrides (e.g. env_managers)."""

    def params(self) -> dict:
        """The parameters as a plain dict (recorded in every results.json)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("name", "description")}


def _emulated(name: str, profile: str, infer: float, train: float, text: str) -> WorkloadSpec:
    return WorkloadSpec(name, "emulated", text, f"emulated/{profile}", infer_share=infer, train_share=train)


REAL_RUNTIME = dict(env_managers=(2, 2), env_cpus=0.5)
"""Async on a 2-core CPU box: one env manager process (Ray actor) per core, 2 envs each (a
rendering simulator holds its process's GIL for much of each step, so envs in threads of
one process overlap only in part; with 2 envs per manager one steps while the other's
request is served)."""

SPECS: dict[str, WorkloadSpec] = {s.name: s for s in [
    dataclasses.replace(
        _emulated("emulated-balanced", "balanced", 1.0, 1.0,
                  "env stepping, inference and training each take a third of a sync iteration"),
        # Inference costs 10 ms per sample and 4 ms per batch: a batch of 8 (84 ms) outlasts an env
        # decision, so large batches stall the envs; the best operating point is B* ~ 1.5
        # (`bench.throughput.operating_point`), hence max_batch 2 (docs/benchmarks.md).
        max_batch=2, max_wait_ms=2.0),
    _emulated("emulated-env-bound", "balanced", 0.25, 0.25,
              "simulation dominates (inference and training a quarter of env time each)"),
    _emulated("emulated-infer-bound", "balanced", 2.0, 0.5,
              "inference dominates (a large VLA, e.g. 7B, with cheap simulation)"),
    _emulated("emulated-train-bound", "balanced", 0.5, 2.0,
              "training dominates (many epochs or a large model update)"),
    _emulated("emulated-long-tail", "long-tail", 1.0, 1.0,
              "balanced stage times, but 5% of env steps take 10x the mean (stragglers)"),
    WorkloadSpec("real-metaworld", "real", "MetaWorld reach-v3 rendered 64x64 on the CPU, tiny VLA on the CPU",
                 "metaworld/reach-v3", num_envs=4, rollout_steps=8, image_size=64, hidden_dim=64, num_layers=2,
                 runtime=REAL_RUNTIME),
    WorkloadSpec("real-libero", "real", "LIBERO spatial task 0 rendered 64x64 on the CPU, tiny VLA on the CPU",
                 "libero/libero_spatial/0", num_envs=4, rollout_steps=4, image_size=64, hidden_dim=64, num_layers=2,
                 runtime=REAL_RUNTIME),
    WorkloadSpec("real-maniskill", "real", "ManiSkill3 PickCube (physx_cpu, Vulkan rendering 64x64), tiny VLA on the CPU",
                 "maniskill/PickCube-v1", num_envs=4, rollout_steps=8, image_size=64, hidden_dim=64, num_layers=2,
                 runtime=REAL_RUNTIME),
]}


def workload_names(kind: str | None = None) -> list[str]:
    return [n for n, s in SPECS.items() if kind is None or s.kind == kind]


def get_spec(name: str) -> WorkloadSpec:
    if name not in SPECS:
        raise ConfigError(f"workload={name!r} is invalid: allowed: {', '.join(SPECS)}")
    return SPECS[name]


def train_config(spec: WorkloadSpec) -> TrainConfig:
    """The TrainConfig a workload runs (the async runtime; the ablation switches are set per rung)."""
    return TrainConfig(
        env=env_config(id=spec.env_id, num_envs=spec.num_envs, image_size=spec.image_size, executor="thread", seed=0,
                      **spec.extra),
        policy=policy_config(chunk=spec.chunk, hidden_dim=spec.hidden_dim, num_layers=spec.num_layers, num_heads=2),
        algo=AlgoConfig(update_epochs=1, minibatch_size=spec.num_envs * spec.rollout_steps),
        # Emulated: the threads backend, roles on their own (emulated) devices; real: Ray actors.
        runtime=RuntimeConfig(mode="async", rollout_steps=spec.rollout_steps, max_batch=spec.max_batch or spec.num_envs,
                              max_wait_ms=spec.max_wait_ms, queue_size=16, trace=False, local=spec.kind == "emulated",
                              placement="disaggregated", **spec.runtime),
        run=RunConfig(total_env_steps=None, total_updates=10**9),
    )


def emulated_decision_s(env: EnvConfig, chunk: int) -> float:
    """Mean wall time of one decision (chunk) of an `emulated/*` env, resets included.

    step: the profile's mean, (1 - p) * step_mean_s + p * step_tail_factor * step_mean_s
    (the jitter is symmetric); reset: reset_s once per episode of max_episode_steps (else
    the profile's episode_len) steps. Episodes that end early on success reset more often,
    so this is the fewest-resets (optimistic) case, as a bound needs.
    """
    from asyncvla.envs.emulated import PROFILES

    task = env.id.split("/", 1)[1]
    if task not in PROFILES:
        raise ConfigError(f"env.id={env.id!r} is invalid: allowed: {', '.join('emulated/' + p for p in PROFILES)}")
    e = dataclasses.replace(env.emulated, **PROFILES[task])
    step_s = e.step_mean_s * ((1 - e.step_tail_prob) + e.step_tail_prob * e.step_tail_factor)
    episode_steps = env.max_episode_steps or e.episode_len
    return chunk * step_s + e.reset_s * chunk / episode_steps


def emulated_costs(spec: WorkloadSpec) -> tuple[AcceleratorCosts, float]:
    """(accelerator costs, mean env decision seconds) of an emulated workload.

    env time per sync iteration E = rollout_steps * chunk * step_mean_s * LOCKSTEP_FACTOR;
    inference holds infer_share * E per iteration (a fixed overhead per batch plus a
    per-sample part), training train_share * E per iteration's samples. The shares are set
    on the nominal step time (resets and tail steps left out); the decision time returned,
    which the bound uses, includes them (`emulated_decision_s`).
    """
    env_decision_s = spec.chunk * spec.step_mean_s
    env_iter_s = spec.rollout_steps * env_decision_s * LOCKSTEP_FACTOR
    per_batch = spec.infer_share * env_iter_s / spec.rollout_steps
    fixed = min(INFER_FIXED_S, per_batch / 2)
    costs = AcceleratorCosts(infer_fixed_s=fixed, infer_per_sample_s=(per_batch - fixed) / spec.num_envs,
                             train_per_sample_s=spec.train_share * env_iter_s / (spec.num_envs * spec.rollout_steps))
    return costs, emulated_decision_s(train_config(spec).env, spec.chunk)


def build_workload(name: str, costs: AcceleratorCosts | None = None, env_decision_s: float | None = None) -> Workload:
    """The runnable workload `name`.

    Emulated: costs from `emulated_costs`. Real: `costs` / `env_decision_s` are the measured
    stage costs (from `calibrate`) used for the bound only; None leaves them zero (no bound).
    """
    spec = get_spec(name)
    cfg = train_config(spec)
    if spec.kind == "emulated":
        costs, env_decision_s = emulated_costs(spec)
    label = f"{name} ({spec.kind}): {spec.description}"
    return Workload(cfg, costs or AcceleratorCosts(0.0, 0.0, 0.0), env_decision_s or 0.0, label, emulated=spec.kind == "emulated")


def calibrate(name: str, budget_s: float = 0.5) -> tuple[AcceleratorCosts, float]:
    """Measures a real workload's stage costs on this machine: env decision, inference a + b*B, training per sample.

    Env: `env_bench` through the protocol (steps/s per env, chunk actions per decision);
    policy: `bench_batch` at B = 1 and B = max_batch (inference) and the update batch (training).
    """
    from asyncvla.bench.envs import env_bench
    from asyncvla.bench.policy import bench_batch
    from asyncvla.policies.registry import make_policy

    import torch

    spec = get_spec(name)
    cfg = train_config(spec)
    env = dataclasses.replace(cfg.env, executor="inline")
    e = env_bench(env, steps=max(8, spec.num_envs * spec.chunk * 6), chunk=spec.chunk, repeats=2)
    env_decision_s = spec.chunk / e["steps_per_s"]  # one env alone: the per-env step time
    torch.manual_seed(0)
    # Action and proprio sizes barely change the cost of a tiny VLA: no env is built for them.
    policy = make_policy(cfg.policy, 4, 39)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    b = cfg.runtime.max_batch
    one = bench_batch(policy, opt, 1, cfg.policy.image_size, budget_s)
    many = bench_batch(policy, opt, b, cfg.policy.image_size, budget_s)
    t1, tb = one["infer_ms"] / 1e3, many["infer_ms"] / 1e3
    per = max((tb - t1) / max(b - 1, 1), 0.0)
    train = bench_batch(policy, opt, cfg.algo.minibatch_size, cfg.policy.image_size, budget_s)
    costs = AcceleratorCosts(max(t1 - per, 0.0), per, train["train_ms"] / 1e3 / cfg.algo.minibatch_size)
    return costs, env_decision_s
