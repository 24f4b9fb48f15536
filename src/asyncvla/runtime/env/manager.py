"""EnvManager: one group of envs with its own loop, streaming observations to rollout servers.

An env worker (shard) holds one or more managers of possibly different sizes; each manager
runs its own loop (a thread here), so a fast manager never waits for a slow one.

- async_env on: every env is served on its own: whichever envs have finished their chunk
  are sent to inference (ready-first; in requests of at most `max_request` envs, the
  server's batch cap), the others keep stepping.
- async_env off: lockstep inside the manager (all its envs step, then one inference call).

Before an env starts a new segment it asks the `StalenessController` for admission
(pacing, so lag stays bounded without throwing finished work away). Finished segments go
into the bounded `TrajectoryQueue` (blocking when full). Every simulator step is counted in
the `Ledger` as produced; what never reaches the trainer is counted as dropped with a reason.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from asyncvla.envs.vector import EnvResult
from asyncvla.policies.base import ActOut, ObsBatch
from asyncvla.runtime.inference.batcher import REPLY_TIMEOUT_S, InferenceError, LocalTransport, Reply
from asyncvla.runtime.data import Segment
from asyncvla.runtime.env.worker import EnvWorker
from asyncvla.runtime.env.groups import EnvGroups
from asyncvla.runtime.queues import QueueClosed, TrajectoryQueue
from asyncvla.runtime.inference.server import Router
from asyncvla.runtime.learner.staleness import Ledger, StalenessController

log = logging.getLogger(__name__)


def split_request(ids: list[int], max_request: int | None) -> list[list[int]]:
    """Cuts the envs that are ready together into requests of at most `max_request` envs.

    The server never splits a request, so one request holding every ready env (all of them
    at the start of each rollout epoch) would run as one oversize batch that every env in it
    waits for; requests no larger than the server's batch cap let it pipeline them instead.
    """
    if not ids:
        return []
    step = max_request or len(ids)
    return [ids[k:k + step] for k in range(0, len(ids), step)]


class RolloutClient:
    """Routes a manager's requests over the rollout servers' transports."""

    def __init__(self, transports: list[LocalTransport], router: Router):
        self.transports = transports
        self.router = router

    def submit(self, client: int, obs: ObsBatch, on_reply: Callable[[Reply], None]) -> None:
        n = len(obs)
        server = self.router.pick(client, n)

        def done(reply: Reply) -> None:
            self.router.done(server, n)
            on_reply(reply)

        self.transports[server].submit(client, obs, n, on_reply=done)

    def act(self, client: int, obs: ObsBatch) -> ActOut:
        """Blocking request (lockstep managers)."""
        box: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self.submit(client, obs, box.put)
        try:
            return box.get(timeout=REPLY_TIMEOUT_S).unwrap()
        except queue.Empty:
            raise InferenceError(f"env manager {client}: no inference reply within {REPLY_TIMEOUT_S:g} s") from None


class EnvManager:
    """One manager's loop: env results in, requests out, segments into the queue."""

    def __init__(self, index: int, worker: EnvWorker, client: RolloutClient, controller: StalenessController,
                 trajectories: TrajectoryQueue, ledger: Ledger, segment_len: int, async_env: bool,
                 max_request: int | None = None, groups: EnvGroups | None = None, chunk: int = 1):
        """max_request: most envs per inference request in async_env mode (None: every ready env in one).
        groups: GRPO: whole-episode segments, emitted and restarted per group (env/groups.py);
        chunk: actions per decision, so an episode's admission covers max_episode_steps."""
        self.index = index
        self.worker = worker
        self.vec = worker.vec
        self.client = client
        self.controller = controller
        self.queue = trajectories
        self.ledger = ledger
        self.segment_len = segment_len
        self.async_env = async_env
        self.max_request = max_request
        self.groups = groups
        self._resets = 0
        """Lockstep: resets submitted whose first observation has not arrived yet (it waits for them)."""
        self.episode_decisions = -(-self.vec.max_episode_steps // chunk)
        n = self.vec.num_envs
        self.remaining = [0] * n
        """Admitted decisions left in each env's current segment (0: needs admission)."""
        self._replies: queue.SimpleQueue[tuple[list[int], Reply]] = queue.SimpleQueue()
        self.stop_event = threading.Event()
        self.env_busy_s = 0.0
        """Wall time the envs spent stepping (summed over envs)."""
        self.episodes: list[dict] = []
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self._admission_wakes = hasattr(controller, "add_listener")
        if self._admission_wakes:  # a remote (Ray) admission proxy has none: then paused envs poll
            controller.add_listener(self.vec.wake)

    @property
    def num_envs(self) -> int:
        return self.vec.num_envs

    # -- the loops ---------------------------------------------------------------------------
    def run(self) -> None:
        """Thread body: loops until `stop()`, then settles its in-flight work."""
        try:
            self._run_async() if self.async_env else self._run_lockstep()
        except BaseException as e:  # surfaced by the pipeline, which stops everything
            self.error = e
        finally:
            self._drop_buffers("shutdown")

    def stop(self) -> None:
        self.stop_event.set()
        self.vec.wake()

    def _reset_all(self) -> None:
        # GRPO: every group's first round starts its members from one shared state too.
        if self.groups is None:
            self._resets += self.vec.num_envs
            self.vec.reset_all()
            return
        for g in range(self.vec.num_envs // self.groups.group_size):
            self._reset_group(g)

    def _reset_group(self, g: int) -> None:
        members = self.groups.members(g)
        self._resets += len(members)
        self.vec.reset_some(members, [self.groups.round_seed(g)] * len(members))

    def _run_async(self) -> None:
        self._reset_all()
        busy = set(range(self.vec.num_envs))  # envs stepping or resetting
        paused: list[int] = []  # envs with an observation, waiting for admission
        while not self.stop_event.is_set():
            # Block until an env finishes, a reply arrives or admission reopens (all three wake
            # the recv); poll while paused only when the controller cannot wake us (remote).
            poll = paused and not self._admission_wakes
            paused = self._dispatch(self.vec.recv(min_ready=1, timeout_s=0.01 if poll else 0.5), busy, paused)
            # Only the replies already here: with an inline executor each send takes a chunk, and
            # replies that arrive meanwhile must not keep this loop from seeing stop or new results.
            for _ in range(self._replies.qsize()):
                ids, reply = self._replies.get_nowait()
                self.worker.send(ids, reply.unwrap())  # a server's error ends this manager, named
                busy.update(ids)
                # An inline executor ran the chunk inside `send`: the envs that finished send their
                # requests now, so their inference overlaps the next env's chunk instead of following it.
                paused = self._dispatch(self.vec.recv(min_ready=0, timeout_s=0), busy, paused)
        self._settle(busy)

    def _dispatch(self, results: list[EnvResult], busy: set[int], paused: list[int]) -> list[int]:
        """Records results, submits the requests of every admitted env; returns the envs still paused."""
        for r in results:
            busy.discard(r.env_id)
            if self._on_result(r):
                paused.append(r.env_id)
        go, paused = self._admit(paused)
        for ids in split_request(go, self.max_request):
            self.client.submit(self.index, self.worker.batch(ids),
                               lambda reply, ids=ids: self._on_reply(ids, reply))
        return paused

    def _run_lockstep(self) -> None:
        """All admitted envs step together, then one inference request (RLinf's lockstep rollout)."""
        self._reset_all()
        waiting = self._finish_resets()
        while not self.stop_event.is_set():
            go, waiting = self._admit(waiting)
            if not go:
                self.controller.admit(0, timeout_s=0.05)  # sleeps until admission may reopen
                continue
            act = self.client.act(self.index, self.worker.batch(go))
            with self.worker.rec.span("env_step"):
                self.worker.send(go, act)
                results = self.vec.recv_all(len(go))
            # A GRPO env whose episode ended waits for its group; the group's restart arrives as resets.
            waiting = sorted(waiting + [r.env_id for r in results if self._on_result(r)] + self._finish_resets())

    def _finish_resets(self) -> list[int]:
        """Lockstep: waits for the first observations of every reset submitted; returns those envs."""
        ready = [r.env_id for r in self.vec.recv_all(self._resets) if self._on_result(r)]
        self._resets = 0
        return ready

    def _on_reply(self, ids: list[int], reply: Reply) -> None:
        # Runs on a server thread: hand over and wake the manager's loop.
        self._replies.put((ids, reply))
        self.vec.wake()

    def _admit(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """(envs that may act now, envs still waiting for admission): one admission for every env
        that needs one, shared out in order. One admission per env could straddle a trainer's
        advance and split a lockstep stage's request (seen on Ray)."""
        need = [i for i in ids if self.remaining[i] == 0]
        per = self.segment_len if self.groups is None else self.episode_decisions
        left = self.controller.try_admit(per * len(need)) if need else 0
        for i in need:
            # A GRPO segment is a whole episode or nothing; a PPO one may be cut short.
            self.remaining[i] = min(per, left) if self.groups is None or left >= per else 0
            left -= self.remaining[i]
        if left:
            self.controller.refund(left)
        return [i for i in ids if self.remaining[i] > 0], [i for i in ids if self.remaining[i] == 0]

    # -- per-env book-keeping ----------------------------------------------------------------
    def _on_result(self, r: EnvResult) -> bool:
        """Records one env result; returns True when the env now has an observation to act on."""
        i = r.env_id
        self.ledger.produced(r.num_steps)
        self.env_busy_s += r.step_s
        self.worker.record(r)
        if r.done or r.error is not None:
            with self._lock:
                self.episodes += self.worker.pop_episodes()
        if r.is_first:
            return True
        if self.groups is not None:
            return self._on_group_result(r)
        if r.error is not None:
            log.warning("env manager %d, env %d: %s; its episode is cut there and the env is rebuilt",
                        self.index, self.worker.global_id(i), r.error)
            self._cut_on_error(i)
        else:
            self.remaining[i] -= 1
            if self.remaining[i] == 0:
                self._emit(self.worker.pop_segments([i])[0])
        return True

    def _on_group_result(self, r: EnvResult) -> bool:
        """GRPO: an env's episode is one segment; it waits (False) for its group once it ends."""
        i = r.env_id
        if r.error is None and not r.done:
            self.remaining[i] -= 1
            return True
        seg = self.worker.pop_segments([i])[0]
        self.controller.refund(self.remaining[i] - (1 if r.error is None else 0))
        self.remaining[i] = 0
        if r.error is not None:  # the cut episode cannot be scored: it and its group are dropped
            self.ledger.dropped("env_error", 1, seg.steps[-1].num_steps)
            self._drop_segments([Segment(seg.env_id, seg.steps[:-1], seg.next_obs)], "group_spoiled")
            seg = None
        done = self.groups.finish(i, seg)
        if done is not None:
            g, segs, spoiled = done
            if spoiled:
                self._drop_segments(segs, "group_spoiled")
            else:
                for member_seg in segs:
                    self._emit(member_seg)
            self._reset_group(g)
        return False

    def _cut_on_error(self, i: int) -> None:
        # The failed chunk (last step, invalid) is dropped; the decisions before it are kept
        # and bootstrap from the observation the failed chunk started from.
        seg = self.worker.pop_segments([i])[0]
        bad = seg.steps[-1]
        self.ledger.dropped("env_error", 1, bad.num_steps)
        self.controller.refund(self.remaining[i])  # the failed slot and the unused rest
        self.remaining[i] = 0
        if len(seg) > 1:
            self._emit(Segment(seg.env_id, seg.steps[:-1], bad.obs))

    def _emit(self, seg: Segment) -> None:
        try:
            self.queue.put(seg)  # blocks while the queue is full: backpressure
        except QueueClosed:
            self.ledger.dropped("shutdown", len(seg), seg.env_steps)

    def _settle(self, busy: set[int]) -> None:
        """After stop: collect chunks still executing, so their env steps are counted."""
        for _ in range(100):
            if not busy:
                return
            for r in self.vec.recv(min_ready=len(busy), timeout_s=0.1):
                busy.discard(r.env_id)
                self.ledger.produced(r.num_steps)
                self.worker.record(r)

    def _count_dropped(self, segs: list[Segment], reason: str) -> int:
        """Counts the valid steps of `segs` as dropped for `reason` (failed ones as env_error); returns
        how many valid decisions."""
        n = 0
        for seg in segs:
            steps = [st for st in seg.steps if st.valid]
            if steps:
                self.ledger.dropped(reason, len(steps), sum(st.num_steps for st in steps))
                n += len(steps)
            failed = [st for st in seg.steps if not st.valid]  # e.g. a chunk that failed while shutting down
            if failed:
                self.ledger.dropped("env_error", len(failed), sum(st.num_steps for st in failed))
        return n

    def _drop_segments(self, segs: list[Segment], reason: str) -> None:
        # Admitted work that will never reach the trainer goes back to the staleness budget.
        self.controller.refund(self._count_dropped(segs, reason))

    def _drop_buffers(self, reason: str) -> None:
        if self.groups is not None:
            self._drop_segments(self.groups.held(), reason)
        self._count_dropped(self.worker.pop_segments(), reason)

    def pop_episodes(self) -> list[dict]:
        with self._lock:
            out, self.episodes = self.episodes, []
        return out
