"""Evaluation of a policy on held-out initial states (plain function, no Ray).

Env i runs a fixed quota of episodes (the quotas sum to `episodes`), rather than counting
the first `episodes` to finish: short episodes finish first, and successful episodes are
short (they end on success), so first-to-finish would inflate the success rate.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from asyncvla.config import ConfigError, EnvConfig
from asyncvla.envs.vector import EnvResult
from asyncvla.policies.base import ObsBatch, Policy


def episode_quotas(episodes: int, num_envs: int) -> list[int]:
    """Episodes per env: as equal as possible, summing to `episodes`; only envs with work."""
    n = min(num_envs, episodes)
    return [episodes // n + (i < episodes % n) for i in range(n)]


def _upscale(img: np.ndarray, min_size: int = 256) -> np.ndarray:
    k = max(1, -(-min_size // img.shape[0]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def evaluate_policy(
    policy: Policy,
    env_cfg: EnvConfig,
    episodes: int,
    deterministic: bool = True,
    video: Path | str | None = None,
    max_env_errors: int | None = None,
) -> dict:
    """Runs exactly `episodes` episodes on the eval split; returns success_rate (success at any
    step), success_at_end (in the last action chunk), mean_return, mean_episode_len, episodes
    (and env_steps, wall_s, env_errors).

    Action chunks go through VectorEnv.send/recv, so each env moves on as soon as its own
    chunk is done. `video`: an mp4 of the first env's observations, one frame per decision.
    An episode cut by an env error is rerun, at most `max_env_errors` times in all (default:
    `episodes`); past that the evaluation stops with an error instead of rerunning forever.
    """
    from asyncvla.envs.registry import make_vector_env

    if episodes < 1:
        raise ConfigError(f"episodes={episodes!r} is invalid: must be >= 1")
    cap = episodes if max_env_errors is None else max_env_errors
    quotas = episode_quotas(episodes, env_cfg.num_envs)
    cfg = dataclasses.replace(env_cfg, split="eval", num_envs=len(quotas))
    finished: list[list[EnvResult]] = [[] for _ in quotas]
    frames: list[np.ndarray] = []
    env_errors = env_steps = 0
    policy.eval()
    t0 = time.perf_counter()
    with make_vector_env(cfg) as venv:
        venv.reset_all()
        while sum(map(len, finished)) < episodes:
            ready = []
            for r in venv.recv(min_ready=1):
                env_steps += r.num_steps
                if r.error is not None:  # a crashed env's cut episode is neither success nor failure: rerun it
                    env_errors += 1
                    if env_errors > cap:
                        raise RuntimeError(f"evaluation stopped: {env_errors} env errors in {sum(map(len, finished))} of "
                                           f"{episodes} episodes (at most {cap} reruns); last: {r.error}")
                elif r.done:
                    finished[r.env_id].append(r)
                more = len(finished[r.env_id]) < quotas[r.env_id]
                if video is not None and r.env_id == 0:
                    frames += [r.final_obs.image] if r.done and r.final_obs is not None else []
                    frames += [r.obs.image] if more else []
                if more:
                    ready.append(r)
            if ready:
                out = policy.act(ObsBatch.stack([r.obs for r in ready]), deterministic=deterministic)
                venv.send([r.env_id for r in ready], out.actions)
    done = [r for rs in finished for r in rs]
    if video is not None and frames:
        _write_video(Path(video), frames)
    return {
        # Success once: the task succeeded at some step of the episode (what RLinf's success_once reports).
        "success_rate": float(np.mean([r.episode_success for r in done])),
        # Success at the end: it succeeded during the episode's last action chunk.
        "success_at_end": float(np.mean([r.success for r in done])),
        "mean_return": float(np.mean([r.episode_return for r in done])),
        "mean_episode_len": float(np.mean([r.episode_len for r in done])),
        "episodes": len(done),
        "env_id": cfg.id,
        "split": cfg.split,
        "deterministic": deterministic,
        "env_steps": env_steps,
        "env_errors": env_errors,
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, [_upscale(f) for f in frames], fps=fps, macro_block_size=1)
