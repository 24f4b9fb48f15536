"""Policy, value, entropy and KL losses as pure functions of tensors.

Each loss returns `(loss, stats)`: a scalar tensor to minimise and a dict of python
floats (computed without grad) for logging. All per-sample tensors are chunk-level `[N]`
(one logprob per decision) and must have exactly the mask's shape; masked entries never
reach the loss, its gradient or the stats, even when they hold NaN or inf.
Aggregation is the masked mean sum(L * mask) / max(sum(mask), 1), so an all-masked batch
gives loss 0 and zero gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from asyncvla.algos._masked import _check_same_shape, _masked_mean, _masked_var, _valid


def _check_clip(clip_eps: float, dual_clip: float | None, clip_high: float | None = None) -> None:
    if not clip_eps > 0:
        raise ValueError(f"clip_eps={clip_eps!r} is invalid: must be > 0")
    if clip_high is not None and not clip_high > 0:
        raise ValueError(f"clip_high={clip_high!r} is invalid: must be > 0 or None")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip={dual_clip!r} is invalid: must be > 1 or None")


def _zeroed(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # torch.where, not x * mask: inf * 0 is NaN, and exp() of a padded logprob can be inf.
    return torch.where(valid, x, torch.zeros_like(x))


def truncated_importance_weight(logp_a: torch.Tensor, logp_b: torch.Tensor, cap: float) -> torch.Tensor:
    """min(pi_a / pi_b, cap), detached (a weight, not a path for gradients).

    logp_a, logp_b: same shape (any). Returns that shape, values in [0, cap].
    """
    _check_same_shape(logp_a=logp_a, logp_b=logp_b)
    if not cap >= 1:
        raise ValueError(f"cap={cap!r} is invalid: must be >= 1")
    return torch.exp((logp_a - logp_b).detach()).clamp(min=0.0, max=cap)


def _clipped_surrogate(ratio, adv, clip_eps, dual_clip, clip_high=None):
    """Per-sample PPO loss max(-A r, -A clip(r, 1 - eps, 1 + eps_high)); dual clip min(., -c A) where A < 0."""
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + (clip_eps if clip_high is None else clip_high))
    per_sample = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip is None:
        return per_sample, is_clipped, torch.zeros_like(is_clipped)
    bound = -dual_clip * adv  # = c * |A| where A < 0; constant, so no gradient through it
    is_dual = (adv < 0) & (per_sample > bound)
    return torch.where(is_dual, bound, per_sample), is_clipped, is_dual


@torch.no_grad()
def _ratio_stats(log_ratio, is_clipped, is_dual, mask) -> dict[str, float]:
    valid = _valid(mask)
    ratio = log_ratio.exp()
    any_valid = bool(valid.any())
    return {
        "clip_frac": float(_masked_mean(is_clipped.to(ratio.dtype), mask)),
        "dual_clip_frac": float(_masked_mean(is_dual.to(ratio.dtype), mask)),
        # k3 estimate of KL(old || new) from samples of old: (r - 1) - log r >= 0.
        "approx_kl": float(_masked_mean(ratio - 1.0 - log_ratio, mask)),
        "ratio_mean": float(_masked_mean(ratio, mask)),
        "ratio_min": float(ratio[valid].min()) if any_valid else 0.0,
        "ratio_max": float(ratio[valid].max()) if any_valid else 0.0,
    }


def ppo_policy_loss(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped PPO surrogate (with optional dual clip), masked mean over samples.

    logprob `[N]` (with grad), old_logprob `[N]` (behaviour/old policy), advantages `[N]`,
    mask `[N]` bool or 0/1. Per sample L = max(-A r, -A clip(r, 1-eps, 1+eps_high)) with
    r = exp(logprob - old_logprob) and eps_high = clip_high (None: eps; DAPO's clip-higher
    uses eps_high > eps); with dual_clip c, L = min(L, -c A) where A < 0.
    old_logprob and advantages are treated as constants (detached).
    Stats: clip_frac, dual_clip_frac, approx_kl, ratio_mean, ratio_min, ratio_max.
    """
    _check_same_shape(logprob=logprob, old_logprob=old_logprob, advantages=advantages, mask=mask)
    _check_clip(clip_eps, dual_clip, clip_high)
    valid = _valid(mask)
    log_ratio = _zeroed(logprob - old_logprob.detach(), valid)  # [N]; masked: ratio 1
    adv = _zeroed(advantages.detach(), valid)  # [N]
    per_sample, is_clipped, is_dual = _clipped_surrogate(log_ratio.exp(), adv, clip_eps, dual_clip, clip_high)
    loss = _masked_mean(per_sample, mask)
    return loss, _ratio_stats(log_ratio.detach(), is_clipped, is_dual, mask)


