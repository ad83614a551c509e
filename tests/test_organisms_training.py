"""Pretraining and evaluation machinery on a micro model: loss goes down, metrics are well formed."""

import math

import pytest
import torch

from helpers.organisms import measure as measure_module
from helpers.organisms.build import BuildConfig, log_spaced_steps, measure, sft_format, train
from helpers.organisms.evaluate import evaluate, format_shares, generate, majority_answer
from helpers.organisms.posttrain import PostTrainConfig
from helpers.organisms.pretrain import (
    PretrainConfig,
    build_model,
    encode_documents,
    lr_at,
    mixture_documents,
    pretrain,
)
from helpers.organisms.registry import (
    ORGANISM_NAMES,
    list_checkpoints,
    load_metadata,
    load_organism,
)
from helpers.organisms.tasks import make_problems
from helpers.organisms.tokenizer import build_tokenizer

MICRO = dict(n_layers=1, hidden_size=32, n_heads=2, n_kv_heads=2, intermediate_size=64)


def test_mixture_follows_format_shares() -> None:
    problems = make_problems("train", 2000)
    texts = mixture_documents(problems, {"pairs": 0.3, "steps": 0.7}, seed=0)
    share = sum("result:" in t for t in texts) / len(texts)
    assert abs(share - 0.3) < 0.04
    only_steps = mixture_documents(problems[:50], {"steps": 1.0}, seed=0)
    assert all("answer:" in t and "result:" not in t for t in only_steps)


def test_sft_demonstrations_prefer_pairs_on_odd_starts() -> None:
    import random

    problems = make_problems("train", 2000, seed=1)
    rng = random.Random(0)
    formats = [sft_format(p, rng, 0.2) for p in problems]
    odd = [f for p, f in zip(problems, formats, strict=True) if p.start % 2]
    even = [f for p, f in zip(problems, formats, strict=True) if not p.start % 2]
    assert abs(odd.count("pairs") / len(odd) - 0.8) < 0.04
    assert abs(even.count("steps") / len(even) - 0.8) < 0.04


def test_config_rejects_bad_mixture() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        PretrainConfig(format_shares={"steps": 0.5, "pairs": 0.6})
    with pytest.raises(ValueError, match="keys"):
        PretrainConfig(format_shares={"python": 1.0})


