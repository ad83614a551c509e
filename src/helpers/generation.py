"""The one batched generation loop: left-pad each batch, call a backend's generate, keep new tokens.

Evaluation (greedy answers), organism evaluation (greedy and sampled), RL rollouts and NDIF all go
through `generate_tokens`; they differ only in the decoding configuration and in the `generate`
callable the execution backend supplies (`model.generate` here, an nnsight trace on NDIF).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

# (input_ids, attention_mask, config) -> generated ids [rows, prompt width + new tokens]
GenerateFn = Callable[[torch.Tensor, torch.Tensor, GenerationConfig], torch.Tensor]
# (prompt indices of the batch, new-token rows of the batch) after each batch
TokensCallback = Callable[[list[int], list[list[int]]], None]
Order = Literal["given", "longest"]


@dataclass(frozen=True)
class Generation:
    """One greedy answer: prompt ids, answer ids (no stop token, no padding), finished flag."""

    prompt_ids: list[int]
    answer_ids: list[int]
    finished: bool


def trim_answer(tokens: Sequence[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """Tokens before the first stop id, and whether a stop id was found."""
    stops = set(stop_ids)
    for i, token in enumerate(tokens):
        if token in stops:
            return list(tokens[:i]), True
    return list(tokens), False


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded `input_ids` and `attention_mask` [batch, longest prompt] for generation."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {row} is empty; every prompt needs at least one token")
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


def greedy_config(max_new_tokens: int, stop_ids: Sequence[int], pad_id: int) -> GenerationConfig:
    """The one greedy decoding configuration every backend uses (no sampling, no beams)."""
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
    )


@contextmanager
def neutral_generation_config(model: Any) -> Iterator[None]:
    """Swap in a default GenerationConfig while generating.

    `generate` fills every field our config leaves unset from `model.generation_config`, so a
    checkpoint's repetition_penalty, no_repeat_ngram_size, suppress_tokens, ... would silently
    alter "greedy" answers. With defaults in place only the fields we set act.
    """
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def local_generate(model: Any) -> GenerateFn:
    """`model.generate` on the model's device, with only the passed configuration acting."""
    device = next(model.parameters()).device

    def run(ids: torch.Tensor, mask: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
        with torch.no_grad(), neutral_generation_config(model):
            return model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )

    return run


def batch_order(prompts: Sequence[Sequence[int]], batch_size: int, order: Order) -> list[list[int]]:
    """Prompt indices per batch: as given, or longest prompts first (less padding, OOM early)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    index = list(range(len(prompts)))
    if order == "longest":
        index.sort(key=lambda i: (-len(prompts[i]), i))
    elif order != "given":
        raise ValueError(f"order must be 'given' or 'longest', got {order!r}")
    return [index[i : i + batch_size] for i in range(0, len(index), batch_size)]


def generate_tokens(
    generate: GenerateFn,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    *,
    pad_id: int,
    batch_size: int,
    order: Order = "given",
    on_batch: TokensCallback | None = None,
    progress: bool = False,
    desc: str = "generating",
) -> list[list[int]]:
    """New tokens of every output row, in prompt order (`num_return_sequences` rows per prompt).

    Each batch is left-padded, so generation continues every prompt from its last real token.
    """
    per_prompt = int(getattr(config, "num_return_sequences", None) or 1)
    rows: list[list[int]] = [[] for _ in range(len(prompts) * per_prompt)]
    for batch in tqdm(batch_order(prompts, batch_size, order), desc=desc, disable=not progress):
        input_ids, attention_mask = left_pad([prompts[i] for i in batch], pad_id)
        out = generate(input_ids, attention_mask, config)
        new = out[:, input_ids.shape[1] :].tolist()
        for j, i in enumerate(batch):
            for s in range(per_prompt):
                rows[i * per_prompt + s] = new[j * per_prompt + s]
        if on_batch is not None:
            on_batch(batch, new)
    return rows


def greedy_answers(
    generate: GenerateFn,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 8,
    on_batch: Callable[[list[int], list[Generation]], None] | None = None,
    progress: bool = True,
    desc: str = "generating",
) -> list[Generation]:
    """Greedy `Generation` records, longest prompts first, each answer trimmed at its first stop."""
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be >= 1")

    def records(batch: list[int], new: list[list[int]]) -> list[Generation]:
        return [
            Generation(list(prompts[i]), *trim_answer(tokens, stop_ids))
            for i, tokens in zip(batch, new, strict=True)
        ]

    def done(batch: list[int], new: list[list[int]]) -> None:
        if on_batch is not None:
            on_batch(batch, records(batch, new))

    rows = generate_tokens(
        generate,
        prompts,
        greedy_config(max_new_tokens, stop_ids, pad_id),
        pad_id=pad_id,
        batch_size=batch_size,
        order="longest",
        on_batch=done,
        progress=progress,
        desc=desc,
    )
    return records(list(range(len(prompts))), rows)
