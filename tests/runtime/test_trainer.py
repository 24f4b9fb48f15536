import dataclasses

import numpy as np
import pytest
import torch

from asyncvla.algos.losses import ppo_policy_loss, value_loss
from asyncvla.config import AlgoConfig, policy_config
from asyncvla.envs.base import Obs
from asyncvla.policies.base import ActOut, ObsBatch, Policy
from asyncvla.runtime.data import Segment, Step, stack_segments
from asyncvla.algos.registry import make_algorithm
from asyncvla.runtime.learner.trainer import Trainer, next_values

A, P, S = 2, 4, 16  # action dim, proprio dim, image size
TINY = policy_config(type="tiny", chunk=2, hidden_dim=32, num_layers=1, image_size=S)


def obs(x: float) -> Obs:
    return Obs(np.full((S, S, 3), int(x * 10) % 255, np.uint8), np.full(P, x, np.float32), "reach the goal")


class ValueIsProprio(Policy):
    """V(obs) = proprio[0]: makes the bootstrap wiring visible."""

    chunk, action_dim = 1, A

    @torch.no_grad()
    def act(self, o: ObsBatch, deterministic: bool = False) -> ActOut:
        n = len(o)
        return ActOut(np.zeros((n, 1, A), np.float32), np.zeros(n, np.float32), o.proprio[:, 0].copy(), self.version)


def seg(env_id, xs, truncate_at=None, final=None, term_at=None, next_x=9.0):
    steps = []
    for t, x in enumerate(xs):
        st = Step(obs(x), np.zeros((1, A), np.float32), 0.0, value=x, version=0, reward=1.0, num_steps=1)
        if t == truncate_at:
            st.truncated, st.final_obs = True, obs(final)
        if t == term_at:
            st.terminated = True
        steps.append(st)
    return Segment(env_id, steps, obs(next_x))


def rollout_advantages(policy, r, algo):
    return make_algorithm(algo).advantages(r, lambda: torch.as_tensor(next_values(policy, r)))


def test_next_values_bootstrap_wiring():
    r = stack_segments([seg(0, [1, 2, 3], truncate_at=1, final=7.0), seg(1, [4, 5, 6], term_at=0, next_x=8.0)])
    nv = next_values(ValueIsProprio(), r)
    assert nv.shape == (3, 2)
    assert nv[0, 0] == 2 and nv[0, 1] == 5  # the next step's value
    assert nv[1, 0] == 7  # truncated: V(final obs), not V(the reset obs that follows)
    assert nv[2, 0] == 9 and nv[2, 1] == 8  # after the last step: V(next_obs)


def test_a_segment_shorter_than_the_batch_bootstraps_from_its_own_next_obs():
    # Env 1's segment was cut after 2 decisions; rows 2.. are padding (value 0, mask False).
    r = stack_segments([seg(0, [1, 2, 3, 4]), seg(1, [5, 6], next_x=8.0)])
    nv = next_values(ValueIsProprio(), r)
    assert nv[1, 1] == 8  # V(next_obs) at its own last valid row, not the padding's 0
    assert nv[3, 0] == 9
    algo = AlgoConfig(gamma=0.5, lam=1.0)
    adv, _, mask = rollout_advantages(ValueIsProprio(), r, algo)
    assert mask[:, 1].tolist() == [True, True, False, False]
    assert adv[1, 1].item() == pytest.approx(1 + 0.5 * 8 - 6)  # reward + gamma * V(next_obs) - V(s)


def test_gae_through_trainer_matches_hand_computation():
    algo = AlgoConfig(gamma=0.5, lam=1.0)
    r = stack_segments([seg(0, [1, 2], truncate_at=0, final=4.0, next_x=3.0)])
    adv, ret, mask = rollout_advantages(ValueIsProprio(), r, algo)
    # t=1: 1 + 0.5*V(next=3) - 2 = 0.5; t=0 truncated: 1 + 0.5*V(final=4) - 1 = 2 (no carry over the cut)
    assert adv[:, 0].tolist() == pytest.approx([2.0, 0.5])
    assert ret[:, 0].tolist() == pytest.approx([3.0, 2.5])
    assert mask.all()


