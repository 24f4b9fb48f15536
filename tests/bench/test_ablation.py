"""bench ablation end to end (short): files written, full async beats sync on the balanced workload."""

import json

import pytest
import torch

from asyncvla.bench.suite import ablation_cmd
from asyncvla.config import ConfigError


def test_rejects_unknown_rung(tmp_path):
    with pytest.raises(ConfigError, match="rungs='warp' is invalid"):
        ablation_cmd("emulated-balanced", 1, tmp_path, ["warp"], echo=False)


@pytest.mark.slow
def test_two_rungs_write_report_and_timeline(tmp_path):
    torch.set_num_threads(1)
    res = ablation_cmd("emulated-balanced", 8, tmp_path, ["sync", "+decoupled_actor"], echo=False)
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["mode"] for r in data["runs"]] == ["sync", "+decoupled_actor"]
    sync, full = res["runs"]
    assert full["env_steps_per_s"] > 1.3 * sync["env_steps_per_s"]
    assert full["env_steps_per_s"] <= full["bound_env_steps_per_s"] * 1.05
    for name in ("report.md", "throughput.png", "utilization.png", "timeline.png", "sync.trace.json", "async.trace.json"):
        assert (tmp_path / name).exists(), name
