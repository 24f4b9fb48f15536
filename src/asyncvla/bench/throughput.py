"""`asyncvla bench throughput`: sync vs async env steps/s on the same code and workload.

Workload `emulated-balanced` (labelled as such in every result): emulated envs
(`emulated/balanced`, 20 ms per simulator step, thread executor: they hold wall time
without CPU) and an *emulated accelerator*: the tiny policy's real act/update run, then
hold the device for a calibrated time (inference a + b*B per batch of B, training c per
sample), as a GPU would, without using CPU. Stage times are set so that env stepping,
inference and training each take about a third of a synchronous iteration.

Every mode runs the async runtime; `sync` is all three levels off (lockstep envs, one
batch per step, collect-train-sync with rollouts paused), so the comparison is switches
only. Throughput is counted from the end of the first update to the end of the run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from asyncvla.config import AlgoConfig, ConfigError, EnvConfig, PolicyConfig, RunConfig, RuntimeConfig, TrainConfig
from asyncvla.policies.base import Policy
from asyncvla.runtime.rollout import build_policy
from asyncvla.runtime.trainer import Trainer


def _hold(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


@dataclass
class AcceleratorCosts:
    """Wall time an emulated accelerator holds per call."""

    infer_fixed_s: float
    infer_per_sample_s: float
    train_per_sample_s: float

    def infer_s(self, batch: int) -> float:
        return self.infer_fixed_s + self.infer_per_sample_s * batch


def emulate_inference(policy: Policy, costs: AcceleratorCosts) -> Policy:
    """Makes `policy.act` take at least costs.infer_s(B) of wall time (the real act runs first)."""
    real_act = policy.act

    def act(obs, deterministic: bool = False):
        t0 = time.perf_counter()
        out = real_act(obs, deterministic)
        _hold(costs.infer_s(len(obs)) - (time.perf_counter() - t0))
        return out

    policy.act = act  # instance attribute: state_dict and the class are untouched
    return policy


def emulated_trainer_cls(costs: AcceleratorCosts) -> type[Trainer]:
    """A Trainer whose update takes at least train_per_sample_s per sample and epoch."""

    class EmulatedTrainer(Trainer):
        def update(self, batch, epochs):
            t0 = time.perf_counter()
            out = super().update(batch, epochs)
            _hold(costs.train_per_sample_s * len(batch) * epochs - (time.perf_counter() - t0))
            return out

    return EmulatedTrainer


@dataclass
class Workload:
    cfg: TrainConfig
    costs: AcceleratorCosts
    env_decision_s: float
    """Mean wall time of one env decision (chunk) of the emulated env."""
    label: str


def emulated_balanced() -> Workload:
    num_envs, chunk, steps = 8, 4, 8
    env_decision_s = chunk * 0.02  # emulated/balanced: 20 ms per step
    # Lockstep: the slowest of 8 envs (+-10% jitter) sets each step, ~1.05 x the mean.
    third = steps * env_decision_s * 1.05  # s per sync iteration spent on each stage
    fixed = 0.004
    costs = AcceleratorCosts(infer_fixed_s=fixed, infer_per_sample_s=(third / steps - fixed) / num_envs,
                             train_per_sample_s=third / (num_envs * steps))
    cfg = TrainConfig(
        env=EnvConfig(id="emulated/balanced", num_envs=num_envs, image_size=16, executor="thread", seed=0),
        policy=PolicyConfig(chunk=chunk, hidden_dim=16, num_layers=1, num_heads=2),
        algo=AlgoConfig(update_epochs=1, minibatch_size=num_envs * steps),
        runtime=RuntimeConfig(mode="async", rollout_steps=steps, max_batch=num_envs, max_wait_ms=2.0,
                              queue_size=16, trace=False),
        run=RunConfig(total_env_steps=None, total_updates=10**9),
    )
    return Workload(cfg, costs, env_decision_s, "emulated-balanced (emulated envs + emulated accelerator, CPU-free stage times)")


WORKLOADS: dict[str, Callable[[], Workload]] = {"emulated-balanced": emulated_balanced}

# The ladder: each rung adds one level of asynchrony.
MODES: dict[str, dict] = {
    "sync": dict(),
    "async_env": dict(async_env=True),
    "streaming_rollout": dict(async_env=True, streaming_rollout=True),
    "async": dict(async_env=True, streaming_rollout=True, decoupled_actor=True, max_staleness=1),
}


def bound_env_steps_per_s(w: Workload) -> tuple[float, dict]:
    """The async bound: the capacity of the bottleneck stage, in env steps/s.

    An env cannot step while its own request is inferred, so its best cycle is one
    decision plus a batch-of-one inference; inference at full batches; the trainer.
    """
    cfg, c = w.cfg, w.costs
    envs = cfg.env.num_envs * cfg.runtime.num_env_workers
    k, b = cfg.policy.chunk, cfg.runtime.max_batch
    terms = {
        "env": envs * k / (w.env_decision_s + c.infer_s(1)),
        "rollout": cfg.runtime.num_rollout_servers * b * k / c.infer_s(b),
        "trainer": k / c.train_per_sample_s,
    }
    return min(terms.values()), terms


def run_mode(w: Workload, mode: str, seconds: float) -> dict:
    from asyncvla.runtime.async_pipeline import build_async, run_async

    if mode not in MODES:
        raise ConfigError(f"modes={mode!r} is invalid: allowed: {', '.join(MODES)}")
    cfg = dataclasses.replace(w.cfg, runtime=dataclasses.replace(w.cfg.runtime, **MODES[mode]))
    policy_fn = lambda a, p: emulate_inference(build_policy(cfg.policy, a, p, cfg.run.seed), w.costs)  # noqa: E731
    run = build_async(cfg, policy_fn=policy_fn, trainer_cls=emulated_trainer_cls(w.costs))
    s = run_async(run, max_seconds=seconds)
    bound, terms = bound_env_steps_per_s(w)
    led = run.ledger
    return {
        "mode": mode,
        "env_steps_per_s": round(s.get("perf/env_steps_per_s", 0.0), 2),
        "trained_samples_per_s": round(s.get("perf/trained_samples_per_s", 0.0), 2),
        "bound_env_steps_per_s": round(bound, 2),
        "bound_terms": {k: round(v, 2) for k, v in terms.items()},
        "utilization": {k: round(s.get(f"util/{k}", 0.0), 3) for k in ("env", "rollout", "trainer")},
        "window_s": round(s.get("time/window_s", 0.0), 2),
        "updates": s["train/updates"],
        "lag_max": s["lag/max"],
        "mean_batch": round(sum(x.num_samples for x in run.servers) / max(sum(x.num_batches for x in run.servers), 1), 2),
        "accounting": {"produced": led.produced_env_steps, "trained": led.trained_env_steps,
                       "dropped": dict(led.dropped_env_steps)},
    }


def throughput_bench(workload: str, modes: list[str], seconds: float) -> dict:
    if workload not in WORKLOADS:
        raise ConfigError(f"workload={workload!r} is invalid: allowed: {', '.join(WORKLOADS)}")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"modes={m!r} is invalid: allowed: {', '.join(MODES)}")
    w = WORKLOADS[workload]()
    runs = [run_mode(w, m, seconds) for m in modes]
    return {"workload": workload, "label": w.label,
            "window": "from the end of the first update to the end of the run (start-up and first update excluded)",
            "costs": dataclasses.asdict(w.costs), "runs": runs}
