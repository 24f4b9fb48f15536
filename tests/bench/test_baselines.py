"""The throughput regression guard: stored ratios vs measured ones (bench/baselines.py)."""

import json

import pytest

from asyncvla.bench import baselines


def _result(async_over_sync=2.2, fraction=0.9, workload="emulated-balanced"):
    return {"workload": workload, "async_over_sync": async_over_sync, "seconds": 60.0, "command": "asyncvla bench throughput",
            "runs": [{"mode": "sync", "env_steps_per_s": 100.0, "fraction_of_bound": 0.4},
                     {"mode": "async", "env_steps_per_s": round(100.0 * async_over_sync, 2), "fraction_of_bound": fraction}]}


def test_compare_flags_only_a_ratio_below_its_floor():
    checks = baselines.compare({"async_over_sync": 1.9, "async_fraction_of_bound": 0.5},
                               {"async_over_sync": 2.2, "async_fraction_of_bound": 0.9}, tolerance=0.15)
    by = {c["ratio"]: c for c in checks}
    assert by["async_over_sync"]["ok"] and by["async_over_sync"]["floor"] == pytest.approx(1.87)
    assert not by["async_fraction_of_bound"]["ok"]
    assert baselines.compare({"x": 1.0}, {"y": 1.0}) == []  # nothing in common: nothing checked
    with pytest.raises(ValueError, match="tolerance"):
        baselines.compare({}, {}, tolerance=1.0)


def test_write_then_check_round_trips_and_keeps_other_workloads(tmp_path):
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps({"emulated-env-bound": {"ratios": {"async_over_sync": 1.2}, "measured": {}}}))
    entry = baselines.write(_result(), path)
    assert entry["ratios"] == {"async_over_sync": 2.2, "async_fraction_of_bound": 0.9}
    assert entry["measured"]["env_steps_per_s"] == {"sync": 100.0, "async": 220.0}
    assert set(json.loads(path.read_text())) == {"emulated-balanced", "emulated-env-bound"}
    assert baselines.check(_result(), path)["ok"]
    slower = baselines.check(_result(async_over_sync=1.5), path)
    assert not slower["ok"] and [c["ratio"] for c in slower["checks"] if not c["ok"]] == ["async_over_sync"]
    unguarded = baselines.check(_result(workload="emulated-long-tail"), path)
    assert not unguarded["ok"] and "no stored ratios" in baselines.summary_lines(unguarded)[0]


def test_the_packaged_baselines_cover_every_emulated_workload_and_real_metaworld():
    from asyncvla.bench.workloads import workload_names

    stored = baselines.load()
    for name in [*workload_names("emulated"), "real-metaworld"]:
        assert set(stored[name]["ratios"]) == {"async_over_sync", "async_fraction_of_bound"}, name
        assert stored[name]["measured"]["command"].startswith("asyncvla bench throughput"), name


def _bound(w) -> dict:
    from asyncvla.bench.ablation import bound_terms, with_bound

    return with_bound({}, bound_terms(w))


def test_cli_check_exits_1_on_a_regression_with_one_line_per_ratio(tmp_path, monkeypatch, capsys):
    import asyncvla.bench.throughput as tp
    from asyncvla.cli import BenchThroughput

    w = tp.emulated_balanced()
    rows = [dict(_bound(w), mode=m, mean_batch=1.0, env_steps_per_s=v, trained_samples_per_s=v / 4,
                 utilization={"env": 0.5, "rollout": 0.5, "trainer": 0.5}) for m, v in (("sync", 120.0), ("async", 130.0))]
    canned = {"bench": "throughput", "workload": "emulated-balanced", "bound": tp.BOUND_FORMULA, "runs": rows,
              "async_over_sync": 130.0 / 120.0}
    monkeypatch.setattr(tp, "throughput_bench", lambda workload, modes, seconds: canned)
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"emulated-balanced": {"ratios": {"async_over_sync": 2.2}, "measured": {}}}))
    with pytest.raises(SystemExit) as e:
        BenchThroughput(seconds=3.0, out=tmp_path / "out", check=True, baseline_file=path).run()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "async_over_sync: 1.083 vs stored 2.200 (floor 1.870) REGRESSED" in err and "baseline check: FAILED" in err
    assert json.loads((tmp_path / "out" / "baseline-check.json").read_text())["ok"] is False


@pytest.mark.slow
def test_smoke_async_beats_sync_on_emulated_balanced_and_the_guard_runs_end_to_end(tmp_path):
    """The regression guard's smoke run (real runtime, threads backend, emulated accelerator):
    fails when full async falls below sync on emulated-balanced."""
    from asyncvla.cli import BenchThroughput

    path = tmp_path / "baselines.json"
    BenchThroughput(seconds=15.0, out=tmp_path / "out", write_baseline=True, check=True, baseline_file=path).run()
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["async_over_sync"] > 1.0, result["async_over_sync"]
    verdict = json.loads((tmp_path / "out" / "baseline-check.json").read_text())
    assert verdict["ok"] and {c["ratio"] for c in verdict["checks"]} == {"async_over_sync", "async_fraction_of_bound"}
