"""End to end: the one driver in sync mode (the RLinf baseline) with the emulated env and the tiny
policy, on the threads backend and through Ray."""

import json
import time

import pytest

from asyncvla.config import AlgoConfig, ConfigError, RunConfig, RuntimeConfig, TrainConfig, env_config, policy_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.metrics.writer import NAMESPACES, read_metrics
from asyncvla.runtime.checkpoints import load_run_config
from asyncvla.runtime.driver import train
from asyncvla.runtime.plan import make_plan


def tiny_cfg(tmp_path, algo="ppo", updates=2, **runtime) -> TrainConfig:
    return TrainConfig(
        env=env_config(id="emulated/fast", num_envs=4, image_size=16, emulated=EmulatedConfig(episode_len=12)),
        policy=policy_config(chunk=2, hidden_dim=32, num_layers=1),
        algo=AlgoConfig(name=algo, group_size=2, minibatch_size=16, update_epochs=1),
        runtime=RuntimeConfig(rollout_steps=6, pipeline_stages=2, **runtime),
        run=RunConfig(out_dir=str(tmp_path / "run"), total_env_steps=None, total_updates=updates, eval_episodes=2,
                      checkpoint_every=1),
    )


def check_run_dir(run_dir, updates):
    records = read_metrics(run_dir / "metrics.jsonl")
    for r in records:
        assert all(k in ("step", "wall_s") or k.split("/")[0] in NAMESPACES for k in r)
    trained = [r for r in records if "loss/policy" in r]
    assert [r["step"] for r in trained] == list(range(1, updates + 1))
    last = trained[-1]
    for key in ("perf/env_steps_per_s", "perf/trained_samples_per_s", "util/env", "util/rollout", "util/trainer",
                "time/env_step_s", "time/infer_s", "time/train_s", "time/weight_sync_s", "time/idle_s", "loss/value",
                "rollout/episode_len", "lag/max", "queue/depth"):
        assert key in last, key
    assert 0 <= last["util/env"] <= 1
    rates = [r["perf/env_steps_per_s"] for r in trained]
    assert rates[0] is None and all(v is None or v > 0 for v in rates)  # None: a (re)start's first update
    assert updates == 1 or any(v is not None for v in rates)
    trace = json.loads((run_dir / "trace.json").read_text())
    roles = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"env", "rollout", "trainer"} <= roles
    evals = sum("eval/success" in r for r in records)  # before training, and after each (re)start's last update
    assert evals >= 2 and sum(e.get("name") == "eval" for e in trace["traceEvents"]) == evals
    assert (run_dir / "checkpoints" / "last" / "run_state.json").exists()
    assert (run_dir / "config.yaml").exists() and list((run_dir / "tb").glob("events.*"))
    videos = sorted(p.name for p in (run_dir / "videos").glob("update_*.mp4"))  # before and after training
    assert videos[0] == "update_000000.mp4" and videos[-1] == f"update_{updates:06d}.mp4", videos


def test_eval_of_a_run_repeats_its_own_final_evaluation(tmp_path, capsys):
    """`asyncvla eval RUN_DIR/checkpoints/last` with no other flag: the run's env, seeds and episodes."""
    from asyncvla.cli import parse

    cfg = tiny_cfg(tmp_path, local=True, updates=1)
    cfg.run.eval_episodes = 3
    train(cfg)
    run_dir = tmp_path / "run"
    final = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/return" in r][-1]
    capsys.readouterr()
    parse(["eval", str(run_dir / "checkpoints" / "last"), "--json"]).run()
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["episodes"] == 3 and got["deterministic"] and got["split"] == "eval"
    assert got["mean_return"] == pytest.approx(final["eval/return"], rel=1e-9)  # the same episodes, exactly
    assert got["success_rate"] == final["eval/success"] and got["success_at_end"] == final["eval/success_at_end"]
    parse(["eval", str(run_dir), "--json", "--episodes", "2"]).run()  # a run directory means its best checkpoint
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["checkpoint"].endswith("checkpoints/best") and got["episodes"] == 2


