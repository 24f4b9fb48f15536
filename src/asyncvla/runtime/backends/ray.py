"""Ray shells of the async runtime (runtime.local=false): env managers and rollout servers as actors.

    EnvManagerActor (own process: simulators, per-env loop, segment assembly)
        ──obs──▶ RolloutServerActor (own process: dynamic batcher + policy)
        ──segments──▶ Hub actor (TrajectoryQueue + admission side of the StalenessController)
    driver: StreamingTrainer pulls segments from the Hub, publishes weights to every server

Separate processes matter on a small CPU box: a CPU-bound simulator (MetaWorld rendering)
holds the GIL, so env stepping, inference and training in threads of one process serialise.

The actors run the same plain classes as the thread mode (EnvManager, RolloutServer,
StalenessController, TrajectoryQueue, Ledger); this module only adds proxies with the
interfaces those classes already call:
- `RayServerTransport`: an env manager's requests go to a server actor; replies come back
  through the ref's future (a callback, like `LocalTransport`).
- `HubAdmission`, `HubQueue`: the manager side of admission and the queue.
- `MirroredController`: the trainer keeps the lag book-keeping locally (versions, lag
  histogram) and mirrors publishes and refunds to the Hub, where admission is decided.
- `RemoteManager`, `RemoteServer`: driver-side views whose counters are refreshed by `poll`;
  each manager counts its env steps in its own Ledger and `poll` adds the increments to
  the run's ledger, so produced = trained + dropped still holds for the whole run.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections import Counter
from typing import Any, Callable, Hashable

from asyncvla.config import ConfigError, EnvConfig, TrainConfig
from asyncvla.metrics.spans import Span
from asyncvla.policies.base import ObsBatch, Policy
from asyncvla.runtime.inference.batcher import Reply
from asyncvla.runtime.data import Segment
from asyncvla.runtime.env.manager import EnvManager, RolloutClient
from asyncvla.runtime.env.worker import EnvWorker
from asyncvla.runtime.env.groups import make_groups
from asyncvla.runtime.queues import QueueClosed, TrajectoryQueue
from asyncvla.runtime.inference.server import make_ray_rollout_server, make_router
from asyncvla.runtime.learner.staleness import Ledger, StalenessController
from asyncvla.runtime.inference.weight_store import WeightStore

POLL_S = 0.5
"""Driver-side views refresh their counters at most this often (every update refreshes them
too): each refresh is a round trip to every actor, which on a CPU-only box competes with
the envs for the same cores; errors still surface within half a second."""


# -- the hub: queue + admission -------------------------------------------------------------
class Hub:
    """The trajectory queue and the admission half of the staleness controller, in one actor."""

    def __init__(self, max_staleness: int, samples_per_version: int, capacity: int):
        self.controller = StalenessController(max_staleness, samples_per_version)
        self.queue = TrajectoryQueue(capacity)

    def try_admit(self, want: int) -> int:
        return self.controller.try_admit(want)

    def admit(self, want: int, timeout_s: float | None) -> int:
        return self.controller.admit(want, timeout_s)

    def refund(self, n: int) -> None:
        self.controller.refund(n)

    def advance(self, version: int, consumed: int) -> None:
        self.controller.advance(version, consumed)

    def load_state(self, state: dict) -> None:
        self.controller.load_state_dict(state)

    def put(self, seg: Segment) -> bool:
        """Blocks while the queue is full (backpressure); False once it is closed."""
        try:
            return self.queue.put(seg)
        except QueueClosed:
            return False

    def get(self, timeout_s: float | None) -> Segment | None:
        return self.queue.get(timeout_s)

    def drain(self) -> list[Segment]:
        return self.queue.drain()

    def close(self) -> None:
        self.controller.close()
        self.queue.close()

    def queue_stats(self) -> dict:
        return {"depth": len(self.queue), "samples": self.queue.num_samples, "put_wait_s": self.queue.put_wait_s}


class HubAdmission:
    """Manager side of admission (what `EnvManager` calls on a `StalenessController`)."""

    def __init__(self, hub: Any):
        self.hub = hub

    def try_admit(self, want: int) -> int:
        import ray

        return ray.get(self.hub.try_admit.remote(want))

    def admit(self, want: int, timeout_s: float | None = None) -> int:
        import ray

        return ray.get(self.hub.admit.remote(want, timeout_s))

    def refund(self, n: int) -> None:
        if n > 0:
            self.hub.refund.remote(n)


class HubQueue:
    """Manager side of the trajectory queue: `put` blocks while the Hub's queue is full."""

    def __init__(self, hub: Any):
        self.hub = hub

    def put(self, seg: Segment, timeout_s: float | None = None) -> bool:
        import ray

        if not ray.get(self.hub.put.remote(seg)):
            raise QueueClosed("put on a closed TrajectoryQueue")
        return True


