"""Edge attribution patching (EAP) on the residual graph, through one nnsight trace.

For an edge u -> v, zero-ablating u's contribution to v's input changes the loss, to first order, by

    s(u -> v) = - sum_{t, d} O_u[t, d] * dL/d in_v[t, d]

where O_u is u's output (embedding, attention after o_proj, MLP) and in_v the input of v's pre-norm
(input_layernorm for attn.l, post_attention_layernorm for mlp.l, the final norm for logits),
differentiated through v's branch only: the trace replaces the norm's input by a clone and reads
the clone's gradient. One forward and one backward pass score every edge of every sample.

How, in one `envoy.trace`: source outputs are copied into a float32 [batch, S, seq, hidden]
buffer as the forward produces them (then weighted by the position rule); inside
`with loss.backward():` the branch gradients are requested in reverse serial order, as nnsight
requires, and each is contracted with the buffer as it arrives (a batched matrix-vector product
in float32), so no gradient buffer is kept. Only the [batch, S, S] scores and the per-sample loss
leave the trace, which keeps remote (NDIF) transfers small. Extra memory over a bare forward and
backward: the source buffer, (2L + 1) * batch * seq * hidden * 4 bytes, plus one float32 gradient.

Two properties worth knowing when reading scores: the scores into a target sum to
-<in_v, dL/d in_v> (the residual stream is the sum of earlier outputs), and because RMSNorm is
scale-invariant that sum is ~0 up to the norm's eps; in particular emb -> attn.0, the whole input
of attn.0, always scores ~0.

EAP-IG (`method="eap-ig"`, Hanna, Pezzelle & Belinkov 2024) replaces the one gradient by the mean of
m gradients along the path from the clean run to the zero ablation. Zero-ablating the edges into a
pre-norm target scales its whole input, which RMSNorm ignores, so no single shared path exists;
as in the reference implementation's activation variant (hannamw/EAP-IG, `get_scores_ig_activations`
with `intervention="zero"`), each source u gets its own path: u's output is scaled by
a_k = 1 - k/m (k = 0..m-1, at the counted positions) with everything downstream recomputed, and

    s_IG(u -> v) = - sum_{t, d} O_u[t, d] * (1/m) sum_k dL/d in_v[t, d] |_(O_u scaled by a_k)

(only the gradients of u's own path score u's edges, where the reference averages every node's
paths into every edge). k = 0 is the clean run, i.e. EAP, so m = 1 gives EAP exactly; the other
m - 1 steps run every source as its own row of one batched trace: (1 + (m - 1)(2L + 1)) times the
forward and backward of EAP.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from nnsight.intervention.envoy import Envoy
from tqdm.auto import tqdm

from helpers.architectures import Adapter, adapter_for, resolve
from helpers.backend import LOCAL, Local
from helpers.graph import ResidualGraph, residual_graph
from helpers.io import atomic_write

Positions = Literal["all", "labelled"]
Method = Literal["eap", "eap-ig"]
METHODS: tuple[str, ...] = ("eap", "eap-ig")
IG_ROWS = 256  # most rows (samples x sources) in one EAP-IG trace; more are split over traces
IGNORE_INDEX = -100
# (logits [batch, seq, vocab], labels [batch, seq]) -> float32 [batch]: what EAP differentiates.
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EdgeScores:
    """Per-sample EAP scores of every (source, target) pair; zero where no edge exists."""

    scores: torch.Tensor  # float32 [batch, n_sources, n_targets]
    sources: list[str]
    targets: list[str]
    mask: torch.Tensor  # bool [n_sources, n_targets]
    loss: torch.Tensor  # float32 [batch], the objective per sample (default: mean NLL)
    positions: str = "all"
    objective: str = "nll"  # name of the differentiated objective (see `edge_scores`)
    grad_norm_logits: torch.Tensor | None = None  # float32 [batch], |dL/dlogits| per sample
    grad_norm_resid: torch.Tensor | None = None  # float32 [batch], |dL/d final residual|
    method: str = "eap"  # "eap" or "eap-ig" (see `edge_scores`)
    steps: int = 1  # integration steps m of EAP-IG (1 for EAP)

    @property
    def graph(self) -> ResidualGraph:
        """The residual graph the scores live on."""
        return residual_graph((len(self.sources) - 1) // 2)

    def edge_names(self) -> list[str]:
        """Names ("src->tgt") of the real edges, row-major, matching `edge_values` columns."""
        return self.graph.edge_names()

    def edge_values(self) -> torch.Tensor:
        """[batch, n_edges] scores of the real edges only, in `edge_names` order."""
        return self.scores[:, self.mask]

    def save(self, path: str | os.PathLike) -> None:
        """Write to `path` (torch format) atomically."""
        atomic_write(path, lambda tmp: torch.save(asdict(self), tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> EdgeScores:
        """Read what `save` wrote; raises on a truncated file or non-finite content."""
        out = cls(**torch.load(path, weights_only=True))
        check_finite(out.scores, out.loss)
        return out


def concat(results: Sequence[EdgeScores]) -> EdgeScores:
    """Stack the samples of several EdgeScores of the same graph and position rule."""
    if not results:
        raise ValueError("concat needs at least one EdgeScores")
    first = results[0]
    for other in results[1:]:
        if (other.sources, other.positions, other.objective, other.method, other.steps) != (
            first.sources,
            first.positions,
            first.objective,
            first.method,
            first.steps,
        ):
            raise ValueError(
                "cannot concat EdgeScores of different graphs, position rules, objectives or "
                "methods"
            )

    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(r, name) for r in results]
        return None if any(p is None for p in parts) else torch.cat(parts)

    return EdgeScores(
        scores=torch.cat([r.scores for r in results]),
        sources=first.sources,
        targets=first.targets,
        mask=first.mask,
        loss=torch.cat([r.loss for r in results]),
        positions=first.positions,
        objective=first.objective,
        grad_norm_logits=cat("grad_norm_logits"),
        grad_norm_resid=cat("grad_norm_resid"),
        method=first.method,
        steps=first.steps,
    )


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over each sample's labelled tokens, float32 [batch].

    `labels` is aligned with the input (transformers convention): the logits at position t are
    scored against labels[t + 1]; -100 marks tokens outside the loss. Only the labelled rows of
    the logits are upcast to float32, so a bf16 model with a short answer pays little memory.
    """
    batch, seq, vocab = logits.shape
    labels = labels.to(logits.device)
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    nll = F.cross_entropy(logits[keep].float(), targets[keep], reduction="none")
    rows = keep.nonzero()[:, 0]
    total = torch.zeros(batch, dtype=torch.float32, device=logits.device).index_add(0, rows, nll)
    return total / keep.sum(-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def position_weights(
    attention_mask: torch.Tensor, labels: torch.Tensor, positions: Positions
) -> torch.Tensor:
    """float32 [batch, seq] weights of the position sum: 1 where a position counts, else 0.

    "all": every non-padding position (the authors' choice). "labelled": the positions whose
    logits enter the loss, i.e. t with labels[t + 1] != -100 (the last prompt token up to the
    second-to-last labelled token).
    """
    if positions == "all":
        return attention_mask.float()
    if positions == "labelled":
        weights = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        weights[:, :-1] = (labels[:, 1:] != IGNORE_INDEX).float()
        return weights
    raise ValueError(f"positions must be 'all' or 'labelled', got {positions!r}")


def check_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, vocab_size: int
) -> None:
    """Raise ValueError, naming the fix, for inputs EAP cannot score."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    for name, tensor in (("attention_mask", attention_mask), ("labels", labels)):
        if tensor.shape != input_ids.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but input_ids has "
                f"{tuple(input_ids.shape)}; they must be aligned token for token"
            )
    if input_ids.dtype.is_floating_point or labels.dtype.is_floating_point:
        raise ValueError("input_ids and labels must be integer tensors (token ids, -100 = ignore)")
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must contain only 0 (padding) and 1 (token)")
    real = attention_mask.bool()
    runs = (real[:, 1:] & ~real[:, :-1]).sum(-1) + real[:, 0].long()
    if not bool((runs == 1).all()):
        raise ValueError(
            "each attention_mask row must be one contiguous run of 1s (left or right padding "
            "only); rows with gaps or no tokens at all cannot be scored"
        )
    ids = input_ids[real]
    if bool((ids < 0).any() | (ids >= vocab_size).any()):
        raise ValueError(f"input_ids outside the vocabulary [0, {vocab_size})")
    labelled = labels != IGNORE_INDEX
    if bool((labelled & ~real).any()):
        raise ValueError("labels must be -100 at padding positions (attention_mask == 0)")
    target = labels[labelled]
    if bool((target < 0).any() | (target >= vocab_size).any()):
        raise ValueError(f"labels must be -100 or token ids in [0, {vocab_size})")
    predicted = labelled[:, 1:]
    if bool((predicted & ~real[:, :-1]).any()):
        raise ValueError(
            "a labelled token directly follows padding, so nothing predicts it; set its label "
            "to -100 or include the token before it"
        )
    if not bool(predicted.any(-1).all()):
        raise ValueError(
            "every sample needs at least one labelled token after its first token (labels are "
            "shifted: the label at position 0 is never predicted)"
        )


def as_envoy(model: Any, backend: Local = LOCAL) -> Envoy:
    """The nnsight envoy `backend` traces for `model` (itself if it already is one)."""
    return backend.envoy(model)


def edge_scores(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    positions: Positions = "all",
    backend: Local = LOCAL,
    objective: Objective | None = None,
    method: Method = "eap",
    m: int = 5,
    progress: bool = False,
) -> EdgeScores:
    """EAP score of every residual edge, per sample, from one forward and one backward pass.

    `labels` follows transformers (aligned with `input_ids`, -100 = not in the loss, shifted
    inside); each sample's loss is its mean NLL over labelled tokens, and the batch loss is the
    sum of those, so every sample gets its own gradient. `positions` picks the position sum:
    "all" non-padding positions (default) or "labelled" (positions t with labels[t + 1] labelled).
    Parameters are frozen during the call and restored after; no parameter gradient is touched.
    `backend` says where the trace runs (`helpers.backend`: local, NDIF, simulated NDIF).
    `objective(logits, labels) -> float32 [batch]` replaces the NLL as the differentiated target
    (e.g. `helpers.controls.margin_objective`); on a remote backend it must live in a module
    nnsight can register (the backend ships it). The result also carries each sample's gradient norm at the logits and
    at the final residual stream, which normalising controls divide by.
    `method="eap-ig"` averages the gradients of `m` points on each source's path to zero (see the
    module docstring); its loss and gradient norms are the clean run's, as EAP's.
    """
    check_method(method, m)
    backend.check(model)  # the key first: the cheapest refusal, before any wrapping
    envoy = backend.envoy(model)
    module: torch.nn.Module = envoy._module
    adapter = adapter_for(module)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    vocab_size = int(module.get_input_embeddings().num_embeddings)  # type: ignore[operator]
    check_inputs(input_ids, attention_mask, labels, vocab_size)
    weights = position_weights(attention_mask, labels, positions)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("edge_scores needs gradients; call it outside torch.inference_mode()")

    n_layers = len(resolve(module, adapter.layers))
    graph = residual_graph(n_layers)
    # nnsight moves these to the model's device (after dispatching a lazily loaded model).
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_mask(attention_mask),
    }
    flags = [p.requires_grad for p in module.parameters()]
    training = module.training
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        if training:
            module.eval()  # no dropout, no gradient checkpointing re-running the forward
        with torch.enable_grad():
            trace = (envoy, adapter, n_layers, inputs, labels, weights)
            objective_ = objective or per_sample_loss
            scores, loss, norm_logits, norm_resid = _trace_scores(
                *trace, backend=backend, objective=objective_
            )
            if method == "eap-ig" and m > 1:
                scores = _integrated(
                    scores, *trace, m=m, backend=backend, objective=objective_, progress=progress
                )
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        if training:
            module.train()
    check_finite(scores, loss)
    name = getattr(objective, "__name__", "custom") if objective else "nll"
    return _result(graph, scores, loss, (norm_logits, norm_resid), positions, name, method, m)


def _result(
    graph: ResidualGraph,
    scores: torch.Tensor,
    loss: torch.Tensor,
    norms: tuple[torch.Tensor, torch.Tensor],
    positions: str,
    objective: str,
    method: str,
    m: int,
) -> EdgeScores:
    """The EdgeScores of one call, on the CPU."""
    return EdgeScores(
        scores=scores.cpu(),
        sources=graph.sources,
        targets=graph.targets,
        mask=graph.mask,
        loss=loss.cpu(),
        positions=positions,
        objective=objective,
        grad_norm_logits=norms[0].cpu(),
        grad_norm_resid=norms[1].cpu(),
        method=method,
        steps=m if method == "eap-ig" else 1,
    )


def path_scales(
    weights: torch.Tensor, source: torch.Tensor, n_nodes: int, a: float
) -> torch.Tensor:
    """float32 [rows, n_nodes, seq] output multipliers: row r scales node `source[r]` to `a` at
    its counted positions (`weights [rows, seq]`), and leaves every other node as it is."""
    scales = torch.ones(weights.shape[0], n_nodes, weights.shape[1], dtype=torch.float32)
    rows = torch.arange(weights.shape[0])
    scales[rows, source] = 1.0 - (1.0 - a) * weights.float().cpu()
    return scales


def _integrated(
    clean: torch.Tensor,
    envoy: Envoy,
    adapter: Adapter,
    n_layers: int,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    m: int,
    backend: Local,
    objective: Objective,
    progress: bool,
) -> torch.Tensor:
    """EAP-IG scores [batch, S, S] from EAP's (`clean`, the k = 0 step) and steps k = 1..m-1.

    Each step runs every (sample, source) pair as one row, source u's output scaled by 1 - k/m,
    in traces of at most IG_ROWS rows; only row u of each row's score matrix is kept.
    """
    batch = labels.shape[0]
    n_nodes = 2 * n_layers + 1
    per_trace = max(1, IG_ROWS // batch)
    groups = [list(range(i, min(i + per_trace, n_nodes))) for i in range(0, n_nodes, per_trace)]
    total = clean.clone()
    steps = [(k, g) for k in range(1, m) for g in groups]
    for k, group in tqdm(steps, desc=f"EAP-IG (m={m})", leave=False, disable=not progress):
        source = torch.tensor(group).repeat(batch)  # row r: sample r // len(group)
        expand = {name: t.repeat_interleave(len(group), 0) for name, t in inputs.items()}
        w = weights.repeat_interleave(len(group), 0)
        scales = path_scales(w, source, n_nodes, 1.0 - k / m)
        scores, *_ = _trace_scores(
            envoy,
            adapter,
            n_layers,
            expand,
            labels.repeat_interleave(len(group), 0),
            w,
            backend=backend,
            objective=objective,
            scales=scales,
        )
        rows = torch.arange(source.numel(), device=scores.device)
        own = scores[rows, source.to(scores.device)].view(batch, len(group), n_nodes)
        total[:, group] += own.to(total.device)
    return total / m


def check_method(method: str, m: int) -> None:
    """Raise ValueError, naming the fix, for an unknown method or a bad number of EAP-IG steps."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m (EAP-IG integration steps) must be an integer >= 1, got {m!r}")


