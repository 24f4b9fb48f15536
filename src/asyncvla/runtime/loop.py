"""The one runtime, read top to bottom: build it from the plan, run it, shut it down.

    EnvManagers ──obs──▶ RolloutServers (dynamic batcher; weights from the WeightStore
         ▲                between two batches)
         └── actions + behaviour logprob + value + version ◀──┘
    EnvManagers ──segments──▶ TrajectoryQueue (bounded) ──▶ StreamingTrainer (driver thread)
    StreamingTrainer ──publish(version)──▶ WeightStore; StalenessController reopens admission

Sync (RLinf) and async (RL-VLA³) are this same code: the plan (runtime/plan.py) turns the
three switches into manager loops, batch limits, trainer mode and staleness bound. Where
the roles live is the backend, a parameter (`plan.backend`): `threads` (every role in this
process; envs and accelerators hold wall time without the GIL) or `ray` (env managers and
rollout servers as actors, the trainer in the driver). Both return the same `Runtime`.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from asyncvla.config import TrainConfig
from asyncvla.metrics.spans import Span
from asyncvla.runtime.learner.staleness import Ledger, StalenessController
from asyncvla.runtime.learner.streaming import StreamingTrainer
from asyncvla.runtime.learner.trainer import Trainer
from asyncvla.runtime.inference.weight_store import WeightStore
from asyncvla.runtime.plan import Plan, make_plan


class Backend(Protocol):
    """Where the env managers and rollout servers run, and how the driver reaches them."""

    def start(self) -> None: ...

    def poll(self, force: bool = False) -> None:
        """Refreshes the driver-side counters of remote parts (no-op in one process)."""

    def stop_managers(self) -> None:
        """Stops the env loops; in-flight work is settled and counted."""

    def close(self) -> None:
        """Stops the servers and releases envs and actors."""

    def spans(self) -> list[Span]:
        """Env and rollout spans recorded since the last call."""


@dataclass
class Runtime:
    """Every part of one run, whatever the backend."""

    plan: Plan
    managers: list[Any]
    """EnvManagers (or driver-side views of manager actors): num_envs, env_busy_s, error, pop_episodes()."""
    servers: list[Any]
    """RolloutServers (or views): busy_s, num_samples, num_batches."""
    trajectories: Any
    controller: StalenessController
    ledger: Ledger
    store: WeightStore
    learner: StreamingTrainer
    backend: Backend
    spec: dict = field(default_factory=dict)
    """action_dim, proprio_dim, max_episode_steps, ... of the envs."""

    @property
    def trainer(self) -> Trainer:
        return self.learner.trainer


BACKENDS = {"threads": "asyncvla.runtime.backends.threads", "ray": "asyncvla.runtime.backends.ray"}
"""Backend name -> module whose `build(cfg, plan) -> Runtime` lays the roles out (imported on use)."""


def build_runtime(cfg: TrainConfig, plan: Plan | None = None) -> Runtime:
    """Creates every queue, server, manager and the trainer of `cfg` on the plan's backend (nothing runs yet).

    The ray backend needs Ray initialised (`backends.ray.init_ray`).
    """
    plan = plan or make_plan(cfg)
    return importlib.import_module(BACKENDS[plan.backend]).build(cfg, plan)


def make_learner(cfg: TrainConfig, plan: Plan, trainer: Trainer, store: WeightStore, controller: StalenessController,
                 ledger: Ledger) -> StreamingTrainer:
    return StreamingTrainer(trainer, plan.trainer_mode, plan.samples_per_update, store, controller, ledger,
                            envs_per_worker=plan.envs_per_worker, group_size=plan.group_size)


# -- counters, windows and metrics ----------------------------------------------------------------

@dataclass
class Window:
    """Counters at one instant; two of them make a throughput window."""

    t: float
    env_steps: int
    samples: int
    env_busy_s: float
    infer_busy_s: float
    train_s: float
    publish_s: float

    @staticmethod
    def take(run: Runtime) -> "Window":
        run.backend.poll(force=True)
        return Window(time.time(), run.ledger.produced_env_steps, run.ledger.trained_samples,
                      sum(m.env_busy_s for m in run.managers), sum(s.busy_s for s in run.servers),
                      run.learner.train_s, run.learner.publish_s)


def window_metrics(run: Runtime, w0: Window, w1: Window | None = None) -> dict:
    """Throughput, role times and utilization between `w0` and `w1` (default: now)."""
    w1 = w1 or Window.take(run)
    dt = max(w1.t - w0.t, 1e-9)
    env, infer = w1.env_busy_s - w0.env_busy_s, w1.infer_busy_s - w0.infer_busy_s
    train, publish = w1.train_s - w0.train_s, w1.publish_s - w0.publish_s
    n_env, n_srv = run.plan.num_envs, len(run.servers)
    return {
        "perf/env_steps_per_s": (w1.env_steps - w0.env_steps) / dt,
        "perf/trained_samples_per_s": (w1.samples - w0.samples) / dt,
        "time/update_wall_s": dt,
        # Busy seconds of each role, summed over its workers (envs, servers, the trainer).
        "time/env_step_s": env, "time/infer_s": infer, "time/train_s": train, "time/weight_sync_s": publish,
        "time/idle_s": max(dt * (n_env + n_srv + 1) - env - infer - train - publish, 0.0),
        "util/env": env / (dt * n_env),
        "util/rollout": infer / (dt * n_srv),
        "util/trainer": (train + publish) / dt,
    }


def update_metrics(run: Runtime, stats: dict, w_prev: Window, w_now: Window) -> dict:
    """One metrics record: the update's losses, its window, lag, queue, ledger and episodes."""
    m = dict(stats)
    m.update(window_metrics(run, w_prev, w_now))
    m.update(run.controller.metrics())
    m.update(run.ledger.metrics())
    m.update({"queue/depth": len(run.trajectories), "queue/samples": run.trajectories.num_samples,
              "queue/put_wait_s": run.trajectories.put_wait_s,
              "rollout/mean_batch": sum(s.num_samples for s in run.servers) / max(sum(s.num_batches for s in run.servers), 1),
              "rollout/server_restarts": sum(s.restarts for s in run.servers)})
    episodes = [e for mgr in run.managers for e in mgr.pop_episodes()]
    m["rollout/episodes"] = len(episodes)
    for key, field_ in (("rollout/success", "success"), ("rollout/return", "return"), ("rollout/episode_len", "length")):
        m[key] = float(np.mean([e[field_] for e in episodes])) if episodes else float("nan")
    return m


