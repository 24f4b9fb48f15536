"""`asyncvla bench ablation`: the ladder from sync to full async, one level at a time.

Rungs (every one runs the one runtime on the same workload; only switches change):

| rung | what changes |
|---|---|
| sync | lockstep envs, one fixed batch per step, collect → train → publish (rollouts paused) |
| sync-2stage, sync-4stage | RLinf pipelining (`pipeline_stages`): the envs split into 2 / 4 lockstep managers, each with its own loop, so one stage steps while another's inference runs |
| +async_env | every env steps on its own clock (ready-first), no stages needed |
| +streaming_rollout | inference batches dynamically (max_batch / max_wait_ms) |
| +decoupled_actor | the trainer consumes segments as they arrive and publishes while rollouts continue (full async, max_staleness 1) |

Emulated workloads set `runtime.emulated_accelerator` (threads backend); real workloads run
the tiny VLA as is (ray backend). Each row: env steps/s,
trained samples/s, utilization per role, the async bound (bottleneck stage) and the ratio
to sync; throughput is counted from the end of the first update to the end of the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from asyncvla.bench.report import THROUGHPUT_COLUMNS, Column
from asyncvla.bench.throughput import (BOUND_FORMULA, MODES, OFF, Workload, bound_env_steps_per_s, operating_point, ray_session,
                                       result_row, run_config)
from asyncvla.bench.workloads import build_workload, calibrate, get_spec
from asyncvla.config import ConfigError, TrainConfig
from asyncvla.metrics.spans import Span

ABLATION_COLUMNS = (*THROUGHPUT_COLUMNS, Column("compared_with", "compared with", "{}"),
                    Column("vs_best_previous", "× best previous", "{:.2f}"))
"""The throughput table plus, per rung, the fastest rung before it and the ratio to that rung."""
WINDOW = "from the end of the first update to the end of the run (start-up and first update excluded)"


@dataclass(frozen=True)
class Rung:
    """One row of the ladder: runtime switches on top of the workload's config."""

    name: str
    runtime: dict = field(default_factory=dict)
    stages: int = 1
    """RLinf pipeline stages (lockstep env managers); only meaningful with async_env off."""


FULL_ASYNC = MODES["async"]
LADDER: tuple[Rung, ...] = (
    Rung("sync", MODES["sync"]),
    Rung("sync-2stage", MODES["sync"], stages=2),
    Rung("sync-4stage", MODES["sync"], stages=4),
    Rung("+async_env", MODES["async_env"]),
    Rung("+streaming_rollout", MODES["streaming_rollout"]),
    Rung("+decoupled_actor", FULL_ASYNC),
)
RUNGS = {r.name: r for r in LADDER}


def rung_config(cfg: TrainConfig, rung: Rung) -> TrainConfig:
    """`cfg` with the rung's switches and pipeline stages (the plan makes them lockstep env managers)."""
    n = cfg.env.num_envs
    if n % rung.stages:
        raise ConfigError(f"env.num_envs={n} is invalid for rung {rung.name}: must be divisible by {rung.stages}")
    rt = dataclasses.replace(cfg.runtime, **{"mode": "sync", **OFF, **rung.runtime}, pipeline_stages=rung.stages)
    return dataclasses.replace(cfg, runtime=rt)


# -- one run -------------------------------------------------------------------------------

def run_row(cfg: TrainConfig, seconds: float, name: str, trace: bool = False) -> tuple[dict, list[Span]]:
    """Runs `cfg` for `seconds`; returns the result row and the spans (empty unless `trace`)."""
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, trace=trace))
    summary, rt = run_config(cfg, seconds)
    spans = rt.trainer.drain_spans() + rt.backend.spans() if trace else []
    return result_row(name, cfg, summary, rt), spans


def bound_terms(w: Workload, extra: dict[str, float] | None = None) -> dict[str, float]:
    """Stage capacities in env steps/s (their minimum is the async bound); {} for an uncalibrated real workload."""
    terms = dict(bound_env_steps_per_s(w)[1]) if w.env_decision_s > 0 and w.costs.train_per_sample_s > 0 else {}
    terms.update(extra or {})
    return terms


def with_bound(row: dict, terms: dict[str, float], stage: str | None = None) -> dict:
    """Adds the bound (the smallest stage capacity), its terms and (when it binds) `stage` as the bottleneck."""
    if terms:
        bound = min(terms.values())
        row["bound_env_steps_per_s"] = round(bound, 2)
        row["bound_terms"] = {k: round(v, 2) for k, v in terms.items()}
        if stage is not None and terms.get(stage, float("inf")) <= bound * (1 + 1e-9):
            row["bound_stage"] = stage
    return row


