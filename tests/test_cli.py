"""The `asyncvla` entry point, run as a user runs it (a subprocess)."""

import json
import subprocess
import sys

import pytest

from asyncvla.config import ConfigError


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asyncvla.cli", *args], capture_output=True, text=True, timeout=timeout)


def _subcommands() -> list[list[str]]:
    from asyncvla.cli import Command
    import typing

    names = []
    for arm in typing.get_args(Command):
        meta = [m for m in getattr(arm, "__metadata__", ()) if hasattr(m, "name")]
        names.append([meta[0].name])
    return names


@pytest.mark.parametrize("sub", [[]] + _subcommands())
def test_help_on_every_subcommand(sub):
    out = run_cli(*sub, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: asyncvla" in out.stdout


def test_envs_json_lists_every_backend():
    out = run_cli("envs", "--json")
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout.strip().splitlines()[-1])
    by_name = {b["backend"]: b for b in listing}
    assert set(by_name) >= {"metaworld", "libero", "maniskill", "emulated"}
    assert all(set(b) >= {"backend", "available", "tasks"} for b in listing)
    assert by_name["emulated"]["available"] and "balanced" in by_name["emulated"]["tasks"]


def test_envs_of_one_backend_lists_every_task_id_in_full(capsys):
    from asyncvla.cli import main

    assert main(["envs", "emulated"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("emulated: available;") and {"emulated/balanced", "emulated/long-tail"} <= set(lines[1:])
    assert main(["envs", "nope"]) == 2


def test_env_bench_json_last_line():
    out = run_cli("env-bench", "emulated/fast", "--num-envs", "2", "--steps", "60", "--image-size", "16", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["steps_per_s"] > 0 and result["raw_steps_per_s"] > 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["env-bench", "nope/reach", "--json"], "backend 'nope' is invalid"),
        (["env-bench", "emulated/nope", "--json"], "unknown emulated task"),
        (["env-bench", "emulated/fast", "--num-envs", "0"], "env.num_envs=0 is invalid"),
        (["env-bench", "emulated/fast", "--fast-render", "False"], "env (EmulatedEnvConfig): unknown field(s) fast_render"),
        (["train", "--policy.type", "nope"], "policy.type='nope' is invalid: allowed: flow, oft, tiny, tiny-gaussian"),
        (["train", "--preset", "emulated-e2e", "--env.id", "metaworld/reach-v3"],
         "preset emulated-e2e.yaml.env (RenderedEnvConfig): unknown field(s) emulated"),
        (["train", "--preset", "emulated-e2e", "--run.device", "cuda"], "run.device='cuda' is invalid: this machine has no CUDA"),
        (["train", "--preset", "emulated-e2e", "--run.out-dir", "{file}/run"], "is invalid: {file} is not a directory"),
        (["train", "--preset", "{yaml}"], "is invalid: not valid YAML at line 2, column 1"),
        (["train", "--preset", "emulated-e2e", "--runtime.ray-address", "127.0.0.1:1"],
         "runtime.ray_address='127.0.0.1:1' is invalid: nothing answers there"),
        (["train", "--preset", "emulated-e2e", "--resume", "{dir}"], "is invalid: no config.yaml there"),
    ],
)
def test_bad_input_is_one_line_error(args, needle, tmp_path):
    import time

    (tmp_path / "a_file").write_text("x")
    (tmp_path / "bad.yaml").write_text("env: [unclosed\n")
    fill = {"file": str(tmp_path / "a_file"), "yaml": str(tmp_path / "bad.yaml"), "dir": str(tmp_path)}
    args, needle = [a.format(**fill) for a in args], needle.format(**fill)
    t0 = time.time()
    out = run_cli(*args)
    assert time.time() - t0 < 30  # before anything starts (no Ray, no SFT)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr


def _parse_train(*args: str):
    """`asyncvla train ARGS` parsed as main() parses it, without running the job."""
    from asyncvla.cli import parse

    return parse(["train", *args])


def test_train_shorthands_set_the_runtime_fields():
    cmd = _parse_train("--preset", "emulated-e2e", "--mode", "async", "--ray-address", "10.0.0.1:6379")
    cfg = cmd.resolved_config()
    assert cfg.runtime.ray_address == "10.0.0.1:6379"
    assert cfg.runtime.mode == "async" and cfg.runtime.async_env and cfg.runtime.streaming_rollout
    # the preset's 2 pipeline stages of 4 envs become 2 env managers of 2 (each its own loop)
    assert cfg.runtime.pipeline_stages == 1 and cfg.runtime.env_managers == (2, 2)
    plain = _parse_train("--preset", "emulated-e2e").resolved_config()
    assert plain.runtime.ray_address is None and plain.runtime.mode == "sync"