def test_grpo_masks_steps_after_first_done():
    algo = AlgoConfig(name="grpo", group_size=2)
    r = stack_segments([seg(0, [1, 2, 3], term_at=0), seg(1, [1, 2, 3])])
    adv, _, mask = rollout_advantages(ValueIsProprio(), r, algo)
    assert mask[:, 0].tolist() == [True, False, False] and mask[:, 1].all()
    # scores 1 vs 3: group-normalised to -/+ 1/sqrt(2)
    assert adv[0, 0] < 0 < adv[0, 1] and adv[1, 0] == 0


def test_grpo_reward_to_go_credits_each_decision_with_what_followed():
    algo = AlgoConfig(name="grpo", group_size=2, grpo_credit="reward_to_go", reward_scale=0.5)
    r = stack_segments([seg(0, [1, 2, 3], term_at=0), seg(1, [1, 2, 3])])
    adv, _, mask = rollout_advantages(ValueIsProprio(), r, algo)
    assert mask[:, 0].tolist() == [True, False, False] and mask[:, 1].all()
    # reward 1 per step, x 0.5: env 0's reward-to-go is 0.5 (then it ended), env 1's 1.5, 1.0, 0.5;
    # from t = 1 env 1 runs alone, with no baseline to compare against
    assert adv[:, 0].tolist() == [-0.5, 0.0, 0.0] and adv[:, 1].tolist() == [0.5, 0.0, 0.0]


def _fixed_rollout(policy, T=4, B=4, seed=0):
    rng = np.random.default_rng(seed)
    segments = []
    for b in range(B):
        steps = []
        for t in range(T):
            o = obs(float(rng.uniform(-1, 1)))
            out = policy.act(ObsBatch.stack([o]))
            steps.append(Step(o, out.actions[0], float(out.logprob[0]), float(out.value[0]), 0,
                              reward=float(rng.normal()), num_steps=2))
        segments.append(Segment(b, steps, obs(0.0)))
    return stack_segments(segments)


def _loss(trainer, batch):
    with torch.no_grad():
        logprob, _, values = trainer.policy.evaluate(batch.obs, batch.actions)
        mask = torch.ones_like(logprob, dtype=torch.bool)
        pg, _ = ppo_policy_loss(logprob, batch.behav_logprob, batch.advantages, mask, 0.2, 3.0)
        vl, _ = value_loss(values, batch.old_values, batch.returns, mask, None)
    return float(pg + 0.5 * vl)


def test_one_ppo_update_lowers_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    # rl_spread: the whole head trains (a fresh policy's residual logits dominate its logprob).
    trainer = Trainer(dataclasses.replace(TINY, rl_spread=True), AlgoConfig(lr=1e-3, minibatch_size=16, value_clip=None),
                      A, P, seed=0, trace=False)
    batch = trainer.prepare([_fixed_rollout(trainer.policy)])
    before = _loss(trainer, batch)
    stats = trainer.update(batch, epochs=1)
    after = _loss(trainer, batch)
    assert after < before
    assert trainer.version == 1 and stats["train/optimizer_steps"] == 1
    assert {"loss/policy", "loss/value", "loss/entropy", "loss/grad_norm", "loss/clip_frac"} <= stats.keys()


def test_train_records_spans_and_counts_minibatches():
    trainer = Trainer(TINY, AlgoConfig(minibatch_size=6, update_epochs=2), A, P, seed=0)
    stats = trainer.train([_fixed_rollout(trainer.policy)], epochs=2)
    assert stats["train/samples"] == 16 and stats["train/optimizer_steps"] == 2 * 3  # ceil(16 / 6) per epoch
    kinds = [s.kind for s in trainer.drain_spans()]
    assert kinds == ["advantage", "train"]