def decoupled_ppo_loss(
    logprob: torch.Tensor,
    prox_logprob: torch.Tensor,
    behav_logprob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
    is_cap: float = 2.0,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Decoupled PPO (AReaL): clip against the proximal policy, reweight to the behaviour one.

    All `[N]`. Per sample L = w * L_ppo(r) with r = exp(logprob - prox_logprob) clipped as
    in `ppo_policy_loss` and w = min(exp(prox_logprob - behav_logprob), is_cap), detached.
    w is truncated (kept at is_cap), where AReaL drops samples above its cap. With
    prox_logprob == behav_logprob, w == 1 and the result equals `ppo_policy_loss` exactly.
    Stats: those of ppo_policy_loss (ratio vs prox) + is_weight_mean, is_weight_max,
    is_trunc_frac.
    """
    _check_same_shape(
        logprob=logprob, prox_logprob=prox_logprob, behav_logprob=behav_logprob,
        advantages=advantages, mask=mask,
    )
    _check_clip(clip_eps, dual_clip, clip_high)
    valid = _valid(mask)
    prox = prox_logprob.detach()
    log_ratio = _zeroed(logprob - prox, valid)  # [N]
    adv = _zeroed(advantages.detach(), valid)  # [N]
    behav = behav_logprob.detach()
    weight = truncated_importance_weight(_zeroed(prox, valid), _zeroed(behav, valid), is_cap)  # [N]
    per_sample, is_clipped, is_dual = _clipped_surrogate(log_ratio.exp(), adv, clip_eps, dual_clip, clip_high)
    loss = _masked_mean(weight * per_sample, mask)
    stats = _ratio_stats(log_ratio.detach(), is_clipped, is_dual, mask)
    with torch.no_grad():
        stats["is_weight_mean"] = float(_masked_mean(weight, mask))
        stats["is_weight_max"] = float(weight[valid].max()) if bool(valid.any()) else 0.0
        above_cap = _zeroed(prox - behav, valid).exp() > is_cap
        stats["is_trunc_frac"] = float(_masked_mean(above_cap.to(weight.dtype), mask))
    return loss, stats


def _half_squared(err: torch.Tensor, huber_delta: float | None) -> torch.Tensor:
    if huber_delta is None:
        return 0.5 * err.square()
    # Huber = 0.5 e^2 for |e| <= delta, delta (|e| - delta / 2) beyond: same scale as 0.5 e^2.
    return F.huber_loss(err, torch.zeros_like(err), reduction="none", delta=huber_delta)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = None,
    huber_delta: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss, masked mean over samples.

    values `[N]` (with grad), old_values `[N]` (at rollout time), returns `[N]`, mask `[N]`.
    Per sample: max(f(v - R), f(old_v + clip(v - old_v, -c, c) - R)) with f(e) = e^2 / 2
    (or Huber with `huber_delta`); clip=None gives f(v - R) alone.
    Stats: value_clip_frac (clipped branch chosen), explained_var (0 if returns are constant).
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if clip is not None and not clip > 0:
        raise ValueError(f"clip={clip!r} is invalid: must be > 0 or None")
    if huber_delta is not None and not huber_delta > 0:
        raise ValueError(f"huber_delta={huber_delta!r} is invalid: must be > 0 or None")
    valid = _valid(mask)
    returns, old_values = returns.detach(), old_values.detach()
    per_sample = _half_squared(_zeroed(values - returns, valid), huber_delta)  # [N]
    is_clipped = torch.zeros_like(valid)
    if clip is not None:
        v_clipped = old_values + (values - old_values).clamp(-clip, clip)
        per_clipped = _half_squared(_zeroed(v_clipped - returns, valid), huber_delta)  # [N]
        is_clipped = per_clipped > per_sample
        per_sample = torch.maximum(per_sample, per_clipped)
    loss = _masked_mean(per_sample, mask)
    with torch.no_grad():
        var_returns = _masked_var(_zeroed(returns, valid), mask)
        var_err = _masked_var(_zeroed(returns - values, valid), mask)
        explained = 1.0 - var_err / var_returns if var_returns > 0 else torch.zeros(())
        stats = {
            "value_clip_frac": float(_masked_mean(is_clipped.to(per_sample.dtype), mask)),
            "explained_var": float(explained),
        }
    return loss, stats


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss = -masked mean of the per-sample entropy (minimising it raises entropy).

    entropy, mask: `[N]`; a shape mismatch (e.g. `[N]` vs `[N, 1]`) raises ValueError.
    Stats: entropy (the masked mean).
    """
    mean = _masked_mean(entropy, mask)
    return -mean, {"entropy": float(mean.detach())}


_KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # log_r = log(pi_ref / pi) on samples from pi (Schulman's k1, k2, k3).
    "k1": lambda log_r: -log_r,
    "k2": lambda log_r: 0.5 * log_r.square(),
    "k3": lambda log_r: torch.expm1(log_r) - log_r,
}


def kl_estimate(
    logprob: torch.Tensor, ref_logprob: torch.Tensor, mask: torch.Tensor, kind: str = "k3"
) -> torch.Tensor:
    """Masked-mean estimate of KL(pi || pi_ref) from samples of pi; differentiable in logprob.

    logprob, ref_logprob, mask: `[N]`. kind: k1 (unbiased, can be negative), k2 (biased,
    low variance), k3 (unbiased, >= 0). ref_logprob is detached. Returns a scalar tensor.
    """
    if kind not in _KL_ESTIMATORS:
        raise ValueError(f"kind={kind!r} is invalid: allowed: {', '.join(_KL_ESTIMATORS)}")
    _check_same_shape(logprob=logprob, ref_logprob=ref_logprob, mask=mask)
    log_r = _zeroed(ref_logprob.detach() - logprob, _valid(mask))  # [N]
    return _masked_mean(_KL_ESTIMATORS[kind](log_r), mask)
