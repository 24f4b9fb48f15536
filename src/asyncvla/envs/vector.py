"""Many envs per worker behind one EnvPool-style `send`/`recv` protocol.

Each env steps on its own: `send(env_ids, actions)` starts action chunks on some envs,
`recv()` returns whichever envs have finished, so a slow or resetting env delays nobody.
Episodes auto-reset; the lockstep `step()` of synchronous RL is `send` to all + `recv` of all.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from asyncvla.envs.base import Env, EnvError, Obs


@dataclass
class EnvResult:
    """The outcome of one chunk on one env (or of its first reset)."""

    env_id: int
    obs: Obs
    """The observation to act on next: the reset observation if the episode just ended."""
    reward: float = 0.0
    """Sum of the rewards of the executed actions."""
    terminated: bool = False
    truncated: bool = False
    success: bool = False
    """The task succeeded at some step of this chunk."""
    num_steps: int = 0
    """Simulator steps executed (fewer than the chunk when the episode ended inside it)."""
    final_obs: Obs | None = None
    """Last observation of the episode that ended (to bootstrap a truncated episode)."""
    episode_return: float = 0.0
    episode_len: int = 0
    """Of the episode that ended; 0 where none ended."""
    episode_success: bool = False
    episode_index: int = 0
    """How many episodes this env had finished before `obs` (0 for its first)."""
    is_first: bool = False
    """`obs` comes from the env's very first reset; nothing else is meaningful."""
    error: str | None = None
    """The env failed mid-episode and was rebuilt; the cut episode must not be trained on."""
    step_s: float = 0.0
    """Wall time spent stepping and resetting for this result."""

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


_WAKE = object()  # a `wake()` marker in the ready queue


def _close_quietly(env: Env) -> None:
    try:
        env.close()
    except Exception:  # an env that cannot close is abandoned: a failure must not hide another
        pass


AUTO_FACTOR = 5.0
"""step_timeout_s auto: the deadline is this many times the slowest recent chunk."""
AUTO_WINDOW = 512
"""step_timeout_s auto: chunks the deadline is measured over."""
AUTO_MIN_CHUNKS = 32
"""step_timeout_s auto: chunks measured before the deadline leaves env.reset_timeout_s."""


class _EnvThread:
    """One env's own daemon thread running its jobs in order. Daemon: a hung env's thread, abandoned
    by the watchdog, must not keep the process from exiting (a pool's threads are joined at exit)."""

    def __init__(self, name: str):
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name=name).start()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            job()

    def submit(self, job: Callable[[], None]) -> None:
        self.jobs.put(job)

    def stop(self) -> None:
        self.jobs.put(None)


class _Slot:
    """Book-keeping of one env: its episode counters and reset-seed stream."""

    def __init__(self, make: Callable[[], Env], seed_seq: np.random.SeedSequence | np.random.Generator,
                 build: bool = True):
        self.make = make
        self.env: Env | None = make() if build else None
        self.rng = np.random.default_rng(seed_seq)
        self.busy = False
        self.started = 0.0
        """When its running chunk or reset was submitted (monotonic clock)."""
        self.limit_s = 0.0
        """The watchdog's deadline for what runs (a chunk's, or a reset's and rebuild's)..."""
        self.limit_field = ""
        """... and the setting it comes from, for the error message."""
        self.resetting = False
        """What runs is a first reset (reset_all / reset_some), not a chunk."""
        self.chunk_steps = 0
        """Steps the running chunk has completed (what a failure inside it loses)."""
        self.thread: _EnvThread | None = None
        """Its own thread (executor thread); None: it steps in the caller's thread."""
        self.ep_step = 0
        self.ep_return = 0.0
        self.ep_success = False
        self.ep_index = 0

    def successor(self, name: str) -> "_Slot":
        """A new incarnation of this env (its own thread, its env not built yet) that continues its reset
        seeds and episode count, and still owes the steps of the chunk that hung."""
        new = _Slot(self.make, self.rng, build=False)  # default_rng returns a Generator unaltered: the stream goes on
        new.ep_index, new.thread, new.chunk_steps = self.ep_index + 1, _EnvThread(name), self.chunk_steps
        return new

    def next_seed(self) -> int:
        return int(self.rng.integers(0, 2**31 - 1))

    def new_episode(self) -> Obs:
        self.ep_step, self.ep_return, self.ep_success = 0, 0.0, False
        return self.env.reset(self.next_seed())