class RemoteQueue:
    """Driver side of the trajectory queue (what `run_async` and `shutdown` call)."""

    def __init__(self, hub: Any):
        self.hub = hub
        self._stats = {"depth": 0, "samples": 0, "put_wait_s": 0.0}

    def get(self, timeout_s: float | None = None) -> Segment | None:
        import ray

        return ray.get(self.hub.get.remote(timeout_s))

    def drain(self) -> list[Segment]:
        import ray

        return ray.get(self.hub.drain.remote())

    def close(self) -> None:
        import ray

        ray.get(self.hub.close.remote())

    def request(self) -> Any:
        return self.hub.queue_stats.remote()

    def take(self, stats: dict) -> None:
        self._stats = stats

    def poll(self) -> None:
        import ray

        self.take(ray.get(self.request()))

    def __len__(self) -> int:
        return self._stats["depth"]

    @property
    def num_samples(self) -> int:
        return self._stats["samples"]

    @property
    def put_wait_s(self) -> float:
        return self._stats["put_wait_s"]


class MirroredController(StalenessController):
    """The trainer's controller: lags computed here, publishes and refunds mirrored to the Hub."""

    def __init__(self, hub: Any, max_staleness: int, samples_per_version: int):
        super().__init__(max_staleness, samples_per_version)
        self.hub = hub

    def advance(self, version: int, consumed_samples: int) -> None:
        import ray

        super().advance(version, consumed_samples)
        ray.get(self.hub.advance.remote(version, consumed_samples))  # admission reopens only after this

    def refund(self, n: int) -> None:
        super().refund(n)
        if n > 0:
            self.hub.refund.remote(n)

    def close(self) -> None:
        super().close()
        self.hub.close.remote()

    def load_state_dict(self, state: dict) -> None:
        import ray

        super().load_state_dict(state)
        ray.get(self.hub.load_state.remote(state))


# -- rollout servers ------------------------------------------------------------------------
class RayServerTransport:
    """An env manager's client side of one server actor; replies arrive as callbacks."""

    def __init__(self, actor: Any):
        self.actor = actor

    def submit(self, client: Hashable, payload: ObsBatch, n: int, on_reply: Callable[[Reply], None]) -> None:
        ref = self.actor.act.remote(client, payload)

        def done(fut) -> None:
            out = fut.result()  # an error here surfaces as the manager's error (no reply, it stops)
            on_reply(Reply(-1, client, out, int(out.version)))

        ref.future().add_done_callback(done)


class PushingWeightStore(WeightStore):
    """A WeightStore that also pushes each published version to every server actor (object store)."""

    def __init__(self, servers: list[Any], state, version: int):
        super().__init__(state, version)
        self.servers = servers

    def publish(self, state, version: int) -> None:
        import ray

        super().publish(state, version)
        ref = ray.put(self.latest()[1])
        # Wait: admission reopens after publish, and a rollout admitted on `version` must find it.
        ray.get([s.set_weights.remote(ref, version) for s in self.servers])


class RemoteServer:
    """Driver-side view of a server actor: counters as of the last `poll`."""

    def __init__(self, actor: Any, index: int):
        self.actor, self.index = actor, index
        self.busy_s, self.num_samples, self.num_batches = 0.0, 0, 0
        self._spans: list[Span] = []

    def request(self) -> Any:
        return self.actor.stats.remote()

    def take(self, s: dict) -> None:
        self.busy_s, self.num_samples, self.num_batches = s["time/infer_s"], int(s["infer/samples"]), int(s["infer/batches"])

    def poll(self) -> None:
        import ray

        self.take(ray.get(self.request()))

    def fetch_spans(self) -> None:
        """Keeps the server's spans before the actor goes away (`kill`)."""
        import ray

        self._spans += ray.get(self.actor.drain_spans.remote())

    def drain_spans(self) -> list[Span]:
        out, self._spans = self._spans, []
        return out


