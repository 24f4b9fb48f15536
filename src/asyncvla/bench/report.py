"""The one writer every `asyncvla bench` subcommand uses: results.json, report.md, PNG plots.

A result is `{"workload": ..., "runs": [row, ...], ...}`; a throughput row carries at least
`mode`, `env_steps_per_s`, `trained_samples_per_s`, `bound_env_steps_per_s` and
`utilization` (per role). `finalize_runs` adds the derived columns every report shows: the
ratio to the sync row, the bottleneck stage (the bound) and the fraction of the bound
reached. Other benches (batching, envs, policy) pass their own `columns` and plot metric.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Column:
    """One table column: the row key (dots reach into dicts), its header and its format."""

    key: str
    header: str
    fmt: str = "{:.1f}"

    def cell(self, row: dict) -> str:
        value: Any = row
        for part in self.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return "–"
        try:
            return self.fmt.format(value)
        except (ValueError, TypeError):
            return str(value)


THROUGHPUT_COLUMNS = (
    Column("mode", "mode", "{}"),
    Column("env_steps_per_s", "env steps/s"),
    Column("trained_samples_per_s", "trained samples/s"),
    Column("ratio_to_sync", "× sync", "{:.2f}"),
    Column("bound_env_steps_per_s", "bound env steps/s"),
    Column("bound_stage", "bound stage", "{}"),
    Column("fraction_of_bound", "of bound", "{:.0%}"),
    Column("utilization.env", "util env", "{:.0%}"),
    Column("utilization.rollout", "util rollout", "{:.0%}"),
    Column("utilization.trainer", "util trainer", "{:.0%}"),
    Column("cpu_utilization", "CPU util", "{:.0%}"),
)


# -- pure math --------------------------------------------------------------------------------

def ratio(value: float, baseline: float) -> float | None:
    """value / baseline, or None when the baseline is not positive (no meaningful ratio)."""
    return value / baseline if baseline > 0 else None


def bottleneck(terms: dict[str, float]) -> str | None:
    """The stage with the smallest capacity (the one that bounds throughput)."""
    return min(terms, key=terms.__getitem__) if terms else None


def finalize_runs(runs: list[dict], baseline: str = "sync", metric: str = "env_steps_per_s") -> list[dict]:
    """Adds `ratio_to_sync`, `bound_stage` and `fraction_of_bound` to each row (in place; returns it).

    The baseline is the row whose mode is `baseline`, else the first row. A row that names
    its `bound_stage` already keeps it (the bench knows ties better than the terms do).
    """
    if not runs:
        return runs
    base = next((r for r in runs if r.get("mode") == baseline), runs[0])
    for r in runs:
        q = ratio(r.get(metric, 0.0), base.get(metric, 0.0))
        r["ratio_to_sync"] = round(q, 3) if q is not None else None
        r["bound_stage"] = r.get("bound_stage") or bottleneck(r.get("bound_terms") or {})
        f = ratio(r.get(metric, 0.0), r.get("bound_env_steps_per_s") or 0.0)
        r["fraction_of_bound"] = round(f, 3) if f is not None else None
    return runs


# -- text ---------------------------------------------------------------------------------------

def markdown_table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """A GitHub-markdown table of `rows` (numbers right-aligned)."""
    head = "| " + " | ".join(c.header for c in columns) + " |"
    sep = "|" + "|".join("---" if c.fmt == "{}" else "---:" for c in columns) + "|"
    body = ["| " + " | ".join(c.cell(r) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def machine_info() -> dict:
    """What the numbers were measured on (every results.json records it)."""
    import torch

    return {"hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "load_avg": _load_avg()}


def _load_avg() -> list[float] | None:
    # Timings on a shared machine move with others' load: record it next to them.
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def _markdown(result: dict, columns: Sequence[Column], title: str, plots: list[Path]) -> str:
    lines = [f"# {title}", ""]
    for key in ("workload", "kind", "label", "window"):
        if result.get(key) is not None:
            lines.append(f"- **{key}**: {result[key]}")
    if result.get("params"):
        lines.append(f"- **params**: `{json.dumps(result['params'], sort_keys=True)}`")
    m = result.get("machine") or {}
    if m:
        lines.append(f"- **machine**: {m.get('cpus')} CPUs, {m.get('platform')}, torch {m.get('torch')} "
                     f"({m.get('torch_threads')} threads), CUDA {'yes' if m.get('cuda') else 'no'}"
                     + (f", load average {'/'.join(map(str, m['load_avg']))} (1/5/15 min, at the end)" if m.get("load_avg") else ""))
    if result.get("command"):
        lines.append(f"- **command**: `{result['command']}`")
    lines += ["", markdown_table(result["runs"], columns), ""]
    for note in result.get("notes", []):
        lines.append(f"> {note}")
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------------

def bar_plot(rows: Sequence[dict], out_png: Path, label_key: str = "mode", metric: str = "env_steps_per_s",
             bound_key: str | None = "bound_env_steps_per_s", ylabel: str = "env steps/s", title: str = "") -> Path:
    """One bar per row; the bound (when present) as a black tick over each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(r.get(label_key)) for r in rows]
    values = [float(r.get(metric) or 0.0) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.8))
    bars = ax.bar(range(len(rows)), values, color="#4c72b0")
    for b, v in zip(bars, values):
        ax.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    bounds = [r.get(bound_key) for r in rows] if bound_key else []
    if any(x is not None for x in bounds):
        xs = [i for i, x in enumerate(bounds) if x is not None]
        ax.scatter(xs, [bounds[i] for i in xs], marker="_", s=900, color="black", label="bound", zorder=3)
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def utilization_plot(rows: Sequence[dict], out_png: Path, label_key: str = "mode", title: str = "") -> Path:
    """Grouped bars: utilization of each role for each row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = sorted({k for r in rows for k in (r.get("utilization") or {})})
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.8))
    width = 0.8 / max(len(roles), 1)
    for j, role in enumerate(roles):
        xs = [i + (j - (len(roles) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [(r.get("utilization") or {}).get(role, 0.0) for r in rows], width, label=role)
    ax.set_xticks(range(len(rows)), [str(r.get(label_key)) for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("utilization")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# -- the writer ---------------------------------------------------------------------------------

def write_report(out_dir: str | Path, result: dict, columns: Sequence[Column] = THROUGHPUT_COLUMNS,
                 title: str | None = None, plot: Callable[[list[dict], Path], list[Path]] | None = None) -> dict[str, Path]:
    """Writes out_dir/results.json, out_dir/report.md and PNG plots; returns their paths.

    `plot(runs, out_dir)` draws the PNGs (default: env steps/s with bounds, and utilization
    when the rows have it). `result["machine"]` is filled in when missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.setdefault("machine", machine_info())
    if Path(sys.argv[0]).name == "asyncvla":  # the exact command, when run from the CLI
        result.setdefault("command", " ".join(["asyncvla", *sys.argv[1:]]))
    runs = result["runs"]
    name = title or f"{result.get('bench', 'bench')}: {result.get('workload', '')}".strip(": ")
    if plot is not None:
        pngs = plot(runs, out)
    else:
        pngs = [bar_plot(runs, out / "throughput.png", title=name)]
        if any(r.get("utilization") for r in runs):
            pngs.append(utilization_plot(runs, out / "utilization.png", title=name))
    paths = {"json": out / "results.json", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    paths["md"].write_text(_markdown(result, columns, name, list(pngs)))
    paths.update({p.stem: p for p in pngs})
    return paths


def print_run(row: dict) -> None:
    """One JSON line per run on stdout (compares across commits)."""
    print(json.dumps(row, default=str), flush=True)