def test_update_reports_each_minibatch_and_the_first_steps_logprob_change():
    torch.manual_seed(0)
    trainer = Trainer(TINY, AlgoConfig(lr=1e-3, minibatch_size=16, value_clip=None), A, P, seed=0, trace=False)
    batch = trainer.prepare([_fixed_rollout(trainer.policy)])  # 16 samples: one minibatch, one step
    with torch.no_grad():
        before = trainer.policy.evaluate(batch.obs, batch.actions)[0]
    stats = trainer.update(batch, epochs=1)
    with torch.no_grad():
        moved = trainer.policy.evaluate(batch.obs, batch.actions)[0] - before
    assert stats["train/first_step_dlogp"] == pytest.approx(float(moved.mean()), abs=1e-5)
    assert stats["train/first_step_dlogp_abs"] == pytest.approx(float(moved.abs().mean()), abs=1e-5)
    assert stats["train/first_step_dlogp_abs"] > 0
    assert stats["train/first_step_dlogp_token_abs"] == pytest.approx(stats["train/first_step_dlogp_abs"] / (2 * A))
    assert [r["step"] for r in trainer.drain_minibatches()] == [0]

    trainer.algo = AlgoConfig(lr=1e-3, minibatch_size=8, value_clip=None)
    stats = trainer.update(batch, epochs=2)
    rows = trainer.drain_minibatches()
    assert [(r["update"], r["epoch"], r["step"], r["stepped"]) for r in rows] == [(2, 0, 0, True), (2, 0, 1, True), (2, 1, 2, True), (2, 1, 3, True)]
    assert stats["loss/approx_kl_max"] == max(r["approx_kl"] for r in rows)
    assert stats["loss/ratio_min"] == min(r["ratio_min"] for r in rows) and stats["loss/ratio_max"] == max(r["ratio_max"] for r in rows)
    assert "first_step_dlogp" in rows[0] and "first_step_dlogp" not in rows[1]
    assert trainer.drain_minibatches() == []


def test_target_kl_stops_the_update_at_the_first_minibatch_past_it():
    torch.manual_seed(0)
    trainer = Trainer(TINY, AlgoConfig(lr=1e-2, minibatch_size=4, target_kl=1e-6), A, P, seed=0, trace=False)
    stats = trainer.update(trainer.prepare([_fixed_rollout(trainer.policy)]), epochs=4)
    rows = trainer.drain_minibatches()
    # The first minibatch always steps (KL 0); the second sees the moved policy and stops the update.
    assert [r["stepped"] for r in rows] == [True, False] and rows[1]["approx_kl"] > 1e-6
    assert stats["train/optimizer_steps"] == 1 and stats["train/early_stopped"] == 1.0 and trainer.version == 1


def test_step_kl_retakes_an_overshooting_first_step_and_holds_the_target():
    """lr 1e-1 moves a fresh policy far in one Adam step; the controller undoes it and steps smaller."""
    torch.manual_seed(0)
    target = 1e-3
    trainer = Trainer(TINY, AlgoConfig(lr=1e-1, minibatch_size=4, step_kl=target), A, P, seed=0, trace=False)
    batch = trainer.prepare([_fixed_rollout(trainer.policy)])
    stats = trainer.update(batch, epochs=2)
    rows = trainer.drain_minibatches()
    assert stats["train/retakes"] >= 1 and rows[0]["first_step_kl"] <= 4 * target
    assert trainer.version == 8 == stats["train/optimizer_steps"]  # retaken steps are not versions
    assert 1e-1 * 1e-4 <= stats["train/lr"] < 1e-1
    assert max(r["step_kl"] for r in rows) < 10 * target  # no step far outside the trust region
    # The first update's first epoch stays inside an early-stop target it would otherwise blow through.
    torch.manual_seed(0)
    kl_stop = 0.05
    guarded = Trainer(TINY, AlgoConfig(lr=1e-1, minibatch_size=4, step_kl=target, target_kl=kl_stop), A, P, seed=0, trace=False)
    guarded.update(guarded.prepare([_fixed_rollout(guarded.policy)]), epochs=2)
    first_epoch = [r for r in guarded.drain_minibatches() if r["epoch"] == 0]
    assert len(first_epoch) == 4 and all(r["stepped"] and r["approx_kl"] < kl_stop for r in first_epoch)
    # Without the controller the same first step overshoots by orders of magnitude.
    torch.manual_seed(0)
    plain = Trainer(TINY, AlgoConfig(lr=1e-1, minibatch_size=4), A, P, seed=0, trace=False)
    plain.update(plain.prepare([_fixed_rollout(plain.policy)]), epochs=1)
    rows = plain.drain_minibatches()
    assert rows[0]["first_step_kl"] > 100 * target and max(r["approx_kl"] for r in rows) > kl_stop


