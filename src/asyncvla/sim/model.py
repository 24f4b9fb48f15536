"""Discrete-event model of the RL pipeline (simpy), to project throughput to many GPUs.

The model has the same stages as the real runtime — envs, inference, trainer, weight sync —
with costs that come from measured traces or published figures. It answers: where is the
bottleneck, what would sync vs async give at 8, 64 or 256 GPUs, and how much of each
stage sits idle. Validated against the emulated workload at small scale (tests/sim).

Units: seconds; an env step is one simulator step; a sample is one policy decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import simpy


@dataclass
class StageCosts:
    """Per-operation costs; defaults are a LIBERO + OpenVLA-OFT-sized guess, to be calibrated."""

    env_step_s: float = 0.02
    """Mean wall time of one simulator step."""
    env_tail_prob: float = 0.0
    """Probability that a step takes env_tail_factor times the mean."""
    env_tail_factor: float = 10.0
    reset_s: float = 0.5
    env_slots: int = 0
    """Envs of one GPU that step truly in parallel (0: all, as a GPU-batched simulator; 1: one
    after another, as CPU simulators on one core). A sync stage takes the sum over slot groups
    of the slowest env in each group."""
    infer_fixed_s: float = 0.010
    """Inference latency of a batch of one (kernel launches, host sync)."""
    infer_per_sample_s: float = 0.0005
    """Added inference time per sample in a batch."""
    train_per_sample_s: float = 0.004
    """Forward+backward time per sample on one GPU."""
    weight_sync_s: float = 0.5
    """Broadcast of new weights to the inference GPUs."""
    allreduce_s: float = 0.05
    """Gradient all-reduce per optimizer step at 8 GPUs; grows with log2 of the trainer's GPUs."""

    def infer_s(self, batch: int) -> float:
        return self.infer_fixed_s + self.infer_per_sample_s * batch


@dataclass
class SimConfig:
    """One simulated deployment."""

    mode: str = "async"
    """sync (lockstep rollout, then train, then sync weights) or async (all stages overlap)."""
    num_gpus: int = 8
    envs_per_gpu: int = 16
    """Envs per GPU of the whole deployment (scales with num_gpus)."""
    chunk: int = 8
    """Env steps per decision."""
    episode_len: int = 480
    """Env steps per episode."""
    rollout_steps: int = 16
    """Decisions per env per rollout epoch (sync) = samples per env per update."""
    pipeline_stages: int = 1
    """Sync: env batches that overlap stepping and inference (RLinf)."""
    infer_fraction: float = 0.25
    """Async: share of GPUs that serve inference (the rest train); sync uses every GPU for both."""
    max_batch: int = 32
    max_wait_s: float = 0.005
    max_staleness: int = 1
    costs: StageCosts = field(default_factory=StageCosts)
    seconds: float = 120.0
    """Simulated wall time."""
    seed: int = 0

    @property
    def num_envs(self) -> int:
        return self.num_gpus * self.envs_per_gpu

    @property
    def samples_per_update(self) -> int:
        return self.num_envs * self.rollout_steps


@dataclass
class SimResult:
    mode: str
    num_gpus: int
    env_steps_per_s: float
    samples_per_s: float
    updates: int
    busy: dict[str, float]
    """Busy fraction per role (busy time / (wall time x units of the role))."""


class _Env:
    """Step-time draws of one env from its own random stream (reproducible)."""

    def __init__(self, costs: StageCosts, rng: np.random.Generator):
        self.costs, self.rng = costs, rng

    def chunk_s(self, steps: int) -> float:
        c = self.costs
        tails = self.rng.random(steps) < c.env_tail_prob
        return float(c.env_step_s * (steps + tails.sum() * (c.env_tail_factor - 1)))


def _train_s(cfg: SimConfig, samples: int, gpus: int) -> float:
    """Data-parallel update of `samples` on `gpus`, with an all-reduce that grows with log2(gpus)."""
    c = cfg.costs
    steps = max(1, math.ceil(samples / (gpus * 64)))  # 64 samples per GPU per optimizer step
    return c.train_per_sample_s * samples / gpus + steps * c.allreduce_s * max(1.0, math.log2(max(gpus, 2)) / 3)


