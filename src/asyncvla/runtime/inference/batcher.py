"""Dynamic batching of inference requests, as a pure policy plus a small transport interface.

The policy (RL-VLA³, SEED RL): the first request opens a batch; the batch is flushed when
it holds `max_batch` samples or `max_wait_s` after it opened, whichever comes first. A
request (n samples, e.g. all ready observations of one env manager) is never split: one
that would overflow the open batch closes it and opens the next one; one larger than
`max_batch` goes alone. Time is passed in (`now`), so tests drive it with a fake clock.

The transport (how requests arrive and replies leave) sits behind `Transport`, so the same
serving loop runs with an in-process fake (tests/runtime/fake_transport.py), threads or Ray.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Protocol

_ids = itertools.count()


@dataclass
class Request:
    """n samples to act on, from one client (an env manager), arrived at time `t`."""

    client: Hashable
    payload: Any
    """What the server acts on (an `ObsBatch` of n observations)."""
    n: int
    t: float
    """Arrival time on the server's clock."""
    id: int = field(default_factory=lambda: next(_ids))


@dataclass
class Reply:
    """The answer to one request: one entry per sample, plus the policy version that made it."""

    request_id: int
    client: Hashable
    result: Any
    """What the server computed for the request (an `ActOut` of n samples)."""
    version: int
    error: str | None = None
    """Set instead of `result` when the server could not act on the request (one line, naming it)."""

    def unwrap(self) -> Any:
        """The result, or InferenceError with the server's message."""
        if self.error is not None:
            raise InferenceError(self.error)
        return self.result


class InferenceError(RuntimeError):
    """A rollout server could not act on a request; the message names the server and the cause."""


REPLY_TIMEOUT_S = 600.0
"""Longest wait for a rollout server's reply: past it the caller raises InferenceError rather than
waiting forever on a server whose thread hangs or died."""


class DynamicBatcher:
    """Forms batches from requests; pure (no threads, no clock of its own)."""

    def __init__(self, max_batch: int, max_wait_s: float):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} is invalid: must be >= 1")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s={max_wait_s} is invalid: must be >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._open: list[Request] = []
        self._open_n = 0
        self._open_t = 0.0
        self._closed: deque[list[Request]] = deque()

    def add(self, req: Request) -> None:
        """Places `req` in the open batch, or closes the open batch first if it would overflow."""
        if req.n < 1:
            raise ValueError(f"request {req.id}: n={req.n} must be >= 1")
        if self._open and self._open_n + req.n > self.max_batch:
            self._close()
        if not self._open:
            self._open_t = req.t
        self._open.append(req)
        self._open_n += req.n
        if self._open_n >= self.max_batch:  # full, or a single oversize request alone
            self._close()

    def pop_ready(self, now: float) -> list[Request] | None:
        """The next batch to run at time `now`, or None if no batch is due yet."""
        if not self._closed and self._open and now >= self._open_t + self.max_wait_s:
            self._close()
        return self._closed.popleft() if self._closed else None

    def deadline(self) -> float | None:
        """When the next batch becomes due: now if one is closed, else the open batch's timeout."""
        if self._closed:
            return float("-inf")
        return self._open_t + self.max_wait_s if self._open else None

    @property
    def pending_samples(self) -> int:
        return self._open_n + sum(r.n for b in self._closed for r in b)

    def _close(self) -> None:
        self._closed.append(self._open)
        self._open, self._open_n = [], 0


class Transport(Protocol):
    """How requests reach a server and replies leave it."""

    def recv(self, timeout_s: float | None) -> list[Request]:
        """Requests that arrived; waits up to `timeout_s` (None: until one arrives or close)."""
        ...

    def send(self, reply: Reply) -> None: ...


class LocalTransport:
    """Thread-safe transport inside one process: clients `submit` and get a Future (or callback).

    Used by the local runtime and inside the Ray actor shell; `close` wakes a blocked `recv`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._inbox: queue.Queue[Request | None] = queue.Queue()
        self._waiting: dict[int, Future | Callable[[Reply], None]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def submit(self, client: Hashable, payload: Any, n: int,
               on_reply: Callable[[Reply], None] | None = None) -> Future | None:
        """Sends a request; the reply resolves the returned Future, or calls `on_reply`."""
        req = Request(client, payload, n, self.clock())
        target: Future | Callable[[Reply], None] = on_reply if on_reply is not None else Future()
        with self._lock:
            self._waiting[req.id] = target
        self._inbox.put(req)
        return None if on_reply is not None else target  # type: ignore[return-value]

    def recv(self, timeout_s: float | None) -> list[Request]:
        out: list[Request] = []
        try:
            first = self._inbox.get(timeout=timeout_s) if timeout_s is None or timeout_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return out
        if first is not None:
            out.append(first)
        while True:
            try:
                req = self._inbox.get_nowait()
            except queue.Empty:
                return out
            if req is not None:
                out.append(req)

    def send(self, reply: Reply) -> None:
        with self._lock:
            target = self._waiting.pop(reply.request_id)
        if isinstance(target, Future):
            target.set_result(reply)
        else:
            target(reply)

    @property
    def outstanding(self) -> int:
        """Requests submitted and not yet answered."""
        with self._lock:
            return len(self._waiting)

    def close(self) -> None:
        self.closed = True
        self._inbox.put(None)
