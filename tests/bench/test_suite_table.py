"""The suite's summary table and the doc it is written into (pure file logic, no runs)."""

import json

import pytest

from asyncvla.bench.suite import DEFAULT_SUITE, TABLE_END, TABLE_START, summary_rows, summary_table, update_doc
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
    assert "fault-free → faults (checks pass)" in table and "`asyncvla bench faults --workload emulated-balanced --seconds 40`" in table


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
