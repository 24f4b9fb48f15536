"""The suite's summary table and the doc it is written into (pure file logic, no runs)."""

import json

import pytest

from asyncvla.bench.suite import DEFAULT_SUITE, TABLE_END, TABLE_START, suite_cmd, summary_rows, summary_table, update_doc
from asyncvla.config import ConfigError


def _write(out, name, runs, **extra):
    (out / name).mkdir(parents=True)
    (out / name / "results.json").write_text(json.dumps({"runs": runs, "machine": {"load_avg": [1.5, 1, 1]}, **extra}))


def test_rows_compare_sync_with_full_async_and_faults_with_fault_free(tmp_path):
    _write(tmp_path, "ablation-emulated-balanced", [
        {"mode": "sync", "env_steps_per_s": 100.0},
        {"mode": "+async_env", "env_steps_per_s": 120.0},
        {"mode": "+decoupled_actor", "env_steps_per_s": 230.0, "ratio_to_sync": 2.3, "fraction_of_bound": 0.9,
         "bound_env_steps_per_s": 255.6, "bound_stage": "env"}])
    _write(tmp_path, "faults-emulated-balanced", [{"mode": "fault-free", "env_steps_per_s": 180.0},
                                                  {"mode": "faults", "env_steps_per_s": 171.0, "ratio_to_sync": 0.95}], ok=True)
    rows = summary_rows(tmp_path, DEFAULT_SUITE)
    assert [r["item"] for r in rows] == ["ablation-emulated-balanced", "faults-emulated-balanced"]  # missing items skipped
    table = summary_table(rows)
    assert "| 100.0 → 230.0 | 2.30 | 90% | 255.6 (env) | 1.50 |" in table
    assert "fault-free → faults (checks pass)" in table and "`asyncvla bench faults --workload emulated-balanced --seconds 60`" in table


def test_the_doc_is_rewritten_between_its_markers_only(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text(f"# B\n\nintro\n\n{TABLE_START}\nold table\n{TABLE_END}\n\n## rest\nkept\n")
    update_doc(doc, "| new |", "Measured today.")
    text = doc.read_text()
    assert "old table" not in text and "| new |" in text and text.startswith("# B\n\nintro\n") and text.endswith("## rest\nkept\n")
    update_doc(doc, "| newer |", "Again.")
    assert doc.read_text().count(TABLE_START) == 1 and "| new |" not in doc.read_text()
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(ConfigError, match="suite-table"):
        update_doc(tmp_path / "plain.md", "x", "y")
    with pytest.raises(ConfigError, match="suite-table"):
        suite_cmd(tmp_path / "out", only=["batching"], doc=tmp_path / "plain.md")  # refused before anything runs
    assert not (tmp_path / "out").exists() and (tmp_path / "plain.md").read_text() == "no markers"


def test_every_row_of_the_default_suite_plans():
    """Each suite item's configs pass the plan's checks (a bench that fails after 10 minutes of
    other items is how a placement row's sync config with max_batch was found)."""
    import dataclasses

    from asyncvla.bench.ablation import LADDER, rung_config
    from asyncvla.bench.faults import faults_config
    from asyncvla.bench.placement import PLACEMENTS, placement_config
    from asyncvla.bench.throughput import mode_config
    from asyncvla.bench.workloads import build_workload
    from asyncvla.runtime.plan import make_plan

    checked = 0
    for it in DEFAULT_SUITE:
        if not it.workload:
            continue
        w = build_workload(it.workload)
        if it.kind == "ablation":
            cfgs = [rung_config(w.config(), r) for r in LADDER if not it.rungs or r.name in it.rungs]
        elif it.kind == "placement":
            cfgs = [placement_config(w, p, m) for p in PLACEMENTS.values() for m in ("sync", "async")]
        else:
            base = mode_config(w, "async")
            base = dataclasses.replace(base, runtime=dataclasses.replace(base.runtime, local=False))
            cfgs = [base, faults_config(base, 0.01, 0.0025, 0.5)]
        for cfg in cfgs:
            make_plan(cfg)
            checked += 1
    assert checked >= 28
