"""Pretrain a small Llama from scratch on two-format arithmetic documents (nanoGPT-style loop).

Documents are ``<bos> + prompt + solution + <eos>``; each training problem gets one solution format,
drawn with the mixture's ``format_shares``. AdamW, linear warm-up then cosine decay, gradient clipping,
everything seeded.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from helpers.organisms.tasks import DEFAULT_N_OPS, FORMATS, Problem, make_problems, prompt_of


@dataclass
class PretrainConfig:
    """Model size, data mixture and optimisation settings of the base organism."""

    # model
    n_layers: int = 6
    hidden_size: int = 160
    n_heads: int = 4
    n_kv_heads: int = 4
    intermediate_size: int = 480
    max_length: int = 160
    # data
    format_shares: dict[str, float] = field(default_factory=lambda: {"steps": 0.5, "pairs": 0.5})
    n_problems: int = 60_000
    n_ops: tuple[int, int] = DEFAULT_N_OPS
    # optimisation
    steps: int = 2200
    batch_size: int = 64
    learning_rate: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25

    def __post_init__(self) -> None:
        shares = self.format_shares
        if set(shares) - set(FORMATS) or not shares:
            raise ValueError(f"format_shares keys must be among {FORMATS}, got {sorted(shares)}")
        if any(s < 0 for s in shares.values()) or not math.isclose(sum(shares.values()), 1.0):
            raise ValueError(f"format_shares must be non-negative and sum to 1, got {shares}")
        if self.hidden_size % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError("hidden_size must divide by n_heads, and n_heads by n_kv_heads")
        self.n_ops = cast(tuple[int, int], tuple(self.n_ops))  # JSON gives a list


def build_model(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A freshly initialised (seeded) LlamaForCausalLM of the configured size."""
    # transformers' annotations omit rope_theta, which LlamaConfig accepts
    config = LlamaConfig(  # type: ignore[call-arg]
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_length,
        rms_norm_eps=1e-5,
        rope_theta=10_000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def draw_formats(n: int, shares: dict[str, float], seed: int) -> list[str]:
    """``n`` solution formats drawn independently with probabilities ``shares`` (seeded)."""
    rng = random.Random(seed)
    formats, weights = zip(*sorted(shares.items()), strict=True)
    return rng.choices(formats, weights, k=n)


def mixture_documents(problems: list[Problem], shares: dict[str, float], seed: int) -> list[str]:
    """One ``prompt + solution`` text per problem, its format drawn with probabilities ``shares``."""
    formats = draw_formats(len(problems), shares, seed)
    return [prompt_of(p) + p.solutions[f] for p, f in zip(problems, formats, strict=True)]


def encode_documents(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, labels)`` of ``<bos> text <eos>``; labels are -100 on padding."""
    rows = [tokenizer(t).input_ids + [tokenizer.eos_token_id] for t in texts]
    too_long = max(len(r) for r in rows)
    if too_long > max_length:
        raise ValueError(f"a document has {too_long} tokens > max_length={max_length}; raise it")
    width = too_long
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    return ids, labels


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to ``learning_rate``, then cosine decay to ``min_lr_ratio * learning_rate``."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


@dataclass
class PretrainResult:
    """The trained model, its loss history and wall time."""

    model: LlamaForCausalLM
    history: list[dict]
    wall_time_s: float
    config: dict


def pretrain(
    cfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase, *, progress: bool = True
) -> PretrainResult:
    """Train the base organism from scratch on the configured mixture; returns it in eval mode."""
    start = time.perf_counter()
    problems = make_problems("train", cfg.n_problems, seed=cfg.seed, n_ops=cfg.n_ops)
    texts = mixture_documents(problems, cfg.format_shares, cfg.seed)
    input_ids, labels = encode_documents(texts, tokenizer, cfg.max_length)
    lengths = (labels != -100).sum(1)

    model = build_model(cfg, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress)
    running = None
    for step in bar:
        idx = torch.randint(len(input_ids), (cfg.batch_size,), generator=generator)
        width = int(lengths[idx].max())
        batch_ids, batch_labels = input_ids[idx, :width], labels[idx, :width]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(
            input_ids=batch_ids, attention_mask=(batch_labels != -100).long(), labels=batch_labels
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "lr": lr_at(step, cfg),
                    "grad_norm": float(grad_norm),
                }
            )
            bar.set_postfix(loss=f"{running:.3f}")
        optimizer.step()
    model.eval()
    return PretrainResult(model, history, time.perf_counter() - start, asdict(cfg))