# -- env managers ---------------------------------------------------------------------------
class EnvManagerActor:
    """One env manager (its envs and its loop) in its own process."""

    def __init__(self, env_cfg: EnvConfig, worker_index: int, index: int, servers: list[Any], router: str, hub: Any,
                 segment_len: int, async_env: bool, group_size: int = 0, chunk: int = 1, seed: int = 0,
                 first_env: int | None = None, max_request: int | None = None):
        self.worker = EnvWorker(env_cfg, worker_index, trace=False, first_env=first_env)
        client = RolloutClient([RayServerTransport(s) for s in servers], make_router(router, len(servers)))
        self.ledger = Ledger()
        self.manager = EnvManager(index, self.worker, client, HubAdmission(hub), HubQueue(hub), self.ledger,
                                  segment_len, async_env, max_request,
                                  groups=make_groups(self.worker.vec.num_envs, group_size, index, seed, self.worker.first_env),
                                  chunk=chunk)
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

    def stop(self) -> dict:
        """Stops the loop (in-flight work settled and counted), closes the envs, returns final stats."""
        self.manager.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.worker.close()
        return self.stats()


class RemoteManager:
    """Driver-side view of a manager actor; `poll` adds its new ledger counts to the run's ledger."""

    def __init__(self, actor: Any, index: int, num_envs: int, ledger: Ledger):
        self.actor, self.index, self.num_envs, self.run_ledger = actor, index, num_envs, ledger
        self.env_busy_s = 0.0
        self.error: BaseException | None = None
        self._episodes: list[dict] = []
        self._seen = Ledger().state_dict()

    def request(self) -> Any:
        return self.actor.stats.remote()

    def take(self, s: dict) -> None:
        self.env_busy_s = s["env_busy_s"]
        self._episodes += s["episodes"]
        if s["error"] is not None and self.error is None:
            self.error = RuntimeError(s["error"])
        add_ledger_increment(self.run_ledger, self._seen, s["ledger"])
        self._seen = s["ledger"]

    def poll(self) -> None:
        import ray

        self.take(ray.get(self.request()))

    def stop(self) -> None:
        import ray

        self.take(ray.get(self.actor.stop.remote()))

    def pop_episodes(self) -> list[dict]:
        out, self._episodes = self._episodes, []
        return out


def add_ledger_increment(total: Ledger, before: dict, after: dict) -> None:
    """Adds what a part's ledger counted between two `state_dict`s to `total` (pure book-keeping)."""
    total.produced(after["produced"] - before["produced"])
    total.trained(after["trained_samples"] - before["trained_samples"], after["trained_env_steps"] - before["trained_env_steps"])
    steps0, samples0 = Counter(before["dropped_env_steps"]), Counter(before["dropped_samples"])
    for reason, steps in after["dropped_env_steps"].items():
        d_steps, d_samples = steps - steps0[reason], after["dropped_samples"].get(reason, 0) - samples0[reason]
        if d_steps or d_samples:
            total.dropped(reason, d_samples, d_steps)


# -- building and running -------------------------------------------------------------------
@dataclasses.dataclass
class RayParts:
    """The actors of one Ray async run and the driver-side views over them."""

    hub: Any
    managers: list[RemoteManager]
    servers: list[RemoteServer]
    queue: RemoteQueue
    _last_poll: float = 0.0

    def actors(self) -> list[Any]:
        return [self.hub, *(m.actor for m in self.managers), *(s.actor for s in self.servers)]

    def start(self) -> None:
        import ray

        ray.get([m.actor.start.remote() for m in self.managers])

    def poll(self, force: bool = False) -> None:
        """Refreshes every view's counters (at most every POLL_S unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_poll < POLL_S:
            return
        self._last_poll = now
        import ray

        # All actors answer at once (one wait, not one round trip after another).
        views = [*self.managers, *self.servers, self.queue]
        for v, stats in zip(views, ray.get([v.request() for v in views])):
            v.take(stats)

    def stop_managers(self) -> None:
        """Stops the managers; their final counts land in the run's ledger."""
        for m in self.managers:
            try:
                m.stop()
            except Exception:  # a dead actor's counts are lost; shutdown must go on
                pass
        for s in self.servers:
            s.poll()
            s.fetch_spans()

    def kill(self) -> None:
        import ray

        for a in self.actors():
            ray.kill(a)


