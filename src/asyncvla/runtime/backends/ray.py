"""The ray backend: env managers and rollout servers as Ray actors, the trainer in the driver.

    EnvManagerActor (own process: simulators, per-env loop, segment assembly)
        ──obs──▶ RolloutServerActor (own process: dynamic batcher + policy)
        ──segments──▶ Hub actor (TrajectoryQueue + admission side of the StalenessController)
    driver: StreamingTrainer pulls segments from the Hub, publishes weights to every server

Separate processes matter on a small CPU box: a CPU-bound simulator (MetaWorld rendering)
holds the GIL, so env stepping, inference and training in threads of one process serialise.
The actors run the same plain classes as the threads backend, built by the same functions
(`threads.make_worker`, `threads.make_manager`); `ray_proxies` has the stand-ins they talk to.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from asyncvla.config import ConfigError, TrainConfig
from asyncvla.metrics.spans import Span
from asyncvla.runtime.backends.ray_proxies import (Hub, HubAdmission, HubQueue, MirroredController, RayServerTransport,
                                                   RemoteManager, RemoteQueue, RemoteServer, ray_get)
from asyncvla.runtime.backends import worker_logs
from asyncvla.runtime.backends.threads import make_manager, make_server_policy, make_trainer, make_worker
from asyncvla.runtime.device import DeviceGate
from asyncvla.runtime.env.manager import RolloutClient
from asyncvla.runtime.env.worker import EnvWorker
from asyncvla.runtime.inference.server import make_ray_rollout_server, make_router
from asyncvla.runtime.learner import data_parallel
from asyncvla.runtime.learner.data_parallel import RayReplica, TrainerReplica
from asyncvla.runtime.inference.weight_store import WeightStore
from asyncvla.runtime.learner.staleness import Ledger
from asyncvla.runtime.loop import Runtime, make_learner
from asyncvla.runtime.plan import ManagerSpec, Plan, check_episodes

POLL_S = 0.5
"""Driver-side views refresh their counters at most this often (every update refreshes them
too): each refresh is a round trip to every actor, which on a CPU-only box competes with
the envs for the same cores; errors still surface within half a second."""


class EnvManagerActor:
    """One env manager (its envs and its loop) in its own process."""

    def __init__(self, cfg: TrainConfig, plan: Plan, spec: ManagerSpec, servers: list[Any], hub: Any):
        worker_logs.name(f"env-manager-{spec.index}")
        self.worker = make_worker(cfg, spec)
        client = RolloutClient([RayServerTransport(s) for s in servers], make_router(cfg.runtime.router, len(servers)))
        self.ledger = Ledger()
        self.manager = make_manager(cfg, plan, spec, self.worker, client, HubAdmission(hub), HubQueue(hub), self.ledger)
        self._thread: threading.Thread | None = None

    def spec(self) -> dict:
        return self.worker.spec()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.manager.run, name=f"envmgr{self.manager.index}", daemon=True)
        self._thread.start()

    def stats(self) -> dict:
        m = self.manager
        return {"env_busy_s": m.env_busy_s, "ledger": self.ledger.state_dict(), "episodes": m.pop_episodes(),
                "error": repr(m.error) if m.error is not None else None}

    def drain_spans(self) -> list[Span]:
        return self.worker.drain_spans()

    def stop(self) -> dict:
        """Stops the loop (in-flight work settled and counted), closes the envs, returns final stats."""
        self.manager.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.worker.close()
        return self.stats()


class PushingWeightStore(WeightStore):
    """A WeightStore that also pushes each published version to every server actor (object store),
    and leaves it with the Hub for a server that restarts."""

    def __init__(self, servers: list[Any], state, version: int, hub: Any = None):
        super().__init__(state, version)
        self.servers, self.hub = servers, hub

    def publish(self, state, version: int) -> None:
        super().publish(state, version)
        ref = ray.put(self.latest()[1])
        if self.hub is not None:
            self.hub.publish_weights.remote([ref], version)
        # Wait: admission reopens after publish, and a rollout admitted on `version` must find it.
        ray_get([s.set_weights.remote(ref, version) for s in self.servers], "rollout servers: set_weights")


class NcclWeightStore(WeightStore):
    """Publishes by torch.distributed broadcast: the driver's trainer is rank 0, server i rank i + 1.

    backend="nccl" on CUDA; "gloo" runs the same code on CPU (tests). The CPU copy of the base
    class stays the source of resume and evaluation.
    """

    def __init__(self, servers: list[Any], module, version: int, backend: str = "nccl"):
        from asyncvla.runtime.inference import broadcast

        super().__init__(module.state_dict(), version)
        self.servers, self.module = servers, module
        addr, port, world = ray.util.get_node_ip_address(), broadcast.free_port(), 1 + len(servers)
        # Every rank must enter init together: the actors' calls run while the driver joins.
        refs = [s.init_weight_group.remote(addr, port, i + 1, world, backend) for i, s in enumerate(servers)]
        broadcast.init_group(addr, port, 0, world, backend)
        ray_get(refs, "rollout servers: init_weight_group")

    def publish(self, state, version: int) -> None:
        from asyncvla.runtime.inference import broadcast

        super().publish(state, version)
        refs = [s.receive_weights.remote() for s in self.servers]
        broadcast.broadcast_module(self.module, version, src=0)
        versions = ray_get(refs, "rollout servers: receive_weights")
        if any(v != version for v in versions):
            raise RuntimeError(f"weight broadcast: servers report {versions}, expected {version}")


class RayBackend:
    """The actors of one run and the driver-side views over them."""

    def __init__(self, hub: Any, managers: list[RemoteManager], servers: list[RemoteServer], queue: RemoteQueue):
        self.hub, self.managers, self.servers, self.queue = hub, managers, servers, queue
        self._last_poll = 0.0
        self._spans: list[Span] = []
        self._alive = True
        self.held: list[Any] = []
        """Object refs the actors' restarts need, kept alive for the run."""

    def start(self) -> None:
        ray_get([m.actor.start.remote() for m in self.managers], "env managers: start")

    def poll(self, force: bool = False) -> None:
        """Refreshes every view's counters (at most every POLL_S unless forced)."""
        now = time.monotonic()
        if not self._alive or (not force and now - self._last_poll < POLL_S):
            return
        self._last_poll = now
        # All actors answer at once (one wait, not one round trip after another).
        views = [*self.managers, *self.servers, self.queue]
        for v, stats in zip(views, ray_get([v.request() for v in views], "env managers and servers: stats")):
            v.take(stats)

    def _fetch_spans(self) -> None:
        refs = [m.actor.drain_spans.remote() for m in self.managers] + [s.actor.drain_spans.remote() for s in self.servers]
        self._spans += [x for part in ray_get(refs, "actors: drain_spans") for x in part]

    def spans(self) -> list[Span]:
        if self._alive:
            self._fetch_spans()
        out, self._spans = self._spans, []
        return out

    def stop_managers(self) -> None:
        """Stops the managers; their final counts land in the run's ledger."""
        for m in self.managers:
            try:
                m.stop()
            except Exception:  # a dead actor's counts are lost; shutdown must go on
                pass
        try:
            for s in self.servers:
                s.poll()
            self._fetch_spans()
        except Exception:
            pass

    def close(self) -> None:
        self._alive = False
        for a in [self.hub, *(m.actor for m in self.managers), *(s.actor for s in self.servers)]:
            ray.kill(a)


