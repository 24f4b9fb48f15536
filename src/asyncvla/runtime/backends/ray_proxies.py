"""Driver- and manager-side proxies of the ray backend: the interfaces the plain classes call.

The actors run the same plain classes as the threads backend (EnvManager, RolloutServer,
StalenessController, TrajectoryQueue, Ledger); these proxies stand in where a class would
otherwise hold a local object:
- `Hub`: the trajectory queue and the admission half of the staleness controller, one actor.
- `HubAdmission`, `HubQueue`: the manager side of admission and the queue.
- `MirroredController`: the trainer keeps the lag book-keeping locally (versions, lag
  histogram) and mirrors publishes and refunds to the Hub, where admission is decided.
- `RayServerTransport`: an env manager's requests go to a server actor; replies come back
  through the ref's future (a callback, like `LocalTransport`).
- `RemoteManager`, `RemoteServer`, `RemoteQueue`: driver-side views whose counters are
  refreshed by `poll`; each manager counts its env steps in its own Ledger and `poll` adds
  the increments to the run's ledger, so produced = trained + dropped holds for the run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Hashable

import ray

from asyncvla.policies.base import ObsBatch
from asyncvla.runtime.backends import worker_logs
from asyncvla.runtime.data import Segment
from asyncvla.runtime.inference.batcher import Reply
from asyncvla.runtime.learner.staleness import Ledger, StalenessController
from asyncvla.runtime.queues import QueueClosed, TrajectoryQueue

CALL_TIMEOUT_S = 600.0
"""Longest wait for one control call to an actor (building envs, starting, a queue operation
beyond its own timeout): past it the run stops with a line naming the call, instead of waiting
forever on an actor that died or hangs."""


def _beyond(timeout_s: float | None) -> float:
    """A call that itself waits up to timeout_s gets that long on top of the control-call timeout."""
    return CALL_TIMEOUT_S + (timeout_s or 0.0)


class ActorTimeout(RuntimeError):
    """An actor did not answer a control call within its timeout."""


def ray_get(refs, what: str, timeout_s: float = CALL_TIMEOUT_S):
    """`ray.get(refs)` with a timeout; ActorTimeout names `what` did not answer."""
    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ActorTimeout(f"{what}: no answer within {timeout_s:g} s (the actor hangs or died)") from None


# -- the hub: queue + admission -------------------------------------------------------------
class Hub:
    """The trajectory queue and the admission half of the staleness controller, in one actor."""

    def __init__(self, max_staleness: int, samples_per_version: int, capacity: int):
        worker_logs.name("hub")
        self.controller = StalenessController(max_staleness, samples_per_version)
        self.queue = TrajectoryQueue(capacity)
        self._weights: tuple[list, int] = ([], -1)
        self._builder: list = []

    def hold_builder(self, ref: list) -> None:
        """Keeps the rollout servers' policy builder ([its ref], unresolved) for the run: a server
        fetches it here, not as a constructor argument, since Ray warns on every run about an actor
        with restarts whose constructor takes a ref or an actor handle."""
        self._builder = ref

    def builder(self) -> list:
        return self._builder

    def publish_weights(self, ref: list, version: int) -> None:
        """Keeps the latest published weights (the ref, in a list so Ray does not resolve it) for a
        rollout server that restarts; holding the ref keeps the object alive."""
        if version > self._weights[1]:
            self._weights = (ref, version)

    def latest_weights(self) -> tuple[list, int]:
        return self._weights

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
        return ray_get(self.hub.try_admit.remote(want), "staleness hub: try_admit")

    def admit(self, want: int, timeout_s: float | None = None) -> int:
        return ray_get(self.hub.admit.remote(want, timeout_s), "staleness hub: admit", _beyond(timeout_s))

    def refund(self, n: int) -> None:
        if n > 0:
            self.hub.refund.remote(n)


class HubQueue:
    """Manager side of the trajectory queue: `put` blocks while the Hub's queue is full."""

    def __init__(self, hub: Any):
        self.hub = hub

    def put(self, seg: Segment, timeout_s: float | None = None) -> bool:
        if not ray_get(self.hub.put.remote(seg), "trajectory hub: put"):
            raise QueueClosed("put on a closed TrajectoryQueue")
        return True