def test_type_and_env_flags_pick_the_config_class_before_parsing():
    """`--policy.type` / `--env.id` choose which fields exist, as `--preset` chooses their defaults."""
    cfg = _parse_train("--policy.type", "tiny-gaussian", "--policy.hidden-dim", "32").cfg
    assert type(cfg.policy).__name__ == "TinyGaussianConfig" and cfg.policy.hidden_dim == 32
    cfg = _parse_train("--preset", "emulated-e2e", "--env.id", "emulated/fast", "--env.emulated.episode-len", "9").cfg
    assert cfg.env.id == "emulated/fast" and cfg.env.emulated.episode_len == 9
    with pytest.raises(SystemExit):  # tiny-gaussian has no action tokens
        _parse_train("--policy.type", "tiny-gaussian", "--policy.action-bins", "8")
    from asyncvla.cli import parse

    assert type(parse(["bench", "policy", "--policy.type", "tiny-gaussian"]).cmd.policy).__name__ == "TinyGaussianConfig"


def test_ray_address_shorthand_also_applies_on_resume(tmp_path):
    import yaml

    from asyncvla.config import TrainConfig, load_preset, to_dict

    saved = load_preset(TrainConfig, "emulated-e2e")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(saved), sort_keys=False))
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    cfg = _parse_train("--resume", str(tmp_path), "--ray-address", "auto").resolved_config()
    assert cfg.runtime.ray_address == "auto" and cfg.run.resume == str(tmp_path)


def test_resume_applies_budget_overrides_and_refuses_the_rest(tmp_path):
    import yaml

    from asyncvla.config import TrainConfig, load_preset, to_dict

    saved = load_preset(TrainConfig, "emulated-e2e")
    saved.run.total_updates = 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(saved), sort_keys=False))
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    same = _parse_train("--resume", str(tmp_path)).resolved_config()
    assert to_dict(same) == {**to_dict(saved), "run": {**to_dict(saved)["run"], "resume": str(tmp_path)}}
    more = _parse_train("--resume", str(tmp_path), "--run.total-updates", "8", "--run.eval-every", "2").resolved_config()
    assert (more.run.total_updates, more.run.eval_every) == (8, 2) and more.algo == saved.algo
    with pytest.raises(ConfigError, match=r"--resume keeps the run's saved config: --algo.lr cannot change on resume .*"
                                          r"allowed with --resume: --run.total-env-steps") as e:
        _parse_train("--resume", str(tmp_path), "--algo.lr", "0.5").resolved_config()
    assert "\n" not in str(e.value)
    other = "async" if saved.runtime.mode == "sync" else "sync"
    assert _parse_train("--resume", str(tmp_path), "--mode", saved.runtime.mode).resolved_config().runtime == saved.runtime
    with pytest.raises(ConfigError, match=f"mode='{other}' is invalid with --resume: the run in .* is {saved.runtime.mode}"):
        _parse_train("--resume", str(tmp_path), "--mode", other).resolved_config()


