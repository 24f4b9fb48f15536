"""bench report: the ratio/bound math, the markdown table, and the files one report writes."""

import json

import pytest

from asyncvla.bench.report import (THROUGHPUT_COLUMNS, Column, bottleneck, finalize_runs, markdown_table, ratio,
                                   write_report)


def _runs():
    return [
        {"mode": "sync", "env_steps_per_s": 100.0, "trained_samples_per_s": 25.0, "bound_env_steps_per_s": 400.0,
         "bound_terms": {"env": 500.0, "rollout": 400.0, "trainer": 450.0},
         "utilization": {"env": 0.3, "rollout": 0.3, "trainer": 0.3}},
        {"mode": "async", "env_steps_per_s": 250.0, "trained_samples_per_s": 62.5, "bound_env_steps_per_s": 400.0,
         "bound_terms": {"env": 500.0, "rollout": 400.0, "trainer": 450.0},
         "utilization": {"env": 0.7, "rollout": 0.9, "trainer": 0.8}},
    ]


def test_ratio_and_bottleneck():
    assert ratio(250, 100) == 2.5
    assert ratio(5, 0) is None
    assert bottleneck({"env": 3.0, "rollout": 1.0, "trainer": 2.0}) == "rollout"
    assert bottleneck({}) is None


def test_finalize_runs_uses_the_sync_row_as_baseline_even_when_it_is_not_first():
    runs = finalize_runs(list(reversed(_runs())))
    by = {r["mode"]: r for r in runs}
    assert by["sync"]["ratio_to_sync"] == 1.0
    assert by["async"]["ratio_to_sync"] == 2.5
    assert by["async"]["bound_stage"] == "rollout"
    assert by["async"]["fraction_of_bound"] == pytest.approx(0.625)


def test_finalize_runs_without_sync_row_uses_the_first():
    runs = finalize_runs([{"mode": "a", "env_steps_per_s": 10.0}, {"mode": "b", "env_steps_per_s": 30.0}])
    assert [r["ratio_to_sync"] for r in runs] == [1.0, 3.0]
    assert runs[0]["fraction_of_bound"] is None  # no bound recorded


def test_markdown_table_formats_nested_keys_and_missing_values():
    rows = finalize_runs(_runs())
    rows[0].pop("bound_env_steps_per_s")
    table = markdown_table(rows, THROUGHPUT_COLUMNS).splitlines()
    assert table[0].startswith("| mode | env steps/s |")
    assert table[1].count("|") == len(THROUGHPUT_COLUMNS) + 1
    assert "| async | 250.0 | 62.5 | 2.50 | 400.0 | rollout | 62% | 70% | 90% | 80% | – |" == table[3]  # no cpu_utilization: a dash
    assert "| sync | 100.0 | 25.0 | 1.00 | – |" in table[2]
    assert Column("x", "x", "{:.1f}").cell({"x": "n/a"}) == "n/a"


def test_write_report_writes_schema_markdown_and_pngs(tmp_path):
    result = {"bench": "ablation", "workload": "emulated-balanced", "kind": "emulated", "runs": finalize_runs(_runs())}
    paths = write_report(tmp_path / "r", result)
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert data["workload"] == "emulated-balanced"
    for run in data["runs"]:
        assert {"mode", "env_steps_per_s", "trained_samples_per_s", "bound_env_steps_per_s", "utilization"} <= set(run)
    assert data["machine"]["cpus"] >= 1
    md = paths["md"].read_text()
    assert "| async |" in md and "![throughput](throughput.png)" in md
    for name in ("throughput", "utilization"):
        png = paths[name]
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
