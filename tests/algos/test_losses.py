"""Losses against slow per-sample reference loops, hand values and gradient checks (float64)."""

import math

import pytest
import torch

from asyncvla.algos import (
    decoupled_ppo_loss,
    entropy_bonus,
    kl_estimate,
    ppo_policy_loss,
    truncated_importance_weight,
    value_loss,
)

F64 = torch.float64


def _samples(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    logprob = torch.randn(n, generator=g, dtype=F64) * 0.5 - 2.0
    old = logprob + torch.randn(n, generator=g, dtype=F64)  # ratios well outside 1 +- eps, some > 3
    behav = old + torch.randn(n, generator=g, dtype=F64) * 0.6
    adv = torch.randn(n, generator=g, dtype=F64)
    mask = torch.rand(n, generator=g) < 0.75
    return logprob.requires_grad_(True), old, behav, adv, mask


def _ppo_reference(logprob, old, adv, mask, eps, dual, prox=None, behav=None, cap=None):
    logprob = logprob.detach()
    total, count = 0.0, 0
    for i in range(len(mask)):
        if not mask[i]:
            continue
        ratio = math.exp(float(logprob[i]) - float(old[i]))
        a = float(adv[i])
        loss = max(-a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps))
        if dual is not None and a < 0:
            loss = min(loss, -dual * a)
        if behav is not None:
            loss *= min(math.exp(float(prox[i]) - float(behav[i])), cap)
        total, count = total + loss, count + 1
    return total / max(count, 1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dual", [None, 3.0, 1.5])
def test_ppo_matches_reference_loop(seed, dual):
    logprob, old, _, adv, mask = _samples(seed)
    loss, stats = ppo_policy_loss(logprob, old, adv, mask, clip_eps=0.2, dual_clip=dual)
    assert loss.item() == pytest.approx(_ppo_reference(logprob, old, adv, mask, 0.2, dual), abs=1e-9)
    r, a = (logprob - old)[mask].detach().exp(), adv[mask]
    clipped = -a * r.clamp(0.8, 1.2) > -a * r
    assert stats["clip_frac"] == pytest.approx(clipped.double().mean().item())
    assert 0 < stats["clip_frac"] < 1
    dual_on = (a < 0) & (torch.maximum(-a * r, -a * r.clamp(0.8, 1.2)) > -(dual or math.inf) * a)
    assert stats["dual_clip_frac"] == pytest.approx(dual_on.double().mean().item())
    assert (stats["dual_clip_frac"] > 0) == (dual is not None)
    assert stats["ratio_mean"] == pytest.approx(r.mean().item())
    assert stats["ratio_max"] == pytest.approx(r.max().item())
    assert stats["approx_kl"] == pytest.approx((r - 1 - r.log()).mean().item())


def _one(lp_minus_old: float, adv: float, dual=3.0, eps=0.2):
    logprob = torch.tensor([lp_minus_old], dtype=F64, requires_grad=True)
    loss, stats = ppo_policy_loss(
        logprob, torch.zeros(1, dtype=F64), torch.tensor([adv], dtype=F64),
        torch.ones(1, dtype=torch.bool), clip_eps=eps, dual_clip=dual,
    )
    loss.backward()
    return loss.item(), logprob.grad.item(), stats


def test_ppo_dual_clip_hand_values():
    # A = -1, r = 5: max(5, 1.2) = 5 > c|A| = 3 -> dual clip active, no gradient.
    loss, grad, stats = _one(math.log(5.0), -1.0)
    assert loss == pytest.approx(3.0) and grad == 0.0 and stats["dual_clip_frac"] == 1.0
    assert _one(math.log(5.0), -1.0, dual=None)[0] == pytest.approx(5.0)
    # A = -1, r = 2: max(2, 1.2) = 2 < 3 -> inactive; unclipped, gradient -A r = 2.
    loss, grad, stats = _one(math.log(2.0), -1.0)
    assert (loss, grad) == (pytest.approx(2.0), pytest.approx(2.0))
    assert stats["dual_clip_frac"] == 0.0 and stats["clip_frac"] == 0.0
    # A = +1, r = 5: max(-5, -1.2) = -1.2, clipped (no gradient); dual clip never applies to A > 0.
    loss, grad, stats = _one(math.log(5.0), 1.0)
    assert (loss, grad) == (pytest.approx(-1.2), 0.0)
    assert stats["clip_frac"] == 1.0 and stats["dual_clip_frac"] == 0.0
    # A = +1, r = 0.5: max(-0.5, -0.8) = -0.5, not clipped, gradient -A r = -0.5.
    loss, grad, stats = _one(math.log(0.5), 1.0)
    assert (loss, grad) == (pytest.approx(-0.5), pytest.approx(-0.5)) and stats["clip_frac"] == 0.0
    # A = -1, r = 0.5: max(0.5, 0.8) = 0.8, clipped at 1 - eps.
    loss, grad, stats = _one(math.log(0.5), -1.0)
    assert (loss, grad) == (pytest.approx(0.8), 0.0) and stats["clip_frac"] == 1.0


def test_ppo_clip_high_widens_only_the_upper_bound():
    """DAPO's clip-higher: a positive advantage may push the ratio to 1 + clip_high, not 1 + eps."""
    lp, old, adv, mask = (torch.tensor([math.log(1.25)], requires_grad=True), torch.zeros(1), torch.ones(1),
                          torch.ones(1, dtype=torch.bool))
    loss, stats = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2, clip_high=0.28)
    loss.backward()
    assert loss.item() == pytest.approx(-1.25) and lp.grad.item() == pytest.approx(-1.25) and stats["clip_frac"] == 0.0
    assert ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2)[0].item() == pytest.approx(-1.2)
    # The lower bound stays 1 - clip_eps: A < 0, r = 0.5 is clipped at 0.8 either way.
    low = ppo_policy_loss(torch.tensor([math.log(0.5)]), old, -adv, mask, clip_eps=0.2, clip_high=0.28)
    assert low[0].item() == pytest.approx(0.8) and low[1]["clip_frac"] == 1.0 and low[1]["ratio_min"] == pytest.approx(0.5)


