"""Per-model diagnostics the organism set records: distance to the base (mean per-token KL on
held-out prompts) and how much of the EAP loss the first answer token carries at a given alpha."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.organisms.evaluate import generate
from helpers.organisms.posttrain.losses import exact_kl
from helpers.organisms.posttrain.sft import demonstration_batch


@torch.no_grad()
def _token_logits(
    models: Sequence[PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 128,
) -> list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
    """Per batch: (logits of each model at answer positions, completion mask, input ids)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        ids, attn, comp = demonstration_batch(
            tokenizer, prompts[i : i + batch_size], completions[i : i + batch_size]
        )
        logits = [
            m(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
            for m in models
        ]
        out.append((logits, comp[:, 1:].bool(), ids[:, 1:]))
    return out


def kl_to_base(
    model: PreTrainedModel,
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    temperature: float = 0.7,
    max_new_tokens: int = 80,
    seed: int = 0,
) -> float:
    """Mean exact per-token KL(model || base) over the answer tokens (eos included) of one sample
    per prompt drawn from ``model`` at ``temperature``: the distance the report matches budgets on."""
    samples = generate(
        model,
        tokenizer,
        list(prompts),
        num_samples=1,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
    ).completions
    total, count = 0.0, 0
    for logits, mask, _ in _token_logits(
        [model, base], tokenizer, prompts, [s[0] for s in samples]
    ):
        kl = exact_kl(logits[0], logits[1])
        total += float(kl[mask].sum())
        count += int(mask.sum())
    return total / max(1, count)


def first_token_share(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    alpha: float,
) -> dict[str, float]:
    """Share of the summed NLL over the first T_cut answer tokens carried by the first one.

    T_cut = max(1, int(alpha * mean answer length)), the study's truncation; the answers are the
    model's own (e.g. its correct greedy answers), scored by the model itself.
    """
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions]
    t_cut = max(1, int(alpha * sum(lengths) / max(1, len(lengths))))
    first, window = 0.0, 0.0
    for (logits,), mask, targets in _token_logits([model], tokenizer, prompts, completions):
        nll = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
        k = torch.where(mask, mask.long().cumsum(-1) - 1, -1)
        first += float(nll[k == 0].sum())
        window += float(nll[(k >= 0) & (k < t_cut)].sum())
    return {
        "alpha": alpha,
        "t_cut": t_cut,
        "first_token_share": first / window if window else float("nan"),
    }
