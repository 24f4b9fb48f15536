"""MetricsWriter: one JSON line per record in metrics.jsonl, plus TensorBoard events.

Every record carries `step` (the x-axis: updates in sync mode) and `wall_s` (seconds since
the run started) and only namespaced keys (`perf/env_steps_per_s`, `loss/policy`, ...; see
docs/metrics.md). Both files are flushed on every write, so a crash leaves intact logs. A
resumed run first drops the records of the updates its checkpoint does not cover (a hard kill
leaves some), then appends: the stream has no gap and no step twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

# Namespaces a metric key may start with (docs/metrics.md explains each).
NAMESPACES = ("perf", "loss", "time", "rollout", "util", "eval", "lag", "queue", "train", "sys")


def check_key(key: str) -> None:
    """Raises ValueError unless `key` is `<namespace>/<name>` with a known namespace."""
    ns, sep, name = key.partition("/")
    if not sep or not name or ns not in NAMESPACES:
        raise ValueError(f"metric key {key!r} is invalid: expected <namespace>/<name> with namespace in {', '.join(NAMESPACES)}")


def _plain(v: Any) -> Any:
    """numpy/torch scalars to Python numbers; NaN/inf to None (JSON has neither)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsWriter:
    """Appends records to `<out_dir>/metrics.jsonl` and TensorBoard event files in `<out_dir>/tb`."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, start_time: float | None = None, wall_offset_s: float = 0.0,
                 resume_step: int | None = None):
        """resume_step: the update the resumed checkpoint holds; later records (and events) are dropped."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        if resume_step is not None:
            truncate_jsonl(self.path, lambda r: r.get("step", 0) <= resume_step)
        self._file = open(self.path, "a", buffering=1)
        self._t0 = time.time() if start_time is None else start_time
        self._wall_offset = wall_offset_s  # a resumed run continues the wall clock
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1  # TensorBoard hides the dropped steps' events
            self._tb = SummaryWriter(str(self.out_dir / "tb"), flush_secs=5, purge_step=purge)

    @property
    def wall_s(self) -> float:
        return self._wall_offset + time.time() - self._t0

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Writes one record; keys must be namespaced. Returns the record as written."""
        for k in metrics:
            check_key(k)
        record = {"step": int(step), "wall_s": round(self.wall_s, 3)}
        record.update({k: _plain(v) for k, v in sorted(metrics.items())})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "wall_s") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, global_step=int(step))
            self._tb.flush()
        return record

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict]:
    """Reads metrics.jsonl back (skips a torn last line, which only a crash mid-write leaves)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_jsonl(path: str | Path, keep: Callable[[dict], bool]) -> int:
    """Rewrites a JSON-lines file with only the records `keep` accepts (and no torn line), atomically;
    returns how many lines were dropped. A missing file is left missing."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = [r for r in read_metrics(path) if keep(r)]
    if len(kept) != len(lines):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)
    return len(lines) - len(kept)
