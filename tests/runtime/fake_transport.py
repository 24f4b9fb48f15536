"""An in-process fake transport for the rollout server's batching tests: requests arrive at
scripted times on a clock that only moves when told to."""

from __future__ import annotations

from collections import deque
from typing import Any, Hashable

from asyncvla.runtime.inference.batcher import Reply, Request


class FakeClock:
    """A clock that only moves when told to (deterministic tests)."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class ScriptedTransport:
    """In-process fake: requests arrive at scripted times on a `FakeClock`.

    `recv(timeout)` jumps the clock to the next arrival (or to now + timeout, whichever is
    first) and returns what has arrived by then; replies are collected in `sent` with the
    clock time they left. When the script is exhausted and timeout is None, `recv`
    returns [] (the serving loop's stop condition then ends the test).
    """

    def __init__(self, clock: FakeClock, arrivals: list[tuple[float, Hashable, Any, int]]):
        self.clock = clock
        self._script = deque(sorted(arrivals, key=lambda a: a[0]))
        self.sent: list[tuple[float, Reply]] = []

    @property
    def exhausted(self) -> bool:
        return not self._script

    def recv(self, timeout_s: float | None) -> list[Request]:
        if self._script:
            nxt = self._script[0][0]
            wake = nxt if timeout_s is None else min(nxt, self.clock() + timeout_s)
        else:
            wake = self.clock() + (timeout_s or 0.0)
        self.clock.t = max(self.clock.t, wake)
        out = []
        while self._script and self._script[0][0] <= self.clock.t:
            t, client, payload, n = self._script.popleft()
            out.append(Request(client, payload, n, t))
        return out

    def send(self, reply: Reply) -> None:
        self.sent.append((self.clock(), reply))
