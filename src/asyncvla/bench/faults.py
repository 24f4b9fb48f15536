"""`asyncvla bench faults`: a workload with faults injected beside the same workload without.

Both rows run full async on the ray backend (env managers and the rollout server in their own
processes, so there is a process to kill), in one Ray session:
- `fault-free`: the workload as it is;
- `faults`: every env crashes with probability `crash_prob` per step and hangs for good with
  `hang_prob` per step (a hang that never ends by itself: only the watchdog, env.step_timeout_s,
  gets the env back), and the rollout server's process is killed (SIGKILL) once, `kill_after_s`
  into the run; Ray restarts it with the latest weights and its pending requests run again.

What must hold (`checks`): the faulty run completes its window; every env step produced is
trained or dropped with a reason (the ledger balances: 0 steps lost or counted twice); the
server came back exactly once; throughput is at least 80% of the fault-free row's.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

from asyncvla.bench.report import Column
from asyncvla.config import ConfigError, TrainConfig

FAULTS_COLUMNS = (
    Column("mode", "row", "{}"),
    Column("env_steps_per_s", "env steps/s"),
    Column("ratio_to_sync", "× fault-free", "{:.2f}"),
    Column("updates", "updates", "{}"),
    Column("accounting.produced", "produced", "{}"),
    Column("accounting.trained", "trained", "{}"),
    Column("dropped_total", "dropped", "{}"),
    Column("accounting.balance", "unaccounted", "{}"),
    Column("env_errors", "env errors", "{}"),
    Column("server_restarts", "server restarts", "{}"),
)
MIN_RATIO = 0.8
"""Throughput under faults, as a fraction of the fault-free row's, that the bench requires."""


def faults_config(cfg: TrainConfig, crash_prob: float, hang_prob: float, step_timeout_s: float | str) -> TrainConfig:
    """`cfg` with injected crashes and unending hangs, and the watchdog that replaces hung envs."""
    wrappers = dataclasses.replace(cfg.env.wrappers, fault_prob=crash_prob, fault_kind="crash", hang_prob=hang_prob,
                                   fault_hang_s=3600.0)
    env = dataclasses.replace(cfg.env, wrappers=wrappers, executor="thread", step_timeout_s=step_timeout_s)
    return dataclasses.replace(cfg, env=env)


def kill_server_later(rt, after_s: float, index: int = 0) -> threading.Timer:
    """SIGKILLs rollout server `index`'s process `after_s` from now (the local Ray's node)."""
    import ray

    def kill() -> None:
        pid = ray.get(rt.servers[index].actor.stats.remote(), timeout=60)["pid"]
        os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(after_s, kill)
    timer.daemon = True
    timer.start()
    return timer


def _row(name: str, cfg: TrainConfig, seconds: float, kill_after_s: float | None, rss: bool = False) -> dict:
    from asyncvla.bench.memory import RssSampler, rss_table
    from asyncvla.bench.throughput import result_row
    from asyncvla.runtime import loop

    rt = loop.build_runtime(cfg)
    timer = kill_server_later(rt, kill_after_s) if kill_after_s is not None else None
    sampler = RssSampler(max(5.0, seconds / 60)) if rss else None
    try:
        summary = loop.run(rt, max_seconds=seconds)
    finally:
        if timer is not None:
            timer.cancel()
        samples = sampler.stop() if sampler is not None else []
    row = result_row(name, cfg, summary, rt)
    if rss:  # warm-up: the first fifth, or past the server's restart when that comes later
        row["rss"] = rss_table(samples, max(seconds / 5, (kill_after_s or 0.0) + 30.0))
    led = rt.ledger
    row["accounting"]["balance"] = led.balance
    row["accounting"]["dropped_samples"] = dict(led.dropped_samples)
    row["dropped_total"] = sum(led.dropped_env_steps.values())
    row["env_errors"] = led.dropped_samples.get("env_error", 0)
    row["server_restarts"] = sum(s.restarts for s in rt.servers)
    return row