def required_cpus(plan: Plan, cfg: TrainConfig) -> float:
    """CPUs the actors reserve: one manager actor each (env_cpus), each server (rollout_cpus) and each
    trainer beyond the driver's (trainer_cpus)."""
    rt = cfg.runtime
    return len(plan.managers) * rt.env_cpus + plan.num_servers * rt.rollout_cpus + (rt.num_trainers - 1) * rt.trainer_cpus


def check_resources(plan: Plan, cfg: TrainConfig) -> None:
    """Fails with one line when the cluster cannot place every actor (Ray would wait forever)."""
    rt, total = cfg.runtime, ray.cluster_resources()
    mgrs, srvs, trs = len(plan.managers), plan.num_servers, rt.num_trainers - 1
    need = {"CPU": (required_cpus(plan, cfg), "env managers x runtime.env_cpus + servers x runtime.rollout_cpus"
                                              " + extra trainers x runtime.trainer_cpus"),
            "GPU": (mgrs * rt.env_gpus + srvs * rt.rollout_gpus + trs * rt.trainer_gpus,
                    "env managers x runtime.env_gpus + servers x runtime.rollout_gpus + extra trainers x runtime.trainer_gpus")}
    for res in {*rt.env_resources, *rt.rollout_resources, *rt.trainer_resources}:
        need[res] = (mgrs * rt.env_resources.get(res, 0.0) + srvs * rt.rollout_resources.get(res, 0.0)
                     + trs * rt.trainer_resources.get(res, 0.0),
                     "env managers x runtime.env_resources + servers x runtime.rollout_resources"
                     " + extra trainers x runtime.trainer_resources")
    for res, (n, how) in need.items():
        if n > total.get(res, 0.0) + 1e-9:
            raise ConfigError(f"the ray backend needs {n:g} {res} ({how}) but the Ray cluster has {total.get(res, 0.0):g}: "
                              f"lower them or add nodes that have it")


