"""GRPO: group-normalised advantages and a KL penalty to the frozen starting model.

Backend "trl" (default) runs TRL's GRPOTrainer; "native" runs our loop with the same objective
(per-token clipped surrogate with advantages ``(r - mean_group) / std_group``, plus ``kl_coef`` x the
k3 estimate of KL to the reference, aggregated per `cfg.grpo_loss_type`). Both log per step
``loss``, ``reward_mean``, ``kl`` (mean per-token k3) and ``mean_length``.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer

from helpers.organisms.posttrain.checkpoints import save_model_dir, step_dir
from helpers.organisms.posttrain.config import PostTrainConfig, TrainLog
from helpers.organisms.posttrain.expert_iteration import prompt_stream
from helpers.organisms.posttrain.losses import (
    clipped_surrogate,
    group_advantages,
    kl_estimate,
    masked_mean,
)
from helpers.organisms.posttrain.rl import RewardFn, collect, lr_lambda, minibatches, trim
from helpers.organisms.posttrain.rollout import token_logprobs
from helpers.organisms.posttrain.sft import check_pairs, frozen_copy
from helpers.organisms.posttrain.trl_utils import (
    HistoryCallback,
    StepHookCallback,
    checkpoint_hook,
    quiet_progress,
    trainer_kwargs,
    trl_managed,
)


def grpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    golds: Sequence[int],
    reward_fn: RewardFn,
    cfg: PostTrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
) -> TrainLog:
    """Train `model` in place with GRPO for `cfg.steps` steps of `batch_size` prompts x `group_size` samples."""
    check_pairs(prompts, golds, "golds")
    start = time.perf_counter()
    log = TrainLog(algorithm="grpo", config=cfg.to_dict())
    if cfg.grpo_backend == "trl":
        _grpo_trl(model, tokenizer, prompts, golds, reward_fn, cfg, checkpoint_dir, log)
    else:
        _grpo_native(model, tokenizer, prompts, golds, reward_fn, cfg, checkpoint_dir, log)
    log.wall_time_s = time.perf_counter() - start
    return log


def aggregate(
    tok_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    n_seq: int,
    n_tokens: int | float,
    max_tokens: int,
) -> torch.Tensor:
    """Reduce a (minibatch's) per-token loss as TRL's loss types do over the whole batch.

    Denominators are those of the whole optimisation batch (`n_seq` sequences, `n_tokens`
    completion tokens), so summing the results of its minibatches gives the exact batch loss.
    """
    if loss_type == "grpo":  # mean over each sequence's tokens, then over sequences
        return masked_mean(tok_loss, mask, dim=1).sum() / n_seq
    if loss_type == "dr_grpo":  # a constant denominator: no length bias
        return (tok_loss * mask).sum() / (n_seq * max_tokens)
    return (tok_loss * mask).sum() / max(float(n_tokens), 1.0)  # "dapo", "bnpo": token mean


def _grpo_native(
    model, tokenizer, prompts, golds, reward_fn, cfg: PostTrainConfig, checkpoint_dir, log: TrainLog
):
    """Our GRPO loop: one full-batch optimiser step per iteration, `grpo_iterations` per rollout."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    was_training = model.training
    ref = frozen_copy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = lr_lambda(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    stream = prompt_stream(len(prompts), cfg.seed)
    n_seq = cfg.batch_size * cfg.group_size
    bar = tqdm(range(1, cfg.steps + 1), desc="grpo")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.learning_rate * schedule(step - 1)
        idx = [next(stream) for _ in range(cfg.batch_size)]
        batch = collect(
            model,
            ref,
            tokenizer,
            [prompts[i] for i in idx],
            [golds[i] for i in idx],
            reward_fn,
            cfg,
            seed=cfg.seed * 1_000_003 + step,
            with_old_logp=cfg.grpo_iterations > 1,
        )
        ro = batch.rollout
        adv = group_advantages(batch.scores, cfg.group_size, scale=cfg.scale_rewards)
        n_tokens = float(batch.mask.sum())
        model.train()
        losses, kls = [], []
        for _ in range(cfg.grpo_iterations):
            # TRL takes one optimiser step over the whole generation batch; so do we (minibatch_size
            # only bounds memory by accumulating gradients).
            opt.zero_grad(set_to_none=True)
            for mb in minibatches(n_seq, cfg.minibatch_size, gen):
                per_seq = [
                    ro.input_ids[mb],
                    ro.attention_mask[mb],
                    batch.mask[mb],
                    batch.ref_logp[mb],
                ]
                if batch.old_logp is not None:
                    per_seq.append(batch.old_logp[mb])
                ids, attn, mask, ref_logp, *old = trim(ro.attention_mask[mb], *per_seq)
                logp, _ = token_logprobs(model, ids, attn, cfg.temperature)
                # one iteration: the sampling policy is the current one (ratio 1, gradient intact)
                old_logp = old[0] if old else logp.detach()
                tok_loss, _, _ = clipped_surrogate(
                    logp, old_logp, adv[mb, None].expand_as(logp), mask, cfg.clip_range
                )
                kl = kl_estimate(logp, ref_logp, "k3")
                tok_loss = tok_loss + cfg.kl_coef * kl * mask
                loss = aggregate(
                    tok_loss, mask, cfg.grpo_loss_type, n_seq, n_tokens, cfg.max_new_tokens
                )
                loss.backward()
                losses.append(loss.item())
                kls.append(float((kl.detach() * mask).sum()) / max(n_tokens, 1.0))
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
        row = {
            "step": step,
            "loss": sum(losses) / cfg.grpo_iterations,
            "reward_mean": float(batch.scores.mean()),
            "reward_std": float(batch.scores.std()),
            "kl": sum(kls) / cfg.grpo_iterations,
            "mean_length": float(ro.completion_lengths.float().mean()),
            "terminated": float(ro.terminated.float().mean()),
        }
        log.history.append(row)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.4f}")
        if checkpoint_dir is not None and step in cfg.checkpoint_steps:
            log.checkpoints.append(
                str(save_model_dir(model, tokenizer, step_dir(Path(checkpoint_dir), step)))
            )
    model.train(was_training)


def _grpo_trl(
    model, tokenizer, prompts, golds, reward_fn, cfg: PostTrainConfig, checkpoint_dir, log: TrainLog
):
    """GRPO with TRL's GRPOTrainer; its reference model is loaded from a temporary save of the start."""

    def correctness(
        prompts: list[str], completions: list[str], gold: list[int], **_: Any
    ) -> list[float | None]:  # TRL's reward type (None: no reward); we always give one
        return [float(r) for r in reward_fn(list(completions), [int(g) for g in gold])]

    history = HistoryCallback(
        {
            "loss": "loss",
            "reward": "reward_mean",
            "reward_std": "reward_std",
            "kl": "kl",
            "completions/mean_length": "mean_length",
            "completions/clipped_ratio": "truncated",
            "entropy": "entropy",
            "frac_reward_zero_std": "frac_reward_zero_std",
            "grad_norm": "grad_norm",
        },
        {"kl": 0.0},
    )
    dataset = Dataset.from_dict({"prompt": list(prompts), "gold": [int(g) for g in golds]})
    with tempfile.TemporaryDirectory(prefix="grpo-") as out:
        # GRPOTrainer builds its reference by loading config._name_or_path: point it at a copy of the start.
        ref_dir = Path(out) / "reference"
        model.save_pretrained(ref_dir)
        args = GRPOConfig(
            **trainer_kwargs(cfg, model, str(Path(out) / "trainer")),
            per_device_train_batch_size=cfg.batch_size * cfg.group_size,
            num_generations=cfg.group_size,
            max_completion_length=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=0,
            top_p=1.0,
            beta=cfg.kl_coef,
            epsilon=cfg.clip_range,
            num_iterations=cfg.grpo_iterations,
            loss_type=cfg.grpo_loss_type,
            scale_rewards="group" if cfg.scale_rewards else "none",
            shuffle_dataset=True,
            log_completions=False,
        )
        with trl_managed(model):  # restores _name_or_path, forward, use_cache
            model.config._name_or_path = str(ref_dir)
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=correctness,
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                callbacks=[
                    history,
                    StepHookCallback(
                        checkpoint_hook(
                            tokenizer, cfg.checkpoint_steps, checkpoint_dir, log.checkpoints
                        )
                    ),
                ],
            )
            quiet_progress(trainer)
            trainer.train()
    log.history = history.history()
