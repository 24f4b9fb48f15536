"""EnvWorker: the envs of one env manager, with per-env trajectory assembly.

Each env has its own buffer of `Step`s: `send` starts chunks and remembers what produced
them, `record` completes a step with its outcome, `pop_segments` cuts buffers into segments.
The env manager (env/manager.py) drives it, lockstep or each env on its own.
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
from asyncvla.runtime.data import Segment, Step


class EnvWorker:
    """Global envs `first_env + i` for i < env.num_envs (default first_env: worker_index * num_envs).

    Each env's reset seeds and each decision's sampling key are functions of env.seed, the
    global env id and the env's own counters, so an env plays the same episodes however the
    envs are split into workers, stages and managers, and whichever thread serves it.
    """

    def __init__(self, env_cfg: EnvConfig, worker_index: int = 0, trace: bool = True, first_env: int | None = None):
        self.cfg = env_cfg
        self.worker_index = worker_index
        self.first_env = worker_index * env_cfg.num_envs if first_env is None else first_env
        self.rec = SpanRecorder("env", worker_index, enabled=trace)
        ids = [self.first_env + i for i in range(env_cfg.num_envs)]
        self.vec = VectorEnv(env_fns(env_cfg, first_env=self.first_env), seed=[env_seed(env_cfg, g) for g in ids],
                             max_episode_steps=env_cfg.max_episode_steps, end_on_success=env_cfg.end_on_success,
                             executor=env_cfg.executor, step_timeout_s=env_cfg.step_timeout_s,
                             reset_timeout_s=env_cfg.reset_timeout_s)
        n = self.vec.num_envs
        self._decisions = [0] * n
        """Decisions each env has been sent (the sampling key's counter)."""
        self._obs: list[Obs | None] = [None] * n
        self._buffers: list[list[Step]] = [[] for _ in range(n)]
        self._in_flight: dict[int, Step] = {}  # env -> the step whose chunk is executing
        self._episodes: list[dict] = []

    # -- description ----------------------------------------------------------------------
    def spec(self) -> dict:
        """Sizes the policy needs: action_dim, proprio_dim, num_envs, max_episode_steps, instructions."""
        return {"action_dim": self.vec.action_dim, "proprio_dim": self.vec.proprio_dim, "num_envs": self.vec.num_envs,
                "max_episode_steps": self.vec.max_episode_steps, "instructions": self.vec.instructions}

    def global_id(self, local: int) -> int:
        return self.first_env + local

    def batch(self, env_ids: Sequence[int]) -> ObsBatch:
        """Current observations of `env_ids`, with the sampling key of each env's next decision."""
        keys = [sample_key(self.cfg.seed, self.global_id(i), self._decisions[i]) for i in env_ids]
        return ObsBatch.stack([self._obs[i] for i in env_ids], keys)

    # -- per-env assembly ------------------------------------------------------------------
    def send(self, env_ids: Sequence[int], act: ActOut) -> None:
        """Starts the chunks of `act` (rows in `env_ids` order) and remembers what produced them."""
        for row, i in enumerate(env_ids):
            self._in_flight[i] = Step(obs=self._obs[i], action=act.actions[row], logprob=float(act.logprob[row]),
                                      value=float(act.value[row]), version=int(act.version),
                                      aux=None if act.aux is None else act.aux[row])
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
    def drain_spans(self) -> list[Span]:
        return self.rec.drain()

    def close(self) -> None:
        self.vec.close()