def test_checkpoint_round_trip_restores_optimizer_and_version(tmp_path):
    a = Trainer(TINY, AlgoConfig(minibatch_size=16), A, P, seed=0, trace=False)
    a.train([_fixed_rollout(a.policy)], epochs=2)
    a.save(tmp_path / "ckpt")
    b = Trainer(TINY, AlgoConfig(minibatch_size=16), A, P, seed=1, trace=False)
    assert b.load(tmp_path / "ckpt") == a.version == 2  # update_epochs=2, one minibatch each
    for k, v in a.policy.state_dict().items():
        assert torch.equal(v, b.policy.state_dict()[k])
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_token_mean_ratio_is_the_geometric_mean_per_action_token():
    # After one step the chunk ratio has moved; token_mean must report the per-token
    # (1/(K*A) in log space) version of the same change, and clip less.
    stats = {}
    for mode in ("chunk", "token_mean"):
        torch.manual_seed(0)
        trainer = Trainer(TINY, AlgoConfig(lr=3e-3, minibatch_size=16, update_epochs=3, ratio=mode), A, P, seed=0, trace=False)
        stats[mode] = trainer.update(trainer.prepare([_fixed_rollout(trainer.policy)]), epochs=3)
    tokens = TINY.chunk * A
    assert stats["chunk"]["loss/approx_kl"] > 0
    # Same first epoch; later epochs diverge, so compare the order of magnitude.
    assert stats["token_mean"]["loss/approx_kl"] < stats["chunk"]["loss/approx_kl"] / (tokens / 2)
    assert stats["token_mean"]["loss/clip_frac"] <= stats["chunk"]["loss/clip_frac"]


def test_critic_warmup_moves_only_the_value_head():
    torch.manual_seed(0)
    trainer = Trainer(TINY, AlgoConfig(lr=1e-3, minibatch_size=16, critic_warmup=1, value_clip=None), A, P, seed=0, trace=False)
    batch = trainer.prepare([_fixed_rollout(trainer.policy)])
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.update(batch, epochs=2)  # warm-up update: value loss only; detach_value keeps the trunk still
    after = trainer.policy.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("value_head") for k in moved)
    trainer.update(batch, epochs=1)  # warm-up over: the actor trains
    assert any(not torch.equal(before[k], trainer.policy.state_dict()[k]) for k in before if k.startswith("action_head"))
    # GRPO has no critic to warm up: its first update trains the actor.
    torch.manual_seed(0)
    grpo = Trainer(TINY, AlgoConfig(name="grpo", group_size=2, lr=1e-3, minibatch_size=16, critic_warmup=1), A, P, seed=0, trace=False)
    start = {k: v.clone() for k, v in grpo.policy.state_dict().items() if k.startswith("action_head")}
    grpo.update(grpo.prepare([_fixed_rollout(grpo.policy)]), epochs=1)
    assert any(not torch.equal(v, grpo.policy.state_dict()[k]) for k, v in start.items())


def test_the_critics_gradient_does_not_scale_the_actors_step():
    """Actor and critic are clipped apart: a value loss a million times larger leaves the actor's update as it was."""
    heads = []
    for value_coef in (0.5, 5e5):
        torch.manual_seed(0)
        trainer = Trainer(TINY, AlgoConfig(lr=1e-3, minibatch_size=16, value_coef=value_coef), A, P, seed=0, trace=False)
        stats = trainer.update(trainer.prepare([_fixed_rollout(trainer.policy)]), epochs=1)
        assert stats["loss/grad_norm_critic"] > 0
        heads.append({k: v.clone() for k, v in trainer.policy.state_dict().items() if not k.startswith("value_")})
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_a_critic_warmup_leaves_the_actor_without_optimizer_state():
    """Warm-up steps give the actor no gradient (not a zero one), so Adam's bias correction starts at its first real step."""
    torch.manual_seed(0)
    trainer = Trainer(TINY, AlgoConfig(lr=1e-3, minibatch_size=16, critic_warmup=1), A, P, seed=0, trace=False)
    batch = trainer.prepare([_fixed_rollout(trainer.policy)])
    trainer.update(batch, epochs=2)
    state = trainer.optimizer.state
    assert all(p not in state for p in trainer.actor_params) and all(p in state for p in trainer.critic_params)
    trainer.update(batch, epochs=1)
    assert all(int(state[p]["step"]) == int(state[trainer.actor_params[0]]["step"]) for p in trainer.actor_params if p in state)
    assert int(state[trainer.critic_params[0]]["step"]) > int(state[trainer.actor_params[0]]["step"])


