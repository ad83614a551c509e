"""Residual graph (names, order, mask) and architecture adapters."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from helpers.architectures import ADAPTERS, UnsupportedArchitecture, adapter_for, n_layers_of
from helpers.graph import residual_graph
from helpers.tiny_models import FAMILIES, tiny_model


@pytest.mark.parametrize("n_layers", [1, 2, 5])
def test_nodes_and_edge_count(n_layers: int) -> None:
    graph = residual_graph(n_layers)
    assert graph.sources[0] == "emb"
    assert graph.targets[-1] == "logits"
    assert len(graph.sources) == len(graph.targets) == 2 * n_layers + 1
    assert graph.sources[1:] == graph.targets[:-1]
    assert graph.mask.dtype == torch.bool
    assert graph.mask.shape == (2 * n_layers + 1, 2 * n_layers + 1)
    assert graph.n_edges == (2 * n_layers + 1) * (2 * n_layers + 2) // 2
    assert len(graph.edge_names()) == graph.n_edges
    assert len(set(graph.edge_names())) == graph.n_edges


def test_two_layer_graph_spelled_out() -> None:
    graph = residual_graph(2)
    assert graph.sources == ["emb", "attn.0", "mlp.0", "attn.1", "mlp.1"]
    assert graph.targets == ["attn.0", "mlp.0", "attn.1", "mlp.1", "logits"]
    assert graph.edge_names()[:5] == [
        "emb->attn.0",
        "emb->mlp.0",
        "emb->attn.1",
        "emb->mlp.1",
        "emb->logits",
    ]
    assert graph.edge_names()[-1] == "mlp.1->logits"
    assert "mlp.0->attn.0" not in graph.edge_names()
    assert "attn.1->mlp.1" in graph.edge_names()


def test_mask_is_serial_order() -> None:
    """An edge exists iff the source comes strictly before the target in serial order."""
    graph = residual_graph(3)
    order = ["emb"] + graph.targets
    for i, source in enumerate(graph.sources):
        for j, target in enumerate(graph.targets):
            expected = order.index(source) < order.index(target)
            assert bool(graph.mask[i, j]) == expected, (source, target)
    rows, cols = graph.edge_index().T
    assert [
        f"{graph.sources[r]}->{graph.targets[c]}"
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
    ] == (graph.edge_names())


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_layer_count(bad) -> None:
    with pytest.raises(ValueError, match="positive int"):
        residual_graph(bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_resolve_every_family(family: str) -> None:
    model = tiny_model(family, num_hidden_layers=3)
    adapter = adapter_for(model)
    assert adapter is ADAPTERS[family]
    assert n_layers_of(model) == 3


def test_unknown_family_names_supported_ones_and_the_fix() -> None:
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(UnsupportedArchitecture) as info:
        adapter_for(model)
    message = str(info.value)
    for family in ("llama", "mistral", "qwen2", "qwen3", "gpt2", "register_adapter"):
        assert family in message
