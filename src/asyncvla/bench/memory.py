"""Resident memory of a run's processes over time (`bench faults`' soak: is every process flat?).

`RssSampler` samples the driver and every descendant (Ray's workers included, grouped as in
`bench/cpu.py`: driver, each actor class, Ray's own processes) every `period_s` on a thread;
`rss_table` says, per group, its RSS after warm-up, at the end, the peak and the change.
"""

from __future__ import annotations

import threading
import time

from asyncvla.bench.cpu import read_tree

FLAT = 0.05
"""A group is flat when its RSS at the end is within this fraction of its RSS after warm-up."""


def sample_rss() -> dict[str, float]:
    """MiB resident per group of this process's tree, now."""
    out: dict[str, float] = {}
    for group, rss in read_tree(lambda p: p.memory_info().rss):
        out[group] = out.get(group, 0.0) + rss / 2**20
    return out


class RssSampler:
    """Samples `sample_rss` every `period_s` until `stop()`; `samples` is [(seconds since start, {group: MiB})]."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss")
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._t0, sample_rss()))
            if self._stop.wait(self.period_s):
                return

    def stop(self) -> list[tuple[float, dict[str, float]]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples


def rss_table(samples: list[tuple[float, dict[str, float]]], warmup_s: float) -> list[dict]:
    """Per group: MiB at the first sample after `warmup_s`, at the last sample, the peak after
    warm-up, the change (end / after warm-up - 1) and whether that is within FLAT. Pure."""
    after = [(t, s) for t, s in samples if t >= warmup_s]
    if len(after) < 2:
        return []
    groups = sorted({g for _, s in after for g in s})
    rows = []
    for g in groups:
        series = [s[g] for _, s in after if g in s]
        if len(series) < 2 or series[0] <= 0:
            continue
        change = series[-1] / series[0] - 1
        rows.append({"group": g, "after_warmup_mib": round(series[0], 1), "end_mib": round(series[-1], 1),
                     "peak_mib": round(max(series), 1), "change": round(change, 4), "flat": abs(change) <= FLAT})
    return rows
