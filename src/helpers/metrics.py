"""Statistics of per-sample edge-attribution matrices W[k] (method.md section 6), made precise.

Every function takes per-sample scores ``[n_samples, n_sources, n_targets]`` (numpy or torch; a
single ``[S, T]`` matrix counts as one sample) plus the bool edge mask ``[S, T]``, or any object
with ``.scores`` and ``.mask`` (and optionally ``.sources``/``.targets``), such as
``helpers.eap.EdgeScores``. Everything is computed in float64 numpy.

Conventions (the paper states none of them; these are ours):

* **Which cells count.** ``edges="real"`` (default) uses only the cells where the mask is True;
  values stored in masked-out cells are ignored entirely. ``edges="dense"`` reproduces the
  dense-matrix convention: all ``S * T`` cells count, and masked-out cells are *structural zeros*
  (set to 0 whatever they hold), so the report can show how much that convention moves numbers.
* **Entropies are in nats.** ``normalize=True`` divides by the maximum attainable entropy
  (``log(bins)`` or ``log(number of cells)``) to give a value in [0, 1].
* **Information complexity** is the Shannon entropy of a histogram of |W| pooled over samples and
  edges, with ``bins=100`` equal-width bins on ``hist_range``. The default range is
  ``(0, max |W|)`` of the data passed in, which makes the value invariant to rescaling W. Entropies
  of two models are only comparable on one fixed range: :func:`shared_range` pools both models
  (``helpers.stats.compare`` uses it by default). Values outside an explicit range are dropped, as
  ``numpy.histogram`` does. Caveat, by construction: on a shared range a model whose |W| are all
  larger spreads over more bins, so a pure rescaling ``W -> cW`` (c > 1) raises its entropy; on
  separate ``(0, max)`` ranges the value is scale-free but one outlier sets each model's bin width.
  The bin-free :func:`edge_entropy` has neither problem and is reported beside it.
* **Kurtosis** is the population (biased, Fisher) excess kurtosis of signed W over edges, per
  sample, then averaged over samples; a Gaussian gives 0.
* **Diversity** is ``1 - mean`` of the off-diagonal Pearson correlations between the samples'
  signed edge vectors (``use_abs=True`` correlates |W| instead).
* **Layers.** Node names are ``"emb"``, ``"attn.l"``, ``"mlp.l"`` (sources) and ``"attn.l"``,
  ``"mlp.l"``, ``"logits"`` (targets). :func:`layer_of` puts ``emb`` at layer -1 and ``logits``
  at layer L (one past the last block), so layer profiles stay numeric and ordered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Edges = Literal["real", "dense"]
ProfileBy = Literal["source_layer", "target_layer", "source", "target"]

DEFAULT_BINS = 100
_LAYER_RE = re.compile(r"^(attn|mlp)\.(\d+)$")


class MetricInputError(ValueError):
    """Raised when scores, mask or node names are malformed or incompatible."""


@dataclass(frozen=True)
class ScoreSet:
    """Validated per-sample scores: float64 ``scores`` [n, S, T], bool ``mask`` [S, T], node names."""

    scores: np.ndarray
    mask: np.ndarray
    sources: tuple[str, ...] | None
    targets: tuple[str, ...] | None

    @property
    def n_samples(self) -> int:
        return self.scores.shape[0]

    @property
    def n_layers(self) -> int | None:
        """Number of transformer blocks, parsed from the node names (None if names are unknown)."""
        if self.sources is None or self.targets is None:
            return None
        layers = [int(m.group(2)) for n in self.sources + self.targets if (m := _LAYER_RE.match(n))]
        return max(layers) + 1 if layers else 0

    def edge_matrix(self, edges: Edges = "real") -> np.ndarray:
        """Samples' edge vectors ``[n, E]``: real edges row-major, or all cells with structural zeros."""
        if edges == "real":
            return self.scores[:, self.mask]
        if edges == "dense":
            return np.where(self.mask, self.scores, 0.0).reshape(self.n_samples, -1)
        raise MetricInputError(f"edges must be 'real' or 'dense', got {edges!r}")

    def cell_mask(self, edges: Edges = "real") -> np.ndarray:
        """Bool [S, T] of the cells that count under the ``edges`` convention."""
        if edges == "real":
            return self.mask
        if edges == "dense":
            return np.ones_like(self.mask)
        raise MetricInputError(f"edges must be 'real' or 'dense', got {edges!r}")


