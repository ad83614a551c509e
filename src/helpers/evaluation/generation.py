"""Batched greedy generation: transformers (left padding) or vLLM, same records either way.

Each record holds the prompt token ids, the answer token ids (trimmed at, and excluding, the first
stop token) and whether the answer finished (hit a stop token) or ran into `max_new_tokens`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm", "ndif")


@dataclass(frozen=True)
class Generation:
    """One greedy answer: prompt ids, answer ids (no stop token, no padding), finished flag."""

    prompt_ids: list[int]
    answer_ids: list[int]
    finished: bool


BatchCallback = Callable[[list[int], list[Generation]], None]


def stop_token_ids(
    tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None = None
) -> tuple[int, ...]:
    """Sorted stop ids: the tokenizer's EOS plus the generation config's EOS id(s)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is not None:
        ids.update(int(i) for i in ([eos] if isinstance(eos, int) else eos))
    if not ids:
        raise ValueError("no EOS token on the tokenizer or the generation config; pass stop ids")
    return tuple(sorted(ids))


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


def resolve_backend(backend: str, model: object) -> str:
    """`auto` -> vLLM when it is installed, a CUDA GPU is present and `model` is a name/path."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    has_vllm = importlib.util.find_spec("vllm") is not None
    return (
        "vllm"
        if has_vllm and torch.cuda.is_available() and isinstance(model, str)
        else "transformers"
    )


@contextmanager
def _neutral_generation_config(model: PreTrainedModel) -> Iterator[None]:
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


def greedy_config(max_new_tokens: int, stop_ids: Sequence[int], pad_id: int) -> GenerationConfig:
    """The one greedy decoding configuration every backend uses (no sampling, no beams)."""
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
    )


def _batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def generate_transformers(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 8,
    on_batch: BatchCallback | None = None,
    progress: bool = True,
) -> list[Generation]:
    """Greedy answers with `model.generate`, longest prompts first, left padding.

    Only greedy search with the given stop ids acts: the checkpoint's own generation config
    (repetition penalty and the like) is ignored. `generate` derives position ids from the
    attention mask (cumsum - 1), so padding changes no real token's position;
    `on_batch(indices, generations)` runs after each batch.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be >= 1")
    config = greedy_config(max_new_tokens, stop_ids, pad_id)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[Generation | None] = [None] * len(prompts)
    for batch in tqdm(_batches(order, batch_size), desc="generating", disable=not progress):
        input_ids, attention_mask = left_pad([prompts[i] for i in batch], pad_id)
        with _neutral_generation_config(model):
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
            )
        new_tokens = out[:, input_ids.shape[1] :].tolist()
        done = []
        for i, tokens in zip(batch, new_tokens, strict=True):
            answer, finished = trim_answer(tokens, stop_ids)
            results[i] = Generation(list(prompts[i]), answer, finished)
            done.append(results[i])
        if on_batch is not None:
            on_batch(batch, done)
    return results  # type: ignore[return-value]


def generate_vllm(
    model: str,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    dtype: str = "bfloat16",
    revision: str | None = None,
    chunk_size: int = 256,
    on_batch: BatchCallback | None = None,
    progress: bool = True,
    **llm_kwargs: object,
) -> list[Generation]:
    """Greedy answers with vLLM (temperature 0), in chunks of `chunk_size` prompts for caching.

    Prompts go in as token ids, so both backends see identical inputs; vLLM may include the stop
    token in `token_ids`, which `trim_answer` removes.
    """
    from vllm import LLM, SamplingParams

    # generation_config="vllm": ignore the checkpoint's generation_config.json defaults, as the
    # transformers path does; the sampling parameters below are then all that acts.
    llm_kwargs = {"generation_config": "vllm", **llm_kwargs}
    llm = LLM(model=model, revision=revision, dtype=dtype, seed=0, **llm_kwargs)
    params = SamplingParams(
        n=1,
        temperature=0.0,
        repetition_penalty=1.0,
        max_tokens=max_new_tokens,
        stop_token_ids=list(stop_ids),
    )
    results: list[Generation | None] = [None] * len(prompts)
    for batch in tqdm(
        _batches(list(range(len(prompts))), chunk_size),
        desc="generating (vLLM)",
        disable=not progress,
    ):
        inputs = [{"prompt_token_ids": list(prompts[i])} for i in batch]
        outputs = llm.generate(inputs, params, use_tqdm=False)
        done = []
        for i, output in zip(batch, outputs, strict=True):
            completion = output.outputs[0]
            answer, found = trim_answer(list(completion.token_ids), stop_ids)
            finished = found or completion.finish_reason == "stop"
            results[i] = Generation(list(prompts[i]), answer, finished)
            done.append(results[i])
        if on_batch is not None:
            on_batch(batch, done)
    return results  # type: ignore[return-value]