class RemoteView:
    """A driver-side view of an actor's counters, as of the last `poll` (or `take` of a batched `request`)."""

    actor: Any

    def request(self) -> Any:
        return self.actor.stats.remote()

    def take(self, stats: dict) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        self.take(ray_get(self.request(), f"{type(self).__name__}: stats"))


class RemoteQueue(RemoteView):
    """Driver side of the trajectory queue (what `loop.run` and `loop.shutdown` call)."""

    def __init__(self, hub: Any):
        self.hub = self.actor = hub
        self._stats = {"depth": 0, "samples": 0, "put_wait_s": 0.0}

    def get(self, timeout_s: float | None = None) -> Segment | None:
        return ray_get(self.hub.get.remote(timeout_s), "trajectory hub: get", _beyond(timeout_s))

    def drain(self) -> list[Segment]:
        return ray_get(self.hub.drain.remote(), "trajectory hub: drain")

    def close(self) -> None:
        ray_get(self.hub.close.remote(), "trajectory hub: close")

    def request(self) -> Any:
        return self.hub.queue_stats.remote()

    def take(self, stats: dict) -> None:
        self._stats = stats

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
        super().advance(version, consumed_samples)
        ray_get(self.hub.advance.remote(version, consumed_samples), "staleness hub: advance")  # admission reopens only after this

    def refund(self, n: int) -> None:
        super().refund(n)
        if n > 0:
            self.hub.refund.remote(n)

    def close(self) -> None:
        super().close()
        self.hub.close.remote()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        ray_get(self.hub.load_state.remote(state), "staleness hub: load_state")


class RayServerTransport:
    """An env manager's client side of one server actor; replies arrive as callbacks."""

    def __init__(self, actor: Any):
        self.actor = actor

    def submit(self, client: Hashable, payload: ObsBatch, n: int, on_reply: Callable[[Reply], None]) -> None:
        ref = self.actor.act.remote(client, payload)

        def done(fut) -> None:
            # An exception raised in a done-callback is swallowed: the error must travel as a reply.
            try:
                out = fut.result()
            except Exception as e:
                msg = str(e).strip().splitlines()
                on_reply(Reply(-1, client, None, -1, error=msg[-1] if msg else type(e).__name__))
                return
            on_reply(Reply(-1, client, out, int(out.version)))

        ref.future().add_done_callback(done)


class RemoteServer(RemoteView):
    """Driver-side view of a server actor. A restarted actor (a new process) counts from zero
    again: its counters are added to what the earlier incarnations counted."""

    def __init__(self, actor: Any, index: int):
        self.actor, self.index = actor, index
        self.busy_s, self.num_samples, self.num_batches, self.batch_sizes = 0.0, 0, 0, Counter()
        self.restarts = 0
        self.pid: int | None = None
        """The process serving, as of the last poll."""
        self._before = (0.0, 0, 0, Counter())
        """What the earlier incarnations counted."""
        self._last = self._before

    def take(self, s: dict) -> None:
        if self.pid is not None and s["pid"] != self.pid:
            self.restarts += 1
            self._before = tuple(a + b for a, b in zip(self._before, self._last))
        self.pid = s["pid"]
        self._last = (s["time/infer_s"], int(s["infer/samples"]), int(s["infer/batches"]),
                      Counter({int(k): v for k, v in s["infer/batch_sizes"].items()}))
        self.busy_s, self.num_samples, self.num_batches, self.batch_sizes = (a + b for a, b in zip(self._before, self._last))


class RemoteManager(RemoteView):
    """Driver-side view of a manager actor; `poll` adds its new ledger counts to the run's ledger."""

    def __init__(self, actor: Any, index: int, num_envs: int, ledger: Ledger):
        self.actor, self.index, self.num_envs, self.run_ledger = actor, index, num_envs, ledger
        self.env_busy_s = 0.0
        self.error: BaseException | None = None
        self._episodes: list[dict] = []
        self._seen = Ledger().state_dict()

    def take(self, s: dict) -> None:
        self.env_busy_s = s["env_busy_s"]
        self._episodes += s["episodes"]
        if s["error"] is not None and self.error is None:
            self.error = RuntimeError(s["error"])
        add_ledger_increment(self.run_ledger, self._seen, s["ledger"])
        self._seen = s["ledger"]

    def stop(self) -> None:
        self.take(ray_get(self.actor.stop.remote(), "env manager: stop"))

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
