"""`asyncvla bench throughput`: sync vs async env steps/s on the same workload, beside the bound.

Workloads (labelled in every result; parameters in bench/workloads.py):
- `emulated-balanced`: 8 emulated envs (`emulated/balanced`: 20 ms per simulator step
  +-10%, a 50 ms reset every 100 steps, thread executor, so they hold wall time without
  CPU), chunk 4, 8 decisions per env per sync iteration (64 samples per update, 1 PPO
  epoch), and an *emulated accelerator*: the tiny policy's real act/update run, then hold
  the device for a calibrated time (inference 4 ms + b*B per batch of B, training c per
  sample), as a GPU would, without CPU. b and c are set so that env stepping, inference
  (at B = 8) and training each take a third of a synchronous iteration (3 x 0.672 s).
  Dynamic batching: max_batch 2 (the best operating point, see `operating_point`),
  max_wait 2 ms; full async: max_staleness 1.
- `real-metaworld`: MetaWorld reach-v3 rendered 64x64 on this CPU and the tiny VLA
  (inference and training on this CPU, nothing emulated). Async runs env managers and the
  rollout server as Ray actors (own processes: rendering holds the GIL); the bound's stage
  costs are measured (`calibrate`).

Modes: `sync` is the real RLinf-style baseline, pipeline.py's loop (lockstep rollout
epoch, train, weight sync; 1 pipeline stage) with the same emulated accelerator costs;
`async_env`, `streaming_rollout` and `async` are rungs of the async runtime. Throughput
is counted from the end of the first update to the end of the run; `cpu_utilization` is
the CPU seconds of this process and all its descendants (Ray's workers and its own
processes included, each counted by pid even if it exits) over cores x wall time, from
the end of the first update to the end of the last (`bench/cpu.py`); `cpu_cores_by_process`
splits it (cores used by the driver, each actor class, Ray itself). The bound
(`operating_point`, BOUND_FORMULA) is a property of the workload, the same for every row.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from asyncvla.bench.cpu import CpuMeter
from asyncvla.config import ConfigError, RunConfig, TrainConfig
from asyncvla.policies.base import Policy
from asyncvla.runtime.rollout import build_policy
from asyncvla.runtime.learner.trainer import Trainer


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
    """The emulated-balanced workload (defined in bench/workloads.py)."""
    from asyncvla.bench.workloads import build_workload

    return build_workload("emulated-balanced")


def real_metaworld() -> Workload:
    """MetaWorld reach-v3 + tiny VLA on this CPU; stage costs measured here (for the bound)."""
    from asyncvla.bench.workloads import build_workload, calibrate

    costs, env_decision_s = calibrate("real-metaworld")
    return build_workload("real-metaworld", costs, env_decision_s)


WORKLOADS: dict[str, Callable[[], Workload]] = {"emulated-balanced": emulated_balanced, "real-metaworld": real_metaworld}
REAL = {"real-metaworld"}
"""Workloads with nothing emulated: async runs its envs and server as Ray actors (own processes)."""

# The ladder: each rung adds one level of asynchrony.
MODES: dict[str, dict] = {
    "sync": dict(),
    "async_env": dict(async_env=True),
    "streaming_rollout": dict(async_env=True, streaming_rollout=True),
    "async": dict(async_env=True, streaming_rollout=True, decoupled_actor=True, max_staleness=1),
}

BOUND_FORMULA = ("bound = max over B in [1, max_batch] of min(env E*K/(d + t_infer(B)), "
                 "rollout S*B*K/t_infer(B), trainer K/t_train) env steps/s; E envs, K actions per decision, "
                 "d = mean env decision seconds (resets included), t_infer(B) = a + b*B, S rollout servers")


def stage_capacities(num_envs: int, chunk: int, decision_s: float, costs: AcceleratorCosts, batch: float,
                     num_servers: int = 1) -> dict[str, float]:
    """Capacity of each stage, in env steps/s, when inference runs batches of `batch` samples.

    env: an env cannot step while its own request is served, so its best cycle is one
    decision plus t_infer(B): E*K/(d + t_infer(B)). rollout: S*B*K/t_infer(B). trainer:
    K/t_train. Bigger batches raise inference capacity and lower the envs' (their requests
    wait for the whole batch).
    """
    t_inf = costs.infer_s(batch)
    inf = float("inf")
    return {
        "env": num_envs * chunk / (decision_s + t_inf) if decision_s + t_inf > 0 else inf,
        "rollout": num_servers * batch * chunk / t_inf if t_inf > 0 else inf,
        "trainer": chunk / costs.train_per_sample_s if costs.train_per_sample_s > 0 else inf,
    }


def best_batch(num_envs: int, decision_s: float, costs: AcceleratorCosts, max_batch: int, num_servers: int = 1) -> float:
    """The batch size B in [1, max_batch] that maximises min(env, rollout) capacity.

    env(B) falls and rollout(B) rises with B, so the optimum is where they cross:
    N*(a + b*B) = S*B*(d + a + b*B), i.e. S*b*B^2 + (S*(d + a) - N*b)*B - N*a = 0
    (N envs, S servers, t_infer(B) = a + b*B, d the decision time), clamped to the range.
    """
    a, b, n, s, d = costs.infer_fixed_s, costs.infer_per_sample_s, num_envs, num_servers, decision_s
    if s * b <= 0:  # no per-sample cost: the env term does not depend on B, the largest batch is best
        return float(max_batch)
    p = s * (d + a) - n * b
    root = (-p + (p * p + 4 * s * b * n * a) ** 0.5) / (2 * s * b)
    return min(max(root, 1.0), float(max_batch))


@dataclass
class OperatingPoint:
    """The async bound of a workload and where it sits."""

    bound: float
    """Env steps/s: the bottleneck stage's capacity at the best batch."""
    batch: float
    """B*: the batch size at which the bound is reached."""
    terms: dict[str, float]
    """Capacity of every stage at B*, env steps/s."""
    stage: str
    """The bottleneck. Where env and rollout cross, the one that takes more of the env cycle
    d + t_infer(B*): a slow simulator (env) or slow inference (rollout)."""


