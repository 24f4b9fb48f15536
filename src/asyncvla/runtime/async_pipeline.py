"""The fully asynchronous pipeline (RL-VLA³), wired in one place and read top to bottom.

    EnvManager threads ──obs──▶ RolloutServer threads (dynamic batching, weights pulled
         ▲                      from the WeightStore between batches)
         └──── actions + behaviour logprob + value + version ◀──┘
    EnvManagers ──segments──▶ TrajectoryQueue (bounded) ──▶ StreamingTrainer (this thread)
    StreamingTrainer ──publish(version)──▶ WeightStore; StalenessController reopens admission

Each level of asynchrony is a switch of `runtime`, so the ladder
sync → +async_env → +streaming_rollout → +decoupled_actor runs on the same code:
- async_env: managers serve each env on its own (ready-first) instead of lockstep;
- streaming_rollout: servers batch dynamically (max_batch / max_wait_ms) instead of one
  fixed batch per request;
- decoupled_actor: the trainer steps as data streams in (trainer_mode) with
  max_staleness; off = collect samples_per_update, run the PPO epochs, publish, with
  max_staleness 0 so rollouts pause meanwhile (the synchronous loop).

Workers are threads of this process (the `local` runtime): environments and emulated
accelerators hold wall time without the GIL, torch kernels release it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from asyncvla.config import TrainConfig
from asyncvla.metrics.spans import load_chrome_trace, write_chrome_trace
from asyncvla.metrics.writer import MetricsWriter
from asyncvla.policies.base import Policy
from asyncvla.runtime.backends.ray import RayParts, build_ray_parts
from asyncvla.runtime.inference.batcher import LocalTransport
from asyncvla.runtime.env.manager import EnvManager, RolloutClient
from asyncvla.runtime.env.worker import EnvWorker
from asyncvla.runtime.env.groups import make_groups
from asyncvla.runtime.pipeline import RunState, evaluate, load_checkpoint, prepare_run_dir, save_checkpoint, save_on_crash, summarize
from asyncvla.runtime.placement import LocalHandle, Workers, local_get
from asyncvla.runtime.queues import TrajectoryQueue
from asyncvla.runtime.rollout import build_policy
from asyncvla.runtime.inference.server import RolloutServer, make_router
from asyncvla.runtime.learner.staleness import Ledger, StalenessController
from asyncvla.runtime.learner.streaming import StreamingTrainer
from asyncvla.runtime.learner.trainer import Trainer
from asyncvla.runtime.inference.weight_store import WeightStore


@dataclass
class AsyncRuntime:
    """Every component of one async run and the threads that drive them."""

    cfg: TrainConfig
    managers: list[EnvManager]
    servers: list[RolloutServer]
    transports: list[LocalTransport]
    trajectories: TrajectoryQueue
    controller: StalenessController
    ledger: Ledger
    store: WeightStore
    learner: StreamingTrainer
    spec: dict = field(default_factory=dict)
    """action_dim, proprio_dim, ... of env worker 0."""
    remote: RayParts | None = None
    """The actors when managers and servers run on Ray (then managers/servers are driver-side views)."""
    threads: list[threading.Thread] = field(default_factory=list)
    _stop_servers: bool = False

    @property
    def trainer(self) -> Trainer:
        return self.learner.trainer

    @property
    def num_envs(self) -> int:
        return sum(m.num_envs for m in self.managers)

    def poll(self, force: bool = False) -> None:
        """Refreshes the counters of remote managers and servers (no-op for threads)."""
        if self.remote is not None:
            self.remote.poll(force)

    def server_spans(self) -> list:
        if self.remote is not None:
            return [x for srv in self.servers for x in srv.drain_spans()]
        return [x for srv in self.servers for x in srv.rec.drain()]


def build_async(cfg: TrainConfig, policy_fn: Callable[[int, int], Policy] | None = None,
                trainer_cls: type[Trainer] = Trainer, remote: bool = False) -> AsyncRuntime:
    """Creates every queue, server, manager and the trainer for `cfg` (nothing runs yet).

    policy_fn(action_dim, proprio_dim) builds the inference policies (default: the trainer's
    architecture); trainer_cls lets a benchmark wrap the update (emulated accelerator).
    remote: env managers and rollout servers as Ray actors (Ray must be initialised);
    otherwise threads of this process.
    """
    rt = cfg.runtime
    sizes = rt.env_managers or (cfg.env.num_envs,)
    env_cfgs = [(dataclasses.replace(cfg.env, num_envs=size), w * len(sizes) + j, w * cfg.env.num_envs + sum(sizes[:j]))
                for w in range(rt.num_env_workers) for j, size in enumerate(sizes)]
    if remote:
        probe = EnvWorker(dataclasses.replace(cfg.env, num_envs=1), 0, trace=False)
        spec, workers = probe.spec(), []
        probe.close()
    else:
        workers = [EnvWorker(env_cfg, index, trace=False, first_env=first) for env_cfg, index, first in env_cfgs]
        spec = workers[0].spec()
    a, p = spec["action_dim"], spec["proprio_dim"]
    trainer = trainer_cls(cfg.policy, cfg.algo, a, p, seed=cfg.run.seed, trace=rt.trace)
    # decoupled_actor off = the synchronous loop: full batch, all epochs, rollouts paused meanwhile.
    mode = rt.trainer_mode if rt.decoupled_actor else "epoch"
    eta = rt.max_staleness if rt.decoupled_actor else 0
    global_batch = cfg.samples_per_update
    per_version = cfg.algo.minibatch_size if mode == "streaming" else global_batch
    max_batch, max_wait_s = (rt.max_batch, rt.max_wait_ms / 1000) if rt.streaming_rollout else (1, 0.0)
    ledger = Ledger()
    if remote:
        policy_fn = policy_fn or functools.partial(_default_policy, cfg.policy, cfg.run.seed)
        parts, controller, store = build_ray_parts(cfg, env_cfgs, spec, policy_fn, trainer.policy.state_dict(), trainer.version,
                                                   per_version, eta, ledger, max_batch, max_wait_s)
        learner = StreamingTrainer(trainer, mode, global_batch, store, controller, ledger)
        return AsyncRuntime(cfg, parts.managers, parts.servers, [], parts.queue, controller, ledger, store, learner, spec, parts)
    controller = StalenessController(eta, per_version)
    store = WeightStore(trainer.policy.state_dict(), trainer.version)
    learner = StreamingTrainer(trainer, mode, global_batch, store, controller, ledger)
    servers = []
    for s in range(rt.num_rollout_servers):
        policy = policy_fn(a, p) if policy_fn else build_policy(cfg.policy, a, p, cfg.run.seed)
        policy.load_state_dict(trainer.policy.state_dict())
        policy.version = trainer.version
        servers.append(RolloutServer(policy.eval(), max_batch, max_wait_s, weights=store, index=s, trace=rt.trace))
    transports = [LocalTransport() for _ in servers]
    client = RolloutClient(transports, make_router(rt.router, len(servers)))
    queue = TrajectoryQueue(rt.queue_size)
    segment_len = rt.segment_len or rt.rollout_steps
    # A request is at most one server batch (1 without dynamic batching: each env on its own).
    max_request = max_batch if rt.streaming_rollout else 1
    group_size = cfg.algo.group_size if cfg.algo.name == "grpo" else 0
    managers = [EnvManager(m, w, client, controller, queue, ledger, segment_len, rt.async_env, max_request,
                           groups=make_groups(w.vec.num_envs, group_size, m, cfg.env.seed, w.first_env), chunk=cfg.policy.chunk)
                for m, w in enumerate(workers)]
    return AsyncRuntime(cfg, managers, servers, transports, queue, controller, ledger, store, learner, spec)


def _default_policy(policy_cfg, seed: int, a: int, p: int) -> Policy:
    return build_policy(policy_cfg, a, p, seed)


# -- running ------------------------------------------------------------------------------------

def start(run: AsyncRuntime) -> None:
    if run.remote is not None:
        run.remote.start()
        return
    for server, tr in zip(run.servers, run.transports):
        th = threading.Thread(target=server.serve, args=(tr, tr.clock, lambda: run._stop_servers),
                              name=f"rollout{server.index}", daemon=True)
        th.start()
        run.threads.append(th)
    for m in run.managers:
        th = threading.Thread(target=m.run, name=f"envmgr{m.index}", daemon=True)
        th.start()
        run.threads.append(th)


def shutdown(run: AsyncRuntime) -> None:
    """Stops admission, managers, then servers; counts everything left in flight as dropped."""
    run.controller.close()
    run.trajectories.close()  # producers blocked on a full queue give up (their segment is counted)
    if run.remote is not None:
        run.remote.stop_managers()
    else:
        _stop_threads(run)
    run.learner.drop_buffered("shutdown")
    for seg in run.trajectories.drain():
        run.ledger.dropped("shutdown", len(seg), sum(st.num_steps for st in seg.steps))
    if run.remote is not None:
        run.remote.kill()
    else:
        for m in run.managers:
            m.worker.close()


def _stop_threads(run: AsyncRuntime) -> None:
    for m in run.managers:
        m.stop()
    for th in run.threads:
        if th.name.startswith("envmgr"):
            th.join(timeout=30)
    run._stop_servers = True
    for tr in run.transports:
        tr.close()
    for th in run.threads:
        th.join(timeout=10)


@dataclass
class Window:
    """Counters at the start of the throughput window (after the first update: warm-up excluded)."""

    t: float
    env_steps: int
    samples: int
    env_busy_s: float
    infer_busy_s: float
    train_s: float

    @staticmethod
    def take(run: AsyncRuntime) -> "Window":
        run.poll(force=True)
        return Window(time.time(), run.ledger.produced_env_steps, run.ledger.trained_samples,
                      sum(m.env_busy_s for m in run.managers), sum(s.busy_s for s in run.servers), run.learner.train_s)


def window_metrics(run: AsyncRuntime, w0: Window) -> dict:
    """Throughput and utilization between `w0` and now."""
    w1 = Window.take(run)
    dt = max(w1.t - w0.t, 1e-9)
    return {
        "perf/env_steps_per_s": (w1.env_steps - w0.env_steps) / dt,
        "perf/trained_samples_per_s": (w1.samples - w0.samples) / dt,
        "util/env": (w1.env_busy_s - w0.env_busy_s) / (dt * run.num_envs),
        "util/rollout": (w1.infer_busy_s - w0.infer_busy_s) / (dt * len(run.servers)),
        "util/trainer": (w1.train_s - w0.train_s) / dt,
        "time/window_s": dt,
    }


def update_metrics(run: AsyncRuntime, stats: dict, w_prev: Window) -> dict:
    m = dict(stats)
    m.update(window_metrics(run, w_prev))
    m.update(run.controller.metrics())
    m.update(run.ledger.metrics())
    m.update({"queue/depth": len(run.trajectories), "queue/samples": run.trajectories.num_samples,
              "queue/put_wait_s": run.trajectories.put_wait_s,
              "rollout/mean_batch": sum(s.num_samples for s in run.servers) / max(sum(s.num_batches for s in run.servers), 1)})
    episodes = [e for mgr in run.managers for e in mgr.pop_episodes()]
    m["rollout/episodes"] = len(episodes)
    if episodes:
        m["rollout/success"] = float(np.mean([e["success"] for e in episodes]))
        m["rollout/return"] = float(np.mean([e["return"] for e in episodes]))
    return m


def run_async(run: AsyncRuntime, total_env_steps: int | None = None, total_updates: int | None = None,
              max_seconds: float | None = None, on_update: Callable[[int, dict], None] | None = None) -> dict:
    """Runs until a budget is reached (first wins), shuts down, returns the window summary."""
    start(run)
    t_start = time.time()
    first = prev = None
    updates = 0

    def done() -> bool:
        return ((total_updates is not None and updates >= total_updates)
                or (total_env_steps is not None and run.ledger.produced_env_steps >= total_env_steps)
                or (max_seconds is not None and time.time() - t_start >= max_seconds))

    try:
        while not done():
            run.poll()
            for m in run.managers:
                if m.error is not None:
                    raise RuntimeError(f"env manager {m.index} failed: {m.error!r}") from m.error
            seg = run.trajectories.get(timeout_s=0.2)
            if seg is None:
                continue
            for stats in run.learner.add(seg):
                updates += 1
                now = Window.take(run)
                if on_update is not None:
                    on_update(updates, update_metrics(run, stats, prev or now))
                prev = now
                first = first or now  # the window starts after the first update (warm-up excluded)
        summary = window_metrics(run, first) if first is not None and updates > 1 else {}
    finally:
        shutdown(run)
    summary.update({"train/updates": updates, "train/version": run.trainer.version, "time/wall_s": time.time() - t_start})
    summary.update(run.controller.metrics())
    summary.update(run.ledger.metrics())
    return summary


# -- the `asyncvla train --mode async` entry point -------------------------------------------------
# The driver reuses the sync pipeline's run directory, evaluation, checkpoints, RunState and
# summary, so the two modes write the same files and print the same summary line.

ASYNC_STATE = "async_state.json"
WINDOW_NOTE = ("updates 2..N of each (re)start (env steps produced outside evaluation and checkpoints, "
               "over the wall time outside them)")


def async_state(run: AsyncRuntime) -> dict:
    """What a checkpoint adds for the async runtime: staleness admission and the ledger."""
    return {"staleness": run.controller.state_dict(), "ledger": run.ledger.state_dict()}


def restore_async_state(run: AsyncRuntime, ckpt: Path) -> None:
    """Restores staleness, ledger and the trainer's consumed count; inference restarts from the trainer's weights.

    The staleness cap is consumed + (max_staleness + 1) * samples_per_version: the learner's
    consumed count must come back with the controller's, or the cap would shrink below what
    is admitted and admission would never reopen.
    """
    path = Path(ckpt) / ASYNC_STATE
    if path.exists():
        state = json.loads(path.read_text())
        run.controller.load_state_dict(state["staleness"])
        run.ledger.load_state_dict(state["ledger"])
        run.learner.consumed = run.controller.consumed
    run.store.publish(run.trainer.policy.state_dict(), run.trainer.version)


def trainer_workers(run: AsyncRuntime) -> Workers:
    """The trainer as a `Workers` handle, for the sync pipeline's checkpoint and evaluation helpers."""
    return Workers(envs=[], rollouts=[], trainer=LocalHandle(run.trainer), get=local_get, colocated=False)


