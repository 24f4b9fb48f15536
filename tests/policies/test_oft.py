"""The `oft` VLA (SigLIP + Llama from transformers configs): shapes, logprobs, determinism, checkpoints,
two cameras, LoRA, local pretrained weights, bf16, gradient checkpointing, the attention mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from asyncvla.config import ConfigError, policy_config
from asyncvla.policies.base import ObsBatch
from asyncvla.policies.checkpoint import load_policy, save_policy
from asyncvla.policies.hf import LANGUAGE_DIR, VISION_DIR, ByteTokenizer, prefix_mask
from asyncvla.policies.registry import make_policy, policy_types
from asyncvla.policies.tokens import discrete_logprob_entropy

A, P, K, S = 3, 5, 2, 32


def _cfg(**kw):
    base = dict(chunk=K, image_size=S, hidden_dim=32, num_heads=2, num_kv_heads=1, vision_dim=32, vision_layers=1,
                num_layers=2, patch_size=16, max_text_tokens=12, action_bins=16)
    return policy_config("oft", **{**base, **kw})


def _policy(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return make_policy(_cfg(**kw), action_dim=A, proprio_dim=P)


def _obs(b: int = 4, seed: int = 0, wrist: bool = False) -> ObsBatch:
    rng = np.random.default_rng(seed)
    img = lambda: rng.integers(0, 256, (b, S, S, 3), dtype=np.uint8)  # noqa: E731
    return ObsBatch(img(), rng.normal(size=(b, P)).astype(np.float32), ["reach the goal", "push the puck to the goal"] * (b // 2)
                    + ["reach"] * (b % 2), np.arange(b) + 100 * seed, extra_images={"wrist": img()} if wrist else {})


def test_registered_and_shapes():
    assert "oft" in policy_types()
    p = _policy()
    out = p.act(_obs(5))
    assert out.actions.shape == (5, K, A) and out.actions.dtype == np.float32
    assert out.logprob.shape == (5,) and out.value.shape == (5,)
    assert np.all(np.abs(out.actions) <= 1)
    logits, value = p.logits(_obs(5))
    assert logits.shape == (5, K, A, 16) and value.shape == (5,)


def test_evaluate_scores_the_sampled_chunk_as_act_did():
    p = _policy()
    obs = _obs(6)
    out = p.act(obs)
    lp, ent, v = p.evaluate(obs, torch.as_tensor(out.actions))
    np.testing.assert_allclose(lp.detach().numpy(), out.logprob, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(v.detach().numpy(), out.value, rtol=1e-5, atol=1e-5)
    # the chunk logprob is the sum of K*A token logprobs of the action-token rows of the LM head
    logits, _ = p.logits(obs)
    bins = torch.as_tensor(((out.actions + 1) / 2 * 16).astype(np.int64).clip(0, 15))
    lp2, ent2 = discrete_logprob_entropy(logits, bins)
    torch.testing.assert_close(lp, lp2)
    torch.testing.assert_close(ent, ent2)
    assert torch.all(ent > 0)


def test_a_sample_does_not_depend_on_its_batch():
    p = _policy()
    obs = _obs(4)
    whole = p.act(obs)
    alone = p.act(obs.slice(2, 3))
    np.testing.assert_array_equal(whole.actions[2:3], alone.actions)
    np.testing.assert_allclose(whole.logprob[2:3], alone.logprob, rtol=1e-5)


def test_same_seed_same_policy_other_seed_other_policy():
    a, b, c = _policy(0), _policy(0), _policy(1)
    obs = _obs(3)
    np.testing.assert_array_equal(a.act(obs).actions, b.act(obs).actions)
    assert not np.allclose(a.act(obs).logprob, c.act(obs).logprob)


def test_gradients_reach_every_trainable_part():
    p = _policy()
    obs = _obs(4)
    lp, _, v = p.evaluate(obs, torch.zeros(4, K, A))
    (lp.sum() + v.sum()).backward()
    # The value head reads the prompt through a stop-gradient (detach_value): it reaches the head only.
    no_grad = [n for n, q in p.named_parameters() if q.requires_grad and (q.grad is None or not q.grad.abs().sum() > 0)]
    # (Embedding rows of tokens not in the batch and the LM head's text rows get none, inside matrices that do.)
    assert no_grad == [], no_grad


def test_checkpoint_round_trip_is_exact(tmp_path):
    p = _policy()
    p.processor.fit(np.random.default_rng(0).normal(size=(50, P)), np.random.default_rng(1).uniform(-1, 1, (50, A)))
    p.version = 7
    save_policy(p, tmp_path / "ck")
    q = load_policy(tmp_path / "ck")
    assert q.version == 7 and q.cfg == p.cfg
    for (n, x), (_, y) in zip(p.state_dict().items(), q.state_dict().items()):
        assert torch.equal(x, y), n
    obs = _obs(3)
    np.testing.assert_array_equal(p.act(obs).actions, q.act(obs).actions)


def test_two_cameras_feed_the_decoder():
    p = _policy(cameras=("main", "wrist"))
    obs = _obs(3, wrist=True)
    acts = torch.as_tensor(p.act(obs, deterministic=True).actions)
    other = dataclasses.replace(obs, extra_images={"wrist": _obs(3, seed=5).images})
    assert not torch.allclose(p.evaluate(obs, acts)[0], p.evaluate(other, acts)[0])
    with pytest.raises(KeyError, match="wrist"):
        p.act(_obs(3))


def test_lora_trains_adapters_only_and_publishes_only_what_trains():
    p = _policy(lora_rank=4)
    frozen = {n: q.detach().clone() for n, q in p.named_parameters() if not q.requires_grad}
    trainable = {n for n, q in p.named_parameters() if q.requires_grad}
    assert frozen and any("lora_" in n for n in trainable)
    assert not any(n.startswith("vision.") for n in trainable)  # the vision tower is frozen too
    assert all("lora_" in n for n in trainable if n.startswith("language_model."))
    opt = torch.optim.Adam([q for q in p.parameters() if q.requires_grad], lr=1e-2)
    obs = _obs(4)
    for _ in range(2):
        lp, _, _ = p.evaluate(obs, torch.zeros(4, K, A))
        opt.zero_grad()
        (-lp.mean()).backward()
        opt.step()
    for n, q in p.named_parameters():
        if n in frozen:
            assert torch.equal(q, frozen[n]), n
    assert set(p.published_state()) == trainable
    # A copy built the same way takes the published adapters and then acts like the trained policy.
    copy = _policy(lora_rank=4)
    copy.load_published(p.published_state())
    np.testing.assert_array_equal(copy.act(obs).actions, p.act(obs).actions)
    with pytest.raises(ValueError, match="do not fit"):
        _policy().load_published(p.published_state())


def _save_pretrained(root, seed=3):
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64,
                                         image_size=S, patch_size=16)).save_pretrained(str(root / VISION_DIR))
    LlamaForCausalLM(LlamaConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                 intermediate_size=64, vocab_size=ByteTokenizer.vocab_size + 16)).save_pretrained(str(root / LANGUAGE_DIR))
    from safetensors.torch import load_file

    return load_file(str(root / VISION_DIR / "model.safetensors")), load_file(str(root / LANGUAGE_DIR / "model.safetensors"))


def test_pretrained_path_loads_local_weights_bit_exact_and_checkpoints_without_it(tmp_path):
    vision, lm = _save_pretrained(tmp_path / "hf")
    p = _policy(pretrained_path=str(tmp_path / "hf"))
    assert p.language_model.config.hidden_size == 48  # the directory's architecture, not the config's sizes
    for k, v in vision.items():
        assert torch.equal(p.vision.state_dict()[k], v), k
    lm_state = p.language_model.state_dict()
    for k, v in lm.items():
        assert torch.equal(lm_state[k], v), k
    save_policy(p, tmp_path / "ck")
    import shutil

    shutil.rmtree(tmp_path / "hf")  # the checkpoint must not need the original directory
    q = load_policy(tmp_path / "ck")
    obs = _obs(2)
    np.testing.assert_array_equal(q.act(obs, deterministic=True).actions, p.act(obs, deterministic=True).actions)


def test_pretrained_path_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="policy.pretrained_path.*needs vision_model/config.json") as e:
        _cfg(pretrained_path=str(tmp_path))
    assert "\n" not in str(e.value)


def test_bf16_acts_with_finite_fp32_logprobs():
    p = _policy(dtype="bf16")
    assert p.language_model.dtype == torch.bfloat16 and p.value_head[0].weight.dtype == torch.float32
    out = p.act(_obs(3))
    assert out.logprob.dtype == np.float32 and np.all(np.isfinite(out.logprob))


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        p = _policy(gradient_checkpointing=ckpt)
        assert p.language_model.is_activation_checkpointing == ckpt
        p.train()
        lp, _, _ = p.evaluate(_obs(3), torch.zeros(3, K, A))
        lp.sum().backward()
        grads.append({n: q.grad.clone() for n, q in p.named_parameters() if q.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


def test_prefix_mask_is_causal_over_the_prompt_and_full_over_the_actions():
    valid = torch.tensor([[True, True, False]])
    m = prefix_mask(valid, 2)[0, 0]
    expect = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # a padding query sees itself (no empty softmax row); nobody else sees it
        [1, 1, 0, 1, 1],
        [1, 1, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(m, expect)


def test_byte_tokenizer_pads_and_cuts_to_a_fixed_length():
    ids, valid = ByteTokenizer()(["ab", "abcdef"], 4)
    assert ids.tolist() == [[1, 2 + ord("a"), 2 + ord("b"), 0], [1, 2 + ord("a"), 2 + ord("b"), 2 + ord("c")]]
    assert valid.tolist() == [[True, True, True, False], [True] * 4]


@pytest.mark.parametrize("field, value, msg", [("patch_size", 5, "divide policy.image_size"), ("num_kv_heads", 3, "divide"),
                                               ("lora_rank", -1, ">= 0"), ("dtype", "fp8", "allowed: fp32, bf16")])
def test_bad_fields_are_one_line_config_errors(field, value, msg):
    with pytest.raises(ConfigError, match=f"policy.{field}") as e:
        _cfg(**{field: value})
    assert msg in str(e.value) and "\n" not in str(e.value)
