"""Spans: what each worker was doing when, merged into one Chrome trace.

Every worker owns a `SpanRecorder` and wraps its phases in `with rec.span("infer"):`.
Spans are plain tuples `(role, worker, kind, start, end)` with wall-clock seconds
(`time.time()`, comparable across the processes of one machine and, roughly, across
nodes), so recording costs two clock reads and one list append. The driver drains each
worker's spans, merges them with `to_chrome_trace` (opens in Perfetto / chrome://tracing)
and aggregates them into phase times (`time/<kind>_s`) and utilization (`util/<role>`).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

# Kinds that mean "waiting", not work: they count neither as busy time nor as phases.
WAIT_KINDS = frozenset({"wait", "idle"})
# Known kinds (others are allowed; these are the ones the runtime emits).
KINDS = ("env_step", "env_reset", "infer", "train", "advantage", "weight_sync", "eval", "checkpoint", "wait")


class Span(NamedTuple):
    """One interval of work of one worker; times in wall-clock seconds."""

    role: str
    worker: int
    kind: str
    start: float
    end: float


class SpanRecorder:
    """Collects the spans of one worker (not thread-safe across threads of one worker: one caller).

    `max_spans` bounds memory in long runs; spans beyond it are counted in `dropped`.
    """

    def __init__(self, role: str, worker: int = 0, enabled: bool = True, max_spans: int = 1_000_000):
        self.role = role
        self.worker = worker
        self.enabled = enabled
        self.max_spans = max_spans
        self.dropped = 0
        self._spans: list[Span] = []

    @contextmanager
    def span(self, kind: str) -> Iterator[None]:
        """Times the enclosed block as one span of `kind` (recorded even if the block raises)."""
        if not self.enabled:
            yield
            return
        start = time.time()
        try:
            yield
        finally:
            self.add(kind, start, time.time())

    def add(self, kind: str, start: float, end: float) -> None:
        """Records a span measured elsewhere (e.g. an env step timed inside the VectorEnv)."""
        if not self.enabled:
            return
        if len(self._spans) >= self.max_spans:
            self.dropped += 1
            return
        self._spans.append(Span(self.role, self.worker, kind, start, end))

    def drain(self) -> list[Span]:
        """Returns the spans recorded since the last drain and forgets them (ship them to the driver)."""
        out, self._spans = self._spans, []
        return out

    def __len__(self) -> int:
        return len(self._spans)


# -- aggregation (pure functions) ---------------------------------------------------------

def _busy_seconds(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of intervals clipped to [lo, hi] (nested spans count once)."""
    clipped = sorted((max(s, lo), min(e, hi)) for s, e in intervals if e > lo and s < hi)
    total, cur_s, cur_e = 0.0, None, None
    for s, e in clipped:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def phase_times(spans: Iterable[Span]) -> dict[str, float]:
    """`time/<kind>_s`: seconds spent in each kind, summed over all workers (waits included)."""
    out: dict[str, float] = {}
    for sp in spans:
        key = f"time/{sp.kind}_s"
        out[key] = out.get(key, 0.0) + (sp.end - sp.start)
    return out


def utilization(spans: Iterable[Span], start: float, end: float, workers: dict[str, int] | None = None) -> dict[str, float]:
    """`util/<role>` = busy seconds / wall seconds over [start, end], averaged over the role's workers.

    Busy = the union of a worker's non-wait spans. `workers` gives the number of workers per
    role (so a worker that recorded nothing counts as idle); default: the workers seen.
    Also returns `time/idle_s`: worker-seconds of all roles not covered by busy spans.
    """
    wall = max(end - start, 1e-9)
    per_worker: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for sp in spans:
        ivs = per_worker.setdefault((sp.role, sp.worker), [])
        if sp.kind not in WAIT_KINDS:
            ivs.append((sp.start, sp.end))
    busy: dict[str, float] = {}
    seen: dict[str, int] = {}
    for (role, _), ivs in per_worker.items():
        busy[role] = busy.get(role, 0.0) + _busy_seconds(ivs, start, end)
        seen[role] = seen.get(role, 0) + 1
    counts = dict(seen, **(workers or {}))
    out = {f"util/{role}": busy.get(role, 0.0) / (wall * max(n, 1)) for role, n in counts.items()}
    out["time/idle_s"] = sum(wall * n - busy.get(role, 0.0) for role, n in counts.items())
    return out


# -- Chrome trace -------------------------------------------------------------------------

def to_chrome_trace(spans: Iterable[Span], t0: float | None = None) -> dict:
    """Chrome-trace JSON (object format): one complete event (ph "X") per span.

    pid = one process row per role, tid = the worker index; ts/dur in microseconds since
    `t0` (default: the earliest span), so Perfetto shows roles as groups of worker lanes.
    """
    spans = list(spans)
    if t0 is None:
        t0 = min((s.start for s in spans), default=0.0)
    roles = sorted({s.role for s in spans})
    pid = {r: i + 1 for i, r in enumerate(roles)}
    events: list[dict] = []
    for r in roles:
        events.append({"name": "process_name", "ph": "M", "pid": pid[r], "tid": 0, "args": {"name": r}})
    for r, w in sorted({(s.role, s.worker) for s in spans}):
        events.append({"name": "thread_name", "ph": "M", "pid": pid[r], "tid": w, "args": {"name": f"{r}-{w}"}})
    for s in spans:
        events.append({
            "name": s.kind, "cat": s.role, "ph": "X", "pid": pid[s.role], "tid": s.worker,
            "ts": round((s.start - t0) * 1e6, 1), "dur": round(max(s.end - s.start, 0.0) * 1e6, 1),
        })
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"t0_unix_s": t0}}


def write_chrome_trace(path: str | Path, spans: Iterable[Span], t0: float | None = None) -> Path:
    """Writes the trace atomically (tmp + rename), so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_chrome_trace(spans, t0)))
    os.replace(tmp, path)
    return path


def load_chrome_trace(path: str | Path) -> list[Span]:
    """Reads a trace written by `write_chrome_trace` back into spans."""
    data = json.loads(Path(path).read_text())
    t0 = data.get("otherData", {}).get("t0_unix_s", 0.0)
    names = {e["pid"]: e["args"]["name"] for e in data["traceEvents"] if e.get("ph") == "M" and e["name"] == "process_name"}
    out = []
    for e in data["traceEvents"]:
        if e.get("ph") == "X":
            start = t0 + e["ts"] / 1e6
            out.append(Span(names.get(e["pid"], str(e["pid"])), int(e["tid"]), e["name"], start, start + e["dur"] / 1e6))
    return out