def test_local_mode_end_to_end_and_resume(tmp_path):
    cfg = tiny_cfg(tmp_path, local=True)
    summary = train(cfg)
    run_dir = tmp_path / "run"
    assert summary["updates"] == 2 and summary["env_steps"] == 2 * 4 * 6 * 2  # updates*envs*decisions*chunk
    assert summary["success_before"] is not None and summary["env_steps_per_s"] > 0
    check_run_dir(run_dir, 2)
    # Resume: the saved config with a bigger budget continues at update 3, same logs.
    cfg2 = load_run_config(run_dir)
    cfg2.run.total_updates = 3
    summary2 = train(cfg2)
    assert summary2["updates"] == 3 and summary2["env_steps"] == 3 * 48
    assert summary2["success_before"] == summary["success_before"]  # not re-evaluated
    check_run_dir(run_dir, 3)


def test_local_mode_grpo(tmp_path):
    summary = train(tiny_cfg(tmp_path, algo="grpo", updates=1, local=True))
    assert summary["updates"] == 1
    rec = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss/policy" in r][0]
    assert "loss/value" not in rec  # GRPO has no critic loss


def test_grpo_group_must_fit_a_stage(tmp_path):
    cfg = TrainConfig(env=env_config(num_envs=4), algo=AlgoConfig(name="grpo", group_size=4), runtime=RuntimeConfig(pipeline_stages=2))
    with pytest.raises(ConfigError, match="group_size"):
        make_plan(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["colocated", "disaggregated"])
def test_ray_end_to_end(tmp_path, placement):
    summary = train(tiny_cfg(tmp_path, placement=placement, num_rollout_servers=2 if placement == "disaggregated" else 1))
    assert summary["updates"] == 2
    check_run_dir(tmp_path / "run", 2)


def test_cli_train_json_last_line(tmp_path, capsys):
    from asyncvla.cli import main

    rc = main(["train", "--preset", "emulated-e2e", "--json", "--runtime.local", "--run.total-updates", "1",
               "--run.eval-episodes", "1", "--env.id", "emulated/fast", "--run.out-dir", str(tmp_path / "cli")])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"success_before", "success_after", "env_steps", "wall_s", "env_steps_per_s"} <= last.keys()
    assert last["env_steps"] == 4 * 8 * 2


def test_crash_mid_run_leaves_resumable_checkpoint_and_logs(tmp_path):
    cfg = tiny_cfg(tmp_path, updates=3, local=True)
    cfg.run.checkpoint_every = 0  # only the crash handler writes checkpoints/last

    def crash(update, m):
        if update == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=crash)
    run_dir = tmp_path / "run"
    state = json.loads((run_dir / "checkpoints" / "last" / "run_state.json").read_text())
    assert state["update"] == 2
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss/policy" in r] == [1, 2]
    json.loads((run_dir / "trace.json").read_text())  # intact
    summary = train(load_run_config(run_dir))
    assert summary["updates"] == 3


def test_the_update_that_reaches_the_env_step_budget_still_trains(tmp_path):
    # 4 envs x 6 decisions x 2 actions = 48 env steps per update: a budget of 3 updates' steps
    # trains 3 updates, and no rollout starts after the last (nothing dropped at shutdown).
    cfg = tiny_cfg(tmp_path, local=True)
    cfg.run.total_env_steps, cfg.run.total_updates, cfg.run.eval_episodes = 3 * 48, None, 0
    summary = train(cfg)
    assert summary["updates"] == 3 and summary["env_steps"] == 3 * 48
    led = json.loads((tmp_path / "run" / "checkpoints" / "last" / "async_state.json").read_text())["ledger"]
    assert led["trained_env_steps"] == 3 * 48 and not led["dropped_env_steps"]