def build(cfg: TrainConfig, plan: Plan) -> Runtime:
    """Starts the Hub, the server actors (with the trainer's weights) and one actor per env manager."""
    check_resources(plan, cfg)
    rt = cfg.runtime
    probe = EnvWorker(dataclasses.replace(cfg.env, num_envs=1), trace=False)
    spec = probe.spec()
    probe.close()
    check_episodes(plan, cfg, spec["max_episode_steps"])
    trainer = make_trainer(cfg, spec, DeviceGate(rt.emulated_accelerator))
    replica_cls = ray.remote(TrainerReplica).options(num_cpus=rt.trainer_cpus, num_gpus=rt.trainer_gpus,
                                                     resources=rt.trainer_resources)
    addr = ray.util.get_node_ip_address()  # the driver's: rank 0's store listens here
    data_parallel.start_group(trainer, rt.num_trainers, addr, lambda rank, port, backend: RayReplica(replica_cls.remote(
        functools.partial(make_trainer, cfg, spec), addr, port, rank, rt.num_trainers, backend)))
    # The Hub beside the driver, whose trainer drains it (segments cross the network once, to it).
    beside_driver = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    hub_name = f"asyncvla-hub-{uuid.uuid4().hex[:12]}"  # servers look it up (one name per run: a shared cluster may run several)
    hub = ray.remote(Hub).options(num_cpus=0, max_concurrency=64, scheduling_strategy=beside_driver, name=hub_name).remote(
        plan.max_staleness, plan.samples_per_version, rt.queue_size)
    # A restarted server's pending requests run again on it (max_task_retries): an env that asked
    # gets its answer late, never twice. NCCL: a new process cannot rejoin the broadcast group.
    restarts = rt.max_restarts if rt.weight_sync == "object_store" else 0
    server_cls = make_ray_rollout_server(num_cpus=rt.rollout_cpus, num_gpus=rt.rollout_gpus, resources=rt.rollout_resources,
                                         max_restarts=restarts,
                                         max_task_retries=-1 if restarts else 0)
    state = WeightStore(trainer.policy.state_dict(), trainer.version).latest()[1]  # one CPU copy for every server
    # In the object store, held by the Hub for the run: a restart re-runs the constructor, which
    # fetches it again (Ray frees a large argument passed by value once the first one ran).
    make = ray.put(functools.partial(make_server_policy, cfg, spec, state, trainer.version))
    ray_get(hub.hold_builder.remote([make]), "trajectory hub: start")
    actors = [server_cls.remote(hub_name, plan.max_batch, plan.max_wait_s, i, rt.trace, DeviceGate(rt.emulated_accelerator),
                                bool(restarts))
              for i in range(plan.num_servers)]
    if rt.weight_sync == "nccl":
        store: WeightStore = NcclWeightStore(actors, trainer.policy, trainer.version)
    else:
        store = PushingWeightStore(actors, trainer.policy.state_dict(), trainer.version, hub)
    mgr_cls = ray.remote(EnvManagerActor).options(num_cpus=rt.env_cpus, num_gpus=rt.env_gpus, resources=rt.env_resources,
                                                  max_concurrency=4)
    handles = [mgr_cls.remote(cfg, plan, m, actors, hub) for m in plan.managers]
    ledger = Ledger()
    managers = [RemoteManager(h, m.index, m.num_envs, ledger) for h, m in zip(handles, plan.managers)]
    ray_get([h.spec.remote() for h in handles], "env managers: build envs")  # envs built (fails here, not mid-run, on a bad env config)
    controller = MirroredController(hub, plan.max_staleness, plan.samples_per_version)
    learner = make_learner(cfg, plan, trainer, store, controller, ledger)
    servers = [RemoteServer(s, i) for i, s in enumerate(actors)]
    queue = RemoteQueue(hub)
    backend = RayBackend(hub, managers, servers, queue)
    backend.held = [make]  # the driver owns it: it lives while the run does
    return Runtime(plan, managers, servers, queue, controller, ledger, store, learner, backend, spec)