def operating_point(w: Workload) -> OperatingPoint:
    """The async bound of workload `w`: the bottleneck stage's capacity at the best batch size.

    No schedule can exceed it: a run whose mean batch is B is held below both env(B) and
    rollout(B) (BOUND_FORMULA), hence below the best of their minimum over B.
    """
    cfg, rt = w.cfg, w.cfg.runtime
    envs = cfg.env.num_envs * rt.num_env_workers
    b = best_batch(envs, w.env_decision_s, w.costs, rt.max_batch, rt.num_rollout_servers)
    terms = stage_capacities(envs, cfg.policy.chunk, w.env_decision_s, w.costs, b, rt.num_rollout_servers)
    bound = min(terms.values())
    tied = [k for k, v in terms.items() if v <= bound * (1 + 1e-9)]
    stage = tied[0]
    if {"env", "rollout"} <= set(tied):
        stage = "env" if w.env_decision_s >= w.costs.infer_s(b) else "rollout"
    return OperatingPoint(bound, b, terms, stage)


def bound_env_steps_per_s(w: Workload) -> tuple[float, dict]:
    """(the async bound, stage capacities at the best batch), in env steps/s; see `operating_point`."""
    op = operating_point(w)
    return op.bound, op.terms


def _row(w: Workload, mode: str, mean_batch: float) -> dict:
    """The bound columns, the same for every mode (what full async can reach on this workload)."""
    op = operating_point(w)
    if w.env_decision_s <= 0:  # a real workload without calibration: no bound
        return {"mode": mode, "bound_env_steps_per_s": None, "mean_batch": round(mean_batch, 2)}
    return {"mode": mode, "bound_env_steps_per_s": round(op.bound, 2), "bound_stage": op.stage,
            "bound_terms": {k: round(v, 2) for k, v in op.terms.items()}, "bound_batch": round(op.batch, 2),
            "mean_batch": round(mean_batch, 2)}


def run_sync_baseline(w: Workload, seconds: float, remote: bool = False) -> dict:
    """The RLinf baseline row: pipeline.py's own loop (1 stage, colocated) on the workload.

    Emulated costs go into the same places as in async: the colocated worker's trainer
    (emulated update) and its inference policy (emulated act). Local (one process) when
    emulated, where nothing needs a process of its own; Ray actors for real workloads.
    The budget is seconds: when they are spent, total_updates is set to the current update.
    """
    from asyncvla.metrics.writer import MetricsWriter
    from asyncvla.runtime.pipeline import RunState, run_loop
    from asyncvla.runtime.placement import build_workers, shutdown_workers

    rt = dataclasses.replace(w.cfg.runtime, mode="sync", local=not remote, pipeline_stages=1, placement="colocated", trace=True)
    run = RunConfig(total_env_steps=None, total_updates=10**9, eval_episodes=0, checkpoint_every=0)
    cfg = dataclasses.replace(w.cfg, runtime=rt, run=run)
    meter, t_start = CpuMeter(), time.time()
    workers = build_workers(cfg)
    try:
        if not remote:
            colo = workers.trainer.obj
            a, p = workers.spec["action_dim"], workers.spec["proprio_dim"]
            colo.trainer = emulated_trainer_cls(w.costs)(cfg.policy, cfg.algo, a, p, seed=cfg.run.seed, trace=True)
            colo.rollout.policy = emulate_inference(colo.rollout.policy, w.costs)
        records: list[dict] = []

        def on_update(update: int, m: dict) -> None:
            meter.mark()
            records.append(m)
            if time.time() - t_start >= seconds and update >= 3:  # the window needs updates 2..N
                cfg.run.total_updates = update

        meter.mark()
        with tempfile.TemporaryDirectory(prefix="sync_bench_") as tmp, MetricsWriter(tmp, tensorboard=False) as writer:
            state = run_loop(workers, cfg, Path(tmp), RunState(), writer, [], on_update)
    finally:
        shutdown_workers(workers)
    window = records[1:] or records
    row = _row(w, "sync", float(cfg.env.num_envs))
    row.update({
        "env_steps_per_s": round(state.window_env_steps / state.window_s, 2) if state.window_s else 0.0,
        "trained_samples_per_s": round(sum(r["perf/trained_samples_per_s"] * r["time/update_wall_s"] for r in window)
                                       / max(sum(r["time/update_wall_s"] for r in window), 1e-9), 2),
        "utilization": {k: round(sum(r.get(f"util/{k}", 0.0) for r in window) / len(window), 3) for k in ("env", "rollout", "trainer")},
        "cpu_utilization": _round(meter.utilization()),
        "cpu_cores_by_process": meter.by_group(),
        "window_s": round(state.window_s, 2),
        "updates": state.update,
        "lag_max": 0,
        "runtime": "pipeline.py (RLinf sync loop, " + ("ray actors)" if remote else "local)"),
        "accounting": {"produced": state.env_steps, "trained": state.env_steps, "dropped": {}},
    })
    return row


