"""evaluate_policy on the emulated env: exact episode counts, held-out split, video."""

from __future__ import annotations

import numpy as np
import pytest

from asyncvla.config import ConfigError, EnvConfig, env_config, policy_config
from asyncvla.envs.emulated import EmulatedConfig
from asyncvla.policies.base import ActOut, ObsBatch, Policy
from asyncvla.policies.registry import make_policy
from asyncvla.evaluation import episode_quotas, evaluate_policy

A = 2


class _PointExpert(Policy):
    """Scripted expert of emulated/*: steps straight at the goal (both are in the proprio)."""

    chunk, action_dim = 2, A

    def act(self, obs: ObsBatch, deterministic: bool = False) -> ActOut:
        pos, goal = obs.proprio[:, :A], obs.proprio[:, A : 2 * A]
        step = np.clip((goal - pos) / 0.1, -1, 1).astype(np.float32)
        actions = np.repeat(step[:, None], self.chunk, axis=1)  # the env clips at the goal
        b = len(obs)
        return ActOut(actions, np.zeros(b, np.float32), np.zeros(b, np.float32), self.version)


def _env(num_envs: int = 3, episode_len: int = 20) -> EnvConfig:
    return env_config(id="emulated/fast", num_envs=num_envs, image_size=16,
                     emulated=EmulatedConfig(episode_len=episode_len, proprio_dim=2 * A, action_dim=A))


def test_quotas_sum_to_episodes():
    assert episode_quotas(7, 3) == [3, 2, 2]
    assert episode_quotas(2, 4) == [1, 1]
    assert sum(episode_quotas(30, 8)) == 30


def test_expert_succeeds_and_counts_are_exact():
    res = evaluate_policy(_PointExpert(), _env(), episodes=7)
    assert res["episodes"] == 7 and res["split"] == "eval"
    assert res["success_rate"] == 1.0
    assert res["mean_episode_len"] < 20 and res["mean_return"] > 0


def test_random_tiny_policy_runs_and_truncates(tmp_path):
    policy = make_policy(policy_config(chunk=4, hidden_dim=16, num_layers=1, num_heads=2, image_size=16), A, 2 * A)
    video = tmp_path / "eval.mp4"
    res = evaluate_policy(policy, _env(num_envs=2, episode_len=8), episodes=3, video=video)
    assert res["episodes"] == 3 and 0 <= res["success_rate"] <= 1
    assert res["mean_episode_len"] <= 8 and res["env_steps"] >= 3
    assert video.stat().st_size > 0


def test_zero_episodes_is_a_config_error():
    with pytest.raises(ConfigError, match="episodes"):
        evaluate_policy(_PointExpert(), _env(), episodes=0)


def _metaworld_ok() -> tuple[bool, str]:
    from asyncvla.envs.registry import get_backend

    return get_backend("metaworld").available()


@pytest.mark.slow
@pytest.mark.skipif(not _metaworld_ok()[0], reason=f"metaworld unavailable: {_metaworld_ok()[1]}")
def test_cli_demos_sft_eval_on_metaworld(tmp_path, capsys):
    import json

    from asyncvla.cli import main

    demos, ckpt = tmp_path / "D", tmp_path / "S"
    assert main(["demos", "metaworld/reach-v3", "--episodes", "2", "--out", str(demos), "--image-size", "32", "--json"]) == 0
    assert main(["sft", "--env", "metaworld/reach-v3", "--demos", str(demos), "--out", str(ckpt), "--steps", "5",
                 "--batch-size", "8", "--policy.hidden-dim", "32", "--policy.image-size", "32", "--json"]) == 0
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--episodes", "2", "--num-envs", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["env_id"] == "metaworld/reach-v3" and 0 <= result["success_rate"] <= 1


def test_env_errors_are_rerun_up_to_a_cap_then_stop_the_evaluation():
    import dataclasses
    import time

    from asyncvla.config import TrainConfig, WrapperConfig
    from asyncvla.runtime.driver import eval_env_config

    always = dataclasses.replace(_env(num_envs=2), wrappers=WrapperConfig(fault_prob=1.0, fault_kind="crash"))
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r"evaluation stopped: 5 env errors in 0 of 4 episodes \(at most 4 reruns\); "
                                           r"last: .*injected crash"):
        evaluate_policy(_PointExpert(), always, episodes=4)
    assert time.time() - t0 < 10  # it used to rerun forever
    # A run's evaluation runs without the training envs' injected faults, so it reruns nothing.
    cfg = TrainConfig(env=always)
    res = evaluate_policy(_PointExpert(), eval_env_config(cfg), episodes=4)
    assert res["env_errors"] == 0 and res["success_rate"] == 1.0 and cfg.env.wrappers.fault_prob == 1.0