def test_ppo_all_masked_is_zero_without_nan_even_with_garbage():
    logprob = torch.tensor([math.nan, 50.0, -math.inf], dtype=F64, requires_grad=True)
    old = torch.tensor([0.0, -50.0, math.nan], dtype=F64)
    adv = torch.tensor([math.inf, 1.0, math.nan], dtype=F64)
    mask = torch.zeros(3, dtype=torch.bool)
    loss, stats = ppo_policy_loss(logprob, old, adv, mask, clip_eps=0.2, dual_clip=3.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logprob.grad, torch.zeros(3, dtype=F64))
    assert all(math.isfinite(v) for v in stats.values())


def test_ppo_gradient_is_zero_on_masked_and_matches_reference():
    logprob, old, _, adv, mask = _samples(5)
    mask[0], mask[1] = False, False
    with torch.no_grad():
        logprob[1] = math.inf  # a padded slot with garbage must not poison the gradient
    loss, _ = ppo_policy_loss(logprob, old, adv, mask, clip_eps=0.2, dual_clip=3.0)
    loss.backward()
    assert torch.isfinite(logprob.grad).all()
    assert torch.equal(logprob.grad[~mask], torch.zeros(int((~mask).sum()), dtype=F64))
    # d/dlogprob of the unclipped branch is -A r / n_valid; the clipped branches give 0.
    r = (logprob - old).detach().exp()
    unclipped = (-adv * r >= -adv * r.clamp(0.8, 1.2)) & (-adv * r <= 3.0 * adv.abs())
    expected = torch.where(mask & unclipped, -adv * r, torch.zeros_like(r)) / mask.sum()
    torch.testing.assert_close(logprob.grad, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dual", [None, 3.0])
def test_decoupled_equals_ppo_when_prox_is_behaviour(dual):
    logprob, old, _, adv, mask = _samples(11)
    ppo_loss, ppo_stats = ppo_policy_loss(logprob, old, adv, mask, 0.2, dual)
    (ppo_grad,) = torch.autograd.grad(ppo_loss, logprob)
    dec_loss, dec_stats = decoupled_ppo_loss(logprob, old, old.clone(), adv, mask, 0.2, dual, is_cap=2.0)
    (dec_grad,) = torch.autograd.grad(dec_loss, logprob)
    assert torch.equal(dec_loss, ppo_loss) and torch.equal(dec_grad, ppo_grad)
    assert {k: dec_stats[k] for k in ppo_stats} == ppo_stats
    assert dec_stats["is_weight_mean"] == 1.0 and dec_stats["is_trunc_frac"] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_decoupled_matches_reference_loop(seed):
    logprob, prox, behav, adv, mask = _samples(seed)
    loss, stats = decoupled_ppo_loss(logprob, prox, behav, adv, mask, 0.2, 3.0, is_cap=2.0)
    expected = _ppo_reference(logprob, prox, adv, mask, 0.2, 3.0, prox=prox, behav=behav, cap=2.0)
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    w = (prox - behav)[mask].exp()
    assert stats["is_trunc_frac"] == pytest.approx((w > 2.0).double().mean().item())
    assert 0 < stats["is_trunc_frac"] < 1
    assert stats["is_weight_max"] == 2.0
    assert stats["is_weight_mean"] == pytest.approx(w.clamp(max=2.0).mean().item())


def test_decoupled_is_cap_truncates_and_weight_is_detached():
    logprob = torch.zeros(2, dtype=F64, requires_grad=True)
    prox = torch.zeros(2, dtype=F64, requires_grad=True)
    behav = torch.tensor([-math.log(5.0), -math.log(1.5)], dtype=F64)  # w = 5 -> 2, and 1.5
    adv = torch.tensor([1.0, 1.0], dtype=F64)
    loss, stats = decoupled_ppo_loss(logprob, prox, behav, adv, torch.ones(2, dtype=torch.bool), 0.2, is_cap=2.0)
    assert loss.item() == pytest.approx((-2.0 - 1.5) / 2)  # r = 1: L = -A w
    assert stats["is_trunc_frac"] == 0.5 and stats["is_weight_max"] == 2.0
    loss.backward()
    torch.testing.assert_close(logprob.grad, torch.tensor([-1.0, -0.75], dtype=F64))
    assert prox.grad is None  # neither the ratio's denominator nor the weight carry gradient


def test_truncated_importance_weight():
    logp_a = torch.tensor([0.0, math.log(3.0), -50.0, 800.0], requires_grad=True)
    w = truncated_importance_weight(logp_a, torch.zeros(4, requires_grad=True), cap=2.0)
    torch.testing.assert_close(w, torch.tensor([1.0, 2.0, math.exp(-50.0), 2.0]))
    assert not w.requires_grad and (w >= 0).all()
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weight(torch.zeros(2), torch.zeros(2), cap=0.5)


def _value_reference(values, old, returns, mask, clip, huber):
    def f(e):
        if huber is None or abs(e) <= huber:
            return 0.5 * e * e
        return huber * (abs(e) - 0.5 * huber)

    total, count = 0.0, 0
    for i in range(len(mask)):
        if mask[i]:
            v, o, r = float(values[i].detach()), float(old[i]), float(returns[i])
            loss = f(v - r)
            if clip is not None:
                loss = max(loss, f(o + min(max(v - o, -clip), clip) - r))
            total, count = total + loss, count + 1
    return total / max(count, 1)


@pytest.mark.parametrize("clip", [None, 0.2])
@pytest.mark.parametrize("huber", [None, 0.5])
def test_value_loss_matches_reference_loop(clip, huber):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(50, generator=g, dtype=F64).requires_grad_(True)
    old = values.detach() + 0.5 * torch.randn(50, generator=g, dtype=F64)
    returns = torch.randn(50, generator=g, dtype=F64)
    mask = torch.rand(50, generator=g) < 0.7
    loss, stats = value_loss(values, old, returns, mask, clip=clip, huber_delta=huber)
    assert loss.item() == pytest.approx(_value_reference(values, old, returns, mask, clip, huber), abs=1e-9)
    assert (stats["value_clip_frac"] > 0) == (clip is not None)
    loss.backward()
    assert torch.equal(values.grad[~mask], torch.zeros(int((~mask).sum()), dtype=F64))


def test_value_loss_hand_values():
    ones = torch.ones(1, dtype=torch.bool)
    v, old, ret = (torch.tensor([x], dtype=F64) for x in (1.0, 0.0, 1.0))
    # Unclipped error 0, clipped value 0.2 -> error -0.8 -> 0.32 (pessimistic max).
    assert value_loss(v, old, ret, ones, clip=0.2)[0].item() == pytest.approx(0.32)
    assert value_loss(v, old, ret, ones, clip=None)[0].item() == 0.0
    three = torch.tensor([3.0], dtype=F64)
    assert value_loss(three, old, torch.zeros(1, dtype=F64), ones)[0].item() == pytest.approx(4.5)
    assert value_loss(three, old, torch.zeros(1, dtype=F64), ones, huber_delta=1.0)[0].item() == pytest.approx(2.5)


def test_value_loss_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    mask = torch.ones(4, dtype=torch.bool)
    assert value_loss(returns.clone(), returns, returns, mask)[1]["explained_var"] == 1.0
    assert value_loss(torch.zeros(4, dtype=F64), returns, returns, mask)[1]["explained_var"] == 0.0
    _, stats = value_loss(torch.zeros(4, dtype=F64), returns, torch.ones(4, dtype=F64), mask)
    assert stats["explained_var"] == 0.0  # constant returns: undefined, reported as 0 (no NaN)


def test_entropy_bonus_and_shape_check():
    entropy = torch.tensor([1.0, 2.0, 100.0], dtype=F64, requires_grad=True)
    mask = torch.tensor([True, True, False])
    loss, stats = entropy_bonus(entropy, mask)
    assert loss.item() == -1.5 and stats["entropy"] == 1.5
    loss.backward()
    torch.testing.assert_close(entropy.grad, torch.tensor([-0.5, -0.5, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="shape mismatch"):
        entropy_bonus(entropy, mask[:, None])  # RLinf's [N] x [N, 1] -> [N, N] bug
    assert entropy_bonus(entropy, torch.zeros(3, dtype=torch.bool))[0].item() == 0.0


def _n_and_n1():
    n, n1 = torch.zeros(4, dtype=F64), torch.zeros(4, 1, dtype=F64)
    mask = torch.ones(4, dtype=torch.bool)
    return n, n1, mask


@pytest.mark.parametrize(
    "call",
    [
        lambda n, n1, m: ppo_policy_loss(n, n, n1, m, 0.2),
        lambda n, n1, m: ppo_policy_loss(n, n, n, m[:, None], 0.2),
        lambda n, n1, m: decoupled_ppo_loss(n, n, n1, n, m, 0.2),
        lambda n, n1, m: value_loss(n, n, n1, m),
        lambda n, n1, m: entropy_bonus(n1, m),
        lambda n, n1, m: kl_estimate(n, n1, m),
    ],
)
def test_every_loss_rejects_broadcasting_shapes(call):
    with pytest.raises(ValueError, match="shape mismatch"):
        call(*_n_and_n1())


def test_bad_hyperparameters_raise():
    n, _, m = _n_and_n1()
    with pytest.raises(ValueError, match="clip_eps"):
        ppo_policy_loss(n, n, n, m, clip_eps=0.0)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_policy_loss(n, n, n, m, clip_eps=0.2, dual_clip=1.0)
    with pytest.raises(ValueError, match="clip"):
        value_loss(n, n, n, m, clip=-1.0)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(n, n, m, kind="k4")


def test_kl_estimators_hand_values():
    logprob = torch.tensor([0.0, -1.0, 5.0], dtype=F64)
    ref = torch.tensor([-1.0, -1.0, math.nan], dtype=F64)
    mask = torch.tensor([True, True, False])
    log_r = -1.0  # ref - logprob on the first sample; 0 on the second
    assert kl_estimate(logprob, ref, mask, "k1").item() == pytest.approx(-log_r / 2)
    assert kl_estimate(logprob, ref, mask, "k2").item() == pytest.approx(0.5 * log_r**2 / 2)
    assert kl_estimate(logprob, ref, mask, "k3").item() == pytest.approx((math.exp(log_r) - 1 - log_r) / 2)


def test_kl_estimators_match_exact_kl_on_samples():
    g = torch.Generator().manual_seed(0)
    pi = torch.log_softmax(torch.randn(5, generator=g, dtype=F64), dim=0)
    ref = torch.log_softmax(torch.randn(5, generator=g, dtype=F64), dim=0)
    exact = (pi.exp() * (pi - ref)).sum().item()  # KL(pi || ref)
    actions = torch.multinomial(pi.exp(), 200_000, replacement=True, generator=g)
    mask = torch.ones(len(actions), dtype=torch.bool)
    for kind in ("k1", "k3"):  # unbiased estimators
        estimate = kl_estimate(pi[actions], ref[actions], mask, kind).item()
        assert estimate == pytest.approx(exact, rel=0.03), kind


def test_kl_gradient_flows_to_logprob_only():
    logprob = torch.tensor([-1.0, -2.0], dtype=F64, requires_grad=True)
    ref = torch.tensor([-1.5, -1.0], dtype=F64, requires_grad=True)
    kl_estimate(logprob, ref, torch.tensor([True, False]), "k3").backward()
    # d/dlp [exp(ref - lp) - 1 - (ref - lp)] = 1 - exp(ref - lp); one valid sample.
    torch.testing.assert_close(logprob.grad, torch.tensor([1 - math.exp(-0.5), 0.0], dtype=F64))
    assert ref.grad is None


def test_step_kl_is_k3_per_token_and_next_lr_aims_at_the_target():
    from asyncvla.algos.step_size import next_lr, step_kl

    before, after = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    log_r = after - before
    assert step_kl(before, after, tokens=4) == pytest.approx(float((log_r.exp() - 1 - log_r).mean()) / 4)
    assert step_kl(before, before, tokens=4) == 0.0
    # KL ~ lr^2 for small steps: a step 4x over the target halves the lr; far under, at most doubles it.
    assert next_lr(1e-3, kl=0.04, target=0.01, lr_max=1.0, lr_min=1e-9) == pytest.approx(5e-4)
    assert next_lr(1e-3, kl=0.0, target=0.01, lr_max=1.0, lr_min=1e-9) == pytest.approx(2e-3)
    assert next_lr(1e-3, kl=0.0, target=0.01, lr_max=1.5e-3, lr_min=1e-9) == 1.5e-3
    assert next_lr(1e-3, kl=1e6, target=0.01, lr_max=1.0, lr_min=1e-6) == 1e-6
    with pytest.raises(ValueError, match="target"):
        next_lr(1e-3, kl=0.1, target=0.0, lr_max=1.0, lr_min=1e-6)
