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
  costs are measured (`calibrate`), and the bound includes the CPU term (cores / CPU-seconds
  per env step).
- every other workload of bench/workloads.py (emulated env-, inference-, trainer-bound and
  long-tail; real LIBERO and ManiSkill), built and bounded the same way.

Modes are rungs of the one runtime on the same workload, only switches change: `sync` is
the RLinf-style baseline (every switch off: lockstep rollout, fixed batches, collect → train
→ publish; 1 pipeline stage), `async_env`, `streaming_rollout` and `async` add one level of
asynchrony each. Emulated workloads run the threads backend with
`runtime.emulated_accelerator` set; real ones the ray backend. Throughput
is counted from the end of the first update to the end of the run; `cpu_utilization` is
the CPU seconds of this process and all its descendants (Ray's workers and its own
processes included, each counted by pid even if it exits) over cores x wall time, from
the end of the first update to the end of the last (`bench/cpu.py`); `cpu_cores_by_process`
splits it (cores used by the driver, each actor class, Ray itself). The bound
(`operating_point`, BOUND_FORMULA) is a property of the workload, the same for every row.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

from asyncvla.bench.cpu import CpuMeter
from asyncvla.config import ConfigError, EmulatedAcceleratorConfig, TrainConfig


AcceleratorCosts = EmulatedAcceleratorConfig
"""Wall time an emulated accelerator holds per call (the runtime's own config)."""


@dataclass
class Workload:
    cfg: TrainConfig
    costs: AcceleratorCosts
    """Stage costs: held by the emulated accelerator (emulated workloads), or measured (real ones, for the bound)."""
    env_decision_s: float
    """Mean wall time of one env decision (chunk) of the emulated env."""
    label: str
    emulated: bool = False

    def config(self) -> TrainConfig:
        """The config a row runs: emulated workloads hold `costs` on the emulated accelerator."""
        if not self.emulated:
            return self.cfg
        return dataclasses.replace(self.cfg, runtime=dataclasses.replace(self.cfg.runtime, emulated_accelerator=self.costs))


@contextlib.contextmanager
def ray_session(cfg: TrainConfig):
    """Ray for a config on the ray backend (started here unless it is running already; stopped after)."""
    import ray

    from asyncvla.runtime.backends.ray import init_ray

    own = not cfg.runtime.local and not ray.is_initialized()
    if own:
        init_ray(None, min_cpus=2)
    try:
        yield
    finally:
        if own:
            ray.shutdown()


def emulated_balanced() -> Workload:
    """The emulated-balanced workload (defined in bench/workloads.py)."""
    from asyncvla.bench.workloads import build_workload

    return build_workload("emulated-balanced")


# The ladder: each rung adds one level of asynchrony.
OFF = dict(async_env=False, streaming_rollout=False, decoupled_actor=False)
NO_BATCHING = dict(max_batch=None, max_wait_ms=None)
"""Without streaming_rollout each request is its own batch: the workload's batching fields go too."""
MODES: dict[str, dict] = {
    "sync": dict(mode="sync", **OFF, **NO_BATCHING),
    "async_env": dict(mode="async", **{**OFF, "async_env": True}, **NO_BATCHING),
    "streaming_rollout": dict(mode="async", **{**OFF, "async_env": True, "streaming_rollout": True}),
    "async": dict(mode="async", async_env=True, streaming_rollout=True, decoupled_actor=True, max_staleness=1),
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


def run_config(cfg: TrainConfig, seconds: float, meter: CpuMeter | None = None):
    """Runs `cfg` through the one runtime for `seconds`; returns (summary, runtime).

    Every bench row (sync and async, every rung and placement) comes through here, and so
    does `asyncvla train` (runtime/driver.py calls the same `loop.run`).
    """
    from asyncvla.runtime import loop

    rt = loop.build_runtime(cfg)
    if meter is not None:
        meter.mark()
    summary = loop.run(rt, max_seconds=seconds, on_update=(lambda i, m: meter.mark()) if meter is not None else None)
    return summary, rt


def result_row(name: str, cfg: TrainConfig, summary: dict, rt) -> dict:
    """The measured columns of one row (bounds are added by the caller)."""
    led = rt.ledger
    return {
        "mode": name,
        "env_steps_per_s": round(summary.get("perf/env_steps_per_s", 0.0), 2),
        "trained_samples_per_s": round(summary.get("perf/trained_samples_per_s", 0.0), 2),
        "utilization": {k: round(summary.get(f"util/{k}", 0.0), 3) for k in ("env", "rollout", "trainer")},
        "window_s": round(summary.get("time/update_wall_s", 0.0), 2),
        "updates": summary["train/updates"],
        "lag_max": summary.get("lag/max"),
        "mean_batch": round(sum(x.num_samples for x in rt.servers) / max(sum(x.num_batches for x in rt.servers), 1), 2),
        "accounting": {"produced": led.produced_env_steps, "trained": led.trained_env_steps,
                       "dropped": dict(led.dropped_env_steps)},
        "runtime": {"backend": rt.plan.backend, **{k: getattr(rt.plan, k) for k in (
            "async_env", "streaming_rollout", "decoupled_actor", "max_batch", "max_staleness", "trainer_mode")},
            "managers": [m.num_envs for m in rt.plan.managers]},
    }


def mode_config(w: Workload, mode: str) -> TrainConfig:
    """The workload's config with the switches of `mode` (sync: 1 pipeline stage)."""
    cfg = w.config()
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, **MODES[mode], pipeline_stages=1))


def run_mode(w: Workload, mode: str, seconds: float) -> dict:
    """One result row (without the bound): the workload under the switches of `mode`, through the one runtime."""
    if mode not in MODES:
        raise ConfigError(f"modes={mode!r} is invalid: allowed: {', '.join(MODES)}")
    cfg = mode_config(w, mode)
    meter = CpuMeter()
    summary, rt = run_config(cfg, seconds, meter)
    row = result_row(mode, cfg, summary, rt)
    row.update({"cpu_utilization": _round(meter.utilization()), "cpu_cores_by_process": meter.by_group()})
    return row


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def throughput_bench(workload: str, modes: list[str], seconds: float) -> dict:
    """Every workload of bench/workloads.py; real ones are calibrated first, and their bound has the
    CPU term (cores / CPU-seconds per env step), as in `bench ablation`."""
    from asyncvla.bench.ablation import bound_terms, prepare, with_bound
    from asyncvla.bench.workloads import get_spec

    get_spec(workload)
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"modes={m!r} is invalid: allowed: {', '.join(MODES)}")
    w, extra = prepare(workload)
    terms = bound_terms(w, extra)
    op = operating_point(w) if terms else None
    with ray_session(w.cfg):
        runs = [run_mode(w, m, seconds) for m in modes]
    for row in runs:
        with_bound(row, terms, op.stage if op else None)
        if op:
            row["bound_batch"] = round(op.batch, 2)
    out = {"bench": "throughput", "workload": workload, "label": w.label,
           "window": "from the end of the first update to the end of the run (start-up and first update excluded)",
           "costs": dataclasses.asdict(w.costs), "env_decision_s": w.env_decision_s, "bound": BOUND_FORMULA,
           "seconds": seconds, "runs": runs}
    by = {r["mode"]: r for r in runs}
    if "sync" in by and "async" in by and by["sync"]["env_steps_per_s"]:
        out["async_over_sync"] = round(by["async"]["env_steps_per_s"] / by["sync"]["env_steps_per_s"], 3)
    return out
