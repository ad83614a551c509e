"""Expert Iteration: sample k completions per prompt, keep the verified-correct ones, fine-tune; repeat.

`cfg.steps` optimiser steps are split evenly over `cfg.ei_rounds` rounds. Each round samples
`cfg.group_size` completions for its own slice of prompts (`cfg.ei_prompts_per_round`, default
`batch_size` x the round's steps) with the current model, keeps distinct samples whose reward reaches
`reward_threshold`, and runs SFT on them (fresh optimiser per round). Each step's history row carries
its round's sampling statistics (reward_mean, kept).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.organisms.posttrain.config import PostTrainConfig, TrainLog
from helpers.organisms.posttrain.rollout import sample
from helpers.organisms.posttrain.sft import check_pairs, frozen_copy, run_sft

RewardFn = Callable[[list[str], list[int]], list[float]]


def split_steps(steps: int, rounds: int) -> list[int]:
    """`steps` split into `rounds` near-equal positive parts (fewer parts if steps < rounds)."""
    rounds = min(rounds, steps)
    base, extra = divmod(steps, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def prompt_stream(n: int, seed: int):
    """Endless stream of prompt indices: successive seeded permutations of range(n)."""
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        yield from order


def filter_correct(
    prompt_index: Sequence[int],
    completions: Sequence[str],
    rewards: Sequence[float],
    threshold: float,
) -> list[tuple[int, str]]:
    """Distinct (prompt index, completion) pairs whose reward reaches `threshold`, in sample order."""
    kept: dict[tuple[int, str], None] = {}
    for i, c, r in zip(prompt_index, completions, rewards, strict=True):
        if r >= threshold:
            kept.setdefault((int(i), c), None)
    return list(kept)


def expert_iteration(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    golds: Sequence[int],
    reward_fn: RewardFn,
    cfg: PostTrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    reward_threshold: float = 1.0,
) -> TrainLog:
    """Run Expert Iteration in place on `model`; a round with no correct sample passes its steps on."""
    check_pairs(prompts, golds, "golds")
    start = time.perf_counter()
    log = TrainLog(algorithm="expert_iteration", config=cfg.to_dict())
    ref = frozen_copy(model)
    stream = prompt_stream(len(prompts), cfg.seed)
    offset, carried = 0, 0
    for rnd, n_steps in enumerate(split_steps(cfg.steps, cfg.ei_rounds)):
        n_steps += carried
        n_prompts = cfg.ei_prompts_per_round or cfg.batch_size * n_steps
        idx = [next(stream) for _ in range(n_prompts)]
        rollout = sample(
            model,
            tokenizer,
            [prompts[i] for i in idx],
            cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=cfg.seed * 1_000_003 + rnd,
            batch_size=cfg.generation_batch_size,
            progress=True,
        )
        sample_golds = [int(golds[idx[j]]) for j in rollout.prompt_index.tolist()]
        rewards = [float(r) for r in reward_fn(rollout.completions, sample_golds)]
        kept = filter_correct(
            rollout.prompt_index.tolist(), rollout.completions, rewards, reward_threshold
        )
        info = {
            "round": rnd,
            "reward_mean": sum(rewards) / len(rewards),
            "kept": len(kept),
            "prompts_solved": len({i for i, _ in kept}) / n_prompts,
        }
        if not kept:
            carried = n_steps
            continue
        carried = 0
        log.history += run_sft(
            model,
            tokenizer,
            [prompts[idx[i]] for i, _ in kept],
            [c for _, c in kept],
            cfg,
            steps=n_steps,
            ref_model=ref,
            step_offset=offset,
            seed=cfg.seed + rnd,
            checkpoint_dir=checkpoint_dir,
            checkpoints=log.checkpoints,
            extra=info,
        )
        offset += n_steps
    log.wall_time_s = time.perf_counter() - start
    return log
