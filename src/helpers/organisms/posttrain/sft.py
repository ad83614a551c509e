"""Supervised fine-tuning on (prompt, completion) demonstrations, with TRL's SFTTrainer.

Loss on completion tokens only; documents are ``tokenizer(prompt + completion) + eos``, the layout
of pretraining. The per-step ``kl`` is the exact token-level KL to the starting model on a fixed
probe batch of the demonstrations (there are no samples, so ``reward_mean`` is None).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from helpers.organisms.posttrain.config import PostTrainConfig, TrainLog
from helpers.organisms.posttrain.rollout import build_sequences, encode_prompts
from helpers.organisms.posttrain.trl_utils import (
    HistoryCallback,
    ReferenceKLProbe,
    StepHookCallback,
    checkpoint_hook,
    quiet_progress,
    trainer_kwargs,
    trl_managed,
)

PROBE_SIZE = 8  # sequences in the fixed batch on which SFT, EI and DPO measure KL to the reference


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A frozen, eval-mode deep copy of `model` (the reference policy for KL)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def demonstration_batch(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, completion_mask) of ``prompt + completion + eos``, right-padded."""
    prompt_ids = encode_prompts(tokenizer, prompts)
    comp_ids = [
        tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for c in completions
    ]
    return build_sequences(prompt_ids, comp_ids, tokenizer.pad_token_id)


def check_pairs(prompts: Sequence[str], others: Sequence[Any], name: str) -> None:
    """Raise a clear error unless `prompts` and `others` are non-empty lists of equal length."""
    if isinstance(prompts, str) or isinstance(others, str):
        raise ValueError(f"prompts and {name} must be lists, not single strings")
    if len(prompts) == 0:
        raise ValueError("no prompts given; pass at least one")
    if len(prompts) != len(others):
        raise ValueError(f"{len(prompts)} prompts but {len(others)} {name}; pass one per prompt")


def run_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    cfg: PostTrainConfig,
    *,
    steps: int,
    ref_model: PreTrainedModel,
    step_offset: int = 0,
    seed: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoints: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """`steps` SFT optimiser steps with TRL; history rows numbered from `step_offset + 1`."""
    n = min(PROBE_SIZE, len(prompts))
    batch = demonstration_batch(tokenizer, prompts[:n], completions[:n])
    probe = ReferenceKLProbe(ref_model, *(t.to(model.device) for t in batch))
    history = HistoryCallback(
        {"loss": "loss", "grad_norm": "grad_norm"}, {"reward_mean": None, **(extra or {})}
    )

    def kl_hook(m: torch.nn.Module, step: int) -> None:
        history.row(step)["kl"] = probe(m)

    saved = checkpoints if checkpoints is not None else []
    callbacks = [
        history,
        StepHookCallback(
            kl_hook,
            checkpoint_hook(tokenizer, cfg.checkpoint_steps, checkpoint_dir, saved, step_offset),
        ),
    ]
    run_cfg = cfg if seed is None else _with(cfg, seed=seed)
    dataset = Dataset.from_dict({"prompt": list(prompts), "completion": list(completions)})
    with tempfile.TemporaryDirectory(prefix="sft-") as out:
        args = SFTConfig(
            **trainer_kwargs(_with(run_cfg, steps=steps), model, out),
            per_device_train_batch_size=cfg.batch_size,
            completion_only_loss=True,
            packing=False,
            max_length=None,
        )
        with trl_managed(model):
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                callbacks=callbacks,
            )
            quiet_progress(trainer)
            trainer.train()
    rows = history.history()
    for row in rows:
        row["step"] += step_offset
    return rows


def _with(cfg: PostTrainConfig, **changes: Any) -> PostTrainConfig:
    """A copy of `cfg` with some fields changed, skipping validation of checkpoint steps."""
    new = copy.copy(cfg)
    for k, v in changes.items():
        setattr(new, k, v)
    return new


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    cfg: PostTrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
) -> TrainLog:
    """Fine-tune `model` in place on gold demonstrations for `cfg.steps` steps of `cfg.batch_size`."""
    check_pairs(prompts, completions, "completions")
    start = time.perf_counter()
    log = TrainLog(algorithm="sft", config=cfg.to_dict())
    log.history = run_sft(
        model,
        tokenizer,
        prompts,
        completions,
        cfg,
        steps=cfg.steps,
        ref_model=frozen_copy(model),
        checkpoint_dir=checkpoint_dir,
        checkpoints=log.checkpoints,
    )
    log.wall_time_s = time.perf_counter() - start
    return log
