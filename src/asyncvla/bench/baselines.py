"""A regression guard for `asyncvla bench throughput`: measured ratios against stored ones.

Absolute env steps/s depend on the machine and its load; ratios measured in one run do much
less (async / sync, and async's fraction of the workload's bound). `baselines.json` (beside
this file) stores those two per workload, with when, how and under what load they were
measured. `bench throughput --check` compares a run with them and fails on a ratio that fell
more than `tolerance` (relative) below the stored one; `--write-baseline` stores a run's own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

BASELINES_FILE = Path(__file__).with_name("baselines.json")
DEFAULT_TOLERANCE = 0.15
"""Relative drop allowed: repeated 60 s runs on the shared 2-core machine differed by up to ~7%."""


def measured_ratios(result: dict) -> dict[str, float]:
    """The guarded ratios of a throughput result: async_over_sync and async's fraction of the bound
    (each only when the run has the rows it needs)."""
    out = {}
    if result.get("async_over_sync") is not None:
        out["async_over_sync"] = float(result["async_over_sync"])
    row = next((r for r in result.get("runs", []) if r.get("mode") == "async"), None)
    if row is not None and row.get("fraction_of_bound") is not None:
        out["async_fraction_of_bound"] = float(row["fraction_of_bound"])
    return out


def compare(measured: dict[str, float], stored: dict[str, float], tolerance: float = DEFAULT_TOLERANCE) -> list[dict]:
    """One check per ratio both sides have: ok when measured >= stored * (1 - tolerance)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance={tolerance!r} is invalid: must be in [0, 1)")
    checks = []
    for key in sorted(set(measured) & set(stored)):
        floor = stored[key] * (1.0 - tolerance)
        checks.append({"ratio": key, "stored": stored[key], "measured": round(measured[key], 3),
                       "floor": round(floor, 3), "ok": measured[key] >= floor})
    return checks


def load(path: Path = BASELINES_FILE) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def check(result: dict, path: Path = BASELINES_FILE, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """{workload, file, tolerance, checks, ok, stored_at}: the result's ratios against the stored ones.
    ok is False when a ratio regressed, and also when the workload has no stored ratios (nothing guarded)."""
    entry = load(path).get(result["workload"])
    checks = compare(measured_ratios(result), entry["ratios"], tolerance) if entry else []
    return {"workload": result["workload"], "file": str(path), "tolerance": tolerance, "checks": checks,
            "ok": bool(checks) and all(c["ok"] for c in checks), "stored_at": entry.get("measured") if entry else None}


def write(result: dict, path: Path = BASELINES_FILE) -> dict:
    """Stores the result's ratios as its workload's baseline (other workloads are kept); returns the entry."""
    ratios = measured_ratios(result)
    if not ratios:
        raise ValueError(f"workload {result['workload']}: no ratio to store (run the sync and async modes)")
    data = load(path)
    data[result["workload"]] = {
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "measured": {"date": time.strftime("%Y-%m-%d"), "command": result.get("command"), "seconds": result.get("seconds"),
                     "load_avg_at_end": (result.get("machine") or {}).get("load_avg"),
                     "env_steps_per_s": {r["mode"]: r["env_steps_per_s"] for r in result.get("runs", [])}},
    }
    Path(path).write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    return data[result["workload"]]


def summary_lines(report: dict) -> list[str]:
    """One line per check, then the verdict."""
    lines = [f"{c['ratio']}: {c['measured']:.3f} vs stored {c['stored']:.3f} (floor {c['floor']:.3f}) "
             f"{'ok' if c['ok'] else 'REGRESSED'}" for c in report["checks"]]
    if not report["checks"]:
        lines.append(f"no stored ratios for {report['workload']} in {report['file']} (--write-baseline stores them)")
    lines.append(f"baseline check: {'passed' if report['ok'] else 'FAILED'}")
    return lines
