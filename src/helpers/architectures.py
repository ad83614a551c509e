"""Architecture adapters: where a Hugging Face causal LM keeps the modules of its residual graph.

An adapter names, relative to the causal-LM module, the token embedding, the list of decoder
layers, and inside each layer the attention and MLP modules with their pre-norms, plus the final
norm. EAP reads a source at a module's output and a target at a clone of its pre-norm's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Adapter:
    """Dotted module paths (relative to the causal LM) of one architecture family."""

    embed: str
    layers: str
    attn: str
    attn_norm: str
    mlp: str
    mlp_norm: str
    final_norm: str
    attn_output_is_tuple: bool = True  # self_attn returns (output, weights)


# Llama, Mistral, Qwen2 and Qwen3 share the pre-norm layout
# x = x + self_attn(input_layernorm(x)); x = x + mlp(post_attention_layernorm(x)).
_LLAMA_LIKE = Adapter(
    embed="model.embed_tokens",
    layers="model.layers",
    attn="self_attn",
    attn_norm="input_layernorm",
    mlp="mlp",
    mlp_norm="post_attention_layernorm",
    final_norm="model.norm",
)

ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA_LIKE,  # also DeepSeek-Math 7B
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,  # Qwen2.5, R1-Distill-Qwen, AceReason-Nemotron
    "qwen3": _LLAMA_LIKE,
}


class UnsupportedArchitecture(ValueError):
    """The model's family has no adapter."""


def register_adapter(model_type: str, adapter: Adapter) -> None:
    """Add (or replace) the adapter used for `config.model_type == model_type`.

    Only for pre-norm decoders whose residual stream is exactly the sum of the embedding and
    the attention and MLP outputs (no post-norms on the branches, no parallel attention/MLP).
    """
    ADAPTERS[model_type] = adapter


def model_type_of(model: torch.nn.Module) -> str:
    """`config.model_type` of a transformers causal LM."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedArchitecture(
            f"{type(model).__name__} has no `config.model_type`; edge_scores needs a Hugging Face "
            "causal LM (e.g. LlamaForCausalLM) or an nnsight model wrapping one"
        )
    return model_type


def adapter_for(model: torch.nn.Module) -> Adapter:
    """The adapter of `model`'s family, checked against the module tree."""
    model_type = model_type_of(model)
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise UnsupportedArchitecture(
            f"no EAP adapter for model_type {model_type!r} ({type(model).__name__}). Supported "
            f"families: {', '.join(sorted(ADAPTERS))}. To add one, check that the family is a "
            "pre-norm decoder whose residual stream is the sum of embedding, attention and MLP "
            "outputs, then call helpers.architectures.register_adapter(model_type, Adapter(...)) "
            "with the dotted paths of its embedding, layers, attention, MLP and norms."
        )
    layers = resolve(model, adapter.layers)
    for path in (adapter.embed, adapter.final_norm):
        resolve(model, path)
    for part in (adapter.attn, adapter.attn_norm, adapter.mlp, adapter.mlp_norm):
        resolve(layers[0], part)
    return adapter


def resolve(root: Any, path: str) -> Any:
    """Follow a dotted attribute path from `root` (a module or an nnsight envoy)."""
    node = root
    for name in path.split("."):
        if not hasattr(node, name):
            raise UnsupportedArchitecture(
                f"{type(root).__name__} has no submodule {path!r} (missing {name!r}); its "
                "adapter does not match this model, register a corrected one with "
                "helpers.architectures.register_adapter"
            )
        node = getattr(node, name)
    return node


def n_layers_of(model: torch.nn.Module) -> int:
    """Number of decoder layers the forward actually runs."""
    return len(resolve(model, adapter_for(model).layers))
