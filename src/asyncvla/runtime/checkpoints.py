"""The run directory: resolved config, run counters, atomic checkpoints, resume, summary.

A checkpoint is written to a temporary directory with a checksum of every file, then renamed
into place; `last` keeps its predecessor as `previous`. Weights that are not finite are never
written. Resume verifies `last` (checksums, parse, finite weights) and falls back to
`previous` with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from asyncvla.config import ConfigError, TrainConfig, from_dict, to_dict
from asyncvla.runtime.learner.trainer import NonFiniteUpdates, Trainer

CHECKSUMS = "checksums.json"
RESUME_TAGS = ("last", "previous")
"""Where resume looks, in order: the newest checkpoint, then the one it replaced."""


class NonFiniteWeights(RuntimeError):
    """A checkpoint was not written: its weights are not finite."""


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
    lost_updates: int = 0
    """Updates that a killed run (SIGKILL, power loss: no crash checkpoint) logged after its last
    checkpoint; resume redoes them, so their samples were collected but never kept."""
    lost_env_steps: int = 0
    """Env steps of those lost updates (produced, then thrown away with the killed process)."""


def count_lost(state: RunState, metrics_path: Path) -> tuple[int, int]:
    """Adds to `state` what metrics.jsonl logged beyond the checkpoint `state` came from (before the resume
    truncates it): (updates, env steps) lost to a kill; (0, 0) after a clean stop or a crash checkpoint."""
    from asyncvla.metrics.writer import read_metrics

    after = [r for r in read_metrics(metrics_path) if r.get("step", 0) > state.update] if metrics_path.exists() else []
    updates = len({r["step"] for r in after})
    steps = max((int(r["perf/env_steps"]) for r in after if r.get("perf/env_steps") is not None), default=state.env_steps)
    lost = (updates, max(0, steps - state.env_steps))
    state.lost_updates += lost[0]
    state.lost_env_steps += lost[1]
    return lost


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
    resumable(run_dir)  # refused before anything starts, not trained from scratch
    cfg = from_dict(TrainConfig, yaml.safe_load(path.read_text()), where=str(path))
    cfg.run.resume = str(run_dir)
    return cfg


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _nonfinite(state) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [n for n, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]


def save_checkpoint(trainer: Trainer, run_dir: Path, state: RunState, tag: str,
                    extra_files: dict[str, dict] | None = None, meta: dict | None = None) -> Path:
    """Writes checkpoints/<tag> atomically (tmp dir + rename): policy, optimizer, RNG, counters.

    extra_files: more JSON files for the same checkpoint (the staleness and ledger state),
    written before the rename so they are never out of step. meta: more top-level keys of the
    policy's config.yaml (e.g. how the run evaluates). Raises NonFiniteWeights, writing
    nothing, when a weight is NaN or infinite.
    """
    bad = _nonfinite(trainer.policy.state_dict())
    if bad:
        raise NonFiniteWeights(f"checkpoint {tag!r} not written: {len(bad)} weight tensor(s) are not finite "
                               f"(first: {bad[0]}); checkpoints/{tag} keeps the last good weights")
    root = run_dir / "checkpoints"
    root.mkdir(exist_ok=True)
    final, tmp = root / tag, root / f".{tag}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save(str(tmp), {"run_state": dataclasses.asdict(state), **(meta or {})})
    (tmp / "run_state.json").write_text(json.dumps(dataclasses.asdict(state)))
    for name, obj in (extra_files or {}).items():
        (tmp / name).write_text(json.dumps(obj))
    (tmp / CHECKSUMS).write_text(json.dumps({f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}))
    # The old checkpoint is moved aside before the new one is renamed in, and dropped only after:
    # at every instant one complete checkpoint exists (`last`'s becomes `previous`, resume's fallback).
    old = root / ("previous" if tag == "last" else f".{tag}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if tag != "last":
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why checkpoint `ckpt` cannot be resumed from (one line), or None when it is sound: every
    file matches its checksum (older checkpoints have none), run_state.json parses, the weights
    load and are finite."""
    from safetensors.torch import load_file

    from asyncvla.policies.checkpoint import WEIGHTS

    try:
        sums_path = ckpt / CHECKSUMS
        if sums_path.exists():
            for name, digest in json.loads(sums_path.read_text()).items():
                if not (ckpt / name).is_file():
                    return f"{name} is missing"
                if _sha256(ckpt / name) != digest:
                    return f"{name} does not match its checksum"
        json.loads((ckpt / "run_state.json").read_text())
        weights = load_file(str(ckpt / WEIGHTS))
    except Exception as e:  # a torn or garbled file: whatever the parser says, on one line
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    bad = _nonfinite(weights)
    return f"{len(bad)} weight tensor(s) are not finite (first: {bad[0]})" if bad else None


def resumable(run_dir: str | Path) -> list[Path]:
    """The checkpoints a resume of `run_dir` may use, newest first; ConfigError when there is none."""
    found = [Path(run_dir) / "checkpoints" / t for t in RESUME_TAGS if (Path(run_dir) / "checkpoints" / t).is_dir()]
    if not found:
        raise ConfigError(f"run.resume={str(run_dir)!r} is invalid: it has no checkpoints/last (nor checkpoints/previous) "
                          "to resume from")
    return found


def load_checkpoint(trainer: Trainer, run_dir: Path) -> tuple[RunState, Path]:
    """Restores the trainer from the newest sound checkpoint (last, else previous, with a warning)
    and returns the run counters and the checkpoint used."""
    problems = []
    for ckpt in resumable(run_dir):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            trainer.load(str(ckpt))
            if problems:
                print(f"warning: resuming from checkpoints/{ckpt.name}: {'; '.join(problems)}", file=sys.stderr)
            return RunState(**json.loads((ckpt / "run_state.json").read_text())), ckpt
        problems.append(f"checkpoints/{ckpt.name} is unusable ({problem})")
    raise ConfigError(f"run.resume={str(run_dir)!r} is invalid: {'; '.join(problems)}")


def save_on_crash(trainer: Trainer | None, run_dir: Path, state: RunState,
                  extra_files: Callable[[], dict] | None = None, error: BaseException | None = None) -> None:
    """Best effort: a crash (or Ctrl-C) between updates still leaves checkpoints/last to resume.
    Not after NonFiniteUpdates: weights that only give non-finite losses must not become `last`."""
    if trainer is None or state.update == 0 or isinstance(error, NonFiniteUpdates):
        return
    try:
        save_checkpoint(trainer, run_dir, state, "last", extra_files() if extra_files else None)
    except Exception:  # what died may be what a save needs; the periodic checkpoint remains
        pass


def record_failure(run_dir: Path, e: Exception) -> None:
    """Writes the failure's traceback to logs/driver-error.log and names the file in a note on
    the exception, so the command line can end with one line that points at it."""
    import traceback

    path = run_dir / "logs" / "driver-error.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(e)))
        e.add_note(f"traceback: {path}")
    except OSError:
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
        **({"lost_updates": state.lost_updates, "lost_env_steps": state.lost_env_steps} if state.lost_updates else {}),
        "run_dir": str(run_dir),
    }
