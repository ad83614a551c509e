"""Post-training: the loss pieces against hand-computed values, and each algorithm on a micro task.

Micro task: prompts ``"pick <word>:\\n\\n"``; reward 1 when the completion starts with ``"a"``. The
micro base (a 2-layer, hidden-32 Llama with the organisms' character tokenizer) is first fine-tuned
to answer "a", "b" or "c" with "a" a quarter of the time, so every algorithm has room to move.
"""

from __future__ import annotations

import copy
import json
import math
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers.organisms.posttrain import (
    PostTrainConfig,
    TrainLog,
    dpo,
    expert_iteration,
    grpo,
    make_preference_pairs,
    ppo,
    preference_margin,
    sft,
)
from helpers.organisms.posttrain.expert_iteration import filter_correct, prompt_stream, split_steps
from helpers.organisms.posttrain.grpo import aggregate
from helpers.organisms.posttrain.losses import (
    clipped_surrogate,
    clipped_value_loss,
    exact_kl,
    gae,
    group_advantages,
    kl_estimate,
)
from helpers.organisms.posttrain.ppo import logprobs_and_values
from helpers.organisms.posttrain.rollout import sample, token_logprobs
from helpers.organisms.tokenizer import build_tokenizer
from helpers.tiny_models import tiny_model

WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "box", "hat", "jam", "kit", "log", "net"]
PROMPTS = [f"pick {w}{i}:\n\n" for i in range(4) for w in WORDS]  # 48 prompts
GOLDS = [0] * len(PROMPTS)  # unused by the micro reward
MICRO = {"max_new_tokens": 4, "batch_size": 8, "group_size": 8, "seed": 0}


def starts_with_a(completions: list[str], golds: list[int]) -> list[float]:
    """Micro reward: 1 when the completion starts with "a"."""
    return [1.0 if c.startswith("a") else 0.0 for c in completions]


def mean_reward(model, tokenizer, seed: int = 1234) -> float:
    """Mean micro reward of 8 samples on each of 24 prompts at temperature 0.7 (fixed seed)."""
    rollout = sample(
        model, tokenizer, PROMPTS[:24], 8, max_new_tokens=4, temperature=0.7, seed=seed
    )
    rewards = starts_with_a(rollout.completions, [0] * len(rollout))
    return sum(rewards) / len(rewards)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def micro_base(tokenizer):
    """Micro Llama taught to answer a (25%), b or c: a base with reward ~0.25."""
    model = tiny_model(
        "llama", num_hidden_layers=2, hidden_size=32, vocab_size=len(tokenizer), seed=0
    )
    rng = random.Random(0)
    prompts = [rng.choice(PROMPTS) for _ in range(256)]
    answers = [rng.choice("abbccbca") if i % 2 else rng.choice("abc") for i in range(256)]
    sft(
        model,
        tokenizer,
        prompts,
        answers,
        PostTrainConfig(steps=40, batch_size=16, learning_rate=1e-2),
    )
    return model


@pytest.fixture()
def base(micro_base):
    return copy.deepcopy(micro_base)


# ---------------------------------------------------------------- loss pieces


def test_gae_matches_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [5.0, 0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 0.0], [9.0, 1.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: d2 = 1 - .7 = .3; d1 = .9*.7 - .6 = .03, A1 = .03 + .45*.3; d0 = .9*.6 - .5, A0 = .04 + .45*A1
    expected_adv = torch.tensor([[0.11425, 0.165, 0.3, 0.0], [0.0, 0.35, 1.0, 0.0]])
    expected_ret = torch.tensor([[0.61425, 0.765, 1.0, 0.0], [0.0, 1.35, 2.0, 0.0]])
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, expected_ret)


def test_gae_with_lambda_one_gives_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0]])
    values = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    adv, _ = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    to_go = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv, to_go - values)