def test_resume_of_a_directory_without_a_checkpoint_is_refused(tmp_path):
    import yaml

    from asyncvla.config import TrainConfig, load_preset, to_dict

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(load_preset(TrainConfig, "emulated-e2e")), sort_keys=False))
    with pytest.raises(ConfigError, match="has no checkpoints/last"):
        _parse_train("--resume", str(tmp_path)).resolved_config()


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_sigterm_checkpoints_and_exits_143_with_one_line(tmp_path, backend):
    import os
    import signal
    import time

    out = tmp_path / "run"
    args = ["train", "--preset", "emulated-e2e", "--run.total-updates", "1000", "--run.eval-episodes", "0",
            "--run.checkpoint-every", "0", "--run.out-dir", str(out)] + (["--runtime.local"] if backend == "local" else [])
    proc = subprocess.Popen([sys.executable, "-m", "asyncvla.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    deadline = time.time() + 120
    while time.time() < deadline and "loss/policy" not in ((out / "metrics.jsonl").read_text() if (out / "metrics.jsonl").exists() else ""):
        time.sleep(0.2)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and time.time() - t0 < 10, err[-2000:]
    assert f"asyncvla: stopped by SIGTERM; resume with: asyncvla train --resume {out}" in err
    assert "SIGTERM received" not in err  # Ray's C++ stack dump
    assert json.loads((out / "checkpoints" / "last" / "run_state.json").read_text())["update"] >= 1


def test_sigkill_then_resume_leaves_no_step_twice_and_no_gap(tmp_path):
    import signal
    import time

    from asyncvla.metrics.writer import read_metrics

    out = tmp_path / "run"
    common = ["--run.eval-episodes", "0", "--run.checkpoint-every", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "asyncvla.cli", "train", "--preset", "emulated-e2e", "--runtime.local",
                             "--run.total-updates", "1000", "--run.out-dir", str(out), *common],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def trained_steps():
        path = out / "metrics.jsonl"
        return [r["step"] for r in read_metrics(path) if "loss/policy" in r] if path.exists() else []

    deadline = time.time() + 120
    while time.time() < deadline and len(trained_steps()) < 3:  # update 3 logged, the checkpoint holds 2
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = trained_steps()
    held = json.loads((out / "checkpoints" / "last" / "run_state.json").read_text())["update"]
    assert held < killed_at[-1]  # the kill lost logged updates
    rows = read_metrics(out / "metrics.jsonl")
    at_held = max(r["perf/env_steps"] for r in rows if r["step"] == held and "perf/env_steps" in r)
    lost_steps = max(r["perf/env_steps"] for r in rows if r["step"] > held and "perf/env_steps" in r) - at_held
    r = run_cli("train", "--resume", str(out), "--run.total-updates", str(killed_at[-1] + 2), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["lost_updates"] == killed_at[-1] - held and summary["lost_env_steps"] == lost_steps > 0
    assert f"the stopped run logged {killed_at[-1] - held} update(s) ({lost_steps} env steps)" in r.stderr
    assert trained_steps() == list(range(1, killed_at[-1] + 3))
    mb = [json.loads(line)["update"] for line in (out / "minibatches.jsonl").read_text().splitlines()]
    assert mb == sorted(mb) and set(mb) == set(range(1, killed_at[-1] + 3))


def test_bench_policy_gives_rows_for_every_family_asked(tmp_path):
    import json

    from asyncvla.cli import parse

    parse(["bench", "policy", "--types", "oft", "flow", "--batch-sizes", "1", "2", "--budget-s", "0.01",
           "--out", str(tmp_path)]).cmd.run()
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["policy_type"], r["batch_size"]) for r in rows] == [("oft", 1), ("oft", 2), ("flow", 1), ("flow", 2)]
    for r in rows:
        assert r["params"] >= r["trainable_params"] > 0 and r["infer_samples_per_s"] > 0 and r["train_samples_per_s"] > 0


def _leaf_commands():
    """Every runnable subcommand class, nested ones (bench …) and train included."""
    import dataclasses
    import typing

    from asyncvla.cli import Command, Train

    def leaves(t):
        if typing.get_origin(t) is typing.Annotated:
            yield from leaves(typing.get_args(t)[0])
        elif typing.get_origin(t) is typing.Union:
            for arm in typing.get_args(t):
                yield from leaves(arm)
        else:
            nested = typing.get_type_hints(t, include_extras=True).get("cmd") if dataclasses.is_dataclass(t) else None
            yield from (leaves(nested) if nested is not None else [t])

    return [Train, *leaves(Command)]


@pytest.mark.parametrize("cls", _leaf_commands(), ids=lambda c: c.__name__)
def test_every_command_that_reports_has_json(cls):
    import dataclasses

    assert "json" in {f.name for f in dataclasses.fields(cls)}, f"{cls.__name__} has no --json"


def test_bench_json_last_line_is_the_results_file(tmp_path):
    r = run_cli("bench", "batching", "--max-batches", "1", "--max-waits-ms", "0", "--clients", "1", "--seconds", "0.3",
                "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == json.loads((tmp_path / "results.json").read_text())
    assert json.loads(lines[0])["max_batch"] == 1  # the per-point line before it
    human = run_cli("bench", "batching", "--max-batches", "1", "--max-waits-ms", "0", "--clients", "1", "--seconds", "0.3",
                    "--out", str(tmp_path))
    assert human.returncode == 0 and "| " in human.stdout and not human.stdout.lstrip().startswith("{")