def faults_bench(workload: str = "emulated-balanced", seconds: float = 60.0, crash_prob: float = 0.01,
                 hang_prob: float = 0.0025, step_timeout_s: float | str = 0.5, kill_after_s: float | None = None,
                 fault_free: bool = True, decompose: bool = False, max_staleness: int | None = None) -> dict:
    """The fault-free and the faulty row, their ratio and the checks (see the module docstring).

    fault_free=False runs the faulty row alone (a soak: `--seconds 1800 --no-fault-free`); the
    faulty row always records every process's RSS (`rss`: flat within 5% after warm-up?).
    decompose adds one row per fault kind (the server kill alone, the crashes alone, the hangs
    alone), each against the same fault-free row: where the throughput goes.
    max_staleness: the async runtime's bound for every row (None: the workload's).
    """
    from asyncvla.bench.report import finalize_runs
    from asyncvla.bench.throughput import mode_config, ray_session
    from asyncvla.bench.workloads import build_workload, get_spec

    if get_spec(workload).kind != "emulated":
        raise ConfigError(f"workload={workload!r} is invalid: allowed: emulated workloads (their envs can hang and be replaced cheaply)")
    if seconds <= 0:
        raise ConfigError(f"seconds={seconds!r} is invalid: must be > 0")
    kill_after_s = seconds / 3 if kill_after_s is None else kill_after_s
    w = build_workload(workload)
    base = mode_config(w, "async")
    # Ray: the rollout server is a process that can die; env managers get a share of a CPU each.
    stale = base.runtime.max_staleness if max_staleness is None else max_staleness
    base = dataclasses.replace(base, runtime=dataclasses.replace(base.runtime, local=False, env_cpus=0.25, rollout_cpus=0.25,
                                                                 max_staleness=stale))
    faulty = faults_config(base, crash_prob, hang_prob, step_timeout_s)
    with ray_session(base):
        runs = [_row("fault-free", base, seconds, None)] if fault_free else []
        if decompose:
            runs += [_row("server kill only", base, seconds, kill_after_s),
                     _row("crashes only", faults_config(base, crash_prob, 0.0, step_timeout_s), seconds, None),
                     _row("hangs only", faults_config(base, 0.0, hang_prob, step_timeout_s), seconds, None)]
        runs.append(_row("faults", faulty, seconds, kill_after_s, rss=True))
    finalize_runs(runs, baseline="fault-free")
    hurt = runs[-1]
    checks = {
        "completed": hurt["updates"] > 0,
        "ledger balances (0 env steps lost or counted twice)": all(r["accounting"]["balance"] == 0 for r in runs),
        "server restarted once": hurt["server_restarts"] == 1,
    }
    if fault_free:
        checks[f"throughput >= {MIN_RATIO:.0%} of fault-free"] = (hurt["ratio_to_sync"] or 0.0) >= MIN_RATIO
    if hurt["rss"]:
        checks["RSS of every process flat within 5% after warm-up"] = all(r["flat"] for r in hurt["rss"])
    return {"bench": "faults", "workload": workload, "label": w.label, "seconds": seconds,
            "max_staleness": faulty.runtime.max_staleness,
            "faults": {"crash_prob_per_step": crash_prob, "hang_prob_per_step": hang_prob, "hang_s": "never ends (3600)",
                       "step_timeout_s": step_timeout_s, "server_killed_after_s": kill_after_s},
            "runs": runs, "checks": checks, "ok": all(checks.values()),
            "notes": [f"{'pass' if ok else 'FAIL'}: {name}" for name, ok in checks.items()]
            + [f"dropped by reason (env steps): {hurt['accounting']['dropped']}"]
            + [f"RSS {r['group']}: {r['after_warmup_mib']} MiB after warm-up, {r['end_mib']} at the end "
               f"({r['change']:+.1%}), peak {r['peak_mib']}" for r in hurt["rss"]]}