def default_node_names(n_layers: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Source and target names of the merged residual graph with ``n_layers`` blocks."""
    blocks = tuple(f"{kind}.{layer}" for layer in range(n_layers) for kind in ("attn", "mlp"))
    return ("emb", *blocks), (*blocks, "logits")


def _to_numpy(x: Any, dtype: type) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu()
        if dtype is np.float64:
            x = x.double()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def as_score_set(
    x: Any,
    mask: Any | None = None,
    *,
    sources: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
) -> ScoreSet:
    """Coerce an array/tensor plus mask, an ``EdgeScores``-like object, or a ScoreSet to a ScoreSet.

    An explicit ``mask`` overrides the object's own. Node names default to the object's, else to
    the standard residual-graph names when ``S == T == 2L + 1``, else None.
    """
    if isinstance(x, ScoreSet) and mask is None and sources is None and targets is None:
        return x
    if hasattr(x, "scores"):
        mask = getattr(x, "mask", None) if mask is None else mask
        sources = getattr(x, "sources", None) if sources is None else sources
        targets = getattr(x, "targets", None) if targets is None else targets
        x = x.scores
    scores = _to_numpy(x, np.float64)
    if scores.ndim == 2:
        scores = scores[None]
    if scores.ndim != 3:
        raise MetricInputError(
            f"scores must be [n_samples, n_sources, n_targets] (or one [S, T] matrix); "
            f"got shape {scores.shape}"
        )
    if scores.shape[0] == 0:
        raise MetricInputError("scores hold no samples; pass at least one [S, T] matrix")
    if mask is None:
        raise MetricInputError(
            "no edge mask: pass mask=<bool [n_sources, n_targets]> (e.g. ResidualGraph.mask) "
            "or an EdgeScores, which carries its mask"
        )
    mask_np = _to_numpy(mask, bool)
    if mask_np.shape != scores.shape[1:]:
        raise MetricInputError(
            f"mask shape {mask_np.shape} does not match scores' [S, T] = {scores.shape[1:]}"
        )
    if not mask_np.any():
        raise MetricInputError("mask has no True cell: there are no edges to measure")
    if not np.isfinite(scores[:, mask_np]).all():
        raise MetricInputError("scores contain NaN or inf on real edges; fix the attribution run")
    n_src, n_tgt = mask_np.shape
    if sources is None and targets is None and n_src == n_tgt and n_src % 2 == 1:
        sources, targets = default_node_names((n_src - 1) // 2)
    sources = tuple(sources) if sources is not None else None
    targets = tuple(targets) if targets is not None else None
    if sources is not None and len(sources) != n_src:
        raise MetricInputError(f"{len(sources)} source names for {n_src} source rows")
    if targets is not None and len(targets) != n_tgt:
        raise MetricInputError(f"{len(targets)} target names for {n_tgt} target columns")
    return ScoreSet(scores=scores, mask=mask_np, sources=sources, targets=targets)


def edge_vectors(x: Any, mask: Any | None = None, *, edges: Edges = "real") -> np.ndarray:
    """Per-sample edge vectors ``[n, E]`` (float64) under the chosen cell convention."""
    return as_score_set(x, mask).edge_matrix(edges)


# --------------------------------------------------------------------------- intensity


def sample_intensity(x: Any, mask: Any | None = None, *, edges: Edges = "real") -> np.ndarray:
    """Per-sample mean |W| over edges, ``[n]``."""
    return np.abs(edge_vectors(x, mask, edges=edges)).mean(axis=1)


def intensity(x: Any, mask: Any | None = None, *, edges: Edges = "real") -> float:
    """Activation intensity: mean |W| over samples and edges."""
    return float(sample_intensity(x, mask, edges=edges).mean())


# --------------------------------------------------------------------------- entropies


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of non-negative weights along ``axis`` (normalised there; 0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    total = p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = p / total
        terms = np.where(q > 0, -q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return terms.sum(axis=axis)


def shared_range(*xs: Any, mask: Any | None = None, edges: Edges = "real") -> tuple[float, float]:
    """Histogram range ``(0, max |W|)`` pooled over several models, so their entropies compare."""
    if not xs:
        raise MetricInputError("shared_range needs at least one score set")
    return max((_own_range(np.abs(edge_vectors(x, mask, edges=edges))) for x in xs), key=max)


def _own_range(abs_edges: np.ndarray) -> tuple[float, float]:
    """``(0, max |W|)`` of one set of magnitudes; errors if all are zero."""
    hi = float(abs_edges.max())
    if hi <= 0:
        raise MetricInputError("all scores are zero: no histogram range; check the attribution run")
    return 0.0, hi


def sample_histograms(
    abs_edges: np.ndarray, bins: int, hist_range: tuple[float, float]
) -> np.ndarray:
    """Histogram counts per sample ``[n, bins]`` of ``abs_edges [n, E]`` (numpy.histogram binning)."""
    if not isinstance(bins, int | np.integer) or bins < 1:
        raise MetricInputError(f"bins must be a positive integer, got {bins!r}")
    lo, hi = map(float, hist_range)
    if not hi > lo:
        raise MetricInputError(f"hist_range must satisfy low < high, got {hist_range}")
    n = abs_edges.shape[0]
    idx = np.floor((abs_edges - lo) / (hi - lo) * bins).astype(np.int64)
    idx[abs_edges == hi] = bins - 1  # numpy's last bin is closed on the right
    inside = (abs_edges >= lo) & (abs_edges <= hi)
    flat = (idx + bins * np.arange(n)[:, None])[inside]
    return np.bincount(flat, minlength=n * bins).reshape(n, bins).astype(np.float64)


def information_complexity(
    x: Any,
    mask: Any | None = None,
    *,
    bins: int = DEFAULT_BINS,
    hist_range: tuple[float, float] | None = None,
    edges: Edges = "real",
    normalize: bool = False,
) -> float:
    """Entropy (nats) of the histogram of |W| pooled over samples and edges.

    ``hist_range=None`` uses ``(0, max |W|)`` of this data; pass :func:`shared_range` of both
    models to compare two models. ``normalize`` divides by ``log(bins)``.
    """
    abs_w = np.abs(edge_vectors(x, mask, edges=edges))
    rng = _own_range(abs_w) if hist_range is None else hist_range
    counts = sample_histograms(abs_w, bins, rng).sum(axis=0)
    if counts.sum() == 0:
        raise MetricInputError(f"no |W| value falls inside hist_range={rng}")
    h = float(entropy(counts))
    return h / np.log(bins) if normalize and bins > 1 else h


def sample_edge_entropy(
    x: Any, mask: Any | None = None, *, edges: Edges = "real", normalize: bool = False
) -> np.ndarray:
    """Bin-free entropy per sample ``[n]``: entropy of |W| normalised to a distribution over edges."""
    abs_w = np.abs(edge_vectors(x, mask, edges=edges))
    empty = np.flatnonzero(abs_w.sum(axis=1) == 0)
    if empty.size:
        raise MetricInputError(
            f"samples {empty.tolist()} have all-zero scores, so no |W| distribution; drop them"
        )
    h = entropy(abs_w)
    n_cells = abs_w.shape[1]
    return h / np.log(n_cells) if normalize and n_cells > 1 else h


def edge_entropy(
    x: Any, mask: Any | None = None, *, edges: Edges = "real", normalize: bool = False
) -> float:
    """Bin-free companion of information complexity: per-sample |W|-mass entropy, averaged."""
    return float(sample_edge_entropy(x, mask, edges=edges, normalize=normalize).mean())


def node_entropy(
    x: Any, mask: Any | None = None, *, edges: Edges = "real", normalize: bool = False
) -> pd.Series:
    """Per-source-node entropy of |W| over its outgoing edges, per sample then averaged.

    Indexed by source name. A node's entropy is NaN when all its outgoing scores are zero in every
    sample (samples where they are all zero are skipped); normalised entropy of a node with one
    edge is NaN (0/0).
    """
    ss = as_score_set(x, mask)
    cells = ss.cell_mask(edges)
    abs_w = np.abs(np.where(ss.mask, ss.scores, 0.0))  # [n, S, T]
    out = np.full(abs_w.shape[1], np.nan)
    for s in range(abs_w.shape[1]):
        row = abs_w[:, s, cells[s]]  # [n, out-degree]
        if row.shape[1] == 0:
            continue
        live = row.sum(axis=1) > 0
        if not live.any():
            continue
        h = entropy(row[live]).mean()
        if normalize:
            h = h / np.log(row.shape[1]) if row.shape[1] > 1 else np.nan
        out[s] = h
    index = ss.sources if ss.sources is not None else range(abs_w.shape[1])
    return pd.Series(out, index=pd.Index(index, name="source"), name="node_entropy")


# --------------------------------------------------------------------------- shape of W


def sample_kurtosis(x: Any, mask: Any | None = None, *, edges: Edges = "real") -> np.ndarray:
    """Excess (Fisher, population) kurtosis of signed W over edges, per sample ``[n]``."""
    w = edge_vectors(x, mask, edges=edges)
    d = w - w.mean(axis=1, keepdims=True)
    m2 = (d**2).mean(axis=1)
    flat = np.flatnonzero(m2 <= 1e-300)
    if flat.size:
        raise MetricInputError(
            f"samples {flat.tolist()} have constant scores over edges, so kurtosis is undefined; "
            "drop them"
        )
    return (d**4).mean(axis=1) / m2**2 - 3.0


def kurtosis(x: Any, mask: Any | None = None, *, edges: Edges = "real") -> float:
    """Distribution kurtosis: per-sample excess kurtosis of signed W over edges, averaged."""
    return float(sample_kurtosis(x, mask, edges=edges).mean())


def correlation_matrix(
    x: Any, mask: Any | None = None, *, edges: Edges = "real", use_abs: bool = False
) -> np.ndarray:
    """Pearson correlations ``[n, n]`` between the samples' edge vectors."""
    w = edge_vectors(x, mask, edges=edges)
    if use_abs:
        w = np.abs(w)
    d = w - w.mean(axis=1, keepdims=True)
    norm = np.sqrt((d**2).sum(axis=1))
    flat = np.flatnonzero(norm <= 1e-300)
    if flat.size:
        raise MetricInputError(
            f"samples {flat.tolist()} have constant edge vectors, so correlation is undefined; "
            "drop them"
        )
    z = d / norm[:, None]
    c = z @ z.T
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


def diversity(
    x: Any, mask: Any | None = None, *, edges: Edges = "real", use_abs: bool = False
) -> float:
    """Inter-sample diversity: 1 - mean pairwise (off-diagonal) Pearson correlation of samples."""
    c = correlation_matrix(x, mask, edges=edges, use_abs=use_abs)
    n = c.shape[0]
    if n < 2:
        raise MetricInputError("diversity needs at least two samples")
    return float(1.0 - (c.sum() - np.trace(c)) / (n * (n - 1)))


# --------------------------------------------------------------------------- per edge / per layer


def mean_abs(x: Any, mask: Any | None = None) -> np.ndarray:
    """Mean |W| over samples per cell, ``[S, T]``, NaN outside the mask."""
    ss = as_score_set(x, mask)
    return np.where(ss.mask, np.abs(ss.scores).mean(axis=0), np.nan)


def relative_change(base: Any, tuned: Any, mask: Any | None = None) -> np.ndarray:
    """Per-edge ``(mean|W_tuned| - mean|W_base|) / mean|W_base|``, ``[S, T]``.

    NaN outside the mask and where the base mean is exactly 0.
    """
    b, t = as_score_set(base, mask), as_score_set(tuned, mask)
    if b.mask.shape != t.mask.shape or not np.array_equal(b.mask, t.mask):
        raise MetricInputError("base and tuned have different edge masks; compare the same graph")
    mb, mt = mean_abs(b), mean_abs(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mb > 0, (mt - mb) / mb, np.nan)


def layer_of(name: str, n_layers: int) -> int:
    """Layer of a node name: ``emb`` -> -1, ``attn.l``/``mlp.l`` -> l, ``logits`` -> n_layers."""
    if name == "emb":
        return -1
    if name == "logits":
        return n_layers
    m = _LAYER_RE.match(name)
    if m is None:
        raise MetricInputError(
            f"cannot parse node name {name!r}: expected 'emb', 'attn.<l>', 'mlp.<l>' or 'logits'"
        )
    return int(m.group(2))


def intensity_profile(
    x: Any, mask: Any | None = None, *, by: ProfileBy = "source_layer", edges: Edges = "real"
) -> pd.Series:
    """Mean |W| over samples and the edges grouped by source/target layer (or node).

    Layer groups pool ``attn.l`` and ``mlp.l``; ``emb`` is layer -1, ``logits`` layer L. With
    ``edges="dense"`` structural zeros of each group count too.
    """
    ss = as_score_set(x, mask)
    if ss.sources is None or ss.targets is None:
        raise MetricInputError(
            "intensity_profile needs node names: pass an EdgeScores or sources=/targets="
        )
    cells = ss.cell_mask(edges)
    per_cell = np.abs(np.where(ss.mask, ss.scores, 0.0)).mean(axis=0)  # [S, T]
    n_layers = ss.n_layers or 0
    if by in ("source_layer", "source"):
        names, axis = ss.sources, 0
    elif by in ("target_layer", "target"):
        names, axis = ss.targets, 1
    else:
        raise MetricInputError(
            f"by must be 'source_layer', 'target_layer', 'source' or 'target', got {by!r}"
        )
    keys = [layer_of(n, n_layers) for n in names] if by.endswith("_layer") else list(names)
    sums = (per_cell * cells).sum(axis=1 - axis)
    counts = cells.sum(axis=1 - axis)
    frame = pd.DataFrame({"key": keys, "sum": sums, "count": counts})
    grouped = frame.groupby("key", sort=by.endswith("_layer"))[["sum", "count"]].sum()
    if not by.endswith("_layer"):
        grouped = grouped.loc[list(dict.fromkeys(keys))]
    out = grouped["sum"] / grouped["count"].where(grouped["count"] > 0)
    out.index.name = by
    return out.rename("intensity")


# --------------------------------------------------------------------------- one-call summary


def summarize(
    x: Any,
    mask: Any | None = None,
    *,
    bins: int = DEFAULT_BINS,
    hist_range: tuple[float, float] | None = None,
    edges: Edges = "real",
) -> dict[str, float]:
    """All scalar metrics of one model's score set, as a dict (one model; see stats.compare for two)."""
    ss = as_score_set(x, mask)
    out = {
        "intensity": intensity(ss, edges=edges),
        "information_complexity": information_complexity(
            ss, bins=bins, hist_range=hist_range, edges=edges
        ),
        "edge_entropy": edge_entropy(ss, edges=edges),
        "kurtosis": kurtosis(ss, edges=edges),
    }
    out["diversity"] = diversity(ss, edges=edges) if ss.n_samples > 1 else float("nan")
    return out
