"""`asyncvla bench policy`: inference and training throughput of a policy on this machine.

For each batch size B: inference = one `act` call on B observations (no grad); training =
`evaluate` + backward + AdamW step on B samples (what one BC/PPO minibatch costs).
Samples/s = B / median seconds per call, after one warm-up call. Observations are random
images and proprio with one instruction (its embedding is cached after the first call, as
in rollouts where instructions repeat), so text encoding is excluded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from asyncvla.config import ConfigError, PolicyConfig, policy_config
from asyncvla.policies.base import ObsBatch, Policy
from asyncvla.policies.registry import make_policy

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _median_s(fn: Callable[[], object], budget_s: float, min_iters: int = 3) -> tuple[float, int]:
    fn()  # warm-up: allocator, kernels, text-embedding cache
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def _random_obs(b: int, image_size: int, proprio_dim: int, rng: np.random.Generator) -> ObsBatch:
    return ObsBatch(rng.integers(0, 256, (b, image_size, image_size, 3), dtype=np.uint8),
                    rng.normal(size=(b, proprio_dim)).astype(np.float32), ["reach the goal"] * b)


def bench_batch(policy: Policy, opt: torch.optim.Optimizer, b: int, image_size: int, budget_s: float, seed: int = 0) -> dict:
    """Inference and training throughput of `policy` at batch size b (one result row)."""
    obs = _random_obs(b, image_size, policy.proprio_dim, np.random.default_rng(seed))
    sampled = policy.act(obs)
    actions = torch.as_tensor(sampled.actions)
    aux = None if sampled.aux is None else torch.as_tensor(sampled.aux)

    def train_step() -> None:
        logprob, entropy, value = policy.evaluate(obs, actions, aux)
        loss = -logprob.mean() + value.pow(2).mean() - 0.01 * entropy.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    infer_s, infer_n = _median_s(lambda: policy.act(obs), budget_s)
    train_s, train_n = _median_s(train_step, budget_s)
    return {
        "batch_size": b,
        "infer_samples_per_s": round(b / infer_s, 1), "infer_ms": round(1e3 * infer_s, 2), "infer_iters": infer_n,
        "train_samples_per_s": round(b / train_s, 1), "train_ms": round(1e3 * train_s, 2), "train_iters": train_n,
    }


def bench_policy(
    policy_cfg: PolicyConfig | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    action_dim: int = 4,
    proprio_dim: int = 39,
    budget_s: float = 1.0,
    out: Path | str | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Measures every batch size; writes `out/results.json` when `out` is given.

    Each row also names the policy, its size and the torch thread count, so rows compare
    across commits and machines. `budget_s` is the time spent per measurement (at least 3 calls).
    """
    cfg = policy_cfg or policy_config()
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch_sizes={list(batch_sizes)!r} is invalid: need at least one size, all >= 1")
    torch.manual_seed(0)
    policy = make_policy(cfg, action_dim, proprio_dim)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    meta = {"policy_type": cfg.type, "hidden_dim": cfg.hidden_dim, "num_layers": cfg.num_layers, "chunk": cfg.chunk,
            "image_size": cfg.image_size, "params": sum(p.numel() for p in policy.parameters()),
            "trainable_params": sum(p.numel() for p in policy.parameters() if p.requires_grad),
            "device": cfg.device, "torch_threads": torch.get_num_threads()}
    rows = []
    for b in batch_sizes:
        row = {**bench_batch(policy, opt, b, cfg.image_size, budget_s), **meta}
        rows.append(row)
        if on_result is not None:
            on_result(row)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


def results_table(rows: list[dict]):
    """A rich Table of bench_policy rows."""
    from rich.table import Table

    first = rows[0] if rows else {}
    table = Table("batch", "infer samples/s", "infer ms", "train samples/s", "train ms",
                  title=f"{first.get('policy_type')} policy (hidden {first.get('hidden_dim')}, {first.get('num_layers')} layers, "
                        f"{first.get('params', 0) / 1e6:.2f} M params, {first.get('torch_threads')} threads, {first.get('device')})")
    for r in rows:
        table.add_row(str(r["batch_size"]), f"{r['infer_samples_per_s']:.1f}", f"{r['infer_ms']:.1f}",
                      f"{r['train_samples_per_s']:.1f}", f"{r['train_ms']:.1f}")
    return table
