"""Batched greedy generation engines: transformers (the one loop of `helpers.generation`) or
vLLM, same records either way.

Each record holds the prompt token ids, the answer token ids (trimmed at, and excluding, the first
stop token) and whether the answer finished (hit a stop token) or ran into `max_new_tokens`.
Where the transformers engine runs (here or on NDIF) is the execution backend's business.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from helpers.generation import (
    Generation,
    batch_order,
    greedy_answers,
    greedy_config,
    left_pad,
    local_generate,
    neutral_generation_config,
    trim_answer,
)

__all__ = [
    "BACKENDS",
    "Generation",
    "generate_transformers",
    "generate_vllm",
    "greedy_config",
    "left_pad",
    "neutral_generation_config",
    "resolve_backend",
    "stop_token_ids",
    "trim_answer",
]

BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm", "ndif")


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
    return greedy_answers(
        local_generate(model),
        prompts,
        max_new_tokens=max_new_tokens,
        stop_ids=stop_ids,
        pad_id=pad_id,
        batch_size=batch_size,
        on_batch=on_batch,
        progress=progress,
    )


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
        batch_order(prompts, chunk_size, "given"),
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