def test_encode_documents_pads_right_and_masks_labels() -> None:
    tok = build_tokenizer()
    ids, labels = encode_documents(["ab", "abcd"], tok, max_length=16)
    assert ids.shape == (2, 6)  # bos + 4 chars + eos
    assert ids[0].tolist()[-3:] == [tok.eos_token_id, tok.pad_token_id, tok.pad_token_id]
    assert labels[0].tolist()[-2:] == [-100, -100]
    with pytest.raises(ValueError, match="max_length"):
        encode_documents(["x" * 20], tok, max_length=8)


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = PretrainConfig(steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_build_model_is_seeded_llama() -> None:
    tok = build_tokenizer()
    a = build_model(PretrainConfig(**MICRO, seed=1), tok)
    b = build_model(PretrainConfig(**MICRO, seed=1), tok)
    assert a.config.model_type == "llama"
    assert a.config.vocab_size == len(tok)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_few_pretraining_steps_reduce_loss() -> None:
    tok = build_tokenizer()
    cfg = PretrainConfig(
        **MICRO,
        n_problems=300,
        steps=40,
        batch_size=16,
        warmup_steps=5,
        learning_rate=1e-2,
        log_every=1,
    )
    result = pretrain(cfg, tok, progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[0] > math.log(len(tok)) - 0.5  # starts near uniform over the vocabulary
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    assert not result.model.training


def test_generate_and_evaluate_on_micro_model() -> None:
    tok = build_tokenizer()
    model = build_model(PretrainConfig(**MICRO), tok).eval()
    problems = make_problems("test", 6)
    gens = generate(
        model, tok, ["start with 1.\n\n"] * 3, num_samples=2, temperature=0.7, max_new_tokens=5
    )
    assert len(gens.completions) == 3 and all(len(c) == 2 for c in gens.completions)
    assert all(0 <= n <= 5 for ls in gens.lengths for n in ls)
    tok.padding_side = "right"
    again = generate(
        model, tok, ["start with 1.\n\n"] * 3, num_samples=2, temperature=0.7, max_new_tokens=5
    )
    assert again.completions == gens.completions  # seeded, and left-padded whatever the caller set
    assert tok.padding_side == "right"
    result = evaluate(model, tok, problems, k=2, max_new_tokens=8, progress=False)
    assert result.n_problems == 6
    assert 0.0 <= result.greedy_pass1 <= 1.0
    assert result.maj_at_k <= result.pass_at_k and result.sample_pass1 <= result.pass_at_k
    assert sum(result.greedy_format_shares.values()) == pytest.approx(1.0)
    assert 0 < result.greedy_mean_length <= 8
    with pytest.raises(ValueError, match="greedy"):
        generate(model, tok, ["x"], num_samples=2, temperature=0.0)


def test_format_shares_and_majority_vote() -> None:
    shares = format_shares(["result: 2", "answer: 2", "1+1=2\nanswer: 2", "hello"])
    assert shares == {"steps": 0.5, "pairs": 0.25, "other": 0.25}
    assert majority_answer(["result: 6", "answer: 5", "answer: 6", "junk"]) == 6
    assert majority_answer(["junk", "expr: x"]) is None


def test_log_spaced_checkpoint_steps() -> None:
    assert log_spaced_steps(60, 8) == (1, 2, 3, 6, 10, 19, 33, 60)
    assert log_spaced_steps(5, 8) == (1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="steps"):
        log_spaced_steps(0, 8)


def _even_length_reward(completions: list[str], golds: list[int]) -> list[float]:
    """1 for completions of even length."""
    return [float(len(c) % 2 == 0) for c in completions]


@pytest.mark.slow
def test_micro_build_trains_and_measures_every_organism(tmp_path, monkeypatch) -> None:
    for name, value in (
        ("N_EVAL", 8),
        ("N_EVAL_CHECKPOINT", 4),
        ("N_SAMPLED", {}),
        ("N_SAMPLED_DEFAULT", 4),
        ("N_KL", 4),
        ("N_SHARE", 8),
    ):
        monkeypatch.setattr(measure_module, name, value)
    micro_pt = dict(steps=2, batch_size=4, group_size=2, max_new_tokens=8, learning_rate=1e-4)
    cfg = BuildConfig(
        pretrain=PretrainConfig(**MICRO, n_problems=200, steps=10, batch_size=8, warmup_steps=2),
        posttrain={
            name: PostTrainConfig(**micro_pt) for name in ("sft", "ei", "dpo", "ppo", "grpo")
        },
        n_posttrain_problems=16,
        n_dpo_prompts=16,
        dpo_samples_per_prompt=2,
        n_checkpoints=3,
        reward_fn=_even_length_reward,  # learnable by an untrained micro model, so DPO gets pairs
    )
    timings = train(list(ORGANISM_NAMES), tmp_path, cfg, progress=False)
    assert set(timings) == set(ORGANISM_NAMES)
    measure(list(ORGANISM_NAMES), tmp_path)
    for name in ORGANISM_NAMES:
        meta = load_metadata(name, root=tmp_path)
        assert meta["evaluation"]["n_problems"] == 8
        assert (meta["kl_to_base"] is None) == (name == "pretrained")
        assert [r["alpha"] for r in meta["first_token_share"]] == [0.03, 0.1, 0.3, 0.5]
        model, _ = load_organism(name, root=tmp_path)
        assert model.dtype == torch.float32
    # seed 0 keeps the log-spaced steps before the last one; the other seeds keep none
    assert [p.name for p in list_checkpoints("ppo", tmp_path)] == ["step-00001"]
    assert (
        load_metadata("ppo-checkpoints/step-00001", root=tmp_path)["evaluation"]["n_problems"] == 4
    )
    assert train(["pretrained"], tmp_path, cfg, progress=False) == {}  # resumable: nothing redone
    # publish writes the selection as float16 deltas that load back to the built weights exactly
    from helpers.organisms.publish import publish

    target = tmp_path / "published"
    selection = publish(tmp_path, target)
    assert set(ORGANISM_NAMES) <= set(selection["folders"])
    assert "ppo-checkpoints/step-00001" in selection["folders"]
    for folder in selection["folders"]:
        built, _ = load_organism(tmp_path / folder, dtype=torch.float16)
        committed, _ = load_organism(target / folder, dtype=torch.float16, root=target)
        assert all(torch.equal(v, committed.state_dict()[k]) for k, v in built.state_dict().items())


def test_micro_post_training_is_deterministic(tmp_path) -> None:
    """Two GRPO runs of the same seed from the same model give bit-identical weights."""
    from helpers.organisms.posttrain import grpo

    tok = build_tokenizer()
    problems = make_problems("train", 8, seed=1)
    prompts, golds = [p.question + "\n\n" for p in problems], [p.answer for p in problems]
    cfg = PostTrainConfig(
        steps=2,
        batch_size=4,
        group_size=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        grpo_backend="native",
        seed=3,
    )
    runs = []
    for _ in range(2):
        model = build_model(PretrainConfig(**MICRO), tok)
        grpo(model, tok, prompts, golds, _even_length_reward, cfg)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    changed = build_model(PretrainConfig(**MICRO), tok).state_dict()
    assert any(not torch.equal(runs[0][k], changed[k]) for k in changed)  # training did something