@dataclass
class _Driver:
    """Per-update book-keeping of `train_async`, run on the driver thread between two updates."""

    run: AsyncRuntime
    cfg: TrainConfig
    run_dir: Path
    state: RunState
    writer: MetricsWriter
    progress: Callable | None
    eval_policy: Policy
    local_updates: int = 0
    mark: tuple[float, int] | None = None
    """(time, produced env steps) when the previous update's book-keeping ended."""

    def evaluate(self) -> dict:
        return evaluate(trainer_workers(self.run), self.cfg, self.run_dir, self.state, self.eval_policy, pull=True)

    def checkpoint(self, tag: str) -> None:
        save_checkpoint(trainer_workers(self.run), self.run_dir, self.state, tag, {ASYNC_STATE: async_state(self.run)})

    def done(self) -> bool:
        r, st = self.cfg.run, self.state
        return (r.total_env_steps is not None and st.env_steps >= r.total_env_steps) or \
               (r.total_updates is not None and st.update >= r.total_updates)

    def __call__(self, _: int, m: dict) -> None:
        st, led, now = self.state, self.run.ledger, time.time()
        self.local_updates += 1
        st.update += 1
        st.version, st.env_steps, st.samples = self.run.trainer.version, led.produced_env_steps, led.trained_samples
        # The first update of a (re)start carries start-up; it counts only when it is the last.
        if self.mark is not None and (self.local_updates > 1 or self.done()):
            st.window_s += now - self.mark[0]
            st.window_env_steps += led.produced_env_steps - self.mark[1]
        m["perf/env_steps"] = st.env_steps
        r = self.cfg.run
        if r.eval_every and st.update % r.eval_every == 0 and not self.done():
            m.update(self.evaluate())
            if m.get("eval/success", -1) > st.best_success:
                st.best_success = m["eval/success"]
                self.checkpoint("best")
        st.wall_s = self.writer.wall_s
        self.writer.write(st.update, m)
        if r.checkpoint_every and st.update % r.checkpoint_every == 0:
            self.checkpoint(f"update_{st.update:06d}")
            self.checkpoint("last")
        if self.progress is not None:
            self.progress(st.update, m)
        self.mark = (time.time(), led.produced_env_steps)  # evaluation and checkpoints stay out of the window

    def finish(self) -> None:
        """After shutdown (the ledger balances): final evaluation, best and last checkpoints."""
        st = self.state
        st.version, st.env_steps, st.samples = self.run.trainer.version, self.run.ledger.produced_env_steps, \
            self.run.ledger.trained_samples
        if self.cfg.run.eval_episodes:
            m = self.evaluate()
            st.success_after = m["eval/success"]
            if st.success_after > st.best_success:
                st.best_success = st.success_after
                self.checkpoint("best")
            self.writer.write(st.update, m)
        st.wall_s = self.writer.wall_s
        self.checkpoint("last")


