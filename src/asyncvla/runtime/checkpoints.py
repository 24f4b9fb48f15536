"""The run directory: resolved config, run counters, atomic checkpoints, resume, summary."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from asyncvla.config import ConfigError, TrainConfig, from_dict, to_dict
from asyncvla.runtime.learner.trainer import Trainer


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
    """Env steps of the updates after the first of each (re)start (the throughput window excludes warm-up)."""
    window_s: float = 0.0


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
        raise ConfigError(f"run.resume={str(run_dir)!r} is invalid: no config.yaml there (not a run directory)")
    cfg = from_dict(TrainConfig, yaml.safe_load(path.read_text()), where=str(path))
    cfg.run.resume = str(run_dir)
    return cfg


def save_checkpoint(trainer: Trainer, run_dir: Path, state: RunState, tag: str,
                    extra_files: dict[str, dict] | None = None, meta: dict | None = None) -> Path:
    """Writes checkpoints/<tag> atomically (tmp dir + rename): policy, optimizer, RNG, counters.

    extra_files: more JSON files for the same checkpoint (the staleness and ledger state),
    written before the rename so they are never out of step. meta: more top-level keys of the
    policy's config.yaml (e.g. how the run evaluates).
    """
    root = run_dir / "checkpoints"
    root.mkdir(exist_ok=True)
    final, tmp = root / tag, root / f".{tag}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save(str(tmp), {"run_state": dataclasses.asdict(state), **(meta or {})})
    (tmp / "run_state.json").write_text(json.dumps(dataclasses.asdict(state)))
    for name, obj in (extra_files or {}).items():
        (tmp / name).write_text(json.dumps(obj))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def load_checkpoint(trainer: Trainer, run_dir: Path) -> RunState:
    """Restores the trainer from checkpoints/last and returns the run counters."""
    ckpt = run_dir / "checkpoints" / "last"
    if not (ckpt / "run_state.json").exists():
        raise ConfigError(f"run.resume={str(run_dir)!r} is invalid: no checkpoints/last in it to resume from")
    trainer.load(str(ckpt))
    return RunState(**json.loads((ckpt / "run_state.json").read_text()))


def save_on_crash(trainer: Trainer | None, run_dir: Path, state: RunState,
                  extra_files: Callable[[], dict] | None = None) -> None:
    """Best effort: a crash (or Ctrl-C) between updates still leaves checkpoints/last to resume."""
    if trainer is None or state.update == 0:
        return
    try:
        save_checkpoint(trainer, run_dir, state, "last", extra_files() if extra_files else None)
    except Exception:  # what died may be what a save needs; the periodic checkpoint remains
        pass


WINDOW_NOTE = ("updates 2..N of each (re)start (env steps trained in them, over the wall time outside "
               "evaluation and checkpoints)")


def summarize(state: RunState, run_dir: Path) -> dict:
    """The run summary (the last stdout line of `asyncvla train --json`)."""
    window_s = state.window_s
    return {
        "success_before": state.success_before, "success_after": state.success_after,
        "env_steps": state.env_steps, "updates": state.update, "wall_s": round(state.wall_s, 2),
        "env_steps_per_s": round(state.window_env_steps / window_s, 2) if window_s > 0 else None,
        "throughput_window": WINDOW_NOTE,
        "run_dir": str(run_dir),
    }