def run_async_mode(w: Workload, mode: str, seconds: float, remote: bool = False) -> dict:
    """One rung of the async runtime (threads; Ray actors with remote=True)."""
    from asyncvla.runtime.async_pipeline import build_async, run_async

    rt = dataclasses.replace(w.cfg.runtime, **MODES[mode])  # env_managers etc. come with the workload
    cfg = dataclasses.replace(w.cfg, runtime=rt)
    # Real workloads (remote) run the policy and the update as they are; their costs only feed the bound.
    policy_fn = None if remote else functools.partial(_emulated_policy, cfg, w.costs)
    meter = CpuMeter()
    run = build_async(cfg, policy_fn=policy_fn, trainer_cls=Trainer if remote else emulated_trainer_cls(w.costs), remote=remote)
    meter.mark()
    s = run_async(run, max_seconds=seconds, on_update=lambda i, m: meter.mark())
    led = run.ledger
    mean_batch = sum(x.num_samples for x in run.servers) / max(sum(x.num_batches for x in run.servers), 1)
    row = _row(w, mode, mean_batch)
    row.update({
        "env_steps_per_s": round(s.get("perf/env_steps_per_s", 0.0), 2),
        "trained_samples_per_s": round(s.get("perf/trained_samples_per_s", 0.0), 2),
        "utilization": {k: round(s.get(f"util/{k}", 0.0), 3) for k in ("env", "rollout", "trainer")},
        "cpu_utilization": _round(meter.utilization()),
        "cpu_cores_by_process": meter.by_group(),
        "window_s": round(s.get("time/window_s", 0.0), 2),
        "updates": s["train/updates"],
        "lag_max": s["lag/max"],
        "runtime": "ray actors" if remote else "threads",
        "accounting": {"produced": led.produced_env_steps, "trained": led.trained_env_steps,
                       "dropped": dict(led.dropped_env_steps)},
    })
    return row


def run_mode(w: Workload, mode: str, seconds: float, remote: bool = False) -> dict:
    """One result row: `sync` runs pipeline.py's loop, the other modes the async runtime."""
    if mode not in MODES:
        raise ConfigError(f"modes={mode!r} is invalid: allowed: {', '.join(MODES)}")
    return run_sync_baseline(w, seconds, remote) if mode == "sync" else run_async_mode(w, mode, seconds, remote)


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _emulated_policy(cfg: TrainConfig, costs: AcceleratorCosts, a: int, p: int) -> Policy:
    return emulate_inference(build_policy(cfg.policy, a, p, cfg.run.seed), costs)


def throughput_bench(workload: str, modes: list[str], seconds: float) -> dict:
    if workload not in WORKLOADS:
        raise ConfigError(f"workload={workload!r} is invalid: allowed: {', '.join(WORKLOADS)}")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"modes={m!r} is invalid: allowed: {', '.join(MODES)}")
    w = WORKLOADS[workload]()
    own_ray = False
    if workload in REAL:
        import ray

        from asyncvla.runtime.placement import init_ray

        if not ray.is_initialized():
            init_ray(None, min_cpus=2)
            own_ray = True
    try:
        runs = [run_mode(w, m, seconds, remote=workload in REAL) for m in modes]
    finally:
        if own_ray:
            import ray

            ray.shutdown()
    out = {"bench": "throughput", "workload": workload, "label": w.label,
           "window": "from the end of the first update to the end of the run (start-up and first update excluded)",
           "costs": dataclasses.asdict(w.costs), "env_decision_s": w.env_decision_s, "bound": BOUND_FORMULA,
           "seconds": seconds, "runs": runs}
    by = {r["mode"]: r for r in runs}
    if "sync" in by and "async" in by and by["sync"]["env_steps_per_s"]:
        out["async_over_sync"] = round(by["async"]["env_steps_per_s"] / by["sync"]["env_steps_per_s"], 3)
    return out
