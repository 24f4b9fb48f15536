"""The synchronous RL loop (the RLinf baseline), top to bottom in one place.

for each rollout epoch:
  1. rollout: every env steps in lockstep for `rollout_steps` decisions, one inference call
     per (env worker, stage) between steps; with 2 or 4 stages one stage's envs step while
     another stage's inference runs (RLinf's env/rollout pipelining);
  2. train: advantages (GAE or GRPO), then `update_epochs` passes of PPO minibatches;
  3. weight sync: the new version reaches every inference worker before the next epoch;
  4. metrics, periodic evaluation, checkpoints (every N updates, last, best).

The same code drives local (one process), Ray colocated and Ray disaggregated workers
(placement.py hands out handles with one calling convention). A crash leaves intact logs
and the last checkpoint; `run.resume=RUN_DIR` continues from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from asyncvla.config import TrainConfig, from_dict, to_dict
from asyncvla.metrics.spans import Span, SpanRecorder, load_chrome_trace, phase_times, utilization, write_chrome_trace
from asyncvla.metrics.writer import MetricsWriter
from asyncvla.runtime.placement import Workers, build_workers, init_ray, shutdown_workers
from asyncvla.runtime.weight_sync import make_weight_sync

WORKER_ROLES = ("env", "rollout", "trainer")
MAX_TRACE_SPANS = 500_000


@dataclass
class RunState:
    """Counters that a checkpoint carries so a resumed run continues where it stopped."""

    update: int = 0
    env_steps: int = 0
    samples: int = 0
    version: int = 0
    wall_s: float = 0.0
    best_success: float = -1.0
    success_before: float | None = None
    success_after: float | None = None
    window_env_steps: int = 0
    """Env steps of the updates after the first (the throughput window excludes warm-up)."""
    window_s: float = 0.0


# -- run directory --------------------------------------------------------------------------

def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Creates the run directory and writes the resolved config.yaml into it."""
    if cfg.run.resume:
        run_dir = Path(cfg.run.resume)
    else:
        run_dir = Path(cfg.run.out_dir or f"runs/{cfg.env.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.run.out_dir = str(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run_dir


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config of an existing run (for `--resume`)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        from asyncvla.config import ConfigError

        raise ConfigError(f"run.resume={str(run_dir)!r} is invalid: no config.yaml there (not a run directory)")
    cfg = from_dict(TrainConfig, yaml.safe_load(path.read_text()), where=str(path))
    cfg.run.resume = str(run_dir)
    return cfg


# -- 1. rollout -------------------------------------------------------------------------------

def collect_rollouts(w: Workers, cfg: TrainConfig) -> list[Any]:
    """Submits one lockstep rollout epoch and returns one Rollout ref per env worker.

    Every call is submitted up front; each actor runs its calls in order and waits for
    their inputs, so stage s+1's env step overlaps stage s's inference with no driver
    round trips (in local mode the calls simply run in this order).
    """
    stages, steps = cfg.runtime.pipeline_stages, cfg.runtime.rollout_steps
    acts: dict[tuple[int, int], Any] = {}
    for i, env in enumerate(w.envs):
        env.start_epoch.remote()
        rollout = w.rollouts[i % len(w.rollouts)]
        for s in range(stages):
            acts[i, s] = rollout.act.remote(env.observe.remote(s))
    for t in range(steps):
        for i, env in enumerate(w.envs):
            rollout = w.rollouts[i % len(w.rollouts)]
            for s in range(stages):
                obs = env.step.remote(s, acts[i, s])
                if t < steps - 1:  # the observation after the last step is only bootstrapped
                    acts[i, s] = rollout.act.remote(obs)
    return [env.collect.remote() for env in w.envs]


# -- checkpoints and evaluation ----------------------------------------------------------------

def save_checkpoint(w: Workers, run_dir: Path, state: RunState, tag: str, extra_files: dict[str, dict] | None = None) -> Path:
    """Writes checkpoints/<tag> atomically (tmp dir + rename): policy, optimizer, RNG, counters.

    extra_files: more JSON files for the same checkpoint (e.g. the async runtime's
    staleness and ledger state), written before the rename so they are never out of step.
    """
    root = run_dir / "checkpoints"
    root.mkdir(exist_ok=True)
    final, tmp = root / tag, root / f".{tag}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    w.get(w.trainer.save.remote(str(tmp), {"run_state": dataclasses.asdict(state)}))
    (tmp / "run_state.json").write_text(json.dumps(dataclasses.asdict(state)))
    for name, obj in (extra_files or {}).items():
        (tmp / name).write_text(json.dumps(obj))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def load_checkpoint(w: Workers, run_dir: Path) -> RunState:
    """Restores the trainer from checkpoints/last and returns the run counters."""
    ckpt = run_dir / "checkpoints" / "last"
    if not (ckpt / "run_state.json").exists():
        from asyncvla.config import ConfigError

        raise ConfigError(f"run.resume={str(run_dir)!r} is invalid: no checkpoints/last in it to resume from")
    w.get(w.trainer.load.remote(str(ckpt)))
    return RunState(**json.loads((ckpt / "run_state.json").read_text()))


def evaluate(w: Workers, cfg: TrainConfig, run_dir: Path, state: RunState, eval_policy, pull: bool | None = None) -> dict:
    """Deterministic episodes on the eval split with the trainer's current weights (in the driver).

    pull: copy the trainer's weights into `eval_policy` first; default: unless local, where
    `eval_policy` is the trainer's own policy object.
    """
    from asyncvla.runtime.evaluation import evaluate_policy

    if cfg.run.eval_episodes == 0:
        return {}
    if (not cfg.runtime.local) if pull is None else pull:
        eval_policy.load_state_dict(w.get(w.trainer.get_weights.remote()))
    env_cfg = dataclasses.replace(cfg.env, split="eval", seed=cfg.env.seed + 10_007)
    video = run_dir / "videos" / f"update_{state.update:06d}.mp4" if cfg.run.eval_video else None
    res = evaluate_policy(eval_policy, env_cfg, cfg.run.eval_episodes, deterministic=cfg.run.eval_deterministic, video=video)
    return {"eval/success": res["success_rate"], "eval/return": res["mean_return"], "eval/episode_len": res["mean_episode_len"]}


def _driver_policy(w: Workers, cfg: TrainConfig):
    """The policy evaluation runs: the trainer's own object in local mode, else a driver copy."""
    if cfg.runtime.local:
        return w.trainer.obj.trainer.policy
    from asyncvla.runtime.rollout import build_policy

    return build_policy(cfg.policy, w.spec["action_dim"], w.spec["proprio_dim"], cfg.run.seed).eval()


# -- metrics -----------------------------------------------------------------------------------

def update_metrics(rollouts: list, stats: dict, spans: list[Span], t: dict[str, float], cfg: TrainConfig) -> dict:
    """One record: throughput, driver phase walls, span phase times, utilization, episodes, losses."""
    env_steps = sum(r.env_steps for r in rollouts)
    samples = sum(r.num_samples for r in rollouts)
    wall = t["end"] - t["start"]
    episodes = [e for r in rollouts for e in r.episodes]
    m = {
        "perf/env_steps_per_s": env_steps / wall,
        "perf/trained_samples_per_s": samples / wall,
        "perf/rollout_env_steps_per_s": env_steps / max(t["rollout"], 1e-9),
        # Driver-side wall time of each phase of the update (they add up to time/update_wall_s).
        "time/update_wall_s": wall, "time/rollout_wall_s": t["rollout"], "time/train_wall_s": t["train"],
        "time/sync_wall_s": t["sync"],
        "rollout/episodes": len(episodes),
        "rollout/success": float(np.mean([e["success"] for e in episodes])) if episodes else float("nan"),
        "rollout/return": float(np.mean([e["return"] for e in episodes])) if episodes else float("nan"),
        "rollout/episode_len": float(np.mean([e["length"] for e in episodes])) if episodes else float("nan"),
        "rollout/env_steps": env_steps,
    }
    workers = {"env": cfg.runtime.num_env_workers, "rollout": 1 if cfg.runtime.placement == "colocated" or cfg.runtime.local
               else cfg.runtime.num_rollout_servers, "trainer": 1}
    mine = [s for s in spans if s.role in WORKER_ROLES]
    m.update(phase_times(mine))
    m.update(utilization(mine, t["start"], t["end"], workers))
    m.update(stats)
    return m


# -- the loop ----------------------------------------------------------------------------------

def _done(cfg: TrainConfig, state: RunState) -> bool:
    r = cfg.run
    return (r.total_env_steps is not None and state.env_steps >= r.total_env_steps) or \
           (r.total_updates is not None and state.update >= r.total_updates)


def _one_update(w: Workers, cfg: TrainConfig, sync, state: RunState) -> tuple[list, dict, dict]:
    """Rollout epoch → train → weight sync, each phase timed by the driver."""
    t = {"start": time.time()}
    rollouts = w.get(collect_rollouts(w, cfg))
    t["rollout"] = time.time() - t["start"]
    # Rollouts go back as objects already in the store (Ray) or in memory (local): no copy here.
    stats = w.get(w.trainer.train.remote(*rollouts))
    t["train"] = time.time() - t["start"] - t["rollout"]
    state.version = sync.sync(w.trainer, w.rollouts, int(stats["train/version"]), w.get)
    t["end"] = time.time()
    t["sync"] = t["end"] - t["start"] - t["rollout"] - t["train"]
    return rollouts, stats, t


def run_loop(w: Workers, cfg: TrainConfig, run_dir: Path, state: RunState, writer: MetricsWriter,
             trace: list[Span], progress=None) -> RunState:
    """Updates until the budget is spent; evaluates and checkpoints on schedule."""
    sync = make_weight_sync(cfg.runtime.weight_sync, "colocated" if w.colocated else "disaggregated")
    sync.setup(w.trainer, w.rollouts, w.get)
    sync.sync(w.trainer, w.rollouts, state.version, w.get)  # inference starts from the trainer's weights
    driver = SpanRecorder("driver", 0, enabled=cfg.runtime.trace)
    eval_policy = _driver_policy(w, cfg)
    if state.success_before is None and cfg.run.eval_episodes:
        with driver.span("eval"):
            m = evaluate(w, cfg, run_dir, state, eval_policy)
        state.success_before = m["eval/success"]
        writer.write(state.update, m)
    while not _done(cfg, state):
        rollouts, stats, t = _one_update(w, cfg, sync, state)
        spans = [s for h in w.all_handles() for s in w.get(h.drain_spans.remote())]
        trace.extend(spans[: max(0, MAX_TRACE_SPANS - len(trace))])
        m = update_metrics(rollouts, stats, spans, t, cfg)
        state.update += 1
        state.env_steps += m["rollout/env_steps"]
        state.samples += int(stats.get("train/samples", 0))
        if state.update > 1 or _done(cfg, state):  # the first update carries start-up costs
            state.window_env_steps += m["rollout/env_steps"]
            state.window_s += m["time/update_wall_s"]
        m["perf/env_steps"] = state.env_steps
        if cfg.run.eval_every and state.update % cfg.run.eval_every == 0 and not _done(cfg, state):
            with driver.span("eval"):
                m.update(evaluate(w, cfg, run_dir, state, eval_policy))
            if m.get("eval/success", -1) > state.best_success:
                state.best_success = m["eval/success"]
                save_checkpoint(w, run_dir, state, "best")
        state.wall_s = writer.wall_s
        writer.write(state.update, m)
        if cfg.run.checkpoint_every and state.update % cfg.run.checkpoint_every == 0:
            with driver.span("checkpoint"):
                save_checkpoint(w, run_dir, state, f"update_{state.update:06d}")
                save_checkpoint(w, run_dir, state, "last")
            write_chrome_trace(run_dir / "trace.json", trace + driver.drain())
        if progress is not None:
            progress(state.update, m)
    if cfg.run.eval_episodes:
        with driver.span("eval"):
            m = evaluate(w, cfg, run_dir, state, eval_policy)
        state.success_after = m["eval/success"]
        if state.success_after > state.best_success:
            state.best_success = state.success_after
            save_checkpoint(w, run_dir, state, "best")
        writer.write(state.update, m)
    state.wall_s = writer.wall_s
    save_checkpoint(w, run_dir, state, "last")
    trace.extend(driver.drain())
    return state


def train(cfg: TrainConfig, progress=None) -> dict:
    """Runs (or resumes) a synchronous training run; returns the summary that `--json` prints."""
    from asyncvla.runtime.warm_start import ensure_warm_start

    # The SFT start is made before the run dir's config.yaml, which then records policy.init.
    cfg.policy.init = ensure_warm_start(cfg) or cfg.policy.init
    run_dir = prepare_run_dir(cfg)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    trace_path = run_dir / "trace.json"
    trace: list[Span] = load_chrome_trace(trace_path) if cfg.run.resume and trace_path.exists() else []
    if not cfg.runtime.local:
        init_ray(cfg.runtime.ray_address, cfg)
    workers = writer = None
    state = RunState()
    try:
        workers = build_workers(cfg)
        if cfg.run.resume and (run_dir / "checkpoints" / "last").exists():
            state = load_checkpoint(workers, run_dir)
        writer = MetricsWriter(run_dir, wall_offset_s=state.wall_s)
        state = run_loop(workers, cfg, run_dir, state, writer, trace, progress)
    except BaseException:
        save_on_crash(workers, run_dir, state)
        raise
    finally:
        if trace:
            write_chrome_trace(trace_path, trace)
        if writer is not None:
            writer.close()
        shutdown_workers(workers)
        if not cfg.runtime.local:
            import ray

            ray.shutdown()
    return summarize(state, run_dir)


def save_on_crash(workers: Workers | None, run_dir: Path, state: RunState, extra_files: Callable[[], dict] | None = None) -> None:
    """Best effort: a crash (or Ctrl-C) between updates still leaves checkpoints/last to resume."""
    if workers is None or state.update == 0:
        return
    try:
        save_checkpoint(workers, run_dir, state, "last", extra_files() if extra_files else None)
    except Exception:  # the trainer itself may be what died; the periodic checkpoint remains
        pass


def summarize(state: RunState, run_dir: Path) -> dict:
    """The run summary (the last stdout line of `asyncvla train --json`)."""
    window_s = state.window_s
    return {
        "success_before": state.success_before, "success_after": state.success_after,
        "env_steps": state.env_steps, "updates": state.update, "wall_s": round(state.wall_s, 2),
        "env_steps_per_s": round(state.window_env_steps / window_s, 2) if window_s > 0 else None,
        "throughput_window": "updates 2..N (update time: rollout + train + weight sync; eval and checkpoints excluded)",
        "run_dir": str(run_dir),
    }