def _simulate_sync(cfg: SimConfig) -> SimResult:
    """RLinf's loop: per GPU, its envs and its inference alternate step by step (overlapped across
    pipeline stages, a two-machine flow shop); all GPUs meet at the barrier before training."""
    rng = np.random.default_rng(cfg.seed)
    c, stages = cfg.costs, cfg.pipeline_stages
    per_stage = cfg.envs_per_gpu // stages
    inf_t = c.infer_s(per_stage)
    t = env_busy = infer_busy = train_busy = 0.0
    steps = updates = 0
    while t < cfg.seconds:
        env_end = np.zeros(cfg.num_gpus)                   # [G] when each GPU's env worker is free
        inf_end = np.zeros((cfg.num_gpus, stages))          # [G, S] when each stage's last inference ended
        for _ in range(cfg.rollout_steps):
            tails = rng.random((cfg.num_gpus, stages, per_stage, cfg.chunk)) < c.env_tail_prob
            chunk_s = c.env_step_s * (cfg.chunk + tails.sum(-1) * (c.env_tail_factor - 1))  # [G, S, E]
            slots = c.env_slots or per_stage
            groups = chunk_s.reshape(cfg.num_gpus, stages, -1, slots)        # [G, S, E/slots, slots]
            stage_s = groups.max(-1).sum(-1)                 # [G, S]: the slowest env of each group gates it
            for s in range(stages):
                env_end = np.maximum(env_end, inf_end[:, s]) + stage_s[:, s]
                prev = inf_end[:, s - 1] if s else inf_end[:, -1]
                inf_end[:, s] = np.maximum(prev, env_end) + inf_t
            env_busy += float(stage_s.sum(1).mean())
            infer_busy += inf_t * stages
        t += float(inf_end.max())                           # the barrier waits for the slowest GPU
        steps += cfg.num_envs * cfg.rollout_steps * cfg.chunk
        tr = _train_s(cfg, cfg.samples_per_update, cfg.num_gpus)
        t += tr + c.weight_sync_s
        train_busy += tr
        updates += 1
    return SimResult("sync", cfg.num_gpus, steps / t, steps / cfg.chunk / t, updates,
                     {"env": env_busy / t, "infer": infer_busy / t, "train": train_busy / t})


def _simulate_async(cfg: SimConfig) -> SimResult:
    """Every env, inference server and the trainer are simpy processes joined by stores."""
    sim = simpy.Environment()
    c = cfg.costs
    infer_gpus = max(1, round(cfg.num_gpus * cfg.infer_fraction))
    train_gpus = max(1, cfg.num_gpus - infer_gpus)
    requests = [simpy.Store(sim) for _ in range(infer_gpus)]
    slots = c.env_slots or cfg.envs_per_gpu
    steppers = [simpy.Resource(sim, capacity=slots) for _ in range(cfg.num_gpus)]
    samples = simpy.Container(sim)
    state = {"version": 0, "steps": 0, "samples": 0, "updates": 0, "infer_busy": 0.0, "train_busy": 0.0}
    global_batch = cfg.samples_per_update
    admitted = simpy.Container(sim, init=global_batch * (cfg.max_staleness + 1), capacity=10**12)

    def env_proc(i: int):
        env = _Env(c, np.random.default_rng([cfg.seed, i]))
        server = requests[i % infer_gpus]
        ep_steps = 0
        while True:
            # Admission control: a decision may start only while the lag it would have stays bounded.
            yield admitted.get(1)
            reply = sim.event()
            yield server.put(reply)
            yield reply
            with steppers[i // cfg.envs_per_gpu].request() as slot:
                yield slot
                yield sim.timeout(env.chunk_s(cfg.chunk))
            ep_steps += cfg.chunk
            state["steps"] += cfg.chunk
            yield samples.put(1)
            if ep_steps >= cfg.episode_len:
                ep_steps = 0
                yield sim.timeout(c.reset_s)

    def server_proc(store: simpy.Store):
        while True:
            batch = [(yield store.get())]
            opened = sim.now
            while len(batch) < cfg.max_batch:
                left = cfg.max_wait_s - (sim.now - opened)
                if left <= 0:
                    break
                get = store.get()
                got = yield get | sim.timeout(left)
                if get in got:
                    batch.append(got[get])
                else:
                    get.cancel()
                    break
            dt = c.infer_s(len(batch))
            state["infer_busy"] += dt
            yield sim.timeout(dt)
            for ev in batch:
                ev.succeed()

    def trainer_proc():
        while True:
            yield samples.get(global_batch)
            dt = _train_s(cfg, global_batch, train_gpus)
            state["train_busy"] += dt
            yield sim.timeout(dt)
            state["version"] += 1
            state["updates"] += 1
            state["samples"] += global_batch
            # Weight broadcast runs beside the next update (double-buffered), then admits new work.
            sim.process(publish())

    def publish():
        yield sim.timeout(c.weight_sync_s)
        yield admitted.put(global_batch)

    for i in range(cfg.num_envs):
        sim.process(env_proc(i))
    for store in requests:
        sim.process(server_proc(store))
    sim.process(trainer_proc())
    sim.run(until=cfg.seconds)
    t = cfg.seconds
    return SimResult("async", cfg.num_gpus, state["steps"] / t, state["samples"] / t, state["updates"],
                     {"infer": state["infer_busy"] / (t * infer_gpus), "train": state["train_busy"] / t})


def simulate(cfg: SimConfig) -> SimResult:
    """Runs the model of `cfg.mode` and returns its throughput and per-role busy fractions."""
    if cfg.mode == "sync":
        return _simulate_sync(cfg)
    if cfg.mode == "async":
        return _simulate_async(cfg)
    raise ValueError(f"mode={cfg.mode!r} is invalid: allowed: sync, async")


def scaling_sweep(base: SimConfig, gpus: list[int], modes: list[str]) -> list[SimResult]:
    return [simulate(replace(base, mode=m, num_gpus=g)) for g in gpus for m in modes]
