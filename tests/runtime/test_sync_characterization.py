"""Characterization of the synchronous loop: the same config must train on exactly the same data.

Recorded (with one torch thread) from the sync loop as it was before the runtimes were merged (the RLinf baseline:
lockstep rollout epoch over 2 env workers x 2 pipeline stages, then PPO/GRPO epochs, then
weight sync), on the emulated env with per-env sampling keys, so thread order cannot change
a sample. Each update's training batch (obs, actions, behaviour logprob, values, advantages,
returns, versions, in batch order), its loss stats and the final weights must match the
recording to 1e-6. The recording came from commit 9599962 (runtime/pipeline.py's loop);
regenerate only when a change is *meant* to alter sync training, with
ASYNCVLA_RECORD=1 python -m pytest tests/runtime/test_sync_characterization.py.
PPO was re-recorded on 2026-12-08, when actor and critic gradients began to be clipped apart
(GRPO, which has no critic gradient, still matches the recording from 9599962).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from asyncvla.config import AlgoConfig, RunConfig, RuntimeConfig, TrainConfig, env_config, policy_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.metrics.writer import read_metrics
from asyncvla.runtime.learner.trainer import Trainer

RECORDING = Path(__file__).parent / "data" / "sync_characterization.json"
BATCH_FIELDS = ("behav_logprob", "old_values", "advantages", "returns", "version", "actions")


def characterization_cfg(out_dir: Path, algo: str) -> TrainConfig:
    return TrainConfig(
        # One whole episode per env per update (12 steps = 6 decisions of 2), so GRPO's groups are whole episodes.
        env=env_config(id="emulated/fast", num_envs=4, image_size=16, end_on_success=False, seed=3,
                      emulated=EmulatedConfig(episode_len=12)),
        policy=policy_config(chunk=2, hidden_dim=32, num_layers=1),
        algo=AlgoConfig(name=algo, group_size=2, minibatch_size=16, update_epochs=2),
        runtime=RuntimeConfig(mode="sync", num_env_workers=2, rollout_steps=6, pipeline_stages=2, local=True, trace=False),
        run=RunConfig(out_dir=str(out_dir), total_env_steps=None, total_updates=3, eval_episodes=0, checkpoint_every=0,
                      eval_video=False, seed=5),
    )


def _digest(x) -> list[float]:
    """Order-sensitive summary of an array: its sum and the sum of its rows weighted by position,
    then the same of its absolute values (the scale a difference is measured against)."""
    a = np.asarray(x, np.float64).reshape(len(x), -1)
    w = np.arange(1, len(a) + 1)
    return [float(a.sum()), float((a.sum(1) * w).sum()), float(np.abs(a).sum()), float((np.abs(a).sum(1) * w).sum())]


def _batch_digest(batch) -> dict:
    out = {k: _digest(getattr(batch, k).detach().cpu().numpy()) for k in BATCH_FIELDS}
    out["images"] = _digest(batch.obs.images)
    out["proprio"] = _digest(batch.obs.proprio)
    out["n"] = len(batch)
    return out


def run_and_record(tmp_path: Path, algo: str, monkeypatch) -> dict:
    from asyncvla.runtime.driver import train

    batches: list[dict] = []
    real_prepare = Trainer.prepare

    def prepare(self, rollouts):
        batch = real_prepare(self, rollouts)
        batches.append(_batch_digest(batch))
        return batch

    monkeypatch.setattr(Trainer, "prepare", prepare)
    run_dir = tmp_path / algo
    train(characterization_cfg(run_dir, algo))
    losses = [{k: v for k, v in r.items() if k.startswith("loss/") and k not in REDEFINED}
              for r in read_metrics(run_dir / "metrics.jsonl") if "loss/policy" in r]
    weights = load_file(str(run_dir / "checkpoints" / "last" / "model.safetensors"))
    return {"batches": batches, "losses": losses,
            "weights": {k: _digest(v.reshape(1, -1)) for k, v in sorted(weights.items())}}


# Diagnostics whose definition changed after the recording (now extremes over the update's
# minibatches, then a mean, or new): what the run trains on and learns is compared, these are not.
REDEFINED = frozenset({"loss/ratio_max", "loss/ratio_min", "loss/approx_kl_max", "loss/clip_frac_max",
                       "loss/grad_norm_actor", "loss/grad_norm_critic"})


VALUES_TOL = 1e-4
"""The acting-time values: on another CPU (AMD EPYC against the recording's machine) the value head's
outputs differ by up to 3e-5 of their scale while every action, logprob, advantage and weight
still matches to 1e-6 (GRPO, which never reads them, showed it), and the loss stats by 2e-6."""


def _close(got, want, path: str) -> None:
    """Equal to 1e-6 of each quantity's scale (VALUES_TOL for the acting-time values): a zero-mean
    sum (normalised advantages) carries float noise of 1e-7 relative to its terms, which memory
    alignment alone can change."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            _close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list) and len(want) == 4 and all(isinstance(v, float) for v in want):
        tol = VALUES_TOL if path.endswith(".old_values") else 1e-6
        for k in range(4):
            assert got[k] == pytest.approx(want[k], abs=tol * (1 + want[2 + k % 2])), f"{path}[{k}]"
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{path}[{i}]")
    else:  # loss stats: means over minibatches of per-sample quantities, 2e-6 apart across CPUs
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5), path


@pytest.fixture
def one_torch_thread(monkeypatch):
    # Float rounding of a matmul depends on how many threads split it: record and check with one,
    # and encode the instruction afresh (an earlier test may have cached it under other threads).
    import torch

    from asyncvla.policies import text

    monkeypatch.setattr(text, "_cache", {})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_sync_mode_reproduces_the_recorded_baseline(tmp_path, algo, monkeypatch, one_torch_thread):
    got = run_and_record(tmp_path, algo, monkeypatch)
    if os.environ.get("ASYNCVLA_RECORD"):
        data = json.loads(RECORDING.read_text()) if RECORDING.exists() else {}
        data[algo] = got
        RECORDING.parent.mkdir(exist_ok=True)
        RECORDING.write_text(json.dumps(data, indent=1))
    want = json.loads(RECORDING.read_text())[algo]
    want["losses"] = [{k: v for k, v in r.items() if k not in REDEFINED} for r in want["losses"]]
    assert len(got["batches"]) == 3 and got["batches"][0]["n"] == 2 * 4 * 6
    _close(got, want, algo)