def test_value_gradient_reaches_the_trunk_only_without_detach():
    for detach in (True, False):
        torch.manual_seed(0)
        policy = Trainer(dataclasses.replace(TINY, detach_value=detach), AlgoConfig(), A, P, seed=0, trace=False).policy
        o = ObsBatch.stack([obs(0.3), obs(-0.2)])
        _, _, value = policy.evaluate(o, torch.zeros(2, TINY.chunk, A))
        value.sum().backward()
        trunk_grad = sum(float(p.grad.abs().sum()) for n, p in policy.named_parameters() if n.startswith("trunk") and p.grad is not None)
        assert (trunk_grad == 0) == detach


@pytest.mark.parametrize("ptype", ["tiny", "tiny-gaussian"])
def test_rl_keeps_the_sft_spread_unless_rl_spread(ptype):
    for rl_spread in (False, True):
        torch.manual_seed(0)
        cfg = policy_config(ptype, chunk=2, hidden_dim=32, num_layers=1, image_size=S, rl_spread=rl_spread)
        trainer = Trainer(cfg, AlgoConfig(lr=1e-2, minibatch_size=16), A, P, seed=0, trace=False)
        before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        trainer.update(trainer.prepare([_fixed_rollout(trainer.policy)]), epochs=1)
        after = trainer.policy.state_dict()
        if ptype == "tiny":  # rows 1: of the head are each token's log std and residual logits
            spread_moved = not torch.equal(before["action_head.weight"][1:], after["action_head.weight"][1:])
            mean_moved = not torch.equal(before["action_head.weight"][0], after["action_head.weight"][0])
        else:
            spread_moved = not torch.equal(before["log_std"], after["log_std"])
            mean_moved = not torch.equal(before["mean_head.weight"], after["mean_head.weight"])
        assert mean_moved and spread_moved == rl_spread


def test_the_critics_time_input_trains_at_the_value_lr():
    import dataclasses

    trainer = Trainer(dataclasses.replace(TINY, value_time=True), AlgoConfig(lr=1e-4, value_lr=1e-2), A, P, seed=0, trace=False)
    critic = trainer.optimizer.param_groups[1]
    names = {id(p): n for n, p in trainer.policy.named_parameters()}
    assert critic["lr"] == 1e-2 and {names[id(p)].split(".")[0] for p in critic["params"]} == {"value_head", "value_time"}


def test_a_non_finite_loss_is_never_applied_and_enough_in_a_row_stop_training():
    from asyncvla.runtime.learner.trainer import NonFiniteUpdates

    torch.manual_seed(0)
    trainer = Trainer(TINY, AlgoConfig(lr=1e-3, minibatch_size=8, max_skipped_updates=2), A, P, seed=0, trace=False)
    good = trainer.prepare([_fixed_rollout(trainer.policy)])
    bad = dataclasses.replace(good, advantages=good.advantages.clone())
    bad.advantages[0] = float("nan")  # poisons the one minibatch holding sample 0, every epoch
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    stats = trainer.update(bad, epochs=1)
    n_mb = -(-len(bad) // 8)
    assert stats["train/skipped_steps"] == 1 and stats["train/optimizer_steps"] == n_mb - 1
    assert stats["train/skipped_updates"] == 0 and trainer.version == n_mb - 1
    assert all(torch.isfinite(v).all() for v in trainer.policy.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())  # the others stepped
    # Every step non-finite: the update is skipped whole; the second in a row stops training.
    nan_all = dataclasses.replace(good, advantages=torch.full_like(good.advantages, float("nan")))
    weights = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    assert trainer.update(nan_all, epochs=1)["train/skipped_updates"] == 1
    trainer.update(good, epochs=1)  # a good update resets the count
    with pytest.raises(NonFiniteUpdates, match=r"2 updates in a row .* \(algo.max_skipped_updates=2\)"):
        trainer.update(nan_all, epochs=1)
        trainer.update(nan_all, epochs=1)
    assert trainer.skipped_in_a_row == 2 and all(torch.isfinite(v).all() for v in trainer.policy.state_dict().values())
    assert not all(torch.equal(weights[k], v) for k, v in trainer.policy.state_dict().items())  # the good update stepped
