"""The learner: segments stream in, updates and versions stream out (`StreamingTrainer`).

It feeds the `Trainer`'s math (advantages, PPO/GRPO losses, epochs) from the trajectory
queue in one of three modes (the plan picks one):
- `epoch`: collect an update's samples, run `update_epochs` x minibatches, publish once. At
  max_staleness 0 (decoupled_actor off) rollouts wait meanwhile and the loss is plain PPO
  against the behaviour logprob: the synchronous loop. Above 0 the loss is decoupled PPO.
- `accumulate`: one optimizer step exactly every update's samples; a segment that straddles
  the boundary is split and its rest carried over.
- `streaming`: one optimizer step per `minibatch_size` samples as they arrive.
The decoupled loss recomputes the proximal logprob right before the step, clips against it
and reweights to the behaviour policy (truncated importance weight). After every update the
weights are published to the `WeightStore`, then the `StalenessController` reopens admission.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from asyncvla.config import ConfigError
from asyncvla.runtime.data import Rollout, Segment, stack_segments
from asyncvla.runtime.env.groups import GroupBuffer
from asyncvla.runtime.learner.staleness import Ledger, StalenessController
from asyncvla.runtime.learner.trainer import Trainer
from asyncvla.runtime.inference.weight_store import WeightStore

TRAINER_MODES = ("epoch", "accumulate", "streaming")


def split_segment(seg: Segment, k: int) -> tuple[Segment, Segment]:
    """The first k decisions and the rest; the head bootstraps from the tail's first observation."""
    if not 0 < k < len(seg):
        raise ValueError(f"split_segment: k={k} must be in (0, {len(seg)})")
    return Segment(seg.env_id, seg.steps[:k], seg.steps[k].obs), Segment(seg.env_id, seg.steps[k:], seg.next_obs)


