"""Trainer: rollouts in, PPO/GRPO updates out. The math lives in algos/; this wires it.

`train(rollouts, epochs)` = advantages (the algorithm's: GAE with truncation bootstrap, or
GRPO) → `epochs` passes of shuffled minibatches (clipped policy loss + clipped value loss +
entropy, KL to the initial policy if asked) with gradient clipping → loss stats. With
`decoupled=True` the proximal logprob is recomputed before the first minibatch (decoupled PPO).
"""

from __future__ import annotations

import copy
import math
import random
from collections import deque
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from asyncvla.algos.advantages import normalize_advantages
from asyncvla.algos.registry import make_algorithm
from asyncvla.algos.step_size import next_lr, step_kl
from asyncvla.algos.objective import Batch, chunk_tokens, minibatch_loss
from asyncvla.config import AlgoConfig, PolicyConfig
from asyncvla.metrics.spans import Span, SpanRecorder
from asyncvla.policies.base import ObsBatch, Policy
from asyncvla.policies.registry import build_policy
from asyncvla.runtime.data import Rollout
from asyncvla.runtime.device import DeviceGate
from asyncvla.runtime.learner.data_parallel import GROUP_TIMEOUT_S, Collective, replica_state, weights_checksum


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


class NonFiniteUpdates(RuntimeError):
    """algo.max_skipped_updates updates in a row had only non-finite losses or gradients: the weights
    (finite: a non-finite gradient is never applied) no longer give a usable loss."""


def _floats(stats: dict) -> dict[str, float]:
    return {k: v for k, v in stats.items() if not k.startswith("_")}


# Update stats of the first optimizer step only (not averaged over the update's steps).
FIRST_STEP_KEYS = ("first_step_kl", "first_step_dlogp", "first_step_dlogp_abs", "first_step_dlogp_token_abs", "retakes")
MAX_RETAKES = 8
"""algo.step_kl: how often an overshooting step is undone and retaken smaller, until one calibrates the lr."""
LR_MIN_FRACTION = 1e-4
"""algo.step_kl: the controller keeps the policy's learning rate in [lr * this, lr]."""


def _update_stats(stepped: list[dict]) -> dict[str, float]:
    """An update's stats from its optimizer steps': means (a step without a key counts 0), the
    extremes over the minibatches, and the first step's own."""
    n = max(len(stepped), 1)
    keys = sorted({k for s in stepped for k in s} - set(FIRST_STEP_KEYS))
    out = {f"loss/{k}": sum(s.get(k, 0.0) for s in stepped) / n for k in keys}
    out.update({"loss/approx_kl_max": max((s["approx_kl"] for s in stepped), default=0.0),
                "loss/clip_frac_max": max((s["clip_frac"] for s in stepped), default=0.0),
                "loss/ratio_min": min((s["ratio_min"] for s in stepped), default=float("inf")),
                "loss/ratio_max": max((s["ratio_max"] for s in stepped), default=0.0)})
    out.update({f"train/{k}": v for k, v in (stepped[0] if stepped else {}).items() if k in FIRST_STEP_KEYS})
    return out