def required_cpus(cfg: TrainConfig) -> float:
    """CPUs the async actors reserve: one per env manager (env_cpus) and per server (rollout_cpus)."""
    rt = cfg.runtime
    managers = rt.num_env_workers * max(len(rt.env_managers), 1)
    return managers * rt.env_cpus + rt.num_rollout_servers * rt.rollout_cpus


def check_cpus(cfg: TrainConfig) -> None:
    import ray

    have, need = ray.cluster_resources().get("CPU", 0.0), required_cpus(cfg)
    if need > have + 1e-9:
        raise ConfigError(f"async runtime on Ray needs {need:g} CPU (env managers x runtime.env_cpus + servers x "
                          f"runtime.rollout_cpus) but the Ray cluster has {have:g}: lower runtime.env_cpus / rollout_cpus")


def _server_policy(policy_fn: Callable[[int, int], Policy], a: int, p: int, state, version: int) -> Policy:
    policy = policy_fn(a, p)
    policy.load_state_dict(state)
    policy.version = version
    return policy.eval()


def build_ray_parts(cfg: TrainConfig, env_cfgs: list[tuple[EnvConfig, int, int]], spec: dict, policy_fn: Callable[[int, int], Policy],
                    state, version: int, samples_per_version: int, max_staleness: int, ledger: Ledger,
                    max_batch: int, max_wait_s: float) -> tuple[RayParts, MirroredController, PushingWeightStore]:
    """Starts the Hub, the server actors (weights of `version`) and one actor per env manager.

    env_cfgs: (env config, index, first global env id) per manager; state/version: the trainer's weights."""
    import ray

    check_cpus(cfg)
    rt = cfg.runtime
    hub = ray.remote(Hub).options(num_cpus=0, max_concurrency=64).remote(max_staleness, samples_per_version, rt.queue_size)
    server_cls = make_ray_rollout_server(num_cpus=rt.rollout_cpus, num_gpus=rt.rollout_gpus)
    a, p = spec["action_dim"], spec["proprio_dim"]
    store = WeightStore(state, version)  # a CPU copy, shipped once inside each server's constructor
    make = functools.partial(_server_policy, policy_fn, a, p, store.latest()[1], version)
    actors = [server_cls.remote(make, max_batch, max_wait_s, i, rt.trace) for i in range(rt.num_rollout_servers)]
    store = PushingWeightStore(actors, state, version)
    mgr_cls = ray.remote(EnvManagerActor).options(num_cpus=rt.env_cpus, num_gpus=rt.env_gpus, max_concurrency=4)
    segment_len = rt.segment_len or rt.rollout_steps
    group_size = cfg.algo.group_size if cfg.algo.name == "grpo" else 0
    max_request = max_batch if rt.streaming_rollout else 1
    handles = [mgr_cls.remote(env_cfg, w, m, actors, rt.router, hub, segment_len, rt.async_env, group_size,
                              cfg.policy.chunk, cfg.env.seed, first, max_request)
               for m, (env_cfg, w, first) in enumerate(env_cfgs)]
    managers = [RemoteManager(h, m, env_cfg.num_envs, ledger) for m, (h, (env_cfg, _, _)) in enumerate(zip(handles, env_cfgs))]
    ray.get([h.spec.remote() for h in handles])  # envs built (fails here, not mid-run, on a bad env config)
    parts = RayParts(hub, managers, [RemoteServer(s, i) for i, s in enumerate(actors)], RemoteQueue(hub))
    return parts, MirroredController(hub, max_staleness, samples_per_version), store
