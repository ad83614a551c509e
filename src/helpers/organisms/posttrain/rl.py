"""Shared machinery of our own RL loops (PPO, native GRPO): scored rollouts, schedules, bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.organisms.posttrain.config import PostTrainConfig
from helpers.organisms.posttrain.rollout import Rollout, sample, token_logprobs

RewardFn = Callable[[list[str], list[int]], list[float]]


@dataclass
class ScoredRollout:
    """A rollout with its sequence rewards and the frozen per-token log-probs of policy and reference."""

    rollout: Rollout
    scores: torch.Tensor  # [N] task reward per sample
    old_logp: torch.Tensor | None  # [N, L-1] behaviour policy (None when the caller computes it)
    ref_logp: torch.Tensor  # [N, L-1] frozen reference
    mask: torch.Tensor  # [N, L-1] float, 1 on completion tokens


def collect(
    model: PreTrainedModel,
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    golds: Sequence[int],
    reward_fn: RewardFn,
    cfg: PostTrainConfig,
    seed: int,
    with_old_logp: bool = True,
) -> ScoredRollout:
    """Sample `cfg.group_size` completions per prompt, score them, and record old/reference log-probs.

    `with_old_logp=False` skips the behaviour policy's forward pass, for callers that get it
    elsewhere (GRPO with one iteration: the current policy; PPO with a shared value head).
    """
    rollout = sample(
        model,
        tokenizer,
        prompts,
        cfg.group_size,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        seed=seed,
        batch_size=cfg.generation_batch_size,
    )
    sample_golds = [int(golds[i]) for i in rollout.prompt_index.tolist()]
    rewards = reward_fn(rollout.completions, sample_golds)
    if len(rewards) != len(rollout):
        raise ValueError(
            f"reward_fn returned {len(rewards)} rewards for {len(rollout)} completions"
        )
    scores = torch.tensor([float(r) for r in rewards], dtype=torch.float32, device=model.device)
    old_logp = None
    with torch.no_grad():
        if with_old_logp:
            was_training = model.training
            model.eval()
            old_logp, _ = token_logprobs(
                model, rollout.input_ids, rollout.attention_mask, cfg.temperature
            )
            model.train(was_training)
        ref_logp, _ = token_logprobs(
            ref_model, rollout.input_ids, rollout.attention_mask, cfg.temperature
        )
    return ScoredRollout(rollout, scores, old_logp, ref_logp, rollout.action_mask.float())


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last set position of each row of a [N, T] mask (0 for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * (mask > 0)).amax(dim=1)


def minibatches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Random disjoint index batches covering range(n)."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(size)


def lr_lambda(cfg: PostTrainConfig) -> Callable[[int], float]:
    """Multiplier of the learning rate at optimiser step k: linear warm-up, then constant or linear decay."""

    def factor(k: int) -> float:
        if cfg.warmup_steps and k < cfg.warmup_steps:
            return (k + 1) / cfg.warmup_steps
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - (k - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return 1.0

    return factor


def trim(width_source: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Cut [N, L] and [N, L-1] tensors to the longest real sequence given by attention mask `width_source`."""
    width = int(width_source.sum(1).max())
    return [
        t[:, :width] if t.shape[1] == width_source.shape[1] else t[:, : width - 1] for t in tensors
    ]
