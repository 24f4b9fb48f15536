"""`asyncvla train --mode async` end to end (threads): summary, records, evaluation, checkpoints, resume."""

import json

from asyncvla.config import AlgoConfig, RunConfig, RuntimeConfig, TrainConfig, env_config, policy_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.metrics.writer import read_metrics
from asyncvla.runtime.checkpoints import load_run_config
from asyncvla.runtime.driver import train as train_async

FULL = dict(async_env=True, streaming_rollout=True, decoupled_actor=True)


def async_cfg(tmp_path, updates=3, max_staleness=1, **run) -> TrainConfig:
    return TrainConfig(
        env=env_config(id="emulated/fast", num_envs=4, image_size=16, seed=1, emulated=EmulatedConfig(episode_len=12)),
        policy=policy_config(chunk=2, hidden_dim=16, num_layers=1, num_heads=2),
        algo=AlgoConfig(update_epochs=1, minibatch_size=8),
        runtime=RuntimeConfig(mode="async", local=True, rollout_steps=4, max_batch=4, max_wait_ms=2.0, queue_size=2,
                              trace=False, max_staleness=max_staleness, **FULL),
        run=RunConfig(out_dir=str(tmp_path / "run"), total_env_steps=None, total_updates=updates, eval_episodes=2,
                      checkpoint_every=2, eval_every=2, **run),
    )


def _ledger(run_dir):
    return json.loads((run_dir / "checkpoints" / "last" / "async_state.json").read_text())["ledger"]


def _balanced(led) -> bool:
    return led["produced"] == led["trained_env_steps"] + sum(led["dropped_env_steps"].values())


def test_summary_records_checkpoints_and_accounting(tmp_path):
    summary = train_async(async_cfg(tmp_path))
    run_dir = tmp_path / "run"
    assert {"success_before", "success_after", "env_steps", "wall_s", "env_steps_per_s"} <= summary.keys()
    assert summary["updates"] == 3 and summary["success_before"] is not None and summary["success_after"] is not None
    assert summary["env_steps_per_s"] > 0
    records = read_metrics(run_dir / "metrics.jsonl")
    trained = [r for r in records if "loss/policy" in r]
    assert [r["step"] for r in trained] == [1, 2, 3]
    steps = [r["perf/env_steps"] for r in trained]
    assert steps == sorted(steps) and steps[-1] <= summary["env_steps"]
    assert "eval/success" in trained[1]  # eval_every=2
    assert sum("eval/success" in r for r in records) == 3  # before, update 2, after
    for tag in ("last", "best", "update_000002"):
        assert (run_dir / "checkpoints" / tag / "async_state.json").exists(), tag
    # Every env step produced is trained on or dropped with a reason (shutdown: in flight at the end).
    led = _ledger(run_dir)
    assert summary["env_steps"] == led["produced"] > 0 and _balanced(led)
    assert led["trained_samples"] == 3 * 16


def test_resume_keeps_the_staleness_bound_and_the_ledger(tmp_path):
    cfg = async_cfg(tmp_path, updates=2)
    first = train_async(cfg)
    run_dir = tmp_path / "run"
    before = _ledger(run_dir)
    staleness = json.loads((run_dir / "checkpoints" / "last" / "async_state.json").read_text())["staleness"]
    assert staleness["version"] == 2 and staleness["consumed"] == 32
    cfg2 = load_run_config(run_dir)
    cfg2.run.total_updates = 4
    second = train_async(cfg2)
    assert second["updates"] == 4 and second["success_before"] == first["success_before"]
    after = _ledger(run_dir)
    assert after["trained_samples"] == 4 * 16 and after["produced"] > before["produced"]
    assert _balanced(after) and second["env_steps"] == after["produced"]
    st = json.loads((run_dir / "checkpoints" / "last" / "async_state.json").read_text())["staleness"]
    assert st["version"] == 4 and st["consumed"] == 64 and st["published"][-1] == 4
    # Lags of every trained sample (across both runs) stay within max_staleness=1.
    assert max(int(k) for k in st["lag_hist"]) <= 1
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss/policy" in r] == [1, 2, 3, 4]


def test_cli_mode_async_prints_the_sync_summary_keys(tmp_path, capsys):
    from asyncvla.cli import main

    rc = main(["train", "--preset", "emulated-e2e", "--mode", "async", "--json", "--runtime.local", "--run.total-updates", "2",
               "--run.eval-episodes", "1", "--env.id", "emulated/fast", "--run.out-dir", str(tmp_path / "cli")])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"success_before", "success_after", "env_steps", "wall_s", "env_steps_per_s"} <= last.keys()
    cfg = load_run_config(tmp_path / "cli")
    assert cfg.runtime.mode == "async" and cfg.runtime.async_env and cfg.runtime.decoupled_actor  # --mode async = full async
    assert _balanced(_ledger(tmp_path / "cli")) and last["env_steps"] == _ledger(tmp_path / "cli")["produced"]


def test_an_inference_error_ends_the_run_at_once_naming_the_server_and_cause(tmp_path, monkeypatch):
    import time

    import pytest

    from asyncvla.policies.tiny.model import TinyVLA

    act = TinyVLA.act

    def failing_act(self, obs, deterministic=False):
        if self.version >= 1 and not deterministic:  # sampling on a server, e.g. after an update left NaN logits
            raise ValueError("probabilities contain nan")
        return act(self, obs, deterministic)

    monkeypatch.setattr(TinyVLA, "act", failing_act)
    cfg = async_cfg(tmp_path, updates=50)
    cfg.run.eval_episodes = 0
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r"env manager \d failed: .*rollout server 0: ValueError: probabilities contain nan"):
        train_async(cfg)
    assert time.time() - t0 < 60  # not a stall
    assert (tmp_path / "run" / "checkpoints" / "last").is_dir()  # the crash left a checkpoint to resume


def test_a_run_survives_envs_that_hang_forever(tmp_path):
    import dataclasses

    from asyncvla.config import WrapperConfig

    cfg = async_cfg(tmp_path, updates=4)
    hang = WrapperConfig(fault_prob=0.1, fault_kind="hang", fault_hang_s=3600.0)
    cfg.env = dataclasses.replace(cfg.env, executor="thread", step_timeout_s=0.5, wrappers=hang)
    summary = train_async(cfg)
    assert summary["updates"] == 4
    led = _ledger(tmp_path / "run")
    # Each hang cut an episode: counted, with the steps its chunk had completed (a chunk is 2 steps).
    assert led["dropped_samples"].get("env_error", 0) > 0 and _balanced(led)
    assert 0 < led["dropped_env_steps"]["env_error"] <= 2 * led["dropped_samples"]["env_error"]
