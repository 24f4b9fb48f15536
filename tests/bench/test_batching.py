"""bench batching: a short sweep through the real RolloutServer reports sane numbers."""

import pytest
import torch

from asyncvla.bench.batching import batching_bench
from asyncvla.config import ConfigError


def test_short_sweep_batches_under_load_and_reaches_the_offline_rate():
    torch.set_num_threads(1)
    res = batching_bench(max_batches=(1, 8), max_waits_ms=(2.0,), seconds=0.6, infer_fixed_ms=10.0, infer_per_sample_ms=0.5)
    by = {r["max_batch"]: r for r in res["runs"]}
    assert by[1]["mean_batch"] == 1.0
    # 16 closed-loop clients keep batches mostly full; the margins leave room for a loaded
    # machine (the deterministic flush rules are tested with a fake clock in tests/runtime).
    assert 3.0 <= by[8]["mean_batch"] <= 8.0
    # Batching pays with a large fixed cost: ~1/(10.5 ms) vs ~8/(14 ms) samples/s.
    assert by[8]["samples_per_s"] > 2 * by[1]["samples_per_s"]
    for r in res["runs"]:
        assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"]
        assert 0.5 <= r["ratio_to_offline"] <= 1.2


def test_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="max_batches"):
        batching_bench(max_batches=(0,))
    with pytest.raises(ConfigError, match="accelerator"):
        batching_bench(max_batches=(1,), accelerator="tpu")