class StreamingTrainer:
    """Consumes segments one at a time and runs an update whenever a full batch is buffered."""

    def __init__(self, trainer: Trainer, mode: str, global_batch: int, store: WeightStore,
                 controller: StalenessController, ledger: Ledger | None = None, envs_per_worker: int | None = None,
                 group_size: int = 0):
        """envs_per_worker: a batch is one rollout per env worker, columns in env order, whatever order
        the segments arrived in; group_size: GRPO's, whole groups only (0: ungrouped segments)."""
        if mode not in TRAINER_MODES:
            raise ConfigError(f"runtime.trainer_mode={mode!r} is invalid: allowed: {', '.join(TRAINER_MODES)}")
        self.trainer = trainer
        self.mode = mode
        self.store = store
        self.controller = controller
        self.ledger = ledger or Ledger()
        algo = trainer.algo
        self.batch_samples = algo.minibatch_size if mode == "streaming" else global_batch
        """Samples per update (one optimizer step, except in epoch mode)."""
        self.epochs = algo.update_epochs if mode == "epoch" else 1
        if mode != "epoch":
            # One minibatch = the whole update: exactly one optimizer step per batch_samples.
            trainer.algo = dataclasses.replace(algo, minibatch_size=self.batch_samples)
        trainer.decoupled = mode != "epoch" or controller.max_staleness > 0
        self.groups = GroupBuffer(group_size) if group_size else None
        """GRPO: whole groups of whole-episode segments only (runtime/groups.py)."""
        if self.groups is not None and mode != "epoch":
            raise ConfigError(f"runtime.trainer_mode={mode!r} is invalid with algo.name={algo.name!r}: allowed: epoch "
                              "(a GRPO group is scored as a whole, never split into micro-batches)")
        self._buf: list[Segment] = []
        self._buf_n = 0
        self.envs_per_worker = envs_per_worker
        self.is_last: Callable[[], bool] = lambda: False
        """Asked before an update reopens admission: True when the run's budget ends with it, so
        no rollout starts that the run would only drop at shutdown (the sync loop stops exactly)."""
        self.consumed = 0
        self.num_updates = 0
        self.train_s = 0.0
        self.publish_s = 0.0

    @property
    def version(self) -> int:
        return self.trainer.version

    @property
    def buffered_samples(self) -> int:
        """Samples received but not trained yet (the carried-over remainder)."""
        if self.groups is not None:
            return self.groups.samples + self.groups.pending_samples
        return self._buf_n

    def add(self, seg: Segment) -> list[dict]:
        """Buffers one segment; runs as many updates as full batches are buffered; returns their stats."""
        if not all(st.valid for st in seg.steps):
            raise ValueError(f"segment of env {seg.env_id} holds invalid steps; cut them before queueing")
        grouped = self.groups is not None  # GRPO: whole groups only, never split
        if len(seg) and grouped:
            self.groups.add(seg)
        elif len(seg):
            self._buf.append(seg)
            self._buf_n += len(seg)
        out = []
        while True:
            self._drop_stale_groups() if grouped else self._drop_stale()
            if (self.groups.samples if grouped else self._buf_n) < self.batch_samples:
                return out
            out.append(self._update(self.groups.take(self.batch_samples) if grouped else self._cut(self.batch_samples)))

    def drop_buffered(self, reason: str) -> int:
        """Drops the carried-over remainder (shutdown), counting it; returns the samples dropped."""
        if self.groups is not None:
            self._buf += self.groups.drain()
            self._buf_n = sum(map(len, self._buf))
        n = self._buf_n
        for seg in self._buf:
            self.ledger.dropped(reason, len(seg), seg.env_steps)
        self._buf, self._buf_n = [], 0
        return n

    # -- internals ------------------------------------------------------------------------
    def _drop_stale_groups(self) -> None:
        # A group is scored as a whole: one stale member drops (and counts) all of it.
        kept = []
        for group in self.groups.groups:
            if any(self.controller.is_stale(st.version) for seg in group for st in seg.steps):
                for seg in group:
                    self.ledger.dropped("stale", len(seg), seg.env_steps)
                    self.controller.refund(len(seg))
            else:
                kept.append(group)
        self.groups.groups = kept

    def _drop_stale(self) -> None:
        # Pacing keeps lag within bounds; this is the safety net (e.g. inference a batch
        # behind the trainer). A segment is contiguous, so its stale prefix is cut.
        kept = []
        for seg in self._buf:
            stale = [i for i, st in enumerate(seg.steps) if self.controller.is_stale(st.version)]
            if stale:
                k = stale[-1] + 1
                head, seg = (seg, None) if k == len(seg) else split_segment(seg, k)
                self.ledger.dropped("stale", len(head), head.env_steps)
                self.controller.refund(len(head))
                self._buf_n -= len(head)
            if seg is not None:
                kept.append(seg)
        self._buf = kept

    def _cut(self, n: int) -> list[Segment]:
        taken, have = [], 0
        while have < n:
            seg = self._buf.pop(0)
            if have + len(seg) > n:
                seg, rest = split_segment(seg, n - have)
                self._buf.insert(0, rest)
            taken.append(seg)
            have += len(seg)
        self._buf_n -= n
        return taken

    def _rollouts(self, segs: Sequence[Segment]) -> list[Rollout]:
        """The batch as time-major rollouts: one per env worker, columns by (GRPO round, env id)."""
        per = self.envs_per_worker or max(s.env_id for s in segs) + 1
        key = lambda s: (s.env_id // per, s.group[2] if s.group else 0, s.env_id)  # noqa: E731
        ordered = sorted(segs, key=key)  # stable: one env's segments keep their time order
        workers = sorted({s.env_id // per for s in ordered})
        return [stack_segments([s for s in ordered if s.env_id // per == w]) for w in workers]

    def _update(self, segs: Sequence[Segment]) -> dict:
        rollouts = self._rollouts(segs)
        lags = self.controller.record_lags(np.concatenate([r.version[r.mask] for r in rollouts]))
        t0 = time.perf_counter()
        stats = self.trainer.train(rollouts, self.epochs)
        t1 = time.perf_counter()
        self.train_s += t1 - t0
        n = sum(r.num_samples for r in rollouts)
        self.consumed += n
        self.num_updates += 1
        # Publish first, then reopen admission: a rollout admitted on the new version must find it.
        with self.trainer.rec.span("weight_sync"):
            self.store.publish(self.trainer.policy.published_state(), self.trainer.version)
        self.publish_s += time.perf_counter() - t1
        if self.is_last():
            self.controller.close()  # first: the advance below then records the version but admits nothing
        self.controller.advance(self.trainer.version, self.consumed)
        self.ledger.trained(n, sum(s.env_steps for s in segs))
        stats.update({"lag/batch_max": int(lags.max(initial=0)), "lag/batch_mean": float(lags.mean()) if len(lags) else 0.0,
                      "train/env_steps": float(sum(r.env_steps for r in rollouts))})
        return stats
