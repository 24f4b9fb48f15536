"""Bad input is refused before anything starts: exit 2 within 5 s, one stderr line naming the field.

Each case runs `asyncvla ...` in this process (`cli.main`), so the suite pays the imports once.
{file}: a regular file; {yaml}: a broken YAML preset; {dir}: an empty directory.
"""

from __future__ import annotations

import time

import pytest

from asyncvla.cli import main

E2E = ["train", "--preset", "emulated-e2e"]
OFT = [*E2E, "--policy.type", "oft"]
FLOW = [*E2E, "--policy.type", "flow"]

CASES = [
    (["train", "--mode", "nope"], "mode='nope' is invalid: allowed: sync, async"),
    # env
    ([*E2E, "--env.num-envs", "0"], "env.num_envs=0 is invalid"),
    ([*E2E, "--env.image-size", "4"], "env.image_size=4 is invalid"),
    ([*E2E, "--env.max-episode-steps", "0"], "env.max_episode_steps=0 is invalid"),
    ([*E2E, "--env.executor", "inline", "--env.step-timeout-s", "5"], "env.step_timeout_s=5.0 is invalid: needs env.executor=thread"),
    ([*E2E, "--env.executor", "thread", "--env.step-timeout-s", "-1"], "env.step_timeout_s=-1.0 is invalid"),
    ([*E2E, "--env.cameras", "main", "wrist"], "env.cameras=['main', 'wrist'] is invalid"),
    ([*E2E, "--env.cameras", "main", "main"], "env.cameras=['main', 'main'] is invalid"),
    ([*E2E, "--env.id", "nope/x"], "backend 'nope' is invalid"),
    ([*E2E, "--env.id", "emulated/nope"], "unknown emulated task"),
    (["train", "--env.id", "metaworld/nope-v3"], "env.id='metaworld/nope-v3' is invalid"),
    (["train", "--env.max-episode-steps", "600"], "env.max_episode_steps=600 is invalid"),
    # policy
    ([*E2E, "--policy.chunk", "0"], "policy.chunk=0 is invalid"),
    ([*E2E, "--policy.temperature", "0"], "policy.temperature=0.0 is invalid"),
    ([*E2E, "--policy.hidden-dim", "30"], "policy.hidden_dim=30 is invalid"),
    ([*E2E, "--policy.num-heads", "0"], "policy.num_heads=0 is invalid"),
    ([*E2E, "--policy.num-layers", "0"], "policy.num_layers=0 is invalid"),
    ([*E2E, "--policy.action-bins", "1"], "policy.action_bins=1 is invalid"),
    ([*E2E, "--policy.proprio-std-min", "-1"], "policy.proprio_std_min=-1.0 is invalid"),
    ([*E2E, "--policy.init", "{dir}/none"], "is invalid: expected a directory with config.yaml"),
    ([*E2E, "--policy.type", "nope"], "policy.type='nope' is invalid"),
    ([*OFT, "--policy.patch-size", "5"], "policy.patch_size=5 is invalid"),
    ([*OFT, "--policy.lora-rank", "-1"], "policy.lora_rank=-1 is invalid"),
    ([*OFT, "--policy.num-kv-heads", "3"], "policy.num_kv_heads=3 is invalid"),
    ([*OFT, "--policy.max-text-tokens", "1"], "policy.max_text_tokens=1 is invalid"),
    ([*OFT, "--policy.pretrained-path", "{dir}"], "policy.pretrained_path="),
    ([*FLOW, "--policy.num-steps", "0"], "policy.num_steps=0 is invalid"),
    ([*FLOW, "--policy.noise-std", "2"], "policy.noise_std=2.0 is invalid"),
    ([*FLOW, "--policy.expert-dim", "30"], "policy.expert_dim=30 is invalid"),
    # algo
    ([*E2E, "--algo.lr", "0"], "algo.lr=0.0 is invalid"),
    ([*E2E, "--algo.lr", "inf"], "algo.lr=inf is invalid"),
    ([*E2E, "--algo.max-grad-norm", "-1"], "algo.max_grad_norm=-1.0 is invalid"),
    ([*E2E, "--algo.value-lr", "-1"], "algo.value_lr=-1.0 is invalid"),
    ([*E2E, "--algo.clip-eps", "0"], "algo.clip_eps=0.0 is invalid"),
    ([*E2E, "--algo.gamma", "1.5"], "algo.gamma=1.5 is invalid"),
    ([*E2E, "--algo.lam", "-0.1"], "algo.lam=-0.1 is invalid"),
    ([*E2E, "--algo.name", "grpo", "--algo.group-size", "1"], "algo.group_size=1 is invalid"),
    ([*E2E, "--algo.minibatch-size", "0"], "algo.minibatch_size=0 is invalid"),
    ([*E2E, "--algo.update-epochs", "0"], "algo.update_epochs=0 is invalid"),
    ([*E2E, "--algo.max-skipped-updates", "0"], "algo.max_skipped_updates=0 is invalid"),
    ([*E2E, "--algo.target-kl", "0"], "algo.target_kl=0.0 is invalid"),
    ([*E2E, "--algo.entropy-coef", "-1"], "algo.entropy_coef=-1.0 is invalid"),
    ([*E2E, "--algo.reward-scale", "0"], "algo.reward_scale=0.0 is invalid"),
    # runtime
    ([*E2E, "--runtime.pipeline-stages", "0"], "runtime.pipeline_stages=0 is invalid"),
    ([*E2E, "--runtime.rollout-steps", "0"], "runtime.rollout_steps=0 is invalid"),
    ([*E2E, "--runtime.env-managers", "3", "3"], "runtime.env_managers=(3, 3) is invalid"),
    ([*E2E, "--runtime.weight-sync", "nccl"], "runtime.weight_sync='nccl' is invalid"),
    ([*E2E, "--runtime.max-staleness", "-1"], "runtime.max_staleness=-1 is invalid"),
    ([*E2E, "--runtime.queue-size", "0"], "runtime.queue_size=0 is invalid"),
    ([*E2E, "--runtime.max-restarts", "-1"], "runtime.max_restarts=-1 is invalid"),
    ([*E2E, "--runtime.env-resources", "CPU", "1"], "runtime.env_resources={'CPU': 1.0} is invalid"),
    ([*E2E, "--runtime.rollout-resources", "node_b", "-1"], "runtime.rollout_resources={'node_b': -1.0} is invalid"),
    ([*E2E, "--runtime.num-trainers", "0"], "runtime.num_trainers=0 is invalid"),
    ([*E2E, "--runtime.trainer-cpus", "-1"], "runtime.trainer_cpus=-1.0 is invalid"),
    ([*E2E, "--env.executor", "thread", "--env.reset-timeout-s", "0"], "env.reset_timeout_s=0.0 is invalid"),
    ([*E2E, "--env.wrappers.fault-prob", "0.6", "--env.wrappers.hang-prob", "0.6"], "env.wrappers.hang_prob=0.6 is invalid"),
    ([*E2E, "--runtime.ray-address", "127.0.0.1:1"], "runtime.ray_address='127.0.0.1:1' is invalid"),
    # run
    ([*E2E, "--run.device", "cuda"], "run.device='cuda' is invalid"),
    ([*E2E, "--run.device", "tpu"], "is invalid: allowed: cpu, cuda, cuda:N"),
    ([*E2E, "--run.out-dir", "{file}/run"], "run.out_dir="),
    ([*E2E, "--run.total-updates", "0"], "run.total_updates=0 is invalid"),
    ([*E2E, "--run.eval-episodes", "-1"], "run.eval_episodes=-1 is invalid"),
    ([*E2E, "--run.checkpoint-every", "-1"], "run.checkpoint_every=-1 is invalid"),
    ([*E2E, "--resume", "{dir}"], "is invalid: no config.yaml there"),
    (["train", "--preset", "{yaml}"], "is invalid: not valid YAML at line 2, column 1"),
    (["train", "--preset", "nope"], "preset"),
    ([*E2E, "--warm-start.demo-episodes", "-1"], "warm_start.demo_episodes=-1 is invalid"),
    # other commands
    (["sft", "--env", "metaworld/reach-v3", "--demos", "{dir}/none", "--out", "{dir}/out"], "demos="),
    (["sft", "--env", "metaworld/reach-v3", "--demos", "{dir}", "--out", "{dir}/out", "--steps", "0"], "sft.steps=0 is invalid"),
    (["sft", "--env", "metaworld/reach-v3", "--demos", "{dir}", "--out", "{dir}/out"], "meta/info.json is missing"),
    (["sft", "--env", "metaworld/reach-v3", "--demos", "{dir}", "--out", "{dir}/out", "--image-key", "main"],
     "sft.image_key='main' is invalid: must be CAMERA=FEATURE"),
    (["eval", "{dir}"], "is invalid: expected a directory with config.yaml"),
    (["demos", "emulated/fast", "--out", "{dir}/d"], "has no scripted expert"),
    (["demos", "metaworld/reach-v3", "--episodes", "0", "--out", "{dir}/d"], "episodes=0 is invalid"),
    (["bench", "policy", "--batch-sizes", "0"], "batch_sizes=[0] is invalid"),
]


@pytest.fixture(scope="module", autouse=True)
def imported():
    """The first command in a process pays the imports (torch, simulators); that is not a check's time."""
    main(["train", "--policy.chunk", "0"])
    main(["train", "--env.id", "metaworld/nope-v3"])


@pytest.mark.parametrize("args, needle", CASES, ids=[" ".join(a[2:] if a[:2] == ["train", "--preset"] else a)[:60] for a, _ in CASES])
def test_bad_input_exits_2_fast_with_one_line(args, needle, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "bad.yaml").write_text("env: [unclosed\n")
    (tmp_path / "empty").mkdir()
    fill = {"file": str(tmp_path / "a_file"), "yaml": str(tmp_path / "bad.yaml"), "dir": str(tmp_path / "empty")}
    args = [a.format(**fill) for a in args]
    t0 = time.perf_counter()
    code = main(args)
    took = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) == 1 and needle in err[0], err
    assert took < 5, took
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == []  # nothing left behind


def test_there_are_at_least_40_distinct_cases():
    assert len({tuple(a) for a, _ in CASES}) >= 40