# -- running ------------------------------------------------------------------------------------

def budget_reached(total_env_steps: int | None, total_updates: int | None, env_steps: int, updates: int) -> bool:
    """Whether a run at `env_steps` and `updates` has spent its budget (null: no limit; first wins)."""
    return ((total_updates is not None and updates >= total_updates)
            or (total_env_steps is not None and env_steps >= total_env_steps))


def shutdown(run: Runtime) -> None:
    """Stops admission, managers, then servers; counts everything left in flight as dropped."""
    run.controller.close()
    run.trajectories.close()  # producers blocked on a full queue give up (their segment is counted)
    run.backend.stop_managers()
    run.learner.drop_buffered("shutdown")
    for seg in run.trajectories.drain():
        run.ledger.dropped("shutdown", len(seg), seg.env_steps)
    run.learner.trainer.close_replicas()
    run.backend.close()


class Stalled(RuntimeError):
    """Nothing moved for run.stall_timeout_s: no trajectory, no env step."""


def run(rt: Runtime, total_env_steps: int | None = None, total_updates: int | None = None,
        max_seconds: float | None = None, on_update: Callable[[int, dict], None] | None = None,
        stall_s: float | None = None) -> dict:
    """Runs until a budget is reached (first wins), shuts down, returns the window summary.

    The throughput window starts after the first update (start-up and warm-up excluded).
    stall_s: raise `Stalled` when no segment arrives and no env step is produced for that long.
    """
    rt.backend.start()
    t_start = time.time()
    first, prev = None, Window.take(rt)  # the first update's record covers the start-up
    updates, stop = 0, False
    moved_at, produced = time.monotonic(), rt.ledger.produced_env_steps

    def done(ahead: int = 0) -> bool:
        return (budget_reached(total_env_steps, total_updates, rt.ledger.produced_env_steps, updates + ahead)
                or (max_seconds is not None and time.time() - t_start >= max_seconds))

    def last_update() -> bool:
        # Asked before an update reopens admission, while the env steps are what it covers (sync:
        # exactly): the update that reaches a budget still trains, and the run stops after it.
        nonlocal stop
        rt.backend.poll(force=True)  # remote env-step counts must be current
        stop = done(ahead=1)
        return stop

    rt.learner.is_last = last_update
    try:
        while not stop and not (max_seconds is not None and time.time() - t_start >= max_seconds):
            rt.backend.poll()
            for m in rt.managers:
                if m.error is not None:
                    raise RuntimeError(f"env manager {m.index} failed: {m.error!r}") from m.error
            seg = rt.trajectories.get(timeout_s=0.2)
            if seg is None:
                if rt.ledger.produced_env_steps != produced:
                    moved_at, produced = time.monotonic(), rt.ledger.produced_env_steps
                elif stall_s is not None and time.monotonic() - moved_at > stall_s:
                    raise Stalled(f"no trajectory and no env step for {stall_s:g} s (run.stall_timeout_s): an env that "
                                  f"hangs under env.executor=inline (no per-env watchdog; env.executor=thread with "
                                  f"env.step_timeout_s replaces hung envs), or a deadlock")
                continue
            moved_at = time.monotonic()
            for stats in rt.learner.add(seg):
                updates += 1
                now = Window.take(rt)
                if on_update is not None:
                    on_update(updates, update_metrics(rt, stats, prev, now))
                prev = now
                first = first or now
        summary = window_metrics(rt, first) if first is not None and updates > 1 else {}
    finally:
        shutdown(rt)
    summary.update({"train/updates": updates, "train/version": rt.trainer.version, "time/wall_s": time.time() - t_start})
    summary.update(rt.controller.metrics())
    summary.update(rt.ledger.metrics())
    return summary