def test_group_advantages_centre_and_scale_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, 4, eps=1e-12)
    half = 0.5 / math.sqrt(1 / 3)  # unbiased std of [1,0,0,1] is sqrt(1/3)
    torch.testing.assert_close(adv, torch.tensor([half, -half, -half, half, 0, 0, 0, 0]))
    torch.testing.assert_close(
        group_advantages(rewards, 4, scale=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5])
    )
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, 3)


def test_kl_estimators_hand_values_and_unbiasedness():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))
    # k1 and k3 are unbiased for KL(p || q) under samples from p
    gen = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    p, q = torch.log_softmax(p_logits, 0), torch.log_softmax(q_logits, 0)
    draws = torch.multinomial(p.exp(), 200_000, replacement=True, generator=gen)
    exact = exact_kl(p_logits, q_logits).item()
    assert exact == pytest.approx(float((p.exp() * (p - q)).sum()))
    for kind in ("k1", "k3"):
        assert kl_estimate(p[draws], q[draws], kind).mean().item() == pytest.approx(exact, rel=0.03)
    assert (kl_estimate(p[draws], q[draws], "k3") >= 0).all()


def test_clipped_surrogate_takes_the_pessimistic_branch():
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.5]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    old = torch.zeros(1, 5)
    loss, clipped, r = clipped_surrogate(ratio.log(), old, adv, mask, clip_range=0.2)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, 1.5, -0.5, 0.8, 0.0]]))
    assert clipped.tolist() == [[True, False, False, True, False]]
    torch.testing.assert_close(r, ratio)
    # the clipped branch carries no gradient; the unclipped one does
    logp = ratio.log().requires_grad_()
    clipped_surrogate(logp, old, adv, mask, 0.2)[0].sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 1.5, -0.5, 0.0, 0.0]]))


