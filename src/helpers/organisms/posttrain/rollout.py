"""Sampling completions from a causal LM and scoring them token by token.

Sequences are laid out as TRL lays them out: ``tokenizer(prompt)`` (so ``<bos>`` when the tokenizer
adds it) followed by the sampled completion up to and including the first ``<eos>``. Generation uses
left padding; the returned `Rollout` is right-padded, so positions are the natural 0..n-1 and no
position ids are needed when scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from helpers.generation import generate_tokens, local_generate


@dataclass
class Rollout:
    """Sampled completions, right-padded: ``input_ids``/``attention_mask``/``completion_mask`` are [N, L]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # 1 on completion tokens (including the final eos)
    prompt_index: torch.Tensor  # [N] index of each sample's prompt in the prompts given
    completions: list[str]  # decoded completion text, special tokens stripped
    terminated: torch.Tensor  # [N] bool: the completion ended with eos (not cut at max_new_tokens)

    @property
    def action_mask(self) -> torch.Tensor:
        """Mask aligned with `token_logprobs` output ([N, L-1]): 1 where the predicted token is a completion token."""
        return self.completion_mask[:, 1:]

    @property
    def completion_lengths(self) -> torch.Tensor:
        """Number of completion tokens per sample (including eos)."""
        return self.completion_mask.sum(1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: torch.Tensor) -> Rollout:
        """The samples at `idx` (a 1-D index tensor), trimmed to their longest sequence."""
        width = int(self.attention_mask[idx].sum(1).max())
        return Rollout(
            input_ids=self.input_ids[idx, :width],
            attention_mask=self.attention_mask[idx, :width],
            completion_mask=self.completion_mask[idx, :width],
            prompt_index=self.prompt_index[idx],
            completions=[self.completions[i] for i in idx.tolist()],
            terminated=self.terminated[idx],
        )


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt, exactly as TRL's trainers tokenize plain-text prompts."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not a single string")
    if not prompts:
        raise ValueError("no prompts given; pass at least one prompt string")
    ids = tokenizer(list(prompts))["input_ids"]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise ValueError(f"prompts {empty[:5]} tokenize to nothing; every prompt needs text")
    return ids


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad lists of ids into (ids [N, L], attention mask [N, L])."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def build_sequences(
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate prompt and completion ids per row; right-pad; mark the completion tokens."""
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    ids, attn = right_pad(rows, pad_id)
    comp = torch.zeros_like(attn)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        comp[i, len(p) : len(p) + len(c)] = 1
    return ids, attn, comp


def _rng_context(device: torch.device):
    """Fork the RNG of `device` so seeding for sampling leaves the caller's global RNG untouched."""
    devices = [device] if device.type == "cuda" else []
    return (
        torch.random.fork_rng(devices=devices) if device.type in ("cpu", "cuda") else nullcontext()
    )


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    n_per_prompt: int,
    *,
    max_new_tokens: int,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> Rollout:
    """Sample `n_per_prompt` completions per prompt (pure temperature sampling, no top-k/top-p).

    Samples of one prompt are contiguous. Seeded: the same seed and model give the same samples.
    """
    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt={n_per_prompt}; pass at least 1")
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer needs eos and pad tokens; set tokenizer.pad_token / eos_token"
        )
    prompt_ids = encode_prompts(tokenizer, prompts)
    rep_ids = [ids for ids in prompt_ids for _ in range(n_per_prompt)]
    device = model.device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen_config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=tokenizer.bos_token_id,
    )
    was_training = model.training
    model.eval()
    try:
        with _rng_context(device):
            torch.manual_seed(seed)
            rows = generate_tokens(
                local_generate(model),
                rep_ids,
                gen_config,
                pad_id=pad,
                batch_size=batch_size,
                progress=progress,
                desc="sampling",
            )
    finally:
        model.train(was_training)
    completion_ids = [row[: row.index(eos) + 1] if eos in row else row for row in rows]
    input_ids, attention_mask, completion_mask = build_sequences(rep_ids, completion_ids, pad)
    return Rollout(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        completion_mask=completion_mask.to(device),
        prompt_index=torch.arange(len(prompt_ids)).repeat_interleave(n_per_prompt),
        completions=tokenizer.batch_decode(completion_ids, skip_special_tokens=True),
        terminated=torch.tensor([bool(c) and c[-1] == eos for c in completion_ids]),
    )


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token under `model` (logits divided by `temperature`).

    Returns (logp [N, L-1], logits [N, L-1, V]) where position t scores token t+1; for right-padded
    sequences, as in a `Rollout`.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return logp, logits
