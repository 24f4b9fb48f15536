"""`asyncvla env-bench`: env steps/s through our protocol next to the raw simulator.

Both measurements use the same env instances, render settings and random actions, in the
same process, alternating in rounds so that load from elsewhere hits both alike; each
reported rate is the median over rounds.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from asyncvla.config import EnvConfig, env_config
from asyncvla.envs.registry import env_fns
from asyncvla.envs.vector import VectorEnv


def _raw_step_fn(env):
    """The simulator stepped directly: a backend's `raw_step` where it has one, else `step`."""
    return getattr(env, "raw_step", env.step)


def _time_protocol(venv: VectorEnv, rounds: int, chunk: int, rng: np.random.Generator) -> tuple[float, int]:
    steps = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        actions = rng.uniform(-1, 1, (venv.num_envs, chunk, venv.action_dim)).astype(np.float32)
        steps += sum(r.num_steps for r in venv.step(actions))
    return time.perf_counter() - t0, steps


def _time_raw(envs: list, rounds: int, chunk: int, rng: np.random.Generator) -> tuple[float, int]:
    steppers = [_raw_step_fn(e) for e in envs]
    action_dim = envs[0].action_dim
    t0 = time.perf_counter()
    for _ in range(rounds):
        actions = rng.uniform(-1, 1, (len(envs), chunk, action_dim)).astype(np.float32)
        for step, env_chunk in zip(steppers, actions):
            for a in env_chunk:
                step(a)
    return time.perf_counter() - t0, rounds * len(envs) * chunk


def env_bench(cfg: EnvConfig, steps: int, chunk: int = 1, repeats: int = 3) -> dict:
    """Returns steps/s of `cfg`'s envs via VectorEnv (`steps_per_s`) and stepped raw (`raw_steps_per_s`).

    Episodes are long enough not to end inside the measurement, so resets are not timed
    (resets are measured on their own as `reset_s`).
    """
    t0 = time.perf_counter()
    venv = VectorEnv(env_fns(cfg), seed=cfg.seed, max_episode_steps=10**9, end_on_success=False, executor=cfg.executor)
    create_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        venv.reset()
        reset_s = (time.perf_counter() - t0) / cfg.num_envs
        envs = [slot.env for slot in venv._slots]
        rounds = max(1, steps // (cfg.num_envs * chunk * repeats))
        rng = np.random.default_rng(cfg.seed)
        _time_protocol(venv, 1, chunk, rng)  # warm-up: first renders allocate contexts
        _time_raw(envs, 1, chunk, rng)
        proto, raw = [], []
        for _ in range(repeats):
            dt, n = _time_protocol(venv, rounds, chunk, rng)
            proto.append(n / dt)
            dt, n = _time_raw(envs, rounds, chunk, rng)
            raw.append(n / dt)
    finally:
        venv.close()
    steps_per_s, raw_steps_per_s = statistics.median(proto), statistics.median(raw)
    return {
        "env_id": cfg.id,
        "num_envs": cfg.num_envs,
        "image_size": cfg.image_size,
        "chunk": chunk,
        "executor": cfg.executor,
        "fast_render": getattr(cfg, "fast_render", None),  # rendering backends only
        "env_steps": 2 * repeats * rounds * cfg.num_envs * chunk,
        "create_s": round(create_s, 3),
        "reset_s": round(reset_s, 3),
        "steps_per_s": round(steps_per_s, 2),
        "raw_steps_per_s": round(raw_steps_per_s, 2),
        "ratio": round(steps_per_s / raw_steps_per_s, 3),
    }


# -- `asyncvla bench envs`: one representative task per backend ---------------------------

BACKEND_TASKS = {
    "emulated": "emulated/balanced",
    "metaworld": "metaworld/reach-v3",
    "libero": "libero/libero_spatial/0",
    "maniskill": "maniskill/PickCube-v1",
}
"""The task each backend is measured on (the ones the real-* workloads run)."""


def envs_bench(backends: list[str] | None = None, num_envs: int = 2, steps: int = 120, chunk: int = 4,
               image_size: int = 64, on_run=None) -> dict:
    """`env_bench` of each backend's task (default all); unavailable backends become skipped rows."""
    from asyncvla.config import ConfigError
    from asyncvla.envs.registry import get_backend

    names = backends or list(BACKEND_TASKS)
    for b in names:
        if b not in BACKEND_TASKS:
            raise ConfigError(f"backends={b!r} is invalid: allowed: {', '.join(BACKEND_TASKS)}")
    runs = []
    for b in names:
        ok, why = get_backend(b).available()
        if ok:
            # Emulated envs hold wall time: threads overlap them, as the runtime runs them.
            executor = "thread" if b == "emulated" else "inline"
            cfg = env_config(id=BACKEND_TASKS[b], num_envs=num_envs, image_size=image_size, executor=executor)
            row = {"mode": b, **env_bench(cfg, steps=steps, chunk=chunk)}
        else:
            row = {"mode": b, "env_id": BACKEND_TASKS[b], "skipped": why}
        runs.append(row)
        if on_run is not None:
            on_run(row)
    return {"bench": "envs", "workload": "backends", "kind": "real",
            "window": "median of 3 alternating rounds (protocol vs raw), resets excluded", "runs": runs}


def envs_plot(runs: list[dict], out_dir) -> list:
    """Protocol steps/s per backend with the raw simulator's steps/s as the tick."""
    from pathlib import Path

    from asyncvla.bench.report import bar_plot

    done = [r for r in runs if "steps_per_s" in r]
    return [bar_plot(done, Path(out_dir) / "envs.png", metric="steps_per_s", bound_key="raw_steps_per_s",
                     ylabel="env steps/s", title="env steps/s through the protocol (tick: raw simulator)")]
