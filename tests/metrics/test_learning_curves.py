"""Learning-curve helpers: curve extraction, smoothing, seed bands, table and plot."""

import json

import numpy as np
import pytest

from asyncvla.metrics.learning_curves import (
    LearningCurves, band, curve, markdown_table, plot_learning_curves, summarize_run, trailing_mean,
)


def test_curve_carries_env_steps_to_records_without_them_and_drops_nulls():
    records = [
        {"step": 0, "eval/success": 0.2},  # before training: 0 env steps
        {"step": 1, "perf/env_steps": 100, "rollout/success": 0.5},
        {"step": 2, "perf/env_steps": 200, "rollout/success": None},
        {"step": 2, "eval/success": 0.6},  # final eval: the last count
    ]
    assert curve(records, "eval/success")[0].tolist() == [0.0, 200.0]
    assert curve(records, "eval/success")[1].tolist() == [0.2, 0.6]
    x, y = curve(records, "rollout/success")
    assert x.tolist() == [100.0] and y.tolist() == [0.5]


def test_trailing_mean_averages_over_an_env_step_window():
    x = np.array([0.0, 100.0, 200.0, 300.0])
    np.testing.assert_allclose(trailing_mean(x, np.array([0, 2, 4, 6.0]), 150), [0, 1, 3, 5])
    np.testing.assert_allclose(trailing_mean(x[:2], np.array([1.0, 3.0]), 1e9), [1, 2])
    with pytest.raises(ValueError, match="window"):
        trailing_mean(x, np.zeros(4), 0)


def test_band_uses_the_range_every_curve_covers():
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 1.0]))
    b = (np.array([5.0, 15.0]), np.array([0.0, 0.0]))
    grid, mean, lo, hi = band([a, b], points=3)
    np.testing.assert_allclose(grid, [5, 10, 15])
    np.testing.assert_allclose(hi, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(lo, [0, 0, 0])
    np.testing.assert_allclose(mean, [0.25, 0.5, 0.5])
    with pytest.raises(ValueError, match="no curve"):
        band([(np.array([]), np.array([]))])


def _fake_run(root, seed, before, after, rollout):
    run = root / f"run{seed}"
    (run / "checkpoints" / "last").mkdir(parents=True)
    (run / "config.yaml").write_text(f"run:\n  seed: {seed}\n")
    (run / "checkpoints" / "last" / "run_state.json").write_text(
        json.dumps({"success_before": before, "success_after": after, "env_steps": 300, "wall_s": 12.5}))
    lines = [{"step": 0, "wall_s": 0.0, "eval/success": before}]
    lines += [{"step": i + 1, "wall_s": 1.0, "perf/env_steps": 100 * (i + 1), "rollout/success": s} for i, s in enumerate(rollout)]
    lines += [{"step": len(rollout), "wall_s": 2.0, "eval/success": after}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_table_and_plot_from_run_dirs(tmp_path, capsys):
    runs = [_fake_run(tmp_path, s, 0.2, 0.6 + 0.1 * s, [0.2, 0.4, 0.6]) for s in range(2)]
    rows = [summarize_run(r, "sync") for r in runs]
    assert rows[1].seed == 1 and rows[1].success_after == pytest.approx(0.7)
    table = markdown_table(rows)
    assert "| sync | 1 | 0.200 | 0.700 | +0.500 | 300 | 12 |" in table  # 12.5 rounds half to even
    assert "| sync mean | 2 seeds | 0.200 | 0.650 | +0.450 | | |" in table
    out = plot_learning_curves({"sync": runs, "async": runs[:1]}, tmp_path / "curves.png")
    assert out.stat().st_size > 1000
    LearningCurves(sync=[str(r) for r in runs], out=str(tmp_path / "cli.png")).run()
    assert "sync mean" in capsys.readouterr().out and (tmp_path / "cli.png").exists()
    LearningCurves(sync=[str(runs[0])], runs=[f"ppo async={r}" for r in runs], out=str(tmp_path / "groups.png")).run()
    table = capsys.readouterr().out
    assert "| ppo async mean | 2 seeds |" in table and "| sync mean | 1 seeds |" in table


def test_cli_needs_some_runs(tmp_path):
    from asyncvla.config import ConfigError

    with pytest.raises(ConfigError, match="--sync"):
        LearningCurves(out=str(tmp_path / "x.png")).run()
    with pytest.raises(ConfigError, match="runs='ppo' is invalid: expected LABEL=RUN_DIR"):
        LearningCurves(runs=["ppo"], out=str(tmp_path / "x.png")).run()
    with pytest.raises(ConfigError, match="ppo run .* is invalid: no metrics.jsonl there"):
        LearningCurves(runs=[f"ppo={tmp_path}"], out=str(tmp_path / "x.png")).run()
