"""Terminal progress bar of a training run (rich, on stderr so `--json` keeps stdout clean)."""

from __future__ import annotations

import math


def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


class TrainProgress:
    """`with TrainProgress(total_env_steps) as p: ... p(update, metrics)` after every update."""

    def __init__(self, total_env_steps: int | None, total_updates: int | None = None, enabled: bool = True):
        self.by_steps = total_env_steps is not None
        self.total = total_env_steps if self.by_steps else total_updates
        self.enabled = enabled
        self._bar = None
        self._task = None

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed:>8.0f}/{task.total:.0f} "
                                                                   + ("env steps" if self.by_steps else "updates")),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, info="")
        return self

    def __call__(self, update: int, m: dict) -> None:
        if self._bar is None:
            return
        # perf/env_steps is the run's cumulative count; a record without it leaves the bar where it was.
        done = m.get("perf/env_steps") if self.by_steps else update
        info = (f"{_fmt(m.get('perf/env_steps_per_s'), '.1f')} steps/s  success {_fmt(m.get('rollout/success'), '.2f')}"
                f"  loss {_fmt(m.get('loss/total'), '.3f')}")
        if done is None:
            self._bar.update(self._task, info=info)
        else:
            self._bar.update(self._task, completed=done, info=info)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
