"""The rollout (inference) server: dynamic batcher + `policy.act` + policy-version tracking.

Weights change only between two batches, never inside one: new weights (pushed with
`set_weights` or pulled from a `WeightStore`) wait as pending and are applied at the next
batch boundary, so every sample of a batch carries the same, correct version.

`RolloutServer` is a plain class (tests build it without Ray); `serve` is its loop over a
`Transport`; `make_ray_rollout_server` wraps it in a thin Ray actor. Several servers are
load-balanced by a `Router` (round-robin, greedy least-loaded, fixed mapping).
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
import time
from collections import Counter
from typing import Callable, Mapping, Protocol

import numpy as np
import torch

from asyncvla.config import ConfigError
from asyncvla.metrics.spans import SpanRecorder
from asyncvla.policies.base import ActOut, ObsBatch, Policy
from asyncvla.runtime.backends import worker_logs
from asyncvla.runtime.device import DeviceGate
from asyncvla.runtime.inference.batcher import (REPLY_TIMEOUT_S, DynamicBatcher, InferenceError, LocalTransport, Reply, Request,
                                                Transport)
from asyncvla.runtime.inference.weight_store import WeightStore


def split_act(out: ActOut, sizes: list[int]) -> list[ActOut]:
    """Cuts a batch's ActOut into one per request (sizes in request order)."""
    bounds = np.cumsum([0] + sizes)
    return [out.rows(a, b)
            for a, b in zip(bounds[:-1], bounds[1:])]


class RolloutServer:
    """Batches requests dynamically and answers them with actions, logprob, value, version."""

    restarts = 0
    """Times its process was restarted (a Ray actor's view counts them; a thread never is)."""

    def __init__(self, policy: Policy, max_batch: int = 32, max_wait_s: float = 0.005,
                 weights: WeightStore | None = None, index: int = 0, trace: bool = True, device: DeviceGate | None = None):
        self.policy = policy
        self.device = device or DeviceGate()
        self.batcher = DynamicBatcher(max_batch, max_wait_s)
        self.weights = weights
        self.index = index
        self.rec = SpanRecorder("rollout", index, enabled=trace)
        self.version = int(getattr(policy, "version", 0))
        self._pending: tuple[int, Mapping[str, torch.Tensor]] | None = None
        self._lock = threading.Lock()
        self.num_batches = 0
        self.num_samples = 0
        self.busy_s = 0.0
        self.batch_sizes: Counter[int] = Counter()

    # -- weights ---------------------------------------------------------------------------
    def set_weights(self, state: Mapping[str, torch.Tensor], version: int) -> None:
        """Queues weights of `version`; they take effect at the next batch boundary."""
        with self._lock:
            if self._pending is None or version > self._pending[0]:
                self._pending = (version, state)

    def _at_batch_boundary(self) -> None:
        # The only place weights change: before a batch starts, never while one runs.
        with self._lock:
            pending, self._pending = self._pending, None
        if self.weights is not None and self.weights.version > max(self.version, pending[0] if pending else -1):
            pending = self.weights.latest()
        if pending is not None and pending[0] > self.version:
            version, state = pending
            self.policy.load_published(state)
            self.policy.version = version
            self.version = version

    # -- batches ---------------------------------------------------------------------------
    def run_batch(self, batch: list[Request]) -> list[Reply]:
        """Acts on one batch (all its requests at once) and returns one reply per request."""
        self._at_batch_boundary()
        t0 = time.time()
        obs = ObsBatch.concat([r.payload for r in batch]) if len(batch) > 1 else batch[0].payload
        with self.device.infer(len(obs)):
            out = self.policy.act(obs)
        out.version = self.version
        t1 = time.time()
        self.rec.add("infer", t0, t1)
        self.busy_s += t1 - t0
        self.num_batches += 1
        self.num_samples += len(obs)
        self.batch_sizes[len(obs)] += 1
        parts = split_act(out, [r.n for r in batch])
        return [Reply(r.id, r.client, part, self.version) for r, part in zip(batch, parts)]

    def serve(self, transport: Transport, clock: Callable[[], float], should_stop: Callable[[], bool],
              idle_s: float = 0.1) -> None:
        """The server loop: receive, batch, act, reply, until `should_stop()`.

        It sleeps in `transport.recv` until the open batch's deadline (or `idle_s` when
        nothing is open, so a stop request is noticed).
        """
        while not should_stop():
            deadline = self.batcher.deadline()
            timeout = idle_s if deadline is None else max(0.0, deadline - clock())
            for req in transport.recv(timeout):
                self.batcher.add(req)
            while (batch := self.batcher.pop_ready(clock())) is not None:
                try:
                    replies = self.run_batch(batch)
                except Exception as e:  # every waiting caller learns why, instead of waiting forever
                    msg = f"rollout server {self.index}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    replies = [Reply(r.id, r.client, None, self.version, error=msg.rstrip(": ")) for r in batch]
                for reply in replies:
                    transport.send(reply)

    def stats(self) -> dict[str, float]:
        return {
            "infer/batches": self.num_batches,
            "infer/samples": self.num_samples,
            "infer/mean_batch": self.num_samples / max(self.num_batches, 1),
            "infer/batch_sizes": dict(self.batch_sizes),
            "time/infer_s": self.busy_s,
        }