class NonFiniteScores(FloatingPointError):
    """EAP produced NaN or inf for some samples; `samples` are their indices in the batch."""

    def __init__(self, message: str, samples: list[int]) -> None:
        super().__init__(message)
        self.samples = samples


def check_finite(scores: torch.Tensor, loss: torch.Tensor) -> None:
    """Raise NonFiniteScores, naming the samples, when a loss or a score is NaN or inf."""
    bad = ~(torch.isfinite(loss) & torch.isfinite(scores).flatten(1).all(1))
    if bool(bad.any()):
        samples = bad.nonzero().flatten().tolist()
        raise NonFiniteScores(
            f"non-finite EAP loss or scores for samples {samples} of this batch (loss "
            f"{loss[bad].tolist()}): check the weights for NaN/inf, or use float32/bfloat16 "
            "instead of float16; nothing was cached",
            samples,
        )


def score_batches(
    model: Any,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    positions: Positions = "all",
    backend: Local = LOCAL,
    progress: bool = True,
) -> EdgeScores:
    """`edge_scores` over (input_ids, attention_mask, labels) batches, concatenated in order."""
    results = [
        edge_scores(model, ids, mask, labels, positions=positions, backend=backend)
        for ids, mask, labels in tqdm(
            batches, desc="edge scores", unit="batch", disable=not progress
        )
    ]
    return concat(results)


