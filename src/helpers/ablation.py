"""Exact edge ablation: the ground truth that EAP's first-order scores approximate.

Ablating edge u -> v removes u's clean output from v's input (in_v <- in_v - O_u at the counted
positions) in an otherwise normal forward pass; its effect is the change in each sample's loss.
One forward pass per edge, so this is for small models (the organisms), as a faithfulness check.

`knocked_out` removes a set of edges at once, inside any forward (``generate`` included): each
target's pre-norm input loses the outputs its removed sources produced in the same call, i.e. the
circuit without those edges, zero-ablated. With the KV cache of ``generate`` every step sees the
same removal, so cached keys and values are those of the ablated model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps
from tqdm.auto import tqdm

from helpers.architectures import adapter_for, resolve
from helpers.eap import Positions, per_sample_loss, position_ids_from_mask, position_weights
from helpers.graph import residual_graph


@dataclass
class AblationEffects:
    """Exact loss change per sample and edge, ``effects [batch, S, T]`` (NaN where no edge)."""

    effects: np.ndarray
    clean_loss: np.ndarray
    sources: list[str]
    targets: list[str]
    mask: np.ndarray


Edge = tuple[int, int]  # (source index, target index) in `residual_graph` order


def _source_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """emb, attn.0, mlp.0, ...: the modules whose outputs are the graph's sources, in order."""
    ad = adapter_for(model)
    layers = resolve(model, ad.layers)
    mods = [resolve(model, ad.embed)]
    for layer in layers:
        mods += [resolve(layer, ad.attn), resolve(layer, ad.mlp)]
    return mods


def _target_norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The pre-norms of attn.0, mlp.0, ..., and the final norm: the graph's targets, in order."""
    ad = adapter_for(model)
    layers = resolve(model, ad.layers)
    mods = []
    for layer in layers:
        mods += [resolve(layer, ad.attn_norm), resolve(layer, ad.mlp_norm)]
    return [*mods, resolve(model, ad.final_norm)]


def check_edges(edges: Iterable[Edge], n_layers: int) -> list[Edge]:
    """The edges as (source, target) int pairs; raises, naming the fix, for one not in the graph."""
    graph = residual_graph(n_layers)
    n_sources, n_targets = graph.mask.shape
    out = []
    for edge in edges:
        s, t = (int(i) for i in edge)
        if not (0 <= s < n_sources and 0 <= t < n_targets and bool(graph.mask[s, t])):
            raise ValueError(
                f"edge {edge!r} is not in the {n_layers}-layer residual graph: give (source, "
                f"target) indices with 0 <= source <= target < {n_targets} (graph.edge_index())"
            )
        out.append((s, t))
    return out


