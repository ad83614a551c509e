"""Random-initialised small causal LMs of the supported families, for tests and benchmarks.

Each family keeps the structural features that matter for the residual graph: grouped-query
attention everywhere, Qwen2's q/k/v biases, Qwen3's q/k norms, a Mistral sliding window short
enough to bite on test sequences, and tied embeddings where the family's small models tie them.
No network access: models are built from configs, weights drawn from a seeded generator.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

FAMILIES: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3")

_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}

# Structural features per family (on top of the shared sizes below).
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"tie_word_embeddings": False},
    # Mistral attends within a sliding window; 8 tokens is shorter than any test sequence.
    "mistral": {"tie_word_embeddings": False, "sliding_window": 8},
    # Qwen2 always has q/k/v biases; its small checkpoints (Qwen2.5-0.5B/1.5B) tie embeddings.
    "qwen2": {"tie_word_embeddings": True},
    # Qwen3 adds per-head q/k RMSNorms; Qwen3-0.6B ties embeddings.
    "qwen3": {"tie_word_embeddings": True},
}


def tiny_config(
    family: str,
    *,
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    vocab_size: int = 128,
    **overrides: Any,
) -> PretrainedConfig:
    """Config of a small model of `family` (4 query heads, 2 key/value heads, MLP 2x hidden)."""
    if family not in _CLASSES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    n_heads = overrides.pop("num_attention_heads", 4)
    if hidden_size % n_heads:
        raise ValueError(
            f"hidden_size={hidden_size} is not divisible by num_attention_heads={n_heads}; "
            "pass a hidden_size that is a multiple of the number of heads"
        )
    kwargs: dict[str, Any] = {
        "num_hidden_layers": num_hidden_layers,
        "hidden_size": hidden_size,
        "vocab_size": vocab_size,
        "num_attention_heads": n_heads,
        "num_key_value_heads": max(1, n_heads // 2),
        "head_dim": hidden_size // n_heads,
        "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": 4096,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        **_FAMILY_DEFAULTS[family],
    }
    kwargs.update(overrides)
    config_cls = _CLASSES[family][0]
    config = config_cls(**kwargs)
    return config


def tiny_model(
    family: str,
    *,
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    vocab_size: int = 128,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> PreTrainedModel:
    """Random-initialised causal LM of `family` in eval mode; `overrides` go to the config.

    The global torch RNG is left untouched: weights come from a forked, seeded generator.
    """
    config = tiny_config(
        family,
        num_hidden_layers=num_hidden_layers,
        hidden_size=hidden_size,
        vocab_size=vocab_size,
        **overrides,
    )
    model_cls = _CLASSES[family][1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.to(dtype).eval()  # type: ignore[arg-type]  # transformers' stub of .to