WORKER_NICENESS = 0
"""Niceness of the local Ray's workers. Ray's default (15) suits workers that run beside
a busy driver; here the workers (envs, inference) do the run's work while the driver
trains, so at 15 the driver (nice 0) and every other process of the machine pre-empt them
(a nice-15 process gets ~1/28 of a nice-0 one's share of a contended core)."""


LOCAL_SYSTEM_CONFIG = {
    "worker_niceness": WORKER_NICENESS,
    # No task events: they feed only the dashboard and state API (off here), and with one actor task
    # per decision Ray's own processes grew without end (+16% RSS in 5 min of `bench faults`; flat,
    # +0.4%, without them, at the same env steps/s).
    "task_events_report_interval_ms": 0,
}
"""Ray settings of the local instance a run starts (a cluster's are set by its `ray start`: docs/cluster.md)."""


def init_ray(address: str | None, min_cpus: float = 0, log_dir: Path | None = None) -> None:
    """Joins `address`, or starts a local Ray sized to this machine with a per-run temp dir.
    With `log_dir`, every worker's Python output is copied there too (`worker_logs`).

    CPU reservations are scheduling labels, not pinning: a local Ray advertises at least
    what the configured actors reserve (`min_cpus`), so a 2-core laptop still runs a layout
    of more actors than cores (oversubscribed, which the utilization metrics then show).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Workers inherit these: headless rendering and no hub access in every actor.
    env_vars = {k: os.environ[k] for k in ("MUJOCO_GL", "HF_HUB_OFFLINE", "RAY_AUTH_MODE", "TOKENIZERS_PARALLELISM") if k in os.environ}
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    if log_dir is not None:
        env_vars[worker_logs.ENV] = str(Path(log_dir).absolute())
        runtime_env["worker_process_setup_hook"] = worker_logs.HOOK
    if address:
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        except ConnectionError as e:
            raise ConfigError(f"runtime.ray_address={address!r} is invalid: Ray could not join it "
                              f"({str(e).splitlines()[0]})") from None
        return
    # Ray's socket paths must stay short (107 bytes): a short temp dir, not the run dir.
    tmp = tempfile.mkdtemp(prefix="ray_", dir="/tmp")
    ray.init(num_cpus=max(os.cpu_count() or 1, int(-(-min_cpus // 1))), include_dashboard=False, _temp_dir=tmp,
             runtime_env=runtime_env, log_to_driver=False, _system_config=LOCAL_SYSTEM_CONFIG)
