"""Evaluate a checkpoint on held-out problems: greedy pass@1, pass@k and majority@k at temperature,
format shares and mean answer length. Batched generation (`helpers.generation`), seeded."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from helpers.generation import generate_tokens, local_generate
from helpers.organisms.grading import classify_format, extract_answer
from helpers.organisms.tasks import FORMATS, Problem, make_problems, prompt_of

FORMAT_LABELS: tuple[str, ...] = (*FORMATS, "other")


@dataclass
class Generations:
    """Decoded completions (cut at eos) and their lengths in tokens (eos excluded), per prompt."""

    completions: list[list[str]]
    lengths: list[list[int]]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    num_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 80,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> Generations:
    """``num_samples`` completions per prompt; greedy when ``temperature == 0``, else pure sampling."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy decoding gives one completion per prompt; set temperature > 0")
    sampling = temperature > 0
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_k=0 if sampling else None,
        top_p=1.0 if sampling else None,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    prompts_per_batch = max(1, batch_size // num_samples)
    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rows = generate_tokens(
            local_generate(model),
            prompt_ids,
            gen_config,
            pad_id=tokenizer.pad_token_id,
            batch_size=prompts_per_batch,
            progress=progress,
            desc="generate",
        )
    model.train(was_training)
    # length = index of first eos, or the whole budget when none was produced
    lengths = [row.index(eos) if eos in row else len(row) for row in rows]
    texts: list[str] = [
        cast(str, tokenizer.decode(row[:n], skip_special_tokens=True))
        for row, n in zip(rows, lengths, strict=True)
    ]
    k = num_samples
    return Generations(
        [texts[i * k : (i + 1) * k] for i in range(len(prompts))],
        [lengths[i * k : (i + 1) * k] for i in range(len(prompts))],
    )


def format_shares(completions: list[str]) -> dict[str, float]:
    """Fraction of completions in each format (``steps``, ``pairs``, ``other``)."""
    counts = Counter(classify_format(c) for c in completions)
    total = max(1, len(completions))
    return {label: counts.get(label, 0) / total for label in FORMAT_LABELS}


def majority_answer(completions: list[str]) -> int | None:
    """Most frequent extracted answer (ties: first seen), ignoring completions with no answer."""
    answers = [a for a in (extract_answer(c) for c in completions) if a is not None]
    return Counter(answers).most_common(1)[0][0] if answers else None


@dataclass
class EvalResult:
    """Held-out evaluation of one checkpoint (shares are fractions; lengths are tokens)."""

    n_problems: int
    greedy_pass1: float
    greedy_format_shares: dict[str, float]
    greedy_accuracy_by_format: dict[str, float | None]
    greedy_mean_length: float
    greedy_accuracy_by_ops: dict[str, float]
    k: int
    temperature: float
    n_sampled: int | None = None
    greedy_pass1_first_200: float | None = None  # what tests re-evaluate (the first 200 problems)
    greedy_pass1_sampled_subset: float | None = None
    pass_at_k: float | None = None
    maj_at_k: float | None = None
    sample_pass1: float | None = None
    sample_format_shares: dict[str, float] | None = None
    sample_mean_length: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _by_ops(problems: list[Problem], correct: list[bool]) -> dict[str, float]:
    """Greedy accuracy per number of operations (keys are strings, for JSON)."""
    out: dict[str, float] = {}
    for n in sorted({p.n_ops for p in problems}):
        hits = [ok for p, ok in zip(problems, correct, strict=True) if p.n_ops == n]
        out[str(n)] = sum(hits) / len(hits)
    return out


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem] | None = None,
    *,
    n: int = 500,
    k: int = 8,
    temperature: float = 0.7,
    max_new_tokens: int = 80,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    n_sampled: int | None = None,
) -> EvalResult:
    """Greedy pass@1 plus (when ``k > 0``) pass@k / majority@k over ``k`` samples at ``temperature``.

    ``problems`` defaults to the first ``n`` test-split problems of seed 0 (default difficulty);
    sampled metrics use the first ``n_sampled`` of them (default: all), sampling being k times dearer.
    """
    if problems is None:
        problems = make_problems("test", n, seed=0)
    if not problems:
        raise ValueError("no problems to evaluate; pass a non-empty list or n > 0")
    prompts = [prompt_of(p) for p in problems]
    golds = [p.answer for p in problems]
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress
    )
    greedy = generate(model, tokenizer, prompts, temperature=0.0, **kwargs)
    firsts = [c[0] for c in greedy.completions]
    correct = [extract_answer(c) == g for c, g in zip(firsts, golds, strict=True)]
    by_format: dict[str, float | None] = {}
    for label in FORMAT_LABELS:
        hits = [ok for c, ok in zip(firsts, correct, strict=True) if classify_format(c) == label]
        by_format[label] = sum(hits) / len(hits) if hits else None
    result = EvalResult(
        n_problems=len(problems),
        greedy_pass1=sum(correct) / len(problems),
        greedy_format_shares=format_shares(firsts),
        greedy_accuracy_by_format=by_format,
        greedy_mean_length=sum(n for (n,) in greedy.lengths) / len(problems),
        greedy_accuracy_by_ops=_by_ops(problems, correct),
        greedy_pass1_first_200=sum(correct[:200]) / min(200, len(correct)),
        k=k,
        temperature=temperature,
    )
    if k > 0:
        m = len(problems) if n_sampled is None else min(n_sampled, len(problems))
        prompts, golds = prompts[:m], golds[:m]
        result.n_sampled = m
        samples = generate(
            model, tokenizer, prompts, num_samples=k, temperature=temperature, **kwargs
        )
        sample_hits = [
            [extract_answer(c) == g for c in cs]
            for cs, g in zip(samples.completions, golds, strict=True)
        ]
        flat = [c for cs in samples.completions for c in cs]
        result.pass_at_k = sum(any(h) for h in sample_hits) / m
        result.sample_pass1 = sum(sum(h) for h in sample_hits) / (m * k)
        result.greedy_pass1_sampled_subset = sum(correct[:m]) / m
        result.maj_at_k = (
            sum(majority_answer(cs) == g for cs, g in zip(samples.completions, golds, strict=True))
            / m
        )
        result.sample_format_shares = format_shares(flat)
        result.sample_mean_length = sum(sum(ls) for ls in samples.lengths) / len(flat)
    return result