class VectorEnv:
    """Envs of one worker. Not thread-safe: one caller drives `send`/`recv`.

    executor="inline" runs each chunk inside `send` (no overhead: CPU-bound simulators gain
    nothing from threads under the GIL); "thread" gives each env a thread, so envs whose step
    holds wall time without CPU (emulated, remote renderers, I/O) overlap.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Env]],
        seed: int | Sequence[int] = 0,
        max_episode_steps: int | None = None,
        end_on_success: bool = True,
        executor: str = "inline",
        step_timeout_s: float | str | None = None,
        reset_timeout_s: float = 60.0,
    ):
        # One seed per env (e.g. from its global id) keeps an env's episodes the same however
        # the envs are split into workers and managers; one int spawns a stream per env.
        if isinstance(seed, int):
            seqs = np.random.SeedSequence(seed).spawn(len(env_fns))
        else:
            if len(seed) != len(env_fns):
                raise ValueError(f"VectorEnv: {len(seed)} seeds for {len(env_fns)} envs")
            seqs = [np.random.SeedSequence(int(s)) for s in seed]
        self._slots = [_Slot(fn, s) for fn, s in zip(env_fns, seqs)]
        self.num_envs = len(self._slots)
        first = self._slots[0].env
        self.max_episode_steps = max_episode_steps or first.max_episode_steps
        self.end_on_success = end_on_success
        self.action_dim = first.action_dim
        self.proprio_dim = first.proprio_dim
        self._ready: queue.SimpleQueue[EnvResult] = queue.SimpleQueue()
        if executor == "thread":
            for i, slot in enumerate(self._slots):
                slot.thread = _EnvThread(f"env{i}")
        elif step_timeout_s is not None:
            raise ValueError("step_timeout_s needs executor='thread': an inline chunk cannot be abandoned")
        if isinstance(step_timeout_s, str) and step_timeout_s != "auto":
            raise ValueError(f"step_timeout_s={step_timeout_s!r}: a number of seconds, 'auto' or None")
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s
        """Deadline of resets and of the watchdog's rebuilds (only with step_timeout_s)."""
        self._chunk_s: deque[float] = deque(maxlen=AUTO_WINDOW)
        """Wall times of the last chunks that completed (step_timeout_s auto)."""
        self._started = False

    # -- protocol -------------------------------------------------------------------------
    def reset_all(self) -> None:
        """Starts every env's first episode; the observations arrive through `recv`."""
        for i, slot in enumerate(self._slots):
            slot.busy = True
            self._submit(self._first_reset, i)
        self._started = True

    def send(self, env_ids: Sequence[int], actions: np.ndarray) -> None:
        """Starts one action chunk on each env. actions: [n, K, A] (or [n, A] for K=1)."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim == 2:
            actions = actions[:, None, :]
        if len(env_ids) != actions.shape[0]:
            raise ValueError(f"send: {len(env_ids)} env ids but {actions.shape[0]} action chunks")
        for i, chunk in zip(env_ids, actions):
            slot = self._slots[int(i)]
            if slot.busy:
                raise RuntimeError(f"send: env {i} is still stepping; recv its result first")
            slot.busy = True
            self._submit(self._run_chunk, int(i), chunk)

    def recv(self, min_ready: int = 1, timeout_s: float | None = None) -> list[EnvResult]:
        """Returns the results of all envs that are ready, waiting for at least `min_ready`."""
        out: list[EnvResult] = []
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        woken = False
        while len(out) < min_ready and not woken:
            watch = self._next_hang_deadline()
            until = min((d for d in (deadline, watch) if d is not None), default=None)
            wait = None if until is None else max(0.0, until - time.monotonic())
            try:
                item = self._ready.get(timeout=wait)
            except queue.Empty:
                self._replace_hung()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                continue
            woken = item is _WAKE
            if not woken:
                out += self._current(item)
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if item is not _WAKE:
                out += self._current(item)
        self._replace_hung()
        return out

    def wake(self) -> None:
        """Makes a blocked `recv` return now (with what is ready, maybe nothing); thread-safe.

        The async runtime's env manager waits on env results and inference replies at once:
        a reply arriving on another thread calls `wake`.
        """
        self._ready.put(_WAKE)

    def recv_all(self, n: int) -> list[EnvResult]:
        """The results of `n` envs, ordered by env id; a `wake` does not cut the wait short (lockstep)."""
        results: list[EnvResult] = []
        while len(results) < n:
            results += self.recv(min_ready=n - len(results))
        return sorted(results, key=lambda r: r.env_id)

    def step(self, actions: np.ndarray) -> list[EnvResult]:
        """Lockstep: one chunk on every env, results ordered by env id."""
        self.send(range(self.num_envs), actions)
        return self.recv_all(self.num_envs)

    def reset(self) -> list[EnvResult]:
        """Lockstep reset of every env; returns the first observations ordered by env id."""
        self.reset_all()
        return self.recv_all(self.num_envs)

    def reset_some(self, env_ids: Sequence[int], seeds: Sequence[int]) -> None:
        """Restarts the episodes of `env_ids` from their new `seeds` (a GRPO group: one seed for all);
        the first observations arrive through `recv` (is_first)."""
        for i, s in zip(env_ids, seeds):
            slot = self._slots[int(i)]
            if slot.busy:
                raise RuntimeError(f"reset_some: env {i} is still stepping; recv its result first")
            slot.rng = np.random.default_rng(int(s))
            slot.busy = True
            self._submit(self._first_reset, int(i))

    @property
    def instructions(self) -> list[str]:
        return [s.env.instruction for s in self._slots]

    def close(self) -> None:
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.stop()
        for slot in self._slots:
            _close_quietly(slot.env)  # closing must not hide the error that got us here

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., EnvResult], i: int, *args, first: bool | None = None) -> None:
        """Runs fn(i, *args) for env i (in its thread); first: it stands for the env's first reset
        (default: fn is `_first_reset`), so its failure reports a first observation, not a cut."""
        slot = self._slots[i]
        slot.started, slot.resetting = time.monotonic(), fn == self._first_reset if first is None else first
        if fn == self._run_chunk:
            slot.limit_s = self.chunk_deadline_s()
            slot.limit_field = "env.step_timeout_s=auto: " if self.step_timeout_s == "auto" else "env.step_timeout_s="
        else:
            slot.limit_s, slot.limit_field = self.reset_timeout_s, "env.reset_timeout_s="
        if slot.thread is None:
            self._ready.put((slot, self._guarded(fn, i, *args)))
            return

        def job() -> None:
            try:
                self._ready.put((slot, self._guarded(fn, i, *args)))
            except BaseException as e:  # an env that cannot even be rebuilt must fail the caller's recv, not hang it
                self._ready.put(e)

        slot.thread.submit(job)

    def _current(self, item) -> list[EnvResult]:
        """The result in a ready-queue item, unless it comes from a slot replaced since (a hung env
        that returned late); an exception is raised."""
        if isinstance(item, BaseException):
            raise item
        slot, res = item
        if slot is not self._slots[res.env_id]:
            return []
        slot.busy = False  # collected: the watchdog must not also cut it
        if res.error is None and not res.is_first and res.step_s:
            self._chunk_s.append(res.step_s)
        return [res]

    def chunk_deadline_s(self) -> float:
        """The watchdog's deadline for a chunk submitted now (0 without a watchdog)."""
        if self.step_timeout_s != "auto":
            return self.step_timeout_s or 0.0
        if len(self._chunk_s) < AUTO_MIN_CHUNKS:
            return self.reset_timeout_s
        return AUTO_FACTOR * max(self._chunk_s)

    def _next_hang_deadline(self) -> float | None:
        if self.step_timeout_s is None:
            return None
        return min((s.started + s.limit_s for s in self._slots if s.busy), default=None)

    def _replace_hung(self) -> None:
        """Envs whose chunk or reset is past step_timeout_s: each is replaced by a new incarnation
        (its thread is abandoned; a late result is dropped), which builds its env and starts an
        episode in its own thread, then reports the cut (an error result). The caller's loop never
        waits for a build or a reset: the other envs step on meanwhile."""
        if self.step_timeout_s is None:
            return
        now = time.monotonic()
        for i, old in enumerate(self._slots):
            if old.busy and now - old.started > old.limit_s:
                new = old.successor(f"env{i}")
                old.thread.stop()  # after its hung job, if that ever returns
                # Released where it can be (a fault wrapper ends its hang; a simulator frees its
                # memory), from a thread of its own: closing a hung env may block too.
                threading.Thread(target=_close_quietly, args=(old.env,), daemon=True, name=f"close-env{i}").start()
                if old.resetting:  # no episode had started: the replacement's reset is the first observation
                    new.ep_index = old.ep_index
                self._slots[i] = new
                new.busy = True
                msg = f"env {i}: hung (no result within {old.limit_field}{old.limit_s:.3g} s); replaced"
                self._submit(self._replacement, i, msg, first=old.resetting)

    def _replacement(self, i: int, msg: str) -> EnvResult:
        """A hung env's successor, in its own thread: its env built, an episode started, the cut reported."""
        slot = self._slots[i]
        slot.env = slot.make()
        if slot.resetting:
            return EnvResult(i, slot.new_episode(), episode_index=slot.ep_index, error=msg, is_first=True)
        return EnvResult(i, slot.new_episode(), truncated=True, num_steps=slot.chunk_steps,
                         episode_index=slot.ep_index, error=msg)

    def _guarded(self, fn: Callable[..., EnvResult], i: int, *args) -> EnvResult:
        t0 = time.perf_counter()
        slot = self._slots[i]
        try:
            res = fn(i, *args)
        except Exception as e:  # a crashed or hung env is rebuilt; its episode is cut
            if slot is not self._slots[i]:  # replaced by the watchdog meanwhile: its successor runs on
                return EnvResult(i, None, error=f"late failure of a replaced env: {e}")  # dropped by _current
            res = self._rebuild(i, e, first=slot.resetting)
        res.step_s = time.perf_counter() - t0
        return res

    def _first_reset(self, i: int) -> EnvResult:
        return EnvResult(env_id=i, obs=self._slots[i].new_episode(), is_first=True)

    def _run_chunk(self, i: int, chunk: np.ndarray) -> EnvResult:
        slot = self._slots[i]
        reward, success = 0.0, False
        terminated = truncated = False
        slot.chunk_steps = 0
        for action in chunk:
            out = slot.env.step(action)
            slot.chunk_steps += 1
            slot.ep_step += 1
            reward += out.reward
            success = success or out.success
            terminated = out.terminated or (self.end_on_success and out.success)
            truncated = not terminated and (out.truncated or slot.ep_step >= self.max_episode_steps)
            if terminated or truncated:
                break
        slot.ep_return += reward
        slot.ep_success = slot.ep_success or success
        out.obs.time_left = max(0.0, 1.0 - slot.ep_step / self.max_episode_steps)
        res = EnvResult(i, out.obs, reward, terminated, truncated, success, slot.chunk_steps, episode_index=slot.ep_index)
        if terminated or truncated:
            res.final_obs = out.obs
            res.episode_return, res.episode_len, res.episode_success = slot.ep_return, slot.ep_step, slot.ep_success
            slot.ep_index += 1
            res.episode_index = slot.ep_index
            res.obs = slot.new_episode()
        return res

    def _rebuild(self, i: int, err: Exception, first: bool = False) -> EnvResult:
        slot = self._slots[i]
        cut = not first and slot.env is not None  # a watchdog successor that failed to build has counted its cut
        if slot.env is not None:
            _close_quietly(slot.env)
        slot.env = slot.make()
        slot.ep_index += int(cut)
        obs = slot.new_episode()
        msg = str(err) if isinstance(err, EnvError) else f"{type(err).__name__}: {err}"
        # A failed first reset has no episode to cut: the result is a (late) first observation.
        # The steps the failed chunk completed count as produced (and as lost with the cut episode).
        return EnvResult(i, obs, truncated=not first, num_steps=0 if first else slot.chunk_steps,
                         episode_index=slot.ep_index, error=msg, is_first=first)