def cpu_term(w: Workload, cores: int) -> float:
    """On a CPU-only box every stage shares the cores: cores / CPU-seconds per decision, in env steps/s."""
    cfg, c = w.cfg, w.costs
    b = cfg.runtime.max_batch
    cpu_s = w.env_decision_s + c.infer_s(b) / b + c.train_per_sample_s
    return cores * cfg.policy.chunk / cpu_s


def prepare(workload: str, calibrate_real: bool = True) -> tuple[Workload, dict]:
    """(workload, extra bound terms): real workloads get measured costs and the CPU term."""
    import os

    spec = get_spec(workload)
    if spec.kind == "emulated" or not calibrate_real:
        return build_workload(workload), {}
    costs, env_decision_s = calibrate(workload)
    w = build_workload(workload, costs, env_decision_s)
    return w, {"cpu": cpu_term(w, os.cpu_count() or 1)}


# -- the ladder ------------------------------------------------------------------------------

def ablation_bench(workload: str, seconds: float, rungs: list[str] | None = None, trace_dir: Path | None = None,
                   on_run: Callable[[dict], None] | None = None) -> dict:
    """Runs the ladder's rungs (default all) on `workload`; with `trace_dir`, writes the sync
    and full-async traces there (sync.trace.json, async.trace.json) for the timeline."""
    from asyncvla.metrics.spans import write_chrome_trace

    names = rungs or [r.name for r in LADDER]
    for n in names:
        if n not in RUNGS:
            raise ConfigError(f"rungs={n!r} is invalid: allowed: {', '.join(RUNGS)}")
    w, extra = prepare(workload)
    terms = bound_terms(w, extra)
    op = operating_point(w) if terms else None
    runs = []
    with ray_session(w.cfg):
        for n in names:
            traced = trace_dir is not None and n in ("sync", LADDER[-1].name)
            row, spans = run_row(rung_config(w.config(), RUNGS[n]), seconds, n, trace=traced)
            with_bound(row, terms, op.stage if op else None)
            if op:
                row["bound_batch"] = round(op.batch, 2)
            if traced:
                Path(trace_dir).mkdir(parents=True, exist_ok=True)
                write_chrome_trace(Path(trace_dir) / f"{'sync' if n == 'sync' else 'async'}.trace.json", spans)
            runs.append(row)
            if on_run is not None:
                on_run(row)
    spec = get_spec(workload)
    return {"bench": "ablation", "workload": workload, "kind": spec.kind, "label": w.label, "params": spec.params(),
            "costs": dataclasses.asdict(w.costs), "env_decision_s": w.env_decision_s, "window": WINDOW,
            "bound": BOUND_FORMULA, "seconds": seconds, "runs": runs}


def compare_rungs(runs: list[dict], key: str = "env_steps_per_s") -> list[dict]:
    """Adds to each row (in ladder order) the row it is compared with, the fastest row before
    it (`compared_with`), and the ratio to it (`vs_best_previous`); in place, returns `runs`."""
    best: dict | None = None
    for r in runs:
        if best is None:
            r["compared_with"], r["vs_best_previous"] = None, None
        else:
            r["compared_with"] = best["mode"]
            r["vs_best_previous"] = round(r[key] / best[key], 3) if best[key] > 0 else None
        if best is None or r[key] > best[key]:
            best = r
    return runs


def ladder_violations(runs: list[dict], tolerance: float = 0.05, key: str = "env_steps_per_s") -> list[str]:
    """Where the ladder breaks the acceptance rule: full async must be the fastest row, and
    every rung must reach the fastest rung before it (pipelined sync rows included) within
    `tolerance` (relative noise): adding a level, or a pipeline stage, must not cost throughput.
    """
    out = []
    by = {r["mode"]: r[key] for r in runs}
    last = LADDER[-1].name
    if last in by and any(v > by[last] * (1 + tolerance) for m, v in by.items() if m != last):
        out.append(f"{last} is not the fastest row")
    order = [r.name for r in LADDER if r.name in by]
    for i, cur in enumerate(order[1:], 1):
        prev = max(order[:i], key=by.__getitem__)
        if by[cur] < by[prev] * (1 - tolerance):
            out.append(f"{cur} lowers throughput: {by[cur]:.1f} < {prev} {by[prev]:.1f}")
    return out
