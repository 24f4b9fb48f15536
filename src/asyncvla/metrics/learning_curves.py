"""Learning curves of several runs: success vs env steps, mean and spread over seeds, per mode.

    python -m asyncvla.metrics.learning_curves --sync RUN_DIR... --async RUN_DIR... \\
        --out docs/learning.png
    python -m asyncvla.metrics.learning_curves --runs "ppo sync=RUN_DIR" "grpo async=RUN_DIR" ...

reads each run's `metrics.jsonl` and `checkpoints/last/run_state.json`, draws two panels
(training-episode success `rollout/success`, a trailing mean over env steps; eval success on the
held-out split) against cumulative env steps, and prints a markdown table of every run's
success before/after RL and wall time. Curves of one group are interpolated onto a shared
env-steps grid (over the range every run covers) before the mean and the min-max band.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from asyncvla.metrics.writer import read_metrics

X_KEY = "perf/env_steps"
COLORS = {"sync": "#4c72b0", "async": "#dd8452"}
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
"""Colours of the other groups, in the order they are given."""


def curve(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, values) of `key` over a run's records, in file order.

    Records that lack `perf/env_steps` (evaluations written on their own, e.g. before
    training) take the last count seen before them, 0 at the start; null values are dropped.
    """
    xs, ys, env_steps = [], [], 0.0
    for r in records:
        if r.get(X_KEY) is not None:
            env_steps = float(r[X_KEY])
        if r.get(key) is not None:
            xs.append(env_steps)
            ys.append(float(r[key]))
    return np.asarray(xs), np.asarray(ys)


def trailing_mean(x: np.ndarray, y: np.ndarray, window: float) -> np.ndarray:
    """Mean of the y values whose x lies in (x_i - window, x_i], for every i; same length as y.

    Smoothing by env steps rather than by records keeps modes comparable: async writes one
    record per policy version (a few env steps), sync one per rollout epoch.
    """
    if not window > 0:
        raise ValueError(f"window={window!r} is invalid: must be > 0")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    c = np.cumsum(np.insert(y, 0, 0.0))
    hi = np.arange(1, len(y) + 1)
    lo = np.searchsorted(x, x - window, side="right")
    return (c[hi] - c[lo]) / (hi - lo)


def band(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid, mean, min, max) of several curves on a shared grid over the x range all of them cover.

    Each curve (x increasing, possibly with repeats) is linearly interpolated onto the grid.
    """
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        raise ValueError("band: no curve has any point")
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])  # [runs, points]
    return grid, ys.mean(0), ys.min(0), ys.max(0)


@dataclass
class RunSummary:
    """What the table shows of one run."""

    run_dir: str
    mode: str
    seed: int | None
    success_before: float | None
    success_after: float | None
    env_steps: int | None
    wall_s: float | None


def summarize_run(run_dir: str | Path, mode: str) -> RunSummary:
    """Success before/after, env steps and wall time from the run's last checkpoint, seed from config.yaml."""
    import yaml

    run_dir = Path(run_dir)
    state_path = run_dir / "checkpoints" / "last" / "run_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    cfg_path = run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    return RunSummary(str(run_dir), mode, cfg.get("run", {}).get("seed"), state.get("success_before"),
                      state.get("success_after"), state.get("env_steps"), state.get("wall_s"))


def _eval_deterministic(run_dir: str | Path) -> bool:
    import yaml

    cfg_path = Path(run_dir) / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    return bool(cfg.get("run", {}).get("eval_deterministic", True))


def markdown_table(rows: list[RunSummary]) -> str:
    """One line per run, then the mean lift per mode."""
    f = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    out = ["| mode | seed | success before | success after | lift | env steps | wall (s) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        lift = None if r.success_before is None or r.success_after is None else r.success_after - r.success_before
        out.append(f"| {r.mode} | {f(r.seed, 'd')} | {f(r.success_before, '.3f')} | {f(r.success_after, '.3f')} | "
                   f"{f(lift, '+.3f')} | {f(r.env_steps, 'd')} | {f(r.wall_s, '.0f')} |")
    for mode in dict.fromkeys(r.mode for r in rows):
        done = [r for r in rows if r.mode == mode and r.success_before is not None and r.success_after is not None]
        if done:
            b, a = np.mean([r.success_before for r in done]), np.mean([r.success_after for r in done])
            out.append(f"| {mode} mean | {len(done)} seeds | {b:.3f} | {a:.3f} | {a - b:+.3f} | | |")
    return "\n".join(out)


def plot_learning_curves(groups: dict[str, list[str | Path]], out_png: str | Path, smooth: float = 3000,
                         title: str | None = None) -> Path:
    """Draws rollout and eval success vs env steps, mean line and min-max band per group (e.g. a mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    det = {_eval_deterministic(r) for runs in groups.values() for r in runs}
    how = "deterministic" if det == {True} else "sampled" if det == {False} else "mixed"
    panels = (("rollout/success", f"training episodes (sampled), trailing mean over {smooth:g} env steps", smooth),
              ("eval/success", f"eval split ({how} actions)", None))
    for ax, (key, name, window) in zip(axes, panels):
        for label, runs in groups.items():
            curves = []
            for run in runs:
                x, y = curve(read_metrics(Path(run) / "metrics.jsonl"), key)
                curves.append((x, trailing_mean(x, y, window) if window and len(y) else y))
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            grid, mean, lo, hi = band(curves)
            color = COLORS.get(label, PALETTE[list(groups).index(label) % len(PALETTE)])
            ax.plot(grid, mean, color=color, label=f"{label} (mean of {len(curves)} seeds)", marker="o" if len(grid) < 8 else None)
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate (band: min-max over seeds)")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


@dataclass
class LearningCurves:
    """Plot success vs env steps of groups of runs (several seeds each) and print their table."""

    sync: list[str] = field(default_factory=list)
    """Run directories of sync-mode runs (the group "sync")."""
    async_: Annotated[list[str], tyro.conf.arg(name="async")] = field(default_factory=list)
    """Run directories of async-mode runs (the group "async")."""
    runs: list[str] = field(default_factory=list)
    """Runs of any group, each "LABEL=RUN_DIR" split at the first "=" (e.g. "ppo sync=runs/ppo-s0");
    a label's runs form one curve."""
    out: str = "docs/learning.png"
    """PNG to write."""
    smooth: float = 3000
    """Trailing mean of rollout success over this many env steps."""
    title: str | None = None

    def run(self) -> None:
        from asyncvla.config import ConfigError

        groups = {k: list(v) for k, v in (("sync", self.sync), ("async", self.async_)) if v}
        for item in self.runs:
            label, sep, run = item.partition("=")
            if not sep or not label or not run:
                raise ConfigError(f"runs={item!r} is invalid: expected LABEL=RUN_DIR")
            groups.setdefault(label, []).append(run)
        for label, runs in groups.items():
            for run in runs:
                if not (Path(run) / "metrics.jsonl").is_file():
                    raise ConfigError(f"{label} run {run!r} is invalid: no metrics.jsonl there (not a run directory)")
        if not groups:
            raise ConfigError("sync/async/runs are all empty: pass run directories with --sync DIR..., --async DIR... "
                              "or --runs LABEL=DIR...")
        plot_learning_curves(groups, self.out, self.smooth, self.title)
        print(markdown_table([summarize_run(r, mode) for mode, runs in groups.items() for r in runs]))
        print(f"wrote {self.out}")


def main() -> None:
    tyro.cli(LearningCurves, config=(tyro.conf.OmitArgPrefixes,)).run()


if __name__ == "__main__":
    main()
