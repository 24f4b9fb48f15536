"""Trainer: rollouts in, PPO/GRPO updates out. The math lives in algos/; this wires it.

`train(rollouts, epochs)` = advantages (the algorithm's: GAE with truncation bootstrap, or
GRPO) → `epochs` passes of shuffled minibatches (clipped policy loss + clipped value loss +
entropy, KL to the initial policy if asked) with gradient clipping → loss stats. With
`decoupled=True` the proximal logprob is recomputed before the first minibatch (decoupled PPO).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from asyncvla.algos.advantages import normalize_advantages
from asyncvla.algos.registry import make_algorithm
from asyncvla.algos.losses import decoupled_ppo_loss, entropy_bonus, kl_estimate, ppo_policy_loss, value_loss
from asyncvla.config import AlgoConfig, PolicyConfig
from asyncvla.metrics.spans import Span, SpanRecorder
from asyncvla.policies.base import ObsBatch, Policy
from asyncvla.policies.registry import build_policy
from asyncvla.runtime.data import Rollout
from asyncvla.runtime.device import DeviceGate


@dataclass
class Batch:
    """Flat training samples (N = valid samples of all rollouts), on the trainer's device."""

    obs: ObsBatch
    actions: torch.Tensor  # [N, K, A]
    behav_logprob: torch.Tensor  # [N]
    old_values: torch.Tensor  # [N]
    advantages: torch.Tensor  # [N]
    returns: torch.Tensor  # [N]
    version: torch.Tensor  # [N] int64
    prox_logprob: torch.Tensor | None = None  # [N], decoupled PPO only

    def __len__(self) -> int:
        return self.actions.shape[0]


