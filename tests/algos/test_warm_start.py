"""Warm-start cache key: what shares one SFT checkpoint and what does not."""

from asyncvla.config import RunConfig, TrainConfig, WarmStartConfig, env_config
from asyncvla.algos.warm_start import _key, _seeds


def _cfg(run_seed: int, env_seed: int, ws_seed: int | None, sft_steps: int = 250) -> TrainConfig:
    return TrainConfig(env=env_config(id="metaworld/reach-v3", seed=env_seed), run=RunConfig(seed=run_seed),
                       warm_start=WarmStartConfig(demo_episodes=2, sft_steps=sft_steps, seed=ws_seed,
                                                   demo_seed=None if ws_seed is None else 0))


def test_fixed_warm_start_seed_shares_one_checkpoint_across_rl_seeds():
    keys = {_key(_cfg(s, s, ws_seed=0)) for s in range(3)}
    assert len(keys) == 1
    assert _seeds(_cfg(2, 5, ws_seed=1)) == (0, 1)
    assert _key(_cfg(0, 0, ws_seed=0)) != _key(_cfg(0, 0, ws_seed=1))
    assert _key(_cfg(0, 0, ws_seed=0)) != _key(_cfg(0, 0, ws_seed=0, sft_steps=300))


def test_default_warm_start_follows_env_and_run_seeds():
    assert _seeds(_cfg(2, 5, ws_seed=None)) == (5, 2)
    assert len({_key(_cfg(s, 0, ws_seed=None)) for s in range(3)}) == 3
    assert _key(_cfg(0, 0, ws_seed=None)) != _key(_cfg(0, 1, ws_seed=None))


def test_a_change_to_the_model_code_rebuilds_the_cache(monkeypatch):
    from asyncvla.algos import warm_start

    digest = warm_start.code_digest()
    assert digest == warm_start.code_digest() and len(digest) == 16
    before = _key(_cfg(0, 0, ws_seed=0))
    monkeypatch.setattr(warm_start, "code_digest", lambda: "another-version")
    assert _key(_cfg(0, 0, ws_seed=0)) != before


def test_runs_started_together_build_the_cache_once(tmp_path, monkeypatch):
    import threading
    import time

    from asyncvla.algos import sft
    from asyncvla.data import demos
    from asyncvla.algos import warm_start

    calls = {"demos": 0, "sft": 0}

    def fake_demos(*args, out, **kwargs):
        calls["demos"] += 1
        out.mkdir(parents=True)  # fails if a second run writes the same demos
        time.sleep(0.2)  # wide enough for the other runs to reach the cache meanwhile

    def fake_sft(env_id, demo_dir, out, **kwargs):
        calls["sft"] += 1

    monkeypatch.setattr(demos, "record_demos", fake_demos)
    monkeypatch.setattr(sft, "train_sft", fake_sft)
    cfg = _cfg(0, 0, ws_seed=0)
    cfg.warm_start.cache_dir = str(tmp_path)
    got = []
    runs = [threading.Thread(target=lambda: got.append(warm_start.ensure_warm_start(cfg, progress=False)))
            for _ in range(3)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert calls == {"demos": 1, "sft": 1}
    assert len(set(got)) == 1 and got[0].endswith("sft")


def test_rl_only_policy_settings_share_the_sft_start():
    import dataclasses

    base = _cfg(0, 0, ws_seed=0)
    rl = dataclasses.replace(base, policy=dataclasses.replace(base.policy, value_time=True, rl_spread=True))
    assert _key(rl) == _key(base)
    assert _key(dataclasses.replace(base, policy=dataclasses.replace(base.policy, hidden_dim=32))) != _key(base)
