"""The residual graph of a pre-norm decoder: nodes, their serial order, and the edge mask.

Every module of a pre-norm decoder reads the sum of all earlier module outputs, so an edge
u -> v exists exactly when u comes before v in the order
emb < attn.0 < mlp.0 < attn.1 < ... < mlp.(L-1) < logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ResidualGraph:
    """Sources, targets and the (sources x targets) edge mask of an L-layer residual graph."""

    n_layers: int
    sources: list[str] = field(repr=False)
    targets: list[str] = field(repr=False)
    mask: torch.Tensor = field(repr=False)  # bool [n_sources, n_targets]

    @property
    def n_edges(self) -> int:
        """Number of real edges, (2L+1)(2L+2)/2."""
        return int(self.mask.sum())

    def edge_names(self) -> list[str]:
        """Names ("src->tgt") of the real edges, in row-major (source-major) order of the mask."""
        return [f"{self.sources[s]}->{self.targets[t]}" for s, t in self.mask.nonzero().tolist()]

    def edge_index(self) -> torch.Tensor:
        """[n_edges, 2] (source, target) indices of the real edges, in `edge_names` order."""
        return self.mask.nonzero()


def node_names(n_layers: int) -> tuple[list[str], list[str]]:
    """Source names (emb, attn.l, mlp.l) and target names (attn.l, mlp.l, logits), in serial order."""
    modules = [f"{kind}.{layer}" for layer in range(n_layers) for kind in ("attn", "mlp")]
    return ["emb", *modules], [*modules, "logits"]


def residual_graph(n_layers: int) -> ResidualGraph:
    """The residual graph of an `n_layers`-layer decoder.

    Source i (emb = 0, attn.0 = 1, mlp.0 = 2, ...) feeds target j (attn.0 = 0, mlp.0 = 1, ...)
    iff i <= j: target j's input is the sum of the outputs of sources 0..j.
    """
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    sources, targets = node_names(n_layers)
    n = len(sources)
    mask = torch.ones(n, n, dtype=torch.bool).triu()
    return ResidualGraph(n_layers=n_layers, sources=sources, targets=targets, mask=mask)