class Trainer:
    """Owns the trained policy, its optimizer and (with kl_coef > 0) a frozen reference copy."""

    def __init__(self, policy_cfg: PolicyConfig, algo_cfg: AlgoConfig, action_dim: int, proprio_dim: int,
                 seed: int = 0, trace: bool = True, decoupled: bool = False, policy: Policy | None = None,
                 device: DeviceGate | None = None):
        self.algo = algo_cfg
        self.algorithm = make_algorithm(algo_cfg)
        self.decoupled = decoupled
        self.seed = seed
        if policy is None:
            policy = build_policy(policy_cfg, action_dim, proprio_dim, seed)
        else:
            policy.prepare_rl(policy_cfg)
        self.policy = policy
        self.device = self.policy.device if hasattr(self.policy, "device") else torch.device(policy_cfg.device)
        trained = [(n, p) for n, p in self.policy.named_parameters() if p.requires_grad]  # not a frozen backbone
        self.critic_params = [p for n, p in trained if n.startswith("value_")]
        """The critic's own parameters (modules named value_*, the built-in policies' critic): they get
        value_lr, and their gradient is clipped apart from the actor's."""
        self.actor_params = [p for n, p in trained if not n.startswith("value_")]
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=algo_cfg.lr, eps=1e-5)
        self.ref_policy = copy.deepcopy(self.policy).eval() if algo_cfg.kl_coef > 0 else None
        self.rec = SpanRecorder("trainer", 0, enabled=trace)
        self.rng = np.random.default_rng(seed)
        self.num_updates = 0
        self.gate = device or DeviceGate()
        self.lr_calibrated = False
        """algo.step_kl: a policy step has measured the learning rate's KL (saved in checkpoints)."""
        # Bounded: a caller that never drains it (a benchmark) must not grow it without end.
        self.minibatch_log: deque[dict] = deque(maxlen=100_000)
        self.skipped_in_a_row = 0
        """Updates in a row of which every step was skipped."""
        self.dp: Collective | None = None
        """runtime.num_trainers > 1: this rank's side of the trainers' group (data_parallel.py)."""
        self.replicas: list = []
        """Rank 0: the other ranks (ThreadReplica / RayReplica), which run every update beside it."""
        self.replica_drift = 0.0
        """Rank 0: the largest difference of a replica's weight checksum from this rank's, last update."""

    def _param_groups(self) -> list[dict]:
        value_lr = self.algo.value_lr
        if value_lr is None and self.algo.step_kl is None:
            return [{"params": [p for p in self.policy.parameters() if p.requires_grad]}]
        value_lr = self.algo.lr if value_lr is None else value_lr  # step_kl scales the policy's group only
        return [{"params": self.actor_params}, {"params": self.critic_params, "lr": value_lr}]

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
        aux_parts = []
        for r in rollouts:
            adv, ret, mask = self.algorithm.advantages(r, lambda r=r: torch.as_tensor(next_values(self.policy, r)))
            flat = mask.reshape(-1).numpy()  # index t * B + b, as in r.obs
            idx = np.flatnonzero(flat)
            obs_parts.append(r.obs.index(idx))
            parts["actions"].append(torch.as_tensor(r.actions.reshape(-1, *r.actions.shape[2:])[idx]))
            for key, arr in (("logprob", r.logprob), ("value", r.value), ("version", r.version)):
                parts[key].append(torch.as_tensor(arr.reshape(-1)[idx]))
            if r.aux is not None:
                aux_parts.append(torch.as_tensor(r.aux.reshape(-1, *r.aux.shape[2:])[idx]))
            parts["adv"].append(adv.reshape(-1)[idx])
            parts["ret"].append(ret.reshape(-1)[idx])
        cat = {k: torch.cat(v).to(self.device) for k, v in parts.items()}
        adv = cat["adv"].float()
        if self.algorithm.normalize:
            adv = normalize_advantages(adv, torch.ones_like(adv, dtype=torch.bool))
        batch = Batch(ObsBatch.concat(obs_parts), cat["actions"].float(), cat["logprob"].float(), cat["value"].float(),
                      adv, cat["ret"].float(), cat["version"],
                      aux=torch.cat(aux_parts).to(self.device).float() if aux_parts else None)
        if self.decoupled:
            batch.prox_logprob = self._logprob(batch)
        return batch

    @torch.no_grad()
    def _logprob(self, batch: Batch, policy: Policy | None = None) -> torch.Tensor:
        policy = policy or self.policy
        mb = max(self.algo.minibatch_size, 1)
        out = [batch.evaluate(policy, slice(i, i + mb))[0] for i in range(0, len(batch), mb)]
        return torch.cat(out)

    def update(self, batch: Batch, epochs: int) -> dict[str, float]:
        """`epochs` passes of shuffled minibatches; one optimizer step per minibatch (data-parallel:
        the replicas run the same update beside this one, on their shards)."""
        with self.gate.train(len(batch) * epochs):
            if not self.replicas:
                return self._update(batch, epochs)
            cpu, state = batch.to("cpu"), replica_state(self)
            futures = [r.update(cpu, epochs, state) for r in self.replicas]
            out = self._update(batch, epochs)
            sums = [f.result(timeout=GROUP_TIMEOUT_S) for f in futures]  # a replica's error surfaces here
            mine = weights_checksum(self)
            self.replica_drift = max(abs(s - mine) for s in sums)
            out["train/replica_drift"] = self.replica_drift
            return out

    def attach_replicas(self, replicas: list) -> None:
        """Rank 0 of `runtime.num_trainers`: the other ranks start from this one's weights and optimizer."""
        self.replicas = replicas
        self.sync_replicas()

    def sync_replicas(self) -> None:
        if not self.replicas:
            return
        state = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
        opt = self.optimizer.state_dict()
        for f in [r.load_state(state, opt) for r in self.replicas]:
            f.result(timeout=GROUP_TIMEOUT_S)

    def close_replicas(self) -> None:
        for r in self.replicas:
            r.close()
        self.replicas = []

    def _update(self, batch: Batch, epochs: int) -> dict[str, float]:
        self.policy.train()
        ref_logprob = self._logprob(batch, self.ref_policy) if self.ref_policy is not None else None
        n, mb, target_kl = len(batch), self.algo.minibatch_size, self.algo.target_kl
        stepped: list[dict] = []  # the stats of each optimizer step of this update
        stopped, skipped = False, 0
        for epoch in range(epochs):
            perm = self.rng.permutation(n)
            for chunk in np.array_split(perm, max(1, -(-n // mb))):
                idx = torch.as_tensor(chunk, device=self.device)
                loss, stats = self._losses(batch, chunk, idx, ref_logprob)
                # KL early stop: this minibatch shows the policy has already moved far enough from
                # the one that collected (or, decoupled, proxies) the batch; the first never stops.
                stopped = target_kl is not None and stats["approx_kl"] > target_kl
                row = {"update": self.num_updates + 1, "epoch": epoch, "step": len(stepped), "stepped": not stopped}
                self.minibatch_log.append(row)
                if stopped:
                    row.update(_floats(stats))
                    break
                stats = self._take_step(batch, chunk, idx, ref_logprob, loss, stats, first=not stepped)
                row.update(_floats(stats))
                if stats.get("skipped"):
                    skipped += 1
                    continue
                stepped.append(stats)
            if stopped:
                break
        self.policy.eval()
        self.num_updates += 1
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped and not stepped else 0
        if self.skipped_in_a_row >= self.algo.max_skipped_updates:
            raise NonFiniteUpdates(f"training stopped: {self.skipped_in_a_row} updates in a row had a non-finite loss or "
                                   f"gradient in every optimizer step (algo.max_skipped_updates={self.algo.max_skipped_updates}); "
                                   "the last periodic checkpoint holds the last good weights")
        out = _update_stats(stepped)
        out.update({"train/samples": float(n), "train/optimizer_steps": float(len(stepped)), "train/version": float(self.version),
                    "train/early_stopped": float(stopped), "train/lr": self.policy_lr, "train/skipped_steps": float(skipped),
                    "train/skipped_updates": float(skipped > 0 and not stepped)})
        return out

    def _losses(self, b: Batch, chunk: np.ndarray, idx: torch.Tensor, ref_logprob) -> tuple[torch.Tensor, dict]:
        """The minibatch's loss (with grad) and its stats, at the current weights."""
        # Critic warm-up: value loss only (an algorithm without a critic has nothing to warm up).
        actor_on = not self.algorithm.uses_critic or self.num_updates >= self.algo.critic_warmup
        if self.dp is None:
            return minibatch_loss(self.policy, self.algo, self.algorithm.uses_critic, b, chunk, idx, ref_logprob, actor_on)
        # Data-parallel: this rank's shard, its loss weighted by its share of the minibatch (the
        # ranks' losses sum to the minibatch's), its stats those of the whole minibatch.
        rows, weight = self.dp.shard(chunk)
        loss, stats = minibatch_loss(self.policy, self.algo, self.algorithm.uses_critic, b, rows,
                                     torch.as_tensor(rows, device=self.device), ref_logprob, actor_on)
        return loss * weight, {**self.dp.reduce_stats(stats, weight), "_weight": weight, "_rows": rows}

    def _step(self, loss: torch.Tensor, stats: dict) -> torch.Tensor | None:
        """One optimizer step; returns the minibatch's logprob before it (for the first step's change),
        or None when the loss or the gradient is not finite: then nothing is applied."""
        before = stats.pop("_logprob")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        total = float(loss.detach())
        if self.dp is not None:  # every rank now holds the whole minibatch's gradient
            self.dp.all_reduce_grads([p for p in self.policy.parameters() if p.requires_grad])
            total = self.dp.mean(total, 1.0)
        # Actor and critic are clipped apart: under one global norm the critic's gradient (large while
        # the value error is, i.e. on minibatches with large advantages) shrank each actor step by
        # 1/|g_critic| (measured: norms 7-18 against max_grad_norm 1 after PPO's critic warm-up).
        actor_norm = torch.nn.utils.clip_grad_norm_(self.actor_params, self.algo.max_grad_norm)
        critic_norm = torch.nn.utils.clip_grad_norm_(self.critic_params, self.algo.max_grad_norm) if self.critic_params \
            else torch.zeros(())
        grad_norm = torch.hypot(actor_norm, critic_norm)
        stats.update(total=total, grad_norm=float(grad_norm), grad_norm_actor=float(actor_norm), grad_norm_critic=float(critic_norm))
        if not (math.isfinite(total) and torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.policy.version += 1  # a version is one optimizer step
        return before

    def _take_step(self, b: Batch, chunk: np.ndarray, idx: torch.Tensor, ref_logprob, loss: torch.Tensor,
                   stats: dict, first: bool) -> dict:
        """One optimizer step. With algo.step_kl, the step's KL sets the next learning rate, and until
        a step has calibrated it, a step that overshoots 4x is undone and retaken smaller: Adam's first
        actor steps (lr * sign(g), also after a critic warm-up) leave any trust region at once."""
        target = self.algo.step_kl
        snapshot = None
        if target is not None and not self.lr_calibrated:
            snapshot = (copy.deepcopy(self.policy.state_dict()), copy.deepcopy(self.optimizer.state_dict()), self.policy.version)
        tokens = chunk_tokens(b.actions)
        for attempt in range(MAX_RETAKES + 1):
            rows, weight = stats.pop("_rows", chunk), stats.pop("_weight", 1.0)  # data-parallel: this rank's shard
            before = self._step(loss, stats)
            if before is None:
                return {**stats, "skipped": 1.0}
            if target is None and not first:
                return stats
            with torch.no_grad():
                after = b.evaluate(self.policy, rows)[0]
            kl = self._mean(step_kl(before, after, tokens), weight)
            if target is not None and kl > 0:  # 0: the policy did not move (critic warm-up), nothing to learn from
                lr = next_lr(self.policy_lr, kl, target, self.algo.lr, self.algo.lr * LR_MIN_FRACTION)
                if snapshot is not None and kl > 4 * target and attempt < MAX_RETAKES:
                    self.policy.load_state_dict(snapshot[0])
                    self.optimizer.load_state_dict(snapshot[1])
                    self.policy.version = snapshot[2]
                    self.policy_lr = lr
                    loss, stats = self._losses(b, chunk, idx, ref_logprob)
                    continue
                self.policy_lr, self.lr_calibrated = lr, True
            if target is not None:
                stats["step_kl"] = kl
            if first:
                stats.update(first_step_kl=kl, retakes=float(attempt))
                d = after - before
                dlogp, dlogp_abs = self._mean(float(d.mean()), weight), self._mean(float(d.abs().mean()), weight)
                stats.update(first_step_dlogp=dlogp, first_step_dlogp_abs=dlogp_abs, first_step_dlogp_token_abs=dlogp_abs / tokens)
            return stats
        raise AssertionError("unreachable")

    def _mean(self, value: float, weight: float) -> float:
        """A mean over this rank's shard -> the minibatch's (data-parallel); as is otherwise."""
        return value if self.dp is None else self.dp.mean(value, weight)

    @property
    def policy_lr(self) -> float:
        """Learning rate of the policy's parameter group (the first; the critic's may differ)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @policy_lr.setter
    def policy_lr(self, lr: float) -> None:
        self.optimizer.param_groups[0]["lr"] = lr

    def drain_minibatches(self) -> list[dict]:
        """Per-optimizer-step stats since the last call (the driver writes them to minibatches.jsonl)."""
        rows = list(self.minibatch_log)
        self.minibatch_log.clear()
        return rows

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Policy (safetensors + config.yaml) and trainer.pt: optimizer, version, RNG states."""
        from asyncvla.policies.checkpoint import save_policy

        out = save_policy(self.policy, out_dir, extra=extra)
        torch.save({
            "optimizer": self.optimizer.state_dict(), "version": self.policy.version, "num_updates": self.num_updates,
            "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
            "ref_policy": self.ref_policy.state_dict() if self.ref_policy is not None else None,
            "lr_calibrated": self.lr_calibrated,
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
        self.lr_calibrated = bool(st.get("lr_calibrated", False))
        self.rng.bit_generator.state = st["numpy_rng"]
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["python_rng"])
        if self.ref_policy is not None and st.get("ref_policy") is not None:
            self.ref_policy.load_state_dict(st["ref_policy"])
        self.sync_replicas()
        return self.policy.version

    def drain_spans(self) -> list[Span]:
        return self.rec.drain()
