"""Offline DPO: preference pairs from the model's own samples (correct vs incorrect), then TRL's DPOTrainer.

The reference is a frozen copy of the starting model. History per step: ``loss``, ``margin``
(TRL's beta-scaled implicit-reward margin, chosen minus rejected, on the step's batch),
``accuracy`` (share of pairs with a positive margin), and ``kl`` (exact token-level KL to the
reference on a fixed probe batch of chosen completions).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from helpers.organisms.posttrain.config import PostTrainConfig, TrainLog
from helpers.organisms.posttrain.rollout import sample
from helpers.organisms.posttrain.sft import (
    PROBE_SIZE,
    check_pairs,
    demonstration_batch,
    frozen_copy,
)
from helpers.organisms.posttrain.trl_utils import (
    HistoryCallback,
    ReferenceKLProbe,
    StepHookCallback,
    checkpoint_hook,
    quiet_progress,
    trainer_kwargs,
    trl_managed,
)

RewardFn = Callable[[list[str], list[int]], list[float]]
PAIR_KEYS: tuple[str, ...] = ("prompt", "chosen", "rejected")


def make_preference_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    golds: Sequence[int],
    reward_fn: RewardFn,
    k: int,
    seed: int = 0,
    *,
    max_new_tokens: int = 96,
    temperature: float = 0.7,
    batch_size: int = 256,
) -> list[dict[str, str]]:
    """One (prompt, chosen, rejected) pair per prompt whose `k` samples include a correct and an incorrect one.

    Chosen: a random sample with reward >= 1; rejected: a random sample with reward < 1 (seeded);
    prompts whose samples are all right or all wrong give no pair.
    """
    check_pairs(prompts, golds, "golds")
    if k < 2:
        raise ValueError(f"k={k}; a pair needs at least 2 samples per prompt")
    rollout = sample(
        model,
        tokenizer,
        prompts,
        k,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        progress=True,
    )
    rewards = reward_fn(rollout.completions, [int(golds[i]) for i in rollout.prompt_index.tolist()])
    rng = random.Random(seed)
    pairs = []
    for p, prompt in enumerate(prompts):
        group = range(p * k, (p + 1) * k)
        good = [rollout.completions[i] for i in group if rewards[i] >= 1.0]
        bad = [rollout.completions[i] for i in group if rewards[i] < 1.0]
        if good and bad:
            pairs.append(
                {"prompt": prompt, "chosen": rng.choice(good), "rejected": rng.choice(bad)}
            )
    return pairs


@torch.no_grad()
def preference_margin(
    model: PreTrainedModel,
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[dict[str, str]],
) -> float:
    """Mean DPO implicit-reward margin (unscaled): [log pi/pi_ref](chosen) - [log pi/pi_ref](rejected)."""

    def logratio(completions: list[str]) -> torch.Tensor:
        ids, attn, comp = (
            t.to(model.device) for t in demonstration_batch(tokenizer, prompts, completions)
        )
        total = []
        for m in (model, ref_model):
            logits = m(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            total.append((logp * comp[:, 1:]).sum(1))
        return total[0] - total[1]

    prompts = [p["prompt"] for p in pairs]
    was_training = model.training
    model.eval()
    try:
        margin = logratio([p["chosen"] for p in pairs]) - logratio([p["rejected"] for p in pairs])
    finally:
        model.train(was_training)
    return float(margin.mean())


def dpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[dict[str, str]],
    cfg: PostTrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
) -> TrainLog:
    """Train `model` in place with the DPO (sigmoid) loss, beta = `cfg.dpo_beta`, for `cfg.steps` steps."""
    if not pairs:
        raise ValueError(
            "no preference pairs; make_preference_pairs found no prompt with both outcomes"
        )
    missing = [key for key in PAIR_KEYS if key not in pairs[0]]
    if missing:
        raise ValueError(f"pairs lack keys {missing}; each pair needs {PAIR_KEYS}")
    start = time.perf_counter()
    log = TrainLog(algorithm="dpo", config=cfg.to_dict())
    ref = frozen_copy(model)
    probe_pairs = list(pairs[:PROBE_SIZE])
    batch = demonstration_batch(
        tokenizer, [p["prompt"] for p in probe_pairs], [p["chosen"] for p in probe_pairs]
    )
    probe = ReferenceKLProbe(ref, *(t.to(model.device) for t in batch))
    history = HistoryCallback(
        {
            "loss": "loss",
            "rewards/margins": "margin",
            "rewards/accuracies": "accuracy",
            "rewards/chosen": "reward_chosen",
            "rewards/rejected": "reward_rejected",
            "grad_norm": "grad_norm",
        },
        {"reward_mean": None},
    )

    def kl_hook(m: torch.nn.Module, step: int) -> None:
        history.row(step)["kl"] = probe(m)

    dataset = Dataset.from_dict({key: [p[key] for p in pairs] for key in PAIR_KEYS})
    with tempfile.TemporaryDirectory(prefix="dpo-") as out:
        args = DPOConfig(
            **trainer_kwargs(cfg, model, out),
            per_device_train_batch_size=cfg.batch_size,
            beta=cfg.dpo_beta,
            max_length=None,
        )
        with trl_managed(model):
            trainer = DPOTrainer(
                model=model,
                ref_model=frozen_copy(model),
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                callbacks=[
                    history,
                    StepHookCallback(
                        kl_hook,
                        checkpoint_hook(
                            tokenizer, cfg.checkpoint_steps, checkpoint_dir, log.checkpoints
                        ),
                    ),
                ],
            )
            quiet_progress(trainer)
            trainer.train()
    log.history = history.history()
    log.wall_time_s = time.perf_counter() - start
    return log
