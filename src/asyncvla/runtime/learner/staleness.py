"""Bounded staleness by pacing, plus the ledger that accounts for every env step.

Staleness is bounded by *pacing new rollouts*, not by throwing finished ones away
(discarding starves long episodes and biases the data). The trainer consumes
`samples_per_version` samples per optimizer step (one version). When the trainer is at
version v it has consumed C_v samples; a new rollout (segment) may only be admitted while
the total admitted stays within C_v + (max_staleness + 1) * samples_per_version, i.e.
while every admitted sample can be trained by version v + max_staleness. Samples admitted
but never delivered (a segment cut short, an env crash) are refunded, so with
max_staleness = 0 the trainer always receives exactly one version's worth of samples: it
trains, publishes, and admission reopens on the new version (no deadlock).

Lag is counted in *published updates*: a trainer that takes several optimizer steps per
update (PPO epochs) publishes once, and its samples' lag is the number of publishes
between the weights that acted and the weights being trained. With one optimizer step per
update this is the plain version difference. The measured lag of every trained sample
goes into a histogram; a sample that still exceeds the bound (e.g. inference was a batch
behind the trainer) is dropped *and counted* under reason "stale".
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from typing import Callable

import numpy as np


class StalenessController:
    """Admission control for new rollouts and the lag histogram; thread-safe, serialisable."""

    def __init__(self, max_staleness: int, samples_per_version: int):
        if max_staleness < 0:
            raise ValueError(f"max_staleness={max_staleness} is invalid: must be >= 0")
        if samples_per_version < 1:
            raise ValueError(f"samples_per_version={samples_per_version} is invalid: must be >= 1")
        self.max_staleness = max_staleness
        self.samples_per_version = samples_per_version
        self._cond = threading.Condition()
        self.version = 0
        self._published = [0]
        self.consumed = 0
        """Samples consumed by the trainer's completed versions (C_v)."""
        self.admitted = 0
        """Samples admitted so far, net of refunds."""
        self.lag_hist: Counter[int] = Counter()
        self.num_waits = 0
        self._closed = False
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, wake: Callable[[], None]) -> None:
        """Calls `wake()` whenever admission may have reopened (publish, refund, close).

        An env manager blocks on its envs, not on this controller; without a wake-up it
        would only notice reopened admission at its next poll, and every env paused on
        admission (all of them, once per update, when max_staleness is 0) would idle meanwhile.
        """
        with self._cond:
            self._listeners.append(wake)

    def _notify(self) -> None:
        # Called after the lock is released: a listener may take its own locks.
        for wake in list(self._listeners):
            wake()

    # -- rollout side ---------------------------------------------------------------------
    @property
    def cap(self) -> int:
        return self.consumed + (self.max_staleness + 1) * self.samples_per_version

    def try_admit(self, want: int) -> int:
        """Grants up to `want` samples for a new rollout now; 0 means wait."""
        with self._cond:
            return self._grant(want)

    def admit(self, want: int, timeout_s: float | None = None) -> int:
        """Like `try_admit` but waits for room; 0 on timeout or after `close`."""
        with self._cond:
            granted = self._grant(want)
            if granted == 0 and not self._closed:
                self.num_waits += 1
                self._cond.wait_for(lambda: self._closed or self.cap > self.admitted, timeout_s)
                granted = self._grant(want)
            return granted

    def refund(self, n: int) -> None:
        """Returns admitted samples that will never reach the trainer (cut short or dropped)."""
        if n <= 0:
            return
        with self._cond:
            self.admitted -= n
            self._cond.notify_all()
        self._notify()

    def _grant(self, want: int) -> int:
        if self._closed:
            return 0
        granted = max(0, min(want, self.cap - self.admitted))
        self.admitted += granted
        return granted

    # -- trainer side ---------------------------------------------------------------------
    def lag(self, behaviour_version: int) -> int:
        """Publishes since `behaviour_version` (0 when it is the trainer's current version)."""
        return len(self._published) - bisect.bisect_right(self._published, behaviour_version)

    def is_stale(self, behaviour_version: int) -> bool:
        return self.lag(behaviour_version) > self.max_staleness

    def record_lags(self, behaviour_versions: np.ndarray) -> np.ndarray:
        """Adds the lags of samples trained now (given their behaviour versions); returns them."""
        lags = np.array([self.lag(int(v)) for v in np.asarray(behaviour_versions).ravel()], np.int64)
        with self._cond:
            self.lag_hist.update(lags.tolist())
        return lags

    def advance(self, version: int, consumed_samples: int) -> None:
        """The trainer published `version` having consumed `consumed_samples` in total: reopen admission."""
        with self._cond:
            if version > self._published[-1]:
                self._published.append(version)
            self.version = version
            self.consumed = consumed_samples
            self._cond.notify_all()
        self._notify()

    def close(self) -> None:
        """Stops admitting (shutdown) and wakes every waiter."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._notify()

    # -- metrics and resume -----------------------------------------------------------------
    def metrics(self) -> dict:
        total = sum(self.lag_hist.values())
        top = max(self.lag_hist, default=0)
        return {
            "lag/max": top,
            "lag/mean": sum(k * v for k, v in self.lag_hist.items()) / total if total else 0.0,
            "lag/hist": [self.lag_hist.get(k, 0) for k in range(top + 1)],
            "lag/admission_waits": self.num_waits,
        }

    def state_dict(self) -> dict:
        # In-flight admissions are not saved: work in flight at a checkpoint is redone.
        return {"version": self.version, "consumed": self.consumed, "published": list(self._published),
                "lag_hist": {str(k): v for k, v in self.lag_hist.items()}}

    def load_state_dict(self, state: dict) -> None:
        with self._cond:
            self.version, self.consumed = int(state["version"]), int(state["consumed"])
            self._published = [int(v) for v in state["published"]]
            self.admitted = self.consumed
            self.lag_hist = Counter({int(k): int(v) for k, v in state["lag_hist"].items()})
            self._cond.notify_all()


class Ledger:
    """Every env step produced is trained on or dropped with a counted reason.

    `balance` (produced - trained - dropped) is the work still in flight; it is 0 after a
    clean shutdown, which a test checks.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.produced_env_steps = 0
        self.trained_env_steps = 0
        self.trained_samples = 0
        self.dropped_env_steps: Counter[str] = Counter()
        self.dropped_samples: Counter[str] = Counter()

    def produced(self, env_steps: int) -> None:
        with self._lock:
            self.produced_env_steps += env_steps

    def trained(self, samples: int, env_steps: int) -> None:
        with self._lock:
            self.trained_samples += samples
            self.trained_env_steps += env_steps

    def dropped(self, reason: str, samples: int, env_steps: int) -> None:
        with self._lock:
            self.dropped_samples[reason] += samples
            self.dropped_env_steps[reason] += env_steps

    @property
    def balance(self) -> int:
        return self.produced_env_steps - self.trained_env_steps - sum(self.dropped_env_steps.values())

    def metrics(self) -> dict:
        out = {"train/env_steps_produced": self.produced_env_steps, "train/env_steps_trained": self.trained_env_steps,
               "train/samples_trained": self.trained_samples, "train/env_steps_in_flight": self.balance}
        out.update({f"train/dropped_{k}_samples": v for k, v in self.dropped_samples.items()})
        out.update({f"train/dropped_{k}_env_steps": v for k, v in self.dropped_env_steps.items()})
        return out

    def state_dict(self) -> dict:
        return {"produced": self.produced_env_steps, "trained_env_steps": self.trained_env_steps,
                "trained_samples": self.trained_samples, "dropped_env_steps": dict(self.dropped_env_steps),
                "dropped_samples": dict(self.dropped_samples)}

    def load_state_dict(self, state: dict) -> None:
        # After resume nothing is in flight: whatever was in flight at save time is gone
        # and counted as dropped ("resume") so the totals still balance.
        self.produced_env_steps = int(state["produced"])
        self.trained_env_steps = int(state["trained_env_steps"])
        self.trained_samples = int(state["trained_samples"])
        self.dropped_env_steps = Counter(state["dropped_env_steps"])
        self.dropped_samples = Counter(state["dropped_samples"])
        lost = self.balance
        if lost:
            self.dropped_env_steps["resume"] += lost

