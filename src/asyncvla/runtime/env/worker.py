"""EnvWorker: one shard of envs, stepped a pipeline stage at a time, assembling trajectories.

The plain class does the work and is what tests and the `local` runtime build; Ray runs it
unchanged as an actor (`ray.remote(EnvWorker)`, see placement.py). Each env has its own
buffer of `Step`s, so the async runtime can cut per-env segments (`record` +
`pop_segments`) while the sync loop steps stages in lockstep (`step`) and `collect`s one
`[T, B]` Rollout per epoch.
"""

from __future__ import annotations

import time
from typing import Sequence

from asyncvla.config import EnvConfig
from asyncvla.envs.base import Obs
from asyncvla.envs.registry import env_fns, env_seed
from asyncvla.envs.vector import EnvResult, VectorEnv
from asyncvla.metrics.spans import Span, SpanRecorder
from asyncvla.policies.base import ActOut, ObsBatch, sample_key
from asyncvla.runtime.data import Rollout, Segment, Step, stack_segments
from asyncvla.runtime.env.groups import group_seed


class EnvWorker:
    """Global envs `first_env + i` for i < env.num_envs (default first_env: worker_index * num_envs),
    split into `num_stages` stages.

    Each env's reset seeds and each decision's sampling key are functions of env.seed, the
    global env id and the env's own counters, so an env plays the same episodes however the
    envs are split into workers, stages and managers, and whichever thread serves it.
    reset_each_epoch: start every rollout epoch from fresh episodes (GRPO), with the reset
    seeds shared by each group of `group_size` consecutive envs so a group starts from the
    same initial state.
    """

    def __init__(self, env_cfg: EnvConfig, worker_index: int = 0, num_stages: int = 1,
                 reset_each_epoch: bool = False, group_size: int = 1, trace: bool = True,
                 first_env: int | None = None):
        if env_cfg.num_envs % num_stages:
            raise ValueError(f"num_envs={env_cfg.num_envs} is not divisible by num_stages={num_stages}")
        self.cfg = env_cfg
        self.worker_index = worker_index
        self.num_stages = num_stages
        self.reset_each_epoch = reset_each_epoch
        self.group_size = group_size
        self.first_env = worker_index * env_cfg.num_envs if first_env is None else first_env
        self.rec = SpanRecorder("env", worker_index, enabled=trace)
        ids = [self.first_env + i for i in range(env_cfg.num_envs)]
        self.vec = VectorEnv(env_fns(env_cfg, first_env=self.first_env), seed=[env_seed(env_cfg, g) for g in ids],
                             max_episode_steps=env_cfg.max_episode_steps, end_on_success=env_cfg.end_on_success,
                             executor=env_cfg.executor)
        n = self.vec.num_envs
        self._decisions = [0] * n
        """Decisions each env has been sent (the sampling key's counter)."""
        self._obs: list[Obs | None] = [None] * n
        self._buffers: list[list[Step]] = [[] for _ in range(n)]
        self._in_flight: dict[int, Step] = {}  # env -> the step whose chunk is executing
        self._episodes: list[dict] = []
        self._epoch = 0
        self.env_steps = 0
        """Simulator steps executed by this worker since it started."""

    # -- description ----------------------------------------------------------------------
    def spec(self) -> dict:
        """Sizes the policy needs: action_dim, proprio_dim, num_envs, instructions."""
        return {"action_dim": self.vec.action_dim, "proprio_dim": self.vec.proprio_dim,
                "num_envs": self.vec.num_envs, "instructions": self.vec.instructions}

    def stage_ids(self, stage: int) -> list[int]:
        """Local env indices of pipeline stage `stage` (contiguous, so GRPO groups stay inside)."""
        per = self.vec.num_envs // self.num_stages
        return list(range(stage * per, (stage + 1) * per))

    def global_id(self, local: int) -> int:
        return self.first_env + local

    def batch(self, env_ids: Sequence[int]) -> ObsBatch:
        """Current observations of `env_ids`, with the sampling key of each env's next decision."""
        keys = [sample_key(self.cfg.seed, self.global_id(i), self._decisions[i]) for i in env_ids]
        return ObsBatch.stack([self._obs[i] for i in env_ids], keys)

    # -- sync protocol --------------------------------------------------------------------
    def start_epoch(self) -> list[ObsBatch]:
        """Begins a rollout epoch; returns the observation batch of every stage.

        The first call resets every env; later calls continue the running episodes (PPO,
        auto-reset) or start fresh ones (reset_each_epoch).
        """
        if self._obs[0] is None or self.reset_each_epoch:
            if self.reset_each_epoch:
                self.vec.reseed([group_seed(self.cfg.seed, self.global_id(i) // self.group_size, self._epoch)
                                 for i in range(self.vec.num_envs)])
            with self.rec.span("env_reset"):
                for r in self.vec.reset():
                    self._obs[r.env_id] = r.obs
        self._epoch += 1
        return [self.observe(s) for s in range(self.num_stages)]

    def observe(self, stage: int) -> ObsBatch:
        """Current observations of a stage's envs, in env order."""
        return self.batch(self.stage_ids(stage))

    def step(self, stage: int, act: ActOut) -> ObsBatch:
        """Executes one chunk on every env of `stage` (lockstep), records it, returns the next obs."""
        ids = self.stage_ids(stage)
        with self.rec.span("env_step"):
            self.send(ids, act)
            results: list[EnvResult] = []
            while len(results) < len(ids):
                results += self.vec.recv(min_ready=len(ids) - len(results))
            for r in results:
                self.record(r)
        return self.observe(stage)

    def collect(self) -> Rollout:
        """Cuts every env's buffer into a segment and stacks them to a `[T, B]` Rollout."""
        rollout = stack_segments(self.pop_segments())
        rollout.episodes, self._episodes = self._episodes, []
        return rollout

    # -- per-env assembly (shared with the async runtime) ---------------------------------
    def send(self, env_ids: Sequence[int], act: ActOut) -> None:
        """Starts the chunks of `act` (rows in `env_ids` order) and remembers what produced them."""
        for row, i in enumerate(env_ids):
            self._in_flight[i] = Step(obs=self._obs[i], action=act.actions[row], logprob=float(act.logprob[row]),
                                      value=float(act.value[row]), version=int(act.version))
            self._decisions[i] += 1
        self.vec.send(env_ids, act.actions)

    def record(self, r: EnvResult) -> None:
        """Completes the in-flight step of env `r.env_id` with its outcome and appends it to the buffer."""
        if r.is_first:
            self._obs[r.env_id] = r.obs
            return
        st = self._in_flight.pop(r.env_id)
        st.reward, st.terminated, st.truncated = r.reward, r.terminated, r.truncated
        st.valid, st.num_steps = r.error is None, r.num_steps
        st.final_obs = r.final_obs if r.truncated else None
        self._buffers[r.env_id].append(st)
        self._obs[r.env_id] = r.obs
        self.env_steps += r.num_steps
        if r.done and r.error is None:
            self._episodes.append({"env_id": self.global_id(r.env_id), "return": r.episode_return,
                                   "length": r.episode_len, "success": bool(r.episode_success)})
        # The VectorEnv timed the chunk in its own thread; keep it for the trace.
        if r.step_s and self.cfg.executor == "thread":
            now = time.time()
            self.rec.add("env_chunk", now - r.step_s, now)

    def pop_segments(self, env_ids: Sequence[int] | None = None) -> list[Segment]:
        """Hands over the buffered steps of `env_ids` (default all) as segments and empties those buffers."""
        ids = range(self.vec.num_envs) if env_ids is None else env_ids
        out = []
        for i in ids:
            out.append(Segment(self.global_id(i), self._buffers[i], self._obs[i]))
            self._buffers[i] = []
        return out

    def pop_episodes(self) -> list[dict]:
        """Episodes finished since the last call: {env_id, return, length, success}."""
        out, self._episodes = self._episodes, []
        return out

    # -- plumbing -------------------------------------------------------------------------
    def counters(self) -> dict:
        return {"env_steps": self.env_steps, "epoch": self._epoch, "decisions": list(self._decisions)}

    def set_counters(self, counters: dict) -> None:
        """Restores counters after a resume (env state itself restarts from fresh episodes)."""
        self.env_steps = int(counters.get("env_steps", 0))
        self._epoch = int(counters.get("epoch", 0))
        self._decisions = [int(d) for d in counters.get("decisions", self._decisions)]

    def drain_spans(self) -> list[Span]:
        return self.rec.drain()

    def close(self) -> None:
        self.vec.close()