def test_clipped_value_loss_uses_the_worse_of_clipped_and_unclipped():
    values, old, ret = (
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 0.0]]),
        torch.tensor([[2.0, 0.5]]),
    )
    # token 0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24; token 1: 0.25 both
    loss = clipped_value_loss(values, old, ret, torch.ones(1, 2), clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.25) / 2)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_grpo_aggregation_over_minibatches_equals_the_full_batch(loss_type):
    gen = torch.Generator().manual_seed(0)
    tok_loss = torch.randn(6, 5, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 3 + [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    n_tokens = float(mask.sum())
    full = aggregate(tok_loss, mask, loss_type, 6, n_tokens, 5)
    parts = sum(
        aggregate(tok_loss[i : i + 2], mask[i : i + 2], loss_type, 6, n_tokens, 5)
        for i in (0, 2, 4)
    )
    torch.testing.assert_close(parts, full)
    if loss_type == "grpo":  # mean of per-sequence token means
        per_seq = [(tok_loss[i] * mask[i]).sum() / mask[i].sum() for i in range(6)]
        torch.testing.assert_close(full, torch.stack(per_seq).mean())


def test_expert_iteration_pieces():
    assert split_steps(10, 3) == [4, 3, 3] and split_steps(2, 5) == [1, 1]
    kept = filter_correct([0, 0, 1, 1, 1], ["a", "a", "b", "a", "c"], [1, 1, 0, 1, 1], 1.0)
    assert kept == [(0, "a"), (1, "a"), (1, "c")]  # distinct, correct, in sample order
    stream = prompt_stream(4, seed=0)
    first, second = [next(stream) for _ in range(4)], [next(stream) for _ in range(4)]
    assert sorted(first) == sorted(second) == [0, 1, 2, 3]


# ---------------------------------------------------------------- rollouts and config


def test_sampling_is_seeded_and_laid_out_like_trl(base, tokenizer):
    a = sample(base, tokenizer, PROMPTS[:3], 4, max_new_tokens=6, seed=7)
    b = sample(base, tokenizer, PROMPTS[:3], 4, max_new_tokens=6, seed=7)
    assert a.completions == b.completions and torch.equal(a.input_ids, b.input_ids)
    assert a.prompt_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    eos = tokenizer.eos_token_id
    for i in range(len(a)):
        row = a.input_ids[i][a.attention_mask[i].bool()].tolist()
        prompt = tokenizer(PROMPTS[a.prompt_index[i]])["input_ids"]
        completion = row[len(prompt) :]
        assert row[: len(prompt)] == prompt
        assert a.completion_mask[i].sum() == len(completion)
        assert (completion[-1] == eos) == bool(a.terminated[i])
        assert eos not in completion[:-1] and len(completion) <= 6
        assert tokenizer.decode(completion, skip_special_tokens=True) == a.completions[i]


def test_token_logprobs_ignore_right_padding(base, tokenizer):
    rollout = sample(base, tokenizer, PROMPTS[:4], 2, max_new_tokens=6, seed=3)
    logp, _ = token_logprobs(base, rollout.input_ids, rollout.attention_mask)
    for i in range(len(rollout)):
        n = int(rollout.attention_mask[i].sum())
        alone, _ = token_logprobs(
            base, rollout.input_ids[i : i + 1, :n], rollout.attention_mask[i : i + 1, :n]
        )
        torch.testing.assert_close(logp[i, : n - 1], alone[0], atol=1e-5, rtol=1e-5)


def test_config_rejects_bad_values_with_a_fix():
    with pytest.raises(ValueError, match="checkpoint_steps"):
        PostTrainConfig(steps=10, checkpoint_steps=(5, 20))
    with pytest.raises(ValueError, match="group_size"):
        PostTrainConfig(group_size=1)
    with pytest.raises(ValueError, match="grpo_backend"):
        PostTrainConfig(grpo_backend="vllm")
    with pytest.raises(ValueError, match="temperature"):
        PostTrainConfig(temperature=0)


def test_trainlog_json_is_strict_and_atomic(tmp_path):
    log = TrainLog(
        history=[{"step": 1, "loss": float("nan"), "kl": 0.5}], checkpoints=["a"], wall_time_s=1.5
    )
    path = log.to_json(tmp_path / "sub" / "log.json")
    data = json.loads(path.read_text())
    assert data["history"] == [{"step": 1, "loss": None, "kl": 0.5}]
    assert data["wall_time_s"] == 1.5 and data["checkpoints"] == ["a"]
    assert [p.name for p in path.parent.iterdir()] == ["log.json"]


# ---------------------------------------------------------------- algorithms on the micro task


def test_sft_lowers_loss_and_saves_loadable_checkpoints(base, tokenizer, tmp_path):
    cfg = PostTrainConfig(steps=12, learning_rate=1e-2, checkpoint_steps=(4, 12), **MICRO)
    log = sft(base, tokenizer, PROMPTS, ["a"] * len(PROMPTS), cfg, checkpoint_dir=tmp_path)
    losses = log.series("loss")
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0]
    assert min(log.series("kl")) > 0  # the policy has left the reference from the first step
    assert [p.rsplit("/", 1)[-1] for p in log.checkpoints] == ["step-00004", "step-00012"]
    reloaded = AutoModelForCausalLM.from_pretrained(log.checkpoints[-1])
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    torch.testing.assert_close(reloaded(ids).logits, base(ids).logits)
    assert "forward" not in vars(base) and base.config.use_cache  # TRL's changes are undone
    assert json.loads((tmp_path / "step-00004" / "config.json").read_text())["use_cache"] is True


def test_sft_rejects_mismatched_inputs(base, tokenizer):
    with pytest.raises(ValueError, match="one per prompt"):
        sft(base, tokenizer, PROMPTS, ["a"], PostTrainConfig(steps=1))


def test_expert_iteration_raises_reward(base, tokenizer):
    before = mean_reward(base, tokenizer)
    cfg = PostTrainConfig(steps=16, ei_rounds=2, learning_rate=5e-3, **MICRO)
    log = expert_iteration(base, tokenizer, PROMPTS, GOLDS, starts_with_a, cfg)
    assert len(log.history) == 16 and {r["round"] for r in log.history} == {0, 1}
    assert all(r["kept"] > 0 for r in log.history)
    assert mean_reward(base, tokenizer) > before + 0.25


def test_preference_pairs_are_correct_vs_incorrect_and_dpo_widens_the_margin(base, tokenizer):
    pairs = make_preference_pairs(
        base, tokenizer, PROMPTS, GOLDS, starts_with_a, k=6, seed=0, max_new_tokens=4
    )
    assert len(pairs) >= 20
    assert all(p["chosen"].startswith("a") and not p["rejected"].startswith("a") for p in pairs)
    assert all(set(p) == {"prompt", "chosen", "rejected"} for p in pairs)
    ref = copy.deepcopy(base)
    assert preference_margin(base, ref, tokenizer, pairs) == pytest.approx(0.0, abs=1e-5)
    before = mean_reward(base, tokenizer)
    log = dpo(
        base, tokenizer, pairs, PostTrainConfig(steps=12, learning_rate=5e-3, dpo_beta=0.1, **MICRO)
    )
    assert preference_margin(base, ref, tokenizer, pairs) > 1.0
    margins = log.series("margin")
    assert sum(margins[-3:]) / 3 > sum(margins[:3]) / 3
    assert mean_reward(base, tokenizer) > before + 0.2


@pytest.mark.parametrize("value_model", ["separate", "shared"])
def test_ppo_raises_reward_with_checkpoints(base, tokenizer, tmp_path, value_model):
    before = mean_reward(base, tokenizer)
    cfg = PostTrainConfig(
        steps=12,
        learning_rate=3e-3,
        kl_coef=0.01,
        checkpoint_steps=(6,),
        value_model=value_model,
        **MICRO,
    )
    log = ppo(base, tokenizer, PROMPTS, GOLDS, starts_with_a, cfg, checkpoint_dir=tmp_path)
    assert mean_reward(base, tokenizer) > before + 0.25
    assert {"loss", "value_loss", "reward_mean", "kl", "clip_fraction"} <= set(log.history[0])
    assert log.history[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at step 1
    assert log.checkpoints == [str(tmp_path / "step-00006")]
    assert log.history[-1]["value_mean"] != 0.0  # the critic has learned something


def test_shared_value_pass_gives_the_same_logprobs(base, tokenizer):
    rollout = sample(base, tokenizer, PROMPTS[:4], 2, max_new_tokens=6, seed=5)
    head = torch.nn.Linear(base.config.hidden_size, 1)
    logp, values = logprobs_and_values(base, head, rollout.input_ids, rollout.attention_mask, 0.7)
    expected, _ = token_logprobs(base, rollout.input_ids, rollout.attention_mask, 0.7)
    torch.testing.assert_close(logp, expected)
    assert values.shape == logp.shape


@pytest.mark.parametrize(("backend", "iterations"), [("trl", 1), ("native", 1), ("native", 2)])
def test_grpo_raises_reward(base, tokenizer, backend, iterations):
    before = mean_reward(base, tokenizer)
    cfg = PostTrainConfig(
        steps=12,
        learning_rate=3e-3,
        kl_coef=0.01,
        grpo_backend=backend,
        grpo_iterations=iterations,
        **MICRO,
    )
    log = grpo(base, tokenizer, PROMPTS, GOLDS, starts_with_a, cfg)
    assert len(log.history) == 12
    assert mean_reward(base, tokenizer) > before + 0.25
    assert log.history[-1]["kl"] > 0
    assert "forward" not in vars(base) and base.config._name_or_path == "" and base.config.use_cache


def test_runs_are_deterministic_given_the_seed(base, tokenizer):
    cfg = PostTrainConfig(steps=3, learning_rate=3e-3, **MICRO)
    first, second = copy.deepcopy(base), copy.deepcopy(base)
    log_a = ppo(first, tokenizer, PROMPTS, GOLDS, starts_with_a, cfg)
    log_b = ppo(second, tokenizer, PROMPTS, GOLDS, starts_with_a, cfg)
    assert [r["loss"] for r in log_a.history] == [r["loss"] for r in log_b.history]
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p, q)