# -- routing ---------------------------------------------------------------------------------
class Router(Protocol):
    """Picks the server for a client's request; told when the request is answered."""

    def pick(self, client: int, n: int) -> int: ...

    def done(self, server: int, n: int) -> None: ...


class RoundRobinRouter:
    """Global round-robin over servers, one request at a time."""

    def __init__(self, num_servers: int):
        self._next = itertools.cycle(range(num_servers))
        self._lock = threading.Lock()

    def pick(self, client: int, n: int) -> int:
        with self._lock:
            return next(self._next)

    def done(self, server: int, n: int) -> None:
        pass


class GreedyRouter:
    """The server with the fewest outstanding samples (ties: the lowest index)."""

    def __init__(self, num_servers: int):
        self.load = [0] * num_servers
        self._lock = threading.Lock()

    def pick(self, client: int, n: int) -> int:
        with self._lock:
            server = min(range(len(self.load)), key=self.load.__getitem__)
            self.load[server] += n
            return server

    def done(self, server: int, n: int) -> None:
        with self._lock:
            self.load[server] -= n


class FixedRouter:
    """Client c (an env manager index) always goes to server c % num_servers."""

    def __init__(self, num_servers: int):
        self.num_servers = num_servers

    def pick(self, client: int, n: int) -> int:
        return hash(client) % self.num_servers

    def done(self, server: int, n: int) -> None:
        pass


ROUTERS: dict[str, Callable[[int], Router]] = {
    "round-robin": RoundRobinRouter,
    "greedy": GreedyRouter,
    "fixed": FixedRouter,
}


def make_router(kind: str, num_servers: int) -> Router:
    if kind not in ROUTERS:
        raise ConfigError(f"runtime.router={kind!r} is invalid: allowed: {', '.join(ROUTERS)}")
    return ROUTERS[kind](num_servers)


# -- Ray shell -------------------------------------------------------------------------------
def make_ray_rollout_server(**ray_options):
    """A Ray actor class around `RolloutServer`: `act` blocks until its batch has run.

    The actor is threaded (max_concurrency) so many `act` calls wait at once and meet in
    the batcher; a background thread runs the serving loop.
    """
    import ray

    class RolloutServerActor:
        def __init__(self, policy_fn: Callable[[], Policy] | str, max_batch: int, max_wait_s: float, index: int = 0,
                     trace: bool = True, device: DeviceGate | None = None, restarts: bool = False):
            """policy_fn: the policy's builder, or the name of the Hub actor that holds it (a name, since
            Ray warns about a restartable actor whose constructor takes a ref or a handle).
            restarts: a reconstructed server (Ray re-runs this constructor) starts from the latest
            weights published to the Hub, not from the run's first ones."""
            worker_logs.name(f"rollout-server-{index}")
            hub = None
            if isinstance(policy_fn, str):
                hub = ray.get_actor(policy_fn)
                policy_fn = ray.get(ray.get(hub.builder.remote())[0])
            self.transport = LocalTransport()
            self.server = RolloutServer(policy_fn(), max_batch, max_wait_s, index=index, trace=trace, device=device)
            if restarts and hub is not None and ray.get_runtime_context().was_current_actor_reconstructed:
                refs, version = ray.get(hub.latest_weights.remote())
                if refs:
                    self.server.set_weights(ray.get(refs[0]), version)  # applied before the first batch
            self._stop = False
            self._thread = threading.Thread(
                target=self.server.serve, args=(self.transport, self.transport.clock, lambda: self._stop),
                daemon=True, name=f"rollout{index}")
            self._thread.start()

        def act(self, client: int, obs: ObsBatch) -> ActOut:
            try:
                return self.transport.submit(client, obs, len(obs)).result(timeout=REPLY_TIMEOUT_S).unwrap()
            except TimeoutError:
                raise InferenceError(f"rollout server {self.server.index}: no reply within {REPLY_TIMEOUT_S:g} s") from None

        def set_weights(self, state: Mapping[str, torch.Tensor], version: int) -> None:
            self.server.set_weights(state, version)

        def stats(self) -> dict[str, float]:
            return {**self.server.stats(), "pid": os.getpid()}  # a new pid: the actor was restarted

        # -- NCCL / gloo weight broadcast (backends.ray.NcclWeightStore) --------------------
        def init_weight_group(self, addr: str, port: int, rank: int, world_size: int, backend: str = "nccl") -> None:
            from asyncvla.runtime.inference import broadcast

            broadcast.init_group(addr, port, rank, world_size, backend)
            self._recv = copy.deepcopy(self.server.policy)  # receive here, never into the serving policy mid-batch

        def receive_weights(self) -> int:
            """Receives the trainer's broadcast; the new weights take effect at the next batch boundary."""
            from asyncvla.runtime.inference import broadcast

            version = broadcast.broadcast_module(self._recv, self.server.version, src=0)
            self.server.set_weights({k: v.clone() for k, v in self._recv.state_dict().items()}, version)
            return version

        def drain_spans(self) -> list:
            return self.server.rec.drain()

        def stop(self) -> None:
            self._stop = True
            self.transport.close()
            self._thread.join(timeout=5)

    opts = {"max_concurrency": 256, "num_cpus": 1, **ray_options}
    return ray.remote(**opts)(RolloutServerActor)
