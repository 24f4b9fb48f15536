"""The threads backend: every role of the runtime in this process (Sample Factory's serial mode).

Env managers and rollout servers are threads; the trainer runs on the driver thread.
Emulated envs and accelerators hold wall time without the GIL and torch kernels release
it, so the roles overlap; CPU-bound simulators (MetaWorld rendering) serialise on the GIL,
which is what the ray backend is for. Fastest to start, and what the unit tests build.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time

from asyncvla.config import TrainConfig
from asyncvla.metrics.spans import Span
from asyncvla.policies.registry import build_policy
from asyncvla.runtime.device import DeviceGate
from asyncvla.runtime.env.groups import make_groups
from asyncvla.runtime.env.manager import EnvManager, RolloutClient
from asyncvla.runtime.env.worker import EnvWorker
from asyncvla.runtime.inference.batcher import LocalTransport
from asyncvla.runtime.inference.server import RolloutServer, make_router
from asyncvla.runtime.inference.weight_store import WeightStore
from asyncvla.runtime.queues import TrajectoryQueue
from asyncvla.runtime.learner import data_parallel
from asyncvla.runtime.learner.data_parallel import ThreadReplica, TrainerReplica
from asyncvla.runtime.learner.staleness import Ledger, StalenessController
from asyncvla.runtime.learner.trainer import Trainer
from asyncvla.runtime.loop import Runtime, make_learner
from asyncvla.runtime.plan import ManagerSpec, Plan, check_episodes

LOOPBACK = "127.0.0.1"
"""Where the trainer ranks of one process meet (num_trainers > 1, threads backend)."""


def _join(threads: list[threading.Thread], timeout_s: float) -> None:
    """Joins `threads` within one shared deadline: a stuck one costs timeout_s once, not per thread."""
    deadline = time.monotonic() + timeout_s
    for th in threads:
        th.join(timeout=max(0.0, deadline - time.monotonic()))


def make_manager(cfg: TrainConfig, plan: Plan, spec: ManagerSpec, worker: EnvWorker, client, controller, queue,
                 ledger: Ledger) -> EnvManager:
    """One env manager over `worker`, configured by the plan (both backends build theirs here)."""
    groups = make_groups(spec.num_envs, plan.group_size, spec.index, cfg.env.seed, spec.first_env)
    return EnvManager(spec.index, worker, client, controller, queue, ledger, plan.segment_len, plan.async_env,
                      plan.max_request, groups=groups, chunk=cfg.policy.chunk)


def make_worker(cfg: TrainConfig, spec: ManagerSpec) -> EnvWorker:
    return EnvWorker(dataclasses.replace(cfg.env, num_envs=spec.num_envs), spec.worker, trace=cfg.runtime.trace,
                     first_env=spec.first_env)


def make_server_policy(cfg: TrainConfig, env_spec: dict, state, version: int):
    """A rollout server's policy: the configured architecture holding the trainer's weights `version`."""
    policy = build_policy(cfg.policy, env_spec["action_dim"], env_spec["proprio_dim"], cfg.run.seed)
    policy.load_state_dict(state)
    policy.version = version
    return policy.eval()


def make_trainer(cfg: TrainConfig, env_spec: dict, gate: DeviceGate | None = None) -> Trainer:
    return Trainer(cfg.policy, cfg.algo, env_spec["action_dim"], env_spec["proprio_dim"], seed=cfg.run.seed,
                   trace=cfg.runtime.trace, device=gate)


class ThreadBackend:
    """Starts and stops the manager and server threads of one process."""

    def __init__(self, managers: list[EnvManager], servers: list[RolloutServer], transports: list[LocalTransport]):
        self.managers, self.servers, self.transports = managers, servers, transports
        self._threads: list[threading.Thread] = []
        self._stop_servers = False

    def start(self) -> None:
        for server, tr in zip(self.servers, self.transports):
            self._spawn(server.serve, f"rollout{server.index}", tr, tr.clock, lambda: self._stop_servers)
        for m in self.managers:
            self._spawn(m.run, f"envmgr{m.index}")

    def _spawn(self, target, name: str, *args) -> None:
        th = threading.Thread(target=target, args=args, name=name, daemon=True)
        th.start()
        self._threads.append(th)

    def poll(self, force: bool = False) -> None:
        pass

    def stop_managers(self) -> None:
        for m in self.managers:
            m.stop()
        _join([th for th in self._threads if th.name.startswith("envmgr")], 30.0)

    def close(self) -> None:
        self._stop_servers = True
        for tr in self.transports:
            tr.close()
        _join(self._threads, 10.0)
        for m in self.managers:
            m.worker.close()

    def spans(self) -> list[Span]:
        return [x for s in self.servers for x in s.rec.drain()] + [x for m in self.managers for x in m.worker.drain_spans()]


def build(cfg: TrainConfig, plan: Plan) -> Runtime:
    """Every part of `cfg` as objects of this process (nothing runs until `backend.start`)."""
    rt = cfg.runtime
    workers = [make_worker(cfg, m) for m in plan.managers]
    spec = workers[0].spec()
    check_episodes(plan, cfg, spec["max_episode_steps"])
    # One gate for both roles: colocated on a shared (or emulated) device, their calls never overlap.
    gate = DeviceGate(rt.emulated_accelerator, shared=plan.shared_device)
    trainer = make_trainer(cfg, spec, gate)
    make = functools.partial(make_trainer, cfg, spec)
    data_parallel.start_group(trainer, rt.num_trainers, LOOPBACK, lambda rank, port, backend: ThreadReplica(
        functools.partial(TrainerReplica, make, LOOPBACK, port, rank, rt.num_trainers, backend)))
    ledger = Ledger()
    controller = StalenessController(plan.max_staleness, plan.samples_per_version)
    store = WeightStore(trainer.policy.state_dict(), trainer.version)
    servers = [RolloutServer(make_server_policy(cfg, spec, trainer.policy.state_dict(), trainer.version), plan.max_batch,
                             plan.max_wait_s, weights=store, index=s, trace=rt.trace, device=gate)
               for s in range(plan.num_servers)]
    transports = [LocalTransport() for _ in servers]
    client = RolloutClient(transports, make_router(rt.router, len(servers)))
    queue = TrajectoryQueue(rt.queue_size)
    managers = [make_manager(cfg, plan, m, w, client, controller, queue, ledger) for m, w in zip(plan.managers, workers)]
    learner = make_learner(cfg, plan, trainer, store, controller, ledger)
    return Runtime(plan, managers, servers, queue, controller, ledger, store, learner,
                   ThreadBackend(managers, servers, transports), spec)