def test_resume_verifies_last_and_falls_back_to_previous(tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from asyncvla.runtime.checkpoints import NonFiniteWeights, RunState, load_checkpoint, save_checkpoint
    from asyncvla.runtime.learner.trainer import Trainer

    cfg = tiny_cfg(tmp_path, updates=3, local=True)
    cfg.run.checkpoint_every = 2  # last at update 2, then at the end (3): previous holds update 2
    train(cfg)
    ck = tmp_path / "run" / "checkpoints"
    assert (ck / "last" / "checksums.json").is_file() and (ck / "previous").is_dir()
    last_update = json.loads((ck / "last" / "run_state.json").read_text())["update"]
    prev_update = json.loads((ck / "previous" / "run_state.json").read_text())["update"]
    assert prev_update < last_update

    def trainer():
        return Trainer(cfg.policy, cfg.algo, 4, 8, seed=0, trace=False)

    def damaged(name, damage):
        run = tmp_path / name
        shutil.copytree(tmp_path / "run", run)
        damage(run / "checkpoints" / "last")
        return run

    def garble(d):
        b = bytearray((d / "model.safetensors").read_bytes())
        b[-64:] = bytes(64)
        (d / "model.safetensors").write_bytes(bytes(b))

    def nan_weights(d):  # a checkpoint from before checksums, with non-finite weights
        w = load_file(str(d / "model.safetensors"))
        w[next(iter(w))].fill_(float("nan"))
        save_file(w, str(d / "model.safetensors"))
        (d / "checksums.json").unlink()

    cases = {
        "garbled": (garble, "model.safetensors does not match its checksum"),
        "truncated": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]), "checksum"),
        "torn_state": (lambda d: (d / "run_state.json").write_text('{"update": 2, "env'), "run_state.json does not match"),
        "non_finite": (nan_weights, "not finite"),
    }
    capsys.readouterr()
    for name, (damage, why) in cases.items():
        state, used = load_checkpoint(trainer(), damaged(name, damage))
        assert used.name == "previous" and state.update == prev_update, name
        err = capsys.readouterr().err
        assert "warning: resuming from checkpoints/previous: checkpoints/last is unusable" in err and why in err, (name, err)
    # Both unusable: one line naming why; a run directory without checkpoints is refused up front.
    both = damaged("both", garble)
    garble(both / "checkpoints" / "previous")
    with pytest.raises(ConfigError, match=r"checkpoints/last is unusable .*; checkpoints/previous is unusable") as e:
        load_checkpoint(trainer(), both)
    assert "\n" not in str(e.value)
    shutil.rmtree(both / "checkpoints")
    with pytest.raises(ConfigError, match="has no checkpoints/last"):
        load_run_config(both)
    # Weights that are not finite are never written; the last good checkpoint stays.
    t = trainer()
    with torch.no_grad():
        next(t.policy.parameters()).fill_(float("inf"))
    before = (ck / "last" / "model.safetensors").read_bytes()
    with pytest.raises(NonFiniteWeights, match="not written"):
        save_checkpoint(t, tmp_path / "run", RunState(update=9), "last")
    assert (ck / "last" / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_a_hang_the_inline_executor_cannot_see_stops_the_run_with_one_line(tmp_path, capsys):
    """env.executor=inline has no per-env watchdog: an unending hang stalls everything, and after
    run.stall_timeout_s the run stops (exit 1) with one line naming the stall and the traceback file."""
    from asyncvla.cli import main

    t0 = time.time()
    rc = main(["train", "--preset", "emulated-e2e", "--runtime.local", "--env.id", "emulated/fast", "--run.eval-episodes", "0",
               "--env.executor", "inline", "--env.wrappers.hang-prob", "1", "--env.wrappers.fault-hang-s", "3600",
               "--runtime.pipeline-stages", "1",
               "--run.stall-timeout-s", "3", "--run.out-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and time.time() - t0 < 90
    assert len(err) == 1 and err[0].startswith("asyncvla: the run failed: Stalled: no trajectory and no env step for 3 s"), err
    log = tmp_path / "run" / "logs" / "driver-error.log"
    assert f"traceback in {log}" in err[0] and "Stalled" in log.read_text()
