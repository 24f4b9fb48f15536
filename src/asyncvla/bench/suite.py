"""The bench commands' bodies (each writes results.json, report.md, PNGs and prints one JSON
line per run) and `asyncvla bench suite`, the default suite (about 15 minutes here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from asyncvla.bench.report import finalize_runs, print_run, write_report


def set_torch_threads(n: int) -> None:
    """Intra-op threads of torch in this process; several roles share its cores.

    On a loaded 2-core machine torch's default (one thread per core) spin-waits: a tiny
    policy's act took ~90 ms with 2 threads and ~4 ms with 1 (measured), so every bench
    defaults to 1 and records it.
    """
    import torch

    if n >= 1:
        torch.set_num_threads(n)


def ablation_cmd(workload: str, seconds: float, out: Path, rungs: list[str] | None = None, timeline: bool = True,
                 echo: bool = True) -> dict:
    """`bench ablation`: the ladder, its report and (with `timeline`) the sync/async Gantt."""
    from asyncvla.bench.ablation import ABLATION_COLUMNS, ablation_bench, compare_rungs, ladder_violations
    from asyncvla.bench.timeline import side_by_side_gantt

    res = ablation_bench(workload, seconds, rungs, trace_dir=Path(out) if timeline else None,
                         on_run=print_run if echo else None)
    finalize_runs(res["runs"])
    compare_rungs(res["runs"])
    res["violations"] = ladder_violations(res["runs"])
    ok = "full async fastest, every rung within 5% of (or above) the fastest rung before it"
    res["notes"] = [
        "each rung is compared with the fastest rung above it in the table (column 'compared with', ratio "
        "'× best previous'), pipelined sync rows included; '× sync' is the ratio to the 1-stage sync row",
        f"bound: {res['bound']}",
        f"ladder check: {'; '.join(res['violations']) or ok}"]
    paths = write_report(out, res, columns=ABLATION_COLUMNS, title=f"ablation: {workload}")
    sync_t, async_t = Path(out) / "sync.trace.json", Path(out) / "async.trace.json"
    if timeline and sync_t.exists() and async_t.exists():
        png = side_by_side_gantt([(f"sync ({workload})", sync_t), (f"full async ({workload})", async_t)],
                                 Path(out) / "timeline.png")
        with open(paths["md"], "a") as f:
            f.write(f"\n![timeline]({png.name})\n")
    return res


def throughput_cmd(workload: str, modes: list[str], seconds: float, out: Path, echo: bool = True) -> dict:
    """`bench throughput`: sync vs async (or any rungs) on one workload, with report and plots in `out`."""
    from asyncvla.bench.throughput import throughput_bench

    res = throughput_bench(workload, modes, seconds)
    finalize_runs(res["runs"])
    if echo:
        for row in res["runs"]:
            print_run(row)
    notes = [f"bound: {res['bound']}"]
    if "async_over_sync" in res:
        notes.append(f"async / sync = {res['async_over_sync']:.2f}")
    notes += [f"{r['mode']} reaches {r['fraction_of_bound']:.0%} of the bound" for r in res["runs"]
              if r.get("fraction_of_bound") is not None and r["mode"] != "sync"]
    res["notes"] = notes
    write_report(out, res, title=f"throughput: {workload}")
    return res


def placement_cmd(workload: str, seconds: float, out: Path, num_devices: int = 2, echo: bool = True) -> dict:
    from asyncvla.bench.placement import placement_bench

    res = placement_bench(workload, seconds, num_devices=num_devices, on_run=print_run if echo else None)
    finalize_runs(res["runs"], baseline="colocated/sync")
    write_report(out, res, title=f"placement: {workload} on {num_devices} emulated devices")
    return res


def batching_cmd(out: Path, echo: bool = True, **kw) -> dict:
    from asyncvla.bench.batching import BATCHING_COLUMNS, batching_bench, batching_plot

    res = batching_bench(on_run=print_run if echo else None, **kw)
    write_report(out, res, columns=BATCHING_COLUMNS, title="dynamic batching sweep", plot=batching_plot)
    return res


def faults_cmd(workload: str, seconds: float, out: Path, echo: bool = True, **kw) -> dict:
    """`bench faults`: the fault-free and the faulty row, the checks, report and plots."""
    from asyncvla.bench.faults import FAULTS_COLUMNS, faults_bench

    res = faults_bench(workload, seconds, **kw)
    if echo:
        for row in res["runs"]:
            print_run(row)
    write_report(out, res, columns=FAULTS_COLUMNS, title=f"faults: {workload}")
    return res


def envs_cmd(out: Path, echo: bool = True, **kw) -> dict:
    from asyncvla.bench.envs import envs_bench, envs_plot
    from asyncvla.bench.report import Column

    cols = (Column("mode", "backend", "{}"), Column("env_id", "task", "{}"), Column("num_envs", "envs", "{}"),
            Column("image_size", "image", "{}"), Column("chunk", "chunk", "{}"), Column("steps_per_s", "protocol steps/s"),
            Column("raw_steps_per_s", "raw steps/s"), Column("ratio", "ratio", "{:.2f}"), Column("reset_s", "reset s", "{:.2f}"),
            Column("create_s", "create s", "{:.2f}"), Column("skipped", "skipped", "{}"))
    res = envs_bench(on_run=print_run if echo else None, **kw)
    write_report(out, res, columns=cols, title="env throughput per backend", plot=envs_plot)
    return res


@dataclass(frozen=True)
class SuiteItem:
    """One part of the default suite: a name (its sub-directory) and what it runs."""

    name: str
    kind: str
    workload: str = ""
    seconds: float = 20.0
    rungs: tuple[str, ...] = ()


DEFAULT_SUITE: tuple[SuiteItem, ...] = (
    SuiteItem("ablation-emulated-balanced", "ablation", "emulated-balanced", 30.0),
    SuiteItem("ablation-emulated-long-tail", "ablation", "emulated-long-tail", 20.0),
    SuiteItem("ablation-emulated-env-bound", "ablation", "emulated-env-bound", 20.0, ("sync", "+decoupled_actor")),
    SuiteItem("ablation-emulated-infer-bound", "ablation", "emulated-infer-bound", 20.0, ("sync", "+decoupled_actor")),
    SuiteItem("ablation-emulated-train-bound", "ablation", "emulated-train-bound", 20.0, ("sync", "+decoupled_actor")),
    SuiteItem("placement-emulated-balanced", "placement", "emulated-balanced", 20.0),
    SuiteItem("batching", "batching", seconds=1.5),
    SuiteItem("envs", "envs"),
    SuiteItem("ablation-real-metaworld", "ablation", "real-metaworld", 40.0, ("sync", "+decoupled_actor")),
    SuiteItem("faults-emulated-balanced", "faults", "emulated-balanced", 60.0),
)


RUNNERS = {
    "ablation": lambda it, d, echo: ablation_cmd(it.workload, it.seconds, d, list(it.rungs) or None, echo=echo),
    "placement": lambda it, d, echo: placement_cmd(it.workload, it.seconds, d, echo=echo),
    "batching": lambda it, d, echo: batching_cmd(d, echo=echo, seconds=it.seconds),
    "envs": lambda it, d, echo: envs_cmd(d, echo=echo),
    "faults": lambda it, d, echo: faults_cmd(it.workload, it.seconds, d, echo=echo),
}


def item_command(it: SuiteItem) -> str:
    """The command that reruns one suite item on its own."""
    if it.kind in ("batching", "envs"):
        return f"asyncvla bench {it.kind}" + (f" --seconds {it.seconds:g}" if it.kind == "batching" else "")
    rungs = f" --rungs {' '.join(it.rungs)}" if it.rungs else ""
    return f"asyncvla bench {it.kind} --workload {it.workload} --seconds {it.seconds:g}{rungs}"


def _fmt(x, f: str = "{:.1f}") -> str:
    return "–" if x is None else f.format(x)


def summary_rows(out: Path, items=DEFAULT_SUITE) -> list[dict]:
    """One row per throughput item of a suite run in `out`: sync, full async, their ratio, the bound."""
    import json

    rows = []
    for it in items:
        path = Path(out) / it.name / "results.json"
        if it.kind not in ("ablation", "placement", "faults") or not path.exists():
            continue
        res = json.loads(path.read_text())
        runs = {r["mode"]: r for r in res["runs"]}
        base, top = {"ablation": ("sync", "+decoupled_actor"), "placement": ("colocated/sync", "disaggregated/async"),
                     "faults": ("fault-free", "faults")}[it.kind]
        a, b = runs.get(base, {}), runs.get(top, {})
        load = res.get("machine", {}).get("load_avg") or [None]
        rows.append({"item": it.name, "command": item_command(it), "base": base, "top": top,
                     "base_steps": a.get("env_steps_per_s"), "top_steps": b.get("env_steps_per_s"),
                     "ratio": b.get("ratio_to_sync"), "fraction_of_bound": b.get("fraction_of_bound"),
                     "bound": b.get("bound_env_steps_per_s"), "stage": b.get("bound_stage"), "load_end": load[0],
                     "ok": res.get("ok")})
    return rows


def summary_table(rows: list[dict]) -> str:
    """The markdown table docs/benchmarks.md leads with."""
    lines = ["| item | rows compared | env steps/s | ratio | of bound | bound (stage) | load at end | command |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        bound = f"{_fmt(r['bound'])} ({r['stage']})" if r["bound"] is not None else "–"
        check = "" if r["ok"] is None else (" (checks pass)" if r["ok"] else " (a check FAILS)")
        lines.append(f"| {r['item']} | {r['base']} → {r['top']}{check} | {_fmt(r['base_steps'])} → {_fmt(r['top_steps'])} | "
                     f"{_fmt(r['ratio'], '{:.2f}')} | {_fmt(r['fraction_of_bound'], '{:.0%}')} | {bound} | "
                     f"{_fmt(r['load_end'], '{:.2f}')} | `{r['command']}` |")
    return "\n".join(lines)


TABLE_START, TABLE_END = "<!-- suite-table:start -->", "<!-- suite-table:end -->"


def check_doc(doc: Path) -> str:
    """The text of `doc`; one line when it is missing or lacks the suite-table markers."""
    from asyncvla.config import ConfigError

    try:
        text = Path(doc).read_text()
    except OSError as e:
        raise ConfigError(f"doc={str(doc)!r} is invalid: {e.strerror}") from None
    if TABLE_START not in text or TABLE_END not in text:
        raise ConfigError(f"doc={str(doc)!r} is invalid: it needs the lines {TABLE_START} and {TABLE_END}")
    return text


def update_doc(doc: Path, table: str, stamp: str) -> None:
    """Replaces the text between the suite-table markers of `doc` with `table` (one line on a missing marker)."""
    head, rest = check_doc(doc).split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    Path(doc).write_text(f"{head}{TABLE_START}\n{stamp}\n\n{table}\n{TABLE_END}{tail}")


DOC_PLOTS = {"ablation-emulated-balanced": {"throughput.png": "ablation-emulated-balanced.png",
                                           "timeline.png": "timeline-emulated-balanced.png"}}
"""Suite plots docs/benchmarks.md shows: item -> {file in the item's directory: name under the doc's benchmarks/}."""


def suite_cmd(out: Path, only: list[str] | None = None, echo: bool = True, doc: Path | None = None) -> dict:
    """Runs the default suite (or the items named in `only`) into out/<item>/; returns {item: wall seconds}.

    Writes out/summary.md (the table of every throughput item); with `doc`, also puts that table
    between the doc's suite-table markers and copies the plots it shows next to it.
    """
    import datetime
    import os
    import shutil

    from asyncvla.config import ConfigError

    items = [i for i in DEFAULT_SUITE if not only or i.name in only]
    if only and len(items) != len(only):
        raise ConfigError(f"only={only!r} is invalid: allowed: {', '.join(i.name for i in DEFAULT_SUITE)}")
    if doc is not None:
        check_doc(doc)  # a doc without markers fails now, not after the suite
    walls, load0 = {}, os.getloadavg()[0]
    for it in items:
        t0 = time.time()
        RUNNERS[it.kind](it, Path(out) / it.name, echo)
        walls[it.name] = round(time.time() - t0, 1)
    table = summary_table(summary_rows(out))  # every item in `out`, those of earlier `--only` runs too
    stamp = (f"Measured {datetime.date.today().isoformat()} by `asyncvla bench suite` (this run: {sum(walls.values()) / 60:.0f} min, "
             f"load average {load0:.2f} at its start); each item's report is in its directory of the suite's output.")
    (Path(out) / "summary.md").write_text(f"{stamp}\n\n{table}\n")
    if doc is not None:
        update_doc(doc, table, stamp)
        for name, files in DOC_PLOTS.items():
            for src, dst in files.items():
                if (Path(out) / name / src).exists():
                    shutil.copy(Path(out) / name / src, Path(doc).parent / "benchmarks" / dst)
    return walls