def _trace_scores(
    envoy: Envoy,
    adapter: Adapter,
    n_layers: int,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    backend: Local,
    objective: Objective,
    scales: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the trace: store sources (float32), contract each target's branch gradient with them.

    Values are requested in forward order and gradients in reverse order, as nnsight requires.
    Only the [batch, S, T] scores, the per-sample objective and its gradient norms at the logits
    and the final residual leave the trace. `scales` (float32 [batch, S, seq], EAP-IG's path)
    multiplies each source's output after it is stored (stored outputs stay clean)."""
    embed = resolve(envoy, adapter.embed)
    layers = resolve(envoy, adapter.layers)
    final_norm = resolve(envoy, adapter.final_norm)
    # (pre-norm, block, block returns a tuple) of every attention and MLP, in serial order.
    branches = []
    for index in range(n_layers):
        layer = layers[index]
        branches.append(
            (
                resolve(layer, adapter.attn_norm),
                resolve(layer, adapter.attn),
                adapter.attn_output_is_tuple,
            )
        )
        branches.append((resolve(layer, adapter.mlp_norm), resolve(layer, adapter.mlp), False))
    trace_kwargs: dict[str, Any] = {"use_cache": False, **inputs, **backend.trace_kwargs()}
    backend.prepare(sys.modules[__name__])
    if objective.__module__ != __name__:
        backend.prepare(sys.modules[objective.__module__])
    n_nodes = 2 * n_layers + 1
    # Keep every statement of this trace on one line, and no comment lines before the backward
    # block: nnsight's serialised (remote) execution breaks on them (tests/test_remote.py).
    with envoy.trace(**trace_kwargs):
        emb = embed.output
        batch, seq = emb.shape[:2]
        store_shape = (batch, n_nodes, *emb.shape[1:])
        sources = torch.empty(store_shape, dtype=torch.float32, device=emb.device)
        sources[:, 0] = emb.detach()
        if scales is not None:
            embed.output = _scaled(emb, scales[:, 0], False)
        branch_inputs = []  # clones of each target's pre-norm input, in serial order
        for node, (norm, block, returns_tuple) in enumerate(branches, start=1):
            branch_input = norm.input.clone()
            if not branch_input.requires_grad:
                branch_input.requires_grad_(True)  # the first layer's input has no history
            norm.input = branch_input
            branch_inputs.append(branch_input)
            output = block.output
            sources[:, node] = (output[0] if returns_tuple else output).detach()
            if scales is not None:
                block.output = _scaled(output, scales[:, node], returns_tuple)
        final_input = final_norm.input.clone()
        final_norm.input = final_input
        branch_inputs.append(final_input)
        logits = envoy.output.logits
        loss = objective(logits, labels)
        weights = weights.to(sources.device).view(batch, 1, seq, *([1] * (sources.ndim - 3)))
        sources = sources.mul_(weights).view(batch, n_nodes, -1)
        scores = torch.zeros(batch, n_nodes, n_nodes, dtype=torch.float32, device=sources.device)
        grad_norms = torch.zeros(batch, n_nodes, dtype=torch.float32, device=sources.device)
        with loss.sum().backward():
            norm_logits = logits.grad.float().reshape(batch, -1).norm(dim=1).save()
            # Column v as each gradient arrives: no [batch, S, seq, hidden] gradient buffer.
            for target in reversed(range(n_nodes)):
                grad = branch_inputs[target].grad.to(sources.device, torch.float32)
                column = torch.bmm(sources[:, : target + 1], grad.reshape(batch, -1, 1))
                scores[:, : target + 1, target] = column.squeeze(-1)
                grad_norms[:, target] = grad.reshape(batch, -1).norm(dim=1)
        scores = scores.neg_().save()  # type: ignore[attr-defined]  # nnsight adds .save
        loss = loss.detach().float().save()  # type: ignore[attr-defined]
        norm_resid = grad_norms[:, -1].save()  # type: ignore[attr-defined]
    return scores, loss, norm_logits, norm_resid


def _scaled(output: Any, scale: torch.Tensor, returns_tuple: bool) -> Any:
    """A module's output with its hidden states multiplied by `scale [batch, seq]` (EAP-IG)."""
    hidden = output[0] if returns_tuple else output
    new = hidden * scale.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (new, *output[1:]) if returns_tuple else new