@contextmanager
def knocked_out(
    model: torch.nn.Module,
    edges: Iterable[Edge],
    *,
    scale: float = 1.0,
    baseline: Mapping[int, torch.Tensor] | None = None,
) -> Iterator[None]:
    """Within the block, every forward of `model` runs with `edges` removed.

    Forward hooks keep the listed sources' outputs of the current call; pre-hooks on the targets'
    norms subtract ``scale * (O_u - b_u)``: zero ablation with no `baseline`, mean ablation with
    the sources' mean outputs (`source_means`), and a partial removal for ``scale < 1``. An empty
    set registers nothing, so the model is exactly the plain one.
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(
            f"scale is the fraction of each edge removed: give 0 < scale <= 1, not {scale}"
        )
    n_layers = len(resolve(model, adapter_for(model).layers))
    removed = check_edges(edges, n_layers)
    sources, targets = _source_modules(model), _target_norms(model)
    by_target: dict[int, list[int]] = {}
    for s, t in sorted(set(removed)):
        by_target.setdefault(t, []).append(s)
    missing = sorted({s for s, _ in removed} - set(baseline or {})) if baseline is not None else []
    if missing:
        raise ValueError(
            f"baseline has no mean output for sources {missing}: build it with source_means"
        )
    kept: dict[int, torch.Tensor] = {}

    def keep(index: int):  # noqa: ANN202 - a hook factory
        def hook(_mod, _inp, out):
            o = out[0] if isinstance(out, tuple) else out
            if baseline is not None:
                o = o - baseline[index].to(o.dtype)
            kept[index] = o if scale == 1.0 else scale * o

        return hook

    def subtract(froms: list[int]):  # noqa: ANN202
        def hook(_mod, args):
            x = args[0]
            for s in froms:
                x = x - kept[s].to(x.dtype)
            return (x, *args[1:])

        return hook

    handles = [sources[s].register_forward_hook(keep(s)) for s in {s for s, _ in removed}]
    handles += [targets[t].register_forward_pre_hook(subtract(f)) for t, f in by_target.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        kept.clear()


@torch.no_grad()
def source_means(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> dict[int, torch.Tensor]:
    """Each source's output averaged over the batch's real tokens: the mean-ablation baseline."""
    sources = _source_modules(model)
    sums: dict[int, torch.Tensor] = {}
    real = attention_mask.bool()

    def keep(index: int):  # noqa: ANN202 - a hook factory
        def hook(_mod, _inp, out):
            o = out[0] if isinstance(out, tuple) else out
            sums[index] = o[real].double().mean(0)

        return hook

    handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(sources)]
    try:
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
    finally:
        for h in handles:
            h.remove()
    return {i: v.float() for i, v in sums.items()}


@torch.no_grad()
def edge_ablation_effects(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    positions: Positions = "all",
    scale: float = 1.0,
    progress: bool = True,
) -> AblationEffects:
    """Loss change of every real edge's zero-ablation, per sample, by real patched forwards.

    ``scale`` removes ``scale * O_u`` instead of ``O_u`` (a small scale probes the linear regime).
    """
    model.eval()
    sources, targets = _source_modules(model), _target_norms(model)
    graph = residual_graph(len(resolve(model, adapter_for(model).layers)))
    pos = position_ids_from_mask(attention_mask)
    weights = position_weights(attention_mask, labels, positions)[..., None]

    def forward() -> torch.Tensor:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).logits
        return per_sample_loss(logits, labels).double()

    outputs: list[torch.Tensor] = []

    def keep(_mod, _inp, out):
        outputs.append((out[0] if isinstance(out, tuple) else out).detach())

    handles = [m.register_forward_hook(keep) for m in sources]
    try:
        clean = forward()
    finally:
        for h in handles:
            h.remove()

    effects = np.full((input_ids.shape[0], *graph.mask.shape), np.nan)
    pairs = [(s, t) for s, t in zip(*np.nonzero(graph.mask.numpy()), strict=True)]
    for s, t in tqdm(pairs, desc="ablating edges", disable=not progress):
        delta = (scale * outputs[s] * weights).to(outputs[s].dtype)

        def patch(_mod, args, delta=delta):
            return (args[0] - delta, *args[1:])

        handle = targets[t].register_forward_pre_hook(patch)
        try:
            effects[:, s, t] = (forward() - clean).cpu().numpy()
        finally:
            handle.remove()
    return AblationEffects(
        effects=effects,
        clean_loss=clean.cpu().numpy(),
        sources=graph.sources,
        targets=graph.targets,
        mask=graph.mask.numpy(),
    )


def agreement(eap: np.ndarray, exact: np.ndarray, ks: tuple[int, ...] = (5, 10, 20)) -> dict:
    """How well EAP ranks edges like exact ablation: Spearman (signed and |.|) and top-k overlap."""
    eap, exact = np.asarray(eap, dtype=float).ravel(), np.asarray(exact, dtype=float).ravel()
    keep = np.isfinite(eap) & np.isfinite(exact)
    eap, exact = eap[keep], exact[keep]
    out = {
        "n_edges": int(keep.sum()),
        "spearman": float(sps.spearmanr(eap, exact).statistic),
        "spearman_abs": float(sps.spearmanr(np.abs(eap), np.abs(exact)).statistic),
        "pearson": float(np.corrcoef(eap, exact)[0, 1]),
        "sign_agreement": float(np.mean(np.sign(eap) == np.sign(exact))),
    }
    top_eap, top_exact = np.argsort(-np.abs(eap)), np.argsort(-np.abs(exact))
    for k in ks:
        if k <= eap.size:
            out[f"top{k}_overlap"] = len(set(top_eap[:k]) & set(top_exact[:k])) / k
    return out
