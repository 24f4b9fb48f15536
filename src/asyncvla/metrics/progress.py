"""Terminal progress bar of a training run (rich, on stderr so `--json` keeps stdout clean)."""

from __future__ import annotations

import math
import sys


def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


class TrainProgress:
    """`with TrainProgress(total_env_steps) as p: ... p(update, metrics)` after every update.

    A rich bar on a terminal; plain lines (one per update) when stderr is captured, so a log
    keeps every column. Throughput is the run's own window, the number the summary reports.
    """

    def __init__(self, total_env_steps: int | None, total_updates: int | None = None, enabled: bool = True,
                 lines: bool | None = None):
        self.by_steps = total_env_steps is not None
        self.total = total_env_steps if self.by_steps else total_updates
        self.enabled = enabled
        self.lines = (not sys.stderr.isatty()) if lines is None else lines
        self.unit = "env steps" if self.by_steps else "updates"
        self._bar = None
        self._task = None
        self.eval_success = None

    def __enter__(self) -> "TrainProgress":
        if self.enabled and not self.lines:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed:>8.0f}/{task.total:.0f} " + self.unit),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, info="")
        return self

    def info(self, m: dict) -> str:
        if "eval/success" in m:
            self.eval_success = m["eval/success"]
        return (f"{_fmt(m.get('perf/run_env_steps_per_s'), '.1f')} env steps/s (run)"
                f"  rollout success {_fmt(m.get('rollout/success'), '.2f')}  eval success {_fmt(self.eval_success, '.2f')}"
                f"  loss {_fmt(m.get('loss/total'), '.3f')}")

    def __call__(self, update: int, m: dict) -> None:
        if not self.enabled:
            return
        # perf/env_steps is the run's cumulative count; a record without it leaves the bar where it was.
        done = m.get("perf/env_steps") if self.by_steps else update
        info = self.info(m)
        if self.lines:
            print(f"update {update}  {_fmt(done, '.0f')}/{self.total} {self.unit}  {info}", file=sys.stderr, flush=True)
        elif done is None:
            self._bar.update(self._task, info=info)
        else:
            # The update that reaches the budget ends past it: the bar ends full, at the count trained.
            self._bar.update(self._task, completed=done, total=max(self.total, done), info=info)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