def _start_ray(cfg: TrainConfig) -> bool:
    """Starts the embedded Ray (or joins runtime.ray_address) unless local; True if this run started it."""
    if cfg.runtime.local:
        return False
    import ray

    from asyncvla.runtime.backends.ray import required_cpus
    from asyncvla.runtime.placement import init_ray

    if ray.is_initialized():
        return False
    init_ray(cfg.runtime.ray_address, cfg, min_cpus=required_cpus(cfg))
    return True


def train_async(cfg: TrainConfig, progress: Callable | None = None) -> dict:
    """Runs (or resumes) an async training run; returns the same summary as the sync `train`.

    Evaluation before training, every `run.eval_every` updates and at the end; checkpoints
    every `run.checkpoint_every` updates, `last` and `best`, each with the staleness and
    ledger state; `run.resume` continues from checkpoints/last.
    """
    from asyncvla.runtime.warm_start import ensure_warm_start

    cfg.policy.init = ensure_warm_start(cfg) or cfg.policy.init
    run_dir = prepare_run_dir(cfg)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    trace_path = run_dir / "trace.json"
    trace = load_chrome_trace(trace_path) if cfg.run.resume and trace_path.exists() else []
    state, run, writer = RunState(), None, None
    own_ray = _start_ray(cfg)
    try:
        run = build_async(cfg, remote=not cfg.runtime.local)
        ckpt = run_dir / "checkpoints" / "last"
        if cfg.run.resume and ckpt.exists():
            state = load_checkpoint(trainer_workers(run), run_dir)
            restore_async_state(run, ckpt)
        writer = MetricsWriter(run_dir, wall_offset_s=state.wall_s)
        eval_policy = build_policy(cfg.policy, run.spec["action_dim"], run.spec["proprio_dim"], cfg.run.seed)
        driver = _Driver(run, cfg, run_dir, state, writer, progress, eval_policy)
        if state.success_before is None and cfg.run.eval_episodes:
            m = driver.evaluate()
            state.success_before = m["eval/success"]
            writer.write(state.update, m)
        if not driver.done():
            left = None if cfg.run.total_updates is None else cfg.run.total_updates - state.update
            driver.mark = (time.time(), run.ledger.produced_env_steps)
            run_async(run, cfg.run.total_env_steps, left, on_update=driver)
        driver.finish()
    except BaseException:
        save_on_crash(trainer_workers(run) if run else None, run_dir, state, lambda: {ASYNC_STATE: async_state(run)})
        raise
    finally:
        if writer is not None:
            writer.close()
        if run is not None and cfg.runtime.trace:
            trace += run.trainer.drain_spans() + run.server_spans()
            write_chrome_trace(trace_path, trace)
        if own_ray:
            import ray

            ray.shutdown()
    out = summarize(state, run_dir)
    out["throughput_window"] = WINDOW_NOTE
    return out