@torch.no_grad()
def _values(policy: Policy, obs: ObsBatch, chunk: int = 256) -> np.ndarray:
    """V(obs) [N] in inference batches (the value head does not need the sampled actions)."""
    out = [policy.act(obs.slice(i, i + chunk), deterministic=True).value for i in range(0, len(obs), chunk)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def next_values(policy: Policy, r: Rollout) -> np.ndarray:
    """V(s_{t+1}) [T, B] for GAE: the next step's value, V(next_obs) after each column's own last
    step (a segment shorter than the batch's longest ends before its padding), and V(final obs)
    where an episode was truncated (terminated entries are ignored by GAE)."""
    T, B = r.shape
    nv = np.zeros((T, B), np.float32)
    nv[:-1] = r.value[1:]
    nv[r.lengths - 1, np.arange(B)] = _values(policy, r.next_obs)
    if r.final_obs is not None and len(r.final_index):
        t, b = r.final_index[:, 0], r.final_index[:, 1]
        nv[t, b] = _values(policy, r.final_obs)
    return nv


class Trainer:
    """Owns the trained policy, its optimizer and (with kl_coef > 0) a frozen reference copy."""

    def __init__(self, policy_cfg: PolicyConfig, algo_cfg: AlgoConfig, action_dim: int, proprio_dim: int,
                 seed: int = 0, trace: bool = True, decoupled: bool = False, policy: Policy | None = None,
                 device: DeviceGate | None = None):
        self.algo = algo_cfg
        self.algorithm = make_algorithm(algo_cfg)
        self.decoupled = decoupled
        self.seed = seed
        self.policy = policy if policy is not None else build_policy(policy_cfg, action_dim, proprio_dim, seed)
        self.policy.prepare_rl(policy_cfg)
        self.device = self.policy.device if hasattr(self.policy, "device") else torch.device(policy_cfg.device)
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=algo_cfg.lr, eps=1e-5)
        self.ref_policy = copy.deepcopy(self.policy).eval() if algo_cfg.kl_coef > 0 else None
        self.rec = SpanRecorder("trainer", 0, enabled=trace)
        self.rng = np.random.default_rng(seed)
        self.num_updates = 0
        self.gate = device or DeviceGate()

    def _param_groups(self) -> list[dict]:
        value_lr = self.algo.value_lr
        if value_lr is None:
            return [{"params": list(self.policy.parameters())}]
        # Parameters of a module named value_head (the built-in policies' critic) get value_lr.
        critic = [p for n, p in self.policy.named_parameters() if n.startswith("value_head")]
        ids = {id(p) for p in critic}
        return [{"params": [p for p in self.policy.parameters() if id(p) not in ids]}, {"params": critic, "lr": value_lr}]

    @property
    def version(self) -> int:
        return self.policy.version

    # -- the update -----------------------------------------------------------------------
    def train(self, rollouts: Sequence[Rollout], epochs: int) -> dict[str, float]:
        """One update: advantages of the rollouts (one per env worker), then `epochs` passes."""
        with self.rec.span("advantage"):
            batch = self.prepare(rollouts)
        with self.rec.span("train"):
            return self.update(batch, epochs)

    def prepare(self, rollouts: Sequence[Rollout]) -> Batch:
        """Advantages per rollout (time-major), then flattened to the valid samples, normalised."""
        self.policy.eval()
        obs_parts, parts = [], {k: [] for k in ("actions", "logprob", "value", "adv", "ret", "version")}
        for r in rollouts:
            adv, ret, mask = self.algorithm.advantages(r, lambda r=r: torch.as_tensor(next_values(self.policy, r)))
            flat = mask.reshape(-1).numpy()  # index t * B + b, as in r.obs
            idx = np.flatnonzero(flat)
            obs_parts.append(r.obs.index(idx))
            parts["actions"].append(torch.as_tensor(r.actions.reshape(-1, *r.actions.shape[2:])[idx]))
            for key, arr in (("logprob", r.logprob), ("value", r.value), ("version", r.version)):
                parts[key].append(torch.as_tensor(arr.reshape(-1)[idx]))
            parts["adv"].append(adv.reshape(-1)[idx])
            parts["ret"].append(ret.reshape(-1)[idx])
        cat = {k: torch.cat(v).to(self.device) for k, v in parts.items()}
        adv = cat["adv"].float()
        if self.algorithm.normalize:
            adv = normalize_advantages(adv, torch.ones_like(adv, dtype=torch.bool))
        batch = Batch(ObsBatch.concat(obs_parts), cat["actions"].float(), cat["logprob"].float(), cat["value"].float(),
                      adv, cat["ret"].float(), cat["version"])
        if self.decoupled:
            batch.prox_logprob = self._logprob(batch)
        return batch

    @torch.no_grad()
    def _logprob(self, batch: Batch, policy: Policy | None = None) -> torch.Tensor:
        policy = policy or self.policy
        mb = max(self.algo.minibatch_size, 1)
        out = [policy.evaluate(batch.obs.slice(i, i + mb), batch.actions[i:i + mb])[0] for i in range(0, len(batch), mb)]
        return torch.cat(out)

    def update(self, batch: Batch, epochs: int) -> dict[str, float]:
        """`epochs` passes of shuffled minibatches; one optimizer step per minibatch."""
        with self.gate.train(len(batch) * epochs):
            return self._update(batch, epochs)

    def _update(self, batch: Batch, epochs: int) -> dict[str, float]:
        self.policy.train()
        ref_logprob = self._logprob(batch, self.ref_policy) if self.ref_policy is not None else None
        n, mb = len(batch), self.algo.minibatch_size
        totals: dict[str, float] = {}
        steps = 0
        for _ in range(epochs):
            perm = self.rng.permutation(n)
            for chunk in np.array_split(perm, max(1, -(-n // mb))):
                idx = torch.as_tensor(chunk, device=self.device)
                stats = self._minibatch_step(batch, chunk, idx, ref_logprob)
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
                steps += 1
        self.policy.eval()
        self.num_updates += 1
        out = {f"loss/{k}": v / max(steps, 1) for k, v in totals.items()}
        out.update({"train/samples": float(n), "train/optimizer_steps": float(steps), "train/version": float(self.version)})
        return out

    def _minibatch_step(self, b: Batch, chunk: np.ndarray, idx: torch.Tensor, ref_logprob) -> dict[str, float]:
        algo = self.algo
        logprob, entropy, values = self.policy.evaluate(b.obs.index(chunk), b.actions[idx])  # [M] each
        mask = torch.ones_like(logprob, dtype=torch.bool)
        adv = b.advantages[idx]
        # token_mean: the ratios below become geometric means per action token.
        per = float(b.actions.shape[1] * b.actions.shape[2]) if algo.ratio == "token_mean" else 1.0
        behav = b.behav_logprob[idx] / per
        if b.prox_logprob is not None:
            pg, stats = decoupled_ppo_loss(logprob / per, b.prox_logprob[idx] / per, behav, adv, mask,
                                           algo.clip_eps, algo.dual_clip, algo.is_cap)
        else:
            pg, stats = ppo_policy_loss(logprob / per, behav, adv, mask, algo.clip_eps, algo.dual_clip)
        ent_loss, ent_stats = entropy_bonus(entropy, mask)
        actor_on = float(self.num_updates >= algo.critic_warmup)  # critic warm-up: value loss only
        loss = actor_on * (pg + algo.entropy_coef * ent_loss)
        stats = {**stats, **ent_stats, "policy": float(pg.detach())}
        if self.algorithm.uses_critic:
            vl, v_stats = value_loss(values, b.old_values[idx], b.returns[idx], mask, algo.value_clip)
            loss = loss + algo.value_coef * vl
            stats.update(v_stats, value=float(vl.detach()))
        if ref_logprob is not None:
            kl = kl_estimate(logprob, ref_logprob[idx], mask)
            loss = loss + algo.kl_coef * kl
            stats["kl_ref"] = float(kl.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), algo.max_grad_norm)
        self.optimizer.step()
        self.policy.version += 1  # a version is one optimizer step
        stats.update(total=float(loss.detach()), grad_norm=float(grad_norm))
        return stats

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Policy (safetensors + config.yaml) and trainer.pt: optimizer, version, RNG states."""
        from asyncvla.policies.checkpoint import save_policy

        out = save_policy(self.policy, out_dir, extra=extra)
        torch.save({
            "optimizer": self.optimizer.state_dict(), "version": self.policy.version, "num_updates": self.num_updates,
            "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
            "ref_policy": self.ref_policy.state_dict() if self.ref_policy is not None else None,
        }, Path(out) / "trainer.pt")
        return out

    def load(self, ckpt_dir: str | Path) -> int:
        """Restores weights, optimizer, version and RNG from `save`; returns the version."""
        from safetensors.torch import load_file

        from asyncvla.policies.checkpoint import WEIGHTS

        self.policy.load_state_dict(load_file(str(Path(ckpt_dir) / WEIGHTS), device=str(self.device)))
        st = torch.load(Path(ckpt_dir) / "trainer.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(st["optimizer"])
        self.policy.version, self.num_updates = int(st["version"]), int(st["num_updates"])
        self.rng.bit_generator.state = st["numpy_rng"]
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["python_rng"])
        if self.ref_policy is not None and st.get("ref_policy") is not None:
            self.ref_policy.load_state_dict(st["ref_policy"])
        return self.policy.version

    def drain_spans(self) -> list[Span]:
        return self.rec.drain()
