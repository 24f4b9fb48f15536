"""CPU utilization of a run: CPU seconds of every process of the run over cores x wall time.

A run is this process (the driver: the trainer in async, the loop in sync) plus every
descendant: with a local Ray, the raylet, GCS and agents and every worker (env managers,
rollout servers, the hub, sync's env and colocated workers) are children of the driver's
Ray. `CpuMeter` samples the whole tree at marks (the end of each update) and keeps each
process's CPU time by (pid, start time), so a process that exits inside the window keeps
the CPU it used up to its last sample, and one that starts inside it counts from zero,
instead of the tree's total jumping when processes come and go.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")
ProcKey = tuple[int, float]
"""(pid, creation time): a pid reused by a later process is a different key."""


@dataclass
class ProcSample:
    """One process at one mark."""

    name: str
    cpu_s: float


def window_cpu_s(base: dict[ProcKey, ProcSample], seen: dict[ProcKey, ProcSample]) -> dict[ProcKey, float]:
    """CPU seconds each process used in the window that starts at the `base` sample.

    seen: each process's latest sample in the window. A process in `base` counts from its
    base sample; one that is not was created in the window (a process enters the tree only
    by being created in it), so all of its CPU counts. Pure: unit-tested without processes.
    """
    return {k: max(s.cpu_s - (base[k].cpu_s if k in base else 0.0), 0.0) for k, s in seen.items()}


def group_name(name: str, is_root: bool) -> str:
    """The row a process is reported under: driver, a Ray actor class, or `ray system`."""
    if is_root:
        return "driver"
    if name.startswith("ray::"):
        cls = name[5:].split(".", 1)[0].split(" ", 1)[0]
        return f"ray::{cls}" if cls not in ("IDLE", "") else "ray::IDLE"
    return "ray system"  # raylet, gcs_server, dashboard / runtime-env agents, log monitor


def read_tree(read: Callable[[Any], T]) -> list[tuple[str, T]]:
    """(group_name, read(process)) for this process and every descendant, read inside `oneshot()`;
    a process that exits while it is read is skipped."""
    import psutil

    me = psutil.Process()
    out = []
    for p in [me, *me.children(recursive=True)]:
        try:
            with p.oneshot():
                cmd = p.cmdline()
                name = cmd[0] if cmd and cmd[0].startswith("ray::") else p.name()
                out.append((group_name(name, p.pid == me.pid), read(p)))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):  # exited while listing
            pass
    return out


def machine_cores() -> int:
    """Cores this process may run on (affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class CpuMeter:
    """CPU seconds of this process and every descendant, sampled at marks.

    `utilization()` = CPU seconds of all of them between the second mark (the end of the
    first update: start-up excluded) and the last, over cores x the wall time between the
    same two marks.
    """

    cores: int = field(default_factory=machine_cores)
    marks: list[float] = field(default_factory=list)
    _base: dict[ProcKey, ProcSample] = field(default_factory=dict)
    _seen: dict[ProcKey, ProcSample] = field(default_factory=dict)

    def sample(self) -> dict[ProcKey, ProcSample]:
        """Every process of the tree now."""
        def read(p) -> tuple[ProcKey, float]:
            t = p.cpu_times()
            return (p.pid, p.create_time()), t.user + t.system

        return {key: ProcSample(group, cpu_s) for group, (key, cpu_s) in read_tree(read)}

    def mark(self) -> None:
        now = self.sample()
        self.marks.append(time.time())
        if len(self.marks) < 2:
            return
        if len(self.marks) == 2:
            self._base = now
        for k, s in now.items():
            self._seen[k] = s

    def _window(self) -> dict[ProcKey, float] | None:
        if len(self.marks) < 3:
            return None
        return window_cpu_s(self._base, self._seen)

    @property
    def window_s(self) -> float:
        return self.marks[-1] - self.marks[1] if len(self.marks) >= 3 else 0.0

    def utilization(self) -> float | None:
        """CPU seconds / (cores x wall) between the second mark (end of update 1) and the last."""
        used = self._window()
        if used is None:
            return None
        return sum(used.values()) / (self.cores * max(self.window_s, 1e-9))

    def by_group(self) -> dict[str, float]:
        """Cores used in the window per group (driver, each Ray actor class, Ray's own processes)."""
        used = self._window()
        if used is None:
            return {}
        out: dict[str, float] = {}
        for k, cpu in used.items():
            g = self._seen[k].name
            out[g] = out.get(g, 0.0) + cpu / max(self.window_s, 1e-9)
        return {g: round(v, 3) for g, v in sorted(out.items(), key=lambda kv: -kv[1])}
